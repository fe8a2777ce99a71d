// headfuse: the forward pass's hot loop, written once and compiled per instruction set into the kernel tables of
// quant/kernels.h (kernels.cpp for the baseline, kernels_avx2.cpp and kernels_avx512.cpp for theirs).
//
// Eight f64 lanes (lane j sums the terms i = j mod 8, in order), added pairwise at the end: a fixed order,
// independent of threads and of the target, that the compiler may vectorize without changing a bit (AVX2 is
// about 3x faster than baseline x86-64's SSE2). Internal linkage: each build is its own function.
#pragma once

#include <cstddef>

namespace headfuse::compute {
namespace {

inline float dot_lanes(const float* a, const float* b, std::size_t n) {
    double acc[8] = {};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (std::size_t j = 0; j < 8; ++j) acc[j] += double(a[i + j]) * double(b[i + j]);
    for (std::size_t j = 0; i < n; ++i, ++j) acc[j] += double(a[i]) * double(b[i]);
    return float(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}

// The backward pass's transposed product (compute/backward.cpp), one weight row at a time: for t < n_tok,
// acc[t * w + i] += g[t * g_stride] * row[i] for i < w, in f64. Each term is one multiply and one add (the library
// is built without contraction), so every table gives the same bits.
inline void transposed_lanes(double* acc, std::size_t w, const float* row, const float* g, std::size_t g_stride,
                             std::size_t n_tok) {
    for (std::size_t t = 0; t < n_tok; ++t) {
        const double gd = g[t * g_stride];
        if (gd == 0) continue;
        double* s = acc + t * w;
        for (std::size_t i = 0; i < w; ++i) s[i] += gd * double(row[i]);
    }
}

}  // namespace
}  // namespace headfuse::compute
