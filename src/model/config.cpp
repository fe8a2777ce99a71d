#include "headfuse/config.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>

#include "base/fail.h"
#include "headfuse/error.h"
#include "model/config_read.h"
#include "model/roles.h"

namespace headfuse {
namespace {

std::string key_of(std::string_view arch, std::string_view key) {
    std::string s(arch);
    s += '.';
    s += key;
    return s;
}

void check_range(std::string_view field, std::uint32_t v, std::uint32_t lo, std::uint32_t hi) {
    if (v < lo || v > hi)
        fail(ErrorKind::InvalidArgument, std::string(field) + " must be in " + std::to_string(lo) + ".." +
                                             std::to_string(hi) + ", found " + std::to_string(v));
}

// A float as people write it: "1e-09", not std::to_string's "0.000000".
std::string number(float x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", double{x});
    return buf;
}

// RoPE scaling as llama.cpp's loader reads it (llama_model_base::load_hparams): the type defaults to
// "linear", the factor to the old key rope.scale_linear and then to 0, and a factor of 0 means 1.
void read_rope_scaling(const Metadata& md, std::string_view where, std::string_view arch, Config& c) {
    const std::string kType = key_of(arch, "rope.scaling.type");
    float factor = 0.0f;
    if (md.find(key_of(arch, "rope.scaling.factor")))
        factor = md.get_f32(key_of(arch, "rope.scaling.factor"), where);
    else if (md.find(key_of(arch, "rope.scale_linear")))
        factor = md.get_f32(key_of(arch, "rope.scale_linear"), where);
    c.rope_scaling_factor = factor == 0.0f ? 1.0f : factor;
    if (md.find(kType)) {
        const std::string& type = md.get_string(kType, where);
        if (type == "none")
            c.rope_scaling = RopeScaling::None;
        else if (type == "linear")
            c.rope_scaling = RopeScaling::Linear;
        else if (type == "yarn")
            c.rope_scaling = RopeScaling::Yarn;
        else
            fail(ErrorKind::Unsupported, std::string(where) + ": key '" + kType + "' is \"" + type +
                                             "\"; headfuse reads none, linear and yarn");
    } else {
        c.rope_scaling = c.rope_scaling_factor == 1.0f ? RopeScaling::None : RopeScaling::Linear;
    }
    if (const std::string k = key_of(arch, "rope.scaling.original_context_length"); md.find(k))
        c.rope_original_context = md.get_u32(k, where);
    if (const std::string k = key_of(arch, "rope.scaling.attn_factor"); md.find(k))
        c.rope_attn_factor = md.get_f32(k, where);
}

// Keys the llama graph reads that change its result and that the forward pass does not model.
void note_unmodeled(const Metadata& md, std::string_view where, std::string_view arch, Config& c) {
    auto note = [&](std::string_view key, const std::string& value) {
        c.unmodeled.push_back("key '" + std::string(key) + "' = " + value);
    };
    if (const std::string k = key_of(arch, "attention.causal"); const Value* v = md.find(k)) {
        if (v->type == ValueType::BOOL && !std::get<bool>(v->scalar)) note(k, "false (non-causal attention)");
    }
    // The window pattern and (gemma2) a local RoPE base: llama.cpp reads them, headfuse writes its row's defaults.
    if (const ArchSpec* row = find_arch(arch); row && row->swa_pattern > 0) {
        if (const std::string k = key_of(arch, "attention.sliding_window_pattern"); const Value* v = md.find(k)) {
            if (v->type != ValueType::U32 || std::get<std::uint64_t>(v->scalar) != row->swa_pattern)
                note(k, "other than " + std::to_string(row->swa_pattern) + " (another sliding-window layer pattern)");
        }
        const std::string base = key_of(arch, "rope.freq_base_swa"), global = key_of(arch, "rope.freq_base");
        if (!row->swa_rope && md.find(base)) {
            const float g = md.find(global) ? md.get_f32(global, where) : 10000.0f;
            if (md.get_f32(base, where) != g) note(base, "other than rope.freq_base (a RoPE base of the local layers)");
        }
    }
    if (const std::string k = key_of(arch, "expert_count"); md.find(k)) {
        const std::uint32_t n = md.get_u32(k, where);
        if (n > 0) note(k, std::to_string(n) + " (a mixture of experts)");
    }
}

// A per-layer count of a deci file, as llama.cpp's get_key_or_arr reads it: a u32 for every layer, or an array
// of n_layers u32 or i32 (negative entries refused). Empty when the key is absent.
std::vector<std::uint32_t> layer_counts(const Metadata& md, const std::string& key, std::uint32_t n_layers,
                                        std::string_view where) {
    const Value* v = md.find(key);
    if (!v) return {};
    if (v->type != ValueType::ARRAY) return std::vector<std::uint32_t>(n_layers, md.get_u32(key, where));
    const std::string at = std::string(where) + ": key '" + key + "'";
    if (v->elem_type != ValueType::U32 && v->elem_type != ValueType::I32)
        fail(at + " is an array of " + std::string(value_type_name(v->elem_type)) + ", expected u32 or i32");
    if (v->items.size() != n_layers)
        fail(at + " has " + std::to_string(v->items.size()) + " entries, expected block_count " +
             std::to_string(n_layers));
    std::vector<std::uint32_t> out;
    for (std::size_t i = 0; i < v->items.size(); ++i) {
        const Value& x = v->items[i];
        const std::int64_t n = x.type == ValueType::U32 ? static_cast<std::int64_t>(std::get<std::uint64_t>(x.scalar))
                                                        : std::get<std::int64_t>(x.scalar);
        if (n < 0 || n > std::int64_t{UINT32_MAX})
            fail(at + " entry " + std::to_string(i) + " is " + std::to_string(n) + ", expected a count");
        out.push_back(static_cast<std::uint32_t>(n));
    }
    return out;
}

std::uint32_t largest(const std::vector<std::uint32_t>& v, std::uint32_t otherwise) {
    return v.empty() ? otherwise : *std::max_element(v.begin(), v.end());
}

Value count_value(const std::vector<std::uint32_t>& list, std::uint32_t scalar) {
    if (list.empty()) return Value::u32(scalar);
    std::vector<Value> items;
    for (std::uint32_t x : list) items.push_back(Value::i32(static_cast<std::int32_t>(x)));
    return Value::array(ValueType::I32, std::move(items));
}

}  // namespace

std::string_view rope_scaling_name(RopeScaling s) noexcept {
    switch (s) {
        case RopeScaling::None: return "none";
        case RopeScaling::Linear: return "linear";
        case RopeScaling::Yarn: return "yarn";
    }
    return "none";
}

const ArchSpec& Config::arch() const noexcept {
    if (const ArchSpec* a = find_arch(family, per_layer())) return *a;
    return *find_arch(family, false);
}

std::string Config::key(std::string_view name) const { return key_of(architecture(), name); }

bool Config::is_local_layer(std::uint32_t layer) const noexcept {
    const std::uint32_t n = arch().swa_pattern;
    return n > 0 && sliding_window != 0 && layer % n < n - 1;
}

float Config::attention_scale() const noexcept {
    const ArchSpec& a = arch();
    // llama_model_gemma2/3::load_arch_hparams: n_embd / n_head(0) in integers, then a float sqrt.
    if (a.attn_scale == AttnScaleRule::QueryGemma27B && n_layers == a.embd_scale_layers)
        return 1.0f / std::sqrt(float(d_model / n_heads_at(0)));
    return 1.0f / std::sqrt(float(d_head));
}

void Config::set_layer_counts(std::vector<std::uint32_t> heads, std::vector<std::uint32_t> kv_heads,
                              std::vector<std::uint32_t> ff) {
    layer_heads = std::move(heads);
    layer_kv_heads = std::move(kv_heads);
    layer_d_ff = std::move(ff);
    n_heads = largest(layer_heads, n_heads);
    n_kv_heads = largest(layer_kv_heads, n_kv_heads);
    d_ff = largest(layer_d_ff, d_ff);
}

namespace {

// What the row of the architecture table allows: per-layer counts only where its llama.cpp loader reads them,
// the optional roles its loader reads (and those it requires), the feature values it has.
void check_arch(const Config& c) {
    const ArchSpec* row = find_arch(c.family, false);
    if (!row)
        fail(ErrorKind::InvalidArgument, "family " + std::to_string(static_cast<unsigned>(c.family)) +
                                             " is not one of headfuse's (" + std::string(arch_names()) + ")");
    const std::string name(row->gguf_name);
    if (c.per_layer() && !find_arch(c.family, true))
        fail(ErrorKind::Unsupported, "per-layer head or feed-forward counts: llama.cpp's " + name +
                                         " loader reads one count for every layer (only deci's reads them per layer)");
    const ArchSpec& a = c.arch();
    for (const RoleSpec& r : role_table()) {
        if (r.presence != Presence::Optional) continue;
        if (c.optional_roles.contains(r.role) && !a.allowed_roles.contains(r.role))
            fail(ErrorKind::Unsupported, "tensor '" + first_tensor_name(r, ModelKind::Fused) + "': llama.cpp's " +
                                             std::string(a.gguf_name) + " loader does not read it");
        if (!c.optional_roles.contains(r.role) && a.required_roles.contains(r.role))
            fail(ErrorKind::InvalidArgument, "tensor '" + first_tensor_name(r, ModelKind::Fused) +
                                                 "' is missing: llama.cpp's " + std::string(a.gguf_name) +
                                                 " loader requires it");
    }
    // LongRoPE: llama.cpp picks one of the two by the context it runs with; headfuse models the pair only.
    if (c.optional_roles.contains(Role::RopeLong) != c.optional_roles.contains(Role::RopeShort)) {
        const bool has_long = c.optional_roles.contains(Role::RopeLong);
        fail(ErrorKind::Unsupported,
             "tensor '" + first_tensor_name(role_spec(has_long ? Role::RopeShort : Role::RopeLong), ModelKind::Fused) +
                 "' is missing beside '" +
                 first_tensor_name(role_spec(has_long ? Role::RopeLong : Role::RopeShort), ModelKind::Fused) +
                 "': headfuse models LongRoPE with both factor sets");
    }
    if (a.q_dim_is_d_model && c.q_dim() != c.d_model)
        fail(ErrorKind::Unsupported, "n_heads * d_head (" + std::to_string(c.q_dim()) + ") differs from d_model (" +
                                         std::to_string(c.d_model) + "): llama.cpp's " + std::string(a.gguf_name) +
                                         " loader sizes attn_output [d_model, d_model]");
    auto feature = [&](std::string_view field, bool has, bool set) {
        if (set && !has)
            fail(ErrorKind::InvalidArgument, std::string(field) + " is set, but llama.cpp's " +
                                                 std::string(a.gguf_name) + " graph has no such feature");
    };
    feature("sliding_window", a.swa_pattern > 0, c.sliding_window != 0);
    feature("attn_softcap", a.attn_softcap, c.attn_softcap != 0.0f);
    feature("final_softcap", a.final_softcap, c.final_softcap != 0.0f);
    feature("rope_theta_swa", a.swa_rope, c.rope_theta_swa != 0.0f);
    if (a.tied_only && !c.tied)
        fail(ErrorKind::Unsupported, "tensor 'output.weight': llama.cpp's " + std::string(a.gguf_name) +
                                         " loader reads no output layer (it reuses token_embd.weight); the model "
                                         "must be tied");
    auto positive = [&](std::string_view field, float v, std::string_view why) {
        if (!(v > 0))
            fail(ErrorKind::InvalidArgument, std::string(field) + " must be positive for " + std::string(a.gguf_name) +
                                                 " (" + std::string(why) + "), found " + number(v));
    };
    if (a.softcaps_always) {
        positive("attn_softcap", c.attn_softcap, "llama.cpp's graph always soft-caps the scores");
        positive("final_softcap", c.final_softcap, "llama.cpp's graph always soft-caps the logits");
    }
    if (a.swa_always && c.sliding_window == 0)
        fail(ErrorKind::InvalidArgument, "sliding_window must be positive for " + std::string(a.gguf_name) +
                                             " (llama.cpp's graph always windows its local layers), found 0");
    if (a.swa_rope && c.sliding_window != 0)
        positive("rope_theta_swa", c.rope_theta_swa, "the RoPE base of its local layers");
    for (const auto& [field, v] :
         {std::pair{"attn_softcap", c.attn_softcap}, std::pair{"final_softcap", c.final_softcap},
          std::pair{"rope_theta_swa", c.rope_theta_swa}})
        if (!(std::isfinite(v) && v >= 0))
            fail(ErrorKind::InvalidArgument, std::string(field) + " must be a number >= 0, found " + number(v));
}

}  // namespace

void Config::validate() const {
    check_arch(*this);
    check_range("d_model", d_model, 1, kMaxDim);
    check_range("n_heads", n_heads, 1, kMaxHeads);
    check_range("n_layers", n_layers, 1, kMaxLayers);
    for (const auto& [name, list, scalar] :
         {std::tuple{"layer_heads", &layer_heads, n_heads}, std::tuple{"layer_kv_heads", &layer_kv_heads, n_kv_heads},
          std::tuple{"layer_d_ff", &layer_d_ff, d_ff}}) {
        if (list->empty()) continue;
        if (list->size() != n_layers)
            fail(ErrorKind::InvalidArgument, std::string(name) + " must have n_layers (" + std::to_string(n_layers) +
                                                 ") entries, found " + std::to_string(list->size()));
        if (largest(*list, 0) != scalar)
            fail(ErrorKind::InvalidArgument, std::string(name) + "'s largest entry is " +
                                                 std::to_string(largest(*list, 0)) + ", but the scalar is " +
                                                 std::to_string(scalar) + " (set_layer_counts sets both)");
    }
    if (!per_layer()) {
        check_range("n_kv_heads", n_kv_heads, 1, n_heads);
        if (n_heads % n_kv_heads != 0)
            fail(ErrorKind::InvalidArgument, "n_kv_heads must divide n_heads (" + std::to_string(n_heads) +
                                                 "), found " + std::to_string(n_kv_heads));
    }
    for (std::uint32_t l = 0; per_layer() && l < n_layers; ++l) {
        const std::uint32_t h = n_heads_at(l), kv = n_kv_heads_at(l), ff = d_ff_at(l);
        const std::string at = "layer " + std::to_string(l) + ": ";
        if (h == 0 && l == 0)
            fail(ErrorKind::InvalidArgument,
                 at + "0 heads; layer 0 must have heads (llama.cpp takes the head size from layer 0)");
        if (h == 0 && kv != 0) fail(ErrorKind::InvalidArgument, at + "0 heads but " + std::to_string(kv) + " kv heads");
        if (h > 0 && kv == 0)
            fail(ErrorKind::Unsupported, at + std::to_string(h) +
                                             " heads and 0 kv heads (deci's linear attention), which headfuse does not "
                                             "model");
        if (h > 0 && h % kv != 0)
            fail(ErrorKind::InvalidArgument,
                 at + "kv heads (" + std::to_string(kv) + ") must divide heads (" + std::to_string(h) + ")");
        if (ff == 0)
            fail(ErrorKind::Unsupported,
                 at + "d_ff 0 (no feed-forward), which headfuse does not model: llama.cpp then skips the whole "
                      "layer, its attention too");
    }
    check_range("d_head", d_head, 2, kMaxDim);
    if (d_head % 2 != 0)
        fail(ErrorKind::InvalidArgument, "d_head must be even (RoPE rotates pairs), found " + std::to_string(d_head));
    if (std::uint64_t{n_heads} * d_head > kMaxDim)
        fail(ErrorKind::InvalidArgument, "n_heads * d_head must be at most " + std::to_string(kMaxDim) + ", found " +
                                             std::to_string(std::uint64_t{n_heads} * d_head));
    check_range("d_ff", d_ff, 1, kMaxDim);
    check_range("vocab", vocab, 1, kMaxVocab);
    check_range("context_length", context_length, 1, kMaxContext);
    if (!(std::isfinite(rms_eps) && rms_eps > 0))
        fail(ErrorKind::InvalidArgument, "rms_eps must be a positive number, found " + number(rms_eps));
    if (!(std::isfinite(rope_theta) && rope_theta > 0))
        fail(ErrorKind::InvalidArgument, "rope_theta must be a positive number, found " + number(rope_theta));
    if (!(std::isfinite(rope_scaling_factor) && rope_scaling_factor > 0))
        fail(ErrorKind::InvalidArgument,
             "rope_scaling_factor must be a positive number, found " + number(rope_scaling_factor));
    if (!(std::isfinite(rope_attn_factor) && rope_attn_factor > 0))
        fail(ErrorKind::InvalidArgument,
             "rope_attn_factor must be a positive number, found " + number(rope_attn_factor));
    check_range("rope_original_context", rope_original_context, 0, kMaxContext);
    if (donor_d_in > 0) {
        check_range("donor_d_in", donor_d_in, 1, kMaxDim);
        if (tied)
            fail(ErrorKind::InvalidArgument, "a projection lens (donor_d_in > 0) requires an untied output layer");
    }
    // The per-head layout's tensor count (at most): the reader refuses files of more than kMaxTensors.
    const std::uint64_t n_tensors = 4 + std::uint64_t{n_layers} * (6 + std::uint64_t{n_heads} + 2 * n_kv_heads);
    if (n_tensors > kMaxTensors)
        fail(ErrorKind::InvalidArgument,
             "n_layers " + std::to_string(n_layers) + " x (6 + n_heads " + std::to_string(n_heads) +
                 " + 2 x n_kv_heads " + std::to_string(n_kv_heads) + ") makes " + std::to_string(n_tensors) +
                 " tensors, more than the " + std::to_string(kMaxTensors) + " a GGUF file headfuse reads may hold");
}

void Config::write_metadata(Metadata& md) const {
    md.set("general.architecture", Value::string(std::string(architecture())));
    md.set(key("vocab_size"), Value::u32(vocab));
    md.set(key("context_length"), Value::u32(context_length));
    md.set(key("embedding_length"), Value::u32(d_model));
    md.set(key("block_count"), Value::u32(n_layers));
    md.set(key("feed_forward_length"), count_value(layer_d_ff, d_ff));
    md.set(key("attention.head_count"), count_value(layer_heads, n_heads));
    md.set(key("attention.head_count_kv"), count_value(layer_kv_heads, n_kv_heads));
    md.set(key("attention.key_length"), Value::u32(d_head));
    md.set(key("attention.value_length"), Value::u32(d_head));
    md.set(key("rope.dimension_count"), Value::u32(d_head));
    md.set(key("rope.freq_base"), Value::f32(rope_theta));
    if (rope_scaling != RopeScaling::None) {
        md.set(key("rope.scaling.type"), Value::string(std::string(rope_scaling_name(rope_scaling))));
        md.set(key("rope.scaling.factor"), Value::f32(rope_scaling_factor));
    }
    if (rope_original_context) md.set(key("rope.scaling.original_context_length"), Value::u32(rope_original_context));
    // LongRoPE's attention factor: llama.cpp's converter writes it with the factors, 1 included.
    if (rope_attn_factor != 1.0f || optional_roles.contains(Role::RopeLong))
        md.set(key("rope.scaling.attn_factor"), Value::f32(rope_attn_factor));
    md.set(key("attention.layer_norm_rms_epsilon"), Value::f32(rms_eps));
    const ArchSpec& a = arch();
    // The feature keys: always for a row that always has the feature (their absence means llama.cpp's defaults),
    // else when the feature is on (their absence means off).
    if (a.swa_pattern > 0 && (a.swa_always || sliding_window != 0))
        md.set(key("attention.sliding_window"), Value::u32(sliding_window));
    if (a.attn_softcap && (a.softcaps_always || attn_softcap != 0.0f))
        md.set(key("attn_logit_softcapping"), Value::f32(attn_softcap));
    if (a.final_softcap && (a.softcaps_always || final_softcap != 0.0f))
        md.set(key("final_logit_softcapping"), Value::f32(final_softcap));
    if (a.swa_rope && sliding_window != 0) md.set(key("rope.freq_base_swa"), Value::f32(rope_theta_swa));
}

Config Config::from_metadata(const Metadata& md, std::string_view where) {
    const std::string arch = md.get_string("general.architecture", where);
    const ArchSpec* row = find_arch(arch);
    if (!row)
        fail(ErrorKind::Unsupported, std::string(where) + ": key 'general.architecture' must be one of " +
                                         std::string(arch_names()) + ", found \"" + arch + "\"");
    auto k = [&](std::string_view name) { return key_of(arch, name); };
    Config c;
    c.family = row->family;
    c.context_length = md.get_u32(k("context_length"), where);
    c.d_model = md.get_u32(k("embedding_length"), where);
    c.n_layers = md.get_u32(k("block_count"), where);
    if (row->per_layer_counts) {  // every count per layer, as llama.cpp's get_key_or_arr reads them
        if (c.n_layers == 0 || c.n_layers > kMaxLayers)
            fail(std::string(where) + ": key '" + k("block_count") + "' must be in 1.." + std::to_string(kMaxLayers) +
                 ", found " + std::to_string(c.n_layers));
        std::vector<std::uint32_t> heads = layer_counts(md, k("attention.head_count"), c.n_layers, where);
        if (heads.empty()) md.get_u32(k("attention.head_count"), where);  // names the missing key
        std::vector<std::uint32_t> kv = layer_counts(md, k("attention.head_count_kv"), c.n_layers, where);
        std::vector<std::uint32_t> ff = layer_counts(md, k("feed_forward_length"), c.n_layers, where);
        if (ff.empty()) md.get_u32(k("feed_forward_length"), where);
        c.set_layer_counts(heads, kv.empty() ? heads : std::move(kv), std::move(ff));
    } else {
        c.d_ff = md.get_u32(k("feed_forward_length"), where);
        c.n_heads = md.get_u32(k("attention.head_count"), where);
        c.n_kv_heads =
            md.find(k("attention.head_count_kv")) ? md.get_u32(k("attention.head_count_kv"), where) : c.n_heads;
    }
    c.rms_eps = md.get_f32(k("attention.layer_norm_rms_epsilon"), where);
    c.rope_theta = md.find(k("rope.freq_base")) ? md.get_f32(k("rope.freq_base"), where) : 10000.0f;
    const std::uint32_t heads0 = c.n_heads_at(0);  // llama.cpp's n_head(): layer 0's
    if (heads0 == 0)
        fail(std::string(where) + ": key '" + k("attention.head_count") + "' must be positive" +
             (c.per_layer() ? " for layer 0" : "") + ", found 0");
    c.d_head = md.find(k("attention.key_length")) ? md.get_u32(k("attention.key_length"), where) : c.d_model / heads0;
    auto same_as_d_head = [&](const std::string& key) {
        if (!md.find(key)) return;
        std::uint32_t v = md.get_u32(key, where);
        if (v != c.d_head)
            fail(std::string(where) + ": key '" + key + "' is " + std::to_string(v) + ", expected key_length " +
                 std::to_string(c.d_head));
    };
    same_as_d_head(k("attention.value_length"));
    same_as_d_head(k("rope.dimension_count"));
    if (md.find(k("vocab_size"))) c.vocab = md.get_u32(k("vocab_size"), where);
    read_rope_scaling(md, where, arch, c);
    auto f32_key = [&](std::string_view name, float& out) {
        if (md.find(k(name))) out = md.get_f32(k(name), where);
    };
    // llama.cpp's defaults where a row always has the feature (gemma2: window 4096, soft-caps 50 and 30); the
    // RoPE base of the local layers 10000 when the model has windows (gemma3).
    if (row->swa_always) c.sliding_window = 4096;
    if (row->softcaps_always) {
        c.attn_softcap = 50.0f;
        c.final_softcap = 30.0f;
    }
    if (row->swa_pattern > 0 && md.find(k("attention.sliding_window")))
        c.sliding_window = md.get_u32(k("attention.sliding_window"), where);
    if (row->attn_softcap) f32_key("attn_logit_softcapping", c.attn_softcap);
    if (row->final_softcap) f32_key("final_logit_softcapping", c.final_softcap);
    if (row->swa_rope && c.sliding_window != 0) {
        c.rope_theta_swa = 10000.0f;
        f32_key("rope.freq_base_swa", c.rope_theta_swa);
    }
    note_unmodeled(md, where, arch, c);
    return c;
}

std::string describe(const Config& c) {
    // A per-layer count as "4,0,2" (layers 0, 1, 2), a uniform one as its value.
    auto count = [&](const std::vector<std::uint32_t>& list, std::uint32_t scalar) {
        if (list.empty()) return std::to_string(scalar);
        std::string out;
        for (std::uint32_t x : list) out += (out.empty() ? "" : ",") + std::to_string(x);
        return out;
    };
    std::string s = "d_model " + std::to_string(c.d_model) + ", " + count(c.layer_heads, c.n_heads) + " heads (" +
                    count(c.layer_kv_heads, c.n_kv_heads) + " kv) x " + std::to_string(c.d_head) + ", d_ff " +
                    count(c.layer_d_ff, c.d_ff) + ", " + std::to_string(c.n_layers) +
                    (c.n_layers == 1 ? " layer" : " layers") + ", vocab " + std::to_string(c.vocab) + ", " +
                    (c.tied ? "tied" : "untied");
    if (c.has_lens()) s += ", lens from donor_d_in " + std::to_string(c.donor_d_in);
    if (c.rope_scaling != RopeScaling::None) {
        char factor[32];
        std::snprintf(factor, sizeof factor, "%g", double(c.rope_scaling_factor));
        s += ", rope " + std::string(rope_scaling_name(c.rope_scaling)) + " x" + factor;
        if (c.rope_original_context) s += " from context " + std::to_string(c.rope_original_context);
    }
    if (c.optional_roles.contains(Role::RopeLong))
        s += ", LongRoPE from context " + std::to_string(c.original_context()) + " to " +
             std::to_string(c.context_length);
    return s;
}

void validate_read(const Config& c, const std::string& where) {
    try {
        c.validate();
    } catch (const Error& e) {
        fail(e.kind() == ErrorKind::InvalidArgument ? ErrorKind::InvalidInput : e.kind(), where + ": " + e.what());
    }
}

}  // namespace headfuse
