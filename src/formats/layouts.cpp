// Foreign checkpoints in: the name maps of Hugging Face and TransformerLens, their configs, layout detection,
// and the per-head views over a mapped safetensors checkpoint.
#include "formats/layouts.h"

#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include <unistd.h>

#include "files.h"
#include "formats/safetensors.h"
#include "headfuse/error.h"
#include "headfuse/quantize.h"
#include "roles.h"

namespace headfuse {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using enum Storage;

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
};

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
};

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
        fail(where + ": key '" + std::string(key) + "' is " + v->dump() + "; headfuse converts \"" + std::string(want) +
             "\" only");
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

void validated(Config& c, const std::string& where) {
    try {
        c.validate();
    } catch (const Error& e) {
        fail(where + ": " + e.what());
    }
}

}  // namespace

std::span<const NameMap> hf_names() { return kHf; }
std::span<const NameMap> tl_names() { return kTl; }

std::string foreign_name(const NameMap& m, std::uint32_t layer, bool gqa) {
    return replace_all(replace_all(std::string(m.name), "{L}", std::to_string(layer)), "{G}", gqa ? "_" : "");
}

std::vector<std::uint64_t> foreign_shape(const NameMap& m, std::span<const std::uint64_t> ne, const Config& c) {
    switch (m.storage) {
        case Rows: return {ne.rbegin(), ne.rend()};
        case Transposed: return {ne.begin(), ne.end()};
        case HeadsT: return {ne[1] / c.d_head, ne[0], c.d_head};
        case OutHeads: return {ne[0] / c.d_head, c.d_head, ne[1]};
    }
    return {};
}

Config hf_config(const json& j, const std::string& where) {
    if (!j.is_object()) fail(where + ": expected a JSON object");
    expect_string(j, "model_type", "llama", where);
    expect_string(j, "hidden_act", "silu", where);
    for (const char* flag : {"attention_bias", "mlp_bias"})
        if (const json* v = field(j, flag); v && *v != false)
            fail(where + ": key '" + std::string(flag) + "' is " + v->dump() +
                 "; headfuse converts LLaMA without biases");
    if (const json* rs = field(j, "rope_scaling"))
        fail(where + ": key 'rope_scaling' is " + rs->dump() +
             "; headfuse converts only models without RoPE scaling (llama.cpp's llama graph has other rules)");
    Config c;
    c.d_model = get_count(j, "hidden_size", where);
    c.n_heads = get_count(j, "num_attention_heads", where);
    c.n_kv_heads = get_count(j, "num_key_value_heads", where, c.n_heads);
    c.d_head = get_count(j, "head_dim", where, c.n_heads ? c.d_model / c.n_heads : 0);
    c.d_ff = get_count(j, "intermediate_size", where);
    c.n_layers = get_count(j, "num_hidden_layers", where);
    c.vocab = get_count(j, "vocab_size", where);
    c.context_length = get_count(j, "max_position_embeddings", where, 2048);
    c.rms_eps = get_float(j, "rms_norm_eps", where, 1e-6f);  // LlamaConfig's default
    c.rope_theta = get_float(j, "rope_theta", where, 10000.0f);
    if (const json* t = field(j, "tie_word_embeddings")) {
        if (!t->is_boolean()) fail(where + ": key 'tie_word_embeddings' must be true or false, found " + t->dump());
        c.tied = t->get<bool>();
    }
    validated(c, where);
    return c;
}

TlConfig tl_config(const json& j, const std::string& where) {
    if (!j.is_object()) fail(where + ": expected a JSON object");
    expect_string(j, "positional_embedding_type", "rotary", where);
    expect_string(j, "act_fn", "silu", where);
    if (const json* g = field(j, "gated_mlp"); g && *g != true)
        fail(where + ": key 'gated_mlp' is " + g->dump() + "; headfuse converts LLaMA's gated MLP only");
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
        fail(where + ": key 'rotary_dim' is " + rd->dump() + ", not d_head " + std::to_string(c.d_head) +
             "; headfuse converts full rotary embeddings only");
    const json* norm = field(j, "normalization_type");
    if (!norm || !norm->is_string() || (*norm != "RMS" && *norm != "RMSPre"))
        fail(where + ": key 'normalization_type' is " + (norm ? norm->dump() : "missing") +
             "; headfuse converts \"RMS\" and \"RMSPre\" (folded) only");
    t.folded = *norm == "RMSPre";
    if (const json* adj = field(j, "rotary_adjacent_pairs")) {
        if (!adj->is_boolean()) fail(where + ": key 'rotary_adjacent_pairs' must be true or false");
        t.rotate_half = !adj->get<bool>();
    }
    validated(c, where);
    return t;
}

json hf_config_json(const Config& c, std::string_view torch_dtype) {
    return {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_size", c.d_model},
            {"num_attention_heads", c.n_heads},
            {"num_key_value_heads", c.n_kv_heads},
            {"head_dim", c.d_head},
            {"intermediate_size", c.d_ff},
            {"num_hidden_layers", c.n_layers},
            {"vocab_size", c.vocab},
            {"max_position_embeddings", c.context_length},
            {"rms_norm_eps", c.rms_eps},
            {"rope_theta", c.rope_theta},
            {"rope_scaling", nullptr},
            {"tie_word_embeddings", c.tied},
            {"hidden_act", "silu"},
            {"attention_bias", false},
            {"mlp_bias", false},
            {"torch_dtype", torch_dtype}};
}

json tl_config_json(const Config& c, bool folded) {
    return {{"d_model", c.d_model},
            {"n_heads", c.n_heads},
            {"d_head", c.d_head},
            {"d_mlp", c.d_ff},
            {"n_layers", c.n_layers},
            {"d_vocab", c.vocab},
            {"n_key_value_heads", c.n_kv_heads == c.n_heads ? json(nullptr) : json(c.n_kv_heads)},
            {"n_ctx", c.context_length},
            {"eps", c.rms_eps},
            {"rotary_base", c.rope_theta},
            {"rotary_dim", c.d_head},
            {"normalization_type", folded ? "RMSPre" : "RMS"},
            {"rotary_adjacent_pairs", false},
            {"positional_embedding_type", "rotary"},
            {"act_fn", "silu"},
            {"gated_mlp", true},
            {"final_rms", true},
            {"original_architecture", "LlamaForCausalLM"}};
}

std::string_view layout_name(Layout l) noexcept {
    switch (l) {
        case Layout::Gguf: return "GGUF";
        case Layout::PerHeadNames: return "headfuse names";
        case Layout::HuggingFace: return "Hugging Face LLaMA";
        case Layout::TransformerLens: return "TransformerLens";
    }
    return "";
}

// ---- import ----------------------------------------------------------------------------------------------------

namespace {

// What the model's views borrow: the mapped checkpoint, and the ones that stand in for folded norms.
struct Owner {
    SafetensorsSet set;
    std::vector<float> ones;
};

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

Layout detect(const SafetensorsSet& s) {
    if (s.find("model.embed_tokens.weight") || s.find("model.layers.0.self_attn.q_proj.weight"))
        return Layout::HuggingFace;
    if (s.find("embed.W_E") || s.find("blocks.0.attn.W_Q")) return Layout::TransformerLens;
    if (s.find("token_embd.weight")) return Layout::PerHeadNames;
    const auto ts = s.tensors();
    fail(s.name() +
         ": the tensor names match no layout headfuse reads (Hugging Face model.embed_tokens.weight, "
         "TransformerLens embed.W_E, headfuse token_embd.weight); the first is '" +
         (ts.empty() ? std::string() : ts.front()->name) + "'");
}

TensorView view_of(const StTensor& t, std::span<const std::uint64_t> ne) {
    TensorView v;
    v.name = t.name;
    v.type = t.readable_type();
    v.n_dims = static_cast<std::uint32_t>(ne.size());
    std::copy(ne.begin(), ne.end(), v.ne.begin());
    v.bytes = t.bytes;
    v.file = t.file;
    v.file_offset = t.file_offset;
    return v;
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

// TransformerLens buffers that hold no weights (a causal mask, rotary tables, a constant).
bool tl_buffer(std::string_view name) {
    for (std::string_view s : {".attn.mask", ".attn.IGNORE", ".attn.rotary_sin", ".attn.rotary_cos"})
        if (name.ends_with(s)) return true;
    return false;
}

PerHeadModel import_mapped(std::shared_ptr<Owner> owner, const Config& c, std::span<const NameMap> map,
                           bool rotate_half, bool gqa_names, const std::string& where) {
    std::vector<TensorView> views;
    std::set<std::string, std::less<>> used;
    bool norms_non_f32 = false;
    DType norm_type = DType::F32;
    for (const TensorSpec& s : tensor_layout(c, ModelKind::Fused)) {
        const NameMap* m = nullptr;
        for (const NameMap& row : map)
            if (row.role == s.role->role) m = &row;
        if (!m) fail(where + ": the layout has no name for tensor '" + s.name + "'");
        std::string name = foreign_name(*m, s.layer, gqa_names);
        const StTensor* t = owner->set.find(name);
        if (!t && m->name.find("{G}") != std::string_view::npos)  // TransformerLens names GQA's W_K _W_K
            if (const StTensor* other = owner->set.find(foreign_name(*m, s.layer, !gqa_names))) {
                t = other;
                name = other->name;
            }
        if (!t && m->may_be_ones) {  // folded into the next weights: a norm of ones
            TensorView v;
            v.name = s.name;
            v.n_dims = 1;
            v.ne[0] = s.ne[0];
            v.bytes = {reinterpret_cast<const std::byte*>(owner->ones.data()), s.ne[0] * sizeof(float)};
            views.push_back(v);
            continue;
        }
        if (!t)
            fail(where + ": missing tensor '" + name + "' (expected shape " + format_shape(foreign_shape(*m, s.ne, c)) +
                 ")");
        check_shape(*t, foreign_shape(*m, s.ne, c), where);
        used.insert(name);
        TensorView v = view_of(*t, s.ne);
        v.name = s.name;  // the role table's name, as assemble_views expects
        if (s.kind == TensorKind::Norm && v.type != DType::F32) {
            norms_non_f32 = true;
            norm_type = v.type;
        }
        v.rotate_half = m->rope_rows && rotate_half;
        v.transposed = m->storage != Rows;
        if (m->storage == HeadsT || v.rotate_half) v.group_rows = c.d_head;
        views.push_back(std::move(v));
    }
    ModelViews mv = assemble_views(c, ModelKind::Fused, views);
    Metadata md;
    if (norms_non_f32) md.set(std::string(kNormTypeKey), Value::string(std::string(type_name(norm_type))));
    // Every other tensor must be one the layout knows to carry nothing.
    for (const StTensor* t : owner->set.tensors()) {
        if (used.count(t->name)) continue;
        if (map.data() == kHf) {
            if (t->name == "lm_head.weight" && c.tied) continue;  // tied: Hugging Face ignores it too
            if (t->name.ends_with(".self_attn.rotary_emb.inv_freq")) continue;
        } else {
            if (tl_buffer(t->name)) continue;
            bool bias = false;
            for (std::uint32_t l = 0; l < c.n_layers && !bias; ++l)
                for (std::string_view b : kTlBiases)
                    for (std::string_view g : {"", "_"})
                        if (t->name == "blocks." + std::to_string(l) + "." + replace_all(std::string(b), "{G}", g))
                            bias = true;
            if (bias) {
                check_zero(*t, where, "headfuse carries no biases yet (llama.cpp's llama graph would need them)");
                continue;
            }
            if (t->name == "unembed.b_U") {
                check_zero(*t, where, "llama.cpp has no output bias");
                continue;
            }
        }
        fail(where + ": unexpected tensor '" + t->name + "' in a " +
             std::string(map.data() == kHf ? "Hugging Face" : "TransformerLens") + " checkpoint");
    }
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
    validated(c, where);
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
        if (spec.kind == TensorKind::Norm && views.back().type != DType::F32) {
            norms_non_f32 = true;
            norm_type = views.back().type;
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
        return {open_model(source), Layout::Gguf, source.parent_path(), {source}};
    auto owner = std::make_shared<Owner>(Owner{SafetensorsSet::open(source), {}});
    const Layout layout = detect(owner->set);
    const fs::path config_path = config ? *config : owner->set.folder() / "config.json";
    if (!fs::exists(config_path, ec))
        fail(owner->set.name() + ": a " + std::string(layout_name(layout)) +
             " checkpoint needs its config: " + config_path.string() + " does not exist (give one with --config)");
    const json j = read_json(config_path);
    const std::string where = config_path.string();
    OpenedCheckpoint out{PerHeadModel{}, layout, owner->set.folder(), owner->set.paths()};
    out.inputs.push_back(config_path);
    const std::string st = owner->set.name();
    switch (layout) {
        case Layout::HuggingFace: {
            const Config c = hf_config(j, where);
            out.model = import_mapped(owner, c, kHf, true, false, st);
            break;
        }
        case Layout::TransformerLens: {
            const TlConfig t = tl_config(j, where);
            Config c = t.config;
            c.tied = false;  // TransformerLens keeps its own W_U
            owner->ones.assign(c.d_model, 1.0f);
            out.model = import_mapped(owner, c, kTl, t.rotate_half, c.n_kv_heads != c.n_heads, st);
            break;
        }
        default: out.model = import_own_names(owner, hf_config(j, where), st); break;
    }
    return out;
}

}  // namespace headfuse
