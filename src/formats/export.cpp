// Foreign checkpoints out: a write plan per safetensors tensor, the inverse of the import's name map and row
// order, streamed by the safetensors writer. Memory holds a head, or a block of a transposed matrix.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/fail.h"
#include "base/float_text.h"
#include "formats/import.h"
#include "formats/safetensors.h"
#include "headfuse/checkpoint.h"
#include "headfuse/error.h"
#include "headfuse/file_io.h"
#include "headfuse/quantize.h"
#include "headfuse/vocab.h"
#include "io/output_file.h"
#include "model/roles.h"
#include "model/view_rows.h"

namespace headfuse {
namespace {

namespace fs = std::filesystem;
using enum Storage;
using json = nlohmann::json;

constexpr std::uint64_t kWindowBytes = std::uint64_t{4} << 20;
// A Gemma norm back in Hugging Face's convention: the GGUF holds 1 + w (f32), Hugging Face w. The f32 difference
// (1 + w) - 1 is exact (Sterbenz: 1 + w lies in [0.5, 2] for |w| <= 1), so w comes back as it went in whenever
// 1 + w was exact in f32 (docs/FORMATS.md says when), then narrowed to `type`.
void emit_minus_one(const TensorView& v, DType type, ByteSink& sink) {
    const std::uint64_t n = v.ne()[0];
    std::vector<std::byte> in(v.row_nbytes()), scratch;
    read_rows(v, 0, 1, in, scratch);
    std::vector<float> x(n);
    decode_row(v.type(), in.data(), x.data(), n);
    for (float& w : x) w = w - 1.0f;
    std::vector<std::byte> out(row_bytes(type, n));
    if (type == DType::F32)
        std::memcpy(out.data(), x.data(), out.size());
    else
        encode_row(type, x.data(), out.data(), n);
    sink.write(out);
}

// TransformerLens's Gemma embed.W_E (convert_gemma_weights): the embedding times sqrt(d_model), the scale rounded to
// the weights' type t (torch.tensor(d_model**0.5, dtype=cfg.dtype)) and each product rounded once to t.
void emit_scaled_embedding(const TensorView& v, std::uint32_t d_model, DType t, ByteSink& sink) {
    const std::uint64_t n = v.ne()[0];
    float scale = std::sqrt(static_cast<float>(d_model));
    std::byte buf[4];
    encode_row(t, &scale, buf, 1);
    decode_row(t, buf, &scale, 1);
    std::vector<float> x(n);
    std::vector<std::byte> out(row_bytes(t, n));
    for_each_window(v, kWindowBytes, [&](std::span<const std::byte> rows, std::uint64_t, std::uint64_t k) {
        const std::uint64_t rb = v.row_nbytes();
        for (std::uint64_t i = 0; i < k; ++i) {
            decode_row(v.type(), rows.data() + i * rb, x.data(), n);
            for (float& e : x) e *= scale;
            if (t == DType::F32)
                std::memcpy(out.data(), x.data(), out.size());
            else
                encode_row(t, x.data(), out.data(), n);
            sink.write(out);
        }
    });
}

// A transposed matrix is written in blocks of output rows gathered from one pass over the input.
constexpr std::uint64_t kTransposeBlockBytes = std::uint64_t{16} << 20;

// The type v is written in: `dtype` when one is asked for, else its own, which must be F32, F16 or BF16.
DType export_type(const TensorView& v, std::optional<DType> dtype) {
    if (dtype) {
        require_decoded(v.type(), "tensor '" + v.name() + "'");
        return *dtype;
    }
    if (traits(v.type()).block_size != 1)
        fail(ErrorKind::Unsupported, "tensor '" + v.name() + "' is " + std::string(type_name(v.type())) +
                                         "; export writes f32, f16 and bf16 tensors: ask for one with --dtype to "
                                         "decode it (the result then carries its quantization error)");
    return v.type();
}

// n rows of `ne0` elements of type `from` as type `to`: decoded to f32 (F16 and BF16 exactly, an encoded type as
// ggml decodes it), then narrowed to `to` when it is F16 or BF16.
void convert_rows(DType from, DType to, std::uint64_t ne0, std::uint64_t n, std::span<const std::byte> in,
                  std::vector<std::byte>& out) {
    const std::uint64_t rbi = row_bytes(from, ne0), rbo = row_bytes(to, ne0);
    out.resize(n * rbo);
    std::vector<float> x(ne0);
    for (std::uint64_t i = 0; i < n; ++i) {
        decode_row(from, in.data() + i * rbi, x.data(), ne0);
        if (to == DType::F32)
            std::memcpy(out.data() + i * rbo, x.data(), rbo);
        else
            encode_row(to, x.data(), out.data() + i * rbo, ne0);
    }
}

// All rows of a view (a head: small), as type t.
std::vector<std::byte> all_rows(const TensorView& v, DType t) {
    std::vector<std::byte> out(v.n_rows() * v.row_nbytes()), scratch;
    read_rows(v, 0, v.n_rows(), out, scratch);
    if (t == v.type()) return out;
    std::vector<std::byte> converted;
    convert_rows(v.type(), t, v.ne()[0], v.n_rows(), out, converted);
    return converted;
}

// The rows of v as `type` (norms going back to their source type, or every tensor to the --dtype asked for).
void emit_rows(const TensorView& v, DType type, ByteSink& sink) {
    std::vector<std::byte> converted;
    for_each_window(v, kWindowBytes, [&](std::span<const std::byte> rows, std::uint64_t, std::uint64_t n) {
        if (type == v.type()) return sink.write(rows);
        convert_rows(v.type(), type, v.ne()[0], n, rows, converted);
        sink.write(converted);
    });
}

// Heads in Hugging Face's rotate-half order: stored row s of each head is llama.cpp's row rotate_half_row_of(s).
void emit_rotate_half(const std::vector<TensorView>& heads, DType t, ByteSink& sink) {
    for (const TensorView& h : heads) {
        const std::vector<std::byte> rows = all_rows(h, t);
        const std::uint64_t rb = row_bytes(t, h.ne()[0]), g = h.n_rows();
        for (std::uint64_t s = 0; s < g; ++s) sink.write(std::span(rows).subspan(rotate_half_row_of(s, g) * rb, rb));
    }
}

// Heads transposed, each [ne0, d_head] row-major (TransformerLens W_Q), columns in rotate-half order for Q, K.
void emit_heads_transposed(const std::vector<TensorView>& heads, bool rotate_half, DType t, ByteSink& sink) {
    std::vector<std::byte> out;
    for (const TensorView& h : heads) {
        const std::uint64_t es = traits(t).type_size, g = h.n_rows(), ne0 = h.ne()[0], rb = row_bytes(t, ne0);
        const std::vector<std::byte> rows = all_rows(h, t);
        out.resize(ne0 * g * es);
        for (std::uint64_t s = 0; s < g; ++s) {
            const std::byte* src = rows.data() + (rotate_half ? rotate_half_row_of(s, g) : s) * rb;
            for (std::uint64_t c = 0; c < ne0; ++c) std::memcpy(out.data() + (c * g + s) * es, src + c * es, es);
        }
        sink.write(out);
    }
}

// The transpose of a view, [ne0, n_rows] row-major, in blocks of output rows.
void emit_transposed(const TensorView& v, DType t, ByteSink& sink) {
    const std::uint64_t es = traits(t).type_size, R = v.n_rows(), C = v.ne()[0], rb = row_bytes(t, C);
    const std::uint64_t B = std::max<std::uint64_t>(1, kTransposeBlockBytes / std::max<std::uint64_t>(1, R * es));
    std::vector<std::byte> block, converted;
    for (std::uint64_t c0 = 0; c0 < C; c0 += B) {
        const std::uint64_t nb = std::min(B, C - c0);
        block.resize(nb * R * es);
        for_each_window(v, kWindowBytes, [&](std::span<const std::byte> rows, std::uint64_t r, std::uint64_t n) {
            if (t != v.type()) {
                convert_rows(v.type(), t, C, n, rows, converted);
                rows = converted;
            }
            for (std::uint64_t i = 0; i < n; ++i)
                for (std::uint64_t b = 0; b < nb; ++b)
                    std::memcpy(block.data() + (b * R + r + i) * es, rows.data() + i * rb + (c0 + b) * es, es);
        });
        sink.write(block);
    }
}

// A head's bias in Hugging Face's rotate-half order: stored element s is llama.cpp's element rotate_half_row_of(s).
void emit_rotate_half_elements(const std::vector<TensorView>& heads, DType type, ByteSink& sink) {
    std::vector<std::byte> out;
    for (const TensorView& h : heads) {
        const std::vector<std::byte> bytes = all_rows(h, type);
        const std::uint64_t g = h.ne()[0], os = traits(type).type_size;
        out.resize(g * os);
        for (std::uint64_t s = 0; s < g; ++s)
            std::memcpy(out.data() + s * os, bytes.data() + rotate_half_row_of(s, g) * os, os);
        sink.write(out);
    }
}

bool all_ones(const TensorView& v) {
    bool ones = true;
    for_each_window(v, kWindowBytes, [&](std::span<const std::byte> rows, std::uint64_t, std::uint64_t) {
        const auto* x = reinterpret_cast<const float*>(rows.data());
        for (std::size_t i = 0; i < rows.size() / sizeof(float); ++i) ones = ones && x[i] == 1.0f;
    });
    return ones;
}

// A file of a checkpoint folder, one an export replaces: config.json, generation_config.json, model.safetensors,
// its index, model-NNNNN-of-NNNNN.safetensors, the tokenizer files.
bool checkpoint_file(const std::string& name) {
    if (name == "config.json" || name == "generation_config.json" || name == kSafetensorsSingleName ||
        name == kSafetensorsIndexName)
        return true;
    for (const TokenizerFile& f : kTokenizerFiles)
        if (name == f.file) return true;
    // "model-00001-of-00005.safetensors"
    auto digits = [&](std::size_t at) {
        return name.substr(at, 5).find_first_not_of("0123456789") == std::string::npos;
    };
    return name.size() == 32 && name.starts_with("model-") && digits(6) && name.substr(11, 4) == "-of-" && digits(15) &&
           name.ends_with(".safetensors");
}

// An export's destination before any work: interrupted exports' staging folders cleared (io/output_set.h), then
// empty, or with `replace` the checkpoint files to remove at publication (none of them an input).
std::vector<fs::path> existing_checkpoint(const fs::path& folder, bool replace, std::span<const fs::path> inputs) {
    std::vector<fs::path> old;
    std::error_code ec;
    if (!fs::is_directory(folder, ec)) return old;
    OutputSet::recover(folder, std::string(kCheckpointStem));
    std::vector<std::string> names;
    for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec))
        names.push_back(it->path().filename().string());
    if (ec) fail(ErrorKind::Io, "cannot list the folder '" + folder.string() + "': " + ec.message());
    std::sort(names.begin(), names.end());
    if (!names.empty() && !replace)
        fail(ErrorKind::InvalidArgument,
             "export: the folder '" + folder.string() + "' is not empty (it holds '" + names.front() + "'" +
                 (names.size() > 1 ? " and " + std::to_string(names.size() - 1) + " more" : std::string()) +
                 "); a checkpoint folder is written whole: give a new or empty folder, or --force to replace the "
                 "checkpoint in it");
    for (const std::string& n : names)
        if (checkpoint_file(n)) {
            refuse_overwrite(folder / n, inputs);
            old.push_back(folder / n);
        }
    return old;
}

std::string_view torch_dtype(DType t) {
    switch (t) {
        case DType::F16: return "float16";
        case DType::BF16: return "bfloat16";
        default: return "float32";
    }
}

// What the family's Hugging Face (or TransformerLens) model cannot hold, refused by name before any work.
void check_family_exports(const Config& c, bool tl) {
    const std::string arch(c.architecture());
    if (tl && !tl_family(c.family))
        fail(ErrorKind::Unsupported, "export: a " + arch +
                                         " model has no TransformerLens layout headfuse writes (it "
                                         "writes " +
                                         tl_families() + "); export it as hf");
    if (c.family == Family::Qwen2)  // Qwen2Attention: q_proj, k_proj, v_proj always with bias
        for (Role r : {Role::AttnQBias, Role::AttnKBias, Role::AttnVBias})
            if (!c.optional_roles.contains(r))
                fail(ErrorKind::Unsupported, "export: the qwen2 model has no '" +
                                                 first_tensor_name(role_spec(r), ModelKind::Fused) +
                                                 "', which Hugging Face's Qwen2 always has");
    if (c.family == Family::Qwen3 && hf_attention_bias(c))  // attention_bias would give o_proj a bias too
        fail(ErrorKind::Unsupported,
             "export: the qwen3 model has q/k/v biases: Hugging Face's Qwen3 has them only with attention_bias, which "
             "gives o_proj a bias llama.cpp's qwen3 graph has no place for");
}

}  // namespace

std::vector<fs::path> export_checkpoint(const PerHeadModel& model, const fs::path& folder, const ExportOptions& options,
                                        std::span<const fs::path> inputs) {
    const ModelViews& m = model.views();
    const Config& c = m.config;
    const std::vector<fs::path> replaced = existing_checkpoint(folder, options.replace, inputs);
    if (c.has_lens())
        fail(ErrorKind::Unsupported,
             "export: a per-head lens model has no token embedding yet: fuse it first (the fold)");
    const bool tl = options.format == ExportFormat::TransformerLens;
    if (c.per_layer()) {
        // Heads pruned unevenly (a deci model): Hugging Face's and TransformerLens's llama configs hold one head
        // count and one d_ff for every layer, so no config describes these tensors.
        for (std::uint32_t l = 1; l < c.n_layers; ++l) {
            auto counts = [&](std::uint32_t i) {
                return std::to_string(c.n_heads_at(i)) + " heads (" + std::to_string(c.n_kv_heads_at(i)) +
                       " kv), d_ff " + std::to_string(c.d_ff_at(i));
            };
            if (counts(l) != counts(0))
                fail(ErrorKind::Unsupported,
                     "export: layer " + std::to_string(l) + " has " + counts(l) + ", layer 0 " + counts(0) + "; a " +
                         (tl ? "TransformerLens" : "Hugging Face") +
                         " llama config holds one count for every layer, so export refuses a model with per-layer "
                         "head counts (deci); prune as many heads in every layer");
        }
    }
    check_family_exports(c, tl);
    const std::span<const NameMap> map = tl ? tl_names(c) : hf_names(c);
    // TransformerLens's Gemma: embed.W_E scaled by sqrt(d_model), the norms as the GGUF holds them (1 + w, f32).
    const bool tl_gemma = tl && c.arch().norm_plus_one;
    const bool minus_one = !tl && c.arch().norm_plus_one;
    const bool gqa = c.n_kv_heads != c.n_heads;
    DType norm_type = DType::F32;
    if (const Value* v = model.metadata().find(kNormTypeKey))
        if (const auto* s = std::get_if<std::string>(&v->scalar))
            if (auto t = parse_dtype(*s); t && (*t == DType::F16 || *t == DType::BF16)) norm_type = *t;
    bool folded = tl && !tl_gemma;  // TransformerLens: norms all ones are folded ones, written as RMSPre without ln
                                    // weights (Gemma's: 1 + w, never folded)
    if (tl)
        for (const TensorSpec& s : tensor_layout(c, ModelKind::Fused))
            if (s.kind == TensorKind::Norm && s.role->role != Role::RopeFreqs && folded) {
                const TensorView* v = role_view(m, *s.role, s.layer);
                folded = v->type() == DType::F32 && all_ones(*v);
            }
    // RoPE scaling: linear is a config key in both layouts; Llama 3's rope_freqs.weight goes back to the
    // Hugging Face rope_scaling object it came from; TransformerLens's config holds neither.
    json rope_scaling = nullptr;
    if (c.rope_scaling == RopeScaling::Yarn)
        fail(ErrorKind::Unsupported,
             "export: the model uses YaRN RoPE scaling, which headfuse does not export (Hugging Face's YaRN differs "
             "from llama.cpp's)");
    if (c.rope_scaling == RopeScaling::Linear)
        rope_scaling = {{"rope_type", "linear"}, {"factor", json_float(c.rope_scaling_factor)}};
    if (c.optional_roles.contains(Role::RopeFreqs)) {
        const Value* v = model.metadata().find(kRopeScalingKey);
        const auto* text = v ? std::get_if<std::string>(&v->scalar) : nullptr;
        if (!text || c.rope_scaling != RopeScaling::None)
            fail(ErrorKind::Unsupported,
                 "export: the model has rope_freqs.weight, which headfuse exports only as the Hugging Face llama3 "
                 "rope_scaling it was made from (key " +
                     std::string(kRopeScalingKey) + ")");
        rope_scaling = json::parse(*text, nullptr, false);
        if (!rope_scaling.is_object() ||
            llama3_rope_factors(rope_scaling, c, std::string(kRopeScalingKey)) !=
                std::vector<float>(role_view(m, role_spec(Role::RopeFreqs), 0)->f32(),
                                   role_view(m, role_spec(Role::RopeFreqs), 0)->f32() + c.d_head / 2))
            fail("export: rope_freqs.weight is not what key " + std::string(kRopeScalingKey) +
                 " implies: the factors were changed");
    }
    if (c.optional_roles.contains(Role::RopeLong)) {  // Phi-3's LongRoPE: the factors, as the config lists them
        auto factors = [&](Role r) {                  // decoded: a GGUF may hold them in any type
            const TensorView& v = *role_view(m, role_spec(r), 0);
            std::vector<std::byte> in(v.row_nbytes()), scratch;
            read_rows(v, 0, 1, in, scratch);
            std::vector<float> x(v.ne()[0]);
            decode_row(v.type(), in.data(), x.data(), x.size());
            json list = json::array();
            for (float f : x) list.push_back(json_float(f));
            return list;
        };
        // Hugging Face derives the attention factor from the two context lengths; a file whose factor is another
        // has no config that says it.
        const float implied = longrope_attn_factor(c);
        if (c.rope_attn_factor != implied)
            fail(ErrorKind::Unsupported, "export: key " + c.key("rope.scaling.attn_factor") + " is " +
                                             shortest_float(c.rope_attn_factor) +
                                             ", but a Hugging Face LongRoPE config with these context lengths "
                                             "implies " +
                                             shortest_float(implied));
        rope_scaling = {
            {"type", "longrope"}, {"long_factor", factors(Role::RopeLong)}, {"short_factor", factors(Role::RopeShort)}};
    }
    // TransformerLens's rotary_scaling_factor is linear scaling of the global layers: Gemma 3's, and no other's.
    if (tl && rope_scaling != nullptr && !(c.family == Family::Gemma3 && c.rope_scaling == RopeScaling::Linear))
        fail(ErrorKind::Unsupported, "export: the model scales RoPE, which a TransformerLens config cannot say for a " +
                                         std::string(c.architecture()) +
                                         " model (it can for gemma3's global layers); export it as hf");
    std::uint32_t sliding_window = 0;  // phi3: the window its file carries (llama.cpp's phi3 graph ignores it)
    if (c.family == Family::Phi3 && model.metadata().find(c.key("attention.sliding_window")))
        sliding_window = model.metadata().get_u32(c.key("attention.sliding_window"), "the model");
    const std::optional<DType> dtype = options.dtype;
    if (dtype && *dtype != DType::F32 && *dtype != DType::F16 && *dtype != DType::BF16)
        fail(ErrorKind::InvalidArgument,
             "export: --dtype is " + std::string(type_name(*dtype)) + "; expected f32, f16 or bf16");
    const DType weight_type = export_type(m.token_embd, dtype);
    if (dtype && options.warn) {  // the first encoded type decoded
        std::string decoded;
        for_each_view(m, [&](const TensorView& v) {
            if (decoded.empty() && traits(v.type()).block_size != 1) decoded = std::string(type_name(v.type()));
        });
        if (!decoded.empty())
            options.warn("weights decoded from " + decoded + " to " + std::string(type_name(*dtype)) +
                         ": the result carries " + decoded + "'s quantization error (it is not the model " + decoded +
                         " was encoded from)");
    }

    std::vector<StTensorPlan> plans;
    auto zeros = [&](std::string name, std::vector<std::uint64_t> shape) {
        StTensorPlan p{std::move(name), weight_type, std::move(shape), {}};
        const std::uint64_t n = p.nbytes();
        p.produce = [n](ByteSink& sink) {
            const std::vector<std::byte> z(std::min<std::uint64_t>(n, kWindowBytes));
            for (std::uint64_t done = 0; done < n; done += z.size())
                sink.write(std::span(z).first(std::min<std::uint64_t>(z.size(), n - done)));
        };
        plans.push_back(std::move(p));
    };
    // The bias tensors the layout writes in a layer even when the model lacks their role: all of
    // TransformerLens's (its state dicts always have them), and Hugging Face's partners of a bias its
    // attention_bias or mlp_bias flag switches on. Written as zeros, in the layout's place for them.
    auto zero_biases = [&](std::uint32_t l) {
        if (l == UINT32_MAX) return;
        if (!tl && c.family == Family::Qwen2) return;  // Qwen2Attention's q/k/v biases are always there, o has none
        const bool attn = hf_attention_bias(c), mlp = hf_mlp_bias(c);
        for (const NameMap& row : map) {
            const RoleSpec& r = role_spec(row.role);
            if (r.kind != TensorKind::Bias || c.optional_roles.contains(row.role)) continue;
            const bool in_mlp =
                row.role == Role::FfnGateBias || row.role == Role::FfnUpBias || row.role == Role::FfnDownBias;
            if (!tl && !(in_mlp ? mlp : attn)) continue;
            const std::uint32_t n = is_head_role(r) ? head_count(r, c, l) : 1;
            std::vector<std::uint64_t> ne = r.shape(c, l);
            ne[0] *= n;
            zeros(foreign_name(row, l, gqa), foreign_shape(row, ne, c));
        }
        if (tl) zeros("blocks." + std::to_string(l) + ".mlp.b_in", {c.d_ff});
    };
    auto layer_biases = zero_biases;
    std::uint32_t layer_done = UINT32_MAX;
    for (const TensorSpec& s : tensor_layout(c, ModelKind::Fused)) {
        if (s.role->scope != Scope::Global && s.layer != layer_done) {
            layer_biases(layer_done);
            layer_done = s.layer;
        }
        if (s.role->role == Role::RopeFreqs || s.role->role == Role::RopeLong || s.role->role == Role::RopeShort)
            continue;  // in the config's rope_scaling
        if (tl_gemma && s.role->role == Role::TokenEmbd) {
            plans.push_back({"embed.W_E", weight_type, {c.vocab, c.d_model}, [&m, &c, weight_type](ByteSink& sink) {
                                 emit_scaled_embedding(m.token_embd, c.d_model, weight_type, sink);
                             }});
            continue;
        }
        const NameMap* row = nullptr;
        for (const NameMap& r : s.parts.empty() ? map : hf_stacked_names())
            if (r.role == s.role->role) row = &r;
        if (!row)
            fail(ErrorKind::Unsupported,
                 "export: " + std::string(tl ? "TransformerLens" : "Hugging Face") + " has no place for tensor '" +
                     s.name + "'" +
                     (tl && s.kind == TensorKind::Bias ? " (its gated MLP has no bias before the product)" : ""));
        if (row->may_be_ones && folded) continue;
        const bool small = s.kind == TensorKind::Norm || s.kind == TensorKind::Bias;  // f32 in GGUF
        StTensorPlan p{foreign_name(*row, s.layer, gqa), DType::F32, foreign_shape(*row, s.ne, c), {}};
        if (!s.parts.empty()) {  // Phi-3's qkv_proj, gate_up_proj: every part's rows, as stored
            const std::vector<const TensorView*> parts = fused_parts(m, s);
            p.type = export_type(*parts.front(), dtype);
            for (const TensorView* v : parts)
                if (export_type(*v, dtype) != p.type)
                    fail("tensor '" + v->name() + "' is " + std::string(type_name(v->type())) + ", '" +
                         parts.front()->name() + "' is " + std::string(type_name(parts.front()->type())));
            p.produce = [parts, t = p.type](ByteSink& sink) {
                for (const TensorView* v : parts) emit_rows(*v, t, sink);
            };
        } else if (is_head_role(*s.role)) {
            const std::vector<TensorView>* heads = &role_heads(m, *s.role, s.layer);
            p.type = export_type(heads->front(), dtype);
            for (const TensorView& h : *heads) {
                export_type(h, dtype);
                if (h.type() != heads->front().type())
                    fail("tensor '" + h.name() + "' is " + std::string(type_name(h.type())) + ", head 0 is " +
                         std::string(type_name(heads->front().type())));
            }
            if (!dtype && small && p.type == DType::F32) p.type = norm_type;
            // Q and K rows go back to rotate-half order for the families of adjacent pairs; NEOX's are already.
            const bool rope_rows = row->rope_rows && c.arch().rope == RopePairing::Adjacent;
            if (s.kind == TensorKind::Bias && rope_rows)
                p.produce = [heads, t = p.type](ByteSink& sink) { emit_rotate_half_elements(*heads, t, sink); };
            else if (s.kind == TensorKind::Bias)
                p.produce = [heads, t = p.type](ByteSink& sink) {
                    for (const TensorView& h : *heads) emit_rows(h, t, sink);
                };
            else if (row->storage == HeadsT)
                p.produce = [heads, rh = rope_rows, t = p.type](ByteSink& sink) {
                    emit_heads_transposed(*heads, rh, t, sink);
                };
            else if (rope_rows)
                p.produce = [heads, t = p.type](ByteSink& sink) { emit_rotate_half(*heads, t, sink); };
            else
                p.produce = [heads, t = p.type](ByteSink& sink) {
                    for (const TensorView& h : *heads) emit_rows(h, t, sink);
                };
        } else {
            const TensorView* v = role_view(m, *s.role, s.layer);
            p.type = export_type(*v, dtype);
            if (!dtype && small && v->type() == DType::F32) p.type = norm_type;
            if (tl_gemma && s.kind == TensorKind::Norm) p.type = DType::F32;  // `w.float() + 1` in f32
            if (minus_one && s.kind == TensorKind::Norm)
                p.produce = [v, t = p.type](ByteSink& sink) { emit_minus_one(*v, t, sink); };
            else if (row->storage == Transposed || row->storage == OutHeads)
                p.produce = [v, t = p.type](ByteSink& sink) { emit_transposed(*v, t, sink); };
            else
                p.produce = [v, t = p.type](ByteSink& sink) { emit_rows(*v, t, sink); };
        }
        plans.push_back(std::move(p));
    }
    layer_biases(layer_done);
    if (tl) {
        if (c.tied) {  // TransformerLens keeps its own unembedding: the embedding, transposed
            plans.push_back({"unembed.W_U", weight_type, {c.d_model, c.vocab}, [&m, weight_type](ByteSink& sink) {
                                 emit_transposed(m.token_embd, weight_type, sink);
                             }});
        }
        zeros("unembed.b_U", {c.vocab});
    }

    // The tokenizer files the GGUF keeps (kTokenizerFiles), byte for byte as they were read, in either format:
    // a TransformerLens folder holding them is read back with them, as a Hugging Face folder is.
    std::vector<std::pair<fs::path, std::string>> tokenizer_files;
    for (const TokenizerFile& f : kTokenizerFiles) {
        const Value* v = model.metadata().find(f.key);
        if (!v) continue;
        std::string bytes;
        if (!f.binary && v->type == ValueType::STRING) {
            bytes = std::get<std::string>(v->scalar);
        } else if (f.binary && v->type == ValueType::ARRAY && v->elem_type == ValueType::U8) {
            bytes.reserve(v->items.size());
            for (const Value& b : v->items) bytes.push_back(static_cast<char>(std::get<std::uint64_t>(b.scalar)));
        } else {
            fail("export: key '" + std::string(f.key) + "' is " +
                 (v->type == ValueType::ARRAY ? "an array of " + std::string(value_type_name(v->elem_type))
                                              : std::string(value_type_name(v->type))) +
                 ", expected " + (f.binary ? "an array of u8" : "a string") + " (the bytes of " + std::string(f.file) +
                 ")");
        }
        tokenizer_files.emplace_back(folder / f.file, std::move(bytes));
    }

    // Every file into one set, published together: a failure or a stop leaves the folder as it was.
    std::error_code ec;
    const bool folder_existed = fs::exists(folder, ec);
    std::vector<fs::path> written;
    try {
        fs::create_directories(folder, ec);
        if (ec) fail(ErrorKind::Io, "cannot create folder '" + folder.string() + "': " + ec.message());
        OutputSet set(folder, std::string(kCheckpointStem));
        StWriteOptions st;
        st.max_shard_bytes = options.max_shard_bytes;
        st.progress = options.progress;
        st.set = &set;
        written = write_safetensors(folder, plans, st, inputs);
        const std::string text =
            (tl ? tl_config_json(c, folded) : hf_config_json(c, torch_dtype(weight_type), rope_scaling, sliding_window))
                .dump(2) +
            "\n";
        auto put = [&](const fs::path& path, std::string_view bytes) {
            OutputFile out(path, inputs, bytes.size(), &set);
            out.write({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()});
            out.commit();
            written.push_back(path);
        };
        for (const auto& [path, bytes] : tokenizer_files) put(path, bytes);
        put(folder / "config.json", text);
        for (const fs::path& old : replaced) set.remove_on_publish(old);
        set.publish();
    } catch (...) {
        if (!folder_existed) fs::remove(folder, ec);  // the folder we made, if it is empty
        throw;
    }
    return written;
}

}  // namespace headfuse
