// headfuse: the reference forward pass, llama.cpp's graph of the model's architecture (`llama`, `deci`, `qwen2`,
// `qwen3`, `gemma`, `gemma2`, `gemma3`: the row of headfuse/arch.h says how they differ) evaluated in f32 over
// per-head views.
//
// It reads like llama2.c's run.c: the weights are the ModelViews (shapes in model.h and beside each use
// below), a small run state holds the activations, and one function walks the layers top to bottom. Every
// position is evaluated at once, as llama.cpp evaluates a prompt, so each weight row is decoded once a call.
//
// Numerics follow ggml-cpu's kernels, so that the only disagreement left with llama.cpp (F32 weights, F32
// KV cache) is the order in which ggml sums its dot products:
// - rms_norm, rope (NORM or NEOX pairs), soft_max, tanh (soft-caps) and silu use ggml's f32 formulas, and its f64
//   sums where it has them; Gemma's GELU gate reads ggml-cpu's f16 table as ggml_vec_geglu_f32 does;
// - matmul dot products accumulate in f64 and round once to f32. ggml sums them in f32 SIMD lanes (or
//   llamafile tiles) in an order that depends on the CPU; an f64 sum is the exactly rounded dot product to
//   within ~1e-16, so our error adds nothing to ggml's. An f32 product is exact in f64 (24 + 24 bits < 53),
//   so FMA contraction cannot change a result either.
// - Weights of every other type (F16, BF16, the 32-wide quants, the K-quants, IQ4_NL, IQ4_XS) are decoded row by
//   row to f32 by decode_row, as ggml's dequantize_row_* does, and used the same way. (llama.cpp would also
//   round the activations to F16, BF16, Q8_0 or Q8_K for those; this pass keeps them f32.)
// Matmuls split their output rows, and attention its heads, over threads (parallel_for): every output element
// is computed by one thread in a fixed order, so the logits are bit-identical for any thread count.
#include "headfuse/forward.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "base/checked.h"
#include "base/fail.h"
#include "base/parallel.h"
#include "base/text.h"
#include "compute/scan_pass.h"
#include "headfuse/error.h"
#include "headfuse/fold.h"
#include "headfuse/quantize.h"
#include "io/mapped_file.h"
#include "model/roles.h"
#include "model/view_rows.h"
#include "quant/kernels.h"

namespace headfuse {
namespace {

// ----------------------------------------------------------------------------------------------------------
// Checking the views against the config: a hand-built ModelViews must not make us read out of bounds.

std::string shape_of(const TensorView& w) { return format_shape({w.ne().data(), std::max(w.n_dims(), 1u)}); }

// w must be a matrix of n_out rows of n_in elements of a model type, with the bytes to match.
void check_matrix(const TensorView& w, std::uint64_t n_in, std::uint64_t n_out) {
    const TypeTraits* t = find_type(static_cast<std::uint32_t>(w.type()));
    if (!t)
        fail("forward: tensor '" + w.name() + "' has type id " + std::to_string(static_cast<std::uint32_t>(w.type())) +
             ", which ggml does not define");
    require_decoded(w.type(), "forward: tensor '" + w.name() + "'");
    if (w.ne()[0] != n_in || w.n_rows() != n_out)
        fail("forward: tensor '" + w.name() + "' has wrong shape; expected [" + std::to_string(n_in) + ", " +
             std::to_string(n_out) + "], got " + shape_of(w));
    const std::uint64_t want = checked_mul(row_bytes(w.type(), n_in), n_out, w.name());
    if (w.bytes().size() != want)
        fail("forward: tensor '" + w.name() + "' holds " + std::to_string(w.bytes().size()) + " bytes; expected " +
             std::to_string(want));
}

// Norm weights and biases are vectors of n elements: F32, or F16/BF16 (a foreign checkpoint's), widened to F32
// exactly as fuse widens them.
void check_norm(const TensorView& w, std::uint64_t n) {
    const bool typed = w.type() == DType::F32 || w.type() == DType::F16 || w.type() == DType::BF16;
    if (!typed || w.ne()[0] != n || w.n_rows() != 1 || w.bytes().size() != n * traits(w.type()).type_size)
        fail("forward: norm tensor '" + w.name() + "' must be f32, f16 or bf16 [" + std::to_string(n) + "], found " +
             std::string(typed ? type_name(w.type()) : "another type") + " " + shape_of(w));
}

// The graph features of the architecture's row that this pass does not compute yet: the first, named.
void check_features(const Config& c) {
    const ArchSpec& a = c.arch();
    const char* missing = a.swa_rope && c.sliding_window != 0 && c.rope_scaling == RopeScaling::Yarn
                              ? "YaRN scaling beside the unscaled RoPE of its local layers"
                              : nullptr;
    if (missing)
        fail(ErrorKind::Unsupported, "forward: llama.cpp's " + std::string(a.gguf_name) + " graph has " + missing +
                                         ", which the reference forward pass does not model");
}

void check_model(const ModelViews& m) {
    const Config& c = m.config;
    c.validate();
    check_features(c);
    if (!c.unmodeled.empty())
        fail(ErrorKind::Unsupported,
             "forward: the model has " + c.unmodeled.front() +
                 ", which changes what llama.cpp computes and which the reference forward pass does not model");
    if (c.tied == m.output.has_value())
        fail(std::string("forward: config says ") + (c.tied ? "tied" : "untied") + " but output.weight is " +
             (m.output ? "present" : "absent"));
    if (c.has_lens() != m.lens_proj.has_value())
        fail("forward: config says donor_d_in " + std::to_string(c.donor_d_in) + " but lens.proj.weight is " +
             (m.lens_proj ? "present" : "absent"));
    if (m.layers.size() != c.n_layers)
        fail("forward: " + std::to_string(m.layers.size()) + " layers given; expected " + std::to_string(c.n_layers));
    // Every tensor the role table gives the per-head layout of this config, with its shape and type.
    auto check = [](const TensorSpec& s, const TensorView& w) {
        if (s.kind == TensorKind::Norm || s.kind == TensorKind::Bias) return check_norm(w, s.ne[0]);
        check_matrix(w, s.ne[0], s.ne[1]);
        if ((s.kind == TensorKind::Donor || s.kind == TensorKind::Lens) && w.type() != DType::F32)
            fail("forward: a projection lens needs f32 token_embd.weight and lens.proj.weight");
    };
    for_each_spec(c, ModelKind::PerHead, [&](TensorSpec&& s) {
        const RoleSpec& r = *s.role;
        if (!is_head_role(r)) {
            const TensorView* w = role_view(m, r, s.layer);
            if (!w) fail("forward: config says the model has " + s.name + ", but it is absent");
            return check(s, *w);
        }
        const std::vector<TensorView>& heads = role_heads(m, r, s.layer);
        if (heads.size() != head_count(r, c, s.layer))
            fail("forward: layer " + std::to_string(s.layer) + " has " + std::to_string(heads.size()) + " " +
                 std::string(r.name) + " heads; expected " + std::to_string(head_count(r, c, s.layer)));
        check(s, heads[s.head]);
    });
}

// ----------------------------------------------------------------------------------------------------------
// The run state: activations of every position, position-major (row t belongs to tokens[t]).

struct RunState {
    std::vector<float> x;           // [n_tok, d_model]       the residual stream
    std::vector<float> xn;          // [n_tok, d_model]       x normed: the input of attention or of the FFN
    std::vector<float> q;           // [n_tok, n_heads*d_head]
    std::vector<float> k;           // [n_tok, n_kv*d_head]   the KV cache: every position, k roped
    std::vector<float> v;           // [n_tok, n_kv*d_head]
    std::vector<float> att;         // [n_tok, n_heads*d_head] attention output, heads concatenated
    std::vector<float> gate;        // [n_tok, d_ff]
    std::vector<float> up;          // [n_tok, d_ff]
    std::vector<float> y;           // [n_tok, d_model]       a projection back into the residual stream
    std::vector<float> rope;        // [n_tok, d_head]        (cos, sin) of each pair's angle at each position
    std::vector<float> rope_local;  // [n_tok, d_head]    the same for the local layers (gemma3's own base)
    std::vector<float> logits;      // [n_tok, vocab]
    std::vector<double> xd;         // a matmul's input in f64 (dot_tile's rows), as large as the largest yet
    // The scan's passes (compute/scan_pass.h): rows are `seq`-long independent sequences (0: one sequence of
    // every row), `patches` replace heads' attention outputs, and `record`, when set, keeps what the backward
    // pass reads.
    std::size_t seq = 0;
    std::span<const compute::HeadPatch> patches;
    compute::Recording* record = nullptr;

    RunState(const Config& c, std::size_t n)
        : x(n * c.d_model),
          xn(n * c.d_model),
          q(n * c.q_dim()),
          k(n * c.kv_dim()),
          v(n * c.kv_dim()),
          att(n * c.q_dim()),
          gate(n * c.d_ff),
          up(n * c.d_ff),
          y(n * c.d_model),
          rope(n * c.d_head),
          rope_local(c.arch().swa_rope ? n * c.d_head : 0),
          logits(n * c.vocab) {}
};

// ----------------------------------------------------------------------------------------------------------
// The building blocks.

// The hot loop (compute/dot.h), built for the widest instruction set this CPU has (quant/kernels.h).
float dot(const float* a, const float* b, std::size_t n) { return kernels::active().dot(a, b, n); }

// Weight bytes a thread reads before it hands their pages back: a mapped model never becomes resident whole.
constexpr std::uint64_t kReleaseBytes = std::uint64_t{4} << 20;

// The f64 weight rows a thread's matmul decodes before it multiplies them (dot_tile, compute/dot.h): 32 rows are a
// chunk of 128 KiB of them in a core's L2 cache beside the activations', and 2.8 MB of L3 for rows of 11008.
constexpr std::uint64_t kRowBlock = 32;

// "ph.gguf: " for a view of a mapped file, "" for one in memory: errors about weights name their file.
std::string source_of(const TensorView& w) { return w.file() ? w.file()->path().string() + ": " : ""; }

[[noreturn]] void non_finite(const TensorView& w, std::uint64_t row) {
    fail(source_of(w) + "tensor '" + w.name() + "': non-finite weight (NaN or infinity) in row " + std::to_string(row));
}

// Row r of w as f32, checked finite, from `p`, its bytes in w's type (the view's own row, or a copy read in
// llama.cpp's row order): F32 rows in place when the file aligns them for float loads (a file may set
// general.alignment to 1), anything else decoded (or copied) into `scratch`.
const float* load_row(const TensorView& w, const std::byte* p, std::uint64_t r, float* scratch) {
    const std::uint64_t n = w.ne()[0];
    const float* row = scratch;
    if (w.type() == DType::F32 && reinterpret_cast<std::uintptr_t>(p) % alignof(float) == 0)
        row = reinterpret_cast<const float*>(p);
    else
        decode_row(w.type(), p, scratch, n);
    if (!all_finite(row, n)) non_finite(w, r);
    return row;
}

// Row r of w as load_row gives it, for a view that stores its rows in llama.cpp's order (plain()).
const float* load_row(const TensorView& w, std::uint64_t r, float* scratch) {
    return load_row(w, w.row(r).data(), r, scratch);
}

// Logical rows of a view in a foreign storage order (TensorView::plain() false: a Hugging Face or
// TransformerLens checkpoint's Q, K, transposed matrices), read through view_rows a window at a time, so that
// the matmul sees llama.cpp's rows whatever the order. Memory: one window per thread.
class ForeignRows {
public:
    explicit ForeignRows(const TensorView& w) : w_(w), step_(window_rows(w, kWindowBytes)) {
        // A transposed view's logical row is a column: a window reads a span of every stored row, so it takes a
        // page of each (4 KiB of columns) and the mapping's pages are faulted in about once, not once a row.
        if (w.transposed()) step_ = std::max<std::uint64_t>(step_, kColumnBytes / traits(w.type()).type_size);
    }
    // The bytes of logical row r (< end, the last row the caller reads), in w's type.
    const std::byte* row(std::uint64_t r, std::uint64_t end) {
        if (r < r0_ || r >= r0_ + n_) {
            r0_ = r;
            n_ = std::min(step_, end - r);
            buf_.resize(n_ * w_.row_nbytes());
            read_rows(w_, r0_, n_, buf_, scratch_);
            // A transposed view is read from the mapping: its pages go back once the window is copied.
            if (w_.transposed() && w_.file()) w_.file()->release(w_.bytes().data(), w_.bytes().size());
        }
        return buf_.data() + (r - r0_) * w_.row_nbytes();
    }

private:
    static constexpr std::uint64_t kWindowBytes = std::uint64_t{1} << 20, kColumnBytes = 4096;
    const TensorView& w_;
    std::uint64_t step_, r0_ = 0, n_ = 0;
    std::vector<std::byte> buf_, scratch_;
};

// A vector's weights (a norm, a bias) as f32, read in llama.cpp's order and checked finite.
std::vector<float> load_norm(const TensorView& w) {
    std::vector<float> out(w.ne()[0]);
    ForeignRows foreign(w);  // holds the row read in a foreign order while it is copied
    const float* row = w.plain() ? load_row(w, 0, out.data()) : load_row(w, foreign.row(0, 1), 0, out.data());
    if (row != out.data()) std::copy(row, row + out.size(), out.begin());
    return out;
}

// y[t, o] = W[o] · x[t] for t < n_tok, W being `parts` stacked row after row: the heads of a projection in
// head order, which is exactly the layout of the fused tensor. Each dot product is dot's, bit for bit, computed a
// tile at a time (dot_tile, compute/dot.h): the activations are converted to f64 once a call, by every thread, into
// the run state's buffer (a fresh one of a scan's thousands of rows would cost page faults and a memset on one
// thread each call), and each thread decodes its weight rows once, to f32 (checked finite) and on to f64, kRowBlock
// rows at a time.
void matmul(RunState& s, float* y, const float* x, std::size_t n_tok, std::span<const TensorView> parts,
            unsigned threads) {
    const std::uint64_t n_in = parts[0].ne()[0], n_pad = (n_in + 7) / 8 * 8;  // dot_tile's rows: whole lanes
    std::uint64_t n_out = 0;
    for (const TensorView& w : parts) n_out += w.n_rows();
    if (s.xd.size() < n_tok * n_pad) s.xd.resize(n_tok * n_pad);  // to the widest input, in a pass's first layer
    double* const xd = s.xd.data();
    parallel_for(n_tok, threads, [&](std::uint64_t t0, std::uint64_t t1) {
        for (std::uint64_t t = t0; t < t1; ++t) {
            for (std::uint64_t i = 0; i < n_in; ++i) xd[t * n_pad + i] = double(x[t * n_in + i]);
            std::fill(xd + t * n_pad + n_in, xd + (t + 1) * n_pad, 0.0);
        }
    });
    const Kernels& k = kernels::active();
    // Rows go to the threads a block at a time, taken in turn: a core slowed by other work on the machine takes
    // fewer blocks instead of holding the others up. (Any thread may compute any row: each product is the same.) A
    // view in a foreign order is read in windows that span many rows, so its matrix is cut in one range per thread.
    const bool plain = std::all_of(parts.begin(), parts.end(), [](const TensorView& w) { return w.plain(); });
    const std::uint64_t workers = std::min<std::uint64_t>(resolve_threads(threads), n_out);
    const std::uint64_t grain = plain ? kRowBlock : (n_out + workers - 1) / workers;
    const std::uint64_t blocks = (n_out + grain - 1) / grain;
    std::atomic<std::uint64_t> next{0};
    parallel_for(workers, threads, [&](std::uint64_t, std::uint64_t) {
        std::vector<float> scratch(n_in);
        std::vector<double> wd(std::min(kRowBlock, grain) * n_pad, 0.0);  // rows [first, first + filled), zero padded
        for (std::uint64_t b; (b = next.fetch_add(1, std::memory_order_relaxed)) < blocks;) {
            const std::uint64_t o0 = b * grain, o1 = std::min(n_out, o0 + grain);
            std::uint64_t first = o0, filled = 0;
            const auto flush = [&] {
                if (filled) k.dot_tile(wd.data(), filled, xd, n_tok, n_pad, y + first, n_out);  // hot loop
                first += filled;
                filled = 0;
            };
            std::uint64_t base = 0;  // first output row of the current part
            for (const TensorView& w : parts) {
                const std::uint64_t lo = std::max(o0, base), hi = std::min(o1, base + w.n_rows());
                std::uint64_t unreleased = lo;  // first row whose pages this thread still holds
                std::optional<ForeignRows> foreign;
                if (!w.plain() && lo < hi) foreign.emplace(w);
                for (std::uint64_t o = lo; o < hi; ++o) {
                    const float* row = foreign
                                           ? load_row(w, foreign->row(o - base, hi - base), o - base, scratch.data())
                                           : load_row(w, o - base, scratch.data());
                    double* d = wd.data() + filled * n_pad;
                    for (std::uint64_t i = 0; i < n_in; ++i) d[i] = double(row[i]);
                    if (++filled * n_pad == wd.size()) flush();
                    if (w.file() && w.plain() &&
                        ((o + 1 - unreleased) * w.row_nbytes() >= kReleaseBytes || o + 1 == hi)) {
                        w.file()->release(w.row(unreleased - base).data(), (o + 1 - unreleased) * w.row_nbytes());
                        unreleased = o + 1;
                    }
                }
                base += w.n_rows();
            }
            flush();
        }
    });
}

void matmul(RunState& s, float* y, const float* x, std::size_t n_tok, const TensorView& w, unsigned threads) {
    matmul(s, y, x, n_tok, std::span(&w, 1), threads);
}

// ggml_rms_norm then ggml_mul: f32 squares summed in f64, the mean rounded to f32, x * (1/sqrtf(mean + eps)),
// then times the weight.
void rmsnorm(float* out, const float* x, const float* w, std::size_t n, float eps) {
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i) sum += double(x[i] * x[i]);
    const float mean = float(sum / double(n));
    const float scale = 1.0f / std::sqrt(mean + eps);
    for (std::size_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

// RoPE's parameters as llama.cpp derives them from the model's keys (llama_context's constructor) and hands
// them to ggml_rope_ext: freq_scale is the inverse of the scaling factor (1 without scaling), YaRN sets
// ext_factor 1 and an attention factor that ggml's rope_yarn multiplies back by 1 + 0.1 ln(1/freq_scale), and
// YaRN's correction dimensions come from beta_fast 32 and beta_slow 1 (the `llama` graph reads no keys for them).
struct RopeParams {
    std::uint32_t n_dims = 0;
    float freq_base = 10000.0f, freq_scale = 1.0f, ext_factor = 0.0f, attn_factor = 1.0f;
    float corr_low = 0.0f, corr_high = 0.0f;  // ggml_rope_yarn_corr_dims
};

constexpr float kYarnBetaFast = 32.0f, kYarnBetaSlow = 1.0f;  // llama_hparams' defaults

RopeParams rope_params(const Config& c) {
    RopeParams r;
    r.n_dims = c.d_head;
    r.freq_base = c.rope_theta;
    r.freq_scale = c.rope_scaling == RopeScaling::None ? 1.0f : 1.0f / c.rope_scaling_factor;
    r.ext_factor = c.rope_scaling == RopeScaling::Yarn ? 1.0f : 0.0f;
    if (r.ext_factor != 0.0f) {
        const float factor = 1.0f / r.freq_scale;  // not always the factor itself: llama.cpp inverts twice
        r.attn_factor = factor <= 1.0f ? 1.0f : 0.1f * 1.0f * std::log(factor) + 1.0f;
        r.attn_factor *= 1.0f / (1.0f + 0.1f * std::log(factor));
    }
    r.attn_factor *= c.rope_attn_factor;
    const std::uint32_t n_ctx_orig = c.original_context();
    const float pi = 3.14159265358979323846f;
    auto corr_dim = [&](float n_rot) {
        return float(r.n_dims) * std::log(float(n_ctx_orig) / (n_rot * 2 * pi)) / (2 * std::log(r.freq_base));
    };
    r.corr_low = std::max(0.0f, std::floor(corr_dim(kYarnBetaFast)));
    r.corr_high = std::min(float(r.n_dims - 1), std::ceil(corr_dim(kYarnBetaSlow)));
    return r;
}

// ggml's rope_yarn_ramp: 1 below the low correction dimension, 0 above the high one, linear between.
float yarn_ramp(float low, float high, std::uint32_t i0) {
    const float y = (float(i0 / 2) - low) / std::max(0.001f, high - low);
    return 1.0f - std::min(1.0f, std::max(0.0f, y));
}

// RoPE (cos, sin) pairs of one position as ggml-cpu builds them (ggml_rope_cache_init, rope_yarn): the angle
// theta_i = pos * base^(-2i/d_head) is built by repeated f32 multiplication by powf(base, -2/d_head) rather
// than by a pow per pair. The two differ by a few ulps of theta, and at a far position one ulp of theta
// (2.4e-4 at 2048) moves cos and sin by as much: following ggml's recurrence keeps the angles, and so cos and
// sin (same libm), identical to llama.cpp's. Then each pair's angle is divided by its frequency factor
// (rope_freqs.weight, when given), scaled (linear), or blended per dimension (YaRN), and cos and sin are
// multiplied by the attention factor.
void rope_angles(float* cs, std::uint32_t pos, const RopeParams& r, const float* freq_factors) {
    const float theta_scale = std::pow(r.freq_base, -2.0f / float(r.n_dims));  // float overload: powf
    float theta = float(pos);
    for (std::uint32_t i = 0; i < r.n_dims; i += 2) {
        const float extrap = theta / (freq_factors ? freq_factors[i / 2] : 1.0f);
        const float interp = r.freq_scale * extrap;
        float angle = interp, mscale = r.attn_factor;
        if (r.ext_factor != 0.0f) {
            const float mix = yarn_ramp(r.corr_low, r.corr_high, i) * r.ext_factor;
            angle = interp * (1 - mix) + extrap * mix;
            mscale *= 1.0f + 0.1f * std::log(1.0f / r.freq_scale);
        }
        cs[i] = std::cos(angle) * mscale;
        cs[i + 1] = std::sin(angle) * mscale;
        theta *= theta_scale;
    }
}

// RoPE of one head, as ggml-cpu's rotate_pairs: pair i (angle cs[2i], cs[2i+1]) is the adjacent (x[2i], x[2i+1])
// in mode NORM (llama, deci), the halves (x[i], x[i + d_head/2]) in mode NEOX (qwen2, qwen3).
void rope(float* x, const float* cs, std::uint32_t d_head, RopePairing pairing) {
    const std::uint32_t offset = pairing == RopePairing::Neox ? d_head / 2 : 1;
    for (std::uint32_t i = 0; i < d_head; i += 2) {
        const std::uint32_t a = pairing == RopePairing::Neox ? i / 2 : i, b = a + offset;
        const float x0 = x[a], x1 = x[b], c = cs[i], s = cs[i + 1];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

// Per-head RMS norms (qwen3's attn_q_norm, attn_k_norm): each of the n_tok * heads heads of d_head values in x
// normed over its d_head values and multiplied by the weight, as ggml_rms_norm of the [d_head, heads, n_tok]
// view then ggml_mul. No weight, no norm.
void head_norm(float* x, std::size_t n_tok, std::uint32_t heads, const std::optional<TensorView>& w, const Config& c) {
    if (!w) return;
    const std::vector<float> weight = load_norm(*w);  // [d_head]
    for (std::size_t i = 0; i < n_tok * heads; ++i)
        rmsnorm(x + i * c.d_head, x + i * c.d_head, weight.data(), c.d_head, c.rms_eps);
}

// Causal grouped-query attention, heads split over threads. ggml's soft_max_ext(kq, mask, scale): each score is
// (q·k) * scale in f32, exp(s - max) is summed in f64, and each weight is scaled by float(1/sum). The scale is
// 1/sqrt(d_head) for llama's graph; Gemma's scales the roped queries instead (attention_block) and passes 1.
// Gemma 2 soft-caps each score first, as llama.cpp's build_attn_mha: ggml_scale by 1/c, ggml_tanh, ggml_scale by
// c, all in f32. A local layer (Config::is_local_layer) masks the keys at or beyond the window: the query at t sees
// keys j with t - j < sliding_window (llama_hparams::is_masked_swa, LLAMA_SWA_TYPE_STANDARD).
// Layer `layer`'s counts: q is [n_tok, n_heads*d_head], k and v [n_tok, n_kv*d_head] for its own counts.
void attention(RunState& s, const Config& c, std::uint32_t layer, std::size_t n_tok, unsigned threads) {
    const std::uint32_t heads = c.n_heads_at(layer), kv_heads = c.n_kv_heads_at(layer);
    const std::uint32_t dh = c.d_head, q_dim = heads * dh, kv_dim = kv_heads * dh;
    const std::uint32_t group = heads / kv_heads;  // q heads per kv head
    const ArchSpec& a = c.arch();
    const float scale = a.attn_scale == AttnScaleRule::InvSqrtHeadDim ? 1.0f / std::sqrt(float(dh)) : 1.0f;
    const float cap = a.attn_softcap ? c.attn_softcap : 0.0f, inv_cap = cap != 0.0f ? 1.0f / cap : 0.0f;
    const std::size_t window = c.is_local_layer(layer) ? c.sliding_window : 0;
    parallel_for(heads, threads, [&](std::uint64_t h0, std::uint64_t h1) {
        std::vector<float> p(n_tok);
        std::vector<double> acc(dh);
        for (std::uint64_t h = h0; h < h1; ++h) {
            const std::uint64_t g = h / group;
            for (std::size_t t = 0; t < n_tok; ++t) {
                const float* q = &s.q[t * q_dim + h * dh];
                // The first key seen: the start of t's sequence (the scan's batches), or of its window.
                const std::size_t seq_first = s.seq ? t - t % s.seq : 0;
                const std::size_t first = window != 0 && t >= seq_first + window ? t - window + 1 : seq_first;
                float max = -INFINITY;
                for (std::size_t j = first; j <= t; ++j) {
                    float kq = dot(q, &s.k[j * kv_dim + g * dh], dh);
                    if (cap != 0.0f) kq = std::tanh(kq * inv_cap) * cap;
                    p[j] = kq * scale;
                    max = std::max(max, p[j]);
                }
                double sum = 0;
                for (std::size_t j = first; j <= t; ++j) {
                    p[j] = std::exp(p[j] - max);
                    sum += p[j];
                }
                const float inv = float(1.0 / sum);
                std::fill(acc.begin(), acc.end(), 0.0);
                for (std::size_t j = first; j <= t; ++j) {
                    const float pj = p[j] * inv;
                    const float* v = &s.v[j * kv_dim + g * dh];
                    for (std::uint32_t d = 0; d < dh; ++d) acc[d] += double(pj) * double(v[d]);
                }
                float* out = &s.att[t * q_dim + h * dh];
                for (std::uint32_t d = 0; d < dh; ++d) out[d] = float(acc[d]);
            }
        }
    });
}

// x[t] = row tokens[t] of token_embd. With a lens, the row of the folded table E = D · Pᵀ, folded in the
// same kFoldBlockRows-row blocks fuse folds, so the bits equal those of the fused file's token_embd.
void embed(const ModelViews& m, std::span<const std::uint32_t> tokens, float* x) {
    const std::uint64_t d = m.config.d_model, vocab = m.config.vocab;
    std::optional<LensFold> fold;                        // built at the first lens row
    std::map<std::uint64_t, std::vector<float>> blocks;  // folded blocks by first row, for this call
    for (std::size_t t = 0; t < tokens.size(); ++t) {
        const std::uint64_t tok = tokens[t];
        if (!m.lens_proj) {
            const TensorView& e = m.token_embd;
            ForeignRows foreign(e);  // holds the row read in a foreign order while it is copied
            const float* row =
                e.plain() ? load_row(e, tok, x + t * d) : load_row(e, foreign.row(tok, tok + 1), tok, x + t * d);
            if (row != x + t * d) std::memcpy(x + t * d, row, d * sizeof(float));
            continue;
        }
        const std::uint64_t v0 = tok - tok % kFoldBlockRows;
        auto [it, fresh] = blocks.try_emplace(v0);
        if (fresh) {
            if (!fold) fold.emplace(m.token_embd, *m.lens_proj);
            const std::uint64_t n = std::min(kFoldBlockRows, vocab - v0);
            it->second.resize(n * d);
            fold->rows(v0, n, it->second.data());
        }
        if (!all_finite(it->second.data() + (tok - v0) * d, d)) non_finite(m.token_embd, tok);
        std::memcpy(x + t * d, it->second.data() + (tok - v0) * d, d * sizeof(float));
    }
}

// y[t] += b for every position t, b being `parts` concatenated (the heads of a projection's bias): ggml_add
// in f32 after the matmul. No parts, no bias.
void add_bias(float* y, std::size_t n_tok, std::span<const TensorView> parts) {
    std::size_t n_out = 0;
    std::vector<std::vector<float>> bias;
    for (const TensorView& b : parts) {
        n_out += b.ne()[0];
        bias.push_back(load_norm(b));
    }
    for (std::size_t t = 0; t < n_tok; ++t) {
        float* row = y + t * n_out;
        for (const std::vector<float>& w : bias) {
            for (std::size_t i = 0; i < w.size(); ++i) row[i] += w[i];
            row += w.size();
        }
    }
}

void add_bias(float* y, std::size_t n_tok, const std::optional<TensorView>& b) {
    if (b) add_bias(y, n_tok, std::span(&*b, 1));
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }  // ggml_silu_f32

// ggml_gelu_f32: GELU's tanh approximation in f32, as ggml-cpu evaluates it to fill its table.
float gelu_f32(float x) {
    constexpr float kCoefA = 0.044715f, kSqrt2OverPi = 0.79788456080286535587989211986876f;
    return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + kCoefA * x * x)));
}

// ggml-cpu's GELU table (ggml_table_gelu_f16): for every f16 bit pattern, f16(gelu(x)).
const std::vector<std::uint16_t>& gelu_table() {
    static const std::vector<std::uint16_t> table = [] {
        std::vector<std::uint16_t> t(1u << 16);
        for (std::uint32_t i = 0; i < t.size(); ++i) t[i] = fp32_to_fp16(gelu_f32(fp16_to_fp32(std::uint16_t(i))));
        return t;
    }();
    return table;
}

// ggml_vec_geglu_f32 as ggml-cpu builds it (GGML_GELU_FP16): gelu(x) * g, with gelu read from the f16 table at
// x rounded to f16; x <= -10 gives 0, x >= 10 passes x through.
float geglu(float x, float g, const std::vector<std::uint16_t>& table) {
    if (x <= -10.0f) return 0.0f;
    if (x >= 10.0f) return x * g;
    return fp16_to_fp32(table[fp32_to_fp16(x)]) * g;
}

// A post norm (Gemma 2/3's post_attention_norm, post_ffw_norm): y = rmsnorm(y) * w for every position. No weight,
// no norm.
void post_norm(float* y, std::size_t n_tok, const std::optional<TensorView>& w, const Config& c) {
    if (!w) return;
    const std::vector<float> weight = load_norm(*w);  // [d_model]
    for (std::size_t t = 0; t < n_tok; ++t)
        rmsnorm(y + t * c.d_model, y + t * c.d_model, weight.data(), c.d_model, c.rms_eps);
}

// The attention half of layer `layer`, with its own counts: x += attn_output · attention(rope(q), rope(k), v),
// all of rmsnorm(x) * attn_norm. The query heads listed in `ablated` contribute nothing: their attention outputs
// are zeroed before attn_output, which is what zeroing their columns of attn_output does to the product.
void attention_block(RunState& s, const Config& c, const LayerViews& l, std::uint32_t layer, std::size_t n,
                     unsigned threads, std::span<const std::uint32_t> ablated) {
    const std::uint32_t d = c.d_model, dh = c.d_head;
    const std::uint32_t heads = c.n_heads_at(layer), kv_heads = c.n_kv_heads_at(layer);
    const std::vector<float> attn_norm = load_norm(l.attn_norm);  // [d_model]
    for (std::size_t t = 0; t < n; ++t) rmsnorm(&s.xn[t * d], &s.x[t * d], attn_norm.data(), d, c.rms_eps);
    matmul(s, s.q.data(), s.xn.data(), n, l.q, threads);  // n_heads x [d_model, d_head]
    matmul(s, s.k.data(), s.xn.data(), n, l.k, threads);  // n_kv    x [d_model, d_head]
    matmul(s, s.v.data(), s.xn.data(), n, l.v, threads);  // n_kv    x [d_model, d_head]
    add_bias(s.q.data(), n, l.q_bias);                    // n_heads x [d_head], before RoPE
    add_bias(s.k.data(), n, l.k_bias);
    add_bias(s.v.data(), n, l.v_bias);
    if (s.record && l.attn_q_norm) s.record->layers[layer].q_raw = s.q;
    if (s.record && l.attn_k_norm) s.record->layers[layer].k_raw = s.k;
    head_norm(s.q.data(), n, heads, l.attn_q_norm, c);  // after the biases, before RoPE
    head_norm(s.k.data(), n, kv_heads, l.attn_k_norm, c);
    const RopePairing pairing = c.arch().rope;
    // Gemma 3's local layers rotate with their own base (get_rope_freq_base/scale).
    const std::vector<float>& angles = c.arch().swa_rope && c.is_local_layer(layer) ? s.rope_local : s.rope;
    for (std::size_t t = 0; t < n; ++t) {
        for (std::uint32_t h = 0; h < heads; ++h) rope(&s.q[(t * heads + h) * dh], &angles[t * dh], dh, pairing);
        for (std::uint32_t g = 0; g < kv_heads; ++g) rope(&s.k[(t * kv_heads + g) * dh], &angles[t * dh], dh, pairing);
    }
    if (c.arch().attn_scale != AttnScaleRule::InvSqrtHeadDim) {  // Gemma: ggml_scale(Qcur, f_attention_scale)
        const float qs = c.attention_scale();
        for (std::size_t i = 0; i < n * std::size_t{heads} * dh; ++i) s.q[i] *= qs;
    }
    attention(s, c, layer, n, threads);
    if (s.record) s.record->layers[layer].keep_attention(s.q, s.k, s.v, s.att);
    for (const std::uint32_t h : ablated)
        for (std::size_t t = 0; t < n; ++t) std::fill_n(&s.att[(t * heads + h) * dh], dh, 0.0f);
    compute::apply_patches(s.patches, layer, s.att.data(), heads, dh);
    matmul(s, s.y.data(), s.att.data(), n, l.attn_output, threads);  // [n_heads*d_head, d_model]
    add_bias(s.y.data(), n, l.attn_output_bias);                     // [d_model]
    if (s.record && l.post_attention_norm) s.record->layers[layer].attn_y = s.y;
    post_norm(s.y.data(), n, l.post_attention_norm, c);  // [d_model], Gemma 2/3
    for (std::size_t i = 0; i < n * std::size_t{d}; ++i) s.x[i] += s.y[i];
}

// One layer on the run state: the residual stream s.x goes in and comes out updated. A layer of 0 heads (deci)
// has no attention (h = x), as llama.cpp's deci graph skips it.
void layer_forward(RunState& s, const Config& c, const LayerViews& l, std::uint32_t layer, std::size_t n,
                   unsigned threads, std::span<const std::uint32_t> ablated) {
    const std::uint32_t d = c.d_model, ff = c.d_ff_at(layer);
    if (c.has_attention(layer)) attention_block(s, c, l, layer, n, threads, ablated);
    if (s.record) s.record->layers[layer].h = s.x;
    // FFN: x = h + ffn_down · (silu(ffn_gate · xn) * (ffn_up · xn)), xn = rmsnorm(h) * ffn_norm
    const std::vector<float> ffn_norm = load_norm(l.ffn_norm);  // [d_model]
    for (std::size_t t = 0; t < n; ++t) rmsnorm(&s.xn[t * d], &s.x[t * d], ffn_norm.data(), d, c.rms_eps);
    matmul(s, s.gate.data(), s.xn.data(), n, l.ffn_gate, threads);  // [d_model, d_ff]
    add_bias(s.gate.data(), n, l.ffn_gate_bias);                    // [d_ff]
    matmul(s, s.up.data(), s.xn.data(), n, l.ffn_up, threads);      // [d_model, d_ff]
    add_bias(s.up.data(), n, l.ffn_up_bias);                        // [d_ff]
    if (s.record) s.record->layers[layer].keep_ffn(s.gate, s.up, n * ff);
    const std::vector<std::uint16_t>* gelu = c.arch().gate == GateActivation::GeluTanh ? &gelu_table() : nullptr;
    parallel_for(n, threads, [&](std::uint64_t t0, std::uint64_t t1) {  // elementwise: any split gives the same
        for (std::size_t i = t0 * ff; i < t1 * ff; ++i)
            s.gate[i] = gelu ? geglu(s.gate[i], s.up[i], *gelu) : silu(s.gate[i]) * s.up[i];
    });
    matmul(s, s.y.data(), s.gate.data(), n, l.ffn_down, threads);  // [d_ff, d_model]
    add_bias(s.y.data(), n, l.ffn_down_bias);                      // [d_model]
    if (s.record && l.post_ffw_norm) s.record->layers[layer].ffn_y = s.y;
    post_norm(s.y.data(), n, l.post_ffw_norm, c);  // [d_model], Gemma 2/3
    for (std::size_t i = 0; i < n * std::size_t{d}; ++i) s.x[i] += s.y[i];
}

// logits = output · (rmsnorm(x) * output_norm); token_embd [d_model, vocab] when tied
void logits_of(RunState& s, const ModelViews& model, std::size_t n, unsigned threads) {
    const Config& c = model.config;
    const std::vector<float> output_norm = load_norm(model.output_norm);
    for (std::size_t t = 0; t < n; ++t)
        rmsnorm(&s.xn[t * c.d_model], &s.x[t * c.d_model], output_norm.data(), c.d_model, c.rms_eps);
    matmul(s, s.logits.data(), s.xn.data(), n, model.output ? *model.output : model.token_embd, threads);
    // Final soft-capping (Gemma 2, and Gemma 3 when set): ggml_scale by 1/c, ggml_tanh, ggml_scale by c.
    if (c.arch().final_softcap && c.final_softcap != 0.0f) {
        const float cap = c.final_softcap, inv = 1.0f / cap;
        for (std::size_t i = 0; i < n * std::size_t{c.vocab}; ++i) s.logits[i] = std::tanh(s.logits[i] * inv) * cap;
    }
}

// The frequency divisors RoPE reads (llama_model::get_rope_factors): rope_freqs when the model has it, else
// LongRoPE's long factors when llama.cpp's context exceeds the original one, else its short factors; none without.
const std::optional<TensorView>& rope_factors(const ModelViews& model, std::uint32_t n_ctx) {
    if (model.rope_freqs || !model.rope_long) return model.rope_freqs;
    return uses_long_rope_factors(model.config, n_ctx) ? model.rope_long : model.rope_short;
}

// The (cos, sin) tables of positions 0..n-1 into the first n rows of s.rope (and of s.rope_local: Gemma 3's local
// layers, rope.freq_base_swa, no scaling), for llama.cpp's context n_ctx (0: the model's original context).
void rope_tables(RunState& s, const ModelViews& model, std::size_t n, std::uint32_t n_ctx) {
    const Config& c = model.config;
    const RopeParams rope_p = rope_params(c);
    const std::optional<TensorView>& factors = rope_factors(model, n_ctx);
    const std::vector<float> freq_factors = factors ? load_norm(*factors) : std::vector<float>{};
    for (std::size_t t = 0; t < n; ++t)
        rope_angles(&s.rope[t * c.d_head], std::uint32_t(t), rope_p, factors ? freq_factors.data() : nullptr);
    if (!s.rope_local.empty()) {
        Config local = c;
        local.rope_theta = c.rope_theta_swa;
        local.rope_scaling = RopeScaling::None;
        local.rope_scaling_factor = 1.0f;
        const RopeParams local_p = rope_params(local);
        for (std::size_t t = 0; t < n; ++t)
            rope_angles(&s.rope_local[t * c.d_head], std::uint32_t(t), local_p, nullptr);
    }
}

// Checks the model and the tokens, and fills the run state's embeddings and RoPE angles.
RunState start(const ModelViews& model, std::span<const std::uint32_t> tokens, std::uint32_t n_ctx) {
    check_model(model);
    const Config& c = model.config;
    for (std::size_t t = 0; t < tokens.size(); ++t)
        if (tokens[t] >= c.vocab)
            fail(ErrorKind::InvalidArgument, source_of(model.token_embd) + "token " + std::to_string(tokens[t]) +
                                                 " at position " + std::to_string(t) +
                                                 " is out of the vocabulary (vocab " + std::to_string(c.vocab) +
                                                 ", ids 0 to " + std::to_string(c.vocab - 1) + ")");
    const std::size_t n = tokens.size();
    RunState s(c, n);
    embed(model, tokens, s.x.data());
    if (c.arch().embd_scale_sqrt_d_model) {  // Gemma: ggml_scale(inpL, sqrtf(n_embd))
        const float scale = std::sqrt(float(c.d_model));
        for (float& x : s.x) x *= scale;
    }
    rope_tables(s, model, n, n_ctx);
    return s;
}

// The query heads of `layer` among `ablated`, checked against the config.
std::vector<std::uint32_t> ablated_in(const Config& c, std::span<const HeadRef> ablated, std::uint32_t layer) {
    std::vector<std::uint32_t> out;
    for (const HeadRef& h : ablated) {
        if (h.layer >= c.n_layers)
            fail(ErrorKind::InvalidArgument, "forward: head " + std::to_string(h.layer) + ":" + std::to_string(h.head) +
                                                 " is out of range (" + std::to_string(c.n_layers) + " layers)");
        if (h.head >= c.n_heads_at(h.layer))
            fail(ErrorKind::InvalidArgument, "forward: head " + std::to_string(h.layer) + ":" + std::to_string(h.head) +
                                                 " is out of range (layer " + std::to_string(h.layer) + " has " +
                                                 std::to_string(c.n_heads_at(h.layer)) + " heads)");
        if (h.layer == layer) out.push_back(h.head);
    }
    return out;
}

// Mean of -log p(tokens[t+1]) over the positions that have a next token, in f64.
double mean_loss(std::span<const float> logits, std::span<const std::uint32_t> tokens, std::uint32_t vocab) {
    double sum = 0;
    for (std::size_t t = 0; t + 1 < tokens.size(); ++t) {
        const float* row = logits.data() + t * vocab;
        double mx = -INFINITY;
        for (std::uint32_t i = 0; i < vocab; ++i) mx = std::max(mx, double{row[i]});
        double z = 0;
        for (std::uint32_t i = 0; i < vocab; ++i) z += std::exp(double{row[i]} - mx);
        sum -= double{row[tokens[t + 1]]} - mx - std::log(z);
    }
    return sum / double(tokens.size() - 1);
}

}  // namespace

// ----------------------------------------------------------------------------------------------------------
// The forward pass.

std::uint64_t llama_context_size(const Config& c, std::uint32_t n_ctx) noexcept {
    // llama_context's cparams.n_ctx = GGML_PAD(n_ctx, 256), and n_ctx_seq the same for one sequence.
    const std::uint64_t ctx = n_ctx ? n_ctx : c.original_context();
    return (ctx + kContextPadding - 1) / kContextPadding * kContextPadding;
}

bool uses_long_rope_factors(const Config& c, std::uint32_t n_ctx) noexcept {
    return llama_context_size(c, n_ctx) > c.original_context();  // the loader's n_ctx_orig_yarn
}

std::vector<float> forward_logits(const ModelViews& model, std::span<const std::uint32_t> tokens, unsigned threads,
                                  std::span<const HeadRef> ablated, std::uint32_t n_ctx) {
    threads = resolve_threads(threads);
    if (tokens.empty()) {
        check_model(model);
        return {};
    }
    RunState s = start(model, tokens, n_ctx);
    for (std::uint32_t i = 0; i < model.layers.size(); ++i)
        layer_forward(s, model.config, model.layers[i], i, tokens.size(), threads,
                      ablated_in(model.config, ablated, i));
    logits_of(s, model, tokens.size(), threads);
    return std::move(s.logits);
}

// ----------------------------------------------------------------------------------------------------------
// The head scan's passes (compute/scan_pass.h).

namespace compute {

Recording record_forward(const ModelViews& model, std::span<const std::uint32_t> tokens, unsigned threads,
                         const std::function<void()>& layer_done, std::uint32_t n_ctx) {
    threads = resolve_threads(threads);
    const Config& c = model.config;
    Recording rec;
    rec.layers.resize(c.n_layers);
    RunState s = start(model, tokens, n_ctx);
    s.record = &rec;
    for (std::uint32_t i = 0; i < c.n_layers; ++i) {
        rec.layers[i].x = s.x;
        layer_forward(s, c, model.layers[i], i, tokens.size(), threads, {});
        if (layer_done) layer_done();
    }
    rec.x_final = s.x;
    logits_of(s, model, tokens.size(), threads);
    rec.loss = mean_loss(s.logits, tokens, c.vocab);
    rec.logits = std::move(s.logits);
    rec.rope = std::move(s.rope);
    rec.rope_local = std::move(s.rope_local);
    return rec;
}

std::vector<double> variant_losses(const ModelViews& model, std::span<const std::uint32_t> tokens,
                                   std::span<const std::uint32_t> starts, const Recording& rec,
                                   std::span<const HeadPatch> patches, unsigned threads,
                                   const std::function<void(std::size_t)>& layer_done) {
    threads = resolve_threads(threads);
    const Config& c = model.config;
    const std::size_t n = tokens.size(), variants = starts.size();
    if (!variants) return {};
    RunState s(c, n * variants);
    s.seq = n;
    s.patches = patches;
    std::copy(rec.rope.begin(), rec.rope.end(), s.rope.begin());  // the clean pass's angles, its context's factors
    std::copy(rec.rope_local.begin(), rec.rope_local.end(), s.rope_local.begin());
    for (std::size_t b = 1; b < variants; ++b) {
        std::copy(s.rope.begin(), s.rope.begin() + std::ptrdiff_t(n * c.d_head),
                  s.rope.begin() + std::ptrdiff_t(b * n * c.d_head));
        if (!s.rope_local.empty())
            std::copy(s.rope_local.begin(), s.rope_local.begin() + std::ptrdiff_t(n * c.d_head),
                      s.rope_local.begin() + std::ptrdiff_t(b * n * c.d_head));
    }
    // Variants [0, active) run layer i: each joins at its start layer, from the clean stream entering it.
    std::size_t active = 0;
    for (std::uint32_t i = starts[0]; i < c.n_layers; ++i) {
        for (; active < variants && starts[active] == i; ++active)
            std::copy(rec.layers[i].x.begin(), rec.layers[i].x.end(),
                      s.x.begin() + std::ptrdiff_t(active * n * c.d_model));
        layer_forward(s, c, model.layers[i], i, active * n, threads, {});
        if (layer_done) layer_done(active);
    }
    logits_of(s, model, n * variants, threads);
    std::vector<double> out(variants);
    parallel_for(variants, threads, [&](std::uint64_t b0, std::uint64_t b1) {
        for (std::uint64_t b = b0; b < b1; ++b)
            out[b] = mean_loss(std::span(s.logits).subspan(b * n * c.vocab, n * c.vocab), tokens, c.vocab);
    });
    return out;
}

double next_token_loss(std::span<const float> logits, std::span<const std::uint32_t> tokens, std::uint32_t vocab) {
    return mean_loss(logits, tokens, vocab);
}

float gelu_gate(float x) { return geglu(x, 1.0f, gelu_table()); }

std::vector<float> vector_weights(const TensorView& w) { return load_norm(w); }

void for_each_row(std::span<const TensorView> parts, std::uint64_t lo, std::uint64_t hi, std::uint64_t c0,
                  std::uint64_t c1, const std::function<void(std::uint64_t, const float*)>& f) {
    const std::uint64_t n_in = parts[0].ne()[0];
    std::vector<float> scratch(n_in);
    std::uint64_t base = 0;
    for (const TensorView& w : parts) {
        const std::uint64_t a = std::max(lo, base), b = std::min(hi, base + w.n_rows());
        const TypeTraits& tt = traits(w.type());
        // The whole blocks around the columns read, [b0, e1). The forward pass has checked every weight finite.
        const std::uint64_t b0 = c0 - c0 % tt.block_size, e1 = (c1 + tt.block_size - 1) / tt.block_size * tt.block_size;
        std::optional<ForeignRows> foreign;
        if (!w.plain() && a < b) foreign.emplace(w);
        for (std::uint64_t o = a; o < b; ++o) {
            const std::uint64_t r = o - base;
            if (foreign) {
                f(o, load_row(w, foreign->row(r, b - base), r, scratch.data()) + c0);
                continue;
            }
            const std::byte* p = w.row(r).data();
            if (w.type() == DType::F32 && reinterpret_cast<std::uintptr_t>(p) % alignof(float) == 0) {
                f(o, reinterpret_cast<const float*>(p) + c0);
                continue;
            }
            decode_row(w.type(), p + b0 / tt.block_size * tt.type_size, scratch.data(), e1 - b0);
            f(o, scratch.data() + (c0 - b0));
        }
        base += w.n_rows();
    }
}

}  // namespace compute

}  // namespace headfuse
