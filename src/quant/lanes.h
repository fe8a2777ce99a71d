// headfuse: the K-quant scale searches with one sub-block per SIMD lane, written once over a lane type V and
// compiled once per instruction set: src/quant_lanes_avx2.cpp (V8, eight lanes) and src/quant_lanes_avx512.cpp
// (V16, sixteen lanes), each translation unit built for its target. Include nothing else from headfuse here:
// every function below has internal linkage, so the two builds cannot be mixed by the linker. The including file
// defines HEADFUSE_LANES_AVX2 or HEADFUSE_LANES_AVX512 for the lane type it builds.
//
// Lane k performs exactly the scalar reference's operations (src/quant_kquants.cpp, ggml's make_qkx2_quants
// and make_qx_quants with rmse_type 1) on sub-block k, in the same order: no reassociation, no fused
// multiply-add (the library is built with -ffp-contract=off), comparisons, nearest_int and every choice made
// per lane. So the bytes are the scalar code's whatever the lane count.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace headfuse::blocks {
namespace {

inline constexpr float kLanesGroupMaxEps = 1e-15f;  // ggml-quants.c: GROUP_MAX_EPS

#if defined(HEADFUSE_LANES_AVX2)
struct V8 {
    static constexpr int W = 8;
    using F = __m256;
    using I = __m256i;
    using M = __m256;  // all-ones lanes
    static F set(float v) { return _mm256_set1_ps(v); }
    static F zero() { return _mm256_setzero_ps(); }
    static F add(F a, F b) { return _mm256_add_ps(a, b); }
    static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
    static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
    static F div(F a, F b) { return _mm256_div_ps(a, b); }
    static F sqrt(F a) { return _mm256_sqrt_ps(a); }
    static F abs(F a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
    static F neg(F a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
    static F min(F a, F b) { return _mm256_min_ps(a, b); }  // a < b ? a : b
    static F max(F a, F b) { return _mm256_max_ps(a, b); }  // a > b ? a : b
    static M gt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
    static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
    static M eq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
    static M ne(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_NEQ_UQ); }
    static M both(M a, M b) { return _mm256_and_ps(a, b); }
    static bool any(M m) { return _mm256_movemask_ps(m) != 0; }
    static F pick(F a, F b, M take_b) { return _mm256_blendv_ps(a, b, take_b); }
    static I picki(I a, I b, M take_b) { return _mm256_blendv_epi8(a, b, _mm256_castps_si256(take_b)); }
    static I zero_where(I a, M m) { return _mm256_andnot_si256(_mm256_castps_si256(m), a); }
    static I addi(I a, int b) { return _mm256_add_epi32(a, _mm256_set1_epi32(b)); }
    static I nearest(F f) {  // ggml's nearest_int
        const I i = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.0f)));
        return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x00400000));
    }
    static I clamp(I v, int lo, int hi) {
        return _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi));
    }
    static F tof(I v) { return _mm256_cvtepi32_ps(v); }
    // Lane k: p[k * stride].
    static F strided(const float* p, int stride) {
        return _mm256_i32gather_ps(
            p, _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride)), 4);
    }
    static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
    static void storei(std::int32_t* p, I v) { _mm256_storeu_si256(reinterpret_cast<I*>(p), v); }
};
#endif

#if defined(HEADFUSE_LANES_AVX512)
struct V16 {
    static constexpr int W = 16;
    using F = __m512;
    using I = __m512i;
    using M = __mmask16;
    static F set(float v) { return _mm512_set1_ps(v); }
    static F zero() { return _mm512_setzero_ps(); }
    static F add(F a, F b) { return _mm512_add_ps(a, b); }
    static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
    static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
    static F div(F a, F b) { return _mm512_div_ps(a, b); }
    static F sqrt(F a) { return _mm512_sqrt_ps(a); }
    static F abs(F a) {
        return _mm512_castsi512_ps(_mm512_and_epi32(_mm512_castps_si512(a), _mm512_set1_epi32(0x7FFFFFFF)));
    }
    static F neg(F a) {
        return _mm512_castsi512_ps(
            _mm512_xor_epi32(_mm512_castps_si512(a), _mm512_set1_epi32(static_cast<int>(0x80000000u))));
    }
    static F min(F a, F b) { return _mm512_min_ps(a, b); }  // a < b ? a : b
    static F max(F a, F b) { return _mm512_max_ps(a, b); }  // a > b ? a : b
    static M gt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
    static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
    static M eq(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
    static M ne(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ); }
    static M both(M a, M b) { return static_cast<M>(a & b); }
    static bool any(M m) { return m != 0; }
    static F pick(F a, F b, M take_b) { return _mm512_mask_blend_ps(take_b, a, b); }
    static I picki(I a, I b, M take_b) { return _mm512_mask_blend_epi32(take_b, a, b); }
    static I zero_where(I a, M m) { return _mm512_maskz_mov_epi32(static_cast<M>(~m), a); }
    static I addi(I a, int b) { return _mm512_add_epi32(a, _mm512_set1_epi32(b)); }
    static I nearest(F f) {
        const I i = _mm512_castps_si512(_mm512_add_ps(f, _mm512_set1_ps(12582912.0f)));
        return _mm512_sub_epi32(_mm512_and_epi32(i, _mm512_set1_epi32(0x007FFFFF)), _mm512_set1_epi32(0x00400000));
    }
    static I clamp(I v, int lo, int hi) {
        return _mm512_min_epi32(_mm512_max_epi32(v, _mm512_set1_epi32(lo)), _mm512_set1_epi32(hi));
    }
    static F tof(I v) { return _mm512_cvtepi32_ps(v); }
    static F strided(const float* p, int stride) {
        return _mm512_i32gather_ps(
            _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                               _mm512_set1_epi32(stride)),
            p, 4);
    }
    static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
    static void storei(std::int32_t* p, I v) { _mm512_storeu_si512(p, v); }
};
#endif

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

}  // namespace
}  // namespace headfuse::blocks
