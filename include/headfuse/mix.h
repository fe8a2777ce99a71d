// headfuse: the type of each tensor of a quantized llama model, chosen as llama.cpp's quantizer chooses it.
//
// Two kinds of --type: a pure type (every 2-D weight in it) and one of llama-quantize's K-quant mixes, which
// give attn_v, ffn_down, attn_output and the output layer more bits in some layers. Both apply llama.cpp's
// fallback when a row is not a whole number of the type's blocks. The rules are those of
// llama_tensor_get_type and tensor_type_fallback (src/llama-quant.cpp) for the `llama` architecture without an
// importance matrix; docs/ENCODING.md lists them.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "headfuse/types.h"

namespace headfuse {

// llama-quantize's K-quant mixes (its --type q4_k_m etc.).
enum class Mix : std::uint8_t { Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M };

std::string_view mix_name(Mix m) noexcept;                     // "q4_k_m", ...
std::optional<Mix> parse_mix(std::string_view name) noexcept;  // case-insensitive
std::span<const Mix> all_mixes() noexcept;                     // every mix, in the order of the enum
DType mix_base_type(Mix m) noexcept;  // the type of the tensors the mix does not single out (Q4_K for q4_k_m)

// llama.cpp's general.file_type (enum llama_ftype) for a file of pure type t, or of mix m.
std::uint32_t file_type(DType t) noexcept;
std::uint32_t file_type(Mix m) noexcept;
// GGML_QNT_VERSION, written as general.quantization_version into every file with quantized weights.
inline constexpr std::uint32_t kQuantizationVersion = 2;

// What llama.cpp needs to know about the model to choose a tensor's type.
struct MixModel {
    std::uint32_t n_layers = 0;
    bool tied = false;    // no output.weight: token_embd is also the output layer
    bool is_70b = false;  // llama.cpp's LLM_TYPE_70B: 80 layers (with grouped-query attention for llama)
    // The layers that have attention, ascending, when some have none (deci): llama.cpp counts attn_v tensors in
    // file order (i_attention_wv of n_attention_wv), not layers. Empty: every layer has attention.
    std::vector<std::uint32_t> attention_layers;
};

// tensor_type_fallback: `want` when rows of ne0 elements are whole blocks of it, else the smaller-block type
// llama.cpp falls back to (Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), else F16.
DType fallback_type(DType want, std::uint64_t ne0) noexcept;

// The type of the 2-D weight `name` (fused name, "blk.3.attn_v.weight") with rows of ne0 elements, under the
// mix, fallback included.
DType mix_tensor_type(Mix m, std::string_view name, std::uint64_t ne0, const MixModel& model);

}  // namespace headfuse
