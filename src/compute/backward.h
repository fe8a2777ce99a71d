// headfuse: the backward pass of the reference forward pass (compute/forward.cpp), for activation gradients
// only: d(mean next-token loss) / d(every head's attention output), from one recorded clean pass. Internal to the
// library; the head scan's attribution method (edit/head_scan.cpp) is its user.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "compute/scan_pass.h"
#include "headfuse/model.h"

namespace headfuse::compute {

// d(loss)/d(z) for every layer: [n_tok, heads*d_head] in the layer's own head count (empty for a layer without
// attention), z being the heads' outputs that attn_output reads and loss record.loss (the mean of
// -log p(tokens[t+1])). Weights are read through the same views and row decoding as the forward pass, any type.
// f32 activations, f64 sums where the forward pass sums in f64 (dot products, RMSNorm, the softmax's
// normaliser); the result does not depend on the thread count. Every family's graph (headfuse/arch.h); Gemma's GELU,
// which the forward pass reads from ggml's f16 table, is differentiated as the smooth GELU-tanh. `layer_done` is
// called after each layer.
std::vector<std::vector<float>> head_output_gradients(const ModelViews& model, std::span<const std::uint32_t> tokens,
                                                      const Recording& record, unsigned threads,
                                                      const std::function<void()>& layer_done = {});

}  // namespace headfuse::compute
