// The K-quant mixes as llama.cpp's llama_tensor_get_type_impl chooses them for the architectures of headfuse's
// table (no experts, no importance matrix, no Falcon): the family enters through the tensor names (phi3's
// attn_qkv) and MixModel (tied output, LLM_TYPE_70B). One table of names, one function of rules.
#include "headfuse/mix.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <string>

namespace headfuse {
namespace {

struct MixInfo {
    Mix mix;
    std::string_view name;
    DType base;
    std::uint32_t ftype;  // enum llama_ftype
};

constexpr std::array kMixes{
    MixInfo{Mix::Q3_K_S, "q3_k_s", DType::Q3_K, 11}, MixInfo{Mix::Q3_K_M, "q3_k_m", DType::Q3_K, 12},
    MixInfo{Mix::Q3_K_L, "q3_k_l", DType::Q3_K, 13}, MixInfo{Mix::Q4_K_S, "q4_k_s", DType::Q4_K, 14},
    MixInfo{Mix::Q4_K_M, "q4_k_m", DType::Q4_K, 15}, MixInfo{Mix::Q5_K_S, "q5_k_s", DType::Q5_K, 16},
    MixInfo{Mix::Q5_K_M, "q5_k_m", DType::Q5_K, 17},
};
constexpr std::array kAllMixes{Mix::Q3_K_S, Mix::Q3_K_M, Mix::Q3_K_L, Mix::Q4_K_S,
                               Mix::Q4_K_M, Mix::Q5_K_S, Mix::Q5_K_M};

const MixInfo& info(Mix m) { return kMixes[static_cast<std::size_t>(m)]; }

// llama-quant.cpp's use_more_bits: the first and last eighth of the layers and every third one between.
bool use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

// The layer of "blk.N.<rest>", or -1.
int layer_of(std::string_view name) {
    constexpr std::string_view prefix = "blk.";
    if (name.substr(0, prefix.size()) != prefix) return -1;
    int layer = -1;
    const char* first = name.data() + prefix.size();
    const auto [end, ec] = std::from_chars(first, name.data() + name.size(), layer);
    return ec == std::errc{} && end != first ? layer : -1;
}

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

}  // namespace

std::string_view mix_name(Mix m) noexcept { return info(m).name; }

std::optional<Mix> parse_mix(std::string_view name) noexcept {
    std::string lower(name);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    for (const MixInfo& m : kMixes)
        if (m.name == lower) return m.mix;
    return std::nullopt;
}

std::span<const Mix> all_mixes() noexcept { return kAllMixes; }
DType mix_base_type(Mix m) noexcept { return info(m).base; }
std::uint32_t file_type(Mix m) noexcept { return info(m).ftype; }

// A pure K-quant is named by the ftype llama-quantize's aliases Q3_K, Q4_K and Q5_K stand for (the _M mixes).
std::uint32_t file_type(DType t) noexcept {
    switch (t) {
        case DType::F32: return 0;
        case DType::F16: return 1;
        case DType::Q4_0: return 2;
        case DType::Q4_1: return 3;
        case DType::Q8_0: return 7;
        case DType::Q5_0: return 8;
        case DType::Q5_1: return 9;
        case DType::Q2_K: return 10;
        case DType::Q3_K: return 12;
        case DType::Q4_K: return 15;
        case DType::Q5_K: return 17;
        case DType::Q6_K: return 18;
        case DType::IQ4_NL: return 25;
        case DType::IQ4_XS: return 30;
        case DType::BF16: return 32;
    }
    return 0;
}

DType fallback_type(DType want, std::uint64_t ne0) noexcept {
    const auto fits = [ne0](DType t) { return ne0 % traits(t).block_size == 0; };
    if (fits(want)) return want;
    DType smaller = want;  // a 32-wide type has nothing smaller: F16 below
    switch (want) {
        case DType::Q2_K:
        case DType::Q3_K: smaller = DType::Q4_0; break;
        case DType::Q4_K: smaller = DType::Q5_0; break;
        case DType::Q5_K: smaller = DType::Q5_1; break;
        case DType::Q6_K: smaller = DType::Q8_0; break;
        case DType::IQ4_XS: smaller = DType::IQ4_NL; break;
        default: break;
    }
    return fits(smaller) ? smaller : DType::F16;
}

DType mix_tensor_type(Mix m, std::string_view name, std::uint64_t ne0, const MixModel& model) {
    using enum Mix;
    DType t = mix_base_type(m);
    const int layer = layer_of(name);
    const int n = static_cast<int>(model.n_layers);
    if (name == "output.weight" || (model.tied && name == "token_embd.weight")) {
        // The output layer: Q8_0 when its rows are not whole blocks of the base type, else Q6_K.
        t = ne0 % traits(t).block_size != 0 ? DType::Q8_0 : DType::Q6_K;
    } else if (contains(name, "attn_v.weight") || contains(name, "attn_qkv.weight")) {
        // A fused attn_qkv is attn_v-like (category_is_attn_v): its own ATTENTION_QKV rule comes after and is never
        // reached for these mixes. llama.cpp counts attn_v tensors in file order: the layer index, unless some
        // layers have no attention.
        int i = layer, n_v = n;
        if (!model.attention_layers.empty()) {
            const auto& a = model.attention_layers;
            i = static_cast<int>(std::lower_bound(a.begin(), a.end(), static_cast<std::uint32_t>(layer)) - a.begin());
            n_v = static_cast<int>(a.size());
        }
        if (m == Q3_K_M)
            t = i < 2 ? DType::Q5_K : DType::Q4_K;
        else if (m == Q3_K_L)
            t = DType::Q5_K;
        else if ((m == Q4_K_M || m == Q5_K_M) && use_more_bits(i, n_v))
            t = DType::Q6_K;
        else if (m == Q4_K_S && i < 4)
            t = DType::Q5_K;
        if (model.is_70b && (t == DType::Q3_K || t == DType::Q4_K)) t = DType::Q5_K;
    } else if (contains(name, "ffn_down")) {
        if (m == Q3_K_M)
            t = layer < n / 16 ? DType::Q5_K : DType::Q4_K;
        else if (m == Q3_K_L)
            t = DType::Q5_K;
        else if (m == Q4_K_M) {
            if (use_more_bits(layer, n)) t = DType::Q6_K;
        } else if (m == Q5_K_M && use_more_bits(layer, n))
            t = DType::Q6_K;
        else if (m == Q4_K_S && layer < n / 8)
            t = DType::Q5_K;
    } else if (contains(name, "attn_output.weight")) {
        if (m == Q3_K_M)
            t = DType::Q4_K;
        else if (m == Q3_K_L)
            t = DType::Q5_K;
    }
    return fallback_type(t, ne0);
}

}  // namespace headfuse
