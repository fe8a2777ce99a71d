// libFuzzer target: tokenizers (a GGUF file's keys checked, or a tokenizer.json converted) on the input bytes.
#include <cstddef>
#include <cstdint>

#include "entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    headfuse::fuzz::tokenizer({reinterpret_cast<const std::byte*>(data), size});
    return 0;
}
