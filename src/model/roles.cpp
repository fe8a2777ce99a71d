#include "model/roles.h"

#include <cassert>
#include <charconv>

#include "headfuse/error.h"
#include "model/view_rows.h"

namespace headfuse {
namespace {

using enum TensorKind;
using enum Scope;
using enum Presence;

std::uint64_t dm(const Config& c) { return c.d_model; }

// Shape rules: (config, layer) -> ne. A head role's rule gives one head's shape.
Shape vocab_embd(const Config& c, std::uint32_t) { return {dm(c), c.vocab}; }
Shape donor_embd(const Config& c, std::uint32_t) { return {c.donor_d_in, c.vocab}; }
Shape lens_proj(const Config& c, std::uint32_t) { return {c.donor_d_in, dm(c)}; }
Shape model_vector(const Config& c, std::uint32_t) { return {dm(c)}; }
Shape head_matrix(const Config& c, std::uint32_t) { return {dm(c), c.d_head}; }
Shape attn_output(const Config& c, std::uint32_t layer) {
    return {std::uint64_t{head_count(role_spec(Role::AttnQ), c, layer)} * c.d_head, dm(c)};
}
Shape ffn_in(const Config& c, std::uint32_t layer) { return {dm(c), c.d_ff_at(layer)}; }
Shape head_vector(const Config& c, std::uint32_t) { return {c.d_head}; }
Shape ffn_vector(const Config& c, std::uint32_t layer) { return {c.d_ff_at(layer)}; }
Shape rope_pairs(const Config& c, std::uint32_t) { return {c.d_head / 2}; }
Shape ffn_out(const Config& c, std::uint32_t layer) { return {c.d_ff_at(layer), dm(c)}; }

// The table. Rows in file order; a role's name appears here and nowhere else.
const RoleSpec kRoles[] = {
    {Role::TokenEmbd, "token_embd", "weight", Global, Weight, Embedding, vocab_embd, &ModelViews::token_embd},
    {Role::LensDonor, "token_embd", "weight", Global, Donor, LensOnly, donor_embd, &ModelViews::token_embd},
    {Role::LensProj, "lens.proj", "weight", Global, Lens, LensOnly, lens_proj, &ModelViews::lens_proj},
    {Role::OutputNorm, "output_norm", "weight", Global, Norm, Required, model_vector, &ModelViews::output_norm},
    {Role::Output, "output", "weight", Global, Weight, Untied, vocab_embd, &ModelViews::output},
    {Role::RopeFreqs, "rope_freqs", "weight", Global, Norm, Optional, rope_pairs, &ModelViews::rope_freqs},
    {Role::RopeLong, "rope_factors_long", "weight", Global, Norm, Optional, rope_pairs, &ModelViews::rope_long},
    {Role::RopeShort, "rope_factors_short", "weight", Global, Norm, Optional, rope_pairs, &ModelViews::rope_short},
    {Role::AttnNorm, "attn_norm", "weight", Layer, Norm, Required, model_vector, &LayerViews::attn_norm},
    {Role::AttnQ, "attn_q", "weight", HeadQ, Weight, Required, head_matrix, &LayerViews::q},
    {Role::AttnK, "attn_k", "weight", HeadKV, Weight, Required, head_matrix, &LayerViews::k},
    {Role::AttnV, "attn_v", "weight", HeadKV, Weight, Required, head_matrix, &LayerViews::v},
    {Role::AttnQBias, "attn_q", "bias", HeadQ, Bias, Optional, head_vector, &LayerViews::q_bias},
    {Role::AttnKBias, "attn_k", "bias", HeadKV, Bias, Optional, head_vector, &LayerViews::k_bias},
    {Role::AttnVBias, "attn_v", "bias", HeadKV, Bias, Optional, head_vector, &LayerViews::v_bias},
    {Role::AttnQNorm, "attn_q_norm", "weight", Layer, Norm, Optional, head_vector, &LayerViews::attn_q_norm},
    {Role::AttnKNorm, "attn_k_norm", "weight", Layer, Norm, Optional, head_vector, &LayerViews::attn_k_norm},
    {Role::AttnOutput, "attn_output", "weight", Layer, Weight, Required, attn_output, &LayerViews::attn_output},
    {Role::AttnOutputBias, "attn_output", "bias", Layer, Bias, Optional, model_vector, &LayerViews::attn_output_bias},
    {Role::PostAttnNorm, "post_attention_norm", "weight", Layer, Norm, Optional, model_vector,
     &LayerViews::post_attention_norm},
    {Role::FfnNorm, "ffn_norm", "weight", Layer, Norm, Required, model_vector, &LayerViews::ffn_norm},
    {Role::FfnGate, "ffn_gate", "weight", Layer, Weight, Required, ffn_in, &LayerViews::ffn_gate},
    {Role::FfnGateBias, "ffn_gate", "bias", Layer, Bias, Optional, ffn_vector, &LayerViews::ffn_gate_bias},
    {Role::FfnUp, "ffn_up", "weight", Layer, Weight, Required, ffn_in, &LayerViews::ffn_up},
    {Role::FfnUpBias, "ffn_up", "bias", Layer, Bias, Optional, ffn_vector, &LayerViews::ffn_up_bias},
    {Role::FfnDown, "ffn_down", "weight", Layer, Weight, Required, ffn_out, &LayerViews::ffn_down},
    {Role::FfnDownBias, "ffn_down", "bias", Layer, Bias, Optional, model_vector, &LayerViews::ffn_down_bias},
    {Role::PostFfwNorm, "post_ffw_norm", "weight", Layer, Norm, Optional, model_vector, &LayerViews::post_ffw_norm},
};
static_assert(std::size(kRoles) == kRoleCount, "one row per role");

// The tensors of the fused layout that stack several roles (llama.cpp's phi3: create_tensor_qkv's attn_qkv
// [n_embd, n_embd_q + 2 n_embd_gqa], and ffn_up [n_embd, 2 n_ff] with the gate's rows first, which ggml_swiglu
// splits in halves).
constexpr Role kQkvParts[] = {Role::AttnQ, Role::AttnK, Role::AttnV};
constexpr Role kGateUpParts[] = {Role::FfnGate, Role::FfnUp};
constexpr std::string_view kQkvName = "attn_qkv";

// Whether role r's tensors are, in the fused layout of config c, a part of another role's stacked tensor (and
// so have no tensor of their own).
bool stacked_away(const RoleSpec& r, const Config& c) {
    const ArchSpec& a = c.arch();
    return (a.fused_qkv && (r.role == Role::AttnK || r.role == Role::AttnV)) ||
           (a.fused_gate_up && r.role == Role::FfnUp);
}

// The parts role r's fused tensor stacks in config c (empty: r's tensor alone).
std::span<const Role> stacked_parts(const RoleSpec& r, const Config& c) {
    const ArchSpec& a = c.arch();
    if (a.fused_qkv && r.role == Role::AttnQ) return kQkvParts;
    if (a.fused_gate_up && r.role == Role::FfnGate) return kGateUpParts;
    return {};
}

// Rows of role p in layer `layer` of the fused layout: every head's, or the layer tensor's.
std::uint64_t part_rows(const RoleSpec& p, const Config& c, std::uint32_t layer) {
    const Shape ne = p.shape(c, layer);
    return ne.back() * (is_head_role(p) ? head_count(p, c, layer) : 1);
}

// Parses a decimal number without leading zeros (other than "0" itself) off the front of s.
std::optional<std::uint32_t> take_number(std::string_view& s) {
    std::uint32_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end == s.data() || (s[0] == '0' && end - s.data() > 1)) return std::nullopt;
    s.remove_prefix(static_cast<std::size_t>(end - s.data()));
    return v;
}

bool take(std::string_view& s, std::string_view prefix) {
    if (!s.starts_with(prefix)) return false;
    s.remove_prefix(prefix.size());
    return true;
}

// Whether `name` is a head role's tensor name in layout `kind`: blk.N.<role>.head_H.<suffix> (per-head) or
// blk.N.<role>.<suffix> (fused).
bool is_head_tensor_name(std::string_view name, ModelKind kind) {
    if (!take(name, "blk.") || !take_number(name) || !take(name, ".")) return false;
    if (kind == ModelKind::Fused && name == std::string(kQkvName) + ".weight") return true;
    for (const RoleSpec& r : kRoles) {
        if (!is_head_role(r)) continue;
        std::string_view s = name;
        if (!take(s, r.name) || !take(s, ".")) continue;
        if (kind == ModelKind::PerHead && !(take(s, "head_") && take_number(s) && take(s, "."))) continue;
        if (s == r.suffix) return true;
    }
    return false;
}

}  // namespace

std::span<const RoleSpec> role_table() { return kRoles; }

bool is_head_role(const RoleSpec& r) { return r.scope == HeadQ || r.scope == HeadKV; }

std::string first_tensor_name(const RoleSpec& r, ModelKind kind) {
    return tensor_name(r, 0,
                       kind == ModelKind::PerHead && is_head_role(r) ? std::optional<std::uint32_t>(0) : std::nullopt);
}

const RoleSpec& role_spec(Role role) {
    const RoleSpec& r = kRoles[static_cast<std::size_t>(role)];
    assert(r.role == role);
    return r;
}

bool role_present(const RoleSpec& r, const Config& c, ModelKind kind) {
    const bool lens_source = kind == ModelKind::PerHead && c.has_lens();
    switch (r.presence) {
        case Required: return true;
        case Embedding: return !lens_source;
        case LensOnly: return lens_source;
        case Untied: return !c.tied;
        case Optional: return c.optional_roles.contains(r.role);
    }
    return false;
}

std::uint32_t head_count(const RoleSpec& r, const Config& c, std::uint32_t layer) {
    switch (r.scope) {
        case HeadQ: return c.n_heads_at(layer);
        case HeadKV: return c.n_kv_heads_at(layer);
        default: return 1;
    }
}

bool role_in_layer(const RoleSpec& r, const Config& c, std::uint32_t layer) {
    switch (r.role) {  // the layer roles of attention, which a layer of 0 heads lacks (head roles have 0 heads)
        case Role::AttnNorm:
        case Role::AttnQNorm:
        case Role::AttnKNorm:
        case Role::AttnOutput:
        case Role::AttnOutputBias:
        case Role::PostAttnNorm: return c.has_attention(layer);
        default: return true;
    }
}

std::string tensor_name(const RoleSpec& r, std::uint32_t layer, std::optional<std::uint32_t> head) {
    std::string s;
    if (r.scope != Global) s = "blk." + std::to_string(layer) + ".";
    s += r.name;
    if (head) s += ".head_" + std::to_string(*head);
    s += ".";
    s += r.suffix;
    return s;
}

void for_each_spec(const Config& c, ModelKind kind, const std::function<void(TensorSpec&&)>& f) {
    auto emit = [&](const RoleSpec& r, std::uint32_t layer) {
        Shape ne = r.shape(c, layer);
        if (!is_head_role(r)) return f({tensor_name(r, layer), std::move(ne), r.kind, &r, layer, 0});
        const std::uint32_t n = head_count(r, c, layer);
        if (kind == ModelKind::PerHead) {
            for (std::uint32_t h = 0; h < n; ++h) f({tensor_name(r, layer, h), ne, r.kind, &r, layer, h});
        } else if (n > 0) {
            ne.back() *= n;  // the heads stacked along the outermost dimension
            f({tensor_name(r, layer), std::move(ne), r.kind, &r, layer, 0});
        }
    };
    auto emit_stacked = [&](const RoleSpec& r, std::uint32_t layer, std::span<const Role> parts) {
        Shape ne = r.shape(c, layer);
        ne.back() = 0;
        for (Role p : parts) ne.back() += part_rows(role_spec(p), c, layer);
        // attn_qkv is a name of its own; the stacked feed-forward keeps the name of ffn_up
        const std::string name = r.role == Role::AttnQ ? "blk." + std::to_string(layer) + "." + std::string(kQkvName) +
                                                             "." + std::string(r.suffix)
                                                       : tensor_name(role_spec(Role::FfnUp), layer);
        if (ne.back() > 0) f({name, std::move(ne), r.kind, &r, layer, 0, parts});
    };
    for (const RoleSpec& r : kRoles)
        if (r.scope == Global && role_present(r, c, kind)) emit(r, 0);
    for (std::uint32_t l = 0; l < c.n_layers; ++l)
        for (const RoleSpec& r : kRoles) {
            if (r.scope == Global || !role_present(r, c, kind) || !role_in_layer(r, c, l)) continue;
            if (kind == ModelKind::Fused && stacked_away(r, c)) continue;
            if (const auto parts = stacked_parts(r, c); kind == ModelKind::Fused && !parts.empty())
                emit_stacked(r, l, parts);
            else
                emit(r, l);
        }
}

std::vector<TensorSpec> tensor_layout(const Config& c, ModelKind kind) {
    std::vector<TensorSpec> out;
    for_each_spec(c, kind, [&](TensorSpec&& s) { out.push_back(std::move(s)); });
    return out;
}

std::uint64_t tensor_count(const Config& c, ModelKind kind) {
    std::uint64_t n = 0;
    for (const RoleSpec& r : kRoles) {
        if (!role_present(r, c, kind) || (kind == ModelKind::Fused && stacked_away(r, c))) continue;
        if (r.scope == Global) {
            ++n;
            continue;
        }
        for (std::uint32_t l = 0; l < c.n_layers; ++l) {
            const std::uint32_t heads = head_count(r, c, l);
            if (!role_in_layer(r, c, l)) continue;
            n += !is_head_role(r) ? 1 : kind == ModelKind::PerHead ? heads : heads > 0 ? 1 : 0;
        }
    }
    return n;
}

const TensorView* role_view(const ModelViews& m, const RoleSpec& r, std::uint32_t layer) {
    return std::visit(
        [&](auto slot) -> const TensorView* {
            using S = decltype(slot);
            if constexpr (std::is_same_v<S, TensorView ModelViews::*>) {
                return &(m.*slot);
            } else if constexpr (std::is_same_v<S, std::optional<TensorView> ModelViews::*>) {
                return (m.*slot) ? &*(m.*slot) : nullptr;
            } else if constexpr (std::is_same_v<S, TensorView LayerViews::*>) {
                return &(m.layers.at(layer).*slot);
            } else if constexpr (std::is_same_v<S, std::optional<TensorView> LayerViews::*>) {
                const auto& v = m.layers.at(layer).*slot;
                return v ? &*v : nullptr;
            } else {
                assert(false && "a head role has heads, not one view");
                return nullptr;
            }
        },
        r.slot);
}

const std::vector<TensorView>& role_heads(const ModelViews& m, const RoleSpec& r, std::uint32_t layer) {
    assert(is_head_role(r));
    return m.layers.at(layer).*std::get<std::vector<TensorView> LayerViews::*>(r.slot);
}

std::vector<const TensorView*> fused_parts(const ModelViews& m, const TensorSpec& s) {
    std::vector<const TensorView*> out;
    auto add = [&](const RoleSpec& r) {
        if (is_head_role(r))
            for (const TensorView& h : role_heads(m, r, s.layer)) out.push_back(&h);
        else
            out.push_back(role_view(m, r, s.layer));
    };
    if (s.parts.empty())
        add(*s.role);
    else
        for (Role p : s.parts) add(role_spec(p));
    return out;
}

namespace {

// Stores v as role r's view (appends it, for a head role).
void put(ModelViews& m, const RoleSpec& r, std::uint32_t layer, TensorView v) {
    std::visit(
        [&](auto slot) {
            using S = decltype(slot);
            if constexpr (std::is_same_v<S, TensorView ModelViews::*> ||
                          std::is_same_v<S, std::optional<TensorView> ModelViews::*>)
                m.*slot = std::move(v);
            else if constexpr (std::is_same_v<S, std::vector<TensorView> LayerViews::*>)
                (m.layers[layer].*slot).push_back(std::move(v));
            else
                m.layers[layer].*slot = std::move(v);
        },
        r.slot);
}

// Head h of n heads of a fused tensor: a zero-copy slice along the outermost dimension (whole groups of a
// foreign row order).
TensorView head_of(const TensorView& fused, std::uint32_t h, std::uint32_t n, const Shape& head_shape,
                   std::string name) {
    if (head_shape.size() == 2) return fused.rows(std::uint64_t{h} * head_shape[1], head_shape[1], std::move(name));
    assert(fused.plain());  // a bias: foreign ones are read into memory in llama.cpp's order
    const std::uint64_t nbytes = fused.bytes().size() / n;
    return ViewAccess::in_file(std::move(name), fused.type(), head_shape, fused.bytes().subspan(h * nbytes, nbytes),
                               fused.file(), fused.file() ? fused.file_offset() + h * nbytes : 0);
}

}  // namespace

ModelViews assemble_views(const Config& c, ModelKind kind, const std::vector<TensorView>& views) {
    ModelViews m;
    m.config = c;
    m.layers.resize(c.n_layers);
    std::size_t i = 0;
    for_each_spec(c, kind, [&](TensorSpec&& s) {
        assert(i < views.size() && views[i].name() == s.name);
        const TensorView& v = views[i++];
        const RoleSpec& r = *s.role;
        if (kind == ModelKind::Fused && !s.parts.empty()) {  // row ranges of the stacked tensor, no copy
            std::uint64_t row = 0;
            for (Role p : s.parts) {
                const RoleSpec& ps = role_spec(p);
                const Shape part_shape = ps.shape(c, s.layer);
                const std::uint32_t n = is_head_role(ps) ? head_count(ps, c, s.layer) : 1;
                for (std::uint32_t h = 0; h < n; ++h, row += part_shape.back())
                    put(m, ps, s.layer,
                        v.rows(row, part_shape.back(),
                               is_head_role(ps) ? tensor_name(ps, s.layer, h) : tensor_name(ps, s.layer)));
            }
        } else if (kind == ModelKind::Fused && is_head_role(r)) {
            const std::uint32_t n = head_count(r, c, s.layer);
            const Shape head_shape = r.shape(c, s.layer);
            for (std::uint32_t h = 0; h < n; ++h)
                put(m, r, s.layer, head_of(v, h, n, head_shape, tensor_name(r, s.layer, h)));
        } else {
            put(m, r, s.layer, v);
        }
    });
    assert(i == views.size());
    return m;
}

const TensorInfo* kind_evidence(const GgufFile& f, ModelKind kind) {
    for (const TensorInfo& t : f.tensors())
        if (is_head_tensor_name(t.name, kind)) return &t;
    return nullptr;
}

}  // namespace headfuse
