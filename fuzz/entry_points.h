// headfuse fuzz entry points: one function per parser entry point, shared by the libFuzzer targets
// (fuzz_*.cpp, clang) and the corpus replay test (tests/test_fuzz_replay.cpp, any compiler).
//
// Each takes untrusted bytes and returns true when they were accepted, false when the library rejected them
// with headfuse::Error, the one failure a bad file may cause. Anything else escapes: another exception, a
// crash, a sanitizer report, a hang or a huge allocation is a finding.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "base/fail.h"
#include "formats/safetensors.h"
#include "headfuse/config.h"
#include "headfuse/error.h"
#include "headfuse/forward.h"
#include "headfuse/gguf.h"
#include "headfuse/model.h"
#include "headfuse/vocab.h"
#include "tokenizer/sp_model.h"

namespace headfuse::fuzz {

// Models at most this large also run a forward pass on two tokens: it reads every weight of the model
// through the views the realize step built, so a view that lies about its bytes is caught by ASan.
inline constexpr std::size_t kForwardMaxBytes = std::size_t{1} << 20;

// The bytes as a file with a path, without touching the file system: an anonymous memory file (memfd),
// reached through /proc/self/fd. The library opens it as it opens any file: open, fstat, mmap.
class MemFile {
public:
    explicit MemFile(std::span<const std::byte> bytes) {
        fd_ = ::memfd_create("headfuse-fuzz", MFD_CLOEXEC);
        if (fd_ < 0) return;
        const std::byte* p = bytes.data();
        std::size_t n = bytes.size();
        while (n > 0) {
            const ssize_t w = ::write(fd_, p, n);
            if (w <= 0) break;
            p += w;
            n -= static_cast<std::size_t>(w);
        }
    }
    ~MemFile() {
        if (fd_ >= 0) ::close(fd_);
    }
    MemFile(const MemFile&) = delete;
    MemFile& operator=(const MemFile&) = delete;
    bool ok() const noexcept { return fd_ >= 0; }
    std::filesystem::path path() const { return "/proc/self/fd/" + std::to_string(fd_); }

private:
    int fd_ = -1;
};

// The forward pass on the first and the last token, for models small enough to run it in a fuzz iteration.
inline void forward_if_small(const ModelViews& m, std::size_t file_bytes) {
    if (file_bytes > kForwardMaxBytes || m.config.vocab == 0) return;
    const std::vector<std::uint32_t> tokens{0, m.config.vocab - 1};
    const std::vector<float> logits = forward_logits(m, tokens, 1);
    if (logits.size() != tokens.size() * m.config.vocab) fail("forward: wrong number of logits");
}

// GgufFile::parse: the GGUF reader on bytes in memory.
inline bool gguf(std::span<const std::byte> data) {
    try {
        const GgufFile f = GgufFile::parse(data, "fuzz.gguf");
        for (const TensorInfo& t : f.tensors()) {
            const auto bytes = f.tensor_data(t);
            if (bytes.size() != t.nbytes || f.find_tensor(t.name) == nullptr) fail("tensor data out of bounds");
            if (t.nbytes > 0) (void)*(volatile const std::byte*)&bytes[t.nbytes - 1];  // ASan checks the end
        }
        return true;
    } catch (const Error&) {
        return false;
    }
}

// Metadata -> Config: the GGUF reader, then Config::from_metadata and validate.
inline bool config(std::span<const std::byte> data) {
    try {
        const GgufFile f = GgufFile::parse(data, "fuzz.gguf");
        const Config c = Config::from_metadata(f.metadata(), f.name());
        c.validate();
        (void)describe(c);
        return true;
    } catch (const Error&) {
        return false;
    }
}

// PerHeadModel::open (and open_model) on a file holding the bytes, then the forward pass when small.
inline bool per_head(std::span<const std::byte> data) {
    const MemFile file(data);
    if (!file.ok()) return false;
    try {
        const PerHeadModel m = PerHeadModel::open(file.path());
        forward_if_small(m.views(), data.size());
        (void)open_model(file.path());
        return true;
    } catch (const Error&) {
        return false;
    }
}

// FusedModel::open on a file holding the bytes, its per-head views, then the forward pass when small.
inline bool fused(std::span<const std::byte> data) {
    const MemFile file(data);
    if (!file.ok()) return false;
    try {
        const FusedModel m = FusedModel::open(file.path());
        const PerHeadModel heads = m.per_head();
        forward_if_small(heads.views(), data.size());
        return true;
    } catch (const Error&) {
        return false;
    }
}

// SafetensorsFile::parse: the safetensors reader on bytes in memory; every tensor's last byte is read.
inline bool safetensors(std::span<const std::byte> data) {
    try {
        const SafetensorsFile f = SafetensorsFile::parse(data, "fuzz.safetensors");
        std::uint64_t total = 0;
        for (const StTensor& t : f.tensors()) {
            if (f.find(t.name) != &t) fail("tensor lookup disagrees");
            total += t.bytes.size();
            if (!t.bytes.empty()) (void)*(volatile const std::byte*)&t.bytes.back();  // ASan checks the end
        }
        if (total > data.size()) fail("tensors hold more bytes than the file");
        return true;
    } catch (const Error&) {
        return false;
    }
}

// Tokenizers: a GGUF file's tokenizer keys through check_tokenizer, anything else as a tokenizer.json through
// the Hugging Face conversion (which checks its result too); then the summary inspect prints.
inline bool tokenizer(std::span<const std::byte> data) {
    try {
        Metadata keys;
        if (data.size() >= 4 && std::memcmp(data.data(), "GGUF", 4) == 0) {
            keys = GgufFile::parse(data, "fuzz.gguf").metadata();
            check_tokenizer(keys, 0, "fuzz.gguf");
        } else {
            const MemFile file(data);
            if (!file.ok()) return false;
            keys = read_hf_tokenizer(file.path()).keys;
        }
        if (!summarize_tokenizer(keys)) fail("a checked tokenizer has no summary");
        return true;
    } catch (const Error&) {
        return false;
    }
}

// A SentencePiece tokenizer.model: the bounded protobuf reader, the conversion and its check, the summary.
inline bool sp_model(std::span<const std::byte> data) {
    try {
        const Metadata keys = sp_model_keys(data, "fuzz.model");
        if (!summarize_tokenizer(keys)) fail("a checked tokenizer has no summary");
        return true;
    } catch (const Error&) {
        return false;
    }
}

}  // namespace headfuse::fuzz
