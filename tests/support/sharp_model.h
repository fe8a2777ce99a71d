// A random model whose attention is sharp and whose heads matter, for tests of what the forward pass computes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "headfuse/config.h"
#include "headfuse/model.h"

namespace headfuse::test {

// One tensor's name, shape and f32 values.
struct SharpTensor {
    std::string name;
    std::vector<std::uint64_t> ne;
    std::vector<float> values;
};

// Every tensor of the per-head layout of `c`: weights uniform in +-2/sqrt(n_in) (the N(0, 0.02) of `init` leaves
// attention almost uniform, and the positions almost invisible), norms 1, biases uniform in +-0.5, embeddings
// uniform in +-1, rope_freqs a ramp of divisors from 0.25 (the fastest pair) to 8 (the slowest), LongRoPE's
// rope_factors_long from 1 to 16 and rope_factors_short from 0.5 to 2. With
// `norm_spread` > 0 the norms are 1 plus uniform in +-norm_spread instead.
std::vector<SharpTensor> sharp_tensors(const Config& c, std::uint64_t seed, float norm_spread = 0.0f);

// The model of those tensors, borrowing their values (keep `tensors` alive while the model is used).
PerHeadModel sharp_model(const Config& c, const std::vector<SharpTensor>& tensors);

}  // namespace headfuse::test
