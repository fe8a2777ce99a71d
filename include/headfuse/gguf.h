// headfuse: GGUF v3, read by mapping and validating, written by streaming (the writer is internal: fuse, split,
// PerHeadModel::save and write_random_init write through it).
//
// File layout (all integers little-endian):
//
//   "GGUF"  u32 version (3)  u64 n_tensors  u64 n_kv
//   n_kv x      { string key, u32 value_type, value }
//   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   zero padding to general.alignment (u32, a power of two, default 32)
//   data section: tensor i at data_start + offset_i, each padded with zeros to the alignment
//
//   string = u64 length + bytes (UTF-8, no NUL)
//   value types: u8 0, i8 1, u16 2, i16 3, u32 4, i32 5, f32 6, bool 7, string 8,
//                array 9 (u32 element type, u64 count, elements; no nested arrays), u64 10, i64 11, f64 12
//
// The reader applies ggml's own rules (ggml/src/gguf.cpp), which are stricter than the specification:
// offsets contiguous in tensor-info order, names shorter than 64 bytes, n_dims <= 4, ne[0] a whole number of
// blocks, no duplicate keys or names. The writer checks what it writes against the same rules.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "headfuse/types.h"

namespace headfuse {

// A read-only mapping of a file: internal to the library (src/mapped_file.h). Public types refer to it only by
// pointer (TensorView::file, GgufFile::mapping), which a library user passes on or leaves null.
class MappedFile;

inline constexpr std::uint32_t kGgufVersion = 3;        // the version read and written
inline constexpr std::uint32_t kDefaultAlignment = 32;  // ggml's GGUF_DEFAULT_ALIGNMENT
inline constexpr std::size_t kMaxTensorName = 63;       // ggml: GGML_MAX_NAME 64, including the NUL
inline constexpr std::uint32_t kMaxDims = 4;            // ggml: GGML_MAX_DIMS
// What the reader holds for one file at most: array items of all its keys together (a Value takes ~80 bytes,
// and the largest real tokenizers hold a few million items), and tensors (a real per-head checkpoint holds
// thousands; a million tensor infos take ~100 MB).
inline constexpr std::uint64_t kMaxArrayItems = std::uint64_t{1} << 24;
inline constexpr std::uint64_t kMaxTensors = std::uint64_t{1} << 20;

// The type of a metadata value, as GGUF numbers it on the wire.
enum class ValueType : std::uint32_t {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    BOOL = 7,
    STRING = 8,
    ARRAY = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
};
// "u32", "string", "array", ... ("unknown" for a number GGUF does not define).
std::string_view value_type_name(ValueType t) noexcept;

// One metadata value. Integers are held widened; `type` keeps the exact type on the wire.
struct Value {
    ValueType type = ValueType::U32;
    ValueType elem_type = ValueType::U8;  // arrays only
    std::variant<std::uint64_t, std::int64_t, double, bool, std::string> scalar;
    std::vector<Value> items;  // arrays only; never arrays themselves

    // A value of each wire type.
    static Value u8(std::uint8_t v);
    static Value i8(std::int8_t v);
    static Value u16(std::uint16_t v);
    static Value i16(std::int16_t v);
    static Value u32(std::uint32_t v);
    static Value i32(std::int32_t v);
    static Value u64(std::uint64_t v);
    static Value i64(std::int64_t v);
    static Value f32(float v);
    static Value f64(double v);
    static Value boolean(bool v);
    static Value string(std::string v);
    // An array of `elem` values; every item must have type `elem`.
    static Value array(ValueType elem, std::vector<Value> items);

    bool operator==(const Value&) const = default;
};

// Ordered key/value metadata. Keys are unique; entries keep the order they were first set in.
class Metadata {
public:
    // One key and its value.
    struct Entry {
        std::string key;
        Value value;
        bool operator==(const Entry&) const = default;
    };

    // The value of `key`, or nullptr. The pointer is valid until the next set, merge or erase.
    const Value* find(std::string_view key) const noexcept;
    // Replaces the value of an existing key, or appends a new one.
    void set(std::string key, Value value);
    // set() for every entry of `other`, moving the values.
    void merge(Metadata&& other);
    // Removes `key` (the others keep their order); false when it was absent.
    bool erase(std::string_view key);
    // Every entry, in order, and their number.
    const std::vector<Entry>& entries() const noexcept { return entries_; }
    std::size_t size() const noexcept { return entries_.size(); }

    // Typed getters: Error naming `where` and the key when it is missing or of another type.
    std::uint32_t get_u32(std::string_view key, std::string_view where) const;
    float get_f32(std::string_view key, std::string_view where) const;
    const std::string& get_string(std::string_view key, std::string_view where) const;

private:
    std::vector<Entry> entries_;
    // key -> position in entries_: find and set cost log n, so that a file of a million keys reads in n log n.
    std::map<std::string, std::size_t, std::less<>> index_;
};

// One tensor's entry in a GGUF header, with its size and where its bytes are.
struct TensorInfo {
    std::string name;
    std::uint32_t type = 0;  // ggml type id (any type ggml defines)
    std::uint32_t n_dims = 0;
    std::array<std::uint64_t, kMaxDims> ne{1, 1, 1, 1};
    std::uint64_t offset = 0;  // relative to the data section (of its shard)
    std::uint64_t nbytes = 0;  // without padding
    std::uint32_t shard = 0;   // the shard of a split set that holds it (0 in a single file)

    std::uint64_t n_elements() const noexcept { return ne[0] * ne[1] * ne[2] * ne[3]; }
    std::uint64_t n_rows() const noexcept { return ne[1] * ne[2] * ne[3]; }  // rows of ne[0] elements
};

// Progress of a long write: called with bytes done and bytes in all, from the writing thread. Every function that
// reports progress takes one `ProgressFn progress` (an option or a parameter of that name); empty: no reports.
using ProgressFn = std::function<void(std::uint64_t done, std::uint64_t total)>;
// Hears one line that a caller may want to show (what llama.cpp may not reproduce exactly, a fallback type, blocks
// re-encoded, the quantization error a decoded result carries). Every function that warns takes one
// `WarnFn warn`; empty: nothing is said.
using WarnFn = std::function<void(const std::string&)>;

// Split sets, as llama.cpp's llama-gguf-split writes them: shard i (from 0) of n is PREFIX-%05d-of-%05d.gguf
// (numbered from 1), holding its tensors and the keys split.no = i (u16), split.count = n (u16) and
// split.tensors.count = the set's tensor count (i32); the first shard also holds all the other metadata.
inline constexpr std::string_view kSplitNo = "split.no";
inline constexpr std::string_view kSplitCount = "split.count";
inline constexpr std::string_view kSplitTensorsCount = "split.tensors.count";

// PREFIX-0000i-of-0000N.gguf for shard `index` (from 0) of `count`; `prefix` may end in ".gguf", which is dropped.
std::filesystem::path shard_path(const std::filesystem::path& prefix, std::uint32_t index, std::uint32_t count);

// How a writer cuts its output into a split set. With neither limit it writes one plain file.
struct ShardLimits {
    // Bytes of tensor data (each tensor padded to the alignment) per shard, as llama-gguf-split's
    // --split-max-size counts them; a tensor larger than this gets a shard of its own. 0: no limit.
    std::uint64_t max_bytes = 0;
    std::uint64_t max_tensors = 0;  // tensors per shard; 0: no limit
    bool active() const noexcept { return max_bytes != 0 || max_tensors != 0; }
};

// How a writing command lays out its output: the tensor data alignment, and one file or a split set.
struct OutputOptions {
    // general.alignment, a power of two. Keep the default (32) for files llama.cpp's tools will rewrite:
    // llama-quantize copies a file's general.alignment key into its output but pads its own tensors to 32,
    // and ggml's reader then refuses that output.
    std::uint32_t alignment = kDefaultAlignment;
    ShardLimits shards;  // when active, write a split set (llama-gguf-split's layout) named after the output
};

// A parsed, validated GGUF file, or a split set read as one. Tensor data are zero-copy views into the bytes it
// was parsed from: a file opened with open() owns its mapping (moving the GgufFile keeps the spans valid); spans
// and TensorInfo references must not outlive it.
class GgufFile {
public:
    // Maps and validates a file. When it is a shard of a split set (split.count > 1), every shard of the set is
    // opened and checked (names, split.no, split.count, split.tensors.count, no tensor twice) and the set reads
    // as one file: shard 0's metadata without the split.* keys, the tensors of every shard in shard order.
    // Errors name the file.
    static GgufFile open(const std::filesystem::path& path);
    // Validates bytes held elsewhere (they must outlive the result). `name` prefixes the errors.
    static GgufFile parse(std::span<const std::byte> bytes, std::string name);
    // Applies every rule to a header alone (the bytes up to the data section), not to tensor data bounds.
    // Nothing is kept: it only throws.
    static void validate_header(std::span<const std::byte> header, std::string name);

    std::uint32_t version() const noexcept { return version_; }      // 3
    std::uint32_t alignment() const noexcept { return alignment_; }  // general.alignment, or 32
    const Metadata& metadata() const noexcept { return metadata_; }
    // The tensors in header order (a split set: shard by shard).
    const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
    // The tensor called `name`, or nullptr.
    const TensorInfo* find_tensor(std::string_view name) const noexcept;
    // The nbytes bytes of a tensor of this file (in its shard's mapping).
    std::span<const std::byte> tensor_data(const TensorInfo& t) const noexcept;
    // Absolute offset of the data section in the file.
    std::uint64_t data_start() const noexcept { return data_start_; }
    // The whole file (a split set: its first shard).
    std::span<const std::byte> bytes() const noexcept { return bytes_; }
    // The file name used in errors.
    const std::string& name() const noexcept { return name_; }
    // Shards of a split set (1 for a single file), their paths (empty after parse()), and where each tensor is:
    // the (opaque) mapping of its shard, nullptr after parse(), and its absolute offset in that shard's file.
    // The library's views record both (TensorView::file) so that writers can copy in the kernel.
    std::size_t shard_count() const noexcept { return 1 + shards_.size(); }
    std::vector<std::filesystem::path> paths() const;
    const MappedFile* mapping(const TensorInfo& t) const noexcept;
    std::uint64_t file_offset(const TensorInfo& t) const noexcept;

private:
    static GgufFile parse_impl(std::span<const std::byte> bytes, std::string name, bool check_data);
    static GgufFile open_one(const std::filesystem::path& path);
    const GgufFile& shard_of(const TensorInfo& t) const noexcept { return t.shard ? shards_[t.shard - 1] : *this; }
    // The mapping, when opened from a file (nullptr after parse()).
    const MappedFile* mapping() const noexcept { return file_.get(); }

    std::shared_ptr<MappedFile> file_;
    std::span<const std::byte> bytes_;
    std::string name_;
    std::uint32_t version_ = 0;
    std::uint32_t alignment_ = kDefaultAlignment;
    Metadata metadata_;
    std::vector<TensorInfo> tensors_;
    std::uint64_t data_start_ = 0;
    std::vector<GgufFile> shards_;  // shards 1.. of a split set
};

}  // namespace headfuse
