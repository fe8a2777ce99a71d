// headfuse: per-head -> fused (fuse) and fused -> per-head (split), streamed and published atomically.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "headfuse/gguf.h"
#include "headfuse/model.h"
#include "headfuse/types.h"

namespace headfuse {

struct FuseOptions {
    // Type of every 2-D weight (1-D norms stay F32). Unset: each tensor keeps its type. Encoding starts from
    // F32 weights only; a 2-D weight whose rows are not whole blocks of the type is written as F16 (as
    // llama.cpp's converter does) and reported through `warn`.
    std::optional<DType> type;
    unsigned threads = 0;                      // encoding threads; 0 means all cores
    const GgufFile* tokenizer_from = nullptr;  // carry this file's tokenizer.* keys over
    SplitLimits split;  // when active, write a split set (llama-gguf-split's layout) named after `out`
    ProgressFn progress;
    std::function<void(const std::string&)> warn;
};

// Writes the fused llama.cpp GGUF of `model` to `out`. The same input always gives the same bytes. A model read
// from a file keeps its keys in their order and its tensor order (a fused tensor where its first head was), so
// fuse(split(x)) gives back x's metadata and tensors. Returns the files written (one, or the shards).
std::vector<std::filesystem::path> fuse(const PerHeadModel& model, const std::filesystem::path& out,
                                        const FuseOptions& options = {});

struct SplitOptions {
    ProgressFn progress;
    SplitLimits split;  // when active, write a split set named after `out`
};

// Writes the per-head checkpoint of a fused model to `out`; tensors keep their type, bytes and order (head
// tensors where their fused tensor was), and the metadata its keys. Returns the files written.
std::vector<std::filesystem::path> split(const FusedModel& model, const std::filesystem::path& out,
                                         const SplitOptions& options = {});

}  // namespace headfuse
