#include "edit/spill.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "base/fail.h"
#include "headfuse/error.h"
#include "headfuse/gguf.h"
#include "io/mapped_file.h"
#include "io/output_file.h"
#include "model/view_rows.h"

namespace headfuse {
namespace {

// Bytes of output rows computed per step: the edit's whole working memory, whatever the tensor's size.
constexpr std::uint64_t kSpillWindowBytes = std::uint64_t{1} << 20;
// Each tensor starts at a multiple of this in the spill, so that its F32 rows are aligned as in a GGUF file.
constexpr std::uint64_t kSpillAlignment = 64;

std::string spill_name(const std::filesystem::path& dir) {
    return "the temporary file for the edited tensors in '" + dir.string() + "'";
}

// An unnamed file in `dir`: O_TMPFILE, or where the file system lacks it a named file removed at once.
int create_unnamed(const std::filesystem::path& dir) {
    int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
    std::string name = (dir / "headfuse-spill-XXXXXX").string();
    fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0) fail(ErrorKind::Io, "cannot create " + spill_name(dir) + ": " + std::strerror(errno));
    ::unlink(name.c_str());
    return fd;
}

struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
};

void write_at(int fd, std::span<const std::byte> bytes, std::uint64_t offset, const std::filesystem::path& dir) {
    while (!bytes.empty()) {
        const ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            fail(ErrorKind::Io, "cannot write " + spill_name(dir) + ": " + std::strerror(n < 0 ? errno : ENOSPC));
        bytes = bytes.subspan(static_cast<std::size_t>(n));
        offset += static_cast<std::uint64_t>(n);
    }
}

}  // namespace

void Spill::add(TensorView* slot, std::string name, DType type, std::span<const std::uint64_t> ne, RowsFn rows) {
    std::uint64_t nbytes = row_bytes(type, ne[0]);
    for (std::size_t i = 1; i < ne.size(); ++i) nbytes *= ne[i];
    planned_.push_back({slot, std::move(name), type, {ne.begin(), ne.end()}, nbytes, std::move(rows)});
}

std::shared_ptr<const void> Spill::write() {
    if (planned_.empty()) return nullptr;
    std::error_code ec;
    const std::filesystem::path dir = std::filesystem::temp_directory_path(ec);
    if (ec) {
        const char* env = std::getenv("TMPDIR");
        fail(ErrorKind::Io, "cannot create the temporary file for the edited tensors: the temporary folder" +
                                (env ? " '" + std::string(env) + "' ($TMPDIR)" : std::string()) +
                                " is unusable: " + ec.message());
    }
    // Where each tensor goes, and the room that takes, checked before any row is computed.
    std::vector<std::uint64_t> offsets;
    std::uint64_t end = 0;
    for (const Planned& p : planned_) {
        const std::uint64_t at = (end + kSpillAlignment - 1) / kSpillAlignment * kSpillAlignment;
        offsets.push_back(at);
        end = at + p.nbytes;
    }
    check_free_space(dir, end, spill_name(dir));
    const FdCloser fd{create_unnamed(dir)};
    std::vector<std::byte> window;
    for (std::size_t i = 0; i < planned_.size(); ++i) {
        const Planned& p = planned_[i];
        const std::uint64_t at = offsets[i];
        const std::uint64_t rb = row_bytes(p.type, p.ne[0]), n_rows = p.nbytes / std::max<std::uint64_t>(1, rb);
        const std::uint64_t step = std::max<std::uint64_t>(1, kSpillWindowBytes / std::max<std::uint64_t>(1, rb));
        for (std::uint64_t r = 0; r < n_rows; r += step) {
            const std::uint64_t n = std::min(step, n_rows - r);
            window.resize(n * rb);
            p.rows(r, n, window);
            write_at(fd.fd, window, at + r * rb, dir);
        }
    }
    if (::ftruncate(fd.fd, static_cast<off_t>(end)) != 0)  // the padding after a last tensor without rows
        fail(ErrorKind::Io, "cannot write " + spill_name(dir) + ": " + std::strerror(errno));
    // Mapped through /proc, which opens the unnamed file again; the views then lie in a MappedFile like any
    // input's, and the writer copies them as it copies an input's.
    auto file = std::make_shared<const MappedFile>(MappedFile::open("/proc/self/fd/" + std::to_string(fd.fd)));
    for (std::size_t i = 0; i < planned_.size(); ++i) {
        Planned& p = planned_[i];
        *p.slot = ViewAccess::in_file(std::move(p.name), p.type, p.ne, file->bytes().subspan(offsets[i], p.nbytes),
                                      file.get(), offsets[i]);
    }
    planned_.clear();
    return file;
}

}  // namespace headfuse
