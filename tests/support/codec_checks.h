// headfuse tests: comparing encodings byte for byte and decodings bit for bit, with messages that show the
// first differing block and its input.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "headfuse/types.h"
#include "quant/kernels.h"

namespace headfuse::test {

// The seed of randomised codec tests (HEADFUSE_TEST_SEED, see models.h) mixed with a per-test salt, so tests stay
// independent of each other's draws.
std::uint64_t salted_seed(std::uint64_t salt);

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
