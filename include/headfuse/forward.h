// headfuse: a reference LLaMA forward pass over per-head views.
//
// It reads only ModelViews, so it cannot tell an in-memory per-head model, a per-head file and a fused GGUF
// realized as per-head views apart: that is the point. f32 throughout, llama.cpp's `llama` graph:
//   x = token_embd[t]  (the lens fold of the donor row, with a lens)
//   per layer: h = x + attn_output · attention(rope(q), rope(k), v)(rmsnorm(x) * attn_norm)
//              x = h + ffn_down · (silu(ffn_gate · n) * (ffn_up · n)),  n = rmsnorm(h) * ffn_norm
//   logits = output · (rmsnorm(x) * output_norm)   (token_embd when tied)
// RoPE mode NORM (adjacent pairs), grouped-query causal attention scaled by 1/sqrt(d_head).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "headfuse/model.h"

namespace headfuse {

// Logits for every position: tokens.size() x vocab floats, position-major. `threads` 0 means all cores.
// Error if a token is out of the vocabulary. The query heads in `ablated` contribute nothing (their attention
// outputs are zeroed before attn_output): the same logits, bit for bit, as the model whose attn_output columns
// of those heads are zero.
std::vector<float> forward_logits(const ModelViews& model, std::span<const std::uint32_t> tokens, unsigned threads = 0,
                                  std::span<const HeadRef> ablated = {});

// Which heads matter: the mean next-token loss (nats; position t predicts tokens[t+1]) of the model, and of the
// model with each (layer, head) ablated in turn. The layers below an ablated head are computed once.
struct HeadScan {
    double base_loss = 0;
    // [layer][head]: the mean loss with that head ablated. Layer L's row has the heads layer L has
    // (Config::n_heads_at: a deci model's rows differ in length, a layer without attention has an empty row).
    std::vector<std::vector<double>> loss;
};
// `progress` counts layers evaluated. Error with fewer than 2 tokens.
HeadScan scan_heads(const ModelViews& model, std::span<const std::uint32_t> tokens, unsigned threads = 0,
                    const ProgressFn& progress = {});

}  // namespace headfuse
