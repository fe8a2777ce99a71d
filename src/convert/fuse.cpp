// fuse and split: a write plan per output tensor (where its bytes come from: views to copy, rows to encode,
// a lens to fold), streamed by the GGUF writer in bounded memory.
#include "headfuse/fuse.h"

#include <algorithm>
#include <exception>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "base/fail.h"
#include "base/parallel.h"
#include "gguf/writer.h"
#include "headfuse/error.h"
#include "headfuse/fold.h"
#include "headfuse/mix.h"
#include "headfuse/quantize.h"
#include "io/mapped_file.h"
#include "model/model_keys.h"
#include "model/roles.h"
#include "model/tensor_order.h"
#include "model/view_rows.h"
#include "tokenizer/named_rules.h"
#include "tokenizer/placeholder_vocab.h"

namespace headfuse {
namespace {

// Input bytes handled per step. A copy checks a window for non-finite weights and writes it while it is still
// in the core's cache, so the bytes make one trip through memory, as a plain copy's do (pread then write of a
// 713 MB file in 256 kB windows: 0.34-0.46 s and 0.22-0.29 s of system time; in 512 kB windows 0.86-1.26 s and
// 0.47-0.51 s; in 1 MB windows 1.8-2.4 s; the machine's L2 is 1 MB a core); an encode shares a window out to
// the pool's threads, a half of 2 MB per core of two fitting its 1 MB L2 (BF16 -> Q8_0 of 713 MB, medians of 5:
// 1.01 s in 256 kB windows, 1.03 s in 1 MB, 0.88-0.98 s in 2 MB, 0.95 s in 4 MB).
constexpr std::uint64_t kCopyWindowBytes = std::uint64_t{256} << 10;
constexpr std::uint64_t kEncodeWindowBytes = std::uint64_t{2} << 20;
// A conversion between F32, F16 and BF16 costs less than a trip through memory, so it runs on one thread in
// windows that stay in the core's cache until written: the kernel copies a written window that has left the
// cache several times slower (measured on 1.3 GB: 0.22 s of system time in 256 kB writes of cached bytes, 2.5 s
// from a 4 MB buffer).
constexpr std::uint64_t kConvertWindowBytes = std::uint64_t{256} << 10;
// An F32 tensor this large or larger is copied by the kernel while another thread checks it; a smaller one (a
// norm: 8 kB) is checked and written here, as starting and joining a thread for it costs more than the copy
// (on a loaded machine 10-40 ms a thread, waiting to be scheduled).
constexpr std::uint64_t kCheckBesideBytes = std::uint64_t{4} << 20;

// Rows per step of `window_bytes`. Rows in a foreign order are read in any run (view_rows), so only a transposed
// view's window is rounded as window_rows rounds it.
std::uint64_t step_rows(const TensorView& v, std::uint64_t window_bytes) {
    if (v.transposed()) return window_rows(v, window_bytes);
    return std::max<std::uint64_t>(1, window_bytes / std::max<std::uint64_t>(1, v.row_nbytes()));
}

// The types whose values headfuse encodes from, and decodes an encoded type to on request.
bool plain_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// `source` names the input file ("ph.gguf: "), or is empty for a model in memory.
[[noreturn]] void non_finite(const std::string& source, const std::string& tensor, std::uint64_t row) {
    fail(source + "tensor '" + tensor + "': non-finite weight (NaN or infinity) in row " + std::to_string(row));
}

// Buffers the producers reuse from tensor to tensor (the writer calls them one at a time). Allocated once per
// fuse, not once per view: a fresh buffer of megabytes is fresh pages, whose faults and zeroing cost more than
// converting the bytes in them.
// The encoding threads live as long as the buffers: a large tensor is encoded in many windows, and a thread
// created per window costs more than the window's work on small ones.
struct Scratch {
    std::vector<std::byte> in, group, out;
    std::unique_ptr<WorkerPool> workers;

    WorkerPool& pool(unsigned threads) {
        if (!workers) workers = std::make_unique<WorkerPool>(threads);
        return *workers;
    }
};

// Encodes rows [0, n_rows) of `rows` (row r at rows + r * row_bytes(from, ne0); `from` F32, or F16/BF16 widened
// to F32 exactly) to `type` in `out`, checking they are finite; returns the bytes written. A thread widens one row
// at a time into a buffer of its own, so the values make one trip through memory. The rows are shared out to
// `pool`'s threads, or encoded on this one when `pool` is null.
std::span<const std::byte> encode_rows(const std::string& source, const std::string& tensor, std::uint64_t first_row,
                                       const std::byte* rows, DType from, std::uint64_t n_rows, std::uint64_t ne0,
                                       DType type, WorkerPool* pool, std::vector<std::byte>& out) {
    const std::uint64_t rb = row_bytes(type, ne0), from_rb = row_bytes(from, ne0);
    if (out.size() < n_rows * rb) out.resize(n_rows * rb);
    auto encode = [&](std::size_t r0, std::size_t r1) {
        std::vector<float> wide(from == DType::F32 || type == DType::F32 ? 0 : ne0);
        for (std::size_t r = r0; r < r1; ++r) {
            const std::byte* in = rows + r * from_rb;
            std::byte* dst = out.data() + r * rb;
            const float* x = reinterpret_cast<const float*>(in);
            if (type == DType::F32) {  // widened straight into place
                decode_row(from, in, reinterpret_cast<float*>(dst), ne0);
                if (!all_finite(reinterpret_cast<const float*>(dst), ne0)) non_finite(source, tensor, first_row + r);
                continue;
            }
            if (from != DType::F32) {
                decode_row(from, in, wide.data(), ne0);
                x = wide.data();
            }
            if (!all_finite(x, ne0)) non_finite(source, tensor, first_row + r);
            encode_row(type, x, dst, ne0);
        }
    };
    if (pool)
        pool->run(n_rows, encode);
    else
        encode(0, n_rows);
    return std::span<const std::byte>(out).first(n_rows * rb);
}

// Writes one view's bytes as `type`: copied when the type is unchanged (F32 checked for non-finite weights
// on the way), encoded from F32 (or F16/BF16 widened to F32 exactly) otherwise. A view in another storage order
// (a foreign checkpoint's) is read row by row in that order. Memory stays bounded by the window whatever the
// tensor size. Reading beats touching the mapping: a page fault costs more than copying the page.
void emit_view(const TensorView& v, const std::string& source, DType type, unsigned threads, Scratch& s,
               ByteSink& sink) {
    if (v.type() == type && type != DType::F32 && v.plain()) {  // nothing to look at: the kernel copies it
        if (v.file())
            sink.copy_from(*v.file(), v.file_offset(), v.bytes().size());
        else
            sink.write(v.bytes());
        return;
    }
    const bool copy = v.type() == type;
    if (!copy && !plain_float(v.type()) && !(plain_float(type) && traits(v.type()).reads))
        fail(ErrorKind::Unsupported, source + "tensor '" + v.name() + "' is " + std::string(type_name(v.type())) +
                                         "; headfuse encodes to " + std::string(type_name(type)) +
                                         " from f32, f16 or bf16 weights only");
    const std::uint64_t ne0 = v.ne()[0], n_rows = v.n_rows();
    const bool quantize = !copy && traits(type).block_size > 1;
    const std::uint64_t step = step_rows(v, copy       ? kCopyWindowBytes
                                            : quantize ? kEncodeWindowBytes
                                                       : kConvertWindowBytes);
    auto check = [&](const float* x, std::uint64_t n, std::uint64_t r) {
        for (std::uint64_t i = 0; i < n; ++i)
            if (!all_finite(x + i * ne0, ne0)) non_finite(source, v.name(), r + i);
    };
    if (copy && v.plain() && v.file() && v.bytes().size() >= kCheckBesideBytes && resolve_threads(threads) > 1) {
        // The kernel copies the bytes while another core reads and checks them.
        auto checked = std::async(std::launch::async, [&] {
            for (std::uint64_t r = 0; r < n_rows; r += step) {
                const std::uint64_t n = std::min(step, n_rows - r);
                check(reinterpret_cast<const float*>(rows_of(v, r, n, s.in, s.group).data()), n, r);
            }
        });
        std::exception_ptr copy_error;
        try {
            sink.copy_from(*v.file(), v.file_offset(), v.bytes().size());
        } catch (...) {
            copy_error = std::current_exception();
        }
        checked.get();  // a non-finite weight is the error to report first
        if (copy_error) std::rethrow_exception(copy_error);
        return;
    }
    for (std::uint64_t r = 0; r < n_rows; r += step) {
        const std::uint64_t n = std::min(step, n_rows - r);
        const auto window = rows_of(v, r, n, s.in, s.group);
        if (copy && type != DType::F32) {
            sink.write(window);
        } else if (copy) {  // check the window, then write it while it is still in cache
            check(reinterpret_cast<const float*>(window.data()), n, r);
            sink.write(window);
        } else {
            sink.write(encode_rows(source, v.name(), r, window.data(), v.type(), n, ne0, type,
                                   quantize ? &s.pool(threads) : nullptr, s.out));
        }
    }
}

// llama.cpp's LLM_TYPE_70B, which bumps attn_v in the mixes, as each family's load_arch_hparams names it: 80
// layers for llama (with grouped-query attention), deci and qwen2; never for qwen3, phi3 and the Gemma family
// (their loaders name no 70B size).
bool is_70b(const Config& c) {
    if (c.n_layers != 80) return false;
    switch (c.family) {
        case Family::Llama: return c.per_layer() || c.n_heads != c.n_kv_heads;
        case Family::Qwen2: return true;
        case Family::Qwen3:
        case Family::Phi3:
        case Family::Gemma:
        case Family::Gemma2:
        case Family::Gemma3: return false;
    }
    return false;
}

struct Planner {
    const ModelViews& m;
    const FuseOptions& opt;
    std::string source;  // "ph.gguf: " for a model read from a file, prefixing errors about its weights

    mutable Scratch scratch = {};  // the producers' buffers

    // 2-D weights whose rows are not whole blocks of the requested type: reported once, with the count.
    mutable std::vector<std::string> fallback;
    mutable DType fallback_type_ = DType::F16;
    // The first encoded type decoded to the f32, f16 or bf16 asked for: reported once.
    mutable std::string decoded;

    // The type a 2-D weight is written in: the input's, the pure type or the mix's choice, each with
    // llama.cpp's fallback when the rows are not whole blocks. Only F32 weights are encoded.
    DType weight_type(const std::string& name, const TensorView& src, std::uint64_t ne0) const {
        if (!opt.type && !opt.mix) return src.type();
        const DType want = opt.mix ? mix_base_type(*opt.mix) : *opt.type;
        const DType t = opt.mix ? mix_tensor_type(*opt.mix, name, ne0, mix_model()) : fallback_type(want, ne0);
        if (t == src.type()) return t;
        if (!plain_float(src.type())) {
            if (!traits(src.type()).reads) require_decoded(src.type(), source + "tensor '" + src.name() + "'");
            if (!plain_float(t))
                fail(ErrorKind::Unsupported,
                     source + "tensor '" + src.name() + "' is " + std::string(type_name(src.type())) +
                         ": headfuse encodes from f32, f16 or bf16 weights only (encoding " +
                         std::string(type_name(src.type())) +
                         " again would add a second rounding); fuse without "
                         "--type to keep its types, decode it with --type f32, f16 or bf16, or fuse its f32 source");
            if (decoded.empty()) decoded = std::string(type_name(src.type()));
        }
        if (ne0 % traits(want).block_size != 0) {
            if (fallback.empty()) fallback_type_ = t;
            fallback.push_back(name);
        }
        return t;
    }

    void report_decoded() const {
        if (decoded.empty() || !opt.warn) return;
        const DType want = opt.mix ? mix_base_type(*opt.mix) : *opt.type;
        opt.warn("weights decoded from " + decoded + " to " + std::string(type_name(want)) + ": the result carries " +
                 decoded + "'s quantization error (it is not the model " + decoded + " was encoded from)");
    }

    void report_fallback() const {
        if (fallback.empty() || !opt.warn) return;
        const DType want = opt.mix ? mix_base_type(*opt.mix) : *opt.type;
        const bool one = fallback.size() == 1;
        opt.warn(std::to_string(fallback.size()) + (one ? " tensor ('" : " tensors (first '") + fallback.front() +
                 (one ? "') has" : "') have") + " rows that are not whole " + std::string(type_name(want)) +
                 " blocks of " + std::to_string(traits(want).block_size) + " elements: written as " +
                 std::string(type_name(fallback_type_)) + (one ? "" : " (or llama.cpp's fallback for each)"));
    }

    MixModel mix_model() const {
        const Config& c = m.config;
        MixModel mm{.n_layers = c.n_layers, .tied = !m.output, .is_70b = is_70b(c), .attention_layers = {}};
        if (c.per_layer())
            for (std::uint32_t l = 0; l < c.n_layers; ++l)
                if (c.has_attention(l)) mm.attention_layers.push_back(l);
        return mm;
    }

    void add_copy(GgufWriter& w, const TensorSpec& s, const TensorView& v) const {
        const DType t =
            s.kind == TensorKind::Norm || s.kind == TensorKind::Bias ? DType::F32 : weight_type(s.name, v, s.ne[0]);
        w.add_tensor(s.name, static_cast<std::uint32_t>(t), s.ne,
                     [this, v, t](ByteSink& sink) { emit_view(v, source, t, opt.threads, scratch, sink); });
    }

    // A fused projection: the heads' rows, head after head (a stacked tensor: each part's after the other's).
    void add_heads(GgufWriter& w, const TensorSpec& s, std::vector<TensorView> heads) const {
        // Per-head biases (qwen2's q/k/v) stay F32, as llama_model_quantize keeps every 1-D tensor.
        const DType t = s.kind == TensorKind::Bias ? DType::F32 : weight_type(s.name, heads.front(), s.ne[0]);
        for (const TensorView& h : heads)
            if (h.type() != heads.front().type())
                fail(ErrorKind::Unsupported, source + "tensor '" + h.name() + "' is " +
                                                 std::string(type_name(h.type())) + ", but '" + heads.front().name() +
                                                 "' is " + std::string(type_name(heads.front().type())) +
                                                 ": the heads of a projection must share a type");
        w.add_tensor(s.name, static_cast<std::uint32_t>(t), s.ne, [this, heads = std::move(heads), t](ByteSink& sink) {
            for (const TensorView& h : heads) emit_view(h, source, t, opt.threads, scratch, sink);
        });
    }

    // token_embd of a lens model: donor · projᵀ, folded block by block, rounded to f32, then encoded.
    void add_fold(GgufWriter& w, const TensorSpec& s) const {
        const DType t = weight_type(s.name, m.token_embd, s.ne[0]);
        w.add_tensor(s.name, static_cast<std::uint32_t>(t), s.ne, [this, t, name = s.name](ByteSink& sink) {
            LensFold fold(m.token_embd, *m.lens_proj);
            const std::uint64_t dm = fold.d_model();
            std::vector<float> block(kFoldBlockRows * dm);
            for (std::uint64_t v0 = 0; v0 < fold.vocab(); v0 += kFoldBlockRows) {
                const std::uint64_t n = std::min(kFoldBlockRows, fold.vocab() - v0);
                fold.rows(v0, n, block.data());
                if (const TensorView& d = m.token_embd; d.file())  // the donor rows are done with
                    d.file()->release(d.row(v0).data(), n * d.row_nbytes());
                if (t == DType::F32) {
                    for (std::uint64_t r = 0; r < n; ++r)
                        if (!all_finite(block.data() + r * dm, dm)) non_finite(source, name, v0 + r);
                    sink.write({reinterpret_cast<const std::byte*>(block.data()), n * dm * sizeof(float)});
                } else {
                    sink.write(encode_rows(source, name, v0, reinterpret_cast<const std::byte*>(block.data()),
                                           DType::F32, n, dm, t, &scratch.pool(opt.threads), scratch.out));
                }
            }
        });
    }
};

// The source's keys in their order, the hyperparameters set in place (per_head_metadata), and what fusing
// changes: general.file_type when the weights change type, the tokenizer when another file's is asked for.
Metadata fused_metadata(const PerHeadModel& model, const FuseOptions& opt) {
    const Config& c = model.config();
    Metadata md = per_head_metadata(c, model.metadata());
    const bool retyped = opt.type || opt.mix;
    const DType base = opt.mix ? mix_base_type(*opt.mix) : opt.type.value_or(model.views().token_embd.type());
    if (retyped || !md.find("general.file_type"))
        md.set("general.file_type", Value::u32(opt.mix ? file_type(*opt.mix) : file_type(base)));
    if (traits(base).block_size > 1 && (retyped || !md.find("general.quantization_version")))
        md.set("general.quantization_version", Value::u32(kQuantizationVersion));
    else if (retyped && traits(base).block_size == 1)  // decoded: no weight is quantized any more
        md.erase("general.quantization_version");
    if (opt.tokenizer && !opt.tokenizer->general_name.empty()) {  // llama.cpp strips by the model's name
        if (!md.find("general.name"))
            md.set("general.name", Value::string(opt.tokenizer->general_name));
        else if (const std::string& name = md.get_string("general.name", "the model");
                 !named_strip_applies(name) && opt.warn)
            opt.warn(opt.tokenizer->source + ": its added tokens strip the whitespace after them (rstrip) as " +
                     std::string(kNamedStrip.name) + "'s do, which llama.cpp does only for a general.name naming " +
                     std::string(kNamedStrip.name) + "; this model's is '" + name + "'");
    }
    if (!md.find("general.name")) md.set("general.name", Value::string("headfuse"));
    if (opt.tokenizer) {  // another tokenizer replaces the model's
        check_tokenizer(opt.tokenizer->keys, c.vocab, opt.tokenizer->source);
        std::vector<std::string> old;
        for (const auto& e : md.entries())
            if (e.key.rfind("tokenizer.", 0) == 0) old.push_back(e.key);
        for (const std::string& k : old) md.erase(k);
        for (const TokenizerFile& f : kTokenizerFiles) md.erase(f.key);  // the old tokenizer's files
        Metadata tok = opt.tokenizer->keys;
        md.merge(std::move(tok));
    } else if (has_tokenizer(model.metadata())) {  // the model's own, checked, stays in its place
        tokenizer_keys(model.metadata(), c.vocab, model.file() ? model.file()->name() : "the model");
    } else {
        if (c.vocab < kMinLoadableVocab && opt.warn)
            opt.warn("a vocabulary of " + std::to_string(c.vocab) + " tokens is below the " +
                     std::to_string(kMinLoadableVocab) + " node-llama-cpp needs to load a model; libllama loads it");
        md.merge(default_tokenizer(c.vocab));
    }
    return md;
}

std::vector<std::filesystem::path> input_paths(const GgufFile* f) {
    return f ? f->paths() : std::vector<std::filesystem::path>{};
}

}  // namespace

std::vector<std::filesystem::path> fuse(const PerHeadModel& model, const std::filesystem::path& out,
                                        const FuseOptions& options) {
    const ModelViews& m = model.views();
    const Config& c = m.config;
    if (c.has_lens() && c.tied) fail("a projection lens requires an untied output layer (output.weight)");
    GgufWriter w;
    w.alignment = options.output.alignment;
    w.shards = options.output.shards;
    w.metadata = fused_metadata(model, options);
    const Planner plan{.m = m,
                       .opt = options,
                       .source = model.file() ? model.file()->name() + ": " : "",
                       .fallback = {},
                       .decoded = {}};
    // In the source file's order: a fused tensor where its first head was.
    std::vector<TensorSpec> layout = tensor_layout(c, ModelKind::Fused);
    std::vector<std::string> names;
    for (const TensorSpec& s : layout) names.push_back(s.name);
    for (std::size_t i : source_order(model.file(), names)) {
        const TensorSpec& s = layout[i];
        if (is_head_role(*s.role) || !s.parts.empty()) {
            std::vector<TensorView> parts;
            for (const TensorView* v : fused_parts(m, s)) parts.push_back(*v);
            plan.add_heads(w, s, std::move(parts));
        } else if (s.role->role == Role::TokenEmbd && m.lens_proj)
            plan.add_fold(w, s);
        else
            plan.add_copy(w, s, *role_view(m, *s.role, s.layer));
    }
    plan.report_fallback();
    plan.report_decoded();
    std::vector<std::filesystem::path> inputs = input_paths(model.file());
    inputs.insert(inputs.end(), options.inputs.begin(), options.inputs.end());
    if (options.tokenizer)
        inputs.insert(inputs.end(), options.tokenizer->inputs.begin(), options.tokenizer->inputs.end());
    return w.write(out, inputs, options.progress);
}

std::vector<std::filesystem::path> split(const FusedModel& model, const std::filesystem::path& out,
                                         const SplitOptions& options) {
    return model.per_head().save(out, options.progress, options.output);
}

}  // namespace headfuse
