#include "io/output_set.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <optional>
#include <set>
#include <string_view>

#include "base/fail.h"
#include "headfuse/error.h"
#include "headfuse/file_io.h"

namespace headfuse {
namespace {

namespace fs = std::filesystem;

// Touched from signal handlers: lock-free atomics only.
static_assert(std::atomic<int>::is_always_lock_free);
std::atomic<int> g_stop{0};
std::atomic<int> g_writes{0};

constexpr std::string_view kStagingTag = ".headfuse-";
constexpr std::string_view kStagingSuffix = ".partial";
constexpr const char* kJournal = "publish";

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

std::string signal_name(int s) {
    switch (s) {
        case SIGINT: return "SIGINT";
        case SIGTERM: return "SIGTERM";
        case SIGHUP: return "SIGHUP";
        default: return "signal " + std::to_string(s);
    }
}

void fsync_dir(const fs::path& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    ::fsync(fd);
    ::close(fd);
}

// Another process with this id runs (or may: it is not ours to signal).
bool process_runs(long pid) {
    if (pid <= 0 || pid == ::getpid()) return false;
    return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// The journal's records: "put" staged-name final-path, "remove" path; each field ends with a NUL.
struct Journal {
    std::vector<std::pair<std::string, fs::path>> puts;
    std::vector<fs::path> removals;
};

std::string encode(const Journal& j) {
    std::string s;
    auto field = [&](std::string_view f) {
        s.append(f);
        s.push_back('\0');
    };
    for (const auto& [name, path] : j.puts) {
        field("put");
        field(name);
        field(path.string());
    }
    for (const fs::path& p : j.removals) {
        field("remove");
        field(p.string());
    }
    return s;
}

// Empty when the text is not a whole journal (a kill while it was written, before its fsync: not committed).
std::optional<Journal> decode(const std::string& s) {
    std::vector<std::string> f;
    std::size_t at = 0;
    while (at < s.size()) {
        const std::size_t end = s.find('\0', at);
        if (end == std::string::npos) return std::nullopt;
        f.push_back(s.substr(at, end - at));
        at = end + 1;
    }
    Journal j;
    for (std::size_t i = 0; i < f.size();) {
        if (f[i] == "put" && i + 2 < f.size()) {
            j.puts.emplace_back(f[i + 1], f[i + 2]);
            i += 3;
        } else if (f[i] == "remove" && i + 1 < f.size()) {
            j.removals.emplace_back(f[i + 1]);
            i += 2;
        } else {
            return std::nullopt;
        }
    }
    return j;
}

// The renames and removals of a committed journal; a member already renamed (a second run) is skipped. Error
// naming the file when a rename fails.
void apply(const fs::path& staging, const Journal& j) {
    std::set<fs::path> dirs;
    std::set<fs::path> finals;
    for (const auto& [name, final_path] : j.puts) {
        const fs::path from = staging / name;
        if (::rename(from.c_str(), final_path.c_str()) != 0 && errno != ENOENT)
            fail(ErrorKind::Io, "publishing " + quoted(final_path) + ": " + std::strerror(errno) +
                                    "; the next write of this set finishes its publication from " + quoted(staging));
        dirs.insert(final_path.parent_path());
        finals.insert(final_path.lexically_normal());
    }
    for (const fs::path& old : j.removals) {
        if (finals.contains(old.lexically_normal())) continue;
        if (::unlink(old.c_str()) != 0 && errno != ENOENT)
            fail(ErrorKind::Io, "removing the replaced " + quoted(old) + ": " + std::strerror(errno));
        dirs.insert(old.parent_path());
    }
    for (const fs::path& d : dirs) fsync_dir(d.empty() ? fs::path(".") : d);
}

std::string read_all(const fs::path& p) {
    std::string s;
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return s;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        s.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return s;
}

}  // namespace

void request_stop(int signal) noexcept { g_stop.store(signal == 0 ? -1 : signal, std::memory_order_relaxed); }
int stop_requested() noexcept { return g_stop.load(std::memory_order_relaxed); }
bool write_in_progress() noexcept { return g_writes.load(std::memory_order_relaxed) > 0; }

WriteInProgress::WriteInProgress() noexcept { g_writes.fetch_add(1, std::memory_order_relaxed); }
WriteInProgress::~WriteInProgress() { g_writes.fetch_sub(1, std::memory_order_relaxed); }

void throw_if_stopped(const fs::path& dest) {
    if (const int s = stop_requested(); s != 0)
        fail(ErrorKind::Io, "writing " + quoted(dest) + ": interrupted by " + signal_name(s) +
                                "; nothing published, temporaries removed");
}

std::size_t OutputSet::recover(const fs::path& folder, const std::string& stem) {
    const std::string prefix = "." + stem + std::string(kStagingTag);
    std::size_t found = 0;
    std::error_code ec;
    for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.starts_with(prefix) || !name.ends_with(kStagingSuffix)) continue;
        const std::string pid = name.substr(prefix.size(), name.size() - prefix.size() - kStagingSuffix.size());
        if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos || pid.size() > 9) continue;
        if (process_runs(std::stol(pid))) continue;  // a write in progress, not a leftover
        ++found;
        const fs::path staging = it->path();
        if (fs::exists(staging / kJournal, ec)) {
            // Killed while publishing: every member was durable before the journal was, so finish.
            if (const std::optional<Journal> j = decode(read_all(staging / kJournal))) apply(staging, *j);
        }
        std::error_code rm;
        fs::remove_all(staging, rm);
    }
    if (found > 0) fsync_dir(folder);
    return found;
}

OutputSet::OutputSet(fs::path folder, std::string stem) : folder_(std::move(folder)) {
    if (folder_.empty()) folder_ = ".";
    recover(folder_, stem);
    staging_ =
        folder_ / ("." + stem + std::string(kStagingTag) + std::to_string(::getpid()) + std::string(kStagingSuffix));
    if (::mkdir(staging_.c_str(), 0700) != 0)
        fail(ErrorKind::Io, "cannot create the staging folder " + quoted(staging_) + ": " + std::strerror(errno));
}

OutputSet::~OutputSet() {
    if (published_) return;
    std::error_code ec;
    fs::remove_all(staging_, ec);
}

fs::path OutputSet::reserve(const fs::path& final_path) {
    // The rename at publish must stay on one file system (a member whose destination is a symbolic link to
    // another one cannot be published atomically).
    struct stat a {
    }, b{};
    const fs::path dir = final_path.parent_path().empty() ? fs::path(".") : final_path.parent_path();
    if (::stat(staging_.c_str(), &a) == 0 && ::stat(dir.c_str(), &b) == 0 && a.st_dev != b.st_dev)
        fail(ErrorKind::InvalidArgument, "cannot write " + quoted(final_path) + " as part of a set in " +
                                             quoted(folder_) + ": it is on another file system");
    Member m;
    m.staged = staging_ / (std::to_string(members_.size()) + "." + final_path.filename().string());
    m.final_path = final_path;
    members_.push_back(m);
    return m.staged;
}

void OutputSet::staged(const fs::path& staged) {
    for (Member& m : members_)
        if (m.staged == staged) m.ready = true;
}

void OutputSet::remove_on_publish(fs::path old) { removals_.push_back(std::move(old)); }

void OutputSet::publish() {
    Journal j;
    for (const Member& m : members_) {
        if (!m.ready) fail(ErrorKind::Io, "publishing " + quoted(m.final_path) + ": it was not written");
        // Absolute: a later run that finishes the publication may start in another working folder.
        j.puts.emplace_back(m.staged.filename().string(), fs::absolute(m.final_path));
    }
    for (const fs::path& old : removals_) j.removals.push_back(fs::absolute(old));
    throw_if_stopped(members_.empty() ? folder_ : members_.front().final_path);
    fsync_dir(staging_);
    const std::string text = encode(j);
    const fs::path journal = staging_ / kJournal;
    const int fd = ::open(journal.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) fail(ErrorKind::Io, "cannot write " + quoted(journal) + ": " + std::strerror(errno));
    std::size_t done = 0;
    int err = 0;
    while (done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            err = n < 0 ? errno : ENOSPC;
            break;
        }
        done += static_cast<std::size_t>(n);
    }
    if (err == 0 && ::fsync(fd) != 0) err = errno;
    ::close(fd);
    if (err != 0) fail(ErrorKind::Io, "cannot write " + quoted(journal) + ": " + std::strerror(err));
    fsync_dir(staging_);
    // Committed: from here the set is published, now or by the next run.
    published_ = true;
    apply(staging_, j);
    std::error_code ec;
    fs::remove(journal, ec);
    fs::remove_all(staging_, ec);
    fsync_dir(folder_);
}

}  // namespace headfuse
