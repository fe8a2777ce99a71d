// The foreign layouts as data: for each role of the table (roles.h), the name a layout gives its tensor and how
// the layout stores its rows. Import (layouts.cpp) and export (export.cpp) read the same maps.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "headfuse/checkpoint.h"
#include "headfuse/config.h"
#include "headfuse/role.h"

namespace headfuse {

// How a layout stores a role's tensor, relative to llama.cpp's fused tensor [ne0, ne1] (ggml order).
enum class Storage {
    Rows,        // the same rows: row-major shape [ne1, ne0]
    Transposed,  // the transpose: row-major [ne0, ne1]
    HeadsT,      // each head transposed: [n_heads, ne0, d_head] (TransformerLens W_Q, W_K, W_V)
    OutHeads,    // the transpose, its rows split by head: [n_heads, d_head, ne1] (TransformerLens W_O)
    HeadRows,    // a vector split by head: [n_heads, d_head] (TransformerLens b_Q, b_K, b_V)
};

struct NameMap {
    Role role;
    std::string_view name;  // "{L}" is the layer, "{G}" is "_" for TransformerLens's GQA key/value names
    Storage storage;
    bool rope_rows;    // Q and K (and their biases): rows (elements) in the layout's RoPE order (rotate-half)
    bool may_be_ones;  // a norm TransformerLens drops when it folds it (then all ones)
};

std::span<const NameMap> hf_names();
// The Hugging Face names of the config's family: llama's, or Gemma 2/3's (post norms; pre_feedforward_layernorm is
// the FFN's input norm). A row's rope_rows holds for the families that rotate adjacent pairs only (ArchSpec::rope).
std::span<const NameMap> hf_names(const Config& c);
// Phi3ForCausalLM's stacked projections (qkv_proj, gate_up_proj), by the first role of the fused layout's
// stacked tensor (TensorSpec::parts).
std::span<const NameMap> hf_stacked_names();
std::span<const NameMap> tl_names();
// The TransformerLens names of the config's family: llama's, or Gemma's (embedding read from unembed.W_U, norms
// stored as 1 + w, Gemma 2's and 3's ln1_post and ln2_post, Gemma 3's attn.q_norm.w and attn.k_norm.w).
std::span<const NameMap> tl_names(const Config& c);

// The tensor name of a map row in a layer.
std::string foreign_name(const NameMap& m, std::uint32_t layer, bool gqa);

// The layout's row-major shape of a role's fused tensor of ggml shape ne.
std::vector<std::uint64_t> foreign_shape(const NameMap& m, std::span<const std::uint64_t> ne, const Config& c);

// TransformerLens's biases that llama.cpp's graph has no place for: b_in (added after the gated MLP's product,
// where llama.cpp's ffn_up.bias is added before it) and the unembedding's b_U. They must be zero.
inline constexpr std::string_view kTlZeroBiases[] = {"blocks.{L}.mlp.b_in", "unembed.b_U"};

// Hyperparameters from config.json (Hugging Face) and from the JSON of HookedTransformerConfig. `where` names
// the file in errors.
// The optional roles a Hugging Face config implies (biases from attention_bias and mlp_bias, rope_freqs from a
// "llama3" rope_scaling, rope_factors_long/short from Phi-3's "longrope") are set in the config's optional_roles.
Config hf_config(const nlohmann::json& j, const std::string& where);
// Llama 3's per-dimension RoPE frequency divisors (rope_freqs.weight) for a "llama3" rope_scaling object, as
// llama.cpp's converter computes them (in f32).
std::vector<float> llama3_rope_factors(const nlohmann::json& rope_scaling, const Config& c, const std::string& where);
// LongRoPE's long or short factors (rope_factors_long/short.weight) of a Phi-3 "longrope" rope_scaling object:
// d_head / 2 positive numbers, each rounded to f32 (llama.cpp's converter: torch.tensor(..., dtype=float32)).
std::vector<float> longrope_factors(const nlohmann::json& rope_scaling, const Config& c, const std::string& where,
                                    bool long_factors);
// LongRoPE's attention factor as llama.cpp's converter and Hugging Face compute it: sqrt(1 + ln(s) / ln(original))
// with s = context_length / original context (rope_original_context, else context_length), 1 when s <= 1; in f64,
// rounded to f32.
float longrope_attn_factor(const Config& c);
struct TlConfig {
    Config config;
    bool rotate_half = true;  // rotary_adjacent_pairs false
    bool folded = false;      // normalization_type RMSPre
};
TlConfig tl_config(const nlohmann::json& j, const std::string& where);
// The families TransformerLens's layout is mapped for (llama, qwen2, qwen3, gemma, gemma2), and their names for
// messages.
bool tl_family(Family f);
std::string tl_families();

// Hugging Face's attention_bias and mlp_bias flags for a model's optional roles (any bias of the group).
bool hf_attention_bias(const Config& c);
bool hf_mlp_bias(const Config& c);

// An f32 hyperparameter as config.json writes it: the double of the shortest decimal that reads back as x (so
// 1e-05, not the f32's exact 9.999999747378752e-06), which JSON prints as that decimal.
double json_float(float x);

// `rope_scaling` is the object to write (null for none); its floats and the config's are json_float's. A phi3
// model's is Phi3ForCausalLM's, with `sliding_window` (0: null) as its file carries it.
nlohmann::json hf_config_json(const Config& c, std::string_view torch_dtype, const nlohmann::json& rope_scaling,
                              std::uint32_t sliding_window = 0);
nlohmann::json tl_config_json(const Config& c, bool folded);

}  // namespace headfuse
