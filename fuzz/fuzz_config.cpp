// libFuzzer target: Config::from_metadata and validate on the metadata of the input parsed as GGUF.
#include <cstddef>
#include <cstdint>

#include "entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    headfuse::fuzz::config({reinterpret_cast<const std::byte*>(data), size});
    return 0;
}
