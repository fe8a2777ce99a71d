// The commands that read a model: inspect, logits, verify. Each registers its options and checks; the work is in
// commands.cpp (run_inspect ..), which calls the library.
#include <string>

#include "headfuse/error.h"
#include "options.h"

namespace headfuse::cli {
namespace {

class Inspect : public Command {
public:
    void add(CLI::App& parent) override {
        Flags& f = subcommand(parent, "inspect", "Show a GGUF file's header, metadata and tensors");
        f.positional("file", args_.file, "FILE", "GGUF file (a shard of a split set: the whole set)");
        f.flag("--json", args_.json, "Print JSON");
    }
    int run() override { return run_inspect(args_); }

private:
    InspectArgs args_;
};

class Logits : public Command {
public:
    void add(CLI::App& parent) override {
        Flags& f = subcommand(parent, "logits", "Run the reference forward pass on any model headfuse reads");
        f.positional("model", args_.model, "PATH",
                     "Per-head or fused GGUF file (or any shard of a split set), .safetensors file, "
                     "model.safetensors.index.json, or a Hugging Face / TransformerLens folder");
        f.text("--config", args_.config,
               "Hyperparameters of a safetensors checkpoint (default: config.json beside the weights)")
            ->type_name("FILE");
        f.tokens("--tokens", args_.tokens, "Comma-separated token ids, e.g. 1,2,3")->required();
        out_ = f.output("-o,--output", args_.out, "Write raw little-endian f32 logits (n_tokens x vocab) here");
        top_ =
            f.number("--top", args_.top, 1, kMaxVocab, "Without -o: show the top K tokens per position (default: 5)");
        f.context(args_.n_ctx);
        f.common(common_);
    }
    int run() override {
        if (top_->count() > 0 && out_->count() > 0)
            throw Error(ErrorKind::InvalidArgument,
                        "--top chooses the rows of the table, and -o writes every logit instead: give one of them");
        return run_logits(args_, common_);
    }

private:
    LogitsArgs args_;
    Common common_;
    CLI::Option* out_ = nullptr;
    CLI::Option* top_ = nullptr;
};

class Verify : public Command {
public:
    void add(CLI::App& parent) override {
        Flags& f =
            subcommand(parent, "verify",
                       "Prove two models are the same (or B is A encoded): hyperparameters, every tensor, the logits");
        f.positional("a", args_.per_head, "MODEL",
                     "Model A: any model headfuse reads (GGUF, split set, safetensors, folder)");
        f.positional("b", args_.fused, "MODEL", "Model B, compared with A");
        f.tokens("--tokens", args_.tokens, "Comma-separated token ids (default: 8 tokens across the vocabulary)");
        f.context(args_.n_ctx);
        f.common(common_);
        app_->footer(
            "Tensors are compared in a common form: the logical rows, per head where the layouts differ; bytes when "
            "both have one type, else the values decoded to f32, a tensor of B also matching when it is the exact "
            "encoding of A's values at B's type (as fuse --type writes it). A difference is named with its first row "
            "and the largest |A - B|.\n"
            "Exit status: 0 the same model (PASS), 1 they differ (FAIL), 2 they could not be compared.\n"
            "Weights in a type headfuse carries but does not decode (the iq1/iq2/iq3 types, tq1_0, tq2_0, mxfp4) are "
            "compared byte for byte and the logits are not computed (with --tokens, verify exits 2).");
    }
    int run() override { return run_verify(args_, common_); }

private:
    VerifyArgs args_;
    Common common_;
};

}  // namespace

void add_read_commands(std::vector<std::unique_ptr<Command>>& commands) {
    commands.push_back(std::make_unique<Inspect>());
    commands.push_back(std::make_unique<Logits>());
    commands.push_back(std::make_unique<Verify>());
}

}  // namespace headfuse::cli
