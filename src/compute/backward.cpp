// headfuse: the backward pass through the reference forward pass, one operation at a time.
//
// Each operation of the forward pass (compute/forward.cpp) has its backward here, in the same order as the
// graph: the loss's softmax, a matrix product through a weight view (its transpose, read row by row), RMSNorm,
// SwiGLU, RoPE, causal attention's softmax, the residual adds. A new operation of the forward pass gets its
// backward function here and one line in layer_backward. Only activation gradients are computed: no weight's
// gradient is ever formed.
//
// Numerics: activations and gradients are f32 between operations; the sums the forward pass takes in f64 (dot
// products, RMSNorm's mean square, softmax normalisers) are f64 here too, and so are the sums of the transposed
// products. Every output element is computed by one thread in a fixed order: the gradients do not depend on the
// thread count.
#include "compute/backward.h"

#include <algorithm>
#include <cmath>

#include "base/fail.h"
#include "base/parallel.h"
#include "headfuse/arch.h"
#include "headfuse/error.h"
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

// Causal grouped-query attention (forward.cpp's attention) given dz, the gradient of every head's output: the
// weights P are recomputed as the forward pass computes them, then dv[j] += P[t,j] dz[t],
// dS[t,j] = P[t,j] (dz[t].v[j] - sum_j' P[t,j'] dz[t].v[j']), dq[t] = scale sum_j dS[t,j] k[j],
// dk[j] += scale dS[t,j] q[t]. Key/value heads are split over threads (each owns its dk, dv and query heads).
void attention_backward(const LayerRecord& r, const float* dz, std::uint32_t heads, std::uint32_t kv_heads,
                        std::uint32_t dh, std::size_t n_tok, unsigned threads, std::vector<float>& dq,
                        std::vector<float>& dk, std::vector<float>& dv) {
    const std::uint32_t q_dim = heads * dh, kv_dim = kv_heads * dh, group = heads / kv_heads;
    const float scale = 1.0f / std::sqrt(float(dh));
    dq.assign(n_tok * q_dim, 0.0f);
    dk.assign(n_tok * kv_dim, 0.0f);
    dv.assign(n_tok * kv_dim, 0.0f);
    parallel_for(kv_heads, threads, [&](std::uint64_t g0, std::uint64_t g1) {
        std::vector<float> p(n_tok);
        std::vector<double> dp(n_tok), dkg(n_tok * dh), dvg(n_tok * dh), dqt(dh);
        for (std::uint64_t g = g0; g < g1; ++g) {
            std::fill(dkg.begin(), dkg.end(), 0.0);
            std::fill(dvg.begin(), dvg.end(), 0.0);
            for (std::uint64_t h = g * group; h < (g + 1) * group; ++h)
                for (std::size_t t = 0; t < n_tok; ++t) {
                    const float* q = &r.q[t * q_dim + h * dh];
                    const float* dzt = &dz[t * q_dim + h * dh];
                    float max = -INFINITY;
                    for (std::size_t j = 0; j <= t; ++j) {
                        p[j] = kernels::active().dot(q, &r.k[j * kv_dim + g * dh], dh) * scale;
                        max = std::max(max, p[j]);
                    }
                    double sum = 0;
                    for (std::size_t j = 0; j <= t; ++j) {
                        p[j] = std::exp(p[j] - max);
                        sum += p[j];
                    }
                    const float inv = float(1.0 / sum);
                    double pdp = 0;
                    for (std::size_t j = 0; j <= t; ++j) {
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
                    for (std::size_t j = 0; j <= t; ++j) {
                        const double ds = double(p[j]) * (dp[j] - pdp) * double(scale);
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

// One layer backwards: `g` enters as d(loss)/d(the layer's output residual) and leaves as d(loss)/d(its input).
// Returns d(loss)/d(z), the heads' outputs (empty for a layer without attention).
std::vector<float> layer_backward(std::vector<float>& g, const Config& c, const LayerViews& l, const LayerRecord& r,
                                  const float* rope, std::uint32_t layer, std::size_t n, unsigned threads) {
    const std::size_t d = c.d_model, ff = c.d_ff_at(layer);
    // FFN: out = h + ffn_down · (silu(gate) * up), gate and up of xn = rmsnorm(h) * ffn_norm.
    std::vector<float> da(n * ff), dgate, dup, dxn(n * d);
    matmul_t(da.data(), false, g.data(), n, l.ffn_down, threads);
    swiglu_backward(r.gate, r.up, da, dgate, dup);
    matmul_t(dxn.data(), false, dgate.data(), n, l.ffn_gate, threads);
    matmul_t(dxn.data(), true, dup.data(), n, l.ffn_up, threads);
    rmsnorm_backward_rows(g.data(), r.h, l.ffn_norm, dxn.data(), n, d, c.rms_eps);  // g is now d/dh
    if (!c.has_attention(layer)) return {};
    // Attention: h = x + attn_output · z, z = attention(rope(q), rope(k), v) of xn = rmsnorm(x) * attn_norm.
    const std::uint32_t heads = c.n_heads_at(layer), kv_heads = c.n_kv_heads_at(layer), dh = c.d_head;
    std::vector<float> dz(n * heads * dh), dq, dk, dv;
    matmul_t(dz.data(), false, g.data(), n, l.attn_output, threads);
    attention_backward(r, dz.data(), heads, kv_heads, dh, n, threads, dq, dk, dv);
    const RopePairing pairing = c.arch().rope;
    for (std::size_t t = 0; t < n; ++t) {
        for (std::uint32_t h = 0; h < heads; ++h) rope_backward(&dq[(t * heads + h) * dh], &rope[t * dh], dh, pairing);
        for (std::uint32_t k = 0; k < kv_heads; ++k)
            rope_backward(&dk[(t * kv_heads + k) * dh], &rope[t * dh], dh, pairing);
    }
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
    // What Gemma's graphs add (the GELU gate, soft-caps, sliding windows, post norms) has no backward operation yet.
    const ArchSpec& a = c.arch();
    if (a.gate != GateActivation::Silu || a.attn_softcap || a.final_softcap || a.swa_pattern != 0 || a.swa_always ||
        a.post_norms)
        fail(ErrorKind::Unsupported, "scan --method attribution: the backward pass does not model the graph of " +
                                         std::string(a.gguf_name) + " (use --method exact)");
    for (const LayerViews& l : model.layers)
        if (l.attn_q_norm || l.attn_k_norm)
            fail(ErrorKind::Unsupported,
                 "scan --method attribution: the backward pass does not model the per-head q/k "
                 "norms of " +
                     std::string(c.arch().gguf_name) + " (use --method exact)");
    const std::size_t n = tokens.size(), d = c.d_model;
    // logits = output · (rmsnorm(x) * output_norm)
    const std::vector<float> dlogits = loss_backward(record.logits, tokens, c.vocab);
    std::vector<float> dxn(n * d), g(n * d, 0.0f);
    matmul_t(dxn.data(), false, dlogits.data(), n, model.output ? *model.output : model.token_embd, threads);
    rmsnorm_backward_rows(g.data(), record.x_final, model.output_norm, dxn.data(), n, d, c.rms_eps);
    std::vector<std::vector<float>> out(c.n_layers);
    for (std::uint32_t i = c.n_layers; i-- > 0;) {
        out[i] = layer_backward(g, c, model.layers[i], record.layers[i], record.rope.data(), i, n, threads);
        if (layer_done) layer_done();
    }
    return out;
}

}  // namespace headfuse::compute
