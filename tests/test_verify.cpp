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

#include "headfuse/gguf.h"
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
                {"MISMATCH tensor 'token_embd.weight': a f16 source and a f32 file",
                 "MISMATCH tensor 'blk.1.ffn_down.weight': a f16 source and a f32 file"});
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
             {"verify", "-q", fused_.string(), ph_.string()},  // the arguments swapped
             {"verify", "-q", ph_.string()},                   // usage
             {"verify", "-q", ph_.string(), fused_.string(), "--threads", "0"},
         }) {
        const RunResult r = run_cli(args);
        EXPECT_EQ(r.status, 2) << args[2] << ": " << r.out << r.err;
        EXPECT_EQ(r.out.find("PASS"), std::string::npos) << r.out;
        EXPECT_FALSE(r.err.empty());
    }
}

}  // namespace
}  // namespace headfuse
