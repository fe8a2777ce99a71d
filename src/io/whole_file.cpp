#include "headfuse/file_io.h"

#include "io/mapped_file.h"
#include "io/output_file.h"

namespace headfuse {

void check_output_path(const std::filesystem::path& path, std::uint64_t bytes) { check_destination(path, bytes); }

void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes,
                           std::span<const std::filesystem::path> inputs) {
    OutputFile out(path, inputs, bytes.size());
    out.write(bytes);
    out.commit();
}

std::string read_file(const std::filesystem::path& path) {
    const MappedFile f = MappedFile::open(path);
    return std::string(reinterpret_cast<const char*>(f.bytes().data()), f.bytes().size());
}

}  // namespace headfuse
