// headfuse: the hyperparameters of a model of one of the families headfuse handles (headfuse/arch.h), and their
// ARCH.* metadata form.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "headfuse/arch.h"
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

// A model's hyperparameters. Plain data: validate() checks a config built by hand; from_metadata reads one.
struct Config {
    // The architecture's family: with per_layer() it picks the row of the architecture table (arch()).
    Family family = Family::Llama;
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
    // Values of the graph features a row of the architecture table switches on (0: the feature is off). Read and
    // written only for the rows that have the feature; validate() refuses a value the row lacks.
    std::uint32_t sliding_window = 0;  // attention.sliding_window: a query at p sees keys p - k for k < it
    float attn_softcap = 0.0f;         // attn_logit_softcapping
    float final_softcap = 0.0f;        // final_logit_softcapping
    float rope_theta_swa = 0.0f;       // rope.freq_base_swa: the RoPE base of the local layers
    // Keys present in the file that change what llama.cpp computes and that the forward pass does not model
    // ("key 'llama.attention.causal' = false"): forward_logits, and so logits and verify, refuse the model,
    // naming the first. fuse and split carry such keys over untouched.
    std::vector<std::string> unmodeled;
    // The optional roles (src/roles.cpp) the model has, in every layer. Not metadata: read off the tensors.
    RoleSet optional_roles;
    // Per-layer counts, as llama.cpp's `deci` architecture stores them (arrays head_count, head_count_kv,
    // feed_forward_length): each is empty (every layer has the scalar above) or holds n_layers entries, and then
    // the scalar is the largest entry, so that q_dim(), kv_dim() and d_ff bound every layer. A layer of 0 heads
    // has 0 kv heads and no attention (no attn_norm, attn_q/k/v, attn_output); layer 0 has heads (llama.cpp
    // takes the head size from it). A config with any list set is a `deci` model. set_layer_counts fills them.
    std::vector<std::uint32_t> layer_heads;
    std::vector<std::uint32_t> layer_kv_heads;
    std::vector<std::uint32_t> layer_d_ff;

    // Throws Error with a one-line message naming the first field out of range: of kind InvalidArgument, or
    // Unsupported for a model headfuse does not handle (deci's linear attention or layers without feed-forward,
    // per-layer counts or an optional tensor the family's llama.cpp loader does not read).
    void validate() const;

    std::uint32_t q_dim() const noexcept { return n_heads * d_head; }      // rows of a fused attn_q
    std::uint32_t kv_dim() const noexcept { return n_kv_heads * d_head; }  // rows of a fused attn_k, attn_v
    bool has_lens() const noexcept { return donor_d_in > 0; }
    // Whether layer `layer` attends through a sliding window (llama.cpp's set_swa_pattern: with pattern n, every
    // layer but those with layer % n == n - 1, when the row has windows and sliding_window is not 0).
    bool is_local_layer(std::uint32_t layer) const noexcept;
    // The attention scale llama.cpp's loader derives for this model (its row's AttnScaleRule), as an f32.
    float attention_scale() const noexcept;
    // The context the model was trained for before any extension: rope_original_context, else context_length
    // (llama.cpp's n_ctx_orig_yarn).
    std::uint32_t original_context() const noexcept {
        return rope_original_context ? rope_original_context : context_length;
    }

    // The counts of layer `layer` (< n_layers): the per-layer entry, or the scalar when the list is empty.
    std::uint32_t n_heads_at(std::uint32_t layer) const noexcept {
        return layer_heads.empty() ? n_heads : layer_heads[layer];
    }
    std::uint32_t n_kv_heads_at(std::uint32_t layer) const noexcept {
        return layer_kv_heads.empty() ? n_kv_heads : layer_kv_heads[layer];
    }
    std::uint32_t d_ff_at(std::uint32_t layer) const noexcept { return layer_d_ff.empty() ? d_ff : layer_d_ff[layer]; }
    bool has_attention(std::uint32_t layer) const noexcept { return n_heads_at(layer) > 0; }
    // Any per-layer list set: a llama model is written as general.architecture "deci".
    bool per_layer() const noexcept { return !layer_heads.empty() || !layer_kv_heads.empty() || !layer_d_ff.empty(); }
    // The row of the architecture table: the family's per-layer-counts form when per_layer() (deci), else its
    // plain row. A family without a per-layer form gives its plain row (validate() refuses per-layer counts).
    const ArchSpec& arch() const noexcept;
    // "llama", "deci", "qwen2", "qwen3": general.architecture, and the prefix of the hyperparameter keys.
    std::string_view architecture() const noexcept { return arch().gguf_name; }
    // The metadata key of a hyperparameter: key("attention.head_count") is "llama.attention.head_count",
    // "deci.attention.head_count", "qwen2.attention.head_count", ...
    std::string key(std::string_view name) const;
    // Sets the three lists (an empty one: every layer has the scalar) and each scalar to its list's largest
    // entry; validate() checks the rest.
    void set_layer_counts(std::vector<std::uint32_t> heads, std::vector<std::uint32_t> kv_heads,
                          std::vector<std::uint32_t> ff);

    // Writes general.architecture = architecture() and every ARCH.* key llama.cpp reads (counts as u32, epsilon
    // and theta as f32, key_length/value_length/rope.dimension_count = d_head always; a per-layer list as an
    // i32 array, as llama.cpp's converter writes it). The rope.scaling.* keys are written when they say
    // something: a scaling type other than none, an original context, an attention factor other than 1. The
    // keys of the row's features (attention.sliding_window, attn_logit_softcapping, final_logit_softcapping,
    // rope.freq_base_swa) are written for the rows that have them.
    void write_metadata(Metadata& md) const;
    // Reads the ARCH.* keys back (any architecture of the table; a deci file's counts may each be an array of
    // block_count u32 or i32, or a scalar, and fill all three lists), checking types, with llama.cpp's defaults for
    // absent ones (head_count_kv is head_count, a missing rope.scaling.type is "linear", a missing factor 1, the old
    // key rope.scale_linear stands in for the factor). `tied` and `donor_d_in` are not metadata: the caller sets them
    // from the tensors present. `where` (a file name) prefixes errors.
    static Config from_metadata(const Metadata& md, std::string_view where);

    bool operator==(const Config&) const = default;
};

// "d_model 2048, 16 heads (4 kv) x 128, d_ff 5632, 5 layers, vocab 32000, untied"; per-layer counts are
// listed by layer: "8,0,4 heads (2,0,1 kv)"; RoPE scaling and LongRoPE follow ("LongRoPE from context 4096 to
// 131072"). (The family is not part of it: Config::family.)
std::string describe(const Config& c);

}  // namespace headfuse
