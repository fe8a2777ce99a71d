// What a head scan reports besides its numbers: the digest that names the model it was made on, and its figure.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "base/text.h"
#include "edit/sha256.h"
#include "headfuse/heads.h"
#include "model/view_rows.h"

namespace headfuse {
namespace {

// ---- the figure ----------------------------------------------------------------------------------------------

struct Rgb {
    double r, g, b;
};

// ColorBrewer's RdBu (7 classes), from -1 (blue: the loss falls) through white to +1 (red: the loss rises).
constexpr std::array<Rgb, 7> kDiverging = {{{33, 102, 172},
                                            {103, 169, 207},
                                            {209, 229, 240},
                                            {247, 247, 247},
                                            {253, 219, 199},
                                            {239, 138, 98},
                                            {178, 24, 43}}};

std::string colour(double t) {
    t = std::clamp(std::isfinite(t) ? t : 0.0, -1.0, 1.0);
    const double x = (t + 1) / 2 * double(kDiverging.size() - 1);
    const auto i = std::min<std::size_t>(static_cast<std::size_t>(x), kDiverging.size() - 2);
    const double f = x - double(i);
    const Rgb& a = kDiverging[i];
    const Rgb& b = kDiverging[i + 1];
    char s[8];
    std::snprintf(s, sizeof s, "#%02x%02x%02x", int(std::lround(a.r + (b.r - a.r) * f)),
                  int(std::lround(a.g + (b.g - a.g) * f)), int(std::lround(a.b + (b.b - a.b) * f)));
    return s;
}

std::string xml(std::string_view s) {
    std::string out;
    for (const char ch : utf8_replaced(s)) {
        switch (ch) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            default: out += static_cast<unsigned char>(ch) < 0x20 ? ' ' : ch;
        }
    }
    return out;
}

std::string fixed(double v, int decimals, bool sign) {
    char s[64];
    std::snprintf(s, sizeof s, sign ? "%+.*f" : "%.*f", decimals, v);
    std::string out = s;
    if (out == "-0" || out.find_first_not_of("-+0.") == std::string::npos)
        out = decimals ? "0." + std::string(std::size_t(decimals), '0') : "0";
    if (out.front() == '-') out = "\xe2\x88\x92" + out.substr(1);  // a minus sign, not a hyphen
    return out;
}

// The smallest step of 1, 2 or 5 times a power of ten with at most `max_ticks` steps up to `top`.
double tick_step(double top, int max_ticks) {
    const double raw = top / max_ticks, p = std::pow(10.0, std::floor(std::log10(raw)));
    for (const double m : {1.0, 2.0, 5.0, 10.0})
        if (m * p >= raw * (1 - 1e-9)) return m * p;
    return 10 * p;
}

int decimals_of(double step) { return std::max(0, int(-std::floor(std::log10(step) + 1e-9))); }

// Every `step`-th of n labels, spaced `cell` apart, that keeps labels at least `min_gap` apart.
std::uint64_t label_every(double cell, double min_gap) {
    for (const std::uint64_t s : {1, 2, 4, 5, 8, 10, 16, 20, 32, 50, 64, 100})
        if (cell * double(s) >= min_gap) return s;
    return 128;
}

}  // namespace

std::string tensors_digest(const ModelViews& model) {
    Sha256 sha;
    for_each_view(model, [&](const TensorView& v) {
        for_each_window(v, std::uint64_t{1} << 22,
                        [&](std::span<const std::byte> b, std::uint64_t, std::uint64_t) { sha.update(b); });
    });
    return "sha256:" + sha.hex();
}

std::string scan_svg(const HeadScan& s, const ScanFigure& fig) {
    const std::size_t layers = s.loss.size();
    std::size_t heads = 0;
    double top = 0;
    for (const auto& row : s.loss) {
        heads = std::max(heads, row.size());
        for (const double l : row)
            if (std::isfinite(l)) top = std::max(top, std::abs(l - s.base_loss));
    }
    // The colour scale: symmetric about zero, up to a round number of nats, ticks at 1, 2 or 5 times a power of 10.
    const double step = tick_step(top > 0 ? top : 1e-6, 5);
    const double scale = std::ceil(top / step - 1e-9) * step > 0 ? std::ceil(top / step - 1e-9) * step : step;
    const int tick_dec = decimals_of(step), value_dec = tick_dec + 1;

    // Cells: square, as large as a page allows (about 1000 px wide, 1400 px high), at least 6 px.
    const double cell = std::max(6.0, std::min({56.0, std::floor(1000.0 / double(std::max<std::size_t>(heads, 1))),
                                                std::floor(1400.0 / double(std::max<std::size_t>(layers, 1)))}));
    const double gap = cell >= 12 ? 1 : 0;
    std::size_t widest = 0;
    for (const auto& row : s.loss)
        for (const double l : row) widest = std::max(widest, fixed(l - s.base_loss, value_dec, true).size());
    // A value is printed in its cell when it fits at 8 px or more (digits are about 0.6 em wide).
    const double value_font = std::min(12.0, (cell - 6) / (0.6 * double(std::max<std::size_t>(widest, 1))));
    const bool values = value_font >= 8;

    const std::uint32_t n_kv = fig.n_kv_heads;
    const bool grouped = n_kv > 0 && n_kv < heads && heads % n_kv == 0;
    const std::size_t group = grouped ? heads / n_kv : 1;

    const double title_h = 74, group_h = grouped ? 22 : 0;
    const double gx = 78, gy = title_h + group_h + 8;
    const double gw = cell * double(heads), gh = cell * double(layers);
    // The colour bar: 32 steps of whole pixels, beside the grid.
    const int bar_steps = 32;
    const double bar_step = std::max(5.0, std::floor(std::min(std::max(gh, 160.0), 320.0) / bar_steps));
    const double bar_h = bar_step * bar_steps, bx = gx + gw + 28, by = gy;
    const std::string subtitle1 = "Change of the mean next-token loss (nats) when one head is ablated";
    const std::string subtitle2 = "method " + fig.method + ", ablation " + fig.ablation + ", " +
                                  std::to_string(fig.tokens) + " tokens, base loss " + fixed(s.base_loss, 4, false) +
                                  " nats; " + std::to_string(layers) + " layers \u00d7 " + std::to_string(heads) +
                                  " heads" + (grouped ? ", " + std::to_string(n_kv) + " kv groups" : "");
    const std::string title = "Head ablation scan: " + fig.model;
    const double text_w =
        std::max({double(title.size()) * 8.6, double(subtitle1.size()) * 6.2, double(subtitle2.size()) * 6.2}) + 24;
    const double width = std::ceil(std::max(bx + 16 + 70 + 22, text_w));
    const double height = std::ceil(std::max(gy + gh + 52, by + bar_h + 20));

    std::ostringstream o;
    o.precision(10);
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height
      << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\" fill=\"#222\">\n";
    o << "<rect class=\"background\" x=\"0\" y=\"0\" width=\"" << width << "\" height=\"" << height
      << "\" fill=\"#ffffff\"/>\n";
    o << "<text x=\"12\" y=\"24\" font-size=\"15\" font-weight=\"bold\">" << xml(title) << "</text>\n";
    o << "<text x=\"12\" y=\"44\" font-size=\"11.5\">" << xml(subtitle1) << "</text>\n";
    o << "<text x=\"12\" y=\"61\" font-size=\"11.5\" fill=\"#555\">" << xml(subtitle2) << "</text>\n";

    // Key/value groups: a bracket and a label over each group's heads, and a darker line between groups.
    if (grouped) {
        const double gl = cell * double(group);
        const std::uint64_t every = label_every(gl, 44);
        for (std::uint32_t g = 0; g < n_kv; ++g) {
            const double x0 = gx + gl * g;
            o << "<path class=\"group\" d=\"M" << x0 + 1 << " " << gy - 4 << "V" << gy - 9 << "H" << x0 + gl - 1 << "V"
              << gy - 4 << "\" fill=\"none\" stroke=\"#555\" stroke-width=\"1\"/>\n";
            if (g % every == 0)
                o << "<text x=\"" << x0 + gl / 2 << "\" y=\"" << gy - 13
                  << "\" font-size=\"10\" text-anchor=\"middle\">kv " << g << "</text>\n";
        }
    }
    // The cells, each with its value on hover and, where it fits, printed.
    for (std::size_t l = 0; l < layers; ++l)
        for (std::size_t h = 0; h < s.loss[l].size(); ++h) {
            const double d = s.loss[l][h] - s.base_loss, t = d / scale;
            const double x = gx + cell * double(h), y = gy + cell * double(l);
            o << "<rect class=\"cell\" x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell - gap << "\" height=\""
              << cell - gap << "\" fill=\"" << colour(t) << "\"><title>layer " << l << ", head " << h;
            if (grouped) o << " (kv " << h / group << ")";
            o << ": " << fixed(d, value_dec + 2, true) << " nats</title></rect>\n";
            if (values)
                o << "<text x=\"" << x + (cell - gap) / 2 << "\" y=\"" << y + (cell - gap) / 2 + value_font * 0.36
                  << "\" font-size=\"" << std::floor(value_font * 10) / 10 << "\" text-anchor=\"middle\" fill=\""
                  << (std::abs(t) > 0.55 ? "#ffffff" : "#222222") << "\">" << fixed(d, value_dec, true) << "</text>\n";
        }
    if (grouped)
        for (std::uint32_t g = 1; g < n_kv; ++g)
            o << "<line class=\"group\" x1=\"" << gx + cell * double(g * group) - gap / 2 << "\" y1=\"" << gy - 2
              << "\" x2=\"" << gx + cell * double(g * group) - gap / 2 << "\" y2=\"" << gy + gh + 2
              << "\" stroke=\"#222\" stroke-width=\"2\"/>\n";

    // Axes: head numbers below the grid, layer numbers left of it, and their titles.
    const double tick_font = std::min(11.0, std::max(8.0, cell * 0.6));
    const std::uint64_t head_every = label_every(cell, tick_font * 1.6),
                        layer_every = label_every(cell, tick_font * 1.3);
    for (std::size_t h = 0; h < heads; h += head_every)
        o << "<text x=\"" << gx + cell * (double(h) + 0.5) << "\" y=\"" << gy + gh + tick_font + 4 << "\" font-size=\""
          << tick_font << "\" text-anchor=\"middle\">" << h << "</text>\n";
    for (std::size_t l = 0; l < layers; l += layer_every)
        o << "<text x=\"" << gx - 6 << "\" y=\"" << gy + cell * (double(l) + 0.5) + tick_font * 0.36
          << "\" font-size=\"" << tick_font << "\" text-anchor=\"end\">" << l << "</text>\n";
    o << "<text x=\"" << gx + gw / 2 << "\" y=\"" << gy + gh + tick_font + 26
      << "\" font-size=\"13\" text-anchor=\"middle\">query head" << (grouped ? " (grouped by key/value head)" : "")
      << "</text>\n";
    o << "<text transform=\"translate(" << 22 << " " << gy + gh / 2
      << ") rotate(-90)\" font-size=\"13\" text-anchor=\"middle\">layer</text>\n";

    // The colour bar: +scale at the top, -scale at the bottom, ticks in nats.
    for (int i = 0; i < bar_steps; ++i) {
        const double v = scale * (1 - (2 * i + 1) / double(bar_steps));
        o << "<rect class=\"bar\" x=\"" << bx << "\" y=\"" << by + bar_step * i << "\" width=\"16\" height=\""
          << bar_step << "\" fill=\"" << colour(v / scale) << "\"/>\n";
    }
    o << "<rect x=\"" << bx << "\" y=\"" << by << "\" width=\"16\" height=\"" << bar_h
      << "\" fill=\"none\" stroke=\"#222\" stroke-width=\"0.5\"/>\n";
    for (int k = -int(std::lround(scale / step)); k <= int(std::lround(scale / step)); ++k) {
        const double v = k * step, y = by + (scale - v) / (2 * scale) * bar_h;
        o << "<line x1=\"" << bx + 16 << "\" y1=\"" << y << "\" x2=\"" << bx + 20 << "\" y2=\"" << y
          << "\" stroke=\"#222\"/>\n";
        o << "<text class=\"tick\" x=\"" << bx + 23 << "\" y=\"" << y + 4 << "\" font-size=\"10.5\">"
          << fixed(v, tick_dec, k != 0) << "</text>\n";
    }
    o << "<text transform=\"translate(" << bx + 16 + 70 + 8 << " " << by + bar_h / 2
      << ") rotate(90)\" font-size=\"12\" text-anchor=\"middle\">loss change (nats)</text>\n";
    o << "</svg>\n";
    return o.str();
}

}  // namespace headfuse
