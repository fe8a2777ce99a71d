// headfuse: the backward pass through the reference forward pass, one operation at a time.
//
// Each operation of the forward pass (compute/forward.cpp) has its backward here, in the same order as the
// graph: the loss's softmax, the final soft-cap, a matrix product through a weight view (its transpose, read row
// by row), RMSNorm (of the residual stream, of each query and key head, of a block's output), SwiGLU and GELU-tanh
// gates, RoPE (each layer's own angles), the query scale, causal attention's softmax with its soft-cap and sliding
// window, the residual adds. A new operation of the forward pass gets its backward function here and one line in
// layer_backward. Only activation gradients are computed: no weight's gradient is ever formed. The embedding's
// scale (Gemma) needs none: the gradient stops at the first layer's input.
//
// Numerics: activations and gradients are f32 between operations; the sums the forward pass takes in f64 (dot
// products, RMSNorm's mean square, softmax normalisers) are f64 here too, and so are the sums of the transposed
// products. Every output element is computed by one thread in a fixed order: the gradients do not depend on the
// thread count. One operation is not the derivative of what the forward pass computes: Gemma's GELU, which the
// forward pass reads from ggml's table of f16 values at the input rounded to f16 (a step function, whose derivative
// is 0 almost everywhere), is differentiated as the smooth GELU-tanh it tabulates, at the f32 input.
#include "compute/backward.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "base/parallel.h"
#include "headfuse/arch.h"
#include "quant/kernels.h"

namespace headfuse::compute {
namespace {

// Columns of a transposed product one thread accumulates at a time: n_tok x kTileColumns f64 sums stay in the
// core's cache while every row of the weight streams past. A multiple of every block size (256, the K-quants').
constexpr std::uint64_t kTileColumns = 256;

// dx[t, i] (+)= sum_o g[t, o] * W[o, i]: the transpose of the forward pass's y = W x, W being `parts` stacked (a
// projection's heads in order), each row decoded as the forward pass decodes it. The sums are f64, rounded once.
void matmul_t(float* dx, bool accumulate, const float* g, std::size_t n_tok, std::span<const TensorView> parts,
              unsigned threads) {
    const std::uint64_t n_in = parts[0].ne()[0];
    std::uint64_t n_out = 0;
    for (const TensorView& w : parts) n_out += w.n_rows();
    const std::uint64_t tiles = (n_in + kTileColumns - 1) / kTileColumns;
    parallel_for(tiles, threads, [&](std::uint64_t a, std::uint64_t b) {
        std::vector<double> acc;
        for (std::uint64_t tile = a; tile < b; ++tile) {
            const std::uint64_t c0 = tile * kTileColumns, c1 = std::min(n_in, c0 + kTileColumns), w = c1 - c0;
            acc.assign(n_tok * w, 0.0);
            for_each_row(parts, 0, n_out, c0, c1, [&](std::uint64_t o, const float* row) {
                kernels::active().transposed(acc.data(), w, row, g + o, n_out, n_tok);  // hot loop
            });
            for (std::size_t t = 0; t < n_tok; ++t)
                for (std::uint64_t i = 0; i < w; ++i) {
                    float& out = dx[t * n_in + c0 + i];
                    out = accumulate ? out + float(acc[t * w + i]) : float(acc[t * w + i]);
                }
        }
    });
}

void matmul_t(float* dx, bool accumulate, const float* g, std::size_t n_tok, const TensorView& w, unsigned threads) {
    matmul_t(dx, accumulate, g, n_tok, std::span(&w, 1), threads);
}

// The loss, mean over the n_tok - 1 positions with a next token of -log softmax(logits[t])[tokens[t + 1]]:
// d/dlogits[t] = (softmax(logits[t]) - onehot(tokens[t + 1])) / (n_tok - 1), the softmax in f64 as the loss takes
// it; the last position predicts nothing.
std::vector<float> loss_backward(std::span<const float> logits, std::span<const std::uint32_t> tokens,
                                 std::uint32_t vocab) {
    const std::size_t n = tokens.size();
    std::vector<float> d(n * std::size_t{vocab}, 0.0f);
    const double inv_n = 1.0 / double(n - 1);
    for (std::size_t t = 0; t + 1 < n; ++t) {
        const float* row = &logits[t * vocab];
        double mx = -INFINITY;
        for (std::uint32_t i = 0; i < vocab; ++i) mx = std::max(mx, double{row[i]});
        double z = 0;
        for (std::uint32_t i = 0; i < vocab; ++i) z += std::exp(double{row[i]} - mx);
        for (std::uint32_t i = 0; i < vocab; ++i)
            d[t * vocab + i] = float((std::exp(double{row[i]} - mx) / z - (i == tokens[t + 1] ? 1.0 : 0.0)) * inv_n);
    }
    return d;
}

// y = x * scale * w with scale = 1/sqrt(mean(x^2) + eps) (forward.cpp's rmsnorm): for u = dy * w,
// dx = scale * u - x * scale^3 * (u . x) / n. Adds dx to `out`.
void rmsnorm_backward(float* out, const float* x, const float* w, const float* dy, std::size_t n, float eps) {
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i) sum += double(x[i] * x[i]);
    const double scale = double(1.0f / std::sqrt(float(sum / double(n)) + eps));
    double ux = 0;
    for (std::size_t i = 0; i < n; ++i) ux += double(dy[i]) * double(w[i]) * double(x[i]);
    const double k = scale * scale * scale * ux / double(n);
    for (std::size_t i = 0; i < n; ++i) out[i] += float(scale * double(dy[i]) * double(w[i]) - double(x[i]) * k);
}

void rmsnorm_backward_rows(float* out, std::span<const float> x, const TensorView& norm, const float* dy,
                           std::size_t n_tok, std::size_t d, float eps) {
    const std::vector<float> w = vector_weights(norm);
    for (std::size_t t = 0; t < n_tok; ++t) rmsnorm_backward(&out[t * d], &x[t * d], w.data(), &dy[t * d], d, eps);
}

// y[t] = rmsnorm(x[t]) * w for `rows` vectors of n values (a residual stream, or each head of one): dx = the
// gradient for dy, stored (not added).
std::vector<float> rmsnorm_backward_to(std::span<const float> x, const TensorView& norm, const float* dy,
                                       std::size_t rows, std::size_t n, float eps) {
    std::vector<float> dx(rows * n, 0.0f);
    rmsnorm_backward_rows(dx.data(), x, norm, dy, rows, n, eps);
    return dx;
}

// RoPE rotates each pair (adjacent in mode NORM, halves in mode NEOX, as forward.cpp's rope) by its angle: the
// backward rotates the gradient back (the transpose of the rotation).
void rope_backward(float* d, const float* cs, std::uint32_t d_head, RopePairing pairing) {
    const std::uint32_t offset = pairing == RopePairing::Neox ? d_head / 2 : 1;
    for (std::uint32_t i = 0; i < d_head; i += 2) {
        const std::uint32_t a = pairing == RopePairing::Neox ? i / 2 : i, b = a + offset;
        const float d0 = d[a], d1 = d[b], c = cs[i], s = cs[i + 1];
        d[a] = d0 * c + d1 * s;
        d[b] = -d0 * s + d1 * c;
    }
}

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// a = silu(gate) * up, in place of da: dgate = da * up * silu'(gate), dup = da * silu(gate).
void swiglu_backward(std::span<const float> gate, std::span<const float> up, std::span<const float> da,
                     std::vector<float>& dgate, std::vector<float>& dup) {
    dgate.resize(da.size());
    dup.resize(da.size());
    for (std::size_t i = 0; i < da.size(); ++i) {
        const float s = sigmoid(gate[i]), silu = gate[i] * s;
        dgate[i] = da[i] * up[i] * (s * (1.0f + gate[i] * (1.0f - s)));
        dup[i] = da[i] * silu;
    }
}

// d/dx of GELU's tanh approximation 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), in f64 at the f32 x:
// 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2). Where the forward pass leaves the table
// (x <= -10: 0; x >= 10: x itself) the derivative is that of what it computes, 0 and 1.
double gelu_derivative(float x) {
    if (x <= -10.0f) return 0.0;
    if (x >= 10.0f) return 1.0;
    constexpr double kCoefA = 0.044715, kSqrt2OverPi = 0.79788456080286535587989211986876;
    const double v = x, th = std::tanh(kSqrt2OverPi * v * (1.0 + kCoefA * v * v));
    return 0.5 * (1.0 + th) + 0.5 * v * (1.0 - th * th) * kSqrt2OverPi * (1.0 + 3.0 * kCoefA * v * v);
}

// a = gelu(gate) * up (Gemma's geglu), in place of da: dgate = da * up * gelu'(gate), the smooth derivative (the
// file's comment says why), and dup = da * gelu(gate) as the forward pass computed it, from the f16 table.
void geglu_backward(std::span<const float> gate, std::span<const float> up, std::span<const float> da,
                    std::vector<float>& dgate, std::vector<float>& dup) {
    dgate.resize(da.size());
    dup.resize(da.size());
    for (std::size_t i = 0; i < da.size(); ++i) {
        dgate[i] = float(double(da[i]) * double(up[i]) * gelu_derivative(gate[i]));
        dup[i] = da[i] * gelu_gate(gate[i]);
    }
}

// The scores of forward.cpp's attention: s = cap * tanh((q.k) / cap) * scale (no soft-cap: (q.k) * scale), the
// query at t seeing the keys j with first <= j <= t (a sliding window of `window` keys, 0 none).
struct ScoreRule {
    float scale = 1.0f, cap = 0.0f;
    std::size_t window = 0;
    std::size_t first(std::size_t t) const { return window != 0 && t >= window ? t - window + 1 : 0; }
};

// Causal grouped-query attention (forward.cpp's attention) given dz, the gradient of every head's output: the
// weights P are recomputed as the forward pass computes them, then dv[j] += P[t,j] dz[t],
// dS[t,j] = P[t,j] (dz[t].v[j] - sum_j' P[t,j'] dz[t].v[j']), and with the score's derivative
// ds/d(q.k) = scale (1 - tanh^2((q.k) / cap)) (scale without a soft-cap): dq[t] = sum_j dS[t,j] ds/d(q.k) k[j],
// dk[j] += dS[t,j] ds/d(q.k) q[t]. Keys outside the window have no weight, so no gradient. Key/value heads are split
// over threads (each owns its dk, dv and query heads).
void attention_backward(const LayerRecord& r, const float* dz, std::uint32_t heads, std::uint32_t kv_heads,
                        std::uint32_t dh, std::size_t n_tok, const ScoreRule& rule, unsigned threads,
                        std::vector<float>& dq, std::vector<float>& dk, std::vector<float>& dv) {
    const std::uint32_t q_dim = heads * dh, kv_dim = kv_heads * dh, group = heads / kv_heads;
    const float scale = rule.scale, cap = rule.cap, inv_cap = cap != 0.0f ? 1.0f / cap : 0.0f;
    dq.assign(n_tok * q_dim, 0.0f);
    dk.assign(n_tok * kv_dim, 0.0f);
    dv.assign(n_tok * kv_dim, 0.0f);
    parallel_for(kv_heads, threads, [&](std::uint64_t g0, std::uint64_t g1) {
        std::vector<float> p(n_tok);
        std::vector<double> dp(n_tok), slope(n_tok), dkg(n_tok * dh), dvg(n_tok * dh), dqt(dh);
        for (std::uint64_t g = g0; g < g1; ++g) {
            std::fill(dkg.begin(), dkg.end(), 0.0);
            std::fill(dvg.begin(), dvg.end(), 0.0);
            for (std::uint64_t h = g * group; h < (g + 1) * group; ++h)
                for (std::size_t t = 0; t < n_tok; ++t) {
                    const float* q = &r.q[t * q_dim + h * dh];
                    const float* dzt = &dz[t * q_dim + h * dh];
                    const std::size_t first = rule.first(t);
                    float max = -INFINITY;
                    for (std::size_t j = first; j <= t; ++j) {
                        float kq = kernels::active().dot(q, &r.k[j * kv_dim + g * dh], dh);
                        slope[j] = double(scale);
                        if (cap != 0.0f) {
                            const float th = std::tanh(kq * inv_cap);
                            kq = th * cap;
                            slope[j] = double(scale) * (1.0 - double(th) * double(th));
                        }
                        p[j] = kq * scale;
                        max = std::max(max, p[j]);
                    }
                    double sum = 0;
                    for (std::size_t j = first; j <= t; ++j) {
                        p[j] = std::exp(p[j] - max);
                        sum += p[j];
                    }
                    const float inv = float(1.0 / sum);
                    double pdp = 0;
                    for (std::size_t j = first; j <= t; ++j) {
                        p[j] *= inv;
                        const float* v = &r.v[j * kv_dim + g * dh];
                        double s = 0;
                        for (std::uint32_t d = 0; d < dh; ++d) {
                            s += double(dzt[d]) * double(v[d]);
                            dvg[j * dh + d] += double(p[j]) * double(dzt[d]);
                        }
                        dp[j] = s;
                        pdp += double(p[j]) * s;
                    }
                    std::fill(dqt.begin(), dqt.end(), 0.0);
                    for (std::size_t j = first; j <= t; ++j) {
                        const double ds = double(p[j]) * (dp[j] - pdp) * slope[j];
                        const float* k = &r.k[j * kv_dim + g * dh];
                        for (std::uint32_t d = 0; d < dh; ++d) {
                            dqt[d] += ds * double(k[d]);
                            dkg[j * dh + d] += ds * double(q[d]);
                        }
                    }
                    for (std::uint32_t d = 0; d < dh; ++d) dq[t * q_dim + h * dh + d] = float(dqt[d]);
                }
            for (std::size_t j = 0; j < n_tok; ++j)
                for (std::uint32_t d = 0; d < dh; ++d) {
                    dk[j * kv_dim + g * dh + d] = float(dkg[j * dh + d]);
                    dv[j * kv_dim + g * dh + d] = float(dvg[j * dh + d]);
                }
        }
    });
}

// A block's output y joins the residual stream through its post norm (Gemma 2/3: rmsnorm(y) * w), or directly:
// the gradient for y given g, the residual stream's.
std::vector<float> post_norm_backward(const std::vector<float>& g, const std::vector<float>& y,
                                      const std::optional<TensorView>& norm, std::size_t n, const Config& c) {
    if (!norm) return g;
    return rmsnorm_backward_to(y, *norm, g.data(), n, c.d_model, c.rms_eps);
}

// One layer backwards: `g` enters as d(loss)/d(the layer's output residual) and leaves as d(loss)/d(its input).
// Returns d(loss)/d(z), the heads' outputs (empty for a layer without attention).
std::vector<float> layer_backward(std::vector<float>& g, const Config& c, const LayerViews& l, const LayerRecord& r,
                                  const Recording& rec, std::uint32_t layer, std::size_t n, unsigned threads) {
    const std::size_t d = c.d_model, ff = c.d_ff_at(layer);
    const ArchSpec& a = c.arch();
    // FFN: out = h + post(ffn_down · (act(gate) * up)), gate and up of xn = rmsnorm(h) * ffn_norm; act SiLU or
    // GELU-tanh, post the post-FFN norm (Gemma 2/3) or nothing.
    std::vector<float> da(n * ff), dgate, dup, dxn(n * d);
    matmul_t(da.data(), false, post_norm_backward(g, r.ffn_y, l.post_ffw_norm, n, c).data(), n, l.ffn_down, threads);
    if (a.gate == GateActivation::GeluTanh)
        geglu_backward(r.gate, r.up, da, dgate, dup);
    else
        swiglu_backward(r.gate, r.up, da, dgate, dup);
    matmul_t(dxn.data(), false, dgate.data(), n, l.ffn_gate, threads);
    matmul_t(dxn.data(), true, dup.data(), n, l.ffn_up, threads);
    rmsnorm_backward_rows(g.data(), r.h, l.ffn_norm, dxn.data(), n, d, c.rms_eps);  // g is now d/dh
    if (!c.has_attention(layer)) return {};
    // Attention: h = x + post(attn_output · z), z = attention(s * rope(qnorm(q)), rope(knorm(k)), v) of
    // xn = rmsnorm(x) * attn_norm; s the query scale (Gemma), qnorm and knorm the per-head norms (qwen3, gemma3).
    const std::uint32_t heads = c.n_heads_at(layer), kv_heads = c.n_kv_heads_at(layer), dh = c.d_head;
    std::vector<float> dz(n * heads * dh), dq, dk, dv;
    matmul_t(dz.data(), false, post_norm_backward(g, r.attn_y, l.post_attention_norm, n, c).data(), n, l.attn_output,
             threads);
    ScoreRule rule;
    rule.scale = a.attn_scale == AttnScaleRule::InvSqrtHeadDim ? 1.0f / std::sqrt(float(dh)) : 1.0f;
    rule.cap = a.attn_softcap ? c.attn_softcap : 0.0f;
    rule.window = c.is_local_layer(layer) ? c.sliding_window : 0;
    attention_backward(r, dz.data(), heads, kv_heads, dh, n, rule, threads, dq, dk, dv);
    if (a.attn_scale != AttnScaleRule::InvSqrtHeadDim) {  // the roped queries were scaled
        const float qs = c.attention_scale();
        for (float& x : dq) x *= qs;
    }
    const RopePairing pairing = a.rope;
    const float* rope = a.swa_rope && c.is_local_layer(layer) ? rec.rope_local.data() : rec.rope.data();
    for (std::size_t t = 0; t < n; ++t) {
        for (std::uint32_t h = 0; h < heads; ++h) rope_backward(&dq[(t * heads + h) * dh], &rope[t * dh], dh, pairing);
        for (std::uint32_t k = 0; k < kv_heads; ++k)
            rope_backward(&dk[(t * kv_heads + k) * dh], &rope[t * dh], dh, pairing);
    }
    if (l.attn_q_norm) dq = rmsnorm_backward_to(r.q_raw, *l.attn_q_norm, dq.data(), n * heads, dh, c.rms_eps);
    if (l.attn_k_norm) dk = rmsnorm_backward_to(r.k_raw, *l.attn_k_norm, dk.data(), n * kv_heads, dh, c.rms_eps);
    matmul_t(dxn.data(), false, dq.data(), n, l.q, threads);
    matmul_t(dxn.data(), true, dk.data(), n, l.k, threads);
    matmul_t(dxn.data(), true, dv.data(), n, l.v, threads);
    rmsnorm_backward_rows(g.data(), r.x, l.attn_norm, dxn.data(), n, d, c.rms_eps);  // g is now d/dx
    return dz;
}

}  // namespace

std::vector<std::vector<float>> head_output_gradients(const ModelViews& model, std::span<const std::uint32_t> tokens,
                                                      const Recording& record, unsigned threads,
                                                      const std::function<void()>& layer_done) {
    threads = resolve_threads(threads);
    const Config& c = model.config;
    const std::size_t n = tokens.size(), d = c.d_model;
    // logits = output · (rmsnorm(x) * output_norm)
    std::vector<float> dlogits = loss_backward(record.logits, tokens, c.vocab);
    // The final soft-cap (Gemma 2/3): logits = cap * tanh(l / cap), dl = dlogits * (1 - tanh^2), tanh read back from
    // the capped logits.
    if (c.arch().final_softcap && c.final_softcap != 0.0f) {
        const double cap = c.final_softcap;
        for (std::size_t i = 0; i < dlogits.size(); ++i) {
            const double th = double(record.logits[i]) / cap;
            dlogits[i] = float(double(dlogits[i]) * (1.0 - th * th));
        }
    }
    std::vector<float> dxn(n * d), g(n * d, 0.0f);
    matmul_t(dxn.data(), false, dlogits.data(), n, model.output ? *model.output : model.token_embd, threads);
    rmsnorm_backward_rows(g.data(), record.x_final, model.output_norm, dxn.data(), n, d, c.rms_eps);
    std::vector<std::vector<float>> out(c.n_layers);
    for (std::uint32_t i = c.n_layers; i-- > 0;) {
        out[i] = layer_backward(g, c, model.layers[i], record.layers[i], record, i, n, threads);
        if (layer_done) layer_done();
    }
    return out;
}

}  // namespace headfuse::compute
