// The test helper that drives llama.cpp's quantizer (support/llama_quantize.h): it makes files ggml's own
// reader accepts, with the tensor types the ftype asks for.
#include <gtest/gtest.h>

#include "headfuse/fuse.h"
#include "headfuse/model.h"
#include "support/ggml_lib.h"
#include "support/llama_quantize.h"
#include "support/models.h"

using namespace headfuse;

TEST(LlamaQuantize, PureFilesHaveTheAskedTypeAndLoadInGgml) {
    HEADFUSE_REQUIRE_LLAMA_QUANTIZE(q);
    HEADFUSE_REQUIRE_GGML(ggml);
    test::TempDir dir;
    Config c;
    c.d_model = 256;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.d_head = 64;
    c.d_ff = 512;
    c.n_layers = 1;
    c.vocab = 300;
    fuse(PerHeadModel::random_init(c, test::test_seed()), dir / "f32.gguf");
    for (auto [ftype, type_id] : {std::pair{test::LlamaFtype::Q8_0, 8u}, {test::LlamaFtype::Q4_K_S, 12u}}) {
        SCOPED_TRACE(type_id);
        const auto out = dir / ("q" + std::to_string(type_id) + ".gguf");
        q->quantize(dir / "f32.gguf", out, {.ftype = ftype, .pure = true});
        const auto s = ggml->read_gguf(out.string());
        ASSERT_TRUE(s.ok);
        for (std::size_t i = 0; i < s.names.size(); ++i)
            if (s.names[i].find("norm") == std::string::npos) EXPECT_EQ(s.types[i], type_id) << s.names[i];
        EXPECT_EQ(test::ftype_for(type_id), ftype);
    }
}

TEST(LlamaQuantize, FailureIsAnExceptionWithLlamaCppsLog) {
    HEADFUSE_REQUIRE_LLAMA_QUANTIZE(q);
    test::TempDir dir;
    EXPECT_THROW(q->quantize(dir / "missing.gguf", dir / "out.gguf", {}), std::exception);
}
