#!/usr/bin/python3
"""SentencePiece itself (Debian's python3-sentencepiece) as the reference for headfuse's tokenizer.model import.

  sp_reference.py DIR CORPUS.json

Trains a small BPE model with byte fallback, as LLaMA's tokenizer.model is configured (identity normalizer,
spaces kept, a dummy prefix), on text this script holds, and writes it to DIR/tokenizer.model. Prints one JSON
object: what SentencePiece's own processor says of every piece ("pieces", "scores", "types": one of normal,
unknown, control, unused, byte), its special ids ("unk_id", "bos_id", "eos_id", "pad_id"), and "ids": its
encoding of each text of CORPUS.json (a JSON array of strings), after checking that each decodes back.
"""
import json
import os
import sys

import sentencepiece as spm

# Training text: English prose and the Latin-script lines of a tokenizer corpus. Characters it lacks (CJK,
# emoji, Arabic, Devanagari) reach the model's byte pieces, which is what byte fallback is for.
TRAINING = """\
The quick brown fox jumps over the lazy dog. A tokenizer splits text into pieces that a model reads as ids.
SentencePiece treats the input as a raw stream of characters, spaces included, and writes each space as a
visible marker before the word that follows it. Byte pair encoding starts from single characters and merges
the most frequent adjacent pair again and again, until the vocabulary is as large as asked.
Hello world, hello again: the words that come often become whole pieces, the rare ones stay in parts.
Café, naïve, résumé, façade, jalapeño. Ça va? Straße. ÀÉÎÕÜ àéîõü.
def f(x):
	return x * 2
int main() { printf("%d", 42); return 0; }
I'm sure you'll see they've done it; we'd've said it's John's. Numbers: 1234567890 and 3.14159.
spaces:     five, then		tabs. https://example.com/path?query=1&b=2#frag
"""


def main():
    out_dir, corpus_path = sys.argv[1], sys.argv[2]
    with open(corpus_path, encoding="utf-8") as f:
        corpus = json.load(f)
    train_txt = os.path.join(out_dir, "train.txt")
    with open(train_txt, "w", encoding="utf-8") as f:
        f.write(TRAINING * 4)
    prefix = os.path.join(out_dir, "tokenizer")
    spm.SentencePieceTrainer.train(
        input=train_txt, model_prefix=prefix, model_type="bpe", vocab_size=600, hard_vocab_limit=False,
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=False, num_threads=1,
        shuffle_input_sentence=False, pad_id=3, control_symbols=["<ctl>"], user_defined_symbols=["<sep>"],
        minloglevel=2)
    os.remove(prefix + ".vocab")
    os.remove(train_txt)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

    def kind(i):
        for name, test in (("unknown", sp.is_unknown), ("control", sp.is_control), ("unused", sp.is_unused),
                           ("byte", sp.is_byte)):
            if test(i):
                return name
        return "normal"

    n = sp.get_piece_size()
    ids = []
    for text in corpus:
        got = sp.encode(text)
        if sp.decode(got) != text:
            sys.exit(f"sp_reference: SentencePiece does not decode its own ids back to {text!r}")
        ids.append(got)
    json.dump({"pieces": [sp.id_to_piece(i) for i in range(n)], "scores": [sp.get_score(i) for i in range(n)],
               "types": [kind(i) for i in range(n)], "unk_id": sp.unk_id(), "bos_id": sp.bos_id(),
               "eos_id": sp.eos_id(), "pad_id": sp.pad_id(), "ids": ids}, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
