// heads scan's attribution method and mean ablation. The backward pass's gradients d(loss)/d(head output) are
// judged by central finite differences of the exact forward pass on small random models of every shape the
// forward pass reads (GQA, MQA, d_head != d_model / n_heads, tied, biases and rope_freqs, deci's per-layer head
// counts) and of every family (qwen2's NEOX RoPE, qwen3's q/k norms, phi3's fused views, Gemma's GELU gate,
// soft-caps, windows, post norms and per-layer RoPE), and the scan's attribution method through the CLI on each
// family; mean ablation by the model whose head is zeroed and whose attn_output bias carries the head's mean
// instead; --refine, the JSON and prune --lowest through the CLI. The agreement of estimate and exact ablation
// (Spearman's rank correlation, the overlap of the top 10) is measured and printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "compute/backward.h"
#include "compute/scan_pass.h"
#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/model.h"
#include "headfuse/verify.h"
#include "model/roles.h"
#include "support/models.h"
#include "support/sharp_model.h"

using namespace headfuse;
using headfuse::test::run_cli;
using headfuse::test::TempDir;

namespace {

// The finite difference's step, as a fraction of the direction (which has the norm of the head's output): large
// enough that the f32 forward pass's rounding of the loss (about 1e-6 nats here, its last bits) moves the quotient
// by under 1e-4 of the head's typical gradient, small enough that the third-order term of the central
// difference (the step squared) stays below 1e-4 relative.
constexpr double kStep = 1e-2;
// |finite difference - backward| <= kRelative * |backward| + kAbsolute. The backward pass and the forward pass
// both round to f32 between operations (relative 6e-8 each, over a few dozen operations); measured worst cases
// on these models (every shape, type and family below but Gemma's) are below 3e-3 relative (seeds 20261128, 1, 2,
// 3), so 1e-2 leaves a margin; the absolute term covers directions along which the loss barely moves (1e-6 nats per
// unit of step, the rounding above divided by the step).
constexpr double kRelative = 1e-2, kAbsolute = 2e-4;

// Gemma's GELU gate. The forward pass reads GELU from ggml's table at the gate's input rounded to f16 (steps of
// 2^-11 relative, ~5e-4): the exact forward is a staircase, the backward differentiates the smooth GELU-tanh it
// tabulates. Each stair moves the loss by ~1e-4 nats here, so the quotient at kStep is off by up to 20% (measured),
// all of it the table's: with the forward pass's GELU replaced by the smooth gelu_f32 (a change made for the
// measurement only), the same check at kStep holds within 1.8e-3 relative on these three models (seeds 20261128,
// 1, 2, 3). So the slope is taken over a wide interval instead, where the stairs average out: the half differences
// at kGeluSteps steps up to kGeluSpan fitted by least squares with a1 s + a3 s^3 (the cubic term absorbs the
// curvature; against the smooth GELU this fit is within 4.5e-3 relative). Against the table, what the stairs leave
// is measured at up to 1.8e-3 nats per unit step, 3.8e-2 of the derivatives above 0.02 (same seeds): the bound is
// kGeluRelative of the derivative plus kGeluAbsolute. Dropping any one Gemma operation from the backward pass (the
// window, either soft-cap's derivative, the query scale, the local RoPE, a post norm, a q or k norm, GELU's second
// term) fails it.
constexpr double kGeluSpan = 0.25;
constexpr int kGeluSteps = 8;
constexpr double kGeluRelative = 5e-2, kGeluAbsolute = 3e-3;

struct Case {
    std::string name;
    Config config;
    std::optional<DType> type;  // the weights encoded to this type by fuse (the backward reads them decoded)
    bool fused = false;         // read from the fused file (phi3: per-head views of attn_qkv and ffn_up)
    float norm_spread = 0.0f;   // norm weights 1 +- this (sharp_tensors), so that every norm's weight matters
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

Config with_context(Config c) {
    c.context_length = 512;
    return c;
}

// A Gemma of small shapes (tied, GQA, d_head != d_model / n_heads) whose features bite on 12 tokens: windows of 5
// keys, soft-caps of the order of the sharp model's scores and logits, gemma3's 6 layers (5 local, with their own
// RoPE base, and 1 global, with linear scaling) and its final soft-cap. A layer's window and scores shape the
// gradients of the layers below it only: gemma2 has a local layer (2) above a global one.
Config gemma_family(Family f) {
    const std::uint32_t layers = f == Family::Gemma3 ? 6 : f == Family::Gemma2 ? 3 : 2;
    Config c = with_context(test::make_config(64, 4, 2, 32, 128, layers, 300, true));
    c.family = f;
    c.rms_eps = 1e-6f;
    if (f == Family::Gemma) return c;
    for (Role r : {Role::PostAttnNorm, Role::PostFfwNorm}) c.optional_roles.insert(r);
    c.sliding_window = 5;
    c.final_softcap = 3.0f;
    if (f == Family::Gemma2) c.attn_softcap = 2.0f;
    if (f == Family::Gemma3) {
        for (Role r : {Role::AttnQNorm, Role::AttnKNorm}) c.optional_roles.insert(r);
        c.rope_theta = 1000000.0f;
        c.rope_theta_swa = 10000.0f;
        c.rope_scaling = RopeScaling::Linear;
        c.rope_scaling_factor = 8.0f;
    }
    return c;
}

std::vector<Case> cases() {
    std::vector<Case> out;
    out.push_back({"gqa_wide_heads", with_context(test::make_config(64, 4, 2, 32, 128, 2, 300)), std::nullopt});
    out.push_back({"mqa", with_context(test::make_config(64, 4, 1, 16, 96, 2, 300)), std::nullopt});
    out.push_back({"mha_tied", with_context(test::make_config(64, 4, 4, 16, 128, 2, 300, true)), std::nullopt});
    Config b = with_context(test::make_config(64, 4, 2, 16, 128, 2, 300));
    for (Role r : {Role::AttnQBias, Role::AttnKBias, Role::AttnVBias, Role::AttnOutputBias, Role::FfnGateBias,
                   Role::FfnUpBias, Role::FfnDownBias, Role::RopeFreqs})
        b.optional_roles.insert(r);
    out.push_back({"biases_rope_freqs", b, std::nullopt});
    Config d = with_context(test::make_config(64, 4, 2, 16, 128, 3, 300));
    d.set_layer_counts({4, 2, 0}, {2, 1, 0}, {128, 96, 64});
    out.push_back({"deci", d, std::nullopt});
    Config q = with_context(test::make_config(64, 4, 2, 16, 128, 2, 300));  // NEOX RoPE, q/k/v biases
    q.family = Family::Qwen2;
    for (Role r : {Role::AttnQBias, Role::AttnKBias, Role::AttnVBias}) q.optional_roles.insert(r);
    out.push_back({"qwen2", q, std::nullopt});
    out.push_back({"q8_0", with_context(test::make_config(64, 4, 2, 32, 128, 2, 300)), DType::Q8_0});
    out.push_back({"q4_k", with_context(test::make_config(256, 4, 2, 64, 512, 2, 300)), DType::Q4_K});
    // One model of each family besides llama's (deci's and qwen2's above), with every feature of its graph.
    // qwen3: per-head q/k norms, d_head free of d_model / n_heads.
    out.push_back({"qwen3",
                   with_context(test::with_family(test::make_config(64, 4, 2, 32, 128, 2, 300), Family::Qwen3)),
                   std::nullopt, false, 0.3f});
    // phi3: the views of its fused file (Q, K, V as row ranges of attn_qkv, gate and up of ffn_up), NEOX RoPE.
    Config p = with_context(test::make_config(64, 4, 2, 16, 128, 2, 300));
    p.family = Family::Phi3;
    out.push_back({"phi3", p, std::nullopt, true, 0.3f});
    out.push_back({"gemma", gemma_family(Family::Gemma), std::nullopt, false, 0.3f});
    out.push_back({"gemma2", gemma_family(Family::Gemma2), std::nullopt, false, 0.3f});
    out.push_back({"gemma3", gemma_family(Family::Gemma3), std::nullopt, false, 0.3f});
    return out;
}

std::vector<std::uint32_t> some_tokens(std::uint32_t vocab, std::size_t n) {
    std::vector<std::uint32_t> t(n);
    for (std::size_t i = 0; i < n; ++i) t[i] = std::uint32_t((i * 37 + 5) % vocab);
    return t;
}

std::vector<double> gelu_steps() {
    std::vector<double> out;
    for (int k = 1; k <= kGeluSteps; ++k) out.push_back(kGeluSpan * k / kGeluSteps);
    return out;
}

// The derivative at 0 of a loss sampled at +-steps[k], from its half differences d[k] = (L(s) - L(-s)) / 2: d / s
// for one step; for several, a1 of the least-squares fit d(s) = a1 s + a3 s^3 (the odd terms of the loss's
// expansion; the even ones cancel in a central difference).
double slope_at_zero(const std::vector<double>& steps, const std::vector<double>& d) {
    if (steps.size() == 1) return d[0] / steps[0];
    double s2 = 0, s4 = 0, s6 = 0, sd = 0, s3d = 0;
    for (std::size_t k = 0; k < steps.size(); ++k) {
        const double s = steps[k];
        s2 += s * s;
        s4 += s * s * s * s;
        s6 += s * s * s * s * s * s;
        sd += s * d[k];
        s3d += s * s * s * d[k];
    }
    return (sd * s6 - s3d * s4) / (s2 * s6 - s4 * s4);
}

class GradientCheck : public ::testing::TestWithParam<Case> {};

}  // namespace

// For every head, the backward pass's g . u against (loss(z + step u) - loss(z - step u)) / (2 step) of the exact
// forward pass (the head's output z replaced at every position), along u = z (the direction zero ablation moves
// it) and along a random direction of the same norm.
TEST_P(GradientCheck, BackwardMatchesFiniteDifferencesOfTheForwardPass) {
    const Config& c = GetParam().config;
    const auto tensors = test::sharp_tensors(c, test::test_seed(), GetParam().norm_spread);
    const PerHeadModel model = test::sharp_model(c, tensors);
    ModelViews v = model.views();
    TempDir dir;
    std::optional<FusedModel> encoded;
    if (GetParam().type || GetParam().fused) {
        FuseOptions fo;
        fo.type = GetParam().type;
        fuse(model, dir / "encoded.gguf", fo);
        encoded.emplace(FusedModel::open(dir / "encoded.gguf"));
        v = encoded->views();
        if (GetParam().type) {
            ASSERT_EQ(v.layers[0].ffn_down.type(), *GetParam().type);
        }
        if (c.arch().fused_qkv) {  // the views are row ranges of attn_qkv
            const TensorInfo* qkv = encoded->file().find_tensor("blk.0.attn_qkv.weight");
            ASSERT_NE(qkv, nullptr);
            EXPECT_EQ(v.layers[0].k[1].bytes().data(),
                      encoded->file().tensor_data(*qkv).data() +
                          std::size_t{c.n_heads + 1} * c.d_head * c.d_model * sizeof(float));
        }
    }
    const auto tokens = some_tokens(c.vocab, 12);
    const std::size_t n = tokens.size();
    const bool gelu = c.arch().gate == GateActivation::GeluTanh;
    const std::vector<double> steps = gelu ? gelu_steps() : std::vector{kStep};
    const double relative = gelu ? kGeluRelative : kRelative, absolute = gelu ? kGeluAbsolute : kAbsolute;
    const compute::Recording rec = compute::record_forward(v, tokens, 0);
    EXPECT_EQ(rec.logits, forward_logits(v, tokens)) << "the recorded pass is the forward pass";
    const auto grads = compute::head_output_gradients(v, tokens, rec, 0);
    std::mt19937_64 rng(test::test_seed());
    std::normal_distribution<double> normal;
    double worst = 0, worst_abs = 0;
    std::size_t checked = 0;
    for (std::uint32_t l = 0; l < c.n_layers; ++l) {
        const std::uint32_t heads = c.n_heads_at(l), dh = c.d_head;
        ASSERT_EQ(grads[l].size(), n * heads * dh) << l;
        if (heads == 0) continue;
        // Variant ((2h + dir) * S + k) * 2 + sign: head h along z (dir 0) or a random direction (dir 1), moved by
        // +steps[k] (sign 0) or -steps[k] (sign 1).
        const std::size_t S = steps.size();
        std::vector<std::vector<float>> values(4 * heads * S, std::vector<float>(n * dh));
        std::vector<double> analytic(2 * heads);
        std::vector<compute::HeadPatch> patches;
        for (std::uint32_t h = 0; h < heads; ++h) {
            std::vector<double> z(n * dh), r(n * dh);
            double zz = 0, rr = 0;
            for (std::size_t t = 0; t < n; ++t)
                for (std::uint32_t d = 0; d < dh; ++d) {
                    z[t * dh + d] = rec.layers[l].att[(t * heads + h) * dh + d];
                    r[t * dh + d] = normal(rng);
                    zz += z[t * dh + d] * z[t * dh + d];
                    rr += r[t * dh + d] * r[t * dh + d];
                }
            for (double& x : r) x *= std::sqrt(zz / rr);
            for (int dir = 0; dir < 2; ++dir) {
                const std::vector<double>& u = dir == 0 ? z : r;
                double gu = 0;
                for (std::size_t t = 0; t < n; ++t)
                    for (std::uint32_t d = 0; d < dh; ++d)
                        gu += double(grads[l][(t * heads + h) * dh + d]) * u[t * dh + d];
                analytic[2 * h + dir] = gu;
                for (std::size_t k = 0; k < S; ++k)
                    for (int sign = 0; sign < 2; ++sign) {
                        const std::size_t b = ((2 * h + dir) * S + k) * 2 + sign;
                        for (std::size_t i = 0; i < n * dh; ++i)
                            values[b][i] = float(z[i] + (sign == 0 ? steps[k] : -steps[k]) * u[i]);
                        patches.push_back({l, h, b * n, n, values[b].data(), dh});
                    }
            }
        }
        const std::vector<std::uint32_t> starts(4 * heads * S, l);
        const auto losses = compute::variant_losses(v, tokens, starts, rec, patches, 0);
        for (std::uint32_t h = 0; h < heads; ++h)
            for (int dir = 0; dir < 2; ++dir) {
                std::vector<double> half_differences(S);
                for (std::size_t k = 0; k < S; ++k) {
                    const std::size_t b = ((2 * h + dir) * S + k) * 2;
                    half_differences[k] = (losses[b] - losses[b + 1]) / 2;
                }
                const double fd = slope_at_zero(steps, half_differences);
                const double an = analytic[2 * h + dir];
                EXPECT_LE(std::abs(fd - an), relative * std::abs(an) + absolute)
                    << "head " << l << ":" << h << (dir == 0 ? " along z" : " along a random direction") << ": finite "
                    << "difference " << fd << ", backward " << an;
                worst_abs = std::max(worst_abs, std::abs(fd - an));
                if (std::abs(an) > 100 * kAbsolute) worst = std::max(worst, std::abs(fd - an) / std::abs(an));
                ++checked;
            }
    }
    std::printf("[headfuse] %s: %zu directional derivatives, worst relative error %.3g, absolute %.3g\n",
                GetParam().name.c_str(), checked, worst, worst_abs);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GradientCheck, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

namespace {

std::string slurp(const std::filesystem::path& p) {
    const std::vector<std::byte> b = test::read_bytes(p);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

std::vector<std::uint32_t> write_tokens(const std::filesystem::path& p, std::uint32_t vocab, std::size_t n) {
    const auto t = some_tokens(vocab, n);
    std::ofstream f(p);
    for (const std::uint32_t x : t) f << x << ' ';
    return t;
}

// delta of every head of a scan's JSON, by (layer, head).
std::map<std::pair<int, int>, double> deltas(const nlohmann::json& j) {
    std::map<std::pair<int, int>, double> out;
    for (const auto& h : j["heads"]) out[{h["layer"].get<int>(), h["head"].get<int>()}] = h["delta"].get<double>();
    return out;
}

Config small_gqa() { return with_context(test::make_config(64, 4, 2, 32, 128, 2, 300)); }

}  // namespace

// --method attribution --refine K: the K heads of largest |estimate| carry the exact method's values (the same
// numbers), the others the estimates, and the JSON says which is which; the figure names the method; prune
// --lowest says what ranked (method, ablation, how many heads exact). --refine without attribution is refused.
TEST(ScanAttribution, RefineAblatesTheTopHeadsExactlyAndPruneSaysWhatRanked) {
    TempDir dir;
    const Config c = small_gqa();
    test::write_sharp_model(c, test::test_seed(), dir / "a.ph.gguf");
    const std::string model = (dir / "a.ph.gguf").string(), tokens = (dir / "tokens.txt").string();
    write_tokens(tokens, c.vocab, 16);
    auto scan = [&](const std::string& out, std::vector<std::string> extra) {
        std::vector<std::string> args = {"heads", "scan", model, "--tokens-file", tokens, "-o", out, "-q"};
        args.insert(args.end(), extra.begin(), extra.end());
        const auto r = run_cli(args);
        EXPECT_EQ(r.status, 0) << r.err;
        return nlohmann::json::parse(slurp(out));
    };
    const auto exact = scan((dir / "e.json").string(), {});
    const auto est = scan((dir / "a.json").string(), {"--method", "attribution"});
    const auto refined = scan((dir / "r.json").string(),
                              {"--method", "attribution", "--refine", "3", "--svg", (dir / "r.svg").string()});
    EXPECT_EQ(est["method"], "attribution");
    EXPECT_EQ(refined["method"], "attribution");
    EXPECT_EQ(refined["base_loss"], exact["base_loss"]);
    for (const auto& h : est["heads"]) EXPECT_EQ(h["exact"], false);
    const auto e = deltas(exact), a = deltas(est);
    std::vector<std::pair<int, int>> by_size;
    for (const auto& [k, v] : a) by_size.push_back(k);
    std::stable_sort(by_size.begin(), by_size.end(),
                     [&](const auto& x, const auto& y) { return std::abs(a.at(x)) > std::abs(a.at(y)); });
    const std::set<std::pair<int, int>> top(by_size.begin(), by_size.begin() + 3);
    int n_exact = 0;
    for (const auto& h : refined["heads"]) {
        const std::pair<int, int> k{h["layer"].get<int>(), h["head"].get<int>()};
        EXPECT_EQ(h["exact"].get<bool>(), top.contains(k)) << k.first << ":" << k.second;
        EXPECT_EQ(h["delta"].get<double>(), top.contains(k) ? e.at(k) : a.at(k)) << k.first << ":" << k.second;
        n_exact += h["exact"].get<bool>();
    }
    EXPECT_EQ(n_exact, 3);
    EXPECT_NE(slurp(dir / "r.svg").find("attribution, 3 refined exactly"), std::string::npos);

    const auto out = dir / "pruned.gguf";
    auto r = run_cli(
        {"heads", "prune", model, "-o", out.string(), "--lowest", "0.5", "--scan", (dir / "r.json").string(), "-q"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("(method attribution, ablation zero, 3 of 8 heads exact; made on this model"),
              std::string::npos)
        << r.out;

    r = run_cli({"heads", "scan", model, "--tokens-file", tokens, "-o", (dir / "x.json").string(), "--refine", "2"});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err, "headfuse: --refine: goes with --method attribution (the exact method ablates every head)\n");
    EXPECT_FALSE(std::filesystem::exists(dir / "x.json"));
}

// Every family through the CLI, on the fused file llama.cpp would run: `heads scan --method attribution --refine 2`
// succeeds (it refused qwen3's q/k norms and Gemma's graphs by name before the backward pass modelled them), every
// head has a finite estimate, and the 2 refined heads carry the exact method's values, bit for bit.
TEST(ScanAttribution, EveryFamilyScansThroughTheCli) {
    for (const Case& k : cases()) {
        if (k.config.family == Family::Llama || k.type) continue;
        SCOPED_TRACE(k.name);
        TempDir dir;
        const std::filesystem::path model = test::fused_sharp_model(k.config, dir.path());
        ASSERT_FALSE(model.empty());
        const std::string tokens = (dir / "tokens.txt").string();
        write_tokens(tokens, k.config.vocab, 16);
        auto scan = [&](const std::string& out, std::vector<std::string> extra) {
            std::vector<std::string> args = {"heads", "scan", model.string(), "--tokens-file", tokens, "-o", out, "-q"};
            args.insert(args.end(), extra.begin(), extra.end());
            const auto r = run_cli(args);
            EXPECT_EQ(r.status, 0) << r.err;
            return nlohmann::json::parse(slurp(out));
        };
        const auto exact = deltas(scan((dir / "e.json").string(), {}));
        const auto refined = scan((dir / "r.json").string(), {"--method", "attribution", "--refine", "2"});
        EXPECT_EQ(refined["method"], "attribution");
        std::size_t heads = 0, n_exact = 0;
        for (std::uint32_t l = 0; l < k.config.n_layers; ++l) heads += k.config.n_heads_at(l);
        ASSERT_EQ(refined["heads"].size(), heads);
        for (const auto& h : refined["heads"]) {
            const std::pair<int, int> key{h["layer"].get<int>(), h["head"].get<int>()};
            EXPECT_TRUE(std::isfinite(h["delta"].get<double>())) << key.first << ":" << key.second;
            if (!h["exact"].get<bool>()) continue;
            ++n_exact;
            EXPECT_EQ(h["delta"].get<double>(), exact.at(key)) << key.first << ":" << key.second;
        }
        EXPECT_EQ(n_exact, 2u);
    }
}

// Mean ablation replaces a head's output by its mean over the tokens: the same as zeroing the head's columns of
// attn_output and adding attn_output times the mean as the layer's attn_output bias, a model the plain forward
// pass runs. The mean and the bias are computed here, in f64.
TEST(ScanMeanAblation, EqualsTheZeroedHeadWithItsMeanAsABias) {
    // Two ways of adding the same vector, each rounded to f32 (6e-8 relative) through the layers above: the
    // losses differ by a few 1e-7 nats.
    constexpr double kTolerance = 1e-5;
    TempDir dir;
    const Config c = small_gqa();
    const auto tensors = test::sharp_tensors(c, test::test_seed());
    test::sharp_model(c, tensors).save(dir / "a.ph.gguf");
    const auto tokens = write_tokens(dir / "tokens.txt", c.vocab, 16);
    const auto r =
        run_cli({"heads", "scan", (dir / "a.ph.gguf").string(), "--tokens-file", (dir / "tokens.txt").string(), "-o",
                 (dir / "m.json").string(), "--ablation", "mean", "-q"});
    ASSERT_EQ(r.status, 0) << r.err;
    const auto j = nlohmann::json::parse(slurp(dir / "m.json"));
    EXPECT_EQ(j["ablation"], "mean");
    EXPECT_EQ(j["method"], "exact");
    const auto d = deltas(j);

    const PerHeadModel plain = test::sharp_model(c, tensors);
    const compute::Recording rec = compute::record_forward(plain.views(), tokens, 0);
    const std::size_t n = tokens.size(), dh = c.d_head, q_dim = c.q_dim();
    Config cb = c;
    cb.optional_roles.insert(Role::AttnOutputBias);
    for (const auto& [layer, head] : {std::pair{0u, 1u}, std::pair{1u, 3u}}) {
        std::vector<double> mean(dh, 0.0);
        for (std::size_t t = 0; t < n; ++t)
            for (std::size_t i = 0; i < dh; ++i)
                mean[i] += rec.layers[layer].att[t * q_dim + head * dh + i] / double(n);
        std::vector<test::SharpTensor> edited;
        for (const TensorSpec& s : tensor_layout(cb, ModelKind::PerHead)) {
            const auto it =
                std::find_if(tensors.begin(), tensors.end(), [&](const auto& t) { return t.name == s.name; });
            if (it != tensors.end()) {
                edited.push_back(*it);
                if (s.name == "blk." + std::to_string(layer) + ".attn_output.weight") {
                    std::vector<float>& w = edited.back().values;
                    std::vector<float> bias(c.d_model);
                    for (std::size_t row = 0; row < c.d_model; ++row) {
                        double b = 0;
                        for (std::size_t i = 0; i < dh; ++i) {
                            b += double(w[row * q_dim + head * dh + i]) * float(mean[i]);
                            w[row * q_dim + head * dh + i] = 0.0f;
                        }
                        bias[row] = float(b);
                    }
                    edited.push_back({"blk." + std::to_string(layer) + ".attn_output.bias", {c.d_model}, bias});
                }
                continue;
            }
            if (s.name != "blk." + std::to_string(layer) + ".attn_output.bias")
                edited.push_back({s.name, s.ne, std::vector<float>(s.ne[0], 0.0f)});  // a zero bias adds nothing
        }
        const PerHeadModel biased = test::sharp_model(cb, edited);
        const double loss = compute::next_token_loss(forward_logits(biased.views(), tokens), tokens, c.vocab);
        EXPECT_NEAR(d.at({int(layer), int(head)}), loss - j["base_loss"].get<double>(), kTolerance)
            << layer << ":" << head;
    }
}

namespace {

// Spearman's rank correlation of a and b (ties share their mean rank).
double spearman(const std::vector<double>& a, const std::vector<double>& b) {
    auto ranks = [](const std::vector<double>& v) {
        std::vector<std::size_t> order(v.size());
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](auto x, auto y) { return v[x] < v[y]; });
        std::vector<double> r(v.size());
        for (std::size_t i = 0; i < v.size();) {
            std::size_t j = i;
            while (j + 1 < v.size() && v[order[j + 1]] == v[order[i]]) ++j;
            for (std::size_t k = i; k <= j; ++k) r[order[k]] = double(i + j) / 2;
            i = j + 1;
        }
        return r;
    };
    const std::vector<double> ra = ranks(a), rb = ranks(b);
    const double mean = double(a.size() - 1) / 2;
    double cov = 0, va = 0, vb = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        cov += (ra[i] - mean) * (rb[i] - mean);
        va += (ra[i] - mean) * (ra[i] - mean);
        vb += (rb[i] - mean) * (rb[i] - mean);
    }
    return cov / std::sqrt(va * vb);
}

// How many of the 10 heads of largest |a| are among the 10 of largest |b|.
int top10_overlap(const std::vector<double>& a, const std::vector<double>& b) {
    auto top = [](const std::vector<double>& v) {
        std::vector<std::size_t> order(v.size());
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](auto x, auto y) { return std::abs(v[x]) > std::abs(v[y]); });
        return std::set<std::size_t>(order.begin(), order.begin() + 10);
    };
    const auto ta = top(a), tb = top(b);
    return int(std::count_if(ta.begin(), ta.end(), [&](std::size_t i) { return tb.contains(i); }));
}

std::vector<double> flat_deltas(const HeadScan& s) {
    std::vector<double> out;
    for (const auto& row : s.loss)
        for (const double l : row) out.push_back(l - s.base_loss);
    return out;
}

}  // namespace

// The estimate against exact ablation on every head: Spearman's rank correlation and the top-10 overlap, printed
// (docs/SURGERY.md quotes them), on a model as `init` makes it (weights N(0, 0.02): heads that change the loss by
// about 1e-2 nats, where the first-order term dominates) and on a sharp model (weights of +-2/sqrt(n_in): heads that
// change it by up to nats, where it does not), with zero and mean ablation. The bounds are the measured values less a
// margin: the init-like model's rank correlation was 0.98-0.99, the sharp model's 0.79-0.82.
TEST(ScanAgreement, EstimateRanksTheHeadsAsExactAblationDoes) {
    constexpr double kInitLikeRho = 0.9, kSharpRho = 0.5;
    const Config c = with_context(test::make_config(256, 8, 8, 32, 512, 4, 1000));
    const PerHeadModel init_like = PerHeadModel::random_init(c, 7);
    const auto tensors = test::sharp_tensors(c, test::test_seed());
    const PerHeadModel sharp = test::sharp_model(c, tensors);
    std::vector<std::uint32_t> tokens(64);
    for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = std::uint32_t((i * 389 + 11) % c.vocab);
    for (const auto& [name, model, bound] :
         {std::tuple{"init-like", &init_like, kInitLikeRho}, std::tuple{"sharp", &sharp, kSharpRho}})
        for (const Ablation ablation : {Ablation::Zero, Ablation::Mean}) {
            ScanOptions o;
            o.ablation = ablation;
            const auto exact = flat_deltas(scan_heads(model->views(), tokens, o));
            o.method = ScanMethod::Attribution;
            const auto estimate = flat_deltas(scan_heads(model->views(), tokens, o));
            const double rho = spearman(exact, estimate);
            const int overlap = top10_overlap(exact, estimate);
            std::printf(
                "[headfuse] %s model (d_model 256, 8 heads, 4 layers, 64 tokens), %s ablation: Spearman rho "
                "%.3f, top-10 overlap %d/10\n",
                name, to_string(ablation), rho, overlap);
            EXPECT_GE(rho, bound) << name << ", " << to_string(ablation);
        }
}

// A Hugging Face and a TransformerLens checkpoint are read where they lie, in their own row order (rotate-half Q
// and K rows, transposed heads): the backward pass reads their rows through the same windows as the forward pass,
// and their estimates are, head for head, those of the GGUF file (the same numbers).
TEST(ScanAttribution, ForeignCheckpointsGiveTheGgufFilesEstimates) {
    TempDir dir;
    const Config c = small_gqa();
    test::write_sharp_model(c, test::test_seed(), dir / "a.ph.gguf");
    const std::string tokens = (dir / "tokens.txt").string();
    write_tokens(tokens, c.vocab, 16);
    auto scan = [&](const std::string& in, const std::string& out) {
        const auto r = run_cli({"heads", "scan", in, "--tokens-file", tokens, "-o", out, "--method", "attribution",
                                "--ablation", "mean", "-q"});
        EXPECT_EQ(r.status, 0) << r.err;
        return deltas(nlohmann::json::parse(slurp(out)));
    };
    const auto want = scan((dir / "a.ph.gguf").string(), (dir / "a.json").string());
    for (const std::string format : {"hf", "transformer-lens"}) {
        const auto folder = dir / format;
        const auto r =
            run_cli({"export", (dir / "a.ph.gguf").string(), "-o", folder.string(), "--format", format, "-q"});
        ASSERT_EQ(r.status, 0) << r.err;
        EXPECT_EQ(scan(folder.string(), (dir / (format + ".json")).string()), want) << format;
    }
}
