// headfuse: the AVX-512 (F, BW, VL) kernel table (quant/kernels.h). The kernels are written once over a lane type
// (quant/lanes.h, model/random_lanes.h, compute/dot.h); this translation unit compiles them whole for AVX-512 (F, BW,
// VL) and nothing else. Every header is included before the target is switched on, so that no inline function with
// external linkage is built for it: the lane headers' own code has internal linkage. The CPU is checked before
// the table is used (isa_supported).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "headfuse/quantize.h"
#include "model/random.h"
#include "quant/blocks.h"
#include "quant/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c,popcnt"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,f16c,popcnt")
#endif
#define HEADFUSE_LANES_AVX512 1
#define HEADFUSE_LANES_TYPE simd::V16
#define HEADFUSE_RANDOM_LANES_TYPE simd::D8
#define HEADFUSE_KERNELS_ISA Isa::Avx512
#define HEADFUSE_KERNELS_TABLE kKernelsAvx512
#include "quant/kernels_target.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
