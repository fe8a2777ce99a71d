// headfuse: the reproducible generator of random.h, the parts its scalar and SIMD implementations share (the
// constants, the seeding) and the SIMD chunk, random_chunk_lanes, written once over a 64-bit lane type (quant/simd.h)
// and compiled by quant/kernels_avx2.cpp (HEADFUSE_LANES_AVX2: D4, two groups of four lanes) and
// quant/kernels_avx512.cpp (HEADFUSE_LANES_AVX512: D8, one group of eight), each whole for its target
// (quant/kernels.h). Every implementation performs the same IEEE operations in the same order on every value,
// and so gives the same bytes. Everything below has internal linkage; the including file includes its dependencies
// before it switches the target on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "model/random.h"
#include "quant/simd.h"

namespace headfuse::random_lanes {
namespace {

inline constexpr std::size_t kLanes = kRandomLanes;
static_assert(kLanes == 8, "the SIMD paths are written for 8 lanes");

// Step 2: r's top 52 bits under the exponent of [2, 4), minus 3.
inline constexpr std::uint64_t kUniformExp = 0x4000000000000000ULL;
inline constexpr double kUniformShift = 3.0;
// Step 4.
inline constexpr std::uint64_t kSqrtHalfBits = 0x3fe6a09e667f3bcdULL;
inline constexpr std::uint64_t kHighMask = 0xfff0000000000000ULL;
inline constexpr std::uint64_t kSignBit = 0x8000000000000000ULL;
// k + 2048 (in [0, 4096)) under the exponent of 2^52 is the double 2^52 + 2048 + k: minus kExpBias is k.
inline constexpr std::uint64_t kExpBits = 0x4330000000000000ULL;
inline constexpr double kExpBias = 0x1.0p52 + 2048.0;
inline constexpr double kLn2 = 0x1.62e42fefa39efp-1;
inline constexpr double kC[10] = {1.0 / 3,  1.0 / 5,  1.0 / 7,  1.0 / 9,  1.0 / 11,
                                  1.0 / 13, 1.0 / 15, 1.0 / 17, 1.0 / 19, 1.0 / 21};
static_assert(kLn2 == 0.69314718055994530942);

inline std::uint64_t splitmix64(std::uint64_t& x) noexcept {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Step 1: state[j][l] is word j of lane l (structure of arrays, as the SIMD paths load it).
struct LaneStates {
    alignas(64) std::uint64_t s[4][kLanes];
};

inline LaneStates seed_lanes(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk) noexcept {
    std::uint64_t sm = seed ^ (hash * 0x9e3779b97f4a7c15ULL) ^ (chunk * 0xd1b54a32d192ed03ULL);
    LaneStates st;
    for (std::size_t l = 0; l < kLanes; ++l)
        for (std::size_t j = 0; j < 4; ++j) st.s[j][l] = splitmix64(sm);
    return st;
}

#if defined(HEADFUSE_LANES_AVX2) || defined(HEADFUSE_LANES_AVX512)

// W of the kLanes generators and one round's arithmetic on them, written once over the 64-bit lane type L.
template <class L>
struct Group {
    using U = typename L::U;
    using D = typename L::D;
    U s0, s1, s2, s3;

    U next() noexcept {                          // xoshiro256**
        const U a = L::addu(s1, L::shl(s1, 2));  // s1 * 5
        const U r7 = L::rotl(a, 7);
        const U result = L::addu(r7, L::shl(r7, 3));  // * 9
        const U t = L::shl(s1, 17);
        s2 = L::xoru(s2, s0);
        s3 = L::xoru(s3, s1);
        s1 = L::xoru(s1, s2);
        s0 = L::xoru(s0, s3);
        s2 = L::xoru(s2, t);
        s3 = L::rotl(s3, 45);
        return result;
    }

    static D uniform(U r) noexcept {
        return L::sub(L::asd(L::oru(L::shr(r, 12), L::setu(kUniformExp))), L::set(kUniformShift));
    }

    static D log(D x) noexcept {  // step 4 of random.h
        const U b = L::asu(x);
        const U d = L::subu(b, L::setu(kSqrtHalfBits));
        const D m = L::asd(L::subu(b, L::andu(d, L::setu(kHighMask))));
        const D k =
            L::sub(L::asd(L::oru(L::shr(L::xoru(d, L::setu(kSignBit)), 52), L::setu(kExpBits))), L::set(kExpBias));
        const D one = L::set(1.0);
        const D z = L::div(L::sub(m, one), L::add(m, one));
        const D z2 = L::mul(z, z);
        const D z4 = L::mul(z2, z2), z8 = L::mul(z4, z4), z16 = L::mul(z8, z8);
        D a[5];
        for (int j = 0; j < 5; ++j) a[j] = L::add(L::set(kC[2 * j]), L::mul(L::set(kC[2 * j + 1]), z2));
        const D lo = L::add(a[0], L::mul(a[1], z4)), hi = L::add(a[2], L::mul(a[3], z4));
        const D p = L::add(L::add(lo, L::mul(hi, z8)), L::mul(a[4], z16));
        const D sum = L::add(z, L::mul(L::mul(z, z2), p));
        return L::add(L::mul(L::set(2.0), sum), L::mul(k, L::set(kLn2)));
    }

    // One round: the accepted lanes' pairs packed to the front, and how many floats they are.
    typename L::P round(unsigned& count) noexcept {
        const D u = uniform(next());
        const D v = uniform(next());
        const D s = L::add(L::mul(u, u), L::mul(v, v));
        const auto ok = L::inside_unit(s);
        // Every lane computes f; rejected lanes' values are dropped. t > 0 in accepted lanes: the |t| only spares
        // the lanes with s >= 1 (t <= 0) a NaN and an invalid-operation flag.
        const D t = L::div(L::mul(L::set(-2.0), log(s)), s);
        const D f = L::mul(L::sqrt(L::abs(t)), L::set(kInitStd));
        count = 2 * static_cast<unsigned>(__builtin_popcount(static_cast<unsigned>(ok)));
        return L::pack_pairs(L::mul(u, f), L::mul(v, f), ok);
    }
};

// A chunk: kLanes / W groups, each round of every group in lane order. Two rounds at a time while 32 floats fit:
// independent until stored, they give the core long dependency chains to overlap; then one round at a time
// through a bounce buffer.
template <class L>
void random_chunk_lanes(std::uint64_t seed, std::uint64_t hash, std::uint64_t chunk, float* out,
                        std::size_t n) noexcept {
    constexpr int G = static_cast<int>(kLanes) / L::W;
    const LaneStates st = seed_lanes(seed, hash, chunk);
    Group<L> g[G];
#pragma GCC unroll 2
    for (int k = 0; k < G; ++k)
        g[k] = {L::load(&st.s[0][k * L::W]), L::load(&st.s[1][k * L::W]), L::load(&st.s[2][k * L::W]),
                L::load(&st.s[3][k * L::W])};
    std::size_t i = 0;
    while (n - i >= 32) {
        unsigned c[2 * G];
        typename L::P p[2 * G];
        // Unrolled, so that the groups' states stay in registers.
#pragma GCC unroll 4
        for (int r = 0; r < 2 * G; ++r) p[r] = g[r % G].round(c[r]);
#pragma GCC unroll 4
        for (int r = 0; r < 2 * G; ++r) {
            L::store(out + i, p[r]);
            i += c[r];
        }
    }
    alignas(64) float tmp[2 * kLanes];
    while (i < n) {
        std::size_t got = 0;
#pragma GCC unroll 2
        for (int k = 0; k < G; ++k) {
            unsigned c;
            const typename L::P p = g[k].round(c);
            L::store(tmp + got, p);
            got += c;
        }
        const std::size_t take = got < n - i ? got : n - i;
        std::memcpy(out + i, tmp, take * sizeof(float));
        i += take;
    }
}

#endif

}  // namespace
}  // namespace headfuse::random_lanes
