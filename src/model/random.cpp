// The reproducible normal generator of random.h: one definition, three implementations (scalar here; AVX2 and
// AVX-512 in model/random_lanes.h, compiled per target into the kernel tables of quant/kernels.h) that perform
// the same IEEE operations in the same order on every value, and so give the same bytes.
#include "model/random.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "model/random_lanes.h"
#include "quant/kernels.h"

namespace headfuse {
namespace {

using namespace random_lanes;

inline std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }

// xoshiro256** on one lane's words.
inline std::uint64_t xoshiro_next(std::uint64_t& s0, std::uint64_t& s1, std::uint64_t& s2, std::uint64_t& s3) noexcept {
    const std::uint64_t result = rotl(s1 * 5, 7) * 9;
    const std::uint64_t t = s1 << 17;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 45);
    return result;
}

inline double uniform_pm1(std::uint64_t r) noexcept {
    return std::bit_cast<double>(kUniformExp | (r >> 12)) - kUniformShift;
}

// Step 4 for a positive normal double.
inline double log_normal(double x) noexcept {
    const std::uint64_t b = std::bit_cast<std::uint64_t>(x);
    const std::uint64_t d = b - kSqrtHalfBits;
    const double m = std::bit_cast<double>(b - (d & kHighMask));
    const double k = std::bit_cast<double>(kExpBits | ((d ^ kSignBit) >> 52)) - kExpBias;
    const double z = (m - 1.0) / (m + 1.0);
    const double z2 = z * z;
    // Estrin's scheme: short dependency chains, which the SIMD paths need to be fast.
    const double z4 = z2 * z2, z8 = z4 * z4, z16 = z8 * z8;
    const double a0 = kC[0] + kC[1] * z2, a1 = kC[2] + kC[3] * z2, a2 = kC[4] + kC[5] * z2, a3 = kC[6] + kC[7] * z2,
                 a4 = kC[8] + kC[9] * z2;
    const double p = ((a0 + a1 * z4) + (a2 + a3 * z4) * z8) + a4 * z16;
    return 2.0 * (z + (z * z2) * p) + k * kLn2;
}

}  // namespace

void random_normal_chunk_scalar(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk, float* out,
                                std::size_t n) noexcept {
    LaneStates st = seed_lanes(seed, hash, chunk);
    std::size_t i = 0;
    while (i < n) {
        for (std::size_t l = 0; l < kLanes && i < n; ++l) {
            const double u = uniform_pm1(xoshiro_next(st.s[0][l], st.s[1][l], st.s[2][l], st.s[3][l]));
            const double v = uniform_pm1(xoshiro_next(st.s[0][l], st.s[1][l], st.s[2][l], st.s[3][l]));
            const double s = u * u + v * v;
            if (s < 1.0 && s > 0.0) {
                const double f = std::sqrt((-2.0 * log_normal(s)) / s) * kInitStd;
                out[i++] = static_cast<float>(u * f);
                if (i < n) out[i++] = static_cast<float>(v * f);
            }
        }
    }
}

std::uint64_t name_hash(std::string_view name) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
    for (unsigned char ch : name) {
        h ^= ch;
        h *= 0x100000001b3ULL;
    }
    return h;
}

double portable_log(double x) noexcept {
    if (!(x > 0.0))
        return x == 0.0 ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
    if (x == std::numeric_limits<double>::infinity()) return x;
    if (x < std::numeric_limits<double>::min()) return log_normal(x * 0x1.0p54) - 54.0 * kLn2;
    return log_normal(x);
}

void random_normal_chunk(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk, float* out,
                         std::size_t n) noexcept {
    kernels::active().random_chunk(seed, hash, chunk, out, n);
}

}  // namespace headfuse
