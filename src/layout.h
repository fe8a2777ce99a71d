// The two tensor layouts as data: one list of names and shapes per model kind, read by init, open, save,
// fuse, split and realize alike.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "headfuse/config.h"

namespace headfuse {

// Tensor data alignment of every model file headfuse writes. A page: tensors of a per-head file and of its
// fused file then start at the same offset within a page, so the kernel copies them page by page
// (copy_file_range on unaligned ranges costs half as much again), and llama.cpp maps page-aligned tensors.
inline constexpr std::uint32_t kModelAlignment = 4096;

enum class TensorKind {
    Norm,    // 1-D, always F32, initialised to 1.0
    Weight,  // 2-D, any model type, initialised from N(0, 0.02)
    Donor,   // the donor embedding of a lens model: 2-D F32
    Lens,    // lens.proj: 2-D F32
};

struct TensorSpec {
    std::string name;
    std::vector<std::uint64_t> ne;
    TensorKind kind;
};

// Per-head checkpoint tensors, in file order.
std::vector<TensorSpec> per_head_layout(const Config& c);
// Fused llama.cpp tensors, in file order.
std::vector<TensorSpec> fused_layout(const Config& c);

// Checks a file's tensors against a layout: every tensor present, with its shape and a type its kind allows,
// and no other tensor. Returns the views in layout order. `what` ("per-head checkpoint") words the errors.
class GgufFile;
struct TensorView;
std::vector<TensorView> check_tensors(const GgufFile& file, const std::vector<TensorSpec>& layout,
                                      std::string_view what);

}  // namespace headfuse

namespace headfuse {

// Fills out[0, n) with elements [begin, begin + n) of tensor `s` as random_init makes it: norms 1.0, every
// other tensor N(0, 0.02) from its own seeded streams (random.h).
void fill_random(const TensorSpec& s, std::uint64_t seed, std::uint64_t begin, std::uint64_t n, float* out);

// The metadata of a model file written from a model whose metadata is `carried`: from a file, its keys in
// their order with the llama.* hyperparameters of c set in place (added only when llama.cpp would not infer
// them); from memory, the hyperparameters, then the carried keys.
class Metadata;
Metadata per_head_metadata(const Config& c, const Metadata& carried);

}  // namespace headfuse
