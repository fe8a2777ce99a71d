// Reproducible N(0, std) weights: the same bytes for a seed on every compiler, library and machine.
//
// Each tensor is cut into chunks of kRandomChunk elements; chunk c of tensor `name` draws from its own
// xoshiro256** stream seeded by splitmix64(seed, fnv1a(name), c), through Marsaglia's polar method with a
// logarithm of our own (IEEE +,-,*,/ and sqrt only, which every conforming platform rounds alike). Chunks are
// independent, so any number of threads produces the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace headfuse {

inline constexpr std::size_t kRandomChunk = std::size_t{1} << 16;
inline constexpr double kInitStd = 0.02;

std::uint64_t name_hash(std::string_view name) noexcept;

// Fills out[0, n) (n <= kRandomChunk) with chunk `chunk` of the tensor whose name hashes to `hash`.
void random_normal_chunk(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk, float* out,
                         std::size_t n) noexcept;

// A deterministic natural logarithm for x > 0 (exposed for tests).
double portable_log(double x) noexcept;

}  // namespace headfuse
