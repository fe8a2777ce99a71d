#include "io/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <system_error>
#include <thread>

#include "base/fail.h"
#include "base/text.h"
#include "headfuse/error.h"
#include "io/mapped_file.h"
#include "io/open_input.h"

namespace headfuse {
namespace {

// Small enough to stay in a core's L2 cache (1 MB) beside what is being copied into it, so that gathering small
// writes costs no trip to memory: a write of 1 MB copies several times slower than four of 256 kB here;
// writes of kDirectBytes or more skip the buffer.
constexpr std::size_t kBufferBytes = std::size_t{256} << 10;
constexpr std::size_t kDirectBytes = std::size_t{256} << 10;
constexpr std::uint64_t kReportEvery = std::uint64_t{16} << 20;
// Writeback is queued every kWritebackBytes (by the Writeback thread), so that the disk writes while the file is
// still being produced and the final fsync waits only for the tail, where a durable copy (`cp` then `sync`) makes
// its copy first and waits for the whole file after. BF16 checkpoint (713 MB) -> BF16 and F16, ratios to a durable
// copy, medians of 11 alternating runs: every 8 MB 0.97 and 1.07, every 16 MB 0.99 and 1.07-1.14, 32 MB 1.09,
// 64 MB 1.06-1.11, only at the final fsync (every 1 GiB) 1.43 and 1.26 (docs/PERFORMANCE.md).
constexpr std::uint64_t kWritebackBytes = std::uint64_t{8} << 20;

std::string quoted(const std::filesystem::path& p) {
    std::string s(1, '\'');  // appended, not "'" + ...: GCC 12 warns falsely (-Wrestrict) on that form here
    s += p.string();
    s += '\'';
    return s;
}

// ".NAME.RANDOM.tmp" beside the file replaced.
std::filesystem::path temp_name(const Destination& d, unsigned random) {
    std::string name(1, '.');
    name += d.path.filename().string();
    name += '.';
    name += std::to_string(random);
    name += ".tmp";
    return d.dir / name;
}

}  // namespace

// sync_file_range(SYNC_FILE_RANGE_WRITE) only queues a range for writing, but it blocks while the device's
// request queue is full: on a loaded machine 21 calls took 0.25 s of a 1.8 s BF16 -> F16 conversion, time in
// which the writing thread produced nothing. This thread makes those calls instead, one range after another, and
// the writing thread only says how far it has written. Ranges are queued, never waited for: fsync in commit()
// still makes the file durable before it is published.
class OutputFile::Writeback {
public:
    // Bytes before `from` are queued already.
    Writeback(int fd, std::uint64_t from) : fd_(fd), from_(from), end_(from), thread_([this] { run(); }) {}
    ~Writeback() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        wake_.notify_one();
        thread_.join();
    }
    Writeback(const Writeback&) = delete;
    Writeback& operator=(const Writeback&) = delete;

    // Bytes [0, end) are written: queue what was not queued yet.
    void written_up_to(std::uint64_t end) {
        {
            std::lock_guard lock(mutex_);
            end_ = end;
        }
        wake_.notify_one();
    }

private:
    void run() {
        std::uint64_t from = from_;
        std::unique_lock lock(mutex_);
        for (;;) {
            wake_.wait(lock, [&] { return stop_ || end_ > from; });
            if (stop_) return;
            const std::uint64_t to = end_;
            lock.unlock();
            // Failure is harmless: fsync follows.
            ::sync_file_range(fd_, static_cast<off64_t>(from), static_cast<off64_t>(to - from), SYNC_FILE_RANGE_WRITE);
            from = to;
            lock.lock();
        }
    }

    const int fd_;
    const std::uint64_t from_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::uint64_t end_ = 0;
    bool stop_ = false;
    std::thread thread_;  // last: starts once the members it reads are initialised
};

void refuse_overwrite(const std::filesystem::path& dest, std::span<const std::filesystem::path> inputs) {
    struct stat d {};
    if (::stat(dest.c_str(), &d) != 0) return;  // does not exist yet (or a dangling link): nothing to clobber
    for (const auto& in : inputs) {
        struct stat s {};
        if (::stat(in.c_str(), &s) == 0 && s.st_dev == d.st_dev && s.st_ino == d.st_ino)
            fail(ErrorKind::InvalidArgument, "refusing to write " + quoted(dest) + ": it is the input " + quoted(in) +
                                                 " (same file, hard link or symlink)");
    }
}

Destination check_destination(const std::filesystem::path& dest, std::uint64_t bytes) {
    if (dest.empty()) fail(ErrorKind::InvalidArgument, "cannot write a file with an empty name");
    Destination d;
    d.path = dest;
    // A symbolic link is followed, as cp writes through one: its target is the file replaced, the link stays.
    for (int hops = 0;; ++hops) {
        struct stat l {};
        if (::lstat(d.path.c_str(), &l) != 0) {
            if (errno != ENOENT) fail(ErrorKind::Io, "cannot write " + quoted(dest) + ": " + std::strerror(errno));
            break;  // a new file (or a dangling link, whose target is created)
        }
        if (!S_ISLNK(l.st_mode)) {
            if (!S_ISREG(l.st_mode))
                fail(ErrorKind::Io, "cannot write " + quoted(dest) + ": " +
                                        (d.path == dest ? "it" : "its link target " + quoted(d.path)) + " is " +
                                        file_type_name(l.st_mode) + ", not a regular file");
            d.existing = l;
            break;
        }
        if (hops == 40) fail(ErrorKind::Io, "cannot write " + quoted(dest) + ": too many levels of symbolic links");
        std::error_code ec;
        const std::filesystem::path target = std::filesystem::read_symlink(d.path, ec);
        if (ec)
            fail(ErrorKind::Io,
                 "cannot write " + quoted(dest) + ": cannot read the link " + quoted(d.path) + ": " + ec.message());
        d.path = target.is_absolute() ? target : d.path.parent_path() / target;
    }
    d.dir = d.path.parent_path().empty() ? std::filesystem::path(".") : d.path.parent_path();
    struct stat ds {};
    if (::stat(d.dir.c_str(), &ds) != 0)
        fail(ErrorKind::Io,
             "cannot write " + quoted(dest) + ": the folder " + quoted(d.dir) + ": " + std::strerror(errno));
    if (!S_ISDIR(ds.st_mode))
        fail(ErrorKind::InvalidArgument, "cannot write " + quoted(dest) + ": " + quoted(d.dir) + " is not a folder");
    // The replacement is a new file in the folder, renamed over the old one: the folder must be writable. And, as
    // cp, we refuse to replace a file this user could not write in place.
    if (::faccessat(AT_FDCWD, d.dir.c_str(), W_OK | X_OK, AT_EACCESS) != 0)
        fail(ErrorKind::Io, "cannot write " + quoted(dest) + ": the folder " + quoted(d.dir) + " is not writable (" +
                                std::strerror(errno) + ")");
    if (d.existing) {
        if (::faccessat(AT_FDCWD, d.path.c_str(), W_OK, AT_EACCESS) != 0) {
            char mode[8];
            std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(d.existing->st_mode & 07777));
            fail(ErrorKind::Io, "cannot write " + quoted(dest) + ": " + std::strerror(errno) + " (mode " + mode +
                                    ", owner uid " + std::to_string(d.existing->st_uid) + ")");
        }
        // In a sticky folder (/tmp) only the file's or the folder's owner may replace it.
        const uid_t me = ::geteuid();
        if ((ds.st_mode & S_ISVTX) && me != 0 && d.existing->st_uid != me && ds.st_uid != me)
            fail(ErrorKind::Io, "cannot write " + quoted(dest) + ": it belongs to uid " +
                                    std::to_string(d.existing->st_uid) + " in the sticky folder " + quoted(d.dir));
    }
    check_free_space(d.dir, bytes, quoted(dest));
    return d;
}

void check_free_space(const std::filesystem::path& dir, std::uint64_t bytes, const std::string& what) {
    struct statvfs fs {};
    if (bytes == 0 || ::statvfs(dir.c_str(), &fs) != 0) return;  // unknown: the write itself will tell
    const std::uint64_t avail = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
    if (bytes > avail)
        fail(ErrorKind::Io, "cannot write " + what + ": needs " + human_bytes(static_cast<double>(bytes)) + ", " +
                                human_bytes(static_cast<double>(avail)) + " free on " + quoted(dir));
}

OutputFile::OutputFile(std::filesystem::path dest, std::span<const std::filesystem::path> inputs,
                       std::uint64_t expected_bytes, OutputSet* set)
    : dest_(std::move(dest)), target_(check_destination(dest_, expected_bytes)), set_(set) {
    refuse_overwrite(dest_, inputs);
    throw_if_stopped(dest_);
    const std::filesystem::path& dir = set_ ? set_->staging() : target_.dir;
    // 0666 less the umask for a new file, as cp and shells create them; an existing file's mode is restored on
    // commit.
    fd_ = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
    if (fd_ < 0 && set_) {
        // No O_TMPFILE: named in the staging folder from the start, which the set removes whole on failure.
        temp_ = set_->reserve(target_.path);
        fd_ = ::open(temp_.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
        if (fd_ < 0) {
            int err = errno;
            temp_.clear();
            fail(ErrorKind::Io, "cannot create a file in " + quoted(dir) + ": " + std::strerror(err));
        }
    }
    if (fd_ < 0) {
        // No O_TMPFILE on this file system: a named temporary, removed on error.
        std::random_device rd;
        for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
            temp_ = temp_name(target_, rd());
            fd_ = ::open(temp_.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
            if (fd_ < 0 && errno != EEXIST) break;
        }
        if (fd_ < 0) {
            int err = errno;
            temp_.clear();
            fail(ErrorKind::Io, "cannot create a file in " + quoted(dir) + ": " + std::strerror(err));
        }
    }
    buffer_.reserve(kBufferBytes);
}

OutputFile::~OutputFile() {
    writeback_.reset();
    if (fd_ >= 0) ::close(fd_);
    if (!committed_ && !temp_.empty()) ::unlink(temp_.c_str());
}

void OutputFile::io_error(const char* what, int err) const {
    fail(ErrorKind::Io, std::string(what) + " " + quoted(dest_) + ": " + std::strerror(err));
}

void OutputFile::write_all(const std::byte* p, std::size_t n) {
    while (n > 0) {
        throw_if_stopped(dest_);
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
    if (!writeback_) {
        try {
            writeback_ = std::make_unique<Writeback>(fd_, writeback_from_);
        } catch (const std::system_error&) {  // no thread to be had (a process limit): queue the range here
            ::sync_file_range(fd_, static_cast<off64_t>(writeback_from_),
                              static_cast<off64_t>(written_ - writeback_from_), SYNC_FILE_RANGE_WRITE);
            writeback_from_ = written_;
            return;
        }
    }
    writeback_->written_up_to(written_);
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

// Bytes of another file go through a window of the write buffer's size, read with pread (into memory not zeroed
// first) and written as they are. The kernel's own copy (copy_file_range, which on ext4 splices page by page) kept
// the data out of user space but made the file slower to publish: a 713 MB BF16 checkpoint kept as BF16 took
// 1.25-1.29x a durable copy with it, 0.95-0.99x without it, writeback every 4-16 MB in both (medians of 11
// alternating runs; docs/PERFORMANCE.md).
void OutputFile::copy_from(const MappedFile& file, std::uint64_t offset, std::uint64_t len) {
    flush();
    if (!copy_window_) copy_window_ = std::make_unique_for_overwrite<std::byte[]>(kBufferBytes);
    while (len > 0) {
        throw_if_stopped(dest_);  // a kill lands between windows
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(len, kBufferBytes));
        file.read(offset, {copy_window_.get(), n});
        write_all(copy_window_.get(), n);
        offset += n;
        len -= n;
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
    throw_if_stopped(dest_);
    if (const auto& old = target_.existing) {
        // The replacement keeps the replaced file's owner (where we may give it) and mode, as writing in place would.
        if ((old->st_uid != ::geteuid() || old->st_gid != ::getegid()) && ::fchown(fd_, old->st_uid, old->st_gid) != 0)
            errno = 0;  // not ours to give: the file stays ours
        if (::fchmod(fd_, old->st_mode & 07777) != 0) io_error("setting the mode of", errno);
    }
    writeback_.reset();  // its last range queued: fsync waits for every byte anyway
    if (::fsync(fd_) != 0) io_error("syncing", errno);
    // The destination may have changed since it was checked: never replace what is now a device or a folder.
    if (struct stat now{}; ::lstat(target_.path.c_str(), &now) == 0 && !S_ISREG(now.st_mode))
        fail(ErrorKind::Io,
             "cannot write " + quoted(dest_) + ": it became " + file_type_name(now.st_mode) + " while writing");
    if (set_) {
        // A member of a set: named in the staging folder; the set renames it at publish.
        if (temp_.empty()) {
            temp_ = set_->reserve(target_.path);
            std::string proc = "/proc/self/fd/" + std::to_string(fd_);
            if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, temp_.c_str(), AT_SYMLINK_FOLLOW) != 0) {
                int err = errno;
                temp_.clear();
                io_error("staging", err);
            }
        }
        set_->staged(temp_);
        committed_ = true;  // the set owns the staged file now
        if (progress_) progress_(position(), total_);
        return;
    }
    const std::filesystem::path& dir = target_.dir;
    if (temp_.empty()) {
        // Give the unnamed file a name next to the destination, then rename it over the destination.
        std::random_device rd;
        std::string proc = "/proc/self/fd/" + std::to_string(fd_);
        for (int attempt = 0; attempt < 16; ++attempt) {
            temp_ = temp_name(target_, rd());
            if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, temp_.c_str(), AT_SYMLINK_FOLLOW) == 0) break;
            int err = errno;
            temp_.clear();
            if (err != EEXIST) io_error("publishing", err);
        }
        if (temp_.empty()) io_error("publishing", EEXIST);
    }
    if (::rename(temp_.c_str(), target_.path.c_str()) != 0) {
        int err = errno;
        ::unlink(temp_.c_str());
        temp_.clear();
        io_error("publishing", err);
    }
    committed_ = true;
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    if (progress_) progress_(position(), total_);
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
