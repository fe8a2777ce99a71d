// Every weight type llama.cpp writes for a LLaMA model, in files made by llama.cpp's own quantizer
// (llama_model_quantize from libllama, support/llama_quantize.h): headfuse reads them (inspect, realize, logits),
// agrees with llama.cpp on the next-token log-probabilities within a bound measured per type, split then fuse
// gives back the file byte for byte (metadata, tensor order, tensor bytes), and verify passes the pair.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>

#include "gguf/writer.h"
#include "headfuse/fuse.h"
#include "headfuse/model.h"
#include "headfuse/verify.h"
#include "support/ggml_lib.h"
#include "support/judge.h"
#include "support/llama_quantize.h"
#include "support/models.h"

using namespace headfuse;
using test::TempDir;

namespace {

// Bounds on max |log p_llama.cpp - log p_headfuse| over every token and position of an 8-token prompt, per type.
// The forward pass decodes weights exactly (as dequantize_row_*) and keeps activations in f32; llama.cpp rounds
// the activations to the weight type's vec_dot_type for each matmul (f16 for F16, bf16 for BF16, q8_0 for the
// 32-wide quants and IQ4_NL, q8_K for the K-quants and IQ4_XS), and that rounding is the whole difference.
// Measured on the d_model-256 model below (seed 20261128; `ctest -R WeightType -V` prints them): f32 3.5e-7,
// f16 6.2e-4, bf16 4.2e-3, q4_0 1.24e-2, q4_1 1.44e-2, q5_0 1.41e-2, q5_1 1.35e-2, q8_0 1.11e-2, q2_K 1.92e-2,
// q3_K 1.86e-2, q4_K 2.02e-2, q5_K 1.8e-2, q6_K 1.96e-2, iq4_nl 1.18e-2, iq4_xs 1.77e-2 (the activation rounding
// dominates: q8_0 weights differ as much as q4_0 ones). Each bound is 3x the measured value, rounded up; F32 has
// no activation rounding and keeps the 1e-4 bound of the other judge tests.
const std::map<DType, double> kTolerance{
    {DType::F32, 1e-4},    {DType::F16, 2e-3},    {DType::BF16, 1.5e-2}, {DType::Q4_0, 4e-2},   {DType::Q4_1, 4.5e-2},
    {DType::Q5_0, 4.5e-2}, {DType::Q5_1, 4.5e-2}, {DType::Q8_0, 3.5e-2}, {DType::Q2_K, 6e-2},   {DType::Q3_K, 6e-2},
    {DType::Q4_K, 6.5e-2}, {DType::Q5_K, 6e-2},   {DType::Q6_K, 6e-2},   {DType::IQ4_NL, 4e-2}, {DType::IQ4_XS, 6e-2},
};
// A mixed file (Q4_K_M, or K-quants falling back to 32-wide types) takes the loosest K-quant bound. Measured:
// Q4_K_M 1.97e-2; on the d_model-96 model Q4_K_M 7.8e-3, Q2_K 7.1e-3, IQ4_XS 6.3e-3.
constexpr double kMixTolerance = 6.5e-2;

// d_model 256: every row is whole K-quant super-blocks, so a pure file is all of one type.
Config kquant_model() { return test::make_config_ctx256(256, 4, 2, 64, 512, 2, 300); }

// d_model 96 and d_ff 160: rows are whole 32-blocks but not 256-blocks, so llama.cpp writes the K-quant
// tensors in its fallback types (tensor_type_fallback) and the file mixes types.
Config narrow_model() { return test::make_config_ctx256(96, 3, 1, 32, 160, 2, 300); }

// The F32 fused file llama.cpp's quantizer starts from.
std::filesystem::path f32_file(const TempDir& dir, const Config& c, const std::string& name) {
    const auto ph = dir / (name + "-ph.gguf"), fused = dir / (name + "-f32.gguf");
    write_random_init(c, test::test_seed(), ph);
    fuse(PerHeadModel::open(ph), fused);
    return fused;
}

// Everything this file promises about one quantized file x.
void check_file(const TempDir& dir, const std::filesystem::path& x, double tolerance) {
    const std::string stem = x.stem().string();
    // inspect reads it
    const auto ins = test::run_cli({"inspect", x.string()});
    EXPECT_EQ(ins.status, 0) << ins.err;
    EXPECT_NE(ins.out.find("fused llama file"), std::string::npos);

    // split then fuse gives back x, byte for byte; verify passes the pair
    const auto ph = dir / (stem + "-split.gguf"), back = dir / (stem + "-back.gguf");
    const auto s = test::run_cli({"split", x.string(), "-o", ph.string(), "-q"});
    EXPECT_EQ(s.status, 0) << s.err;
    const auto f = test::run_cli({"fuse", ph.string(), "-o", back.string(), "-q"});
    EXPECT_EQ(f.status, 0) << f.err;
    EXPECT_TRUE(test::read_bytes(back) == test::read_bytes(x)) << stem << ": fuse(split(x)) differs from x";
    const auto v = test::run_cli({"verify", ph.string(), x.string(), "-q"});
    EXPECT_EQ(v.status, 0) << v.out << v.err;

    // the realized heads are byte ranges of the fused tensors
    const FusedModel fm = FusedModel::open(x);
    const TensorView& q = fm.fused(0, Role::AttnQ);
    EXPECT_EQ(fm.views().layers[0].q[1].bytes().data(), q.bytes().data() + q.row_nbytes() * fm.config().d_head);

    // llama.cpp agrees
    const auto a = test::agreement_with_llama(x.string(), default_tokens(fm.config().vocab, 8));
    EXPECT_LE(a.max_diff, tolerance) << stem;
    EXPECT_GE(a.top_agree, a.positions - 1) << stem;
    std::printf("[headfuse] %s: llama.cpp max |dlogp| %.3g (bound %.3g), top token %d/%d\n", stem.c_str(), a.max_diff,
                tolerance, a.top_agree, a.positions);
}

class WeightTypes : public ::testing::TestWithParam<DType> {};

}  // namespace

TEST_P(WeightTypes, LlamaCppsFileReadsAgreesAndRoundTrips) {
    HEADFUSE_REQUIRE_JUDGES();
    HEADFUSE_REQUIRE_LLAMA_QUANTIZE(quantizer);
    HEADFUSE_REQUIRE_GGML(ggml);
    const DType type = GetParam();
    const auto ftype = test::ftype_for(static_cast<std::uint32_t>(type));
    ASSERT_TRUE(ftype.has_value());
    TempDir dir;
    const auto x = dir / (std::string(type_name(type)) + ".gguf");
    quantizer->quantize(f32_file(dir, kquant_model(), "m"), x, {.ftype = *ftype, .pure = true});

    // llama.cpp wrote every 2-D weight in the type (norms stay f32)
    const GgufFile g = GgufFile::open(x);
    for (const TensorInfo& t : g.tensors())
        EXPECT_EQ(t.type, t.n_dims == 1 ? 0u : static_cast<std::uint32_t>(type)) << t.name;
    ASSERT_TRUE(ggml->read_gguf(x.string()).ok);
    check_file(dir, x, kTolerance.at(type));
}

INSTANTIATE_TEST_SUITE_P(All, WeightTypes,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                                           DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K,
                                           DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS),
                         [](const auto& info) { return std::string(type_name(info.param)); });

// llama.cpp's default mixes: Q4_K_M (the most downloaded) keeps some tensors in Q6_K; on a model whose rows
// are not whole 256-blocks its K-quant tensors fall back to 32-wide types.
TEST(WeightTypeMixes, Q4KMAndFallbacksReadAgreeAndRoundTrip) {
    HEADFUSE_REQUIRE_JUDGES();
    HEADFUSE_REQUIRE_LLAMA_QUANTIZE(quantizer);
    TempDir dir;
    for (auto [name, config, ftype] : {std::tuple{"q4_k_m", kquant_model(), test::LlamaFtype::Q4_K_M},
                                       {"narrow-q4_k_m", narrow_model(), test::LlamaFtype::Q4_K_M},
                                       {"narrow-q2_k", narrow_model(), test::LlamaFtype::Q2_K},
                                       {"narrow-iq4_xs", narrow_model(), test::LlamaFtype::IQ4_XS}}) {
        SCOPED_TRACE(name);
        const auto x = dir / (std::string(name) + ".gguf");
        quantizer->quantize(f32_file(dir, config, name), x, {.ftype = ftype, .pure = false});
        std::map<std::uint32_t, int> types;
        const GgufFile quantized = GgufFile::open(x);  // held: tensors() borrows from it
        for (const TensorInfo& t : quantized.tensors()) ++types[t.type];
        EXPECT_GE(types.size(), 3u) << "expected a mix of types (f32 norms and two weight types at least)";
        check_file(dir, x, kMixTolerance);
    }
}

namespace {

// `x` written again to `out` with the type id of each tensor `type_of` names changed (its bytes cut or padded
// with zeros to the new size): a file in a type no quantizer writes without an importance matrix.
void retype(const std::filesystem::path& x, const std::filesystem::path& out,
            const std::function<std::uint32_t(const TensorInfo&)>& type_of) {
    const GgufFile g = GgufFile::open(x);
    GgufWriter w;
    w.alignment = g.alignment();
    w.metadata = g.metadata();
    // A quantized file records ggml's quantization version, as llama.cpp's writer (and headfuse's) does.
    for (const TensorInfo& t : g.tensors())
        if (find_type(type_of(t))->block_size > 1) w.metadata.set("general.quantization_version", Value::u32(2));
    for (const TensorInfo& t : g.tensors()) {
        const std::uint32_t type = type_of(t);
        const std::uint64_t n = row_bytes(type, t.ne[0]) * t.n_rows();
        w.add_tensor(t.name, type, {t.ne.data(), t.n_dims}, [n, &g, &t](ByteSink& sink) {
            std::vector<std::byte> bytes(g.tensor_data(t).begin(), g.tensor_data(t).end());
            bytes.resize(n);
            sink.write(bytes);
        });
    }
    w.write(out);
}

}  // namespace

// A type that is not a weight type is refused by name.
TEST(WeightTypeMixes, AnUnreadTypeIsRefusedByName) {
    TempDir dir;
    const auto x = f32_file(dir, kquant_model(), "m");
    const auto r = test::run_cli({"logits", x.string(), "--tokens", "1,2"});
    ASSERT_EQ(r.status, 0) << r.err;
    // q8_1 (id 9, 36-byte blocks of 32) is ggml's activation type, never a weight: one tensor becomes q8_1.
    const auto bad = dir / "q8_1.gguf";
    retype(x, bad, [](const TensorInfo& t) { return t.name == "blk.0.ffn_up.weight" ? 9u : t.type; });
    for (const char* cmd : {"logits", "split"}) {
        std::vector<std::string> args{cmd, bad.string()};
        if (std::string(cmd) == "logits")
            args.insert(args.end(), {"--tokens", "1"});
        else
            args.insert(args.end(), {"-o", (dir / "out.gguf").string()});
        const auto rr = test::run_cli(args);
        EXPECT_EQ(rr.status, 1) << cmd;
        EXPECT_NE(rr.err.find("blk.0.ffn_up.weight"), std::string::npos) << rr.err;
        EXPECT_NE(rr.err.find("q8_1"), std::string::npos) << rr.err;
        EXPECT_FALSE(std::filesystem::exists(dir / "out.gguf"));
    }
}

// The weight types llama.cpp runs that headfuse does not decode (the iq1/iq2/iq3 types, tq1_0, tq2_0, mxfp4) are
// carried as bytes: inspect, split and fuse back byte for byte, verify, realize as row ranges, prune at whole
// blocks; what would compute from their values (logits, pool-kv, prune inside a block) is refused as unsupported,
// naming the tensor and the type. d_head 256 makes a head whole 256-blocks of attn_output's rows.
namespace {

Config carried_model() { return test::make_config_ctx256(256, 2, 2, 256, 512, 2, 300); }

void check_carried(const TempDir& dir, const std::filesystem::path& x, std::uint32_t type_id) {
    const std::string stem = x.stem().string(), name(traits(static_cast<DType>(type_id)).name);
    SCOPED_TRACE(stem);
    const auto ins = test::run_cli({"inspect", x.string()});
    EXPECT_EQ(ins.status, 0) << ins.err;
    EXPECT_NE(ins.out.find(name), std::string::npos) << ins.out;

    const auto ph = dir / (stem + "-split.gguf"), back = dir / (stem + "-back.gguf");
    const auto s = test::run_cli({"split", x.string(), "-o", ph.string(), "-q"});
    ASSERT_EQ(s.status, 0) << s.err;
    const auto f = test::run_cli({"fuse", ph.string(), "-o", back.string(), "-q"});
    ASSERT_EQ(f.status, 0) << f.err;
    EXPECT_TRUE(test::read_bytes(back) == test::read_bytes(x)) << "fuse(split(x)) differs from x";
    const auto v = test::run_cli({"verify", ph.string(), x.string(), "-q"});
    EXPECT_EQ(v.status, 0) << v.out << v.err;

    const FusedModel fm = FusedModel::open(x);
    const TensorView& q = fm.fused(0, Role::AttnQ);
    EXPECT_EQ(q.type(), static_cast<DType>(type_id));
    EXPECT_EQ(fm.views().layers[0].q[1].bytes().data(), q.bytes().data() + q.row_nbytes() * fm.config().d_head);

    // Prune at whole blocks: the kept heads' bytes, attn_output's rows cut to the kept head's column bytes.
    const auto pruned = dir / (stem + "-pruned.gguf");
    const auto p = test::run_cli({"heads", "prune", x.string(), "-o", pruned.string(), "--heads", "0:1,1:1", "-q"});
    ASSERT_EQ(p.status, 0) << p.err;
    const FusedModel pm = FusedModel::open(pruned);
    EXPECT_EQ(pm.config().n_heads, 1u);
    const TensorView &out0 = pm.views().layers[0].attn_output, &in0 = fm.views().layers[0].attn_output;
    ASSERT_EQ(out0.type(), in0.type());
    ASSERT_EQ(out0.n_rows(), in0.n_rows());
    ASSERT_EQ(out0.row_nbytes() * 2, in0.row_nbytes());
    for (std::uint64_t r = 0; r < in0.n_rows(); ++r)  // head 0 kept: the first half of each row
        ASSERT_TRUE(std::equal(out0.row(r).begin(), out0.row(r).end(), in0.row(r).begin())) << "row " << r;
    const auto& kept = pm.views().layers[1].k[0];
    const auto& src = fm.views().layers[1].k[0];
    EXPECT_TRUE(std::equal(kept.bytes().begin(), kept.bytes().end(), src.bytes().begin(), src.bytes().end()));

    // Ablate at whole blocks: head 1's columns of attn_output become zero blocks (zero bytes for a type headfuse
    // does not encode), which ggml decodes to zeros; head 0's columns keep their bytes.
    const auto ablated = dir / (stem + "-ablated.gguf");
    const auto a = test::run_cli({"heads", "ablate", x.string(), "-o", ablated.string(), "--heads", "0:1", "-q"});
    ASSERT_EQ(a.status, 0) << a.err;
    const FusedModel am = FusedModel::open(ablated);
    const TensorView& ab = am.views().layers[0].attn_output;
    const std::uint64_t half = in0.row_nbytes() / 2;
    for (std::uint64_t r = 0; r < in0.n_rows(); ++r) {
        ASSERT_TRUE(std::equal(ab.row(r).begin(), ab.row(r).begin() + half, in0.row(r).begin())) << "row " << r;
        ASSERT_TRUE(
            std::all_of(ab.row(r).begin() + half, ab.row(r).end(), [](std::byte b) { return b == std::byte{0}; }))
            << "row " << r;
    }
    if (auto* ggml = test::GgmlLib::get(); ggml) {
        ASSERT_TRUE(ggml->has_to_float(q.type())) << name;
        const std::uint32_t block = traits(q.type()).block_size;
        const std::vector<std::byte> zeros(traits(q.type()).type_size);
        const std::vector<float> decoded = ggml->to_float(q.type(), zeros.data(), block);
        EXPECT_TRUE(std::all_of(decoded.begin(), decoded.end(), [](float v) { return v == 0.0f; }))
            << "ggml does not decode a zero " << name << " block to zeros";
    }
    // Transplant at whole blocks: layer 0's head 0 from layer 1 of the same file, bytes moved.
    const auto moved = dir / (stem + "-moved.gguf");
    const auto t = test::run_cli(
        {"heads", "transplant", x.string(), "--from", x.string(), "-o", moved.string(), "--heads", "0:0=1:0", "-q"});
    ASSERT_EQ(t.status, 0) << t.err;
    const FusedModel mm = FusedModel::open(moved);
    const TensorView &mq = mm.views().layers[0].q[0], &dq = fm.views().layers[1].q[0];
    EXPECT_TRUE(std::equal(mq.bytes().begin(), mq.bytes().end(), dq.bytes().begin(), dq.bytes().end()));
    const TensorView &mo = mm.views().layers[0].attn_output, &d1 = fm.views().layers[1].attn_output;
    for (std::uint64_t r = 0; r < in0.n_rows(); ++r) {
        ASSERT_TRUE(std::equal(mo.row(r).begin(), mo.row(r).begin() + half, d1.row(r).begin())) << "row " << r;
        ASSERT_TRUE(std::equal(mo.row(r).begin() + half, mo.row(r).end(), in0.row(r).begin() + half)) << "row " << r;
    }

    // Refused, naming the tensor and the type, nothing written.
    const auto none = dir / "none.gguf";
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"logits", x.string(), "--tokens", "1,2"},
          {"heads", "pool-kv", x.string(), "-o", none.string(), "--kv-heads", "1"},
          {"fuse", x.string(), "-o", none.string(), "--type", "q8_0"}}) {
        const auto r = test::run_cli(args);
        EXPECT_EQ(r.status, 1) << args[0];
        EXPECT_NE(r.err.find(" is " + name), std::string::npos) << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
        EXPECT_FALSE(std::filesystem::exists(none));
    }
}

}  // namespace

// Made by llama.cpp's quantizer: the types it writes without an importance matrix.
TEST(CarriedTypes, LlamaCppsFilesSplitAndFuseBackByteForByte) {
    HEADFUSE_REQUIRE_LLAMA_QUANTIZE(quantizer);
    HEADFUSE_REQUIRE_GGML(ggml);
    TempDir dir;
    const auto f32 = f32_file(dir, carried_model(), "m");
    for (auto [ftype, type_id] :
         {std::pair{test::LlamaFtype::IQ3_S, 21u}, {test::LlamaFtype::TQ1_0, 34u}, {test::LlamaFtype::TQ2_0, 35u}}) {
        const auto x = dir / (std::string(traits(static_cast<DType>(type_id)).name) + ".gguf");
        quantizer->quantize(f32, x, {.ftype = ftype, .pure = true});
        const GgufFile g = GgufFile::open(x);
        for (const TensorInfo& t : g.tensors()) EXPECT_EQ(t.type, t.n_dims == 1 ? 0u : type_id) << t.name;
        ASSERT_TRUE(ggml->read_gguf(x.string()).ok);
        check_carried(dir, x, type_id);
    }
}

// The importance-matrix types and mxfp4, in files whose weights are retyped in place (bytes that no quantizer
// wrote: carrying never reads them). ggml's reader accepts every file.
TEST(CarriedTypes, EveryOtherWeightTypeIsCarried) {
    TempDir dir;
    const auto f32 = f32_file(dir, carried_model(), "m");
    auto ggml = test::GgmlLib::get();
    for (std::uint32_t type_id : {16u, 17u, 18u, 19u, 22u, 29u, 39u}) {
        const auto x = dir / (std::string(traits(static_cast<DType>(type_id)).name) + ".gguf");
        retype(f32, x, [type_id](const TensorInfo& t) { return t.n_dims == 1 ? t.type : type_id; });
        if (ggml) {
            EXPECT_TRUE(ggml->read_gguf(x.string()).ok) << x;
        }
        check_carried(dir, x, type_id);
    }
}
