// A set of output files published as a whole or not at all: the shards of a GGUF split set, the files of a
// safetensors checkpoint folder.
//
// Every member is written into a staging folder beside the destinations (".STEM.headfuse-PID.partial"), fsynced
// and linked there; publish() then writes a journal into the staging folder (the commit point: fsynced, with the
// folder), renames every member over its destination, removes the old files the set replaces, fsyncs the
// destination folders, and removes the journal and the staging folder. Until the journal is durable, a failure
// or a stop (request_stop) removes the staging folder and leaves the destinations as they were; a kill -9 leaves
// the staging folder, which the next OutputSet on the same folder and stem removes. A journal found by the next
// OutputSet means the kill came during the renames: the publication is finished from the journal.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace headfuse {

// Counts a write in progress for write_in_progress() while it lives.
class WriteInProgress {
public:
    WriteInProgress() noexcept;
    ~WriteInProgress();
    WriteInProgress(const WriteInProgress&) = delete;
    WriteInProgress& operator=(const WriteInProgress&) = delete;
};

// Error (ErrorKind::Io) "writing 'DEST': interrupted by SIGINT; nothing published" if request_stop was called.
void throw_if_stopped(const std::filesystem::path& dest);

class OutputSet {
public:
    // Members go into `folder` (which must exist); `stem` names the staging folder. First finishes or removes what
    // an interrupted run with the same folder and stem left (recover).
    OutputSet(std::filesystem::path folder, std::string stem);
    ~OutputSet();  // unless published: removes the staging folder and the members staged in it
    OutputSet(const OutputSet&) = delete;
    OutputSet& operator=(const OutputSet&) = delete;

    const std::filesystem::path& staging() const noexcept { return staging_; }
    // The staging name of the next member, for `final_path` (the file it replaces at publish).
    std::filesystem::path reserve(const std::filesystem::path& final_path);
    // A member written and fsynced at `staged` (a name reserve() gave) that publish() renames to its final path.
    void staged(const std::filesystem::path& staged);
    // A file the set replaces although no member has its name (a shard of an older set, a stale index).
    void remove_on_publish(std::filesystem::path old);
    // The commit: the journal, the renames, the removals. Error (nothing published) if stopped before the journal.
    void publish();

    // What interrupted runs left in `folder` for `stem`: staging folders of processes that no longer run are
    // removed, or, holding a journal, published. Returns how many were found.
    static std::size_t recover(const std::filesystem::path& folder, const std::string& stem);

private:
    struct Member {
        std::filesystem::path staged, final_path;
        bool ready = false;
    };
    WriteInProgress in_progress_;
    std::filesystem::path folder_, staging_;
    std::vector<Member> members_;
    std::vector<std::filesystem::path> removals_;
    bool published_ = false;
};

}  // namespace headfuse
