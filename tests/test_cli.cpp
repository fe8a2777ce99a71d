// The command line as a demanding new user meets it, through the real CLI: numbers, defaults, error lines,
// warnings, help. Each test names the defect it guards (issue 10).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "support/models.h"

namespace {

namespace fs = std::filesystem;
using headfuse::test::list_dir;
using headfuse::test::run_cli;
using headfuse::test::RunResult;
using headfuse::test::TempDir;
using Args = std::vector<std::string>;

// A small model's flags: d_model 64, 4 heads x 16, d_ff 128, 2 layers, vocab 300.
const Args kModel{"--d-model", "64", "--n-heads", "4", "--d-ff", "128", "--n-layers", "2", "--vocab", "300"};

Args concat(Args a, const Args& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// `base` with `flag` set to `value` (replaced where it is already given: CLI11 refuses a flag given twice).
Args with(Args base, const std::string& flag, const std::string& value) {
    const auto it = std::find(base.begin(), base.end(), flag);
    if (it != base.end())
        *(it + 1) = value;
    else
        base.insert(base.end(), {flag, value});
    return base;
}

bool one_line(const std::string& s) {
    return !s.empty() && s.back() == '\n' && std::count(s.begin(), s.end(), '\n') == 1;
}

// A refusal: exit 1, one line on stderr that starts with "headfuse: " and holds every one of `expect`.
// verify's status is 2 (could not compare), as cmp's.
void expect_refused(const RunResult& r, const std::vector<std::string>& expect, int status = 1) {
    EXPECT_EQ(r.status, status) << r.err;
    EXPECT_TRUE(one_line(r.err)) << "not one line:\n" << r.err;
    EXPECT_EQ(r.err.rfind("headfuse: ", 0), 0u) << r.err;
    for (const std::string& s : expect) EXPECT_NE(r.err.find(s), std::string::npos) << "no '" << s << "' in " << r.err;
}

// Small models shared by the tests: a per-head checkpoint and its fused file.
struct Models {
    TempDir dir;
    fs::path ph = dir / "ph.gguf", fused = dir / "fused.gguf";
    Models() {
        const RunResult a = run_cli(concat({"init", "-q", "-o", ph.string()}, kModel));
        const RunResult b = run_cli({"fuse", "-q", ph.string(), "-o", fused.string()});
        if (a.status != 0 || b.status != 0) ADD_FAILURE() << a.err << b.err;
    }
};

const Models& models() {
    static const Models m;
    return m;
}

// #10.8: numbers are decimal and range-checked, the same for every flag.
TEST(CliNumbers, AreDecimalAndRangeChecked) {
    TempDir dir;
    const std::string out = (dir / "m.gguf").string();
    struct Case {
        Args args;
        std::string flag, found;
    };
    const std::vector<Case> cases{
        {{"--vocab", "010"}, "", ""},  // accepted as ten, checked below
        {{"--vocab", "0x10"}, "--vocab", "'0x10'"},
        {{"--vocab", "+300"}, "--vocab", "'+300'"},
        {{"--vocab", " 300"}, "--vocab", "' 300'"},
        {{"--vocab", "1e3"}, "--vocab", "'1e3'"},
        {{"--seed", "-1"}, "--seed", "'-1'"},
        {{"--seed", "18446744073709551616"}, "--seed", "'18446744073709551616'"},
        {{"--n-layers", "4294967297"}, "--n-layers", "'4294967297'"},
        {{"--threads", "0"}, "--threads", "'0'"},
        {{"--threads", "1025"}, "--threads", "from 1 to 1024"},
        {{"--context", "0x800"}, "--context", "'0x800'"},
        {{"--rms-eps", "-1e-9"}, "--rms-eps", "'-1e-9'"},
        {{"--rms-eps", "0x1p-20"}, "--rms-eps", "'0x1p-20'"},
        {{"--rope-theta", "inf"}, "--rope-theta", "'inf'"},
        {{"--rope-theta", "nan"}, "--rope-theta", "'nan'"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.args[0] + " " + c.args[1]);
        const RunResult r = run_cli(concat({"init", "-q", "-o", out}, with(kModel, c.args[0], c.args[1])));
        if (c.flag.empty()) {
            ASSERT_EQ(r.status, 0) << r.err;
            EXPECT_NE(r.out.find("vocab 10,"), std::string::npos) << "010 is ten: " << r.out;
            continue;
        }
        expect_refused(r, {c.flag, c.found});
        EXPECT_EQ(r.err.find("-0.000000"), std::string::npos) << r.err;
    }
    // Token ids: the same rules.
    const std::string fu = models().fused.string();
    expect_refused(run_cli({"logits", fu, "--tokens", "0x10"}), {"--tokens", "'0x10'"});
    expect_refused(run_cli({"logits", fu, "--tokens", "1,-2"}), {"--tokens", "'-2'"});
    expect_refused(run_cli({"logits", fu, "--tokens", "1, 2"}), {"--tokens", "' 2'"});
    const RunResult ten = run_cli({"logits", fu, "--tokens", "010", "--top", "1"});
    ASSERT_EQ(ten.status, 0) << ten.err;
    EXPECT_NE(ten.out.find("0    10 "), std::string::npos) << ten.out;
}

// #10.9: an explicit zero is refused, never replaced by a default; derived values are explained.
TEST(CliNumbers, ZeroIsRefusedAndDerivedValuesAreExplained) {
    TempDir dir;
    const std::string out = (dir / "m.gguf").string();
    for (const std::string flag : {"--n-kv-heads", "--d-head", "--donor-d-in", "--vocab", "--d-model", "--context"}) {
        SCOPED_TRACE(flag);
        expect_refused(run_cli(concat({"init", "-q", "-o", out}, with(kModel, flag, "0"))), {flag, "'0'"});
    }
    expect_refused(run_cli(concat({"init", "-q", "-o", out}, with(kModel, "--n-heads", "5"))),
                   {"--d-head", "d_model 64", "n_heads 5"});
    expect_refused(run_cli(concat({"init", "-q", "-o", out}, with(kModel, "--n-heads", "3"))),
                   {"--d-head", "d_model 64", "n_heads 3"});
    // d_model 64 / 64 heads = 1: the derivation is given with the complaint about d_head.
    expect_refused(run_cli(concat({"init", "-q", "-o", out}, with(kModel, "--n-heads", "64"))),
                   {"d_head", "d_model 64 / n_heads 64", "--d-head was not given"});
    EXPECT_TRUE(list_dir(dir.path()).empty());
}

// #10.11: argument errors are one line with the prefix; an unknown command is named.
TEST(CliErrors, AreOneLineWithThePrefix) {
    const std::string fu = models().fused.string();
    expect_refused(run_cli({"frobnicate", fu}), {"unknown command 'frobnicate'", "init, fuse"});
    expect_refused(run_cli({}), {"a command is required"});
    expect_refused(run_cli({"init", "--d-model", "64"}), {"--output is required", "headfuse init --help"});
    expect_refused(run_cli({"inspect", fu, "--bogus"}), {"--bogus"});
    expect_refused(run_cli({"fuse", fu}), {"--output is required"});
    expect_refused(run_cli({"logits", fu}), {"--tokens is required"});
}

// #10.11: forward's token error and a head type mismatch name the file.
TEST(CliErrors, ForwardErrorsNameTheFile) {
    const Models& m = models();
    expect_refused(run_cli({"logits", m.fused.string(), "--tokens", "1,300"}),
                   {"fused.gguf", "token 300", "vocab 300"});
    expect_refused(run_cli({"verify", m.ph.string(), m.fused.string(), "--tokens", "300"}), {".gguf", "token 300"}, 2);
}

// #10.11: no warning comes before an error (a q8_0 checkpoint asked for q4_0, whose rows also force the F16
// fallback), and the F16 fallback is said once, with the count.
TEST(CliErrors, NoWarningBeforeAnErrorAndFallbackSaidOnce) {
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", q8 = dir / "q8.gguf", sq8 = dir / "split-q8.gguf";
    const Args odd{"--d-model", "64", "--n-heads", "4", "--d-ff", "80", "--n-layers", "3", "--vocab", "300"};
    ASSERT_EQ(run_cli(concat({"init", "-q", "-o", ph.string()}, odd)).status, 0);
    const RunResult f = run_cli({"fuse", "-q", ph.string(), "-o", q8.string(), "--type", "q8_0"});
    ASSERT_EQ(f.status, 0) << f.err;
    // ffn_down's rows are 80 wide: 3 tensors, one warning.
    EXPECT_TRUE(one_line(f.err)) << f.err;
    EXPECT_NE(f.err.find("warning: 3 tensors"), std::string::npos) << f.err;
    ASSERT_EQ(run_cli({"split", "-q", q8.string(), "-o", sq8.string()}).status, 0);
    const RunResult r = run_cli({"fuse", "-q", sq8.string(), "-o", (dir / "x.gguf").string(), "--type", "q4_0"});
    expect_refused(r, {"split-q8.gguf", "f32, f16 or bf16 weights only"});
    EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
    // From q8_0 to f32: the same clear refusal, not "encodes to f32 from f32 weights only".
    expect_refused(run_cli({"fuse", "-q", sq8.string(), "-o", (dir / "x.gguf").string(), "--type", "f32"}),
                   {"is q8_0", "without a type"});
    EXPECT_FALSE(fs::exists(dir / "x.gguf"));
}

// Rough edges of issue 10: empty and "-" outputs, empty types and tokens, --top, context, help, wording.
TEST(CliRoughEdges, AreGone) {
    const Models& m = models();
    TempDir dir;
    const std::string ph = m.ph.string(), fu = m.fused.string();
    expect_refused(run_cli({"fuse", "-q", ph, "-o", ""}), {"--output", "''"});
    expect_refused(run_cli({"fuse", "-q", ph, "-o", "-"}), {"--output", "standard output"});
    expect_refused(run_cli({"fuse", "-q", ph, "-o", (dir / "x.gguf").string(), "--type", ""}), {"--type", "''"});
    expect_refused(run_cli({"logits", fu, "--tokens", "1", "--top", "0"}), {"--top", "'0'"});
    expect_refused(run_cli({"logits", fu, "--tokens", "1", "--top", "3", "-o", (dir / "l.f32").string()}),
                   {"--top", "-o"});
    expect_refused(run_cli({"verify", ph, fu, "--tokens", ""}), {"--tokens", "''"}, 2);
    EXPECT_TRUE(list_dir(dir.path()).empty());

    // More tokens than the context: said after the results, as a warning.
    const fs::path small_ctx = dir / "ctx.gguf";
    ASSERT_EQ(run_cli(concat({"init", "-q", "-o", small_ctx.string(), "--context", "2"}, kModel)).status, 0);
    const RunResult over = run_cli({"logits", small_ctx.string(), "--tokens", "1,2,3"});
    ASSERT_EQ(over.status, 0) << over.err;
    EXPECT_TRUE(one_line(over.err)) << over.err;
    EXPECT_NE(over.err.find("warning: 3 tokens, more than the model's context length 2"), std::string::npos)
        << over.err;

    // Help names the program, not the path it was run by, and no CLI11 type jargon.
    const RunResult help = run_cli({"init", "--help"});
    EXPECT_EQ(help.status, 0);
    EXPECT_NE(help.out.find("Usage: headfuse init"), std::string::npos) << help.out;
    EXPECT_EQ(help.out.find("UINT"), std::string::npos) << help.out;
    EXPECT_EQ(help.out.find("HEADFUSE"), std::string::npos);
    EXPECT_EQ(help.out.find(HEADFUSE_CLI), std::string::npos) << help.out;

    // "1 layer"; a fused lens model's summary says the lens was folded.
    const fs::path one = dir / "one.gguf", lens = dir / "lens.gguf";
    const RunResult r1 = run_cli({"init", "-q", "-o", one.string(), "--d-model", "64", "--n-heads", "4", "--d-ff", "64",
                                  "--n-layers", "1", "--vocab", "300", "--donor-d-in", "32"});
    ASSERT_EQ(r1.status, 0) << r1.err;
    EXPECT_NE(r1.out.find(", 1 layer,"), std::string::npos) << r1.out;
    const RunResult r2 = run_cli({"fuse", "-q", one.string(), "-o", lens.string()});
    ASSERT_EQ(r2.status, 0) << r2.err;
    EXPECT_NE(r2.out.find("lens folded (donor_d_in 32)"), std::string::npos) << r2.out;
    EXPECT_EQ(r2.out.find("lens from"), std::string::npos) << r2.out;
}

}  // namespace
