// headfuse: the 32-wide legacy block types Q4_1, Q5_0, Q5_1 (both ways) and IQ4_NL (decoding), as ggml's
// scalar reference functions compute them (ggml/src/ggml-quants.c).
//
// Block layouts (little-endian, fp16 scales):
//   Q4_1:   { fp16 d; fp16 m; uint8 qs[16]; }           20 bytes, x = q*d + m
//   Q5_0:   { fp16 d; uint8 qh[4]; uint8 qs[16]; }      22 bytes, x = (q - 16)*d, bit 4 of q_j in qh bit j
//   Q5_1:   { fp16 d; fp16 m; uint8 qh[4]; uint8 qs[16]; } 24 bytes, x = q*d + m
//   IQ4_NL: { fp16 d; uint8 qs[16]; }                   18 bytes, x = d * kIq4Values[q]
// In each, byte j of qs holds element j in its low nibble and element j+16 in its high nibble.

#include <cfloat>
#include <cmath>
#include <cstring>

#include "headfuse/quantize.h"
#include "quant/blocks.h"

namespace headfuse::blocks {
namespace {

constexpr std::size_t kBlock = 32;

// ggml-common.h: kvalues_iq4nl, the non-linear 4-bit grid of IQ4_NL and IQ4_XS.
constexpr std::int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// The smallest and largest element of a block, as ggml's loop finds them (FLT_MAX and -FLT_MAX to start).
void min_max(const float* x, float& min, float& max) {
    min = FLT_MAX;
    max = -FLT_MAX;
    for (std::size_t j = 0; j < kBlock; ++j) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
}

// The element of largest magnitude, with its sign; the first one wins a tie.
float signed_max(const float* x) {
    float amax = 0.0f, max = 0.0f;
    for (std::size_t j = 0; j < kBlock; ++j) {
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    }
    return max;
}

std::uint32_t load_u32(const std::byte* p) {
    std::uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// The 5-bit codes of a Q5 block: low nibbles in qs, fifth bits in qh.
void store_q5(const std::uint8_t* q, std::byte* qh, std::byte* qs) {
    std::uint32_t high = 0;
    for (std::size_t j = 0; j < kBlock / 2; ++j) {
        qs[j] = std::byte(static_cast<std::uint8_t>((q[j] & 0x0F) | (q[j + 16] & 0x0F) << 4));
        high |= static_cast<std::uint32_t>((q[j] & 0x10u) >> 4) << j;
        high |= static_cast<std::uint32_t>((q[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(qh, &high, sizeof high);
}

// Codes j and j+16 of a Q5 block, each 0..31.
int q5_code(const std::byte* qh, const std::byte* qs, std::size_t j) {
    const std::uint32_t high = load_u32(qh);
    const int pair = u8(qs[j % 16]);
    const int low = j < 16 ? pair & 0x0F : pair >> 4;
    return low | static_cast<int>((high >> j) & 1u) << 4;
}

// The head of a Q4_1 or Q5_1 block, as ggml's quantize_row_q4_1_ref and quantize_row_q5_1_ref write it: the
// scale d = (max - min) / levels and the block's min, each stored as fp16 at out. Returns 1/d (0 when d is 0)
// and the min, from which the codes are computed.
struct ScaleMin {
    float id, min;
};
ScaleMin store_scale_min(const float* x, int levels, std::byte* out) {
    float min, max;
    min_max(x, min, max);
    const float d = (max - min) / static_cast<float>(levels);
    store_u16(out, fp32_to_fp16(d));
    store_u16(out + 2, fp32_to_fp16(min));
    return {d != 0.0f ? 1.0f / d : 0.0f, min};
}

}  // namespace

void encode_q4_1(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const float* x = src + b * kBlock;
        std::byte* out = dst + b * 20;
        const auto [id, min] = store_scale_min(x, 15, out);
        for (std::size_t j = 0; j < kBlock / 2; ++j) {
            const int q0 = low_byte(truncate_like_x86((x[j] - min) * id + 0.5f));
            const int q1 = low_byte(truncate_like_x86((x[j + 16] - min) * id + 0.5f));
            const auto lo = static_cast<std::uint8_t>(q0 < 15 ? q0 : 15);
            const auto hi = static_cast<std::uint8_t>(q1 < 15 ? q1 : 15);
            out[4 + j] = std::byte(static_cast<std::uint8_t>(lo | hi << 4));
        }
    }
}

void encode_q5_0(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const float* x = src + b * kBlock;
        std::byte* out = dst + b * 22;
        const float d = signed_max(x) / -16;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(out, fp32_to_fp16(d));
        std::uint8_t q[kBlock];
        for (std::size_t j = 0; j < kBlock; ++j) {
            const int v = low_byte(truncate_like_x86(x[j] * id + 16.5f));
            q[j] = static_cast<std::uint8_t>(v < 31 ? v : 31);
        }
        store_q5(q, out + 2, out + 6);
    }
}

void encode_q5_1(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const float* x = src + b * kBlock;
        std::byte* out = dst + b * 24;
        const auto [id, min] = store_scale_min(x, 31, out);
        std::uint8_t q[kBlock];
        for (std::size_t j = 0; j < kBlock; ++j)
            q[j] = static_cast<std::uint8_t>(truncate_like_x86((x[j] - min) * id + 0.5f));
        store_q5(q, out + 4, out + 8);
    }
}

void decode_q4_1(const std::byte* src, float* y, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const std::byte* in = src + b * 20;
        const float d = fp16_to_fp32(load_u16(in));
        const float m = fp16_to_fp32(load_u16(in + 2));
        for (std::size_t j = 0; j < kBlock / 2; ++j) {
            const int pair = u8(in[4 + j]);
            y[b * kBlock + j] = static_cast<float>(pair & 0x0F) * d + m;
            y[b * kBlock + j + 16] = static_cast<float>(pair >> 4) * d + m;
        }
    }
}

void decode_q5_0(const std::byte* src, float* y, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const std::byte* in = src + b * 22;
        const float d = fp16_to_fp32(load_u16(in));
        for (std::size_t j = 0; j < kBlock; ++j)
            y[b * kBlock + j] = static_cast<float>(q5_code(in + 2, in + 6, j) - 16) * d;
    }
}

void decode_q5_1(const std::byte* src, float* y, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const std::byte* in = src + b * 24;
        const float d = fp16_to_fp32(load_u16(in));
        const float m = fp16_to_fp32(load_u16(in + 2));
        for (std::size_t j = 0; j < kBlock; ++j)
            y[b * kBlock + j] = static_cast<float>(q5_code(in + 4, in + 8, j)) * d + m;
    }
}

void decode_iq4_nl(const std::byte* src, float* y, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const std::byte* in = src + b * 18;
        const float d = fp16_to_fp32(load_u16(in));
        for (std::size_t j = 0; j < kBlock / 2; ++j) {
            const int pair = u8(in[2 + j]);
            y[b * kBlock + j] = d * static_cast<float>(kIq4Values[pair & 0x0F]);
            y[b * kBlock + j + 16] = d * static_cast<float>(kIq4Values[pair >> 4]);
        }
    }
}

}  // namespace headfuse::blocks
