#include "support/llama_quantize.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "headfuse/fuse.h"
#include "headfuse/gguf.h"
#include "headfuse/mix.h"

namespace headfuse::test {

namespace {

// struct llama_model_quantize_params, field for field as llama.h (llama.cpp release v0.4.0) declares it.
// Enums are int-sized; the pointers are opaque here and stay null.
struct LlamaModelQuantizeParams {
    std::int32_t nthread;
    std::int32_t ftype;                 // enum llama_ftype
    std::int32_t output_tensor_type;    // enum ggml_type
    std::int32_t token_embedding_type;  // enum ggml_type
    bool allow_requantize;
    bool quantize_output_tensor;
    bool only_copy;
    bool pure;
    bool keep_split;
    bool dry_run;
    const void* imatrix;       // const struct llama_model_imatrix_data *
    const void* kv_overrides;  // const struct llama_model_kv_override *
    const void* tt_overrides;  // const struct llama_model_tensor_override *
    const std::int32_t* prune_layers;
    std::size_t max_buf_size;
};

using LogCallback = void (*)(int level, const char* text, void* user_data);  // ggml_log_callback

}  // namespace

struct LlamaQuantizer::Api {
    LlamaModelQuantizeParams (*default_params)();
    std::uint32_t (*quantize)(const char* fname_inp, const char* fname_out, const LlamaModelQuantizeParams* params);
    void (*log_set)(LogCallback callback, void* user_data);
};

namespace {

struct Loaded {
    LlamaQuantizer::Api api{};
    std::string error;
};

template <typename Fn>
void resolve(void* handle, const char* name, Fn& fn, std::string& error) {
    fn = reinterpret_cast<Fn>(dlsym(handle, name));
    if (fn == nullptr && error.empty()) error = std::string("llama library lacks the symbol ") + name;
}

// llama.cpp logs every tensor it quantizes; keep the log of the current call for error messages instead.
std::mutex log_mutex;
std::string log_text;

void capture_log(int /*level*/, const char* text, void* /*user_data*/) {
    if (text != nullptr && log_text.size() < (std::size_t{1} << 20)) log_text += text;
}

Loaded load() {
    Loaded out;
    const std::string file = LlamaQuantizer::path();
    // Never closed: the library lives as long as the test process. It finds its ggml libraries by RUNPATH.
    void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        const char* why = dlerror();
        out.error = "cannot load llama.cpp's library " + file + " (" + (why ? why : "unknown error") +
                    "); install the judge (see judge/) or set HEADFUSE_LLAMA_LIB";
        return out;
    }
    resolve(handle, "llama_model_quantize_default_params", out.api.default_params, out.error);
    resolve(handle, "llama_model_quantize", out.api.quantize, out.error);
    resolve(handle, "llama_log_set", out.api.log_set, out.error);
    if (out.error.empty()) out.api.log_set(capture_log, nullptr);
    return out;
}

const Loaded& loaded() {
    static const Loaded instance = load();
    return instance;
}

}  // namespace

std::optional<LlamaFtype> ftype_for(std::uint32_t type_id) {
    switch (type_id) {
        case 0: return LlamaFtype::ALL_F32;
        case 1: return LlamaFtype::F16;
        case 2: return LlamaFtype::Q4_0;
        case 3: return LlamaFtype::Q4_1;
        case 6: return LlamaFtype::Q5_0;
        case 7: return LlamaFtype::Q5_1;
        case 8: return LlamaFtype::Q8_0;
        case 10: return LlamaFtype::Q2_K;
        case 11: return LlamaFtype::Q3_K_S;
        case 12: return LlamaFtype::Q4_K_S;
        case 13: return LlamaFtype::Q5_K_S;
        case 14: return LlamaFtype::Q6_K;
        case 20: return LlamaFtype::IQ4_NL;
        case 21: return LlamaFtype::IQ3_S;
        case 23: return LlamaFtype::IQ4_XS;
        case 30: return LlamaFtype::BF16;
        case 34: return LlamaFtype::TQ1_0;
        case 35: return LlamaFtype::TQ2_0;
        default: return std::nullopt;
    }
}

LlamaQuantizer::LlamaQuantizer(const Api& api) : api_(api) {}

LlamaQuantizer* LlamaQuantizer::get() {
    static LlamaQuantizer instance(loaded().api);
    return loaded().error.empty() ? &instance : nullptr;
}

const std::string& LlamaQuantizer::load_error() { return loaded().error; }

std::string LlamaQuantizer::path() {
    if (const char* env = std::getenv("HEADFUSE_LLAMA_LIB"); env != nullptr && *env != '\0') return env;
    return std::string(HEADFUSE_SOURCE_DIR) +
           "/judge/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libllama.v0.4.0.so";
}

void LlamaQuantizer::quantize(const std::filesystem::path& in, const std::filesystem::path& out,
                              const QuantizeOptions& options) const {
    LlamaModelQuantizeParams p = api_.default_params();
    p.nthread = options.threads;
    p.ftype = static_cast<std::int32_t>(options.ftype);
    p.pure = options.pure;
    std::uint32_t rc = 0;
    std::string log;
    {
        std::lock_guard lock(log_mutex);
        log_text.clear();
        rc = api_.quantize(in.c_str(), out.c_str(), &p);
        log.swap(log_text);
    }
    if (rc != 0) {
        if (log.size() > 2000) log = "..." + log.substr(log.size() - 2000);
        throw std::runtime_error("llama_model_quantize(" + in.string() + " -> " + out.string() + ", ftype " +
                                 std::to_string(p.ftype) + ") failed with " + std::to_string(rc) + ":\n" + log);
    }
}

void expect_mixes_match(const LlamaQuantizer& llama, const PerHeadModel& model, const std::filesystem::path& dir) {
    fuse(model, dir / "f32.gguf", FuseOptions{});
    for (Mix m : all_mixes()) {
        SCOPED_TRACE(std::string(mix_name(m)));
        llama.quantize(dir / "f32.gguf", dir / "theirs.gguf",
                       {.ftype = static_cast<LlamaFtype>(file_type(m)), .pure = false, .threads = 2});
        FuseOptions opt;
        opt.mix = m;
        opt.threads = 2;
        fuse(model, dir / "ours.gguf", opt);
        EXPECT_TRUE(same_tensors(GgufFile::open(dir / "ours.gguf"), GgufFile::open(dir / "theirs.gguf")));
    }
}

}  // namespace headfuse::test
