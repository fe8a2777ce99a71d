// Opening files by their type: headfuse reads and writes regular files only, and never blocks finding out.
#pragma once

#include <filesystem>

namespace headfuse {

// "a FIFO", "a character device", ... for a stat() mode.
const char* file_type_name(unsigned mode);

// A read-only descriptor of `path`, which must be a regular file: Error (naming the file and what it is) for a
// FIFO, device, socket or directory, without blocking in open(). The caller closes it.
int open_regular_file(const std::filesystem::path& path);

}  // namespace headfuse
