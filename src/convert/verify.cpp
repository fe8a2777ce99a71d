#include "headfuse/verify.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "headfuse/error.h"
#include "headfuse/fold.h"
#include "headfuse/forward.h"
#include "headfuse/quantize.h"
#include "io/mapped_file.h"
#include "model/roles.h"

namespace headfuse {
namespace {

// Hands a mapped view's pages back to the page cache as its rows are read, a few MiB at a time, so that
// neither model becomes resident whole.
class Releaser {
public:
    explicit Releaser(const TensorView& v) : v_(v) {}
    ~Releaser() { release_to(v_.n_rows()); }
    void read_to(std::uint64_t row_end) {
        if ((row_end - from_) * v_.row_nbytes() >= kWindowBytes) release_to(row_end);
    }

private:
    static constexpr std::uint64_t kWindowBytes = std::uint64_t{4} << 20;
    void release_to(std::uint64_t row_end) {
        if (v_.file() && row_end > from_) v_.file()->release(v_.row(from_).data(), (row_end - from_) * v_.row_nbytes());
        from_ = row_end;
    }
    const TensorView& v_;
    std::uint64_t from_ = 0;
};

class Comparer {
public:
    Comparer(VerifyReport& r, const VerifyOptions& o, std::uint64_t total) : report_(r), opt_(o), total_(total) {}

    // `expected` are the per-head rows of one fused tensor (several views for q/k/v), `actual` the fused
    // tensor, whose bytes are the expected rows one after the other (a 1-D head bias too: its heads stack
    // within the fused tensor's one row). Equal types compare bytes; an F32 source is encoded as the fused
    // tensor is, then compared.
    void compare(const std::vector<const TensorView*>& expected, const TensorView& actual) {
        ++report_.tensors_checked;
        std::uint64_t row = 0, offset = 0;  // row of the expected concatenation, its byte offset in `actual`
        std::vector<std::byte> encoded;
        std::vector<float> floats;
        Releaser actual_pages(actual);
        for (const TensorView* e : expected) {
            Releaser expected_pages(*e);
            for (std::uint64_t r = 0; r < e->n_rows(); ++r, ++row) {
                expected_pages.read_to(r);
                actual_pages.read_to(offset / std::max<std::uint64_t>(1, actual.row_nbytes()));
                auto want = e->row(r);
                const std::uint64_t n = e->type() == actual.type() ? want.size() : row_bytes(actual.type(), e->ne()[0]);
                if (offset + n > actual.bytes().size())
                    return mismatch(actual.name(), "holds fewer bytes than its " + std::to_string(expected.size()) +
                                                       " per-head parts");
                auto got = actual.bytes().subspan(offset, n);
                offset += n;
                if (e->type() != actual.type()) {
                    report_.same_types = false;
                    if (e->type() != DType::F32)
                        return mismatch(actual.name(), "a " + std::string(type_name(e->type())) + " source and a " +
                                                           std::string(type_name(actual.type())) + " file");
                    encoded.resize(got.size());
                    floats.resize(e->ne()[0]);  // a copy: the file may not align its rows for float loads
                    std::memcpy(floats.data(), want.data(), floats.size() * sizeof(float));
                    encode_row(actual.type(), floats.data(), encoded.data(), e->ne()[0]);
                    want = encoded;
                }
                if (want.size() != got.size() || std::memcmp(want.data(), got.data(), want.size()) != 0)
                    return mismatch(actual.name(), "row " + std::to_string(row) + " differs");
            }
            done_ += e->bytes().size();
            if (opt_.progress) opt_.progress(done_, total_);
        }
    }

    // token_embd of a lens model against the fold recomputed from the donor table and the projection.
    void compare_fold(const TensorView& donor, const TensorView& proj, const TensorView& actual) {
        ++report_.tensors_checked;
        LensFold fold(donor, proj);
        const std::uint64_t dm = fold.d_model();
        std::vector<float> block(kFoldBlockRows * dm);
        std::vector<std::byte> encoded(row_bytes(actual.type(), dm));
        if (actual.type() != DType::F32) report_.same_types = false;
        Releaser donor_pages(donor), actual_pages(actual);
        for (std::uint64_t v0 = 0; v0 < fold.vocab(); v0 += kFoldBlockRows) {
            donor_pages.read_to(v0);
            actual_pages.read_to(v0);
            const std::uint64_t n = std::min(kFoldBlockRows, fold.vocab() - v0);
            fold.rows(v0, n, block.data());
            for (std::uint64_t r = 0; r < n; ++r) {
                encode_row(actual.type(), block.data() + r * dm, encoded.data(), dm);
                auto got = actual.row(v0 + r);
                if (std::memcmp(encoded.data(), got.data(), got.size()) != 0)
                    return mismatch(actual.name(), "row " + std::to_string(v0 + r) + " differs from the lens fold");
            }
        }
        done_ += donor.bytes().size() + proj.bytes().size();
        if (opt_.progress) opt_.progress(done_, total_);
    }

private:
    void mismatch(const std::string& name, const std::string& what) {
        report_.mismatches.push_back("tensor '" + name + "': " + what);
    }
    VerifyReport& report_;
    const VerifyOptions& opt_;
    std::uint64_t total_, done_ = 0;
};

// The shortest decimal that reads back as x, so one ulp of rms_eps shows: "500000", "1e-05", "1.0000001e-05"
// (plain digits for exponents -4 to 15, as Python's repr).
std::string shortest(float x) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf - 1, x, std::chars_format::scientific);
    *r.ptr = '\0';  // atoi reads up to a terminator
    const int exponent = std::atoi(std::find(buf, r.ptr, 'e') + 1);
    if (exponent >= -4 && exponent < 16) r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::fixed);
    return std::string(buf, r.ptr);
}

// One line per hyperparameter that differs, naming the field, its metadata key and both values. `shapes` is
// set when a difference changes the tensors' shapes or list, so that they cannot be compared.
std::vector<std::string> config_differences(const Config& a, const Config& b, bool& shapes) {
    std::vector<std::string> out;
    auto differ = [&](std::string_view field, std::string_view key, const std::string& x, const std::string& y,
                      bool shape) {
        if (x == y) return;
        out.push_back(std::string(field) + (key.empty() ? "" : " (" + std::string(key) + ")") + ": per-head " + x +
                      ", fused " + y);
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
    differ("rms_eps", k("attention.layer_norm_rms_epsilon"), shortest(a.rms_eps), shortest(b.rms_eps), false);
    differ("rope_theta", k("rope.freq_base"), shortest(a.rope_theta), shortest(b.rope_theta), false);
    differ("rope_scaling", k("rope.scaling.type"), std::string(rope_scaling_name(a.rope_scaling)),
           std::string(rope_scaling_name(b.rope_scaling)), false);
    differ("rope_scaling_factor", k("rope.scaling.factor"), shortest(a.rope_scaling_factor),
           shortest(b.rope_scaling_factor), false);
    differ("rope_original_context", k("rope.scaling.original_context_length"), u(a.rope_original_context),
           u(b.rope_original_context), false);
    differ("rope_attn_factor", k("rope.scaling.attn_factor"), shortest(a.rope_attn_factor),
           shortest(b.rope_attn_factor), false);
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

VerifyReport verify(const PerHeadModel& per_head, const FusedModel& fused, const VerifyOptions& options) {
    const ModelViews& a = per_head.views();
    const ModelViews& b = fused.views();
    VerifyReport report;
    bool shapes_differ = false;
    report.config_differences = config_differences(a.config, b.config, shapes_differ);
    if (shapes_differ) return report;  // no tensor has a counterpart to compare with
    std::uint64_t total = 0;
    for_each_view(a, [&](const TensorView& v) { total += v.bytes().size(); });
    Comparer cmp(report, options, total);
    for_each_spec(a.config, ModelKind::Fused, [&](TensorSpec&& s) {
        const RoleSpec& r = *s.role;
        if (is_head_role(r)) {
            std::vector<const TensorView*> heads;
            for (const TensorView& h : role_heads(a, r, s.layer)) heads.push_back(&h);
            cmp.compare(heads, fused.fused(s.layer, r.role));
        } else if (r.role == Role::TokenEmbd && a.lens_proj) {
            cmp.compare_fold(a.token_embd, *a.lens_proj, b.token_embd);
        } else {
            cmp.compare({role_view(a, r, s.layer)}, *role_view(b, r, s.layer));
        }
    });

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
    const std::vector<float> la = forward_logits(a, tokens, options.threads);
    const std::vector<float> lb = forward_logits(b, tokens, options.threads);
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

}  // namespace headfuse
