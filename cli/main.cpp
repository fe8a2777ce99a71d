// headfuse: the command line. Flags live here; the work lives in the library (commands.cpp calls it).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "headfuse/error.h"
#include "headfuse/text.h"
#include "signals.h"

using namespace headfuse;
using namespace headfuse::cli;

namespace {

const char* const kCommands[] = {"init", "fuse", "split", "export", "inspect", "logits", "verify", "heads"};

std::string lowercase(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

// The --type values of head edits: every type headfuse writes (no mixes: an edit keeps the input's mix).
std::string lowercase_types() {
    std::string s;
    for (DType t : writable_dtypes()) {
        if (!s.empty()) s += '|';
        s += lowercase(type_name(t));
    }
    return s;
}

// The --type values: every type headfuse writes, then llama.cpp's K-quant mixes.
std::string type_list() {
    std::string s = lowercase_types();
    for (Mix m : all_mixes()) {
        s += '|';
        s += mix_name(m);
    }
    return s;
}

// Numbers are decimal everywhere: "010" is ten and "0x10" an error (CLI11 alone would read them as octal and
// hex), and each is checked against its range, zero included, before anything runs.
std::uint64_t parse_decimal(const std::string& flag, const std::string& text, std::uint64_t lo, std::uint64_t hi) {
    const bool digits = !text.empty() && text.size() <= 20 &&
                        std::all_of(text.begin(), text.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
    errno = 0;
    const unsigned long long v = digits ? std::strtoull(text.c_str(), nullptr, 10) : 0;
    if (!digits || errno == ERANGE || v < lo || v > hi)
        fail(ErrorKind::InvalidArgument, flag + ": expected a decimal whole number from " + std::to_string(lo) +
                                             " to " + std::to_string(hi) + ", found '" + text + "'");
    return v;
}

// A positive, finite decimal number ("1e-5", "10000"); no hex floats, infinities or NaN.
float parse_positive(const std::string& flag, const std::string& text) {
    const bool plain = !text.empty() && text.find_first_not_of("0123456789.eE+-") == std::string::npos;
    char* end = nullptr;
    errno = 0;
    const float v = plain ? std::strtof(text.c_str(), &end) : 0.0f;
    if (!plain || end != text.c_str() + text.size() || errno == ERANGE || !(v > 0) || !std::isfinite(v))
        fail(ErrorKind::InvalidArgument, flag + ": expected a positive decimal number, found '" + text + "'");
    return v;
}

// "1,2,3" -> {1, 2, 3}
std::vector<std::uint32_t> parse_tokens(const std::string& text) {
    std::vector<std::uint32_t> out;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        const std::size_t comma = std::min(text.find(',', pos), text.size());
        const std::string item = text.substr(pos, comma - pos);
        const bool digits = !item.empty() && item.find_first_not_of("0123456789") == std::string::npos;
        if (!digits)
            fail(ErrorKind::InvalidArgument,
                 "--tokens: expected comma-separated decimal token ids, found '" + item + "'");
        out.push_back(static_cast<std::uint32_t>(parse_decimal("--tokens", item, 0, UINT32_MAX)));
        pos = comma + 1;
    }
    return out;
}

// An error as one line: names read from a file may hold newlines, terminal escapes or bytes that are not UTF-8;
// they are shown escaped ("\x0a", see printable()).
std::string one_line(const char* message) { return printable(message, false, false); }

// Flags whose values are read as text and converted after parsing, so that every number goes through
// parse_decimal or parse_positive and every file name is checked the same way.
class Deferred {
public:
    // A whole-number flag in [lo, hi], stored in `target` when given.
    template <class T>
    CLI::Option* number(CLI::App* cmd, const std::string& names, T& target, std::uint64_t lo, std::uint64_t hi,
                        const std::string& help) {
        Item& it = items_.emplace_back();
        it.cmd = cmd;
        it.opt = cmd->add_option(names, it.text, help)->type_name("N");
        it.apply = [&target, lo, hi](const std::string& flag, const std::string& text) {
            target = static_cast<T>(parse_decimal(flag, text, lo, hi));
        };
        return it.opt;
    }
    CLI::Option* positive(CLI::App* cmd, const std::string& names, float& target, const std::string& help) {
        Item& it = items_.emplace_back();
        it.cmd = cmd;
        it.opt = cmd->add_option(names, it.text, help)->type_name("X");
        it.apply = [&target](const std::string& flag, const std::string& text) { target = parse_positive(flag, text); };
        return it.opt;
    }
    // A file to write: a name, not empty and not "-" (headfuse writes files, not standard output).
    CLI::Option* output(CLI::App* cmd, std::string& target, const std::string& help) {
        Item& it = items_.emplace_back();
        it.cmd = cmd;
        it.opt = cmd->add_option("-o,--output", it.text, help)->type_name("FILE");
        it.apply = [&target](const std::string& flag, const std::string& text) {
            if (text.empty()) fail(ErrorKind::InvalidArgument, flag + ": expected a file name, found ''");
            if (text == "-")
                fail(ErrorKind::InvalidArgument,
                     flag +
                         ": headfuse writes files, not standard output; give a file name ('./-' for a file "
                         "named '-')");
            target = text;
        };
        return it.opt;
    }
    // Converts the flags of `cmd` that were given.
    void apply(const CLI::App* cmd) {
        for (Item& it : items_)
            if (it.cmd == cmd && it.opt->count() > 0) it.apply(it.opt->get_name(), it.text);
    }

private:
    struct Item {
        const CLI::App* cmd = nullptr;
        CLI::Option* opt = nullptr;
        std::string text;
        std::function<void(const std::string&, const std::string&)> apply;
    };
    std::deque<Item> items_;  // stable addresses: CLI11 holds pointers to `text`
};

void add_common(CLI::App* cmd, Deferred& d, Common& c, bool threads = true) {
    if (threads) d.number(cmd, "--threads", c.threads, 1, 1024, "Worker threads, 1 to 1024 (default: all cores)");
    cmd->add_flag("-q,--quiet", c.quiet, "No progress bar");
}

// The layout of a command that writes a model: --alignment, and --split-max-size / --split-max-tensors, with
// which the output becomes a split set, PREFIX-00001-of-0000N.gguf ..., as llama-gguf-split writes it (-o PREFIX
// or -o PREFIX.gguf).
void add_layout(CLI::App* cmd, Deferred& d, std::uint32_t& alignment, std::string& max_size,
                std::uint64_t& max_tensors) {
    d.number(cmd, "--alignment", alignment, 1, std::uint64_t{1} << 30,
             "Tensor data alignment, a power of two (default: 32, what llama.cpp's tools expect: llama-quantize "
             "keeps a file's alignment key but pads its output to 32, so its output of a file with another "
             "alignment does not load)");
    cmd->add_option("--split-max-size", max_size,
                    "Write a split set: at most N[M|G] of tensor data per shard (M = 10^6 bytes, G = 10^9), named "
                    "PREFIX-00001-of-0000N.gguf from -o PREFIX[.gguf]")
        ->type_name("N[M|G]");
    d.number(cmd, "--split-max-tensors", max_tensors, 1, std::uint64_t{1} << 31,
             "Write a split set: at most N tensors per shard");
}

// d_head and n_kv_heads when not given, and errors that say which values were derived.
void complete_config(Config& cfg, bool d_head_given, bool n_kv_given) {
    if (!n_kv_given) cfg.n_kv_heads = cfg.n_heads;
    std::string derived;
    if (!d_head_given) {
        if (cfg.d_model % cfg.n_heads != 0)
            fail(ErrorKind::InvalidArgument, "--d-head not given, and d_model " + std::to_string(cfg.d_model) +
                                                 " is not a multiple of n_heads " + std::to_string(cfg.n_heads) +
                                                 " (d_head defaults to d_model / n_heads): pass --d-head");
        cfg.d_head = cfg.d_model / cfg.n_heads;
        derived = " (d_head " + std::to_string(cfg.d_head) + " = d_model " + std::to_string(cfg.d_model) +
                  " / n_heads " + std::to_string(cfg.n_heads) + ", as --d-head was not given)";
    }
    try {
        cfg.validate();
    } catch (const Error& e) {
        const std::string m = e.what();
        fail(e.kind(), m + (m.find("d_head") != std::string::npos ? derived : ""));
    }
}

}  // namespace

int main(int argc, char** argv) {
    // A file-size limit must end in EFBIG and a clear error, not in a signal.
    std::signal(SIGXFSZ, SIG_IGN);
    headfuse::cli::install_stop_handlers();

    CLI::App app{"headfuse: per-head LLaMA checkpoints to llama.cpp GGUF files and back, exactly."};
    app.name("headfuse");
    app.set_version_flag("--version", "headfuse " HEADFUSE_VERSION);  // the project version, from CMake
    app.require_subcommand(1);
    app.footer("Run 'headfuse COMMAND --help' for a command's options.");
    Common common;
    Deferred deferred;

    InitArgs init;
    Config& cfg = init.config;
    auto* c_init =
        app.add_subcommand("init", "Write a randomly initialised per-head checkpoint (weights N(0, 0.02), norms 1)");
    deferred.output(c_init, init.out, "Output per-head GGUF file")->required();
    deferred.number(c_init, "--d-model", cfg.d_model, 1, kMaxDim, "Model width")->required();
    deferred.number(c_init, "--n-heads", cfg.n_heads, 1, kMaxHeads, "Query heads")->required();
    auto* n_kv = deferred.number(c_init, "--n-kv-heads", cfg.n_kv_heads, 1, kMaxHeads,
                                 "Key/value heads, dividing n-heads (default: n-heads; 1 is MQA)");
    auto* d_head =
        deferred.number(c_init, "--d-head", cfg.d_head, 2, kMaxDim, "Head width, even (default: d-model / n-heads)");
    deferred.number(c_init, "--d-ff", cfg.d_ff, 1, kMaxDim, "Feed-forward width")->required();
    deferred.number(c_init, "--n-layers", cfg.n_layers, 1, kMaxLayers, "Layers")->required();
    deferred.number(c_init, "--vocab", cfg.vocab, 1, kMaxVocab, "Vocabulary size")->required();
    deferred.number(c_init, "--seed", init.seed, 0, UINT64_MAX, "Random seed (same seed, same bytes; default: 0)");
    c_init->add_flag("--tied", cfg.tied, "Tie the output layer to token_embd (no output.weight)");
    deferred.number(c_init, "--donor-d-in", cfg.donor_d_in, 1, kMaxDim,
                    "Train under a projection lens from a donor embedding of this width");
    deferred.number(c_init, "--context", cfg.context_length, 1, kMaxContext,
                    "Context length (default: " + std::to_string(cfg.context_length) + ")");
    deferred.positive(c_init, "--rms-eps", cfg.rms_eps, "RMSNorm epsilon (default: 1e-05)");
    deferred.positive(c_init, "--rope-theta", cfg.rope_theta, "RoPE frequency base (default: 10000)");
    std::string rope_scaling = "none";
    c_init->add_option("--rope-scaling", rope_scaling, "RoPE context scaling: none|linear|yarn (default: none)")
        ->check(CLI::IsMember({"none", "linear", "yarn"}))
        ->type_name("KIND");
    deferred.positive(c_init, "--rope-scaling-factor", cfg.rope_scaling_factor,
                      "Context multiplier of linear or YaRN scaling (default: 1)");
    deferred.number(c_init, "--rope-original-context", cfg.rope_original_context, 1, kMaxContext,
                    "YaRN: the context length before scaling (default: --context)");
    add_common(c_init, deferred, common);
    std::uint32_t alignment = kDefaultAlignment;
    std::string split_max_size;
    std::uint64_t split_max_tensors = 0;
    add_layout(c_init, deferred, alignment, split_max_size, split_max_tensors);

    FuseArgs fuse;
    std::string fuse_type;
    auto* c_fuse =
        app.add_subcommand("fuse", "Per-head checkpoint -> llama.cpp GGUF (fused q/k/v, lens folded, tokenizer)");
    c_fuse
        ->add_option("input", fuse.in,
                     "Per-head or fused GGUF file (or any shard of a split set), .safetensors file, "
                     "model.safetensors.index.json, or a folder with config.json and the weights (Hugging Face, "
                     "TransformerLens or headfuse names)")
        ->required()
        ->type_name("PATH");
    deferred.output(c_fuse, fuse.out, "Output llama.cpp GGUF file")->required();
    auto* type_opt = c_fuse
                         ->add_option("--type", fuse_type,
                                      "Type of 2-D weights: " + type_list() +
                                          " (a K-quant mix chooses per tensor as llama-quantize does; default: keep "
                                          "the input's)")
                         ->type_name("TYPE");
    c_fuse
        ->add_option("--tokenizer-from", fuse.tokenizer_from,
                     "Tokenizer to write: a GGUF file's, or converted from a Hugging Face folder, tokenizer.json or "
                     "SentencePiece tokenizer.model (its size must match the vocabulary; checked as llama.cpp's "
                     "loader checks it; the Hugging Face files are kept in the GGUF for export). Default: the "
                     "input's own (a Hugging Face folder's tokenizer.json or tokenizer.model), else a "
                     "SentencePiece placeholder")
        ->type_name("FILE");
    c_fuse
        ->add_option("--config", fuse.config,
                     "Hyperparameters of a safetensors checkpoint (default: config.json beside the weights)")
        ->type_name("FILE");
    add_common(c_fuse, deferred, common);
    add_layout(c_fuse, deferred, alignment, split_max_size, split_max_tensors);

    ExportArgs exp;
    auto* c_export = app.add_subcommand(
        "export",
        "Any model -> safetensors in Hugging Face or TransformerLens layout (config.json, weights, and the "
        "tokenizer files a GGUF converted from them keeps)");
    c_export->add_option("input", exp.in, "GGUF file (per-head or fused) or safetensors checkpoint")
        ->required()
        ->type_name("PATH");
    deferred.output(c_export, exp.out, "Output folder")->required()->type_name("DIR");
    c_export->add_option("--format", exp.format, "hf|transformer-lens (default: hf)")
        ->check(CLI::IsMember({"hf", "transformer-lens"}))
        ->type_name("FORMAT");
    deferred.number(c_export, "--max-shard-size", exp.max_shard_bytes, 1, UINT64_MAX,
                    "Bytes per safetensors file; more go to shards with an index (default: 5000000000)");
    c_export->add_option("--config", exp.config, "Hyperparameters of a safetensors input")->type_name("FILE");
    c_export->add_flag("--force", exp.force,
                       "Write into a folder that is not empty: its checkpoint files (config.json, weights, index, "
                       "tokenizer files) are replaced as a whole, those the new checkpoint lacks removed");
    add_common(c_export, deferred, common, false);

    SplitArgs split;
    auto* c_split = app.add_subcommand("split", "llama.cpp GGUF -> per-head checkpoint (byte-identical heads)");
    c_split->add_option("input", split.in, "Fused llama.cpp GGUF file (or any shard of a split set)")
        ->required()
        ->type_name("FILE");
    deferred.output(c_split, split.out, "Output per-head GGUF checkpoint")->required();
    add_common(c_split, deferred, common, false);
    add_layout(c_split, deferred, alignment, split_max_size, split_max_tensors);

    InspectArgs inspect;
    auto* c_inspect = app.add_subcommand("inspect", "Show a GGUF file's header, metadata and tensors");
    c_inspect->add_option("file", inspect.file, "GGUF file (a shard of a split set: the whole set)")
        ->required()
        ->type_name("FILE");
    c_inspect->add_flag("--json", inspect.json, "Print JSON");

    LogitsArgs logits;
    std::string logits_tokens;
    auto* c_logits = app.add_subcommand("logits", "Run the reference forward pass on a per-head or fused file");
    c_logits->add_option("model", logits.model, "Per-head or fused GGUF file (or any shard of a split set)")
        ->required()
        ->type_name("FILE");
    c_logits->add_option("--tokens", logits_tokens, "Comma-separated token ids, e.g. 1,2,3")
        ->required()
        ->type_name("IDS");
    auto* logits_out =
        deferred.output(c_logits, logits.out, "Write raw little-endian f32 logits (n_tokens x vocab) here");
    auto* top = deferred.number(c_logits, "--top", logits.top, 1, kMaxVocab,
                                "Without -o: show the top K tokens per position (default: 5)");
    add_common(c_logits, deferred, common);

    VerifyArgs verify;
    std::string verify_tokens;
    auto* c_verify =
        app.add_subcommand("verify", "Prove a fused file is its per-head checkpoint: every tensor and the logits");
    c_verify->add_option("per_head", verify.per_head, "Per-head GGUF checkpoint (or any shard of a split set)")
        ->required()
        ->type_name("FILE");
    c_verify->add_option("fused", verify.fused, "Fused llama.cpp GGUF file (or any shard of a split set)")
        ->required()
        ->type_name("FILE");
    auto* verify_tokens_opt = c_verify
                                  ->add_option("--tokens", verify_tokens,
                                               "Comma-separated token ids (default: 8 tokens across the vocabulary)")
                                  ->type_name("IDS");
    add_common(c_verify, deferred, common);
    c_verify->footer(
        "Exit status: 0 the same model (PASS), 1 they differ (FAIL), 2 they could not be compared.\n"
        "Weights in a type headfuse carries but does not decode (the iq1/iq2/iq3 types, tq1_0, tq2_0, mxfp4) are "
        "compared byte for byte and the logits are not computed (with --tokens, verify exits 2).");

    // heads: one subcommand per verb, sharing the source, output and type flags.
    HeadsArgs heads;
    std::string heads_type;
    std::string heads_lowest;
    auto* c_heads = app.add_subcommand(
        "heads",
        "Head surgery on any model headfuse reads: ablate, prune, pool-kv, transplant; scan which heads matter");
    c_heads->require_subcommand(1);
    c_heads->footer(
        "Heads are LAYER:HEAD, counted from 0 (3:1 is layer 3's query head 1). Outputs are llama.cpp GGUF files; "
        "every tensor an edit does not touch keeps its bytes. See docs/SURGERY.md.");
    std::vector<std::pair<CLI::App*, CLI::Option*>> heads_types;
    auto heads_verb = [&](const std::string& name, const std::string& help, bool writes) {
        auto* cmd = c_heads->add_subcommand(name, help);
        cmd->add_option("input", heads.in,
                        "Per-head or fused GGUF file, .safetensors file, model.safetensors.index.json, or a "
                        "Hugging Face / TransformerLens folder")
            ->required()
            ->type_name("PATH");
        cmd->add_option("--config", heads.config, "Hyperparameters of a safetensors input")->type_name("FILE");
        if (writes) {
            deferred.output(cmd, heads.out, "Output llama.cpp GGUF file")->required();
            add_layout(cmd, deferred, alignment, split_max_size, split_max_tensors);
            heads_types.emplace_back(
                cmd, cmd->add_option("--type", heads_type,
                                     "Type of 2-D weights: " + lowercase_types() + " (default: keep the input's)")
                         ->type_name("TYPE"));
        }
        add_common(cmd, deferred, common);
        return cmd;
    };
    auto* h_ablate = heads_verb("ablate", "Remove heads' contributions: zero their columns of attn_output", true);
    h_ablate->add_option("--heads", heads.heads, "Heads to ablate: LAYER:HEAD[,LAYER:HEAD...]")
        ->required()
        ->type_name("HEADS");
    auto* h_prune = heads_verb(
        "prune", "Remove heads (a kv head goes with its last query head); equal counts per layer stay llama", true);
    h_prune->add_option("--heads", heads.heads, "Query heads to remove: LAYER:HEAD[,...]")->type_name("HEADS");
    h_prune->add_option("--kv-groups", heads.kv_groups, "Whole kv groups to remove: LAYER:GROUP[,...]")
        ->type_name("GROUPS");
    auto* h_lowest = h_prune
                         ->add_option("--lowest", heads_lowest,
                                      "With --scan: prune this fraction (0 to 1) of the heads with the lowest delta "
                                      "(ablation raised the loss least or lowered it most), the same number in every "
                                      "layer (and kv group)")
                         ->type_name("FRACTION");
    auto* h_scan_in = h_prune->add_option("--scan", heads.scan, "A scan JSON written by 'heads scan -o' on this model")
                          ->type_name("FILE");
    auto* h_pool = heads_verb("pool-kv", "Multi-head to grouped-query: mean-pool each group's key/value heads", true);
    deferred
        .number(h_pool, "--kv-heads", heads.kv_heads, 1, kMaxHeads, "Key/value heads to keep, dividing the model's")
        ->required();
    auto* h_transplant = heads_verb(
        "transplant",
        "Copy heads from another model of the same widths (Q rows, attn_output columns, whole K/V groups)", true);
    h_transplant->add_option("--from", heads.from, "The donor model")->required()->type_name("PATH");
    h_transplant
        ->add_option("--heads", heads.heads,
                     "Heads to replace: LAYER:HEAD[=DONOR_LAYER:DONOR_HEAD][,...] (default: the same head)")
        ->required()
        ->type_name("MOVES");
    auto* h_scan = heads_verb(
        "scan", "Which heads matter: the change of the mean next-token loss when each head is ablated", false);
    h_scan
        ->add_option("--tokens-file", heads.tokens_file,
                     "Token ids, decimal, separated by commas or spaces (at least 2)")
        ->required()
        ->type_name("FILE");
    deferred.output(h_scan, heads.scan, "Write the scan as JSON (for 'heads prune --lowest F --scan')");
    h_scan
        ->add_option("--svg", heads.svg,
                     "Write the scan as an SVG figure: layers x heads, colour bar in nats, kv groups marked")
        ->type_name("FILE");

    // verify answers as cmp does: 0 the same model, 1 they differ, 2 they could not be compared.
    const int failure = argc > 1 && std::string_view(argv[1]) == "verify" ? 2 : 1;

    // An unknown command is named, not reported as a missing one.
    if (argc > 1 && argv[1][0] != '-' && std::find_if(std::begin(kCommands), std::end(kCommands), [&](const char* c) {
                                             return std::string(c) == argv[1];
                                         }) == std::end(kCommands)) {
        std::fprintf(stderr,
                     "headfuse: unknown command '%s'; the commands are init, fuse, split, export, inspect, "
                     "logits, verify, heads (see 'headfuse --help')\n",
                     one_line(argv[1]).c_str());
        return failure;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
        std::string where = "headfuse";
        if (argc > 1 && argv[1][0] != '-') where += " " + std::string(argv[1]);
        std::string message = e.what();
        if (message == "A subcommand is required") message = "a command is required";
        std::fprintf(stderr, "headfuse: %s (see '%s --help')\n", one_line(message.c_str()).c_str(), where.c_str());
        return failure;
    }

    try {
        for (const CLI::App* cmd : app.get_subcommands()) {
            deferred.apply(cmd);
            for (const CLI::App* verb : cmd->get_subcommands()) deferred.apply(verb);  // heads VERB
        }
        if (!split_max_size.empty())
            common.output.shards.max_bytes = parse_split_size(split_max_size, "--split-max-size");
        common.output.shards.max_tensors = split_max_tensors;
        if ((alignment & (alignment - 1)) != 0)
            fail(ErrorKind::InvalidArgument,
                 "--alignment: expected a power of two, found " + std::to_string(alignment));
        common.output.alignment = alignment;
        if (*c_init) {
            cfg.rope_scaling = rope_scaling == "yarn"     ? RopeScaling::Yarn
                               : rope_scaling == "linear" ? RopeScaling::Linear
                                                          : RopeScaling::None;
            complete_config(cfg, d_head->count() > 0, n_kv->count() > 0);
            return run_init(init, common);
        }
        if (*c_fuse) {
            if (type_opt->count() > 0) {
                fuse.type = parse_dtype(fuse_type);
                fuse.mix = parse_mix(fuse_type);
                if (!fuse.type && !fuse.mix)
                    fail(ErrorKind::InvalidArgument,
                         "--type: expected one of " + type_list() + ", found '" + fuse_type + "'");
            }
            return run_fuse(fuse, common);
        }
        if (*c_split) return run_split(split, common);
        if (*c_export) return run_export(exp, common);
        if (*c_inspect) return run_inspect(inspect);
        if (*c_logits) {
            if (top->count() > 0 && logits_out->count() > 0)
                fail(ErrorKind::InvalidArgument,
                     "--top chooses the rows of the table, and -o writes every logit instead: give one of them");
            logits.tokens = parse_tokens(logits_tokens);
            return run_logits(logits, common);
        }
        if (*c_heads) {
            const CLI::App* verb = c_heads->get_subcommands().front();
            heads.verb = verb->get_name();
            for (const auto& [cmd, opt] : heads_types)
                if (cmd == verb && opt->count() > 0) {
                    heads.type = parse_dtype(heads_type);
                    if (!heads.type)
                        fail(ErrorKind::InvalidArgument,
                             "--type: expected one of " + lowercase_types() + ", found '" + heads_type + "'");
                }
            if (verb == h_prune) {
                if ((h_lowest->count() > 0) != (h_scan_in->count() > 0))
                    fail(ErrorKind::InvalidArgument,
                         "--lowest and --scan go together: --scan names the scan, --lowest the fraction to prune");
                if (h_lowest->count() > 0) {
                    const float f = parse_positive("--lowest", heads_lowest);
                    if (f >= 1.0f)
                        fail(ErrorKind::InvalidArgument,
                             "--lowest: expected a fraction below 1, found '" + heads_lowest + "'");
                    heads.lowest = f;
                }
                if (heads.heads.empty() && heads.kv_groups.empty() && h_scan_in->count() == 0)
                    fail(ErrorKind::InvalidArgument, "heads prune: give --heads, --kv-groups or --lowest with --scan");
            }
            if (!heads.svg.empty() && heads.svg == "-")
                fail(ErrorKind::InvalidArgument, "--svg: headfuse writes files, not standard output");
            return run_heads(heads, common);
        }
        if (*c_verify) {
            if (verify_tokens_opt->count() > 0) verify.tokens = parse_tokens(verify_tokens);
            return run_verify(verify, common);
        }
    } catch (const Error& e) {
        std::fprintf(stderr, "headfuse: %s\n", one_line(e.what()).c_str());
        headfuse::cli::end_if_stopped();
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
