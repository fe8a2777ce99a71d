// headfuse: head surgery. Each edit takes a per-head model (any source open_checkpoint reads) and returns the
// edited model as per-head views: every tensor the edit leaves alone, or only renumbers (prune's query, key and
// value heads; transplant's moved heads), borrows the source's or the donor's bytes. The tensors it changes
// (ablate: the attn_output of the layers it edits; prune: the smaller attn_output of every layer that loses
// heads; pool-kv: the pooled key/value heads; transplant: the attn_output of the layers that receive heads) are
// computed a window of rows at a time into an unnamed temporary file in std::filesystem::temp_directory_path()
// ($TMPDIR, else /tmp), which the edited model maps and owns: an edit's memory does not grow with the model, and
// its disk use is the size of the changed tensors. fuse() then writes the result as any model, streamed and
// atomically.
//
// Query head h of a layer owns the rows [h*d_head, (h+1)*d_head) of attn_q and the columns of the same range of
// attn_output (ggml order: attn_output is [n_heads*d_head, d_model], so they are elements of every row). Its
// key/value head is h / (n_heads / n_kv_heads), as llama.cpp's graph groups them.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "headfuse/forward.h"
#include "headfuse/model.h"

namespace headfuse {

// The metadata key where every edit appends one human-readable line ("ablate: heads 0:1, 2:3 ...").
inline constexpr std::string_view kEditsKey = "headfuse.edits";

// A head of the donor moved into the edited model: query head `to` receives the donor's query head `from`.
struct HeadMove {
    HeadRef to;
    HeadRef from;
};

struct EditOptions {
    std::string source;  // the input's name, prefixing errors ("model.gguf")
    std::string donor;   // transplant: the donor's name, for errors and headfuse.edits
    WarnFn warn;         // what an edit wants said (blocks re-encoded, ...)
};

// The heads' contribution removed: their columns of attn_output zeroed, shapes unchanged. In an F32, F16 or BF16
// attn_output only those elements change; in an encoded one only the blocks that hold them, each replaced by the
// encoding of zeros when the head width is a whole number of blocks, else decoded, zeroed in part and re-encoded
// (then `warn` says how many blocks of which tensor).
PerHeadModel ablate_heads(const PerHeadModel& src, std::span<const HeadRef> heads, const EditOptions& options = {});

// The heads removed: their attn_q rows (and biases) and attn_output columns, and a key/value head when its last
// query head goes. The kv groups of a layer that keep heads must keep equally many (llama.cpp's graph maps query
// head i to kv head i / (heads per group)), and every layer must keep the same numbers of heads: Error naming
// the layer otherwise.
PerHeadModel prune_heads(const PerHeadModel& src, std::span<const HeadRef> heads, const EditOptions& options = {});

// Multi-head to grouped-query attention: n_kv key/value heads, each the mean of the n_kv_heads / n_kv heads of
// its group (decoded to f32, summed in f64, divided, rounded once to f32), stored as F32. Query heads unchanged.
PerHeadModel pool_kv_heads(const PerHeadModel& src, std::uint32_t n_kv, const EditOptions& options = {});

// Heads copied from `donor` (same d_model and d_head, same tensor types): each move's query rows (and bias) and
// attn_output columns; the key/value head of a group whose every query head arrives from one donor group, in
// order, comes along too. Attention hyperparameters that differ between the two (rope_theta, RoPE scaling, the
// norm epsilon) are named through `warn`: the moved heads were trained under the donor's. headfuse.edits records
// the moves and the donor (options.donor, else its file's name).
PerHeadModel transplant_heads(const PerHeadModel& src, const PerHeadModel& donor, std::span<const HeadMove> moves,
                              const EditOptions& options = {});

// ---- what a scan reports -------------------------------------------------------------------------------------

// A digest of every tensor of `model`, naming the model a scan was made on: "sha256:" and the SHA-256 (hex) of the
// bytes of every tensor's rows, in the per-head checkpoint's tensor order and llama.cpp's row order, each tensor
// in its stored type. A per-head file and the fused file `fuse` makes of it (same types) have the same digest.
std::string tensors_digest(const ModelViews& model);

// What the figure of a scan says about it.
struct ScanFigure {
    std::string model;              // named in the title (a file name)
    std::string method = "exact";   // how the changes were computed
    std::string ablation = "zero";  // what replaced a head's output
    std::uint64_t tokens = 0;       // tokens the loss was taken over
    std::uint32_t n_kv_heads = 0;   // key/value heads per layer: groups are marked when fewer than the heads
};

// The scan as an SVG figure: a heat map of layers (rows) x query heads (columns), red where ablating the head
// raises the loss and blue where it lowers it, on a scale symmetric about zero; a colour bar with ticks in nats,
// axis titles, key/value groups bracketed and separated, a title naming the model, method and ablation. Every
// cell shows its value on hover, and printed in the cell where it fits at 8 px or more (up to about 24 heads);
// cells are square, 6 to 56 px, so the figure stays about 1000 px wide and at most about 1400 px high.
std::string scan_svg(const HeadScan& scan, const ScanFigure& figure);

}  // namespace headfuse
