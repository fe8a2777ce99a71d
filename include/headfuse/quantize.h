// headfuse: encoding F32 rows to the types headfuse writes (F16, BF16, the legacy and K-quant block types) and
// decoding every type it reads, byte for byte as ggml does.
//
// The encoders reproduce ggml's scalar reference functions (ggml/src/ggml-quants.c: quantize_row_q8_0_ref,
// quantize_row_q4_0_ref; ggml.c: ggml_fp32_to_fp16_row, ggml_fp32_to_bf16_row), which are what ggml uses when
// it writes a file. The fast paths are vectorized and produce the same bytes (src/kernels.h keeps the scalar reference
// as their oracle).
//
// Block layouts (little-endian):
//   Q8_0: 32 elements -> { fp16 d; int8 qs[32]; }   34 bytes
//   Q4_0: 32 elements -> { fp16 d; uint8 qs[16]; }  18 bytes, qs[j] = q[j] | q[j+16] << 4
#pragma once

#include <cstddef>
#include <cstdint>

#include "headfuse/types.h"

namespace headfuse {

// One value between f32 and the 16-bit formats, as ggml converts it: to fp16 rounds to nearest even (65520 and
// above become infinity), to bf16 rounds to nearest even (a NaN stays a quiet NaN); both widenings are exact.
std::uint16_t fp32_to_fp16(float f) noexcept;
float fp16_to_fp32(std::uint16_t h) noexcept;
std::uint16_t fp32_to_bf16(float f) noexcept;
float bf16_to_fp32(std::uint16_t h) noexcept;

// Encodes n floats (n a multiple of the type's block size) into row_bytes(t, n) bytes at dst, t a type whose
// traits say `writes`. Fast path (the best instruction set this CPU has; the bytes do not depend on it).
// The input must be finite (see all_finite); the result for non-finite input is unspecified.
void encode_row(DType t, const float* src, void* dst, std::size_t n) noexcept;
// Decodes n elements of type t (any DType) at src into floats.
void decode_row(DType t, const void* src, float* dst, std::size_t n) noexcept;

// True when none of the n floats is NaN or infinite.
bool all_finite(const float* x, std::size_t n) noexcept;

}  // namespace headfuse
