#include "support/codec_checks.h"

#include <bit>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "headfuse/quantize.h"
#include "quant/kernels.h"
#include "support/models.h"

namespace headfuse::test {

std::vector<std::byte> encode_reference(DType t, const std::vector<float>& x) {
    std::vector<std::byte> out(row_bytes(t, x.size()));
    reference::encode_row(t, x.data(), out.data(), x.size());
    return out;
}

std::vector<std::byte> encode_fast(DType t, const std::vector<float>& x) {
    std::vector<std::byte> out(row_bytes(t, x.size()));
    encode_row(t, x.data(), out.data(), x.size());
    return out;
}

std::vector<float> normal_values(std::mt19937_64& rng, std::size_t n, float scale) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng) * scale;
    return x;
}

std::uint64_t salted_seed(std::uint64_t salt) {
    ::testing::Test::RecordProperty("seed", std::to_string(test_seed()));
    return test_seed() ^ (salt * 0x9E3779B97F4A7C15ull);
}

std::string hex_bytes(const std::byte* p, std::size_t n) {
    std::string s;
    char buf[4];
    for (std::size_t i = 0; i < n; ++i) {
        std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned>(p[i]));
        s += buf;
    }
    return s;
}

::testing::AssertionResult same_encoding(DType t, const std::vector<std::byte>& got, const std::vector<std::byte>& want,
                                         const std::vector<float>& x) {
    if (got.size() != want.size())
        return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
    const std::size_t block_bytes = traits(t).type_size;
    const std::size_t block_n = traits(t).block_size;
    for (std::size_t b = 0; b * block_bytes < got.size(); ++b) {
        const std::byte* g = got.data() + b * block_bytes;
        const std::byte* w = want.data() + b * block_bytes;
        if (std::memcmp(g, w, block_bytes) == 0) continue;
        std::ostringstream msg;
        msg << type_name(t) << " block " << b << ": got " << hex_bytes(g, block_bytes) << ", want "
            << hex_bytes(w, block_bytes) << "; input";
        for (std::size_t j = 0; j < block_n; ++j) {
            char buf[48];
            std::snprintf(buf, sizeof buf, " %a", static_cast<double>(x[b * block_n + j]));
            msg << buf;
        }
        return ::testing::AssertionFailure() << msg.str();
    }
    return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_bits(const std::vector<float>& got, const std::vector<float>& want) {
    if (got.size() != want.size())
        return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
    for (std::size_t i = 0; i < got.size(); ++i) {
        const auto g = std::bit_cast<std::uint32_t>(got[i]), w = std::bit_cast<std::uint32_t>(want[i]);
        if (g != w)
            return ::testing::AssertionFailure() << "element " << i << ": got " << got[i] << " (bits " << std::hex << g
                                                 << "), want " << want[i] << " (bits " << w << ")";
    }
    return ::testing::AssertionSuccess();
}

}  // namespace headfuse::test
