// headfuse heads: the head surgery verbs and scan. Their options are in heads_commands.cpp, the edits in the library.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "commands.h"
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
            fail(path + ": expected token ids (decimal numbers separated by commas or spaces), found '" +
                 text.substr(i, std::min<std::size_t>(16, text.size() - i)) + "' at byte " + std::to_string(i));
        out.push_back(static_cast<std::uint32_t>(std::stoull(text.substr(i, j - i))));
        i = j;
    }
    if (out.size() < 2) fail(path + ": " + std::to_string(out.size()) + " token ids; scan needs at least 2");
    return out;
}

// A blue (no change) to red (the largest loss increase) heat map of layers x heads, one cell per head.
std::string heatmap_svg(const HeadScan& s) {
    const std::size_t layers = s.loss.size(), heads = layers ? s.loss[0].size() : 0;
    double top = 0;
    for (const auto& row : s.loss)
        for (double l : row) top = std::max(top, std::abs(l - s.base_loss));
    const int cell = 24, left = 70, head_row = 56;
    const int w = std::max(left + int(heads) * cell + 20, 560), h = head_row + int(layers) * cell + 20;
    std::ostringstream o;
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << h
      << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
    o << "<text x=\"4\" y=\"14\">Change of the mean next-token loss when a head is ablated (base " << s.base_loss
      << " nats)</text>\n";
    o << "<text x=\"4\" y=\"30\">red: the loss rises, blue: it falls; full colour: |change| " << top
      << " nats. Columns are heads.</text>\n";
    for (std::size_t hd = 0; hd < heads; ++hd)
        o << "<text x=\"" << left + int(hd) * cell + 6 << "\" y=\"" << head_row - 6 << "\">" << hd << "</text>\n";
    for (std::size_t l = 0; l < layers; ++l) {
        o << "<text x=\"4\" y=\"" << head_row + int(l) * cell + 16 << "\">layer " << l << "</text>\n";
        for (std::size_t hd = 0; hd < heads; ++hd) {
            const double d = s.loss[l][hd] - s.base_loss, t = top > 0 ? std::abs(d) / top : 0;
            const int fade = int(std::lround(255 * (1 - t)));
            const int r = d >= 0 ? 255 : fade, b = d >= 0 ? fade : 255;
            o << "<rect x=\"" << left + int(hd) * cell << "\" y=\"" << head_row + int(l) * cell << "\" width=\""
              << cell - 1 << "\" height=\"" << cell - 1 << "\" fill=\"rgb(" << r << "," << fade << "," << b
              << ")\"><title>layer " << l << " head " << hd << ": " << d << "</title></rect>\n";
        }
    }
    o << "</svg>\n";
    return o.str();
}

void write_text(const std::string& path, const std::string& text, std::span<const std::filesystem::path> inputs) {
    write_file_atomically(path, {reinterpret_cast<const std::byte*>(text.data()), text.size()}, inputs);
}

int run_scan(const HeadsArgs& a, const Common& c) {
    if (!a.scan.empty() && !a.svg.empty() && same_file(a.scan, a.svg))
        fail(ErrorKind::InvalidArgument,
             "-o '" + a.scan + "' and --svg '" + a.svg + "' are one file: the scan and its heat map need two");
    if (!a.scan.empty()) check_output_path(a.scan);
    if (!a.svg.empty()) check_output_path(a.svg);
    const OpenedCheckpoint src = open_source(a.in, a.config);
    const std::vector<std::uint32_t> tokens = read_tokens(a.tokens_file);
    const HeadScan s = scan_heads(src.model.views(), tokens, c.threads, make_progress("scan", c.quiet, "layer passes"));
    const Config& cfg = src.model.config();
    std::vector<std::filesystem::path> inputs = src.inputs;
    inputs.emplace_back(a.tokens_file);
    if (!a.scan.empty()) {
        nlohmann::json j = {{"model", a.in}, {"tokens", tokens.size()}, {"base_loss", s.base_loss}};
        nlohmann::json hs = nlohmann::json::array();
        for (std::uint32_t l = 0; l < cfg.n_layers; ++l)
            for (std::uint32_t h = 0; h < cfg.n_heads; ++h)
                hs.push_back(
                    {{"layer", l}, {"head", h}, {"loss", s.loss[l][h]}, {"delta", s.loss[l][h] - s.base_loss}});
        j["heads"] = hs;
        write_text(a.scan, j.dump(2) + "\n", inputs);
    }
    if (!a.svg.empty()) write_text(a.svg, heatmap_svg(s), inputs);
    std::printf("mean next-token loss %.6f nats over %zu tokens; change when each head is ablated:\n", s.base_loss,
                tokens.size());
    std::printf("%-6s", "layer");
    for (std::uint32_t h = 0; h < cfg.n_heads; ++h) std::printf(" %10s", ("head " + std::to_string(h)).c_str());
    std::printf("\n");
    for (std::uint32_t l = 0; l < cfg.n_layers; ++l) {
        std::printf("%-6u", l);
        for (std::uint32_t h = 0; h < cfg.n_heads; ++h) std::printf(" %+10.6f", s.loss[l][h] - s.base_loss);
        std::printf("\n");
    }
    if (!a.scan.empty()) std::printf("wrote %s\n", a.scan.c_str());
    if (!a.svg.empty()) std::printf("wrote %s\n", a.svg.c_str());
    return 0;
}

// prune --lowest F --scan S: in every layer the same number of the heads that matter least (so the output stays
// a llama model): round(F * group) per kv group, or round(F * n_heads) per layer when every head has its own kv
// head.
std::vector<HeadRef> lowest_heads(const Config& c, const std::string& scan_path, double fraction) {
    const std::string text = read_file(scan_path);
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        fail(scan_path + ": not valid JSON: " + e.what());
    }
    std::vector<std::vector<double>> delta(c.n_layers, std::vector<double>(c.n_heads, NAN));
    if (!j.contains("heads") || !j["heads"].is_array()) fail(scan_path + ": expected a scan with a 'heads' array");
    for (const auto& h : j["heads"]) {
        if (!h.is_object() || !h.contains("layer") || !h.contains("head") || !h.contains("delta") ||
            !h["layer"].is_number_unsigned() || !h["head"].is_number_unsigned() || !h["delta"].is_number())
            fail(scan_path + ": expected {layer, head, delta} entries, found " + h.dump());
        const auto l = h["layer"].get<std::uint64_t>(), hd = h["head"].get<std::uint64_t>();
        if (l >= c.n_layers || hd >= c.n_heads)
            fail(ErrorKind::InvalidArgument, scan_path + ": head " + std::to_string(l) + ":" + std::to_string(hd) +
                                                 " is not in the model (" + std::to_string(c.n_layers) + " layers of " +
                                                 std::to_string(c.n_heads) + " heads)");
        delta[l][hd] = h["delta"].get<double>();
    }
    const std::uint32_t group = c.n_heads / c.n_kv_heads;
    const std::uint32_t unit = group == 1 ? c.n_heads : group;  // heads chosen among
    const auto k = static_cast<std::uint32_t>(std::lround(fraction * unit));
    if (k == 0)
        fail(ErrorKind::InvalidArgument,
             "--lowest " + std::to_string(fraction) + ": prunes no head of " + std::to_string(unit));
    std::vector<HeadRef> out;
    for (std::uint32_t l = 0; l < c.n_layers; ++l)
        for (std::uint32_t first = 0; first < c.n_heads; first += unit) {
            std::vector<std::uint32_t> hs(unit);
            for (std::uint32_t i = 0; i < unit; ++i) {
                hs[i] = first + i;
                if (std::isnan(delta[l][first + i]))
                    fail(scan_path + ": no entry for head " + std::to_string(l) + ":" + std::to_string(first + i));
            }
            std::stable_sort(hs.begin(), hs.end(), [&](auto x, auto y) { return delta[l][x] < delta[l][y]; });
            for (std::uint32_t i = 0; i < k; ++i) out.push_back({l, hs[i]});
        }
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
    PerHeadModel edited = [&] {
        if (a.verb == "ablate") return ablate_heads(src.model, parse_heads(a.heads, "--heads"), eo);
        if (a.verb == "pool-kv") return pool_kv_heads(src.model, a.kv_heads, eo);
        if (a.verb == "transplant") {
            donor.emplace(open_source(a.from, ""));
            inputs.insert(inputs.end(), donor->inputs.begin(), donor->inputs.end());
            return transplant_heads(src.model, donor->model, parse_head_moves(a.heads, "--heads"), eo);
        }
        std::vector<HeadRef> heads;
        if (!a.heads.empty()) heads = parse_heads(a.heads, "--heads");
        if (!a.kv_groups.empty()) {
            const std::uint32_t group = cfg.n_heads / cfg.n_kv_heads;
            for (const HeadRef& g : parse_heads(a.kv_groups, "--kv-groups")) {
                if (g.layer >= cfg.n_layers || g.head >= cfg.n_kv_heads)
                    fail(ErrorKind::InvalidArgument, "--kv-groups: group " + std::to_string(g.layer) + ":" +
                                                         std::to_string(g.head) + " is out of range: the model has " +
                                                         std::to_string(cfg.n_layers) + " layers of " +
                                                         std::to_string(cfg.n_kv_heads) + " kv groups");
                for (std::uint32_t i = 0; i < group; ++i) heads.push_back({g.layer, g.head * group + i});
            }
        }
        if (!a.scan.empty()) {
            inputs.emplace_back(a.scan);
            const auto low = lowest_heads(cfg, a.scan, a.lowest);
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
    fuse(edited, a.out, opt);
    for (const std::string& w : warnings) std::fprintf(stderr, "headfuse: warning: %s\n", w.c_str());
    const Value* edits = edited.metadata().find(kEditsKey);
    std::printf("wrote %s: fused llama file, %s, %s, %s in %.2f s\n  %s\n", a.out.c_str(),
                describe(edited.config()).c_str(),
                a.mix    ? std::string(mix_name(*a.mix)).c_str()
                : a.type ? std::string(type_name(*a.type)).c_str()
                         : "types kept",
                human_bytes(double(std::filesystem::file_size(a.out))).c_str(),
                std::chrono::duration<double>(Clock::now() - t0).count(),
                std::get<std::string>(edits->items.back().scalar).c_str());
    return 0;
}

}  // namespace headfuse::cli
