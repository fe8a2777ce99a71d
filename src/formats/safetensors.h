// safetensors: read by mapping and validating, written by streaming.
//
// File layout:
//
//   u64 N (little-endian)   N bytes of JSON, UTF-8, starting with '{' (writers pad it with spaces)   data buffer
//
//   JSON: { "__metadata__": { str: str, ... },                         (optional)
//           "<tensor name>": { "dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end] }, ... }
//
// Offsets are relative to the data buffer, row-major data, dims outermost first. The reader applies the
// reference implementation's rules and a few more: N at most 100 MB, one JSON object of exactly that shape (no
// other keys, no duplicate names, unsigned integers only, at most 2^18 tensors and 2^18 metadata entries, read as
// it streams in time linear in its length), the byte length of each tensor equal to its element
// count times its dtype size (checked arithmetic), and the tensors tiling the buffer from 0 to its end with no
// gap and no overlap. Every dtype of the format is validated; F32, F16 and BF16 tensors are read, a tensor of
// another dtype is refused by name when it is used (a TransformerLens state dict holds a BOOL mask buffer).
//
// A sharded checkpoint adds model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor: file}},
// every file a plain name in the index's folder; each tensor in exactly the file the map names.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/write_plan.h"
#include "headfuse/gguf.h"
#include "headfuse/types.h"

namespace headfuse {

class OutputSet;

// The reference implementation's cap on the JSON header (safetensors' MAX_HEADER_SIZE).
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;
// Tensor dimensions headfuse reads (its layouts use 1 to 3).
inline constexpr std::size_t kMaxSafetensorsDims = 8;
// Hugging Face's default shard limit (save_pretrained's max_shard_size "5GB").
inline constexpr std::uint64_t kDefaultMaxShardBytes = 5'000'000'000;

inline constexpr std::string_view kSafetensorsIndexName = "model.safetensors.index.json";
inline constexpr std::string_view kSafetensorsSingleName = "model.safetensors";

// "F32", "F16", "BF16" for headfuse's types; Error for a type safetensors readers could not read.
std::string_view safetensors_dtype_name(DType t);

// One tensor of a safetensors file: a view of its bytes in the mapping.
struct StTensor {
    std::string name;
    std::string_view dtype;            // "F32", "BOOL", ...
    std::optional<DType> type;         // F32, F16 or BF16; empty for the dtypes headfuse does not read
    std::vector<std::uint64_t> shape;  // row-major, outermost first
    std::span<const std::byte> bytes;
    const MappedFile* file = nullptr;  // the mapping `bytes` lie in (nullptr after parse())
    std::uint64_t file_offset = 0;     // absolute offset of bytes[0] in the file

    // The type, or Error naming the tensor and its dtype when headfuse does not read it.
    DType readable_type() const;
};

// A parsed, validated safetensors file.
class SafetensorsFile {
public:
    static SafetensorsFile open(const std::filesystem::path& path);
    // Validates bytes held elsewhere (they must outlive the result). `name` prefixes the errors.
    static SafetensorsFile parse(std::span<const std::byte> bytes, std::string name);

    // Tensors in data-offset order.
    const std::vector<StTensor>& tensors() const noexcept { return tensors_; }
    const StTensor* find(std::string_view name) const noexcept;
    const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
    const std::string& name() const noexcept { return name_; }
    const MappedFile* mapping() const noexcept { return file_.get(); }

private:
    std::shared_ptr<MappedFile> file_;
    std::string name_;
    std::vector<StTensor> tensors_;
    std::map<std::string, std::size_t, std::less<>> index_;
    std::map<std::string, std::string> metadata_;
};

// A checkpoint: one safetensors file, or the shards an index lists. Tensors are looked up by name.
class SafetensorsSet {
public:
    // `path`: a .safetensors file, a model.safetensors.index.json, or a folder holding either.
    static SafetensorsSet open(const std::filesystem::path& path);

    const StTensor* find(std::string_view name) const noexcept;
    // Every tensor, file by file, each file's in offset order.
    std::vector<const StTensor*> tensors() const;
    // The folder the checkpoint lives in (for config.json and the tokenizer).
    const std::filesystem::path& folder() const noexcept { return folder_; }
    // The files read (the shards; the index too when there is one), for refusing to overwrite them.
    std::vector<std::filesystem::path> paths() const;
    // "model.safetensors.index.json (3 shards)" or the file's name, for messages.
    const std::string& name() const noexcept { return name_; }

private:
    std::filesystem::path folder_;
    std::filesystem::path index_path_;
    std::string name_;
    std::vector<SafetensorsFile> files_;
    std::map<std::string, const StTensor*, std::less<>> by_name_;
};

// One tensor to write: name, type, row-major shape, and a producer of exactly its bytes.
struct StTensorPlan {
    std::string name;
    DType type = DType::F32;  // F32, F16 or BF16
    std::vector<std::uint64_t> shape;
    std::function<void(ByteSink&)> produce;

    std::uint64_t nbytes() const;
};

struct StWriteOptions {
    // A checkpoint larger than this is written as shards of at most this size (a larger tensor gets one of its
    // own) and an index.
    std::uint64_t max_shard_bytes = kDefaultMaxShardBytes;
    // __metadata__ of every file. Hugging Face's loader wants "format": "pt".
    std::map<std::string, std::string> metadata{{"format", "pt"}};
    ProgressFn progress;
    // The set the files join (staged only: the caller adds its files and publishes it). None: the files are
    // published as a set of their own.
    OutputSet* set = nullptr;
};

// The stem of a checkpoint folder's staging folder (".checkpoint.headfuse-PID.partial", io/output_set.h).
inline constexpr std::string_view kCheckpointStem = "checkpoint";

// Writes `tensors` into `folder` as model.safetensors, or as model-0000i-of-0000n.safetensors plus
// model.safetensors.index.json, published together (io/output_set.h): on error or a stop none is, and a folder
// this call made is removed. Returns the files written (the index last). `inputs` must not be overwritten.
std::vector<std::filesystem::path> write_safetensors(const std::filesystem::path& folder,
                                                     const std::vector<StTensorPlan>& tensors,
                                                     const StWriteOptions& options,
                                                     std::span<const std::filesystem::path> inputs = {});

// One safetensors file at `path` (no sharding).
void write_safetensors_file(const std::filesystem::path& path, const std::vector<StTensorPlan>& tensors,
                            const std::map<std::string, std::string>& metadata,
                            std::span<const std::filesystem::path> inputs = {}, const ProgressFn& progress = {});

}  // namespace headfuse
