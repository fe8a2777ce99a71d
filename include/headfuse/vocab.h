// headfuse: tokenizers. The tokenizer.* keys a llama.cpp file carries, read from another GGUF file or converted
// from a Hugging Face tokenizer (tokenizer.json or a SentencePiece tokenizer.model, with tokenizer_config.json and
// special_tokens_map.json), and checked against every rule llama.cpp's vocabulary loader enforces before
// anything is written.
//
// Hugging Face BPE tokenizers map onto llama.cpp's two BPE tokenizers (docs/FORMATS.md has the details):
//   - SentencePiece-style BPE with byte fallback (LLaMA 2, Mistral, Gemma) -> tokenizer.ggml.model "llama": tokens,
//     scores and token types. llama.cpp merges the adjacent pair whose joined piece has the highest score, so
//     a piece's score is minus the rank of the first merge that forms it; pieces no merge forms score below
//     every merge.
//   - byte-level BPE (GPT-2, LLaMA 3, Qwen2/2.5/3) -> "gpt2": tokens, token types, merges, and
//     tokenizer.ggml.pre naming the llama.cpp pre-tokenizer whose regex is the tokenizer.json's.
//   - a SentencePiece BPE model with byte fallback (tokenizer.model, read where there is no tokenizer.json)
//     -> "llama": its pieces, scores and piece types, as llama.cpp's own converter takes them.
// The Hugging Face files themselves travel along, byte for byte (kTokenizerFiles), for an export to write back.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "headfuse/gguf.h"

namespace headfuse {

// A tokenizer ready to be written: its tokenizer.* keys and where they came from.
struct Tokenizer {
    Metadata keys;                              // tokenizer.* keys only
    std::string source;                         // the file or folder, as errors name it
    std::vector<std::filesystem::path> inputs;  // files read (a writer must never overwrite them)
    bool converted = false;                     // from Hugging Face or SentencePiece files, not a GGUF file
    // The general.name llama.cpp must see to strip whitespace after the added tokens as the tokenizer's flags
    // say (its Phi-3 rule, src/tokenizer/named_rules.h); empty when no name is needed. fuse writes it when the
    // model has no name, and warns when the model's name would not do.
    std::string general_name;
};

// The Hugging Face tokenizer files a converted tokenizer keeps, byte for byte, and the metadata key of each:
// GGUF's standard tokenizer.huggingface.json for tokenizer.json, headfuse.source.<file name> for the others
// (a string; tokenizer.model, which is binary, a u8 array). llama.cpp ignores these keys.
struct TokenizerFile {
    std::string_view file, key;
    bool binary;
};
inline constexpr TokenizerFile kTokenizerFiles[] = {
    {"tokenizer.json", "tokenizer.huggingface.json", false},
    {"tokenizer.model", "headfuse.source.tokenizer.model", true},
    {"tokenizer_config.json", "headfuse.source.tokenizer_config.json", false},
    {"special_tokens_map.json", "headfuse.source.special_tokens_map.json", false},
};

// The tokenizer of a GGUF file, a Hugging Face folder, a tokenizer.json or a tokenizer.model file, checked by
// check_tokenizer. Error naming the path when it is none of these or the tokenizer cannot be carried over
// faithfully.
Tokenizer read_tokenizer(const std::filesystem::path& path, const WarnFn& warn = {});

// A Hugging Face tokenizer: `path` is a folder holding tokenizer.json (or, without one, a SentencePiece
// tokenizer.model), or such a file (its folder's tokenizer_config.json and special_tokens_map.json are read
// when present, and config.json for the special token ids the others leave unnamed). The keys include the files' bytes
// (kTokenizerFiles). `warn` hears about behaviour that llama.cpp may not reproduce exactly.
Tokenizer read_hf_tokenizer(const std::filesystem::path& path, const WarnFn& warn = {});

// Fits a converted tokenizer (t.converted; one read from a GGUF file is left as it is, and must match) to a
// model whose embedding has `vocab` rows, as llama.cpp's converter fits one to config.json's vocab_size: fewer
// tokens than rows (every Qwen checkpoint: 151669 tokens, 151936 rows) are padded with unused tokens
// [PAD<id>] (score -10000 where there are scores); more tokens than rows lose their tail when it is added tokens
// (control or user-defined: Gemma 3's <image_soft_token> beyond the text model's 262144 rows), which `warn`
// hears about. Error naming t.source when the tail holds another token or a special token id points into it.
void fit_tokenizer(Tokenizer& t, std::uint32_t vocab, const WarnFn& warn = {});

// Every rule llama.cpp's vocabulary loader (llama_vocab::impl::load) enforces, and a few that keep it from
// failing later: a known tokenizer.ggml.model (and tokenizer.ggml.pre for BPE), tokens an array of unique,
// non-empty, valid UTF-8 strings (`vocab` of them unless vocab is 0), scores (f32 or i32) and token types (i32,
// 0..6) one per token, byte-type tokens spelled <0xHH>, merges an array of strings, special token ids u32 and
// in range, flags bool, the chat template a string. Error naming `where` and the key otherwise.
void check_tokenizer(const Metadata& md, std::uint32_t vocab, const std::string& where);

// What `inspect` shows of a tokenizer.
struct TokenizerSummary {
    std::string model;  // tokenizer.ggml.model
    std::string pre;    // tokenizer.ggml.pre, empty when absent
    std::uint64_t n_tokens = 0;
    std::uint64_t n_merges = 0;
    struct Special {
        std::string role;  // "bos", "eos", "unk", "pad", ...
        std::uint64_t id;
        std::string text;  // empty when the id is out of range
    };
    std::vector<Special> specials;
    std::optional<bool> add_bos, add_eos;
    bool chat_template = false;
};
// nullopt when `md` has no tokenizer.ggml.model string.
std::optional<TokenizerSummary> summarize_tokenizer(const Metadata& md);

}  // namespace headfuse
