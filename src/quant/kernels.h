// headfuse: the encoders' instruction-set kernels and ggml's scalar reference, for the tests and the benchmark
// (internal; defined in quantize.cpp). The public encode_row, decode_row and all_finite (headfuse/quantize.h)
// run the best kernel this CPU supports.
#pragma once

#include <cstddef>
#include <cstdint>

#include "headfuse/types.h"

namespace headfuse {

namespace reference {
// ggml's scalar reference encoders, kept as the oracle for the fast path.
void encode_row(DType t, const float* src, void* dst, std::size_t n) noexcept;
}  // namespace reference

namespace kernels {
// The instruction sets the fast paths are written for. encode_row, decode_row and all_finite use best_isa();
// these overloads let a test hold every kernel this CPU can run against headfuse::reference.
enum class Isa : std::uint8_t { Scalar, Avx2, Avx512 };
Isa best_isa() noexcept;
bool isa_supported(Isa isa) noexcept;
// As the functions above, with the given (supported) instruction set.
void encode_row(Isa isa, DType t, const float* src, void* dst, std::size_t n) noexcept;
void decode_row(Isa isa, DType t, const void* src, float* dst, std::size_t n) noexcept;
bool all_finite(Isa isa, const float* x, std::size_t n) noexcept;
}  // namespace kernels

}  // namespace headfuse
