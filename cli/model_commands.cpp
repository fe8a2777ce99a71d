// The commands that write a model: init, fuse, split, export. Each registers its options and checks; the work is in
// commands.cpp (run_init ..), which calls the library.
#include <string>

#include "headfuse/error.h"
#include "options.h"

namespace headfuse::cli {
namespace {

// d_head and n_kv_heads when not given, and errors that say which values were derived.
void complete_config(Config& cfg, bool d_head_given, bool n_kv_given) {
    if (!n_kv_given) cfg.n_kv_heads = cfg.n_heads;
    std::string derived;
    if (!d_head_given) {
        if (cfg.d_model % cfg.n_heads != 0)
            throw Error(ErrorKind::InvalidArgument, "--d-head not given, and d_model " + std::to_string(cfg.d_model) +
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
        throw Error(e.kind(), m + (m.find("d_head") != std::string::npos ? derived : ""));
    }
}

class Init : public Command {
public:
    void add(CLI::App& parent) override {
        Flags& f = subcommand(parent, "init",
                              "Write a randomly initialised per-head checkpoint (weights N(0, 0.02), norms 1)");
        Config& cfg = args_.config;
        f.output("-o,--output", args_.out, "Output per-head GGUF file")->required();
        f.number("--d-model", cfg.d_model, 1, kMaxDim, "Model width")->required();
        f.number("--n-heads", cfg.n_heads, 1, kMaxHeads, "Query heads")->required();
        n_kv_ = f.number("--n-kv-heads", cfg.n_kv_heads, 1, kMaxHeads,
                         "Key/value heads, dividing n-heads (default: n-heads; 1 is MQA)");
        d_head_ = f.number("--d-head", cfg.d_head, 2, kMaxDim, "Head width, even (default: d-model / n-heads)");
        f.number("--d-ff", cfg.d_ff, 1, kMaxDim, "Feed-forward width")->required();
        f.number("--n-layers", cfg.n_layers, 1, kMaxLayers, "Layers")->required();
        f.number("--vocab", cfg.vocab, 1, kMaxVocab, "Vocabulary size")->required();
        f.number("--seed", args_.seed, 0, UINT64_MAX, "Random seed (same seed, same bytes; default: 0)");
        f.choice("--family", family_, {"llama", "qwen2", "qwen3", "phi3"},
                 "Architecture: llama|qwen2 (with q/k/v biases)|qwen3 (with q/k norms)|phi3 (fused as attn_qkv and "
                 "a gate/up ffn_up; n-heads * d-head = d-model) (default: llama)")
            ->type_name("FAMILY");
        f.flag("--tied", cfg.tied, "Tie the output layer to token_embd (no output.weight)");
        f.number("--donor-d-in", cfg.donor_d_in, 1, kMaxDim,
                 "Train under a projection lens from a donor embedding of this width");
        f.number("--context", cfg.context_length, 1, kMaxContext,
                 "Context length (default: " + std::to_string(cfg.context_length) + ")");
        f.positive("--rms-eps", cfg.rms_eps, "RMSNorm epsilon (default: 1e-05)");
        f.positive("--rope-theta", cfg.rope_theta, "RoPE frequency base (default: 10000)");
        f.choice("--rope-scaling", rope_scaling_, {"none", "linear", "yarn"},
                 "RoPE context scaling: none|linear|yarn (default: none)")
            ->type_name("KIND");
        f.positive("--rope-scaling-factor", cfg.rope_scaling_factor,
                   "Context multiplier of linear or YaRN scaling (default: 1)");
        f.number("--rope-original-context", cfg.rope_original_context, 1, kMaxContext,
                 "YaRN: the context length before scaling (default: --context)");
        f.common(common_);
        f.output_options(common_);
    }
    int run() override {
        Config& cfg = args_.config;
        cfg.rope_scaling = rope_scaling_ == "yarn"     ? RopeScaling::Yarn
                           : rope_scaling_ == "linear" ? RopeScaling::Linear
                                                       : RopeScaling::None;
        complete_config(cfg, d_head_->count() > 0, n_kv_->count() > 0);
        // The family's row, with the roles its Hugging Face model always has: qwen2's q/k/v biases, qwen3's q/k
        // norms (which its llama.cpp loader requires).
        const ArchSpec& row = *find_arch(family_);
        cfg.family = row.family;
        for (const Role r : {Role::AttnQBias, Role::AttnKBias, Role::AttnVBias, Role::AttnQNorm, Role::AttnKNorm})
            if (row.required_roles.contains(r) || (row.family == Family::Qwen2 && row.allowed_roles.contains(r)))
                cfg.optional_roles.insert(r);
        return run_init(args_, common_);
    }

private:
    InitArgs args_;
    Common common_;
    std::string rope_scaling_ = "none";
    std::string family_ = "llama";
    CLI::Option* n_kv_ = nullptr;
    CLI::Option* d_head_ = nullptr;
};

class Fuse : public Command {
public:
    void add(CLI::App& parent) override {
        Flags& f =
            subcommand(parent, "fuse", "Per-head checkpoint -> llama.cpp GGUF (fused q/k/v, lens folded, tokenizer)");
        f.positional("input", args_.in, "PATH",
                     "Per-head or fused GGUF file (or any shard of a split set), .safetensors file, "
                     "model.safetensors.index.json, or a folder with config.json and the weights (Hugging Face, "
                     "TransformerLens or headfuse names)");
        f.output("-o,--output", args_.out, "Output llama.cpp GGUF file")->required();
        type_ = f.text(
            "--type", type_text_,
            "Type of 2-D weights: " + type_list() +
                " (a K-quant mix chooses per tensor as llama-quantize does; f32, f16 or bf16 decode an encoded input, "
                "which then carries its quantization error; default: keep the input's)");
        type_->type_name("TYPE");
        f.text("--tokenizer-from", args_.tokenizer_from,
               "Tokenizer to write: a GGUF file's, or converted from a Hugging Face folder, tokenizer.json or "
               "SentencePiece tokenizer.model (a converted one is padded to the model's vocabulary as llama.cpp's "
               "converter pads it, a GGUF file's must match it; checked as llama.cpp's loader checks it; the Hugging "
               "Face files are kept in the GGUF for export). Default: the "
               "input's own (a Hugging Face folder's tokenizer.json or tokenizer.model), else a "
               "SentencePiece placeholder")
            ->type_name("FILE");
        f.text("--config", args_.config,
               "Hyperparameters of a safetensors checkpoint (default: config.json beside the weights)")
            ->type_name("FILE");
        f.common(common_);
        f.output_options(common_);
    }
    int run() override {
        if (type_->count() > 0) parse_type("--type", type_text_, args_.type, args_.mix);
        return run_fuse(args_, common_);
    }

private:
    FuseArgs args_;
    Common common_;
    std::string type_text_;
    CLI::Option* type_ = nullptr;
};

class Split : public Command {
public:
    void add(CLI::App& parent) override {
        Flags& f = subcommand(parent, "split", "llama.cpp GGUF -> per-head checkpoint (byte-identical heads)");
        f.positional("input", args_.in, "FILE", "Fused llama.cpp GGUF file (or any shard of a split set)");
        f.output("-o,--output", args_.out, "Output per-head GGUF checkpoint")->required();
        f.common(common_, false);
        f.output_options(common_);
    }
    int run() override { return run_split(args_, common_); }

private:
    SplitArgs args_;
    Common common_;
};

class Export : public Command {
public:
    void add(CLI::App& parent) override {
        Flags& f = subcommand(parent, "export",
                              "Any model -> safetensors in Hugging Face or TransformerLens layout (config.json, "
                              "weights, and the tokenizer files a GGUF converted from them keeps)");
        f.positional("input", args_.in, "PATH", "GGUF file (per-head or fused) or safetensors checkpoint");
        f.output("-o,--output", args_.out, "Output folder")->required()->type_name("DIR");
        f.choice("--format", args_.format, {"hf", "transformer-lens"}, "hf|transformer-lens (default: hf)")
            ->type_name("FORMAT");
        f.size("--max-shard-size", args_.max_shard_bytes,
               std::string("At most SIZE per safetensors file; more go to shards with an index (") + kSizeHelp +
                   "; default: 5G)");
        f.text("--config", args_.config, "Hyperparameters of a safetensors input")->type_name("FILE");
        f.choice("--dtype", dtype_, {"f32", "f16", "bf16"},
                 "f32|f16|bf16: write every tensor in this type, decoding an encoded model's weights (the result "
                 "carries their quantization error; default: keep each tensor's f32, f16 or bf16)")
            ->type_name("TYPE");
        f.flag("--force", args_.force,
               "Write into a folder that is not empty: its checkpoint files (config.json, weights, index, "
               "tokenizer files) are replaced as a whole, those the new checkpoint lacks removed");
        f.common(common_, false);
    }
    int run() override {
        if (!dtype_.empty()) args_.dtype = parse_dtype(dtype_);
        return run_export(args_, common_);
    }

private:
    std::string dtype_;
    ExportArgs args_;
    Common common_;
};

}  // namespace

void add_model_commands(std::vector<std::unique_ptr<Command>>& commands) {
    commands.push_back(std::make_unique<Init>());
    commands.push_back(std::make_unique<Fuse>());
    commands.push_back(std::make_unique<Export>());
    commands.push_back(std::make_unique<Split>());
}

}  // namespace headfuse::cli
