#include "headfuse/model.h"

#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "headfuse/error.h"
#include "layout.h"
#include "random.h"

namespace headfuse {

TensorView TensorView::rows(std::uint64_t r0, std::uint64_t n, std::string view_name) const {
    TensorView v = *this;
    const std::uint64_t rb = row_nbytes();
    v.name = std::move(view_name);
    v.n_dims = 2;
    v.ne = {ne[0], n, 1, 1};
    v.bytes = bytes.subspan(r0 * rb, n * rb);
    v.file_offset = file_offset + r0 * rb;
    return v;
}

namespace {

TensorView view_of(const GgufFile& f, const TensorInfo& t) {
    TensorView v;
    v.name = t.name;
    v.type = static_cast<DType>(t.type);
    v.n_dims = t.n_dims;
    v.ne = t.ne;
    v.bytes = f.tensor_data(t);
    v.file = f.mapping(t);  // a split set: the shard that holds t
    v.file_offset = f.file_offset(t);
    return v;
}

bool type_allowed(TensorKind kind, std::uint32_t type) {
    if (kind == TensorKind::Weight) {
        const TypeTraits* t = find_type(type);
        return t && t->reads;
    }
    return type == static_cast<std::uint32_t>(DType::F32);
}

std::string allowed_types(TensorKind kind) { return kind == TensorKind::Weight ? read_type_list() : "f32"; }

// Builds the per-head interface from views in layout order.
ModelViews assemble(const Config& c, const std::vector<TensorView>& views) {
    std::map<std::string, const TensorView*, std::less<>> by_name;
    for (const TensorView& v : views) by_name[v.name] = &v;
    auto get = [&](const std::string& name) -> const TensorView& { return *by_name.at(name); };
    ModelViews m;
    m.config = c;
    m.token_embd = get("token_embd.weight");
    if (c.has_lens()) m.lens_proj = get("lens.proj.weight");
    m.output_norm = get("output_norm.weight");
    if (!c.tied) m.output = get("output.weight");
    m.layers.resize(c.n_layers);
    for (std::uint32_t l = 0; l < c.n_layers; ++l) {
        LayerViews& L = m.layers[l];
        L.attn_norm = get(layer_tensor_name(l, "attn_norm"));
        L.attn_output = get(layer_tensor_name(l, "attn_output"));
        L.ffn_norm = get(layer_tensor_name(l, "ffn_norm"));
        L.ffn_gate = get(layer_tensor_name(l, "ffn_gate"));
        L.ffn_up = get(layer_tensor_name(l, "ffn_up"));
        L.ffn_down = get(layer_tensor_name(l, "ffn_down"));
        for (auto [proj, heads, n] :
             {std::tuple{"attn_q", &L.q, c.n_heads}, {"attn_k", &L.k, c.n_kv_heads}, {"attn_v", &L.v, c.n_kv_heads}}) {
            heads->reserve(n);
            if (auto it = by_name.find(layer_tensor_name(l, proj)); it != by_name.end()) {
                for (std::uint32_t h = 0; h < n; ++h)  // zero-copy slices of the fused tensor
                    heads->push_back(
                        it->second->rows(std::uint64_t{h} * c.d_head, c.d_head, head_tensor_name(l, proj, h)));
            } else {
                for (std::uint32_t h = 0; h < n; ++h) heads->push_back(get(head_tensor_name(l, proj, h)));
            }
        }
    }
    return m;
}

// Config of a model file: llama.* metadata, with vocab, tied and the lens read off the tensors.
Config config_of(const GgufFile& f) {
    Config c = Config::from_metadata(f.metadata(), f.name());
    const TensorInfo* embd = f.find_tensor("token_embd.weight");
    if (!embd) fail(f.name() + ": missing tensor 'token_embd.weight'");
    if (embd->n_dims != 2)
        fail(f.name() + ": tensor 'token_embd.weight' has shape " + format_shape(*embd) + ", expected 2 dimensions");
    if (embd->ne[1] > UINT32_MAX) fail(f.name() + ": tensor 'token_embd.weight' has too many rows");
    const auto vocab = static_cast<std::uint32_t>(embd->ne[1]);
    if (f.metadata().find("llama.vocab_size") && c.vocab != vocab)
        fail(f.name() + ": key 'llama.vocab_size' is " + std::to_string(c.vocab) + ", but token_embd.weight has " +
             std::to_string(vocab) + " rows");
    c.vocab = vocab;
    c.tied = f.find_tensor("output.weight") == nullptr;
    if (const TensorInfo* lens = f.find_tensor("lens.proj.weight")) {
        if (lens->ne[0] > UINT32_MAX) fail(f.name() + ": tensor 'lens.proj.weight' is too wide");
        c.donor_d_in = static_cast<std::uint32_t>(lens->ne[0]);
    }
    try {
        c.validate();
    } catch (const Error& e) {
        fail(f.name() + ": " + e.what());
    }
    return c;
}

// The metadata may describe a model of millions of tensors (4096 layers of 4096 heads) in a file of a few
// bytes: compare the count it implies with the file's before building the layout, which would hold them all.
// A near miss (a tensor or a few missing) goes on to the layout check, which names the missing tensor.
void check_tensor_count(const GgufFile& f, const Config& c, bool per_head) {
    const std::uint64_t per_layer = per_head ? 6 + std::uint64_t{c.n_heads} + 2 * std::uint64_t{c.n_kv_heads} : 9;
    const std::uint64_t expected = 2 + (c.has_lens() ? 1 : 0) + (c.tied ? 0 : 1) + c.n_layers * per_layer;
    const std::uint64_t found = f.tensors().size();
    if (expected > 2 * found + 16)
        fail(f.name() + ": metadata describes a " + (per_head ? "per-head checkpoint" : "fused llama file") + " of " +
             std::to_string(expected) + " tensors (block_count " + std::to_string(c.n_layers) + ", head_count " +
             std::to_string(c.n_heads) + ", head_count_kv " + std::to_string(c.n_kv_heads) + "), the file has " +
             std::to_string(found));
}

std::uint64_t elements(const std::vector<std::uint64_t>& ne) {
    std::uint64_t n = 1;
    for (auto d : ne) n *= d;
    return n;
}

}  // namespace

std::vector<TensorView> check_tensors(const GgufFile& f, const std::vector<TensorSpec>& layout, std::string_view what) {
    // One index, so that checking n tensors costs n log n, not n^2 (a hostile file may hold millions).
    std::map<std::string_view, const TensorInfo*> by_name;
    for (const TensorInfo& t : f.tensors()) by_name.emplace(t.name, &t);
    if (f.tensors().size() != layout.size()) {
        std::map<std::string_view, bool> expected;
        for (const TensorSpec& s : layout) expected[s.name] = true;
        for (const TensorInfo& t : f.tensors())
            if (!expected.count(t.name))
                fail(f.name() + ": unexpected tensor '" + t.name + "' in a " + std::string(what));
    }
    std::vector<TensorView> views;
    views.reserve(layout.size());
    for (const TensorSpec& s : layout) {
        const auto it = by_name.find(s.name);
        const TensorInfo* t = it == by_name.end() ? nullptr : it->second;
        if (!t) fail(f.name() + ": missing tensor '" + s.name + "' (expected shape " + format_shape(s.ne) + ")");
        if (std::vector<std::uint64_t>(t->ne.begin(), t->ne.begin() + t->n_dims) != s.ne)
            fail(f.name() + ": tensor '" + s.name + "' has wrong shape; expected " + format_shape(s.ne) + ", got " +
                 format_shape(*t));
        if (!type_allowed(s.kind, t->type)) {
            const TypeTraits* tt = find_type(t->type);
            fail(f.name() + ": tensor '" + s.name + "' has type " + std::string(tt ? tt->name : "unknown") +
                 ", expected " + allowed_types(s.kind));
        }
        views.push_back(view_of(f, *t));
    }
    return views;
}

PerHeadModel PerHeadModel::random_init(const Config& config, std::uint64_t seed) {
    config.validate();
    const std::vector<TensorSpec> layout = per_head_layout(config);
    std::uint64_t total = 0;
    for (const TensorSpec& s : layout) total += elements(s.ne);
    auto storage = std::make_shared<std::vector<std::byte>>(total * sizeof(float));
    std::vector<TensorView> views;
    auto* p = reinterpret_cast<float*>(storage->data());
    for (const TensorSpec& s : layout) {
        const std::uint64_t n = elements(s.ne);
        fill_random(s, seed, 0, n, p);
        TensorView v;
        v.name = s.name;
        v.type = DType::F32;
        v.n_dims = static_cast<std::uint32_t>(s.ne.size());
        std::copy(s.ne.begin(), s.ne.end(), v.ne.begin());
        v.bytes = {reinterpret_cast<const std::byte*>(p), n * sizeof(float)};
        views.push_back(std::move(v));
        p += n;
    }
    PerHeadModel m;
    m.views_ = assemble(config, views);
    m.storage_ = std::move(storage);
    return m;
}

PerHeadModel PerHeadModel::open(const std::filesystem::path& path) {
    auto file = std::make_shared<const GgufFile>(GgufFile::open(path));
    const Config c = config_of(*file);
    if (file->find_tensor("blk.0.attn_q.weight") && !file->find_tensor("blk.0.attn_q.head_0.weight"))
        fail(file->name() + ": a fused file (it has blk.0.attn_q.weight), expected a per-head checkpoint");
    check_tensor_count(*file, c, true);
    PerHeadModel m;
    m.views_ = assemble(c, check_tensors(*file, per_head_layout(c), "per-head checkpoint"));
    m.metadata_ = file->metadata();
    m.file_ = std::move(file);
    return m;
}

PerHeadModel PerHeadModel::from_tensors(const Config& config, std::span<const ExternalTensor> tensors) {
    config.validate();
    const std::vector<TensorSpec> layout = per_head_layout(config);
    std::map<std::string_view, const ExternalTensor*> by_name;
    for (const ExternalTensor& t : tensors)
        if (!by_name.emplace(t.name, &t).second) fail("duplicate tensor '" + t.name + "'");
    std::vector<TensorView> views;
    for (const TensorSpec& s : layout) {
        auto it = by_name.find(s.name);
        if (it == by_name.end()) fail("missing tensor '" + s.name + "' (expected shape " + format_shape(s.ne) + ")");
        const ExternalTensor& t = *it->second;
        if (t.ne != s.ne)
            fail("tensor '" + s.name + "' has wrong shape; expected " + format_shape(s.ne) + ", got " +
                 format_shape(t.ne));
        if (!type_allowed(s.kind, static_cast<std::uint32_t>(t.type)))
            fail("tensor '" + s.name + "' has type " + std::string(type_name(t.type)) + ", expected " +
                 allowed_types(s.kind));
        const std::uint64_t nbytes = row_bytes(t.type, s.ne[0]) * (elements(s.ne) / s.ne[0]);
        if (t.bytes.size() != nbytes)
            fail("tensor '" + s.name + "' holds " + std::to_string(t.bytes.size()) + " bytes, expected " +
                 std::to_string(nbytes));
        TensorView v;
        v.name = s.name;
        v.type = t.type;
        v.n_dims = static_cast<std::uint32_t>(s.ne.size());
        std::copy(s.ne.begin(), s.ne.end(), v.ne.begin());
        v.bytes = t.bytes;
        views.push_back(std::move(v));
        by_name.erase(it);
    }
    if (!by_name.empty()) fail("unexpected tensor '" + std::string(by_name.begin()->first) + "' in a per-head model");
    PerHeadModel m;
    m.views_ = assemble(config, views);
    return m;
}

FusedModel FusedModel::open(const std::filesystem::path& path) {
    auto file = std::make_shared<const GgufFile>(GgufFile::open(path));
    const Config c = config_of(*file);
    if (c.has_lens()) fail(file->name() + ": unexpected tensor 'lens.proj.weight' in a fused file");
    if (file->find_tensor("blk.0.attn_q.head_0.weight"))
        fail(file->name() + ": a per-head checkpoint (it has blk.0.attn_q.head_0.weight), expected a fused file");
    check_tensor_count(*file, c, false);
    const std::vector<TensorView> views = check_tensors(*file, fused_layout(c), "fused llama file");
    FusedModel m;
    m.views_ = assemble(c, views);
    std::map<std::string, const TensorView*, std::less<>> by_name;
    for (const TensorView& v : views) by_name[v.name] = &v;
    for (std::uint32_t l = 0; l < c.n_layers; ++l)
        m.fused_.push_back({*by_name.at(layer_tensor_name(l, "attn_q")), *by_name.at(layer_tensor_name(l, "attn_k")),
                            *by_name.at(layer_tensor_name(l, "attn_v"))});
    m.metadata_ = file->metadata();
    m.file_ = std::move(file);
    return m;
}

PerHeadModel FusedModel::per_head() const {
    PerHeadModel m;
    m.views_ = views_;
    m.metadata_ = metadata_;
    m.file_ = file_;
    return m;
}

const TensorView& FusedModel::fused(std::uint32_t layer, char proj) const {
    const std::size_t i = proj == 'q' ? 0 : proj == 'k' ? 1 : 2;
    return fused_.at(layer)[i];
}

}  // namespace headfuse

namespace headfuse {

PerHeadModel open_model(const std::filesystem::path& path) {
    // Peek at the tensor names; both opens below map the same file, which costs nothing extra.
    const bool fused = GgufFile::open(path).find_tensor("blk.0.attn_q.weight") != nullptr;
    return fused ? FusedModel::open(path).per_head() : PerHeadModel::open(path);
}

}  // namespace headfuse
