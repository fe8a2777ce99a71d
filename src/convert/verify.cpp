#include "headfuse/verify.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/fail.h"
#include "base/float_text.h"
#include "headfuse/error.h"
#include "headfuse/fold.h"
#include "headfuse/forward.h"
#include "headfuse/quantize.h"
#include "model/roles.h"
#include "model/view_rows.h"

namespace headfuse {
namespace {

// Bytes of each view read per step: rows are read (pread for a mapped file), so neither model becomes resident.
constexpr std::uint64_t kWindowBytes = std::uint64_t{4} << 20;

// What one tensor's comparison found.
struct Finding {
    bool differs = false;         // some row differs in value and is not the encoding of A's row
    bool encoded = false;         // some row of B is the encoding of A's (different) values at B's type
    std::uint64_t first_row = 0;  // the first row that differs, when `differs`
    double max_abs = 0;           // the largest |A - B| over the decoded values
};

class Comparer {
public:
    Comparer(VerifyReport& r, const VerifyOptions& o, std::uint64_t total) : report_(r), opt_(o), total_(total) {}

    // One tensor of the common form: `a` and `b` are its parts in A and in B (a head role's heads, in order, or
    // one view), part i of each holding the same logical rows. Rows are compared in the tensor's common form:
    // bytes when both have one type, else the decoded values, with B's row also accepted as the exact encoding
    // of A's values at B's type (a fused file encoded from its source). `name` is the tensor's fused name.
    void compare(const std::string& name, const std::vector<const TensorView*>& a,
                 const std::vector<const TensorView*>& b) {
        ++report_.tensors_checked;
        Finding f;
        std::uint64_t row0 = 0;  // the first row of part i in the whole tensor
        DType ta = a.front()->type(), tb = b.front()->type();
        for (std::size_t i = 0; i < a.size(); ++i) {
            compare_part(name, *a[i], *b[i], row0, f);
            row0 += a[i]->n_rows();
            ta = a[i]->type();
            tb = b[i]->type();
            done_ += a[i]->bytes().size();
            if (opt_.progress) opt_.progress(done_, total_);
        }
        record(name, ta, tb, f);
    }

    // token_embd of a lens model A against B's: the fold recomputed from A's donor table and projection (f64,
    // rounded once to f32), as B's type encodes it.
    void compare_fold(const std::string& name, const TensorView& donor, const TensorView& proj,
                      const TensorView& actual) {
        ++report_.tensors_checked;
        Finding f;
        LensFold fold(donor, proj);
        const std::uint64_t dm = fold.d_model();
        std::vector<float> block(kFoldBlockRows * dm), got(dm);
        std::vector<std::byte> encoded(row_bytes(actual.type(), dm)), buf, scratch;
        require_decoded(actual.type(), "tensor '" + name + "' of " + opt_.labels[1]);
        for (std::uint64_t v0 = 0; v0 < fold.vocab(); v0 += kFoldBlockRows) {
            const std::uint64_t n = std::min(kFoldBlockRows, fold.vocab() - v0);
            fold.rows(v0, n, block.data());
            const auto rows = rows_of(actual, v0, n, buf, scratch);
            for (std::uint64_t r = 0; r < n; ++r) {
                const std::byte* g = rows.data() + r * actual.row_nbytes();
                const float* want = block.data() + r * dm;
                decode_row(actual.type(), g, got.data(), dm);
                row_finding(want, got.data(), g, actual.type(), dm, v0 + r, encoded, f);
            }
        }
        done_ += donor.bytes().size() + proj.bytes().size();
        if (opt_.progress) opt_.progress(done_, total_);
        if (f.differs) {
            report_.mismatches.push_back("tensor '" + name + "': row " + std::to_string(f.first_row) +
                                         " differs from the lens fold (max |difference| " + number(f.max_abs) + ")");
            note_first(name);
        }
        note_max(name, f.max_abs);
        if (actual.type() != DType::F32) report_.same_types = false;
    }

private:
    static std::string number(double x) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.3g", x);
        return buf;
    }

    // Decoded row `want` (A) against B's row `got` (decoded) and its bytes `gb` at type tb.
    static void row_finding(const float* want, const float* got, const std::byte* gb, DType tb, std::uint64_t ne0,
                            std::uint64_t row, std::vector<std::byte>& encoded, Finding& f) {
        bool equal = true;
        for (std::uint64_t e = 0; e < ne0; ++e) {
            if (std::memcmp(&want[e], &got[e], sizeof(float)) == 0) continue;
            equal = false;
            const double d = std::abs(double{want[e]} - double{got[e]});
            f.max_abs = std::max(f.max_abs, std::isnan(d) ? INFINITY : d);
        }
        if (equal) return;
        if (tb != DType::F32 && traits(tb).writes && all_finite(want, ne0)) {
            encoded.resize(row_bytes(tb, ne0));
            encode_row(tb, want, encoded.data(), ne0);
            if (std::memcmp(encoded.data(), gb, encoded.size()) == 0) {
                f.encoded = true;
                return;
            }
        }
        if (!f.differs) f.first_row = row;
        f.differs = true;
    }

    void compare_part(const std::string& name, const TensorView& a, const TensorView& b, std::uint64_t row0,
                      Finding& f) {
        const std::uint64_t ne0 = a.ne()[0], n_rows = a.n_rows();
        const bool same = a.type() == b.type();
        std::vector<std::byte> abuf, bbuf, scratch, encoded;
        std::vector<float> fa, fb;
        const std::uint64_t step =
            std::max<std::uint64_t>(1, std::min(window_rows(a, kWindowBytes), window_rows(b, kWindowBytes)));
        const bool decodable = traits(a.type()).reads && traits(b.type()).reads;
        if (!same && !decodable)
            fail(ErrorKind::Unsupported,
                 "tensor '" + name + "' is " + std::string(type_name(a.type())) + " in " + opt_.labels[0] + " and " +
                     std::string(type_name(b.type())) + " in " + opt_.labels[1] + ", and headfuse does not decode " +
                     std::string(type_name(traits(a.type()).reads ? b.type() : a.type())) +
                     ": tensors of such a type are compared byte for byte, with the same type on both sides");
        for (std::uint64_t r = 0; r < n_rows; r += step) {
            const std::uint64_t n = std::min(step, n_rows - r);
            const auto ra = rows_of(a, r, n, abuf, scratch);
            const auto rb = rows_of(b, r, n, bbuf, scratch);
            const std::uint64_t rba = a.row_nbytes(), rbb = b.row_nbytes();
            if (same && std::memcmp(ra.data(), rb.data(), ra.size()) == 0) continue;
            for (std::uint64_t i = 0; i < n; ++i) {
                const std::byte* pa = ra.data() + i * rba;
                const std::byte* pb = rb.data() + i * rbb;
                if (same && std::memcmp(pa, pb, rba) == 0) continue;
                if (!decodable) {  // one carried type on both sides: the bytes differ
                    if (!f.differs) f.first_row = row0 + r + i;
                    f.differs = true;
                    continue;
                }
                fa.resize(ne0);
                fb.resize(ne0);
                decode_row(a.type(), pa, fa.data(), ne0);
                decode_row(b.type(), pb, fb.data(), ne0);
                if (same) {  // one type, other bytes: a difference whatever the values say (-0 and 0, NaNs)
                    if (!f.differs) f.first_row = row0 + r + i;
                    f.differs = true;
                    Finding ignored;
                    row_finding(fa.data(), fb.data(), pb, b.type(), ne0, 0, encoded, ignored);
                    f.max_abs = std::max(f.max_abs, ignored.max_abs);
                    continue;
                }
                row_finding(fa.data(), fb.data(), pb, b.type(), ne0, row0 + r + i, encoded, f);
            }
        }
    }

    void record(const std::string& name, DType ta, DType tb, const Finding& f) {
        if (ta != tb) report_.same_types = false;
        note_max(name, f.max_abs);
        if (!f.differs) return;
        std::string line = "tensor '" + name + "': ";
        if (ta != tb)
            line += std::string(type_name(ta)) + " in " + opt_.labels[0] + ", " + std::string(type_name(tb)) + " in " +
                    opt_.labels[1] + "; ";
        line += "row " + std::to_string(f.first_row) + " differs";
        if (traits(ta).reads && traits(tb).reads) line += " (max |difference| " + number(f.max_abs) + ")";
        report_.mismatches.push_back(line);
        note_first(name);
    }
    void note_first(const std::string& name) {
        if (report_.first_difference.empty()) report_.first_difference = name;
    }
    void note_max(const std::string& name, double d) {
        if (d > report_.max_abs_diff || (d > 0 && report_.max_abs_diff_tensor.empty())) {
            report_.max_abs_diff = d;
            report_.max_abs_diff_tensor = name;
        }
    }

    VerifyReport& report_;
    const VerifyOptions& opt_;
    std::uint64_t total_, done_ = 0;
};

// One line per hyperparameter that differs, naming the field, its metadata key and both values. `shapes` is
// set when a difference changes the tensors' shapes or list, so that they cannot be compared.
std::vector<std::string> config_differences(const Config& a, const Config& b, const std::array<std::string, 2>& labels,
                                            bool& shapes) {
    std::vector<std::string> out;
    auto differ = [&](std::string_view field, std::string_view key, const std::string& x, const std::string& y,
                      bool shape) {
        if (x == y) return;
        out.push_back(std::string(field) + (key.empty() ? "" : " (" + std::string(key) + ")") + ": " + labels[0] + " " +
                      x + ", " + labels[1] + " " + y);
        shapes = shapes || shape;
    };
    auto u = [](std::uint32_t v) { return std::to_string(v); };
    shapes = false;
    auto k = [&](std::string_view name) { return a.key(name); };
    auto list = [](const std::vector<std::uint32_t>& v) {
        std::string s;
        for (std::uint32_t x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
        return s.empty() ? std::string("uniform") : s;
    };
    differ("architecture", "general.architecture", std::string(a.architecture()), std::string(b.architecture()), false);
    differ("d_model", k("embedding_length"), u(a.d_model), u(b.d_model), true);
    differ("n_heads", k("attention.head_count"), u(a.n_heads), u(b.n_heads), true);
    differ("n_kv_heads", k("attention.head_count_kv"), u(a.n_kv_heads), u(b.n_kv_heads), true);
    differ("d_head", k("attention.key_length"), u(a.d_head), u(b.d_head), true);
    differ("d_ff", k("feed_forward_length"), u(a.d_ff), u(b.d_ff), true);
    differ("layer_heads", k("attention.head_count"), list(a.layer_heads), list(b.layer_heads), true);
    differ("layer_kv_heads", k("attention.head_count_kv"), list(a.layer_kv_heads), list(b.layer_kv_heads), true);
    differ("layer_d_ff", k("feed_forward_length"), list(a.layer_d_ff), list(b.layer_d_ff), true);
    differ("n_layers", k("block_count"), u(a.n_layers), u(b.n_layers), true);
    differ("vocab", k("vocab_size"), u(a.vocab), u(b.vocab), true);
    differ("context_length", k("context_length"), u(a.context_length), u(b.context_length), false);
    differ("rms_eps", k("attention.layer_norm_rms_epsilon"), shortest_float(a.rms_eps), shortest_float(b.rms_eps),
           false);
    differ("rope_theta", k("rope.freq_base"), shortest_float(a.rope_theta), shortest_float(b.rope_theta), false);
    differ("rope_scaling", k("rope.scaling.type"), std::string(rope_scaling_name(a.rope_scaling)),
           std::string(rope_scaling_name(b.rope_scaling)), false);
    differ("rope_scaling_factor", k("rope.scaling.factor"), shortest_float(a.rope_scaling_factor),
           shortest_float(b.rope_scaling_factor), false);
    differ("rope_original_context", k("rope.scaling.original_context_length"), u(a.rope_original_context),
           u(b.rope_original_context), false);
    differ("rope_attn_factor", k("rope.scaling.attn_factor"), shortest_float(a.rope_attn_factor),
           shortest_float(b.rope_attn_factor), false);
    auto joined = [](const std::vector<std::string>& v) {
        std::string s;
        for (const std::string& x : v) s += (s.empty() ? "" : "; ") + x;
        return s.empty() ? std::string("none") : s;
    };
    differ("unmodelled keys", "", joined(a.unmodeled), joined(b.unmodeled), false);
    differ("output", "", a.tied ? "tied" : "untied", b.tied ? "tied" : "untied", true);
    for (const RoleSpec& r : role_table())
        if (r.presence == Presence::Optional)
            differ(tensor_name(r, 0), "", a.optional_roles.contains(r.role) ? "present" : "absent",
                   b.optional_roles.contains(r.role) ? "present" : "absent", true);
    return out;  // donor_d_in is not compared: the fused file has the lens folded away
}

}  // namespace

bool VerifyReport::ok() const noexcept {
    if (!mismatches.empty() || !config_differences.empty()) return false;
    if (!logits_compared) return true;
    return same_types ? logits_identical : logits_finite;
}

std::vector<double> log_softmax(std::span<const float> logits, std::uint32_t vocab) {
    std::vector<double> out(logits.size());
    for (std::size_t p = 0; p + vocab <= logits.size(); p += vocab) {
        double mx = -INFINITY;
        for (std::uint32_t i = 0; i < vocab; ++i) mx = std::max(mx, double{logits[p + i]});
        double sum = 0;
        for (std::uint32_t i = 0; i < vocab; ++i) sum += std::exp(double{logits[p + i]} - mx);
        const double lse = mx + std::log(sum);
        for (std::uint32_t i = 0; i < vocab; ++i) out[p + i] = double{logits[p + i]} - lse;
    }
    return out;
}

std::vector<std::uint32_t> default_tokens(std::uint32_t vocab, std::size_t n) {
    std::vector<std::uint32_t> t(n);
    for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<std::uint32_t>((i * 7919 + 1) % vocab);
    return t;
}

VerifyReport verify(const PerHeadModel& first, const PerHeadModel& second, const VerifyOptions& options) {
    const ModelViews& a = first.views();
    const ModelViews& b = second.views();
    VerifyReport report;
    bool shapes_differ = false;
    report.config_differences = config_differences(a.config, b.config, options.labels, shapes_differ);
    if (a.config.has_lens() && b.config.has_lens() && a.config.donor_d_in != b.config.donor_d_in) {
        report.config_differences.push_back("donor_d_in (lens.proj.weight): " + options.labels[0] + " " +
                                            std::to_string(a.config.donor_d_in) + ", " + options.labels[1] + " " +
                                            std::to_string(b.config.donor_d_in));
        shapes_differ = true;
    }
    if (shapes_differ) return report;  // no tensor has a counterpart to compare with
    if (b.lens_proj && !a.lens_proj)
        fail(ErrorKind::Unsupported, options.labels[1] + " has a projection lens (lens.proj.weight) and " +
                                         options.labels[0] + " has it folded: give the lens model first");
    std::uint64_t total = 0;
    for_each_view(a, [&](const TensorView& v) { total += v.bytes().size(); });
    Comparer cmp(report, options, total);
    for_each_spec(a.config, ModelKind::Fused, [&](TensorSpec&& s) {
        const RoleSpec& r = *s.role;
        if (is_head_role(r) || !s.parts.empty()) {
            const std::vector<const TensorView*> ha = fused_parts(a, s), hb = fused_parts(b, s);
            if (!ha.empty()) cmp.compare(s.name, ha, hb);
        } else if (r.role == Role::TokenEmbd && a.lens_proj && !b.lens_proj) {
            cmp.compare_fold(s.name, a.token_embd, *a.lens_proj, b.token_embd);
        } else {
            cmp.compare(s.name, {role_view(a, r, s.layer)}, {role_view(b, r, s.layer)});
        }
    });
    if (a.lens_proj && b.lens_proj) cmp.compare(a.lens_proj->name(), {&*a.lens_proj}, {&*b.lens_proj});

    if (options.tokens.empty()) {
        auto undecoded = [&](const TensorView& v) {
            if (report.undecoded_type.empty() && !traits(v.type()).reads) report.undecoded_type = traits(v.type()).name;
        };
        for_each_view(a, undecoded);
        for_each_view(b, undecoded);
        if (!report.undecoded_type.empty()) {
            report.logits_compared = false;
            return report;
        }
    }
    const std::vector<std::uint32_t> tokens = options.tokens.empty() ? default_tokens(a.config.vocab) : options.tokens;
    const std::vector<float> la = forward_logits(a, tokens, options.threads, {}, options.n_ctx);
    const std::vector<float> lb = forward_logits(b, tokens, options.threads, {}, options.n_ctx);
    report.logits_identical =
        la.size() == lb.size() && std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)) == 0;
    report.logits_finite = std::all_of(lb.begin(), lb.end(), [](float x) { return std::isfinite(x); });
    const std::uint32_t vocab = a.config.vocab;
    const std::vector<double> pa = log_softmax(la, vocab), pb = log_softmax(lb, vocab);
    for (std::size_t i = 0; i < pa.size(); ++i)
        report.max_logprob_diff = std::max(report.max_logprob_diff, std::abs(pa[i] - pb[i]));
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        auto top = [&](const std::vector<double>& v) {
            return std::max_element(v.begin() + static_cast<std::ptrdiff_t>(p * vocab),
                                    v.begin() + static_cast<std::ptrdiff_t>((p + 1) * vocab)) -
                   v.begin();
        };
        if (top(pa) != top(pb)) report.top_token_agrees = false;
    }
    return report;
}

VerifyReport verify(const PerHeadModel& per_head, const FusedModel& fused, const VerifyOptions& options) {
    return verify(per_head, fused.per_head(), options);
}

}  // namespace headfuse
