// Encoded models decoded on request: `fuse --type f32|f16|bf16` of a quantized GGUF and `export --dtype` of one.
// The decoded values are judged by ggml's own dequantizers (libggml-base.so's to_float), the written GGUF by
// ggml's reader, the written safetensors by its format read here (header JSON, row-major data); each command
// says in one line that the result carries the quantization error, and without the request each refusal says
// what to do instead.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "headfuse/quantize.h"
#include "headfuse/types.h"
#include "support/ggml_lib.h"
#include "support/llama_quantize.h"
#include "support/models.h"

namespace headfuse {
namespace {

namespace fs = std::filesystem;
using test::TempDir, test::RunResult, test::run_cli;

// Rows of 256 (d_model, n_heads * d_head) and 512 (d_ff) elements: whole blocks of every type, K-quants too.
const std::vector<std::string> kShape = {"--d-model", "256", "--n-heads", "4",   "--n-kv-heads", "2",
                                         "--d-head",  "64",  "--d-ff",    "512", "--n-layers",   "1",
                                         "--vocab",   "300", "--seed",    "11"};

struct Tensor {
    std::uint32_t type = 0;
    std::vector<std::byte> bytes;
};

// Every tensor of a GGUF file as ggml's reader places it: its type and its bytes (up to the next tensor).
std::map<std::string, Tensor> ggml_tensors(const test::GgmlLib& g, const fs::path& file) {
    const auto s = g.read_gguf(file.string());
    EXPECT_TRUE(s.ok) << file;
    const std::vector<std::byte> all = test::read_bytes(file);
    std::map<std::string, Tensor> out;
    for (std::size_t i = 0; i < s.names.size(); ++i) {
        const std::size_t begin = s.data_offset + s.offsets[i];
        const std::size_t end = i + 1 < s.names.size() ? s.data_offset + s.offsets[i + 1] : all.size();
        out[s.names[i]] = {
            s.types[i],
            {all.begin() + static_cast<std::ptrdiff_t>(begin), all.begin() + static_cast<std::ptrdiff_t>(end)}};
    }
    return out;
}

// The elements of a tensor's bytes (padding ignored) as ggml dequantizes them.
std::vector<float> ggml_values(const test::GgmlLib& g, const Tensor& t, std::int64_t n) {
    const auto type = static_cast<DType>(t.type);
    if (type == DType::F32) {
        std::vector<float> f(static_cast<std::size_t>(n));
        std::memcpy(f.data(), t.bytes.data(), f.size() * sizeof(float));
        return f;
    }
    return g.to_float(type, t.bytes.data(), n);
}

// A random model encoded to `type`: by `fuse --type` for a type headfuse writes, else (IQ4_NL, IQ4_XS) by
// llama.cpp's llama_model_quantize of the F32 fuse, every weight in the type (`pure`).
void init_and_encode(const TempDir& dir, DType type, fs::path& encoded) {
    std::vector<std::string> args = {"init", "-q", "-o", (dir / "ph.gguf").string()};
    args.insert(args.end(), kShape.begin(), kShape.end());
    ASSERT_EQ(run_cli(args).status, 0);
    const std::string name(type_name(type));
    encoded = dir / ("model-" + name + ".gguf");
    if (traits(type).writes) {
        const RunResult r = run_cli({"fuse", "-q", (dir / "ph.gguf").string(), "-o", encoded.string(), "--type", name});
        ASSERT_EQ(r.status, 0) << r.err;
        return;
    }
    test::LlamaQuantizer* quantizer = test::LlamaQuantizer::get();
    ASSERT_NE(quantizer, nullptr) << test::LlamaQuantizer::load_error();
    const fs::path f32 = dir / "model-f32.gguf";
    const RunResult r = run_cli({"fuse", "-q", (dir / "ph.gguf").string(), "-o", f32.string()});
    ASSERT_EQ(r.status, 0) << r.err;
    const auto ftype = test::ftype_for(static_cast<std::uint32_t>(type));
    ASSERT_TRUE(ftype.has_value()) << name;
    quantizer->quantize(f32, encoded, {.ftype = *ftype, .pure = true});
}

// One line on stderr, the warning that the result is the decoded encoding.
void expect_one_warning(const RunResult& r, DType encoded) {
    const std::string type(type_name(encoded));  // ggml's spelling: q4_K
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("decoded from " + type), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("carries " + type + "'s quantization error"), std::string::npos) << r.err;
}

class Decode : public ::testing::TestWithParam<DType> {
protected:
    // The types headfuse does not write are made by llama.cpp's quantizer: skipped (failed in CI) without it.
    void SetUp() override {
        if (!traits(GetParam()).writes)
            HEADFUSE_REQUIRE(test::LlamaQuantizer::get() != nullptr, test::LlamaQuantizer::load_error());
    }
};

// fuse --type f32, f16 and bf16 of an encoded file: each weight is ggml's dequantization of the encoded one (then
// rounded by ggml's own f16/bf16 row converters), norms keep their f32 bytes, ggml's reader takes the file.
TEST_P(Decode, FuseToFloatTypesIsGgmlsDequantization) {
    HEADFUSE_REQUIRE_GGML(ggml);
    const DType dtype = GetParam();
    ASSERT_TRUE(ggml->has_to_float(dtype)) << type_name(dtype);
    TempDir dir;
    fs::path encoded;
    ASSERT_NO_FATAL_FAILURE(init_and_encode(dir, dtype, encoded));
    const auto src = ggml_tensors(*ggml, encoded);
    for (const std::string out_type : {"f32", "f16", "bf16"}) {
        const fs::path out = dir / ("decoded-" + out_type + ".gguf");
        const RunResult r = run_cli({"fuse", encoded.string(), "-o", out.string(), "--type", out_type});
        ASSERT_EQ(r.status, 0) << r.err;
        expect_one_warning(r, dtype);
        const auto got = ggml_tensors(*ggml, out);
        ASSERT_EQ(got.size(), src.size());
        std::size_t decoded = 0;
        for (const auto& [name, t] : src) {
            const Tensor& d = got.at(name);
            if (t.type == static_cast<std::uint32_t>(DType::F32)) {  // the norms: their bytes
                EXPECT_EQ(d.type, t.type) << name;
                EXPECT_TRUE(d.bytes == t.bytes) << name;
                continue;
            }
            ++decoded;
            const DType want_type = *parse_dtype(out_type);
            ASSERT_EQ(d.type, static_cast<std::uint32_t>(want_type)) << name;
            const std::int64_t n = static_cast<std::int64_t>(t.bytes.size() / ggml->row_size(dtype, 256) * 256);
            const std::vector<float> values = ggml->to_float(dtype, t.bytes.data(), n);
            std::vector<std::byte> want(values.size() * sizeof(float));
            if (want_type == DType::F32) {
                std::memcpy(want.data(), values.data(), want.size());
            } else {
                const auto h =
                    want_type == DType::F16 ? ggml->fp16_row(values.data(), n) : ggml->bf16_row(values.data(), n);
                want.resize(h.size() * 2);
                std::memcpy(want.data(), h.data(), want.size());
            }
            ASSERT_GE(d.bytes.size(), want.size()) << name;
            EXPECT_EQ(std::memcmp(d.bytes.data(), want.data(), want.size()), 0) << name << " as " << out_type;
        }
        EXPECT_EQ(decoded, 9u);  // token_embd, output and the 7 weights of the one layer
    }
}

// export --dtype f32 of an encoded file: a Hugging Face checkpoint whose tensors are ggml's dequantization
// (down_proj and embed_tokens compared: rows as the GGUF holds them, no permutation).
TEST_P(Decode, ExportDtypeIsGgmlsDequantization) {
    HEADFUSE_REQUIRE_GGML(ggml);
    const DType dtype = GetParam();
    TempDir dir;
    fs::path encoded;
    ASSERT_NO_FATAL_FAILURE(init_and_encode(dir, dtype, encoded));
    const fs::path hf = dir / "hf";
    const RunResult r = run_cli({"export", encoded.string(), "-o", hf.string(), "--dtype", "f32"});
    ASSERT_EQ(r.status, 0) << r.err;
    expect_one_warning(r, dtype);

    const std::vector<std::byte> st = test::read_bytes(hf / "model.safetensors");
    std::uint64_t header_len = 0;
    ASSERT_GE(st.size(), 8u);
    std::memcpy(&header_len, st.data(), 8);
    const auto header = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(st.data()) + 8, header_len));
    const auto src = ggml_tensors(*ggml, encoded);
    for (const auto& [hf_name, gguf_name] : std::vector<std::pair<std::string, std::string>>{
             {"model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight"},
             {"model.embed_tokens.weight", "token_embd.weight"}}) {
        const auto& e = header.at(hf_name);
        EXPECT_EQ(e.at("dtype"), "F32") << hf_name;
        const std::uint64_t begin = e.at("data_offsets")[0], end = e.at("data_offsets")[1];
        const Tensor& t = src.at(gguf_name);
        const std::int64_t n = static_cast<std::int64_t>((end - begin) / sizeof(float));
        const std::vector<float> want = ggml_values(*ggml, t, n);
        ASSERT_EQ(want.size() * sizeof(float), end - begin) << hf_name;
        EXPECT_EQ(std::memcmp(st.data() + 8 + header_len + begin, want.data(), end - begin), 0) << hf_name;
    }
    const auto config = nlohmann::json::parse(std::ifstream(hf / "config.json"));
    EXPECT_EQ(config.at("torch_dtype"), "float32");
}

std::string param_name(const ::testing::TestParamInfo<DType>& info) { return std::string(type_name(info.param)); }

INSTANTIATE_TEST_SUITE_P(Types, Decode,
                         ::testing::Values(DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K,
                                           DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K),
                         param_name);
// The types headfuse decodes but does not write, in files llama.cpp's quantizer makes.
INSTANTIATE_TEST_SUITE_P(LlamaQuantized, Decode, ::testing::Values(DType::IQ4_NL, DType::IQ4_XS), param_name);

// Without the request, each refusal says what to do, on one line, and writes nothing.
TEST(DecodeRefusals, SayWhatToDo) {
    TempDir dir;
    fs::path encoded;
    ASSERT_NO_FATAL_FAILURE(init_and_encode(dir, DType::Q8_0, encoded));
    const fs::path out = dir / "out.gguf", hf = dir / "hf";
    const RunResult f = run_cli({"fuse", encoded.string(), "-o", out.string(), "--type", "q4_0"});
    EXPECT_EQ(f.status, 1);
    EXPECT_EQ(std::count(f.err.begin(), f.err.end(), '\n'), 1) << f.err;
    EXPECT_NE(f.err.find("decode it with --type f32, f16 or bf16"), std::string::npos) << f.err;
    EXPECT_FALSE(fs::exists(out));
    const RunResult e = run_cli({"export", encoded.string(), "-o", hf.string()});
    EXPECT_EQ(e.status, 1);
    EXPECT_EQ(std::count(e.err.begin(), e.err.end(), '\n'), 1) << e.err;
    EXPECT_NE(e.err.find("ask for one with --dtype"), std::string::npos) << e.err;
    EXPECT_FALSE(fs::exists(hf / "model.safetensors"));
    const RunResult d = run_cli({"export", encoded.string(), "-o", hf.string(), "--dtype", "q8_0"});
    EXPECT_EQ(d.status, 1) << d.err;
}

}  // namespace
}  // namespace headfuse
