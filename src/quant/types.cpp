#include "headfuse/types.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>

#include "base/checked.h"
#include "base/fail.h"
#include "headfuse/error.h"

namespace headfuse {
namespace {

// ggml's type table (ggml.c, type_traits): block size and bytes per block of every type id it defines; which of
// them headfuse decodes (reads) and encodes (writes); and which llama.cpp runs as weights (a model may hold them:
// every type llama-quantize writes, importance-matrix types included). q8_1 and q8_K are ggml's activation
// types, the integer types and f64 not weights. Ids 4, 5 (removed Q4_2, Q4_3) and 31-33, 36-38 (removed) are
// not types.
constexpr bool R = true, W = true, C = true, o = false;
constexpr std::array kTypes{
    TypeTraits{0, "f32", 1, 4, R, W, C},         TypeTraits{1, "f16", 1, 2, R, W, C},
    TypeTraits{2, "q4_0", 32, 18, R, W, C},      TypeTraits{3, "q4_1", 32, 20, R, W, C},
    TypeTraits{6, "q5_0", 32, 22, R, W, C},      TypeTraits{7, "q5_1", 32, 24, R, W, C},
    TypeTraits{8, "q8_0", 32, 34, R, W, C},      TypeTraits{9, "q8_1", 32, 36, o, o, o},
    TypeTraits{10, "q2_K", 256, 84, R, W, C},    TypeTraits{11, "q3_K", 256, 110, R, W, C},
    TypeTraits{12, "q4_K", 256, 144, R, W, C},   TypeTraits{13, "q5_K", 256, 176, R, W, C},
    TypeTraits{14, "q6_K", 256, 210, R, W, C},   TypeTraits{15, "q8_K", 256, 292, o, o, o},
    TypeTraits{16, "iq2_xxs", 256, 66, o, o, C}, TypeTraits{17, "iq2_xs", 256, 74, o, o, C},
    TypeTraits{18, "iq3_xxs", 256, 98, o, o, C}, TypeTraits{19, "iq1_s", 256, 50, o, o, C},
    TypeTraits{20, "iq4_nl", 32, 18, R, o, C},   TypeTraits{21, "iq3_s", 256, 110, o, o, C},
    TypeTraits{22, "iq2_s", 256, 82, o, o, C},   TypeTraits{23, "iq4_xs", 256, 136, R, o, C},
    TypeTraits{24, "i8", 1, 1, o, o, o},         TypeTraits{25, "i16", 1, 2, o, o, o},
    TypeTraits{26, "i32", 1, 4, o, o, o},        TypeTraits{27, "i64", 1, 8, o, o, o},
    TypeTraits{28, "f64", 1, 8, o, o, o},        TypeTraits{29, "iq1_m", 256, 56, o, o, C},
    TypeTraits{30, "bf16", 1, 2, R, W, C},       TypeTraits{34, "tq1_0", 256, 54, o, o, C},
    TypeTraits{35, "tq2_0", 256, 66, o, o, C},   TypeTraits{39, "mxfp4", 32, 17, o, o, C},
};

// The written types in the CLI's order: floats, then the 32-wide types, then the K-quants.
constexpr std::array kModelTypes{DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                                 DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K,
                                 DType::Q4_K, DType::Q5_K, DType::Q6_K};

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
    return out;
}

}  // namespace

const TypeTraits* find_type(std::uint32_t id) noexcept {
    auto it = std::find_if(kTypes.begin(), kTypes.end(), [id](const TypeTraits& t) { return t.id == id; });
    return it == kTypes.end() ? nullptr : &*it;
}

const TypeTraits& traits(DType t) noexcept { return *find_type(static_cast<std::uint32_t>(t)); }

std::optional<DType> parse_dtype(std::string_view name) noexcept {
    const std::string want = lower(name);
    for (DType t : kModelTypes)
        if (lower(traits(t).name) == want) return t;
    return std::nullopt;
}

std::span<const DType> writable_dtypes() noexcept { return kModelTypes; }

namespace {

// "a, b or c": the names of the types with `has`.
std::string type_names(bool TypeTraits::*has) {
    std::string out;
    for (const TypeTraits& t : kTypes) {
        if (!(t.*has)) continue;
        if (!out.empty()) out += ", ";
        out += t.name;
    }
    const std::size_t last = out.rfind(", ");
    return last == std::string::npos ? out : out.replace(last, 2, " or ");
}

}  // namespace

std::string readable_type_names() { return type_names(&TypeTraits::reads); }

std::string weight_type_names() { return type_names(&TypeTraits::carries); }

void require_decoded(DType t, const std::string& what) {
    const TypeTraits& tt = traits(t);
    if (!tt.reads)
        fail(ErrorKind::Unsupported, what + " is " + std::string(tt.name) +
                                         ", which headfuse carries as bytes but does not decode (it computes from " +
                                         readable_type_names() + ")");
}

std::uint64_t row_bytes(std::uint32_t type_id, std::uint64_t ne0) {
    const TypeTraits* t = find_type(type_id);
    if (!t) fail("unknown ggml type id " + std::to_string(type_id));
    if (ne0 % t->block_size != 0)
        fail("a row of " + std::to_string(ne0) + " elements is not a whole number of " + std::string(t->name) +
             " blocks of " + std::to_string(t->block_size));
    return checked_mul(ne0 / t->block_size, t->type_size, "row size");
}

}  // namespace headfuse
