// Foreign checkpoints in: the name maps of Hugging Face and TransformerLens, their configs, layout detection,
// and the per-head views over a mapped safetensors checkpoint.
#include "formats/import.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <set>

#include <unistd.h>

#include "base/fail.h"
#include "base/text.h"
#include "formats/safetensors.h"
#include "headfuse/error.h"
#include "headfuse/quantize.h"
#include "io/mapped_file.h"
#include "io/open_input.h"
#include "model/config_read.h"
#include "model/roles.h"
#include "model/view_rows.h"

namespace headfuse {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using enum Storage;

bool is_gemma(Family f) { return f == Family::Gemma || f == Family::Gemma2 || f == Family::Gemma3; }

constexpr NameMap kHf[] = {
    {Role::TokenEmbd, "model.embed_tokens.weight", Rows, false, false},
    {Role::OutputNorm, "model.norm.weight", Rows, false, false},
    {Role::Output, "lm_head.weight", Rows, false, false},
    {Role::AttnNorm, "model.layers.{L}.input_layernorm.weight", Rows, false, false},
    {Role::AttnQ, "model.layers.{L}.self_attn.q_proj.weight", Rows, true, false},
    {Role::AttnK, "model.layers.{L}.self_attn.k_proj.weight", Rows, true, false},
    {Role::AttnV, "model.layers.{L}.self_attn.v_proj.weight", Rows, false, false},
    {Role::AttnOutput, "model.layers.{L}.self_attn.o_proj.weight", Rows, false, false},
    {Role::FfnNorm, "model.layers.{L}.post_attention_layernorm.weight", Rows, false, false},
    {Role::FfnGate, "model.layers.{L}.mlp.gate_proj.weight", Rows, false, false},
    {Role::FfnUp, "model.layers.{L}.mlp.up_proj.weight", Rows, false, false},
    {Role::FfnDown, "model.layers.{L}.mlp.down_proj.weight", Rows, false, false},
    {Role::AttnQBias, "model.layers.{L}.self_attn.q_proj.bias", Rows, true, false},
    {Role::AttnKBias, "model.layers.{L}.self_attn.k_proj.bias", Rows, true, false},
    {Role::AttnVBias, "model.layers.{L}.self_attn.v_proj.bias", Rows, false, false},
    {Role::AttnOutputBias, "model.layers.{L}.self_attn.o_proj.bias", Rows, false, false},
    {Role::FfnGateBias, "model.layers.{L}.mlp.gate_proj.bias", Rows, false, false},
    {Role::FfnUpBias, "model.layers.{L}.mlp.up_proj.bias", Rows, false, false},
    {Role::FfnDownBias, "model.layers.{L}.mlp.down_proj.bias", Rows, false, false},
    {Role::AttnQNorm, "model.layers.{L}.self_attn.q_norm.weight", Rows, false, false},
    {Role::AttnKNorm, "model.layers.{L}.self_attn.k_norm.weight", Rows, false, false},
};

// Gemma 2 and 3: post_attention_layernorm is the norm of attention's output (post_attention_norm), the FFN's
// input norm is pre_feedforward_layernorm, its output's post_feedforward_layernorm. Hugging Face's other names.
const std::vector<NameMap>& hf_post_norm_names() {
    static const std::vector<NameMap> map = [] {
        std::vector<NameMap> m(std::begin(kHf), std::end(kHf));
        for (NameMap& row : m)
            if (row.role == Role::FfnNorm) row.name = "model.layers.{L}.pre_feedforward_layernorm.weight";
        m.push_back({Role::PostAttnNorm, "model.layers.{L}.post_attention_layernorm.weight", Rows, false, false});
        m.push_back({Role::PostFfwNorm, "model.layers.{L}.post_feedforward_layernorm.weight", Rows, false, false});
        return m;
    }();
    return map;
}

// Gemma3ForConditionalGeneration's language model: its tensors under one of two prefixes (older and newer
// transformers), and the vision tower and projector beside it, which headfuse leaves out.
struct HfPrefix {
    std::string_view model, lm_head;
};
constexpr HfPrefix kHfPrefixes[] = {{"model.", "lm_head.weight"},
                                    {"language_model.model.", "language_model.lm_head.weight"},
                                    {"model.language_model.", "lm_head.weight"}};
constexpr std::string_view kVisionPrefixes[] = {"vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                                                "model.multi_modal_projector."};

constexpr NameMap kTl[] = {
    {Role::TokenEmbd, "embed.W_E", Rows, false, false},
    {Role::OutputNorm, "ln_final.w", Rows, false, true},
    {Role::Output, "unembed.W_U", Transposed, false, false},
    {Role::AttnNorm, "blocks.{L}.ln1.w", Rows, false, true},
    {Role::AttnQ, "blocks.{L}.attn.W_Q", HeadsT, true, false},
    {Role::AttnK, "blocks.{L}.attn.{G}W_K", HeadsT, true, false},
    {Role::AttnV, "blocks.{L}.attn.{G}W_V", HeadsT, false, false},
    {Role::AttnOutput, "blocks.{L}.attn.W_O", OutHeads, false, false},
    {Role::FfnNorm, "blocks.{L}.ln2.w", Rows, false, true},
    {Role::FfnGate, "blocks.{L}.mlp.W_gate", Transposed, false, false},
    {Role::FfnUp, "blocks.{L}.mlp.W_in", Transposed, false, false},
    {Role::FfnDown, "blocks.{L}.mlp.W_out", Transposed, false, false},
    {Role::AttnQBias, "blocks.{L}.attn.b_Q", HeadRows, true, false},
    {Role::AttnKBias, "blocks.{L}.attn.{G}b_K", HeadRows, true, false},
    {Role::AttnVBias, "blocks.{L}.attn.{G}b_V", HeadRows, false, false},
    {Role::AttnOutputBias, "blocks.{L}.attn.b_O", Rows, false, false},
    {Role::FfnDownBias, "blocks.{L}.mlp.b_out", Rows, false, false},
    // Qwen3's per-layer q/k RMS norms, as TransformerLens's convert_qwen3_weights names them.
    {Role::AttnQNorm, "blocks.{L}.attn.q_norm.w", Rows, false, false},
    {Role::AttnKNorm, "blocks.{L}.attn.k_norm.w", Rows, false, false},
};

// TransformerLens's Gemma, Gemma 2 and Gemma 3 (convert_gemma_weights): the embedding is read from unembed.W_U (the
// tied lm_head, transposed), because embed.W_E holds it times sqrt(d_model) (checked, not read); the norms are stored
// as 1 + w in f32, llama.cpp's form; Gemma 2's and 3's post norms are ln1_post and ln2_post (ln2 the FFN's input
// norm); Gemma 3's per-head q/k norms are attn.q_norm.w and attn.k_norm.w (1 + w in f32 too).
const std::vector<NameMap>& tl_gemma_names() {
    static const std::vector<NameMap> map = [] {
        std::vector<NameMap> m;
        for (NameMap row : kTl) {
            if (row.role == Role::TokenEmbd) row = {Role::TokenEmbd, "unembed.W_U", Transposed, false, false};
            if (row.role == Role::Output) continue;
            row.may_be_ones = false;
            m.push_back(row);
        }
        m.push_back({Role::PostAttnNorm, "blocks.{L}.ln1_post.w", Rows, false, false});
        m.push_back({Role::PostFfwNorm, "blocks.{L}.ln2_post.w", Rows, false, false});
        return m;
    }();
    return map;
}

// Phi3ForCausalLM's stacked projections, by the first role of the fused layout's stacked tensor
// (TensorSpec::parts): qkv_proj holds Q, K and V rows, gate_up_proj the gate's rows then the up rows, as
// llama.cpp's attn_qkv and ffn_up hold them (NEOX RoPE: no row is permuted).
constexpr NameMap kHfStacked[] = {
    {Role::AttnQ, "model.layers.{L}.self_attn.qkv_proj.weight", Rows, false, false},
    {Role::FfnGate, "model.layers.{L}.mlp.gate_up_proj.weight", Rows, false, false},
};

// The roles Hugging Face's config flags switch on (LlamaConfig's attention_bias and mlp_bias; Qwen3Config's
// attention_bias), and those a family has whatever its config says (Qwen2Attention: q, k and v with bias;
// Qwen3Attention: q_norm and k_norm).
constexpr Role kHfAttentionBiases[] = {Role::AttnQBias, Role::AttnKBias, Role::AttnVBias, Role::AttnOutputBias};
constexpr Role kHfMlpBiases[] = {Role::FfnGateBias, Role::FfnUpBias, Role::FfnDownBias};
constexpr Role kQwen2Biases[] = {Role::AttnQBias, Role::AttnKBias, Role::AttnVBias};
constexpr Role kQwen3Norms[] = {Role::AttnQNorm, Role::AttnKNorm};

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
    for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
        s.replace(at, from.size(), to);
    return s;
}

// ---- JSON fields ---------------------------------------------------------------------------------------------

const json* field(const json& j, std::string_view key) {
    const auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::uint32_t get_count(const json& j, std::string_view key, const std::string& where,
                        std::optional<std::uint32_t> fallback = std::nullopt) {
    const json* v = field(j, key);
    if (!v) {
        if (fallback) return *fallback;
        fail(where + ": missing key '" + std::string(key) + "'");
    }
    if (!v->is_number_unsigned() || v->get<std::uint64_t>() > UINT32_MAX)
        fail(where + ": key '" + std::string(key) + "' must be an integer in [0, 2^32), found " + v->dump());
    return static_cast<std::uint32_t>(v->get<std::uint64_t>());
}

float get_float(const json& j, std::string_view key, const std::string& where, float fallback) {
    const json* v = field(j, key);
    if (!v) return fallback;
    if (!v->is_number()) fail(where + ": key '" + std::string(key) + "' must be a number, found " + v->dump());
    return v->get<float>();
}

void expect_string(const json& j, std::string_view key, std::string_view want, const std::string& where) {
    const json* v = field(j, key);
    if (v && (!v->is_string() || v->get<std::string>() != want))
        fail(ErrorKind::Unsupported, where + ": key '" + std::string(key) + "' is " + v->dump() +
                                         "; headfuse converts \"" + std::string(want) + "\" only");
}

// A rope_scaling object's kind ("rope_type", or the older "type"); "default" for an empty object.
std::string rope_scaling_type(const json& rs, const std::string& where) {
    if (!rs.is_object()) fail(where + ": key 'rope_scaling' must be an object, found " + rs.dump());
    const json* t = field(rs, "rope_type");
    if (!t) t = field(rs, "type");
    if (!t) {
        if (rs.empty()) return "default";
        fail(where + ": key 'rope_scaling' has no 'rope_type': " + rs.dump());
    }
    if (!t->is_string()) fail(where + ": rope_scaling's 'rope_type' must be a string, found " + t->dump());
    return t->get<std::string>();
}

json read_json(const fs::path& p) {
    const MappedFile m = MappedFile::open(p);
    if (m.bytes().size() > kMaxSafetensorsHeader) fail(p.string() + ": too large for a config file");
    const auto* c = reinterpret_cast<const char*>(m.bytes().data());
    try {
        return json::parse(c, c + m.bytes().size());
    } catch (const json::exception& e) {
        fail(p.string() + ": not valid JSON: " + e.what());
    }
}

}  // namespace

std::span<const NameMap> hf_names() { return kHf; }
std::span<const NameMap> hf_names(const Config& c) {
    if (c.arch().post_norms) return hf_post_norm_names();
    return kHf;
}
std::span<const NameMap> tl_names() { return kTl; }
std::span<const NameMap> tl_names(const Config& c) {
    if (is_gemma(c.family)) return tl_gemma_names();
    return kTl;
}
std::span<const NameMap> hf_stacked_names() { return kHfStacked; }

std::string foreign_name(const NameMap& m, std::uint32_t layer, bool gqa) {
    return replace_all(replace_all(std::string(m.name), "{L}", std::to_string(layer)), "{G}", gqa ? "_" : "");
}

std::vector<std::uint64_t> foreign_shape(const NameMap& m, std::span<const std::uint64_t> ne, const Config& c) {
    switch (m.storage) {
        case Rows: return {ne.rbegin(), ne.rend()};
        case Transposed: return {ne.begin(), ne.end()};
        case HeadsT: return {ne[1] / c.d_head, ne[0], c.d_head};
        case OutHeads: return {ne[0] / c.d_head, c.d_head, ne[1]};
        case HeadRows: return {ne[0] / c.d_head, c.d_head};
    }
    return {};
}

namespace {

void refuse_key(const json& j, std::string_view key, const std::string& where, const std::string& why) {
    if (const json* v = field(j, key))
        fail(ErrorKind::Unsupported, where + ": key '" + std::string(key) + "' is " + v->dump() + "; " + why);
}

// A Gemma config.json (GemmaConfig, Gemma2Config, Gemma3TextConfig, or Gemma3Config's text_config), with the
// defaults llama.cpp's converter assumes for Gemma 3 keys left out. What llama.cpp's graph cannot represent is
// refused by name.
Config gemma_hf_config(const json& top, const ArchSpec& row, const std::string& top_where) {
    std::string where = top_where;
    const json* jp = &top;
    if (const json* tc = field(top, "text_config")) {  // Gemma3ForConditionalGeneration
        if (!tc->is_object()) fail(where + ": key 'text_config' must be an object, found " + tc->dump());
        jp = tc;
        where += ": text_config";
    }
    const json& j = *jp;
    const bool g3 = row.family == Family::Gemma3, g2 = row.family == Family::Gemma2;
    const std::string name(row.gguf_name);
    // The activation: gelu_pytorch_tanh (Gemma 1's "gelu" is run as it by Hugging Face too).
    for (const char* k : {"hidden_activation", "hidden_act"})
        if (const json* v = field(j, k)) {
            const std::string a = v->is_string() ? v->get<std::string>() : v->dump();
            if (a != "gelu_pytorch_tanh" && a != "gelu_tanh" && !(row.family == Family::Gemma && a == "gelu"))
                fail(ErrorKind::Unsupported, where + ": key '" + k + "' is " + v->dump() + "; llama.cpp's " + name +
                                                 " graph computes gelu_pytorch_tanh");
        }
    Config c;
    c.family = row.family;
    c.tied = true;
    if (const json* v = field(j, "attention_bias")) {
        if (!v->is_boolean()) fail(where + ": key 'attention_bias' must be true or false, found " + v->dump());
        if (v->get<bool>())
            for (Role r : kHfAttentionBiases) c.optional_roles.insert(r);
    }
    c.d_model = get_count(j, "hidden_size", where, g3 ? std::optional<std::uint32_t>(2304) : std::nullopt);
    c.n_heads = get_count(j, "num_attention_heads", where, g3 ? std::optional<std::uint32_t>(8) : std::nullopt);
    c.n_kv_heads = get_count(j, "num_key_value_heads", where, g3 ? 4u : c.n_heads);
    c.d_head = get_count(j, "head_dim", where, g3 ? std::optional<std::uint32_t>(256) : std::nullopt);
    c.d_ff = get_count(j, "intermediate_size", where, g3 ? std::optional<std::uint32_t>(9216) : std::nullopt);
    c.n_layers = get_count(j, "num_hidden_layers", where, g3 ? std::optional<std::uint32_t>(26) : std::nullopt);
    c.vocab = get_count(j, "vocab_size", where, g3 ? std::optional<std::uint32_t>(262208) : std::nullopt);
    c.context_length = get_count(j, "max_position_embeddings", where, g3 ? 131072u : 8192u);
    c.rms_eps = get_float(j, "rms_norm_eps", where, 1e-6f);
    c.rope_theta = get_float(j, "rope_theta", where, g3 ? 1000000.0f : 10000.0f);
    if (const json* t = field(j, "tie_word_embeddings")) {
        if (!t->is_boolean()) fail(where + ": key 'tie_word_embeddings' must be true or false, found " + t->dump());
        c.tied = t->get<bool>();
    }
    if (row.post_norms) {
        for (Role r : {Role::PostAttnNorm, Role::PostFfwNorm}) c.optional_roles.insert(r);
    }
    if (g3)
        for (Role r : {Role::AttnQNorm, Role::AttnKNorm}) c.optional_roles.insert(r);
    if (g2) {
        for (const char* k : {"attn_logit_softcapping", "final_logit_softcapping"})
            if (!field(j, k))
                fail(ErrorKind::Unsupported, where + ": key '" + std::string(k) +
                                                 "' is absent or null; llama.cpp's gemma2 graph always soft-caps "
                                                 "(50 and 30 when its file has no value), so it cannot run this model");
        c.attn_softcap = get_float(j, "attn_logit_softcapping", where, 0.0f);
        c.final_softcap = get_float(j, "final_logit_softcapping", where, 0.0f);
        c.sliding_window = get_count(j, "sliding_window", where, 4096u);
    }
    if (g3) {
        refuse_key(j, "attn_logit_softcapping", where, "llama.cpp's gemma3 graph has no attention soft-cap");
        c.final_softcap = get_float(j, "final_logit_softcapping", where, 0.0f);
        std::uint32_t pattern = 6;
        if (field(j, "sliding_window_pattern")) pattern = get_count(j, "sliding_window_pattern", where);
        if (pattern != 6 && pattern != 1)
            fail(ErrorKind::Unsupported, where + ": key 'sliding_window_pattern' is " + std::to_string(pattern) +
                                             "; headfuse writes gemma3 files with llama.cpp's default pattern 6 "
                                             "(or 1: no windows)");
        if (const json* lt = field(j, "layer_types")) {  // newer transformers: the pattern spelled out
            json want = json::array();
            for (std::uint32_t i = 0; i < c.n_layers; ++i)
                want.push_back(pattern != 1 && i % 6 != 5 ? "sliding_attention" : "full_attention");
            if (*lt != want)
                fail(ErrorKind::Unsupported, where + ": key 'layer_types' is not llama.cpp's gemma3 pattern (" +
                                                 "every layer sliding but those with i % 6 == 5)");
        }
        if (pattern != 1) {
            c.sliding_window = get_count(j, "sliding_window", where, 4096u);
            c.rope_theta_swa = get_float(j, "rope_local_base_freq", where, 10000.0f);
        }
    }
    if (row.family == Family::Gemma)
        for (const char* k : {"attn_logit_softcapping", "final_logit_softcapping", "sliding_window"})
            refuse_key(j, k, where, "llama.cpp's gemma graph has no such feature");
    // The attention scale: query_pre_attn_scalar^-0.5, which llama.cpp's loader does not read: it takes head_dim,
    // or d_model / n_heads at the block count it types as 27B.
    if (field(j, "query_pre_attn_scalar")) {
        const std::uint32_t q = get_count(j, "query_pre_attn_scalar", where);
        const std::uint32_t want =
            row.attn_scale == AttnScaleRule::QueryGemma27B && c.n_layers == row.embd_scale_layers && c.n_heads > 0
                ? c.d_model / c.n_heads
                : c.d_head;
        if (q != want)
            fail(ErrorKind::Unsupported,
                 where + ": key 'query_pre_attn_scalar' is " + std::to_string(q) + ", but llama.cpp's " + name +
                     " loader scales attention by 1/sqrt(" + std::to_string(want) + ") for this model (" +
                     (want == c.d_head ? "head_dim" : "hidden_size / num_attention_heads") + ")");
    }
    if (const json* rs = field(j, "rope_scaling")) {
        const std::string kind = rope_scaling_type(*rs, where);
        if (kind == "linear" && g3) {
            c.rope_scaling = RopeScaling::Linear;
            c.rope_scaling_factor = get_float(*rs, "factor", where + ": rope_scaling", 1.0f);
        } else if (kind != "default") {
            fail(ErrorKind::Unsupported, where + ": key 'rope_scaling' is " + rs->dump() +
                                             "; headfuse converts linear scaling of gemma3's global layers only");
        }
    }
    validate_read(c, where);
    return c;
}

}  // namespace

// Every Hugging Face model_type the architecture table imports: "llama, mistral, qwen2, qwen3".
std::string hf_model_types() {
    std::string s;
    for (const ArchSpec& a : arch_table())
        for (std::string_view t : a.hf_model_types) s += (s.empty() ? "" : ", ") + std::string(t);
    return s;
}

// The row of the architecture table a config.json names by its model_type and its architectures (which must
// agree); neither key: llama.
const ArchSpec& hf_arch(const json& j, const std::string& where) {
    const ArchSpec* row = nullptr;
    std::string named;
    if (const json* t = field(j, "model_type")) {
        if (!t->is_string()) fail(where + ": key 'model_type' must be a string, found " + t->dump());
        row = find_hf_model_type(t->get<std::string>());
        if (!row)
            fail(ErrorKind::Unsupported,
                 where + ": key 'model_type' is " + t->dump() + "; headfuse converts " + hf_model_types());
        named = "model_type " + t->dump();
    }
    if (const json* list = field(j, "architectures")) {
        if (!list->is_array()) fail(where + ": key 'architectures' must be a list, found " + list->dump());
        for (const json& e : *list) {
            if (!e.is_string()) fail(where + ": key 'architectures' must list strings, found " + e.dump());
            const ArchSpec* a = find_hf_architecture(e.get<std::string>());
            if (!a)
                fail(ErrorKind::Unsupported,
                     where + ": key 'architectures' lists " + e.dump() + ", which headfuse does not convert");
            if (row && a != row)
                fail(where + ": key 'architectures' lists " + e.dump() + " (GGUF " + std::string(a->gguf_name) +
                     "), but " + named + " is GGUF " + std::string(row->gguf_name));
            row = a;
            named = "architectures " + e.dump();
        }
    }
    return row ? *row : *find_arch(Family::Llama, false);
}

// Sliding-window attention llama.cpp's graph for the family does not compute: refused by name. Mistral's
// `sliding_window` (llama.cpp's llama graph ignores it) unless null; Qwen's `use_sliding_window` unless false,
// and any layer of `layer_types` other than "full_attention". Phi-3's `sliding_window` is carried instead
// (phi3.attention.sliding_window, as llama.cpp's converter writes it; its phi3 loader disables the window).
void refuse_sliding_window(const json& j, const ArchSpec& a, const std::string& where) {
    const std::string arch(a.gguf_name);
    if (a.swa_pattern > 0) return;  // the family's graph has windows (its row's pattern)
    if (a.family == Family::Llama) {
        if (const json* w = field(j, "sliding_window"))
            fail(ErrorKind::Unsupported, where + ": key 'sliding_window' is " + w->dump() + "; llama.cpp's " + arch +
                                             " graph attends to every earlier position (only null converts)");
        return;
    }
    if (const json* u = field(j, "use_sliding_window"); u && *u != false)
        fail(ErrorKind::Unsupported, where + ": key 'use_sliding_window' is " + u->dump() + "; llama.cpp's " + arch +
                                         " graph has no sliding-window attention (only false converts)");
    if (const json* types = field(j, "layer_types"); types && types->is_array())
        for (std::size_t i = 0; i < types->size(); ++i)
            if ((*types)[i] != "full_attention")
                fail(ErrorKind::Unsupported, where + ": key 'layer_types' entry " + std::to_string(i) + " is " +
                                                 (*types)[i].dump() + "; llama.cpp's " + arch +
                                                 " graph has full attention in every layer");
}

// The context length of a config.json without max_position_embeddings: its class's default in transformers,
// which llama.cpp's converter reads (it loads the config with AutoConfig, then writes max_position_embeddings
// as {arch}.context_length): LlamaConfig 2048, MistralConfig 4096 * 32, Qwen2Config and Qwen3Config 32768, Phi3Config
// 4096.
std::uint32_t hf_default_context(const json& j) {
    std::vector<std::string> names;
    if (const json* t = field(j, "model_type"); t && t->is_string()) names.push_back(t->get<std::string>());
    if (const json* list = field(j, "architectures"); list && list->is_array())
        for (const json& e : *list)
            if (e.is_string()) names.push_back(e.get<std::string>());
    for (const std::string& n : names) {
        if (n == "mistral" || n == "MistralForCausalLM") return 4096 * 32;
        if (n == "qwen2" || n == "Qwen2ForCausalLM" || n == "qwen3" || n == "Qwen3ForCausalLM") return 32768;
        if (n == "phi3" || n == "Phi3ForCausalLM") return 4096;
    }
    return 2048;
}

// What Phi3ForCausalLM's config says that llama.cpp's phi3 graph does not compute, refused by name.
void check_phi3_config(const json& j, const std::string& where) {
    if (const json* p = field(j, "partial_rotary_factor"); p && !(p->is_number() && p->get<double>() == 1.0))
        fail(ErrorKind::Unsupported, where + ": key 'partial_rotary_factor' is " + p->dump() +
                                         "; headfuse converts full rotary embeddings only (rope.dimension_count "
                                         "= head size)");
    for (const char* flag : {"attention_bias", "mlp_bias"})
        if (const json* v = field(j, flag); v && *v != false)
            fail(ErrorKind::Unsupported, where + ": key '" + std::string(flag) + "' is " + v->dump() +
                                             "; llama.cpp's phi3 loader reads no such bias");
}

std::vector<float> longrope_factors(const json& rs, const Config& c, const std::string& where, bool long_factors) {
    const char* key = long_factors ? "long_factor" : "short_factor";
    const json* list = field(rs, key);
    if (!list) fail(where + ": rope_scaling has no '" + std::string(key) + "', which LongRoPE scaling needs");
    if (!list->is_array() || list->size() != c.d_head / 2)
        fail(where + ": rope_scaling key '" + std::string(key) + "' must be a list of " + std::to_string(c.d_head / 2) +
             " numbers (half the head size " + std::to_string(c.d_head) + "), found " +
             (list->is_array() ? std::to_string(list->size()) + " entries" : list->dump()));
    std::vector<float> out;
    for (const json& v : *list) {
        const float f = v.is_number() ? v.get<float>() : 0.0f;  // f64 rounded to f32, as torch.tensor(float32)
        if (!(std::isfinite(f) && f > 0))
            fail(where + ": rope_scaling key '" + std::string(key) + "' entry " + std::to_string(out.size()) +
                 " must be a positive number, found " + v.dump());
        out.push_back(f);
    }
    return out;
}

// Phi-3's rope_scaling: LongRoPE ("longrope", or "su", its first name), as llama.cpp's converter (phi.py,
// Phi3MiniModel) converts it: the attention factor sqrt(1 + ln(s) / ln(original)) with s = max_position_embeddings /
// original_max_position_embeddings (1 when s <= 1), computed in f64 and stored as f32, and the two factor lists as
// rope_factors_long/short (longrope_factors). An empty object is no scaling.
void phi3_long_rope(const json& rs, const json& j, Config& c, const std::string& where) {
    const std::string kind = rope_scaling_type(rs, where);
    if (kind == "default") return;
    if (kind == "yarn")
        fail(ErrorKind::Unsupported,
             where + ": key 'rope_scaling' is " + rs.dump() +
                 "; headfuse converts Phi-3's LongRoPE (\"longrope\", \"su\"), not YaRN (llama.cpp's converter "
                 "writes its factors with an attention factor Hugging Face's Phi-3 YaRN does not use)");
    if (kind != "longrope" && kind != "su")
        fail(ErrorKind::Unsupported, where + ": key 'rope_scaling' is " + rs.dump() +
                                         "; headfuse converts Phi-3's LongRoPE (\"longrope\", \"su\") only");
    for (const auto& [k, v] : rs.items())
        if (k != "type" && k != "rope_type" && k != "long_factor" && k != "short_factor" &&
            !(k == "original_max_position_embeddings" && v == j.value(k, json())))
            fail(ErrorKind::Unsupported, where + ": rope_scaling key '" + k + "' is " + v.dump() +
                                             "; llama.cpp's converter derives LongRoPE from long_factor, short_factor, "
                                             "max_position_embeddings and original_max_position_embeddings alone");
    if (!field(j, "original_max_position_embeddings"))
        fail(where + ": missing key 'original_max_position_embeddings', which LongRoPE scaling needs");
    if (c.rope_original_context == 0)
        fail(where + ": key 'original_max_position_embeddings' must be positive for LongRoPE, found 0");
    longrope_factors(rs, c, where, true);  // checked here, read into the model by open_checkpoint
    longrope_factors(rs, c, where, false);
    c.optional_roles.insert(Role::RopeLong);
    c.optional_roles.insert(Role::RopeShort);
    c.rope_attn_factor = longrope_attn_factor(c);
}

float longrope_attn_factor(const Config& c) {
    const double orig = c.original_context();
    const double scale = double(c.context_length) / orig;
    return static_cast<float>(scale > 1.0 ? std::sqrt(1.0 + std::log(scale) / std::log(orig)) : 1.0);
}

Config hf_config(const json& j, const std::string& where) {
    if (!j.is_object()) fail(where + ": expected a JSON object");
    const ArchSpec& arch = hf_arch(j, where);
    if (is_gemma(arch.family)) return gemma_hf_config(j, arch, where);
    expect_string(j, "hidden_act", "silu", where);
    if (arch.family == Family::Phi3) check_phi3_config(j, where);
    refuse_sliding_window(j, arch, where);
    Config c;
    c.family = arch.family;
    if (arch.family == Family::Qwen2)
        for (Role r : kQwen2Biases) c.optional_roles.insert(r);
    if (arch.family == Family::Qwen3)
        for (Role r : kQwen3Norms) c.optional_roles.insert(r);
    if (arch.family == Family::Phi3)
        c.rope_original_context = get_count(j, "original_max_position_embeddings", where, 0);
    const json* phi3_scaling = arch.family == Family::Phi3 ? field(j, "rope_scaling") : nullptr;
    for (const char* flag : {"attention_bias", "mlp_bias"})
        if (const json* v = field(j, flag)) {
            if (arch.family == Family::Qwen2 || (arch.family == Family::Qwen3 && std::string_view(flag) == "mlp_bias"))
                continue;  // keys the family's Hugging Face model does not read
            if (!v->is_boolean())
                fail(where + ": key '" + std::string(flag) + "' must be true or false, found " + v->dump());
            if (!v->get<bool>()) continue;
            for (Role r : std::string_view(flag) == "mlp_bias" ? std::span<const Role>(kHfMlpBiases)
                                                               : std::span<const Role>(kHfAttentionBiases))
                c.optional_roles.insert(r);
        }
    c.d_model = get_count(j, "hidden_size", where);
    c.n_heads = get_count(j, "num_attention_heads", where);
    c.n_kv_heads = get_count(j, "num_key_value_heads", where, c.n_heads);
    c.d_head = get_count(j, "head_dim", where, c.n_heads ? c.d_model / c.n_heads : 0);
    c.d_ff = get_count(j, "intermediate_size", where);
    c.n_layers = get_count(j, "num_hidden_layers", where);
    c.vocab = get_count(j, "vocab_size", where);
    c.context_length = get_count(j, "max_position_embeddings", where, hf_default_context(j));
    c.rms_eps = get_float(j, "rms_norm_eps", where, 1e-6f);  // LlamaConfig's default
    c.rope_theta = get_float(j, "rope_theta", where, 10000.0f);
    if (const json* t = field(j, "tie_word_embeddings")) {
        if (!t->is_boolean()) fail(where + ": key 'tie_word_embeddings' must be true or false, found " + t->dump());
        c.tied = t->get<bool>();
    }
    if (phi3_scaling) {
        phi3_long_rope(*phi3_scaling, j, c, where);
    } else if (const json* rs = field(j, "rope_scaling"); rs && arch.family != Family::Phi3) {
        const std::string kind = rope_scaling_type(*rs, where);
        if (kind == "linear") {
            c.rope_scaling = RopeScaling::Linear;
            c.rope_scaling_factor = get_float(*rs, "factor", where + ": rope_scaling", 1.0f);
            for (const auto& [k, v] : rs->items())
                if (k != "type" && k != "rope_type" && k != "factor")
                    fail(ErrorKind::Unsupported,
                         where + ": rope_scaling key '" + k + "' is not one headfuse converts for linear scaling");
        } else if (kind == "llama3") {
            c.optional_roles.insert(Role::RopeFreqs);  // llama.cpp's converter writes the rule as rope_freqs.weight
        } else if (kind != "default") {
            fail(ErrorKind::Unsupported, where + ": key 'rope_scaling' is " + rs->dump() +
                                             "; headfuse converts \"linear\" and \"llama3\" scaling (llama.cpp's " +
                                             std::string(arch.gguf_name) + " graph has other rules for the rest)");
        }
    }
    validate_read(c, where);
    return c;
}

std::vector<float> llama3_rope_factors(const json& rs, const Config& c, const std::string& where) {
    // As llama.cpp's converter (LlamaModel.generate_extra_tensors) computes them: torch f32 arithmetic, the
    // defaults its keys have there. The smooth band's factors are f32 expressions in the same order.
    const std::string w = where + ": rope_scaling";
    const float factor = get_float(rs, "factor", w, 8.0f), lo = get_float(rs, "low_freq_factor", w, 1.0f),
                hi = get_float(rs, "high_freq_factor", w, 4.0f);
    const float old = static_cast<float>(get_count(rs, "original_max_position_embeddings", w, 8192));
    const float theta = c.rope_theta;
    if (!(factor > 0) || !(hi > lo) || !(lo > 0))
        fail(w + ": llama3 needs factor > 0 and high_freq_factor > low_freq_factor > 0");
    const float lo_wavelen = old / lo, hi_wavelen = old / hi;
    const float two_pi = static_cast<float>(2.0 * 3.141592653589793);
    std::vector<float> out;
    for (std::uint32_t i = 0; i < c.d_head; i += 2) {
        const float e = static_cast<float>(i) / static_cast<float>(c.d_head);
        const float freq = 1.0f / std::pow(theta, e);
        const float wavelen = two_pi / freq;
        if (wavelen < hi_wavelen) {
            out.push_back(1.0f);
        } else if (wavelen > lo_wavelen) {
            out.push_back(factor);
        } else {
            const float smooth = (old / wavelen - lo) / (hi - lo);
            out.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
        }
    }
    return out;
}

bool tl_family(Family f) { return f == Family::Llama || f == Family::Qwen2 || f == Family::Qwen3 || is_gemma(f); }
std::string tl_families() {
    return "llama (LlamaForCausalLM, MistralForCausalLM), qwen2 (Qwen2ForCausalLM), qwen3 (Qwen3ForCausalLM), gemma "
           "(GemmaForCausalLM), gemma2 (Gemma2ForCausalLM) and gemma3 (Gemma3ForCausalLM, "
           "Gemma3ForConditionalGeneration's language model)";
}

namespace {

// TransformerLens's Gemma, Gemma 2 and Gemma 3 configs (loading_from_pretrained.py's presets, read by the attention
// in abstract_attention.py): what llama.cpp's gemma, gemma2 and gemma3 graphs compute, or refused by name.
void tl_gemma_config(const json& j, Config& c, const std::string& where) {
    const bool g2 = c.family == Family::Gemma2, g3 = c.family == Family::Gemma3;
    const std::string arch(c.architecture());
    // TransformerLens's Gemma 1 presets say "gelu" (erf), where Hugging Face and llama.cpp compute the tanh form.
    if (const json* act = field(j, "act_fn");
        !act || !act->is_string() || (*act != "gelu_pytorch_tanh" && (g2 || g3 || *act != "gelu")))
        fail(ErrorKind::Unsupported, where + ": key 'act_fn' is " + (act ? act->dump() : "missing") + "; llama.cpp's " +
                                         arch + " graph gates with gelu_pytorch_tanh");
    if (const json* n = field(j, "normalization_type"); !n || *n != "RMS")
        fail(ErrorKind::Unsupported,
             where + ": key 'normalization_type' is " + (n ? n->dump() : "missing") + "; a " + arch +
                 " model converts from \"RMS\" only (from_pretrained's processing folds the norms and centres W_U, "
                 "which llama.cpp's tied " +
                 arch + " output cannot hold: use from_pretrained_no_processing)");
    const bool post = g2 || g3;
    const json* both = field(j, "use_normalization_before_and_after");
    if ((both && both->is_boolean() && both->get<bool>()) != post)
        fail(ErrorKind::Unsupported, where + ": key 'use_normalization_before_and_after' is " +
                                         (both ? both->dump() : "missing") + ", but llama.cpp's " + arch +
                                         " graph has " + (post ? "" : "no ") + "post-attention and post-FFN norms");
    if (post)
        for (Role r : {Role::PostAttnNorm, Role::PostFfwNorm}) c.optional_roles.insert(r);
    // Gemma 3 RMS-normalizes each query and key head before RoPE (attn.q_norm.w, attn.k_norm.w), as llama.cpp's
    // gemma3 graph does (attn_q_norm, attn_k_norm); the older families have no such norm.
    const json* qk = field(j, "use_qk_norm");
    if ((qk && *qk == true) != g3)
        fail(ErrorKind::Unsupported,
             where + ": key 'use_qk_norm' is " + (qk ? qk->dump() : "missing") + ", but llama.cpp's " + arch +
                 " graph " + (g3 ? "normalizes each query and key head (only true converts)" : "has no q/k norms"));
    if (g3)
        for (Role r : {Role::AttnQNorm, Role::AttnKNorm}) c.optional_roles.insert(r);
    if (const json* u = field(j, "use_attn_scale"); u && *u != true)
        fail(ErrorKind::Unsupported, where + ": key 'use_attn_scale' is " + u->dump() + "; llama.cpp's " + arch +
                                         " graph scales the attention scores");
    c.tied = true;
    c.rms_eps = get_float(j, "eps", where, 1e-6f);
    // Soft-caps (TransformerLens: off when not positive): gemma2 always caps both; gemma3 may cap the logits.
    auto cap = [&](std::string_view key, bool final) {
        const float v = get_float(j, key, where, -1.0f);
        if (g2 && !(v > 0.0f))
            fail(ErrorKind::Unsupported, where + ": key '" + std::string(key) +
                                             "' is absent or not positive; llama.cpp's gemma2 graph always soft-caps");
        if (!g2 && v > 0.0f && !(g3 && final))
            fail(ErrorKind::Unsupported, where + ": key '" + std::string(key) + "' is " + json(v).dump() +
                                             "; llama.cpp's " + arch + " graph has no " +
                                             (g3 ? "attention soft-cap" : "soft-cap"));
        return v > 0.0f ? v : 0.0f;
    };
    c.attn_softcap = cap("attn_scores_soft_cap", false);
    c.final_softcap = cap("output_logits_soft_cap", true);
    const json* local = field(j, "use_local_attn");
    const bool windows = local && *local == true;
    if (!g3 && windows != g2)
        fail(ErrorKind::Unsupported, where + ": key 'use_local_attn' is " + (local ? local->dump() : "missing") +
                                         "; llama.cpp's " + arch + " graph has " +
                                         (g2 ? "sliding windows on even layers" : "no sliding window"));
    // The local layers' RoPE base (TransformerLens's _rotary_base: rotary_base_local, else rotary_base).
    const float local_base = get_float(j, "rotary_base_local", where, c.rope_theta);
    if (g2 && local_base != c.rope_theta)
        fail(ErrorKind::Unsupported, where + ": key 'rotary_base_local' is " + json(local_base).dump() +
                                         ", but llama.cpp's gemma2 graph rotates every layer with rotary_base " +
                                         json(c.rope_theta).dump());
    if (g2) {
        c.sliding_window = get_count(j, "window_size", where);
        // llama.cpp's (and Hugging Face's) Gemma 2 windows the even layers; TransformerLens's own presets list
        // ["global", "local"] * n, the odd ones, which llama.cpp cannot represent.
        const json* types = field(j, "attn_types");
        json want = json::array();
        for (std::uint32_t l = 0; l < c.n_layers; ++l) want.push_back(l % 2 == 0 ? "local" : "global");
        if (!types || *types != want)
            fail(ErrorKind::Unsupported,
                 where + ": key 'attn_types' is " + (types ? types->dump() : "missing") +
                     ", but llama.cpp's gemma2 graph (as Hugging Face's Gemma2) windows the even layers: "
                     "[\"local\", \"global\", ...]");
    }
    if (g3 && windows) {
        // llama.cpp's gemma3 graph (pattern 6) windows every layer but those with l % 6 == 5, as TransformerLens's
        // Gemma 3 presets list them; every layer "global" is no window at all (llama.cpp: no sliding_window key).
        const json* types = field(j, "attn_types");
        json want = json::array(), none = json::array();
        for (std::uint32_t l = 0; l < c.n_layers; ++l) {
            want.push_back(l % 6 != 5 ? "local" : "global");
            none.push_back("global");
        }
        if (!types || (*types != want && *types != none))
            fail(ErrorKind::Unsupported,
                 where + ": key 'attn_types' is " + (types ? types->dump() : "missing") +
                     ", but llama.cpp's gemma3 graph windows every layer but those with l % 6 == 5: "
                     "[\"local\" x5, \"global\", ...] (or none: every layer \"global\")");
        if (*types == want) {
            c.sliding_window = get_count(j, "window_size", where);
            if (c.sliding_window == 0)
                fail(ErrorKind::Unsupported, where +
                                                 ": key 'window_size' is 0; a local layer then sees no key "
                                                 "(llama.cpp's gemma3 graph needs a positive window)");
            c.rope_theta_swa = local_base;
        }
    }
    // TransformerLens multiplies the rotary wavelengths of the non-local layers by rotary_scaling_factor: linear
    // scaling of the global layers, as llama.cpp's gemma3 graph applies the file's linear scaling.
    if (g3 && field(j, "rotary_scaling_factor")) {
        const float f = get_float(j, "rotary_scaling_factor", where, 1.0f);
        if (!(f > 0.0f) || !std::isfinite(f))
            fail(where + ": key 'rotary_scaling_factor' must be positive, found " + json(f).dump());
        if (f != 1.0f) {
            c.rope_scaling = RopeScaling::Linear;
            c.rope_scaling_factor = f;
        }
    }
    // TransformerLens divides the scores by attn_scale (default sqrt(d_head)); llama.cpp multiplies the queries by
    // Config::attention_scale().
    const json* given = field(j, "attn_scale");
    const float scale = get_float(j, "attn_scale", where, std::sqrt(static_cast<float>(c.d_head)));
    if (!(std::abs(static_cast<double>(scale) * c.attention_scale() - 1.0) < 1e-6))
        fail(ErrorKind::Unsupported,
             where + ": key 'attn_scale' is " +
                 (given ? json(scale).dump()
                        : "absent (TransformerLens then divides by sqrt(d_head) = " + json(scale).dump() + ")") +
                 ", but llama.cpp's " + arch + " loader scales by 1/" + json(1.0f / c.attention_scale()).dump());
}

}  // namespace

TlConfig tl_config(const json& j, const std::string& where) {
    if (!j.is_object()) fail(where + ": expected a JSON object");
    expect_string(j, "positional_embedding_type", "rotary", where);
    if (const json* g = field(j, "gated_mlp"); g && *g != true)
        fail(ErrorKind::Unsupported,
             where + ": key 'gated_mlp' is " + g->dump() + "; headfuse converts gated MLPs only");
    TlConfig t;
    Config& c = t.config;
    c.d_model = get_count(j, "d_model", where);
    c.n_heads = get_count(j, "n_heads", where);
    c.d_head = get_count(j, "d_head", where);
    c.n_kv_heads = get_count(j, "n_key_value_heads", where, c.n_heads);
    c.d_ff = get_count(j, "d_mlp", where);
    c.n_layers = get_count(j, "n_layers", where);
    c.vocab = get_count(j, "d_vocab", where);
    c.context_length = get_count(j, "n_ctx", where, 2048);
    c.rms_eps = get_float(j, "eps", where, 1e-5f);
    c.rope_theta = get_float(j, "rotary_base", where, 10000.0f);
    if (const json* rd = field(j, "rotary_dim"); rd && *rd != c.d_head)
        fail(ErrorKind::Unsupported, where + ": key 'rotary_dim' is " + rd->dump() + ", not d_head " +
                                         std::to_string(c.d_head) + "; headfuse converts full rotary embeddings only");
    const json* norm = field(j, "normalization_type");
    if (!norm || !norm->is_string() || (*norm != "RMS" && *norm != "RMSPre"))
        fail(ErrorKind::Unsupported, where + ": key 'normalization_type' is " + (norm ? norm->dump() : "missing") +
                                         "; headfuse converts \"RMS\" and \"RMSPre\" (folded) only");
    t.folded = *norm == "RMSPre";
    // The family TransformerLens converted from: llama (LlamaForCausalLM, MistralForCausalLM), qwen2 or qwen3 (its
    // q/k norms as blocks.N.attn.q_norm.w and k_norm.w, with use_qk_norm true), gemma, gemma2 or gemma3
    // (tl_gemma_config).
    if (const json* orig = field(j, "original_architecture")) {
        const ArchSpec* a = orig->is_string() ? find_hf_architecture(orig->get<std::string>()) : nullptr;
        if (!a || !tl_family(a->family))
            fail(ErrorKind::Unsupported, where + ": key 'original_architecture' is " + orig->dump() +
                                             "; headfuse converts TransformerLens checkpoints of " + tl_families());
        c.family = a->family;
        if (c.family == Family::Qwen2)
            for (Role r : kQwen2Biases) c.optional_roles.insert(r);
        if (c.family == Family::Qwen3) {
            if (const json* qk = field(j, "use_qk_norm"); !qk || *qk != true)
                fail(ErrorKind::Unsupported, where + ": key 'use_qk_norm' is " + (qk ? qk->dump() : "missing") +
                                                 ", but a Qwen3ForCausalLM model normalizes each query and key head "
                                                 "(only true converts)");
            for (Role r : kQwen3Norms) c.optional_roles.insert(r);
        }
    }
    // RoPE variants TransformerLens computes that llama.cpp's file would not say (Gemma 3's linear scaling of its
    // global layers is read by tl_gemma_config).
    for (const char* k : {"use_NTK_by_parts_rope", "use_yarn_rope"})
        if (const json* v = field(j, k); v && *v != false)
            fail(ErrorKind::Unsupported, where + ": key '" + std::string(k) + "' is " + v->dump() +
                                             "; headfuse converts TransformerLens's plain rotary embeddings only "
                                             "(and Gemma 3's rotary_scaling_factor)");
    if (const json* f = field(j, "rotary_scaling_factor"); f && *f != 1.0 && c.family != Family::Gemma3)
        fail(ErrorKind::Unsupported, where + ": key 'rotary_scaling_factor' is " + f->dump() +
                                         "; headfuse maps TransformerLens's linear scaling of the global layers for "
                                         "Gemma3ForCausalLM only");
    if (is_gemma(c.family))
        tl_gemma_config(j, c, where);
    else
        expect_string(j, "act_fn", "silu", where);
    if (const json* adj = field(j, "rotary_adjacent_pairs")) {
        if (!adj->is_boolean()) fail(where + ": key 'rotary_adjacent_pairs' must be true or false");
        t.rotate_half = !adj->get<bool>();
    }
    validate_read(c, where);
    return t;
}

namespace {
bool any_role(const Config& c, std::span<const Role> roles) {
    return std::any_of(roles.begin(), roles.end(), [&](Role r) { return c.optional_roles.contains(r); });
}
}  // namespace

bool hf_attention_bias(const Config& c) { return any_role(c, kHfAttentionBiases); }
bool hf_mlp_bias(const Config& c) { return any_role(c, kHfMlpBiases); }

double json_float(float x) {
    char buf[64];
    const auto end = std::to_chars(buf, buf + sizeof buf, x).ptr;
    double d = x;
    std::from_chars(buf, end, d);
    return d;
}

namespace {

// A Gemma config.json: the llama keys they share (`j`), changed into the keys gemma_hf_config reads, with the
// values llama.cpp's graph uses.
json gemma_config_json(const Config& c, json j) {
    const ArchSpec& a = c.arch();
    const bool g3 = c.family == Family::Gemma3;
    const std::uint32_t query_scalar = a.attn_scale == AttnScaleRule::QueryGemma27B && c.n_layers == a.embd_scale_layers
                                           ? c.d_model / c.n_heads
                                           : c.d_head;
    j["architectures"] = {c.family == Family::Gemma    ? "GemmaForCausalLM"
                          : c.family == Family::Gemma2 ? "Gemma2ForCausalLM"
                                                       : "Gemma3ForCausalLM"};
    j["model_type"] = g3 ? "gemma3_text" : std::string(c.architecture());
    j["hidden_activation"] = "gelu_pytorch_tanh";
    for (const char* k : {"hidden_act", "mlp_bias"}) j.erase(k);
    if (!g3) j.erase("rope_scaling");
    if (c.family != Family::Gemma) j["query_pre_attn_scalar"] = query_scalar;
    if (c.family == Family::Gemma2) {
        j["attn_logit_softcapping"] = json_float(c.attn_softcap);
        j["final_logit_softcapping"] = json_float(c.final_softcap);
        j["sliding_window"] = c.sliding_window;
    }
    if (g3) {
        j["attn_logit_softcapping"] = nullptr;
        j["final_logit_softcapping"] = c.final_softcap != 0.0f ? json(json_float(c.final_softcap)) : json(nullptr);
        j["sliding_window_pattern"] = c.sliding_window != 0 ? 6 : 1;
        if (c.sliding_window != 0) {
            j["sliding_window"] = c.sliding_window;
            j["rope_local_base_freq"] = json_float(c.rope_theta_swa);
        }
    }
    return j;
}

}  // namespace

json hf_config_json(const Config& c, std::string_view torch_dtype, const json& rope_scaling,
                    std::uint32_t sliding_window) {
    // The family's first Hugging Face names (a Mistral checkpoint, GGUF llama, comes back as LlamaForCausalLM).
    const ArchSpec& a = *find_arch(c.family, false);
    json j = {{"architectures", {a.hf_architectures.front()}},
              {"model_type", a.hf_model_types.front()},
              {"hidden_size", c.d_model},
              {"num_attention_heads", c.n_heads},
              {"num_key_value_heads", c.n_kv_heads},
              {"head_dim", c.d_head},
              {"intermediate_size", c.d_ff},
              {"num_hidden_layers", c.n_layers},
              {"vocab_size", c.vocab},
              {"max_position_embeddings", c.context_length},
              {"rms_norm_eps", json_float(c.rms_eps)},
              {"rope_theta", json_float(c.rope_theta)},
              {"rope_scaling", rope_scaling},
              {"tie_word_embeddings", c.tied},
              {"hidden_act", "silu"},
              {"attention_bias", hf_attention_bias(c)},
              {"mlp_bias", hf_mlp_bias(c)},
              {"torch_dtype", torch_dtype}};
    if (c.family == Family::Phi3) {
        // Phi3Config: head_dim is hidden_size / heads, no bias flags; the original context and the window, as
        // the file carries them
        for (const char* key : {"head_dim", "attention_bias", "mlp_bias"}) j.erase(key);
        j["original_max_position_embeddings"] = c.original_context();
        j["sliding_window"] = sliding_window ? json(sliding_window) : json(nullptr);
    } else if (c.family == Family::Qwen2 ||
               c.family ==
                   Family::Qwen3) {  // Qwen2Config and Qwen3Config: no mlp_bias; Qwen2's q/k/v biases need no flag
        j.erase("mlp_bias");
        if (c.family == Family::Qwen2) j.erase("attention_bias");
        j["use_sliding_window"] = false;
    }
    return is_gemma(c.family) ? gemma_config_json(c, std::move(j)) : j;
}

json tl_config_json(const Config& c, bool folded) {
    json j = {{"d_model", c.d_model},
              {"n_heads", c.n_heads},
              {"d_head", c.d_head},
              {"d_mlp", c.d_ff},
              {"n_layers", c.n_layers},
              {"d_vocab", c.vocab},
              {"n_key_value_heads", c.n_kv_heads == c.n_heads ? json(nullptr) : json(c.n_kv_heads)},
              {"n_ctx", c.context_length},
              {"eps", json_float(c.rms_eps)},
              {"rotary_base", json_float(c.rope_theta)},
              {"rotary_dim", c.d_head},
              {"normalization_type", folded ? "RMSPre" : "RMS"},
              {"rotary_adjacent_pairs", false},
              {"positional_embedding_type", "rotary"},
              {"act_fn", "silu"},
              {"gated_mlp", true},
              {"final_rms", true},
              {"original_architecture", find_arch(c.family, false)->hf_architectures.front()},
              {"use_qk_norm", c.family == Family::Qwen3}};
    if (is_gemma(c.family)) {  // as loading_from_pretrained.py's Gemma presets say it, with llama.cpp's values
        const bool g2 = c.family == Family::Gemma2, g3 = c.family == Family::Gemma3;
        j["act_fn"] = "gelu_pytorch_tanh";
        j["use_attn_scale"] = true;
        j["attn_scale"] = json_float(1.0f / c.attention_scale());
        j["use_normalization_before_and_after"] = g2 || g3;
        j["use_qk_norm"] = g3;
        if (g2) {
            j["attn_scores_soft_cap"] = json_float(c.attn_softcap);
            j["output_logits_soft_cap"] = json_float(c.final_softcap);
        }
        if (g3 && c.final_softcap != 0.0f) j["output_logits_soft_cap"] = json_float(c.final_softcap);
        if (c.sliding_window != 0) {
            j["use_local_attn"] = true;
            j["window_size"] = c.sliding_window;
            json types = json::array();
            for (std::uint32_t l = 0; l < c.n_layers; ++l) types.push_back(c.is_local_layer(l) ? "local" : "global");
            j["attn_types"] = types;
            if (g3) j["rotary_base_local"] = json_float(c.rope_theta_swa);  // the local layers' base
        }
        // Gemma 3's linear scaling of the global layers (TransformerLens scales every non-local layer by it).
        if (g3 && c.rope_scaling == RopeScaling::Linear) j["rotary_scaling_factor"] = json_float(c.rope_scaling_factor);
    }
    return j;
}

std::string_view checkpoint_format_name(CheckpointFormat l) noexcept {
    switch (l) {
        case CheckpointFormat::Gguf: return "GGUF";
        case CheckpointFormat::PerHeadNames: return "headfuse names";
        case CheckpointFormat::HuggingFace: return "Hugging Face";
        case CheckpointFormat::TransformerLens: return "TransformerLens";
    }
    return "";
}

// ---- import ----------------------------------------------------------------------------------------------------

namespace {

// What the model's views borrow: the mapped checkpoint, and the ones that stand in for folded norms.
struct Owner {
    SafetensorsSet set;
    std::vector<float> ones;
    std::vector<float> rope_freqs;               // computed from a "llama3" rope_scaling
    std::vector<float> rope_long, rope_short;    // a "longrope" rope_scaling's factors (phi3)
    std::deque<std::vector<std::byte>> vectors;  // biases in llama.cpp's element order, Gemma's 1 + w norms
};

// Gemma's norm as llama.cpp's converter stores it: 1 + w in f32 (the sum Hugging Face's GemmaRMSNorm computes,
// `1.0 + weight.float()`), a view of memory the owner keeps.
TensorView plus_one(Owner& owner, const TensorView& w, const std::string& name) {
    const std::uint64_t n = w.ne()[0];
    std::vector<std::byte>& out = owner.vectors.emplace_back(n * 4);
    std::vector<float> x(n);
    decode_row(w.type(), w.row(0).data(), x.data(), n);
    for (float& v : x) v = 1.0f + v;
    std::memcpy(out.data(), x.data(), n * 4);
    return TensorView::of(name, DType::F32, w.ne(), out);
}

// True for a GGUF file; false for one that cannot be opened (the safetensors reader then says why). A FIFO or a
// device is refused here, without blocking.
bool is_gguf(const fs::path& p) {
    std::error_code ec;
    if (!fs::exists(p, ec)) return false;
    const int fd = open_regular_file(p);
    char magic[4] = {};
    const bool gguf = ::pread(fd, magic, 4, 0) == 4 && std::memcmp(magic, "GGUF", 4) == 0;
    ::close(fd);
    return gguf;
}

// The Hugging Face prefix whose embedding or first query projection the checkpoint has (nullptr when none).
const HfPrefix* hf_prefix(const SafetensorsSet& s) {
    for (const HfPrefix& p : kHfPrefixes)
        if (s.find(std::string(p.model) + "embed_tokens.weight") ||
            s.find(std::string(p.model) + "layers.0.self_attn.q_proj.weight"))
            return &p;
    return nullptr;
}

CheckpointFormat detect(const SafetensorsSet& s) {
    if (hf_prefix(s)) return CheckpointFormat::HuggingFace;
    if (s.find("embed.W_E") || s.find("blocks.0.attn.W_Q")) return CheckpointFormat::TransformerLens;
    if (s.find("token_embd.weight")) return CheckpointFormat::PerHeadNames;
    const auto ts = s.tensors();
    fail(s.name() +
         ": the tensor names match no layout headfuse reads (Hugging Face model.embed_tokens.weight, "
         "TransformerLens embed.W_E, headfuse token_embd.weight); the first is '" +
         (ts.empty() ? std::string() : ts.front()->name) + "'");
}

TensorView view_of(const StTensor& t, std::span<const std::uint64_t> ne) {
    return ViewAccess::in_file(t.name, t.readable_type(), ne, t.bytes, t.file, t.file_offset);
}

void check_shape(const StTensor& t, const std::vector<std::uint64_t>& want, const std::string& where) {
    if (t.shape != want)
        fail(where + ": tensor '" + t.name + "' has shape " + format_shape(t.shape) + ", expected " +
             format_shape(want));
}

// A bias TransformerLens keeps: all zero, else refused (llama.cpp's graph would need it).
void check_zero(const StTensor& t, const std::string& where, std::string_view why) {
    const DType type = t.readable_type();
    const std::uint64_t es = traits(type).type_size, n = t.bytes.size() / es;
    float x = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
        decode_row(type, t.bytes.data() + i * es, &x, 1);
        if (x != 0.0f)
            fail(where + ": tensor '" + t.name + "' is not zero (element " + std::to_string(i) + " is " +
                 std::to_string(x) + "); " + std::string(why));
    }
}

bool all_zero(const StTensor& t) {
    const DType type = t.readable_type();
    const std::uint64_t es = traits(type).type_size, n = t.bytes.size() / es;
    float x = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
        decode_row(type, t.bytes.data() + i * es, &x, 1);
        if (x != 0.0f) return false;
    }
    return true;
}

// A bias as a view of memory the owner keeps, its elements put in llama.cpp's order: within each head of
// `group` elements, rotate-half element j*(group/2)+i holds element 2i+j. (Small: a vector per layer.)
TensorView owned_vector(Owner& owner, const StTensor& t, std::span<const std::uint64_t> ne, bool rotate_half,
                        std::uint64_t group) {
    const DType type = t.readable_type();
    const std::uint64_t es = traits(type).type_size, n = t.bytes.size() / es;
    std::vector<std::byte>& out = owner.vectors.emplace_back(t.bytes.size());
    for (std::uint64_t e = 0; e < n; ++e) {
        const std::uint64_t head = e / group, r = e % group;
        const std::uint64_t stored = rotate_half ? head * group + rotate_half_stored_row(r, group) : e;
        std::memcpy(out.data() + e * es, t.bytes.data() + stored * es, es);
    }
    return TensorView::of(t.name, type, ne, out);
}

// TransformerLens buffers that hold no weights (a causal mask, rotary tables, a constant).
bool tl_buffer(std::string_view name) {
    for (std::string_view s : {".attn.mask", ".attn.IGNORE", ".attn.rotary_sin", ".attn.rotary_cos"})
        if (name.ends_with(s)) return true;
    return false;
}

// TransformerLens's Gemma embedding (convert_gemma_weights): embed.W_E is the embedding times sqrt(d_model), computed
// in the checkpoint's dtype (the scale rounded to it, the product rounded once), and unembed.W_U is the embedding
// (the tied lm_head) transposed. headfuse reads the embedding from W_U, exactly, and requires W_E to be what
// TransformerLens computes from it: otherwise the two differ (a processed or edited state dict), which llama.cpp's
// tied Gemma graph cannot hold.
void check_tl_gemma_embedding(const SafetensorsSet& s, const Config& c, const std::string& where) {
    const StTensor* e = s.find("embed.W_E");
    const StTensor* u = s.find("unembed.W_U");
    if (!e || !u) fail(where + ": a TransformerLens Gemma checkpoint needs embed.W_E and unembed.W_U");
    check_shape(*e, {c.vocab, c.d_model}, where);
    check_shape(*u, {c.d_model, c.vocab}, where);
    const DType type = u->readable_type();
    if (e->readable_type() != type)
        fail(where + ": tensor 'embed.W_E' is " + std::string(type_name(e->readable_type())) + ", 'unembed.W_U' " +
             std::string(type_name(type)));
    const std::uint64_t es = traits(type).type_size;
    float scale = std::sqrt(static_cast<float>(c.d_model));
    std::byte one[4];
    encode_row(type, &scale, one, 1);  // torch.tensor(d_model**0.5, dtype=cfg.dtype)
    decode_row(type, one, &scale, 1);
    // Blocks of kBlock tokens: W_U's rows are read in runs of kBlock elements, W_E's kBlock rows stay in cache.
    constexpr std::uint64_t kBlock = 256;
    std::vector<float> x(kBlock);
    std::vector<std::byte> want(kBlock * es);
    for (std::uint64_t v0 = 0; v0 < c.vocab; v0 += kBlock) {
        const std::uint64_t n = std::min<std::uint64_t>(kBlock, c.vocab - v0);
        for (std::uint64_t r = 0; r < c.d_model; ++r) {
            decode_row(type, u->bytes.data() + (r * c.vocab + v0) * es, x.data(), n);
            for (std::uint64_t i = 0; i < n; ++i) x[i] *= scale;
            encode_row(type, x.data(), want.data(), n);
            for (std::uint64_t i = 0; i < n; ++i) {
                const std::byte* got = e->bytes.data() + ((v0 + i) * c.d_model + r) * es;
                if (std::memcmp(want.data() + i * es, got, es) == 0) continue;
                float g = 0;
                decode_row(type, got, &g, 1);
                fail(ErrorKind::Unsupported,
                     where +
                         ": tensor 'embed.W_E' is not unembed.W_U transposed times sqrt(d_model), as "
                         "TransformerLens's Gemma conversion makes it (element [" +
                         std::to_string(v0 + i) + ", " + std::to_string(r) + "] is " + json(g).dump() + ", expected " +
                         json(x[i]).dump() + "); llama.cpp's " + std::string(c.architecture()) +
                         " graph ties the output to the embedding");
            }
        }
    }
}

// `prefix` is the Hugging Face layout's (nullptr for TransformerLens); what it leaves out (a vision tower) goes
// into `notes`.
PerHeadModel import_mapped(std::shared_ptr<Owner> owner, const Config& c, std::span<const NameMap> map,
                           bool rotate_half, bool gqa_names, const std::string& where, Metadata md = {},
                           const HfPrefix* prefix = nullptr, std::vector<std::string>* notes = nullptr) {
    auto prefixed = [&](std::string name) {
        if (!prefix) return name;
        if (name == "lm_head.weight") return std::string(prefix->lm_head);
        if (name.starts_with("model.")) return std::string(prefix->model) + name.substr(6);
        return name;
    };
    std::vector<TensorView> views;
    std::set<std::string, std::less<>> used;
    bool norms_non_f32 = false;
    DType norm_type = DType::F32;
    for (const TensorSpec& s : tensor_layout(c, ModelKind::Fused)) {
        const Role role = s.role->role;
        if (role == Role::RopeFreqs || role == Role::RopeLong || role == Role::RopeShort) {  // from rope_scaling
            const std::vector<float>& v = role == Role::RopeFreqs  ? owner->rope_freqs
                                          : role == Role::RopeLong ? owner->rope_long
                                                                   : owner->rope_short;
            views.push_back(
                TensorView::of(s.name, DType::F32, s.ne, {reinterpret_cast<const std::byte*>(v.data()), v.size() * 4}));
            continue;
        }
        const NameMap* m = nullptr;
        for (const NameMap& row : s.parts.empty() ? map : std::span<const NameMap>(kHfStacked))
            if (row.role == s.role->role) m = &row;
        if (!m) fail(where + ": the layout has no name for tensor '" + s.name + "'");
        std::string name = prefixed(foreign_name(*m, s.layer, gqa_names));
        const StTensor* t = owner->set.find(name);
        if (!t && m->name.find("{G}") != std::string_view::npos)  // TransformerLens names GQA's W_K _W_K
            if (const StTensor* other = owner->set.find(foreign_name(*m, s.layer, !gqa_names))) {
                t = other;
                name = other->name;
            }
        if (!t && m->may_be_ones) {  // folded into the next weights: a norm of ones
            views.push_back(TensorView::of(s.name, DType::F32, s.ne,
                                           {reinterpret_cast<const std::byte*>(owner->ones.data()), s.ne[0] * 4}));
            continue;
        }
        if (!t)
            fail(where + ": missing tensor '" + name + "' (expected shape " + format_shape(foreign_shape(*m, s.ne, c)) +
                 ")");
        check_shape(*t, foreign_shape(*m, s.ne, c), where);
        used.insert(name);
        // Under the role table's name, as assemble_views expects.
        TensorView v = s.kind == TensorKind::Bias
                           ? owned_vector(*owner, *t, s.ne, m->rope_rows && rotate_half, c.d_head).renamed(s.name)
                           : view_of(*t, s.ne).renamed(s.name);
        if ((s.kind == TensorKind::Norm || s.kind == TensorKind::Bias) && v.type() != DType::F32) {
            norms_non_f32 = true;
            norm_type = v.type();
        }
        // Hugging Face's Gemma norms are w; TransformerLens's already 1 + w in f32 (convert_gemma_weights).
        if (s.kind == TensorKind::Norm && c.arch().norm_plus_one && prefix) v = plus_one(*owner, v, s.name);
        if (s.kind != TensorKind::Bias) {
            const bool rh = m->rope_rows && rotate_half;
            v = ViewAccess::in_order(std::move(v), rh, m->storage != Rows, m->storage == HeadsT || rh ? c.d_head : 0);
        }
        views.push_back(std::move(v));
    }
    ModelViews mv = assemble_views(c, ModelKind::Fused, views);
    if (norms_non_f32) md.set(std::string(kNormTypeKey), Value::string(std::string(type_name(norm_type))));
    // Every other tensor must be one the layout knows to carry nothing.
    const bool hf = prefix != nullptr;
    std::uint64_t vision = 0;
    for (const StTensor* t : owner->set.tensors()) {
        if (used.count(t->name)) continue;
        if (hf) {
            if (t->name == prefixed("lm_head.weight") && c.tied) continue;  // tied: Hugging Face ignores it too
            if (t->name.ends_with(".self_attn.rotary_emb.inv_freq")) continue;
            if (c.family == Family::Gemma3 && std::any_of(std::begin(kVisionPrefixes), std::end(kVisionPrefixes),
                                                          [&](std::string_view p) { return t->name.starts_with(p); })) {
                ++vision;
                continue;
            }
        } else {
            if (tl_buffer(t->name)) continue;
            if (t->name == "embed.W_E" && is_gemma(c.family)) continue;  // checked against W_U (tl_gemma_embedding)
            bool known = false;  // a bias role the model does not have (all zero), or one llama.cpp has no place for
            for (std::uint32_t l = 0; l < c.n_layers && !known; ++l) {
                for (const NameMap& row : map) {
                    if (role_spec(row.role).kind != TensorKind::Bias) continue;
                    for (bool g : {false, true})
                        if (t->name == foreign_name(row, l, g)) known = true;
                }
                for (std::string_view z : kTlZeroBiases)
                    if (t->name == replace_all(std::string(z), "{L}", std::to_string(l))) known = true;
            }
            if (known) {
                check_zero(*t, where,
                           t->name.ends_with("b_U") ? "llama.cpp has no output bias"
                           : t->name.ends_with("b_in")
                               ? "TransformerLens adds b_in after the gated MLP's product, where "
                                 "llama.cpp has no bias"
                               : "a bias of the model's other layers");
                continue;
            }
        }
        fail(where + ": unexpected tensor '" + t->name + "' in a " +
             std::string(hf ? "Hugging Face" : "TransformerLens") + " checkpoint");
    }
    if (vision > 0 && notes)
        notes->push_back(
            where + ": the language model only: " + std::to_string(vision) +
            " tensors of the vision tower and projector (vision_tower.*, multi_modal_projector.*) left out");
    return PerHeadModel::from_views(std::move(mv), std::move(md), std::move(owner));
}

// headfuse's own names in safetensors: the per-head or fused layout, hyperparameters from a config.json.
PerHeadModel import_own_names(std::shared_ptr<Owner> owner, Config c, const std::string& where) {
    const SafetensorsSet& s = owner->set;
    const ModelKind kind = s.find("blk.0.attn_q.head_0.weight") ? ModelKind::PerHead : ModelKind::Fused;
    c.tied = s.find("output.weight") == nullptr;
    if (const StTensor* lens = s.find("lens.proj.weight"); lens && lens->shape.size() == 2) {
        if (lens->shape[1] > UINT32_MAX) fail(where + ": tensor 'lens.proj.weight' is too wide");
        c.donor_d_in = static_cast<std::uint32_t>(lens->shape[1]);
    }
    validate_read(c, where);
    std::vector<TensorView> views;
    bool norms_non_f32 = false;
    DType norm_type = DType::F32;
    const auto layout = tensor_layout(c, kind);
    if (layout.size() != s.tensors().size())
        fail(where + ": " + std::to_string(s.tensors().size()) + " tensors, the config implies " +
             std::to_string(layout.size()));
    for (const TensorSpec& spec : layout) {
        const StTensor* t = s.find(spec.name);
        const std::vector<std::uint64_t> want(spec.ne.rbegin(), spec.ne.rend());
        if (!t) fail(where + ": missing tensor '" + spec.name + "' (expected shape " + format_shape(want) + ")");
        check_shape(*t, want, where);
        views.push_back(view_of(*t, spec.ne));
        if (spec.kind == TensorKind::Norm && views.back().type() != DType::F32) {
            norms_non_f32 = true;
            norm_type = views.back().type();
        }
    }
    Metadata md;
    if (norms_non_f32) md.set(std::string(kNormTypeKey), Value::string(std::string(type_name(norm_type))));
    return PerHeadModel::from_views(assemble_views(c, kind, views), std::move(md), std::move(owner));
}

}  // namespace

OpenedCheckpoint open_checkpoint(const fs::path& source, const std::optional<fs::path>& config) {
    std::error_code ec;
    if (!fs::is_directory(source, ec) && source.extension() != ".json" && is_gguf(source))
        return {open_model(source), CheckpointFormat::Gguf, source.parent_path(), {source}, {}};
    auto owner = std::make_shared<Owner>(Owner{SafetensorsSet::open(source), {}, {}, {}, {}, {}});
    const CheckpointFormat layout = detect(owner->set);
    const fs::path config_path = config ? *config : owner->set.folder() / "config.json";
    if (!fs::exists(config_path, ec))
        fail(owner->set.name() + ": a " + std::string(checkpoint_format_name(layout)) +
             " checkpoint needs its config: " + config_path.string() + " does not exist (give one with --config)");
    const json j = read_json(config_path);
    const std::string where = config_path.string();
    OpenedCheckpoint out{PerHeadModel{}, layout, owner->set.folder(), owner->set.paths(), {}};
    out.inputs.push_back(config_path);
    const std::string st = owner->set.name();
    switch (layout) {
        case CheckpointFormat::HuggingFace: {
            const Config c = hf_config(j, where);
            Metadata md;
            if (c.optional_roles.contains(Role::RopeFreqs)) {
                const json& rs = j.at("rope_scaling");
                owner->rope_freqs = llama3_rope_factors(rs, c, where);
                md.set(std::string(kRopeScalingKey), Value::string(rs.dump()));
            }
            if (c.optional_roles.contains(Role::RopeLong)) {
                owner->rope_long = longrope_factors(j.at("rope_scaling"), c, where, true);
                owner->rope_short = longrope_factors(j.at("rope_scaling"), c, where, false);
            }
            // Absent, num_key_value_heads is num_attention_heads (as Hugging Face's LlamaConfig has it); a GQA
            // checkpoint without it is named by its key, not by the shape that then fails.
            if (!is_gemma(c.family) && !j.contains("num_key_value_heads"))
                if (const StTensor* k =
                        owner->set.find(std::string(hf_prefix(owner->set)->model) + "layers.0.self_attn.k_proj.weight");
                    k && k->shape.size() == 2 && k->shape[0] != std::uint64_t{c.n_heads} * c.d_head)
                    fail(where + ": key 'num_key_value_heads' is absent, so it is num_attention_heads (" +
                         std::to_string(c.n_heads) + "), but tensor '" + k->name + "' has " +
                         std::to_string(k->shape[0]) + " rows, not " +
                         std::to_string(std::uint64_t{c.n_heads} * c.d_head) + " (" + std::to_string(c.n_heads) +
                         " heads of head_dim " + std::to_string(c.d_head) + "): set num_key_value_heads");
            if (c.family == Family::Phi3) {  // as llama.cpp's converter writes it (0: none), carried for export
                const json* w = field(j, "sliding_window");
                md.set(c.key("attention.sliding_window"), Value::u32(w ? get_count(j, "sliding_window", where) : 0));
            }
            // Rotate-half rows are permuted for the families that rotate adjacent pairs; NEOX's are Hugging Face's.
            const HfPrefix* prefix = hf_prefix(owner->set);
            if (prefix != &kHfPrefixes[0] && c.family != Family::Gemma3)
                fail(st + ": tensors under '" + std::string(prefix->model) +
                     "' (a multimodal checkpoint's language model), which headfuse reads for Gemma 3 only");
            out.model = import_mapped(owner, c, hf_names(c), c.arch().rope == RopePairing::Adjacent, false, st,
                                      std::move(md), prefix, &out.notes);
            break;
        }
        case CheckpointFormat::TransformerLens: {
            const TlConfig t = tl_config(j, where);
            Config c = t.config;
            c.tied = is_gemma(c.family);  // TransformerLens keeps its own W_U; Gemma's is the tied embedding
            if (c.tied) check_tl_gemma_embedding(owner->set, c, where);
            owner->ones.assign(c.d_model, 1.0f);
            // A bias role is carried when some layer's bias is not all zero (TransformerLens keeps zeros).
            for (const NameMap& row : kTl) {
                if (role_spec(row.role).kind != TensorKind::Bias) continue;
                for (std::uint32_t l = 0; l < c.n_layers; ++l)
                    for (bool g : {false, true})
                        if (const StTensor* b = owner->set.find(foreign_name(row, l, g)); b && !all_zero(*b))
                            c.optional_roles.insert(row.role);
            }
            // TransformerLens's rotate-half pairs are NEOX's: permuted only for a family of adjacent pairs.
            if (c.arch().rope == RopePairing::Neox && !t.rotate_half)
                fail(ErrorKind::Unsupported, where + ": key 'rotary_adjacent_pairs' is true, but llama.cpp's " +
                                                 std::string(c.architecture()) + " graph rotates NEOX halves");
            const bool permute = t.rotate_half && c.arch().rope == RopePairing::Adjacent;
            out.model = import_mapped(owner, c, tl_names(c), permute, c.n_kv_heads != c.n_heads, st);
            break;
        }
        default: out.model = import_own_names(owner, hf_config(j, where), st); break;
    }
    return out;
}

}  // namespace headfuse
