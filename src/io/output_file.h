// An output file published atomically: written to an unnamed temporary in the destination's folder
// (O_TMPFILE; a named, removed-on-error temporary where the file system lacks it), fsynced, then renamed
// over the destination. A process killed mid-write leaves the destination as it was. A symbolic link is
// written through (its target replaced, the link kept); the replaced file's mode (and owner, where allowed) is
// kept; a destination that is not a regular file, or that this user could not write, is refused before any work.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "gguf/write_plan.h"
#include "headfuse/gguf.h"
#include "io/output_set.h"

namespace headfuse {

// Error if `dest` names the same file as one of `inputs` (same path, a hard link or a symlink to it).
void refuse_overwrite(const std::filesystem::path& dest, std::span<const std::filesystem::path> inputs);

// Where a write to a destination lands, as check_destination found it.
struct Destination {
    std::filesystem::path path;           // the file replaced: the destination, or its symbolic link's target
    std::filesystem::path dir;            // its folder
    std::optional<struct stat> existing;  // the file there now, if any (always a regular file)
};

// The checks of check_output_path (headfuse/file_io.h), returning where the file goes.
Destination check_destination(const std::filesystem::path& dest, std::uint64_t bytes);

// Error "cannot write WHAT: needs 12.40 GB, 3.10 GB free on 'DIR'" unless the file system of `dir` has `bytes`
// free for this user (nothing is checked for 0 bytes or where statvfs fails).
void check_free_space(const std::filesystem::path& dir, std::uint64_t bytes, const std::string& what);

class OutputFile final : public ByteSink {
public:
    // `expected_bytes`: the size about to be written, checked against the free space first (0: not checked).
    // With a `set`, the file is a member of it: written in its staging folder, and commit() only stages it (the
    // set publishes its members together).
    OutputFile(std::filesystem::path dest, std::span<const std::filesystem::path> inputs,
               std::uint64_t expected_bytes = 0, OutputSet* set = nullptr);
    ~OutputFile() override;  // removes the temporary unless committed
    OutputFile(const OutputFile&) = delete;
    OutputFile& operator=(const OutputFile&) = delete;

    void write(std::span<const std::byte> bytes) override;
    void copy_from(const MappedFile& file, std::uint64_t offset, std::uint64_t len) override;
    // Pads with zeros to a multiple of `alignment`.
    void pad_to(std::uint64_t alignment);
    std::uint64_t position() const noexcept { return written_ + buffer_.size(); }

    void set_progress(ProgressFn fn, std::uint64_t total);
    // Flushes, fsyncs and renames over the destination (a set's member: links it into the staging folder). Every
    // write checks for a stop (request_stop) first and throws if one was asked for.
    void commit();

private:
    void flush();
    void write_all(const std::byte* p, std::size_t n);
    [[noreturn]] void io_error(const char* what, int err) const;
    void report();
    void start_writeback();

    class Writeback;  // hands written ranges to the disk from a thread of its own

    WriteInProgress in_progress_;  // first: counted before any temporary exists
    std::filesystem::path dest_;   // as given, for messages
    Destination target_;           // declared after dest_: initialised from it
    OutputSet* set_ = nullptr;
    std::filesystem::path temp_;  // named temporary (fallback), empty with O_TMPFILE
    int fd_ = -1;
    bool committed_ = false;
    std::uint64_t written_ = 0;
    std::uint64_t writeback_from_ = 0;      // bytes before it have been handed to the disk
    std::unique_ptr<Writeback> writeback_;  // started with the first range; stopped before fsync and close
    std::vector<std::byte> buffer_;
    std::unique_ptr<std::byte[]> copy_window_;  // copy_from's, allocated at its first call
    ProgressFn progress_;
    std::uint64_t total_ = 0;
    std::uint64_t next_report_ = 0;
};

// Holds a tensor's producer to its promise of exactly `nbytes` bytes, passing them on to `out`.
class CountingSink final : public ByteSink {
public:
    CountingSink(OutputFile& out, std::string tensor, std::uint64_t nbytes)
        : out_(out), tensor_(std::move(tensor)), want_(nbytes) {}
    void write(std::span<const std::byte> bytes) override;
    void copy_from(const MappedFile& file, std::uint64_t offset, std::uint64_t len) override;
    // Error unless exactly nbytes were produced.
    void finish() const;

private:
    void take(std::uint64_t n);
    OutputFile& out_;
    std::string tensor_;
    std::uint64_t want_;
    std::uint64_t done_ = 0;
};

}  // namespace headfuse
