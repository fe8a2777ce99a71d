#include "support/hf_checkpoints.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "formats/safetensors.h"
#include "support/judge.h"
#include "support/models.h"

#ifndef HEADFUSE_SOURCE_DIR
#define HEADFUSE_SOURCE_DIR "/work/main"
#endif

namespace headfuse::test {

const std::string kPython = "/usr/bin/python3";  // Debian's, with python3-numpy
const std::string kHfReference = std::string(HEADFUSE_SOURCE_DIR) + "/tests/support/hf_reference.py";

void hf_reference(const std::vector<std::string>& args) {
    std::vector<std::string> argv{kPython, kHfReference};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = run_program(argv);
    ASSERT_EQ(r.status, 0) << r.err;
}

std::string csv(const std::vector<std::uint32_t>& t) {
    std::string s;
    for (auto x : t) s += (s.empty() ? "" : ",") + std::to_string(x);
    return s;
}

std::vector<std::vector<double>> hf_reference_logprobs(const std::filesystem::path& hf,
                                                       const std::vector<std::uint32_t>& tokens) {
    // Raw float64 (--out): JSON text of every log-probability takes seconds at a vocabulary of 150k tokens.
    const TempDir tmp;
    const std::filesystem::path out = tmp / "logprobs.f64";
    const auto r = run_program({kPython, kHfReference, "logprobs", hf.string(), csv(tokens), "--out", out.string()});
    if (r.status != 0) throw std::runtime_error(r.err);
    const std::vector<double> raw = read_raw_f64(out);
    if (tokens.empty() || raw.size() % tokens.size() != 0)
        throw std::runtime_error("hf_reference.py logprobs wrote " + std::to_string(raw.size()) + " values for " +
                                 std::to_string(tokens.size()) + " positions");
    const std::size_t vocab = raw.size() / tokens.size();
    std::vector<std::vector<double>> rows;
    for (std::size_t p = 0; p < tokens.size(); ++p)
        rows.emplace_back(raw.begin() + static_cast<std::ptrdiff_t>(p * vocab),
                          raw.begin() + static_cast<std::ptrdiff_t>((p + 1) * vocab));
    return rows;
}

double max_diff(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b) {
    double d = 0;
    EXPECT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
        EXPECT_EQ(a[i].size(), b[i].size());
        for (std::size_t t = 0; t < std::min(a[i].size(), b[i].size()); ++t)
            d = std::max(d, std::abs(a[i][t] - b[i][t]));
    }
    return d;
}

void expect_same_tensors(const std::filesystem::path& a, const std::filesystem::path& b) {
    const SafetensorsSet x = SafetensorsSet::open(a), y = SafetensorsSet::open(b);
    EXPECT_EQ(x.tensors().size(), y.tensors().size());
    for (const StTensor* t : x.tensors()) {
        const StTensor* u = y.find(t->name);
        ASSERT_NE(u, nullptr) << t->name << " missing from " << b;
        EXPECT_EQ(t->dtype, u->dtype) << t->name;
        EXPECT_EQ(t->shape, u->shape) << t->name;
        EXPECT_TRUE(std::equal(t->bytes.begin(), t->bytes.end(), u->bytes.begin(), u->bytes.end()))
            << t->name << " differs";
    }
}

}  // namespace headfuse::test
