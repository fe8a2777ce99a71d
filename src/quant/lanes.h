// headfuse: the encoders' SIMD kernels, written once over a lane type V (quant/simd.h) and compiled once per
// instruction set by quant/kernels_avx2.cpp (V8, eight float lanes) and quant/kernels_avx512.cpp (V16, sixteen), each
// translation unit built whole for its target (quant/kernels.h). The including file defines HEADFUSE_LANES_AVX2 or
// HEADFUSE_LANES_AVX512 for the lane type it builds, and includes this file's dependencies before it switches
// the target on; everything below has internal linkage, so the builds cannot be mixed by the linker.
//
// The K-quant scale searches: lane k performs exactly the scalar reference's operations (quant/kquants.cpp,
// ggml's make_qkx2_quants and make_qx_quants with rmse_type 1) on sub-block k, in the same order: no
// reassociation, no fused multiply-add (the library is built with -ffp-contract=off), comparisons, nearest_int
// and every choice made per lane. So the bytes are the scalar code's whatever the lane count. The 32-wide
// codecs and F16/BF16 at the end: element i in lane i mod W, with the scalar reference's operations.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "headfuse/quantize.h"
#include "quant/blocks.h"
#include "quant/simd.h"

namespace headfuse::blocks {
namespace {

inline constexpr float kLanesGroupMaxEps = 1e-15f;  // ggml-quants.c: GROUP_MAX_EPS

// make_qkx2_quants (use_mad false) on V::W sub-blocks of 32: x[i], w[i] hold element i of each lane's
// sub-block; L[i] gets the codes. Returns the scales in `scale_out` and minus the mins in `the_min`.
template <class V>
void qkx2_quants_lanes(int nmax, const typename V::F* x, const typename V::F* w, typename V::I* L,
                       typename V::F& scale_out, typename V::F& the_min, float rmin, float rdelta, int nstep) {
    using F = typename V::F;
    using I = typename V::I;
    constexpr int n = 32;
    const F zero = V::zero();
    const F fnmax = V::set(static_cast<float>(nmax));
    F min = x[0], max = x[0];
    F sum_w = w[0];
    F sum_x = V::mul(sum_w, x[0]);
    for (int i = 1; i < n; ++i) {
        min = V::min(x[i], min);
        max = V::max(x[i], max);
        sum_w = V::add(sum_w, w[i]);
        sum_x = V::add(sum_x, V::mul(w[i], x[i]));
    }
    min = V::pick(min, zero, V::gt(min, zero));  // if (min > 0) min = 0 (a -0 stays)
    const auto flat = V::eq(max, min);
    const F min0 = min;
    F iscale = V::div(fnmax, V::sub(max, min));
    F scale = V::div(V::set(1.0f), iscale);
    F best_error = zero;
    for (int i = 0; i < n; ++i) {
        L[i] = V::clamp(V::nearest(V::mul(iscale, V::sub(x[i], min))), 0, nmax);
        F diff = V::sub(V::add(V::mul(scale, V::tof(L[i])), min), x[i]);
        diff = V::mul(diff, diff);
        best_error = V::add(best_error, V::mul(w[i], diff));
    }
    I Laux[n];
    for (int is = 0; is <= nstep; ++is) {
        // (rmin + rdelta * is) + nmax, over max - min with this lane's current min
        iscale = V::div(V::add(V::set(rmin + rdelta * static_cast<float>(is)), fnmax), V::sub(max, min));
        F sum_l = zero, sum_l2 = zero, sum_xl = zero;
        for (int i = 0; i < n; ++i) {
            Laux[i] = V::clamp(V::nearest(V::mul(iscale, V::sub(x[i], min))), 0, nmax);
            const F fl = V::tof(Laux[i]);
            const F wfl = V::mul(w[i], fl);
            sum_l = V::add(sum_l, wfl);
            sum_l2 = V::add(sum_l2, V::mul(wfl, fl));
            sum_xl = V::add(sum_xl, V::mul(wfl, x[i]));
        }
        const F D = V::sub(V::mul(sum_w, sum_l2), V::mul(sum_l, sum_l));
        const auto d_pos = V::gt(D, zero);
        if (!V::any(d_pos)) continue;
        F this_scale = V::div(V::sub(V::mul(sum_w, sum_xl), V::mul(sum_x, sum_l)), D);
        F this_min = V::div(V::sub(V::mul(sum_l2, sum_x), V::mul(sum_l, sum_xl)), D);
        const auto min_pos = V::gt(this_min, zero);
        this_min = V::pick(this_min, zero, min_pos);
        this_scale = V::pick(this_scale, V::div(sum_xl, sum_l2), min_pos);
        F cur_error = zero;
        for (int i = 0; i < n; ++i) {
            F diff = V::sub(V::add(V::mul(this_scale, V::tof(Laux[i])), this_min), x[i]);
            diff = V::mul(diff, diff);
            cur_error = V::add(cur_error, V::mul(w[i], diff));
        }
        const auto better = V::both(d_pos, V::lt(cur_error, best_error));
        if (!V::any(better)) continue;
        for (int i = 0; i < n; ++i) L[i] = V::picki(L[i], Laux[i], better);
        best_error = V::pick(best_error, cur_error, better);
        scale = V::pick(scale, this_scale, better);
        min = V::pick(min, this_min, better);
    }
    // Flat sub-blocks (max == min): codes 0, scale 0, the min as it was.
    for (int i = 0; i < n; ++i) L[i] = V::zero_where(L[i], flat);
    scale_out = V::pick(scale, zero, flat);
    the_min = V::neg(V::pick(min, min0, flat));
}

// The make_qkx2_quants searches of V::W consecutive 32-element sub-blocks of Q4_K/Q5_K super-blocks (weights
// sqrt(mean x²) + |x|): scales[k], mins[k] and codes L[32k..32k+31] of sub-block k.
template <class V>
void k4_search_lanes(const float* x, int nmax, float rmin, int nstep, float* scales, float* mins, std::uint8_t* L) {
    using F = typename V::F;
    using I = typename V::I;
    F xt[32], wt[32];
    I Lt[32];
    F sum_x2 = V::zero();
    for (int l = 0; l < 32; ++l) {
        xt[l] = V::strided(x + l, 32);
        sum_x2 = V::add(sum_x2, V::mul(xt[l], xt[l]));
    }
    const F av_x = V::sqrt(V::div(sum_x2, V::set(32.0f)));
    for (int l = 0; l < 32; ++l) wt[l] = V::add(av_x, V::abs(xt[l]));
    F sc, mn;
    qkx2_quants_lanes<V>(nmax, xt, wt, Lt, sc, mn, rmin, 0.1f, nstep);
    V::store(scales, sc);
    V::store(mins, mn);
    std::int32_t li[V::W];
    for (int l = 0; l < 32; ++l) {
        V::storei(li, Lt[l]);
        for (int k = 0; k < V::W; ++k) L[32 * k + l] = static_cast<std::uint8_t>(li[k]);
    }
}

// make_qx_quants with rmse_type 1 (weights x²) on V::W consecutive sub-blocks of 16 (Q6_K, nmax 32): the
// scales, and the codes stored plus nmax (0 for an all-but-zero sub-block).
template <class V>
void q6_search_lanes(const float* x, float* scales, std::int8_t* L) {
    using F = typename V::F;
    using I = typename V::I;
    constexpr int n = 16;
    constexpr int nmax = 32;
    const F zero = V::zero();
    F xt[n], wx[n], w[n];
    for (int l = 0; l < n; ++l) {
        xt[l] = V::strided(x + l, n);
        w[l] = V::mul(xt[l], xt[l]);
        wx[l] = V::mul(w[l], xt[l]);
    }
    F max = zero, amax = zero;  // the element of largest magnitude, the first of equals
    for (int i = 0; i < n; ++i) {
        const F ax = V::abs(xt[i]);
        const auto gt = V::gt(ax, amax);
        amax = V::pick(amax, ax, gt);
        max = V::pick(max, xt[i], gt);
    }
    const auto tiny = V::lt(V::abs(max), V::set(kLanesGroupMaxEps));
    const float fnmax = static_cast<float>(nmax);
    F iscale = V::div(V::set(static_cast<float>(-nmax)), max);
    I Lt[n];
    F sumlx = zero, suml2 = zero;
    for (int i = 0; i < n; ++i) {
        Lt[i] = V::clamp(V::nearest(V::mul(iscale, xt[i])), -nmax, nmax - 1);
        const F fl = V::tof(Lt[i]);
        sumlx = V::add(sumlx, V::mul(wx[i], fl));
        suml2 = V::add(suml2, V::mul(V::mul(w[i], fl), fl));
    }
    F scale = V::pick(zero, V::div(sumlx, suml2), V::ne(suml2, zero));
    F best = V::mul(scale, sumlx);
    I Laux[n];
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = V::div(V::set(-(fnmax + 0.1f * static_cast<float>(is))), max);
        sumlx = suml2 = zero;
        for (int i = 0; i < n; ++i) {
            Laux[i] = V::clamp(V::nearest(V::mul(iscale, xt[i])), -nmax, nmax - 1);
            const F fl = V::tof(Laux[i]);
            sumlx = V::add(sumlx, V::mul(wx[i], fl));
            suml2 = V::add(suml2, V::mul(V::mul(w[i], fl), fl));
        }
        const auto better = V::both(V::gt(suml2, zero), V::gt(V::mul(sumlx, sumlx), V::mul(best, suml2)));
        if (!V::any(better)) continue;
        for (int i = 0; i < n; ++i) Lt[i] = V::picki(Lt[i], Laux[i], better);
        scale = V::pick(scale, V::div(sumlx, suml2), better);
        best = V::pick(best, V::mul(scale, sumlx), better);
    }
    V::store(scales, V::pick(scale, zero, tiny));
    std::int32_t li[V::W];
    for (int l = 0; l < n; ++l) {
        V::storei(li, V::zero_where(V::addi(Lt[l], nmax), tiny));
        for (int k = 0; k < V::W; ++k) L[n * k + l] = static_cast<std::int8_t>(li[k]);
    }
}

// ---- F16, BF16, Q8_0 and Q4_0 (ggml-quants.c: quantize_row_q8_0_ref, quantize_row_q4_0_ref, the dequantizers;
// ggml_fp32_to_fp16_row, ggml_fp32_to_bf16_row). Bit for bit as the scalar reference in quantize.cpp, which
// fixes how they round: roundf is half away from zero (not the vector unit's nearest even), a float-to-int8
// cast truncates, and every product is rounded before it is added to anything (V::rounded). ----

inline constexpr std::size_t kLanesBlock = 32;  // elements per Q8_0 and Q4_0 block
inline constexpr std::size_t kLanesQ8Bytes = 34;
inline constexpr std::size_t kLanesQ4Bytes = 18;

// fp32_to_fp16 in one F16C instruction: for finite input its round-to-nearest-even conversion gives the same bits
// as ggml's arithmetic (including overflow to infinity and fp16 subnormals).
inline std::uint16_t fp16_of_finite(float f) {
    return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

template <class V>
void encode_f16_lanes(const float* src, std::byte* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store_f16(dst + 2 * i, V::load(src + i));
    for (; i < n; ++i) store_u16(dst + 2 * i, fp32_to_fp16(src[i]));
}

// ggml_compute_fp32_to_bf16: round to nearest even on the top 16 bits; a NaN kept and made quiet.
template <class V>
typename V::I bf16_lanes(const float* src) {
    const typename V::I u = V::bits(src);
    const typename V::I high = V::shr(u, 16);
    const typename V::I bias = V::addi(V::seti(0x7FFF), V::andi(high, V::seti(1)));
    const typename V::I nearest_even = V::shr(V::addi(u, bias), 16);
    const typename V::I quiet_nan = V::ori(high, V::seti(64));
    return V::picki(nearest_even, quiet_nan, V::gti(V::andi(u, V::seti(0x7FFFFFFF)), V::seti(0x7F800000)));
}

// ggml_compute_fp32_to_bf16: round to nearest even on the top 16 bits; a NaN kept and made quiet.
template <class V>
void encode_bf16_lanes(const float* src, std::byte* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 2 * V::W <= n; i += 2 * V::W)
        V::store_u16s(dst + 2 * i, bf16_lanes<V>(src + i), bf16_lanes<V>(src + i + V::W));
    for (; i < n; ++i) store_u16(dst + 2 * i, fp32_to_bf16(src[i]));
}

template <class V>
void encode_q8_0_lanes(const float* src, std::byte* dst, std::size_t n) {
    constexpr int K = static_cast<int>(kLanesBlock) / V::W;  // vectors per block
    for (std::size_t b = 0; b < n / kLanesBlock; ++b) {
        const float* x = src + b * kLanesBlock;
        std::byte* out = dst + b * kLanesQ8Bytes;
        typename V::F v[K];
        typename V::F m = V::zero();
        for (int k = 0; k < K; ++k) {
            v[k] = V::load(x + k * V::W);
            m = V::max(m, V::abs(v[k]));
        }
        const float amax = V::reduce_max(m);
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(out, fp16_of_finite(d));
        const typename V::F idv = V::set(id);
        // roundf(x*id) truncated to int32, its low byte stored as the x86 cast does.
        typename V::I q[K];
        for (int k = 0; k < K; ++k) q[k] = V::trunc(V::round_half_away(V::rounded(V::mul(v[k], idv))));
        V::store_bytes32(out + 2, q);
    }
}

// MIN(15, (int8_t)(x*id + 8.5f)) in int32 lanes: truncate, keep the signed low byte, clamp above.
template <class V>
typename V::I q4_0_codes_lanes(typename V::F x, typename V::F id) {
    const typename V::I t = V::trunc(V::add(V::rounded(V::mul(x, id)), V::set(8.5f)));
    return V::mini(V::sar(V::shl(t, 24), 24), V::seti(15));
}

template <class V>
void encode_q4_0_lanes(const float* src, std::byte* dst, std::size_t n) {
    constexpr int K = static_cast<int>(kLanesBlock) / V::W;
    for (std::size_t b = 0; b < n / kLanesBlock; ++b) {
        const float* x = src + b * kLanesBlock;
        std::byte* out = dst + b * kLanesQ4Bytes;
        typename V::F v[K], a[K];
        typename V::F m = V::zero();
        for (int k = 0; k < K; ++k) {
            v[k] = V::load(x + k * V::W);
            a[k] = V::abs(v[k]);
            m = V::max(m, a[k]);
        }
        const float amax = V::reduce_max(m);
        // The first element of largest magnitude, with its sign; an all-zero block keeps +0. (No lane matches
        // only with NaN input, whose result is unspecified but must not be read from outside the block.)
        float max = 0.0f;
        if (amax != 0.0f) {
            std::uint32_t hits = 0;
            for (int k = 0; k < K; ++k) hits |= V::bitmask(V::eq(a[k], V::set(amax))) << (k * V::W);
            if (hits != 0) max = x[__builtin_ctz(hits)];
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(out, fp16_of_finite(d));
        const typename V::F idv = V::set(id);
        // Byte j holds element j in its low nibble and element j+16 in its high nibble.
        typename V::I pairs[K / 2];
        for (int k = 0; k < K / 2; ++k)
            pairs[k] = V::ori(q4_0_codes_lanes<V>(v[k], idv), V::shl(q4_0_codes_lanes<V>(v[k + K / 2], idv), 4));
        V::store_bytes16(out + 2, pairs);
    }
}

template <class V>
void decode_f16_lanes(const std::byte* src, float* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(dst + i, V::load_f16(src + 2 * i));
    for (; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(src + 2 * i));
}

template <class V>
void decode_bf16_lanes(const std::byte* src, float* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(dst + i, V::as_float(V::shl(V::load_u16s(src + 2 * i), 16)));
    for (; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
}

template <class V>
void decode_q8_0_lanes(const std::byte* src, float* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kLanesBlock; ++b) {
        const std::byte* block = src + b * kLanesQ8Bytes;
        const typename V::F d = V::set(fp16_to_fp32(load_u16(block)));
        for (std::size_t k = 0; k < kLanesBlock; k += V::W)
            V::store(dst + b * kLanesBlock + k, V::mul(V::tof(V::load_i8s(block + 2 + k)), d));
    }
}

template <class V>
void decode_q4_0_lanes(const std::byte* src, float* dst, std::size_t n) {
    const typename V::I nibble = V::seti(0x0F), eight = V::seti(8);
    for (std::size_t b = 0; b < n / kLanesBlock; ++b) {
        const std::byte* block = src + b * kLanesQ4Bytes;
        float* y = dst + b * kLanesBlock;
        const typename V::F d = V::set(fp16_to_fp32(load_u16(block)));
        for (std::size_t k = 0; k < kLanesBlock / 2; k += V::W) {
            const typename V::I pairs = V::load_u8s(block + 2 + k);
            V::store(y + k, V::mul(V::tof(V::subi(V::andi(pairs, nibble), eight)), d));              // elements 0..15
            V::store(y + k + kLanesBlock / 2, V::mul(V::tof(V::subi(V::shr(pairs, 4), eight)), d));  // 16..31
        }
    }
}

// Finite means the magnitude bits are below the infinity pattern; 32 floats per branch.
template <class V>
bool all_finite_lanes(const float* x, std::size_t n) {
    const typename V::I abs_mask = V::seti(0x7FFFFFFF), largest = V::seti(0x7F7FFFFF);
    std::size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        auto bad = V::none();
        for (std::size_t k = 0; k < 32; k += V::W)
            bad = V::either(bad, V::gti(V::andi(V::bits(x + i + k), abs_mask), largest));
        if (V::any(bad)) return false;
    }
    for (; i < n; ++i)
        if (!__builtin_isfinite(x[i])) return false;
    return true;
}

}  // namespace
}  // namespace headfuse::blocks
