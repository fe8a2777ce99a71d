#include "headfuse/config.h"

#include <cmath>
#include <cstdio>
#include <string>

#include "headfuse/error.h"

namespace headfuse {
namespace {

void check_range(std::string_view field, std::uint32_t v, std::uint32_t lo, std::uint32_t hi) {
    if (v < lo || v > hi)
        fail(std::string(field) + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", found " +
             std::to_string(v));
}

// A float as people write it: "1e-09", not std::to_string's "0.000000".
std::string number(float x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", double{x});
    return buf;
}

// RoPE scaling as llama.cpp's loader reads it (llama_model_base::load_hparams): the type defaults to
// "linear", the factor to the old key rope.scale_linear and then to 0, and a factor of 0 means 1.
void read_rope_scaling(const Metadata& md, std::string_view where, Config& c) {
    constexpr std::string_view kType = "llama.rope.scaling.type";
    float factor = 0.0f;
    if (md.find("llama.rope.scaling.factor"))
        factor = md.get_f32("llama.rope.scaling.factor", where);
    else if (md.find("llama.rope.scale_linear"))
        factor = md.get_f32("llama.rope.scale_linear", where);
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
            fail(std::string(where) + ": key '" + std::string(kType) + "' is \"" + type +
                 "\"; headfuse reads none, linear and yarn");
    } else {
        c.rope_scaling = c.rope_scaling_factor == 1.0f ? RopeScaling::None : RopeScaling::Linear;
    }
    if (md.find("llama.rope.scaling.original_context_length"))
        c.rope_original_context = md.get_u32("llama.rope.scaling.original_context_length", where);
    if (md.find("llama.rope.scaling.attn_factor"))
        c.rope_attn_factor = md.get_f32("llama.rope.scaling.attn_factor", where);
}

// Keys the llama graph reads that change its result and that the forward pass does not model.
void note_unmodeled(const Metadata& md, std::string_view where, Config& c) {
    auto note = [&](std::string_view key, const std::string& value) {
        c.unmodeled.push_back("key '" + std::string(key) + "' = " + value);
    };
    if (const Value* v = md.find("llama.attention.causal"); v && v->type == ValueType::BOOL) {
        if (!std::get<bool>(v->scalar)) note("llama.attention.causal", "false (non-causal attention)");
    }
    if (md.find("llama.expert_count")) {
        const std::uint32_t n = md.get_u32("llama.expert_count", where);
        if (n > 0) note("llama.expert_count", std::to_string(n) + " (a mixture of experts)");
    }
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

void Config::validate() const {
    check_range("d_model", d_model, 1, kMaxDim);
    check_range("n_heads", n_heads, 1, kMaxHeads);
    check_range("n_kv_heads", n_kv_heads, 1, n_heads);
    if (n_heads % n_kv_heads != 0)
        fail("n_kv_heads must divide n_heads (" + std::to_string(n_heads) + "), found " + std::to_string(n_kv_heads));
    check_range("d_head", d_head, 2, kMaxDim);
    if (d_head % 2 != 0) fail("d_head must be even (RoPE rotates pairs), found " + std::to_string(d_head));
    if (std::uint64_t{n_heads} * d_head > kMaxDim)
        fail("n_heads * d_head must be at most " + std::to_string(kMaxDim) + ", found " +
             std::to_string(std::uint64_t{n_heads} * d_head));
    check_range("d_ff", d_ff, 1, kMaxDim);
    check_range("n_layers", n_layers, 1, kMaxLayers);
    check_range("vocab", vocab, 1, kMaxVocab);
    check_range("context_length", context_length, 1, kMaxContext);
    if (!(std::isfinite(rms_eps) && rms_eps > 0)) fail("rms_eps must be a positive number, found " + number(rms_eps));
    if (!(std::isfinite(rope_theta) && rope_theta > 0))
        fail("rope_theta must be a positive number, found " + number(rope_theta));
    if (!(std::isfinite(rope_scaling_factor) && rope_scaling_factor > 0))
        fail("rope_scaling_factor must be a positive number, found " + number(rope_scaling_factor));
    if (!(std::isfinite(rope_attn_factor) && rope_attn_factor > 0))
        fail("rope_attn_factor must be a positive number, found " + number(rope_attn_factor));
    check_range("rope_original_context", rope_original_context, 0, kMaxContext);
    if (donor_d_in > 0) {
        check_range("donor_d_in", donor_d_in, 1, kMaxDim);
        if (tied) fail("a projection lens (donor_d_in > 0) requires an untied output layer");
    }
    // The per-head layout's tensor count: the reader refuses files of more than kMaxTensors.
    const std::uint64_t n_tensors = 4 + std::uint64_t{n_layers} * (6 + std::uint64_t{n_heads} + 2 * n_kv_heads);
    if (n_tensors > kMaxTensors)
        fail("n_layers " + std::to_string(n_layers) + " x (6 + n_heads " + std::to_string(n_heads) +
             " + 2 x n_kv_heads " + std::to_string(n_kv_heads) + ") makes " + std::to_string(n_tensors) +
             " tensors, more than the " + std::to_string(kMaxTensors) + " a GGUF file headfuse reads may hold");
}

void Config::write_metadata(Metadata& md) const {
    md.set("general.architecture", Value::string("llama"));
    md.set("llama.vocab_size", Value::u32(vocab));
    md.set("llama.context_length", Value::u32(context_length));
    md.set("llama.embedding_length", Value::u32(d_model));
    md.set("llama.block_count", Value::u32(n_layers));
    md.set("llama.feed_forward_length", Value::u32(d_ff));
    md.set("llama.attention.head_count", Value::u32(n_heads));
    md.set("llama.attention.head_count_kv", Value::u32(n_kv_heads));
    md.set("llama.attention.key_length", Value::u32(d_head));
    md.set("llama.attention.value_length", Value::u32(d_head));
    md.set("llama.rope.dimension_count", Value::u32(d_head));
    md.set("llama.rope.freq_base", Value::f32(rope_theta));
    if (rope_scaling != RopeScaling::None) {
        md.set("llama.rope.scaling.type", Value::string(std::string(rope_scaling_name(rope_scaling))));
        md.set("llama.rope.scaling.factor", Value::f32(rope_scaling_factor));
    }
    if (rope_original_context) md.set("llama.rope.scaling.original_context_length", Value::u32(rope_original_context));
    if (rope_attn_factor != 1.0f) md.set("llama.rope.scaling.attn_factor", Value::f32(rope_attn_factor));
    md.set("llama.attention.layer_norm_rms_epsilon", Value::f32(rms_eps));
}

Config Config::from_metadata(const Metadata& md, std::string_view where) {
    const std::string arch = md.get_string("general.architecture", where);
    if (arch != "llama")
        fail(std::string(where) + ": key 'general.architecture' must be \"llama\", found \"" + arch + "\"");
    Config c;
    c.context_length = md.get_u32("llama.context_length", where);
    c.d_model = md.get_u32("llama.embedding_length", where);
    c.n_layers = md.get_u32("llama.block_count", where);
    c.d_ff = md.get_u32("llama.feed_forward_length", where);
    c.n_heads = md.get_u32("llama.attention.head_count", where);
    c.n_kv_heads =
        md.find("llama.attention.head_count_kv") ? md.get_u32("llama.attention.head_count_kv", where) : c.n_heads;
    c.rms_eps = md.get_f32("llama.attention.layer_norm_rms_epsilon", where);
    c.rope_theta = md.find("llama.rope.freq_base") ? md.get_f32("llama.rope.freq_base", where) : 10000.0f;
    if (c.n_heads == 0) fail(std::string(where) + ": key 'llama.attention.head_count' must be positive, found 0");
    c.d_head =
        md.find("llama.attention.key_length") ? md.get_u32("llama.attention.key_length", where) : c.d_model / c.n_heads;
    auto same_as_d_head = [&](std::string_view key) {
        if (!md.find(key)) return;
        std::uint32_t v = md.get_u32(key, where);
        if (v != c.d_head)
            fail(std::string(where) + ": key '" + std::string(key) + "' is " + std::to_string(v) +
                 ", expected key_length " + std::to_string(c.d_head));
    };
    same_as_d_head("llama.attention.value_length");
    same_as_d_head("llama.rope.dimension_count");
    if (md.find("llama.vocab_size")) c.vocab = md.get_u32("llama.vocab_size", where);
    read_rope_scaling(md, where, c);
    note_unmodeled(md, where, c);
    return c;
}

std::string describe(const Config& c) {
    std::string s = "d_model " + std::to_string(c.d_model) + ", " + std::to_string(c.n_heads) + " heads (" +
                    std::to_string(c.n_kv_heads) + " kv) x " + std::to_string(c.d_head) + ", d_ff " +
                    std::to_string(c.d_ff) + ", " + std::to_string(c.n_layers) +
                    (c.n_layers == 1 ? " layer" : " layers") + ", vocab " + std::to_string(c.vocab) + ", " +
                    (c.tied ? "tied" : "untied");
    if (c.has_lens()) s += ", lens from donor_d_in " + std::to_string(c.donor_d_in);
    if (c.rope_scaling != RopeScaling::None) {
        char factor[32];
        std::snprintf(factor, sizeof factor, "%g", double(c.rope_scaling_factor));
        s += ", rope " + std::string(rope_scaling_name(c.rope_scaling)) + " x" + factor;
        if (c.rope_original_context) s += " from context " + std::to_string(c.rope_original_context);
    }
    return s;
}

}  // namespace headfuse
