// The headfuse commands' work: each one parses nothing, calls the library and prints. Their options are registered
// and checked in model_commands.cpp, read_commands.cpp and heads_commands.cpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "headfuse/checkpoint.h"
#include "headfuse/config.h"
#include "headfuse/gguf.h"
#include "headfuse/mix.h"
#include "headfuse/types.h"

namespace headfuse::cli {

struct Common {
    unsigned threads = 0;
    bool quiet = false;
    OutputOptions output;  // writing commands: alignment, and cutting the output into a split set
};

struct InitArgs {
    std::string out;
    Config config;
    std::uint64_t seed = 0;
};

struct FuseArgs {
    std::string in, out, tokenizer_from, config;
    std::optional<DType> type;
    std::optional<Mix> mix;
};

struct ExportArgs {
    std::string in, out, format = "hf", config;
    std::uint64_t max_shard_bytes = 5'000'000'000;
    std::optional<DType> dtype;  // --dtype: every tensor decoded to f32, f16 or bf16
    bool force = false;          // replace the checkpoint in a folder that is not empty
};

struct SplitArgs {
    std::string in, out;
};

struct InspectArgs {
    std::string file;
    bool json = false;
};

struct LogitsArgs {
    std::string model, config, out;
    std::vector<std::uint32_t> tokens;
    unsigned top = 5;
    std::uint32_t n_ctx = 0;  // --ctx: llama.cpp's context size (0: the model's original context)
};

struct VerifyArgs {
    std::string per_head, fused;
    std::vector<std::uint32_t> tokens;
    std::uint32_t n_ctx = 0;  // --ctx
};

// headfuse heads VERB: head surgery (ablate, prune, pool-kv, transplant) and scan.
struct HeadsArgs {
    std::string verb;  // "ablate", "prune", "pool-kv", "transplant", "scan"
    std::string in, out, heads, kv_groups, from, config, tokens_file, svg, scan;
    std::optional<DType> type;
    std::optional<Mix> mix;
    std::uint32_t kv_heads = 0;
    double lowest = 0;                                // prune --lowest: the fraction of heads to prune, by --scan
    std::string method = "exact", ablation = "zero";  // scan --method, --ablation
    std::uint32_t refine = 0;                         // scan --refine
    std::uint32_t n_ctx = 0;                          // scan --ctx
};

// A model to read, with its --config (empty: config.json beside the weights).
OpenedCheckpoint open_source(const std::string& in, const std::string& config);

// True if the two paths name one file: the same name, or the same file through a symbolic or hard link (also
// when neither exists yet but a link points at the other).
bool same_file(const std::filesystem::path& a, const std::filesystem::path& b);

// "model.gguf" or "model-00001-of-00003.gguf .. model-00003-of-00003.gguf (3 shards)", and their total size.
std::string written(const std::vector<std::filesystem::path>& files);

// Each returns the process exit code; errors are thrown as headfuse::Error.
int run_init(const InitArgs& a, const Common& c);
int run_fuse(const FuseArgs& a, const Common& c);
int run_split(const SplitArgs& a, const Common& c);
int run_export(const ExportArgs& a, const Common& c);
int run_inspect(const InspectArgs& a);
int run_logits(const LogitsArgs& a, const Common& c);
int run_verify(const VerifyArgs& a, const Common& c);
int run_heads(const HeadsArgs& a, const Common& c);

}  // namespace headfuse::cli
