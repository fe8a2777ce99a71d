#include "random.h"

#include <cmath>

namespace headfuse {
namespace {

std::uint64_t splitmix64(std::uint64_t& x) noexcept {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

struct Xoshiro256 {
    std::uint64_t s[4];

    static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }

    std::uint64_t next() noexcept {
        const std::uint64_t result = rotl(s[1] * 5, 7) * 9;
        const std::uint64_t t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return result;
    }

    // Uniform in [-1, 1), 53 bits.
    double uniform_pm1() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-52 - 1.0; }
};

}  // namespace

std::uint64_t name_hash(std::string_view name) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
    for (unsigned char ch : name) {
        h ^= ch;
        h *= 0x100000001b3ULL;
    }
    return h;
}

double portable_log(double x) noexcept {
    // x = m * 2^e with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(z), z = (m-1)/(m+1), |z| < 0.172, so
    // 15 odd terms of the atanh series reach well below one ulp.
    int e = 0;
    double m = std::frexp(x, &e);  // exact
    if (m < 0.70710678118654752440) {
        m *= 2.0;
        e -= 1;
    }
    const double z = (m - 1.0) / (m + 1.0);
    const double z2 = z * z;
    static constexpr double kInvOdd[] = {1.0 / 3,  1.0 / 5,  1.0 / 7,  1.0 / 9,  1.0 / 11,
                                         1.0 / 13, 1.0 / 15, 1.0 / 17, 1.0 / 19, 1.0 / 21,
                                         1.0 / 23, 1.0 / 25, 1.0 / 27, 1.0 / 29};
    double term = z, sum = z;
    for (double inv : kInvOdd) {
        term *= z2;
        sum += term * inv;
    }
    return 2.0 * sum + static_cast<double>(e) * 0.69314718055994530942;
}

void random_normal_chunk(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk, float* out,
                         std::size_t n) noexcept {
    std::uint64_t sm = seed ^ (hash * 0x9e3779b97f4a7c15ULL) ^ (chunk * 0xd1b54a32d192ed03ULL);
    Xoshiro256 rng{{splitmix64(sm), splitmix64(sm), splitmix64(sm), splitmix64(sm)}};
    std::size_t i = 0;
    while (i < n) {
        double u, v, s;
        do {  // Marsaglia's polar method: a point in the unit disc, not at its centre
            u = rng.uniform_pm1();
            v = rng.uniform_pm1();
            s = u * u + v * v;
        } while (s >= 1.0 || s == 0.0);
        const double f = std::sqrt(-2.0 * portable_log(s) / s) * kInitStd;
        out[i++] = static_cast<float>(u * f);
        if (i < n) out[i++] = static_cast<float>(v * f);
    }
}

}  // namespace headfuse
