#include "headfuse/model.h"

#include <cstring>
#include <map>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>

#include <unistd.h>

#include "base/checked.h"
#include "base/fail.h"
#include "base/text.h"
#include "gguf/writer.h"
#include "headfuse/error.h"
#include "model/config_read.h"
#include "model/init.h"
#include "model/model_keys.h"
#include "model/random.h"
#include "model/roles.h"
#include "model/tensor_order.h"
#include "model/view_rows.h"

namespace headfuse {

TensorView TensorView::of(std::string name, DType type, std::span<const std::uint64_t> ne,
                          std::span<const std::byte> bytes) {
    const TypeTraits* t = find_type(static_cast<std::uint32_t>(type));
    if (!t)
        fail(ErrorKind::InvalidArgument, "tensor '" + name + "': type id " +
                                             std::to_string(static_cast<std::uint32_t>(type)) +
                                             " is not one ggml defines");
    if (ne.empty() || ne.size() > kMaxDims)
        fail(ErrorKind::InvalidArgument,
             "tensor '" + name + "': " + std::to_string(ne.size()) + " dimensions; expected 1 to 4");
    if (ne[0] % t->block_size != 0)
        fail(ErrorKind::InvalidArgument, "tensor '" + name + "': ne[0] " + std::to_string(ne[0]) +
                                             " is not a multiple of " + std::string(t->name) + "'s block size " +
                                             std::to_string(t->block_size));
    std::uint64_t want = row_bytes(type, ne[0]);
    for (std::size_t i = 1; i < ne.size(); ++i) want = checked_mul(want, ne[i], "tensor '" + name + "'");
    if (bytes.size() != want)
        fail(ErrorKind::InvalidArgument, "tensor '" + name + "': " + std::to_string(bytes.size()) +
                                             " bytes given; its type and shape " + format_shape(ne) + " take " +
                                             std::to_string(want));
    TensorView v;
    v.name_ = std::move(name);
    v.type_ = type;
    v.n_dims_ = static_cast<std::uint32_t>(ne.size());
    std::copy(ne.begin(), ne.end(), v.ne_.begin());
    v.bytes_ = bytes;
    return v;
}

TensorView TensorView::rows(std::uint64_t r0, std::uint64_t n, std::string view_name) const {
    TensorView v = *this;
    const std::uint64_t rb = row_nbytes();
    if (r0 > n_rows() || n > n_rows() - r0)
        fail(ErrorKind::InvalidArgument, "tensor '" + name_ + "': rows " + std::to_string(r0) + " to " +
                                             std::to_string(r0 + n) + " of " + std::to_string(n_rows()));
    if (!plain()) {  // a slice of whole groups keeps its storage order
        const std::uint64_t g = group_rows_ ? group_rows_ : n_rows();
        if (r0 % g != 0 || n % g != 0)
            fail(ErrorKind::InvalidArgument, "tensor '" + name_ + "': rows cut across a group of " + std::to_string(g));
        v.group_rows_ = g;
    }
    v.name_ = std::move(view_name);
    v.n_dims_ = 2;
    v.ne_ = {ne_[0], n, 1, 1};
    v.bytes_ = bytes_.subspan(r0 * rb, n * rb);
    v.file_offset_ = file_offset_ + r0 * rb;
    return v;
}

TensorView TensorView::renamed(std::string view_name) const {
    TensorView v = *this;
    v.name_ = std::move(view_name);
    return v;
}

namespace {

TensorView view_of(const GgufFile& f, const TensorInfo& t) {
    // a split set: the shard that holds t
    return ViewAccess::in_file(t.name, static_cast<DType>(t.type), {t.ne.data(), t.n_dims}, f.tensor_data(t),
                               f.mapping(t), f.file_offset(t));
}

bool type_allowed(TensorKind kind, std::uint32_t type) {
    if (kind == TensorKind::Weight) {
        const TypeTraits* t = find_type(type);
        return t && t->carries;
    }
    return type == static_cast<std::uint32_t>(DType::F32);
}

std::string allowed_types(TensorKind kind) { return kind == TensorKind::Weight ? weight_type_names() : "f32"; }

std::string what_kind(ModelKind kind) {
    return kind == ModelKind::PerHead ? "per-head checkpoint" : "fused llama file";
}

// Config of a model file: llama.* metadata, with vocab, tied and the lens read off the tensors.
Config config_of(const GgufFile& f, ModelKind kind) {
    Config c = Config::from_metadata(f.metadata(), f.name());
    const std::string embd_name = tensor_name(role_spec(Role::TokenEmbd));
    const TensorInfo* embd = f.find_tensor(embd_name);
    if (!embd) fail(f.name() + ": missing tensor '" + embd_name + "'");
    if (embd->n_dims != 2)
        fail(f.name() + ": tensor '" + embd_name + "' has shape " + format_shape({embd->ne.data(), embd->n_dims}) +
             ", expected 2 dimensions");
    if (embd->ne[1] > UINT32_MAX) fail(f.name() + ": tensor '" + embd_name + "' has too many rows");
    const auto vocab = static_cast<std::uint32_t>(embd->ne[1]);
    if (f.metadata().find(c.key("vocab_size")) && c.vocab != vocab)
        fail(f.name() + ": key '" + c.key("vocab_size") + "' is " + std::to_string(c.vocab) + ", but " + embd_name +
             " has " + std::to_string(vocab) + " rows");
    // llama.cpp sizes the embedding and the output by the tokenizer's token count (vocab.n_tokens(), whether or
    // not ARCH.vocab_size is present; src/llama-model.h, LLAMA_LOAD_LOCALS), so a file whose tokenizer has
    // another count does not load there.
    if (const Value* tokens = f.metadata().find("tokenizer.ggml.tokens");
        tokens && tokens->type == ValueType::ARRAY && tokens->items.size() != vocab)
        fail(f.name() + ": key 'tokenizer.ggml.tokens' has " + std::to_string(tokens->items.size()) + " tokens, but " +
             embd_name + " has " + std::to_string(vocab) +
             " rows (llama.cpp takes the vocabulary size from the tokenizer)");
    c.vocab = vocab;
    c.tied = f.find_tensor(tensor_name(role_spec(Role::Output))) == nullptr;
    const std::string lens_name = tensor_name(role_spec(Role::LensProj));
    if (const TensorInfo* lens = f.find_tensor(lens_name)) {
        if (lens->ne[0] > UINT32_MAX) fail(f.name() + ": tensor '" + lens_name + "' is too wide");
        c.donor_d_in = static_cast<std::uint32_t>(lens->ne[0]);
    }
    // An optional role is present when its first tensor (layer 0, head 0) is; the layout check then wants it in
    // every layer.
    for (const RoleSpec& r : role_table())
        if (r.presence == Presence::Optional && f.find_tensor(first_tensor_name(r, kind)))
            c.optional_roles.insert(r.role);
    validate_read(c, f.name());
    return c;
}

// The metadata may describe a model of millions of tensors (4096 layers of 4096 heads) in a file of a few
// bytes: compare the count it implies with the file's before building the layout, which would hold them all.
// A near miss (a tensor or a few missing) goes on to the layout check, which names the missing tensor.
void check_tensor_count(const GgufFile& f, const Config& c, ModelKind kind) {
    const std::uint64_t expected = tensor_count(c, kind);
    const std::uint64_t found = f.tensors().size();
    if (expected > 2 * found + 16)
        fail(f.name() + ": metadata describes a " + what_kind(kind) + " of " + std::to_string(expected) +
             " tensors (block_count " + std::to_string(c.n_layers) + ", head_count " + std::to_string(c.n_heads) +
             ", head_count_kv " + std::to_string(c.n_kv_heads) + "), the file has " + std::to_string(found));
}

std::uint64_t elements(const std::vector<std::uint64_t>& ne) {
    std::uint64_t n = 1;
    for (auto d : ne) n *= d;
    return n;
}

// Checks a file's tensors against a layout: every tensor present, with its shape and a type its kind allows,
// and no other tensor. Returns the views in layout order.
std::vector<TensorView> check_tensors(const GgufFile& f, const std::vector<TensorSpec>& layout, ModelKind kind) {
    const std::string what = what_kind(kind);
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
                 format_shape({t->ne.data(), t->n_dims}));
        if (!type_allowed(s.kind, t->type)) {
            const TypeTraits* tt = find_type(t->type);
            fail(f.name() + ": tensor '" + s.name + "' has type " + std::string(tt ? tt->name : "unknown") +
                 ", expected " + allowed_types(s.kind));
        }
        views.push_back(view_of(f, *t));
    }
    return views;
}

}  // namespace

void for_each_view(const ModelViews& m, const std::function<void(const TensorView&)>& f) {
    for_each_spec(m.config, ModelKind::PerHead, [&](TensorSpec&& s) {
        if (is_head_role(*s.role)) {
            f(role_heads(m, *s.role, s.layer).at(s.head));
        } else if (const TensorView* v = role_view(m, *s.role, s.layer)) {
            f(*v);
        }
    });
}

PerHeadModel PerHeadModel::random_init(const Config& config, std::uint64_t seed) {
    config.validate();
    const std::vector<TensorSpec> layout = tensor_layout(config, ModelKind::PerHead);
    std::uint64_t total = 0;
    for (const TensorSpec& s : layout) total += elements(s.ne);
    const std::uint64_t nbytes = checked_mul(total, sizeof(float), "random_init");
    // More than the machine's memory would only end in the allocator (or the OOM killer): refuse it first.
    const auto pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0 && nbytes / static_cast<std::uint64_t>(page) > static_cast<std::uint64_t>(pages))
        fail(ErrorKind::InvalidArgument,
             "random_init: the model needs " + std::to_string(nbytes) + " bytes of memory, the machine has " +
                 std::to_string(static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page)) +
                 "; write_random_init streams it to a file instead");
    std::shared_ptr<std::vector<std::byte>> storage;
    try {
        storage = std::make_shared<std::vector<std::byte>>(nbytes);
    } catch (const std::bad_alloc&) {
        fail(ErrorKind::InvalidArgument,
             "random_init: the model needs " + std::to_string(nbytes) +
                 " bytes of memory, which could not be allocated; write_random_init streams it to a file instead");
    } catch (const std::length_error&) {
        fail(ErrorKind::InvalidArgument,
             "random_init: the model needs " + std::to_string(nbytes) + " bytes of memory, more than a vector holds");
    }
    std::vector<TensorView> views;
    auto* p = reinterpret_cast<float*>(storage->data());
    for (const TensorSpec& s : layout) {
        const std::uint64_t n = elements(s.ne);
        fill_random(s, seed, 0, n, p);
        views.push_back(TensorView::of(s.name, DType::F32, s.ne, {reinterpret_cast<const std::byte*>(p), n * 4}));
        p += n;
    }
    PerHeadModel m;
    m.views_ = assemble_views(config, ModelKind::PerHead, views);
    m.views_.owner = storage;
    m.storage_ = std::move(storage);
    return m;
}

const Metadata PerHeadModel::kNoMetadata;

PerHeadModel PerHeadModel::open(const std::filesystem::path& path) {
    auto file = std::make_shared<const GgufFile>(GgufFile::open(path));
    if (const TensorInfo* t = kind_evidence(*file, ModelKind::Fused); t && !kind_evidence(*file, ModelKind::PerHead))
        fail(file->name() + ": a fused file (it has " + t->name + "), expected a per-head checkpoint");
    const Config c = config_of(*file, ModelKind::PerHead);
    check_tensor_count(*file, c, ModelKind::PerHead);
    PerHeadModel m;
    m.views_ = assemble_views(c, ModelKind::PerHead,
                              check_tensors(*file, tensor_layout(c, ModelKind::PerHead), ModelKind::PerHead));
    m.metadata_ = std::shared_ptr<const Metadata>(file, &file->metadata());
    m.views_.owner = file;
    m.file_ = std::move(file);
    return m;
}

PerHeadModel PerHeadModel::from_tensors(const Config& config, std::span<const ExternalTensor> tensors) {
    config.validate();
    const std::vector<TensorSpec> layout = tensor_layout(config, ModelKind::PerHead);
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
        views.push_back(TensorView::of(s.name, t.type, s.ne, t.bytes));
        by_name.erase(it);
    }
    if (!by_name.empty()) fail("unexpected tensor '" + std::string(by_name.begin()->first) + "' in a per-head model");
    PerHeadModel m;
    m.views_ = assemble_views(config, ModelKind::PerHead, views);
    return m;
}

PerHeadModel PerHeadModel::from_views(ModelViews views, Metadata metadata, std::shared_ptr<const void> owner) {
    PerHeadModel m;
    m.views_ = std::move(views);
    m.metadata_ = std::make_shared<const Metadata>(std::move(metadata));
    m.owner_ = std::move(owner);
    // The views' copies keep the bytes alive as the model does.
    if (m.owner_) m.views_.owner = m.owner_;
    return m;
}

FusedModel FusedModel::open(const std::filesystem::path& path) {
    auto file = std::make_shared<const GgufFile>(GgufFile::open(path));
    const Config c = config_of(*file, ModelKind::Fused);
    if (c.has_lens())
        fail(file->name() + ": unexpected tensor '" + tensor_name(role_spec(Role::LensProj)) + "' in a fused file");
    if (const TensorInfo* t = kind_evidence(*file, ModelKind::PerHead))
        fail(file->name() + ": a per-head checkpoint (it has " + t->name + "), expected a fused file");
    check_tensor_count(*file, c, ModelKind::Fused);
    const std::vector<TensorSpec> layout = tensor_layout(c, ModelKind::Fused);
    const std::vector<TensorView> views = check_tensors(*file, layout, ModelKind::Fused);
    FusedModel m;
    m.views_ = assemble_views(c, ModelKind::Fused, views);
    for (std::size_t i = 0; i < layout.size(); ++i) {
        const TensorSpec& s = layout[i];
        if (s.parts.empty()) {
            if (is_head_role(*s.role)) m.fused_.emplace(std::pair{s.layer, s.role->role}, views[i]);
            continue;
        }
        std::uint64_t row = 0;  // a stacked tensor (attn_qkv): each head role's rows, a slice of it
        for (Role p : s.parts) {
            const RoleSpec& ps = role_spec(p);
            const std::uint64_t n = ps.shape(c, s.layer).back() * head_count(ps, c, s.layer);
            if (is_head_role(ps))
                m.fused_.emplace(std::pair{s.layer, p}, views[i].rows(row, n, tensor_name(ps, s.layer)));
            row += n;
        }
    }
    m.views_.owner = file;
    m.file_ = std::move(file);
    return m;
}

PerHeadModel FusedModel::per_head() const {
    PerHeadModel m;
    m.views_ = views_;
    m.metadata_ = std::shared_ptr<const Metadata>(file_, &file_->metadata());
    m.file_ = file_;
    return m;
}

const TensorView& FusedModel::fused(std::uint32_t layer, Role role) const {
    const auto it = fused_.find({layer, role});
    if (it == fused_.end())
        fail(ErrorKind::InvalidArgument, "fused model: no fused tensor of role " + tensor_name(role_spec(role), layer) +
                                             " in layer " + std::to_string(layer));
    return it->second;
}

namespace {

std::function<void(ByteSink&)> copy_of(const TensorView& v) {
    return [v](ByteSink& sink) {
        if (!v.plain())  // a foreign checkpoint's order: whole rows, a window at a time
            for_each_window(v, std::uint64_t{4} << 20,
                            [&](std::span<const std::byte> rows, std::uint64_t, std::uint64_t) { sink.write(rows); });
        else if (v.file())
            sink.copy_from(*v.file(), v.file_offset(), v.bytes().size());
        else
            sink.write(v.bytes());
    };
}

void add_view(GgufWriter& w, const TensorView& v) {
    w.add_tensor(v.name(), static_cast<std::uint32_t>(v.type()), {v.ne().data(), v.n_dims()}, copy_of(v));
}

}  // namespace

std::vector<std::filesystem::path> PerHeadModel::save(const std::filesystem::path& path, const ProgressFn& progress,
                                                      const OutputOptions& output) const {
    const ModelViews& m = views_;
    GgufWriter w;
    w.alignment = output.alignment;
    w.shards = output.shards;
    w.metadata = per_head_metadata(m.config, metadata());
    // In the source file's order (split keeps a fused file's order, head tensors where their fused tensor was).
    std::vector<const TensorView*> views;
    std::vector<std::string> names;
    for_each_view(m, [&](const TensorView& v) {
        views.push_back(&v);
        names.push_back(v.name());
    });
    for (std::size_t i : source_order(file_.get(), names)) add_view(w, *views[i]);
    return w.write(path, file_ ? file_->paths() : std::vector<std::filesystem::path>{}, progress);
}

std::optional<ModelKind> model_kind(const GgufFile& f) {
    if (kind_evidence(f, ModelKind::PerHead)) return ModelKind::PerHead;
    if (kind_evidence(f, ModelKind::Fused)) return ModelKind::Fused;
    return std::nullopt;
}

PerHeadModel open_model(const std::filesystem::path& path) {
    // Peek at the tensor names; both opens below map the same file, which costs nothing extra.
    return model_kind(GgufFile::open(path)) == ModelKind::Fused ? FusedModel::open(path).per_head()
                                                                : PerHeadModel::open(path);
}

}  // namespace headfuse
