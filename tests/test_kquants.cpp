// headfuse's codecs for the 32-wide Q4_1/Q5_0/Q5_1/IQ4_NL and the 256-wide K-quants and IQ4_XS, against ggml's
// own (libggml-base.so, see support/ggml_lib.h): decoding every type headfuse reads against ggml's to_float on
// random valid blocks, and encoding against ggml_quantize_chunk without an importance matrix. Byte for byte and
// bit for bit: there are no tolerances.

#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "headfuse/quantize.h"
#include "quant/kernels.h"
#include "support/codec_checks.h"
#include "support/ggml_lib.h"

namespace headfuse {
namespace {

using test::encode_fast, test::encode_reference, test::GgmlLib, test::normal_values, test::same_bits,
    test::same_encoding, test::salted_seed;

// Every type headfuse decodes.
constexpr DType kReadTypes[] = {DType::F16,  DType::BF16, DType::Q4_0,   DType::Q4_1,  DType::Q5_0,
                                DType::Q5_1, DType::Q8_0, DType::Q2_K,   DType::Q3_K,  DType::Q4_K,
                                DType::Q5_K, DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS};
// The encoders of this file (F16, BF16, Q8_0 and Q4_0 are tested in test_quantize.cpp).
constexpr DType kNewEncoders[] = {DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K,
                                  DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// Byte offsets of the fp16 scales inside one block of t (ggml-common.h's block structs).
std::vector<std::size_t> fp16_fields(DType t) {
    switch (t) {
        case DType::Q4_0:
        case DType::Q5_0:
        case DType::Q8_0:
        case DType::IQ4_NL:
        case DType::IQ4_XS: return {0};
        case DType::Q4_1:
        case DType::Q5_1:
        case DType::Q4_K:
        case DType::Q5_K: return {0, 2};
        case DType::Q2_K: return {80, 82};
        case DType::Q3_K: return {108};
        case DType::Q6_K: return {208};
        default: return {};
    }
}

// n elements of random valid blocks of t: random bytes, with every fp16 scale (and every F16/BF16 value) made
// finite, since a NaN's payload is not part of what the decoders promise.
std::vector<std::byte> random_blocks(std::mt19937_64& rng, DType t, std::size_t n) {
    std::vector<std::byte> bytes(row_bytes(t, n));
    for (std::byte& b : bytes) b = static_cast<std::byte>(rng());
    auto make_finite = [&](std::size_t at, std::uint16_t exponent) {
        std::uint16_t h;
        std::memcpy(&h, bytes.data() + at, 2);
        if ((h & exponent) == exponent) h = static_cast<std::uint16_t>(h & ~(exponent & (exponent >> 1)));
        std::memcpy(bytes.data() + at, &h, 2);
    };
    if (t == DType::F16 || t == DType::BF16) {
        for (std::size_t at = 0; at < bytes.size(); at += 2) make_finite(at, t == DType::F16 ? 0x7C00 : 0x7F80);
        return bytes;
    }
    const std::size_t block_bytes = traits(t).type_size;
    for (std::size_t b = 0; b < bytes.size(); b += block_bytes)
        for (std::size_t at : fp16_fields(t)) make_finite(b + at, 0x7C00);
    return bytes;
}

std::vector<float> decode(DType t, const std::vector<std::byte>& bytes, std::size_t n) {
    std::vector<float> out(n);
    decode_row(t, bytes.data(), out.data(), n);
    return out;
}

TEST(DecodeEveryType, RandomValidBlocksMatchGgml) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::mt19937_64 rng(salted_seed(101));
    constexpr std::size_t kValues = 256 * 64;
    for (DType t : kReadTypes) {
        ASSERT_TRUE(traits(t).reads) << type_name(t);
        ASSERT_TRUE(ggml->has_to_float(t)) << type_name(t) << ": ggml_get_type_traits is missing or differs";
        for (int round = 0; round < 4; ++round) {
            const std::vector<std::byte> bytes = random_blocks(rng, t, kValues);
            EXPECT_TRUE(same_bits(decode(t, bytes, kValues), ggml->to_float(t, bytes.data(), kValues)))
                << type_name(t) << ", round " << round;
        }
    }
}

// The probe of ggml's dequantizers answers false for ids ggml does not define (4 and 5, removed types; the type
// count and past it) instead of reading past ggml's traits table.
TEST(DecodeEveryType, ProbeRefusesIdsGgmlDoesNotDefine) {
    HEADFUSE_REQUIRE_GGML(ggml);
    for (std::uint32_t id : {4u, 5u, 43u, 1000u, 0x7fffffffu})
        EXPECT_FALSE(ggml->has_to_float(static_cast<DType>(id))) << id;
    EXPECT_TRUE(ggml->has_to_float(DType::IQ4_NL));
    EXPECT_TRUE(ggml->has_to_float(DType::IQ4_XS));
}

TEST(DecodeEveryType, ExtremeScalesMatchGgml) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::mt19937_64 rng(salted_seed(102));
    // Largest finite, smallest subnormal, negative and zero scales, in every fp16 field.
    const std::uint16_t scales[] = {0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x0000, 0x8000, 0x3C00, 0x0400};
    for (DType t : kReadTypes) {
        const std::vector<std::size_t> fields = fp16_fields(t);
        if (fields.empty()) continue;
        std::vector<std::byte> bytes = random_blocks(rng, t, 256 * 16);
        const std::size_t block_bytes = traits(t).type_size;
        std::size_t k = 0;
        for (std::size_t b = 0; b < bytes.size(); b += block_bytes)
            for (std::size_t at : fields) std::memcpy(bytes.data() + b + at, &scales[k++ % std::size(scales)], 2);
        EXPECT_TRUE(same_bits(decode(t, bytes, 256 * 16), ggml->to_float(t, bytes.data(), 256 * 16))) << type_name(t);
    }
}

// ---- encoders ----

void expect_matches_ggml(const GgmlLib& ggml, DType t, const std::vector<float>& x, std::size_t rows,
                         const std::string& what) {
    const auto n_per_row = static_cast<std::int64_t>(x.size() / rows);
    const std::vector<std::byte> want = ggml.quantize(t, x.data(), static_cast<std::int64_t>(rows), n_per_row);
    EXPECT_TRUE(same_encoding(t, encode_reference(t, x), want, x)) << what << ", reference";
    EXPECT_TRUE(same_encoding(t, encode_fast(t, x), want, x)) << what << ", encode_row";
    // Every kernel table this CPU runs, not only the one encode_row dispatches to.
    for (Isa isa : test::supported_isas()) {
        std::vector<std::byte> out(row_bytes(t, x.size()));
        kernels::encode_row(isa, t, x.data(), out.data(), x.size());
        EXPECT_TRUE(same_encoding(t, out, want, x)) << what << ", " << isa_name(isa);
    }
}

TEST(EncodeNewTypes, RandomNormalRowsMatchGgml) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::mt19937_64 rng(salted_seed(103));
    for (float scale : {1.0f, 0.02f, 1e-3f, 300.0f})
        for (DType t : kNewEncoders)
            expect_matches_ggml(*ggml, t, normal_values(rng, 256 * 48, scale), 6, "normal x " + std::to_string(scale));
}

TEST(EncodeNewTypes, HeavyTailsAndOffsetsMatchGgml) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::mt19937_64 rng(salted_seed(104));
    std::student_t_distribution<float> heavy(2.0f);
    std::vector<float> x(256 * 32);
    for (float& v : x) v = heavy(rng) * 0.05f;
    for (DType t : kNewEncoders) expect_matches_ggml(*ggml, t, x, 4, "student t");
    // All positive, all negative, a constant offset: the min/scale searches take their other branches.
    for (float offset : {3.0f, -3.0f}) {
        std::vector<float> y = normal_values(rng, 256 * 16, 0.5f);
        for (float& v : y) v = std::fabs(v) * (offset > 0 ? 1.0f : -1.0f) + offset;
        for (DType t : kNewEncoders) expect_matches_ggml(*ggml, t, y, 2, "offset " + std::to_string(offset));
    }
}

// Blocks on the edges: zeros, constants, single spikes, ties on the grid, tiny and huge magnitudes.
std::vector<std::vector<float>> edge_superblocks(std::mt19937_64& rng) {
    std::vector<std::vector<float>> out;
    auto filled = [](float v) { return std::vector<float>(256, v); };
    out.push_back(filled(0.0f));
    out.push_back(filled(-0.0f));
    out.push_back(filled(1.0f));
    out.push_back(filled(-2.5f));
    for (std::size_t pos : {0u, 17u, 100u, 255u}) {
        std::vector<float> x = filled(0.0f);
        x[pos] = 1.0f;
        out.push_back(x);
        x[pos] = -7.25f;
        out.push_back(x);
    }
    {
        // Half of the sub-blocks zero, half normal.
        std::vector<float> x = normal_values(rng, 256, 1.0f);
        for (std::size_t j = 0; j < 256; ++j)
            if ((j / 16) % 2 == 0) x[j] = 0.0f;
        out.push_back(x);
        for (std::size_t j = 0; j < 256; ++j)
            if ((j / 32) % 2 == 1) x[j] = 0.0f;
        out.push_back(x);
    }
    {
        // Small integers and halves: many values sit exactly on (or halfway between) grid points.
        std::uniform_int_distribution<int> small(-8, 8);
        std::vector<float> x(256);
        for (float& v : x) v = static_cast<float>(small(rng));
        out.push_back(x);
        for (float& v : x) v = static_cast<float>(small(rng)) + 0.5f;
        out.push_back(x);
        for (float& v : x) v = static_cast<float>(small(rng) & 3);
        out.push_back(x);
        for (std::size_t j = 0; j < 256; ++j) x[j] = static_cast<float>(j % 32);
        out.push_back(x);
        for (std::size_t j = 0; j < 256; ++j) x[j] = static_cast<float>(j % 16) - 8.0f;
        out.push_back(x);
    }
    for (float scale : {1e-38f, 1e-30f, 1e-20f, 1e-10f, 1e-7f, 6e-5f, 1e4f, 6e4f, 1e6f, 1e10f, 1e20f}) {
        out.push_back(normal_values(rng, 256, scale));
    }
    {
        std::vector<float> x = normal_values(rng, 256, 1e-3f);
        x[5] = 1e3f;  // one outlier dominates the super-block's scale
        out.push_back(x);
        x[5] = -65504.0f * 8;
        out.push_back(x);
    }
    {
        // f32 subnormals.
        std::vector<float> x(256);
        for (std::size_t j = 0; j < 256; ++j)
            x[j] = std::bit_cast<float>(static_cast<std::uint32_t>(j * 0x7FFFu + 1u)) * (j % 2 ? -1.0f : 1.0f);
        out.push_back(x);
    }
    return out;
}

TEST(EncodeNewTypes, EdgeSuperBlocksMatchGgml) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::mt19937_64 rng(salted_seed(105));
    std::vector<float> all;
    const auto blocks = edge_superblocks(rng);
    for (std::size_t i = 0; i < blocks.size(); ++i) {
        for (DType t : kNewEncoders) expect_matches_ggml(*ggml, t, blocks[i], 1, "edge block " + std::to_string(i));
        all.insert(all.end(), blocks[i].begin(), blocks[i].end());
    }
    for (DType t : kNewEncoders) expect_matches_ggml(*ggml, t, all, 1, "all edge blocks in one row");
}

TEST(EncodeNewTypes, DecodingOwnEncodingMatchesGgml) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::mt19937_64 rng(salted_seed(106));
    const std::vector<float> x = normal_values(rng, 256 * 8, 1.0f);
    for (DType t : kNewEncoders) {
        const std::vector<std::byte> bytes = encode_reference(t, x);
        EXPECT_TRUE(same_bits(decode(t, bytes, x.size()), ggml->to_float(t, bytes.data(), x.size()))) << type_name(t);
    }
}

}  // namespace
}  // namespace headfuse
