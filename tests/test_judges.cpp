// The external judges on every file headfuse writes: llama.cpp (node-llama-cpp 3.21.1) loads and runs every
// fused file, and its next-token distribution matches headfuse's reference forward pass; ggml's own
// quantizers produce the same bytes as every encoded tensor; @huggingface/gguf parses every file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/model.h"
#include "headfuse/verify.h"
#include "support/ggml_lib.h"
#include "support/judge.h"
#include "support/models.h"

using namespace headfuse;
using headfuse::test::Shape;
using headfuse::test::TempDir;

namespace {

// Issue #3's bar for F32 files: llama.cpp with flash attention off and an F32 KV cache computes the same
// function in f32 with other summation orders; observed differences are ~1e-6.
constexpr double kF32LogprobTolerance = 1e-4;

// Encoded files: llama.cpp also rounds the activations for these types (ggml-cpu converts the right-hand
// side of a matmul to the weight type's vec_dot_type: f16 for F16, bf16 for BF16, q8_0 for Q8_0 and Q4_0),
// while the reference pass keeps activations in f32 and decodes the weights exactly. Measured maxima over
// the shapes below (seed 20261128): f16 3.6e-4, bf16 3.2e-3, q8_0 7.2e-3, q4_0 9.0e-3; the bounds are
// about 3x those, rounded up (docs/ENCODING.md has the table).
const std::map<DType, double> kLlamaLogprobTolerance{
    {DType::F16, 1e-3}, {DType::BF16, 1e-2}, {DType::Q8_0, 2e-2}, {DType::Q4_0, 2.5e-2}};

std::vector<std::uint32_t> prompt(std::uint32_t vocab) { return default_tokens(vocab, 7); }

using test::Agreement;

// headfuse's reference pass against llama.cpp, as log-softmax at every position.
Agreement compare_with_llama(const std::filesystem::path& file) {
    return test::agreement_with_llama(file.string(), prompt(open_model(file).config().vocab));
}

class JudgeShape : public ::testing::TestWithParam<Shape> {};

}  // namespace

TEST_P(JudgeShape, LlamaCppRunsTheFusedFileAndAgrees) {
    HEADFUSE_REQUIRE_JUDGES();
    HEADFUSE_REQUIRE_GGML(ggml);
    const Config& c = GetParam().config;
    TempDir dir;
    write_random_init(c, test::test_seed(), dir / "ph.gguf");
    fuse(PerHeadModel::open(dir / "ph.gguf"), dir / "fused.gguf");
    ASSERT_TRUE(ggml->read_gguf((dir / "fused.gguf").string()).ok);
    const Agreement a = compare_with_llama(dir / "fused.gguf");
    RecordProperty("max_logprob_diff", std::to_string(a.max_diff));
    std::printf("[headfuse] %s f32: llama.cpp max |dlogp| %.3g, top token %d/%d\n", GetParam().name.c_str(), a.max_diff,
                a.top_agree, a.positions);
    EXPECT_LE(a.max_diff, kF32LogprobTolerance);
    EXPECT_EQ(a.top_agree, a.positions);

    // The per-head file and its fused form give bit-identical logits in the reference pass.
    const auto tokens = prompt(c.vocab);
    const auto x = forward_logits(PerHeadModel::open(dir / "ph.gguf").views(), tokens);
    const auto y = forward_logits(FusedModel::open(dir / "fused.gguf").views(), tokens);
    ASSERT_EQ(x.size(), y.size());
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0);

    // @huggingface/gguf parses both files and sees the same tensors.
    for (const char* f : {"ph.gguf", "fused.gguf"}) {
        const auto j = test::hf_parse((dir / f).string());
        EXPECT_EQ(j["tensors"].size(), GgufFile::open(dir / f).tensors().size()) << f;
    }
}

INSTANTIATE_TEST_SUITE_P(Families, JudgeShape, ::testing::ValuesIn(test::shape_families()),
                         [](const auto& info) { return info.param.name; });

namespace {
struct TypeCase {
    DType type;
    Shape shape;
};
void PrintTo(const TypeCase& c, std::ostream* os) { *os << type_name(c.type) << "/" << c.shape.name; }

std::vector<TypeCase> type_cases() {
    std::vector<TypeCase> out;
    const auto shapes = test::shape_families();
    for (DType t : {DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0})
        for (const char* name : {"gqa", "mqa_tied", "lens"})
            for (const Shape& s : shapes)
                if (s.name == name) out.push_back({t, s});
    return out;
}

class JudgeType : public ::testing::TestWithParam<TypeCase> {};
}  // namespace

TEST_P(JudgeType, EncodedFileEqualsGgmlAndRunsInLlamaCpp) {
    HEADFUSE_REQUIRE_JUDGES();
    HEADFUSE_REQUIRE_GGML(ggml);
    const DType type = GetParam().type;
    const Config& c = GetParam().shape.config;
    TempDir dir;
    write_random_init(c, test::test_seed(), dir / "ph.gguf");
    FuseOptions opt;
    opt.type = type;
    fuse(PerHeadModel::open(dir / "ph.gguf"), dir / "f32.gguf");  // F32 holds the folded lens exactly
    fuse(PerHeadModel::open(dir / "ph.gguf"), dir / "enc.gguf", opt);

    // Every 2-D tensor equals ggml's own encoding of the F32 weights; 1-D norms stay F32.
    const GgufFile f32 = GgufFile::open(dir / "f32.gguf");
    const GgufFile enc = GgufFile::open(dir / "enc.gguf");
    ASSERT_EQ(f32.tensors().size(), enc.tensors().size());
    for (std::size_t i = 0; i < enc.tensors().size(); ++i) {
        const TensorInfo &src = f32.tensors()[i], &dst = enc.tensors()[i];
        ASSERT_EQ(src.name, dst.name);
        if (src.n_dims == 1) {
            EXPECT_EQ(dst.type, 0u) << dst.name;
            continue;
        }
        ASSERT_EQ(dst.type, static_cast<std::uint32_t>(type)) << dst.name;
        const auto in = f32.tensor_data(src);
        const auto* x = reinterpret_cast<const float*>(in.data());
        std::vector<std::byte> want;
        if (type == DType::F16 || type == DType::BF16) {
            const auto h = type == DType::F16 ? ggml->fp16_row(x, static_cast<std::int64_t>(src.n_elements()))
                                              : ggml->bf16_row(x, static_cast<std::int64_t>(src.n_elements()));
            want.resize(h.size() * 2);
            std::memcpy(want.data(), h.data(), want.size());
        } else {
            want =
                ggml->quantize(type, x, static_cast<std::int64_t>(src.n_rows()), static_cast<std::int64_t>(src.ne[0]));
        }
        const auto got = enc.tensor_data(dst);
        ASSERT_EQ(got.size(), want.size()) << dst.name;
        EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size()), 0) << dst.name << " differs from ggml's encoding";
    }
    ASSERT_TRUE(ggml->read_gguf((dir / "enc.gguf").string()).ok);

    // llama.cpp loads it; its next-token distribution agrees with the reference pass on the same file.
    const Agreement a = compare_with_llama(dir / "enc.gguf");
    std::printf("[headfuse] %s %s: llama.cpp max |dlogp| %.3g, top token %d/%d\n", GetParam().shape.name.c_str(),
                std::string(type_name(type)).c_str(), a.max_diff, a.top_agree, a.positions);
    EXPECT_LE(a.max_diff, kLlamaLogprobTolerance.at(type));

    // A split of the encoded file gives per-head views whose logits equal the fused file's.
    split(FusedModel::open(dir / "enc.gguf"), dir / "split.gguf");
    const auto tokens = prompt(c.vocab);
    const auto x = forward_logits(PerHeadModel::open(dir / "split.gguf").views(), tokens);
    const auto y = forward_logits(FusedModel::open(dir / "enc.gguf").views(), tokens);
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0);

    // verify accepts the pair: every tensor is the encoding of its per-head source.
    const VerifyReport r = verify(PerHeadModel::open(dir / "ph.gguf"), FusedModel::open(dir / "enc.gguf"));
    EXPECT_TRUE(r.mismatches.empty()) << r.mismatches.front();
    EXPECT_TRUE(r.ok());
}

INSTANTIATE_TEST_SUITE_P(Types, JudgeType, ::testing::ValuesIn(type_cases()), [](const auto& info) {
    return std::string(type_name(info.param.type)) + "_" + info.param.shape.name;
});
