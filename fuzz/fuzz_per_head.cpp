// libFuzzer target: PerHeadModel::open on a memory file holding the input, then a small forward pass.
#include <cstddef>
#include <cstdint>

#include "entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    headfuse::fuzz::per_head({reinterpret_cast<const std::byte*>(data), size});
    return 0;
}
