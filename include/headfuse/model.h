// headfuse: per-head and fused models, and the per-head views both hand out.
//
// Per-head layout (ggml order: ne[0] is contiguous):          fused llama.cpp layout:
//   token_embd.weight        [d_model | donor_d_in, vocab]      token_embd.weight   [d_model, vocab]
//   lens.proj.weight         [donor_d_in, d_model]  (lens)      (folded into token_embd)
//   output_norm.weight       [d_model]                          same
//   output.weight            [d_model, vocab]       (untied)    same
//   blk.N.attn_norm.weight   [d_model]                          same
//   blk.N.attn_q.head_H.weight [d_model, d_head], H < n_heads    blk.N.attn_q.weight [d_model, n_heads*d_head]
//   blk.N.attn_k.head_H.weight [d_model, d_head], H < n_kv       blk.N.attn_k.weight [d_model, n_kv*d_head]
//   blk.N.attn_v.head_H.weight [d_model, d_head], H < n_kv       blk.N.attn_v.weight [d_model, n_kv*d_head]
//   blk.N.attn_output.weight [n_heads*d_head, d_model]           same
//   blk.N.ffn_norm.weight    [d_model]                          same
//   blk.N.ffn_gate.weight, ffn_up.weight [d_model, d_ff]        same
//   blk.N.ffn_down.weight    [d_ff, d_model]                    same
//
// Fusing is the identity layout: head h's d_head rows land at row h*d_head (byte offset h*head_nbytes), so a
// fused tensor's per-head views are zero-copy slices, for F32 and block-encoded types alike.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "headfuse/config.h"
#include "headfuse/gguf.h"
#include "headfuse/role.h"
#include "headfuse/types.h"

namespace headfuse {

// A borrowed view of one tensor's bytes: in a mapping, or in memory owned elsewhere.
//
// Lifetime: a view owns nothing. It is valid while what it borrows is: the model (or ModelViews with an
// `owner`) it came from, or the caller's buffers. Copy views out of a model only together with that model or
// its ModelViews (whose `owner` keeps the bytes alive); never keep a bare TensorView past its source.
//
// Invariants, checked where a view is made (TensorView::of for a caller's bytes; the library's readers for
// files): the type is one ggml defines, 1 to 4 dimensions, ne[0] whole blocks of the type, and exactly the bytes
// that type and shape take. A view is immutable; rows() and renamed() make new ones.
//
// Row order. Plain views (files headfuse writes, GGUF files, caller's bytes) store row r at
// bytes()[r * row_nbytes()]. Views of foreign checkpoints keep the checkpoint's own order, in groups of
// group_rows() consecutive rows (a head; 0: all rows), each group's bytes contiguous:
//  - rotate_half(): the group's rows are in Hugging Face's rotate-half order: row 2i+j is stored as row
//    j*(group/2)+i (llama.cpp's converter applies the inverse, LlamaModel.permute);
//  - transposed(): the group is stored as the row-major transpose (ne[0] rows of `group` elements), as
//    TransformerLens stores W_Q [n_heads, d_model, d_head]; F32, F16 and BF16 only.
// Everything in the library reads a view's logical rows (llama.cpp's order) through one reader that knows these
// orders (src/model/view_rows.h), so a foreign checkpoint is used where it lies, without a converted copy.
class TensorView {
public:
    // An empty view: no tensor (a layer without attention has empty views for its attention tensors).
    TensorView() = default;
    // A plain view of bytes the caller owns (they must outlive every use of the view). Error (InvalidArgument,
    // naming the tensor) when the type is unknown, the shape has 0 or more than 4 dimensions, ne[0] is not whole
    // blocks of the type, or the bytes are not exactly what the type and shape take.
    static TensorView of(std::string name, DType type, std::span<const std::uint64_t> ne,
                         std::span<const std::byte> bytes);

    const std::string& name() const noexcept { return name_; }
    DType type() const noexcept { return type_; }
    std::uint32_t n_dims() const noexcept { return n_dims_; }
    // The shape in ggml order (ne[0] contiguous); dimensions past n_dims() are 1.
    const std::array<std::uint64_t, kMaxDims>& ne() const noexcept { return ne_; }
    // The stored bytes, in the storage order (see Row order).
    std::span<const std::byte> bytes() const noexcept { return bytes_; }
    // The mapped file the bytes lie in (an internal, opaque type) and the absolute offset of bytes()[0] there, so
    // that writers can copy them in the kernel; null for bytes in memory.
    const MappedFile* file() const noexcept { return file_; }
    std::uint64_t file_offset() const noexcept { return file_offset_; }

    bool rotate_half() const noexcept { return rotate_half_; }
    bool transposed() const noexcept { return transposed_; }
    std::uint64_t group_rows() const noexcept { return group_rows_; }
    // Stored in llama.cpp's row order: row(), f32() and whole-byte copies apply to plain views alone.
    bool plain() const noexcept { return !rotate_half_ && !transposed_; }

    std::uint64_t n_rows() const noexcept { return ne_[1] * ne_[2] * ne_[3]; }
    std::uint64_t row_nbytes() const noexcept { return n_rows() ? bytes_.size() / n_rows() : 0; }
    // Row r's bytes (a plain view).
    std::span<const std::byte> row(std::uint64_t r) const noexcept {
        return bytes_.subspan(r * row_nbytes(), row_nbytes());
    }
    // F32 data (a plain F32 view).
    const float* f32() const noexcept { return reinterpret_cast<const float*>(bytes_.data()); }
    // Rows [r0, r0+n) as a view of the same tensor kind (a head of a fused projection); a foreign view is cut in
    // whole groups. Error naming the tensor when the rows are out of range or cut a group.
    TensorView rows(std::uint64_t r0, std::uint64_t n, std::string view_name) const;
    // The same view under another name.
    TensorView renamed(std::string view_name) const;

private:
    friend struct ViewAccess;  // the library's readers: views of files, and foreign row orders (checked)

    std::string name_;
    DType type_ = DType::F32;
    std::uint32_t n_dims_ = 0;
    std::array<std::uint64_t, kMaxDims> ne_{1, 1, 1, 1};
    std::span<const std::byte> bytes_;
    const MappedFile* file_ = nullptr;
    std::uint64_t file_offset_ = 0;
    bool rotate_half_ = false;
    bool transposed_ = false;
    std::uint64_t group_rows_ = 0;
};

// A query head of a layer, as head edits and the forward pass's ablations name it ("3:1" is layer 3, head 1).
struct HeadRef {
    std::uint32_t layer = 0;
    std::uint32_t head = 0;
    auto operator<=>(const HeadRef&) const = default;
};

// One layer's views. A layer with no attention (Config::has_attention false, deci models) has empty head lists
// and empty views for its attention tensors.
struct LayerViews {
    TensorView attn_norm;       // [d_model]
    std::vector<TensorView> q;  // n_heads x [d_model, d_head]
    std::vector<TensorView> k;  // n_kv_heads x [d_model, d_head]
    std::vector<TensorView> v;  // n_kv_heads x [d_model, d_head]
    TensorView attn_output;     // [n_heads*d_head, d_model]
    TensorView ffn_norm;        // [d_model]
    TensorView ffn_gate;        // [d_model, d_ff]
    TensorView ffn_up;          // [d_model, d_ff]
    TensorView ffn_down;        // [d_ff, d_model]
    // Optional biases (Config::optional_roles), added after their matmul as llama.cpp's graph does; a head
    // list is empty, an optional empty, when the model has no such bias.
    std::vector<TensorView> q_bias;              // n_heads x [d_head]
    std::vector<TensorView> k_bias;              // n_kv_heads x [d_head]
    std::vector<TensorView> v_bias;              // n_kv_heads x [d_head]
    std::optional<TensorView> attn_output_bias;  // [d_model]
    std::optional<TensorView> ffn_gate_bias;     // [d_ff]
    std::optional<TensorView> ffn_up_bias;       // [d_ff]
    std::optional<TensorView> ffn_down_bias;     // [d_model]
    // Optional per-layer RMS norms of each query and key head (qwen3), applied after the biases, before RoPE.
    std::optional<TensorView> attn_q_norm;  // [d_head]
    std::optional<TensorView> attn_k_norm;  // [d_head]
    // Optional RMS norms of attention's and the FFN's outputs before each joins the residual stream (Gemma 2/3).
    std::optional<TensorView> post_attention_norm;  // [d_model]
    std::optional<TensorView> post_ffw_norm;        // [d_model]
};

// The per-head interface: what the forward pass, fuse and verify see, whatever holds the bytes.
//
// Views borrow. A ModelViews from any model the library builds (PerHeadModel::open, random_init, from_views,
// FusedModel::open and per_head, open_checkpoint, the head edits) shares ownership of the mapping or memory it
// points into (`owner`), so a copy kept after its model is gone stays valid. Views of caller-owned tensors
// (PerHeadModel::from_tensors) have no owner: the caller keeps those bytes alive. A bare TensorView copied out
// of a ModelViews is valid only while that ModelViews (or another holder of its owner) lives.
struct ModelViews {
    Config config;
    TensorView token_embd;                 // [d_model, vocab], or [donor_d_in, vocab] with a lens
    std::optional<TensorView> lens_proj;   // [donor_d_in, d_model]
    TensorView output_norm;                // [d_model]
    std::optional<TensorView> output;      // [d_model, vocab]; absent when tied
    std::optional<TensorView> rope_freqs;  // [d_head/2] f32: RoPE's angle of pair i is divided by element i
    // LongRoPE (phi3): the divisors llama.cpp uses when the context it runs with exceeds the original context (long),
    // and otherwise (short). Both or neither.
    std::optional<TensorView> rope_long;
    std::optional<TensorView> rope_short;
    std::vector<LayerViews> layers;
    std::shared_ptr<const void> owner;  // keeps the bytes alive; null for caller-owned tensors
};

// Calls f(view) for every tensor of the model, in per-head checkpoint file order.
void for_each_view(const ModelViews& m, const std::function<void(const TensorView&)>& f);

// The two layouts a model file can have.
enum class ModelKind {
    PerHead,  // a per-head checkpoint: blk.N.attn_q.head_H.weight, ...
    Fused,    // llama.cpp's layout: blk.N.attn_q.weight, ...
};

// What a file's tensor names say it holds: a per-head tensor makes it a per-head checkpoint, else a fused head
// tensor a fused file; neither (not a model, or a model missing its attention): nullopt.
std::optional<ModelKind> model_kind(const GgufFile& file);

// A tensor handed in by a caller that owns its memory (a training engine): name, type, shape, bytes.
struct ExternalTensor {
    std::string name;
    DType type = DType::F32;
    std::vector<std::uint64_t> ne;
    std::span<const std::byte> bytes;
};

// A per-head checkpoint: in memory (random_init, or tensors an engine hands in) or a mapped per-head GGUF.
// It owns what its views borrow (except from_tensors' caller-owned bytes); a copy shares those bytes rather than
// copying them, and views() stays valid while any copy lives.
class PerHeadModel {
public:
    // Weights from N(0, 0.02) and norm weights 1.0, reproducible to the byte for a given seed.
    static PerHeadModel random_init(const Config& config, std::uint64_t seed);
    // Maps a per-head GGUF file and checks every tensor against its metadata.
    static PerHeadModel open(const std::filesystem::path& path);
    // Wraps tensors owned by the caller (they must outlive the model), checking names and shapes.
    static PerHeadModel from_tensors(const Config& config, std::span<const ExternalTensor> tensors);
    // Wraps views whose bytes `owner` keeps alive (a mapped foreign checkpoint: open_checkpoint builds them).
    static PerHeadModel from_views(ModelViews views, Metadata metadata, std::shared_ptr<const void> owner);

    const Config& config() const noexcept { return views_.config; }
    // The per-head views of every tensor (see ModelViews for how long they live).
    const ModelViews& views() const noexcept { return views_; }
    // The source file, when opened from one.
    const GgufFile* file() const noexcept { return file_.get(); }
    // The source file's metadata, every key in its order (general.*, llama.*, tokenizer.*, any other), or the
    // keys set_metadata gave. Written files keep them in that order; headfuse sets in place only the llama.*
    // hyperparameters of config() and what writing changes (general.file_type, general.alignment, split.*).
    const Metadata& metadata() const noexcept { return metadata_ ? *metadata_ : kNoMetadata; }
    // Replaces the carried metadata (keys a written file keeps, as metadata() says).
    void set_metadata(Metadata md) { metadata_ = std::make_shared<const Metadata>(std::move(md)); }

    // Writes this model as a per-head GGUF file (streamed, atomic), with the layout's alignment, or as a split
    // set when its split limits are active. Tensors follow the source file's order. Returns the files written.
    std::vector<std::filesystem::path> save(const std::filesystem::path& path, const ProgressFn& progress = {},
                                            const OutputOptions& output = {}) const;

private:
    friend class FusedModel;

    static const Metadata kNoMetadata;

    ModelViews views_;
    // Shared, not copied: a model opened from a file points into the file's (a vocabulary of 256k tokens is
    // half a million strings), and its per-head form or a copy shares it; set_metadata gives it its own.
    std::shared_ptr<const Metadata> metadata_;
    std::shared_ptr<const GgufFile> file_;
    std::shared_ptr<const std::vector<std::byte>> storage_;
    std::shared_ptr<const void> owner_;
};

// Opens either kind of model file as a per-head model: a per-head checkpoint as it is, a fused file through
// FusedModel::per_head().
PerHeadModel open_model(const std::filesystem::path& path);

// How write_random_init writes its output.
struct InitOptions {
    unsigned threads = 0;  // generating threads; 0 means all cores
    ProgressFn progress = {};
    OutputOptions output = {};  // alignment, and a split set named after the output when asked
};

// Writes random_init(config, seed) as a per-head GGUF file without holding it in memory: the same bytes as
// random_init(config, seed).save(path), whatever the number of threads.
std::vector<std::filesystem::path> write_random_init(const Config& config, std::uint64_t seed,
                                                     const std::filesystem::path& path,
                                                     const InitOptions& options = {});

// A fused llama.cpp GGUF, mapped and checked against its metadata, handing out per-head views (slices of the
// mapping, valid while this model or a copy of it, or a ModelViews copied from views(), lives).
class FusedModel {
public:
    // Maps a fused file (or a split set, given any shard) and checks every tensor against its metadata. Error
    // naming the file, tensor or key otherwise.
    static FusedModel open(const std::filesystem::path& path);

    const Config& config() const noexcept { return views_.config; }
    // The per-head views: head H of blk.N.attn_q.weight is views().layers[N].q[H], a slice of the file.
    const ModelViews& views() const noexcept { return views_; }
    // The parsed file the views point into.
    const GgufFile& file() const noexcept { return *file_; }
    // The file's metadata, every key in its order (a split set: its first shard's, without split.*).
    const Metadata& metadata() const noexcept { return file_->metadata(); }
    // The fused tensor of a head role (Role::AttnQ, AttnK, AttnV) in `layer` (blk.N.attn_q.weight ...).
    const TensorView& fused(std::uint32_t layer, Role role) const;
    // The same model as a per-head checkpoint whose head tensors are slices of this file (no copy).
    PerHeadModel per_head() const;

private:
    ModelViews views_;
    std::map<std::pair<std::uint32_t, Role>, TensorView> fused_;  // (layer, head role) -> fused tensor
    std::shared_ptr<const GgufFile> file_;
};

}  // namespace headfuse
