// libFuzzer target: SafetensorsFile::parse on the input bytes.
#include <cstddef>
#include <cstdint>

#include "entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    headfuse::fuzz::safetensors({reinterpret_cast<const std::byte*>(data), size});
    return 0;
}
