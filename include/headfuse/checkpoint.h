// headfuse: checkpoints in other layouts, read as per-head models and written back.
//
// A source is a per-head or fused GGUF file, a .safetensors file, a model.safetensors.index.json, or a folder
// holding config.json and the weights. Safetensors checkpoints come in three layouts, told apart by their
// tensor names (docs/FORMATS.md has every name map):
//  - Hugging Face (model.layers.N.self_attn.q_proj.weight, ...; LLaMA, Mistral, Qwen2, Qwen3), hyperparameters
//    from config.json; for the families with adjacent RoPE pairs (LLaMA, Mistral) Q and K rows are in Hugging
//    Face's rotate-half order, which the views read in llama.cpp's order;
//  - TransformerLens (blocks.N.attn.W_Q [n_heads, d_model, d_head], ...), hyperparameters from the JSON of
//    HookedTransformerConfig; its matrices are stored transposed, read row by row;
//  - headfuse's own names (per-head or fused), hyperparameters from a Hugging Face config.json.
// Nothing is copied: the model's views borrow the mapped files, and each reads its rows in the source's order.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "headfuse/gguf.h"
#include "headfuse/model.h"

namespace headfuse {

// The format a checkpoint was read in (what its tensor names say).
enum class CheckpointFormat {
    Gguf,             // a per-head or fused GGUF file
    PerHeadNames,     // headfuse's names in safetensors (per-head or fused)
    HuggingFace,      // Hugging Face (model.layers.N..., any family of the architecture table)
    TransformerLens,  // a TransformerLens state dict
};

// "GGUF", "headfuse names", "Hugging Face", "TransformerLens": for messages.
std::string_view checkpoint_format_name(CheckpointFormat l) noexcept;

// A checkpoint opened by open_checkpoint: the model (its views borrow the mapped files, which it keeps alive),
// and what a command writing it needs to know.
struct OpenedCheckpoint {
    PerHeadModel model;
    CheckpointFormat format = CheckpointFormat::Gguf;
    std::filesystem::path folder;               // where config.json (and a tokenizer) would be
    std::vector<std::filesystem::path> inputs;  // the files read, which an output must not overwrite
    // One line each on what was read but left out (a Gemma 3 checkpoint's vision tower), for the caller to show.
    std::vector<std::string> notes;
};

// Opens any source as a per-head model. `config` overrides the config.json next to the weights. Error naming the
// file, tensor or key when the source is none of the layouts above or does not match its config.
OpenedCheckpoint open_checkpoint(const std::filesystem::path& source,
                                 const std::optional<std::filesystem::path>& config = std::nullopt);

// The layout export_checkpoint writes.
enum class ExportFormat { HuggingFace, TransformerLens };

struct ExportOptions {
    ExportFormat format = ExportFormat::HuggingFace;
    std::uint64_t max_shard_bytes = 5'000'000'000;  // per safetensors shard; Hugging Face's default
    ProgressFn progress;                            // bytes written, of all
    // A folder that holds anything is refused unless this is set; then the files of the checkpoint there
    // (config.json, generation_config.json, model.safetensors, its shards and index, the tokenizer files) are
    // replaced, those the new one lacks removed, and any other file kept.
    bool replace = false;
    // Every tensor written as this type (F32, F16 or BF16), decoded from whatever type it has (an encoded
    // model's weights: then `warn` says the result carries the quantization error). Unset: tensors keep their
    // type, and an encoded weight is refused.
    std::optional<DType> dtype;
    WarnFn warn;
};

// Writes `model` into `folder` as config.json and model.safetensors (or shards and an index) in the chosen
// layout, undoing every reordering the import applied; tensors keep their F32/F16/BF16 type, or take
// options.dtype. Returns the files written. `inputs` must not be overwritten. The files are published as a
// whole or not at all (a failure or a stop, request_stop in headfuse/file_io.h, publishes none;
// docs/ROBUSTNESS.md). Error (InvalidArgument) if the model has per-layer head counts (deci), which neither
// layout's config can describe.
std::vector<std::filesystem::path> export_checkpoint(const PerHeadModel& model, const std::filesystem::path& folder,
                                                     const ExportOptions& options,
                                                     std::span<const std::filesystem::path> inputs = {});

// Metadata key recording the type a foreign checkpoint kept its norm weights and biases in (llama.cpp wants
// them F32), so that an export writes them back in it: "f16" or "bf16".
inline constexpr std::string_view kNormTypeKey = "headfuse.source.norm_type";
// Metadata key keeping a Hugging Face config's "llama3" rope_scaling object (JSON text), which the GGUF holds
// only as the factors it implies (rope_freqs.weight), so that an export writes the same config back.
inline constexpr std::string_view kRopeScalingKey = "headfuse.source.rope_scaling";

}  // namespace headfuse
