#include "options.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "headfuse/config.h"
#include "headfuse/error.h"

namespace headfuse::cli {

std::uint64_t parse_decimal(const std::string& flag, const std::string& text, std::uint64_t lo, std::uint64_t hi) {
    const bool digits = !text.empty() && text.size() <= 20 &&
                        std::all_of(text.begin(), text.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
    errno = 0;
    const unsigned long long v = digits ? std::strtoull(text.c_str(), nullptr, 10) : 0;
    if (!digits || errno == ERANGE || v < lo || v > hi)
        throw Error(ErrorKind::InvalidArgument, flag + ": expected a decimal whole number from " + std::to_string(lo) +
                                                    " to " + std::to_string(hi) + ", found '" + text + "'");
    return v;
}

float parse_positive(const std::string& flag, const std::string& text) {
    const bool plain = !text.empty() && text.find_first_not_of("0123456789.eE+-") == std::string::npos;
    char* end = nullptr;
    errno = 0;
    const float v = plain ? std::strtof(text.c_str(), &end) : 0.0f;
    if (!plain || end != text.c_str() + text.size() || errno == ERANGE || !(v > 0) || !std::isfinite(v))
        throw Error(ErrorKind::InvalidArgument, flag + ": expected a positive decimal number, found '" + text + "'");
    return v;
}

std::vector<std::uint32_t> parse_tokens(const std::string& flag, const std::string& text) {
    std::vector<std::uint32_t> out;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        const std::size_t comma = std::min(text.find(',', pos), text.size());
        const std::string item = text.substr(pos, comma - pos);
        const bool digits = !item.empty() && item.find_first_not_of("0123456789") == std::string::npos;
        if (!digits)
            throw Error(ErrorKind::InvalidArgument,
                        flag + ": expected comma-separated decimal token ids, found '" + item + "'");
        out.push_back(static_cast<std::uint32_t>(parse_decimal(flag, item, 0, UINT32_MAX)));
        pos = comma + 1;
    }
    return out;
}

std::uint64_t parse_size(const std::string& flag, const std::string& text) {
    static const std::pair<std::string_view, std::uint64_t> kUnits[] = {
        {"", 1},
        {"K", 1'000},
        {"KB", 1'000},
        {"M", 1'000'000},
        {"MB", 1'000'000},
        {"G", 1'000'000'000},
        {"GB", 1'000'000'000},
        {"KiB", std::uint64_t{1} << 10},
        {"MiB", std::uint64_t{1} << 20},
        {"GiB", std::uint64_t{1} << 30},
    };
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    const std::string_view unit = std::string_view(text).substr(digits);
    const auto* found =
        std::find_if(std::begin(kUnits), std::end(kUnits), [&](const auto& u) { return u.first == unit; });
    errno = 0;
    const unsigned long long n =
        digits > 0 && digits <= 20 ? std::strtoull(text.substr(0, digits).c_str(), nullptr, 10) : 0;
    if (found == std::end(kUnits) || n == 0 || errno == ERANGE || n > UINT64_MAX / found->second)
        throw Error(ErrorKind::InvalidArgument,
                    flag + ": expected a positive size, " + kSizeHelp + " (e.g. 500M, 2GiB), found '" + text + "'");
    return n * found->second;
}

namespace {

std::string lowercase(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

}  // namespace

std::string writable_type_list() {
    std::string s;
    for (DType t : writable_dtypes()) {
        if (!s.empty()) s += '|';
        s += lowercase(type_name(t));
    }
    return s;
}

std::string type_list() {
    std::string s = writable_type_list();
    for (Mix m : all_mixes()) {
        s += '|';
        s += mix_name(m);
    }
    return s;
}

void parse_type(const std::string& flag, const std::string& text, std::optional<DType>& type, std::optional<Mix>& mix) {
    type = parse_dtype(text);
    mix = parse_mix(text);
    if (!type && !mix)
        throw Error(ErrorKind::InvalidArgument, flag + ": expected one of " + type_list() + ", found '" + text + "'");
}

OpenedCheckpoint open_source(const std::string& in, const std::string& config) {
    OpenedCheckpoint out =
        open_checkpoint(in, config.empty() ? std::nullopt : std::optional<std::filesystem::path>(config));
    for (const std::string& note : out.notes) std::fprintf(stderr, "headfuse: %s\n", note.c_str());
    return out;
}

bool same_file(const std::filesystem::path& a, const std::filesystem::path& b) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::exists(a, ec) && fs::exists(b, ec)) return fs::equivalent(a, b, ec);
    // Not both there yet: where each name leads, through its symbolic links (at most 40, as the kernel follows).
    auto resolve = [](fs::path p) {
        std::error_code e;
        for (int i = 0; i < 40 && fs::is_symlink(p, e); ++i) {
            const fs::path target = fs::read_symlink(p, e);
            if (e) break;
            p = target.is_absolute() ? target : p.parent_path() / target;
        }
        const fs::path abs = fs::absolute(p, e);
        return fs::weakly_canonical(abs, e).lexically_normal();
    };
    return resolve(a) == resolve(b);
}

CLI::Option* Flags::add(const std::string& names, const std::string& help, const std::string& type_name,
                        Convert convert) {
    Item& it = items_.emplace_back();
    it.opt = cmd_->add_option(names, it.text, help)->type_name(type_name);
    // Every use is kept so that apply() can refuse a repeat with its own message.
    it.opt->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    it.convert = std::move(convert);
    return it.opt;
}

CLI::Option* Flags::text(const std::string& names, std::string& target, const std::string& help) {
    return add(names, help, "TEXT", [&target](const std::string&, const std::string& text) { target = text; });
}

CLI::Option* Flags::list(const std::string& names, std::string& target, const std::string& example,
                         const std::string& help) {
    CLI::Option* opt = text(names, target, help);
    items_.back().list_example = example;
    return opt;
}

CLI::Option* Flags::positive(const std::string& names, float& target, const std::string& help) {
    return add(names, help, "X",
               [&target](const std::string& flag, const std::string& text) { target = parse_positive(flag, text); });
}

CLI::Option* Flags::size(const std::string& names, std::uint64_t& target, const std::string& help) {
    return add(names, help, "SIZE",
               [&target](const std::string& flag, const std::string& text) { target = parse_size(flag, text); });
}

CLI::Option* Flags::tokens(const std::string& names, std::vector<std::uint32_t>& target, const std::string& help) {
    CLI::Option* opt = add(names, help, "IDS", [&target](const std::string& flag, const std::string& text) {
        target = parse_tokens(flag, text);
    });
    items_.back().list_example = "1,2,3";
    return opt;
}

CLI::Option* Flags::context(std::uint32_t& target) {
    return number("--ctx", target, 1, kMaxContext,
                  "The context size llama.cpp would run the model with (its -c, n_ctx; rounded up to a multiple of "
                  "256 as llama.cpp rounds it). It picks LongRoPE's factors (phi3): the long ones when it exceeds "
                  "the original context. Default: the original context (the short factors)");
}

CLI::Option* Flags::output(const std::string& names, std::string& target, const std::string& help) {
    return add(names, help, "FILE", [&target](const std::string& flag, const std::string& text) {
        if (text.empty()) throw Error(ErrorKind::InvalidArgument, flag + ": expected a file name, found ''");
        if (text == "-")
            throw Error(ErrorKind::InvalidArgument,
                        flag +
                            ": headfuse writes files, not standard output; give a file name ('./-' for a file "
                            "named '-')");
        target = text;
    });
}

CLI::Option* Flags::choice(const std::string& names, std::string& target, const std::vector<std::string>& choices,
                           const std::string& help) {
    CLI::Option* opt =
        add(names, help, "TEXT", [&target](const std::string&, const std::string& text) { target = text; });
    opt->check(CLI::IsMember(choices));
    return opt;
}

CLI::Option* Flags::flag(const std::string& names, bool& target, const std::string& help) {
    return cmd_->add_flag(names, target, help);
}

CLI::Option* Flags::positional(const std::string& name, std::string& target, const std::string& type_name,
                               const std::string& help) {
    return cmd_->add_option(name, target, help)->required()->type_name(type_name);
}

void Flags::common(Common& c, bool threads) {
    if (threads) number("--threads", c.threads, 1, 1024, "Worker threads, 1 to 1024 (default: all cores)");
    flag("-q,--quiet", c.quiet, "No progress bar");
}

void Flags::output_options(Common& c) {
    output_ = &c;
    number("--alignment", c.output.alignment, 1, std::uint64_t{1} << 30,
           "Tensor data alignment, a power of two (default: 32, what llama.cpp's tools expect: llama-quantize "
           "keeps a file's alignment key but pads its output to 32, so its output of a file with another "
           "alignment does not load)");
    size("--split-max-size", c.output.shards.max_bytes,
         std::string("Write a split set: at most SIZE of tensor data per shard (") + kSizeHelp +
             "), named PREFIX-00001-of-0000N.gguf from -o PREFIX[.gguf]");
    number("--split-max-tensors", c.output.shards.max_tensors, 1, std::uint64_t{1} << 31,
           "Write a split set: at most N tensors per shard");
}

void Flags::apply() {
    for (Item& it : items_) {
        const std::size_t n = it.opt->count();
        const std::string name = it.opt->get_name();
        if (n > 1)
            throw Error(ErrorKind::InvalidArgument, name + ": given " + std::to_string(n) + " times; give it once" +
                                                        (it.list_example.empty() ? std::string()
                                                                                 : " (several go in one list: " + name +
                                                                                       " " + it.list_example + ")"));
        if (n == 1) it.convert(name, it.text);
    }
    if (output_ != nullptr) {
        const std::uint32_t alignment = output_->output.alignment;
        if ((alignment & (alignment - 1)) != 0)
            throw Error(ErrorKind::InvalidArgument,
                        "--alignment: expected a power of two, found " + std::to_string(alignment));
    }
}

Flags& Command::subcommand(CLI::App& parent, const std::string& name, const std::string& help) {
    app_ = parent.add_subcommand(name, help);
    flags_ = std::make_unique<Flags>(app_);
    return *flags_;
}

}  // namespace headfuse::cli
