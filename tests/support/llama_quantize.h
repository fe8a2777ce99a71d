// headfuse tests: llama.cpp's own quantizer, loaded at run time, to make reference model files of every type.
//
// llama_model_quantize (the engine of `llama-quantize`) from libllama.v0.4.0.so in the npm package
// @node-llama-cpp/linux-x64@3.21.1 (see judge/). Its path is $HEADFUSE_LLAMA_LIB, else the package under
// <source dir>/judge/node_modules. The parameter struct is declared here, field for field as llama.h
// declares it, and always starts from llama_model_quantize_default_params().
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "headfuse/gguf.h"
#include "headfuse/model.h"
#include "headfuse/types.h"
#include "support/required.h"
#include "support/same_tensors.h"

#ifndef HEADFUSE_SOURCE_DIR
#define HEADFUSE_SOURCE_DIR "/work/main"
#endif

namespace headfuse::test {

// llama.cpp's enum llama_ftype (llama.h): what the whole file is quantized to.
enum class LlamaFtype : std::int32_t {
    ALL_F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 7,
    Q5_0 = 8,
    Q5_1 = 9,
    Q2_K = 10,
    Q3_K_S = 11,
    Q3_K_M = 12,
    Q3_K_L = 13,
    Q4_K_S = 14,
    Q4_K_M = 15,
    Q5_K_S = 16,
    Q5_K_M = 17,
    Q6_K = 18,
    IQ4_NL = 25,
    IQ3_S = 26,
    IQ3_M = 27,
    IQ4_XS = 30,
    TQ1_0 = 36,
    TQ2_0 = 37,
    BF16 = 32,
};

// The ftype whose default tensor type is ggml type `type_id` (Q3_K_S for q3_K, Q4_K_S for q4_K, ...), or
// nothing when llama.cpp has no such ftype. With `pure` every 2-D weight gets exactly that type.
std::optional<LlamaFtype> ftype_for(std::uint32_t type_id);

struct QuantizeOptions {
    LlamaFtype ftype = LlamaFtype::Q8_0;
    // Every 2-D weight in the ftype's default type, as `llama-quantize --pure`; otherwise llama.cpp's mix
    // (llama_tensor_get_type: Q4_K_M puts some tensors in Q6_K, ...).
    bool pure = true;
    int threads = 2;
};

class LlamaQuantizer {
public:
    // The loaded library (once per process), or nullptr when it cannot be loaded; load_error() says why.
    static LlamaQuantizer* get();
    static const std::string& load_error();
    // Where get() looks: $HEADFUSE_LLAMA_LIB, else the judge package in the source tree.
    static std::string path();

    // llama_model_quantize(in, out, params) on the file as it is. The input must be a model llama.cpp loads;
    // llama.cpp copies its general.alignment key but pads tensors to 32, so only an input with the default
    // alignment gives an output ggml's reader accepts. Throws std::runtime_error on failure.
    void quantize(const std::filesystem::path& in, const std::filesystem::path& out,
                  const QuantizeOptions& options) const;

    struct Api;

private:
    explicit LlamaQuantizer(const Api& api);
    const Api& api_;
};

// Every K-quant mix of `model`, fused by headfuse, equals llama_model_quantize's file of the model fused as F32,
// tensor for tensor (same_tensors); the files go in `dir`. One failure is reported per mix.
void expect_mixes_match(const LlamaQuantizer& llama, const PerHeadModel& model, const std::filesystem::path& dir);

}  // namespace headfuse::test

// In a test body: binds `var` to llama.cpp's quantizer, or ends the test when it is missing, as a failure in CI
// and as a skip elsewhere, saying why.
#define HEADFUSE_REQUIRE_LLAMA_QUANTIZE(var)                                         \
    ::headfuse::test::LlamaQuantizer* var = ::headfuse::test::LlamaQuantizer::get(); \
    HEADFUSE_REQUIRE(var != nullptr, ::headfuse::test::LlamaQuantizer::load_error())
