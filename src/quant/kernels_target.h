// headfuse: the body of a per-target kernel table (quant/kernels.h), included by kernels_avx2.cpp and
// kernels_avx512.cpp once they have switched their target on. The including file defines HEADFUSE_LANES_AVX2 or
// HEADFUSE_LANES_AVX512 (which lane headers' code to build), HEADFUSE_LANES_TYPE (the float lane type:
// simd::V8 or simd::V16, quant/simd.h), HEADFUSE_RANDOM_LANES_TYPE (the 64-bit one: simd::D4 or simd::D8),
// HEADFUSE_KERNELS_ISA and HEADFUSE_KERNELS_TABLE (the table's instruction set and name). Everything included here has
// internal linkage but the table.
#pragma once

#include "compute/dot.h"
#include "model/random_lanes.h"
#include "quant/lanes.h"

namespace headfuse {
namespace {

void k4_search(const float* x, int nmax, float rmin, int nstep, float* scales, float* mins, std::uint8_t* L) {
    blocks::k4_search_lanes<HEADFUSE_LANES_TYPE>(x, nmax, rmin, nstep, scales, mins, L);
}

void q6_search(const float* x, float* scales, std::int8_t* L) {
    blocks::q6_search_lanes<HEADFUSE_LANES_TYPE>(x, scales, L);
}

}  // namespace

extern const Kernels HEADFUSE_KERNELS_TABLE;
const Kernels HEADFUSE_KERNELS_TABLE{
    .isa = HEADFUSE_KERNELS_ISA,
    .encode_f16 = blocks::encode_f16_lanes<HEADFUSE_LANES_TYPE>,
    .encode_bf16 = blocks::encode_bf16_lanes<HEADFUSE_LANES_TYPE>,
    .encode_q8_0 = blocks::encode_q8_0_lanes<HEADFUSE_LANES_TYPE>,
    .encode_q4_0 = blocks::encode_q4_0_lanes<HEADFUSE_LANES_TYPE>,
    .decode_f16 = blocks::decode_f16_lanes<HEADFUSE_LANES_TYPE>,
    .decode_bf16 = blocks::decode_bf16_lanes<HEADFUSE_LANES_TYPE>,
    .decode_q8_0 = blocks::decode_q8_0_lanes<HEADFUSE_LANES_TYPE>,
    .decode_q4_0 = blocks::decode_q4_0_lanes<HEADFUSE_LANES_TYPE>,
    .all_finite = blocks::all_finite_lanes<HEADFUSE_LANES_TYPE>,
    .k4_search = k4_search,
    .k4_supers = HEADFUSE_LANES_TYPE::W / 8,  // eight sub-blocks of 32 per super-block
    .q6_search = q6_search,
    .q6_subs = HEADFUSE_LANES_TYPE::W,
    .random_chunk = random_lanes::random_chunk_lanes<HEADFUSE_RANDOM_LANES_TYPE>,
    .dot = compute::dot_lanes,
    .dot_tile = compute::dot_tile,
    .transposed = compute::transposed_lanes,
};

}  // namespace headfuse
