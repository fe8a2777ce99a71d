// headfuse's encoders and decoders against ggml's own (libggml-base.so, see support/ggml_lib.h), and every fast
// kernel this CPU can run against headfuse::reference. Everything is compared byte for byte or bit for bit:
// there are no tolerances.

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
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

constexpr std::size_t kBlock = 32;  // Q8_0 and Q4_0 block size
constexpr DType kEncodedTypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0};

float float_of(std::uint32_t u) { return std::bit_cast<float>(u); }
std::uint32_t bits_of(float f) { return std::bit_cast<std::uint32_t>(f); }

// A float for a message: %g, which unlike std::to_string keeps tiny and huge values readable.
std::string show(float f) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(f));
    return buf;
}

using test::supported_isas;

std::vector<std::byte> encode_with(Isa isa, DType t, const std::vector<float>& x) {
    std::vector<std::byte> out(row_bytes(t, x.size()));
    kernels::encode_row(isa, t, x.data(), out.data(), x.size());
    return out;
}

// ggml's encoding of `rows` rows of x, against the reference, the public fast path and every kernel.
void expect_all_match_ggml(const GgmlLib& ggml, DType t, const std::vector<float>& x, std::size_t rows,
                           const std::string& what) {
    const auto n_per_row = static_cast<std::int64_t>(x.size() / rows);
    const std::vector<std::byte> want = ggml.quantize(t, x.data(), static_cast<std::int64_t>(rows), n_per_row);
    EXPECT_TRUE(same_encoding(t, encode_reference(t, x), want, x)) << what << ", reference";
    EXPECT_TRUE(same_encoding(t, encode_fast(t, x), want, x)) << what << ", encode_row";
    for (Isa isa : supported_isas())
        EXPECT_TRUE(same_encoding(t, encode_with(isa, t, x), want, x)) << what << ", " << isa_name(isa);
}

// A random float that is finite: any sign, exponent and mantissa.
float random_finite(std::mt19937_64& rng) {
    for (;;) {
        const float f = float_of(static_cast<std::uint32_t>(rng()));
        if (std::isfinite(f)) return f;
    }
}

// ---- blocks that sit on the edges of the formats ----

struct EdgeBlock {
    std::string name;
    std::vector<float> x;  // kBlock values
};

std::vector<float> filled(float v) { return std::vector<float>(kBlock, v); }

// The float exactly halfway between fp16 values h and h+1 (positive, h+1 finite): fp16 has 10 mantissa bits
// and float 23, so the midpoint is representable.
float fp16_midpoint(std::uint16_t h) {
    const double below = fp16_to_fp32(h);
    const double above = fp16_to_fp32(static_cast<std::uint16_t>(h + 1));
    return static_cast<float>((below + above) / 2);
}

std::vector<EdgeBlock> edge_blocks(std::mt19937_64& rng) {
    std::vector<EdgeBlock> blocks;
    auto add = [&](std::string name, std::vector<float> x) { blocks.push_back({std::move(name), std::move(x)}); };

    add("all zero", filled(0.0f));
    add("all negative zero", filled(-0.0f));
    {
        std::vector<float> x = filled(0.0f);
        for (std::size_t j = 0; j < kBlock; j += 3) x[j] = -0.0f;
        add("mixed signed zeros", x);
    }
    for (std::size_t pos : {0u, 5u, 16u, 31u}) {
        std::vector<float> x = filled(0.0f);
        x[pos] = 1.0f;
        add("single 1 at " + std::to_string(pos), x);
        x[pos] = -3.7f;
        add("single -3.7 at " + std::to_string(pos), x);
    }
    add("all equal", filled(0.3f));
    add("all equal negative", filled(-1234.5f));

    // f32 subnormals, and tiny normals whose Q8_0/Q4_0 scale d is subnormal (then 1/d may overflow).
    {
        std::vector<float> x(kBlock);
        for (std::size_t j = 0; j < kBlock; ++j)
            x[j] = float_of(static_cast<std::uint32_t>(j * 0x3FFFFu + 1u)) * (j % 2 ? -1.0f : 1.0f);
        add("f32 subnormals", x);
        add("smallest subnormal", filled(float_of(1)));
        x = filled(0.0f);
        x[7] = float_of(0x007FFFFF);
        x[9] = -float_of(3);
        add("largest subnormal", x);
    }
    for (float scale : {1e-45f, 1e-42f, 1e-40f, 1e-38f, 1e-37f, 3.7e-37f, 1e-36f, 1e-35f, 1.2e-38f})
        add("tiny scale " + show(scale), normal_values(rng, kBlock, scale));

    // fp16's subnormal range (2^-24 .. 2^-14), its ties, and its ties in the normal range.
    {
        std::vector<float> x(kBlock);
        for (std::size_t j = 0; j < kBlock; ++j) x[j] = std::ldexp(static_cast<float>(j), -24);
        add("fp16 subnormal steps", x);
        for (std::size_t j = 0; j < kBlock; ++j)
            x[j] = std::ldexp(static_cast<float>(j) + 0.5f, -24) * (j % 2 ? -1.0f : 1.0f);
        add("fp16 subnormal ties", x);
        for (std::size_t j = 0; j < kBlock; ++j)
            x[j] = std::ldexp(1.0f + static_cast<float>(j) / 64, -15 + static_cast<int>(j % 3));
        add("fp16 subnormal-normal boundary", x);
        for (std::size_t j = 0; j < kBlock; ++j) x[j] = fp16_midpoint(static_cast<std::uint16_t>(0x3C00 + j));
        add("fp16 ties near 1", x);
        std::uniform_int_distribution<int> finite_h(1, 0x7BFE);
        for (std::size_t j = 0; j < kBlock; ++j)
            x[j] = fp16_midpoint(static_cast<std::uint16_t>(finite_h(rng))) * (j % 2 ? -1.0f : 1.0f);
        add("fp16 ties, random", x);
    }

    // fp16's largest finite value, 65504; from 65520 (the midpoint to the next power) F16 rounds to infinity.
    {
        const float around_max[] = {65504.0f,
                                    -65504.0f,
                                    65519.0f,
                                    float_of(0x477FEFFF),
                                    65520.0f,
                                    -65520.0f,
                                    65536.0f,
                                    float_of(0x477FE001),
                                    float_of(0x477FDFFF),
                                    1e5f,
                                    -1e6f,
                                    65505.0f,
                                    65500.0f,
                                    32768.0f,
                                    65503.0f,
                                    float_of(0x477FF001),
                                    -65519.0f};
        std::vector<float> x = normal_values(rng, kBlock, 1000.0f);
        std::copy(std::begin(around_max), std::end(around_max), x.begin());
        add("fp16 max", x);
    }
    // Q8_0 stores d = amax/127: around amax = 127*65504 the stored scale overflows fp16.
    for (float amax : {127.0f * 65504.0f, 127.0f * 65520.0f, 127.0f * 65519.0f, 8.0f * 65504.0f, 8.0f * 65520.0f}) {
        std::vector<float> x = normal_values(rng, kBlock, amax / 4);
        x[11] = amax;
        add("scale overflow near " + show(amax), x);
    }
    {
        std::vector<float> x = normal_values(rng, kBlock, 1.0f);
        x[3] = FLT_MAX;
        add("FLT_MAX", x);
        x[3] = -FLT_MAX;
        x[20] = FLT_MAX;
        add("-FLT_MAX first", x);
        add("all FLT_MAX", filled(FLT_MAX));
    }

    // bf16 ties: the low 16 bits exactly 0x8000, with even and odd kept bits; and their neighbours.
    {
        std::vector<float> x(kBlock);
        const std::uint32_t lows[] = {0x8000, 0x7FFF, 0x8001, 0x0000};
        for (std::size_t j = 0; j < kBlock; ++j) {
            const std::uint32_t high = 0x3F80u + static_cast<std::uint32_t>(j / 4) + (j % 2 ? 0x8000u : 0u);
            x[j] = float_of(high << 16 | lows[j % 4]);
        }
        add("bf16 ties", x);
        x = filled(float_of(0x7F7F8000));  // rounds up to infinity
        x[1] = float_of(0x7F7E8000);
        x[2] = float_of(0x00008000);  // subnormal tie
        x[3] = float_of(0x00018000);
        add("bf16 ties at the ends", x);
    }

    // Q4_0 keeps the sign of the largest magnitude; on a tie the first element wins.
    {
        std::vector<float> x = normal_values(rng, kBlock, 1.0f);
        x[9] = -5.0f;
        add("negative max", x);
        x[4] = 5.0f;
        add("tie, positive first", x);
        x[4] = -5.0f;
        x[9] = 5.0f;
        add("tie, negative first", x);
        x = normal_values(rng, kBlock, 1.0f);
        x[31] = -9.0f;
        add("negative max last", x);
    }

    // Q8_0 with amax = 127 has d = 1 and id = 1, so x*id hits .5 exactly: roundf goes away from zero.
    {
        std::vector<float> x(kBlock);
        x[0] = 127.0f;
        for (std::size_t j = 1; j < kBlock; ++j) x[j] = (static_cast<float>(j) - 16.0f) * 4.0f + 0.5f;
        add("q8_0 ties", x);
        x[0] = -127.0f;
        x[1] = -0.5f;
        x[2] = 0.5f;
        x[3] = 126.5f;
        x[4] = -126.5f;
        add("q8_0 ties, negative amax", x);
        x[0] = 254.0f;  // d = 2: ties at odd numbers
        for (std::size_t j = 1; j < kBlock; ++j) x[j] = static_cast<float>(2 * static_cast<int>(j) - 31);
        add("q8_0 ties, d = 2", x);
    }
    // Q4_0 with max = -8 has d = 1 and id = 1, so x*id + 8.5 lands on integers and halves.
    {
        std::vector<float> x(kBlock);
        x[0] = -8.0f;
        for (std::size_t j = 1; j < kBlock; ++j) x[j] = static_cast<float>(static_cast<int>(j) - 16) / 2;
        add("q4_0 boundaries", x);
        x[0] = 8.0f;  // d = -1
        add("q4_0 boundaries, positive max", x);
    }
    return blocks;
}

// ---- fp16 and bf16 conversions over float bit patterns ----

// Every `stride`-th float bit pattern, then every pattern in [first, last) for each extra range.
struct PatternRange {
    std::uint32_t first, last;
};
std::vector<float> sweep_patterns(std::uint32_t stride, std::initializer_list<PatternRange> dense) {
    std::vector<float> out;
    for (std::uint64_t u = 0; u <= 0xFFFFFFFFull; u += stride) out.push_back(float_of(static_cast<std::uint32_t>(u)));
    for (const PatternRange& r : dense)
        for (std::uint64_t u = r.first; u < r.last; ++u) out.push_back(float_of(static_cast<std::uint32_t>(u)));
    return out;
}

std::vector<float> only_finite(const std::vector<float>& x) {
    std::vector<float> out;
    std::copy_if(x.begin(), x.end(), std::back_inserter(out), [](float f) { return std::isfinite(f); });
    return out;
}

// Compares headfuse's 16-bit encoding of `patterns` with ggml's: the scalar conversion on every pattern (NaN
// included), the row encoders on the finite ones.
template <typename Scalar, typename Ggml>
void expect_16bit_conversion_matches(DType t, const std::vector<float>& patterns, Scalar scalar, Ggml ggml_row) {
    constexpr std::size_t kChunk = 1 << 20;
    std::size_t mismatches = 0;
    for (std::size_t begin = 0; begin < patterns.size(); begin += kChunk) {
        const std::vector<float> chunk(
            patterns.begin() + static_cast<std::ptrdiff_t>(begin),
            patterns.begin() + static_cast<std::ptrdiff_t>(std::min(patterns.size(), begin + kChunk)));
        const std::vector<std::uint16_t> want = ggml_row(chunk);
        for (std::size_t i = 0; i < chunk.size(); ++i) {
            const std::uint16_t got = scalar(chunk[i]);
            if (got != want[i] && mismatches++ < 10)
                ADD_FAILURE() << type_name(t) << " of bits " << std::hex << bits_of(chunk[i]) << ": got " << got
                              << ", ggml " << want[i];
        }
        const std::vector<float> finite = only_finite(chunk);
        const std::vector<std::uint16_t> want_finite = ggml_row(finite);
        std::vector<std::byte> want_bytes(finite.size() * 2);
        std::memcpy(want_bytes.data(), want_finite.data(), want_bytes.size());
        EXPECT_TRUE(same_encoding(t, encode_reference(t, finite), want_bytes, finite)) << "reference";
        for (Isa isa : supported_isas())
            EXPECT_TRUE(same_encoding(t, encode_with(isa, t, finite), want_bytes, finite)) << isa_name(isa);
    }
    EXPECT_EQ(mismatches, 0u);
}

TEST(Fp16Conversion, MatchesGgmlAcrossFloatBitPatterns) {
    HEADFUSE_REQUIRE_GGML(ggml);
    // Dense where fp16 rounding is delicate: its subnormal range (exponents of 2^-25 .. 2^-14) and the top of
    // its range (65504 and the overflow at 65520), for both signs.
    const std::vector<float> patterns = sweep_patterns(251, {{0x33000000, 0x33800000},
                                                             {0x38000000, 0x38800000},
                                                             {0x477F0000, 0x47810000},
                                                             {0xB3000000, 0xB3800000},
                                                             {0xC77F0000, 0xC7810000},
                                                             {0x387F0000, 0x38810000}});
    expect_16bit_conversion_matches(DType::F16, patterns, fp32_to_fp16, [&](const std::vector<float>& x) {
        return ggml->fp16_row(x.data(), static_cast<std::int64_t>(x.size()));
    });
}

TEST(Bf16Conversion, MatchesGgmlAcrossFloatBitPatterns) {
    HEADFUSE_REQUIRE_GGML(ggml);
    // Dense at the ends: subnormals, the overflow to infinity above 0x7F7F7FFF, and the NaNs just past it.
    const std::vector<float> patterns = sweep_patterns(
        251, {{0x00000000, 0x00040000}, {0x7F7E0000, 0x7F810000}, {0xFF7F0000, 0xFF810000}, {0x3F7F0000, 0x3F810000}});
    expect_16bit_conversion_matches(DType::BF16, patterns, fp32_to_bf16, [&](const std::vector<float>& x) {
        return ggml->bf16_row(x.data(), static_cast<std::int64_t>(x.size()));
    });
}

TEST(Fp16Conversion, TiesRoundToEven) {
    EXPECT_EQ(fp32_to_fp16(fp16_midpoint(0x3C00)), 0x3C00);  // 1 + 2^-11 -> 1
    EXPECT_EQ(fp32_to_fp16(fp16_midpoint(0x3C01)), 0x3C02);
    EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);
    EXPECT_EQ(fp32_to_fp16(65519.996f), 0x7BFF);
    EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);
    EXPECT_EQ(fp32_to_fp16(-65520.0f), 0xFC00);
    EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);  // half the smallest subnormal: tie to even zero
    EXPECT_EQ(fp32_to_fp16(std::ldexp(3.0f, -25)), 0x0002);
    EXPECT_EQ(fp32_to_bf16(float_of(0x3F808000)), 0x3F80);
    EXPECT_EQ(fp32_to_bf16(float_of(0x3F818000)), 0x3F82);
    EXPECT_EQ(fp32_to_bf16(FLT_MAX), 0x7F80);
    EXPECT_EQ(fp32_to_bf16(float_of(0x7F800001)), 0x7FC0);  // a signalling NaN is made quiet
}

// ---- Q8_0, Q4_0 (and F16, BF16, F32 rows) against ggml_quantize_chunk ----

TEST(EncodeRow, RandomNormalRowsMatchGgml) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::mt19937_64 rng(salted_seed(1));
    constexpr std::size_t kRows = 3;
    for (std::size_t n : {32u, 64u, 96u, 160u, 256u, 544u, 1024u, 2080u, 4096u}) {
        for (float scale : {1e-8f, 0.02f, 1.0f, 1e4f, 16000.0f, 2e6f, 1e30f}) {
            const std::vector<float> x = normal_values(rng, kRows * n, scale);
            for (DType t : kEncodedTypes)
                expect_all_match_ggml(*ggml, t, x, kRows, "n " + std::to_string(n) + ", scale " + show(scale));
        }
    }
}

TEST(EncodeRow, ValuesAroundFp16MaxMatchGgml) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::mt19937_64 rng(salted_seed(2));
    std::uniform_real_distribution<float> near(65504.0f - 64.0f, 65504.0f + 64.0f);
    std::vector<float> x(4096);
    for (float& v : x) v = near(rng) * (rng() % 2 ? -1.0f : 1.0f);
    for (DType t : kEncodedTypes) expect_all_match_ggml(*ggml, t, x, 1, "around 65504");
}

TEST(EncodeRow, EdgeBlocksMatchGgml) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::mt19937_64 rng(salted_seed(3));
    std::vector<float> all;
    for (const EdgeBlock& block : edge_blocks(rng)) {
        for (DType t : kEncodedTypes) expect_all_match_ggml(*ggml, t, block.x, 1, block.name);
        all.insert(all.end(), block.x.begin(), block.x.end());
    }
    for (DType t : kEncodedTypes) expect_all_match_ggml(*ggml, t, all, 1, "all edge blocks in one row");
}

TEST(EncodeRow, F32IsACopy) {
    const std::vector<float> x = {1.0f, -0.0f, FLT_MAX, float_of(1), -2.5f};
    const std::vector<std::byte> bytes = encode_fast(DType::F32, x);
    EXPECT_EQ(std::memcmp(bytes.data(), x.data(), bytes.size()), 0);
}

// Inputs that are rare in weights but legal: random finite bit patterns span every exponent, so blocks mix
// subnormals with values near FLT_MAX.
std::vector<float> stress_values(std::mt19937_64& rng, std::size_t n) {
    std::vector<float> x(n);
    std::uniform_real_distribution<float> exponent(-45.0f, 38.0f);
    for (std::size_t b = 0; b * kBlock < n; ++b) {
        float* block = x.data() + b * kBlock;
        switch (b % 4) {
            case 0:
                for (std::size_t j = 0; j < kBlock; ++j) block[j] = random_finite(rng);
                break;
            case 1: {  // normal values at a random scale per block
                const std::vector<float> v = normal_values(rng, kBlock, std::pow(10.0f, exponent(rng)));
                std::copy(v.begin(), v.end(), block);
                break;
            }
            case 2:  // fp16 values, which F16 must keep exactly
                for (std::size_t j = 0; j < kBlock; ++j) {
                    float f;
                    do f = fp16_to_fp32(static_cast<std::uint16_t>(rng()));
                    while (!std::isfinite(f));
                    block[j] = f;
                }
                break;
            default:  // small integers and halves: exact ties for both quantizers
                for (std::size_t j = 0; j < kBlock; ++j)
                    block[j] = static_cast<float>(static_cast<int>(rng() % 33) - 16) / 2;
                break;
        }
    }
    return x;
}

TEST(EncodeRow, FastKernelsMatchReferenceOnMillionsOfValues) {
    std::mt19937_64 rng(salted_seed(4));
    constexpr std::size_t kValues = 1u << 22;
    const std::vector<float> x = stress_values(rng, kValues);
    for (DType t : kEncodedTypes) {
        const std::vector<std::byte> want = encode_reference(t, x);
        EXPECT_TRUE(same_encoding(t, encode_fast(t, x), want, x)) << "encode_row";
        for (Isa isa : supported_isas())
            EXPECT_TRUE(same_encoding(t, encode_with(isa, t, x), want, x)) << isa_name(isa);
    }
}

TEST(EncodeRow, StressValuesMatchGgml) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::mt19937_64 rng(salted_seed(5));
    const std::vector<float> x = stress_values(rng, 1u << 20);
    for (DType t : kEncodedTypes) expect_all_match_ggml(*ggml, t, x, 1, "stress values");
}

TEST(EncodeRow, RowsOfAnyLengthForF32F16AndBf16) {
    std::mt19937_64 rng(salted_seed(6));
    for (std::size_t n = 0; n < 70; ++n) {
        const std::vector<float> x = normal_values(rng, n, 3.0f);
        for (DType t : {DType::F32, DType::F16, DType::BF16}) {
            const std::vector<std::byte> want = encode_reference(t, x);
            for (Isa isa : supported_isas())
                EXPECT_TRUE(same_encoding(t, encode_with(isa, t, x), want, x)) << isa_name(isa) << ", n " << n;
        }
    }
}

// The encoders' result for non-finite input is unspecified, but they must stay inside their buffers (a
// sanitizer build checks that) and return.
TEST(EncodeRow, NonFiniteInputStaysInBounds) {
    std::mt19937_64 rng(salted_seed(9));
    std::vector<float> x = normal_values(rng, 8 * kBlock, 1.0f);
    x[3] = NAN;
    x[kBlock + 5] = INFINITY;
    x[2 * kBlock + 31] = -INFINITY;
    std::fill(x.begin() + 3 * kBlock, x.begin() + 4 * kBlock, NAN);
    std::fill(x.begin() + 4 * kBlock, x.begin() + 5 * kBlock, -INFINITY);
    // Blocks are independent: the three finite blocks at the end encode as they do alone, whatever their
    // neighbours hold, in every implementation (under the sanitizers, nothing is read or written out of bounds).
    const std::vector<float> tail(x.end() - 3 * kBlock, x.end());
    for (DType t : kEncodedTypes) {
        const std::vector<std::byte> want = encode_reference(t, tail);
        auto tail_of = [&](const std::vector<std::byte>& all) {
            EXPECT_EQ(all.size(), row_bytes(t, x.size()));
            return std::vector<std::byte>(all.end() - static_cast<std::ptrdiff_t>(want.size()), all.end());
        };
        EXPECT_EQ(tail_of(encode_reference(t, x)), want) << type_name(t);
        EXPECT_EQ(tail_of(encode_fast(t, x)), want) << type_name(t);
        for (Isa isa : supported_isas()) EXPECT_EQ(tail_of(encode_with(isa, t, x)), want) << type_name(t);
    }
}

// ---- decoding ----

std::vector<float> decode_with(Isa isa, DType t, const std::vector<std::byte>& bytes, std::size_t n) {
    std::vector<float> out(n);
    kernels::decode_row(isa, t, bytes.data(), out.data(), n);
    return out;
}

// ggml's dequantize_row_q8_0 / q4_0 written out: d * q and d * (q - 8), d read as fp16.
std::vector<float> dequantize_by_formula(DType t, const std::vector<std::byte>& bytes, std::size_t n) {
    std::vector<float> out(n);
    const std::size_t block_bytes = traits(t).type_size;
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const std::byte* block = bytes.data() + b * block_bytes;
        std::uint16_t h;
        std::memcpy(&h, block, 2);
        const float d = fp16_to_fp32(h);
        for (std::size_t j = 0; j < kBlock; ++j) {
            int q;
            if (t == DType::Q8_0) {
                q = static_cast<std::int8_t>(block[2 + j]);
            } else {
                const auto pair = static_cast<int>(block[2 + j % 16]);
                q = (j < 16 ? pair & 0x0F : pair >> 4) - 8;
            }
            out[b * kBlock + j] = static_cast<float>(q) * d;
        }
    }
    return out;
}

TEST(DecodeRow, EveryF16AndBf16PatternMatchesGgml) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::vector<std::byte> bytes(65536 * 2);
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const auto v = static_cast<std::uint16_t>(h);
        std::memcpy(bytes.data() + 2 * h, &v, 2);
    }
    for (DType t : {DType::F16, DType::BF16}) {
        if (!ggml->has_to_float(t)) GTEST_SKIP() << "ggml_get_type_traits is missing or its layout differs";
        const std::vector<float> want = ggml->to_float(t, bytes.data(), 65536);
        std::vector<float> scalar(65536);
        for (std::uint32_t h = 0; h < 65536; ++h)
            scalar[h] = t == DType::F16 ? fp16_to_fp32(static_cast<std::uint16_t>(h))
                                        : bf16_to_fp32(static_cast<std::uint16_t>(h));
        EXPECT_TRUE(same_bits(scalar, want)) << type_name(t) << " scalar";
        for (Isa isa : supported_isas())
            EXPECT_TRUE(same_bits(decode_with(isa, t, bytes, 65536), want)) << type_name(t) << ", " << isa_name(isa);
    }
}

TEST(DecodeRow, QuantizedBlocksMatchGgmlAndTheFormula) {
    HEADFUSE_REQUIRE_GGML(ggml);
    std::mt19937_64 rng(salted_seed(7));
    constexpr std::size_t kValues = 1u << 16;
    const std::vector<float> x = stress_values(rng, kValues);
    for (DType t : {DType::Q8_0, DType::Q4_0}) {
        // Encoded blocks, then arbitrary bytes (any d, including infinities and NaN).
        std::vector<std::byte> random_bytes(row_bytes(t, kValues));
        for (std::byte& b : random_bytes) b = static_cast<std::byte>(rng());
        for (const std::vector<std::byte>& bytes : {encode_reference(t, x), random_bytes}) {
            const std::vector<float> formula = dequantize_by_formula(t, bytes, kValues);
            for (Isa isa : supported_isas())
                EXPECT_TRUE(same_bits(decode_with(isa, t, bytes, kValues), formula))
                    << type_name(t) << ", " << isa_name(isa);
            std::vector<float> public_path(kValues);
            decode_row(t, bytes.data(), public_path.data(), kValues);
            EXPECT_TRUE(same_bits(public_path, formula)) << type_name(t) << ", decode_row";
            if (ggml->has_to_float(t)) {
                EXPECT_TRUE(same_bits(ggml->to_float(t, bytes.data(), kValues), formula))
                    << type_name(t) << ", ggml's to_float";
            }
        }
    }
}

TEST(DecodeRow, RoundTripsKeepRepresentableValues) {
    std::mt19937_64 rng(salted_seed(8));
    std::vector<float> x(4096);
    for (float& v : x) {
        do v = fp16_to_fp32(static_cast<std::uint16_t>(rng()));
        while (!std::isfinite(v));
    }
    // fp16 values are exact in F16, and their top 16 bits are not always a bf16, so only F16 and F32 here.
    for (DType t : {DType::F32, DType::F16}) {
        const std::vector<std::byte> bytes = encode_fast(t, x);
        for (Isa isa : supported_isas())
            EXPECT_TRUE(same_bits(decode_with(isa, t, bytes, x.size()), x)) << type_name(t) << ", " << isa_name(isa);
    }
    std::vector<float> bf(4096);
    for (float& v : bf) v = float_of(bits_of(random_finite(rng)) & 0xFFFF0000u);
    const std::vector<std::byte> bytes = encode_fast(DType::BF16, bf);
    for (Isa isa : supported_isas())
        EXPECT_TRUE(same_bits(decode_with(isa, DType::BF16, bytes, bf.size()), bf)) << isa_name(isa);
}

// ---- all_finite ----

TEST(AllFinite, FindsEveryNonFiniteValueAtEveryPosition) {
    const float bad_values[] = {INFINITY, -INFINITY, NAN, -NAN, float_of(0x7F800001), float_of(0xFFFFFFFF)};
    for (std::size_t n : {0u, 1u, 7u, 8u, 31u, 32u, 33u, 64u, 100u}) {
        std::vector<float> x(n, FLT_MAX);
        for (std::size_t i = 0; i < n; i += 2) x[i] = -float_of(1);
        for (Isa isa : supported_isas())
            EXPECT_TRUE(kernels::all_finite(isa, x.data(), n)) << isa_name(isa) << ", n " << n;
        EXPECT_TRUE(all_finite(x.data(), n));
        for (std::size_t pos = 0; pos < n; ++pos) {
            for (float bad : bad_values) {
                std::vector<float> y = x;
                y[pos] = bad;
                for (Isa isa : supported_isas())
                    EXPECT_FALSE(kernels::all_finite(isa, y.data(), n))
                        << isa_name(isa) << ", n " << n << ", at " << pos;
                EXPECT_FALSE(all_finite(y.data(), n));
            }
        }
    }
}

// The forward pass's dot product (compute/dot.h) in every kernel table, against its definition: eight f64 lanes,
// lane j summing the terms i = j mod 8 in order, added pairwise at the end, rounded once to f32.
TEST(Kernels, DotIsItsDefinitionInEveryTable) {
    std::mt19937_64 rng(salted_seed(77));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    constexpr std::size_t kLengths[] = {0, 1, 7, 8, 9, 31, 64, 127, 128, 1000, 2048, 5632};
    for (std::size_t n : kLengths) {
        std::vector<float> a(n), b(n);
        for (std::size_t i = 0; i < n; ++i) {
            a[i] = normal(rng);
            b[i] = normal(rng) * 1e-3f;
        }
        double acc[8] = {};
        for (std::size_t i = 0; i < n; ++i) acc[i % 8] += static_cast<double>(a[i]) * static_cast<double>(b[i]);
        const auto want =
            static_cast<float>(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
        for (Isa isa : supported_isas())
            EXPECT_EQ(bits_of(kernels::for_isa(isa).dot(a.data(), b.data(), n)), bits_of(want))
                << isa_name(isa) << ", n " << n;
    }
}

// The forward pass's matmul tile (compute/dot.h) in every kernel table: each of its products is the definition
// above (a sum of eight f64 lanes), whatever the pair's place in the tile, for lengths that are not whole lanes
// (the rows padded with zeros) and tiles whose rows and tokens are not whole micro-tiles.
TEST(Kernels, DotTileIsTheDotDefinitionInEveryTable) {
    std::mt19937_64 rng(salted_seed(79));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (const std::size_t n : {1, 7, 8, 13, 64, 1000}) {
        const std::size_t n_pad = (n + 7) / 8 * 8;
        for (const auto& [rows, n_tok] :
             {std::pair<std::size_t, std::size_t>{1, 1}, {3, 2}, {4, 6}, {9, 13}, {12, 7}}) {
            std::vector<float> w(rows * n), x(n_tok * n);
            for (float& v : w) v = normal(rng);
            for (float& v : x) v = normal(rng) * 1e-3f;
            std::vector<double> wd(rows * n_pad, 0.0), xd(n_tok * n_pad, 0.0);
            for (std::size_t r = 0; r < rows; ++r)
                for (std::size_t i = 0; i < n; ++i) wd[r * n_pad + i] = w[r * n + i];
            for (std::size_t t = 0; t < n_tok; ++t)
                for (std::size_t i = 0; i < n; ++i) xd[t * n_pad + i] = x[t * n + i];
            constexpr std::size_t kExtra = 3;  // y's rows are wider than the tile: the tile writes its own columns
            const std::size_t stride = rows + kExtra;
            for (Isa isa : supported_isas()) {
                std::vector<float> y(n_tok * stride, -1.0f);
                kernels::for_isa(isa).dot_tile(wd.data(), rows, xd.data(), n_tok, n_pad, y.data(), stride);
                for (std::size_t t = 0; t < n_tok; ++t) {
                    for (std::size_t r = 0; r < rows; ++r) {
                        double acc[8] = {};
                        for (std::size_t i = 0; i < n; ++i)
                            acc[i % 8] += static_cast<double>(w[r * n + i]) * static_cast<double>(x[t * n + i]);
                        const auto want = static_cast<float>(((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                                                             ((acc[4] + acc[5]) + (acc[6] + acc[7])));
                        ASSERT_EQ(bits_of(y[t * stride + r]), bits_of(want))
                            << isa_name(isa) << ", n " << n << ", " << rows << " x " << n_tok << " at " << r << ", "
                            << t;
                    }
                    for (std::size_t r = rows; r < stride; ++r) ASSERT_EQ(y[t * stride + r], -1.0f) << isa_name(isa);
                }
            }
        }
    }
}

// The backward pass's transposed product (compute/dot.h) in every kernel table, against its definition: each
// row's term added to each f64 sum in order, one multiply and one add, the tokens whose gradient is zero skipped.
TEST(Kernels, TransposedIsItsDefinitionInEveryTable) {
    std::mt19937_64 rng(salted_seed(78));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (const std::size_t w : {1, 7, 8, 33, 256}) {
        constexpr std::size_t kTokens = 5, kRows = 9, kStride = 3;
        std::vector<float> rows(kRows * w), g(kRows * kTokens * kStride);
        for (float& x : rows) x = normal(rng);
        for (float& x : g) x = normal(rng) * 1e-3f;
        g[kStride] = 0.0f;  // a token with no gradient
        std::vector<double> want(kTokens * w, 0.0);
        for (std::size_t r = 0; r < kRows; ++r)
            for (std::size_t t = 0; t < kTokens; ++t)
                for (std::size_t i = 0; i < w; ++i)
                    want[t * w + i] += double(g[r * kTokens * kStride + t * kStride]) * double(rows[r * w + i]);
        for (Isa isa : supported_isas()) {
            std::vector<double> got(kTokens * w, 0.0);
            for (std::size_t r = 0; r < kRows; ++r)
                kernels::for_isa(isa).transposed(got.data(), w, &rows[r * w], &g[r * kTokens * kStride], kStride,
                                                 kTokens);
            for (std::size_t i = 0; i < got.size(); ++i)
                ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(double)), 0)
                    << isa_name(isa) << ", w " << w << ", " << i;
        }
    }
}

}  // namespace
}  // namespace headfuse
