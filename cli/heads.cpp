// headfuse heads: the head surgery verbs and scan. Their options are in heads_commands.cpp, the edits in the library.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/text.h"
#include "commands.h"
#include "head_lists.h"
#include "headfuse/checkpoint.h"
#include "headfuse/error.h"
#include "headfuse/file_io.h"
#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/heads.h"
#include "progress.h"

namespace headfuse::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Token ids from a file: decimal numbers separated by commas or white space.
std::vector<std::uint32_t> read_tokens(const std::string& path) {
    const std::string text = read_file(path);
    std::vector<std::uint32_t> out;
    std::size_t i = 0;
    while (i < text.size()) {
        const char ch = text[i];
        if (ch == ',' || ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
        if (j == i || j - i > 10 || std::stoull(text.substr(i, j - i)) > UINT32_MAX)
            throw Error(path + ": expected token ids (decimal numbers separated by commas or spaces), found '" +
                        text.substr(i, std::min<std::size_t>(16, text.size() - i)) + "' at byte " + std::to_string(i));
        out.push_back(static_cast<std::uint32_t>(std::stoull(text.substr(i, j - i))));
        i = j;
    }
    if (out.size() < 2) throw Error(path + ": " + std::to_string(out.size()) + " token ids; scan needs at least 2");
    return out;
}

void write_text(const std::string& path, const std::string& text, std::span<const std::filesystem::path> inputs) {
    write_file_atomically(path, {reinterpret_cast<const std::byte*>(text.data()), text.size()}, inputs);
}

// "exact", "attribution", or "attribution, 64 refined exactly".
std::string method_text(const HeadScan& s) {
    std::uint64_t exact = 0;
    for (const auto& row : s.exact) exact += std::uint64_t(std::count(row.begin(), row.end(), true));
    if (s.method == ScanMethod::Exact || exact == 0) return to_string(s.method);
    return std::string(to_string(s.method)) + ", " + std::to_string(exact) + " refined exactly";
}

int run_scan(const HeadsArgs& a, const Common& c) {
    if (!a.scan.empty() && !a.svg.empty() && same_file(a.scan, a.svg))
        throw Error(ErrorKind::InvalidArgument,
                    "-o '" + a.scan + "' and --svg '" + a.svg + "' are one file: the scan and its figure need two");
    if (!a.scan.empty()) check_output_path(a.scan);
    if (!a.svg.empty()) check_output_path(a.svg);
    const OpenedCheckpoint src = open_source(a.in, a.config);
    const std::vector<std::uint32_t> tokens = read_tokens(a.tokens_file);
    // The digest before the scan: a libcrypto that cannot compute it fails before the work.
    const std::string digest = a.scan.empty() ? std::string() : tensors_digest(src.model.views());
    ScanOptions so;
    so.method = a.method == "attribution" ? ScanMethod::Attribution : ScanMethod::Exact;
    so.ablation = a.ablation == "mean" ? Ablation::Mean : Ablation::Zero;
    so.refine = a.refine;
    so.threads = c.threads;
    so.n_ctx = a.n_ctx;
    so.progress = make_progress("scan", c.quiet, "layers");
    const HeadScan s = scan_heads(src.model.views(), tokens, so);
    const Config& cfg = src.model.config();
    std::vector<std::filesystem::path> inputs = src.inputs;
    inputs.emplace_back(a.tokens_file);
    if (!a.scan.empty()) {
        // What the scan is: the model (path, bytes, a digest of its tensors), the tokens, how it was computed.
        std::uint64_t size = 0;
        for (const auto& p : src.inputs) size += std::filesystem::file_size(p);
        nlohmann::ordered_json j = {{"model", {{"path", utf8_replaced(a.in)}, {"size", size}, {"digest", digest}}},
                                    {"tokens", tokens},
                                    {"method", to_string(s.method)},
                                    {"ablation", to_string(s.ablation)},
                                    {"base_loss", s.base_loss}};
        nlohmann::ordered_json hs = nlohmann::ordered_json::array();
        for (std::uint32_t l = 0; l < s.loss.size(); ++l)
            for (std::uint32_t h = 0; h < s.loss[l].size(); ++h)
                hs.push_back({{"layer", l},
                              {"head", h},
                              {"loss", s.loss[l][h]},
                              {"delta", s.loss[l][h] - s.base_loss},
                              {"exact", bool(s.exact[l][h])}});
        j["heads"] = hs;
        write_text(a.scan, j.dump(2) + "\n", inputs);
    }
    if (!a.svg.empty()) {
        ScanFigure fig;
        const std::filesystem::path in = std::filesystem::path(a.in).lexically_normal();
        fig.model = (in.has_filename() ? in.filename() : in.parent_path().filename()).string();
        fig.tokens = tokens.size();
        fig.method = method_text(s);
        fig.ablation = to_string(s.ablation);
        fig.n_kv_heads = cfg.n_kv_heads;
        write_text(a.svg, scan_svg(s, fig), inputs);
    }
    std::printf("mean next-token loss %.6f nats over %zu tokens; change when each head is ablated (%s, %s ablation):\n",
                s.base_loss, tokens.size(), method_text(s).c_str(), to_string(s.ablation));
    std::uint32_t widest = 0;  // a deci layer lists only the heads it has
    for (std::uint32_t l = 0; l < cfg.n_layers; ++l) widest = std::max(widest, cfg.n_heads_at(l));
    std::printf("%-6s", "layer");
    // With estimates every column has one more place, for the mark.
    const char* pad = s.method == ScanMethod::Exact ? "" : " ";
    for (std::uint32_t h = 0; h < widest; ++h) std::printf(" %10s%s", ("head " + std::to_string(h)).c_str(), pad);
    std::printf("\n");
    for (std::uint32_t l = 0; l < cfg.n_layers; ++l) {
        std::printf("%-6u", l);
        for (std::uint32_t h = 0; h < cfg.n_heads_at(l); ++h)
            std::printf(" %+10.6f%s", s.loss[l][h] - s.base_loss, s.exact[l][h] ? pad : pad[0] ? "~" : "");
        std::printf("\n");
    }
    bool estimated = false;
    for (const auto& row : s.exact) estimated = estimated || std::count(row.begin(), row.end(), false) > 0;
    if (estimated)
        std::printf("~ marks an estimate (first order, from the gradient); the others are exact ablations\n");
    if (!a.scan.empty()) std::printf("wrote %s\n", a.scan.c_str());
    if (!a.svg.empty()) std::printf("wrote %s\n", a.svg.c_str());
    return 0;
}

// prune --lowest F --scan S: in every layer the same number of the heads whose ablation raised the loss least
// (the lowest signed delta: a head whose ablation lowers the loss goes first), so that the output stays a llama
// model: round(F * group) per kv group, or round(F * n_heads) per layer when every head has its own kv head. A
// scan that records its model (its tensors' digest) must have been made on this model. `how` says what ranked.
std::vector<HeadRef> lowest_heads(const ModelViews& model, const std::string& in, const std::string& scan_path,
                                  double fraction, std::string& how) {
    const Config& c = model.config;
    const std::string text = read_file(scan_path);
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(scan_path + ": not valid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("heads") || !j["heads"].is_array())
        throw Error(scan_path + ": expected a scan with a 'heads' array");
    auto text_of = [&](const char* key, const char* old) {
        if (!j.contains(key)) return std::string(old);  // scans before these keys were exact zero ablations
        if (!j[key].is_string())
            throw Error(scan_path + ": expected '" + key + "' to be a string, found " + j[key].dump());
        return printable(j[key].get<std::string>());
    };
    const std::string method = text_of("method", "exact"), ablation = text_of("ablation", "zero");
    std::string checked = "a scan that does not record its model: not checked against " + in;
    if (j.contains("model") && j["model"].is_object()) {
        const auto& m = j["model"];
        if (!m.contains("digest") || !m["digest"].is_string())
            throw Error(scan_path + ": expected model.digest (a string), found " + m.dump());
        const std::string recorded = printable(m["digest"].get<std::string>()), here = tensors_digest(model);
        const std::string made_on =
            m.contains("path") && m["path"].is_string() ? printable(m["path"].get<std::string>()) : "?";
        if (recorded != here)
            throw Error(ErrorKind::InvalidArgument, scan_path + ": made on " + made_on + " (tensors " + recorded +
                                                        "), not on " + in + " (tensors " + here +
                                                        "); scan this model, or prune the one scanned");
        checked = "made on this model (tensors " + here.substr(0, 19) + "...)";
    }
    std::vector<std::vector<double>> delta(c.n_layers, std::vector<double>(c.n_heads, NAN));
    std::uint64_t estimated = 0, entries = 0;
    for (const auto& h : j["heads"]) {
        if (!h.is_object() || !h.contains("layer") || !h.contains("head") || !h.contains("delta") ||
            !h["layer"].is_number_unsigned() || !h["head"].is_number_unsigned() || !h["delta"].is_number())
            throw Error(scan_path + ": expected {layer, head, delta} entries, found " + h.dump());
        const auto l = h["layer"].get<std::uint64_t>(), hd = h["head"].get<std::uint64_t>();
        if (l >= c.n_layers || hd >= c.n_heads)
            throw Error(ErrorKind::InvalidArgument, scan_path + ": head " + std::to_string(l) + ":" +
                                                        std::to_string(hd) + " is not in the model (" +
                                                        std::to_string(c.n_layers) + " layers of " +
                                                        std::to_string(c.n_heads) + " heads)");
        delta[l][hd] = h["delta"].get<double>();
        estimated += h.contains("exact") && h["exact"] == false;
        ++entries;
    }
    const std::uint32_t group = c.n_heads / c.n_kv_heads;
    const std::uint32_t unit = group == 1 ? c.n_heads : group;  // heads chosen among
    const auto k = static_cast<std::uint32_t>(std::lround(fraction * unit));
    if (k == 0)
        throw Error(ErrorKind::InvalidArgument,
                    "--lowest " + std::to_string(fraction) + ": prunes no head of " + std::to_string(unit));
    std::vector<HeadRef> out;
    for (std::uint32_t l = 0; l < c.n_layers; ++l)
        for (std::uint32_t first = 0; first < c.n_heads; first += unit) {
            std::vector<std::uint32_t> hs(unit);
            for (std::uint32_t i = 0; i < unit; ++i) {
                hs[i] = first + i;
                if (std::isnan(delta[l][first + i]))
                    throw Error(scan_path + ": no entry for head " + std::to_string(l) + ":" +
                                std::to_string(first + i));
            }
            std::stable_sort(hs.begin(), hs.end(), [&](auto x, auto y) { return delta[l][x] < delta[l][y]; });
            for (std::uint32_t i = 0; i < k; ++i) out.push_back({l, hs[i]});
        }
    how = "ranked by " + scan_path + " (method " + method + ", ablation " + ablation + ", " +
          std::to_string(entries - estimated) + " of " + std::to_string(entries) + " heads exact" + "; " + checked +
          "): the " + std::to_string(k) + " of every " + std::to_string(unit) +
          (group == 1 ? " heads of a layer" : " heads of a kv group") +
          " with the lowest delta (ablation raised the loss least or lowered it most)";
    return out;
}

}  // namespace

int run_heads(const HeadsArgs& a, const Common& c) {
    if (a.verb == "scan") return run_scan(a, c);
    check_output_path(a.out);
    const auto t0 = Clock::now();
    std::vector<std::string> warnings;
    EditOptions eo;
    eo.source = a.in;
    eo.warn = [&](const std::string& w) { warnings.push_back(w); };
    const OpenedCheckpoint src = open_source(a.in, a.config);
    const Config& cfg = src.model.config();
    std::vector<std::filesystem::path> inputs = src.inputs;
    if (inputs.empty()) inputs.emplace_back(a.in);
    std::optional<OpenedCheckpoint> donor;
    std::string ranked;  // prune --lowest: what ranked the heads
    PerHeadModel edited = [&] {
        if (a.verb == "ablate") return ablate_heads(src.model, parse_heads(a.heads, "--heads"), eo);
        if (a.verb == "pool-kv") return pool_kv_heads(src.model, a.kv_heads, eo);
        if (a.verb == "transplant") {
            donor.emplace(open_source(a.from, ""));
            eo.donor = a.from;
            inputs.insert(inputs.end(), donor->inputs.begin(), donor->inputs.end());
            return transplant_heads(src.model, donor->model, parse_head_moves(a.heads, "--heads"), eo);
        }
        std::vector<HeadRef> heads;
        if (!a.heads.empty()) heads = parse_heads(a.heads, "--heads");
        if (!a.kv_groups.empty()) {
            const std::uint32_t group = cfg.n_heads / cfg.n_kv_heads;
            for (const HeadRef& g : parse_heads(a.kv_groups, "--kv-groups")) {
                if (g.layer >= cfg.n_layers || g.head >= cfg.n_kv_heads)
                    throw Error(ErrorKind::InvalidArgument,
                                "--kv-groups: group " + std::to_string(g.layer) + ":" + std::to_string(g.head) +
                                    " is out of range: the model has " + std::to_string(cfg.n_layers) + " layers of " +
                                    std::to_string(cfg.n_kv_heads) + " kv groups");
                for (std::uint32_t i = 0; i < group; ++i) heads.push_back({g.layer, g.head * group + i});
            }
        }
        if (!a.scan.empty()) {
            inputs.emplace_back(a.scan);
            const auto low = lowest_heads(src.model.views(), a.in, a.scan, a.lowest, ranked);
            heads.insert(heads.end(), low.begin(), low.end());
        }
        return prune_heads(src.model, heads, eo);
    }();
    FuseOptions opt;
    opt.type = a.type;
    opt.mix = a.mix;
    opt.threads = c.threads;
    opt.output = c.output;
    opt.progress = make_progress("heads " + a.verb, c.quiet);
    opt.warn = eo.warn;
    opt.inputs = inputs;
    const std::vector<std::filesystem::path> files = fuse(edited, a.out, opt);  // one file, or a split set's shards
    for (const std::string& w : warnings) std::fprintf(stderr, "headfuse: warning: %s\n", w.c_str());
    if (!ranked.empty()) std::printf("prune --lowest %g: %s\n", a.lowest, ranked.c_str());
    const Value* edits = edited.metadata().find(kEditsKey);
    std::printf("wrote %s: fused %s file, %s, %s in %.2f s\n  %s\n", written(files).c_str(),
                std::string(family_name(edited.config().family)).c_str(), describe(edited.config()).c_str(),
                a.mix    ? std::string(mix_name(*a.mix)).c_str()
                : a.type ? std::string(type_name(*a.type)).c_str()
                         : "types kept",
                std::chrono::duration<double>(Clock::now() - t0).count(),
                std::get<std::string>(edits->items.back().scalar).c_str());
    return 0;
}

}  // namespace headfuse::cli
