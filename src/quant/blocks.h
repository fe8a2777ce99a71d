// headfuse internal: the scalar block codecs behind encode_row/decode_row for the types without a vector path,
// and the few bit-level helpers they share with quantize.cpp.
//
// Every function here follows one function of ggml/src/ggml-quants.c operation for operation, in the same
// order, so that each float operation rounds exactly where ggml's does (the library is built with
// -ffp-contract=off; see docs/ENCODING.md). n is a whole number of the type's blocks.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace headfuse {
struct Kernels;
}

namespace headfuse::blocks {

inline void store_u16(std::byte* p, std::uint16_t v) { std::memcpy(p, &v, sizeof v); }
inline std::uint16_t load_u16(const std::byte* p) {
    std::uint16_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
inline std::uint8_t u8(std::byte b) { return static_cast<std::uint8_t>(b); }

// ggml's nearest_int: adding 1.5 * 2^23 leaves round(f) (ties to even) in the low mantissa bits. For
// |f| > 2^22 the result is what the same bit operations give (ggml asserts, but its release build does not).
inline int nearest_int(float f) {
    const float biased = f + 12582912.0f;
    const auto i = std::bit_cast<std::int32_t>(biased);
    return (i & 0x007FFFFF) - 0x00400000;
}

// ggml casts float to int8_t in C; its x86 build compiles that to cvttss2si (truncate to int32, INT32_MIN when
// NaN or out of range) and keeps the low byte.
inline std::int32_t truncate_like_x86(float v) {
    if (v >= -2147483648.0f && v < 2147483648.0f) return static_cast<std::int32_t>(v);
    return INT32_MIN;
}
inline std::int8_t low_byte(std::int32_t v) { return static_cast<std::int8_t>(static_cast<std::uint8_t>(v)); }

// The scalar F16, BF16, Q8_0 and Q4_0 codecs and finiteness scan (quantize.cpp), the scalar table's entries.
void encode_f16(const float* src, std::byte* dst, std::size_t n);
void encode_bf16(const float* src, std::byte* dst, std::size_t n);
void encode_q8_0(const float* src, std::byte* dst, std::size_t n);
void encode_q4_0(const float* src, std::byte* dst, std::size_t n);
void decode_f16(const std::byte* src, float* dst, std::size_t n);
void decode_bf16(const std::byte* src, float* dst, std::size_t n);
void decode_q8_0(const std::byte* src, float* dst, std::size_t n);
void decode_q4_0(const std::byte* src, float* dst, std::size_t n);
bool all_finite(const float* x, std::size_t n);

// Legacy 32-wide types (ggml-quants.c: quantize_row_q{4_1,5_0,5_1}_ref, dequantize_row_*).
void encode_q4_1(const float* x, std::byte* out, std::size_t n);
void encode_q5_0(const float* x, std::byte* out, std::size_t n);
void encode_q5_1(const float* x, std::byte* out, std::size_t n);
void decode_q4_1(const std::byte* in, float* y, std::size_t n);
void decode_q5_0(const std::byte* in, float* y, std::size_t n);
void decode_q5_1(const std::byte* in, float* y, std::size_t n);
void decode_iq4_nl(const std::byte* in, float* y, std::size_t n);

// 256-wide super-blocks (quantize_row_q{2..6}_K_ref, dequantize_row_q{2..6}_K, dequantize_row_iq4_xs).
void encode_q2_k(const float* x, std::byte* out, std::size_t n);
void encode_q3_k(const float* x, std::byte* out, std::size_t n);
// The scale searches run with the given table's kernels (k4_search, q6_search); the caller checked the CPU. The
// bytes are the same whatever the table.
void encode_q4_k(const float* x, std::byte* out, std::size_t n, const Kernels& k);
void encode_q5_k(const float* x, std::byte* out, std::size_t n, const Kernels& k);
void encode_q6_k(const float* x, std::byte* out, std::size_t n, const Kernels& k);
// The scalar searches, the scalar table's entries: Q4_K/Q5_K's make_qkx2_quants on one super-block, Q6_K's
// make_qx_quants on one sub-block of 16.
void k4_search_scalar(const float* x, int nmax, float rmin, int nstep, float* scales, float* mins, std::uint8_t* L);
void q6_search_scalar(const float* x, float* scales, std::int8_t* L);
void decode_q2_k(const std::byte* in, float* y, std::size_t n);
void decode_q3_k(const std::byte* in, float* y, std::size_t n);
void decode_q4_k(const std::byte* in, float* y, std::size_t n);
void decode_q5_k(const std::byte* in, float* y, std::size_t n);
void decode_q6_k(const std::byte* in, float* y, std::size_t n);
void decode_iq4_xs(const std::byte* in, float* y, std::size_t n);

}  // namespace headfuse::blocks
