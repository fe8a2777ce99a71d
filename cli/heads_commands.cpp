// headfuse heads VERB: one command per verb (ablate, prune, pool-kv, transplant, scan), sharing the source, output
// and type options. The work is in heads.cpp (run_heads), which calls the library.
#include <string>
#include <vector>

#include "headfuse/error.h"
#include "options.h"

namespace headfuse::cli {
namespace {

// What every verb has: the model to read and its --config, and for the verbs that write a model, -o, the output
// options and --type.
class Verb : public Command {
public:
    int run() override {
        args_.verb = app_->get_name();
        if (type_ != nullptr && type_->count() > 0) parse_type("--type", type_text_, args_.type, args_.mix);
        check();
        return run_heads(args_, common_);
    }

protected:
    Flags& verb(CLI::App& parent, const std::string& name, const std::string& help, bool writes) {
        Flags& f = subcommand(parent, name, help);
        f.positional("input", args_.in, "PATH",
                     "Per-head or fused GGUF file, .safetensors file, model.safetensors.index.json, or a Hugging "
                     "Face / TransformerLens folder");
        f.text("--config", args_.config, "Hyperparameters of a safetensors input")->type_name("FILE");
        if (writes) {
            f.output("-o,--output", args_.out, "Output llama.cpp GGUF file")->required();
            f.output_options(common_);
            type_ = f.text("--type", type_text_,
                           "Type of 2-D weights: " + type_list() +
                               " (a K-quant mix chooses per tensor as llama-quantize does; default: keep the "
                               "input's)");
            type_->type_name("TYPE");
        }
        f.common(common_);
        return f;
    }
    // The verb's own checks, after its options are converted.
    virtual void check() {}

    HeadsArgs args_;
    Common common_;
    std::string type_text_;
    CLI::Option* type_ = nullptr;
};

class Ablate : public Verb {
public:
    void add(CLI::App& parent) override {
        Flags& f = verb(parent, "ablate", "Remove heads' contributions: zero their columns of attn_output", true);
        f.list("--heads", args_.heads, "0:1,1:2", "Heads to ablate: LAYER:HEAD[,LAYER:HEAD...]")
            ->required()
            ->type_name("HEADS");
    }
};

class Prune : public Verb {
public:
    void add(CLI::App& parent) override {
        Flags& f = verb(parent, "prune",
                        "Remove heads (a kv head goes with its last query head); equal counts per layer keep the "
                        "architecture, uneven ones make a llama model deci (other families refuse them)",
                        true);
        f.list("--heads", args_.heads, "0:1,1:2", "Query heads to remove: LAYER:HEAD[,...]")->type_name("HEADS");
        f.list("--kv-groups", args_.kv_groups, "0:1,1:0", "Whole kv groups to remove: LAYER:GROUP[,...]")
            ->type_name("GROUPS");
        lowest_ =
            f.text("--lowest", lowest_text_,
                   "With --scan: prune this fraction (0 to 1) of the heads with the lowest delta (ablation raised "
                   "the loss least or lowered it most), the same number in every layer (and kv group)");
        lowest_->type_name("FRACTION");
        scan_ = f.text("--scan", args_.scan, "A scan JSON written by 'heads scan -o' on this model");
        scan_->type_name("FILE");
    }

private:
    void check() override {
        if ((lowest_->count() > 0) != (scan_->count() > 0))
            throw Error(ErrorKind::InvalidArgument,
                        "--lowest and --scan go together: --scan names the scan, --lowest the fraction to prune");
        if (lowest_->count() > 0) {
            const float f = parse_positive("--lowest", lowest_text_);
            if (f >= 1.0f)
                throw Error(ErrorKind::InvalidArgument,
                            "--lowest: expected a fraction below 1, found '" + lowest_text_ + "'");
            args_.lowest = f;
        }
        if (args_.heads.empty() && args_.kv_groups.empty() && scan_->count() == 0)
            throw Error(ErrorKind::InvalidArgument, "heads prune: give --heads, --kv-groups or --lowest with --scan");
    }
    std::string lowest_text_;
    CLI::Option* lowest_ = nullptr;
    CLI::Option* scan_ = nullptr;
};

class PoolKv : public Verb {
public:
    void add(CLI::App& parent) override {
        Flags& f = verb(parent, "pool-kv", "Multi-head to grouped-query: mean-pool each group's key/value heads", true);
        f.number("--kv-heads", args_.kv_heads, 1, kMaxHeads, "Key/value heads to keep, dividing the model's")
            ->required();
    }
};

class Transplant : public Verb {
public:
    void add(CLI::App& parent) override {
        Flags& f = verb(parent, "transplant",
                        "Copy heads from another model of the same widths (Q rows, attn_output columns, whole K/V "
                        "groups)",
                        true);
        f.text("--from", args_.from, "The donor model")->required()->type_name("PATH");
        f.list("--heads", args_.heads, "0:1=1:1,1:2",
               "Heads to replace: LAYER:HEAD[=DONOR_LAYER:DONOR_HEAD][,...] (default: the same head)")
            ->required()
            ->type_name("MOVES");
    }
};

class Scan : public Verb {
public:
    void add(CLI::App& parent) override {
        Flags& f = verb(parent, "scan",
                        "Which heads matter: the change of the mean next-token loss when each head is ablated", false);
        f.text("--tokens-file", args_.tokens_file, "Token ids, decimal, separated by commas or spaces (at least 2)")
            ->required()
            ->type_name("FILE");
        f.output("-o,--output", args_.scan, "Write the scan as JSON (for 'heads prune --lowest F --scan')");
        f.text("--svg", args_.svg,
               "Write the scan as an SVG figure: layers x heads, colour bar in nats, kv groups marked")
            ->type_name("FILE");
        f.choice("--method", args_.method, {"exact", "attribution"},
                 "exact: ablate each head in a pass (default); attribution: estimate every head from one forward and "
                 "one backward pass");
        f.choice("--ablation", args_.ablation, {"zero", "mean"},
                 "What replaces a head's output: zeros (default), or its mean over the tokens");
        refine_ = f.number("--refine", args_.refine, 1, 1u << 20,
                           "With --method attribution: ablate exactly the K heads the estimate ranks highest (by "
                           "|delta|)");
        refine_->type_name("K");
        f.context(args_.n_ctx);
    }

private:
    void check() override {
        if (!args_.svg.empty() && args_.svg == "-")
            throw Error(ErrorKind::InvalidArgument, "--svg: headfuse writes files, not standard output");
        if (refine_->count() > 0 && args_.method != "attribution")
            throw Error(ErrorKind::InvalidArgument,
                        "--refine: goes with --method attribution (the exact method ablates every head)");
    }
    CLI::Option* refine_ = nullptr;
};

class Heads : public Command {
public:
    void add(CLI::App& parent) override {
        subcommand(parent, "heads",
                   "Head surgery on any model headfuse reads: ablate, prune, pool-kv, transplant; scan which heads "
                   "matter");
        app_->require_subcommand(1);
        app_->footer(
            "Heads are LAYER:HEAD, counted from 0 (3:1 is layer 3's query head 1). Outputs are llama.cpp GGUF "
            "files; every tensor an edit does not touch keeps its bytes. See docs/SURGERY.md.");
        verbs_.push_back(std::make_unique<Ablate>());
        verbs_.push_back(std::make_unique<Prune>());
        verbs_.push_back(std::make_unique<PoolKv>());
        verbs_.push_back(std::make_unique<Transplant>());
        verbs_.push_back(std::make_unique<Scan>());
        for (auto& v : verbs_) v->add(*app_);
    }
    int run() override {
        for (auto& v : verbs_)
            if (v->given()) return v->execute();
        throw Error(ErrorKind::InvalidArgument, "heads: a verb is required");
    }

private:
    std::vector<std::unique_ptr<Command>> verbs_;
};

}  // namespace

void add_heads_command(std::vector<std::unique_ptr<Command>>& commands) {
    commands.push_back(std::make_unique<Heads>());
}

}  // namespace headfuse::cli
