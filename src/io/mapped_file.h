// headfuse: read-only mappings of whole input files (internal). Inputs must be regular files (files.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace headfuse {

// A read-only mapping of a whole file. Owns the descriptor and the mapping.
class MappedFile {
public:
    static MappedFile open(const std::filesystem::path& path);
    MappedFile() = default;
    MappedFile(MappedFile&&) noexcept;
    MappedFile& operator=(MappedFile&&) noexcept;
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile();

    std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
    int fd() const noexcept { return fd_; }
    const std::filesystem::path& path() const noexcept { return path_; }
    // Copies out.size() bytes at `offset` into `out` with pread (Error naming the file on failure).
    void read(std::uint64_t offset, std::span<std::byte> out) const;
    // Copies n_rows rows of row_bytes, stored one after another from `offset`, to out, out + out_stride, ...
    // (rows scattered in memory, as a rotate-half group's are in llama.cpp's order), a batch of rows per preadv.
    void read_rows(std::uint64_t offset, std::size_t row_bytes, std::size_t n_rows, std::byte* out,
                   std::size_t out_stride) const;
    // Drops the pages of [p, p+n) from this process's resident set (they stay in the page cache).
    void release(const std::byte* p, std::size_t n) const noexcept;

private:
    std::filesystem::path path_;
    int fd_ = -1;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace headfuse
