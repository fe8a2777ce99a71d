// libFuzzer target: FusedModel::open on a memory file holding the input, its per-head views, then a small forward pass.
#include <cstddef>
#include <cstdint>

#include "entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    headfuse::fuzz::fused({reinterpret_cast<const std::byte*>(data), size});
    return 0;
}
