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

}  // namespace

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
    return c;
}

std::string describe(const Config& c) {
    std::string s = "d_model " + std::to_string(c.d_model) + ", " + std::to_string(c.n_heads) + " heads (" +
                    std::to_string(c.n_kv_heads) + " kv) x " + std::to_string(c.d_head) + ", d_ff " +
                    std::to_string(c.d_ff) + ", " + std::to_string(c.n_layers) +
                    (c.n_layers == 1 ? " layer" : " layers") + ", vocab " + std::to_string(c.vocab) + ", " +
                    (c.tied ? "tied" : "untied");
    if (c.has_lens()) s += ", lens from donor_d_in " + std::to_string(c.donor_d_in);
    return s;
}

}  // namespace headfuse
