// Head surgery as edits of per-head views: what an edit leaves alone (or only renumbers, as prune's query, key
// and value heads) stays a borrowed view of the source; what it changes is planned in a Spill as a function of
// a window of rows, computed into a temporary file when the edit is done, and borrowed from there.
#include "headfuse/heads.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "base/fail.h"
#include "base/float_text.h"
#include "edit/spill.h"
#include "headfuse/error.h"
#include "headfuse/quantize.h"
#include "model/roles.h"
#include "model/view_rows.h"

namespace headfuse {
namespace {

std::string head_name(const HeadRef& h) { return std::to_string(h.layer) + ":" + std::to_string(h.head); }

std::string prefix(const EditOptions& o) { return o.source.empty() ? "" : o.source + ": "; }

// The edits index heads with one count for every layer: a model with per-layer counts (deci) is refused.
void require_uniform(const Config& c, const std::string& where, std::string_view verb, std::string_view which) {
    if (c.per_layer())
        fail(ErrorKind::Unsupported,
             where + std::string(verb) + ": " + std::string(which) +
                 " has per-layer head counts (llama.cpp's deci architecture); headfuse edits the heads of models "
                 "with one count for every layer");
}

// The same view under another name (a head renumbered).
TensorView renamed(const TensorView& v, std::string name) { return v.renamed(std::move(name)); }

void check_head(const Config& c, const HeadRef& h, const std::string& where, std::string_view what = "the model") {
    if (h.layer >= c.n_layers || h.head >= c.n_heads)
        fail(ErrorKind::InvalidArgument, where + "head " + head_name(h) + " is out of range: " + std::string(what) +
                                             " has " + std::to_string(c.n_layers) + " layers (0-" +
                                             std::to_string(c.n_layers - 1) + ") of " + std::to_string(c.n_heads) +
                                             " query heads (0-" + std::to_string(c.n_heads - 1) + ")");
}

// The edited model: the views with the spill's tensors computed into them, the source's metadata with one more
// line in headfuse.edits, owning the spill and the models it borrows from (the source, and `borrowed`).
PerHeadModel finish(const PerHeadModel& src, ModelViews&& views, Spill& spill, const std::string& edit,
                    std::vector<std::shared_ptr<const void>> borrowed = {}) {
    borrowed.push_back(spill.write());  // before `views` moves: the spill's slots are in it
    borrowed.push_back(src.views().owner);
    auto owners = std::make_shared<const std::vector<std::shared_ptr<const void>>>(std::move(borrowed));
    Metadata md = src.metadata();
    std::vector<Value> lines;
    if (const Value* old = md.find(kEditsKey);
        old && old->type == ValueType::ARRAY && old->elem_type == ValueType::STRING)
        lines = old->items;
    lines.push_back(Value::string(edit));
    md.set(std::string(kEditsKey), Value::array(ValueType::STRING, std::move(lines)));
    views.owner = owners;
    views.config.validate();
    return PerHeadModel::from_views(std::move(views), std::move(md), std::move(owners));
}

std::string list_heads(std::span<const HeadRef> heads) {
    std::string s;
    for (const HeadRef& h : heads) s += (s.empty() ? "" : ", ") + head_name(h);
    return s;
}

// ---- columns of attn_output -----------------------------------------------------------------------------------

// Where a column of an edited attn_output row comes from: kept, zero, or a donor row's column.
struct ColumnSource {
    enum Kind : std::uint8_t { Keep, Zero, Donor } kind = Keep;
    std::uint64_t donor_col = 0;
};

// Zeros within a block without re-encoding it, so that every other element keeps its decoded value bit for bit:
// the width of the parts a type can zero in place (1: any element; 16 or 32: whole sub-blocks), 0 when it cannot.
// The 32-wide symmetric types have a code that decodes to zero (Q8_0: 0, Q4_0: 8, Q5_0: 16); the K-quants scale
// each sub-block by its own 6-bit (Q3_K: offset by 32; Q4_K, Q5_K: with a min) or 4-bit (Q2_K, with a min) or
// 8-bit (Q6_K) factor, which set to zero makes the sub-block decode to zeros whatever its codes.
std::uint64_t zero_part_width(DType t) {
    switch (t) {
        case DType::Q8_0:
        case DType::Q4_0:
        case DType::Q5_0: return 1;
        case DType::Q2_K:
        case DType::Q3_K:
        case DType::Q6_K: return 16;
        case DType::Q4_K:
        case DType::Q5_K: return 32;
        default: return 0;
    }
}

// Zeros, in place, the parts of block `b` (of `t`, ggml's layouts) whose first element `zero` marks, each
// zero_part_width(t) wide; the codes and scales of the other parts are left as they are.
void zero_parts(DType t, std::byte* b, const std::vector<bool>& zero) {
    const auto u = [](std::byte x) { return static_cast<unsigned>(x); };
    const std::uint64_t w = zero_part_width(t);
    for (std::uint64_t i = 0; i < zero.size(); i += w) {
        if (!zero[i]) continue;
        switch (t) {
            case DType::Q8_0: b[2 + i] = std::byte{0}; break;  // {fp16 d; int8 qs[32]}
            case DType::Q4_0:                                  // {fp16 d; u8 qs[16]}, code 8 is (8 - 8) * d
                b[2 + i % 16] =
                    i < 16 ? std::byte((u(b[2 + i]) & 0xF0) | 0x08) : std::byte((u(b[2 + i - 16]) & 0x0F) | 0x80);
                break;
            case DType::Q5_0:  // {fp16 d; u32 qh; u8 qs[16]}: low nibble 0 and high bit 1 is (16 - 16) * d
                b[6 + i % 16] = i < 16 ? std::byte(u(b[6 + i]) & 0xF0) : std::byte(u(b[6 + i - 16]) & 0x0F);
                b[2 + i / 8] |= std::byte(1u << (i % 8));
                break;
            case DType::Q2_K: b[i / 16] = std::byte{0}; break;  // scales[16] first: 4-bit scale | 4-bit min
            case DType::Q3_K: {  // 12 bytes of 6-bit scales at 96, stored + 32: sub-block j gets 32
                const std::uint64_t j = i / 16;
                std::byte* sc = b + 96;
                sc[j % 8] = j < 8 ? std::byte(u(sc[j]) & 0xF0) : std::byte(u(sc[j - 8]) & 0x0F);
                const unsigned shift = 2 * unsigned(j / 4);
                sc[8 + j % 4] = std::byte((u(sc[8 + j % 4]) & ~(3u << shift)) | (2u << shift));
                break;
            }
            case DType::Q4_K:
            case DType::Q5_K: {  // 12 bytes at 4 of 6-bit scales and mins, ggml's get_scale_min_k4 packing
                const std::uint64_t j = i / 32;
                std::byte* q = b + 4;
                if (j < 4) {
                    q[j] &= std::byte{0xC0};
                    q[j + 4] &= std::byte{0xC0};
                } else {
                    q[j + 4] = std::byte{0};
                    q[j - 4] &= std::byte{0x3F};
                    q[j] &= std::byte{0x3F};
                }
                break;
            }
            case DType::Q6_K: b[192 + i / 16] = std::byte{0}; break;  // int8 scales[16] at 192
            default: break;
        }
    }
}

// How the columns of attn_output rows (`type`, ne0 columns) are rewritten, planned once per tensor: each block is
// untouched, replaced whole (by the encoding of zeros, or by a donor block when its columns are one whole,
// aligned donor block), or zeroed in part in place (zero_parts). A block that needs anything else (a part the
// type cannot zero in place, donor columns sharing a block with others) would have to be re-encoded, which
// changes the other heads' values in it: then the whole tensor is written as F32, decoded exactly. F32/F16/BF16
// are blocks of one element.
struct ColumnPlan {
    enum class Block : std::uint8_t { Keep, Zero, Copy, ZeroParts };
    DType type = DType::F32;
    std::uint64_t ne0 = 0;
    std::vector<ColumnSource> cols;
    std::vector<Block> blocks;
    std::vector<std::byte> zero_block;
    std::uint64_t shared = 0;  // blocks per row shared by edited and other heads' columns
    bool to_f32 = false;       // written as F32, decoded exactly
};

ColumnPlan plan_columns(DType type, std::uint64_t ne0, std::vector<ColumnSource> cols, const std::string& tensor,
                        std::uint32_t d_head) {
    const TypeTraits& t = traits(type);
    const std::uint64_t bs = t.block_size;
    ColumnPlan p{.type = type,
                 .ne0 = ne0,
                 .cols = std::move(cols),
                 .blocks = {},
                 .zero_block = {},
                 .shared = 0,
                 .to_f32 = false};
    // Zeros in a type headfuse encodes: their encoding. In the others (iq4_nl, iq4_xs, the carried types): a
    // block of zero bytes, whose stored scale is zero (each scales its whole block by an fp16 factor, or in
    // mxfp4 multiplies by a value that is 0 for code 0). Checked to decode to zeros where headfuse decodes the
    // type; tests check that ggml decodes the carried types' zero blocks to zeros.
    p.zero_block.resize(t.type_size);
    if (bs > 1 && t.writes) {
        const std::vector<float> zeros(bs, 0.0f);
        encode_row(type, zeros.data(), p.zero_block.data(), bs);
    }
    if (bs > 1 && t.reads) {
        std::vector<float> back(bs);
        decode_row(type, p.zero_block.data(), back.data(), bs);
        if (std::any_of(back.begin(), back.end(), [](float x) { return x != 0.0f; }))
            fail(ErrorKind::Unsupported,
                 "tensor '" + tensor + "': a " + std::string(t.name) + " block of zeros does not decode to zeros");
    }
    using Block = ColumnPlan::Block;
    const std::uint64_t part = zero_part_width(type);
    p.blocks.resize(ne0 / bs);
    for (std::uint64_t b = 0; b < p.blocks.size(); ++b) {
        const ColumnSource& first = p.cols[b * bs];
        bool same = true, any = false, parts = part != 0;
        for (std::uint64_t i = 0; i < bs; ++i) {
            const ColumnSource& c = p.cols[b * bs + i];
            any |= c.kind != ColumnSource::Keep;
            same &= c.kind == first.kind && (c.kind != ColumnSource::Donor || c.donor_col == first.donor_col + i);
            parts &= c.kind != ColumnSource::Donor && (part == 0 || c.kind == p.cols[b * bs + i / part * part].kind);
        }
        p.blocks[b] = !any                                                                     ? Block::Keep
                      : same && first.kind == ColumnSource::Zero                               ? Block::Zero
                      : same && first.kind == ColumnSource::Donor && first.donor_col % bs == 0 ? Block::Copy
                                                                                               : Block::ZeroParts;
        p.shared += p.blocks[b] == Block::ZeroParts;
        p.to_f32 |= p.blocks[b] == Block::ZeroParts && !parts;
    }
    if (p.to_f32 && !t.reads)
        fail(ErrorKind::Unsupported, "tensor '" + tensor + "' is " + std::string(t.name) + " and head width " +
                                         std::to_string(d_head) + " is not a whole number of its blocks of " +
                                         std::to_string(bs) +
                                         ": headfuse would have to decode blocks of a type it carries as bytes");
    return p;
}

// Rewrites whole rows of attn_output as `p` says, from `in` (rows of p.type) into `out` (rows of p.type, or of
// F32 when p.to_f32), taking donor columns from the donor's same rows (`donor`, null when nothing comes from a
// donor).
void rewrite_columns(const ColumnPlan& p, std::span<const std::byte> in, std::span<std::byte> out,
                     const std::byte* donor) {
    const TypeTraits& t = traits(p.type);
    const std::uint64_t bs = t.block_size, ts = t.type_size, rb = row_bytes(p.type, p.ne0);
    std::vector<float> x(p.to_f32 ? p.ne0 : 0), d(p.to_f32 && donor ? p.ne0 : 0);
    std::vector<bool> zero(bs);
    for (std::uint64_t r = 0; r < in.size() / rb; ++r) {
        const std::byte* src = in.data() + r * rb;
        const std::byte* drow = donor ? donor + r * rb : nullptr;
        if (p.to_f32) {
            decode_row(p.type, src, x.data(), p.ne0);
            if (drow) decode_row(p.type, drow, d.data(), p.ne0);
            for (std::uint64_t i = 0; i < p.ne0; ++i) {
                if (p.cols[i].kind == ColumnSource::Zero) x[i] = 0.0f;
                if (p.cols[i].kind == ColumnSource::Donor) x[i] = d[p.cols[i].donor_col];
            }
            std::memcpy(out.data() + r * p.ne0 * sizeof(float), x.data(), p.ne0 * sizeof(float));
            continue;
        }
        std::byte* row = out.data() + r * rb;
        std::memcpy(row, src, rb);
        for (std::uint64_t b = 0; b < p.blocks.size(); ++b) {
            std::byte* blk = row + b * ts;
            switch (p.blocks[b]) {
                case ColumnPlan::Block::Keep: break;
                case ColumnPlan::Block::Zero: std::memcpy(blk, p.zero_block.data(), ts); break;
                case ColumnPlan::Block::Copy: std::memcpy(blk, drow + p.cols[b * bs].donor_col / bs * ts, ts); break;
                case ColumnPlan::Block::ZeroParts:
                    for (std::uint64_t i = 0; i < bs; ++i) zero[i] = p.cols[b * bs + i].kind == ColumnSource::Zero;
                    zero_parts(p.type, blk, zero);
                    break;
            }
        }
    }
}

// Plans `*slot` as attn_output `w` (llama.cpp's `tensor`) with the columns `cols` says rewritten, from `donor`'s
// rows when given (a view of the same type and shape), a window of rows at a time; says when the tensor has to
// be written as F32.
void spill_rewritten(Spill& spill, TensorView* slot, const TensorView& w, const std::string& tensor,
                     std::optional<TensorView> donor, std::vector<ColumnSource> cols, std::uint32_t d_head,
                     const EditOptions& o) {
    ColumnPlan plan = plan_columns(w.type(), w.ne()[0], std::move(cols), tensor, d_head);
    if (plan.to_f32 && o.warn)
        o.warn(tensor + ": head width " + std::to_string(d_head) + " is not a whole number of " +
               std::string(type_name(w.type())) + " blocks of " + std::to_string(traits(w.type()).block_size) +
               ", and " + std::to_string(plan.shared * w.n_rows()) +
               " blocks hold both edited and other heads' columns, which re-encoding would change (requantized from "
               "their decoded values): written as f32, decoded exactly, so that every other head keeps its values");
    const DType out_type = plan.to_f32 ? DType::F32 : w.type();
    spill.add(slot, w.name(), out_type, {w.ne().data(), w.n_dims()},
              [plan = std::move(plan), w, donor](std::uint64_t r0, std::uint64_t n, std::span<std::byte> out) {
                  std::vector<std::byte> rows(n * w.row_nbytes()), donor_rows, scratch;
                  read_rows(w, r0, n, rows, scratch);
                  if (donor) {
                      donor_rows.resize(rows.size());
                      read_rows(*donor, r0, n, donor_rows, scratch);
                  }
                  rewrite_columns(plan, rows, out, donor ? donor_rows.data() : nullptr);
              });
}

// Every head of `heads` per layer, sorted, checked against the config.
std::map<std::uint32_t, std::vector<std::uint32_t>> by_layer(const Config& c, std::span<const HeadRef> heads,
                                                             const std::string& where) {
    std::map<std::uint32_t, std::vector<std::uint32_t>> out;
    for (const HeadRef& h : heads) {
        check_head(c, h, where);
        out[h.layer].push_back(h.head);
    }
    for (auto& [layer, hs] : out) {
        std::sort(hs.begin(), hs.end());
        hs.erase(std::unique(hs.begin(), hs.end()), hs.end());
    }
    return out;
}

}  // namespace

// ---- ablate --------------------------------------------------------------------------------------------------

PerHeadModel ablate_heads(const PerHeadModel& src, std::span<const HeadRef> heads, const EditOptions& options) {
    const Config& c = src.config();
    require_uniform(c, prefix(options), "ablate", "the model");
    if (heads.empty()) fail(ErrorKind::InvalidArgument, "ablate: no heads given");
    const auto layers = by_layer(c, heads, prefix(options));
    Spill spill;
    ModelViews views = src.views();
    for (const auto& [layer, hs] : layers) {
        TensorView& w = views.layers[layer].attn_output;
        std::vector<ColumnSource> cols(c.q_dim());
        for (const std::uint32_t h : hs)
            std::fill_n(cols.begin() + std::ptrdiff_t{h} * c.d_head, c.d_head, ColumnSource{ColumnSource::Zero});
        spill_rewritten(spill, &w, w, tensor_name(role_spec(Role::AttnOutput), layer), std::nullopt, std::move(cols),
                        c.d_head, options);
    }
    std::vector<HeadRef> sorted(heads.begin(), heads.end());
    std::sort(sorted.begin(), sorted.end());
    return finish(src, std::move(views), spill,
                  "ablate: heads " + list_heads(sorted) + " (attn_output columns zeroed)");
}

// ---- prune ---------------------------------------------------------------------------------------------------

PerHeadModel prune_heads(const PerHeadModel& src, std::span<const HeadRef> heads, const EditOptions& options) {
    const Config& c = src.config();
    const std::string where = prefix(options);
    require_uniform(c, where, "prune", "the model");
    if (heads.empty()) fail(ErrorKind::InvalidArgument, "prune: no heads given");
    const auto pruned = by_layer(c, heads, where);
    const std::uint32_t group = c.n_heads / c.n_kv_heads;  // query heads per kv head
    // Per layer: the query heads and kv heads kept.
    std::vector<std::vector<std::uint32_t>> keep_q(c.n_layers), keep_kv(c.n_layers);
    for (std::uint32_t l = 0; l < c.n_layers; ++l) {
        const auto it = pruned.find(l);
        std::vector<std::uint32_t> per_group(c.n_kv_heads, 0);
        for (std::uint32_t h = 0; h < c.n_heads; ++h)
            if (it == pruned.end() || !std::binary_search(it->second.begin(), it->second.end(), h)) {
                keep_q[l].push_back(h);
                ++per_group[h / group];
            }
        for (std::uint32_t g = 0; g < c.n_kv_heads; ++g) {
            if (!per_group[g]) continue;
            if (!keep_kv[l].empty() && per_group[g] != per_group[keep_kv[l].front()])
                fail(ErrorKind::InvalidArgument,
                     where + "prune: layer " + std::to_string(l) + " would keep " +
                         std::to_string(per_group[keep_kv[l].front()]) + " query heads of kv group " +
                         std::to_string(keep_kv[l].front()) + " and " + std::to_string(per_group[g]) + " of kv group " +
                         std::to_string(g) +
                         "; the kv groups that keep heads must keep equally many (llama.cpp gives "
                         "query head i the kv head i / (query heads per group))");
            keep_kv[l].push_back(g);
        }
        if (keep_q[0].empty())
            fail(ErrorKind::InvalidArgument,
                 where +
                     "prune: layer 0 would keep no heads; llama.cpp takes the head size from layer 0, so it "
                     "keeps at least one");
    }
    // Equal counts in every layer stay `llama`; different ones (a layer may keep 0 heads) become llama.cpp's
    // `deci` architecture, which stores them per layer.
    std::vector<std::uint32_t> heads_at(c.n_layers), kv_at(c.n_layers);
    bool uneven = false;
    for (std::uint32_t l = 0; l < c.n_layers; ++l) {
        heads_at[l] = static_cast<std::uint32_t>(keep_q[l].size());
        kv_at[l] = static_cast<std::uint32_t>(keep_kv[l].size());
        uneven = uneven || heads_at[l] != heads_at[0] || kv_at[l] != kv_at[0];
    }
    Spill spill;
    ModelViews views = src.views();
    Config& nc = views.config;
    if (uneven) {
        nc.set_layer_counts(heads_at, kv_at, {});
        nc.validate();
    } else {
        nc.n_heads = heads_at[0];
        nc.n_kv_heads = kv_at[0];
    }
    const TypeTraits& at = traits(views.layers[0].attn_output.type());
    bool said_f32 = false;
    for (std::uint32_t l = 0; l < c.n_layers; ++l) {
        const LayerViews& old = src.views().layers[l];
        LayerViews& lv = views.layers[l];
        auto pick = [&](const std::vector<TensorView>& from, const std::vector<std::uint32_t>& keep, Role role) {
            std::vector<TensorView> out;
            if (from.empty()) return out;  // an absent optional bias
            for (std::uint32_t i = 0; i < keep.size(); ++i)
                out.push_back(renamed(from[keep[i]], tensor_name(role_spec(role), l, i)));
            return out;
        };
        lv.q = pick(old.q, keep_q[l], Role::AttnQ);
        lv.k = pick(old.k, keep_kv[l], Role::AttnK);
        lv.v = pick(old.v, keep_kv[l], Role::AttnV);
        lv.q_bias = pick(old.q_bias, keep_q[l], Role::AttnQBias);
        lv.k_bias = pick(old.k_bias, keep_kv[l], Role::AttnKBias);
        lv.v_bias = pick(old.v_bias, keep_kv[l], Role::AttnVBias);
        if (keep_q[l].size() == c.n_heads) continue;
        if (keep_q[l].empty()) continue;  // a deci layer without attention: its attention tensors are not written
        // attn_output keeps the kept heads' columns: bytes when a head is whole blocks, else decoded to F32.
        const TensorView& w = old.attn_output;
        const std::uint64_t nq = std::uint64_t{heads_at[l]} * c.d_head;
        const std::array<std::uint64_t, 2> ne{nq, w.ne()[1]};
        const bool whole = c.d_head % traits(w.type()).block_size == 0;
        if (!whole) require_decoded(w.type(), where + "prune: tensor '" + w.name() + "'");
        if (!whole && options.warn && !std::exchange(said_f32, true))
            options.warn("head width " + std::to_string(c.d_head) + " is not a whole number of " +
                         std::string(at.name) + " blocks of " + std::to_string(at.block_size) +
                         ": the pruned attn_output tensors are written as f32 (decoded exactly)");
        spill.add(&lv.attn_output, tensor_name(role_spec(Role::AttnOutput), l), whole ? w.type() : DType::F32, ne,
                  [w, whole, keep = keep_q[l], d_head = std::uint64_t{c.d_head}, q_dim = c.q_dim()](
                      std::uint64_t r0, std::uint64_t n, std::span<std::byte> out) {
                      const std::uint64_t rb = w.row_nbytes(), out_rb = out.size() / n;
                      std::vector<std::byte> rows(n * rb), scratch;
                      read_rows(w, r0, n, rows, scratch);
                      // Head h's columns are bytes [h * hb, (h+1) * hb) of a row: of the input's type, or of f32.
                      const std::uint64_t hb = whole ? row_bytes(w.type(), d_head) : d_head * sizeof(float);
                      std::vector<float> x(whole ? 0 : q_dim);
                      for (std::uint64_t r = 0; r < n; ++r) {
                          const std::byte* row = rows.data() + r * rb;
                          if (!whole) {
                              decode_row(w.type(), row, x.data(), q_dim);
                              row = reinterpret_cast<const std::byte*>(x.data());
                          }
                          for (std::size_t i = 0; i < keep.size(); ++i)
                              std::memcpy(out.data() + r * out_rb + i * hb, row + keep[i] * hb, hb);
                      }
                  });
    }
    std::vector<HeadRef> sorted(heads.begin(), heads.end());
    std::sort(sorted.begin(), sorted.end());
    std::string counts = std::to_string(c.n_heads) + " -> " + std::to_string(nc.n_heads) + " heads, " +
                         std::to_string(c.n_kv_heads) + " -> " + std::to_string(nc.n_kv_heads) + " kv heads per layer";
    if (uneven) {
        counts = "per layer, heads (kv):";
        for (std::uint32_t l = 0; l < c.n_layers; ++l)
            counts += " " + std::to_string(heads_at[l]) + " (" + std::to_string(kv_at[l]) + ")";
        counts += "; written as deci";
    }
    return finish(src, std::move(views), spill, "prune: heads " + list_heads(sorted) + " removed (" + counts + ")");
}

// ---- pool-kv -------------------------------------------------------------------------------------------------

PerHeadModel pool_kv_heads(const PerHeadModel& src, std::uint32_t n_kv, const EditOptions& options) {
    const Config& c = src.config();
    const std::string where = prefix(options);
    require_uniform(c, where, "pool-kv", "the model");
    if (n_kv == 0 || c.n_kv_heads % n_kv != 0 || n_kv >= c.n_kv_heads)
        fail(ErrorKind::InvalidArgument, where + "pool-kv: --kv-heads " + std::to_string(n_kv) +
                                             " must be fewer than the model's " + std::to_string(c.n_kv_heads) +
                                             " key/value heads and divide them");
    const std::uint32_t r = c.n_kv_heads / n_kv;  // heads pooled into one
    Spill spill;
    ModelViews views = src.views();
    views.config.n_kv_heads = n_kv;
    // `to` becomes n_kv heads, head j the f64 mean of heads [j*r, (j+1)*r) of `from`, rounded once to f32.
    auto pool = [&](const std::vector<TensorView>& from, std::vector<TensorView>& to, Role role, std::uint32_t layer) {
        to.clear();
        if (from.empty()) return;
        for (const TensorView& h : from) require_decoded(h.type(), where + "pool-kv: tensor '" + h.name() + "'");
        to.resize(n_kv);  // not resized again: the spill fills these slots
        for (std::uint32_t j = 0; j < n_kv; ++j) {
            const TensorView& first = from[j * r];
            spill.add(&to[j], tensor_name(role_spec(role), layer, j), DType::F32, {first.ne().data(), first.n_dims()},
                      [group = std::vector<TensorView>(from.begin() + j * r, from.begin() + (j + 1) * r)](
                          std::uint64_t r0, std::uint64_t n, std::span<std::byte> out) {
                          const std::uint64_t ne0 = group.front().ne()[0], len = n * ne0;
                          std::vector<double> sum(len, 0.0);
                          std::vector<float> x(len);
                          std::vector<std::byte> rows, scratch;
                          for (const TensorView& h : group) {
                              rows.resize(n * h.row_nbytes());
                              read_rows(h, r0, n, rows, scratch);
                              for (std::uint64_t row = 0; row < n; ++row)
                                  decode_row(h.type(), rows.data() + row * h.row_nbytes(), x.data() + row * ne0, ne0);
                              for (std::uint64_t e = 0; e < len; ++e) sum[e] += double{x[e]};
                          }
                          for (std::uint64_t e = 0; e < len; ++e)
                              x[e] = static_cast<float>(sum[e] / double(group.size()));
                          std::memcpy(out.data(), x.data(), len * sizeof(float));
                      });
        }
    };
    for (std::uint32_t l = 0; l < c.n_layers; ++l) {
        const LayerViews& old = src.views().layers[l];
        LayerViews& lv = views.layers[l];
        pool(old.k, lv.k, Role::AttnK, l);
        pool(old.v, lv.v, Role::AttnV, l);
        pool(old.k_bias, lv.k_bias, Role::AttnKBias, l);
        pool(old.v_bias, lv.v_bias, Role::AttnVBias, l);
    }
    return finish(src, std::move(views), spill,
                  "pool-kv: " + std::to_string(c.n_kv_heads) + " -> " + std::to_string(n_kv) +
                      " key/value heads per layer (each the mean of " + std::to_string(r) + ")");
}

// ---- transplant ----------------------------------------------------------------------------------------------

// How a message names a tensor of `m`: as the file it came from holds it (a per-head checkpoint's head tensor; a
// fused file's projection, with the head), or by its view's name when the model has no GGUF file.
std::string stored_name(const PerHeadModel& m, const TensorView& v, Role role, std::uint32_t layer,
                        std::optional<std::uint32_t> head) {
    if (!head || !m.file() || m.file()->find_tensor(v.name())) return "'" + v.name() + "'";
    return "'" + tensor_name(role_spec(role), layer) + "' (head " + std::to_string(*head) + ")";
}

// The attention hyperparameters a moved head was trained under, where the donor's differ from the model's.
std::vector<std::string> attention_differences(const Config& c, const Config& dc) {
    std::vector<std::string> out;
    auto differ = [&](std::string_view field, std::string_view key, const std::string& x, const std::string& y) {
        if (x != y) out.push_back(std::string(field) + " (" + c.key(key) + ") " + x + ", the donor's " + y);
    };
    auto f = [](float x) { return shortest_float(x); };
    auto u = [](std::uint32_t x) { return std::to_string(x); };
    differ("rope_theta", "rope.freq_base", f(c.rope_theta), f(dc.rope_theta));
    differ("rope_scaling", "rope.scaling.type", std::string(rope_scaling_name(c.rope_scaling)),
           std::string(rope_scaling_name(dc.rope_scaling)));
    differ("rope_scaling_factor", "rope.scaling.factor", f(c.rope_scaling_factor), f(dc.rope_scaling_factor));
    differ("rope_original_context", "rope.scaling.original_context_length", u(c.rope_original_context),
           u(dc.rope_original_context));
    differ("rope_attn_factor", "rope.scaling.attn_factor", f(c.rope_attn_factor), f(dc.rope_attn_factor));
    differ("rms_eps", "attention.layer_norm_rms_epsilon", f(c.rms_eps), f(dc.rms_eps));
    for (const auto& [role, name] :
         {std::pair{Role::RopeFreqs, "rope_freqs.weight"}, std::pair{Role::RopeLong, "rope_factors_long.weight"}})
        if (c.optional_roles.contains(role) != dc.optional_roles.contains(role))
            out.push_back(std::string(name) + ": " + (c.optional_roles.contains(role) ? "present" : "absent") +
                          ", the donor's " + (dc.optional_roles.contains(role) ? "present" : "absent"));
    return out;
}

// True when two per-layer norms (qwen3's attn_q_norm, attn_k_norm) hold the same type and bytes.
bool same_norm(const std::optional<TensorView>& a, const std::optional<TensorView>& b) {
    if (!a || !b) return !a && !b;
    if (a->type() != b->type() || a->bytes().size() != b->bytes().size()) return false;
    std::vector<std::byte> x(a->bytes().size()), y(b->bytes().size()), scratch;
    read_rows(*a, 0, a->n_rows(), x, scratch);
    read_rows(*b, 0, b->n_rows(), y, scratch);
    return x == y;
}

// The receiving and donor layers whose per-layer q/k norms differ ("1<-0 (attn_q_norm, attn_k_norm)"): a moved
// head is normalized with the receiving layer's norms, which are not the head's own.
std::string norm_differences(const PerHeadModel& src, const PerHeadModel& donor,
                             const std::map<std::uint32_t, std::vector<HeadMove>>& by_to) {
    std::string out;
    for (const auto& [layer, ms] : by_to) {
        std::set<std::uint32_t> from;
        for (const HeadMove& m : ms) from.insert(m.from.layer);
        for (std::uint32_t dlayer : from) {
            const LayerViews& a = src.views().layers[layer];
            const LayerViews& b = donor.views().layers[dlayer];
            std::string which;
            if (!same_norm(a.attn_q_norm, b.attn_q_norm)) which = "attn_q_norm";
            if (!same_norm(a.attn_k_norm, b.attn_k_norm))
                which += (which.empty() ? "" : ", ") + std::string("attn_k_norm");
            if (!which.empty())
                out += (out.empty() ? "" : "; ") + std::string("layer ") + std::to_string(layer) + " <- donor layer " +
                       std::to_string(dlayer) + " (" + which + ")";
        }
    }
    return out;
}

PerHeadModel transplant_heads(const PerHeadModel& src, const PerHeadModel& donor, std::span<const HeadMove> moves,
                              const EditOptions& options) {
    const Config& c = src.config();
    const Config& dc = donor.config();
    const std::string where = prefix(options);
    require_uniform(c, where, "transplant", "the model");
    require_uniform(dc, where, "transplant", "the donor");
    if (moves.empty()) fail(ErrorKind::InvalidArgument, "transplant: no heads given");
    if (dc.d_model != c.d_model || dc.d_head != c.d_head)
        fail(ErrorKind::InvalidArgument, where + "transplant: the donor has d_model " + std::to_string(dc.d_model) +
                                             " and d_head " + std::to_string(dc.d_head) +
                                             "; expected the model's d_model " + std::to_string(c.d_model) +
                                             " and d_head " + std::to_string(c.d_head));
    if (dc.family != c.family)  // RoPE pairing, q/k norms: a head means something else in the other family
        fail(ErrorKind::InvalidArgument, where + "transplant: the donor is a " + std::string(family_name(dc.family)) +
                                             " model and the model a " + std::string(family_name(c.family)) +
                                             " one; heads move only within a family");
    const std::string model_name = !options.source.empty() ? options.source
                                   : src.file()            ? src.file()->name()
                                                           : "the model";
    const std::string donor_name = !options.donor.empty() ? options.donor
                                   : donor.file()         ? donor.file()->name()
                                                          : "the donor";
    // The optional tensors but RoPE's factors (named with the attention hyperparameters below) must match.
    const bool same_biases = std::all_of(role_table().begin(), role_table().end(), [&](const RoleSpec& r) {
        return r.role == Role::RopeFreqs || r.role == Role::RopeLong || r.role == Role::RopeShort ||
               c.optional_roles.contains(r.role) == dc.optional_roles.contains(r.role);
    });
    if (!same_biases)
        fail(ErrorKind::InvalidArgument, where + "transplant: the donor and the model do not have the same biases");
    if (options.warn)
        for (const std::string& d : attention_differences(c, dc))
            options.warn("transplant: " + d + ": the moved heads were trained under " + donor_name + "'s");
    std::map<std::uint32_t, std::vector<HeadMove>> by_to;
    for (const HeadMove& m : moves) {
        check_head(c, m.to, where);
        check_head(dc, m.from, where, "the donor");
        by_to[m.to.layer].push_back(m);
    }
    // qwen3's q/k norms are per layer, not per head: a moved head keeps the receiving layer's, said in one line.
    if (options.warn && c.optional_roles.contains(Role::AttnQNorm))
        if (const std::string d = norm_differences(src, donor, by_to); !d.empty())
            options.warn("transplant: the q/k norms are per layer, not per head, and the model keeps its own: " + d +
                         " differ, so the moved heads are normalized with weights they were not trained with");
    // a: the model's tensor of `role` in `layer` (head `head`), b: the donor's (layer `dlayer`, head `dhead`).
    auto same_type = [&](const TensorView& a, const TensorView& b, Role role, std::uint32_t layer, std::uint32_t dlayer,
                         std::optional<std::uint32_t> head, std::optional<std::uint32_t> dhead) {
        if (a.type() != b.type())
            fail(ErrorKind::InvalidArgument,
                 "transplant: " + donor_name + ": tensor " + stored_name(donor, b, role, dlayer, dhead) + " is " +
                     std::string(type_name(b.type())) + ", and " + model_name + ": tensor " +
                     stored_name(src, a, role, layer, head) + " is " + std::string(type_name(a.type())) +
                     "; the moved tensors must share a type");
    };
    Spill spill;
    ModelViews views = src.views();
    const std::uint32_t group = c.n_heads / c.n_kv_heads, dgroup = dc.n_heads / dc.n_kv_heads;
    std::uint32_t kv_moved = 0;
    for (const auto& [layer, ms] : by_to) {
        LayerViews& lv = views.layers[layer];
        std::vector<ColumnSource> cols(c.q_dim());
        std::uint32_t from_layer = ms.front().from.layer;
        bool one_donor_layer = true;
        for (const HeadMove& m : ms) {
            const LayerViews& dl = donor.views().layers[m.from.layer];
            same_type(lv.q[m.to.head], dl.q[m.from.head], Role::AttnQ, layer, m.from.layer, m.to.head, m.from.head);
            lv.q[m.to.head] = renamed(dl.q[m.from.head], tensor_name(role_spec(Role::AttnQ), layer, m.to.head));
            if (!lv.q_bias.empty())
                lv.q_bias[m.to.head] =
                    renamed(dl.q_bias[m.from.head], tensor_name(role_spec(Role::AttnQBias), layer, m.to.head));
            for (std::uint32_t i = 0; i < c.d_head; ++i)
                cols[std::size_t{m.to.head} * c.d_head + i] = {ColumnSource::Donor,
                                                               std::uint64_t{m.from.head} * c.d_head + i};
            one_donor_layer &= m.from.layer == from_layer;
        }
        // attn_output: the moved columns from the donor's layer (one donor layer per receiving layer).
        if (!one_donor_layer)
            fail(ErrorKind::InvalidArgument,
                 where + "transplant: layer " + std::to_string(layer) +
                     " receives heads from several donor layers; move heads of one donor layer into a layer at a time");
        const TensorView& dw = donor.views().layers[from_layer].attn_output;
        same_type(lv.attn_output, dw, Role::AttnOutput, layer, from_layer, std::nullopt, std::nullopt);
        spill_rewritten(spill, &lv.attn_output, lv.attn_output, tensor_name(role_spec(Role::AttnOutput), layer), dw,
                        std::move(cols), c.d_head, options);
        // A kv group whose every query head arrives, in order, from one donor group brings its key/value head.
        if (group != dgroup) continue;
        for (std::uint32_t g = 0; g < c.n_kv_heads; ++g) {
            std::optional<std::uint32_t> dg;
            bool whole = true;
            for (std::uint32_t i = 0; i < group && whole; ++i) {
                const auto it =
                    std::find_if(ms.begin(), ms.end(), [&](const HeadMove& m) { return m.to.head == g * group + i; });
                if (it == ms.end() || it->from.head % group != i || (dg && *dg != it->from.head / group))
                    whole = false;
                else
                    dg = it->from.head / group;
            }
            if (!whole) continue;
            const LayerViews& dl = donor.views().layers[from_layer];
            same_type(lv.k[g], dl.k[*dg], Role::AttnK, layer, from_layer, g, *dg);
            same_type(lv.v[g], dl.v[*dg], Role::AttnV, layer, from_layer, g, *dg);
            lv.k[g] = renamed(dl.k[*dg], tensor_name(role_spec(Role::AttnK), layer, g));
            lv.v[g] = renamed(dl.v[*dg], tensor_name(role_spec(Role::AttnV), layer, g));
            if (!lv.k_bias.empty()) {
                lv.k_bias[g] = renamed(dl.k_bias[*dg], tensor_name(role_spec(Role::AttnKBias), layer, g));
                lv.v_bias[g] = renamed(dl.v_bias[*dg], tensor_name(role_spec(Role::AttnVBias), layer, g));
            }
            ++kv_moved;
        }
    }
    std::string list;
    for (const HeadMove& m : moves) list += (list.empty() ? "" : ", ") + head_name(m.to) + "=" + head_name(m.from);
    return finish(src, std::move(views), spill,
                  "transplant: heads " + list + " from " + donor_name + " (" + std::to_string(kv_moved) +
                      " key/value heads moved with their whole group)",
                  {donor.views().owner});
}

}  // namespace headfuse
