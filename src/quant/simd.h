// headfuse: the lane types every SIMD kernel is written over, in one place: float lanes for the codecs and the
// K-quant searches (quant/lanes.h) and 64-bit lanes for the reproducible generator (model/random_lanes.h). V8 (eight
// floats) and D4 (four 64-bit lanes) are AVX2's, V16 and D8 AVX-512's. Each is defined only in the translation unit
// that builds its target (HEADFUSE_LANES_AVX2 or HEADFUSE_LANES_AVX512: quant/kernels_avx2.cpp and
// quant/kernels_avx512.cpp, see quant/kernels.h), which includes this after switching the target on; everything
// here has internal linkage, so the builds cannot be mixed by the linker.
#pragma once

#include <cstddef>
#include <cstdint>
#if defined(HEADFUSE_LANES_AVX2) || defined(HEADFUSE_LANES_AVX512)
#include <immintrin.h>
#endif

namespace headfuse::simd {
namespace {

// ---- float lanes: V8 (AVX2), V16 (AVX-512) ----

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
    // For the 32-wide codecs, F16 and BF16.
    static F load(const float* p) { return _mm256_loadu_ps(p); }
    static I bits(const float* p) { return _mm256_loadu_si256(reinterpret_cast<const I*>(p)); }
    static F as_float(I v) { return _mm256_castsi256_ps(v); }
    // v unchanged, hidden from the optimizer: a product is rounded before it is added to anything.
    static F rounded(F v) {
        __asm__("" : "+x"(v));
        return v;
    }
    // The largest lane. max is exact, so the reduction order cannot change the result.
    static float reduce_max(F m) {
        m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
        m = _mm256_max_ps(m, _mm256_permute_ps(m, 0b01001110));
        return _mm256_cvtss_f32(_mm256_max_ps(m, _mm256_permute_ps(m, 0b10110001)));
    }
    // roundf: to nearest, ties away from zero. v - trunc(v) is exact, so comparing it with 0.5 finds ties
    // exactly; NaN and infinities pass through as trunc(v).
    static F round_half_away(F v) {
        const F t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const F frac = abs(_mm256_sub_ps(v, t));
        const F away = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
        return _mm256_add_ps(t, _mm256_and_ps(away, _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ)));
    }
    static I trunc(F v) { return _mm256_cvttps_epi32(v); }  // INT32_MIN when NaN or out of range
    static I seti(int v) { return _mm256_set1_epi32(v); }
    static I addi(I a, I b) { return _mm256_add_epi32(a, b); }
    static I subi(I a, I b) { return _mm256_sub_epi32(a, b); }
    static I andi(I a, I b) { return _mm256_and_si256(a, b); }
    static I ori(I a, I b) { return _mm256_or_si256(a, b); }
    static I mini(I a, I b) { return _mm256_min_epi32(a, b); }
    static I shl(I a, int k) { return _mm256_slli_epi32(a, k); }
    static I shr(I a, int k) { return _mm256_srli_epi32(a, k); }                      // logical
    static I sar(I a, int k) { return _mm256_srai_epi32(a, k); }                      // arithmetic
    static M gti(I a, I b) { return _mm256_castsi256_ps(_mm256_cmpgt_epi32(a, b)); }  // signed
    static M none() { return _mm256_setzero_ps(); }
    static M either(M a, M b) { return _mm256_or_ps(a, b); }
    static std::uint32_t bitmask(M m) { return static_cast<std::uint32_t>(_mm256_movemask_ps(m)); }
    // The low byte of each lane of v[0..4) (32 bytes) or of v[0..2) (16 bytes), in order. The packs saturate, so
    // mask first to make them plain narrowing; they also work per 128-bit lane, which the permutation undoes.
    static __m256i low_bytes(I a, I b, I c, I d) {
        const I byte = _mm256_set1_epi32(0xFF);
        const I ab = _mm256_packus_epi32(_mm256_and_si256(a, byte), _mm256_and_si256(b, byte));
        const I cd = _mm256_packus_epi32(_mm256_and_si256(c, byte), _mm256_and_si256(d, byte));
        return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    }
    static void store_bytes32(std::byte* p, const I* v) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), low_bytes(v[0], v[1], v[2], v[3]));
    }
    static void store_bytes16(std::byte* p, const I* v) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(low_bytes(v[0], v[1], v[0], v[1])));
    }
    // 2W 16-bit values from a then b, each lane in [0, 65535]: the saturating pack narrows exactly; it
    // interleaves 64-bit quarters, which the permutation undoes.
    static void store_u16s(std::byte* p, I a, I b) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                            _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0b11011000));
    }
    static I load_u16s(const std::byte* p) {
        return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static I load_i8s(const std::byte* p) {
        return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    }
    static I load_u8s(const std::byte* p) {
        return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    }
    // F16C: round to nearest even, as ggml's fp32_to_fp16 for every finite input and infinity.
    static void store_f16(std::byte* p, F v) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                         _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    static F load_f16(const std::byte* p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
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
    static F load(const float* p) { return _mm512_loadu_ps(p); }
    static I bits(const float* p) { return _mm512_loadu_si512(p); }
    static F as_float(I v) { return _mm512_castsi512_ps(v); }
    static F rounded(F v) {
        __asm__("" : "+v"(v));
        return v;
    }
    static float reduce_max(F m) { return _mm512_reduce_max_ps(m); }
    static F round_half_away(F v) {
        const F t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const M tie_or_above = _mm512_cmp_ps_mask(abs(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
        const I sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN));
        const F away = _mm512_castsi512_ps(_mm512_or_si512(sign, _mm512_castps_si512(_mm512_set1_ps(1.0f))));
        return _mm512_mask_add_ps(t, tie_or_above, t, away);
    }
    static I trunc(F v) { return _mm512_cvttps_epi32(v); }
    static I seti(int v) { return _mm512_set1_epi32(v); }
    static I addi(I a, I b) { return _mm512_add_epi32(a, b); }
    static I subi(I a, I b) { return _mm512_sub_epi32(a, b); }
    static I andi(I a, I b) { return _mm512_and_si512(a, b); }
    static I ori(I a, I b) { return _mm512_or_si512(a, b); }
    static I mini(I a, I b) { return _mm512_min_epi32(a, b); }
    static I shl(I a, int k) { return _mm512_slli_epi32(a, static_cast<unsigned>(k)); }
    static I shr(I a, int k) { return _mm512_srli_epi32(a, static_cast<unsigned>(k)); }
    static I sar(I a, int k) { return _mm512_srai_epi32(a, static_cast<unsigned>(k)); }
    static M gti(I a, I b) { return _mm512_cmpgt_epi32_mask(a, b); }
    static M none() { return 0; }
    static M either(M a, M b) { return static_cast<M>(a | b); }
    static std::uint32_t bitmask(M m) { return m; }
    static void store_bytes32(std::byte* p, const I* v) {  // vpmovdb: the low bytes
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v[0]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 16), _mm512_cvtepi32_epi8(v[1]));
    }
    static void store_bytes16(std::byte* p, const I* v) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v[0]));
    }
    static void store_u16s(std::byte* p, I a, I b) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(a));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 32), _mm512_cvtepi32_epi16(b));
    }
    static I load_u16s(const std::byte* p) {
        return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static I load_i8s(const std::byte* p) {
        return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static I load_u8s(const std::byte* p) {
        return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static void store_f16(std::byte* p, F v) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                            _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    static F load_f16(const std::byte* p) {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
};
#endif

// ---- 64-bit lanes: D4 (AVX2), D8 (AVX-512) ----

#if defined(HEADFUSE_LANES_AVX2)
// The permutation that packs the pairs (u0 v0 u1 v1 u2 v2 u3 v3) of the accepted lanes of a 4-lane mask to the
// front.
struct Pack4 {
    std::int32_t idx[16][8];
    constexpr Pack4() : idx{} {
        for (unsigned a = 0; a < 16; ++a) {
            unsigned k = 0;
            for (unsigned l = 0; l < 4; ++l)
                if (a >> l & 1) {
                    idx[a][k++] = static_cast<std::int32_t>(2 * l);
                    idx[a][k++] = static_cast<std::int32_t>(2 * l + 1);
                }
            while (k < 8) idx[a][k++] = 0;
        }
    }
};
alignas(32) constexpr Pack4 kPack4;

// Four 64-bit lanes.
struct D4 {
    static constexpr int W = 4;
    using U = __m256i;
    using D = __m256d;
    using P = __m256;  // the 2W floats of a round's pairs
    using M = unsigned;
    static U load(const std::uint64_t* p) { return _mm256_load_si256(reinterpret_cast<const U*>(p)); }
    static U setu(std::uint64_t v) { return _mm256_set1_epi64x(static_cast<long long>(v)); }
    static U addu(U a, U b) { return _mm256_add_epi64(a, b); }
    static U subu(U a, U b) { return _mm256_sub_epi64(a, b); }
    static U xoru(U a, U b) { return _mm256_xor_si256(a, b); }
    static U andu(U a, U b) { return _mm256_and_si256(a, b); }
    static U oru(U a, U b) { return _mm256_or_si256(a, b); }
    static U shl(U a, int k) { return _mm256_slli_epi64(a, k); }
    static U shr(U a, int k) { return _mm256_srli_epi64(a, k); }
    static U rotl(U x, int k) { return _mm256_or_si256(_mm256_slli_epi64(x, k), _mm256_srli_epi64(x, 64 - k)); }
    static D asd(U v) { return _mm256_castsi256_pd(v); }
    static U asu(D v) { return _mm256_castpd_si256(v); }
    static D set(double v) { return _mm256_set1_pd(v); }
    static D add(D a, D b) { return _mm256_add_pd(a, b); }
    static D sub(D a, D b) { return _mm256_sub_pd(a, b); }
    static D mul(D a, D b) { return _mm256_mul_pd(a, b); }
    static D div(D a, D b) { return _mm256_div_pd(a, b); }
    static D sqrt(D a) { return _mm256_sqrt_pd(a); }
    static D abs(D a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
    // Lanes with 0 < s < 1, one bit each.
    static M inside_unit(D s) {
        const D ok = _mm256_and_pd(_mm256_cmp_pd(s, _mm256_set1_pd(1.0), _CMP_LT_OQ),
                                   _mm256_cmp_pd(s, _mm256_setzero_pd(), _CMP_GT_OQ));
        return static_cast<unsigned>(_mm256_movemask_pd(ok));
    }
    // (float)x and (float)y of the lanes in `ok`, interleaved x0 y0 x1 y1 ..., packed to the front.
    static P pack_pairs(D x, D y, M ok) {
        const __m128 fx = _mm256_cvtpd_ps(x), fy = _mm256_cvtpd_ps(y);
        const __m256 pairs = _mm256_set_m128(_mm_unpackhi_ps(fx, fy), _mm_unpacklo_ps(fx, fy));
        return _mm256_permutevar8x32_ps(pairs, _mm256_load_si256(reinterpret_cast<const __m256i*>(kPack4.idx[ok])));
    }
    static void store(float* p, P v) { _mm256_storeu_ps(p, v); }
};
#endif

#if defined(HEADFUSE_LANES_AVX512)
// The pair bits of an 8-lane mask (each lane bit doubled).
struct PairMasks {
    std::uint16_t m[256];
    constexpr PairMasks() : m{} {
        for (unsigned a = 0; a < 256; ++a)
            for (unsigned l = 0; l < 8; ++l)
                if (a >> l & 1) m[a] |= static_cast<std::uint16_t>(3u << (2 * l));
    }
};
constexpr PairMasks kPairMasks;

// Eight 64-bit lanes.
struct D8 {
    static constexpr int W = 8;
    using U = __m512i;
    using D = __m512d;
    using P = __m512;
    using M = __mmask8;
    static U load(const std::uint64_t* p) { return _mm512_load_si512(p); }
    static U setu(std::uint64_t v) { return _mm512_set1_epi64(static_cast<long long>(v)); }
    static U addu(U a, U b) { return _mm512_add_epi64(a, b); }
    static U subu(U a, U b) { return _mm512_sub_epi64(a, b); }
    static U xoru(U a, U b) { return _mm512_xor_si512(a, b); }
    static U andu(U a, U b) { return _mm512_and_si512(a, b); }
    static U oru(U a, U b) { return _mm512_or_si512(a, b); }
    static U shl(U a, int k) { return _mm512_slli_epi64(a, static_cast<unsigned>(k)); }
    static U shr(U a, int k) { return _mm512_srli_epi64(a, static_cast<unsigned>(k)); }
    static U rotl(U x, int k) {
        return _mm512_or_si512(_mm512_slli_epi64(x, static_cast<unsigned>(k)),
                               _mm512_srli_epi64(x, static_cast<unsigned>(64 - k)));
    }
    static D asd(U v) { return _mm512_castsi512_pd(v); }
    static U asu(D v) { return _mm512_castpd_si512(v); }
    static D set(double v) { return _mm512_set1_pd(v); }
    static D add(D a, D b) { return _mm512_add_pd(a, b); }
    static D sub(D a, D b) { return _mm512_sub_pd(a, b); }
    static D mul(D a, D b) { return _mm512_mul_pd(a, b); }
    static D div(D a, D b) { return _mm512_div_pd(a, b); }
    static D sqrt(D a) { return _mm512_sqrt_pd(a); }
    static D abs(D a) { return _mm512_abs_pd(a); }
    static M inside_unit(D s) {
        return _mm512_mask_cmp_pd_mask(_mm512_cmp_pd_mask(s, _mm512_set1_pd(1.0), _CMP_LT_OQ), s, _mm512_setzero_pd(),
                                       _CMP_GT_OQ);
    }
    static P pack_pairs(D x, D y, M ok) {
        const __m512i interleave = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        const __m512 pairs = _mm512_permutex2var_ps(_mm512_castps256_ps512(_mm512_cvtpd_ps(x)), interleave,
                                                    _mm512_castps256_ps512(_mm512_cvtpd_ps(y)));
        return _mm512_maskz_compress_ps(kPairMasks.m[ok], pairs);
    }
    static void store(float* p, P v) { _mm512_storeu_ps(p, v); }
};
#endif

}  // namespace
}  // namespace headfuse::simd
