#include "headfuse/arch.h"

#include <array>
#include <initializer_list>
#include <string>

namespace headfuse {
namespace {

constexpr RoleSet roles(std::initializer_list<Role> list) {
    RoleSet s;
    for (Role r : list) s.insert(r);
    return s;
}

// What llama.cpp's llama (and deci) loader accepts besides the required tensors: rope_freqs and every bias
// (create_tensor with TENSOR_NOT_REQUIRED).
constexpr RoleSet kLlamaRoles = roles({Role::RopeFreqs, Role::AttnQBias, Role::AttnKBias, Role::AttnVBias,
                                       Role::AttnOutputBias, Role::FfnGateBias, Role::FfnUpBias, Role::FfnDownBias});
// qwen2 and qwen3 load q/k/v biases (create_tensor_qkv, not required); qwen3 requires attn_q_norm and
// attn_k_norm. Neither loads rope_freqs, an attn_output or feed-forward bias.
constexpr RoleSet kQkvBiases = roles({Role::AttnQBias, Role::AttnKBias, Role::AttnVBias});
constexpr RoleSet kQkNorms = roles({Role::AttnQNorm, Role::AttnKNorm});
constexpr RoleSet kQwen3Roles =
    roles({Role::AttnQBias, Role::AttnKBias, Role::AttnVBias, Role::AttnQNorm, Role::AttnKNorm});

// MistralForCausalLM converts to GGUF llama (llama.cpp's converter: LlamaModel handles it).
constexpr std::string_view kLlamaTypes[] = {"llama", "mistral"};
constexpr std::string_view kLlamaArchs[] = {"LlamaForCausalLM", "MistralForCausalLM"};
constexpr std::string_view kQwen2Types[] = {"qwen2"};
constexpr std::string_view kQwen2Archs[] = {"Qwen2ForCausalLM"};
constexpr std::string_view kQwen3Types[] = {"qwen3"};
// llama.cpp's gemma, gemma2 and gemma3 loaders: q/k/v biases not required (create_tensor_qkv), post norms
// required (Gemma 2/3), q/k norms required (Gemma 3); no rope_freqs, output bias or FFN bias.
constexpr RoleSet kPostNorms = roles({Role::PostAttnNorm, Role::PostFfwNorm});
constexpr RoleSet kGemma2Roles =
    roles({Role::AttnQBias, Role::AttnKBias, Role::AttnVBias, Role::PostAttnNorm, Role::PostFfwNorm});
constexpr RoleSet kGemma3Roles = roles({Role::AttnQBias, Role::AttnKBias, Role::AttnVBias, Role::AttnQNorm,
                                        Role::AttnKNorm, Role::PostAttnNorm, Role::PostFfwNorm});
constexpr RoleSet kGemma3Required = roles({Role::AttnQNorm, Role::AttnKNorm, Role::PostAttnNorm, Role::PostFfwNorm});
constexpr std::string_view kGemmaTypes[] = {"gemma"};
constexpr std::string_view kGemmaArchs[] = {"GemmaForCausalLM"};
constexpr std::string_view kGemma2Types[] = {"gemma2"};
constexpr std::string_view kGemma2Archs[] = {"Gemma2ForCausalLM"};
// Gemma3ForConditionalGeneration: its language model (config text_config), the vision tower left out.
constexpr std::string_view kGemma3Types[] = {"gemma3_text", "gemma3"};
constexpr std::string_view kGemma3Archs[] = {"Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"};
constexpr std::string_view kQwen3Archs[] = {"Qwen3ForCausalLM"};
// phi3's LongRoPE factors (created with TENSOR_NOT_REQUIRED, layer 0's and duplicated for the others: one
// model-wide tensor each).
constexpr RoleSet kPhi3Roles = roles({Role::RopeLong, Role::RopeShort});
constexpr std::string_view kPhi3Types[] = {"phi3"};
constexpr std::string_view kPhi3Archs[] = {"Phi3ForCausalLM"};

const ArchSpec kArchs[] = {
    {.family = Family::Llama,
     .gguf_name = "llama",
     .hf_model_types = kLlamaTypes,
     .hf_architectures = kLlamaArchs,
     .allowed_roles = kLlamaRoles,
     .rope = RopePairing::Adjacent},
    {.family = Family::Llama,
     .gguf_name = "deci",
     .per_layer_counts = true,
     .allowed_roles = kLlamaRoles,
     .rope = RopePairing::Adjacent},
    {.family = Family::Qwen2,
     .gguf_name = "qwen2",
     .hf_model_types = kQwen2Types,
     .hf_architectures = kQwen2Archs,
     .allowed_roles = kQkvBiases,
     .rope = RopePairing::Neox,
     .q_dim_is_d_model = true},
    {.family = Family::Qwen3,
     .gguf_name = "qwen3",
     .hf_model_types = kQwen3Types,
     .hf_architectures = kQwen3Archs,
     .allowed_roles = kQwen3Roles,
     .required_roles = kQkNorms,
     .rope = RopePairing::Neox},
    // phi3 (llama_model_phi3): attn_qkv and the stacked ffn_up, no bias (its loader reads attn_qkv.bias, which
    // Phi3ForCausalLM never has), LongRoPE's rope_factors_long/short; attn_output is [n_embd, n_embd].
    {.family = Family::Phi3,
     .gguf_name = "phi3",
     .hf_model_types = kPhi3Types,
     .hf_architectures = kPhi3Archs,
     .allowed_roles = kPhi3Roles,
     .rope = RopePairing::Neox,
     .q_dim_is_d_model = true,
     .fused_qkv = true,
     .fused_gate_up = true},
    {.family = Family::Gemma,
     .gguf_name = "gemma",
     .hf_model_types = kGemmaTypes,
     .hf_architectures = kGemmaArchs,
     .allowed_roles = kQkvBiases,
     .rope = RopePairing::Neox,
     .norm_plus_one = true,
     .gate = GateActivation::GeluTanh,
     .embd_scale_sqrt_d_model = true,
     .attn_scale = AttnScaleRule::QueryInvSqrtHeadDim,
     .tied_only = true},
    {.family = Family::Gemma2,
     .gguf_name = "gemma2",
     .hf_model_types = kGemma2Types,
     .hf_architectures = kGemma2Archs,
     .allowed_roles = kGemma2Roles,
     .required_roles = kPostNorms,
     .rope = RopePairing::Neox,
     .norm_plus_one = true,
     .gate = GateActivation::GeluTanh,
     .embd_scale_sqrt_d_model = true,
     .attn_softcap = true,
     .final_softcap = true,
     .attn_scale = AttnScaleRule::QueryGemma27B,
     .embd_scale_layers = 46,
     .tied_only = true,
     .softcaps_always = true,
     .swa_always = true,
     .swa_pattern = 2,
     .post_norms = true},
    {.family = Family::Gemma3,
     .gguf_name = "gemma3",
     .hf_model_types = kGemma3Types,
     .hf_architectures = kGemma3Archs,
     .allowed_roles = kGemma3Roles,
     .required_roles = kGemma3Required,
     .rope = RopePairing::Neox,
     .norm_plus_one = true,
     .gate = GateActivation::GeluTanh,
     .embd_scale_sqrt_d_model = true,
     .final_softcap = true,
     .attn_scale = AttnScaleRule::QueryGemma27B,
     .embd_scale_layers = 62,
     .swa_pattern = 6,
     .swa_rope = true,
     .post_norms = true},
};

}  // namespace

std::span<const ArchSpec> arch_table() { return kArchs; }

const ArchSpec* find_arch(Family family, bool per_layer) {
    for (const ArchSpec& a : kArchs)
        if (a.family == family && a.per_layer_counts == per_layer) return &a;
    return nullptr;
}

const ArchSpec* find_arch(std::string_view gguf_name) {
    for (const ArchSpec& a : kArchs)
        if (a.gguf_name == gguf_name) return &a;
    return nullptr;
}

const ArchSpec* find_hf_model_type(std::string_view model_type) {
    for (const ArchSpec& a : kArchs)
        for (std::string_view t : a.hf_model_types)
            if (t == model_type) return &a;
    return nullptr;
}

const ArchSpec* find_hf_architecture(std::string_view architecture) {
    for (const ArchSpec& a : kArchs)
        for (std::string_view t : a.hf_architectures)
            if (t == architecture) return &a;
    return nullptr;
}

std::string_view family_name(Family family) noexcept {
    const ArchSpec* a = find_arch(family, false);
    return a ? a->gguf_name : "?";
}

std::string_view arch_names() noexcept {
    static const std::string names = [] {
        std::string s;
        for (const ArchSpec& a : kArchs) s += (s.empty() ? "" : ", ") + std::string(a.gguf_name);
        return s;
    }();
    return names;
}

}  // namespace headfuse
