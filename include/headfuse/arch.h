// headfuse: the architectures headfuse handles, one row of a table each.
//
// An architecture is data, not a fork: a row says what llama.cpp calls it (general.architecture and the prefix
// of its hyperparameter keys), which Hugging Face configs it is imported from, which optional tensor roles it
// may or must have, and what its graph does differently from llama's (RoPE pairing, norm weights stored as
// 1 + w, the gate's activation, embedding scale, soft-capping, attention scale, sliding windows, per-layer RoPE,
// extra norms, fused projections). Config::architecture() and Config::key() read it; so do the readers, the
// Hugging Face import and export, and the forward pass.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "headfuse/role.h"

namespace headfuse {

// A model family: what Config::family holds. `deci` is not a family of its own: it is the llama family with
// per-layer head and feed-forward counts (Config::per_layer()).
enum class Family : std::uint8_t {
    Llama,  // llama (and deci, and Mistral, which llama.cpp's converter writes as llama)
    Qwen2,  // qwen2: q/k/v biases, NEOX RoPE
    Qwen3,  // qwen3: per-head q/k RMS norms, NEOX RoPE, head_dim free of hidden_size / heads
    Phi3,   // phi3: Q, K, V stacked in attn_qkv, gate and up in ffn_up, NEOX RoPE
};

// How RoPE pairs the dimensions of a head (llama.cpp's llama_model_rope_type).
enum class RopePairing : std::uint8_t {
    Adjacent,  // LLAMA_ROPE_TYPE_NORM: (x[2i], x[2i+1]); Hugging Face's rotate_half rows are permuted on import
    Neox,      // LLAMA_ROPE_TYPE_NEOX: (x[i], x[i + d_head/2]), exactly Hugging Face's rotate_half
};

// The activation of the gated feed-forward: act(gate · x) * (up · x).
enum class GateActivation : std::uint8_t {
    Silu,      // x * sigmoid(x)
    GeluTanh,  // ggml_gelu: the tanh approximation, which ggml-cpu reads from an f16 table
};

// The scale of the attention scores before the softmax.
enum class AttnScaleRule : std::uint8_t {
    InvSqrtHeadDim,     // 1 / sqrt(d_head)
    InvSqrtEmbdPerHead  // 1 / sqrt(d_model / n_heads) (Gemma 2/3 at the sizes llama.cpp's loader names so)
};

struct ArchSpec {
    Family family;
    // general.architecture, and the prefix of every hyperparameter key ("llama" -> "llama.block_count").
    std::string_view gguf_name;
    // The per-layer-counts form (deci): head_count, head_count_kv and feed_forward_length are arrays.
    bool per_layer_counts = false;
    // The Hugging Face config.json `model_type`s and `architectures` entries imported as this row.
    std::span<const std::string_view> hf_model_types{};
    std::span<const std::string_view> hf_architectures{};
    // The optional roles (Presence::Optional in the role table) llama.cpp's loader for it accepts, and those
    // among them it requires. A model with a role outside `allowed` is refused by name.
    RoleSet allowed_roles{};
    RoleSet required_roles{};
    RopePairing rope = RopePairing::Adjacent;
    // llama.cpp's loader sizes attn_output [n_embd, n_embd] (qwen2): n_heads * d_head must equal d_model.
    bool q_dim_is_d_model = false;
    // What the graph does differently from llama's. Each is the llama value in the rows of llama, deci, qwen2
    // and qwen3; the rows of the families that differ set them.
    bool norm_plus_one = false;  // Hugging Face multiplies by 1 + w; the GGUF stores 1 + w (Gemma)
    GateActivation gate = GateActivation::Silu;
    bool embd_scale_sqrt_d_model = false;  // the embedding multiplied by sqrt(d_model) (Gemma)
    bool attn_softcap = false;             // scores become c * tanh(s / c) (Gemma 2: attn_logit_softcapping)
    bool final_softcap = false;            // logits likewise (Gemma 2: final_logit_softcapping)
    AttnScaleRule attn_scale = AttnScaleRule::InvSqrtHeadDim;
    // Sliding-window attention: 0 none; n: layer i is local (windowed) unless i % n == n - 1 (Gemma 2: 2,
    // Gemma 3: 6).
    std::uint32_t swa_pattern = 0;
    // Local layers rotate with rope.freq_base_swa and no scaling, global ones with rope.freq_base and the
    // file's scaling (Gemma 3).
    bool swa_rope = false;
    bool post_norms = false;     // post_attention_norm and post_ffw_norm after each block (Gemma 2/3)
    bool fused_qkv = false;      // attn_qkv: Q, K and V rows stacked (Phi-3)
    bool fused_gate_up = false;  // ffn_up: gate and up rows stacked (Phi-3)
};

// Every row: llama, deci, qwen2, qwen3, phi3.
std::span<const ArchSpec> arch_table();
// The row of a family, in its per-layer-counts form when per_layer (nullptr if the family has none).
const ArchSpec* find_arch(Family family, bool per_layer);
// The row whose gguf_name is `name` (nullptr when none).
const ArchSpec* find_arch(std::string_view gguf_name);
// The row a Hugging Face config.json's `model_type` names, and the row an entry of its `architectures` names
// (nullptr when none). The llama family's row is the plain one (not deci's).
const ArchSpec* find_hf_model_type(std::string_view model_type);
const ArchSpec* find_hf_architecture(std::string_view architecture);
// "llama", "qwen2", "qwen3", "phi3": the family's name (its row's gguf_name without per-layer counts).
std::string_view family_name(Family family) noexcept;
// "llama, deci, qwen2, qwen3, phi3": every gguf_name, for messages.
std::string_view arch_names() noexcept;

}  // namespace headfuse
