// headfuse: the forward pass's hot loop, written once and compiled per instruction set into the kernel tables of
// quant/kernels.h (kernels.cpp for the baseline, kernels_avx2.cpp and kernels_avx512.cpp for theirs).
//
// Eight f64 lanes (lane j sums the terms i = j mod 8, in order), added pairwise at the end: a fixed order,
// independent of threads and of the target, that the compiler may vectorize without changing a bit (AVX2 is
// about 3x faster than baseline x86-64's SSE2). Internal linkage: each build is its own function.
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>

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

// dot_lanes over a tile: y[t * y_stride + r] = dot_lanes(row r of w, row t of x) for r < rows, t < n_tok, bit for
// bit, with w and x already in f64 (rows of n elements, n a multiple of 8, zero past the real length: a zero term
// leaves an f64 sum that started at +0 as it was). The forward pass's matmul calls it on a block of weight rows
// decoded once, with every activation row converted once. Each sum is a vector of the eight lanes, so a micro-tile
// of kTileRows weight rows by kTileTokens activation rows keeps its sums in registers and loads each operand once
// for several products. Each term is one multiply and one add (the library is built without contraction; the
// product of two floats is exact in f64, so a fused multiply-add would give the same bits).
//
// The sums run over the columns a chunk of kChunk at a time, in order, each sum kept in memory between chunks
// (each lane still adds its terms in order): a chunk of the block's weight rows and of kTokenBlock activation
// rows stay in a core's L2 cache while every pair of them is summed, so a 7B model's rows of 11008 are read
// from memory once for kTokenBlock tokens and once for the block's rows, not once for every micro-tile.
using Lanes8 = double __attribute__((vector_size(64)));
#if defined(HEADFUSE_LANES_AVX512)
inline constexpr std::size_t kTileRows = 4, kTileTokens = 6;  // 24 sums + 5 operands in 32 zmm registers
#else
inline constexpr std::size_t kTileRows = 2, kTileTokens = 3;  // 6 sums of 2 ymm (4 xmm) registers each
#endif
inline constexpr std::size_t kChunk = 512, kTokenBlock = 8 * kTileTokens;  // 4 KiB of a row; 48 or 24 tokens

// Sums R weight rows by T activation rows over columns [k0, k1): sums[r * sums_stride + t] holds pair (r, t)'s
// eight lanes, which start at zero when k0 is 0.
template <std::size_t R, std::size_t T>
inline void dot_micro(const double* w, const double* x, std::size_t n, std::size_t k0, std::size_t k1, double* sums,
                      std::size_t sums_stride) {
    Lanes8 acc[R][T];
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t t = 0; t < T; ++t) {
            if (k0 == 0)
                acc[r][t] = Lanes8{};
            else
                __builtin_memcpy(&acc[r][t], sums + (r * sums_stride + t) * 8, sizeof(Lanes8));
        }
    for (std::size_t i = k0; i < k1; i += 8) {
        Lanes8 wv[R];
#pragma GCC unroll 8
        for (std::size_t r = 0; r < R; ++r) __builtin_memcpy(&wv[r], w + r * n + i, sizeof(Lanes8));
#pragma GCC unroll 8
        for (std::size_t t = 0; t < T; ++t) {
            Lanes8 xv;
            __builtin_memcpy(&xv, x + t * n + i, sizeof(Lanes8));
#pragma GCC unroll 8
            for (std::size_t r = 0; r < R; ++r) acc[r][t] += wv[r] * xv;
        }
    }
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t t = 0; t < T; ++t)
            __builtin_memcpy(sums + (r * sums_stride + t) * 8, &acc[r][t], sizeof(Lanes8));
}

// Rows of kTileRows (then one at a time) against T activation rows, over columns [k0, k1).
template <std::size_t T>
inline void dot_chunk_rows(const double* w, std::size_t rows, const double* x, std::size_t n, std::size_t k0,
                           std::size_t k1, double* sums, std::size_t sums_stride) {
    std::size_t r = 0;
    for (; r + kTileRows <= rows; r += kTileRows)
        dot_micro<kTileRows, T>(w + r * n, x, n, k0, k1, sums + r * sums_stride * 8, sums_stride);
    for (; r < rows; ++r) dot_micro<1, T>(w + r * n, x, n, k0, k1, sums + r * sums_stride * 8, sums_stride);
}

inline void dot_tile(const double* w, std::size_t rows, const double* x, std::size_t n_tok, std::size_t n, float* y,
                     std::size_t y_stride) {
    const std::unique_ptr<double[]> sums(new double[rows * std::min(n_tok, kTokenBlock) * 8]);  // set by chunk 0
    for (std::size_t t0 = 0; t0 < n_tok; t0 += kTokenBlock) {
        const std::size_t tb = std::min(kTokenBlock, n_tok - t0);
        for (std::size_t k0 = 0; k0 < n; k0 += kChunk) {
            const std::size_t k1 = std::min(n, k0 + kChunk);
            std::size_t t = 0;
            for (; t + kTileTokens <= tb; t += kTileTokens)
                dot_chunk_rows<kTileTokens>(w, rows, x + (t0 + t) * n, n, k0, k1, sums.get() + t * 8, tb);
            for (; t < tb; ++t) dot_chunk_rows<1>(w, rows, x + (t0 + t) * n, n, k0, k1, sums.get() + t * 8, tb);
        }
        for (std::size_t t = 0; t < tb; ++t)  // y's rows in order, each written left to right
            for (std::size_t r = 0; r < rows; ++r) {
                const double* a = &sums[(r * tb + t) * 8];
                y[(t0 + t) * y_stride + r] = float(((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));
            }
    }
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
