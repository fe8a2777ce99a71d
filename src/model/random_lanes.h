// headfuse: the reproducible generator of random.h, the parts its scalar and SIMD implementations share (the
// constants, the seeding) and the SIMD chunk, random_chunk_lanes, for the target the including file builds:
// quant/kernels_avx2.cpp (HEADFUSE_LANES_AVX2: two groups of four 64-bit lanes) and quant/kernels_avx512.cpp
// (HEADFUSE_LANES_AVX512: one group of eight), each compiled whole for its target (quant/kernels.h). Every
// implementation performs the same IEEE operations in the same order on every value, and so gives the same
// bytes. Everything below has internal linkage; the including file includes its dependencies before it switches
// the target on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "model/random.h"
#if defined(HEADFUSE_LANES_AVX2) || defined(HEADFUSE_LANES_AVX512)
#include <immintrin.h>
#endif

namespace headfuse::random_lanes {
namespace {

inline constexpr std::size_t kLanes = kRandomLanes;
static_assert(kLanes == 8, "the SIMD paths are written for 8 lanes");

// Step 2: r's top 52 bits under the exponent of [2, 4), minus 3.
inline constexpr std::uint64_t kUniformExp = 0x4000000000000000ULL;
inline constexpr double kUniformShift = 3.0;
// Step 4.
inline constexpr std::uint64_t kSqrtHalfBits = 0x3fe6a09e667f3bcdULL;
inline constexpr std::uint64_t kHighMask = 0xfff0000000000000ULL;
inline constexpr std::uint64_t kSignBit = 0x8000000000000000ULL;
// k + 2048 (in [0, 4096)) under the exponent of 2^52 is the double 2^52 + 2048 + k: minus kExpBias is k.
inline constexpr std::uint64_t kExpBits = 0x4330000000000000ULL;
inline constexpr double kExpBias = 0x1.0p52 + 2048.0;
inline constexpr double kLn2 = 0x1.62e42fefa39efp-1;
inline constexpr double kC[10] = {1.0 / 3,  1.0 / 5,  1.0 / 7,  1.0 / 9,  1.0 / 11,
                                  1.0 / 13, 1.0 / 15, 1.0 / 17, 1.0 / 19, 1.0 / 21};
static_assert(kLn2 == 0.69314718055994530942);

inline std::uint64_t splitmix64(std::uint64_t& x) noexcept {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Step 1: state[j][l] is word j of lane l (structure of arrays, as the SIMD paths load it).
struct LaneStates {
    alignas(64) std::uint64_t s[4][kLanes];
};

inline LaneStates seed_lanes(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk) noexcept {
    std::uint64_t sm = seed ^ (hash * 0x9e3779b97f4a7c15ULL) ^ (chunk * 0xd1b54a32d192ed03ULL);
    LaneStates st;
    for (std::size_t l = 0; l < kLanes; ++l)
        for (std::size_t j = 0; j < 4; ++j) st.s[j][l] = splitmix64(sm);
    return st;
}

#if defined(HEADFUSE_LANES_AVX2) || defined(HEADFUSE_LANES_AVX512)

// A chunk's rounds: `ROUND(dst)` stores up to 16 floats at dst (any of them may be scratch) and yields how many
// are real. Straight to `out` while 16 fit; the last rounds go through a bounce buffer.
#define HEADFUSE_RUN_ROUNDS(ROUND)                              \
    do {                                                        \
        std::size_t i = 0;                                      \
        while (n - i >= 16) i += ROUND(out + i);                \
        alignas(64) float tmp[16];                              \
        while (i < n) {                                         \
            const std::size_t got = ROUND(tmp);                 \
            const std::size_t take = got < n - i ? got : n - i; \
            std::memcpy(out + i, tmp, take * sizeof(float));    \
            i += take;                                          \
        }                                                       \
    } while (0)

#endif

#if defined(HEADFUSE_LANES_AVX2)

// The permutation that packs the pairs (u0 v0 u1 v1 u2 v2 u3 v3) of the accepted lanes of a
// 4-lane mask to the front.
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

struct Avx2Ops {
    static inline __m256i rotl(__m256i x, int k) noexcept {
        return _mm256_or_si256(_mm256_slli_epi64(x, k), _mm256_srli_epi64(x, 64 - k));
    }
};

// Four lanes' state and one round's arithmetic on them.
struct Avx2Group {
    __m256i s0, s1, s2, s3;

    inline __m256i next() noexcept {
        const __m256i a = _mm256_add_epi64(s1, _mm256_slli_epi64(s1, 2));  // s1 * 5
        const __m256i r7 = Avx2Ops::rotl(a, 7);
        const __m256i result = _mm256_add_epi64(r7, _mm256_slli_epi64(r7, 3));  // * 9
        const __m256i t = _mm256_slli_epi64(s1, 17);
        s2 = _mm256_xor_si256(s2, s0);
        s3 = _mm256_xor_si256(s3, s1);
        s1 = _mm256_xor_si256(s1, s2);
        s0 = _mm256_xor_si256(s0, s3);
        s2 = _mm256_xor_si256(s2, t);
        s3 = Avx2Ops::rotl(s3, 45);
        return result;
    }

    static inline __m256d uniform(__m256i r) noexcept {
        const __m256i bits =
            _mm256_or_si256(_mm256_srli_epi64(r, 12), _mm256_set1_epi64x(static_cast<long long>(kUniformExp)));
        return _mm256_sub_pd(_mm256_castsi256_pd(bits), _mm256_set1_pd(kUniformShift));
    }

    static inline __m256d log(__m256d x) noexcept {
        const __m256i b = _mm256_castpd_si256(x);
        const __m256i d = _mm256_sub_epi64(b, _mm256_set1_epi64x(static_cast<long long>(kSqrtHalfBits)));
        const __m256d m = _mm256_castsi256_pd(
            _mm256_sub_epi64(b, _mm256_and_si256(d, _mm256_set1_epi64x(static_cast<long long>(kHighMask)))));
        const __m256i kb =
            _mm256_srli_epi64(_mm256_xor_si256(d, _mm256_set1_epi64x(static_cast<long long>(kSignBit))), 52);
        const __m256d k = _mm256_sub_pd(
            _mm256_castsi256_pd(_mm256_or_si256(kb, _mm256_set1_epi64x(static_cast<long long>(kExpBits)))),
            _mm256_set1_pd(kExpBias));
        const __m256d one = _mm256_set1_pd(1.0);
        const __m256d z = _mm256_div_pd(_mm256_sub_pd(m, one), _mm256_add_pd(m, one));
        const __m256d z2 = _mm256_mul_pd(z, z);
        const __m256d z4 = _mm256_mul_pd(z2, z2), z8 = _mm256_mul_pd(z4, z4), z16 = _mm256_mul_pd(z8, z8);
#define HEADFUSE_PAIR(j) _mm256_add_pd(_mm256_set1_pd(kC[j]), _mm256_mul_pd(_mm256_set1_pd(kC[j + 1]), z2))
        const __m256d a0 = HEADFUSE_PAIR(0), a1 = HEADFUSE_PAIR(2), a2 = HEADFUSE_PAIR(4), a3 = HEADFUSE_PAIR(6),
                      a4 = HEADFUSE_PAIR(8);
#undef HEADFUSE_PAIR
        const __m256d lo = _mm256_add_pd(a0, _mm256_mul_pd(a1, z4)), hi = _mm256_add_pd(a2, _mm256_mul_pd(a3, z4));
        const __m256d p = _mm256_add_pd(_mm256_add_pd(lo, _mm256_mul_pd(hi, z8)), _mm256_mul_pd(a4, z16));
        const __m256d sum = _mm256_add_pd(z, _mm256_mul_pd(_mm256_mul_pd(z, z2), p));
        return _mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(2.0), sum), _mm256_mul_pd(k, _mm256_set1_pd(kLn2)));
    }

    // One round for these four lanes: the packed pairs (8 floats, the first `count` real) and count.
    inline __m256 round(unsigned& count) noexcept {
        const __m256d u = uniform(next());
        const __m256d v = uniform(next());
        const __m256d s = _mm256_add_pd(_mm256_mul_pd(u, u), _mm256_mul_pd(v, v));
        const __m256d ok = _mm256_and_pd(_mm256_cmp_pd(s, _mm256_set1_pd(1.0), _CMP_LT_OQ),
                                         _mm256_cmp_pd(s, _mm256_setzero_pd(), _CMP_GT_OQ));
        const unsigned mask = static_cast<unsigned>(_mm256_movemask_pd(ok));
        // As for AVX-512: |t| only matters in rejected lanes, whose values are dropped.
        const __m256d t = _mm256_div_pd(_mm256_mul_pd(_mm256_set1_pd(-2.0), log(s)), s);
        const __m256d abs_t = _mm256_andnot_pd(_mm256_set1_pd(-0.0), t);
        const __m256d f = _mm256_mul_pd(_mm256_sqrt_pd(abs_t), _mm256_set1_pd(kInitStd));
        const __m128 xu = _mm256_cvtpd_ps(_mm256_mul_pd(u, f));
        const __m128 xv = _mm256_cvtpd_ps(_mm256_mul_pd(v, f));
        const __m256 pairs = _mm256_set_m128(_mm_unpackhi_ps(xu, xv), _mm_unpacklo_ps(xu, xv));
        count = 2 * static_cast<unsigned>(__builtin_popcount(mask));
        const __m256i idx = _mm256_load_si256(reinterpret_cast<const __m256i*>(kPack4.idx[mask]));
        return _mm256_permutevar8x32_ps(pairs, idx);
    }
};

inline std::size_t avx2_round(Avx2Group& a, Avx2Group& b, float* dst) noexcept {
    unsigned ca, cb;
    const __m256 pa = a.round(ca);
    const __m256 pb = b.round(cb);
    _mm256_storeu_ps(dst, pa);
    _mm256_storeu_ps(dst + ca, pb);
    return ca + cb;
}

void random_chunk_lanes(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk, float* out,
                        std::size_t n) noexcept {
    const LaneStates st = seed_lanes(seed, hash, chunk);
#define HEADFUSE_LOAD(j, half) _mm256_load_si256(reinterpret_cast<const __m256i*>(&st.s[j][4 * (half)]))
    Avx2Group a{HEADFUSE_LOAD(0, 0), HEADFUSE_LOAD(1, 0), HEADFUSE_LOAD(2, 0), HEADFUSE_LOAD(3, 0)};
    Avx2Group b{HEADFUSE_LOAD(0, 1), HEADFUSE_LOAD(1, 1), HEADFUSE_LOAD(2, 1), HEADFUSE_LOAD(3, 1)};
#undef HEADFUSE_LOAD
    std::size_t i = 0;
    while (n - i >= 32) {  // two rounds at a time, as for AVX-512
        unsigned c[4];
        const __m256 p0 = a.round(c[0]), p1 = b.round(c[1]), p2 = a.round(c[2]), p3 = b.round(c[3]);
        _mm256_storeu_ps(out + i, p0);
        i += c[0];
        _mm256_storeu_ps(out + i, p1);
        i += c[1];
        _mm256_storeu_ps(out + i, p2);
        i += c[2];
        _mm256_storeu_ps(out + i, p3);
        i += c[3];
    }
    out += i;
    n -= i;
#define HEADFUSE_AVX2_ROUND(dst) avx2_round(a, b, dst)
    HEADFUSE_RUN_ROUNDS(HEADFUSE_AVX2_ROUND);
#undef HEADFUSE_AVX2_ROUND
}

#endif  // HEADFUSE_LANES_AVX2

#if defined(HEADFUSE_LANES_AVX512)

// Interleaving the accepted lanes' pairs: the pair bits of an 8-lane mask (each lane bit doubled) ...
struct PairMasks {
    std::uint16_t m[256];
    constexpr PairMasks() : m{} {
        for (unsigned a = 0; a < 256; ++a)
            for (unsigned l = 0; l < 8; ++l)
                if (a >> l & 1) m[a] |= static_cast<std::uint16_t>(3u << (2 * l));
    }
};
constexpr PairMasks kPairMasks;

inline __m512i avx512_next(__m512i& s0, __m512i& s1, __m512i& s2, __m512i& s3) noexcept {
    const __m512i a = _mm512_add_epi64(s1, _mm512_slli_epi64(s1, 2));  // s1 * 5
    const __m512i r7 = _mm512_rol_epi64(a, 7);
    const __m512i result = _mm512_add_epi64(r7, _mm512_slli_epi64(r7, 3));  // * 9
    const __m512i t = _mm512_slli_epi64(s1, 17);
    s2 = _mm512_xor_si512(s2, s0);
    s3 = _mm512_xor_si512(s3, s1);
    s1 = _mm512_xor_si512(s1, s2);
    s0 = _mm512_xor_si512(s0, s3);
    s2 = _mm512_xor_si512(s2, t);
    s3 = _mm512_rol_epi64(s3, 45);
    return result;
}

inline __m512d avx512_uniform(__m512i r) noexcept {
    const __m512i bits =
        _mm512_or_si512(_mm512_srli_epi64(r, 12), _mm512_set1_epi64(static_cast<long long>(kUniformExp)));
    return _mm512_sub_pd(_mm512_castsi512_pd(bits), _mm512_set1_pd(kUniformShift));
}

inline __m512d avx512_log(__m512d x) noexcept {
    const __m512i b = _mm512_castpd_si512(x);
    const __m512i d = _mm512_sub_epi64(b, _mm512_set1_epi64(static_cast<long long>(kSqrtHalfBits)));
    const __m512d m = _mm512_castsi512_pd(
        _mm512_sub_epi64(b, _mm512_and_si512(d, _mm512_set1_epi64(static_cast<long long>(kHighMask)))));
    const __m512i kb = _mm512_srli_epi64(_mm512_xor_si512(d, _mm512_set1_epi64(static_cast<long long>(kSignBit))), 52);
    const __m512d k =
        _mm512_sub_pd(_mm512_castsi512_pd(_mm512_or_si512(kb, _mm512_set1_epi64(static_cast<long long>(kExpBits)))),
                      _mm512_set1_pd(kExpBias));
    const __m512d one = _mm512_set1_pd(1.0);
    const __m512d z = _mm512_div_pd(_mm512_sub_pd(m, one), _mm512_add_pd(m, one));
    const __m512d z2 = _mm512_mul_pd(z, z);
    const __m512d z4 = _mm512_mul_pd(z2, z2), z8 = _mm512_mul_pd(z4, z4), z16 = _mm512_mul_pd(z8, z8);
#define HEADFUSE_PAIR(j) _mm512_add_pd(_mm512_set1_pd(kC[j]), _mm512_mul_pd(_mm512_set1_pd(kC[j + 1]), z2))
    const __m512d a0 = HEADFUSE_PAIR(0), a1 = HEADFUSE_PAIR(2), a2 = HEADFUSE_PAIR(4), a3 = HEADFUSE_PAIR(6),
                  a4 = HEADFUSE_PAIR(8);
#undef HEADFUSE_PAIR
    const __m512d lo = _mm512_add_pd(a0, _mm512_mul_pd(a1, z4)), hi = _mm512_add_pd(a2, _mm512_mul_pd(a3, z4));
    const __m512d p = _mm512_add_pd(_mm512_add_pd(lo, _mm512_mul_pd(hi, z8)), _mm512_mul_pd(a4, z16));
    const __m512d sum = _mm512_add_pd(z, _mm512_mul_pd(_mm512_mul_pd(z, z2), p));
    return _mm512_add_pd(_mm512_mul_pd(_mm512_set1_pd(2.0), sum), _mm512_mul_pd(k, _mm512_set1_pd(kLn2)));
}

struct Avx512State {
    __m512i s0, s1, s2, s3;
};

struct Avx512Out {
    __m512 packed;
    __mmask8 ok;
};

// One round of all eight lanes: the accepted lanes' pairs packed to the front, and which lanes they are.
inline Avx512Out avx512_compute(Avx512State& st) noexcept {
    const __m512d u = avx512_uniform(avx512_next(st.s0, st.s1, st.s2, st.s3));
    const __m512d v = avx512_uniform(avx512_next(st.s0, st.s1, st.s2, st.s3));
    const __m512d s = _mm512_add_pd(_mm512_mul_pd(u, u), _mm512_mul_pd(v, v));
    const __mmask8 ok = _mm512_mask_cmp_pd_mask(_mm512_cmp_pd_mask(s, _mm512_set1_pd(1.0), _CMP_LT_OQ), s,
                                                _mm512_setzero_pd(), _CMP_GT_OQ);
    // Every lane computes f; rejected lanes' values are dropped. t > 0 in accepted lanes: the |t| only spares the
    // lanes with s >= 1 (t <= 0) a NaN and an invalid-operation flag.
    const __m512d t = _mm512_div_pd(_mm512_mul_pd(_mm512_set1_pd(-2.0), avx512_log(s)), s);
    const __m512d f = _mm512_mul_pd(_mm512_sqrt_pd(_mm512_abs_pd(t)), _mm512_set1_pd(kInitStd));
    const __m256 xu = _mm512_cvtpd_ps(_mm512_mul_pd(u, f));
    const __m256 xv = _mm512_cvtpd_ps(_mm512_mul_pd(v, f));
    const __m512i interleave = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512 pairs = _mm512_permutex2var_ps(_mm512_castps256_ps512(xu), interleave, _mm512_castps256_ps512(xv));
    return {_mm512_maskz_compress_ps(kPairMasks.m[ok], pairs), ok};
}

inline std::size_t avx512_round(Avx512State& st, float* dst) noexcept {
    const Avx512Out o = avx512_compute(st);
    _mm512_storeu_ps(dst, o.packed);
    return 2 * static_cast<std::size_t>(__builtin_popcount(o.ok));
}

void random_chunk_lanes(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk, float* out,
                        std::size_t n) noexcept {
    const LaneStates ls = seed_lanes(seed, hash, chunk);
    Avx512State st{_mm512_load_si512(ls.s[0]), _mm512_load_si512(ls.s[1]), _mm512_load_si512(ls.s[2]),
                   _mm512_load_si512(ls.s[3])};
    // Two rounds at a time: independent until stored, they give the core two long dependency chains to overlap.
    std::size_t i = 0;
    while (n - i >= 32) {
        const Avx512Out a = avx512_compute(st);
        const Avx512Out b = avx512_compute(st);
        _mm512_storeu_ps(out + i, a.packed);
        i += 2 * static_cast<std::size_t>(__builtin_popcount(a.ok));
        _mm512_storeu_ps(out + i, b.packed);
        i += 2 * static_cast<std::size_t>(__builtin_popcount(b.ok));
    }
    out += i;
    n -= i;
#define HEADFUSE_AVX512_ROUND(dst) avx512_round(st, dst)
    HEADFUSE_RUN_ROUNDS(HEADFUSE_AVX512_ROUND);
#undef HEADFUSE_AVX512_ROUND
}

#endif  // HEADFUSE_LANES_AVX512

}  // namespace
}  // namespace headfuse::random_lanes
