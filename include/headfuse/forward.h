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

// llama.cpp rounds the context size it runs with (n_ctx) up to a multiple of this (llama_context: GGML_PAD 256).
inline constexpr std::uint32_t kContextPadding = 256;

// The context llama.cpp runs with when asked for n_ctx (0: the model's original context, Config::original_context):
// n_ctx rounded up to a multiple of kContextPadding.
std::uint64_t llama_context_size(const Config& c, std::uint32_t n_ctx) noexcept;
// Whether llama.cpp run with context size n_ctx uses LongRoPE's long factors (rope_factors_long) rather than the
// short ones: when llama_context_size(c, n_ctx) exceeds c.original_context(). (Hugging Face's Phi-3 picks by the
// length of the sequence it runs instead.)
bool uses_long_rope_factors(const Config& c, std::uint32_t n_ctx) noexcept;

// Logits for every position: tokens.size() x vocab floats, position-major. `threads` 0 means all cores.
// Error if a token is out of the vocabulary. The query heads in `ablated` contribute nothing (their attention
// outputs are zeroed before attn_output): the same logits, bit for bit, as the model whose attn_output columns
// of those heads are zero. `n_ctx` is the context size llama.cpp would run the model with: it picks LongRoPE's
// factors (uses_long_rope_factors) and changes nothing else; 0 stands for the model's original context.
std::vector<float> forward_logits(const ModelViews& model, std::span<const std::uint32_t> tokens, unsigned threads = 0,
                                  std::span<const HeadRef> ablated = {}, std::uint32_t n_ctx = 0);

// Which heads matter: the mean next-token loss (nats; position t predicts tokens[t+1]) of the model, and the
// change when each (layer, head) is ablated.
//
// Ablation: Zero replaces the head's attention output (what attn_output reads) by zeros, the same logits, bit for
// bit, as zeroing its attn_output columns; Mean by its mean over the scan's tokens (per head, f64 rounded to f32).
// Method: Exact ablates each head in a pass of its own (the layers below it are computed once; the layers above
// see every head of a layer at once); Attribution estimates every head's change from one forward and one backward
// pass: with g = d(loss)/d(z) and z the head's output at every position, -sum g.z for Zero and sum g.(mean - z)
// for Mean (the first-order change, in nats). `refine` K > 0 (with Attribution) then ablates exactly the K heads
// whose estimate is largest in magnitude.
enum class ScanMethod { Exact, Attribution };
enum class Ablation { Zero, Mean };

struct ScanOptions {
    ScanMethod method = ScanMethod::Exact;
    Ablation ablation = Ablation::Zero;
    std::uint32_t refine = 0;  // Attribution: heads ablated exactly, by |estimate|
    unsigned threads = 0;      // 0: all cores
    ProgressFn progress;       // counts layers evaluated (forward and backward), of all
    std::uint32_t n_ctx = 0;   // llama.cpp's context size, as forward_logits takes it (0: the original context)
};

struct HeadScan {
    ScanMethod method = ScanMethod::Exact;
    Ablation ablation = Ablation::Zero;
    double base_loss = 0;
    // [layer][head]: the mean loss with that head ablated (estimated: base_loss + the estimate). Layer L's row has
    // the heads layer L has (Config::n_heads_at: a deci model's rows differ in length, a layer without attention
    // has an empty row).
    std::vector<std::vector<double>> loss;
    // [layer][head]: true where loss is a real ablation, false where it is an estimate.
    std::vector<std::vector<bool>> exact;
};
// Error with fewer than 2 tokens, or refine with the exact method.
HeadScan scan_heads(const ModelViews& model, std::span<const std::uint32_t> tokens, const ScanOptions& options);
// The exact scan with zero ablation.
HeadScan scan_heads(const ModelViews& model, std::span<const std::uint32_t> tokens, unsigned threads = 0,
                    const ProgressFn& progress = {});

const char* to_string(ScanMethod m) noexcept;  // "exact", "attribution"
const char* to_string(Ablation a) noexcept;    // "zero", "mean"

}  // namespace headfuse
