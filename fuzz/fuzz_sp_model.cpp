// libFuzzer target: a SentencePiece tokenizer.model (the bounded protobuf reader, then the conversion) on the
// input bytes.
#include <cstddef>
#include <cstdint>

#include "entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    headfuse::fuzz::sp_model({reinterpret_cast<const std::byte*>(data), size});
    return 0;
}
