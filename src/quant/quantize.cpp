// headfuse: F32 rows to F16, BF16, Q8_0 and Q4_0 and back, byte for byte as ggml's reference functions.
//
// Three implementations of every encoder: the scalar reference (ggml's code, rewritten), AVX2 + F16C and AVX-512.
// The vector ones are chosen at run time and must reproduce the reference bit for bit, which fixes how they
// round: roundf is half away from zero (not the vector unit's nearest even), a float-to-int8 cast truncates,
// and every product is rounded before it is added to anything (see `rounded`). Build with -ffp-contract=off.

#include "headfuse/quantize.h"

#include <bit>
#include <cassert>
#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HEADFUSE_X86_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace headfuse {

static_assert(std::endian::native == std::endian::little, "the block layouts are stored in host byte order");

namespace {

constexpr std::size_t kBlock = 32;    // elements per Q8_0 and Q4_0 block
constexpr std::size_t kQ8Bytes = 34;  // fp16 d + 32 int8
constexpr std::size_t kQ4Bytes = 18;  // fp16 d + 16 bytes of nibble pairs

std::uint32_t bits_of(float f) { return std::bit_cast<std::uint32_t>(f); }
float float_of(std::uint32_t u) { return std::bit_cast<float>(u); }

using blocks::load_u16;
using blocks::store_u16;

// Returns v unchanged, but hides it from the optimizer so that a product is rounded to float before the next
// operation: with FMA available a compiler may otherwise fuse x*id + 8.5f, which ggml computes in two steps.
float rounded(float v) {
#if defined(__GNUC__) || defined(__clang__)
    __asm__("" : "+x"(v));
#endif
    return v;
}

using blocks::low_byte;
using blocks::truncate_like_x86;

// ---- scalar reference encoders (ggml-quants.c: quantize_row_q8_0_ref, quantize_row_q4_0_ref) ----

void encode_f16_scalar(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) store_u16(dst + 2 * i, fp32_to_fp16(src[i]));
}

void encode_bf16_scalar(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) store_u16(dst + 2 * i, fp32_to_bf16(src[i]));
}

void encode_q8_0_block_scalar(const float* x, std::byte* out) {
    float amax = 0.0f;
    for (std::size_t j = 0; j < kBlock; ++j) {
        const float a = std::fabs(x[j]);
        amax = amax > a ? amax : a;
    }
    const float d = amax / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_u16(out, fp32_to_fp16(d));
    for (std::size_t j = 0; j < kBlock; ++j)
        out[2 + j] = std::byte(static_cast<std::uint8_t>(low_byte(truncate_like_x86(std::round(x[j] * id)))));
}

// One Q4_0 code: MIN(15, (int8_t)(x*id + 8.5f)), kept as the byte ggml stores.
std::uint8_t q4_0_code(float x, float id) {
    const int q = low_byte(truncate_like_x86(rounded(x * id) + 8.5f));
    return static_cast<std::uint8_t>(q < 15 ? q : 15);
}

void encode_q4_0_block_scalar(const float* x, std::byte* out) {
    // The element of largest magnitude, with its sign; the first one wins a tie.
    float amax = 0.0f;
    float max = 0.0f;
    for (std::size_t j = 0; j < kBlock; ++j) {
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_u16(out, fp32_to_fp16(d));
    for (std::size_t j = 0; j < kBlock / 2; ++j) {
        const std::uint8_t lo = q4_0_code(x[j], id);
        const std::uint8_t hi = q4_0_code(x[j + kBlock / 2], id);
        out[2 + j] = std::byte(static_cast<std::uint8_t>(lo | hi << 4));
    }
}

void encode_q8_0_scalar(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) encode_q8_0_block_scalar(src + b * kBlock, dst + b * kQ8Bytes);
}

void encode_q4_0_scalar(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) encode_q4_0_block_scalar(src + b * kBlock, dst + b * kQ4Bytes);
}

// ---- scalar decoders (ggml: ggml_fp16_to_fp32_row, ggml_bf16_to_fp32_row, dequantize_row_q8_0/q4_0) ----

void decode_f16_scalar(const std::byte* src, float* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(src + 2 * i));
}

void decode_bf16_scalar(const std::byte* src, float* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
}

void decode_q8_0_scalar(const std::byte* src, float* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const std::byte* block = src + b * kQ8Bytes;
        const float d = fp16_to_fp32(load_u16(block));
        for (std::size_t j = 0; j < kBlock; ++j)
            dst[b * kBlock + j] = static_cast<float>(static_cast<std::int8_t>(block[2 + j])) * d;
    }
}

void decode_q4_0_scalar(const std::byte* src, float* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const std::byte* block = src + b * kQ4Bytes;
        const float d = fp16_to_fp32(load_u16(block));
        for (std::size_t j = 0; j < kBlock / 2; ++j) {
            const auto pair = static_cast<int>(block[2 + j]);
            dst[b * kBlock + j] = static_cast<float>((pair & 0x0F) - 8) * d;
            dst[b * kBlock + j + kBlock / 2] = static_cast<float>((pair >> 4) - 8) * d;
        }
    }
}

bool all_finite_scalar(const float* x, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
        if (!std::isfinite(x[i])) return false;
    return true;
}

#if HEADFUSE_X86_KERNELS

// CPUID leaf 1, ECX bit 29. Asked directly because not every compiler's __builtin_cpu_supports knows "f16c".
bool cpu_has_f16c() {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}

#define HEADFUSE_AVX2 __attribute__((target("avx2,f16c")))
#define HEADFUSE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c")))

// ---- AVX2 + F16C ----

HEADFUSE_AVX2 __m256 rounded(__m256 v) {
    __asm__("" : "+x"(v));
    return v;
}

// fp32_to_fp16 in one F16C instruction: for finite input its round-to-nearest-even conversion gives the same
// bits as ggml's arithmetic (including overflow to infinity and fp16 subnormals).
HEADFUSE_AVX2 std::uint16_t fp16_of_finite(float f) {
    return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

HEADFUSE_AVX2 __m256 abs256(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// The largest lane, in every lane. max is exact, so the reduction order cannot change the result.
HEADFUSE_AVX2 __m256 broadcast_max256(__m256 m) {
    m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
    m = _mm256_max_ps(m, _mm256_permute_ps(m, 0b01001110));
    return _mm256_max_ps(m, _mm256_permute_ps(m, 0b10110001));
}

// roundf: to nearest, ties away from zero. v - trunc(v) is exact, so comparing it with 0.5 finds ties exactly;
// NaN and infinities pass through as trunc(v).
HEADFUSE_AVX2 __m256 round_half_away256(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = abs256(_mm256_sub_ps(v, t));
    const __m256 away = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_and_ps(away, _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ)));
}

// The low bytes of 32 int32 lanes, in order. The packs saturate, so mask first to make them plain narrowing;
// they also work per 128-bit lane, which the final permutation undoes.
HEADFUSE_AVX2 __m256i low_bytes256(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i byte = _mm256_set1_epi32(0xFF);
    const __m256i ab = _mm256_packus_epi32(_mm256_and_si256(a, byte), _mm256_and_si256(b, byte));
    const __m256i cd = _mm256_packus_epi32(_mm256_and_si256(c, byte), _mm256_and_si256(d, byte));
    return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

HEADFUSE_AVX2 void encode_f16_avx2(const float* src, std::byte* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i), h);
    }
    encode_f16_scalar(src + i, dst + 2 * i, n - i);
}

// fp32_to_bf16 on 8 lanes, the result in the low 16 bits of each.
HEADFUSE_AVX2 __m256i bf16_lanes256(const float* src) {
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    const __m256i high = _mm256_srli_epi32(u, 16);
    const __m256i bias = _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), _mm256_and_si256(high, _mm256_set1_epi32(1)));
    const __m256i nearest_even = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
    const __m256i quiet_nan = _mm256_or_si256(high, _mm256_set1_epi32(64));
    const __m256i magnitude = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
    const __m256i is_nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7F800000));
    return _mm256_blendv_epi8(nearest_even, quiet_nan, is_nan);
}

HEADFUSE_AVX2 void encode_bf16_avx2(const float* src, std::byte* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        // Every lane fits 16 bits, so the saturating pack narrows exactly; it interleaves 64-bit quarters.
        const __m256i packed = _mm256_packus_epi32(bf16_lanes256(src + i), bf16_lanes256(src + i + 8));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * i), _mm256_permute4x64_epi64(packed, 0b11011000));
    }
    encode_bf16_scalar(src + i, dst + 2 * i, n - i);
}

// roundf(x*id) truncated to int32 (INT32_MIN when NaN or out of range, as cvttss2si).
HEADFUSE_AVX2 __m256i q8_0_codes256(__m256 x, __m256 id) {
    return _mm256_cvttps_epi32(round_half_away256(rounded(_mm256_mul_ps(x, id))));
}

HEADFUSE_AVX2 void encode_q8_0_avx2(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const float* x = src + b * kBlock;
        std::byte* out = dst + b * kQ8Bytes;
        const __m256 v0 = _mm256_loadu_ps(x);
        const __m256 v1 = _mm256_loadu_ps(x + 8);
        const __m256 v2 = _mm256_loadu_ps(x + 16);
        const __m256 v3 = _mm256_loadu_ps(x + 24);
        const __m256 m = _mm256_max_ps(_mm256_max_ps(abs256(v0), abs256(v1)), _mm256_max_ps(abs256(v2), abs256(v3)));
        const float amax = _mm256_cvtss_f32(broadcast_max256(m));
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(out, fp16_of_finite(d));
        const __m256 idv = _mm256_set1_ps(id);
        const __m256i bytes = low_bytes256(q8_0_codes256(v0, idv), q8_0_codes256(v1, idv), q8_0_codes256(v2, idv),
                                           q8_0_codes256(v3, idv));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2), bytes);
    }
}

// MIN(15, (int8_t)(x*id + 8.5f)) in int32 lanes: truncate, keep the signed low byte, clamp above.
HEADFUSE_AVX2 __m256i q4_0_codes256(__m256 x, __m256 id) {
    const __m256i t = _mm256_cvttps_epi32(_mm256_add_ps(rounded(_mm256_mul_ps(x, id)), _mm256_set1_ps(8.5f)));
    const __m256i int8 = _mm256_srai_epi32(_mm256_slli_epi32(t, 24), 24);
    return _mm256_min_epi32(int8, _mm256_set1_epi32(15));
}

// One bit per lane: a == b.
HEADFUSE_AVX2 std::uint32_t lanes_equal(__m256 a, __m256 b) {
    return static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)));
}

HEADFUSE_AVX2 void encode_q4_0_avx2(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const float* x = src + b * kBlock;
        std::byte* out = dst + b * kQ4Bytes;
        const __m256 v0 = _mm256_loadu_ps(x);
        const __m256 v1 = _mm256_loadu_ps(x + 8);
        const __m256 v2 = _mm256_loadu_ps(x + 16);
        const __m256 v3 = _mm256_loadu_ps(x + 24);
        const __m256 a0 = abs256(v0);
        const __m256 a1 = abs256(v1);
        const __m256 a2 = abs256(v2);
        const __m256 a3 = abs256(v3);
        const __m256 amax = broadcast_max256(_mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3)));
        // The first element of largest magnitude, with its sign; an all-zero block keeps +0. (No lane matches
        // only with NaN input, whose result is unspecified but must not be read from outside the block.)
        float max = 0.0f;
        if (_mm256_cvtss_f32(amax) != 0.0f) {
            const std::uint32_t hits = lanes_equal(a0, amax) | lanes_equal(a1, amax) << 8 |
                                       lanes_equal(a2, amax) << 16 | lanes_equal(a3, amax) << 24;
            if (hits != 0) max = x[std::countr_zero(hits)];
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(out, fp16_of_finite(d));
        const __m256 idv = _mm256_set1_ps(id);
        // Byte j holds element j in its low nibble and element j+16 in its high nibble.
        const __m256i pair0 = _mm256_or_si256(q4_0_codes256(v0, idv), _mm256_slli_epi32(q4_0_codes256(v2, idv), 4));
        const __m256i pair1 = _mm256_or_si256(q4_0_codes256(v1, idv), _mm256_slli_epi32(q4_0_codes256(v3, idv), 4));
        const __m256i bytes = low_bytes256(pair0, pair1, pair0, pair1);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2), _mm256_castsi256_si128(bytes));
    }
}

HEADFUSE_AVX2 void decode_f16_avx2(const std::byte* src, float* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i))));
    decode_f16_scalar(src + 2 * i, dst + i, n - i);
}

HEADFUSE_AVX2 void decode_bf16_avx2(const std::byte* src, float* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
    }
    decode_bf16_scalar(src + 2 * i, dst + i, n - i);
}

HEADFUSE_AVX2 void decode_q8_0_avx2(const std::byte* src, float* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const std::byte* block = src + b * kQ8Bytes;
        const __m256 d = _mm256_set1_ps(fp16_to_fp32(load_u16(block)));
        for (int k = 0; k < 4; ++k) {
            const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * k));
            const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
            _mm256_storeu_ps(dst + b * kBlock + 8 * k, _mm256_mul_ps(q, d));
        }
    }
}

HEADFUSE_AVX2 void decode_q4_0_avx2(const std::byte* src, float* dst, std::size_t n) {
    const __m128i nibble = _mm_set1_epi8(0x0F);
    const __m256i eight = _mm256_set1_epi32(8);
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const std::byte* block = src + b * kQ4Bytes;
        const __m256 d = _mm256_set1_ps(fp16_to_fp32(load_u16(block)));
        const __m128i pairs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
        const __m128i lo = _mm_and_si128(pairs, nibble);                     // elements 0..15
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(pairs, 4), nibble);  // elements 16..31
        const __m128i eighths[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int k = 0; k < 4; ++k) {
            const __m256i q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(eighths[k]), eight);
            _mm256_storeu_ps(dst + b * kBlock + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
        }
    }
}

HEADFUSE_AVX2 bool all_finite_avx2(const float* x, std::size_t n) {
    // Finite means the magnitude bits are below the infinity pattern; check 32 floats per branch.
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
    const __m256i largest = _mm256_set1_epi32(0x7F7FFFFF);
    std::size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i bad = _mm256_setzero_si256();
        for (int k = 0; k < 4; ++k) {
            const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 8 * k));
            bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), largest));
        }
        if (!_mm256_testz_si256(bad, bad)) return false;
    }
    return all_finite_scalar(x + i, n - i);
}

// ---- AVX-512 (F, BW, VL) ----

// GCC 12 reports the deliberately undefined vectors inside its own AVX-512 intrinsics (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

HEADFUSE_AVX512 __m512 rounded(__m512 v) {
    __asm__("" : "+v"(v));
    return v;
}

// roundf on 16 lanes; see round_half_away256.
HEADFUSE_AVX512 __m512 round_half_away512(__m512 v) {
    const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __mmask16 tie_or_above =
        _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN));
    const __m512 away = _mm512_castsi512_ps(_mm512_or_si512(sign, _mm512_castps_si512(_mm512_set1_ps(1.0f))));
    return _mm512_mask_add_ps(t, tie_or_above, t, away);
}

HEADFUSE_AVX512 void encode_f16_avx512(const float* src, std::byte* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * i), h);
    }
    encode_f16_scalar(src + i, dst + 2 * i, n - i);
}

HEADFUSE_AVX512 void encode_bf16_avx512(const float* src, std::byte* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i u = _mm512_loadu_si512(src + i);
        const __m512i high = _mm512_srli_epi32(u, 16);
        const __m512i bias = _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), _mm512_and_si512(high, _mm512_set1_epi32(1)));
        const __m512i nearest_even = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
        const __mmask16 is_nan =
            _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)), _mm512_set1_epi32(0x7F800000));
        const __m512i h = _mm512_mask_or_epi32(nearest_even, is_nan, high, _mm512_set1_epi32(64));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * i), _mm512_cvtepi32_epi16(h));
    }
    encode_bf16_scalar(src + i, dst + 2 * i, n - i);
}

HEADFUSE_AVX512 void encode_q8_0_avx512(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const float* x = src + b * kBlock;
        std::byte* out = dst + b * kQ8Bytes;
        const __m512 v0 = _mm512_loadu_ps(x);
        const __m512 v1 = _mm512_loadu_ps(x + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(out, fp16_of_finite(d));
        const __m512 idv = _mm512_set1_ps(id);
        // vpmovdb keeps the low byte of each lane, as the x86 cast does.
        const __m512i q0 = _mm512_cvttps_epi32(round_half_away512(rounded(_mm512_mul_ps(v0, idv))));
        const __m512i q1 = _mm512_cvttps_epi32(round_half_away512(rounded(_mm512_mul_ps(v1, idv))));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 18), _mm512_cvtepi32_epi8(q1));
    }
}

// See q4_0_codes256.
HEADFUSE_AVX512 __m512i q4_0_codes512(__m512 x, __m512 id) {
    const __m512i t = _mm512_cvttps_epi32(_mm512_add_ps(rounded(_mm512_mul_ps(x, id)), _mm512_set1_ps(8.5f)));
    const __m512i int8 = _mm512_srai_epi32(_mm512_slli_epi32(t, 24), 24);
    return _mm512_min_epi32(int8, _mm512_set1_epi32(15));
}

HEADFUSE_AVX512 void encode_q4_0_avx512(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const float* x = src + b * kBlock;
        std::byte* out = dst + b * kQ4Bytes;
        const __m512 v0 = _mm512_loadu_ps(x);
        const __m512 v1 = _mm512_loadu_ps(x + 16);
        const __m512 a0 = _mm512_abs_ps(v0);
        const __m512 a1 = _mm512_abs_ps(v1);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
        // The first element of largest magnitude, with its sign; see encode_q4_0_avx2.
        float max = 0.0f;
        if (amax != 0.0f) {
            const __m512 amaxv = _mm512_set1_ps(amax);
            const std::uint32_t hits = _mm512_cmp_ps_mask(a0, amaxv, _CMP_EQ_OQ) |
                                       static_cast<std::uint32_t>(_mm512_cmp_ps_mask(a1, amaxv, _CMP_EQ_OQ)) << 16;
            if (hits != 0) max = x[std::countr_zero(hits)];
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(out, fp16_of_finite(d));
        const __m512 idv = _mm512_set1_ps(id);
        // Byte j holds element j in its low nibble and element j+16 in its high nibble; vpmovdb keeps low bytes.
        const __m512i pairs = _mm512_or_si512(q4_0_codes512(v0, idv), _mm512_slli_epi32(q4_0_codes512(v1, idv), 4));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2), _mm512_cvtepi32_epi8(pairs));
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif  // HEADFUSE_X86_KERNELS

using kernels::Isa;

using EncodeFn = void (*)(const float*, std::byte*, std::size_t);
using DecodeFn = void (*)(const std::byte*, float*, std::size_t);

struct Kernels {
    EncodeFn encode_f16, encode_bf16, encode_q8_0, encode_q4_0;
    DecodeFn decode_f16, decode_bf16, decode_q8_0, decode_q4_0;
    bool (*all_finite)(const float*, std::size_t);
    int kquant_lanes;  // sub-blocks per K-quant search call (src/quant_lanes.h): 1 is the scalar reference
};

constexpr Kernels kScalar{
    .encode_f16 = encode_f16_scalar,
    .encode_bf16 = encode_bf16_scalar,
    .encode_q8_0 = encode_q8_0_scalar,
    .encode_q4_0 = encode_q4_0_scalar,
    .decode_f16 = decode_f16_scalar,
    .decode_bf16 = decode_bf16_scalar,
    .decode_q8_0 = decode_q8_0_scalar,
    .decode_q4_0 = decode_q4_0_scalar,
    .all_finite = all_finite_scalar,
    .kquant_lanes = 1,
};
#if HEADFUSE_X86_KERNELS
constexpr Kernels kAvx2{
    .encode_f16 = encode_f16_avx2,
    .encode_bf16 = encode_bf16_avx2,
    .encode_q8_0 = encode_q8_0_avx2,
    .encode_q4_0 = encode_q4_0_avx2,
    .decode_f16 = decode_f16_avx2,
    .decode_bf16 = decode_bf16_avx2,
    .decode_q8_0 = decode_q8_0_avx2,
    .decode_q4_0 = decode_q4_0_avx2,
    .all_finite = all_finite_avx2,
    .kquant_lanes = 8,
};
// Decoding and the finiteness scan already keep up with memory at AVX2 width.
constexpr Kernels kAvx512{
    .encode_f16 = encode_f16_avx512,
    .encode_bf16 = encode_bf16_avx512,
    .encode_q8_0 = encode_q8_0_avx512,
    .encode_q4_0 = encode_q4_0_avx512,
    .decode_f16 = decode_f16_avx2,
    .decode_bf16 = decode_bf16_avx2,
    .decode_q8_0 = decode_q8_0_avx2,
    .decode_q4_0 = decode_q4_0_avx2,
    .all_finite = all_finite_avx2,
    .kquant_lanes = 16,
};
#endif

const Kernels& kernels_for(Isa isa) {
    assert(kernels::isa_supported(isa));
#if HEADFUSE_X86_KERNELS
    if (isa == Isa::Avx512) return kAvx512;
    if (isa == Isa::Avx2) return kAvx2;
#endif
    return kScalar;
}

const Kernels& best_kernels() {
    static const Kernels& best = kernels_for(kernels::best_isa());
    return best;
}

// F32 rows are plain copies; an empty row may come with null pointers, which memcpy does not allow.
void copy_floats(void* dst, const void* src, std::size_t n) {
    if (n != 0) std::memcpy(dst, src, n * sizeof(float));
}

[[maybe_unused]] bool whole_blocks(DType t, std::size_t n) { return n % traits(t).block_size == 0; }

void encode_with(const Kernels& k, DType t, const float* src, void* dst, std::size_t n) {
    assert(whole_blocks(t, n));
    auto* out = static_cast<std::byte*>(dst);
    const int lanes = k.kquant_lanes;
    switch (t) {
        case DType::F32: copy_floats(dst, src, n); return;
        case DType::F16: k.encode_f16(src, out, n); return;
        case DType::BF16: k.encode_bf16(src, out, n); return;
        case DType::Q8_0: k.encode_q8_0(src, out, n); return;
        case DType::Q4_0: k.encode_q4_0(src, out, n); return;
        case DType::Q4_1: blocks::encode_q4_1(src, out, n); return;
        case DType::Q5_0: blocks::encode_q5_0(src, out, n); return;
        case DType::Q5_1: blocks::encode_q5_1(src, out, n); return;
        case DType::Q2_K: blocks::encode_q2_k(src, out, n); return;
        case DType::Q3_K: blocks::encode_q3_k(src, out, n); return;
        case DType::Q4_K: blocks::encode_q4_k(src, out, n, lanes); return;
        case DType::Q5_K: blocks::encode_q5_k(src, out, n, lanes); return;
        case DType::Q6_K: blocks::encode_q6_k(src, out, n, lanes); return;
        case DType::IQ4_NL:
        case DType::IQ4_XS: break;
    }
    assert(!"encode_row: not a type headfuse writes");
}

void decode_with(const Kernels& k, DType t, const void* src, float* dst, std::size_t n) {
    assert(whole_blocks(t, n));
    const auto* in = static_cast<const std::byte*>(src);
    switch (t) {
        case DType::F32: copy_floats(dst, src, n); return;
        case DType::F16: k.decode_f16(in, dst, n); return;
        case DType::BF16: k.decode_bf16(in, dst, n); return;
        case DType::Q8_0: k.decode_q8_0(in, dst, n); return;
        case DType::Q4_0: k.decode_q4_0(in, dst, n); return;
        case DType::Q4_1: blocks::decode_q4_1(in, dst, n); return;
        case DType::Q5_0: blocks::decode_q5_0(in, dst, n); return;
        case DType::Q5_1: blocks::decode_q5_1(in, dst, n); return;
        case DType::Q2_K: blocks::decode_q2_k(in, dst, n); return;
        case DType::Q3_K: blocks::decode_q3_k(in, dst, n); return;
        case DType::Q4_K: blocks::decode_q4_k(in, dst, n); return;
        case DType::Q5_K: blocks::decode_q5_k(in, dst, n); return;
        case DType::Q6_K: blocks::decode_q6_k(in, dst, n); return;
        case DType::IQ4_NL: blocks::decode_iq4_nl(in, dst, n); return;
        case DType::IQ4_XS: blocks::decode_iq4_xs(in, dst, n); return;
    }
    assert(!"decode_row: not a type headfuse reads");
}

}  // namespace

// ggml_compute_fp32_to_fp16 (ggml-impl.h, after Maratyszcza's FP16): the two scalings push the mantissa bits
// that fp16 drops out of a float whose exponent is fixed by `bias`, so the float addition rounds to nearest
// even; values of 65520 and above come out as infinity.
std::uint16_t fp32_to_fp16(float f) noexcept {
    const float scale_to_inf = 0x1.0p+112f;
    const float scale_to_zero = 0x1.0p-110f;
    float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;

    const std::uint32_t w = bits_of(f);
    const std::uint32_t shl1_w = w + w;
    const std::uint32_t sign = w & 0x80000000u;
    std::uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;

    base = float_of((bias >> 1) + 0x07800000u) + base;
    const std::uint32_t bits = bits_of(base);
    const std::uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const std::uint32_t mantissa_bits = bits & 0x00000FFFu;
    const std::uint32_t nonsign = exp_bits + mantissa_bits;
    return static_cast<std::uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

// ggml_compute_fp16_to_fp32: exact. Normal values rebias the exponent by a multiplication; subnormals are
// rebuilt as (1 + m*2^-23)*0.5 - 0.5.
float fp16_to_fp32(std::uint16_t h) noexcept {
    const std::uint32_t w = static_cast<std::uint32_t>(h) << 16;
    const std::uint32_t sign = w & 0x80000000u;
    const std::uint32_t two_w = w + w;

    const float normalized = float_of((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = float_of((two_w >> 17) | (126u << 23)) - 0.5f;
    const std::uint32_t magnitude = two_w < (1u << 27) ? bits_of(denormalized) : bits_of(normalized);
    return float_of(sign | magnitude);
}

// ggml_compute_fp32_to_bf16: round to nearest even on the top 16 bits; a NaN is kept and made quiet.
std::uint16_t fp32_to_bf16(float f) noexcept {
    const std::uint32_t u = bits_of(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 64);
    return static_cast<std::uint16_t>((u + (0x7FFFu + ((u >> 16) & 1u))) >> 16);
}

float bf16_to_fp32(std::uint16_t h) noexcept { return float_of(static_cast<std::uint32_t>(h) << 16); }

void encode_row(DType t, const float* src, void* dst, std::size_t n) noexcept {
    encode_with(best_kernels(), t, src, dst, n);
}

void decode_row(DType t, const void* src, float* dst, std::size_t n) noexcept {
    decode_with(best_kernels(), t, src, dst, n);
}

bool all_finite(const float* x, std::size_t n) noexcept { return best_kernels().all_finite(x, n); }

void reference::encode_row(DType t, const float* src, void* dst, std::size_t n) noexcept {
    encode_with(kScalar, t, src, dst, n);
}

namespace kernels {

bool isa_supported(Isa isa) noexcept {
#if HEADFUSE_X86_KERNELS
    __builtin_cpu_init();  // needed when called before constructors have run
    const bool avx2 = __builtin_cpu_supports("avx2") && cpu_has_f16c();
    switch (isa) {
        case Isa::Scalar: return true;
        case Isa::Avx2: return avx2;
        case Isa::Avx512:
            return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl");
    }
    return false;
#else
    return isa == Isa::Scalar;
#endif
}

Isa best_isa() noexcept {
    for (Isa isa : {Isa::Avx512, Isa::Avx2})
        if (isa_supported(isa)) return isa;
    return Isa::Scalar;
}

void encode_row(Isa isa, DType t, const float* src, void* dst, std::size_t n) noexcept {
    encode_with(kernels_for(isa), t, src, dst, n);
}

void decode_row(Isa isa, DType t, const void* src, float* dst, std::size_t n) noexcept {
    decode_with(kernels_for(isa), t, src, dst, n);
}

bool all_finite(Isa isa, const float* x, std::size_t n) noexcept { return kernels_for(isa).all_finite(x, n); }

}  // namespace kernels

}  // namespace headfuse
