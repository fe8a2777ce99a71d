// headfuse: F32 rows to F16, BF16, Q8_0 and Q4_0 and back, byte for byte as ggml's reference functions.
//
// The scalar reference of the F16, BF16, Q8_0 and Q4_0 codecs (ggml's code, rewritten) is here, and the row
// dispatch over every type. The vector codecs (quant/lanes.h, one kernel table per instruction set:
// quant/kernels.h) must reproduce the reference bit for bit, which fixes how they round: roundf is half away
// from zero (not the vector unit's nearest even), a float-to-int8 cast truncates, and every product is rounded
// before it is added to anything (see `rounded`). Build with -ffp-contract=off.

#include "headfuse/quantize.h"

#include <bit>
#include <cassert>
#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/kernels.h"

namespace headfuse {

static_assert(std::endian::native == std::endian::little, "the block layouts are stored in host byte order");

namespace {

constexpr std::size_t kBlock = 32;    // elements per Q8_0 and Q4_0 block
constexpr std::size_t kQ8Bytes = 34;  // fp16 d + 32 int8
constexpr std::size_t kQ4Bytes = 18;  // fp16 d + 16 bytes of nibble pairs

std::uint32_t bits_of(float f) { return std::bit_cast<std::uint32_t>(f); }
float float_of(std::uint32_t u) { return std::bit_cast<float>(u); }

using blocks::load_u16;
using blocks::store_u16;

// Returns v unchanged, but hides it from the optimizer so that a product is rounded to float before the next
// operation: with FMA available a compiler may otherwise fuse x*id + 8.5f, which ggml computes in two steps.
float rounded(float v) {
#if defined(__GNUC__) || defined(__clang__)
    __asm__("" : "+x"(v));
#endif
    return v;
}

using blocks::low_byte;
using blocks::truncate_like_x86;

}  // namespace

// ---- scalar reference encoders (ggml-quants.c: quantize_row_q8_0_ref, quantize_row_q4_0_ref) ----

namespace blocks {

void encode_f16(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) store_u16(dst + 2 * i, fp32_to_fp16(src[i]));
}

void encode_bf16(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) store_u16(dst + 2 * i, fp32_to_bf16(src[i]));
}

namespace {

void encode_q8_0_block_scalar(const float* x, std::byte* out) {
    float amax = 0.0f;
    for (std::size_t j = 0; j < kBlock; ++j) {
        const float a = std::fabs(x[j]);
        amax = amax > a ? amax : a;
    }
    const float d = amax / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_u16(out, fp32_to_fp16(d));
    for (std::size_t j = 0; j < kBlock; ++j)
        out[2 + j] = std::byte(static_cast<std::uint8_t>(low_byte(truncate_like_x86(std::round(x[j] * id)))));
}

// One Q4_0 code: MIN(15, (int8_t)(x*id + 8.5f)), kept as the byte ggml stores.
std::uint8_t q4_0_code(float x, float id) {
    const int q = low_byte(truncate_like_x86(rounded(x * id) + 8.5f));
    return static_cast<std::uint8_t>(q < 15 ? q : 15);
}

void encode_q4_0_block_scalar(const float* x, std::byte* out) {
    // The element of largest magnitude, with its sign; the first one wins a tie.
    float amax = 0.0f;
    float max = 0.0f;
    for (std::size_t j = 0; j < kBlock; ++j) {
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_u16(out, fp32_to_fp16(d));
    for (std::size_t j = 0; j < kBlock / 2; ++j) {
        const std::uint8_t lo = q4_0_code(x[j], id);
        const std::uint8_t hi = q4_0_code(x[j + kBlock / 2], id);
        out[2 + j] = std::byte(static_cast<std::uint8_t>(lo | hi << 4));
    }
}

}  // namespace

void encode_q8_0(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) encode_q8_0_block_scalar(src + b * kBlock, dst + b * kQ8Bytes);
}

void encode_q4_0(const float* src, std::byte* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) encode_q4_0_block_scalar(src + b * kBlock, dst + b * kQ4Bytes);
}

// ---- scalar decoders (ggml: ggml_fp16_to_fp32_row, ggml_bf16_to_fp32_row, dequantize_row_q8_0/q4_0) ----

void decode_f16(const std::byte* src, float* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(src + 2 * i));
}

void decode_bf16(const std::byte* src, float* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
}

void decode_q8_0(const std::byte* src, float* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const std::byte* block = src + b * kQ8Bytes;
        const float d = fp16_to_fp32(load_u16(block));
        for (std::size_t j = 0; j < kBlock; ++j)
            dst[b * kBlock + j] = static_cast<float>(static_cast<std::int8_t>(block[2 + j])) * d;
    }
}

void decode_q4_0(const std::byte* src, float* dst, std::size_t n) {
    for (std::size_t b = 0; b < n / kBlock; ++b) {
        const std::byte* block = src + b * kQ4Bytes;
        const float d = fp16_to_fp32(load_u16(block));
        for (std::size_t j = 0; j < kBlock / 2; ++j) {
            const auto pair = static_cast<int>(block[2 + j]);
            dst[b * kBlock + j] = static_cast<float>((pair & 0x0F) - 8) * d;
            dst[b * kBlock + j + kBlock / 2] = static_cast<float>((pair >> 4) - 8) * d;
        }
    }
}

bool all_finite(const float* x, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
        if (!std::isfinite(x[i])) return false;
    return true;
}

}  // namespace blocks

namespace {

// F32 rows are plain copies; an empty row may come with null pointers, which memcpy does not allow.
void copy_floats(void* dst, const void* src, std::size_t n) {
    if (n != 0) std::memcpy(dst, src, n * sizeof(float));
}

[[maybe_unused]] bool whole_blocks(DType t, std::size_t n) { return n % traits(t).block_size == 0; }

void encode_with(const Kernels& k, DType t, const float* src, void* dst, std::size_t n) {
    assert(whole_blocks(t, n));
    auto* out = static_cast<std::byte*>(dst);
    switch (t) {
        case DType::F32: copy_floats(dst, src, n); return;
        case DType::F16: k.encode_f16(src, out, n); return;
        case DType::BF16: k.encode_bf16(src, out, n); return;
        case DType::Q8_0: k.encode_q8_0(src, out, n); return;
        case DType::Q4_0: k.encode_q4_0(src, out, n); return;
        case DType::Q4_1: blocks::encode_q4_1(src, out, n); return;
        case DType::Q5_0: blocks::encode_q5_0(src, out, n); return;
        case DType::Q5_1: blocks::encode_q5_1(src, out, n); return;
        case DType::Q2_K: blocks::encode_q2_k(src, out, n); return;
        case DType::Q3_K: blocks::encode_q3_k(src, out, n); return;
        case DType::Q4_K: blocks::encode_q4_k(src, out, n, k); return;
        case DType::Q5_K: blocks::encode_q5_k(src, out, n, k); return;
        case DType::Q6_K: blocks::encode_q6_k(src, out, n, k); return;
        case DType::IQ4_NL:
        case DType::IQ4_XS: break;
    }
    assert(!"encode_row: not a type headfuse writes");
}

void decode_with(const Kernels& k, DType t, const void* src, float* dst, std::size_t n) {
    assert(whole_blocks(t, n));
    const auto* in = static_cast<const std::byte*>(src);
    switch (t) {
        case DType::F32: copy_floats(dst, src, n); return;
        case DType::F16: k.decode_f16(in, dst, n); return;
        case DType::BF16: k.decode_bf16(in, dst, n); return;
        case DType::Q8_0: k.decode_q8_0(in, dst, n); return;
        case DType::Q4_0: k.decode_q4_0(in, dst, n); return;
        case DType::Q4_1: blocks::decode_q4_1(in, dst, n); return;
        case DType::Q5_0: blocks::decode_q5_0(in, dst, n); return;
        case DType::Q5_1: blocks::decode_q5_1(in, dst, n); return;
        case DType::Q2_K: blocks::decode_q2_k(in, dst, n); return;
        case DType::Q3_K: blocks::decode_q3_k(in, dst, n); return;
        case DType::Q4_K: blocks::decode_q4_k(in, dst, n); return;
        case DType::Q5_K: blocks::decode_q5_k(in, dst, n); return;
        case DType::Q6_K: blocks::decode_q6_k(in, dst, n); return;
        case DType::IQ4_NL: blocks::decode_iq4_nl(in, dst, n); return;
        case DType::IQ4_XS: blocks::decode_iq4_xs(in, dst, n); return;
    }
    assert(!"decode_row: not a type headfuse reads");
}

}  // namespace

// ggml_compute_fp32_to_fp16 (ggml-impl.h, after Maratyszcza's FP16): the two scalings push the mantissa bits
// that fp16 drops out of a float whose exponent is fixed by `bias`, so the float addition rounds to nearest
// even; values of 65520 and above come out as infinity.
std::uint16_t fp32_to_fp16(float f) noexcept {
    const float scale_to_inf = 0x1.0p+112f;
    const float scale_to_zero = 0x1.0p-110f;
    float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;

    const std::uint32_t w = bits_of(f);
    const std::uint32_t shl1_w = w + w;
    const std::uint32_t sign = w & 0x80000000u;
    std::uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;

    base = float_of((bias >> 1) + 0x07800000u) + base;
    const std::uint32_t bits = bits_of(base);
    const std::uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const std::uint32_t mantissa_bits = bits & 0x00000FFFu;
    const std::uint32_t nonsign = exp_bits + mantissa_bits;
    return static_cast<std::uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

// ggml_compute_fp16_to_fp32: exact. Normal values rebias the exponent by a multiplication; subnormals are
// rebuilt as (1 + m*2^-23)*0.5 - 0.5.
float fp16_to_fp32(std::uint16_t h) noexcept {
    const std::uint32_t w = static_cast<std::uint32_t>(h) << 16;
    const std::uint32_t sign = w & 0x80000000u;
    const std::uint32_t two_w = w + w;

    const float normalized = float_of((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = float_of((two_w >> 17) | (126u << 23)) - 0.5f;
    const std::uint32_t magnitude = two_w < (1u << 27) ? bits_of(denormalized) : bits_of(normalized);
    return float_of(sign | magnitude);
}

// ggml_compute_fp32_to_bf16: round to nearest even on the top 16 bits; a NaN is kept and made quiet.
std::uint16_t fp32_to_bf16(float f) noexcept {
    const std::uint32_t u = bits_of(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 64);
    return static_cast<std::uint16_t>((u + (0x7FFFu + ((u >> 16) & 1u))) >> 16);
}

float bf16_to_fp32(std::uint16_t h) noexcept { return float_of(static_cast<std::uint32_t>(h) << 16); }

void encode_row(DType t, const float* src, void* dst, std::size_t n) noexcept {
    encode_with(kernels::active(), t, src, dst, n);
}

void decode_row(DType t, const void* src, float* dst, std::size_t n) noexcept {
    decode_with(kernels::active(), t, src, dst, n);
}

bool all_finite(const float* x, std::size_t n) noexcept { return kernels::active().all_finite(x, n); }

void reference::encode_row(DType t, const float* src, void* dst, std::size_t n) noexcept {
    encode_with(kernels::for_isa(Isa::Scalar), t, src, dst, n);
}

namespace kernels {

void encode_row(Isa isa, DType t, const float* src, void* dst, std::size_t n) noexcept {
    encode_with(for_isa(isa), t, src, dst, n);
}

void decode_row(Isa isa, DType t, const void* src, float* dst, std::size_t n) noexcept {
    decode_with(for_isa(isa), t, src, dst, n);
}

bool all_finite(Isa isa, const float* x, std::size_t n) noexcept { return for_isa(isa).all_finite(x, n); }

}  // namespace kernels

}  // namespace headfuse
