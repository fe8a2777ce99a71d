// headfuse: the AVX2 (with F16C and POPCNT) kernel table (quant/kernels.h). The kernels are written once over a lane
// type (quant/lanes.h, model/random_lanes.h, compute/dot.h); this translation unit compiles them whole for AVX2 (with
// F16C and POPCNT) and nothing else. Every header is included before the target is switched on, so that no inline
// function with external linkage is built for it: the lane headers' own code has internal linkage. The CPU is checked
// before the table is used (isa_supported).
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
#pragma clang attribute push(__attribute__((target("avx2,f16c,popcnt"))), apply_to = function)
#else
#pragma GCC target("avx2,f16c,popcnt")
#endif
#define HEADFUSE_LANES_AVX2 1
#define HEADFUSE_LANES_TYPE simd::V8
#define HEADFUSE_RANDOM_LANES_TYPE simd::D4
#define HEADFUSE_KERNELS_ISA Isa::Avx2
#define HEADFUSE_KERNELS_TABLE kKernelsAvx2
#include "quant/kernels_target.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
