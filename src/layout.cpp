#include "layout.h"

#include "headfuse/model.h"

namespace headfuse {

std::string head_tensor_name(std::uint32_t layer, std::string_view proj, std::uint32_t head) {
    return "blk." + std::to_string(layer) + "." + std::string(proj) + ".head_" + std::to_string(head) + ".weight";
}

std::string layer_tensor_name(std::uint32_t layer, std::string_view what) {
    return "blk." + std::to_string(layer) + "." + std::string(what) + ".weight";
}

void for_each_view(const ModelViews& m, const std::function<void(const TensorView&)>& f) {
    f(m.token_embd);
    if (m.lens_proj) f(*m.lens_proj);
    f(m.output_norm);
    if (m.output) f(*m.output);
    for (const LayerViews& L : m.layers) {
        f(L.attn_norm);
        for (const auto* heads : {&L.q, &L.k, &L.v})
            for (const TensorView& h : *heads) f(h);
        f(L.attn_output);
        f(L.ffn_norm);
        f(L.ffn_gate);
        f(L.ffn_up);
        f(L.ffn_down);
    }
}

namespace {

std::vector<TensorSpec> layout(const Config& c, bool per_head) {
    const std::uint64_t dm = c.d_model, dh = c.d_head, ff = c.d_ff, v = c.vocab;
    std::vector<TensorSpec> out;
    if (per_head && c.has_lens()) {
        out.push_back({"token_embd.weight", {c.donor_d_in, v}, TensorKind::Donor});
        out.push_back({"lens.proj.weight", {c.donor_d_in, dm}, TensorKind::Lens});
    } else {
        out.push_back({"token_embd.weight", {dm, v}, TensorKind::Weight});
    }
    out.push_back({"output_norm.weight", {dm}, TensorKind::Norm});
    if (!c.tied) out.push_back({"output.weight", {dm, v}, TensorKind::Weight});
    for (std::uint32_t l = 0; l < c.n_layers; ++l) {
        out.push_back({layer_tensor_name(l, "attn_norm"), {dm}, TensorKind::Norm});
        for (auto [proj, n] : {std::pair{"attn_q", c.n_heads}, {"attn_k", c.n_kv_heads}, {"attn_v", c.n_kv_heads}}) {
            if (per_head)
                for (std::uint32_t h = 0; h < n; ++h)
                    out.push_back({head_tensor_name(l, proj, h), {dm, dh}, TensorKind::Weight});
            else
                out.push_back({layer_tensor_name(l, proj), {dm, n * dh}, TensorKind::Weight});
        }
        out.push_back({layer_tensor_name(l, "attn_output"), {std::uint64_t{c.n_heads} * dh, dm}, TensorKind::Weight});
        out.push_back({layer_tensor_name(l, "ffn_norm"), {dm}, TensorKind::Norm});
        out.push_back({layer_tensor_name(l, "ffn_gate"), {dm, ff}, TensorKind::Weight});
        out.push_back({layer_tensor_name(l, "ffn_up"), {dm, ff}, TensorKind::Weight});
        out.push_back({layer_tensor_name(l, "ffn_down"), {ff, dm}, TensorKind::Weight});
    }
    return out;
}

}  // namespace

std::vector<TensorSpec> per_head_layout(const Config& c) { return layout(c, true); }
std::vector<TensorSpec> fused_layout(const Config& c) { return layout(c, false); }

}  // namespace headfuse
