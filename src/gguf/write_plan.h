// headfuse: how writers stream tensors (internal). A writer describes every output tensor before a byte is
// written (a TensorPlan: its info, so every size is known and the header goes out first), then calls each
// producer in turn with the sink its bytes go to.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "headfuse/gguf.h"

namespace headfuse {

// Where a tensor's bytes go while it is written. Producers write exactly the tensor's nbytes.
class ByteSink {
public:
    virtual ~ByteSink() = default;
    virtual void write(std::span<const std::byte> bytes) = 0;
    // Copies `len` bytes at `offset` of `file` (read window by window, as they are written).
    virtual void copy_from(const MappedFile& file, std::uint64_t offset, std::uint64_t len) = 0;
};

// One output tensor: its info (offset is computed by the writer) and how its bytes are produced.
struct TensorPlan {
    TensorInfo info;
    std::function<void(ByteSink&)> produce;
};

}  // namespace headfuse
