// headfuse: the GGUF writer (internal; defined in gguf_write.cpp). The public writers (fuse, split,
// PerHeadModel::save, write_random_init) describe their output as a GgufWriter and write() streams it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "gguf/write_plan.h"
#include "headfuse/gguf.h"

namespace headfuse {

// A GGUF file described before a byte is written: metadata, then tensors whose sizes are all known.
class GgufWriter {
public:
    Metadata metadata;
    std::uint32_t alignment = kDefaultAlignment;  // written as general.alignment when not 32
    ShardLimits shards;                           // when active, write() writes a split set

    // Appends a tensor. nbytes is computed from type and shape; Error on a rule ggml's reader enforces.
    void add_tensor(std::string name, std::uint32_t type, std::span<const std::uint64_t> ne,
                    std::function<void(ByteSink&)> produce);

    // The header: everything up to the data section, padding included.
    std::vector<std::byte> header() const;
    // Total bytes of the file.
    std::uint64_t file_size() const;

    // Writes the file to a temporary in the destination's folder, fsyncs it and renames it over `path`.
    // On any error nothing is left behind and an existing `path` is untouched.
    // `inputs` are files that must not be overwritten (same path, hard link or symlink): Error if `path` is one.
    // With `split` active, `path` is the prefix (a trailing ".gguf" dropped) of a split set, as
    // llama-gguf-split writes it: shard 0 holds the metadata and split.* keys, the others only split.*
    // (and general.alignment when not 32). The shards are an OutputSet (io/output_set.h): all staged before any
    // is published, published together, and the shards of an older set with this prefix and another shard
    // count removed with the publication; a failure or a stop publishes nothing. Returns the files written.
    std::vector<std::filesystem::path> write(const std::filesystem::path& path,
                                             std::span<const std::filesystem::path> inputs = {},
                                             const ProgressFn& progress = {}) const;

private:
    std::uint64_t file_size(std::uint64_t header_size) const;
    std::vector<std::byte> header_of(const Metadata& md, std::span<const TensorPlan> tensors) const;
    std::vector<std::filesystem::path> write_split(const std::filesystem::path& prefix,
                                                   std::span<const std::filesystem::path> inputs,
                                                   const ProgressFn& progress) const;

    std::vector<TensorPlan> tensors_;
    std::unordered_set<std::string> names_;  // duplicate names found in O(1), not by a scan per tensor
};

}  // namespace headfuse
