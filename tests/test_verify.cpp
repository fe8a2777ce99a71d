// verify on pairs that differ: each difference must FAIL, naming the tensor or the field, with cmp's exit
// status (0 the same model, 1 they differ, 2 they could not be compared). A verify that always passed, or
// that passed a difference, fails these tests.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "headfuse/gguf.h"
#include "headfuse/types.h"
#include "support/ggml_lib.h"
#include "support/models.h"

namespace headfuse {
namespace {

namespace fs = std::filesystem;
using test::run_cli;
using test::RunResult;
using test::TempDir;

// Small, but every kind of tensor: GQA (2 kv heads of 4), 2 layers, untied; rows of whole q8_0 blocks.
const std::vector<std::string> kShape = {"--d-model", "64",  "--n-heads",  "4", "--n-kv-heads", "2",   "--d-head", "16",
                                         "--d-ff",    "128", "--n-layers", "2", "--vocab",      "300", "--seed",   "7"};
constexpr std::uint64_t kDHead = 16;

// init with kShape, where `flag value` pairs in `changes` replace or add to it.
void init(const fs::path& out, const std::vector<std::string>& changes = {}) {
    std::vector<std::string> args = {"init", "-q", "-o", out.string()};
    args.insert(args.end(), kShape.begin(), kShape.end());
    for (std::size_t i = 0; i + 1 < changes.size(); i += 2) {
        const auto it = std::find(args.begin(), args.end(), changes[i]);
        if (it != args.end())
            *(it + 1) = changes[i + 1];
        else
            args.insert(args.end(), {changes[i], changes[i + 1]});
    }
    const RunResult r = run_cli(args);
    ASSERT_EQ(r.status, 0) << r.err;
}

void fuse(const fs::path& in, const fs::path& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"fuse", "-q", in.string(), "-o", out.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    const RunResult r = run_cli(args);
    ASSERT_EQ(r.status, 0) << r.err;
}

RunResult verify(const fs::path& per_head, const fs::path& fused) {
    return run_cli({"verify", "-q", per_head.string(), fused.string()});
}

// Absolute offset of a tensor's first byte in a GGUF file.
std::uint64_t tensor_offset(const fs::path& file, const std::string& tensor) {
    const GgufFile f = GgufFile::open(file);
    const TensorInfo* t = f.find_tensor(tensor);
    if (!t) throw std::runtime_error("no tensor " + tensor + " in " + file.string());
    return f.data_start() + t->offset;
}

std::vector<std::byte> read_at(const fs::path& file, std::uint64_t offset, std::size_t n) {
    std::vector<std::byte> b(n);
    std::ifstream in(file, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(n));
    if (!in) throw std::runtime_error("short read of " + file.string());
    return b;
}

void write_at(const fs::path& file, std::uint64_t offset, std::span<const std::byte> b) {
    std::fstream out(file, std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(static_cast<std::streamoff>(offset));
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    if (!out) throw std::runtime_error("short write to " + file.string());
}

// Moves the f32 element `index` of `tensor` one ulp up.
void bump_one_ulp(const fs::path& file, const std::string& tensor, std::uint64_t index) {
    const std::uint64_t at = tensor_offset(file, tensor) + index * sizeof(float);
    float x;
    std::memcpy(&x, read_at(file, at, sizeof x).data(), sizeof x);
    const float y = std::nextafter(x, INFINITY);
    ASSERT_NE(x, y);
    write_at(file, at, std::as_bytes(std::span(&y, 1)));
}

void expect_fail(const RunResult& r, const std::vector<std::string>& named) {
    EXPECT_EQ(r.status, 1) << r.out << r.err;
    EXPECT_NE(r.out.find("verdict: FAIL"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("PASS"), std::string::npos) << r.out;
    for (const std::string& s : named)
        EXPECT_NE(r.out.find(s), std::string::npos) << "'" << s << "' not in:\n" << r.out;
}

class VerifyFixture : public ::testing::Test {
protected:
    void SetUp() override {
        init(ph_);
        fuse(ph_, fused_);
    }
    TempDir dir_;
    const fs::path ph_ = dir_ / "ph.gguf", fused_ = dir_ / "fused.gguf";
};

TEST_F(VerifyFixture, TheSameModelPasses) {
    const RunResult r = verify(ph_, fused_);
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("verdict: PASS"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("0 differ"), std::string::npos) << r.out;
}

TEST_F(VerifyFixture, OneUlpInAFusedHeadFails) {
    // Head 1, row 3, element 5 of layer 1's value projection: fused row 1 * d_head + 3.
    bump_one_ulp(fused_, "blk.1.attn_v.weight", (1 * kDHead + 3) * 64 + 5);
    expect_fail(verify(ph_, fused_), {"MISMATCH tensor 'blk.1.attn_v.weight': row 19 differs"});
}

TEST_F(VerifyFixture, OneUlpInAPerHeadWeightFails) {
    bump_one_ulp(ph_, "blk.0.ffn_down.weight", 128 * 10 + 127);
    expect_fail(verify(ph_, fused_), {"MISMATCH tensor 'blk.0.ffn_down.weight': row 10 differs"});
}

TEST_F(VerifyFixture, OneUlpInANormFails) {
    bump_one_ulp(fused_, "output_norm.weight", 63);
    expect_fail(verify(ph_, fused_), {"MISMATCH tensor 'output_norm.weight'"});
}

TEST_F(VerifyFixture, TwoFusedHeadsSwappedFail) {
    const std::uint64_t head = kDHead * 64 * sizeof(float), at = tensor_offset(fused_, "blk.0.attn_k.weight");
    const std::vector<std::byte> h0 = read_at(fused_, at, head), h1 = read_at(fused_, at + head, head);
    ASSERT_NE(h0, h1);
    write_at(fused_, at, h1);
    write_at(fused_, at + head, h0);
    expect_fail(verify(ph_, fused_), {"MISMATCH tensor 'blk.0.attn_k.weight': row 0 differs"});
}

TEST_F(VerifyFixture, TwoPerHeadTensorsSwappedFail) {
    const std::uint64_t head = kDHead * 64 * sizeof(float);
    const std::uint64_t a = tensor_offset(ph_, "blk.1.attn_q.head_1.weight");
    const std::uint64_t b = tensor_offset(ph_, "blk.1.attn_q.head_3.weight");
    const std::vector<std::byte> ha = read_at(ph_, a, head), hb = read_at(ph_, b, head);
    write_at(ph_, a, hb);
    write_at(ph_, b, ha);
    expect_fail(verify(ph_, fused_), {"MISMATCH tensor 'blk.1.attn_q.weight': row 16 differs"});
}

struct FieldCase {
    std::string flag, value;  // given to init for the per-head model; the fused file keeps the default
    std::string expect;       // the line verify must print
};

void PrintTo(const FieldCase& c, std::ostream* os) { *os << c.flag << ' ' << c.value; }

class VerifyField : public ::testing::TestWithParam<FieldCase> {};

TEST_P(VerifyField, IsNamedWithBothValues) {
    TempDir dir;
    init(dir / "a.gguf");
    fuse(dir / "a.gguf", dir / "fused.gguf");
    init(dir / "b.gguf", {GetParam().flag, GetParam().value});  // same seed: the same weights
    expect_fail(verify(dir / "b.gguf", dir / "fused.gguf"), {"MISMATCH hyperparameter " + GetParam().expect});
}

INSTANTIATE_TEST_SUITE_P(
    Fields, VerifyField,
    ::testing::Values(
        FieldCase{"--rope-theta", "500000", "rope_theta (llama.rope.freq_base): per-head 500000, fused 10000"},
        FieldCase{"--rms-eps", "1e-6", "rms_eps (llama.attention.layer_norm_rms_epsilon): per-head 1e-06, fused 1e-05"},
        FieldCase{"--rms-eps", "1.0000001e-05",
                  "rms_eps (llama.attention.layer_norm_rms_epsilon): per-head 1.0000001e-05, fused 1e-05"},
        FieldCase{"--context", "4096", "context_length (llama.context_length): per-head 4096, fused 2048"},
        FieldCase{"--n-layers", "3", "n_layers (llama.block_count): per-head 3, fused 2"}),
    [](const auto& info) {
        std::string s = info.param.flag.substr(2) + "_" + info.param.value;
        for (char& c : s)
            if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
        return s;
    });

TEST_F(VerifyFixture, ATensorOfAnotherTypeFails) {
    // The per-head model of an f16 file against the f32 file: the same model rounded, not the same model.
    fuse(ph_, dir_ / "f16.gguf", {"--type", "f16"});
    const RunResult s = run_cli({"split", "-q", (dir_ / "f16.gguf").string(), "-o", (dir_ / "ph16.gguf").string()});
    ASSERT_EQ(s.status, 0) << s.err;
    expect_fail(verify(dir_ / "ph16.gguf", fused_),
                {"MISMATCH tensor 'token_embd.weight': f16 in per-head, f32 in fused; row 0 differs (max |difference| ",
                 "MISMATCH tensor 'blk.1.ffn_down.weight': f16 in per-head, f32 in fused; row 0 differs"});
}

TEST(Verify, ALensFoldedInF32Fails) {
    TempDir dir;
    const fs::path ph = dir / "lens.gguf", fused = dir / "fused.gguf";
    init(ph, {"--donor-d-in", "48"});
    fuse(ph, fused);
    ASSERT_EQ(verify(ph, fused).status, 0);

    // E = D · Pᵀ accumulated in f32, in order: what a careless fold writes.
    constexpr std::uint64_t d_in = 48, d_model = 64, vocab = 300;
    std::vector<float> donor(d_in * vocab), proj(d_in * d_model), folded(d_model * vocab);
    std::memcpy(donor.data(), read_at(ph, tensor_offset(ph, "token_embd.weight"), donor.size() * 4).data(),
                donor.size() * 4);
    std::memcpy(proj.data(), read_at(ph, tensor_offset(ph, "lens.proj.weight"), proj.size() * 4).data(),
                proj.size() * 4);
    for (std::uint64_t v = 0; v < vocab; ++v)
        for (std::uint64_t r = 0; r < d_model; ++r) {
            float acc = 0;
            for (std::uint64_t c = 0; c < d_in; ++c) acc += donor[v * d_in + c] * proj[r * d_in + c];
            folded[v * d_model + r] = acc;
        }
    const std::uint64_t at = tensor_offset(fused, "token_embd.weight");
    const std::vector<std::byte> f64_fold = read_at(fused, at, folded.size() * 4);
    ASSERT_NE(std::memcmp(f64_fold.data(), folded.data(), f64_fold.size()), 0)
        << "the f32 fold equals the f64 one: the case tests nothing";
    write_at(fused, at, std::as_bytes(std::span(folded)));
    expect_fail(verify(ph, fused), {"MISMATCH tensor 'token_embd.weight'", "differs from the lens fold"});
}

TEST_F(VerifyFixture, WhatCannotBeComparedExitsTwo) {
    const fs::path missing = dir_ / "missing.gguf", text = dir_ / "text.gguf";
    std::ofstream(text) << "not a model\n";
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"verify", "-q", missing.string(), fused_.string()},
             {"verify", "-q", ph_.string(), text.string()},
             {"verify", "-q", ph_.string()},  // usage
             {"verify", "-q", ph_.string(), fused_.string(), "--threads", "0"},
         }) {
        const RunResult r = run_cli(args);
        EXPECT_EQ(r.status, 2) << args[2] << ": " << r.out << r.err;
        EXPECT_EQ(r.out.find("PASS"), std::string::npos) << r.out;
        EXPECT_FALSE(r.err.empty());
    }
}

// ---- any two models headfuse reads ----------------------------------------------------------------------------

void expect_pass(const RunResult& r) {
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("verdict: PASS"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" 0 differ"), std::string::npos) << r.out;
}

TEST_F(VerifyFixture, EitherOrderPasses) {
    const RunResult r = verify(fused_, ph_);
    expect_pass(r);
    EXPECT_NE(r.out.find("logits:  bit-identical"), std::string::npos) << r.out;
}

// An export in either layout is its source (the fused file, its per-head checkpoint), in either order: every
// tensor read back in llama.cpp's row order, the logits bit for bit.
TEST_F(VerifyFixture, AnExportIsItsSource) {
    for (const std::string format : {"hf", "transformer-lens"}) {
        const fs::path out = dir_ / format;
        const RunResult e = run_cli({"export", "-q", fused_.string(), "-o", out.string(), "--format", format});
        ASSERT_EQ(e.status, 0) << e.err;
        for (const auto& [a, b] :
             std::vector<std::pair<fs::path, fs::path>>{{fused_, out}, {out, fused_}, {ph_, out}}) {
            const RunResult r = verify(a, b);
            expect_pass(r);
            EXPECT_NE(r.out.find("logits:  bit-identical"), std::string::npos) << format << ": " << r.out;
        }
    }
}

// Two fused files, and a split set given by one shard.
TEST_F(VerifyFixture, FusedAgainstFusedAndASplitSet) {
    const fs::path again = dir_ / "again.gguf", set = dir_ / "set.gguf";
    fuse(ph_, again);
    expect_pass(verify(fused_, again));
    fuse(ph_, set, {"--split-max-tensors", "6"});
    fs::path first;
    for (const std::string& f : test::list_dir(dir_.path()))
        if (f.starts_with("set-00001-of-")) first = dir_ / f;
    ASSERT_FALSE(first.empty()) << "no first shard";
    ASSERT_FALSE(fs::exists(dir_ / "set-00001-of-00001.gguf")) << "one shard: the case tests nothing";
    expect_pass(verify(fused_, first));
    expect_pass(verify(first, ph_));
}

// The offset of a safetensors tensor's first byte in its file.
std::uint64_t safetensors_offset(const fs::path& file, const std::string& tensor) {
    const std::vector<std::byte> head = read_at(file, 0, 8);
    std::uint64_t n = 0;
    std::memcpy(&n, head.data(), 8);
    const std::vector<std::byte> text = read_at(file, 8, n);
    const auto j = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(text.data()), text.size()));
    return 8 + n + j.at(tensor).at("data_offsets")[0].get<std::uint64_t>();
}

// One ulp changed is found, by the tensor's name, its first differing row and the size of the difference.
TEST_F(VerifyFixture, AChangedTensorIsFound) {
    const fs::path b = dir_ / "b.gguf";
    fs::copy_file(fused_, b);
    bump_one_ulp(b, "blk.0.ffn_up.weight", 64 * 3 + 1);
    const RunResult r = verify(fused_, b);
    expect_fail(r, {"MISMATCH tensor 'blk.0.ffn_up.weight': row 3 differs (max |difference| ",
                    "first difference: 'blk.0.ffn_up.weight'", "verdict: FAIL: the models differ"});

    const fs::path hf = dir_ / "hf";
    ASSERT_EQ(run_cli({"export", "-q", fused_.string(), "-o", hf.string()}).status, 0);
    const std::uint64_t at = safetensors_offset(hf / "model.safetensors", "model.layers.1.self_attn.k_proj.weight");
    float x;
    std::memcpy(&x, read_at(hf / "model.safetensors", at, 4).data(), 4);
    const float y = std::nextafter(x, INFINITY);
    write_at(hf / "model.safetensors", at, std::as_bytes(std::span(&y, 1)));
    expect_fail(verify(hf, fused_), {"MISMATCH tensor 'blk.1.attn_k.weight': row "});
}

// Parses the number after `label` in `text`.
double number_after(const std::string& text, const std::string& label) {
    const std::size_t at = text.find(label);
    if (at == std::string::npos) return -1;
    return std::strtod(text.c_str() + at + label.size(), nullptr);
}

// A q8_0 file against its f32 source: different (exit 1), by the size of the difference that ggml's own
// dequantizer gives; the other way round, the f32 file is not the q8_0 one, but the q8_0 file is the f32 one
// encoded: PASS, with the same size said.
TEST_F(VerifyFixture, AQuantizedFileAgainstItsF32Source) {
    const fs::path q8 = dir_ / "q8.gguf";
    fuse(fused_, q8, {"--type", "q8_0"});
    const RunResult r = verify(q8, fused_);
    expect_fail(r, {"MISMATCH tensor 'token_embd.weight': q8_0 in A, f32 in B; row 0 differs (max |difference| ",
                    "values:  max |A - B| "});
    const double reported = number_after(r.out, "values:  max |A - B| ");
    EXPECT_GT(reported, 0) << r.out;
    const RunResult back = verify(fused_, q8);
    EXPECT_EQ(back.status, 0) << back.out << back.err;
    EXPECT_NE(back.out.find("verdict: PASS: B is A's values encoded at its types"), std::string::npos) << back.out;
    EXPECT_NE(back.out.find("B carries the error of encoding A"), std::string::npos) << back.out;
    EXPECT_EQ(number_after(back.out, "values:  max |A - B| "), reported) << back.out;

    HEADFUSE_OPTIONAL_GGML(ggml);
    if (!ggml) return;
    // The largest |dequantized q8_0 - f32| over every weight, by ggml's reader and dequantizer.
    const auto a = ggml->read_gguf(q8.string()), b = ggml->read_gguf(fused_.string());
    ASSERT_TRUE(a.ok && b.ok);
    const GgufFile fa = GgufFile::open(q8);
    double max_diff = 0;
    for (std::size_t i = 0; i < a.names.size(); ++i) {
        if (a.types[i] != static_cast<std::uint32_t>(DType::Q8_0)) continue;
        const TensorInfo* t = fa.find_tensor(a.names[i]);
        const std::int64_t n = static_cast<std::int64_t>(t->n_elements());
        const auto bi = std::find(b.names.begin(), b.names.end(), a.names[i]) - b.names.begin();
        const std::vector<std::byte> qa = read_at(q8, a.data_offset + a.offsets[i], ggml->row_size(DType::Q8_0, n));
        const std::vector<std::byte> fb = read_at(fused_, b.data_offset + b.offsets[bi], n * sizeof(float));
        const std::vector<float> da = ggml->to_float(DType::Q8_0, qa.data(), n);
        for (std::int64_t e = 0; e < n; ++e) {
            float f;
            std::memcpy(&f, fb.data() + e * sizeof(float), sizeof f);
            max_diff = std::max(max_diff, std::abs(double{da[e]} - double{f}));
        }
    }
    // verify prints three significant digits: agreement within half a unit of the third.
    constexpr double kPrintedRelativeError = 5e-3;
    EXPECT_NEAR(reported, max_diff, max_diff * kPrintedRelativeError) << r.out;
}

}  // namespace
}  // namespace headfuse
