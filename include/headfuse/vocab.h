// headfuse: tokenizers. The tokenizer.* keys a llama.cpp file carries, read from another GGUF file or converted
// from a Hugging Face tokenizer (tokenizer.json, tokenizer_config.json, special_tokens_map.json), and checked
// against every rule llama.cpp's vocabulary loader enforces before anything is written.
//
// Hugging Face BPE tokenizers map onto llama.cpp's two BPE tokenizers (docs/FORMATS.md has the details):
//   - SentencePiece-style BPE with byte fallback (LLaMA 2, Mistral) -> tokenizer.ggml.model "llama": tokens,
//     scores and token types. llama.cpp merges the adjacent pair whose joined piece has the highest score, so
//     a piece's score is minus the rank of the first merge that forms it; pieces no merge forms score below
//     every merge.
//   - byte-level BPE (GPT-2, LLaMA 3) -> "gpt2": tokens, token types, merges, and tokenizer.ggml.pre naming
//     the llama.cpp pre-tokenizer whose regex is the tokenizer.json's.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "headfuse/gguf.h"

namespace headfuse {

// A tokenizer ready to be written: its tokenizer.* keys and where they came from.
struct Tokenizer {
    Metadata keys;                              // tokenizer.* keys only
    std::string source;                         // the file or folder, as errors name it
    std::vector<std::filesystem::path> inputs;  // files read (a writer must never overwrite them)
};

// Hears one line about what llama.cpp may not reproduce exactly.
using WarnFn = std::function<void(const std::string&)>;

// The tokenizer of a GGUF file, a Hugging Face folder or a tokenizer.json file, checked by check_tokenizer.
// Error naming the path when it is none of these or the tokenizer cannot be carried over faithfully.
Tokenizer read_tokenizer(const std::filesystem::path& path, const WarnFn& warn = {});

// A Hugging Face tokenizer: `path` is a folder holding tokenizer.json, or a tokenizer.json file (its folder's
// tokenizer_config.json and special_tokens_map.json are read when present). `warn` hears about behaviour that
// llama.cpp may not reproduce exactly.
Tokenizer read_hf_tokenizer(const std::filesystem::path& path, const WarnFn& warn = {});

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
