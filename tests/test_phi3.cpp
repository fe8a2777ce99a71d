// Phi-3 (GGUF phi3, Hugging Face Phi3ForCausalLM) as a row of the architecture table: attn_qkv stacks the Q, K
// and V rows, ffn_up the gate's rows and the up rows; per-head views are row ranges of them. Judged by llama.cpp
// (node-llama-cpp) running the files headfuse writes, by an independent numpy forward pass in Hugging Face's
// conventions (tests/support/phi3_reference.py, Debian's python3-numpy), and by llama_model_quantize, whose
// K-quant mixes (llama_tensor_get_type's per-architecture rules) headfuse's must equal byte for byte, for phi3
// and for qwen2 and qwen3.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "compute/scan_pass.h"
#include "gguf/writer.h"
#include "headfuse/arch.h"
#include "headfuse/error.h"
#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/mix.h"
#include "headfuse/model.h"
#include "headfuse/verify.h"
#include "model/roles.h"
#include "support/hf_checkpoints.h"
#include "support/judge.h"
#include "support/llama_quantize.h"
#include "support/models.h"
#include "support/same_tensors.h"
#include "support/sharp_model.h"

using namespace headfuse;
using headfuse::test::TempDir;
namespace fs = std::filesystem;

namespace {

// llama.cpp (f32 weights, f32 KV cache) against headfuse's forward pass and against the float64 numpy reference:
// the bound for graphs without GELU (llama.cpp sums in another order; both measure about 1e-6).
constexpr double kF32LogprobTolerance = 1e-4;

using test::kPython;  // Debian's, with python3-numpy
const std::string kReference = std::string(HEADFUSE_SOURCE_DIR) + "/tests/support/phi3_reference.py";

// A Phi-3 of small shapes: n_heads * d_head = d_model, as llama.cpp's phi3 loader requires.
Config phi3_config(std::uint32_t n_heads, std::uint32_t n_kv_heads, bool tied, std::uint32_t d_model = 64,
                   std::uint32_t n_layers = 2) {
    Config c = test::make_config(d_model, n_heads, n_kv_heads, d_model / n_heads, 2 * d_model, n_layers, 300, tied);
    c.family = Family::Phi3;
    c.context_length = 512;
    return c;
}

// The same with LongRoPE's factors: an original context of 256 (the least llama.cpp's context, rounded up to 256,
// can stay within) extended to 1024, the attention factor llama.cpp's converter writes for it.
Config phi3_longrope_config(std::uint32_t n_heads, std::uint32_t n_kv_heads, bool tied) {
    Config c = phi3_config(n_heads, n_kv_heads, tied);
    c.context_length = 1024;
    c.rope_original_context = 256;
    c.rope_attn_factor = static_cast<float>(std::sqrt(1.0 + std::log(1024.0 / 256.0) / std::log(256.0)));
    c.optional_roles.insert(Role::RopeLong);
    c.optional_roles.insert(Role::RopeShort);
    return c;
}

// llama.cpp's context sizes on either side of the original context of 256: it rounds n_ctx up to 256, so 256 keeps the
// short factors and 512 takes the long ones.
constexpr std::uint32_t kShortContext = 256, kLongContext = 512;

nlohmann::json read_json(const fs::path& p) {
    const auto bytes = test::read_bytes(p);
    return nlohmann::json::parse(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

void write_json(const fs::path& p, const nlohmann::json& j) {
    std::FILE* f = std::fopen(p.c_str(), "w");
    ASSERT_NE(f, nullptr);
    const std::string text = j.dump();
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
}

void cli_ok(const std::vector<std::string>& args) {
    const auto r = test::run_cli(args);
    ASSERT_EQ(r.status, 0) << r.err;
}

const TensorSpec* find_spec(const std::vector<TensorSpec>& layout, std::string_view name) {
    for (const TensorSpec& s : layout)
        if (s.name == name) return &s;
    return nullptr;
}

}  // namespace

// The row, and the two layouts it gives: the fused one stacks Q, K, V into attn_qkv and gate, up into ffn_up,
// as llama.cpp's phi3 loader names and sizes them; the per-head one has the names every family has.
TEST(Phi3Table, RowAndLayouts) {
    const ArchSpec* a = find_arch("phi3");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->family, Family::Phi3);
    EXPECT_EQ(find_hf_architecture("Phi3ForCausalLM"), a);
    EXPECT_EQ(find_hf_model_type("phi3"), a);
    EXPECT_EQ(a->rope, RopePairing::Neox);
    EXPECT_TRUE(a->fused_qkv && a->fused_gate_up && a->q_dim_is_d_model);

    const Config c = phi3_config(4, 2, false);  // d_head 16, kv_dim 32, d_ff 128
    c.validate();
    const auto fused = tensor_layout(c, ModelKind::Fused);
    EXPECT_EQ(fused.size(), tensor_count(c, ModelKind::Fused));
    const TensorSpec* qkv = find_spec(fused, "blk.1.attn_qkv.weight");
    ASSERT_NE(qkv, nullptr);
    EXPECT_EQ(qkv->ne, (std::vector<std::uint64_t>{64, 64 + 2 * 32}));
    const TensorSpec* up = find_spec(fused, "blk.1.ffn_up.weight");
    ASSERT_NE(up, nullptr);
    EXPECT_EQ(up->ne, (std::vector<std::uint64_t>{64, 2 * 128}));
    for (std::string_view gone :
         {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.ffn_gate.weight"})
        EXPECT_EQ(find_spec(fused, gone), nullptr) << gone;
    const auto per_head = tensor_layout(c, ModelKind::PerHead);
    EXPECT_EQ(per_head.size(), tensor_count(c, ModelKind::PerHead));
    for (std::string_view name : {"blk.0.attn_q.head_3.weight", "blk.0.attn_k.head_1.weight",
                                  "blk.0.attn_v.head_0.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"})
        EXPECT_NE(find_spec(per_head, name), nullptr) << name;
    Metadata md;
    c.write_metadata(md);
    EXPECT_EQ(md.get_string("general.architecture", "md"), "phi3");
    Config back = Config::from_metadata(md, "md");
    back.tied = c.tied;
    EXPECT_EQ(back, c);
}

// What llama.cpp's phi3 loader cannot read is refused by name.
TEST(Phi3Table, RefusesWhatTheLoaderDoesNotRead) {
    const auto refused = test::expect_config_refused;
    Config c = phi3_config(4, 2, false);
    c.d_head = 32;
    refused(c, "llama.cpp's phi3 loader sizes attn_output [d_model, d_model]");
    c = phi3_config(4, 2, false);
    c.optional_roles.insert(Role::AttnQBias);
    refused(c, "tensor 'blk.0.attn_q.bias': llama.cpp's phi3 loader does not read it");
    c = phi3_config(4, 2, false);
    c.sliding_window = 64;
    refused(c, "sliding_window is set, but llama.cpp's phi3 graph has no such feature");
    c = phi3_config(4, 2, false);
    c.set_layer_counts({4, 2}, {2, 1}, {});
    refused(c, "llama.cpp's phi3 loader reads one count for every layer");
    c = phi3_config(4, 2, false);
    c.optional_roles.insert(Role::RopeLong);
    refused(c, "tensor 'rope_factors_short.weight' is missing beside 'rope_factors_long.weight'");
    c = phi3_config(4, 2, false);
    c.family = Family::Qwen2;
    c.optional_roles.insert(Role::RopeLong);
    c.optional_roles.insert(Role::RopeShort);
    refused(c, "tensor 'rope_factors_long.weight': llama.cpp's qwen2 loader does not read it");
}

// LongRoPE's factors are model-wide tensors of [d_head / 2] f32 (llama.cpp's phi3 loader: layer 0's, duplicated
// for the others), in both layouts; the attention factor is written with them, 1 included, as llama.cpp's converter
// writes it; fuse and split carry them byte for byte, and a file of another length is refused by name.
TEST(Phi3Table, LongRopeFactorsAreModelTensors) {
    Config c = phi3_longrope_config(4, 2, false);
    c.validate();
    for (ModelKind kind : {ModelKind::Fused, ModelKind::PerHead}) {
        const auto layout = tensor_layout(c, kind);
        for (std::string_view name : {"rope_factors_long.weight", "rope_factors_short.weight"}) {
            const TensorSpec* s = find_spec(layout, name);
            ASSERT_NE(s, nullptr) << name;
            EXPECT_EQ(s->ne, (std::vector<std::uint64_t>{8}));
            EXPECT_EQ(s->role->scope, Scope::Global);
        }
    }
    Metadata md;
    c.rope_attn_factor = 1.0f;
    c.write_metadata(md);
    EXPECT_EQ(md.get_f32("phi3.rope.scaling.attn_factor", "md"), 1.0f);
    EXPECT_EQ(md.get_u32("phi3.rope.scaling.original_context_length", "md"), 256u);

    TempDir dir;
    const PerHeadModel ph = PerHeadModel::random_init(phi3_longrope_config(4, 2, false), test::test_seed());
    ph.save(dir / "ph.gguf");
    cli_ok({"fuse", (dir / "ph.gguf").string(), "-o", (dir / "fused.gguf").string(), "-q"});
    cli_ok({"split", (dir / "fused.gguf").string(), "-o", (dir / "back.gguf").string(), "-q"});
    const GgufFile a = GgufFile::open(dir / "ph.gguf"), b = GgufFile::open(dir / "back.gguf");
    const GgufFile f = GgufFile::open(dir / "fused.gguf");
    for (const GgufFile* g : {&a, &b, &f}) {
        const TensorInfo* t = g->find_tensor("rope_factors_short.weight");
        ASSERT_NE(t, nullptr);
        EXPECT_EQ(t->type, 0u);  // GGML_TYPE_F32
    }
    ASSERT_EQ(a.tensors().size(), b.tensors().size());
    for (std::size_t i = 0; i < a.tensors().size(); ++i) {
        const auto x = a.tensor_data(a.tensors()[i]), y = b.tensor_data(b.tensors()[i]);
        EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << a.tensors()[i].name;
    }
    EXPECT_EQ(FusedModel::open(dir / "fused.gguf").config(), ph.config());
    const auto shown = test::run_cli({"inspect", (dir / "fused.gguf").string()});
    EXPECT_EQ(shown.status, 0) << shown.err;
    EXPECT_NE(shown.out.find("rope_factors_long.weight"), std::string::npos) << shown.out;
    const auto v = test::run_cli({"verify", (dir / "ph.gguf").string(), (dir / "fused.gguf").string()});
    EXPECT_EQ(v.status, 0) << v.out << v.err;

    // A file with one factor set, or factors of another length than d_head / 2: refused by name, exit 1, no output.
    for (const auto& [edit, needle] :
         {std::pair{"drop", "tensor 'rope_factors_short.weight' is missing beside 'rope_factors_long.weight'"},
          std::pair{"shorten", "tensor 'rope_factors_short.weight' has wrong shape; expected [8], got [7]"}}) {
        GgufWriter w;
        w.metadata = f.metadata();
        for (const TensorInfo& t : f.tensors()) {
            const bool factor = t.name == "rope_factors_short.weight";
            if (factor && edit == std::string("drop")) continue;
            const std::vector<std::uint64_t> ne{factor ? 7 : t.ne[0], t.ne[1], t.ne[2], t.ne[3]};
            const auto bytes = f.tensor_data(t).first(factor ? 7 * 4 : t.nbytes);
            w.add_tensor(t.name, t.type, std::span(ne).first(t.n_dims), [bytes](ByteSink& sink) { sink.write(bytes); });
        }
        const fs::path bad = dir / (std::string(edit) + ".gguf"), out = dir / "out.gguf";
        w.write(bad);
        for (const std::vector<std::string>& args :
             {std::vector<std::string>{"logits", bad.string(), "--tokens", "1,2"},
              std::vector<std::string>{"fuse", bad.string(), "-o", out.string()}}) {
            const auto r = test::run_cli(args);
            EXPECT_EQ(r.status, 1) << edit << " " << args[0];
            EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
            EXPECT_NE(r.err.find(bad.filename().string()), std::string::npos) << r.err;
            EXPECT_FALSE(fs::exists(out));
        }
    }
}

// fuse stacks the heads into attn_qkv (Q heads, then K, then V) and gate, up into ffn_up; the fused file's
// heads are zero-copy row ranges of attn_qkv; split gives back the per-head file byte for byte; verify agrees.
TEST(Phi3Files, FuseSplitAndTheViewsOfAttnQkv) {
    TempDir dir;
    const Config c = phi3_config(4, 2, false);
    const PerHeadModel ph = PerHeadModel::random_init(c, test::test_seed());
    ph.save(dir / "ph.gguf");
    cli_ok({"fuse", (dir / "ph.gguf").string(), "-o", (dir / "fused.gguf").string(), "-q"});
    const FusedModel fused = FusedModel::open(dir / "fused.gguf");
    EXPECT_EQ(fused.config(), c);
    const GgufFile& f = fused.file();
    const TensorInfo* qkv = f.find_tensor("blk.1.attn_qkv.weight");
    ASSERT_NE(qkv, nullptr);
    EXPECT_EQ(f.find_tensor("blk.1.attn_q.weight"), nullptr);
    const auto qkv_bytes = f.tensor_data(*qkv);
    const std::uint64_t row = 64 * sizeof(float), d_head = 16;
    const LayerViews& l = fused.views().layers[1];
    ASSERT_EQ(l.q.size(), 4u);
    ASSERT_EQ(l.k.size(), 2u);
    EXPECT_EQ(l.q[3].bytes().data(), qkv_bytes.data() + 3 * d_head * row);
    EXPECT_EQ(l.k[1].bytes().data(), qkv_bytes.data() + (4 + 1) * d_head * row);
    EXPECT_EQ(l.v[0].bytes().data(), qkv_bytes.data() + (4 + 2) * d_head * row);
    EXPECT_EQ(fused.fused(1, Role::AttnK).bytes().data(), l.k[0].bytes().data());
    const TensorInfo* up = f.find_tensor("blk.1.ffn_up.weight");
    ASSERT_NE(up, nullptr);
    EXPECT_EQ(l.ffn_gate.bytes().data(), f.tensor_data(*up).data());
    EXPECT_EQ(l.ffn_up.bytes().data(), f.tensor_data(*up).data() + 128 * row);
    // The head bytes are the per-head file's.
    const LayerViews& src = ph.views().layers[1];
    EXPECT_TRUE(
        std::equal(l.v[1].bytes().begin(), l.v[1].bytes().end(), src.v[1].bytes().begin(), src.v[1].bytes().end()));
    EXPECT_TRUE(std::equal(l.ffn_up.bytes().begin(), l.ffn_up.bytes().end(), src.ffn_up.bytes().begin(),
                           src.ffn_up.bytes().end()));

    // split: the per-head file's tensors, in its order, with its bytes (the keys are the fused file's).
    cli_ok({"split", (dir / "fused.gguf").string(), "-o", (dir / "back.gguf").string(), "-q"});
    const GgufFile a = GgufFile::open(dir / "ph.gguf"), b = GgufFile::open(dir / "back.gguf");
    ASSERT_EQ(a.tensors().size(), b.tensors().size());
    for (std::size_t i = 0; i < a.tensors().size(); ++i) {
        EXPECT_EQ(a.tensors()[i].name, b.tensors()[i].name);
        const auto x = a.tensor_data(a.tensors()[i]), y = b.tensor_data(b.tensors()[i]);
        EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << a.tensors()[i].name;
    }
    const auto v = test::run_cli({"verify", (dir / "ph.gguf").string(), (dir / "fused.gguf").string()});
    EXPECT_EQ(v.status, 0) << v.out << v.err;
    const auto shown = test::run_cli({"inspect", (dir / "fused.gguf").string()});
    EXPECT_EQ(shown.status, 0) << shown.err;
    EXPECT_NE(shown.out.find("blk.0.attn_qkv.weight"), std::string::npos) << shown.out;
}

// A Phi-3 head cannot be pruned: llama.cpp's phi3 loader sizes attn_qkv's query rows and attn_output by n_embd.
// The refusal names it, exit 1, no output file.
TEST(Phi3Files, PruneIsRefusedByName) {
    TempDir dir;
    PerHeadModel::random_init(phi3_config(4, 2, false), test::test_seed()).save(dir / "ph.gguf");
    const auto out = dir / "pruned.gguf";
    const auto r =  // kv group 0 of every layer, whole
        test::run_cli({"heads", "prune", (dir / "ph.gguf").string(), "-o", out.string(), "--heads", "0:0,0:1,1:0,1:1"});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("llama.cpp's phi3 loader sizes attn_output"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out));
}

// Hugging Face configs the phi3 graph does not compute are refused by name: a partial rotary embedding, rope_scaling
// other than LongRoPE, LongRoPE that llama.cpp's converter refuses (factor lists of another length than half the
// head, a missing list or original context) or would convert otherwise (a key it ignores).
TEST(Phi3Files, HfConfigRefusals) {
    TempDir dir;
    const fs::path hf = dir / "hf";
    const auto made = test::run_program({kPython, kReference, "make", hf.string(), "--d-model", "64", "--n-heads", "4",
                                         "--n-kv-heads", "2", "--d-ff", "96", "--n-layers", "1", "--vocab", "300"});
    ASSERT_EQ(made.status, 0) << made.err;
    const nlohmann::json base = nlohmann::json::parse(std::string(
        reinterpret_cast<const char*>(test::read_bytes(hf / "config.json").data()), fs::file_size(hf / "config.json")));
    const nlohmann::json eight = std::vector<double>(8, 1.5), seven = std::vector<double>(7, 1.5);
    auto longrope = [&](nlohmann::json extra) {
        nlohmann::json rs{{"type", "longrope"}, {"long_factor", eight}, {"short_factor", eight}};
        rs.update(extra);
        return rs;
    };
    for (const auto& [key, value, needle] :
         {std::tuple{"rope_scaling", longrope({{"long_factor", seven}}),
                     "rope_scaling key 'long_factor' must be a list of 8 numbers (half the head size 16), found 7"},
          std::tuple{"rope_scaling", nlohmann::json{{"type", "su"}, {"long_factor", eight}},
                     "rope_scaling has no 'short_factor'"},
          std::tuple{"rope_scaling", longrope({{"short_factor", std::vector<double>{1, 1, 1, 1, 1, 1, 1, -1}}}),
                     "'short_factor' entry 7 must be a positive number, found -1"},
          std::tuple{"rope_scaling", longrope({{"attention_factor", 1.25}}), "rope_scaling key 'attention_factor'"},
          std::tuple{"rope_scaling", longrope({{"type", "yarn"}}), "not YaRN"},
          std::tuple{"rope_scaling", nlohmann::json{{"type", "linear"}, {"factor", 2}}, "LongRoPE (\"longrope\""},
          std::tuple{"original_max_position_embeddings", nlohmann::json(nullptr),
                     "missing key 'original_max_position_embeddings', which LongRoPE scaling needs"},
          std::tuple{"partial_rotary_factor", nlohmann::json(0.75), "full rotary embeddings only"}}) {
        nlohmann::json j = base;
        j[key] = value;
        if (key == std::string("original_max_position_embeddings"))
            j["rope_scaling"] = longrope(nlohmann::json::object());
        write_json(hf / "config.json", j);
        const auto out = dir / "model.gguf";
        const auto r = test::run_cli({"fuse", hf.string(), "-o", out.string()});
        EXPECT_EQ(r.status, 1) << key;
        EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
        EXPECT_NE(r.err.find(key == std::string("rope_scaling") ? "rope_scaling" : key), std::string::npos) << r.err;
        EXPECT_NE(r.err.find("config.json"), std::string::npos) << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
        EXPECT_FALSE(fs::exists(out));
    }
}

namespace {
class Phi3JudgeForward : public ::testing::TestWithParam<test::Shape> {};
}  // namespace

// headfuse's forward pass agrees with llama.cpp on the fused file of a sharp random Phi-3; ablating a head (its
// attn_output columns zeroed, the file llama.cpp runs) equals headfuse's forward with that head masked; pool-kv
// (MHA -> GQA) gives a file llama.cpp runs as headfuse computes it.
TEST_P(Phi3JudgeForward, LlamaCppAgrees) {
    HEADFUSE_REQUIRE_JUDGES();
    const Config c = GetParam().config;
    TempDir dir;
    const std::string fused_path = test::fused_sharp_model(c, dir.path()).string();
    ASSERT_FALSE(fused_path.empty());
    const FusedModel fused = FusedModel::open(fused_path);
    EXPECT_EQ(fused.config(), c);
    const auto tokens = default_tokens(c.vocab, 48);
    const double d = test::max_logprob_diff(test::forward_logprobs(fused.views(), tokens),
                                            test::llama_eval(fused_path, tokens), c.vocab);

    const std::string ablated = (dir / "ablated.gguf").string();
    cli_ok({"heads", "ablate", fused_path, "-o", ablated, "--heads", "1:2,0:0", "-q"});
    const std::vector<HeadRef> heads{{0, 0}, {1, 2}};
    const double d_ablated = test::max_logprob_diff(test::forward_logprobs(fused.views(), tokens, heads),
                                                    test::llama_eval(ablated, tokens), c.vocab);
    std::printf("[headfuse] phi3 %s: llama.cpp vs headfuse max |dlogp| %.3g, ablated %.3g\n", GetParam().name.c_str(),
                d, d_ablated);
    EXPECT_LE(d, kF32LogprobTolerance);
    EXPECT_LE(d_ablated, kF32LogprobTolerance);
    if (c.n_kv_heads == c.n_heads) {
        const std::string pooled = (dir / "pooled.gguf").string();
        cli_ok({"heads", "pool-kv", fused_path, "-o", pooled, "--kv-heads", "2", "-q"});
        const FusedModel p = FusedModel::open(pooled);
        EXPECT_EQ(p.config().n_kv_heads, 2u);
        const double d_pooled = test::max_logprob_diff(test::forward_logprobs(p.views(), tokens),
                                                       test::llama_eval(pooled, tokens), c.vocab);
        std::printf("[headfuse] phi3 %s pooled to 2 kv heads: llama.cpp vs headfuse %.3g\n", GetParam().name.c_str(),
                    d_pooled);
        EXPECT_LE(d_pooled, kF32LogprobTolerance);
    }
}

INSTANTIATE_TEST_SUITE_P(Phi3Judge, Phi3JudgeForward,
                         ::testing::Values(test::Shape{"mha", phi3_config(4, 4, false)},
                                           test::Shape{"gqa_tied", phi3_config(4, 2, true)},
                                           test::Shape{"mqa", phi3_config(8, 1, false)},
                                           test::Shape{"longrope_mha", phi3_longrope_config(4, 4, false)}),
                         [](const auto& info) { return info.param.name; });

// init --family phi3 writes a per-head phi3 checkpoint; a transplant between two of them (a kv group with its
// heads, another layer's head alone) runs in llama.cpp as headfuse's forward computes it, and keeps every row
// of attn_qkv it does not name; scan covers every head of every layer.
TEST(Phi3JudgeEdits, InitTransplantAndScan) {
    HEADFUSE_REQUIRE_JUDGES();
    TempDir dir;
    for (const char* seed : {"1", "2"})
        cli_ok({"init",         "-o",         (dir / ("ph" + std::string(seed) + ".gguf")).string(),
                "--family",     "phi3",       "--d-model",
                "64",           "--n-heads",  "4",
                "--n-kv-heads", "2",          "--d-ff",
                "96",           "--n-layers", "2",
                "--vocab",      "300",        "--seed",
                seed,           "-q"});
    const std::string src = (dir / "src.gguf").string(), donor = (dir / "donor.gguf").string();
    cli_ok({"fuse", (dir / "ph1.gguf").string(), "-o", src, "-q"});
    cli_ok({"fuse", (dir / "ph2.gguf").string(), "-o", donor, "-q"});
    EXPECT_EQ(GgufFile::open(src).metadata().get_string("general.architecture", "src"), "phi3");
    const std::string out = (dir / "transplanted.gguf").string();
    cli_ok({"heads", "transplant", src, "--from", donor, "-o", out, "--heads", "1:2=1:0,1:3=1:1,0:0", "-q"});
    const FusedModel a = FusedModel::open(src), d = FusedModel::open(donor), t = FusedModel::open(out);
    auto same = [](const TensorView& x, const TensorView& y) {
        return std::equal(x.bytes().begin(), x.bytes().end(), y.bytes().begin(), y.bytes().end());
    };
    const LayerViews &la = a.views().layers[1], &ld = d.views().layers[1], &lt = t.views().layers[1];
    EXPECT_TRUE(same(lt.q[0], la.q[0]) && same(lt.q[1], la.q[1]));
    EXPECT_TRUE(same(lt.q[2], ld.q[0]) && same(lt.q[3], ld.q[1]));
    EXPECT_TRUE(same(lt.k[0], la.k[0]) && same(lt.v[0], la.v[0]));
    EXPECT_TRUE(same(lt.k[1], ld.k[0]) && same(lt.v[1], ld.v[0]));
    EXPECT_TRUE(same(lt.ffn_gate, la.ffn_gate) && same(lt.ffn_up, la.ffn_up));
    const auto tokens = default_tokens(300, 24);
    const double d_t =
        test::max_logprob_diff(test::forward_logprobs(t.views(), tokens), test::llama_eval(out, tokens), 300);
    std::printf("[headfuse] phi3 transplanted: llama.cpp vs headfuse max |dlogp| %.3g\n", d_t);
    EXPECT_LE(d_t, kF32LogprobTolerance);

    {
        std::FILE* f = std::fopen((dir / "tokens.txt").c_str(), "w");
        ASSERT_NE(f, nullptr);
        const std::string text = test::csv(tokens);
        std::fwrite(text.data(), 1, text.size(), f);
        std::fclose(f);
    }
    cli_ok({"heads", "scan", src, "--tokens-file", (dir / "tokens.txt").string(), "-o", (dir / "scan.json").string(),
            "-q"});
    const auto bytes = test::read_bytes(dir / "scan.json");
    const auto j = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    EXPECT_EQ(j.at("heads").size(), 2u * 4u);
}

namespace {

struct HfPhi3Case {
    std::string name;
    std::vector<std::string> args;  // phi3_reference.py make flags
};
void PrintTo(const HfPhi3Case& c, std::ostream* os) { *os << c.name; }

class Phi3JudgeHf : public ::testing::TestWithParam<HfPhi3Case> {};

}  // namespace

// A Hugging Face Phi3ForCausalLM folder (qkv_proj, gate_up_proj) becomes with one `headfuse fuse DIR` a file
// llama.cpp runs as the numpy reference (Hugging Face's conventions) predicts; headfuse's forward agrees; export
// gives back the same tensors byte for byte.
TEST_P(Phi3JudgeHf, LlamaCppGivesTheReferenceDistributionAndExportTheSameBytes) {
    HEADFUSE_REQUIRE_JUDGES();
    TempDir dir;
    const fs::path hf = dir / "hf";
    std::vector<std::string> make{kPython,  kReference, "make",       hf.string(), "--d-model", "64",
                                  "--d-ff", "96",       "--n-layers", "2",         "--vocab",   "300"};
    make.insert(make.end(), GetParam().args.begin(), GetParam().args.end());
    const auto made = test::run_program(make);
    ASSERT_EQ(made.status, 0) << made.err;
    const std::string model = (dir / "model.gguf").string();
    cli_ok({"fuse", hf.string(), "-o", model, "-q"});
    // llama.cpp computes in f32 on f32 weights: a BF16 checkpoint is run widened (exactly), as the reference reads
    // it; on BF16 weights llama.cpp would round its activations to bf16 too.
    const bool bf16 = GetParam().name == "bf16";
    const std::string run = bf16 ? (dir / "f32.gguf").string() : model;
    if (bf16) cli_ok({"fuse", hf.string(), "-o", run, "--type", "f32", "-q"});
    const FusedModel fused = FusedModel::open(run);
    EXPECT_EQ(fused.config().family, Family::Phi3);
    std::vector<std::uint32_t> tokens;
    for (std::uint32_t i = 0; i < 12; ++i) tokens.push_back((i * 37 + 5) % 300);
    const auto theirs = test::llama_eval(run, tokens);
    const auto r = test::run_program({kPython, kReference, "logprobs", hf.string(), test::csv(tokens)});
    ASSERT_EQ(r.status, 0) << r.err;
    const auto ref = nlohmann::json::parse(r.out).get<std::vector<std::vector<double>>>();
    std::vector<double> flat;
    for (const auto& row : ref) flat.insert(flat.end(), row.begin(), row.end());
    const double d_ref = test::max_logprob_diff(flat, theirs, 300);
    const double d_ours = test::max_logprob_diff(test::forward_logprobs(fused.views(), tokens), theirs, 300);
    std::printf("[headfuse] phi3 hf %s: llama.cpp vs numpy reference %.3g, vs headfuse %.3g\n", GetParam().name.c_str(),
                d_ref, d_ours);
    EXPECT_LE(d_ref, kF32LogprobTolerance);
    EXPECT_LE(d_ours, kF32LogprobTolerance);

    cli_ok({"export", model, "-o", (dir / "back").string(), "--format", "hf", "-q"});
    test::expect_same_tensors(hf, dir / "back");
    cli_ok({"export", hf.string(), "-o", (dir / "direct").string(), "--format", "hf", "-q"});
    test::expect_same_tensors(hf, dir / "direct");
    const auto v = test::run_cli({"verify", hf.string(), model});
    EXPECT_EQ(v.status, 0) << v.out << v.err;
    const auto tl = test::run_cli({"export", model, "-o", (dir / "tl").string(), "--format", "transformer-lens"});
    EXPECT_EQ(tl.status, 1);
    EXPECT_NE(tl.err.find("phi3 model has no TransformerLens layout"), std::string::npos) << tl.err;
}

INSTANTIATE_TEST_SUITE_P(
    Phi3Judge, Phi3JudgeHf,
    ::testing::Values(HfPhi3Case{"gqa", {"--n-heads", "4", "--n-kv-heads", "2", "--seed", "3"}},
                      HfPhi3Case{"mha_tied", {"--n-heads", "4", "--n-kv-heads", "4", "--tied", "--seed", "4"}},
                      HfPhi3Case{"bf16", {"--n-heads", "8", "--n-kv-heads", "2", "--dtype", "BF16", "--seed", "5"}}),
    [](const auto& info) { return info.param.name; });

// Phi3Config's sliding_window: llama.cpp's converter writes it as phi3.attention.sliding_window and llama.cpp's
// phi3 loader then disables sliding-window attention ("Phi SWA is currently disabled"), attending to every
// earlier position. headfuse carries the key, computes what llama.cpp computes, and exports it back.
TEST(Phi3JudgeSlidingWindow, CarriedAndIgnoredAsLlamaCppIgnoresIt) {
    HEADFUSE_REQUIRE_JUDGES();
    TempDir dir;
    const fs::path hf = dir / "hf";
    const auto made =
        test::run_program({kPython,      kReference, "make",         hf.string(), "--d-model",        "64",
                           "--n-heads",  "4",        "--n-kv-heads", "2",         "--d-ff",           "96",
                           "--n-layers", "2",        "--vocab",      "300",       "--sliding-window", "4",
                           "--seed",     "6"});
    ASSERT_EQ(made.status, 0) << made.err;
    const std::string model = (dir / "model.gguf").string();
    cli_ok({"fuse", hf.string(), "-o", model, "-q"});
    const FusedModel fused = FusedModel::open(model);
    EXPECT_EQ(fused.metadata().get_u32("phi3.attention.sliding_window", "model"), 4u);
    const auto tokens = default_tokens(300, 16);  // longer than the window
    const double d =
        test::max_logprob_diff(test::forward_logprobs(fused.views(), tokens), test::llama_eval(model, tokens), 300);
    EXPECT_LE(d, kF32LogprobTolerance);
    cli_ok({"export", model, "-o", (dir / "back").string(), "--format", "hf", "-q"});
    const auto cfg = test::read_bytes(dir / "back" / "config.json");
    const auto j = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(cfg.data()), cfg.size()));
    EXPECT_EQ(j.at("sliding_window"), 4);
    EXPECT_EQ(j.at("architectures").at(0), "Phi3ForCausalLM");
}

// heads scan --ctx: the scan runs the forward pass in that context (LongRoPE's long factors at 512, the short ones by
// default), its base loss the forward pass's and a head's loss the forward pass's with the head ablated.
TEST(Phi3Files, ScanTakesTheContext) {
    TempDir dir;
    const Config c = phi3_longrope_config(4, 2, false);
    const auto tensors = test::sharp_tensors(c, test::test_seed());
    const PerHeadModel m = test::sharp_model(c, tensors);
    m.save(dir / "ph.gguf");
    const auto tokens = default_tokens(c.vocab, 24);
    {
        std::FILE* f = std::fopen((dir / "tokens.txt").c_str(), "w");
        ASSERT_NE(f, nullptr);
        const std::string text = test::csv(tokens);
        std::fwrite(text.data(), 1, text.size(), f);
        std::fclose(f);
    }
    auto loss = [&](std::uint32_t n_ctx, std::vector<HeadRef> ablated) {
        return compute::next_token_loss(forward_logits(m.views(), tokens, 0, ablated, n_ctx), tokens, c.vocab);
    };
    for (const std::uint32_t ctx : {0u, kLongContext}) {
        std::vector<std::string> args{"heads",
                                      "scan",
                                      (dir / "ph.gguf").string(),
                                      "--tokens-file",
                                      (dir / "tokens.txt").string(),
                                      "-o",
                                      (dir / "scan.json").string(),
                                      "-q"};
        if (ctx) args.insert(args.end(), {"--ctx", std::to_string(ctx)});
        cli_ok(args);
        const nlohmann::json j = read_json(dir / "scan.json");
        EXPECT_NEAR(j.at("base_loss").get<double>(), loss(ctx, {}), 1e-12) << ctx;
        EXPECT_GT(std::abs(j.at("base_loss").get<double>() - loss(ctx ? 0 : kLongContext, {})), 1e-4) << ctx;
        bool seen = false;
        for (const auto& h : j.at("heads")) {
            if (h.at("layer") != 1 || h.at("head") != 2) continue;
            seen = true;  // two ways of summing the same layers: 1e-6 nats apart at most
            EXPECT_NEAR(h.at("loss").get<double>(), loss(ctx, {{1, 2}}), 1e-6) << ctx;
        }
        EXPECT_TRUE(seen);
    }
}

namespace {

// The numpy reference's log-probabilities on `tokens`, position-major.
std::vector<double> reference_logprobs(const fs::path& hf, const std::vector<std::uint32_t>& tokens) {
    const auto r = test::run_program({kPython, kReference, "logprobs", hf.string(), test::csv(tokens)});
    EXPECT_EQ(r.status, 0) << r.err;
    if (r.status != 0) return {};
    std::vector<double> flat;
    for (const auto& row : nlohmann::json::parse(r.out).get<std::vector<std::vector<double>>>())
        flat.insert(flat.end(), row.begin(), row.end());
    return flat;
}

}  // namespace

// A Hugging Face Phi-3 with LongRoPE (distinct long and short factors, none 1; an original context of 256 extended
// to 1024) becomes with one `headfuse fuse DIR` what llama.cpp's converter writes: the keys (context_length,
// rope.scaling.original_context_length, rope.scaling.attn_factor = sqrt(1 + ln 4 / ln 256) as f32) and the two f32
// factor tensors, as @huggingface/gguf reads them. llama.cpp runs it as the numpy reference (transformers' LongRoPE)
// predicts and as headfuse's forward computes it, with the short factors in a context of 256 (12 tokens: Hugging
// Face's short case too) and the long ones in a context of 512 (260 tokens, beyond the original context: Hugging
// Face's long case); the other factors would not do. logits --ctx picks them; export gives back the tensors byte
// for byte and a config of the same LongRoPE.
TEST(Phi3JudgeLongRope, ShortAndLongFactorsAsLlamaCppPicksThem) {
    HEADFUSE_REQUIRE_JUDGES();
    TempDir dir;
    const fs::path hf = dir / "hf";
    const auto made = test::run_program({kPython,        kReference,
                                         "make",         hf.string(),
                                         "--d-model",    "64",
                                         "--n-heads",    "4",
                                         "--n-kv-heads", "2",
                                         "--d-ff",       "96",
                                         "--n-layers",   "2",
                                         "--vocab",      "300",
                                         "--seed",       "8",
                                         "--longrope",   "--original-context",
                                         "256",          "--max-context",
                                         "1024"});
    ASSERT_EQ(made.status, 0) << made.err;
    const nlohmann::json config = read_json(hf / "config.json");
    const std::string model = (dir / "model.gguf").string();
    const auto fused_hf = test::run_cli({"fuse", hf.string(), "-o", model});
    ASSERT_EQ(fused_hf.status, 0) << fused_hf.err;
    EXPECT_NE(fused_hf.out.find("LongRoPE from context 256 to 1024"), std::string::npos) << fused_hf.out;

    // What conversion/phi.py writes: the keys, and the factors as float32 tensors of rope_dims / 2.
    const nlohmann::json h = test::hf_parse(model, true);
    EXPECT_EQ(h.at("metadata").at("phi3.context_length"), 1024);
    EXPECT_EQ(h.at("metadata_types").at("phi3.rope.scaling.original_context_length"), "UINT32");
    EXPECT_EQ(h.at("metadata").at("phi3.rope.scaling.original_context_length"), 256);
    EXPECT_EQ(h.at("metadata_types").at("phi3.rope.scaling.attn_factor"), "FLOAT32");
    EXPECT_EQ(h.at("metadata").at("phi3.rope.scaling.attn_factor").get<float>(),
              static_cast<float>(std::sqrt(1.0 + std::log(1024.0 / 256.0) / std::log(256.0))));
    const GgufFile file = GgufFile::open(model);
    for (const auto& [name, key] : {std::pair{"rope_factors_long.weight", "long_factor"},
                                    std::pair{"rope_factors_short.weight", "short_factor"}}) {
        bool listed = false;
        for (const auto& t : h.at("tensors"))
            if (t.at("name") == name) {
                listed = true;
                EXPECT_EQ(t.at("shape"), nlohmann::json::array({8})) << name;
                EXPECT_EQ(t.at("dtype"), 0) << name;  // GGML_TYPE_F32
            }
        EXPECT_TRUE(listed) << name;
        const TensorInfo* t = file.find_tensor(name);
        ASSERT_NE(t, nullptr) << name;
        const auto bytes = file.tensor_data(*t);
        const auto& list = config.at("rope_scaling").at(key);
        ASSERT_EQ(bytes.size(), list.size() * 4);
        for (std::size_t i = 0; i < list.size(); ++i) {
            float got;
            std::memcpy(&got, bytes.data() + 4 * i, 4);
            EXPECT_EQ(got, static_cast<float>(list[i].get<double>())) << name << " " << i;  // torch.tensor(f32)
        }
    }

    const FusedModel fused = FusedModel::open(model);
    auto judged = [&](std::uint32_t n_tokens, std::uint32_t context, const char* name) {
        std::vector<std::uint32_t> tokens;
        for (std::uint32_t i = 0; i < n_tokens; ++i) tokens.push_back((i * 37 + 5) % 300);
        const auto theirs = test::llama_eval(model, tokens, context);
        const double d_ref = test::max_logprob_diff(reference_logprobs(hf, tokens), theirs, 300);
        const double d_ours =
            test::max_logprob_diff(test::forward_logprobs(fused.views(), tokens, {}, context), theirs, 300);
        // The other factor set: far from what llama.cpp computes, so the comparisons above see the choice.
        const std::uint32_t other = context == kShortContext ? kLongContext : kShortContext;
        const double d_other =
            test::max_logprob_diff(test::forward_logprobs(fused.views(), tokens, {}, other), theirs, 300);
        std::printf(
            "[headfuse] phi3 longrope %s (%u tokens, context %u): llama.cpp vs numpy reference %.3g, vs "
            "headfuse %.3g (the other factors: %.3g)\n",
            name, n_tokens, context, d_ref, d_ours, d_other);
        EXPECT_LE(d_ref, kF32LogprobTolerance) << name;
        EXPECT_LE(d_ours, kF32LogprobTolerance) << name;
        EXPECT_GT(d_other, 100 * kF32LogprobTolerance) << name;
        return tokens;
    };
    const auto short_tokens = judged(12, kShortContext, "short");
    const auto long_tokens = judged(260, kLongContext, "long");
    // The default context is the original one: the short factors, as llama.cpp in a context of 256.
    const auto by_default = test::llama_eval(model, short_tokens);
    EXPECT_EQ(test::max_logprob_diff(test::forward_logprobs(fused.views(), short_tokens), by_default, 300),
              test::max_logprob_diff(test::forward_logprobs(fused.views(), short_tokens, {}, kShortContext), by_default,
                                     300));

    // logits --ctx: the forward pass in that context, bit for bit.
    const fs::path raw = dir / "logits.f32";
    const std::vector<std::uint32_t> few(long_tokens.begin(), long_tokens.begin() + 6);
    cli_ok({"logits", model, "--tokens", test::csv(few), "--ctx", "300", "-o", raw.string(), "-q"});
    const std::vector<float> want = forward_logits(fused.views(), few, 0, {}, kLongContext);
    const auto got = test::read_bytes(raw);
    ASSERT_EQ(got.size(), want.size() * 4);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size()), 0);
    // More tokens than the context holds: a warning names --ctx (llama.cpp would need a larger context).
    const auto warned = test::run_cli({"logits", model, "--tokens", test::csv(long_tokens), "-o", raw.string()});
    EXPECT_EQ(warned.status, 0) << warned.err;
    EXPECT_NE(warned.err.find("260 tokens, more than llama.cpp's context of 256 holds (--ctx, by default the original "
                              "context; rounded up to 256): give --ctx at least 260"),
              std::string::npos)
        << warned.err;
    const auto bad = test::run_cli({"logits", model, "--tokens", "1,2", "--ctx", "0"});
    EXPECT_EQ(bad.status, 1);
    EXPECT_NE(bad.err.find("--ctx"), std::string::npos) << bad.err;

    // export: the same tensors, and a config of the same LongRoPE, which fuses to the same file.
    cli_ok({"export", model, "-o", (dir / "back").string(), "--format", "hf", "-q"});
    test::expect_same_tensors(hf, dir / "back");
    const nlohmann::json back = read_json(dir / "back" / "config.json");
    EXPECT_EQ(back.at("max_position_embeddings"), 1024);
    EXPECT_EQ(back.at("original_max_position_embeddings"), 256);
    EXPECT_EQ(back.at("rope_scaling").at("type"), "longrope");
    for (const char* key : {"long_factor", "short_factor"}) {
        const auto& a = config.at("rope_scaling").at(key);
        const auto& b = back.at("rope_scaling").at(key);
        ASSERT_EQ(a.size(), b.size()) << key;
        for (std::size_t i = 0; i < a.size(); ++i)
            EXPECT_EQ(static_cast<float>(a[i].get<double>()), static_cast<float>(b[i].get<double>())) << key << i;
    }
    cli_ok({"fuse", (dir / "back").string(), "-o", (dir / "again.gguf").string(), "-q"});
    const auto again = test::run_cli({"verify", model, (dir / "again.gguf").string(), "--ctx", "512"});
    EXPECT_EQ(again.status, 0) << again.out << again.err;
    for (const std::string ctx : {"256", "512"}) {
        const auto v = test::run_cli({"verify", hf.string(), model, "--ctx", ctx});
        EXPECT_EQ(v.status, 0) << v.out << v.err;
    }
}

namespace {

class Phi3JudgeMixes : public ::testing::TestWithParam<test::Shape> {};

// d_model 256: every row whole K-quant blocks; 8 layers give use_more_bits both answers.
Config family_config(Family f, bool tied) {
    return test::with_family(test::make_config(256, 8, 2, 32, 512, 8, 300, tied), f);
}

}  // namespace

// Every K-quant mix of a family's model equals llama_model_quantize's file of the f32 fused model, tensor for
// tensor: phi3's attn_qkv takes attn_v's rule (llama.cpp's category_is_attn_v), a tied embedding the output's.
TEST_P(Phi3JudgeMixes, EqualLlamaModelQuantize) {
    HEADFUSE_REQUIRE_LLAMA_QUANTIZE(llama);
    const Config c = GetParam().config;
    TempDir dir;
    test::expect_mixes_match(*llama, PerHeadModel::random_init(c, test::test_seed()), dir.path());
}

INSTANTIATE_TEST_SUITE_P(Phi3Judge, Phi3JudgeMixes,
                         ::testing::Values(test::Shape{"phi3", phi3_config(8, 2, false, 256, 8)},
                                           test::Shape{"phi3_tied", phi3_config(8, 8, true, 256, 8)},
                                           test::Shape{"qwen2", family_config(Family::Qwen2, false)},
                                           test::Shape{"qwen2_tied", family_config(Family::Qwen2, true)},
                                           test::Shape{"qwen3", family_config(Family::Qwen3, false)}),
                         [](const auto& info) { return info.param.name; });
