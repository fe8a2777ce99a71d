// Multi-file outputs through the CLI: a checkpoint folder is written whole (a folder that is not empty is refused
// unless --force, which replaces exactly the old checkpoint's files), a reader refuses a folder holding two
// checkpoints, export refuses per-layer head counts, every heads verb writes split sets (llama.cpp loads them,
// and they hold fuse's bytes), and a split set or a checkpoint is published whole or not at all: SIGINT and
// SIGTERM leave the old files and no temporary, a kill -9 leaves a staging folder that the next run removes.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <map>
#include <thread>

#include "headfuse/file_io.h"
#include "io/output_set.h"
#include "support/judge.h"
#include "support/models.h"

namespace {

namespace fs = std::filesystem;
using headfuse::test::list_dir, headfuse::test::read_bytes, headfuse::test::run_cli, headfuse::test::RunResult,
    headfuse::test::TempDir, headfuse::test::Args;
using Clock = std::chrono::steady_clock;

// A small fused model (4 heads, 2 kv, 3 layers): 1.5 MB of F32.
fs::path small_fused(const TempDir& dir, const std::string& name, int seed, const char* kv = "2") {
    const fs::path ph = dir / (name + ".ph.gguf"), out = dir / (name + ".gguf");
    RunResult r = run_cli({"init",     "-q",        "-o",     ph.string(),    "--d-model",
                           "128",      "--n-heads", "4",      "--n-kv-heads", kv,
                           "--d-head", "32",        "--d-ff", "256",          "--n-layers",
                           "3",        "--vocab",   "512",    "--seed",       std::to_string(seed)});
    EXPECT_EQ(r.status, 0) << r.err;
    r = run_cli({"fuse", "-q", ph.string(), "-o", out.string()});
    EXPECT_EQ(r.status, 0) << r.err;
    return out;
}

// The kill tests' model: d_model 1024, 16 heads (4 kv) x 64, d_ff 2816, 2 layers, vocab 8192 = 157 MB of F32, long
// enough to write that a signal lands mid-set.
fs::path large_fused(const TempDir& dir) {
    const fs::path ph = dir / "large.ph.gguf", out = dir / "large.gguf";
    RunResult r = run_cli({"init", "-q", "-o", ph.string(), "--d-model", "1024", "--n-heads", "16", "--n-kv-heads", "4",
                           "--d-ff", "2816", "--n-layers", "2", "--vocab", "8192", "--seed", "11"});
    EXPECT_EQ(r.status, 0) << r.err;
    r = run_cli({"fuse", "-q", ph.string(), "-o", out.string()});
    EXPECT_EQ(r.status, 0) << r.err;
    fs::remove(ph);
    return out;
}

bool one_line(const std::string& s) {
    return !s.empty() && s.back() == '\n' && std::count(s.begin(), s.end(), '\n') == 1;
}

// Every file of a folder and its bytes (a snapshot to compare with later).
std::map<std::string, std::vector<std::byte>> snapshot(const fs::path& dir) {
    std::map<std::string, std::vector<std::byte>> out;
    for (const std::string& n : list_dir(dir)) out[n] = read_bytes(dir / n);
    return out;
}

// `verify PH FUSED`: the same tensors and logits (exit 0) or not.
int verify(const fs::path& per_head, const fs::path& fused) {
    return run_cli({"verify", per_head.string(), fused.string()}).status;
}

// ---------------------------------------------------------------------------------------------------------------
// 1. A checkpoint folder is written whole.

TEST(ExportFolder, NotEmptyIsRefusedUnlessForcedAndForceReplacesTheWholeCheckpoint) {
    TempDir dir;
    const fs::path donor = small_fused(dir, "donor", 1), s = small_fused(dir, "s", 2);
    const fs::path st = dir / "st2";
    RunResult r = run_cli({"export", "-q", donor.string(), "-o", st.string(), "--max-shard-size", "300000"});
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(fs::exists(st / "model.safetensors.index.json"));
    std::ofstream(st / "tokenizer.json") << "{}";  // a stale tokenizer file
    std::ofstream(st / "NOTES.txt") << "mine";     // not a checkpoint file: kept
    const auto before = snapshot(st);

    // Not empty, no --force: refused by name, nothing changed.
    r = run_cli({"export", "-q", s.string(), "-o", st.string()});
    EXPECT_EQ(r.status, 1);
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find("'" + st.string() + "' is not empty"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
    EXPECT_EQ(snapshot(st), before);

    // --force: exactly the new checkpoint, the old shards, index and tokenizer file gone, NOTES.txt kept.
    r = run_cli({"export", "-q", s.string(), "-o", st.string(), "--force"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(list_dir(st), (std::vector<std::string>{"NOTES.txt", "config.json", "model.safetensors"}));
    // The folder now loads the new weights: its fuse is s (tensors and logits), not the donor.
    const fs::path back = dir / "back.gguf", s_ph = dir / "s.split.gguf", donor_ph = dir / "donor.split.gguf";
    ASSERT_EQ(run_cli({"fuse", "-q", st.string(), "-o", back.string()}).status, 0);
    ASSERT_EQ(run_cli({"split", "-q", s.string(), "-o", s_ph.string()}).status, 0);
    ASSERT_EQ(run_cli({"split", "-q", donor.string(), "-o", donor_ph.string()}).status, 0);
    EXPECT_EQ(verify(s_ph, back), 0);
    EXPECT_NE(verify(donor_ph, back), 0);

    // The other order: a single file replaced by shards and an index; model.safetensors goes.
    r = run_cli({"export", "-q", donor.string(), "-o", st.string(), "--max-shard-size", "300000", "--force"});
    ASSERT_EQ(r.status, 0) << r.err;
    for (const std::string& n : list_dir(st))
        EXPECT_TRUE(n == "NOTES.txt" || n == "config.json" || n == "model.safetensors.index.json" ||
                    (n.starts_with("model-") && n.ends_with(".safetensors")))
            << n;
    EXPECT_FALSE(fs::exists(st / "model.safetensors"));
    ASSERT_EQ(run_cli({"fuse", "-q", st.string(), "-o", back.string()}).status, 0);
    EXPECT_EQ(verify(donor_ph, back), 0);
}

TEST(ExportFolder, ForceNeverRemovesAnInput) {
    TempDir dir;
    const fs::path s = small_fused(dir, "s", 2), st = dir / "st";
    ASSERT_EQ(run_cli({"export", "-q", s.string(), "-o", st.string(), "--max-shard-size", "300000"}).status, 0);
    const auto before = snapshot(st);
    // The sharded checkpoint exported over itself as one file would remove its own shards.
    const RunResult r = run_cli({"export", "-q", st.string(), "-o", st.string(), "--force"});
    EXPECT_EQ(r.status, 1);
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find("it is the input"), std::string::npos) << r.err;
    EXPECT_EQ(snapshot(st), before);
}

TEST(ImportFolder, BothASingleFileAndAnIndexAreRefusedByName) {
    TempDir dir;
    const fs::path a = small_fused(dir, "a", 1), st = dir / "st", one = dir / "one";
    ASSERT_EQ(run_cli({"export", "-q", a.string(), "-o", st.string(), "--max-shard-size", "300000"}).status, 0);
    ASSERT_EQ(run_cli({"export", "-q", a.string(), "-o", one.string()}).status, 0);
    fs::copy_file(one / "model.safetensors", st / "model.safetensors");
    const RunResult r = run_cli({"fuse", "-q", st.string(), "-o", (dir / "x.gguf").string()});
    EXPECT_EQ(r.status, 1);
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find("both model.safetensors and model.safetensors.index.json"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "x.gguf"));
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Per-layer head counts have no Hugging Face or TransformerLens config.

TEST(ExportFolder, UnevenlyPrunedModelIsRefusedByName) {
    TempDir dir;
    const fs::path m = small_fused(dir, "m", 3), pruned = dir / "pruned.gguf";
    ASSERT_EQ(run_cli({"heads", "prune", "-q", m.string(), "-o", pruned.string(), "--heads", "1:0,1:1"}).status, 0);
    for (const char* format : {"hf", "transformer-lens"}) {
        SCOPED_TRACE(format);
        const fs::path out = dir / (std::string("out-") + format);
        const RunResult r = run_cli({"export", "-q", pruned.string(), "-o", out.string(), "--format", format});
        EXPECT_EQ(r.status, 1);
        EXPECT_TRUE(one_line(r.err)) << r.err;
        EXPECT_NE(r.err.find("layer 1 has 2 heads (1 kv), d_ff 256, layer 0 4 heads (2 kv)"), std::string::npos)
            << r.err;
        EXPECT_NE(r.err.find("per-layer head counts"), std::string::npos) << r.err;
        EXPECT_FALSE(fs::exists(out));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Every heads verb writes a split set.

TEST(HeadsSplitSets, EveryWritingVerbWritesASetThatHoldsItsSingleFile) {
    TempDir dir;
    const fs::path m = small_fused(dir, "m", 4), mha = small_fused(dir, "mha", 5, "4"),
                   donor = small_fused(dir, "d", 6);
    const std::vector<std::pair<std::string, Args>> verbs = {
        {"ablate", {"heads", "ablate", m.string(), "--heads", "0:1,2:3"}},
        {"prune", {"heads", "prune", m.string(), "--heads", "0:0,0:1"}},
        {"pool-kv", {"heads", "pool-kv", mha.string(), "--kv-heads", "2"}},
        {"transplant", {"heads", "transplant", m.string(), "--from", donor.string(), "--heads", "1:0=2:3"}},
    };
    for (const auto& [verb, args] : verbs) {
        SCOPED_TRACE(verb);
        const fs::path one = dir / (verb + ".gguf"), prefix = dir / (verb + "-set");
        Args a = args;
        a.insert(a.end(), {"-q", "-o", one.string()});
        RunResult r = run_cli(a);
        ASSERT_EQ(r.status, 0) << r.err;
        a = args;
        a.insert(a.end(), {"-o", prefix.string(), "--split-max-tensors", "8"});
        r = run_cli(a);
        ASSERT_EQ(r.status, 0) << r.err;
        EXPECT_NE(r.out.find("-00001-of-"), std::string::npos) << r.out;
        std::vector<std::string> shards;
        for (const std::string& n : list_dir(dir.path()))
            if (n.starts_with(verb + "-set-")) shards.push_back(n);
        ASSERT_GT(shards.size(), 1u);
        // The set holds the single file's model: fused back into one file, the same bytes.
        const fs::path merged = dir / (verb + "-merged.gguf");
        r = run_cli({"fuse", "-q", (dir / shards.front()).string(), "-o", merged.string()});
        ASSERT_EQ(r.status, 0) << r.err;
        EXPECT_TRUE(read_bytes(merged) == read_bytes(one));
        if (verb == "ablate") {
            std::string why;
            if (!headfuse::test::judges_available(&why)) {
                std::printf("[ skipped llama.cpp ] %s\n", why.c_str());
            } else {
                EXPECT_TRUE(headfuse::test::llama_loads((dir / shards.front()).string(), &why)) << why;
            }
        }
    }
    for (const std::string& n : list_dir(dir.path())) EXPECT_FALSE(n.starts_with(".")) << n;  // no temporary left
}

// ---------------------------------------------------------------------------------------------------------------
// 4. A set is published whole or not at all.

// Waits until `dir` holds a staging folder (".STEM.headfuse-PID.partial") with a staged member: the command is in
// the middle of writing its set. False if the process ends first.
bool wait_mid_set(const fs::path& dir, const std::string& stem, pid_t pid) {
    const std::string staging = "." + stem + ".headfuse-" + std::to_string(pid) + ".partial";
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    while (Clock::now() < deadline) {
        std::error_code ec;
        if (fs::is_directory(dir / staging, ec) && !list_dir(dir / staging).empty()) return true;
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) return false;
        std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    return false;
}

class StopDuringSet : public ::testing::TestWithParam<int> {};

TEST_P(StopDuringSet, SplitSetFuseLeavesTheOldSetAndNoTemporary) {
    const int sig = GetParam();
    TempDir in, out;
    const fs::path large = large_fused(in);
    // An older set with the same prefix and the same shard names must survive the interruption.
    const fs::path old = small_fused(in, "old", 7);
    ASSERT_EQ(run_cli({"fuse", "-q", old.string(), "-o", (out / "set").string(), "--split-max-size", "1M"}).status, 0);
    const auto before = snapshot(out.path());
    const pid_t pid = headfuse::test::spawn_cli(
        {"fuse", "-q", large.string(), "-o", (out / "set").string(), "--type", "q8_0", "--split-max-size", "10M"});
    ASSERT_GT(pid, 0);
    const bool mid = wait_mid_set(out.path(), "set", pid);
    ::kill(pid, sig);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(mid) << "the command ended before a shard was staged";
    if (sig == SIGKILL) {
        // kill -9: the staging folder is all that remains beside the old set, and the next run removes it.
        std::vector<std::string> left = list_dir(out.path());
        ASSERT_EQ(left.size(), before.size() + 1);
        for (const auto& [name, bytes] : before) EXPECT_TRUE(read_bytes(out / name) == bytes) << name;
        const RunResult r =
            run_cli({"fuse", "-q", old.string(), "-o", (out / "set").string(), "--split-max-size", "1M"});
        ASSERT_EQ(r.status, 0) << r.err;
        EXPECT_EQ(snapshot(out.path()), before);
        return;
    }
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << "status " << status;
    EXPECT_EQ(snapshot(out.path()), before);  // the old set intact, no shard of the new one, no temporary
}

TEST_P(StopDuringSet, ShardedExportLeavesTheOldCheckpointAndNoTemporary) {
    const int sig = GetParam();
    TempDir in;
    const fs::path large = large_fused(in), old = small_fused(in, "old", 8), st = in / "st";
    ASSERT_EQ(run_cli({"export", "-q", old.string(), "-o", st.string(), "--max-shard-size", "300000"}).status, 0);
    const auto before = snapshot(st);
    const pid_t pid = headfuse::test::spawn_cli(
        {"export", "-q", large.string(), "-o", st.string(), "--max-shard-size", "20000000", "--force"});
    ASSERT_GT(pid, 0);
    const bool mid = wait_mid_set(st, "checkpoint", pid);
    ::kill(pid, sig);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(mid) << "the command ended before a shard was staged";
    if (sig == SIGKILL) {
        EXPECT_EQ(list_dir(st).size(), before.size() + 1);
        for (const auto& [name, bytes] : before) EXPECT_TRUE(read_bytes(st / name) == bytes) << name;
        // The next export into the folder removes the staging folder (and, without --force, refuses the rest).
        const RunResult r = run_cli({"export", "-q", old.string(), "-o", st.string()});
        EXPECT_EQ(r.status, 1);
        EXPECT_EQ(snapshot(st), before);
        return;
    }
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << "status " << status;
    EXPECT_EQ(snapshot(st), before);
}

INSTANTIATE_TEST_SUITE_P(Signals, StopDuringSet, ::testing::Values(SIGINT, SIGTERM, SIGKILL), [](const auto& info) {
    return std::string(info.param == SIGINT ? "SIGINT" : info.param == SIGTERM ? "SIGTERM" : "SIGKILL");
});

// A kill during the publish step itself (after the journal, between the renames): the next set on that folder
// and stem finishes the publication from the journal; a staging folder without a journal is removed.
TEST(OutputSetRecovery, AJournalIsFinishedAStagingFolderWithoutOneIsRemoved) {
    TempDir dir;
    // Process 999999999 is above every pid_max (2^22): it runs nowhere.
    const fs::path staging = dir / ".set.headfuse-999999999.partial";
    fs::create_directory(staging);
    std::ofstream(staging / "0.set-00001-of-00002.gguf") << "new 1";
    std::ofstream(dir / "set-00002-of-00002.gguf") << "new 2";  // renamed before the kill
    std::ofstream(dir / "set-00001-of-00003.gguf") << "old";    // of the set replaced
    std::ofstream(dir / "set-00001-of-00002.gguf") << "old";
    const std::string journal = std::string("put\0", 4) + "0.set-00001-of-00002.gguf" + std::string(1, '\0') +
                                (dir / "set-00001-of-00002.gguf").string() + std::string(1, '\0') +
                                std::string("put\0", 4) + "1.set-00002-of-00002.gguf" + std::string(1, '\0') +
                                (dir / "set-00002-of-00002.gguf").string() + std::string(1, '\0') +
                                std::string("remove\0", 7) + (dir / "set-00001-of-00003.gguf").string() +
                                std::string(1, '\0');
    std::ofstream(staging / "publish", std::ios::binary) << journal;
    const fs::path other = dir / ".other.headfuse-999999999.partial";
    fs::create_directory(other);
    std::ofstream(other / "0.other.gguf") << "partial";

    EXPECT_EQ(headfuse::OutputSet::recover(dir.path(), "set"), 1u);
    EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{".other.headfuse-999999999.partial",
                                                              "set-00001-of-00002.gguf", "set-00002-of-00002.gguf"}));
    std::ifstream f(dir / "set-00001-of-00002.gguf");
    std::string got;
    std::getline(f, got);
    EXPECT_EQ(got, "new 1");
    EXPECT_EQ(headfuse::OutputSet::recover(dir.path(), "other"), 1u);
    EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"set-00001-of-00002.gguf", "set-00002-of-00002.gguf"}));
}

}  // namespace
