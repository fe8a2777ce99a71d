// The families beyond LLaMA as rows of the architecture table (headfuse/arch.h): qwen2 (q/k/v biases, NEOX RoPE),
// qwen3 (per-head q/k RMS norms, NEOX RoPE, head_dim free) and Mistral (GGUF llama). Judged by llama.cpp
// (node-llama-cpp) running the files headfuse writes, and by an independent numpy forward pass in Hugging Face's
// conventions (tests/support/hf_reference.py, Debian's python3-numpy).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "headfuse/arch.h"
#include "headfuse/error.h"
#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/model.h"
#include "headfuse/verify.h"
#include "model/roles.h"
#include "support/judge.h"
#include "support/models.h"

using namespace headfuse;
using headfuse::test::TempDir;

namespace {

// llama.cpp (f32 weights, f32 KV cache) against headfuse's forward pass and against the float64 numpy reference:
// the bound for graphs without GELU. Both measure about 1e-6 (llama.cpp sums in another order).
constexpr double kF32LogprobTolerance = 1e-4;

Config family_config(Family f, std::uint32_t d_head = 16) {
    Config c = test::make_config(64, 4, 2, d_head, 128, 2, 300);
    c.family = f;
    c.context_length = 512;
    if (f == Family::Qwen2)
        for (Role r : {Role::AttnQBias, Role::AttnKBias, Role::AttnVBias}) c.optional_roles.insert(r);
    if (f == Family::Qwen3)
        for (Role r : {Role::AttnQNorm, Role::AttnKNorm}) c.optional_roles.insert(r);
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
    auto refused = [](const Config& c, std::string_view needle) {
        try {
            c.validate();
            ADD_FAILURE() << "accepted; expected a refusal naming " << needle;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
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
    test::write_sharp_model(c, test::test_seed(), dir / "ph.gguf", 0.3f);
    const std::string ph = (dir / "ph.gguf").string(), fused_path = (dir / "fused.gguf").string();
    const auto fused_run = test::run_cli({"fuse", ph, "-o", fused_path, "-q"});
    ASSERT_EQ(fused_run.status, 0) << fused_run.err;
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
