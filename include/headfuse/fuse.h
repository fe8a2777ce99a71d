// headfuse: per-head -> fused (fuse) and fused -> per-head (split), streamed and published atomically.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "headfuse/gguf.h"
#include "headfuse/mix.h"
#include "headfuse/model.h"
#include "headfuse/types.h"
#include "headfuse/vocab.h"

namespace headfuse {

struct FuseOptions {
    // Type of every 2-D weight (1-D norms stay F32). Unset: each tensor keeps its type. Encoding starts from
    // F32, F16 or BF16 weights (widened exactly to F32 first); a 2-D weight whose rows are not whole blocks of
    // the type falls back as llama.cpp's quantizer does (a K-quant to a 32-wide type, else F16; see mix.h)
    // and is reported through `warn`.
    std::optional<DType> type;
    // llama.cpp's K-quant mix instead of one type: each tensor's type as llama_tensor_get_type chooses it.
    std::optional<Mix> mix;
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
