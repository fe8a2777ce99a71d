// headfuse: per-head -> fused (fuse) and fused -> per-head (split), streamed and published atomically.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "headfuse/gguf.h"
#include "headfuse/mix.h"
#include "headfuse/model.h"
#include "headfuse/types.h"
#include "headfuse/vocab.h"

namespace headfuse {

// How fuse writes its output; the defaults write every tensor in its own type, as one file.
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
    OutputOptions output;  // alignment, and a split set (llama-gguf-split's layout) named after `out` when asked
    std::vector<std::filesystem::path> inputs;  // more files the output must not overwrite (a checkpoint's)
    ProgressFn progress;
    WarnFn warn;
};

// Writes the fused llama.cpp GGUF of `model` to `out`. The same input always gives the same bytes. A model read
// from a file keeps its keys in their order and its tensor order (a fused tensor where its first head was), so
// fuse(split(x)) gives back x's metadata and tensors. Returns the files written (one, or the shards).
std::vector<std::filesystem::path> fuse(const PerHeadModel& model, const std::filesystem::path& out,
                                        const FuseOptions& options = {});

// How split writes its output.
struct SplitOptions {
    ProgressFn progress;
    OutputOptions output;  // alignment, and a split set named after `out` when asked
};

// Writes the per-head checkpoint of a fused model to `out`; tensors keep their type, bytes and order (head
// tensors where their fused tensor was), and the metadata its keys. Returns the files written.
std::vector<std::filesystem::path> split(const FusedModel& model, const std::filesystem::path& out,
                                         const SplitOptions& options = {});

}  // namespace headfuse
