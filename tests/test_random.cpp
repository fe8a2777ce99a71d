// The reproducible initialiser (random.h): every implementation (scalar, AVX2, AVX-512) gives the bytes of a
// plain reference written from the documented definition; chunks are independent, so any slice of a tensor
// can be drawn on its own; and the values are N(0, 0.02).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "model/init.h"
#include "model/random.h"
#include "model/roles.h"
#include "quant/kernels.h"
#include "support/codec_checks.h"

using namespace headfuse;

namespace {

// The definition of random.h, step by step, written as plainly as possible and independently of the library's
// code: frexp instead of bit arithmetic for the logarithm's reduction, one lane at a time, a conversion
// instead of the exponent trick for the uniforms.
struct Reference {
    std::uint64_t s[kRandomLanes][4];

    static std::uint64_t splitmix64(std::uint64_t& x) {
        std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

    Reference(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk) {
        std::uint64_t sm = seed ^ (hash * 0x9e3779b97f4a7c15ULL) ^ (chunk * 0xd1b54a32d192ed03ULL);
        for (auto& lane : s)
            for (auto& word : lane) word = splitmix64(sm);
    }

    std::uint64_t next(std::size_t l) {
        std::uint64_t* q = s[l];
        const std::uint64_t result = rotl(q[1] * 5, 7) * 9;
        const std::uint64_t t = q[1] << 17;
        q[2] ^= q[0];
        q[3] ^= q[1];
        q[1] ^= q[2];
        q[0] ^= q[3];
        q[2] ^= t;
        q[3] = rotl(q[3], 45);
        return result;
    }

    // r's top 52 bits as a multiple of 2^-51 in [-1, 1).
    static double uniform(std::uint64_t r) { return std::ldexp(static_cast<double>(r >> 12), -51) - 1.0; }

    static double log(double x) {
        int e = 0;
        double m = std::frexp(x, &e);  // [0.5, 1)
        if (m < std::bit_cast<double>(std::uint64_t{0x3fe6a09e667f3bcd})) {
            m *= 2.0;
            e -= 1;
        }
        const double z = (m - 1.0) / (m + 1.0);
        const double z2 = z * z;
        double c[11];  // c[j] = 1 / (2j + 1)
        for (int j = 1; j <= 10; ++j) c[j] = 1.0 / (2 * j + 1);
        const double z4 = z2 * z2, z8 = z4 * z4, z16 = z8 * z8;
        auto a = [&](int j) { return c[j] + c[j + 1] * z2; };
        const double p = ((a(1) + a(3) * z4) + (a(5) + a(7) * z4) * z8) + a(9) * z16;
        return 2.0 * (z + (z * z2) * p) + static_cast<double>(e) * 0.69314718055994530942;
    }

    static std::vector<float> chunk(std::uint64_t seed, std::uint64_t hash, std::uint64_t c, std::size_t n) {
        Reference g(seed, hash, c);
        std::vector<float> out;
        while (out.size() < n) {
            for (std::size_t l = 0; l < kRandomLanes; ++l) {
                const double u = uniform(g.next(l));
                const double v = uniform(g.next(l));
                const double s = u * u + v * v;
                if (s > 0.0 && s < 1.0) {
                    const double f = std::sqrt((-2.0 * log(s)) / s) * 0.02;
                    out.push_back(static_cast<float>(u * f));
                    out.push_back(static_cast<float>(v * f));
                }
            }
        }
        out.resize(n);
        return out;
    }
};

using test::supported_isas;

std::vector<float> draw(Isa isa, std::uint64_t seed, std::uint64_t hash, std::uint64_t c, std::size_t n) {
    // Guard values past n catch a path that stores beyond its range.
    std::vector<float> out(n + 64, -7.0f);
    kernels::for_isa(isa).random_chunk(seed, hash, c, out.data(), n);
    for (std::size_t i = n; i < out.size(); ++i) EXPECT_EQ(out[i], -7.0f) << isa_name(isa) << " wrote past n=" << n;
    out.resize(n);
    return out;
}

bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// FNV-1a over the bytes of a float array.
std::uint64_t fnv(const std::vector<float>& v) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    const auto* p = reinterpret_cast<const unsigned char*>(v.data());
    for (std::size_t i = 0; i < v.size() * sizeof(float); ++i) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

const std::size_t kLengths[] = {0,  1,  2,  3,  5,  7,   8,    9,    15,    16,          17,
                                18, 31, 32, 33, 63, 100, 1001, 4097, 65535, kRandomChunk};

}  // namespace

TEST(Random, EveryImplementationGivesTheReferenceBytes) {
    const std::vector<Isa> isas = supported_isas();
    std::string names;
    for (Isa isa : isas) names += std::string(" ") + isa_name(isa);
    std::printf("implementations on this machine:%s (dispatching to %s)\n", names.c_str(),
                isa_name(kernels::active().isa));
    int cases = 0;
    for (std::uint64_t seed : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{42}, ~std::uint64_t{0}})
        for (std::uint64_t c : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{7}, std::uint64_t{123456789}})
            for (std::size_t n : kLengths) {
                const std::uint64_t hash = name_hash("blk." + std::to_string(c % 5) + ".ffn_up.weight") + n;
                const std::vector<float> want = Reference::chunk(seed, hash, c, n);
                for (Isa isa : isas)
                    ASSERT_TRUE(same_bytes(draw(isa, seed, hash, c, n), want))
                        << isa_name(isa) << " seed " << seed << " chunk " << c << " n " << n;
                std::vector<float> dispatched(n);
                random_normal_chunk(seed, hash, c, dispatched.data(), n);
                ASSERT_TRUE(same_bytes(dispatched, want)) << "dispatch, seed " << seed << " chunk " << c << " n " << n;
                ++cases;
            }
    EXPECT_EQ(cases, 4 * 4 * static_cast<int>(std::size(kLengths)));
}

TEST(Random, ImplementationsAgreeOverManyChunks) {
    // Whole chunks over many seeds and chunk numbers: every accept/reject pattern of a round occurs.
    const std::vector<Isa> isas = supported_isas();
    for (std::uint64_t k = 0; k < 200; ++k) {
        const std::uint64_t seed = k * 0x9e3779b97f4a7c15ULL + 3, hash = name_hash("token_embd.weight") ^ k;
        const std::size_t n = k % 3 == 0 ? kRandomChunk : (k * 7919) % kRandomChunk;  // many odd lengths too
        const std::vector<float> scalar = draw(Isa::Scalar, seed, hash, k, n);
        for (Isa isa : isas)
            ASSERT_TRUE(same_bytes(draw(isa, seed, hash, k, n), scalar)) << isa_name(isa) << " k " << k;
    }
}

TEST(Random, ShorterDrawsArePrefixes) {
    for (Isa isa : supported_isas()) {
        const std::vector<float> whole = draw(isa, 5, 6, 7, kRandomChunk);
        for (std::size_t n : kLengths) {
            const std::vector<float> part = draw(isa, 5, 6, 7, n);
            ASSERT_TRUE(std::equal(part.begin(), part.end(), whole.begin())) << isa_name(isa) << " n " << n;
        }
    }
}

TEST(Random, PinnedBytes) {
    // The definition is part of the file format's promise (the same seed gives the same checkpoint, release
    // after release): these are its first values and a digest of one whole chunk. Change them only together
    // with the definition in random.h, and say so in the changelog.
    const std::vector<float> v = Reference::chunk(1, name_hash("token_embd.weight"), 0, kRandomChunk);
    const std::vector<float> w = draw(kernels::active().isa, 1, name_hash("token_embd.weight"), 0, kRandomChunk);
    ASSERT_TRUE(same_bytes(v, w));
    std::printf("first values: %a %a %a %a; digest 0x%016llx\n", v[0], v[1], v[2], v[3],
                static_cast<unsigned long long>(fnv(v)));
    EXPECT_EQ(v[0], -0x1.08306ap-8f);
    EXPECT_EQ(v[1], -0x1.0f0b54p-5f);
    EXPECT_EQ(v[2], 0x1.5db498p-5f);
    EXPECT_EQ(v[3], -0x1.36dcap-8f);
    EXPECT_EQ(fnv(v), 0xb5e268e7dcac76e2ULL);
}

TEST(Random, FillRandomSlicesEqualTheWhole) {
    // Chunk independence: any range [a, b) of a tensor, drawn on its own, is that slice of the whole tensor.
    const TensorSpec spec{"blk.0.attn_q.head_3.weight", {1000, 300}, TensorKind::Weight};
    const std::uint64_t total = 300000, C = kRandomChunk;
    std::vector<float> whole(total);
    fill_random(spec, 11, 0, total, whole.data());
    // Chunk by chunk through the library's entry point gives the same.
    for (std::uint64_t c = 0; c * C < total; ++c) {
        const std::size_t n = static_cast<std::size_t>(std::min(C, total - c * C));
        const std::vector<float> want = Reference::chunk(11, name_hash(spec.name), c, n);
        ASSERT_TRUE(std::equal(want.begin(), want.end(), whole.begin() + static_cast<std::ptrdiff_t>(c * C))) << c;
    }
    const std::pair<std::uint64_t, std::uint64_t> ranges[] = {{0, 1},
                                                              {0, C},
                                                              {1, 2},
                                                              {5, 17},
                                                              {C - 1, C + 1},
                                                              {C, 2 * C},
                                                              {C - 3, 3 * C + 5},
                                                              {100, 200000},
                                                              {3 * C + 7, 3 * C + 8},
                                                              {4 * C, total},
                                                              {total - 1, total},
                                                              {12345, total}};
    for (auto [a, b] : ranges) {
        std::vector<float> part(b - a);
        fill_random(spec, 11, a, b - a, part.data());
        EXPECT_TRUE(std::equal(part.begin(), part.end(), whole.begin() + static_cast<std::ptrdiff_t>(a)))
            << a << ".." << b;
    }
    // Different seeds, names and chunks give different streams; norms are ones.
    std::vector<float> other(C);
    fill_random(spec, 12, 0, C, other.data());
    EXPECT_NE(std::memcmp(other.data(), whole.data(), 256), 0);
    fill_random({"blk.0.attn_q.head_4.weight", {1000, 300}, TensorKind::Weight}, 11, 0, C, other.data());
    EXPECT_NE(std::memcmp(other.data(), whole.data(), 256), 0);
    EXPECT_NE(std::memcmp(whole.data() + C, whole.data(), 256), 0);
    fill_random({"blk.0.attn_norm.weight", {64}, TensorKind::Norm}, 11, 0, 64, other.data());
    for (std::size_t i = 0; i < 64; ++i) EXPECT_EQ(other[i], 1.0f);
}

TEST(Random, ValuesAreNormalWithStd002) {
    // 2^23 values from 128 chunks of 8 tensors. Each bound below is about 5 standard errors of its statistic,
    // so a correct generator fails with probability below ~1e-6 per check, and the draws are fixed (fixed seed)
    // so the test is deterministic anyway; a biased generator (a wrong log, a lost factor, a skewed lane)
    // moves these statistics by far more.
    const std::size_t per_chunk = kRandomChunk, chunks = 128;
    const std::size_t n = per_chunk * chunks;
    std::vector<float> x(n);
    for (std::size_t c = 0; c < chunks; ++c)
        random_normal_chunk(2024, name_hash("tensor." + std::to_string(c % 8)), c / 8, x.data() + c * per_chunk,
                            per_chunk);
    const double sigma = kInitStd;
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0, lag = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const double z = x[i] / sigma;
        s1 += z;
        s2 += z * z;
        s3 += z * z * z;
        s4 += z * z * z * z;
        if (i + 1 < n) lag += z * (x[i + 1] / sigma);
    }
    const double N = static_cast<double>(n);
    const double mean = s1 / N, var = s2 / N - mean * mean;
    const double skew = (s3 / N) / std::pow(var, 1.5), kurt = (s4 / N) / (var * var);
    // Standard errors for N = 8.4e6 standard normals: mean 1/sqrt(N) = 3.5e-4; std (relative) 1/sqrt(2N) = 2.4e-4;
    // skewness sqrt(6/N) = 8.5e-4; kurtosis sqrt(24/N) = 1.7e-3; lag-1 autocorrelation 1/sqrt(N) = 3.5e-4.
    EXPECT_NEAR(mean, 0.0, 5 * 3.5e-4);
    EXPECT_NEAR(std::sqrt(var), 1.0, 5 * 2.4e-4);
    EXPECT_NEAR(skew, 0.0, 5 * 8.5e-4);
    EXPECT_NEAR(kurt, 3.0, 5 * 1.7e-3);
    EXPECT_NEAR(lag / (N - 1), 0.0, 5 * 3.5e-4);

    // Kolmogorov-Smirnov against the N(0, 0.02) CDF: sqrt(N) * D is asymptotically Kolmogorov-distributed,
    // P(sqrt(N) D > t) ~ 2 exp(-2 t^2), which is 7.5e-6 at t = 2.5. (The values are floats: rounding moves the
    // empirical CDF by ~1e-7, far below the 8.6e-4 allowed.)
    std::vector<float> sorted = x;
    std::sort(sorted.begin(), sorted.end());
    double d = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const double F = 0.5 * std::erfc(-sorted[i] / (sigma * std::sqrt(2.0)));
        d = std::max({d, std::abs(F - static_cast<double>(i) / N), std::abs(static_cast<double>(i + 1) / N - F)});
    }
    EXPECT_LT(std::sqrt(N) * d, 2.5) << "KS distance " << d;

    // Chi-square over 58 bins: 56 of width sigma/8 on [-3.5, 3.5] sigma, and the two tails (expected counts
    // >= 1100 in every bin). For 57 degrees of freedom the statistic has mean 57 and standard deviation
    // sqrt(114) = 10.7: the bound is mean + 6 sd (p ~ 1e-6, the chi-square's right tail being heavier than a
    // normal's).
    const int bins = 58;
    std::vector<double> edges;  // in units of sigma
    for (int k = 0; k <= bins - 2; ++k) edges.push_back(-3.5 + 0.125 * k);
    std::vector<std::size_t> count(bins, 0);
    for (float v : x) {
        const double z = v / sigma;
        const auto it = std::upper_bound(edges.begin(), edges.end(), z);
        ++count[static_cast<std::size_t>(it - edges.begin())];
    }
    auto Phi = [](double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); };
    double chi2 = 0;
    for (int k = 0; k < bins; ++k) {
        const double lo = k == 0 ? 0.0 : Phi(edges[k - 1]), hi = k == bins - 1 ? 1.0 : Phi(edges[k]);
        const double expect = N * (hi - lo);
        ASSERT_GT(expect, 1000.0);
        chi2 += (static_cast<double>(count[k]) - expect) * (static_cast<double>(count[k]) - expect) / expect;
    }
    EXPECT_LT(chi2, 57 + 6 * std::sqrt(114.0)) << "chi-square " << chi2;
    std::printf("N %zu: mean %.2e sd %.6f skew %.2e kurt %.4f lag1 %.2e KS sqrt(N)D %.3f chi2(57) %.1f\n", n, mean,
                std::sqrt(var), skew, kurt, lag / (N - 1), std::sqrt(N) * d, chi2);
}

TEST(Random, PortableLogMatchesTheDefinitionAndTheLibm) {
    // portable_log is the generator's logarithm: equal to the reference's for normal doubles, within a couple of
    // ulps of the C library's, and defined at the edges.
    double worst = 0;
    for (double x = 1e-300; x < 4.0; x *= 1.0173) {
        ASSERT_EQ(portable_log(x), Reference::log(x)) << x;
        const double want = std::log(x);
        if (want != 0)
            worst = std::max(worst, std::abs(portable_log(x) - want) / std::abs(std::nextafter(want, 0.0) - want));
    }
    for (double x = 0.5; x < 1.0; x += 1.0 / 65536 + 1e-12) {
        ASSERT_EQ(portable_log(x), Reference::log(x)) << x;
        const double want = std::log(x);
        worst = std::max(worst, std::abs(portable_log(x) - want) / std::abs(std::nextafter(want, 0.0) - want));
    }
    EXPECT_LE(worst, 2.0);
    EXPECT_EQ(portable_log(1.0), 0.0);
    EXPECT_NEAR(portable_log(4e-320), std::log(4e-320), 1e-12);  // subnormal
    EXPECT_EQ(portable_log(0.0), -HUGE_VAL);
    EXPECT_TRUE(std::isnan(portable_log(-1.0)));
    EXPECT_EQ(portable_log(HUGE_VAL), HUGE_VAL);
}
