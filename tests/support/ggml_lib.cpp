#include "support/ggml_lib.h"

#include <dlfcn.h>

#include <cassert>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace headfuse::test {

namespace {

// The parts of ggml's ABI used here (ggml.h, gguf.h). Enums are passed as int, ggml_fp16_t and ggml_bf16_t
// as uint16_t (same size and class).
struct GgufInitParams {
    bool no_alloc;
    void** ctx;  // struct ggml_context**
};

using ToFloatFn = void (*)(const void*, float*, std::int64_t);

// GGML_TYPE_COUNT in the pinned ggml.h. ggml_get_type_traits(type) returns &type_traits[type] with the bound only
// assert()ed, and the shipped library is built with NDEBUG: an id at or past the count reads past the table (an
// arbitrary pointer then dereferenced, SIGBUS or SIGSEGV), so ids are checked here before the call.
constexpr std::uint32_t kGgmlTypeCount = 43;

// struct ggml_type_traits, as ggml.h declares it.
struct GgmlTypeTraits {
    const char* type_name;
    std::int64_t blck_size;
    std::int64_t blck_size_interleave;
    std::size_t type_size;
    bool is_quantized;
    ToFloatFn to_float;
    void (*from_float_ref)(const float*, void*, std::int64_t);
};

}  // namespace

struct GgmlLib::Api {
    std::size_t (*quantize_chunk)(int type, const float* src, void* dst, std::int64_t start, std::int64_t nrows,
                                  std::int64_t n_per_row, const float* imatrix);
    void (*quantize_init)(int type);
    std::size_t (*row_size)(int type, std::int64_t ne);
    void (*fp32_to_fp16_row)(const float* x, std::uint16_t* y, std::int64_t n);
    void (*fp32_to_bf16_row)(const float* x, std::uint16_t* y, std::int64_t n);
    const GgmlTypeTraits* (*get_type_traits)(int type);  // optional

    void* (*gguf_init_from_file)(const char* fname, GgufInitParams params);
    void (*gguf_free)(void* ctx);
    std::int64_t (*gguf_get_n_tensors)(const void* ctx);
    const char* (*gguf_get_tensor_name)(const void* ctx, std::int64_t id);
    std::size_t (*gguf_get_tensor_offset)(const void* ctx, std::int64_t id);
    int (*gguf_get_tensor_type)(const void* ctx, std::int64_t id);
    std::int64_t (*gguf_get_n_kv)(const void* ctx);
    std::size_t (*gguf_get_data_offset)(const void* ctx);
    std::int64_t (*gguf_find_key)(const void* ctx, const char* key);
};

namespace {

struct Loaded {
    GgmlLib::Api api{};
    std::string error;  // empty when every required symbol resolved
};

// Binds fn to the symbol; when it is missing, records the first such name in `error`.
template <typename Fn>
void resolve(void* handle, const char* name, Fn& fn, std::string& error) {
    fn = reinterpret_cast<Fn>(dlsym(handle, name));
    if (fn == nullptr && error.empty()) error = std::string("ggml library lacks the symbol ") + name;
}

Loaded load() {
    Loaded out;
    const std::string file = GgmlLib::path();
    // Never closed: the library lives as long as the test process.
    void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        const char* why = dlerror();
        out.error = "cannot load ggml's library " + file + " (" + (why ? why : "unknown error") +
                    "); install the judge (see judge/) or set HEADFUSE_GGML_LIB";
        return out;
    }
    GgmlLib::Api& a = out.api;
    std::string& e = out.error;
    resolve(handle, "ggml_quantize_chunk", a.quantize_chunk, e);
    resolve(handle, "ggml_quantize_init", a.quantize_init, e);
    resolve(handle, "ggml_row_size", a.row_size, e);
    resolve(handle, "ggml_fp32_to_fp16_row", a.fp32_to_fp16_row, e);
    resolve(handle, "ggml_fp32_to_bf16_row", a.fp32_to_bf16_row, e);
    resolve(handle, "gguf_init_from_file", a.gguf_init_from_file, e);
    resolve(handle, "gguf_free", a.gguf_free, e);
    resolve(handle, "gguf_get_n_tensors", a.gguf_get_n_tensors, e);
    resolve(handle, "gguf_get_tensor_name", a.gguf_get_tensor_name, e);
    resolve(handle, "gguf_get_tensor_offset", a.gguf_get_tensor_offset, e);
    resolve(handle, "gguf_get_tensor_type", a.gguf_get_tensor_type, e);
    resolve(handle, "gguf_get_n_kv", a.gguf_get_n_kv, e);
    resolve(handle, "gguf_get_data_offset", a.gguf_get_data_offset, e);
    resolve(handle, "gguf_find_key", a.gguf_find_key, e);
    std::string optional_missing;
    resolve(handle, "ggml_get_type_traits", a.get_type_traits, optional_missing);
    return out;
}

const Loaded& loaded() {
    static const Loaded instance = load();
    return instance;
}

}  // namespace

GgmlLib::GgmlLib(const Api& api) : api_(api) {}

GgmlLib* GgmlLib::get() {
    static GgmlLib instance(loaded().api);
    return loaded().error.empty() ? &instance : nullptr;
}

const std::string& GgmlLib::load_error() { return loaded().error; }

std::string GgmlLib::path() {
    if (const char* env = std::getenv("HEADFUSE_GGML_LIB"); env != nullptr && *env != '\0') return env;
    return std::string(HEADFUSE_SOURCE_DIR) +
           "/judge/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so";
}

std::vector<std::byte> GgmlLib::quantize(DType t, const float* src, std::int64_t rows, std::int64_t n_per_row) const {
    const int type = static_cast<int>(t);
    api_.quantize_init(type);
    std::vector<std::byte> out(row_size(t, n_per_row) * static_cast<std::size_t>(rows));
    const std::size_t written = api_.quantize_chunk(type, src, out.data(), 0, rows, n_per_row, nullptr);
    assert(written == out.size());
    (void)written;
    return out;
}

std::size_t GgmlLib::row_size(DType t, std::int64_t ne) const { return api_.row_size(static_cast<int>(t), ne); }

std::vector<std::uint16_t> GgmlLib::fp16_row(const float* src, std::int64_t n) const {
    std::vector<std::uint16_t> out(static_cast<std::size_t>(n));
    api_.fp32_to_fp16_row(src, out.data(), n);
    return out;
}

std::vector<std::uint16_t> GgmlLib::bf16_row(const float* src, std::int64_t n) const {
    std::vector<std::uint16_t> out(static_cast<std::size_t>(n));
    api_.fp32_to_bf16_row(src, out.data(), n);
    return out;
}

bool GgmlLib::has_to_float(DType t) const {
    const auto id = static_cast<std::uint32_t>(t);
    const TypeTraits* want = find_type(id);
    if (api_.get_type_traits == nullptr || want == nullptr || id >= kGgmlTypeCount) return false;
    const GgmlTypeTraits* tt = api_.get_type_traits(static_cast<int>(id));
    return tt != nullptr && tt->to_float != nullptr && tt->type_name != nullptr &&
           std::string_view(tt->type_name) == want->name && tt->blck_size == std::int64_t{want->block_size} &&
           tt->type_size == std::size_t{want->type_size};
}

std::vector<float> GgmlLib::to_float(DType t, const void* src, std::int64_t n) const {
    assert(has_to_float(t));
    std::vector<float> out(static_cast<std::size_t>(n));
    api_.get_type_traits(static_cast<int>(t))->to_float(src, out.data(), n);
    return out;
}

GgmlLib::GgufSummary GgmlLib::read_gguf(const std::string& path) const {
    GgufSummary s;
    void* ctx = api_.gguf_init_from_file(path.c_str(), GgufInitParams{true, nullptr});
    if (ctx == nullptr) return s;
    s.ok = true;
    s.n_tensors = api_.gguf_get_n_tensors(ctx);
    s.n_kv = api_.gguf_get_n_kv(ctx);
    s.data_offset = api_.gguf_get_data_offset(ctx);
    for (std::int64_t i = 0; i < s.n_tensors; ++i) {
        s.names.emplace_back(api_.gguf_get_tensor_name(ctx, i));
        s.offsets.push_back(api_.gguf_get_tensor_offset(ctx, i));
        s.types.push_back(static_cast<std::uint32_t>(api_.gguf_get_tensor_type(ctx, i)));
    }
    api_.gguf_free(ctx);
    return s;
}

std::int64_t GgmlLib::find_key(const std::string& path, const std::string& key) const {
    void* ctx = api_.gguf_init_from_file(path.c_str(), GgufInitParams{true, nullptr});
    if (ctx == nullptr) return -2;
    const std::int64_t id = api_.gguf_find_key(ctx, key.c_str());
    api_.gguf_free(ctx);
    return id;
}

}  // namespace headfuse::test
