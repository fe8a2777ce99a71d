// headfuse heads scan: which heads matter, by exact ablation, by attribution (a first-order estimate from one
// forward and one backward pass), or by attribution refined with exact ablation of the heads it ranks highest.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/fail.h"
#include "base/parallel.h"
#include "compute/backward.h"
#include "compute/scan_pass.h"
#include "headfuse/error.h"
#include "headfuse/forward.h"

namespace headfuse {
namespace {

// Rows one batch of exact passes holds (variants x tokens): a row takes about 4 x (3 d_model + 2 q_dim + 2 kv_dim
// + 2 d_ff + vocab) bytes of activations, 300 KiB for a 7B LLaMA shape, so a batch stays near 600 MiB there.
constexpr std::size_t kMaxBatchRows = 2048;

// Each head's mean output over the tokens: [layer] -> [heads * d_head], summed in f64, rounded once to f32.
std::vector<std::vector<float>> head_means(const compute::Recording& rec, const Config& c, std::size_t n) {
    std::vector<std::vector<float>> out(c.n_layers);
    for (std::uint32_t l = 0; l < c.n_layers; ++l) {
        const std::size_t width = std::size_t{c.n_heads_at(l)} * c.d_head;
        std::vector<double> sum(width, 0.0);
        for (std::size_t t = 0; t < n && width; ++t)
            for (std::size_t i = 0; i < width; ++i) sum[i] += double(rec.layers[l].att[t * width + i]);
        out[l].resize(width);
        for (std::size_t i = 0; i < width; ++i) out[l][i] = float(sum[i] / double(n));
    }
    return out;
}

struct Progress {
    const ProgressFn& fn;
    std::uint64_t done = 0, total = 0;
    void add(std::uint64_t units) {
        done += units;
        if (fn) fn(done, total);
    }
};

// The loss with each of `heads` ablated, exactly: in layer order, kMaxBatchRows rows of variants at a time, each
// batch one pass from its lowest layer up (a head joins the batch's pass at its own layer).
void ablate_exactly(const ModelViews& model, std::span<const std::uint32_t> tokens, const compute::Recording& rec,
                    std::span<const HeadRef> heads, Ablation ablation, const std::vector<std::vector<float>>& means,
                    unsigned threads, Progress& progress, HeadScan& out) {
    const Config& c = model.config;
    const std::size_t n = tokens.size(), per_batch = std::max<std::size_t>(1, kMaxBatchRows / n);
    std::vector<HeadRef> order(heads.begin(), heads.end());
    std::stable_sort(order.begin(), order.end(), [](const HeadRef& a, const HeadRef& b) { return a.layer < b.layer; });
    for (std::size_t first = 0; first < order.size(); first += per_batch) {
        const std::span<const HeadRef> batch =
            std::span(order).subspan(first, std::min(per_batch, order.size() - first));
        std::vector<std::uint32_t> starts;
        std::vector<compute::HeadPatch> patches;
        for (std::size_t b = 0; b < batch.size(); ++b) {
            const HeadRef& h = batch[b];
            starts.push_back(h.layer);
            patches.push_back(
                {h.layer, h.head, b * n, n,
                 ablation == Ablation::Mean ? means[h.layer].data() + std::size_t{h.head} * c.d_head : nullptr, 0});
        }
        const std::vector<double> losses = compute::variant_losses(model, tokens, starts, rec, patches, threads,
                                                                   [&](std::size_t active) { progress.add(active); });
        for (std::size_t b = 0; b < batch.size(); ++b) {
            out.loss[batch[b].layer][batch[b].head] = losses[b];
            out.exact[batch[b].layer][batch[b].head] = true;
        }
    }
}

}  // namespace

const char* to_string(ScanMethod m) noexcept { return m == ScanMethod::Exact ? "exact" : "attribution"; }
const char* to_string(Ablation a) noexcept { return a == Ablation::Zero ? "zero" : "mean"; }

HeadScan scan_heads(const ModelViews& model, std::span<const std::uint32_t> tokens, const ScanOptions& o) {
    if (tokens.size() < 2)
        fail(ErrorKind::InvalidArgument, "scan: at least 2 tokens are needed (each position predicts the next token)");
    if (o.refine > 0 && o.method != ScanMethod::Attribution)
        fail(ErrorKind::InvalidArgument, "scan: refine applies to the attribution method (exact ablates every head)");
    const unsigned threads = resolve_threads(o.threads);
    const Config& c = model.config;
    const std::size_t n = tokens.size();
    HeadScan out;
    out.method = o.method;
    out.ablation = o.ablation;
    out.loss.resize(c.n_layers);
    out.exact.resize(c.n_layers);
    std::vector<HeadRef> all;
    for (std::uint32_t l = 0; l < c.n_layers; ++l) {
        out.loss[l].assign(c.n_heads_at(l), 0.0);
        out.exact[l].assign(c.n_heads_at(l), false);
        for (std::uint32_t h = 0; h < c.n_heads_at(l); ++h) all.push_back({l, h});
    }
    // Work in units of layers run (a batch of variants through a layer counts once per variant).
    Progress progress{o.progress};
    progress.total = c.n_layers;
    if (o.method == ScanMethod::Exact)
        for (const HeadRef& h : all) progress.total += c.n_layers - h.layer;
    else
        progress.total += c.n_layers;
    // One clean pass, keeping the residual stream at the entry of every layer (an ablation in layer L starts
    // there, as the layers below it do not see it) and what the backward pass reads.
    const compute::Recording rec = compute::record_forward(
        model, tokens, threads, [&] { progress.add(1); }, o.n_ctx);
    out.base_loss = rec.loss;
    const std::vector<std::vector<float>> means =
        o.ablation == Ablation::Mean ? head_means(rec, c, n) : std::vector<std::vector<float>>{};
    if (o.method == ScanMethod::Exact) {
        ablate_exactly(model, tokens, rec, all, o.ablation, means, threads, progress, out);
        return out;
    }
    // Attribution: the first-order change of the loss when z moves to zero (-g.z) or to the mean (g.(mean - z)).
    const std::vector<std::vector<float>> grads =
        compute::head_output_gradients(model, tokens, rec, threads, [&] { progress.add(1); });
    for (std::uint32_t l = 0; l < c.n_layers; ++l) {
        const std::uint32_t heads = c.n_heads_at(l), dh = c.d_head;
        for (std::uint32_t h = 0; h < heads; ++h) {
            double change = 0;
            for (std::size_t t = 0; t < n; ++t)
                for (std::uint32_t d = 0; d < dh; ++d) {
                    const std::size_t i = (t * heads + h) * dh + d;
                    const double z = rec.layers[l].att[i];
                    const double target =
                        o.ablation == Ablation::Mean ? double(means[l][std::size_t{h} * dh + d]) : 0.0;
                    change += double(grads[l][i]) * (target - z);
                }
            out.loss[l][h] = rec.loss + change;
        }
    }
    if (o.refine == 0) return out;
    // Refine: the K heads of largest |estimate|, ablated exactly.
    std::vector<HeadRef> ranked = all;
    std::stable_sort(ranked.begin(), ranked.end(), [&](const HeadRef& a, const HeadRef& b) {
        return std::abs(out.loss[a.layer][a.head] - rec.loss) > std::abs(out.loss[b.layer][b.head] - rec.loss);
    });
    ranked.resize(std::min<std::size_t>(ranked.size(), o.refine));
    for (const HeadRef& h : ranked) progress.total += c.n_layers - h.layer;
    ablate_exactly(model, tokens, rec, ranked, o.ablation, means, threads, progress, out);
    return out;
}

HeadScan scan_heads(const ModelViews& model, std::span<const std::uint32_t> tokens, unsigned threads,
                    const ProgressFn& progress) {
    ScanOptions o;
    o.threads = threads;
    o.progress = progress;
    return scan_heads(model, tokens, o);
}

}  // namespace headfuse
