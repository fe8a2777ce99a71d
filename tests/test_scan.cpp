// heads scan's outputs, through the CLI: the JSON records what it is (the model's path, size and tensor digest,
// the tokens, method and ablation, per head the value and that it is exact), prune --scan refuses a scan made on
// another model naming both, prune --lowest ranks by the documented rule and says what ranked; and the SVG figure,
// rendered by a real browser (Debian's chromium, headless) to PNG and read back with libpng: the picture has the
// size the SVG declares, and the colour bar's steps and every cell carry, where the SVG puts them, the colours it
// declares. The digest is judged by coreutils' sha256sum.
#include <gtest/gtest.h>

#include <png.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "edit/sha256.h"
#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/gguf.h"
#include "headfuse/heads.h"
#include "headfuse/model.h"
#include "support/ggml_lib.h"
#include "support/models.h"
#include "support/required.h"

using namespace headfuse;
using headfuse::test::run_cli;
using headfuse::test::TempDir;

namespace {

// A browser's rendering of a flat fill: exact in sRGB, but allow a unit of rounding in colour conversion.
constexpr int kColourTolerance = 2;

Config small_gqa() { return test::make_config_ctx256(64, 4, 2, 32, 128, 2, 260); }

std::string slurp(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

std::vector<std::uint32_t> write_tokens(const std::filesystem::path& p, std::uint32_t vocab, std::uint32_t n) {
    std::vector<std::uint32_t> t;
    std::ofstream f(p);
    for (std::uint32_t i = 0; i < n; ++i) {
        t.push_back((i * 37 + 5) % vocab);
        f << t.back() << (i + 1 < n ? " " : "\n");
    }
    return t;
}

// The digest's hash (libcrypto's, fed in pieces as the digest feeds it) against coreutils' sha256sum: every length
// around the 64-byte block and its 56-byte padding limit, and a larger buffer, whole and in uneven pieces.
TEST(ScanJson, Sha256AsSha256sumComputesIt) {
    TempDir dir;
    std::vector<std::byte> data(300000);
    for (std::size_t i = 0; i < data.size(); ++i)
        data[i] = std::byte(static_cast<unsigned char>((i * 2654435761u) >> 13));
    for (const std::size_t n : {0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 300000}) {
        const auto file = dir / "bytes.bin";
        std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), std::streamsize(n));
        const auto r = test::run_program({"sha256sum", file.string()});
        ASSERT_GE(r.out.size(), 64u) << r.err;
        const std::span<const std::byte> bytes(data.data(), n);
        EXPECT_EQ(sha256_hex(bytes), r.out.substr(0, 64)) << n;
        Sha256 pieces;
        for (std::size_t at = 0, k = 1; at < n; at += k, k = k * 3 % 257 + 1)
            pieces.update(bytes.subspan(at, std::min(k, n - at)));
        EXPECT_EQ(pieces.hex(), r.out.substr(0, 64)) << n;
    }
}

// A libcrypto that offers no SHA-256 (a configuration that loads only its "null" provider): the scan fails with
// one line naming the digest and libcrypto's reason, exit 1, before the scan's work (no table printed), and leaves
// no scan behind.
TEST(ScanJson, NoSha256FromLibcryptoIsOneLineAndNoOutput) {
    TempDir dir;
    const Config c = small_gqa();
    write_random_init(c, test::test_seed(), dir / "a.ph.gguf");
    write_tokens(dir / "tokens.txt", c.vocab, 8);
    std::ofstream(dir / "openssl.cnf") << "openssl_conf = init\n[init]\nproviders = providers\n"
                                          "[providers]\nnull = null\n[null]\nactivate = 1\n";
    const auto scan = dir / "scan.json";
    const auto r = test::run_program({"env", "OPENSSL_CONF=" + (dir / "openssl.cnf").string(), HEADFUSE_CLI, "heads",
                                      "scan", (dir / "a.ph.gguf").string(), "--tokens-file",
                                      (dir / "tokens.txt").string(), "-o", scan.string(), "-q"});
    EXPECT_EQ(r.status, 1) << r.err;
    EXPECT_EQ(r.err.rfind("headfuse: SHA-256 of the tensors: expected OpenSSL's libcrypto to compute it, but "
                          "EVP_DigestInit_ex(EVP_sha256()) failed: ",
                          0),
              0u)
        << r.err;
    EXPECT_NE(r.err.find("unsupported"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_FALSE(std::filesystem::exists(scan));
}

TEST(ScanJson, RecordsTheModelAndPruneRefusesAnotherModelsScan) {
    TempDir dir;
    const Config c = small_gqa();
    write_random_init(c, test::test_seed(), dir / "a.ph.gguf");
    fuse(PerHeadModel::open(dir / "a.ph.gguf"), dir / "a.gguf");
    write_random_init(c, test::test_seed() + 1, dir / "b.ph.gguf");
    fuse(PerHeadModel::open(dir / "b.ph.gguf"), dir / "b.gguf");
    const auto tokens = write_tokens(dir / "tokens.txt", c.vocab, 24);
    const auto a = (dir / "a.gguf").string(), scan = (dir / "scan.json").string();
    auto r = run_cli({"heads", "scan", a, "--tokens-file", (dir / "tokens.txt").string(), "-o", scan, "-q"});
    ASSERT_EQ(r.status, 0) << r.err;
    const auto j = nlohmann::json::parse(slurp(scan));
    EXPECT_EQ(j["model"]["path"], a);
    EXPECT_EQ(j["model"]["size"].get<std::uint64_t>(), std::filesystem::file_size(a));
    EXPECT_EQ(j["tokens"].get<std::vector<std::uint32_t>>(), tokens);
    EXPECT_EQ(j["method"], "exact");
    EXPECT_EQ(j["ablation"], "zero");
    ASSERT_EQ(j["heads"].size(), c.n_layers * c.n_heads);
    for (const auto& h : j["heads"]) {
        EXPECT_EQ(h["exact"], true);
        EXPECT_EQ(h["delta"].get<double>(), h["loss"].get<double>() - j["base_loss"].get<double>());
    }
    // The digest: SHA-256 of every tensor's bytes in the per-head file's order, which is the per-head file's own
    // tensor data, concatenated without padding. sha256sum judges it.
    {
        const GgufFile ph = GgufFile::open(dir / "a.ph.gguf");
        std::ofstream cat(dir / "tensors.bin", std::ios::binary);
        for (const TensorInfo& t : ph.tensors()) {
            const auto b = ph.tensor_data(t);
            cat.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
        }
    }
    const auto sha = test::run_program({"sha256sum", (dir / "tensors.bin").string()});
    const std::string& sum = sha.out;
    ASSERT_GE(sum.size(), 64u) << sha.err;
    EXPECT_EQ(j["model"]["digest"], "sha256:" + sum.substr(0, 64));

    // Another model's scan is refused, naming both; the per-head file of the scanned model (same tensors) is not.
    const auto out = dir / "pruned.gguf";
    r = run_cli({"heads", "prune", (dir / "b.gguf").string(), "-o", out.string(), "--lowest", "0.5", "--scan", scan});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find(scan + ": made on " + a), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("not on " + (dir / "b.gguf").string()), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(std::filesystem::exists(out));
    r = run_cli(
        {"heads", "prune", (dir / "a.ph.gguf").string(), "-o", out.string(), "--lowest", "0.5", "--scan", scan, "-q"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("method exact, ablation zero; made on this model"), std::string::npos) << r.out;

    // The rule: in every kv group, the heads with the lowest signed delta go, so a head whose ablation lowers the
    // loss much (0:0, -0.5) goes before one that barely changes it (0:1, +0.001), which |delta| would pick.
    auto ranked = j;
    const double d[2][4] = {{-0.5, 0.001, 0.2, 0.1}, {0.3, 0.2, -0.01, 0.02}};
    for (auto& h : ranked["heads"]) h["delta"] = d[h["layer"].get<int>()][h["head"].get<int>()];
    std::ofstream(dir / "ranked.json") << ranked.dump();
    std::filesystem::remove(out);
    r = run_cli({"heads", "prune", a, "-o", out.string(), "--lowest", "0.5", "--scan", (dir / "ranked.json").string()});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("prune: heads 0:0, 0:3, 1:1, 1:2 removed"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("with the lowest delta (ablation raised the loss least or lowered it most)"),
              std::string::npos)
        << r.out;

    // A scan from before the model was recorded ("model": its path) is still read, and prune says it is unchecked.
    auto old = j;
    old["model"] = a;
    old.erase("method");
    old.erase("ablation");
    std::ofstream(dir / "old.json") << old.dump();
    std::filesystem::remove(out);
    r = run_cli({"heads", "prune", a, "-o", out.string(), "--lowest", "0.5", "--scan", (dir / "old.json").string()});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("a scan that does not record its model: not checked against " + a), std::string::npos)
        << r.out;
}

// Issue 23 item 9: on a terminal, scan's progress bar counts the layers it runs, not bytes ("64 B / 576 B").
TEST(ScanProgress, CountsLayersOnATerminal) {
    TempDir dir;
    const Config c = small_gqa();
    write_random_init(c, test::test_seed(), dir / "a.ph.gguf");
    write_tokens(dir / "tokens.txt", c.vocab, 16);
    // util-linux's script(1) gives the command a terminal; its output is what the terminal showed.
    const std::string cmd = std::string(HEADFUSE_CLI) + " heads scan " + (dir / "a.ph.gguf").string() +
                            " --tokens-file " + (dir / "tokens.txt").string();
    const auto r = test::run_program({"script", "-qec", cmd, "/dev/null"});
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_TRUE(std::regex_search(r.out, std::regex("scan \\[#+\\] 100% [0-9]+ / [0-9]+ layers  [0-9.]+ layers/s")))
        << r.out;
    EXPECT_EQ(r.out.find(" B / "), std::string::npos) << r.out;
}

// ---- the figure in a browser ---------------------------------------------------------------------------------

struct Png {
    std::uint32_t width = 0, height = 0;
    std::vector<std::uint8_t> rgb;
    std::array<int, 3> at(double x, double y) const {
        const auto i = (std::size_t(y) * width + std::size_t(x)) * 3;
        return {rgb[i], rgb[i + 1], rgb[i + 2]};
    }
};

Png read_png(const std::filesystem::path& p) {
    png_image img{};
    img.version = PNG_IMAGE_VERSION;
    Png out;
    if (!png_image_begin_read_from_file(&img, p.c_str())) return out;
    img.format = PNG_FORMAT_RGB;
    out.rgb.resize(PNG_IMAGE_SIZE(img));
    if (!png_image_finish_read(&img, nullptr, out.rgb.data(), 0, nullptr)) return {};
    out.width = img.width;
    out.height = img.height;
    return out;
}

std::string chromium() {
    for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
        if (std::filesystem::exists(p)) return p;
    return "";
}

struct Shape {
    std::string kind;  // "cell" or "bar"
    double x, y, w, h;
    std::array<int, 3> rgb;
};

// Renders `svg` with chromium at the size it declares; the PNG, and the cells and colour bar steps it declares.
Png render(const std::filesystem::path& svg, const std::filesystem::path& png, std::vector<Shape>& shapes,
           double& width, double& height) {
    const std::string text = slurp(svg);
    std::smatch m;
    EXPECT_TRUE(std::regex_search(text, m, std::regex("<svg [^>]*width=\"([0-9.]+)\" height=\"([0-9.]+)\"")));
    width = std::stod(m[1]);
    height = std::stod(m[2]);
    const std::regex rect(
        "<rect class=\"(cell|bar)\" x=\"([0-9.]+)\" y=\"([0-9.]+)\" width=\"([0-9.]+)\" height=\"([0-9.]+)\" "
        "fill=\"#([0-9a-f]{6})\"");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), rect); it != std::sregex_iterator(); ++it) {
        const auto& s = *it;
        const unsigned long c = std::stoul(s[6], nullptr, 16);
        shapes.push_back({s[1],
                          std::stod(s[2]),
                          std::stod(s[3]),
                          std::stod(s[4]),
                          std::stod(s[5]),
                          {int(c >> 16), int((c >> 8) & 255), int(c & 255)}});
    }
    const std::filesystem::path profile = png.parent_path() / (png.stem().string() + ".profile");
    std::filesystem::create_directories(profile);
    const std::string cmd =
        "timeout 180 " + chromium() +
        " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
        " --disable-component-update --disable-sync --hide-scrollbars --force-device-scale-factor=1"
        " --user-data-dir=" +
        profile.string() + " --screenshot=" + png.string() + " --window-size=" + std::to_string(int(width)) + "," +
        std::to_string(int(height)) + " file://" + svg.string() + " >" + profile.string() + ".log 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << slurp(profile.string() + ".log");
    return read_png(png);
}

// The picture has the declared size; every colour bar step and every cell has its declared colour where declared
// (a cell sampled in its top left corner, away from a printed value); no cell is left blank.
void check_picture(const std::filesystem::path& svg, std::size_t cells, const char* keep_as) {
    std::vector<Shape> shapes;
    double width = 0, height = 0;
    const std::filesystem::path png = svg.parent_path() / (svg.stem().string() + ".png");
    const Png p = render(svg, png, shapes, width, height);
    if (const char* keep = std::getenv("HEADFUSE_KEEP_FIGURES"))
        std::filesystem::copy_file(png, std::filesystem::path(keep) / keep_as,
                                   std::filesystem::copy_options::overwrite_existing);
    ASSERT_EQ(p.width, std::uint32_t(width)) << png;
    ASSERT_EQ(p.height, std::uint32_t(height)) << png;
    std::size_t n_cells = 0, n_bar = 0, coloured = 0;
    for (const Shape& s : shapes) {
        const bool cell = s.kind == "cell";
        const double x = cell ? s.x + 1 : s.x + s.w / 2, y = cell ? s.y + 1 : s.y + s.h / 2;
        const auto got = p.at(x, y);
        for (int k = 0; k < 3; ++k)
            ASSERT_LE(std::abs(got[std::size_t(k)] - s.rgb[std::size_t(k)]), kColourTolerance)
                << s.kind << " at " << x << "," << y << " in " << png;
        n_cells += cell;
        n_bar += !cell;
        coloured += cell && (s.rgb[0] != s.rgb[2]);  // not the white of zero
    }
    EXPECT_EQ(n_cells, cells);
    EXPECT_EQ(n_bar, 32u);
    EXPECT_GT(coloured, cells / 2);
    // The bar runs from red (the loss rises) at the top to blue at the bottom.
    const Shape* first = nullptr;
    const Shape* last = nullptr;
    for (const Shape& s : shapes)
        if (s.kind == "bar") {
            if (!first) first = &s;
            last = &s;
        }
    ASSERT_TRUE(first && last);
    EXPECT_GT(p.at(first->x + 8, first->y + 2)[0], 150);
    EXPECT_GT(p.at(last->x + 8, last->y + 2)[2], 150);
}

#define REQUIRE_CHROMIUM() \
    HEADFUSE_REQUIRE(!chromium().empty(), "chromium is not installed (scripts/setup.sh installs it)")

// A real scan of a 2 x 4 model through the CLI: the figure names model, method and ablation, prints every value,
// marks the two kv groups, and chromium shows what it declares.
TEST(ScanFigure, SmallScanThroughTheCliRendersAsDeclared) {
    REQUIRE_CHROMIUM();
    TempDir dir;
    const Config c = small_gqa();
    write_random_init(c, test::test_seed(), dir / "a.ph.gguf");
    fuse(PerHeadModel::open(dir / "a.ph.gguf"), dir / "model.gguf");
    write_tokens(dir / "tokens.txt", c.vocab, 24);
    const auto svg = dir / "scan.svg";
    const auto r = run_cli({"heads", "scan", (dir / "model.gguf").string(), "--tokens-file",
                            (dir / "tokens.txt").string(), "--svg", svg.string(), "-q"});
    ASSERT_EQ(r.status, 0) << r.err;
    const std::string text = slurp(svg);
    EXPECT_NE(text.find("Head ablation scan: model.gguf"), std::string::npos);
    EXPECT_NE(text.find("method exact, ablation zero, 24 tokens"), std::string::npos);
    EXPECT_NE(text.find(">kv 0</text>"), std::string::npos);
    EXPECT_NE(text.find(">kv 1</text>"), std::string::npos);
    EXPECT_NE(text.find(">loss change (nats)</text>"), std::string::npos);
    EXPECT_NE(text.find(">layer</text>"), std::string::npos);
    // Each cell's value is printed in it (text-anchor middle, after its rect).
    const std::regex value("</rect>\n<text [^>]*text-anchor=\"middle\"[^>]*>([+]|\xe2\x88\x92)?[0-9.]+</text>");
    const auto n_values = std::distance(std::sregex_iterator(text.begin(), text.end(), value), std::sregex_iterator());
    EXPECT_EQ(n_values, c.n_layers * c.n_heads);
    check_picture(svg, c.n_layers * c.n_heads, "scan-2x4.png");
}

HeadScan synthetic(std::size_t layers, std::size_t heads) {
    HeadScan s;
    s.base_loss = 7.25;
    s.loss.assign(layers, std::vector<double>(heads));
    for (std::size_t l = 0; l < layers; ++l)
        for (std::size_t h = 0; h < heads; ++h)
            s.loss[l][h] =
                s.base_loss + 0.03 * std::sin(0.7 * double(l) + 1.3 * double(h)) * double(l + 1) / double(layers);
    return s;
}

// 4 x 4 (values printed), 32 x 32 and 80 x 64 (as large as real models; cells only) render as declared.
TEST(ScanFigure, LayoutScalesFrom4x4To80x64) {
    REQUIRE_CHROMIUM();
    TempDir dir;
    struct Case {
        std::size_t layers, heads;
        std::uint32_t kv;
        bool values;
    };
    for (const Case k : {Case{4, 4, 2, true}, Case{32, 32, 8, false}, Case{80, 64, 8, false}}) {
        const std::string name = "scan-" + std::to_string(k.layers) + "x" + std::to_string(k.heads);
        SCOPED_TRACE(name);
        ScanFigure fig;
        fig.model = "llama-" + name + ".gguf";
        fig.tokens = 64;
        fig.n_kv_heads = k.kv;
        const std::string text = scan_svg(synthetic(k.layers, k.heads), fig);
        std::ofstream(dir / (name + ".svg")) << text;
        EXPECT_NE(text.find(">loss change (nats)</text>"), std::string::npos);
        EXPECT_EQ(text.find("text-anchor=\"middle\" fill=\"#") != std::string::npos, k.values);
        EXPECT_NE(text.find(">kv " + std::to_string(k.kv - 1) + "</text>"), std::string::npos);
        check_picture(dir / (name + ".svg"), k.layers * k.heads, (name + ".png").c_str());
    }
}

}  // namespace
