// headfuse tests: ggml itself, loaded at run time, as the judge of headfuse's encodings and GGUF files.
//
// The library is libggml-base.so from the npm package @node-llama-cpp/linux-x64@3.21.1 (prebuilt llama.cpp,
// see judge/). Its path is $HEADFUSE_GGML_LIB, else the package under <source dir>/judge/node_modules.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "headfuse/types.h"
#include "support/required.h"

#ifndef HEADFUSE_SOURCE_DIR
#define HEADFUSE_SOURCE_DIR "/work/main"
#endif

namespace headfuse::test {

class GgmlLib {
public:
    // The loaded library (loaded once per process), or nullptr when it cannot be loaded; load_error() says why.
    static GgmlLib* get();
    static const std::string& load_error();
    // Where get() looks: $HEADFUSE_GGML_LIB, else the judge package in the source tree.
    static std::string path();

    // ggml_quantize_chunk of `rows` rows of `n_per_row` floats into type t (no importance matrix).
    std::vector<std::byte> quantize(DType t, const float* src, std::int64_t rows, std::int64_t n_per_row) const;
    // ggml_row_size: bytes of `ne` elements of type t.
    std::size_t row_size(DType t, std::int64_t ne) const;
    std::vector<std::uint16_t> fp16_row(const float* src, std::int64_t n) const;
    std::vector<std::uint16_t> bf16_row(const float* src, std::int64_t n) const;

    // True when ggml's own dequantizer for t (ggml_get_type_traits(t)->to_float) could be resolved and its
    // traits look as expected (name, block size, block bytes), which guards the struct layout this relies on.
    // False for an id ggml does not define (never passed to ggml, whose bound check is compiled out).
    bool has_to_float(DType t) const;
    // ggml's dequantization of n elements of type t; has_to_float(t) must hold.
    std::vector<float> to_float(DType t, const void* src, std::int64_t n) const;

    struct GgufSummary {
        bool ok = false;  // ggml's reader accepted the file
        std::int64_t n_tensors = 0;
        std::int64_t n_kv = 0;
        std::vector<std::string> names;
        std::vector<std::uint64_t> offsets;  // relative to the data section
        std::vector<std::uint32_t> types;    // ggml type ids
        std::size_t data_offset = 0;         // absolute file offset of the data section
    };
    // Reads the file's header with ggml's gguf_init_from_file (no_alloc, no ggml context). On failure ggml
    // prints its reason to stderr and ok is false.
    GgufSummary read_gguf(const std::string& path) const;
    // gguf_find_key on the file: the key's index, -1 when absent, or -2 when the file does not load.
    std::int64_t find_key(const std::string& path, const std::string& key) const;

    struct Api;  // the resolved entry points

private:
    explicit GgmlLib(const Api& api);
    const Api& api_;
};

}  // namespace headfuse::test

// In a test body: binds `var` to the ggml library, or ends the test when it is missing, as a failure in CI and
// as a skip elsewhere, saying why.
#define HEADFUSE_REQUIRE_GGML(var)                                     \
    ::headfuse::test::GgmlLib* var = ::headfuse::test::GgmlLib::get(); \
    HEADFUSE_REQUIRE(var != nullptr, ::headfuse::test::GgmlLib::load_error())

// In a test body: binds `var` to the ggml library, or to nullptr when it is missing (a failure in CI, a note
// elsewhere). The test goes on without it and skips only its ggml assertions (`if (var) ...`).
#define HEADFUSE_OPTIONAL_GGML(var)                                                                                   \
    ::headfuse::test::GgmlLib* var = ::headfuse::test::GgmlLib::get();                                                \
    if (var == nullptr) {                                                                                             \
        if (::headfuse::test::running_in_ci()) ADD_FAILURE() << ::headfuse::test::GgmlLib::load_error();              \
        std::printf("[  NOTE    ] ggml's assertions skipped: %s\n", ::headfuse::test::GgmlLib::load_error().c_str()); \
    }
