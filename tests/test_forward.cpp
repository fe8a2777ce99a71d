// Tests of the reference forward pass: against a plain f64 implementation written here, over attention
// shapes (MHA, GQA, MQA, d_head != d_model/n_heads, tied and untied, a lens), and for the properties the rest
// of headfuse leans on: bit-identical logits for any thread count, for fused and separate head buffers, for
// a lens and its folded table, and for an encoded weight type and its decoded f32 twin.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "headfuse/error.h"
#include "headfuse/fold.h"
#include "headfuse/forward.h"
#include "headfuse/quantize.h"
#include "support/models.h"

using namespace headfuse;
using headfuse::test::make_config;
using headfuse::test::Shape;

namespace {

// splitmix64: a tiny seeded generator, so every model here is reproducible from its seed.
struct Rng {
    std::uint64_t state;
    std::uint64_t next() {
        std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    float uniform(float a) { return a * (2.0f * float(next() >> 40) / float(1ull << 24) - 1.0f); }  // [-a, a)
};

// A model built by hand: byte buffers it owns, and the views into them the forward pass reads.
struct TestModel {
    std::vector<std::vector<std::byte>> storage;  // moving the outer vector keeps every buffer in place
    ModelViews views;

    TensorView add(std::string name, DType type, std::vector<std::uint64_t> ne, std::vector<std::byte> bytes) {
        storage.push_back(std::move(bytes));
        return TensorView::of(std::move(name), type, ne, storage.back());
    }
    TensorView add_f32(std::string name, std::vector<std::uint64_t> ne, const std::vector<float>& data) {
        std::vector<std::byte> bytes(data.size() * sizeof(float));
        std::memcpy(bytes.data(), data.data(), bytes.size());
        return add(std::move(name), DType::F32, std::move(ne), std::move(bytes));
    }
};

std::vector<float> random_vector(Rng& rng, std::size_t n, float a, float center = 0.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = center + rng.uniform(a);
    return v;
}

// Every weight uniform with a scale 1/sqrt(n_in) (so activations stay of order 1), norms near 1.
TestModel random_model(const Config& c, std::uint64_t seed) {
    Rng rng{seed};
    TestModel m;
    m.views.config = c;
    auto matrix = [&](std::string name, std::uint64_t n_in, std::uint64_t n_out) {
        return m.add_f32(std::move(name), {n_in, n_out},
                         random_vector(rng, n_in * n_out, 1.0f / std::sqrt(float(n_in))));
    };
    auto norm = [&](std::string name) {
        return m.add_f32(std::move(name), {c.d_model}, random_vector(rng, c.d_model, 0.2f, 1.0f));
    };

    const std::uint64_t embd_in = c.has_lens() ? c.donor_d_in : c.d_model;
    m.views.token_embd =
        m.add_f32("token_embd.weight", {embd_in, c.vocab}, random_vector(rng, embd_in * c.vocab, 1.0f));
    if (c.has_lens()) m.views.lens_proj = matrix("lens.proj.weight", c.donor_d_in, c.d_model);
    m.views.output_norm = norm("output_norm.weight");
    if (!c.tied) m.views.output = matrix("output.weight", c.d_model, c.vocab);
    for (std::uint32_t il = 0; il < c.n_layers; ++il) {
        LayerViews l;
        l.attn_norm = norm("attn_norm");
        for (std::uint32_t h = 0; h < c.n_heads; ++h)
            l.q.push_back(matrix("q" + std::to_string(h), c.d_model, c.d_head));
        for (std::uint32_t g = 0; g < c.n_kv_heads; ++g)
            l.k.push_back(matrix("k" + std::to_string(g), c.d_model, c.d_head));
        for (std::uint32_t g = 0; g < c.n_kv_heads; ++g)
            l.v.push_back(matrix("v" + std::to_string(g), c.d_model, c.d_head));
        l.attn_output = matrix("attn_output", c.q_dim(), c.d_model);
        l.ffn_norm = norm("ffn_norm");
        l.ffn_gate = matrix("ffn_gate", c.d_model, c.d_ff);
        l.ffn_up = matrix("ffn_up", c.d_model, c.d_ff);
        l.ffn_down = matrix("ffn_down", c.d_ff, c.d_model);
        m.views.layers.push_back(std::move(l));
    }
    return m;
}

std::vector<std::uint32_t> random_tokens(std::uint64_t seed, std::size_t n, std::uint32_t vocab) {
    Rng rng{seed};
    std::vector<std::uint32_t> t(n);
    for (auto& x : t) x = std::uint32_t(rng.next() % vocab);
    return t;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ----------------------------------------------------------------------------------------------------------
// The oracle: the llama graph written out plainly in f64, from the formulas rather than from forward.cpp.
// F32 views only.

using Vec = std::vector<double>;

// y = W x for W stored [n_in, n_out] (row o is W[o*n_in .. o*n_in + n_in)).
Vec mul(const TensorView& w, const Vec& x) {
    const std::uint64_t n_in = w.ne()[0], n_out = w.n_rows();
    Vec y(n_out, 0.0);
    for (std::uint64_t o = 0; o < n_out; ++o)
        for (std::uint64_t i = 0; i < n_in; ++i) y[o] += double(w.f32()[o * n_in + i]) * x[i];
    return y;
}

Vec rmsnorm(const Vec& x, const TensorView& w, double eps) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double scale = 1.0 / std::sqrt(ss / double(x.size()) + eps);
    Vec y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * double(w.f32()[i]);
    return y;
}

void rope(double* x, std::size_t pos, std::uint32_t d_head, double base) {
    for (std::uint32_t i = 0; i < d_head / 2; ++i) {
        const double theta = double(pos) * std::pow(base, -2.0 * i / d_head);
        const double x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = x0 * std::cos(theta) - x1 * std::sin(theta);
        x[2 * i + 1] = x0 * std::sin(theta) + x1 * std::cos(theta);
    }
}

std::vector<double> reference_logits(const ModelViews& m, const std::vector<std::uint32_t>& tokens) {
    const Config& c = m.config;
    const std::size_t n = tokens.size();
    const std::uint32_t dh = c.d_head;
    std::vector<Vec> x(n);
    for (std::size_t t = 0; t < n; ++t) {
        x[t].assign(c.d_model, 0.0);
        for (std::uint32_t r = 0; r < c.d_model; ++r) {
            if (!m.lens_proj) {
                x[t][r] = m.token_embd.f32()[tokens[t] * std::uint64_t{c.d_model} + r];
                continue;
            }
            for (std::uint32_t k = 0; k < c.donor_d_in; ++k)  // E = D · Pᵀ
                x[t][r] += double(m.token_embd.f32()[tokens[t] * std::uint64_t{c.donor_d_in} + k]) *
                           double(m.lens_proj->f32()[r * std::uint64_t{c.donor_d_in} + k]);
        }
    }
    for (const LayerViews& l : m.layers) {
        std::vector<Vec> q(n), k(n), v(n);
        for (std::size_t t = 0; t < n; ++t) {
            const Vec xn = rmsnorm(x[t], l.attn_norm, c.rms_eps);
            for (const TensorView& w : l.q) {
                Vec h = mul(w, xn);
                rope(h.data(), t, dh, c.rope_theta);
                q[t].insert(q[t].end(), h.begin(), h.end());
            }
            for (const TensorView& w : l.k) {
                Vec h = mul(w, xn);
                rope(h.data(), t, dh, c.rope_theta);
                k[t].insert(k[t].end(), h.begin(), h.end());
            }
            for (const TensorView& w : l.v) {
                Vec h = mul(w, xn);
                v[t].insert(v[t].end(), h.begin(), h.end());
            }
        }
        for (std::size_t t = 0; t < n; ++t) {
            Vec att(c.q_dim(), 0.0);
            for (std::uint32_t h = 0; h < c.n_heads; ++h) {
                const std::uint32_t g = h / (c.n_heads / c.n_kv_heads);
                Vec s(t + 1);
                double max = -INFINITY, sum = 0;
                for (std::size_t j = 0; j <= t; ++j) {
                    s[j] = 0;
                    for (std::uint32_t d = 0; d < dh; ++d) s[j] += q[t][h * dh + d] * k[j][g * dh + d];
                    s[j] /= std::sqrt(double(dh));
                    max = std::max(max, s[j]);
                }
                for (double& e : s) sum += (e = std::exp(e - max));
                for (std::size_t j = 0; j <= t; ++j)
                    for (std::uint32_t d = 0; d < dh; ++d) att[h * dh + d] += s[j] / sum * v[j][g * dh + d];
            }
            const Vec o = mul(l.attn_output, att);
            for (std::uint32_t i = 0; i < c.d_model; ++i) x[t][i] += o[i];
            const Vec xn = rmsnorm(x[t], l.ffn_norm, c.rms_eps);
            Vec a = mul(l.ffn_gate, xn);
            const Vec u = mul(l.ffn_up, xn);
            for (std::uint32_t i = 0; i < c.d_ff; ++i) a[i] = a[i] / (1.0 + std::exp(-a[i])) * u[i];
            const Vec down = mul(l.ffn_down, a);
            for (std::uint32_t i = 0; i < c.d_model; ++i) x[t][i] += down[i];
        }
    }
    std::vector<double> logits;
    for (std::size_t t = 0; t < n; ++t) {
        const Vec y = mul(m.output ? *m.output : m.token_embd, rmsnorm(x[t], m.output_norm, c.rms_eps));
        logits.insert(logits.end(), y.begin(), y.end());
    }
    return logits;
}

// f32 activations against f64 ones. Every f32 op rounds at 6e-8 relative and a logit is the end of a few
// dozen of them per layer (sums of 16..128 terms, softmax, rsqrt) on values of order 1, so the error is a
// small multiple of 1e-7; the tied models' logits reach ~20 and carry their input's error further. Measured
// over 40 seeds and 16 tokens, the worst |got - want| / (1 + |want|) is 1.8e-7 untied and 1.3e-6 tied:
// 1e-5 leaves a margin of 8x and more, and is far below what a wrong head order, rope pairing or GQA grouping
// does (errors of order 0.1 to 1).
constexpr double kOracleTolerance = 1e-5;

void expect_near_oracle(const ModelViews& m, const std::vector<std::uint32_t>& tokens) {
    const std::vector<float> got = forward_logits(m, tokens, 2);
    const std::vector<double> want = reference_logits(m, tokens);
    ASSERT_EQ(got.size(), want.size());
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
        worst = std::max(worst, std::abs(double(got[i]) - want[i]) / (1.0 + std::abs(want[i])));
    EXPECT_LE(worst, kOracleTolerance);
}

class ForwardShapes : public testing::TestWithParam<Shape> {};

TEST_P(ForwardShapes, MatchesF64Oracle) {
    const Config& c = GetParam().config;
    TestModel m = random_model(c, 42);
    expect_near_oracle(m.views, random_tokens(7, 12, c.vocab));
}

TEST_P(ForwardShapes, BitIdenticalForAnyThreadCount) {
    const Config& c = GetParam().config;
    TestModel m = random_model(c, 43);
    const auto tokens = random_tokens(8, 9, c.vocab);
    const std::vector<float> one = forward_logits(m.views, tokens, 1);
    EXPECT_TRUE(bit_identical(one, forward_logits(m.views, tokens, 2)));
    EXPECT_TRUE(bit_identical(one, forward_logits(m.views, tokens, 3)));
    EXPECT_TRUE(bit_identical(one, forward_logits(m.views, tokens, 0)));
}

// Position t sees tokens 0..t only: a prefix gives the same logits, to the bit, as the rows of the whole.
TEST_P(ForwardShapes, CausalPrefixIsBitIdentical) {
    const Config& c = GetParam().config;
    TestModel m = random_model(c, 44);
    const auto tokens = random_tokens(9, 10, c.vocab);
    const std::vector<float> all = forward_logits(m.views, tokens, 2);
    const std::vector<float> prefix = forward_logits(m.views, std::span(tokens).first(4), 2);
    EXPECT_TRUE(bit_identical(prefix, std::vector<float>(all.begin(), all.begin() + 4 * c.vocab)));
}

INSTANTIATE_TEST_SUITE_P(Attention, ForwardShapes,
                         testing::Values(Shape{"mha", make_config(64, 4, 4, 16, 96, 2, 101)},
                                         Shape{"gqa", make_config(64, 4, 2, 16, 96, 2, 101)},
                                         Shape{"mqa", make_config(64, 4, 1, 16, 96, 2, 101)},
                                         Shape{"wide_heads",
                                               make_config(48, 4, 2, 24, 80, 2, 101)},  // q_dim 96 != d_model 48
                                         Shape{"tied", make_config(64, 4, 2, 16, 96, 2, 101, true)},
                                         Shape{"one_layer_odd_sizes", make_config(40, 3, 3, 10, 70, 1, 37)}),
                         [](const testing::TestParamInfo<Shape>& p) { return std::string(p.param.name); });

// ----------------------------------------------------------------------------------------------------------

// Heads handed out as row slices of one fused [d_model, n*d_head] buffer (what FusedModel does) give the same
// logits as heads in buffers of their own.
TEST(Forward, FusedHeadSlicesMatchSeparateBuffers) {
    const Config c = make_config(64, 4, 2, 16, 96, 2, 101);
    TestModel separate = random_model(c, 45);
    TestModel fused;
    fused.views = separate.views;
    for (LayerViews& l : fused.views.layers) {
        for (auto* heads : {&l.q, &l.k, &l.v}) {
            std::vector<std::byte> bytes;
            for (const TensorView& h : *heads) bytes.insert(bytes.end(), h.bytes().begin(), h.bytes().end());
            const auto n = std::uint64_t(heads->size());
            const TensorView whole = fused.add("fused", DType::F32, {c.d_model, n * c.d_head}, std::move(bytes));
            for (std::uint64_t h = 0; h < n; ++h) (*heads)[h] = whole.rows(h * c.d_head, c.d_head, "head");
        }
    }
    ASSERT_NE(fused.views.layers[0].q[1].bytes().data(), separate.views.layers[0].q[1].bytes().data());
    const auto tokens = random_tokens(10, 11, c.vocab);
    EXPECT_TRUE(bit_identical(forward_logits(separate.views, tokens), forward_logits(fused.views, tokens)));
}

// A lens model (donor [donor_d_in, vocab] and proj) equals, bit for bit, the untied model whose token_embd
// is the folded table, folded block by block as fuse folds it. Vocab 1100 spans three fold blocks, the last
// partial.
TEST(Forward, LensMatchesFoldedTable) {
    Config c = make_config(32, 2, 1, 16, 48, 1, 1100);
    c.donor_d_in = 24;
    TestModel lens = random_model(c, 46);
    const std::vector<std::uint32_t> tokens{0, 511, 512, 1099, 700, 1024, 3, 1098};
    expect_near_oracle(lens.views, tokens);

    TestModel folded;
    folded.views = lens.views;
    folded.views.config.donor_d_in = 0;
    folded.views.lens_proj.reset();
    std::vector<float> table(std::uint64_t{c.vocab} * c.d_model);
    LensFold fold(lens.views.token_embd, *lens.views.lens_proj);
    for (std::uint64_t v0 = 0; v0 < c.vocab; v0 += kFoldBlockRows)
        fold.rows(v0, std::min<std::uint64_t>(kFoldBlockRows, c.vocab - v0), table.data() + v0 * c.d_model);
    folded.views.token_embd = folded.add_f32("token_embd.weight", {c.d_model, c.vocab}, table);
    EXPECT_TRUE(bit_identical(forward_logits(lens.views, tokens), forward_logits(folded.views, tokens)));
}

// An encoded weight type is decoded row by row and then used as f32: its logits equal, bit for bit, those of
// the f32 model holding the decoded weights. Sizes are multiples of 32 for the block types.
class ForwardTypes : public testing::TestWithParam<DType> {};

TEST_P(ForwardTypes, EncodedWeightsMatchTheirDecodedTwin) {
    const DType type = GetParam();
    const Config c = make_config(64, 4, 2, 32, 96, 2, 67);
    const TestModel f32 = random_model(c, 47);
    TestModel encoded, decoded;
    encoded.views = decoded.views = f32.views;
    auto convert = [&](TensorView& enc, TensorView& dec) {
        const std::uint64_t n_in = enc.ne()[0], n_out = enc.n_rows(), rb = row_bytes(type, n_in);
        std::vector<std::byte> bytes(rb * n_out);
        std::vector<float> back(n_in * n_out);
        for (std::uint64_t r = 0; r < n_out; ++r) {
            encode_row(type, enc.f32() + r * n_in, bytes.data() + r * rb, n_in);
            decode_row(type, bytes.data() + r * rb, back.data() + r * n_in, n_in);
        }
        dec = decoded.add_f32(dec.name(), {n_in, n_out}, back);
        enc = encoded.add(enc.name(), type, {n_in, n_out}, std::move(bytes));
    };
    convert(encoded.views.token_embd, decoded.views.token_embd);
    convert(*encoded.views.output, *decoded.views.output);
    for (std::size_t il = 0; il < c.n_layers; ++il) {
        LayerViews &e = encoded.views.layers[il], &d = decoded.views.layers[il];
        for (std::size_t h = 0; h < c.n_heads; ++h) convert(e.q[h], d.q[h]);
        for (std::size_t g = 0; g < c.n_kv_heads; ++g) convert(e.k[g], d.k[g]), convert(e.v[g], d.v[g]);
        convert(e.attn_output, d.attn_output);
        convert(e.ffn_gate, d.ffn_gate);
        convert(e.ffn_up, d.ffn_up);
        convert(e.ffn_down, d.ffn_down);
    }
    const auto tokens = random_tokens(11, 8, c.vocab);
    const std::vector<float> got = forward_logits(encoded.views, tokens);
    EXPECT_TRUE(bit_identical(got, forward_logits(decoded.views, tokens)));
    for (float x : got) ASSERT_TRUE(std::isfinite(x));
}

INSTANTIATE_TEST_SUITE_P(Types, ForwardTypes, testing::Values(DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0),
                         [](const testing::TestParamInfo<DType>& p) { return std::string(type_name(p.param)); });

// ----------------------------------------------------------------------------------------------------------

TEST(Forward, OutOfRangeTokenIsAnError) {
    const Config c = make_config(32, 2, 2, 16, 48, 1, 50);
    TestModel m = random_model(c, 48);
    for (std::uint32_t bad : {50u, 0xffffffffu}) {
        const std::vector<std::uint32_t> tokens{1, 2, bad};
        try {
            forward_logits(m.views, tokens);
            ADD_FAILURE() << "token " << bad << " was accepted";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("token " + std::to_string(bad)), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("vocab 50"), std::string::npos) << e.what();
        }
    }
}

TEST(Forward, WrongShapeIsAnError) {
    const Config c = make_config(32, 2, 2, 16, 48, 1, 50);
    TestModel m = random_model(c, 49);
    m.views.layers[0].ffn_up = m.views.layers[0].ffn_up.rows(0, 47, "blk.0.ffn_up.weight");  // [32, 47]
    try {
        forward_logits(m.views, std::vector<std::uint32_t>{1});
        ADD_FAILURE() << "a wrong shape was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("ffn_up"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("[32, 48]"), std::string::npos) << e.what();
    }
}

// A view's type, shape and bytes agree wherever it is made: TensorView::of and rows() refuse what does not, by name.
TEST(TensorViewInvariants, OfAndRowsRefuseInconsistentViews) {
    const std::vector<std::byte> bytes(4 * 34);  // four Q8_0 blocks
    const std::vector<std::uint64_t> ne{64, 2};
    const TensorView q = TensorView::of("w", DType::Q8_0, ne, bytes);
    EXPECT_EQ(q.n_rows(), 2u);
    EXPECT_EQ(q.row_nbytes(), 68u);
    EXPECT_TRUE(q.plain());
    auto refused = [](const std::function<void()>& f, const std::string& says) {
        try {
            f();
            ADD_FAILURE() << "accepted: " << says;
        } catch (const Error& e) {
            EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument);
            EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
        }
    };
    refused([&] { TensorView::of("w", DType::Q8_0, ne, std::span(bytes).first(135)); }, "tensor 'w': 135 bytes");
    refused([&] { TensorView::of("w", DType::Q8_0, std::vector<std::uint64_t>{48, 2}, bytes); }, "block size 32");
    refused([&] { TensorView::of("w", DType::F32, std::vector<std::uint64_t>{}, bytes); }, "0 dimensions");
    refused([&] { TensorView::of("w", static_cast<DType>(200), ne, bytes); }, "type id 200");
    refused([&] { (void)q.rows(1, 2, "x"); }, "rows 1 to 3 of 2");
}

// A lens folds into token_embd, which a tied output would then have to be: refused.
TEST(Forward, TiedLensIsAnError) {
    Config c = make_config(32, 2, 2, 16, 48, 1, 50);
    c.donor_d_in = 24;
    TestModel m = random_model(c, 51);
    m.views.config.tied = true;
    m.views.output.reset();
    EXPECT_THROW(forward_logits(m.views, std::vector<std::uint32_t>{1}), Error);
}

TEST(Forward, NoTokensNoLogits) {
    TestModel m = random_model(make_config(32, 2, 2, 16, 48, 1, 50), 50);
    EXPECT_TRUE(forward_logits(m.views, std::vector<std::uint32_t>{}).empty());
}

}  // namespace
