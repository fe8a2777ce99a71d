#include "commands.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <numeric>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/text.h"
#include "headfuse/checkpoint.h"
#include "headfuse/error.h"
#include "headfuse/file_io.h"
#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/gguf.h"
#include "headfuse/heads.h"
#include "headfuse/model.h"
#include "headfuse/verify.h"
#include "headfuse/vocab.h"
#include "progress.h"

namespace headfuse::cli {

// "model.gguf" or "model-00001-of-00003.gguf .. model-00003-of-00003.gguf (3 shards)", and their total size.
std::string written(const std::vector<std::filesystem::path>& files) {
    std::uint64_t bytes = 0;
    for (const auto& f : files) bytes += std::filesystem::file_size(f);
    std::string s = files.front().string();
    if (files.size() > 1) s += " .. " + files.back().string() + " (" + std::to_string(files.size()) + " shards)";
    return s + ", " + human_bytes(bytes);
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string type_label(std::uint32_t id) {
    const TypeTraits* t = find_type(id);
    return t ? std::string(t->name) : "type " + std::to_string(id);
}

// Longer strings (a chat template, tokenizer.huggingface.json's whole tokenizer.json) are shown cut, with their
// size; inspect --json gives them whole.
constexpr std::size_t kShownStringBytes = 160;

// A metadata value for people: scalars as they are, arrays by type and length with their first items.
std::string show(const Value& v) {
    auto scalar = [](const Value& s) -> std::string {
        return std::visit(
            [&](const auto& x) -> std::string {
                using T = std::decay_t<decltype(x)>;
                if constexpr (std::is_same_v<T, std::string>) {
                    if (x.size() <= kShownStringBytes) return "\"" + printable(x, true) + "\"";
                    std::size_t cut = kShownStringBytes;  // at a character's start
                    while (cut > 0 && (static_cast<unsigned char>(x[cut]) & 0xC0) == 0x80) --cut;
                    return "\"" + printable(x.substr(0, cut), true) + "\"... (" + std::to_string(x.size()) + " bytes)";
                } else if constexpr (std::is_same_v<T, bool>)
                    return x ? "true" : "false";
                else if constexpr (std::is_same_v<T, double>) {
                    char buf[32];
                    std::snprintf(buf, sizeof buf, "%g", x);
                    return buf;
                } else
                    return std::to_string(x);
            },
            s.scalar);
    };
    if (v.type != ValueType::ARRAY) return scalar(v);
    std::string s = std::string(value_type_name(v.elem_type)) + "[" + std::to_string(v.items.size()) + "] [";
    for (std::size_t i = 0; i < std::min<std::size_t>(v.items.size(), 5); ++i)
        s += (i ? ", " : "") + scalar(v.items[i]);
    return s + (v.items.size() > 5 ? ", ...]" : "]");
}

using ojson = nlohmann::ordered_json;

// JSON has no NaN or infinities: they are the strings "NaN", "Infinity" and "-Infinity" (the entry's type says
// the value is a number).
ojson number_json(double x) {
    if (std::isnan(x)) return "NaN";
    if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
    return x;
}

// Strings from the file in JSON. Valid UTF-8 goes as it is (JSON escapes its control characters); a string that is
// not has each ill-formed part replaced by U+FFFD, and its exact bytes are given beside it in hex.
struct JsonStrings {
    std::size_t replaced = 0;  // strings that were not UTF-8
    void put(ojson& obj, const std::string& field, const std::string& s) {
        obj[field] = utf8_replaced(s);
        if (!valid_utf8(s)) {
            obj[field + "_hex"] = hex_bytes(s);
            ++replaced;
        }
    }
};

ojson scalar_json(const Value& v) {
    return std::visit(
        [](const auto& x) -> ojson {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, std::string>)
                return utf8_replaced(x);
            else if constexpr (std::is_same_v<T, double>)
                return number_json(x);
            else
                return x;
        },
        v.scalar);
}

// One metadata entry: {"index", "key", "type", ["array_type", "length"], "value"}. A string array's elements that
// are not UTF-8 have their bytes in "value_hex", an object from the element's index to its hex.
ojson entry_json(std::size_t index, const std::string& key, const Value& v, JsonStrings& strings) {
    ojson e;
    e["index"] = index;
    strings.put(e, "key", key);
    e["type"] = value_type_name(v.type);
    if (v.type != ValueType::ARRAY) {
        if (v.type == ValueType::STRING)
            strings.put(e, "value", std::get<std::string>(v.scalar));
        else
            e["value"] = scalar_json(v);
        return e;
    }
    e["array_type"] = value_type_name(v.elem_type);
    e["length"] = v.items.size();
    ojson items = ojson::array(), hex = ojson::object();
    for (std::size_t i = 0; i < v.items.size(); ++i) {
        items.push_back(scalar_json(v.items[i]));
        if (const auto* s = std::get_if<std::string>(&v.items[i].scalar); s && !valid_utf8(*s)) {
            hex[std::to_string(i)] = hex_bytes(*s);
            ++strings.replaced;
        }
    }
    e["value"] = std::move(items);
    if (!hex.empty()) e["value_hex"] = std::move(hex);
    return e;
}

// "llama (SentencePiece-style BPE), 32000 tokens, bos 1 '<s>', eos 2 '</s>', unk 0 '<unk>', adds bos, chat template"
std::string describe(const TokenizerSummary& t) {
    std::string s = t.model;
    if (t.model == "llama") s += " (SentencePiece-style BPE)";
    if (t.model == "gpt2") s += " (byte-level BPE" + (t.pre.empty() ? "" : ", pre-tokenizer " + t.pre) + ")";
    s = printable(s);
    s += ", " + std::to_string(t.n_tokens) + " tokens";
    if (t.n_merges) s += ", " + std::to_string(t.n_merges) + " merges";
    for (const auto& sp : t.specials)
        s += ", " + sp.role + " " + std::to_string(sp.id) +
             (sp.text.empty() ? " (out of range)" : " '" + printable(sp.text) + "'");
    if (t.add_bos.value_or(false)) s += ", adds bos";
    if (t.add_eos.value_or(false)) s += ", adds eos";
    if (t.chat_template) s += ", chat template";
    return s;
}

ojson to_json(const TokenizerSummary& t, JsonStrings& strings) {
    ojson j;
    strings.put(j, "model", t.model);
    strings.put(j, "pre", t.pre);
    j["tokens"] = t.n_tokens;
    j["merges"] = t.n_merges;
    ojson sp = ojson::object();
    for (const auto& s : t.specials) {
        ojson one;
        one["id"] = s.id;
        strings.put(one, "text", s.text);
        sp[s.role] = std::move(one);
    }
    j["special"] = sp;
    if (t.add_bos) j["add_bos"] = *t.add_bos;
    if (t.add_eos) j["add_eos"] = *t.add_eos;
    j["chat_template"] = t.chat_template;
    return j;
}

// What kind of model a file holds, if any: "per-head checkpoint", "fused llama file" (or the family its
// general.architecture names: "fused qwen3 file") or "".
std::string kind_name(const GgufFile& f) {
    const std::optional<ModelKind> kind = headfuse::model_kind(f);
    if (!kind) return "";
    if (*kind == ModelKind::PerHead) return "per-head checkpoint";
    const Value* arch = f.metadata().find("general.architecture");
    const std::string* name = arch ? std::get_if<std::string>(&arch->scalar) : nullptr;
    const ArchSpec* row = name ? find_arch(*name) : nullptr;
    return "fused " + std::string(family_name(row ? row->family : Family::Llama)) + " file";
}

}  // namespace

int run_init(const InitArgs& a, const Common& c) {
    a.config.validate();
    check_output_path(a.out);
    const auto t0 = Clock::now();
    const auto files =
        write_random_init(a.config, a.seed, a.out,
                          {.threads = c.threads, .progress = make_progress("init", c.quiet), .output = c.output});
    std::printf("wrote %s: per-head checkpoint, %s, seed %llu in %.2f s\n", written(files).c_str(),
                describe(a.config).c_str(), static_cast<unsigned long long>(a.seed), seconds_since(t0));
    return 0;
}

// Warnings are held until the command has succeeded: a warning followed by an error would be two lines.
class Warnings {
public:
    std::function<void(const std::string&)> sink() {
        return [this](const std::string& w) { held_.push_back(w); };
    }
    void print() const {
        for (const std::string& w : held_) std::fprintf(stderr, "headfuse: warning: %s\n", w.c_str());
    }

private:
    std::vector<std::string> held_;
};

// More tokens than the model's context: llama.cpp would not evaluate them in one sequence. A LongRoPE model's
// logits depend on the context llama.cpp runs with (n_ctx, --ctx): more tokens than it holds name the option.
void warn_context(Warnings& w, const Config& c, std::size_t n_tokens, std::uint32_t n_ctx) {
    if (n_tokens > c.context_length) {
        w.sink()(std::to_string(n_tokens) + " tokens, more than the model's context length " +
                 std::to_string(c.context_length) + " (llama.cpp evaluates at most that many in a sequence)");
        return;
    }
    const std::uint64_t ctx = n_ctx ? n_ctx : c.original_context(), held = llama_context_size(c, n_ctx);
    if (c.optional_roles.contains(Role::RopeLong) && n_tokens > held)
        w.sink()(std::to_string(n_tokens) + " tokens, more than llama.cpp's context of " + std::to_string(ctx) +
                 " holds (--ctx" + (n_ctx ? "" : ", by default the original context") + "; rounded up to " +
                 std::to_string(held) + "): give --ctx at least " + std::to_string(n_tokens) +
                 ", which picks LongRoPE's factors (the long ones above the original context " +
                 std::to_string(c.original_context()) + ")");
}

int run_fuse(const FuseArgs& a, const Common& c) {
    const auto t0 = Clock::now();
    Warnings warnings;
    const auto warn = warnings.sink();
    // A tokenizer named by --tokenizer-from is read and checked before the model, so a bad one fails before any
    // work; a folder's own tokenizer.json is found once the source is open.
    check_output_path(a.out);
    std::optional<Tokenizer> tok;
    if (!a.tokenizer_from.empty()) tok = read_tokenizer(a.tokenizer_from, warn);
    const OpenedCheckpoint src = open_source(a.in, a.config);
    if (src.format == CheckpointFormat::Gguf && !a.config.empty())
        throw Error(ErrorKind::InvalidArgument, "--config applies to safetensors inputs only");
    const PerHeadModel& model = src.model;
    if (!tok && src.format != CheckpointFormat::Gguf &&
        (std::filesystem::exists(src.folder / "tokenizer.json") ||
         std::filesystem::exists(src.folder / "tokenizer.model")))
        tok = read_tokenizer(src.folder, warn);                // a Hugging Face folder brings its own tokenizer
    if (tok) fit_tokenizer(*tok, model.config().vocab, warn);  // padded to the embedding's rows
    FuseOptions opt;
    opt.type = a.type;
    opt.mix = a.mix;
    opt.threads = c.threads;
    opt.tokenizer = tok ? &*tok : nullptr;
    opt.progress = make_progress("fuse", c.quiet);
    opt.output = c.output;
    opt.warn = warn;
    opt.inputs = src.inputs;
    const auto files = fuse(model, a.out, opt);
    warnings.print();
    Config fused = model.config();  // the lens is folded into token_embd: the fused file has none
    std::string lens;
    if (fused.has_lens())
        lens = ", lens folded (donor_d_in " + std::to_string(std::exchange(fused.donor_d_in, 0)) + ")";
    std::printf("wrote %s: fused %s file, %s%s, %s in %.2f s\n", written(files).c_str(),
                std::string(family_name(fused.family)).c_str(), describe(fused).c_str(), lens.c_str(),
                a.mix    ? std::string(mix_name(*a.mix)).c_str()
                : a.type ? std::string(type_name(*a.type)).c_str()
                         : "types kept",
                seconds_since(t0));
    return 0;
}

int run_split(const SplitArgs& a, const Common& c) {
    const auto t0 = Clock::now();
    check_output_path(a.out);
    const FusedModel model = FusedModel::open(a.in);
    const auto files = split(model, a.out, {make_progress("split", c.quiet), c.output});
    std::printf("wrote %s: per-head checkpoint, %s in %.2f s\n", written(files).c_str(),
                describe(model.config()).c_str(), seconds_since(t0));
    return 0;
}

int run_export(const ExportArgs& a, const Common& c) {
    const auto t0 = Clock::now();
    // The output is a folder: an existing one must be one we may write config.json and the shards into.
    if (std::error_code ec; std::filesystem::exists(a.out, ec)) {
        if (!std::filesystem::is_directory(a.out, ec))
            throw Error(ErrorKind::InvalidArgument, "cannot write '" + a.out + "': not a folder");
        check_output_path(std::filesystem::path(a.out) / "config.json");
    }
    const OpenedCheckpoint src = open_source(a.in, a.config);
    ExportOptions opt;
    opt.format = a.format == "hf" ? ExportFormat::HuggingFace : ExportFormat::TransformerLens;
    opt.max_shard_bytes = a.max_shard_bytes;
    opt.replace = a.force;
    opt.progress = make_progress("export", c.quiet);
    opt.dtype = a.dtype;
    Warnings warnings;
    opt.warn = warnings.sink();
    std::vector<std::filesystem::path> inputs = src.inputs;
    if (inputs.empty()) inputs.push_back(a.in);
    const auto files = export_checkpoint(src.model, a.out, opt, inputs);
    std::uint64_t bytes = 0;
    std::string tokenizer;  // ", tokenizer tokenizer.json tokenizer_config.json"
    for (const auto& f : files) {
        bytes += file_size(f);
        for (const TokenizerFile& t : kTokenizerFiles)
            if (f.filename() == t.file) tokenizer.append(tokenizer.empty() ? ", tokenizer " : " ").append(t.file);
    }
    if (tokenizer.empty()) tokenizer = ", no tokenizer files (the source keeps none)";
    warnings.print();
    std::printf("wrote %s: %s checkpoint, %s, %zu files, %s%s in %.2f s\n", a.out.c_str(),
                a.format == "hf" ? "Hugging Face" : "TransformerLens", describe(src.model.config()).c_str(),
                files.size(), human_bytes(bytes).c_str(), tokenizer.c_str(), seconds_since(t0));
    return 0;
}

struct TypeTotal {
    std::size_t tensors = 0;
    std::uint64_t bytes = 0;
};

// The number of tensors and their bytes per tensor type, by type name.
std::map<std::string, TypeTotal> bytes_by_type(const GgufFile& f) {
    std::map<std::string, TypeTotal> out;
    for (const TensorInfo& t : f.tensors()) {
        TypeTotal& total = out[type_label(t.type)];
        ++total.tensors;
        total.bytes += t.nbytes;
    }
    return out;
}

int run_inspect(const InspectArgs& a) {
    const GgufFile f = GgufFile::open(a.file);
    const std::string kind = kind_name(f);
    // Whether the file is the model it says it is, the same verdict for the text and the JSON.
    std::optional<std::string> model_summary, model_error;
    if (!kind.empty()) {
        try {
            model_summary = describe(open_model(a.file).config());
        } catch (const Error& e) {
            model_error = e.what();
        }
    }
    if (a.json) {
        JsonStrings strings;
        ojson j;
        strings.put(j, "file", a.file);
        j["version"] = f.version();
        j["alignment"] = f.alignment();
        j["data_offset"] = f.data_start();
        j["kind"] = kind;
        if (!kind.empty()) {
            ojson m;
            m["valid"] = model_summary.has_value();
            strings.put(m, model_summary ? "summary" : "error", model_summary ? *model_summary : *model_error);
            j["model"] = std::move(m);
        }
        ojson shards = ojson::array();
        for (const auto& p : f.paths()) shards.push_back(utf8_replaced(p.string()));
        j["shards"] = std::move(shards);
        if (const auto t = summarize_tokenizer(f.metadata())) j["tokenizer"] = to_json(*t, strings);
        ojson md = ojson::array();
        std::size_t index = 0;
        for (const auto& e : f.metadata().entries()) md.push_back(entry_json(index++, e.key, e.value, strings));
        j["metadata"] = std::move(md);
        ojson ts = ojson::array();
        index = 0;
        for (const TensorInfo& t : f.tensors()) {
            ojson one;
            one["index"] = index++;
            strings.put(one, "name", t.name);
            one["type"] = type_label(t.type);
            one["shape"] = std::vector<std::uint64_t>(t.ne.begin(), t.ne.begin() + t.n_dims);
            one["offset"] = t.offset;
            one["shard"] = t.shard;
            one["bytes"] = t.nbytes;
            ts.push_back(std::move(one));
        }
        j["tensors"] = std::move(ts);
        ojson by_type = ojson::object();
        for (const auto& [type, n] : bytes_by_type(f)) by_type[type] = {{"tensors", n.tensors}, {"bytes", n.bytes}};
        j["bytes_by_type"] = std::move(by_type);
        j["strings_not_utf8"] = strings.replaced;
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    std::printf("%s: GGUF v%u, %zu keys, %zu tensors, alignment %u, data at byte %llu%s\n", printable(a.file).c_str(),
                f.version(), f.metadata().size(), f.tensors().size(), f.alignment(),
                static_cast<unsigned long long>(f.data_start()), kind.empty() ? "" : (", " + kind).c_str());
    if (f.shard_count() > 1)
        std::printf("split set of %zu shards: %s .. %s (alignment and data offset of the first)\n", f.shard_count(),
                    printable(f.paths().front().string()).c_str(), printable(f.paths().back().string()).c_str());
    if (model_summary) std::printf("model: %s\n", model_summary->c_str());
    if (model_error) std::printf("model: not valid: %s\n", printable(*model_error).c_str());
    if (const auto t = summarize_tokenizer(f.metadata())) std::printf("tokenizer: %s\n", describe(*t).c_str());
    if (const Value* edits = f.metadata().find(kEditsKey); edits && edits->type == ValueType::ARRAY)
        for (const Value& e : edits->items)
            if (const auto* line = std::get_if<std::string>(&e.scalar))
                std::printf("edit: %s\n", printable(*line).c_str());
    std::printf("\nmetadata:\n");
    for (const auto& e : f.metadata().entries())
        std::printf("  %-44s %-7s %s\n", printable(e.key).c_str(), std::string(value_type_name(e.value.type)).c_str(),
                    show(e.value).c_str());
    std::printf("\ntensors:\n");
    for (const TensorInfo& t : f.tensors()) {
        std::printf("  %-36s %-6s %-20s %12llu bytes at %llu", printable(t.name).c_str(), type_label(t.type).c_str(),
                    format_shape({t.ne.data(), t.n_dims}).c_str(), static_cast<unsigned long long>(t.nbytes),
                    static_cast<unsigned long long>(t.offset));
        if (f.shard_count() > 1) std::printf(" in shard %u", t.shard + 1);
        std::printf("\n");
    }
    std::printf("\nbytes by type:\n");
    for (const auto& [type, n] : bytes_by_type(f))
        std::printf("  %-8s %3zu tensors %16llu bytes (%s)\n", type.c_str(), n.tensors,
                    static_cast<unsigned long long>(n.bytes), human_bytes(n.bytes).c_str());
    return 0;
}

int run_logits(const LogitsArgs& a, const Common& c) {
    if (!a.out.empty()) check_output_path(a.out);
    const OpenedCheckpoint src = open_source(a.model, a.config);
    const PerHeadModel& model = src.model;
    const std::vector<float> logits = forward_logits(model.views(), a.tokens, c.threads, {}, a.n_ctx);
    const std::uint32_t vocab = model.config().vocab;
    Warnings warnings;
    warn_context(warnings, model.config(), a.tokens.size(), a.n_ctx);
    if (!a.out.empty()) {
        std::vector<std::filesystem::path> inputs = src.inputs;
        if (inputs.empty()) inputs.emplace_back(a.model);
        write_file_atomically(a.out, {reinterpret_cast<const std::byte*>(logits.data()), logits.size() * sizeof(float)},
                              inputs);
        std::printf("wrote %s: %zu x %u f32 logits\n", a.out.c_str(), a.tokens.size(), vocab);
        warnings.print();
        return 0;
    }
    const std::vector<double> lp = log_softmax(logits, vocab);
    const std::size_t k = std::min<std::size_t>(a.top, vocab);
    std::printf("%-4s %-8s  top %zu next tokens (id: log-probability)\n", "pos", "token", k);
    for (std::size_t p = 0; p < a.tokens.size(); ++p) {
        std::vector<std::uint32_t> ids(vocab);
        std::iota(ids.begin(), ids.end(), 0u);
        const double* row = lp.data() + p * vocab;
        std::partial_sort(
            ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
            [&](std::uint32_t x, std::uint32_t y) { return row[x] > row[y] || (row[x] == row[y] && x < y); });
        std::printf("%-4zu %-8u ", p, a.tokens[p]);
        for (std::size_t i = 0; i < k; ++i) std::printf(" %u: %.4f", ids[i], row[ids[i]]);
        std::printf("\n");
    }
    warnings.print();
    return 0;
}

// What verify calls a model in its report: its layout, or A and B when both have the same.
std::string layout_label(const OpenedCheckpoint& m) {
    if (m.format != CheckpointFormat::Gguf) return std::string(checkpoint_format_name(m.format));
    return m.model.file() && model_kind(*m.model.file()) == ModelKind::Fused ? "fused" : "per-head";
}

int run_verify(const VerifyArgs& a, const Common& c) {
    const OpenedCheckpoint first = open_source(a.per_head, "");
    const OpenedCheckpoint second = open_source(a.fused, "");
    VerifyOptions opt;
    opt.tokens = a.tokens;
    opt.threads = c.threads;
    opt.n_ctx = a.n_ctx;
    opt.progress = make_progress("verify", c.quiet);
    opt.labels = {layout_label(first), layout_label(second)};
    if (opt.labels[0] == opt.labels[1]) opt.labels = {"A", "B"};
    const VerifyReport r = verify(first.model, second.model, opt);
    const std::string& la = opt.labels[0];
    const std::string& lb = opt.labels[1];
    for (const std::string& d : r.config_differences) std::printf("MISMATCH hyperparameter %s\n", d.c_str());
    for (const std::string& m : r.mismatches) std::printf("MISMATCH %s\n", m.c_str());
    std::printf(
        "tensors: %llu compared, %zu differ%s\n", static_cast<unsigned long long>(r.tensors_checked),
        r.mismatches.size(),
        r.same_types ? "" : (" (" + lb + "'s weights of other types compared with " + la + "'s values)").c_str());
    if (!r.first_difference.empty()) std::printf("         first difference: '%s'\n", r.first_difference.c_str());
    if (r.max_abs_diff > 0)
        std::printf("values:  max |%s - %s| %.3g (in '%s')%s\n", la.c_str(), lb.c_str(), r.max_abs_diff,
                    r.max_abs_diff_tensor.c_str(),
                    r.mismatches.empty() ? (": " + lb + " carries the error of encoding " + la).c_str() : "");
    if (!r.logits_compared)
        std::printf("logits:  not computed: %s weights are carried as bytes, not decoded; the tensors are the proof\n",
                    r.undecoded_type.c_str());
    else if (r.tensors_checked > 0)
        std::printf("logits:  %s, max |log-prob difference| %.3g, top token %s\n",
                    r.logits_identical ? "bit-identical" : "differ", r.max_logprob_diff,
                    r.top_token_agrees ? "agrees at every position" : "differs");
    if (!r.same_types && r.mismatches.empty() && r.config_differences.empty())
        std::printf(
            "         (%s is %s encoded: the difference is the encoding's rounding; the tensors are the proof)\n",
            lb.c_str(), la.c_str());
    if (!r.ok())
        std::printf("verdict: FAIL: the models differ\n");
    else if (r.same_types)
        std::printf("verdict: PASS: the same model\n");
    else
        std::printf("verdict: PASS: %s is %s's values encoded at its types\n", lb.c_str(), la.c_str());
    Warnings warnings;
    warn_context(warnings, first.model.config(), a.tokens.size(), a.n_ctx);
    warnings.print();
    return r.ok() ? 0 : 1;
}

}  // namespace headfuse::cli
