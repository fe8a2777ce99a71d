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
constexpr std::string_view kQwen3Archs[] = {"Qwen3ForCausalLM"};
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
    // Phi3ForCausalLM never has, and rope_factors_long/short, LongRoPE's, which headfuse does not model);
    // attn_output is [n_embd, n_embd].
    {.family = Family::Phi3,
     .gguf_name = "phi3",
     .hf_model_types = kPhi3Types,
     .hf_architectures = kPhi3Archs,
     .rope = RopePairing::Neox,
     .q_dim_is_d_model = true,
     .fused_qkv = true,
     .fused_gate_up = true},
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
