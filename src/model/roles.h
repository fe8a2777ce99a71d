// The table of tensor roles: for each role its names (per-head and fused), its shape from the config, where it
// lives (global, per layer, per query head, per kv head), whether it is required, and which ModelViews field
// holds it. Layouts, assembly, the tensor-count check, fuse, split, verify and the forward's shape checks all
// read it (roles.cpp), so a new role is one row there plus its use in the forward pass.
//
// Shapes are in ggml order (ne[0] contiguous). A head role's shape is one head's; its fused tensor stacks the
// heads along the outermost dimension (head h at byte offset h * head_nbytes), so every head is a zero-copy
// slice of it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "headfuse/config.h"
#include "headfuse/model.h"
#include "headfuse/role.h"

namespace headfuse {

// What a tensor holds, which decides the types it may have and how random_init fills it.
enum class TensorKind {
    Norm,    // 1-D, always F32, initialised to 1.0 (norm weights, rope_freqs)
    Bias,    // 1-D, always F32, initialised from N(0, 0.02)
    Weight,  // 2-D, any model type, initialised from N(0, 0.02)
    Donor,   // the donor embedding of a lens model: 2-D F32
    Lens,    // lens.proj: 2-D F32
};

enum class Scope {
    Global,  // one tensor per model: token_embd.weight
    Layer,   // one per layer: blk.N.attn_norm.weight
    HeadQ,   // one per query head: blk.N.attn_q.head_H.weight; fused blk.N.attn_q.weight
    HeadKV,  // one per kv head
};

enum class Presence {
    Required,   // always
    Embedding,  // unless a per-head lens model, whose token_embd is the donor table (Role::LensDonor)
    LensOnly,   // per-head lens models only (the donor table, lens.proj)
    Untied,     // untied models only (output.weight)
    Optional,   // when the config lists the role in optional_roles
};

using Shape = std::vector<std::uint64_t>;

// Where ModelViews keeps a role's view(s).
using ViewSlot =
    std::variant<TensorView ModelViews::*, std::optional<TensorView> ModelViews::*, TensorView LayerViews::*,
                 std::optional<TensorView> LayerViews::*, std::vector<TensorView> LayerViews::*>;

struct RoleSpec {
    Role role;
    std::string_view name;    // attn_q (blk.N.attn_q.weight, blk.N.attn_q.head_H.weight), output_norm, ...
    std::string_view suffix;  // "weight" or "bias"
    Scope scope;
    TensorKind kind;
    Presence presence;
    Shape (*shape)(const Config&, std::uint32_t layer);  // one head's shape for head scopes
    ViewSlot slot;
};

// Every role, in file order.
std::span<const RoleSpec> role_table();
const RoleSpec& role_spec(Role role);

// Whether the role has tensors in a model of config c written in layout `kind`.
bool role_present(const RoleSpec& r, const Config& c, ModelKind kind);
bool is_head_role(const RoleSpec& r);
// Heads of a head role in layer `layer` (1 for other scopes): the config's per-layer count (Config::n_heads_at).
std::uint32_t head_count(const RoleSpec& r, const Config& c, std::uint32_t layer);
// Whether a present role has a tensor in layer `layer`: a layer without attention (0 heads, the deci
// architecture) has no attn_norm or attn_output either.
bool role_in_layer(const RoleSpec& r, const Config& c, std::uint32_t layer);

// Names: "output_norm.weight", "blk.3.attn_norm.weight", "blk.3.attn_q.head_5.weight", "blk.3.attn_q.weight".
std::string tensor_name(const RoleSpec& r, std::uint32_t layer = 0, std::optional<std::uint32_t> head = {});

// The name of role r's first tensor in layout `kind` (layer 0, head 0).
std::string first_tensor_name(const RoleSpec& r, ModelKind kind);

// One tensor of a layout.
struct TensorSpec {
    std::string name;
    std::vector<std::uint64_t> ne;
    TensorKind kind;
    const RoleSpec* role = nullptr;
    std::uint32_t layer = 0;
    std::uint32_t head = 0;  // head roles in the per-head layout
    // A fused tensor that stacks several roles' rows (Phi-3's attn_qkv: Q, K, V; its ffn_up: gate, up), in row
    // order; empty for a tensor of one role. `role` is then the first part.
    std::span<const Role> parts{};
};

// Calls f for every tensor of a model of config c in layout `kind`, in file order, without building the list.
void for_each_spec(const Config& c, ModelKind kind, const std::function<void(TensorSpec&&)>& f);
// The same, as a list.
std::vector<TensorSpec> tensor_layout(const Config& c, ModelKind kind);
// How many tensors that layout has, computed without enumerating them (a hostile header may imply millions).
std::uint64_t tensor_count(const Config& c, ModelKind kind);

// The view of a non-head role (nullptr when an optional slot is empty), and the heads of a head role.
const TensorView* role_view(const ModelViews& m, const RoleSpec& r, std::uint32_t layer);
const std::vector<TensorView>& role_heads(const ModelViews& m, const RoleSpec& r, std::uint32_t layer);
// The per-head views a tensor of the fused layout is made of, in row order: its heads (a head role), the
// parts' views and heads (a stacked tensor, TensorSpec::parts), or the one view (nullptr: an empty optional).
std::vector<const TensorView*> fused_parts(const ModelViews& m, const TensorSpec& s);

// Builds the per-head interface from views in the order of tensor_layout(c, kind); a fused head tensor is
// sliced into zero-copy head views.
ModelViews assemble_views(const Config& c, ModelKind kind, const std::vector<TensorView>& views);

// The first tensor of f whose name says the file is of layout `kind` (a per-head or a fused head tensor).
const TensorInfo* kind_evidence(const GgufFile& f, ModelKind kind);

}  // namespace headfuse
