// headfuse: ggml's K-quants Q2_K..Q6_K (both ways) and IQ4_XS (decoding), as ggml's scalar reference functions
// compute them (ggml/src/ggml-quants.c: quantize_row_qN_K_ref, dequantize_row_qN_K, dequantize_row_iq4_xs).
// Encoding without an importance matrix is what ggml_quantize_chunk, and so llama_model_quantize, runs.
//
// Super-blocks of 256 elements (little-endian, fp16 d/dmin):
//   Q2_K   84 bytes: scales[16] (4-bit scale | 4-bit min per 16), qs[64] (2 bits), d, dmin
//   Q3_K  110 bytes: hmask[32] (third bit), qs[64] (2 bits), scales[12] (16 6-bit scales), d
//   Q4_K  144 bytes: d, dmin, scales[12] (8 6-bit scales and 8 6-bit mins), qs[128] (4 bits)
//   Q5_K  176 bytes: d, dmin, scales[12], qh[32] (fifth bit), qs[128]
//   Q6_K  210 bytes: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], d
//   IQ4_XS 136 bytes: d, u16 scales_h, scales_l[4] (8 6-bit scales), qs[128] (4-bit IQ4_NL grid indices)
//
// The encoders are written in ggml's order of operations on purpose: every sum, product and comparison below
// rounds where ggml's does, which is what makes the bytes equal. Do not "simplify" the arithmetic.

#include <algorithm>
#include <cmath>
#include <cstring>

#include "headfuse/quantize.h"
#include "quant/blocks.h"
#include "quant/kernels.h"

namespace headfuse::blocks {
namespace {

constexpr std::size_t kSuper = 256;
constexpr float kGroupMaxEps = 1e-15f;  // ggml-quants.c: GROUP_MAX_EPS

constexpr std::int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

template <typename T>
T clamp(T v, T lo, T hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

// ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block.
void scale_min_k4(int j, const std::byte* q, std::uint8_t& d, std::uint8_t& m) {
    if (j < 4) {
        d = u8(q[j]) & 63;
        m = u8(q[j + 4]) & 63;
    } else {
        d = static_cast<std::uint8_t>((u8(q[j + 4]) & 0xF) | ((u8(q[j - 4]) >> 6) << 4));
        m = static_cast<std::uint8_t>((u8(q[j + 4]) >> 4) | ((u8(q[j]) >> 6) << 4));
    }
}

// The 6-bit scale (0..63) of sub-block j (0..15) of a Q3_K block.
int q3_k_scale(const std::byte* scales, int j) {
    const int low = j < 8 ? u8(scales[j]) & 0xF : u8(scales[j - 8]) >> 4;
    return low | ((u8(scales[8 + j % 4]) >> (2 * (j / 4))) & 3) << 4;
}

// make_qkx2_quants: codes 0..nmax and a scale and min for n values, searching nstep+1 candidate scales for the
// least weighted error. Returns the scale; *the_min gets minus the min.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, std::uint8_t* L, float* the_min,
                       std::uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0];
    float max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = static_cast<float>(nmax) / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = static_cast<std::uint8_t>(clamp(l, 0, nmax));
        float diff = scale * static_cast<float>(L[i]) + min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            const int l = clamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = static_cast<std::uint8_t>(l);
            const float w = weights[i];
            const float fl = static_cast<float>(l);
            sum_l += w * fl;
            sum_l2 += w * fl * fl;
            sum_xl += w * fl * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * static_cast<float>(Laux[i]) + this_min - x[i];
                diff = use_mad ? std::fabs(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

// The element of largest magnitude, with its sign; the first one wins a tie.
float signed_max(int n, const float* x) {
    float max = 0;
    float amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    return max;
}

// make_qx_quants with rmse_type 1 and no importance weights (weights x²): signed codes -nmax..nmax-1 stored
// plus nmax, and the best of 19 candidate scales around -nmax/max.
float make_qx_quants_rmse1(int n, int nmax, const float* x, std::int8_t* L) {
    const float max = signed_max(n, x);
    if (std::fabs(max) < kGroupMaxEps) {  // all (nearly) zero
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    const float fnmax = static_cast<float>(nmax);
    float iscale = static_cast<float>(-nmax) / max;
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = static_cast<std::int8_t>(l + nmax);
        const float w = x[i] * x[i];
        const float fl = static_cast<float>(l);
        sumlx += w * x[i] * fl;
        suml2 += w * fl * fl;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(fnmax + 0.1f * static_cast<float>(is)) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            const float fl = static_cast<float>(clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * fl;
            suml2 += w * fl * fl;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i)
                L[i] = static_cast<std::int8_t>(nmax + clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// make_q3_quants with do_rmse: codes -nmax..nmax-1 (stored plus nmax), refined one element at a time for the
// least x²-weighted error, at most five passes.
float make_q3_quants(int n, int nmax, const float* x, std::int8_t* L) {
    const float max = signed_max(n, x);
    if (std::fabs(max) < kGroupMaxEps) {  // all (nearly) zero
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    const float iscale = static_cast<float>(-nmax) / max;
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = static_cast<std::int8_t>(l);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * static_cast<float>(l);
        suml2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            const float li = static_cast<float>(L[i]);
            float slx = sumlx - w * x[i] * li;
            if (slx > 0) {
                float sl2 = suml2 - w * li * li;
                const int new_l = clamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    const float fl = static_cast<float>(new_l);
                    slx += w * x[i] * fl;
                    sl2 += w * fl * fl;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = static_cast<std::int8_t>(new_l);
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Four 2-bit codes per byte: byte l of each 32-byte group holds elements l, l+32, l+64, l+96 of its 128.
void pack_2bit(const std::uint8_t* L, std::byte* qs) {
    for (std::size_t j = 0; j < kSuper; j += 128)
        for (std::size_t l = 0; l < 32; ++l)
            qs[j / 4 + l] = std::byte(
                static_cast<std::uint8_t>(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 | L[j + l + 96] << 6));
}

void encode_q2_k_block(const float* x, std::byte* y) {
    std::uint8_t L[kSuper];
    std::uint8_t Laux[16];
    float weights[16];
    float mins[16];
    float scales[16];
    const float q4scale = 15.f;
    std::byte* sc = y;
    std::byte* qs = y + 16;

    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < 16; ++j) {
        for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
        scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    std::uint16_t d = 0, dmin = 0;
    if (max_scale > 0) {
        const float iscale = q4scale / max_scale;
        for (int j = 0; j < 16; ++j) sc[j] = std::byte(static_cast<std::uint8_t>(nearest_int(iscale * scales[j])));
        d = fp32_to_fp16(max_scale / q4scale);
    } else {
        for (int j = 0; j < 16; ++j) sc[j] = std::byte{0};
        d = fp32_to_fp16(0.f);
    }
    if (max_min > 0) {
        const float iscale = q4scale / max_min;
        for (int j = 0; j < 16; ++j) sc[j] |= std::byte(static_cast<std::uint8_t>(nearest_int(iscale * mins[j]) << 4));
        dmin = fp32_to_fp16(max_min / q4scale);
    } else {
        dmin = fp32_to_fp16(0.f);
    }
    store_u16(y + 80, d);
    store_u16(y + 82, dmin);
    for (int j = 0; j < 16; ++j) {
        const float dl = fp16_to_fp32(d) * static_cast<float>(u8(sc[j]) & 0xF);
        if (dl == 0.0f) continue;
        const float dm = fp16_to_fp32(dmin) * static_cast<float>(u8(sc[j]) >> 4);
        for (int ii = 0; ii < 16; ++ii)
            L[16 * j + ii] = static_cast<std::uint8_t>(clamp(nearest_int((x[16 * j + ii] + dm) / dl), 0, 3));
    }
    pack_2bit(L, qs);
}

void encode_q3_k_block(const float* x, std::byte* y) {
    std::int8_t L[kSuper];
    float scales[16];
    std::byte* hmask = y;
    std::byte* qs = y + 32;
    std::byte* sc = y + 96;

    float max_scale = 0;
    float amax = 0;
    for (int j = 0; j < 16; ++j) {
        scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
        const float scale = std::fabs(scales[j]);
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
    }
    std::memset(sc, 0, 12);
    std::uint16_t d = 0;
    if (max_scale != 0.0f) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < 16; ++j) {
            auto l = static_cast<std::int8_t>(nearest_int(iscale * scales[j]));
            l = static_cast<std::int8_t>(clamp<int>(l, -32, 31) + 32);
            if (j < 8)
                sc[j] = std::byte(static_cast<std::uint8_t>(l & 0xF));
            else
                sc[j - 8] |= std::byte(static_cast<std::uint8_t>((l & 0xF) << 4));
            l = static_cast<std::int8_t>(l >> 4);
            sc[j % 4 + 8] |= std::byte(static_cast<std::uint8_t>(l << (2 * (j / 4))));
        }
        d = fp32_to_fp16(1 / iscale);
    } else {
        d = fp32_to_fp16(0.f);
    }
    store_u16(y + 108, d);
    for (int j = 0; j < 16; ++j) {
        const auto s = static_cast<std::int8_t>(q3_k_scale(sc, j) - 32);
        const float dl = fp16_to_fp32(d) * static_cast<float>(s);
        if (dl == 0.0f) continue;
        for (int ii = 0; ii < 16; ++ii)
            L[16 * j + ii] = static_cast<std::int8_t>(clamp(nearest_int(x[16 * j + ii] / dl), -4, 3) + 4);
    }
    // The third bit of element j goes to bit j/32 of hmask[j%32].
    std::memset(hmask, 0, 32);
    std::uint8_t low[kSuper];
    for (std::size_t j = 0; j < kSuper; ++j) {
        int l = L[j];
        if (l > 3) {
            hmask[j % 32] |= std::byte(static_cast<std::uint8_t>(1u << (j / 32)));
            l -= 4;
        }
        low[j] = static_cast<std::uint8_t>(l);
    }
    pack_2bit(low, qs);
}

}  // namespace

// Q4_K and Q5_K: per 32-wide sub-block, weights sqrt(mean x²) + |x| and make_qkx2_quants (k4_search_scalar, or its
// lane forms); then the 6-bit scales and mins packed, d and dmin stored, the codes recomputed (k4_finish).
// The scalar searches of one super-block: scales[j], mins[j] and codes L of its eight sub-blocks.
void k4_search_scalar(const float* x, int nmax, float rmin, int nstep, float* scales, float* mins, std::uint8_t* L) {
    std::uint8_t Laux[32];
    float weights[32];
    for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
        scales[j] =
            make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
    }
}

void q6_search_scalar(const float* x, float* scales, std::int8_t* L) { scales[0] = make_qx_quants_rmse1(16, 32, x, L); }

namespace {

// The rest of a Q4_K/Q5_K super-block once its searches ran: the 6-bit scales and mins packed into `scales`,
// d and dmin stored, then the codes L (0..nmax) recomputed from them.
void k4_finish(const float* x, std::byte* y, int nmax, const float* scales, const float* mins, std::uint8_t* L) {
    std::byte* sc = y + 4;
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < 8; ++j) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
        auto ls = static_cast<std::uint8_t>(nearest_int(inv_scale * scales[j]));
        auto lm = static_cast<std::uint8_t>(nearest_int(inv_min * mins[j]));
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            sc[j] = std::byte(ls);
            sc[j + 4] = std::byte(lm);
        } else {
            sc[j + 4] = std::byte(static_cast<std::uint8_t>((ls & 0xF) | (lm & 0xF) << 4));
            sc[j - 4] |= std::byte(static_cast<std::uint8_t>((ls >> 4) << 6));
            sc[j] |= std::byte(static_cast<std::uint8_t>((lm >> 4) << 6));
        }
    }
    const std::uint16_t d = fp32_to_fp16(max_scale / 63.f);
    const std::uint16_t dmin = fp32_to_fp16(max_min / 63.f);
    store_u16(y, d);
    store_u16(y + 2, dmin);
    for (int j = 0; j < 8; ++j) {
        std::uint8_t s, m;
        scale_min_k4(j, sc, s, m);
        const float dl = fp16_to_fp32(d) * static_cast<float>(s);
        if (dl == 0.0f) continue;
        const float dm = fp16_to_fp32(dmin) * static_cast<float>(m);
        for (int ii = 0; ii < 32; ++ii)
            L[32 * j + ii] = static_cast<std::uint8_t>(clamp(nearest_int((x[32 * j + ii] + dm) / dl), 0, nmax));
    }
}

// Q4_K's and Q5_K's searches for `count` super-blocks (1 or 2), k.k4_supers at a time while they last, then
// one at a time by the scalar search: the same results either way.
void k4_searches(const float* x, std::size_t count, const Kernels& k, int nmax, float rmin, int nstep, float* scales,
                 float* mins, std::uint8_t* L) {
    const auto per_call = static_cast<std::size_t>(k.k4_supers);
    for (std::size_t b = 0; b < count;) {
        const bool whole = b + per_call <= count;
        (whole ? k.k4_search : k4_search_scalar)(x + b * kSuper, nmax, rmin, nstep, scales + 8 * b, mins + 8 * b,
                                                 L + b * kSuper);
        b += whole ? per_call : 1;
    }
}

void pack_q4_k(const std::uint8_t* L, std::byte* y) {
    std::byte* q = y + 16;
    for (std::size_t j = 0; j < kSuper; j += 64, q += 32)
        for (std::size_t l = 0; l < 32; ++l) q[l] = std::byte(static_cast<std::uint8_t>(L[j + l] | L[j + l + 32] << 4));
}

void pack_q5_k(const std::uint8_t* L, std::byte* y) {
    std::byte* qh = y + 16;
    std::byte* ql = y + 48;
    std::memset(qh, 0, 32);
    std::uint8_t m1 = 1, m2 = 2;
    for (std::size_t n = 0; n < kSuper; n += 64, ql += 32) {
        for (std::size_t j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) {
                l1 -= 16;
                qh[j] |= std::byte(m1);
            }
            int l2 = L[n + j + 32];
            if (l2 > 15) {
                l2 -= 16;
                qh[j] |= std::byte(m2);
            }
            ql[j] = std::byte(static_cast<std::uint8_t>(l1 | l2 << 4));
        }
        m1 = static_cast<std::uint8_t>(m1 << 2);
        m2 = static_cast<std::uint8_t>(m2 << 2);
    }
}

void encode_q6_k_block(const float* x, std::byte* y, const Kernels& k) {
    std::int8_t L[kSuper];
    float scales[16];
    float max_scale = 0;
    float max_abs_scale = 0;
    for (int ib = 0; ib < 16; ib += k.q6_subs) k.q6_search(x + 16 * ib, scales + ib, L + 16 * ib);
    for (int ib = 0; ib < 16; ++ib) {
        const float scale = scales[ib];
        const float abs_scale = std::fabs(scale);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if (max_abs_scale < kGroupMaxEps) {
        std::memset(y, 0, 210);
        store_u16(y + 208, fp32_to_fp16(0.f));
        return;
    }
    std::byte* ql = y;
    std::byte* qh = y + 128;
    std::byte* sc = y + 192;
    const float iscale = -128.f / max_scale;
    const std::uint16_t d = fp32_to_fp16(1 / iscale);
    store_u16(y + 208, d);
    for (int ib = 0; ib < 16; ++ib) {
        const int s = nearest_int(iscale * scales[ib]);
        sc[ib] = std::byte(static_cast<std::uint8_t>(s < 127 ? s : 127));
    }
    for (int j = 0; j < 16; ++j) {
        const float dl = fp16_to_fp32(d) * static_cast<float>(static_cast<std::int8_t>(sc[j]));
        if (dl == 0.0f) continue;
        for (int ii = 0; ii < 16; ++ii)
            L[16 * j + ii] = static_cast<std::int8_t>(clamp(nearest_int(x[16 * j + ii] / dl), -32, 31) + 32);
    }
    for (std::size_t j = 0; j < kSuper; j += 128, ql += 64, qh += 32) {
        for (std::size_t l = 0; l < 32; ++l) {
            const int q1 = L[j + l] & 0xF;
            const int q2 = L[j + l + 32] & 0xF;
            const int q3 = L[j + l + 64] & 0xF;
            const int q4 = L[j + l + 96] & 0xF;
            ql[l] = std::byte(static_cast<std::uint8_t>(q1 | q3 << 4));
            ql[l + 32] = std::byte(static_cast<std::uint8_t>(q2 | q4 << 4));
            qh[l] = std::byte(static_cast<std::uint8_t>((L[j + l] >> 4) | (L[j + l + 32] >> 4) << 2 |
                                                        (L[j + l + 64] >> 4) << 4 | (L[j + l + 96] >> 4) << 6));
        }
    }
}

template <void (*Block)(const float*, std::byte*)>
void encode_blocks(const float* x, std::byte* out, std::size_t n, std::size_t block_bytes) {
    for (std::size_t b = 0; b < n / kSuper; ++b) Block(x + b * kSuper, out + b * block_bytes);
}

// Q4_K and Q5_K, two super-blocks at a time (the 16-lane kernel's width).
template <void (*Pack)(const std::uint8_t*, std::byte*)>
void encode_k4(const float* x, std::byte* out, std::size_t n, std::size_t block_bytes, const Kernels& k, int nmax,
               float rmin, int nstep) {
    std::uint8_t L[2 * kSuper];
    float scales[16], mins[16];
    for (std::size_t b = 0; b < n / kSuper; b += 2) {
        const std::size_t count = std::min<std::size_t>(2, n / kSuper - b);
        k4_searches(x + b * kSuper, count, k, nmax, rmin, nstep, scales, mins, L);
        for (std::size_t s = 0; s < count; ++s) {
            std::byte* y = out + (b + s) * block_bytes;
            k4_finish(x + (b + s) * kSuper, y, nmax, scales + 8 * s, mins + 8 * s, L + s * kSuper);
            Pack(L + s * kSuper, y);
        }
    }
}

}  // namespace

void encode_q2_k(const float* x, std::byte* out, std::size_t n) { encode_blocks<encode_q2_k_block>(x, out, n, 84); }
void encode_q3_k(const float* x, std::byte* out, std::size_t n) { encode_blocks<encode_q3_k_block>(x, out, n, 110); }
void encode_q4_k(const float* x, std::byte* out, std::size_t n, const Kernels& k) {
    encode_k4<pack_q4_k>(x, out, n, 144, k, 15, -1.f, 20);
}
void encode_q5_k(const float* x, std::byte* out, std::size_t n, const Kernels& k) {
    encode_k4<pack_q5_k>(x, out, n, 176, k, 31, -0.5f, 15);
}
void encode_q6_k(const float* x, std::byte* out, std::size_t n, const Kernels& k) {
    for (std::size_t b = 0; b < n / kSuper; ++b) encode_q6_k_block(x + b * kSuper, out + b * 210, k);
}

void decode_q2_k(const std::byte* src, float* y, std::size_t n) {
    for (std::size_t b = 0; b < n / kSuper; ++b) {
        const std::byte* in = src + b * 84;
        const float d = fp16_to_fp32(load_u16(in + 80));
        const float min = fp16_to_fp32(load_u16(in + 82));
        const std::byte* q = in + 16;
        int is = 0;
        for (std::size_t half = 0; half < 2; ++half, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int part = 0; part < 2; ++part) {
                    const int sc = u8(in[is++]);
                    const float dl = d * static_cast<float>(sc & 0xF);
                    const float ml = min * static_cast<float>(sc >> 4);
                    for (int l = 0; l < 16; ++l)
                        *y++ = dl * static_cast<float>((u8(q[l + 16 * part]) >> shift) & 3) - ml;
                }
            }
        }
    }
}

void decode_q3_k(const std::byte* src, float* y, std::size_t n) {
    for (std::size_t b = 0; b < n / kSuper; ++b) {
        const std::byte* in = src + b * 110;
        const std::byte* hm = in;
        const std::byte* q = in + 32;
        const float d_all = fp16_to_fp32(load_u16(in + 108));
        int is = 0;
        int m = 1;
        for (std::size_t half = 0; half < 2; ++half, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int part = 0; part < 2; ++part) {
                    const float dl = d_all * static_cast<float>(q3_k_scale(in + 96, is++) - 32);
                    for (int l = 16 * part; l < 16 * part + 16; ++l) {
                        const int code = ((u8(q[l]) >> shift) & 3) - ((u8(hm[l]) & m) ? 0 : 4);
                        *y++ = dl * static_cast<float>(code);
                    }
                }
            }
        }
    }
}

void decode_q4_k(const std::byte* src, float* y, std::size_t n) {
    for (std::size_t b = 0; b < n / kSuper; ++b) {
        const std::byte* in = src + b * 144;
        const float d = fp16_to_fp32(load_u16(in));
        const float min = fp16_to_fp32(load_u16(in + 2));
        const std::byte* q = in + 16;
        for (int is = 0; is < 8; is += 2, q += 32) {
            std::uint8_t sc, m;
            scale_min_k4(is, in + 4, sc, m);
            const float d1 = d * static_cast<float>(sc), m1 = min * static_cast<float>(m);
            scale_min_k4(is + 1, in + 4, sc, m);
            const float d2 = d * static_cast<float>(sc), m2 = min * static_cast<float>(m);
            for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(u8(q[l]) & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(u8(q[l]) >> 4) - m2;
        }
    }
}

void decode_q5_k(const std::byte* src, float* y, std::size_t n) {
    for (std::size_t b = 0; b < n / kSuper; ++b) {
        const std::byte* in = src + b * 176;
        const float d = fp16_to_fp32(load_u16(in));
        const float min = fp16_to_fp32(load_u16(in + 2));
        const std::byte* qh = in + 16;
        const std::byte* ql = in + 48;
        int u1 = 1, u2 = 2;
        for (int is = 0; is < 8; is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
            std::uint8_t sc, m;
            scale_min_k4(is, in + 4, sc, m);
            const float d1 = d * static_cast<float>(sc), m1 = min * static_cast<float>(m);
            scale_min_k4(is + 1, in + 4, sc, m);
            const float d2 = d * static_cast<float>(sc), m2 = min * static_cast<float>(m);
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * static_cast<float>((u8(ql[l]) & 0xF) + (u8(qh[l]) & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * static_cast<float>((u8(ql[l]) >> 4) + (u8(qh[l]) & u2 ? 16 : 0)) - m2;
        }
    }
}

void decode_q6_k(const std::byte* src, float* y, std::size_t n) {
    for (std::size_t b = 0; b < n / kSuper; ++b) {
        const std::byte* in = src + b * 210;
        const float d = fp16_to_fp32(load_u16(in + 208));
        const std::byte* ql = in;
        const std::byte* qh = in + 128;
        const std::byte* sc = in + 192;
        for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int h = u8(qh[l]);
                const int q1 = ((u8(ql[l]) & 0xF) | ((h >> 0) & 3) << 4) - 32;
                const int q2 = ((u8(ql[l + 32]) & 0xF) | ((h >> 2) & 3) << 4) - 32;
                const int q3 = ((u8(ql[l]) >> 4) | ((h >> 4) & 3) << 4) - 32;
                const int q4 = ((u8(ql[l + 32]) >> 4) | ((h >> 6) & 3) << 4) - 32;
                auto scale = [&](int k) { return d * static_cast<float>(static_cast<std::int8_t>(sc[is + k])); };
                y[l] = scale(0) * static_cast<float>(q1);
                y[l + 32] = scale(2) * static_cast<float>(q2);
                y[l + 64] = scale(4) * static_cast<float>(q3);
                y[l + 96] = scale(6) * static_cast<float>(q4);
            }
        }
    }
}

void decode_iq4_xs(const std::byte* src, float* y, std::size_t n) {
    for (std::size_t b = 0; b < n / kSuper; ++b) {
        const std::byte* in = src + b * 136;
        const float d = fp16_to_fp32(load_u16(in));
        const std::uint16_t scales_h = load_u16(in + 2);
        const std::byte* qs = in + 8;
        for (int ib = 0; ib < 8; ++ib, y += 32, qs += 16) {
            const int ls = ((u8(in[4 + ib / 2]) >> 4 * (ib % 2)) & 0xF) | ((scales_h >> 2 * ib) & 3) << 4;
            const float dl = d * static_cast<float>(ls - 32);
            for (int j = 0; j < 16; ++j) {
                y[j] = dl * static_cast<float>(kIq4Values[u8(qs[j]) & 0xF]);
                y[j + 16] = dl * static_cast<float>(kIq4Values[u8(qs[j]) >> 4]);
            }
        }
    }
}

}  // namespace headfuse::blocks
