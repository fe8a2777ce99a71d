// headfuse: the K-quant scale searches of quant_lanes.h built for AVX2, eight sub-blocks per call. The whole
// file is compiled for that target; the caller checks the CPU (kernels::isa_supported).
#if defined(__x86_64__) && defined(__GNUC__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC target("avx2")
#endif
#define HEADFUSE_LANES_AVX2 1
#include "quant/lanes.h"

namespace headfuse::blocks {

void k4_search_avx2(const float* x, int nmax, float rmin, int nstep, float* scales, float* mins, std::uint8_t* L) {
    k4_search_lanes<V8>(x, nmax, rmin, nstep, scales, mins, L);
}

void q6_search_avx2(const float* x, float* scales, std::int8_t* L) { q6_search_lanes<V8>(x, scales, L); }

}  // namespace headfuse::blocks

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
