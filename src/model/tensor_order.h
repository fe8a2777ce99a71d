// The order of a model file's tensors, kept through fuse and split: fuse(split(x)) lists x's tensors in x's order.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace headfuse {

class GgufFile;

// The tensor a per-head tensor is part of in a fused file ("blk.3.attn_q.head_5.weight" -> "blk.3.attn_q.weight",
// the lens projection -> "token_embd.weight"); any other name is its own.
std::string fused_name(std::string_view name);

// The order in which to write tensors called `names` (a layout, in its own order) so that they follow the
// order of `source`'s tensors: a per-head tensor and its fused tensor share a place, the heads of one tensor
// keep their layout order, and names `source` does not hold (or no source) come after, in layout order.
// Returns indices into `names`.
std::vector<std::size_t> source_order(const GgufFile* source, const std::vector<std::string>& names);

}  // namespace headfuse
