// headfuse tests: the external judges in judge/, run through Node.js.
//
//  - judge/llama_eval.mjs: llama.cpp (npm node-llama-cpp 3.21.1, prebuilt CPU binaries) loads a GGUF file and
//    gives the log-softmax of its logits at every position of a token sequence (F32 KV cache, no flash
//    attention; float64 renormalisation of the addon's float32 softmax).
//  - judge/hf_parse.mjs: Hugging Face's JavaScript GGUF parser (npm @huggingface/gguf 0.4.6) reads the header.
//  - judge/tokenize.mjs: Hugging Face's tokenizer code (npm @lenml/tokenizers 3.7.2) and llama.cpp tokenize the
//    same texts; the real LLaMA 2 (Mistral), LLaMA 3, Qwen3, Gemma 3 and Mistral NeMo (Tekken) tokenizers come from
//    @lenml/tokenizer-*.
//    With --eval it also gives llama.cpp's log-probabilities on the reference's ids, in the same process.
//  - judge/logprobs.mjs: the evaluation both share. Log-probabilities travel as raw float64 files: JSON text of
//    them costs seconds per position at a vocabulary of 150k tokens.
//
// The judge folder is $HEADFUSE_JUDGE_DIR, else <source dir>/judge; its packages are installed with
// `npm ci --omit=optional` there. Node is $HEADFUSE_NODE, else `node` from PATH (version 20 or newer).
// Each run is a fresh Node process (about 1-3 s: node-llama-cpp tests its binary on every start), so evaluate
// a whole sequence per call rather than one token at a time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/required.h"

#ifndef HEADFUSE_SOURCE_DIR
#define HEADFUSE_SOURCE_DIR "/work/main"
#endif

namespace headfuse {
struct ModelViews;
struct HeadRef;
}  // namespace headfuse

namespace headfuse::test {

// The folder holding the judge scripts and their node_modules: $HEADFUSE_JUDGE_DIR, else HEADFUSE_SOURCE_DIR/judge.
std::string judge_dir();

// The Node.js executable: $HEADFUSE_NODE, else "node" (looked up in PATH).
std::string node_program();

// True when Node.js (>= 20) runs and the judge packages are installed; otherwise false with the reason in *why.
// Checked once per process.
bool judges_available(std::string* why = nullptr);

// The raw outcome of one judge run.
struct JudgeRun {
    int status = -1;  // exit code, or 128 + signal (134: llama.cpp aborted)
    std::string out, err;
};

// Runs `node <judge_dir>/<script> args...` with stdin from /dev/null and both outputs captured. Killed after
// $HEADFUSE_JUDGE_TIMEOUT seconds (default 600), which throws. Throws std::runtime_error when node cannot start.
JudgeRun run_judge(const std::string& script, const std::vector<std::string>& args);

struct LlamaEval {
    std::size_t vocab = 0;
    // logprobs[i][t]: natural log of the probability llama.cpp gives token t after tokens[0..i]; rows are
    // `vocab` long. -infinity where the probability is exactly 0.
    std::vector<std::vector<double>> logprobs;
};

// A file of raw little-endian float64 values (what llama_eval.mjs --out and the numpy references' --out write).
// Throws std::runtime_error when it cannot be read or is not whole values.
std::vector<double> read_raw_f64(const std::filesystem::path& path);

// llama.cpp's next-token log-probabilities at every position of `tokens` (no BOS is added). Throws
// std::runtime_error, carrying the judge's stderr, when the model does not load or evaluate (including a
// llama.cpp abort), and std::invalid_argument when tokens is empty. `context` > 0 runs llama.cpp with that context
// size (node-llama-cpp's contextSize, llama_eval.mjs --ctx: it picks a LongRoPE model's factors); 0 lets the judge
// choose the smallest that holds the tokens (which llama.cpp rounds up to 256).
LlamaEval llama_eval(const std::string& model, const std::vector<std::uint32_t>& tokens, std::uint32_t context = 0);

// headfuse's reference forward pass on `model` (open_model: any file or shard headfuse reads) against llama.cpp's
// on the same file, as log-softmax at every position of `tokens`: the largest |difference| over every finite
// log-probability, and at how many positions the most likely token is the same.
struct Agreement {
    double max_diff = 0;
    int top_agree = 0, positions = 0;
};
Agreement agreement_with_llama(const std::string& model, const std::vector<std::uint32_t>& tokens);

// max |ours[p * vocab + t] - theirs.logprobs[p][t]| over every position p and token t where llama.cpp's
// log-probability is finite.
double max_logprob_diff(const std::vector<double>& ours, const LlamaEval& theirs, std::uint32_t vocab);
// headfuse's forward pass on views as log-softmax rows, in the layout max_logprob_diff compares.
// `n_ctx` is forward_logits's (llama.cpp's context size; 0: the model's original context).
std::vector<double> forward_logprobs(const ModelViews& m, const std::vector<std::uint32_t>& tokens,
                                     std::span<const HeadRef> ablated = {}, std::uint32_t n_ctx = 0);

// Over a large vocabulary the least likely tokens of a random model fall below FLT_MIN in llama.cpp's float32
// softmax (subnormal, a few significant bits left in their logarithm): this compares `ours` (position-major,
// `theirs.vocab` per position) with llama.cpp where llama.cpp's log-probability is above ln(FLT_MIN), counts what it
// left out, and says at how many positions the most likely token is the same.
struct NormalAgreement {
    double max_diff = 0;
    std::size_t compared = 0, subnormal = 0;
    std::size_t top_agree = 0, positions = 0;
};
NormalAgreement agreement_where_normal(std::span<const double> ours, const LlamaEval& theirs);

// judge/tokenize.mjs on `texts`: expects llama.cpp (the GGUF `model`) to tokenize each as Hugging Face's reference
// tokenizer (the tokenizer.json in `hf_dir`) does, except the texts listed in `differ`, which it expects llama.cpp
// to tokenize otherwise (a known difference the caller explains), and to detokenize its ids back to the text (or,
// where the reference loses text too, as an added token's rstrip does, to what the reference decodes).
// `tokens` are the reference's ids of every text, one after the other, `hf` and `llama` each text's ids from each;
// with `positions` > 0 (tokenize.mjs --eval: the same process, one model load), `eval` is llama.cpp's
// log-probabilities after each of the first `positions` of `tokens`. Empty after an ASSERT failure; throws
// std::runtime_error when the evaluation fails.
struct TokenizedEval {
    std::vector<std::uint32_t> tokens;
    std::vector<std::vector<std::uint32_t>> hf, llama;
    LlamaEval eval;
};
TokenizedEval expect_tokenized_as_hf(const std::filesystem::path& hf_dir, const std::string& model,
                                     const std::vector<std::string>& texts, std::size_t positions = 0,
                                     const std::vector<std::string>& differ = {});

// The folder of a real tokenizer npm's @lenml/tokenizer-NAME@3.7.2 ships in the judge (models/: tokenizer.json and
// tokenizer_config.json), NAME one of llama2, llama3, qwen2_5, qwen3, gemma, gemma2, gemma3, mistral_nemo; empty when
// it is not installed (judge/package.json pins it).
std::filesystem::path shipped_tokenizer(const std::string& name);

// Texts that stress a tokenizer, for expect_tokenized_as_hf: `chat` first (a chat turn in the family's special
// tokens), then punctuation and digits, code with tabs and runs of spaces, CJK, Cyrillic and accented Latin (in NFC),
// whitespace runs with newlines, emoji and symbols.
std::vector<std::string> tokenizer_stress_texts(const std::string& chat);

// A family's real tokenizer through fuse: the shipped tokenizer `name` copied beside the checkpoint in `hf_dir` (with
// `name` empty, the tokenizer files already there), one
// `headfuse fuse hf_dir -o model`, then expects a `general.architecture` of `arch` and `n_tokens` tokens (padded to
// the embedding's rows), llama.cpp tokenizing `texts` as the reference does but for those in `differ`
// (expect_tokenized_as_hf, whose result goes to *judged when given), `inspect` and `verify model model` passing.
// Returns fuse's stderr (its warnings, one a line).
std::string expect_fused_with_real_tokenizer(const std::filesystem::path& hf_dir, const std::string& name,
                                             const std::string& model, const std::string& arch, std::size_t n_tokens,
                                             const std::vector<std::string>& texts,
                                             const std::vector<std::string>& differ = {},
                                             TokenizedEval* judged = nullptr);

// llama_eval.mjs --check: llama.cpp loads the model and evaluates three tokens. False with the judge's stderr
// in *why (when given) otherwise; never throws for a bad model.
bool llama_loads(const std::string& model, std::string* why = nullptr);

// @huggingface/gguf's reading of the file's header:
//   {"version", "tensor_count", "kv_count", "little_endian", "tensor_data_offset",
//    "metadata": {key: value}, "metadata_types": {key: "UINT32" | "FLOAT32" | "STRING" | "ARRAY[INT32]" ...},
//    "tensors": [{"name", "shape" (ggml order), "dtype" (ggml type id), "dtype_name", "offset", "nbytes"}]}
// Arrays longer than 16 elements appear as {"array_length": n} unless full_arrays. 64-bit integers beyond 2^53
// are decimal strings; NaN and infinities are strings. Throws std::runtime_error with the parser's message when
// the file does not parse (or is truncated, or has duplicate keys).
nlohmann::json hf_parse(const std::string& path, bool full_arrays = false);

}  // namespace headfuse::test

// In a test body: ends the test when the judges are missing, as a failure in CI and as a skip elsewhere.
#define HEADFUSE_REQUIRE_JUDGES()                                                                          \
    do {                                                                                                   \
        std::string headfuse_judges_why_;                                                                  \
        HEADFUSE_REQUIRE(::headfuse::test::judges_available(&headfuse_judges_why_), headfuse_judges_why_); \
    } while (0)
