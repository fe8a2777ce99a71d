// headfuse: the hyperparameters of a LLaMA-family model, and their llama.* metadata form.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "headfuse/gguf.h"
#include "headfuse/role.h"

namespace headfuse {

// Upper bounds that keep every size computed from a config far from overflow, and a hostile file's metadata
// from asking for absurd allocations before its tensors are checked. A vocabulary's three tokenizer arrays
// (tokens, scores, types) must fit in what the reader holds (kMaxArrayItems), and a model's tensors in
// kMaxTensors, so that every file headfuse writes, it reads back.
inline constexpr std::uint32_t kMaxDim = 1u << 20;
inline constexpr std::uint32_t kMaxHeads = 1u << 12;
inline constexpr std::uint32_t kMaxLayers = 1u << 12;
inline constexpr std::uint32_t kMaxVocab = 1u << 22;
inline constexpr std::uint32_t kMaxContext = kMaxDim * 16;
static_assert(3 * std::uint64_t{kMaxVocab} < kMaxArrayItems);

// RoPE context scaling, as llama.cpp reads `llama.rope.scaling.type`.
enum class RopeScaling : std::uint8_t {
    None,    // positions as they are
    Linear,  // positions divided by the factor (position interpolation)
    Yarn,    // YaRN: interpolation blended with extrapolation per dimension, magnitudes rescaled
};

std::string_view rope_scaling_name(RopeScaling s) noexcept;  // "none", "linear", "yarn"

struct Config {
    std::uint32_t d_model = 0;
    std::uint32_t n_heads = 0;
    std::uint32_t n_kv_heads = 0;  // divides n_heads (GQA; 1 is MQA)
    std::uint32_t d_head = 0;      // may differ from d_model / n_heads; even (RoPE rotates pairs)
    std::uint32_t d_ff = 0;
    std::uint32_t n_layers = 0;
    std::uint32_t vocab = 0;
    std::uint32_t context_length = 2048;
    float rms_eps = 1e-5f;
    float rope_theta = 10000.0f;
    RopeScaling rope_scaling = RopeScaling::None;
    float rope_scaling_factor = 1.0f;         // context multiplier (llama.cpp's freq_scale is its inverse)
    std::uint32_t rope_original_context = 0;  // YaRN: the context before scaling; 0 means context_length
    float rope_attn_factor = 1.0f;            // rope.scaling.attn_factor: multiplies cos and sin
    bool tied = false;                        // output layer reuses token_embd.weight
    std::uint32_t donor_d_in = 0;  // > 0: a projection lens (donor embedding [donor_d_in, vocab] x lens.proj)
    // Keys present in the file that change what llama.cpp computes and that the forward pass does not model
    // ("key 'llama.attention.causal' = false"): forward_logits, and so logits and verify, refuse the model,
    // naming the first. fuse and split carry such keys over untouched.
    std::vector<std::string> unmodeled;
    // The optional roles (src/roles.cpp) the model has, in every layer. Not metadata: read off the tensors.
    RoleSet optional_roles;

    // Error with a one-line message naming the first field out of range.
    void validate() const;

    std::uint32_t q_dim() const noexcept { return n_heads * d_head; }
    std::uint32_t kv_dim() const noexcept { return n_kv_heads * d_head; }
    bool has_lens() const noexcept { return donor_d_in > 0; }

    // Writes general.architecture = "llama" and every llama.* key llama.cpp reads (counts as u32, epsilon
    // and theta as f32, key_length/value_length/rope.dimension_count = d_head always). The rope.scaling.*
    // keys are written when they say something: a scaling type other than none, an original context, an
    // attention factor other than 1.
    void write_metadata(Metadata& md) const;
    // Reads the llama.* keys back, checking types, with llama.cpp's defaults for absent ones (a missing
    // rope.scaling.type is "linear", a missing factor 1, the old key rope.scale_linear stands in for the
    // factor). `tied` and `donor_d_in` are not metadata: the caller sets them from the tensors present.
    // `where` (a file name) prefixes errors.
    static Config from_metadata(const Metadata& md, std::string_view where);

    bool operator==(const Config&) const = default;
};

// "d_model 2048, 16 heads (4 kv) x 128, d_ff 5632, 5 layers, vocab 32000, untied"
std::string describe(const Config& c);

}  // namespace headfuse
