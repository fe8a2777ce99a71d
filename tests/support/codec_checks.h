// headfuse tests: comparing encodings byte for byte and decodings bit for bit, with messages that show the
// first differing block and its input.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "headfuse/types.h"
#include "quant/kernels.h"

namespace headfuse::test {

// The seed of randomised codec tests (HEADFUSE_TEST_SEED, see models.h) mixed with a per-test salt, so tests stay
// independent of each other's draws.
std::uint64_t salted_seed(std::uint64_t salt);

// x encoded as t by headfuse::reference::encode_row (ggml's algorithms, scalar) and by the public encode_row
// (the fastest kernel this CPU runs).
std::vector<std::byte> encode_reference(DType t, const std::vector<float>& x);
std::vector<std::byte> encode_fast(DType t, const std::vector<float>& x);

// n draws of N(0, scale^2) from rng.
std::vector<float> normal_values(std::mt19937_64& rng, std::size_t n, float scale);

std::string hex_bytes(const std::byte* p, std::size_t n);

// Equal encodings of x, or a message naming the first differing block, both encodings of it and its input.
::testing::AssertionResult same_encoding(DType t, const std::vector<std::byte>& got, const std::vector<std::byte>& want,
                                         const std::vector<float>& x);

// The same float bit patterns, or a message naming the first element that differs.
::testing::AssertionResult same_bits(const std::vector<float>& got, const std::vector<float>& want);

// Every instruction set whose kernel table this CPU runs (quant/kernels.h), the scalar reference first.
inline std::vector<Isa> supported_isas() {
    std::vector<Isa> out;
    for (Isa isa : kIsas)
        if (isa_supported(isa)) out.push_back(isa);
    return out;
}

}  // namespace headfuse::test
