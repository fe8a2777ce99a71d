// Faults during a write, through the real CLI: a kill -9 at a random moment, a full disk (refused up front), a
// file-size limit (EFBIG), and an output path that names the input. In every case the destination is as it was or
// complete, and no temporary file is left in its folder.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "headfuse/gguf.h"
#include "support/models.h"
#include "support/required.h"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using headfuse::test::list_dir, headfuse::test::run_cli, headfuse::test::RunResult, headfuse::test::spawn_cli,
    headfuse::test::TempDir;
using Clock = std::chrono::steady_clock;
using headfuse::test::Args, headfuse::test::concat;

// The kill test's model: d_model 1024, 16 heads (4 kv) x 64, d_ff 2816, 2 layers, vocab 8192 = 157 MB of F32.
const Args kLargeModel{"--d-model", "1024",       "--n-heads", "16",      "--n-kv-heads", "4",      "--d-ff",
                       "2816",      "--n-layers", "2",         "--vocab", "8192",         "--seed", "11"};
// The other tests' model: 4.4 MB, larger than the 2 MB file system and the 64 kB size limit below.
const Args kSmallModel{"--d-model", "64",         "--n-heads", "4",       "--n-kv-heads", "2",      "--d-ff",
                       "128",       "--n-layers", "2",         "--vocab", "8192",         "--seed", "5"};

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// A whole file in one read (the files here are up to 160 MB: no per-character iteration).
std::vector<std::byte> read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::vector<std::byte> b(fs::file_size(p));
    in.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(b.size()));
    return b;
}

std::vector<std::byte> bytes_of(const std::string& s) {
    std::vector<std::byte> b(s.size());
    std::memcpy(b.data(), s.data(), s.size());
    return b;
}

// O_TMPFILE works in `dir`: the writer's temporary then has no name, and a kill leaves nothing behind.
bool has_o_tmpfile(const fs::path& dir) {
    const int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    ::close(fd);
    return true;
}

// Names in `dir` that are neither expected nor the writer's named temporary of `dest` (".NAME.*.tmp").
std::vector<std::string> strays(const fs::path& dir, const std::vector<std::string>& expected, bool allow_named_temp,
                                const std::string& dest) {
    std::vector<std::string> out;
    for (const std::string& n : list_dir(dir)) {
        if (std::find(expected.begin(), expected.end(), n) != expected.end()) continue;
        const bool named_temp = n.rfind("." + dest + ".", 0) == 0 && n.size() > 4 && n.ends_with(".tmp");
        if (named_temp && allow_named_temp) continue;
        out.push_back(n);
    }
    return out;
}

bool one_line(const std::string& s) {
    return !s.empty() && s.back() == '\n' && std::count(s.begin(), s.end(), '\n') == 1;
}

// The CLI with RLIMIT_FSIZE = `limit` bytes in the child (fork, setrlimit, exec).
RunResult run_cli_fsize(const Args& args, rlim_t limit) {
    std::vector<std::string> argv{HEADFUSE_CLI};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> p;
    for (std::string& a : argv) p.push_back(a.data());
    p.push_back(nullptr);
    FILE* out = std::tmpfile();
    FILE* err = std::tmpfile();
    RunResult r;
    const pid_t pid = ::fork();
    if (pid == 0) {
        const rlimit rl{limit, limit};
        ::setrlimit(RLIMIT_FSIZE, &rl);
        ::dup2(fileno(out), 1);
        ::dup2(fileno(err), 2);
        ::execv(p[0], p.data());
        ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    auto slurp = [](FILE* f) {
        std::string s;
        std::rewind(f);
        char buf[4096];
        std::size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
        std::fclose(f);
        return s;
    };
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

// ------------------------------------------------------------------------------------------------------------
// (a) kill -9 at a random moment of a write: the destination is as it was (absent, or its old content) or
// complete and equal to an uninterrupted run's bytes; no temporary file remains.

int trials() {
    const char* env = std::getenv("HEADFUSE_FAULT_TRIALS");
    return env ? std::max(2, std::atoi(env)) : 8;
}

struct KillOutcomes {
    int as_before = 0, complete = 0;
};

// Runs `args` (a command writing `dest_name` into the folder it is given) to completion once for the reference
// bytes and the duration, then `trials()` times killed after a random delay in [0, 1.3 x duration] (the last one
// runs to the end).
KillOutcomes kill_during_write(const std::string& what, const std::function<Args(const fs::path&)>& args,
                               const std::string& dest_name) {
    KillOutcomes o;
    TempDir ref_dir;
    const auto t0 = Clock::now();
    const RunResult ref_run = run_cli(args(ref_dir.path()));
    const auto duration = Clock::now() - t0;
    EXPECT_EQ(ref_run.status, 0) << ref_run.err;
    const std::vector<std::byte> ref = read_bytes(ref_dir / dest_name);
    EXPECT_NO_THROW(headfuse::GgufFile::open(ref_dir / dest_name));

    std::mt19937_64 rng(headfuse::test::test_seed() ^ std::hash<std::string>{}(what));
    const int n = trials();
    for (int i = 0; i < n; ++i) {
        TempDir dir;
        const bool temp_unnamed = has_o_tmpfile(dir.path());
        const fs::path dest = dir / dest_name;
        const bool preexisting = i % 2 == 1;
        const std::string old = "old content of " + dest_name + ", trial " + std::to_string(i) + "\n";
        if (preexisting) write_text(dest, old);
        // The first trial is killed at once and the last one is left to finish: both outcomes occur whatever
        // the machine's load.
        const bool last = i == n - 1;
        const double frac = i == 0 || last ? 0.0 : std::uniform_real_distribution<double>(0.0, 1.3)(rng);
        const auto delay = std::chrono::duration_cast<std::chrono::microseconds>(duration * frac);
        const pid_t pid = spawn_cli(args(dir.path()));
        if (pid <= 0) {
            ADD_FAILURE() << "cannot start " << HEADFUSE_CLI;
            return o;
        }
        int status = 0;
        if (!last) {
            std::this_thread::sleep_for(delay);
            ::kill(pid, SIGKILL);  // still our unreaped child: the pid cannot have been reused
        }
        ::waitpid(pid, &status, 0);
        if (last) {
            EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
        }
        SCOPED_TRACE(what + ", trial " + std::to_string(i) +
                     (last ? ", run to the end" : ", killed after " + std::to_string(delay.count() / 1000) + " ms") +
                     (preexisting ? ", destination existed" : ""));

        // With O_TMPFILE the temporary has no name until the instant before its rename: nothing may remain.
        // Without it, a kill cannot remove the named temporary: it is the one thing allowed to remain.
        EXPECT_EQ(strays(dir.path(), {dest_name}, !temp_unnamed, dest_name), std::vector<std::string>{});
        if (!fs::exists(dest)) {
            EXPECT_FALSE(preexisting) << "the destination existed and is gone";
            ++o.as_before;
            continue;
        }
        const std::vector<std::byte> got = read_bytes(dest);
        if (preexisting && got == bytes_of(old)) {
            ++o.as_before;
            continue;
        }
        EXPECT_EQ(got.size(), ref.size()) << "a partial file at the destination";
        EXPECT_TRUE(got == ref) << "the destination is neither as it was nor complete";
        EXPECT_NO_THROW(headfuse::GgufFile::open(dest));
        ++o.complete;
    }
    std::printf("[faults] %s: %d kills, destination as before %d, complete %d (write takes %lld ms)\n", what.c_str(), n,
                o.as_before, o.complete,
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(duration).count()));
    EXPECT_GT(o.as_before, 0);
    EXPECT_GT(o.complete, 0);
    return o;
}

TEST(Faults, KillDuringInit) {
    kill_during_write(
        "init",
        [](const fs::path& d) {
            return concat({"init", "-q", "-o", (d / "model.gguf").string()}, kLargeModel);
        },
        "model.gguf");
}

class KillDuringFuse : public ::testing::TestWithParam<std::string> {};

TEST_P(KillDuringFuse, LeavesTheDestinationAsItWasOrComplete) {
    static TempDir in_dir;
    static const fs::path input = [] {
        const fs::path p = in_dir / "per_head.gguf";
        const RunResult r = run_cli(concat({"init", "-q", "-o", p.string()}, kLargeModel));
        if (r.status != 0) ADD_FAILURE() << r.err;
        return p;
    }();
    const std::string type = GetParam();
    kill_during_write(
        "fuse --type " + type,
        [&](const fs::path& d) {
            return Args{"fuse", "-q", input.string(), "-o", (d / "fused.gguf").string(), "--type", type};
        },
        "fused.gguf");
}

// f32: the tensors are copied from the input through the write buffer; q8_0: encoded in memory and written.
INSTANTIATE_TEST_SUITE_P(Types, KillDuringFuse, ::testing::Values("f32", "q8_0"));

// ------------------------------------------------------------------------------------------------------------
// Shared by (b) and (c): every writing command, each on an output that cannot fit.

const headfuse::test::ModelFiles& inputs() {
    static const headfuse::test::ModelFiles in(kSmallModel);
    return in;
}

struct WriteCase {
    std::string name;
    std::function<Args(const fs::path& dest)> args;
};

std::vector<WriteCase> write_cases() {
    const headfuse::test::ModelFiles& in = inputs();
    const std::string ph = in.per_head.string(), fu = in.fused.string();
    return {
        {"init",
         [](const fs::path& d) {
             return concat({"init", "-q", "-o", d.string()}, kSmallModel);
         }},
        {"fuse_f32",
         [=](const fs::path& d) {
             return Args{"fuse", "-q", ph, "-o", d.string()};
         }},
        {"fuse_q8_0", [=](const fs::path& d) { return Args{"fuse", "-q", ph, "-o", d.string(), "--type", "q8_0"}; }},
        {"split",
         [=](const fs::path& d) {
             return Args{"split", "-q", fu, "-o", d.string()};
         }},
        {"logits",
         [=](const fs::path& d) { return Args{"logits", "-q", fu, "--tokens", "1,2,3,4", "-o", d.string()}; }},
    };
}

// Checks one failed write: exit 1, one line naming `reason`, destination as it was, folder as it was.
void expect_clean_failure(const RunResult& r, const std::string& reason, const fs::path& dest, bool preexisting,
                          const std::string& old, const std::vector<std::string>& folder_before) {
    EXPECT_EQ(r.status, 1) << "status " << r.status << ": " << r.err;
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find(reason), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(dest.filename().string()), std::string::npos) << "the destination is not named: " << r.err;
    if (preexisting)
        EXPECT_EQ(read_bytes(dest), bytes_of(old)) << "the destination changed";
    else
        EXPECT_FALSE(fs::exists(dest)) << "a partial destination was left";
    EXPECT_EQ(list_dir(dest.parent_path()), folder_before) << "a temporary file was left";
}

// ------------------------------------------------------------------------------------------------------------
// (b) a full disk: a 2 MB tmpfs, almost filled, then each command writes to it.

class Tmpfs {
public:
    Tmpfs(const fs::path& dir, const char* options) : dir_(dir) {
        fs::create_directories(dir);
        if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, options) == 0)
            mounted_ = true;
        else
            error_ = std::strerror(errno);
    }
    ~Tmpfs() {
        if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    }
    bool mounted() const noexcept { return mounted_; }
    const std::string& error() const noexcept { return error_; }

private:
    fs::path dir_;
    bool mounted_ = false;
    std::string error_;
};

std::uint64_t free_bytes(const fs::path& dir) {
    struct statvfs s {};
    ::statvfs(dir.c_str(), &s);
    return std::uint64_t{s.f_bavail} * s.f_frsize;
}

// "4.51 MB", as the CLI prints sizes (decimal units, two decimals): written out here, not taken from headfuse.
std::string decimal_size(std::uint64_t n) {
    const char* units[] = {"B", "kB", "MB", "GB"};
    double v = static_cast<double>(n);
    int u = 0;
    for (; v >= 1000 && u < 3; ++u) v /= 1000;
    char buf[32];
    std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", v, units[u]);
    return buf;
}

// #10.3: every writing command checks the free space of the destination's file system against the bytes it will
// write before it starts, and says how much it needs. (A disk that fills while writing ends as the file-size
// limit's EFBIG below does: the same I/O error path.)
TEST(Faults, FullDiskIsRefusedBeforeWritingAndLeavesNothing) {
    inputs();
    TempDir root;
    const fs::path mnt = root / "small_fs";
    Tmpfs small_fs(mnt, "size=2m");
    HEADFUSE_REQUIRE(small_fs.mounted(), "cannot mount a 2 MB tmpfs here ("
                                             << small_fs.error()
                                             << "): needs root or CAP_SYS_ADMIN; the file-size limit test covers "
                                                "the write error path");
    ASSERT_TRUE(has_o_tmpfile(mnt)) << "tmpfs has O_TMPFILE";
    // Leave 48 kB: every output below is larger.
    {
        const std::uint64_t fill = free_bytes(mnt) - 48 * 1024;
        std::ofstream f(mnt / "filler", std::ios::binary);
        const std::vector<char> zeros(fill);
        f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
    }
    for (const WriteCase& c : write_cases()) {
        // The size each command needs: what it writes where there is room.
        const fs::path ref = root / ("ref_" + c.name);
        ASSERT_EQ(run_cli(c.args(ref)).status, 0);
        const std::uint64_t size = fs::file_size(ref);
        fs::remove(ref);
        for (bool preexisting : {false, true}) {
            SCOPED_TRACE(c.name + (preexisting ? ", destination existed" : ""));
            const fs::path dest = mnt / ("out_" + c.name + ".bin");
            const std::string old = "old " + c.name + "\n";
            if (preexisting) write_text(dest, old);
            const auto before = list_dir(mnt);
            const std::uint64_t free_before = free_bytes(mnt);
            const RunResult r = run_cli(c.args(dest));
            const std::string needs =
                "needs " + decimal_size(size) + ", " + decimal_size(free_before) + " free on '" + mnt.string() + "'";
            expect_clean_failure(r, needs, dest, preexisting, old, before);
            EXPECT_EQ(free_bytes(mnt), free_before) << "space still held by an unnamed temporary";
            std::printf("[faults] full disk, %-10s%s: %s", c.name.c_str(), preexisting ? " (dest existed)" : "",
                        r.err.c_str());
            fs::remove(dest);
        }
    }
    // export: its shards and config.json, all checked before the first is written; no folder is left.
    const RunResult r = run_cli(
        {"export", "-q", inputs().per_head.string(), "-o", (mnt / "exported").string(), "--max-shard-size", "1000000"});
    EXPECT_EQ(r.status, 1) << r.err;
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find("exported' ("), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(" safetensors files): needs "), std::string::npos) << r.err;
    EXPECT_EQ(list_dir(mnt), std::vector<std::string>{"filler"});

    // A head edit computes its tensors into a temporary file in $TMPDIR: with $TMPDIR on the full file system
    // and the output elsewhere, it is refused before any row is computed. Ablating a head of each layer
    // rewrites both attn_output tensors, 2 x [64, 64] f32 = 32 KiB; leave 8 kB.
    {
        const std::uint64_t fill = free_bytes(mnt) - 8 * 1024;
        std::ofstream f(mnt / "filler2", std::ios::binary);
        const std::vector<char> zeros(fill);
        f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
    }
    const char* old_tmpdir = std::getenv("TMPDIR");
    const std::string saved = old_tmpdir ? old_tmpdir : "";
    ::setenv("TMPDIR", mnt.c_str(), 1);
    const fs::path ablated = root / "ablated.gguf";
    const std::uint64_t free_before = free_bytes(mnt);
    const RunResult e =
        run_cli({"heads", "ablate", "-q", inputs().per_head.string(), "-o", ablated.string(), "--heads", "0:0,1:0"});
    if (old_tmpdir)
        ::setenv("TMPDIR", saved.c_str(), 1);
    else
        ::unsetenv("TMPDIR");
    EXPECT_EQ(e.status, 1) << e.err;
    EXPECT_TRUE(one_line(e.err)) << e.err;
    EXPECT_NE(e.err.find("the temporary file for the edited tensors in '" + mnt.string() + "': needs "),
              std::string::npos)
        << e.err;
    EXPECT_NE(e.err.find(decimal_size(free_before) + " free on '" + mnt.string() + "'"), std::string::npos) << e.err;
    EXPECT_FALSE(fs::exists(ablated));
    EXPECT_EQ(list_dir(mnt), (std::vector<std::string>{"filler", "filler2"}));
}

// ------------------------------------------------------------------------------------------------------------
// (c) a file-size limit: RLIMIT_FSIZE of 64 kB in the child. SIGXFSZ is ignored by the CLI, so the write fails
// with EFBIG, which must end like any other I/O error.

TEST(Faults, FileSizeLimitEndsInAClearErrorAndLeavesNothing) {
    inputs();
    TempDir dir;
    for (const WriteCase& c : write_cases()) {
        for (bool preexisting : {false, true}) {
            SCOPED_TRACE(c.name + (preexisting ? ", destination existed" : ""));
            const fs::path dest = dir / ("out_" + c.name + ".bin");
            const std::string old = "old " + c.name + "\n";
            if (preexisting) write_text(dest, old);
            const auto before = list_dir(dir.path());
            const RunResult r = run_cli_fsize(c.args(dest), 64 * 1024);
            EXPECT_NE(r.status, 128 + SIGXFSZ) << "killed by SIGXFSZ";
            expect_clean_failure(r, "File too large", dest, preexisting, old, before);
            std::printf("[faults] size limit, %-10s%s: %s", c.name.c_str(), preexisting ? " (dest existed)" : "",
                        r.err.c_str());
            fs::remove(dest);
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// (d) an output that is the input: the same path (spelled two ways), a hard link, a symlink. Refused before
// a byte is written; the input and its folder stay as they were.

TEST(Faults, WritingOverTheInputIsRefused) {
    TempDir dir;
    const fs::path ph = dir / "per_head.gguf", fu = dir / "fused.gguf";
    ASSERT_EQ(run_cli(concat({"init", "-q", "-o", ph.string()}, kSmallModel)).status, 0);
    ASSERT_EQ(run_cli({"fuse", "-q", ph.string(), "-o", fu.string()}).status, 0);
    fs::create_directories(dir / "sub");
    fs::create_hard_link(ph, dir / "ph_hard.gguf");
    fs::create_symlink(ph, dir / "ph_sym.gguf");
    fs::create_hard_link(fu, dir / "fu_hard.gguf");
    fs::create_symlink(fu, dir / "sub" / "fu_sym.gguf");  // a symlink in another folder
    const auto ph_bytes = read_bytes(ph), fu_bytes = read_bytes(fu);

    struct Refusal {
        std::string name;
        Args args;
    };
    const std::string same_ph_other_spelling = (dir / "sub" / ".." / "per_head.gguf").string();
    const std::vector<Refusal> refusals{
        {"fuse, same path", {"fuse", "-q", ph.string(), "-o", ph.string()}},
        {"fuse, same file spelled otherwise", {"fuse", "-q", ph.string(), "-o", same_ph_other_spelling}},
        {"fuse, hard link", {"fuse", "-q", ph.string(), "-o", (dir / "ph_hard.gguf").string()}},
        {"fuse, symlink", {"fuse", "-q", ph.string(), "-o", (dir / "ph_sym.gguf").string()}},
        {"fuse, input given through its symlink", {"fuse", "-q", (dir / "ph_sym.gguf").string(), "-o", ph.string()}},
        {"fuse, the tokenizer source", {"fuse", "-q", ph.string(), "-o", fu.string(), "--tokenizer-from", fu.string()}},
        {"split, same path", {"split", "-q", fu.string(), "-o", fu.string()}},
        {"split, hard link", {"split", "-q", fu.string(), "-o", (dir / "fu_hard.gguf").string()}},
        {"split, symlink", {"split", "-q", fu.string(), "-o", (dir / "sub" / "fu_sym.gguf").string()}},
        {"logits, same path", {"logits", "-q", fu.string(), "--tokens", "1,2", "-o", fu.string()}},
        {"logits, hard link", {"logits", "-q", ph.string(), "--tokens", "1,2", "-o", (dir / "ph_hard.gguf").string()}},
        {"logits, symlink", {"logits", "-q", ph.string(), "--tokens", "1,2", "-o", (dir / "ph_sym.gguf").string()}},
    };
    const auto folder = list_dir(dir.path());
    const auto sub = list_dir(dir / "sub");
    for (const Refusal& c : refusals) {
        SCOPED_TRACE(c.name);
        const RunResult r = run_cli(c.args);
        std::printf("[faults] %-38s %s", c.name.c_str(), r.err.c_str());
        EXPECT_EQ(r.status, 1) << r.err;
        EXPECT_TRUE(one_line(r.err)) << r.err;
        EXPECT_NE(r.err.find("refusing to write"), std::string::npos) << r.err;
        EXPECT_EQ(read_bytes(ph), ph_bytes);
        EXPECT_EQ(read_bytes(fu), fu_bytes);
        EXPECT_EQ(list_dir(dir.path()), folder);
        EXPECT_EQ(list_dir(dir / "sub"), sub);
        EXPECT_TRUE(fs::is_symlink(dir / "ph_sym.gguf"));
    }
    // A directory as the destination is refused too, and stays a directory.
    const RunResult r = run_cli({"split", "-q", fu.string(), "-o", (dir / "sub").string()});
    EXPECT_EQ(r.status, 1);
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_NE(r.err.find("is a directory"), std::string::npos) << r.err;
    EXPECT_TRUE(fs::is_directory(dir / "sub"));
}

}  // namespace
