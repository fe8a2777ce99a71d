// Whole files against llama.cpp's quantizer: for every pure type and every K-quant mix headfuse writes, on small
// shapes (d_model a multiple of 256, 320 and 96 for the fallbacks, a tied model), each tensor's type and bytes
// equal what llama_model_quantize (libllama, support/llama_quantize.h) writes from the F32 fused file, with its
// default parameters (pure for the pure types, the mix otherwise). Metadata may differ; tensors may not.

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "headfuse/fuse.h"
#include "headfuse/gguf.h"
#include "headfuse/mix.h"
#include "headfuse/model.h"
#include "support/ggml_lib.h"
#include "support/llama_quantize.h"
#include "support/models.h"
#include "support/same_tensors.h"

namespace headfuse {
namespace {

using test::LlamaFtype;
using test::same_tensors;

struct Target {
    std::string name;               // as --type spells it
    std::variant<DType, Mix> what;  // a pure type or a mix
    LlamaFtype ftype;               // what llama_model_quantize is asked for
};

std::vector<Target> targets() {
    std::vector<Target> out = {
        {"q4_1", DType::Q4_1, LlamaFtype::Q4_1},   {"q5_0", DType::Q5_0, LlamaFtype::Q5_0},
        {"q5_1", DType::Q5_1, LlamaFtype::Q5_1},   {"q2_k", DType::Q2_K, LlamaFtype::Q2_K},
        {"q3_k", DType::Q3_K, LlamaFtype::Q3_K_M}, {"q4_k", DType::Q4_K, LlamaFtype::Q4_K_M},
        {"q5_k", DType::Q5_K, LlamaFtype::Q5_K_M}, {"q6_k", DType::Q6_K, LlamaFtype::Q6_K},
    };
    for (Mix m : all_mixes()) out.push_back({std::string(mix_name(m)), m, static_cast<LlamaFtype>(file_type(m))});
    return out;
}

using FileShape = test::Shape;
using test::make_config;

// A deci model (per-layer counts) with two layers of no attention: llama.cpp counts attn_v tensors, not layers,
// for use_more_bits and the first-layers rules.
Config deci_model() {
    Config c = make_config(256, 4, 2, 64, 512, 8, 300, false);
    c.set_layer_counts({4, 0, 2, 4, 0, 4, 2, 4}, {2, 0, 1, 2, 0, 2, 1, 2}, {512, 256, 512, 512, 512, 256, 512, 512});
    return c;
}

// Small, but each family of rules gets its turn: 8 and 16 layers (use_more_bits, n/8, n/16), rows of 320 and
// 96 and 288 elements (the fallbacks and the output layer's Q8_0), tied embeddings, and a deci model.
std::vector<FileShape> file_shapes() {
    return {
        {"deci_8layers_2_without_attention", deci_model()},
        {"d256_gqa_8layers", make_config(256, 4, 2, 64, 512, 8, 300, false)},
        {"d320_mqa_16layers_ff288", make_config(320, 5, 1, 64, 288, 16, 260, false)},
        {"d96_tied", make_config(96, 3, 3, 32, 256, 4, 270, true)},
        {"d256_tied_ff320", make_config(256, 2, 2, 128, 320, 3, 280, true)},
    };
}

class KQuantFiles : public ::testing::TestWithParam<FileShape> {};

TEST_P(KQuantFiles, EveryTypeAndMixMatchesLlamaModelQuantize) {
    HEADFUSE_REQUIRE_LLAMA_QUANTIZE(llama);
    HEADFUSE_REQUIRE_GGML(ggml);
    test::TempDir dir;
    const PerHeadModel model = PerHeadModel::random_init(GetParam().config, test::test_seed());
    fuse(model, dir / "f32.gguf");
    for (const Target& t : targets()) {
        SCOPED_TRACE(t.name);
        const bool pure = std::holds_alternative<DType>(t.what);
        llama->quantize(dir / "f32.gguf", dir / "theirs.gguf", {.ftype = t.ftype, .pure = pure, .threads = 2});
        FuseOptions opt;
        if (pure)
            opt.type = std::get<DType>(t.what);
        else
            opt.mix = std::get<Mix>(t.what);
        opt.threads = 2;
        fuse(model, dir / "ours.gguf", opt);
        EXPECT_TRUE(ggml->read_gguf((dir / "ours.gguf").string()).ok);
        const GgufFile ours = GgufFile::open(dir / "ours.gguf");
        EXPECT_TRUE(same_tensors(ours, GgufFile::open(dir / "theirs.gguf")));
        EXPECT_EQ(ours.metadata().get_u32("general.file_type", "ours"), static_cast<std::uint32_t>(t.ftype));
        EXPECT_EQ(ours.metadata().get_u32("general.quantization_version", "ours"), kQuantizationVersion);
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, KQuantFiles, ::testing::ValuesIn(file_shapes()),
                         [](const auto& info) { return info.param.name; });

// F16 and BF16 weights are widened exactly to F32 before they are encoded, as llama.cpp does: a per-head
// checkpoint in F16 gives the bytes llama_model_quantize makes from the fused F16 file.
TEST(KQuantFiles, F16AndBf16SourcesAreWidenedExactly) {
    HEADFUSE_REQUIRE_LLAMA_QUANTIZE(llama);
    test::TempDir dir;
    const PerHeadModel f32 =
        PerHeadModel::random_init(make_config(320, 4, 2, 64, 512, 4, 300, false), test::test_seed());
    for (DType half : {DType::F16, DType::BF16}) {
        SCOPED_TRACE(type_name(half));
        FuseOptions to_half;
        to_half.type = half;
        fuse(f32, dir / "half.gguf", to_half);
        const PerHeadModel per_head = FusedModel::open(dir / "half.gguf").per_head();
        for (Mix m : {Mix::Q4_K_M, Mix::Q3_K_L}) {
            llama->quantize(dir / "half.gguf", dir / "theirs.gguf",
                            {.ftype = static_cast<LlamaFtype>(file_type(m)), .pure = false, .threads = 2});
            FuseOptions opt;
            opt.mix = m;
            fuse(per_head, dir / "ours.gguf", opt);
            EXPECT_TRUE(same_tensors(GgufFile::open(dir / "ours.gguf"), GgufFile::open(dir / "theirs.gguf")))
                << mix_name(m);
        }
    }
}

}  // namespace
}  // namespace headfuse
