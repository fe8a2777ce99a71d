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
};

struct NameMap {
    Role role;
    std::string_view name;  // "{L}" is the layer, "{G}" is "_" for TransformerLens's GQA key/value names
    Storage storage;
    bool rope_rows;    // Q and K: rows in the layout's RoPE order (rotate-half for Hugging Face)
    bool may_be_ones;  // a norm TransformerLens drops when it folds it (then all ones)
};

std::span<const NameMap> hf_names();
std::span<const NameMap> tl_names();

// The tensor name of a map row in a layer.
std::string foreign_name(const NameMap& m, std::uint32_t layer, bool gqa);

// The layout's row-major shape of a role's fused tensor of ggml shape ne.
std::vector<std::uint64_t> foreign_shape(const NameMap& m, std::span<const std::uint64_t> ne, const Config& c);

// TransformerLens's names for the biases and buffers of a LLaMA state dict, which carry no weights headfuse
// keeps: biases must be zero, buffers are ignored.
inline constexpr std::string_view kTlBiases[] = {"attn.b_Q", "attn.{G}b_K", "attn.{G}b_V",
                                                 "attn.b_O", "mlp.b_in",    "mlp.b_out"};

// Hyperparameters from config.json (Hugging Face) and from the JSON of HookedTransformerConfig. `where` names
// the file in errors.
Config hf_config(const nlohmann::json& j, const std::string& where);
struct TlConfig {
    Config config;
    bool rotate_half = true;  // rotary_adjacent_pairs false
    bool folded = false;      // normalization_type RMSPre
};
TlConfig tl_config(const nlohmann::json& j, const std::string& where);

nlohmann::json hf_config_json(const Config& c, std::string_view torch_dtype);
nlohmann::json tl_config_json(const Config& c, bool folded);

}  // namespace headfuse
