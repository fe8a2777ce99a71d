// Head surgery as edits of per-head views: what an edit leaves alone stays a borrowed view of the source, what it
// changes is a new tensor held in an EditStore that the edited model owns.
#include "headfuse/heads.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>

#include "headfuse/error.h"
#include "headfuse/quantize.h"
#include "roles.h"
#include "view_rows.h"

namespace headfuse {
namespace {

// The bytes of the tensors an edit made, and the owners of the models whose views it still borrows.
struct EditStore {
    std::vector<std::shared_ptr<const void>> borrowed;
    std::deque<std::vector<std::byte>> buffers;
};

std::string head_name(const HeadRef& h) { return std::to_string(h.layer) + ":" + std::to_string(h.head); }

std::string prefix(const EditOptions& o) { return o.source.empty() ? "" : o.source + ": "; }

// The edits index heads with one count for every layer: a model with per-layer counts (deci) is refused.
void require_uniform(const Config& c, const std::string& where, std::string_view verb, std::string_view which) {
    if (c.per_layer())
        fail(where + std::string(verb) + ": " + std::string(which) +
             " has per-layer head counts (llama.cpp's deci architecture); headfuse edits the heads of models "
             "with one count for every layer");
}

// Every logical row of a view, in its type.
std::vector<std::byte> all_rows(const TensorView& v) {
    std::vector<std::byte> out(v.n_rows() * v.row_nbytes()), scratch;
    read_rows(v, 0, v.n_rows(), out, scratch);
    return out;
}

// A plain view of bytes the store keeps.
TensorView owned(EditStore& store, std::string name, DType type, std::span<const std::uint64_t> ne,
                 std::vector<std::byte> bytes) {
    TensorView v;
    v.name = std::move(name);
    v.type = type;
    v.n_dims = static_cast<std::uint32_t>(ne.size());
    for (std::size_t i = 0; i < ne.size(); ++i) v.ne[i] = ne[i];
    v.bytes = store.buffers.emplace_back(std::move(bytes));
    return v;
}

// The same view under another name (a head renumbered).
TensorView renamed(TensorView v, std::string name) {
    v.name = std::move(name);
    return v;
}

void check_head(const Config& c, const HeadRef& h, const std::string& where, std::string_view what = "the model") {
    if (h.layer >= c.n_layers || h.head >= c.n_heads)
        fail(where + "head " + head_name(h) + " is out of range: " + std::string(what) + " has " +
             std::to_string(c.n_layers) + " layers (0-" + std::to_string(c.n_layers - 1) + ") of " +
             std::to_string(c.n_heads) + " query heads (0-" + std::to_string(c.n_heads - 1) + ")");
}

// The edited model: the views, the source's metadata with one more line in headfuse.edits, owning `store`.
PerHeadModel finish(const PerHeadModel& src, ModelViews views, std::shared_ptr<EditStore> store,
                    const std::string& edit) {
    store->borrowed.push_back(src.views().owner);
    Metadata md = src.metadata();
    std::vector<Value> lines;
    if (const Value* old = md.find(kEditsKey);
        old && old->type == ValueType::ARRAY && old->elem_type == ValueType::STRING)
        lines = old->items;
    lines.push_back(Value::string(edit));
    md.set(std::string(kEditsKey), Value::array(ValueType::STRING, std::move(lines)));
    views.owner = store;
    views.config.validate();
    return PerHeadModel::from_views(std::move(views), std::move(md), std::move(store));
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

// Rewrites the columns `cols` says to of every row of `rows` (a copy of attn_output, `type`, ne0 columns), taking
// donor columns from `donor` (rows of the same type and width). F32/F16/BF16 elements and whole blocks move as
// bytes (a zero block is the encoding of zeros); a block only partly rewritten is decoded, rewritten and
// re-encoded. Returns the number of blocks re-encoded.
std::uint64_t rewrite_columns(std::vector<std::byte>& rows, const std::byte* donor, DType type, std::uint64_t ne0,
                              const std::vector<ColumnSource>& cols, const std::string& tensor) {
    const TypeTraits& t = traits(type);
    const std::uint64_t bs = t.block_size, ts = t.type_size, rb = row_bytes(type, ne0), n_rows = rows.size() / rb;
    std::vector<std::byte> zero_block(ts);
    if (bs > 1) {
        if (!t.writes) fail("tensor '" + tensor + "' is " + std::string(t.name) + ", which headfuse does not encode");
        const std::vector<float> zeros(bs, 0.0f);
        encode_row(type, zeros.data(), zero_block.data(), bs);
        std::vector<float> back(bs);
        decode_row(type, zero_block.data(), back.data(), bs);
        if (std::any_of(back.begin(), back.end(), [](float x) { return x != 0.0f; }))
            fail("tensor '" + tensor + "': a " + std::string(t.name) + " block of zeros does not decode to zeros");
    }
    // Each block: untouched, moved whole (every column from one place, block-aligned), or re-encoded.
    enum class Plan : std::uint8_t { Keep, Zero, Copy, Mixed };
    std::vector<Plan> plan(ne0 / bs);
    for (std::uint64_t b = 0; b < plan.size(); ++b) {
        const ColumnSource& first = cols[b * bs];
        bool same = true, any = false;
        for (std::uint64_t i = 0; i < bs; ++i) {
            const ColumnSource& c = cols[b * bs + i];
            any |= c.kind != ColumnSource::Keep;
            same &= c.kind == first.kind && (c.kind != ColumnSource::Donor || c.donor_col == first.donor_col + i);
        }
        plan[b] = !any                                                                     ? Plan::Keep
                  : same && first.kind == ColumnSource::Zero                               ? Plan::Zero
                  : same && first.kind == ColumnSource::Donor && first.donor_col % bs == 0 ? Plan::Copy
                                                                                           : Plan::Mixed;
    }
    std::uint64_t mixed = 0;
    std::vector<float> x(bs), d(ne0);
    for (std::uint64_t r = 0; r < n_rows; ++r) {
        std::byte* row = rows.data() + r * rb;
        const std::byte* drow = donor ? donor + r * rb : nullptr;
        bool decoded = false;
        for (std::uint64_t b = 0; b < plan.size(); ++b) {
            std::byte* blk = row + b * ts;
            switch (plan[b]) {
                case Plan::Keep: break;
                case Plan::Zero: std::memcpy(blk, zero_block.data(), ts); break;
                case Plan::Copy: std::memcpy(blk, drow + cols[b * bs].donor_col / bs * ts, ts); break;
                case Plan::Mixed:
                    if (drow && !decoded) {
                        decode_row(type, drow, d.data(), ne0);
                        decoded = true;
                    }
                    decode_row(type, blk, x.data(), bs);
                    for (std::uint64_t i = 0; i < bs; ++i) {
                        const ColumnSource& c = cols[b * bs + i];
                        if (c.kind == ColumnSource::Zero) x[i] = 0.0f;
                        if (c.kind == ColumnSource::Donor) x[i] = d[c.donor_col];
                    }
                    encode_row(type, x.data(), blk, bs);
                    ++mixed;
                    break;
            }
        }
    }
    return mixed;
}

void say_reencoded(const EditOptions& o, const std::string& tensor, std::uint64_t blocks, DType type,
                   std::uint32_t d_head) {
    if (!blocks || !o.warn) return;
    o.warn(tensor + ": head width " + std::to_string(d_head) + " is not a whole number of " +
           std::string(type_name(type)) + " blocks of " + std::to_string(traits(type).block_size) + ": " +
           std::to_string(blocks) + " blocks that also hold other heads' columns were decoded and re-encoded");
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

std::uint32_t parse_number(std::string_view& s, std::string_view flag, std::string_view item) {
    std::uint32_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end == s.data())
        fail(std::string(flag) + ": expected LAYER:HEAD (decimal numbers, e.g. 3:1), found '" + std::string(item) +
             "'");
    s.remove_prefix(static_cast<std::size_t>(end - s.data()));
    return v;
}

HeadRef parse_head(std::string_view item, std::string_view flag) {
    std::string_view s = item;
    HeadRef h;
    h.layer = parse_number(s, flag, item);
    if (s.empty() || s.front() != ':')
        fail(std::string(flag) + ": expected LAYER:HEAD (decimal numbers, e.g. 3:1), found '" + std::string(item) +
             "'");
    s.remove_prefix(1);
    h.head = parse_number(s, flag, item);
    if (!s.empty())
        fail(std::string(flag) + ": expected LAYER:HEAD (decimal numbers, e.g. 3:1), found '" + std::string(item) +
             "'");
    return h;
}

std::vector<std::string_view> split_commas(std::string_view text) {
    std::vector<std::string_view> out;
    for (std::size_t pos = 0;;) {
        const std::size_t comma = text.find(',', pos);
        out.push_back(text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos));
        if (comma == std::string_view::npos) return out;
        pos = comma + 1;
    }
}

}  // namespace

std::vector<HeadRef> parse_heads(std::string_view text, std::string_view flag) {
    std::vector<HeadRef> out;
    for (std::string_view item : split_commas(text)) out.push_back(parse_head(item, flag));
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

std::vector<HeadMove> parse_head_moves(std::string_view text, std::string_view flag) {
    std::vector<HeadMove> out;
    std::set<HeadRef> seen;
    for (std::string_view item : split_commas(text)) {
        const std::size_t eq = item.find('=');
        HeadMove m;
        m.to = parse_head(item.substr(0, eq), flag);
        m.from = eq == std::string_view::npos ? m.to : parse_head(item.substr(eq + 1), flag);
        if (!seen.insert(m.to).second)
            fail(std::string(flag) + ": head " + head_name(m.to) + " receives more than one head");
        out.push_back(m);
    }
    std::sort(out.begin(), out.end(), [](const HeadMove& a, const HeadMove& b) { return a.to < b.to; });
    return out;
}

// ---- ablate --------------------------------------------------------------------------------------------------

PerHeadModel ablate_heads(const PerHeadModel& src, std::span<const HeadRef> heads, const EditOptions& options) {
    const Config& c = src.config();
    require_uniform(c, prefix(options), "ablate", "the model");
    if (heads.empty()) fail("ablate: no heads given");
    const auto layers = by_layer(c, heads, prefix(options));
    auto store = std::make_shared<EditStore>();
    ModelViews views = src.views();
    for (const auto& [layer, hs] : layers) {
        TensorView& w = views.layers[layer].attn_output;
        std::vector<ColumnSource> cols(c.q_dim());
        for (const std::uint32_t h : hs)
            std::fill_n(cols.begin() + std::ptrdiff_t{h} * c.d_head, c.d_head, ColumnSource{ColumnSource::Zero});
        std::vector<std::byte> rows = all_rows(w);
        const std::string name = tensor_name(role_spec(Role::AttnOutput), layer);
        say_reencoded(options, name, rewrite_columns(rows, nullptr, w.type, c.q_dim(), cols, name), w.type, c.d_head);
        w = owned(*store, w.name, w.type, {w.ne.data(), w.n_dims}, std::move(rows));
    }
    std::vector<HeadRef> sorted(heads.begin(), heads.end());
    std::sort(sorted.begin(), sorted.end());
    return finish(src, std::move(views), store,
                  "ablate: heads " + list_heads(sorted) + " (attn_output columns zeroed)");
}

// ---- prune ---------------------------------------------------------------------------------------------------

PerHeadModel prune_heads(const PerHeadModel& src, std::span<const HeadRef> heads, const EditOptions& options) {
    const Config& c = src.config();
    const std::string where = prefix(options);
    require_uniform(c, where, "prune", "the model");
    if (heads.empty()) fail("prune: no heads given");
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
                fail(where + "prune: layer " + std::to_string(l) + " would keep " +
                     std::to_string(per_group[keep_kv[l].front()]) + " query heads of kv group " +
                     std::to_string(keep_kv[l].front()) + " and " + std::to_string(per_group[g]) + " of kv group " +
                     std::to_string(g) +
                     "; the kv groups that keep heads must keep equally many (llama.cpp gives "
                     "query head i the kv head i / (query heads per group))");
            keep_kv[l].push_back(g);
        }
        if (keep_q[0].empty())
            fail(where +
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
    auto store = std::make_shared<EditStore>();
    ModelViews views = src.views();
    Config& nc = views.config;
    if (uneven) {
        nc.set_layer_counts(heads_at, kv_at, {});
        nc.validate();
    } else {
        nc.n_heads = heads_at[0];
        nc.n_kv_heads = kv_at[0];
    }
    const TypeTraits& at = traits(views.layers[0].attn_output.type);
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
        const std::vector<std::byte> rows = all_rows(w);
        const std::uint64_t rb = w.row_nbytes(), n_rows = w.n_rows(), nq = std::uint64_t{heads_at[l]} * c.d_head;
        const std::array<std::uint64_t, 2> ne{nq, w.ne[1]};
        const std::string name = tensor_name(role_spec(Role::AttnOutput), l);
        if (c.d_head % traits(w.type).block_size == 0) {
            const std::uint64_t hb = row_bytes(w.type, c.d_head), out_rb = row_bytes(w.type, nq);
            std::vector<std::byte> out(n_rows * out_rb);
            for (std::uint64_t r = 0; r < n_rows; ++r)
                for (std::size_t i = 0; i < keep_q[l].size(); ++i)
                    std::memcpy(out.data() + r * out_rb + i * hb, rows.data() + r * rb + keep_q[l][i] * hb, hb);
            lv.attn_output = owned(*store, name, w.type, ne, std::move(out));
        } else {
            std::vector<float> x(c.q_dim()), out(n_rows * nq);
            for (std::uint64_t r = 0; r < n_rows; ++r) {
                decode_row(w.type, rows.data() + r * rb, x.data(), c.q_dim());
                for (std::size_t i = 0; i < keep_q[l].size(); ++i)
                    std::memcpy(&out[r * nq + i * c.d_head], &x[std::size_t{keep_q[l][i]} * c.d_head],
                                c.d_head * sizeof(float));
            }
            std::vector<std::byte> bytes(out.size() * sizeof(float));
            std::memcpy(bytes.data(), out.data(), bytes.size());
            lv.attn_output = owned(*store, name, DType::F32, ne, std::move(bytes));
            if (options.warn && l == 0)
                options.warn("head width " + std::to_string(c.d_head) + " is not a whole number of " +
                             std::string(at.name) + " blocks of " + std::to_string(at.block_size) +
                             ": the pruned attn_output tensors are written as f32 (decoded exactly)");
        }
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
    return finish(src, std::move(views), store, "prune: heads " + list_heads(sorted) + " removed (" + counts + ")");
}

// ---- pool-kv -------------------------------------------------------------------------------------------------

PerHeadModel pool_kv_heads(const PerHeadModel& src, std::uint32_t n_kv, const EditOptions& options) {
    const Config& c = src.config();
    const std::string where = prefix(options);
    require_uniform(c, where, "pool-kv", "the model");
    if (n_kv == 0 || c.n_kv_heads % n_kv != 0 || n_kv >= c.n_kv_heads)
        fail(where + "pool-kv: --kv-heads " + std::to_string(n_kv) + " must be fewer than the model's " +
             std::to_string(c.n_kv_heads) + " key/value heads and divide them");
    const std::uint32_t r = c.n_kv_heads / n_kv;  // heads pooled into one
    auto store = std::make_shared<EditStore>();
    ModelViews views = src.views();
    views.config.n_kv_heads = n_kv;
    // The f64 mean of heads [j*r, (j+1)*r) of `from`, rounded once to f32.
    auto pool = [&](const std::vector<TensorView>& from, Role role, std::uint32_t layer) {
        std::vector<TensorView> out;
        if (from.empty()) return out;
        for (std::uint32_t j = 0; j < n_kv; ++j) {
            const TensorView& first = from[j * r];
            const std::uint64_t ne0 = first.ne[0], n = first.ne[0] * first.n_rows();
            std::vector<double> sum(n, 0.0);
            std::vector<float> x(n);
            for (std::uint32_t i = 0; i < r; ++i) {
                const TensorView& h = from[j * r + i];
                const std::vector<std::byte> rows = all_rows(h);
                for (std::uint64_t row = 0; row < h.n_rows(); ++row)
                    decode_row(h.type, rows.data() + row * h.row_nbytes(), x.data() + row * ne0, ne0);
                for (std::uint64_t e = 0; e < n; ++e) sum[e] += double{x[e]};
            }
            for (std::uint64_t e = 0; e < n; ++e) x[e] = static_cast<float>(sum[e] / double(r));
            std::vector<std::byte> bytes(n * sizeof(float));
            std::memcpy(bytes.data(), x.data(), bytes.size());
            out.push_back(owned(*store, tensor_name(role_spec(role), layer, j), DType::F32,
                                {first.ne.data(), first.n_dims}, std::move(bytes)));
        }
        return out;
    };
    for (std::uint32_t l = 0; l < c.n_layers; ++l) {
        const LayerViews& old = src.views().layers[l];
        LayerViews& lv = views.layers[l];
        lv.k = pool(old.k, Role::AttnK, l);
        lv.v = pool(old.v, Role::AttnV, l);
        lv.k_bias = pool(old.k_bias, Role::AttnKBias, l);
        lv.v_bias = pool(old.v_bias, Role::AttnVBias, l);
    }
    return finish(src, std::move(views), store,
                  "pool-kv: " + std::to_string(c.n_kv_heads) + " -> " + std::to_string(n_kv) +
                      " key/value heads per layer (each the mean of " + std::to_string(r) + ")");
}

// ---- transplant ----------------------------------------------------------------------------------------------

PerHeadModel transplant_heads(const PerHeadModel& src, const PerHeadModel& donor, std::span<const HeadMove> moves,
                              const EditOptions& options) {
    const Config& c = src.config();
    const Config& dc = donor.config();
    const std::string where = prefix(options);
    require_uniform(c, where, "transplant", "the model");
    require_uniform(dc, where, "transplant", "the donor");
    if (moves.empty()) fail("transplant: no heads given");
    if (dc.d_model != c.d_model || dc.d_head != c.d_head)
        fail(where + "transplant: the donor has d_model " + std::to_string(dc.d_model) + " and d_head " +
             std::to_string(dc.d_head) + "; expected the model's d_model " + std::to_string(c.d_model) +
             " and d_head " + std::to_string(c.d_head));
    if (dc.optional_roles != c.optional_roles)
        fail(where + "transplant: the donor and the model do not have the same biases");
    std::map<std::uint32_t, std::vector<HeadMove>> by_to;
    for (const HeadMove& m : moves) {
        check_head(c, m.to, where);
        check_head(dc, m.from, where, "the donor");
        by_to[m.to.layer].push_back(m);
    }
    auto same_type = [&](const TensorView& a, const TensorView& b) {
        if (a.type != b.type)
            fail(where + "transplant: the donor's '" + b.name + "' is " + std::string(type_name(b.type)) +
                 " and the model's '" + a.name + "' is " + std::string(type_name(a.type)) +
                 "; the moved tensors must share a type");
    };
    auto store = std::make_shared<EditStore>();
    store->borrowed.push_back(donor.views().owner);
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
            same_type(lv.q[m.to.head], dl.q[m.from.head]);
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
            fail(where + "transplant: layer " + std::to_string(layer) +
                 " receives heads from several donor layers; move heads of one donor layer into a layer at a time");
        const TensorView& dw = donor.views().layers[from_layer].attn_output;
        same_type(lv.attn_output, dw);
        std::vector<std::byte> rows = all_rows(lv.attn_output);
        const std::vector<std::byte> drows = all_rows(dw);
        const std::string name = tensor_name(role_spec(Role::AttnOutput), layer);
        say_reencoded(options, name, rewrite_columns(rows, drows.data(), dw.type, c.q_dim(), cols, name), dw.type,
                      c.d_head);
        lv.attn_output = owned(*store, lv.attn_output.name, lv.attn_output.type,
                               {lv.attn_output.ne.data(), lv.attn_output.n_dims}, std::move(rows));
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
            same_type(lv.k[g], dl.k[*dg]);
            same_type(lv.v[g], dl.v[*dg]);
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
    return finish(src, std::move(views), store,
                  "transplant: heads " + list + " from the donor (" + std::to_string(kv_moved) +
                      " key/value heads moved with their whole group)");
}

}  // namespace headfuse
