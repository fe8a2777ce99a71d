#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "base/fail.h"
#include "headfuse/error.h"
#include "io/mapped_file.h"
#include "io/open_input.h"

namespace headfuse {

MappedFile MappedFile::open(const std::filesystem::path& path) {
    MappedFile m;
    m.path_ = path;
    m.fd_ = open_regular_file(path);
    struct stat st {};
    if (::fstat(m.fd_, &st) != 0) fail(ErrorKind::Io, path.string() + ": cannot stat: " + std::strerror(errno));
    m.size_ = static_cast<std::size_t>(st.st_size);
    if (m.size_ == 0) return m;
    void* p = ::mmap(nullptr, m.size_, PROT_READ, MAP_SHARED, m.fd_, 0);
    if (p == MAP_FAILED) fail(ErrorKind::Io, path.string() + ": cannot map: " + std::strerror(errno));
    m.data_ = static_cast<const std::byte*>(p);
    return m;
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)),
      fd_(std::exchange(o.fd_, -1)),
      data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
    if (this != &o) {
        this->~MappedFile();
        new (this) MappedFile(std::move(o));
    }
    return *this;
}

MappedFile::~MappedFile() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
}

void MappedFile::read(std::uint64_t offset, std::span<std::byte> out) const {
    if (offset > size_ || out.size() > size_ - offset)
        fail(path_.string() + ": read of " + std::to_string(out.size()) + " bytes at offset " + std::to_string(offset) +
             " is past the end of the file (" + std::to_string(size_) + " bytes)");
    std::size_t done = 0;
    while (done < out.size()) {
        const ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            fail(ErrorKind::Io,
                 path_.string() + ": cannot read: " + (n < 0 ? std::strerror(errno) : "the file shrank"));
        done += static_cast<std::size_t>(n);
    }
}

void MappedFile::read_rows(std::uint64_t offset, std::size_t row_bytes, std::size_t n_rows, std::byte* out,
                           std::size_t out_stride) const {
    if (row_bytes == 0 || n_rows == 0) return;
    if (out_stride == row_bytes) return read(offset, {out, row_bytes * n_rows});
    if (offset > size_ || n_rows > (size_ - offset) / std::max<std::size_t>(1, row_bytes))
        fail(path_.string() + ": read of " + std::to_string(n_rows) + " rows of " + std::to_string(row_bytes) +
             " bytes at offset " + std::to_string(offset) + " is past the end of the file (" + std::to_string(size_) +
             " bytes)");
    constexpr std::size_t kBatch = 256;  // rows per preadv (IOV_MAX is 1024)
    struct iovec iov[kBatch];
    for (std::size_t row = 0; row < n_rows;) {
        const std::size_t k = std::min(kBatch, n_rows - row);
        for (std::size_t i = 0; i < k; ++i) iov[i] = {out + (row + i) * out_stride, row_bytes};
        const ssize_t n = ::preadv(fd_, iov, static_cast<int>(k), static_cast<off_t>(offset + row * row_bytes));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            fail(ErrorKind::Io,
                 path_.string() + ": cannot read: " + (n < 0 ? std::strerror(errno) : "the file shrank"));
        // A short read ends inside a row: the rest of that row is read on its own.
        const std::size_t whole = static_cast<std::size_t>(n) / row_bytes,
                          part = static_cast<std::size_t>(n) % row_bytes;
        row += whole;
        if (part) {
            read(offset + row * row_bytes + part, {out + row * out_stride + part, row_bytes - part});
            ++row;
        }
    }
}

void MappedFile::release(const std::byte* p, std::size_t n) const noexcept {
    // Only whole pages inside the range: a neighbouring tensor may still be in use.
    static const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    if (!data_ || p < data_ || p > data_ + size_) return;
    const std::size_t begin = static_cast<std::size_t>(p - data_);
    const std::size_t end = std::min(size_, begin + n);
    const std::size_t b = (begin + page - 1) / page * page, e = end / page * page;
    if (e > b) ::madvise(const_cast<std::byte*>(data_) + b, e - b, MADV_DONTNEED);
}

}  // namespace headfuse
