// headfuse: ggml tensor types. One table, read everywhere.
//
// Every ggml type id is known (so the reader can validate any GGUF file: block size and bytes per block).
// Model weights are decoded from the types in DType and encoded to those flagged `writes` in the table.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace headfuse {

// The tensor types headfuse reads (and, where TypeTraits::writes says so, writes): ggml's own type ids (ggml.h,
// enum ggml_type).
enum class DType : std::uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    IQ4_NL = 20,
    IQ4_XS = 23,
    BF16 = 30,
};

// What a ggml type is: its name and its block layout.
struct TypeTraits {
    std::uint32_t id;          // ggml type id
    std::string_view name;     // ggml's name: "f32", "q8_0", ...
    std::uint32_t block_size;  // elements per block
    std::uint32_t type_size;   // bytes per block
    bool reads;                // decode_row turns it into floats (every DType)
    bool writes;               // encode_row produces it from floats
    // A weight type llama.cpp runs: a model may hold it. Those headfuse does not read (the iq1/iq2/iq3 types,
    // tq1_0, tq2_0, mxfp4) are carried as bytes: inspect, split, fuse without --type, realize, verify without
    // --tokens, and prune, ablate and transplant at whole blocks keep them; computing from their values or
    // re-encoding them (logits, scan, pool-kv, an edit inside a block, --type, export) is refused as Unsupported.
    bool carries;
};

// The traits of a ggml type id, or nullptr for an id ggml does not define.
const TypeTraits* find_type(std::uint32_t id) noexcept;
// The traits of a DType, and its ggml name ("q8_0").
const TypeTraits& traits(DType t) noexcept;
inline std::string_view type_name(DType t) noexcept { return traits(t).name; }

// The name of a type headfuse writes ("f32", "q8_0", "q4_k", ...; case-insensitive) to its DType.
std::optional<DType> parse_dtype(std::string_view name) noexcept;
// The types headfuse writes, in the order the CLI lists them.
std::span<const DType> writable_dtypes() noexcept;

// "f32, f16, ..., or iq4_xs": the types headfuse reads, for messages.
std::string readable_type_names();
// "f32, f16, ..., or mxfp4": the types a model's weights may have (TypeTraits::carries), for messages.
std::string weight_type_names();
// Error (Unsupported) unless headfuse decodes type t: "<what> is iq3_s, which headfuse carries as bytes but does
// not decode (it computes from f32, ...)". For what computes from a tensor's values.
void require_decoded(DType t, const std::string& what);

// Bytes of one row of `ne0` elements; Error if ne0 is not a whole number of blocks or the size overflows.
std::uint64_t row_bytes(std::uint32_t type_id, std::uint64_t ne0);
inline std::uint64_t row_bytes(DType t, std::uint64_t ne0) { return row_bytes(static_cast<std::uint32_t>(t), ne0); }

}  // namespace headfuse
