// headfuse internal: the instruction sets headfuse's kernels are built for, the one CPU check, and the one table
// of kernels per instruction set. Every SIMD path of the library is an entry of `Kernels`: the encoders and
// decoders (quantize.cpp), the K-quant scale searches (kquants.cpp), the random generator (model/random.cpp)
// and the forward pass's dot product (compute/forward.cpp).
//
// One pattern builds every table: the code is written once over a lane type (quant/lanes.h: V8, V16;
// model/random_lanes.h; compute/dot.h), and each of kernels_avx2.cpp and kernels_avx512.cpp compiles it whole
// for its target and defines that target's table. The scalar table (kernels.cpp) holds ggml's reference
// functions. active() is chosen once, the first time it is asked for, from best_isa(). The tests and the
// benchmark hold every supported table against the scalar one through for_isa().
#pragma once

#include <cstddef>
#include <cstdint>

#include "headfuse/types.h"

namespace headfuse {

// Avx2: AVX2, F16C and POPCNT. Avx512: those and AVX-512 F, BW and VL. Both x86-64 only.
enum class Isa : std::uint8_t { Scalar, Avx2, Avx512 };
inline constexpr Isa kIsas[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512};

bool isa_supported(Isa isa) noexcept;  // compiled in, and supported by this CPU and OS
Isa best_isa() noexcept;               // the widest supported
const char* isa_name(Isa isa) noexcept;

using EncodeFn = void (*)(const float* src, std::byte* dst, std::size_t n);
using DecodeFn = void (*)(const std::byte* src, float* dst, std::size_t n);

struct Kernels {
    Isa isa;
    // F16, BF16, Q8_0 and Q4_0 rows, and the finiteness scan; n is a whole number of blocks.
    EncodeFn encode_f16, encode_bf16, encode_q8_0, encode_q4_0;
    DecodeFn decode_f16, decode_bf16, decode_q8_0, decode_q4_0;
    bool (*all_finite)(const float* x, std::size_t n);
    // Q4_K/Q5_K's make_qkx2_quants searches on k4_supers consecutive super-blocks of 256: scales[j], mins[j] and
    // codes L of their sub-blocks of 32.
    void (*k4_search)(const float* x, int nmax, float rmin, int nstep, float* scales, float* mins, std::uint8_t* L);
    int k4_supers;
    // Q6_K's make_qx_quants (rmse_type 1) on q6_subs consecutive sub-blocks of 16: their scales, and their codes
    // plus 32.
    void (*q6_search)(const float* x, float* scales, std::int8_t* L);
    int q6_subs;
    // random.h's chunk: the same bytes in every table.
    void (*random_chunk)(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk, float* out, std::size_t n);
    // The forward pass's dot product (compute/dot.h): the same result in every table.
    float (*dot)(const float* a, const float* b, std::size_t n);
    // The forward pass's matmul on a tile of f64 rows (compute/dot.h): dot's result for each pair, in every table.
    void (*dot_tile)(const double* w, std::size_t rows, const double* x, std::size_t n_tok, std::size_t n, float* y,
                     std::size_t y_stride);
    // The backward pass's transposed product, a weight row at a time (compute/dot.h): the same result in every table.
    void (*transposed)(double* acc, std::size_t w, const float* row, const float* g, std::size_t g_stride,
                       std::size_t n_tok);
};

namespace kernels {
const Kernels& active() noexcept;          // best_isa()'s table, chosen once
const Kernels& for_isa(Isa isa) noexcept;  // precondition: isa_supported(isa)
// As headfuse/quantize.h's encode_row, decode_row and all_finite, with the given (supported) instruction set.
void encode_row(Isa isa, DType t, const float* src, void* dst, std::size_t n) noexcept;
void decode_row(Isa isa, DType t, const void* src, float* dst, std::size_t n) noexcept;
bool all_finite(Isa isa, const float* x, std::size_t n) noexcept;
}  // namespace kernels

namespace reference {
// ggml's scalar reference encoders, kept as the oracle for the fast paths: encode_row with the scalar table.
void encode_row(DType t, const float* src, void* dst, std::size_t n) noexcept;
}  // namespace reference

}  // namespace headfuse
