// The command line's building blocks: one way to declare an option, to read a number, a size or a list, and the
// options every command shares (threads, quiet, the output's alignment and split limits). Each command (init.. heads
// scan) is a Command that registers its own options and checks and runs itself.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "commands.h"

namespace headfuse::cli {

// Numbers are decimal everywhere: "010" is ten and "0x10" an error (CLI11 alone would read them as octal and
// hex), and each is checked against its range, zero included, before anything runs.
std::uint64_t parse_decimal(const std::string& flag, const std::string& text, std::uint64_t lo, std::uint64_t hi);

// A positive, finite decimal number ("1e-5", "10000"); no hex floats, infinities or NaN.
float parse_positive(const std::string& flag, const std::string& text);

// "1,2,3" -> {1, 2, 3}
std::vector<std::uint32_t> parse_tokens(const std::string& flag, const std::string& text);

// The one rule for sizes (--split-max-size, --max-shard-size): a whole number of bytes, or one with a unit:
// K, M, G (or KB, MB, GB) = 10^3, 10^6, 10^9 bytes, as llama-gguf-split and Hugging Face count; KiB, MiB, GiB =
// 2^10, 2^20, 2^30. "500M" is 500000000, "2GiB" 2147483648, "4096" 4096 bytes.
std::uint64_t parse_size(const std::string& flag, const std::string& text);
inline constexpr const char* kSizeHelp =
    "N bytes, or N with a unit: K, M, G = 10^3, 10^6, 10^9 bytes (as llama-gguf-split counts), KiB, MiB, GiB = "
    "2^10, 2^20, 2^30";

// The --type values of head edits: every type headfuse writes, lowercase.
std::string writable_type_list();
// The --type values of commands that write a model: every type headfuse writes, then llama.cpp's K-quant mixes.
std::string type_list();
// `text` (a name from type_list()) into `type` or `mix`; Error naming `flag` otherwise.
void parse_type(const std::string& flag, const std::string& text, std::optional<DType>& type, std::optional<Mix>& mix);

// The options of one command. Every value is read as text and converted after parsing, so that every number goes
// through parse_decimal, parse_positive or parse_size, every file name is checked the same way, and an option
// given twice is refused by name (CLI11 alone would keep one or give its own message).
class Flags {
public:
    explicit Flags(CLI::App* cmd) : cmd_(cmd) {}

    CLI::App* app() const { return cmd_; }

    // Text taken as it is (a path, a list parsed by the command).
    CLI::Option* text(const std::string& names, std::string& target, const std::string& help);
    // A comma-separated list, parsed by the command; `example` shows a repeated option how to give several.
    CLI::Option* list(const std::string& names, std::string& target, const std::string& example,
                      const std::string& help);
    // A whole number in [lo, hi].
    template <class T>
    CLI::Option* number(const std::string& names, T& target, std::uint64_t lo, std::uint64_t hi,
                        const std::string& help) {
        return add(names, help, "N", [&target, lo, hi](const std::string& flag, const std::string& text) {
            target = static_cast<T>(parse_decimal(flag, text, lo, hi));
        });
    }
    CLI::Option* positive(const std::string& names, float& target, const std::string& help);
    // A size in bytes, by parse_size's rule.
    CLI::Option* size(const std::string& names, std::uint64_t& target, const std::string& help);
    // --ctx N: the context size llama.cpp would run the model with (the forward pass picks LongRoPE's factors by
    // it); 0, the default, is the model's original context.
    CLI::Option* context(std::uint32_t& target);
    // Comma-separated token ids.
    CLI::Option* tokens(const std::string& names, std::vector<std::uint32_t>& target, const std::string& help);
    // A file to write: a name, not empty and not "-" (headfuse writes files, not standard output).
    CLI::Option* output(const std::string& names, std::string& target, const std::string& help);
    // One of `choices`.
    CLI::Option* choice(const std::string& names, std::string& target, const std::vector<std::string>& choices,
                        const std::string& help);
    CLI::Option* flag(const std::string& names, bool& target, const std::string& help);
    // A required positional argument (given twice, CLI11 names the extra one).
    CLI::Option* positional(const std::string& name, std::string& target, const std::string& type_name,
                            const std::string& help);

    // The shared options: --threads (unless `threads` is false) and -q/--quiet.
    void common(Common& c, bool threads = true);
    // The options of a command that writes a model: --alignment, and --split-max-size / --split-max-tensors, with
    // which the output becomes a split set, PREFIX-00001-of-0000N.gguf ..., as llama-gguf-split writes it (-o PREFIX
    // or -o PREFIX.gguf).
    void output_options(Common& c);

    // After parsing: refuses an option given more than once, converts the options given, and checks the output
    // options' alignment.
    void apply();

private:
    using Convert = std::function<void(const std::string& flag, const std::string& text)>;
    CLI::Option* add(const std::string& names, const std::string& help, const std::string& type_name, Convert convert);
    struct Item {
        CLI::Option* opt = nullptr;
        std::string text;
        Convert convert;
        std::string list_example;  // a list option: "0:1,1:2"
    };
    CLI::App* cmd_;
    std::deque<Item> items_;  // stable addresses: CLI11 holds pointers to `text`
    Common* output_ = nullptr;
};

// One subcommand: add() registers it, its options and their checks on the parent; execute() (after parsing, when
// the subcommand was given) converts the options, and run() checks what is particular to the command, does the work
// and returns the exit status. Errors are thrown as headfuse::Error.
class Command {
public:
    virtual ~Command() = default;
    virtual void add(CLI::App& parent) = 0;
    // Converts and checks the options given, then runs.
    int execute() {
        if (flags_) flags_->apply();
        return run();
    }
    bool given() const { return app_ != nullptr && app_->parsed(); }
    std::string name() const { return app_ != nullptr ? app_->get_name() : std::string(); }

protected:
    virtual int run() = 0;
    // The subcommand `name` on `parent`, with its Flags.
    Flags& subcommand(CLI::App& parent, const std::string& name, const std::string& help);
    CLI::App* app_ = nullptr;
    std::unique_ptr<Flags> flags_;
};

// The commands, appended in the order of 'headfuse --help': init, fuse, export, split (model_commands.cpp); inspect,
// logits, verify (read_commands.cpp); heads and its verbs (heads_commands.cpp).
void add_model_commands(std::vector<std::unique_ptr<Command>>& commands);
void add_read_commands(std::vector<std::unique_ptr<Command>>& commands);
void add_heads_command(std::vector<std::unique_ptr<Command>>& commands);

}  // namespace headfuse::cli
