// headfuse tests: Hugging Face checkpoints made and judged by the independent numpy reference
// (tests/support/hf_reference.py, run by Debian's python3 with python3-numpy), and safetensors compared.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace headfuse::test {

// Debian's python3 (with python3-numpy) and the reference script.
extern const std::string kPython;
extern const std::string kHfReference;

// Runs `hf_reference.py args...`, failing the test (ASSERT) when it exits non-zero.
void hf_reference(const std::vector<std::string>& args);

// The reference's next-token log-probabilities of the Hugging Face folder `hf` at every position of `tokens`
// ([position][token]). Throws std::runtime_error with the script's stderr when it fails.
std::vector<std::vector<double>> hf_reference_logprobs(const std::filesystem::path& hf,
                                                       const std::vector<std::uint32_t>& tokens);

// max |a[i][t] - b[i][t]|, expecting the same sizes.
double max_diff(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b);

// The two checkpoints (folders, index files or safetensors files) hold the same tensor names, dtypes, shapes and
// bytes (EXPECTs).
void expect_same_tensors(const std::filesystem::path& a, const std::filesystem::path& b);

// "1,2,3".
std::string csv(const std::vector<std::uint32_t>& t);

}  // namespace headfuse::test
