// headfuse: what the head scan needs from the reference forward pass (compute/forward.cpp): passes with heads'
// attention outputs replaced, several variants of the model at once, and one clean pass that keeps the
// activations the backward pass (compute/backward.cpp) reads. Internal to the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "headfuse/model.h"

namespace headfuse::compute {

// A replacement of query head `head`'s attention output in layer `layer` (the d_head values attn_output reads)
// on the rows [row0, row0 + rows) of a pass: by zeros (values null), by one vector for every row (stride 0), or
// by a vector per row (stride d_head).
struct HeadPatch {
    std::uint32_t layer = 0, head = 0;
    std::size_t row0 = 0, rows = 0;
    const float* values = nullptr;
    std::size_t stride = 0;
};

// Applies the patches of `layer` to att ([rows, heads * d_head], heads concatenated).
inline void apply_patches(std::span<const HeadPatch> patches, std::uint32_t layer, float* att, std::uint32_t heads,
                          std::uint32_t d_head) {
    for (const HeadPatch& p : patches) {
        if (p.layer != layer) continue;
        for (std::size_t r = 0; r < p.rows; ++r) {
            float* out = att + ((p.row0 + r) * heads + p.head) * d_head;
            for (std::uint32_t d = 0; d < d_head; ++d) out[d] = p.values ? p.values[r * p.stride + d] : 0.0f;
        }
    }
}

// What one layer of a clean pass computed, position-major, in the layer's own counts.
struct LayerRecord {
    std::vector<float> x;     // [n_tok, d_model]  the residual stream entering the layer
    std::vector<float> q, k;  // [n_tok, heads*d_head], [n_tok, kv_heads*d_head]: after bias and RoPE
    std::vector<float> v;     // [n_tok, kv_heads*d_head]
    std::vector<float> att;   // [n_tok, heads*d_head] each head's output z, what attn_output reads
    std::vector<float> h;     // [n_tok, d_model]  the residual stream after attention
    std::vector<float> gate;  // [n_tok, d_ff]     ffn_gate · xn (+ bias), before the activation (SiLU, GELU)
    std::vector<float> up;    // [n_tok, d_ff]     ffn_up · xn (+ bias)
    // Kept only where the layer has the operation that reads them (empty otherwise):
    std::vector<float> q_raw, k_raw;  // q, k after the biases, before the per-head q/k norms (qwen3, gemma3)
    std::vector<float> attn_y;        // [n_tok, d_model] attn_output · z (+ bias), before post_attention_norm
    std::vector<float> ffn_y;         // [n_tok, d_model] ffn_down · a (+ bias), before post_ffw_norm

    void keep_attention(std::span<const float> q_, std::span<const float> k_, std::span<const float> v_,
                        std::span<const float> att_) {
        q.assign(q_.begin(), q_.end());
        k.assign(k_.begin(), k_.end());
        v.assign(v_.begin(), v_.end());
        att.assign(att_.begin(), att_.end());
    }
    void keep_ffn(std::span<const float> gate_, std::span<const float> up_, std::size_t n) {
        gate.assign(gate_.begin(), gate_.begin() + std::ptrdiff_t(n));
        up.assign(up_.begin(), up_.begin() + std::ptrdiff_t(n));
    }
};

struct Recording {
    std::vector<LayerRecord> layers;
    std::vector<float> x_final;     // [n_tok, d_model] the residual stream entering output_norm
    std::vector<float> logits;      // [n_tok, vocab]   after the final soft-cap (gemma2, gemma3), if any
    std::vector<float> rope;        // [n_tok, d_head]  (cos, sin) per pair and position
    std::vector<float> rope_local;  // [n_tok, d_head]  the same for the local layers (gemma3), else empty
    double loss = 0;                // mean next-token loss
};

// The clean forward pass over `tokens`, keeping every layer's activations. Bit for bit forward_logits's logits
// (for the same llama.cpp context n_ctx). `layer_done` is called after each layer.
Recording record_forward(const ModelViews& model, std::span<const std::uint32_t> tokens, unsigned threads,
                         const std::function<void()>& layer_done = {}, std::uint32_t n_ctx = 0);

// Several passes at once, one per variant: variant b replaces heads from layer starts[b] up (`starts` ascending),
// so it joins the others there, from rec's residual stream entering that layer (the layers below do not see the
// change). Variant b's rows are [b * n_tok, (b + 1) * n_tok) of the patches' row numbers. Returns each variant's
// mean next-token loss. The layers see every variant that has joined in one matrix product, so a batch of heads of
// different layers decodes each weight row once. The RoPE angles are rec's. `layer_done` is called after each layer
// with the variants it ran.
std::vector<double> variant_losses(const ModelViews& model, std::span<const std::uint32_t> tokens,
                                   std::span<const std::uint32_t> starts, const Recording& rec,
                                   std::span<const HeadPatch> patches, unsigned threads,
                                   const std::function<void(std::size_t)>& layer_done = {});

// The mean of -log p(tokens[t+1]) over the positions with a next token, f64, from [n_tok, vocab] logits.
double next_token_loss(std::span<const float> logits, std::span<const std::uint32_t> tokens, std::uint32_t vocab);

// The factor Gemma's gate multiplies `up` by, as the forward pass computes it (ggml_vec_geglu_f32): GELU-tanh
// read from ggml-cpu's f16 table at x rounded to f16; 0 for x <= -10, x itself for x >= 10.
float gelu_gate(float x);

// A norm's or a bias's weights as the forward pass reads them (f32, llama.cpp's order, checked finite).
std::vector<float> vector_weights(const TensorView& w);

// Rows [lo, hi) of `parts` stacked (a projection's heads in order), each decoded to f32 in llama.cpp's order as
// the forward pass reads it: f(o, row) for every row o in order, row holding ne[0] floats. Columns [c0, c1) are
// the ones the caller reads; whole blocks of the type around them are decoded (all of them for a view in a foreign
// order).
void for_each_row(std::span<const TensorView> parts, std::uint64_t lo, std::uint64_t hi, std::uint64_t c0,
                  std::uint64_t c1, const std::function<void(std::uint64_t, const float*)>& f);

}  // namespace headfuse::compute
