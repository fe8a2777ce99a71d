// headfuse: per-head -> fused (fuse) and fused -> per-head (split), streamed and published atomically.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "headfuse/gguf.h"
#include "headfuse/model.h"
#include "headfuse/types.h"
#include "headfuse/vocab.h"

namespace headfuse {

struct FuseOptions {
    // Type of every 2-D weight (1-D norms stay F32). Unset: each tensor keeps its type. Encoding starts from
    // F32 weights only; a 2-D weight whose rows are not whole blocks of the type is written as F16 (as
    // llama.cpp's converter does) and reported through `warn`.
    std::optional<DType> type;
    unsigned threads = 0;  // encoding threads; 0 means all cores
    // The tokenizer to write (see read_tokenizer); unset: the model's own, else a default SentencePiece one.
    // Its token count must be the model's vocabulary.
    const Tokenizer* tokenizer = nullptr;
    ProgressFn progress;
    std::function<void(const std::string&)> warn;
};

// Writes the fused llama.cpp GGUF of `model` to `out`. The same input always gives the same bytes.
void fuse(const PerHeadModel& model, const std::filesystem::path& out, const FuseOptions& options = {});

struct SplitOptions {
    ProgressFn progress;
};

// Writes the per-head checkpoint of a fused model to `out`; tensors keep their type.
void split(const FusedModel& model, const std::filesystem::path& out, const SplitOptions& options = {});

}  // namespace headfuse
