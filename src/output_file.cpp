#include "output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>

#include "headfuse/error.h"

namespace headfuse {
namespace {

// Small enough to stay in a core's L2 cache, so that gathering small writes costs no trip to memory;
// writes of kDirectBytes or more skip the buffer.
constexpr std::size_t kBufferBytes = std::size_t{1} << 20;
constexpr std::size_t kDirectBytes = std::size_t{256} << 10;
constexpr std::uint64_t kReportEvery = std::uint64_t{16} << 20;
// Writeback is started every kWritebackBytes, so that the disk works while we produce and the final fsync
// finds little left to do.
constexpr std::uint64_t kWritebackBytes = std::uint64_t{32} << 20;

std::string quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

}  // namespace

void refuse_overwrite(const std::filesystem::path& dest, std::span<const std::filesystem::path> inputs) {
    struct stat d {};
    if (::stat(dest.c_str(), &d) != 0) return;  // does not exist yet (or a dangling link): nothing to clobber
    for (const auto& in : inputs) {
        struct stat s {};
        if (::stat(in.c_str(), &s) == 0 && s.st_dev == d.st_dev && s.st_ino == d.st_ino)
            fail("refusing to write " + quoted(dest) + ": it is the input " + quoted(in) +
                 " (same file, hard link or symlink)");
    }
}

OutputFile::OutputFile(std::filesystem::path dest, std::span<const std::filesystem::path> inputs)
    : dest_(std::move(dest)) {
    refuse_overwrite(dest_, inputs);
    struct stat d {};
    if (::stat(dest_.c_str(), &d) == 0 && S_ISDIR(d.st_mode))
        fail("cannot write " + quoted(dest_) + ": it is a directory");
    std::filesystem::path dir = dest_.parent_path();
    if (dir.empty()) dir = ".";
    fd_ = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
    if (fd_ < 0) {
        // No O_TMPFILE on this file system: a named temporary, removed on error.
        std::random_device rd;
        for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
            temp_ = dir / ("." + dest_.filename().string() + "." + std::to_string(rd()) + ".tmp");
            fd_ = ::open(temp_.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
            if (fd_ < 0 && errno != EEXIST) break;
        }
        if (fd_ < 0) {
            int err = errno;
            temp_.clear();
            fail("cannot create a file in " + quoted(dir) + ": " + std::strerror(err));
        }
    }
    buffer_.reserve(kBufferBytes);
}

OutputFile::~OutputFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_ && !temp_.empty()) ::unlink(temp_.c_str());
}

void OutputFile::io_error(const char* what, int err) const {
    fail(std::string(what) + " " + quoted(dest_) + ": " + std::strerror(err));
}

void OutputFile::write_all(const std::byte* p, std::size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd_, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            io_error("writing", errno);
        }
        if (w == 0) io_error("writing", ENOSPC);
        p += w;
        n -= static_cast<std::size_t>(w);
        written_ += static_cast<std::uint64_t>(w);
    }
    start_writeback();
}

void OutputFile::start_writeback() {
    if (written_ - writeback_from_ < kWritebackBytes) return;
    // Asynchronous: it only queues the range for writing. Failure is harmless, fsync still follows.
    ::sync_file_range(fd_, static_cast<off64_t>(writeback_from_), static_cast<off64_t>(written_ - writeback_from_),
                      SYNC_FILE_RANGE_WRITE);
    writeback_from_ = written_;
}

void OutputFile::flush() {
    write_all(buffer_.data(), buffer_.size());
    buffer_.clear();
}

void OutputFile::write(std::span<const std::byte> bytes) {
    while (!bytes.empty()) {
        if (bytes.size() >= kDirectBytes) {  // large writes go straight through
            flush();
            write_all(bytes.data(), bytes.size());
            bytes = {};
        } else {
            std::size_t n = std::min(bytes.size(), kBufferBytes - buffer_.size());
            buffer_.insert(buffer_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
            bytes = bytes.subspan(n);
            if (buffer_.size() == kBufferBytes) flush();
        }
        report();
    }
}

void OutputFile::copy_from(const MappedFile& file, std::uint64_t offset, std::uint64_t len) {
    flush();
    loff_t in_off = static_cast<loff_t>(offset);
    while (len > 0) {
        // In slices, so that progress moves and a kill lands between system calls.
        std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(len, std::uint64_t{32} << 20));
        ssize_t n = ::copy_file_range(file.fd(), &in_off, fd_, nullptr, chunk, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n < 0 && errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP)
                io_error("writing", errno);
            // The kernel cannot copy here: read and write through a buffer instead.
            std::vector<std::byte> part;
            while (len > 0) {
                part.resize(static_cast<std::size_t>(std::min<std::uint64_t>(len, kBufferBytes)));
                file.read(static_cast<std::uint64_t>(in_off), part);
                write_all(part.data(), part.size());
                in_off += static_cast<loff_t>(part.size());
                len -= part.size();
                report();
            }
            return;
        }
        written_ += static_cast<std::uint64_t>(n);
        len -= static_cast<std::uint64_t>(n);
        start_writeback();
        report();
    }
}

void OutputFile::pad_to(std::uint64_t alignment) {
    static constexpr std::byte zeros[256] = {};
    std::uint64_t pad = (alignment - position() % alignment) % alignment;
    while (pad > 0) {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(pad, sizeof zeros));
        write({zeros, n});
        pad -= n;
    }
}

void OutputFile::set_progress(ProgressFn fn, std::uint64_t total) {
    progress_ = std::move(fn);
    total_ = total;
    next_report_ = 0;
}

void OutputFile::report() {
    if (progress_ && position() >= next_report_) {
        progress_(position(), total_);
        next_report_ = position() + kReportEvery;
    }
}

void OutputFile::commit() {
    flush();
    if (::fsync(fd_) != 0) io_error("syncing", errno);
    if (temp_.empty()) {
        // Give the unnamed file a name next to the destination, then rename it over the destination.
        std::filesystem::path dir = dest_.parent_path().empty() ? "." : dest_.parent_path();
        std::random_device rd;
        std::string proc = "/proc/self/fd/" + std::to_string(fd_);
        for (int attempt = 0; attempt < 16; ++attempt) {
            temp_ = dir / ("." + dest_.filename().string() + "." + std::to_string(rd()) + ".tmp");
            if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, temp_.c_str(), AT_SYMLINK_FOLLOW) == 0) break;
            int err = errno;
            temp_.clear();
            if (err != EEXIST) io_error("publishing", err);
        }
        if (temp_.empty()) io_error("publishing", EEXIST);
    }
    if (::rename(temp_.c_str(), dest_.c_str()) != 0) {
        int err = errno;
        ::unlink(temp_.c_str());
        temp_.clear();
        io_error("publishing", err);
    }
    committed_ = true;
    std::filesystem::path dir = dest_.parent_path().empty() ? "." : dest_.parent_path();
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    if (progress_) progress_(position(), total_);
}

void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes,
                           std::span<const std::filesystem::path> inputs) {
    OutputFile out(path, inputs);
    out.write(bytes);
    out.commit();
}

void CountingSink::write(std::span<const std::byte> bytes) {
    take(bytes.size());
    out_.write(bytes);
}

void CountingSink::copy_from(const MappedFile& file, std::uint64_t offset, std::uint64_t len) {
    take(len);
    out_.copy_from(file, offset, len);
}

void CountingSink::finish() const {
    if (done_ != want_)
        fail("tensor '" + tensor_ + "': produced " + std::to_string(done_) + " bytes, expected " +
             std::to_string(want_));
}

void CountingSink::take(std::uint64_t n) {
    if (n > want_ - done_)
        fail("tensor '" + tensor_ + "': producer wrote more than its " + std::to_string(want_) + " bytes");
    done_ += n;
}

}  // namespace headfuse
