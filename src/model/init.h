// headfuse: the reproducible initialiser (internal; defined in init.cpp). PerHeadModel::random_init and
// write_random_init (headfuse/model.h) draw every tensor with it, so both give the same bytes.
#pragma once

#include <cstdint>

#include "model/roles.h"

namespace headfuse {

// Fills out[0, n) with elements [begin, begin + n) of tensor `s` as random_init makes it: norms 1.0, every
// other tensor N(0, 0.02) from its own seeded streams (random.h).
void fill_random(const TensorSpec& s, std::uint64_t seed, std::uint64_t begin, std::uint64_t n, float* out);

}  // namespace headfuse
