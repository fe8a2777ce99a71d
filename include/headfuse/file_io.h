// headfuse: whole files in and out, with the rules every headfuse writer follows: inputs must be regular files
// (a FIFO or device is refused at once, never waited on); outputs are checked before any work, written to an
// unnamed temporary in the destination's folder, fsynced and renamed over the destination, so that a failure
// leaves nothing behind and an existing destination untouched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

namespace headfuse {

// Error unless a file of `bytes` bytes can be written at `path` (every writer checks this before it starts; call
// it to fail before other work): an existing `path`, or the target of the symbolic link it is, must be a regular
// file this user may write; its folder must exist and be writable; and unless `bytes` is 0 the folder's file
// system must have `bytes` free ("needs 12.40 GB, 3.10 GB free on '/x'").
void check_output_path(const std::filesystem::path& path, std::uint64_t bytes = 0);

// Writes `bytes` to `path` atomically (temporary, fsync, rename), refusing to overwrite any of `inputs`.
void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes,
                           std::span<const std::filesystem::path> inputs = {});

// Stopping writes (for a signal handler: SIGINT, SIGTERM). request_stop makes every write in progress throw Error
// (ErrorKind::Io, "interrupted by SIGINT") at its next check, which comes at least every 32 MiB written: its
// temporaries are removed and nothing of its output (a file, a split set, a checkpoint folder) is published; an
// existing destination keeps its old content. A set whose publication had begun is finished instead (see
// docs/ROBUSTNESS.md). All three are async-signal-safe (lock-free atomics) and never exit.
void request_stop(int signal) noexcept;
// The signal given to request_stop, 0 if none.
int stop_requested() noexcept;
// Whether an output file or set is being written now; a handler that finds none may end the process at once.
bool write_in_progress() noexcept;

// The whole content of `path`, which must be a regular file. Error naming the file when it cannot be read.
std::string read_file(const std::filesystem::path& path);

}  // namespace headfuse
