// headfuse: the command line. Flags live here; the work lives in the library (commands.cpp calls it).
#include <cctype>
#include <csignal>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "headfuse/error.h"

using namespace headfuse;
using namespace headfuse::cli;

namespace {

std::string lowercase(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

// The --type values: every type headfuse writes, then llama.cpp's K-quant mixes.
std::string type_list() {
    std::string s;
    for (DType t : model_dtypes()) s += (s.empty() ? "" : "|") + lowercase(type_name(t));
    for (Mix m : all_mixes()) s += "|" + std::string(mix_name(m));
    return s;
}

// "1,2,3" -> {1, 2, 3}
std::vector<std::uint32_t> parse_tokens(const std::string& text) {
    std::vector<std::uint32_t> out;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        const std::size_t comma = std::min(text.find(',', pos), text.size());
        const std::string item = text.substr(pos, comma - pos);
        std::size_t used = 0;
        unsigned long long v = 0;
        try {
            v = std::stoull(item, &used);
        } catch (...) {
            used = 0;
        }
        if (item.empty() || used != item.size() || item[0] == '-' || v > UINT32_MAX)
            fail("--tokens: expected comma-separated token ids, found '" + item + "'");
        out.push_back(static_cast<std::uint32_t>(v));
        pos = comma + 1;
    }
    return out;
}

// An error as one line: names read from a file may hold newlines or terminal escapes; show those as \xNN.
std::string one_line(const char* message) {
    std::string s;
    for (const char* p = message; *p; ++p) {
        const auto c = static_cast<unsigned char>(*p);
        if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            s += buf;
        } else {
            s += *p;
        }
    }
    return s;
}

void add_common(CLI::App* cmd, Common& c, bool threads = true) {
    if (threads)
        cmd->add_option("--threads", c.threads, "Worker threads (default: all cores)")->check(CLI::Range(1u, 1024u));
    cmd->add_flag("-q,--quiet", c.quiet, "No progress bar");
}

// --split-max-size / --split-max-tensors on a command that writes a model: the output becomes a split set,
// PREFIX-00001-of-0000N.gguf ..., as llama-gguf-split writes it (-o PREFIX or -o PREFIX.gguf).
void add_split(CLI::App* cmd, std::string& max_size, std::uint64_t& max_tensors) {
    cmd->add_option("--split-max-size", max_size,
                    "Write a split set: at most N[M|G] of tensor data per shard (M = 10^6 bytes, G = 10^9), named "
                    "PREFIX-00001-of-0000N.gguf from -o PREFIX[.gguf]")
        ->type_name("N[M|G]");
    cmd->add_option("--split-max-tensors", max_tensors, "Write a split set: at most N tensors per shard")
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 31));
}

}  // namespace

int main(int argc, char** argv) {
    // A file-size limit must end in EFBIG and a clear error, not in a signal.
    std::signal(SIGXFSZ, SIG_IGN);

    CLI::App app{"headfuse: per-head LLaMA checkpoints to llama.cpp GGUF files and back, exactly."};
    app.set_version_flag("--version", "headfuse " HEADFUSE_VERSION);  // the project version, from CMake
    app.require_subcommand(1);
    app.footer("Run 'headfuse COMMAND --help' for a command's options.");
    Common common;

    InitArgs init;
    Config& cfg = init.config;
    auto* c_init =
        app.add_subcommand("init", "Write a randomly initialised per-head checkpoint (weights N(0, 0.02), norms 1)");
    c_init->add_option("-o,--output", init.out, "Output per-head GGUF file")->required();
    c_init->add_option("--d-model", cfg.d_model, "Model width")->required();
    c_init->add_option("--n-heads", cfg.n_heads, "Query heads")->required();
    c_init->add_option("--n-kv-heads", cfg.n_kv_heads, "Key/value heads (default: n-heads; 1 is MQA)");
    c_init->add_option("--d-head", cfg.d_head, "Head width (default: d-model / n-heads)");
    c_init->add_option("--d-ff", cfg.d_ff, "Feed-forward width")->required();
    c_init->add_option("--n-layers", cfg.n_layers, "Layers")->required();
    c_init->add_option("--vocab", cfg.vocab, "Vocabulary size")->required();
    c_init->add_option("--seed", init.seed, "Random seed (same seed, same bytes)")->capture_default_str();
    c_init->add_flag("--tied", cfg.tied, "Tie the output layer to token_embd (no output.weight)");
    c_init->add_option("--donor-d-in", cfg.donor_d_in,
                       "Train under a projection lens from a donor embedding of this width");
    c_init->add_option("--context", cfg.context_length, "Context length")->capture_default_str();
    c_init->add_option("--rms-eps", cfg.rms_eps, "RMSNorm epsilon")->capture_default_str();
    c_init->add_option("--rope-theta", cfg.rope_theta, "RoPE frequency base")->capture_default_str();
    std::string rope_scaling = "none";
    c_init->add_option("--rope-scaling", rope_scaling, "RoPE context scaling: none|linear|yarn")
        ->check(CLI::IsMember({"none", "linear", "yarn"}))
        ->capture_default_str();
    c_init->add_option("--rope-scaling-factor", cfg.rope_scaling_factor, "Context multiplier of linear or YaRN scaling")
        ->capture_default_str();
    c_init->add_option("--rope-original-context", cfg.rope_original_context,
                       "YaRN: the context length before scaling (default: --context)");
    add_common(c_init, common);
    std::string split_max_size;
    std::uint64_t split_max_tensors = 0;
    add_split(c_init, split_max_size, split_max_tensors);

    FuseArgs fuse;
    std::string fuse_type;
    auto* c_fuse =
        app.add_subcommand("fuse", "Per-head checkpoint -> llama.cpp GGUF (fused q/k/v, lens folded, tokenizer)");
    c_fuse->add_option("input", fuse.in, "Per-head GGUF checkpoint (or any shard of a split set)")->required();
    c_fuse->add_option("-o,--output", fuse.out, "Output llama.cpp GGUF file")->required();
    c_fuse->add_option("--type", fuse_type,
                       "Type of 2-D weights: " + type_list() +
                           " (a K-quant mix chooses per tensor as llama-quantize does; default: keep the input's)");
    c_fuse->add_option("--tokenizer-from", fuse.tokenizer_from,
                       "Tokenizer to write: a GGUF file's, or a Hugging Face folder's or tokenizer.json's, converted "
                       "(its size must match the vocabulary; checked as llama.cpp's loader checks it). Default: "
                       "the input's own, else a SentencePiece placeholder");
    add_common(c_fuse, common);
    add_split(c_fuse, split_max_size, split_max_tensors);

    SplitArgs split;
    auto* c_split = app.add_subcommand("split", "llama.cpp GGUF -> per-head checkpoint (byte-identical heads)");
    c_split->add_option("input", split.in, "Fused llama.cpp GGUF file (or any shard of a split set)")->required();
    c_split->add_option("-o,--output", split.out, "Output per-head GGUF checkpoint")->required();
    add_common(c_split, common, false);
    add_split(c_split, split_max_size, split_max_tensors);

    InspectArgs inspect;
    auto* c_inspect = app.add_subcommand("inspect", "Show a GGUF file's header, metadata and tensors");
    c_inspect->add_option("file", inspect.file, "GGUF file (a shard of a split set: the whole set)")->required();
    c_inspect->add_flag("--json", inspect.json, "Print JSON");

    LogitsArgs logits;
    std::string logits_tokens;
    auto* c_logits = app.add_subcommand("logits", "Run the reference forward pass on a per-head or fused file");
    c_logits->add_option("model", logits.model, "Per-head or fused GGUF file (or any shard of a split set)")
        ->required();
    c_logits->add_option("--tokens", logits_tokens, "Comma-separated token ids, e.g. 1,2,3")->required();
    c_logits->add_option("-o,--output", logits.out, "Write raw little-endian f32 logits (n_tokens x vocab) here");
    c_logits->add_option("--top", logits.top, "Without -o: show the top K tokens per position")->capture_default_str();
    add_common(c_logits, common);

    VerifyArgs verify;
    std::string verify_tokens;
    auto* c_verify =
        app.add_subcommand("verify", "Prove a fused file is its per-head checkpoint: every tensor and the logits");
    c_verify->add_option("per_head", verify.per_head, "Per-head GGUF checkpoint (or any shard of a split set)")
        ->required();
    c_verify->add_option("fused", verify.fused, "Fused llama.cpp GGUF file (or any shard of a split set)")->required();
    c_verify->add_option("--tokens", verify_tokens,
                         "Comma-separated token ids (default: 8 tokens across the vocabulary)");
    add_common(c_verify, common);
    c_verify->footer("Exit status: 0 the same model (PASS), 1 they differ (FAIL), 2 they could not be compared.");

    // verify answers as cmp does: 0 the same model, 1 they differ, 2 they could not be compared.
    const int failure = argc > 1 && std::string_view(argv[1]) == "verify" ? 2 : 1;
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int code = app.exit(e);
        return code == 0 ? 0 : failure;
    }

    try {
        if (!split_max_size.empty()) common.split.max_bytes = parse_split_size(split_max_size, "--split-max-size");
        common.split.max_tensors = split_max_tensors;
        if (*c_init) {
            if (!cfg.n_kv_heads) cfg.n_kv_heads = cfg.n_heads;
            if (!cfg.d_head && cfg.n_heads) cfg.d_head = cfg.d_model / cfg.n_heads;
            cfg.rope_scaling = rope_scaling == "yarn"     ? RopeScaling::Yarn
                               : rope_scaling == "linear" ? RopeScaling::Linear
                                                          : RopeScaling::None;
            return run_init(init, common);
        }
        if (*c_fuse) {
            if (!fuse_type.empty()) {
                fuse.type = parse_dtype(fuse_type);
                fuse.mix = parse_mix(fuse_type);
                if (!fuse.type && !fuse.mix)
                    fail("--type: expected one of " + type_list() + ", found '" + fuse_type + "'");
            }
            return run_fuse(fuse, common);
        }
        if (*c_split) return run_split(split, common);
        if (*c_inspect) return run_inspect(inspect);
        if (*c_logits) {
            logits.tokens = parse_tokens(logits_tokens);
            return run_logits(logits, common);
        }
        if (*c_verify) {
            if (!verify_tokens.empty()) verify.tokens = parse_tokens(verify_tokens);
            return run_verify(verify, common);
        }
    } catch (const Error& e) {
        std::fprintf(stderr, "headfuse: %s\n", one_line(e.what()).c_str());
        return failure;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "headfuse: out of memory\n");
        return failure;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "headfuse: %s\n", one_line(e.what()).c_str());
        return failure;
    }
    return failure;
}
