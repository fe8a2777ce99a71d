// Reproducible N(0, std) weights: the same bytes for a seed on every compiler, library and machine.
//
// Each tensor is cut into chunks of kRandomChunk elements; chunk c of a tensor is drawn on its own, so chunks can
// be made in any order by any number of threads. The definition of one chunk, which every code path (scalar,
// AVX2, AVX-512) follows to the bit:
//
//  1. Seeding. sm = seed ^ (hash * 0x9e3779b97f4a7c15) ^ (c * 0xd1b54a32d192ed03) (mod 2^64), with hash the
//     FNV-1a hash of the tensor's name. The splitmix64 sequence started at sm gives 32 words; lane l (0..7) of
//     kRandomLanes xoshiro256** generators takes words 4l .. 4l+3 as its state s[0..3].
//  2. Uniforms. A 64-bit output r of a lane becomes the double U(r) = bits(0x4000000000000000 | r >> 12) - 3,
//     i.e. r's top 52 bits as a multiple of 2^-51 in [-1, 1) (exact).
//  3. Rounds. In each round every lane l, in order 0..7, draws u = U(next()), then v = U(next()), and
//     s = u*u + v*v (two products, then their sum; no fused multiply-add). A lane with 0 < s < 1 is accepted:
//     f = sqrt((-2 * L(s)) / s) * 0.02 and it emits (float)(u*f), then (float)(v*f) (round to nearest).
//     Accepted lanes emit in lane order; rounds repeat until the chunk has its n values; the last pair may be
//     cut to its first value.
//  4. L is the logarithm of step 3, for a positive normal double x (s always is: u and v are multiples of 2^-51,
//     so s >= 2^-102):  d = bits(x) - 0x3fe6a09e667f3bcd (mod 2^64, the bits of the double nearest sqrt(1/2));
//     k = d as a signed integer >> 52 (arithmetic; exact integer), m = double with bits bits(x) - (k << 52), so
//     that x = m * 2^k with m in [0x3fe6a09e667f3bcd, 2 * that); z = (m - 1) / (m + 1); z2 = z * z;
//     with c_j the double nearest 1/(2j + 1), a_j = c_j + c_{j+1} * z2 for j = 1, 3, 5, 7, 9, z4 = z2 * z2,
//     z8 = z4 * z4, z16 = z8 * z8:  p = ((a_1 + a_3 * z4) + (a_5 + a_7 * z4) * z8) + a_9 * z16 (the atanh series
//     to z^21, by Estrin's scheme);  L = 2 * (z + (z * z2) * p) + k * 0x1.62e42fefa39efp-1 (ln 2); each
//     operation rounded to double as written, left to right.
//
// Only IEEE +, -, *, / and sqrt and exact integer and bit operations appear, which every conforming platform
// computes alike; the library is compiled with -ffp-contract=off so that none is fused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace headfuse {

inline constexpr std::size_t kRandomChunk = std::size_t{1} << 16;
inline constexpr std::size_t kRandomLanes = 8;
inline constexpr double kInitStd = 0.02;

std::uint64_t name_hash(std::string_view name) noexcept;

// Fills out[0, n) (n <= kRandomChunk) with the first n values of chunk `chunk` of the tensor whose name hashes
// to `hash`, with the active kernel table's implementation (quant/kernels.h).
void random_normal_chunk(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk, float* out,
                         std::size_t n) noexcept;

// The scalar implementation, the scalar kernel table's entry; the others are the AVX2 and AVX-512 tables'
// (quant/kernels.h: a test holds every supported one against this through kernels::for_isa).
void random_normal_chunk_scalar(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk, float* out,
                                std::size_t n) noexcept;

// A deterministic natural logarithm for x > 0 (exposed for tests): the L of step 4 above for normal x, extended
// to subnormals (scaled by 2^54 first), 0 (-inf), +inf, and negative or NaN x (NaN).
double portable_log(double x) noexcept;

}  // namespace headfuse
