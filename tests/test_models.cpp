// Per-head and fused models over every shape family: init, fuse, realize, split, bit for bit; the lens fold
// against a plain f64 loop; ggml's own reader accepts every file; the CLI does the same as the library.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <utility>

#include "headfuse/checkpoint.h"
#include "headfuse/error.h"
#include "headfuse/fold.h"
#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/heads.h"
#include "headfuse/model.h"
#include "model/random.h"
#include "support/ggml_lib.h"
#include "support/models.h"

using namespace headfuse;
using headfuse::test::Shape;
using headfuse::test::TempDir;

namespace {

bool same_bytes(const TensorView& a, const TensorView& b) {
    return a.type() == b.type() && a.ne() == b.ne() && a.bytes().size() == b.bytes().size() &&
           std::memcmp(a.bytes().data(), b.bytes().data(), a.bytes().size()) == 0;
}

// Every per-head view of `a` equals the same view of `b`, byte for byte (the lens excepted when folded).
void expect_same_heads(const ModelViews& a, const ModelViews& b, bool compare_embedding = true) {
    ASSERT_EQ(a.layers.size(), b.layers.size());
    if (compare_embedding) {
        EXPECT_TRUE(same_bytes(a.token_embd, b.token_embd));
    }
    EXPECT_TRUE(same_bytes(a.output_norm, b.output_norm));
    ASSERT_EQ(a.output.has_value(), b.output.has_value());
    if (a.output) {
        EXPECT_TRUE(same_bytes(*a.output, *b.output));
    }
    for (std::size_t l = 0; l < a.layers.size(); ++l) {
        const LayerViews &x = a.layers[l], &y = b.layers[l];
        for (auto [p, q] : {std::pair{&x.q, &y.q}, {&x.k, &y.k}, {&x.v, &y.v}}) {
            ASSERT_EQ(p->size(), q->size());
            for (std::size_t h = 0; h < p->size(); ++h) EXPECT_TRUE(same_bytes((*p)[h], (*q)[h])) << (*p)[h].name();
        }
        for (auto [p, q] : {std::pair{&x.attn_norm, &y.attn_norm},
                            {&x.attn_output, &y.attn_output},
                            {&x.ffn_norm, &y.ffn_norm},
                            {&x.ffn_gate, &y.ffn_gate},
                            {&x.ffn_up, &y.ffn_up},
                            {&x.ffn_down, &y.ffn_down}})
            EXPECT_TRUE(same_bytes(*p, *q)) << p->name();
    }
}

class ShapeTest : public ::testing::TestWithParam<Shape> {};

}  // namespace

TEST_P(ShapeTest, InitInMemoryAndStreamedWriteTheSameBytes) {
    const Config& c = GetParam().config;
    TempDir dir;
    PerHeadModel::random_init(c, test::test_seed()).save(dir / "memory.gguf");
    write_random_init(c, test::test_seed(), dir / "stream1.gguf", {.threads = 1});
    write_random_init(c, test::test_seed(), dir / "stream2.gguf", {.threads = 2});
    const auto a = test::read_bytes(dir / "memory.gguf");
    EXPECT_EQ(a, test::read_bytes(dir / "stream1.gguf"));
    EXPECT_EQ(a, test::read_bytes(dir / "stream2.gguf"));
    const PerHeadModel m = PerHeadModel::open(dir / "memory.gguf");
    EXPECT_EQ(m.config(), c);
}

TEST_P(ShapeTest, FuseRealizeSplitIsBitExact) {
    HEADFUSE_OPTIONAL_GGML(ggml);
    const Config& c = GetParam().config;
    TempDir dir;
    write_random_init(c, test::test_seed(), dir / "ph.gguf");
    const PerHeadModel ph = PerHeadModel::open(dir / "ph.gguf");
    fuse(ph, dir / "fused.gguf");
    fuse(ph, dir / "fused-again.gguf");
    EXPECT_EQ(test::read_bytes(dir / "fused.gguf"), test::read_bytes(dir / "fused-again.gguf"))
        << "fuse is not deterministic";

    const FusedModel fused = FusedModel::open(dir / "fused.gguf");
    Config expect = c;
    expect.donor_d_in = 0;
    EXPECT_EQ(fused.config(), expect);
    expect_same_heads(ph.views(), fused.views(), !c.has_lens());
    // Head views are zero-copy slices at h * head_nbytes of the fused tensor.
    const std::uint64_t head_nbytes = std::uint64_t{c.d_model} * c.d_head * sizeof(float);
    for (std::uint32_t h = 0; h < c.n_heads; ++h)
        EXPECT_EQ(fused.views().layers[0].q[h].bytes().data(),
                  fused.fused(0, Role::AttnQ).bytes().data() + h * head_nbytes);

    split(fused, dir / "split.gguf");
    const PerHeadModel back = PerHeadModel::open(dir / "split.gguf");
    expect_same_heads(fused.views(), back.views());
    if (!c.has_lens()) expect_same_heads(ph.views(), back.views());

    if (ggml) {
        for (const char* f : {"ph.gguf", "fused.gguf", "split.gguf"})
            EXPECT_TRUE(ggml->read_gguf((dir / f).string()).ok) << "ggml rejected " << f;
    }
}

TEST_P(ShapeTest, InMemoryEngineModelFusesToTheSameFile) {
    const Config& c = GetParam().config;
    TempDir dir;
    const PerHeadModel mem = PerHeadModel::random_init(c, 99);
    mem.save(dir / "ph.gguf");
    std::vector<ExternalTensor> tensors;
    const PerHeadModel file = PerHeadModel::open(dir / "ph.gguf");
    for (const TensorInfo& t : file.file()->tensors())
        tensors.push_back(
            {t.name, static_cast<DType>(t.type), {t.ne.begin(), t.ne.begin() + t.n_dims}, file.file()->tensor_data(t)});
    const PerHeadModel engine = PerHeadModel::from_tensors(c, tensors);
    fuse(engine, dir / "a.gguf");
    fuse(file, dir / "b.gguf");
    EXPECT_EQ(test::read_bytes(dir / "a.gguf"), test::read_bytes(dir / "b.gguf"));
}

INSTANTIATE_TEST_SUITE_P(Families, ShapeTest, ::testing::ValuesIn(test::shape_families()),
                         [](const auto& info) { return info.param.name; });

// Largest difference accepted between the BLAS fold and a plain f64 loop: both sum exact f32 products in
// f64, in different orders, so they differ by a few f64 ulps; after the one rounding to f32 that is at most
// one f32 ulp, and only where the f64 sums straddle an f32 rounding boundary.
constexpr int kFoldMaxUlps = 1;

TEST(Lens, FoldMatchesAPlainF64Loop) {
    const Config c = test::make_config(64, 4, 2, 16, 64, 1, 1500, false, 80);  // 1500: the last fold block is partial
    const PerHeadModel m = PerHeadModel::random_init(c, test::test_seed());
    const TensorView& donor = m.views().token_embd;
    const TensorView& proj = *m.views().lens_proj;
    TempDir dir;
    fuse(m, dir / "fused.gguf");
    const FusedModel f = FusedModel::open(dir / "fused.gguf");
    const float* embd = f.views().token_embd.f32();
    int exact = 0, total = 0;
    for (std::uint64_t v = 0; v < c.vocab; ++v)
        for (std::uint64_t r = 0; r < c.d_model; ++r) {
            double acc = 0;
            for (std::uint64_t k = 0; k < c.donor_d_in; ++k)
                acc += double{donor.f32()[v * c.donor_d_in + k]} * double{proj.f32()[r * c.donor_d_in + k]};
            const float want = static_cast<float>(acc), got = embd[v * c.d_model + r];
            ++total;
            if (want == got) {
                ++exact;
                continue;
            }
            const float next = std::nextafter(want, got);
            ASSERT_EQ(next, got) << "row " << v << " col " << r << " differs by more than " << kFoldMaxUlps << " ulp";
        }
    EXPECT_GT(exact, total * 999 / 1000) << "the fold should match the plain loop almost everywhere";
}

TEST(Lens, TiedOutputIsRefused) {
    const Config c = test::make_config(32, 2, 1, 16, 32, 1, 50, true, 16);
    EXPECT_THROW(PerHeadModel::random_init(c, 1), Error);
}

// A ModelViews copy kept after its model is gone still reads valid bytes: it shares the mapping.
// A ModelViews copied out of a model keeps what the views borrow alive (its `owner`), whichever way the model
// came: a per-head file, a fused file, memory, a mapped safetensors checkpoint, a head edit. Under ASan a copy
// that dangled would be a use after free or unmap.
TEST(Views, ACopyOutlivesItsModel) {
    TempDir dir;
    const Config c = test::make_config(64, 4, 2, 16, 128, 2, 300);
    write_random_init(c, 5, dir / "ph.gguf");
    {
        const PerHeadModel m = PerHeadModel::open(dir / "ph.gguf");
        fuse(m, dir / "fused.gguf");
        export_checkpoint(m, dir / "hf", ExportOptions{});
    }
    // Every view's bytes, copied.
    auto contents = [](const ModelViews& v) {
        std::vector<std::vector<std::byte>> out;
        for_each_view(v, [&](const TensorView& t) { out.emplace_back(t.bytes().begin(), t.bytes().end()); });
        return out;
    };
    const std::vector<HeadRef> heads{{1, 2}};
    using Want = std::vector<std::vector<std::byte>>;
    const std::vector<std::pair<std::string, std::function<ModelViews(Want&)>>> sources = {
        {"per-head file",
         [&](Want& want) {
             const PerHeadModel m = PerHeadModel::open(dir / "ph.gguf");
             want = contents(m.views());
             return m.views();
         }},
        {"fused file",
         [&](Want& want) {
             const FusedModel m = FusedModel::open(dir / "fused.gguf");
             want = contents(m.views());
             return m.views();
         }},
        {"random_init",
         [&](Want& want) {
             const PerHeadModel m = PerHeadModel::random_init(c, 5);
             want = contents(m.views());
             return m.views();
         }},
        {"safetensors",
         [&](Want& want) {
             const OpenedCheckpoint o = open_checkpoint(dir / "hf");
             want = contents(o.model.views());
             return o.model.views();
         }},
        {"head edit",
         [&](Want& want) {
             const PerHeadModel m = ablate_heads(PerHeadModel::open(dir / "ph.gguf"), heads);
             want = contents(m.views());
             return m.views();
         }},
    };
    for (const auto& [name, make] : sources) {
        SCOPED_TRACE(name);
        Want want;
        const ModelViews copy = make(want);  // the model is gone
        ASSERT_TRUE(copy.owner);
        EXPECT_EQ(contents(copy), want);
    }
    // The forward pass over a copy of a file's views.
    const std::vector<std::uint32_t> tokens{1, 2, 3};
    ModelViews copy;
    std::vector<float> want;
    {
        const FusedModel m = FusedModel::open(dir / "fused.gguf");
        copy = m.views();
        want = forward_logits(m.views(), tokens);
    }
    EXPECT_EQ(forward_logits(copy, tokens), want);
}

TEST(RandomInit, AModelLargerThanMemoryIsAHeadfuseError) {
    // 16 layers of three 2^20 x 2^20 matrices: 192 TiB of f32.
    const Config c = test::make_config(1u << 20, 4, 4, 1u << 18, 1u << 20, 16, 1000);
    try {
        PerHeadModel::random_init(c, 1);
        ADD_FAILURE() << "a 192 TiB model was allocated";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("random_init"), std::string::npos) << e.what();
    }
}

TEST(RandomInit, NormalWithStd002AndNormsOne) {
    const Config c = test::make_config(256, 4, 4, 64, 512, 1, 2000);
    const PerHeadModel m = PerHeadModel::random_init(c, test::test_seed());
    const TensorView& e = m.views().token_embd;
    const std::size_t n = e.bytes().size() / 4;
    double s1 = 0, s2 = 0, s4 = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const double x = e.f32()[i];
        s1 += x;
        s2 += x * x;
        s4 += x * x * x * x;
    }
    const double mean = s1 / n, var = s2 / n, kurt = (s4 / n) / (var * var);
    // 512000 draws: the standard error of the mean is 0.02/sqrt(n) = 2.8e-5; of the std about 0.1%;
    // a normal's kurtosis is 3 with a standard error of sqrt(24/n) = 0.007. Bounds are ~5 standard errors.
    EXPECT_NEAR(mean, 0.0, 1.5e-4);
    EXPECT_NEAR(std::sqrt(var), 0.02, 0.02 * 0.005);
    EXPECT_NEAR(kurt, 3.0, 0.035);
    const TensorView& norm = m.views().layers[0].attn_norm;
    for (std::size_t i = 0; i < c.d_model; ++i) EXPECT_EQ(norm.f32()[i], 1.0f);
    const PerHeadModel a = PerHeadModel::random_init(c, 1), b = PerHeadModel::random_init(c, 2);
    EXPECT_NE(std::memcmp(a.views().token_embd.bytes().data(), b.views().token_embd.bytes().data(), 64), 0)
        << "different seeds gave the same weights";
}

TEST(RandomInit, PortableLogIsAccurate) {
    // The initialiser's own logarithm must agree with the C library's to within an ulp or two everywhere
    // Marsaglia's method evaluates it: (0, 1).
    for (double x = 1e-300; x < 1.0; x *= 1.37) {
        const double want = std::log(x), got = portable_log(x);
        EXPECT_LE(std::abs(got - want), 4 * std::abs(std::nextafter(want, 0.0) - want) + 1e-300) << x;
    }
    EXPECT_EQ(portable_log(1.0), 0.0);
}

TEST(Cli, InitFuseSplitVerifyInspect) {
    TempDir dir;
    const auto ph = (dir / "ph.gguf").string(), fz = (dir / "f.gguf").string(), sp = (dir / "s.gguf").string();
    auto r = test::run_cli({"init", "-o", ph, "--d-model", "64", "--n-heads", "4", "--n-kv-heads", "2", "--d-ff", "128",
                            "--n-layers", "2", "--vocab", "300", "--seed", "5", "--quiet"});
    ASSERT_EQ(r.status, 0) << r.err;
    r = test::run_cli({"fuse", ph, "-o", fz, "--type", "q8_0"});
    ASSERT_EQ(r.status, 0) << r.err;
    r = test::run_cli({"verify", ph, fz});
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
    r = test::run_cli({"split", fz, "-o", sp});
    ASSERT_EQ(r.status, 0) << r.err;
    r = test::run_cli({"inspect", sp, "--json"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("blk.1.attn_v.head_1.weight"), std::string::npos);
    EXPECT_NE(r.out.find("\"q8_0\""), std::string::npos);
    r = test::run_cli({"logits", fz, "--tokens", "1,2,3"});
    EXPECT_EQ(r.status, 0) << r.err;
    for (const char* cmd : {"init", "fuse", "split", "inspect", "logits", "verify"}) {
        r = test::run_cli({cmd, "--help"});
        EXPECT_EQ(r.status, 0) << cmd;
        EXPECT_NE(r.out.find("Usage"), std::string::npos) << cmd << ": " << r.out;
    }
    r = test::run_cli({"fuse", ph});
    EXPECT_EQ(r.status, 1);
    r = test::run_cli({"frobnicate"});
    EXPECT_EQ(r.status, 1);
}

TEST(Cli, TokenizerFromAnotherFile) {
    TempDir dir;
    Config c = test::shape_families()[0].config;
    write_random_init(c, 1, dir / "ph.gguf");
    // A donor tokenizer: the fused file of another model with the same vocabulary, its tokens renamed.
    const PerHeadModel ph = PerHeadModel::open(dir / "ph.gguf");
    PerHeadModel with_tok = PerHeadModel::open(dir / "ph.gguf");
    Metadata md;
    std::vector<Value> tokens;
    tokens.push_back(Value::string("<unk>"));
    for (std::uint32_t i = 1; i < c.vocab; ++i)
        tokens.push_back(Value::string(i < 257 ? "<0x" + std::string(1, "0123456789ABCDEF"[(i - 1) >> 4]) +
                                                     std::string(1, "0123456789ABCDEF"[(i - 1) & 15]) + ">"
                                               : "w" + std::to_string(i)));
    md.set("tokenizer.ggml.model", Value::string("llama"));
    md.set("tokenizer.ggml.tokens", Value::array(ValueType::STRING, tokens));
    with_tok.set_metadata(md);
    with_tok.save(dir / "tok-src.gguf");
    auto r = test::run_cli({"fuse", (dir / "ph.gguf").string(), "-o", (dir / "f.gguf").string(), "--tokenizer-from",
                            (dir / "tok-src.gguf").string()});
    ASSERT_EQ(r.status, 0) << r.err;
    const GgufFile f = GgufFile::open(dir / "f.gguf");
    EXPECT_EQ(*f.metadata().find("tokenizer.ggml.tokens"), *md.find("tokenizer.ggml.tokens"));
    // A tokenizer of another size is refused, naming both sizes.
    Config other = c;
    other.vocab = c.vocab + 1;
    write_random_init(other, 1, dir / "other.gguf");
    r = test::run_cli({"fuse", (dir / "other.gguf").string(), "-o", (dir / "g.gguf").string(), "--tokenizer-from",
                       (dir / "tok-src.gguf").string()});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("300 tokens"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir / "g.gguf"));
}

TEST(Encode, RowsThatAreNotWholeBlocksFallBackToF16AndSaySo) {
    const Config c = test::make_config(48, 3, 1, 16, 64, 1, 120);
    TempDir dir;
    write_random_init(c, 3, dir / "ph.gguf");
    FuseOptions opt;
    opt.type = DType::Q8_0;
    std::vector<std::string> warnings;
    opt.warn = [&](const std::string& w) { warnings.push_back(w); };
    fuse(PerHeadModel::open(dir / "ph.gguf"), dir / "f.gguf", opt);
    const GgufFile f = GgufFile::open(dir / "f.gguf");
    for (const TensorInfo& t : f.tensors()) {
        if (t.n_dims == 1) continue;
        const auto want = t.ne[0] % 32 == 0 ? DType::Q8_0 : DType::F16;  // ffn_down's rows are 64 wide
        EXPECT_EQ(t.type, static_cast<std::uint32_t>(want)) << t.name;
    }
    ASSERT_FALSE(warnings.empty());
    EXPECT_NE(warnings[0].find("not whole q8_0 blocks of 32 elements: written as f16"), std::string::npos)
        << warnings[0];
    const auto r =
        test::run_cli({"fuse", (dir / "ph.gguf").string(), "-o", (dir / "g.gguf").string(), "--type", "q4_0"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("(first 'token_embd.weight') have rows that are not whole q4_0 blocks"), std::string::npos)
        << r.err;
}

TEST(Encode, AnEncodedSourceIsNotReencoded) {
    Config c = test::shape_families()[0].config;
    TempDir dir;
    write_random_init(c, 4, dir / "ph.gguf");
    FuseOptions q8;
    q8.type = DType::Q8_0;
    fuse(PerHeadModel::open(dir / "ph.gguf"), dir / "q8.gguf", q8);
    split(FusedModel::open(dir / "q8.gguf"), dir / "q8-ph.gguf");
    // Fusing the Q8_0 checkpoint again as Q8_0 copies its bytes; asking for Q4_0 is refused.
    fuse(PerHeadModel::open(dir / "q8-ph.gguf"), dir / "q8-again.gguf", q8);
    EXPECT_EQ(test::read_bytes(dir / "q8.gguf"), test::read_bytes(dir / "q8-again.gguf"));
    FuseOptions q4;
    q4.type = DType::Q4_0;
    EXPECT_THROW(fuse(PerHeadModel::open(dir / "q8-ph.gguf"), dir / "q4.gguf", q4), Error);
    EXPECT_FALSE(std::filesystem::exists(dir / "q4.gguf"));
}
