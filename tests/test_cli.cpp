// The command line as a demanding new user meets it, through the real CLI: numbers, defaults, error lines,
// warnings, help. Each test names the defect it guards (issue 10).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "headfuse/gguf.h"
#include "support/models.h"
#include "support/required.h"

namespace {

namespace fs = std::filesystem;
using headfuse::test::list_dir, headfuse::test::read_bytes, headfuse::test::run_cli, headfuse::test::run_program,
    headfuse::test::RunResult, headfuse::test::TempDir, headfuse::test::Args, headfuse::test::concat;

// A small model's flags: d_model 64, 4 heads x 16, d_ff 128, 2 layers, vocab 300.
const Args kModel{"--d-model", "64", "--n-heads", "4", "--d-ff", "128", "--n-layers", "2", "--vocab", "300"};

// `base` with `flag` set to `value` (replaced where it is already given: CLI11 refuses a flag given twice).
Args with(Args base, const std::string& flag, const std::string& value) {
    const auto it = std::find(base.begin(), base.end(), flag);
    if (it != base.end())
        *(it + 1) = value;
    else
        base.insert(base.end(), {flag, value});
    return base;
}

bool one_line(const std::string& s) {
    return !s.empty() && s.back() == '\n' && std::count(s.begin(), s.end(), '\n') == 1;
}

// A refusal: exit 1, one line on stderr that starts with "headfuse: " and holds every one of `expect`.
// verify's status is 2 (could not compare), as cmp's.
void expect_refused(const RunResult& r, const std::vector<std::string>& expect, int status = 1) {
    EXPECT_EQ(r.status, status) << r.err;
    EXPECT_TRUE(one_line(r.err)) << "not one line:\n" << r.err;
    EXPECT_EQ(r.err.rfind("headfuse: ", 0), 0u) << r.err;
    for (const std::string& s : expect) EXPECT_NE(r.err.find(s), std::string::npos) << "no '" << s << "' in " << r.err;
}

// Small models shared by the tests: a per-head checkpoint and its fused file.
struct Models {
    TempDir dir;
    fs::path ph = dir / "ph.gguf", fused = dir / "fused.gguf";
    Models() {
        const RunResult a = run_cli(concat({"init", "-q", "-o", ph.string()}, kModel));
        const RunResult b = run_cli({"fuse", "-q", ph.string(), "-o", fused.string()});
        if (a.status != 0 || b.status != 0) ADD_FAILURE() << a.err << b.err;
    }
};

const Models& models() {
    static const Models m;
    return m;
}

// #10.8: numbers are decimal and range-checked, the same for every flag.
TEST(CliNumbers, AreDecimalAndRangeChecked) {
    TempDir dir;
    const std::string out = (dir / "m.gguf").string();
    struct Case {
        Args args;
        std::string flag, found;
    };
    const std::vector<Case> cases{
        {{"--vocab", "010"}, "", ""},  // accepted as ten, checked below
        {{"--vocab", "0x10"}, "--vocab", "'0x10'"},
        {{"--vocab", "+300"}, "--vocab", "'+300'"},
        {{"--vocab", " 300"}, "--vocab", "' 300'"},
        {{"--vocab", "1e3"}, "--vocab", "'1e3'"},
        {{"--seed", "-1"}, "--seed", "'-1'"},
        {{"--seed", "18446744073709551616"}, "--seed", "'18446744073709551616'"},
        {{"--n-layers", "4294967297"}, "--n-layers", "'4294967297'"},
        {{"--threads", "0"}, "--threads", "'0'"},
        {{"--threads", "1025"}, "--threads", "from 1 to 1024"},
        {{"--context", "0x800"}, "--context", "'0x800'"},
        {{"--rms-eps", "-1e-9"}, "--rms-eps", "'-1e-9'"},
        {{"--rms-eps", "0x1p-20"}, "--rms-eps", "'0x1p-20'"},
        {{"--rope-theta", "inf"}, "--rope-theta", "'inf'"},
        {{"--rope-theta", "nan"}, "--rope-theta", "'nan'"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.args[0] + " " + c.args[1]);
        const RunResult r = run_cli(concat({"init", "-q", "-o", out}, with(kModel, c.args[0], c.args[1])));
        if (c.flag.empty()) {
            ASSERT_EQ(r.status, 0) << r.err;
            EXPECT_NE(r.out.find("vocab 10,"), std::string::npos) << "010 is ten: " << r.out;
            continue;
        }
        expect_refused(r, {c.flag, c.found});
        EXPECT_EQ(r.err.find("-0.000000"), std::string::npos) << r.err;
    }
    // Token ids: the same rules.
    const std::string fu = models().fused.string();
    expect_refused(run_cli({"logits", fu, "--tokens", "0x10"}), {"--tokens", "'0x10'"});
    expect_refused(run_cli({"logits", fu, "--tokens", "1,-2"}), {"--tokens", "'-2'"});
    expect_refused(run_cli({"logits", fu, "--tokens", "1, 2"}), {"--tokens", "' 2'"});
    const RunResult ten = run_cli({"logits", fu, "--tokens", "010", "--top", "1"});
    ASSERT_EQ(ten.status, 0) << ten.err;
    EXPECT_NE(ten.out.find("0    10 "), std::string::npos) << ten.out;
}

// #10.9: an explicit zero is refused, never replaced by a default; derived values are explained.
TEST(CliNumbers, ZeroIsRefusedAndDerivedValuesAreExplained) {
    TempDir dir;
    const std::string out = (dir / "m.gguf").string();
    for (const std::string flag : {"--n-kv-heads", "--d-head", "--donor-d-in", "--vocab", "--d-model", "--context"}) {
        SCOPED_TRACE(flag);
        expect_refused(run_cli(concat({"init", "-q", "-o", out}, with(kModel, flag, "0"))), {flag, "'0'"});
    }
    expect_refused(run_cli(concat({"init", "-q", "-o", out}, with(kModel, "--n-heads", "5"))),
                   {"--d-head", "d_model 64", "n_heads 5"});
    expect_refused(run_cli(concat({"init", "-q", "-o", out}, with(kModel, "--n-heads", "3"))),
                   {"--d-head", "d_model 64", "n_heads 3"});
    // d_model 64 / 64 heads = 1: the derivation is given with the complaint about d_head.
    expect_refused(run_cli(concat({"init", "-q", "-o", out}, with(kModel, "--n-heads", "64"))),
                   {"d_head", "d_model 64 / n_heads 64", "--d-head was not given"});
    EXPECT_TRUE(list_dir(dir.path()).empty());
}

// #10.11: argument errors are one line with the prefix; an unknown command is named.
TEST(CliErrors, AreOneLineWithThePrefix) {
    const std::string fu = models().fused.string();
    expect_refused(run_cli({"frobnicate", fu}), {"unknown command 'frobnicate'", "init, fuse"});
    expect_refused(run_cli({}), {"a command is required"});
    expect_refused(run_cli({"init", "--d-model", "64"}), {"--output is required", "headfuse init --help"});
    expect_refused(run_cli({"inspect", fu, "--bogus"}), {"--bogus"});
    expect_refused(run_cli({"fuse", fu}), {"--output is required"});
    expect_refused(run_cli({"logits", fu}), {"--tokens is required"});
}

// #10.11: forward's token error and a head type mismatch name the file.
TEST(CliErrors, ForwardErrorsNameTheFile) {
    const Models& m = models();
    expect_refused(run_cli({"logits", m.fused.string(), "--tokens", "1,300"}),
                   {"fused.gguf", "token 300", "vocab 300"});
    expect_refused(run_cli({"verify", m.ph.string(), m.fused.string(), "--tokens", "300"}), {".gguf", "token 300"}, 2);
}

// #10.11: no warning comes before an error (a q8_0 checkpoint asked for q4_0, whose rows also force the F16
// fallback), and the F16 fallback is said once, with the count.
TEST(CliErrors, NoWarningBeforeAnErrorAndFallbackSaidOnce) {
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", q8 = dir / "q8.gguf", sq8 = dir / "split-q8.gguf";
    const Args odd{"--d-model", "64", "--n-heads", "4", "--d-ff", "80", "--n-layers", "3", "--vocab", "300"};
    ASSERT_EQ(run_cli(concat({"init", "-q", "-o", ph.string()}, odd)).status, 0);
    const RunResult f = run_cli({"fuse", "-q", ph.string(), "-o", q8.string(), "--type", "q8_0"});
    ASSERT_EQ(f.status, 0) << f.err;
    // ffn_down's rows are 80 wide: 3 tensors, one warning.
    EXPECT_TRUE(one_line(f.err)) << f.err;
    EXPECT_NE(f.err.find("warning: 3 tensors"), std::string::npos) << f.err;
    ASSERT_EQ(run_cli({"split", "-q", q8.string(), "-o", sq8.string()}).status, 0);
    const RunResult r = run_cli({"fuse", "-q", sq8.string(), "-o", (dir / "x.gguf").string(), "--type", "q4_0"});
    expect_refused(r, {"split-q8.gguf", "f32, f16 or bf16 weights only"});
    EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("decode it with --type f32, f16 or bf16"), std::string::npos) << r.err;
    // From q8_0 to f32: decoded on request, said once (the fallback's f16 tensors widen exactly, unsaid).
    const RunResult d = run_cli({"fuse", "-q", sq8.string(), "-o", (dir / "x.gguf").string(), "--type", "f32"});
    EXPECT_EQ(d.status, 0) << d.err;
    EXPECT_TRUE(one_line(d.err)) << d.err;
    EXPECT_NE(d.err.find("warning: weights decoded from q8_0 to f32"), std::string::npos) << d.err;
}

// Rough edges of issue 10: empty and "-" outputs, empty types and tokens, --top, context, help, wording.
TEST(CliRoughEdges, AreGone) {
    const Models& m = models();
    TempDir dir;
    const std::string ph = m.ph.string(), fu = m.fused.string();
    expect_refused(run_cli({"fuse", "-q", ph, "-o", ""}), {"--output", "''"});
    expect_refused(run_cli({"fuse", "-q", ph, "-o", "-"}), {"--output", "standard output"});
    expect_refused(run_cli({"fuse", "-q", ph, "-o", (dir / "x.gguf").string(), "--type", ""}), {"--type", "''"});
    expect_refused(run_cli({"logits", fu, "--tokens", "1", "--top", "0"}), {"--top", "'0'"});
    expect_refused(run_cli({"logits", fu, "--tokens", "1", "--top", "3", "-o", (dir / "l.f32").string()}),
                   {"--top", "-o"});
    expect_refused(run_cli({"verify", ph, fu, "--tokens", ""}), {"--tokens", "''"}, 2);
    EXPECT_TRUE(list_dir(dir.path()).empty());

    // More tokens than the context: said after the results, as a warning.
    const fs::path small_ctx = dir / "ctx.gguf";
    ASSERT_EQ(run_cli(concat({"init", "-q", "-o", small_ctx.string(), "--context", "2"}, kModel)).status, 0);
    const RunResult over = run_cli({"logits", small_ctx.string(), "--tokens", "1,2,3"});
    ASSERT_EQ(over.status, 0) << over.err;
    EXPECT_TRUE(one_line(over.err)) << over.err;
    EXPECT_NE(over.err.find("warning: 3 tokens, more than the model's context length 2"), std::string::npos)
        << over.err;

    // Help names the program, not the path it was run by, and no CLI11 type jargon.
    const RunResult help = run_cli({"init", "--help"});
    EXPECT_EQ(help.status, 0);
    EXPECT_NE(help.out.find("Usage: headfuse init"), std::string::npos) << help.out;
    EXPECT_EQ(help.out.find("UINT"), std::string::npos) << help.out;
    EXPECT_EQ(help.out.find("HEADFUSE"), std::string::npos);
    EXPECT_EQ(help.out.find(HEADFUSE_CLI), std::string::npos) << help.out;

    // "1 layer"; a fused lens model's summary says the lens was folded.
    const fs::path one = dir / "one.gguf", lens = dir / "lens.gguf";
    const RunResult r1 = run_cli({"init", "-q", "-o", one.string(), "--d-model", "64", "--n-heads", "4", "--d-ff", "64",
                                  "--n-layers", "1", "--vocab", "300", "--donor-d-in", "32"});
    ASSERT_EQ(r1.status, 0) << r1.err;
    EXPECT_NE(r1.out.find(", 1 layer,"), std::string::npos) << r1.out;
    const RunResult r2 = run_cli({"fuse", "-q", one.string(), "-o", lens.string()});
    ASSERT_EQ(r2.status, 0) << r2.err;
    EXPECT_NE(r2.out.find("lens folded (donor_d_in 32)"), std::string::npos) << r2.out;
    EXPECT_EQ(r2.out.find("lens from"), std::string::npos) << r2.out;
}

// ---- destinations and inputs (#10.1, #10.2, #10.12) ----------------------------------------------------------

// The CLI under a time limit: a command blocked in open() fails the test with status 124 instead of hanging it.
RunResult run_cli_limited(const Args& args) { return run_program(concat({"timeout", "20", HEADFUSE_CLI}, args)); }

mode_t mode_of(const fs::path& p) {
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0 ? st.st_mode : 0;
}

void make_socket(const fs::path& p) {
    const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(s, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    ASSERT_LT(p.string().size(), sizeof a.sun_path);
    std::strcpy(a.sun_path, p.c_str());
    ASSERT_EQ(::bind(s, reinterpret_cast<const sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    ::close(s);
}

void write_text(const fs::path& p, const std::string& text, mode_t mode) {
    fs::remove(p);
    FILE* f = std::fopen(p.c_str(), "wb");
    ASSERT_TRUE(f);
    std::fputs(text.c_str(), f);
    std::fclose(f);
    ASSERT_EQ(::chmod(p.c_str(), mode), 0);
}

// #10.1: a destination that exists and is not a regular file (a FIFO, a socket, a character device, a symlink
// to a device, a folder) is refused before any work, for every writing command, and stays what it was.
TEST(CliDestinations, NonRegularDestinationsAreRefusedBeforeAnyWork) {
    const Models& m = models();
    TempDir dir;
    struct Node {
        std::string name, kind;
        mode_t type;
    };
    std::vector<Node> nodes{{"fifo", "a FIFO", S_IFIFO},
                            {"sock", "a socket", S_IFSOCK},
                            {"null-link", "'/dev/null' is a character device", S_IFLNK},
                            {"folder", "a directory", S_IFDIR}};
    ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0644), 0);
    make_socket(dir / "sock");
    fs::create_symlink("/dev/null", dir / "null-link");
    fs::create_directory(dir / "folder");
    // A device node of our own needs root; without it the symlink to /dev/null stands for a device.
    if (::mknod((dir / "dev").c_str(), S_IFCHR | 0644, ::makedev(1, 3)) == 0)
        nodes.push_back({"dev", "a character device", S_IFCHR});
    else
        std::printf("note: mknod needs root here; the device case is covered by the symlink to /dev/null\n");
    const std::vector<std::string> before = list_dir(dir.path());
    for (const Node& n : nodes) {
        const std::string dest = (dir / n.name).string();
        SCOPED_TRACE(dest);
        const std::vector<Args> commands{
            concat({"init", "-q", "-o", dest}, kModel),
            {"fuse", "-q", m.ph.string(), "-o", dest},
            {"split", "-q", m.fused.string(), "-o", dest},
            {"logits", m.fused.string(), "--tokens", "1,2", "-o", dest},
            // Before any work: the destination is refused before a missing input is even looked at.
            {"fuse", "-q", (dir / "missing.gguf").string(), "-o", dest},
        };
        for (const Args& c : commands) {
            SCOPED_TRACE(c[0]);
            expect_refused(run_cli_limited(c), {"'" + dest + "'", n.kind, "not a regular file"});
            EXPECT_EQ(mode_of(dir / n.name) & S_IFMT, n.type);
        }
    }
    EXPECT_EQ(list_dir(dir.path()), before);
    // export writes a folder: a FIFO where the folder would be is refused too.
    expect_refused(run_cli_limited({"export", "-q", m.ph.string(), "-o", (dir / "fifo").string()}),
                   {"fifo'", "not a folder"});
    EXPECT_EQ(list_dir(dir.path()), before);
}

// #10.1: a symbolic link is written through, as cp does: its target is replaced atomically and the link stays;
// so is a chain of links, and a dangling link creates its target.
TEST(CliDestinations, SymlinksAreWrittenThrough) {
    const Models& m = models();
    const std::vector<std::byte> fused = read_bytes(m.fused);
    TempDir dir;
    fs::create_directory(dir / "sub");
    write_text(dir / "sub" / "target.gguf", "old content", 0644);
    fs::create_symlink("sub/target.gguf", dir / "link");
    fs::create_symlink("link", dir / "link2");
    fs::create_symlink("sub/new.gguf", dir / "dangling");
    for (const std::string name : {"link", "link2", "dangling"}) {
        SCOPED_TRACE(name);
        write_text(dir / "sub" / "target.gguf", "old content", 0644);
        const RunResult r = run_cli({"fuse", "-q", m.ph.string(), "-o", (dir / name).string()});
        ASSERT_EQ(r.status, 0) << r.err;
        EXPECT_TRUE(fs::is_symlink(dir / name));
        const fs::path written = dir / "sub" / (name == "dangling" ? "new.gguf" : "target.gguf");
        EXPECT_EQ(mode_of(written) & S_IFMT, S_IFREG);
        EXPECT_EQ(read_bytes(written), fused);
    }
    EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"dangling", "link", "link2", "sub"}));
    EXPECT_EQ(list_dir(dir / "sub"), (std::vector<std::string>{"new.gguf", "target.gguf"}));
    // A loop of links is refused, naming the destination.
    fs::create_symlink("loop-b", dir / "loop-a");
    fs::create_symlink("loop-a", dir / "loop-b");
    expect_refused(run_cli({"fuse", "-q", m.ph.string(), "-o", (dir / "loop-a").string()}),
                   {"loop-a'", "symbolic links"});
}

// #10.12: the replaced file keeps its mode (a new one gets 0666 less the umask, as cp gives it).
TEST(CliDestinations, ReplacedFileKeepsItsMode) {
    const Models& m = models();
    TempDir dir;
    for (const mode_t mode : {0600, 0640, 0755}) {
        SCOPED_TRACE(mode);
        write_text(dir / "out.gguf", "old", mode);
        ASSERT_EQ(run_cli({"fuse", "-q", m.ph.string(), "-o", (dir / "out.gguf").string()}).status, 0);
        EXPECT_EQ(mode_of(dir / "out.gguf") & 07777, mode);
        ASSERT_EQ(run_cli({"logits", m.fused.string(), "--tokens", "1", "-o", (dir / "out.gguf").string()}).status, 0);
        EXPECT_EQ(mode_of(dir / "out.gguf") & 07777, mode);
    }
    const mode_t old_mask = ::umask(027);
    const RunResult r = run_cli({"split", "-q", m.fused.string(), "-o", (dir / "new.gguf").string()});
    ::umask(old_mask);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(mode_of(dir / "new.gguf") & 07777, 0640u);
}

// #10.12: a user may not replace a file they could not write (a read-only file in a folder they may write), nor
// write into a folder they may not write; both are refused before any work. As root this runs the CLI as
// nobody (setpriv); as another user, directly.
TEST(CliDestinations, RefusesWhatTheUserCouldNotWrite) {
    Args as_user{HEADFUSE_CLI};
    if (::geteuid() == 0) {
        HEADFUSE_REQUIRE(run_program({"setpriv", "--version"}).status == 0,
                         "running as root without setpriv (util-linux): no unprivileged user to run the CLI as");
        as_user = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", HEADFUSE_CLI};
    }
    TempDir dir;
    ASSERT_EQ(::chmod(dir.path().c_str(), 0777), 0);
    const fs::path ph = dir / "ph.gguf";
    fs::copy_file(models().ph, ph);
    ASSERT_EQ(::chmod(ph.c_str(), 0644), 0);
    // A read-only file in a folder everyone may write: replacing it would succeed by rename, cp refuses.
    const fs::path ro = dir / "readonly.gguf";
    write_text(ro, "precious", 0444);
    const RunResult r = run_program(concat(as_user, {"fuse", "-q", ph.string(), "-o", ro.string()}));
    expect_refused(r, {"'" + ro.string() + "'", "Permission denied", "mode 0444"});
    EXPECT_EQ(read_bytes(ro).size(), 8u);
    EXPECT_EQ(mode_of(ro) & 07777, 0444u);
    // A folder this user may not write.
    fs::create_directory(dir / "closed");
    ASSERT_EQ(::chmod((dir / "closed").c_str(), ::geteuid() == 0 ? 0755 : 0555), 0);
    const fs::path closed = dir / "closed" / "out.gguf";
    expect_refused(run_program(concat(as_user, concat({"init", "-q", "-o", closed.string()}, kModel))),
                   {"'" + closed.string() + "'", "not writable"});
    EXPECT_TRUE(list_dir(dir / "closed").empty());
    EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"closed", "ph.gguf", "readonly.gguf"}));
    ::chmod((dir / "closed").c_str(), 0755);
}

// #10.2: an input that is not a regular file (a FIFO, a device, a folder where a file is expected) is refused at
// once for every command and every file option, never waited on in open().
TEST(CliInputs, NonRegularInputsAreRefusedAtOnce) {
    const Models& m = models();
    TempDir dir;
    const std::string fifo = (dir / "in.gguf").string(), out = (dir / "out.gguf").string();
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
    // A safetensors checkpoint, for --config.
    const std::string st = (dir / "st").string();
    ASSERT_EQ(run_cli({"export", "-q", m.ph.string(), "-o", st}).status, 0);
    struct Case {
        Args args;
        int status = 1;
    };
    const std::vector<Case> cases{
        {{"inspect", fifo}},
        {{"inspect", "--json", fifo}},
        {{"fuse", "-q", fifo, "-o", out}},
        {{"fuse", "-q", m.ph.string(), "--tokenizer-from", fifo, "-o", out}},
        {{"fuse", "-q", st, "--config", fifo, "-o", out}},
        {{"split", "-q", fifo, "-o", out}},
        {{"export", "-q", fifo, "-o", (dir / "e").string()}},
        {{"export", "-q", st, "--config", fifo, "-o", (dir / "e").string()}},
        {{"logits", fifo, "--tokens", "1"}},
        {{"verify", fifo, m.fused.string(), "--tokens", "1"}, 2},
        {{"verify", m.ph.string(), fifo, "--tokens", "1"}, 2},
    };
    for (const Case& c : cases) {
        std::string line;
        for (const std::string& a : c.args) line += a + " ";
        SCOPED_TRACE(line);
        expect_refused(run_cli_limited(c.args), {"in.gguf", "not a regular file", "FIFO"}, c.status);
    }
    expect_refused(run_cli_limited({"inspect", "/dev/zero"}), {"/dev/zero", "a character device"});
    expect_refused(run_cli_limited({"inspect", dir.path().string()}), {"a directory"});
    EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"in.gguf", "st"}));
}

// ---- inspect: strings from the file (#10.5, #10.6) ------------------------------------------------------------

// A GGUF v3 file built byte by byte: keys, values and a tensor name holding terminal escapes, BEL, NUL, newlines,
// bidirectional overrides and bytes that are not UTF-8; NaN and infinities.
class HandGguf {
public:
    void string(const std::string& s) {
        u64(s.size());
        bytes_ += s;
    }
    void u32(std::uint32_t v) { raw(&v, 4); }
    void u64(std::uint64_t v) { raw(&v, 8); }
    void f32(float v) { raw(&v, 4); }
    void f64(double v) { raw(&v, 8); }
    void raw(const void* p, std::size_t n) { bytes_.append(static_cast<const char*>(p), n); }
    void pad(std::size_t alignment) { bytes_.resize((bytes_.size() + alignment - 1) / alignment * alignment, '\0'); }
    void save(const fs::path& p) const {
        FILE* f = std::fopen(p.c_str(), "wb");
        ASSERT_TRUE(f);
        std::fwrite(bytes_.data(), 1, bytes_.size(), f);
        std::fclose(f);
    }

private:
    std::string bytes_;
};

// GGUF value types
constexpr std::uint32_t kU32 = 4, kF32 = 6, kString = 8, kArray = 9, kF64 = 12;

const std::string kEvilKey = "evil\x1b[31mkey\x07", kEvilValue = std::string("line1\nline2\0tail\x1b]0;title\x07", 26);
const std::string kBadKey = "key\xff", kBadValue = "\xff\xfeok\xc3", kBidi = "abc\u202edef";
const std::vector<std::string> kItems{"ok", "\xc0\xaf", "tab\there"};
const std::string kTensor = "t\x1b[2J\xff";

fs::path evil_gguf(const TempDir& dir) {
    HandGguf g;
    g.raw("GGUF", 4);
    g.u32(3);
    g.u64(2);  // tensors
    g.u64(8);  // keys
    g.string("general.architecture");
    g.u32(kString);
    g.string("llama");
    g.string(kEvilKey);
    g.u32(kString);
    g.string(kEvilValue);
    g.string(kBadKey);
    g.u32(kU32);
    g.u32(7);
    g.string("bad.utf8");
    g.u32(kString);
    g.string(kBadValue);
    g.string("bidi");
    g.u32(kString);
    g.string(kBidi);
    g.string("nan");
    g.u32(kF32);
    g.f32(std::numeric_limits<float>::quiet_NaN());
    g.string("inf");
    g.u32(kF64);
    g.f64(-std::numeric_limits<double>::infinity());
    g.string("arr");
    g.u32(kArray);
    g.u32(kString);
    g.u64(kItems.size());
    for (const std::string& s : kItems) g.string(s);
    g.string(kTensor);
    g.u32(1);
    g.u64(4);
    g.u32(0);  // F32
    g.u64(0);
    // A fused tensor's name: the file claims to be a fused model, which it is not (the verdict below).
    g.string("blk.0.attn_q.weight");
    g.u32(1);
    g.u64(4);
    g.u32(0);
    g.u64(32);
    g.pad(32);
    const float data[12] = {1, 2, 3, 4, 0, 0, 0, 0, 5, 6, 7, 8};
    g.raw(data, sizeof data);
    const fs::path p = dir / "evil.gguf";
    g.save(p);
    return p;
}

// Written out here, not taken from headfuse.
std::string to_hex(const std::string& s) {
    std::string out;
    char buf[4];
    for (unsigned char c : s) {
        std::snprintf(buf, sizeof buf, "%02x", c);
        out += buf;
    }
    return out;
}

// #10.5: the text output escapes control bytes and bytes that are not UTF-8 in keys, values and tensor names; a NUL
// no longer cuts a value short.
TEST(CliInspect, TextEscapesWhatTheFileHolds) {
    TempDir dir;
    const RunResult r = run_cli({"inspect", evil_gguf(dir).string()});
    ASSERT_EQ(r.status, 0) << r.err;
    for (const char raw : {'\x1b', '\x07', '\0', '\xff', '\xfe', '\xc0', '\xc3'})
        EXPECT_EQ(r.out.find(raw), std::string::npos) << "raw byte " << int(static_cast<unsigned char>(raw)) << ":\n"
                                                      << r.out;
    for (const std::string& shown :
         {std::string("evil\\x1b[31mkey\\x07"), std::string("\"line1\\x0aline2\\x00tail\\x1b]0;title\\x07\""),
          std::string("key\\xff"), std::string("\"\\xff\\xfeok\\xc3\""), std::string("abc\\u{202e}def"),
          std::string("\"\\xc0\\xaf\""), std::string("\"tab\\x09here\""), std::string("t\\x1b[2J\\xff"),
          std::string("model: not valid: ")})
        EXPECT_NE(r.out.find(shown), std::string::npos) << "no " << shown << " in\n" << r.out;
    // Every line is one of ours: no newline came from the file.
    EXPECT_EQ(r.out.find("line2"), r.out.find("line1") + 9) << r.out;
}

// #10.6: --json is valid JSON for any byte string: UTF-8 as it is, other strings with U+FFFD for each ill-formed
// part and their exact bytes in hex beside them; keys in file order with their index; array element types; NaN
// and infinities as strings; the model verdict of the text output. Python's json (NaN refused) and its UTF-8
// decoder (errors='replace') judge it.
TEST(CliInspect, JsonIsValidForAnyBytes) {
    TempDir dir;
    const RunResult r = run_cli({"inspect", "--json", evil_gguf(dir).string()});
    ASSERT_EQ(r.status, 0) << r.err;
    const fs::path out = dir / "out.json";
    {
        FILE* f = std::fopen(out.c_str(), "wb");
        ASSERT_TRUE(f);
        std::fwrite(r.out.data(), 1, r.out.size(), f);
        std::fclose(f);
    }
    const std::string script = R"(
import json, sys
def refuse(c): raise ValueError('not JSON: ' + c)
j = json.loads(open(sys.argv[1], 'rb').read().decode('utf-8'), parse_constant=refuse)
def exact(obj, field, hexes=None, key=None):
    s = obj[field] if key is None else obj[field][int(key)]
    h = (obj.get(field + '_hex') if key is None else hexes.get(key))
    if h is None:
        return s.encode('utf-8').hex()
    assert bytes.fromhex(h).decode('utf-8', 'replace') == s, (h, s)
    return h
for i, e in enumerate(j['metadata']):
    assert e['index'] == i
    v = e['value']
    if e['type'] == 'string':
        v = exact(e, 'value')
    elif e['type'] == 'array':
        assert e['length'] == len(v)
        v = e['array_type'] + ':' + ','.join(exact(e, 'value', e.get('value_hex', {}), str(n)) for n in range(len(v)))
    print(exact(e, 'key'), e['type'], v)
for t in j['tensors']:
    print('tensor', t['index'], exact(t, 'name'))
print('model valid', j['model']['valid'])
print('not utf8', j['strings_not_utf8'])
)";
    const RunResult py = run_program({"/usr/bin/python3", "-c", script, out.string()});
    ASSERT_EQ(py.status, 0) << py.err << r.out;
    std::string items = "string:";
    for (std::size_t i = 0; i < kItems.size(); ++i) items += (i ? "," : "") + to_hex(kItems[i]);
    const std::string expected =
        to_hex("general.architecture") + " string " + to_hex("llama") + "\n" + to_hex(kEvilKey) + " string " +
        to_hex(kEvilValue) + "\n" + to_hex(kBadKey) + " u32 7\n" + to_hex("bad.utf8") + " string " + to_hex(kBadValue) +
        "\n" + to_hex("bidi") + " string " + to_hex(kBidi) + "\n" + to_hex("nan") + " f32 NaN\n" + to_hex("inf") +
        " f64 -Infinity\n" + to_hex("arr") + " array " + items + "\n" + "tensor 0 " + to_hex(kTensor) + "\ntensor 1 " +
        to_hex("blk.0.attn_q.weight") + "\nmodel valid False\nnot utf8 4\n";
    EXPECT_EQ(py.out, expected) << r.out;
    // The same verdict as the text output.
    EXPECT_NE(run_cli({"inspect", (dir / "evil.gguf").string()}).out.find("model: not valid"), std::string::npos);
}

// ---- non-finite weights outside fuse (#10.14) -----------------------------------------------------------------

// A copy of `from` with weight `col` of row `row` of F32 tensor `tensor` set to `value`.
fs::path with_weight(const fs::path& from, const fs::path& to, const std::string& tensor, std::uint64_t row,
                     std::uint64_t col, float value) {
    fs::copy_file(from, to, fs::copy_options::overwrite_existing);
    const headfuse::GgufFile f = headfuse::GgufFile::open(from);
    const headfuse::TensorInfo* t = f.find_tensor(tensor);
    EXPECT_TRUE(t) << tensor;
    if (!t) return to;
    EXPECT_EQ(t->type, 0u) << "F32";
    FILE* out = std::fopen(to.c_str(), "r+b");
    EXPECT_TRUE(out);
    std::fseek(out, static_cast<long>(f.data_start() + t->offset + (row * t->ne[0] + col) * sizeof(float)), SEEK_SET);
    std::fwrite(&value, sizeof value, 1, out);
    std::fclose(out);
    return to;
}

// #10.14: logits and verify refuse a model with an infinity or a NaN, naming the file, the tensor and the row,
// instead of printing -nan or "max |log-prob difference| 0".
TEST(CliNonFinite, LogitsAndVerifyRefuseNonFiniteWeights) {
    const Models& m = models();
    TempDir dir;
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    const fs::path fused_inf = with_weight(m.fused, dir / "fused-inf.gguf", "blk.1.ffn_up.weight", 5, 7, inf);
    const fs::path ph_nan = with_weight(m.ph, dir / "ph-nan.gguf", "blk.0.ffn_down.weight", 3, 1, nan);
    const Args tokens{"--tokens", "1,2,3"};
    expect_refused(run_cli(concat({"logits", fused_inf.string()}, tokens)),
                   {"fused-inf.gguf", "'blk.1.ffn_up.weight'", "row 5", "non-finite"});
    expect_refused(run_cli(concat({"logits", ph_nan.string()}, tokens)),
                   {"ph-nan.gguf", "'blk.0.ffn_down.weight'", "row 3", "non-finite"});
    expect_refused(run_cli(concat({"verify", m.ph.string(), fused_inf.string()}, tokens)),
                   {"fused-inf.gguf", "'blk.1.ffn_up.weight'", "row 5"}, 2);
    expect_refused(run_cli(concat({"verify", ph_nan.string(), m.fused.string()}, tokens)),
                   {"ph-nan.gguf", "'blk.0.ffn_down.weight'", "row 3"}, 2);
    EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"fused-inf.gguf", "ph-nan.gguf"}));
}

// fuse checks every F32 weight it copies: a large tensor (4 MiB and more) while the kernel copies it, a small one (a
// norm) in the writing thread. Both name the tensor and the row and leave no output.
TEST(CliNonFinite, FuseRefusesNonFiniteWeightsInLargeAndSmallTensors) {
    TempDir dir;
    const fs::path ph = dir / "ph.gguf";
    ASSERT_EQ(run_cli({"init",         "-q",  "-o",       ph.string(), "--d-model", "1024", "--n-heads",  "2",
                       "--n-kv-heads", "2",   "--d-head", "64",        "--d-ff",    "1024", "--n-layers", "1",
                       "--vocab",      "300", "--seed",   "1"})
                  .status,
              0);
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    // blk.0.ffn_up.weight: 1024 rows of 1024 F32, 4 MiB.
    const fs::path big = with_weight(ph, dir / "big-nan.gguf", "blk.0.ffn_up.weight", 1000, 3, nan);
    const fs::path small = with_weight(ph, dir / "norm-inf.gguf", "blk.0.ffn_norm.weight", 0, 9, -inf);
    expect_refused(run_cli({"fuse", "-q", big.string(), "-o", (dir / "out.gguf").string()}),
                   {"big-nan.gguf", "'blk.0.ffn_up.weight'", "row 1000", "non-finite"});
    expect_refused(run_cli({"fuse", "-q", small.string(), "-o", (dir / "out.gguf").string()}),
                   {"norm-inf.gguf", "'blk.0.ffn_norm.weight'", "row 0", "non-finite"});
    EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"big-nan.gguf", "norm-inf.gguf", "ph.gguf"}));
}

// #10.10: a file the reader accepts may put its tensors at any byte (general.alignment 1); logits and verify read
// such F32 weights without a misaligned load (the sanitizer build stops at the first one: -fno-sanitize-recover).
TEST(CliAlignment, OneByteAlignedFilesRunWithoutMisalignedLoads) {
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", fused = dir / "fused.gguf";
    ASSERT_EQ(run_cli(concat({"init", "-q", "-o", ph.string(), "--alignment", "1"}, kModel)).status, 0);
    const RunResult f = run_cli({"fuse", "-q", ph.string(), "-o", fused.string(), "--alignment", "1"});
    ASSERT_EQ(f.status, 0) << f.err;
    for (const fs::path& p : {ph, fused}) {
        const headfuse::GgufFile g = headfuse::GgufFile::open(p);
        EXPECT_EQ(g.alignment(), 1u);
        const bool misaligned = std::any_of(g.tensors().begin(), g.tensors().end(), [&](const headfuse::TensorInfo& t) {
            return (g.data_start() + t.offset) % alignof(float) != 0;
        });
        EXPECT_TRUE(misaligned) << p << ": every tensor is float-aligned, the test would prove nothing";
    }
    for (const Args& args :
         {Args{"logits", fused.string(), "--tokens", "1,2,3"}, Args{"logits", ph.string(), "--tokens", "1,2,3"},
          Args{"verify", ph.string(), fused.string()}}) {
        const RunResult r = run_cli(args);
        EXPECT_EQ(r.status, 0) << args[0] << ": " << r.err;
    }
    expect_refused(run_cli(concat({"init", "-q", "-o", (dir / "x.gguf").string(), "--alignment", "48"}, kModel)),
                   {"--alignment", "power of two", "48"});
}

// ---- issue 23: outputs checked before the work, lists and repeats, the heads verbs' types, sizes (#23.5, #23.9) --

// A tokens file for heads scan: 24 ids across the small model's vocabulary.
fs::path tokens_file(const TempDir& dir) {
    const fs::path p = dir / "tokens.txt";
    std::string ids;
    for (int i = 0; i < 24; ++i) ids += std::to_string((i * 37 + 5) % 300) + (i % 2 ? "\n" : ", ");
    write_text(p, ids, 0644);
    return p;
}

// #23.5: every output of heads scan is checked before the scan: a --svg in a folder that does not exist is refused
// at once with no JSON left; -o and --svg naming one file (by name, through a symbolic link, a hard link) are
// refused, and an existing file keeps its bytes.
TEST(CliOutputs, ScanChecksEveryOutputBeforeTheWork) {
    const Models& m = models();
    TempDir dir;
    const std::string fu = m.fused.string(), tokens = tokens_file(dir).string();
    const std::string json = (dir / "ok.json").string();
    auto scan = [&](const std::string& out, const std::string& svg) {
        return run_cli({"heads", "scan", fu, "--tokens-file", tokens, "-q", "-o", out, "--svg", svg});
    };
    expect_refused(scan(json, (dir / "missing" / "map.svg").string()), {"map.svg"});
    EXPECT_FALSE(fs::exists(json));
    expect_refused(scan(json, json), {"-o", "--svg", "ok.json"});
    EXPECT_FALSE(fs::exists(json));
    fs::create_symlink("ok.json", dir / "link.svg");  // dangling until ok.json is written
    expect_refused(scan(json, (dir / "link.svg").string()), {"-o", "--svg", "link.svg"});
    EXPECT_FALSE(fs::exists(json));
    write_text(dir / "old.json", "old", 0644);
    fs::create_hard_link(dir / "old.json", dir / "hard.svg");
    expect_refused(scan((dir / "old.json").string(), (dir / "hard.svg").string()), {"-o", "--svg", "hard.svg"});
    EXPECT_EQ(read_bytes(dir / "old.json").size(), 3u);
    // Two files: both written.
    const RunResult ok = scan(json, (dir / "map.svg").string());
    ASSERT_EQ(ok.status, 0) << ok.err;
    EXPECT_TRUE(fs::exists(json));
    EXPECT_TRUE(fs::exists(dir / "map.svg"));
}

// #23.9: a head list may have spaces after its commas; it means what the list without them means.
TEST(CliLists, SpacesAfterCommasAreAccepted) {
    const Models& m = models();
    TempDir dir;
    const fs::path tight = dir / "tight.gguf", spaced = dir / "spaced.gguf";
    const RunResult a =
        run_cli({"heads", "ablate", "-q", m.fused.string(), "-o", tight.string(), "--heads", "0:1,1:2"});
    ASSERT_EQ(a.status, 0) << a.err;
    const RunResult b =
        run_cli({"heads", "ablate", "-q", m.fused.string(), "-o", spaced.string(), "--heads", "0:1, 1:2"});
    ASSERT_EQ(b.status, 0) << b.err;
    EXPECT_EQ(read_bytes(tight), read_bytes(spaced));
    const RunResult t = run_cli({"heads", "transplant", "-q", m.fused.string(), "--from", m.fused.string(), "-o",
                                 (dir / "t.gguf").string(), "--heads", "0:1=1:1,  1:2"});
    EXPECT_EQ(t.status, 0) << t.err;
    // Other spaces are still refused, by name.
    expect_refused(
        run_cli({"heads", "ablate", "-q", m.fused.string(), "-o", (dir / "x.gguf").string(), "--heads", "0 :1"}),
        {"--heads", "'0 :1'"});
}

// #23.9: an option given twice is one line naming it, for every kind of option, not CLI11's message.
TEST(CliLists, RepeatedOptionsAreNamed) {
    const Models& m = models();
    TempDir dir;
    const std::string fu = m.fused.string(), ph = m.ph.string(), out = (dir / "x.gguf").string();
    const std::vector<std::pair<Args, std::string>> cases = {
        {{"heads", "ablate", fu, "-o", out, "--heads", "0:1", "--heads", "1:2"}, "--heads"},
        {{"heads", "prune", fu, "-o", out, "--kv-groups", "0:1", "--kv-groups", "1:0"}, "--kv-groups"},
        {{"fuse", ph, "-o", out, "--type", "f16", "--type", "q8_0"}, "--type"},
        {{"fuse", ph, "-o", out, "-o", out}, "--output"},
        {{"fuse", ph, "-o", out, "--split-max-size", "1M", "--split-max-size", "2M"}, "--split-max-size"},
        {{"init", "-o", out, "--seed", "1", "--seed", "2"}, "--seed"},
        {{"logits", fu, "--tokens", "1", "--tokens", "2"}, "--tokens"},
    };
    for (const auto& [args, flag] : cases) {
        SCOPED_TRACE(flag);
        const RunResult r = run_cli(flag == "--seed" ? concat(args, kModel) : args);
        expect_refused(r, {flag, "given 2 times"});
        EXPECT_EQ(r.err.find("argument(s)"), std::string::npos) << r.err;
    }
    EXPECT_TRUE(list_dir(dir.path()).empty());
}

// #23.9: the heads verbs take the K-quant mixes fuse takes, list them in --help, and write what fuse writes for
// the edited model: an ablation at q4_k_m has the tensor types of the ablated F32 model fused at q4_k_m (rows of
// 256, whole K-quant blocks, so the mix's own types, Q4_K among them, not its fallbacks).
TEST(CliTypes, HeadsVerbsTakeTheKQuantMixes) {
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", src = dir / "src.gguf", mixed = dir / "mixed.gguf", plain = dir / "plain.gguf",
                   refused = dir / "fused_mix.gguf";
    ASSERT_EQ(run_cli({"init", "-q", "-o", ph.string(), "--d-model", "256", "--n-heads", "4", "--d-ff", "256",
                       "--n-layers", "1", "--vocab", "300"})
                  .status,
              0);
    ASSERT_EQ(run_cli({"fuse", "-q", ph.string(), "-o", src.string()}).status, 0);
    const RunResult help = run_cli({"heads", "ablate", "--help"});
    EXPECT_NE(help.out.find("q4_k_m"), std::string::npos) << help.out;
    const RunResult a =
        run_cli({"heads", "ablate", "-q", src.string(), "-o", mixed.string(), "--heads", "0:1", "--type", "q4_k_m"});
    ASSERT_EQ(a.status, 0) << a.err;
    EXPECT_NE(a.out.find("q4_k_m"), std::string::npos) << a.out;
    ASSERT_EQ(run_cli({"heads", "ablate", "-q", src.string(), "-o", plain.string(), "--heads", "0:1"}).status, 0);
    ASSERT_EQ(run_cli({"fuse", "-q", plain.string(), "-o", refused.string(), "--type", "q4_k_m"}).status, 0);
    const headfuse::GgufFile x = headfuse::GgufFile::open(mixed), y = headfuse::GgufFile::open(refused);
    ASSERT_EQ(x.tensors().size(), y.tensors().size());
    bool q4_k = false;
    for (std::size_t i = 0; i < x.tensors().size(); ++i) {
        EXPECT_EQ(x.tensors()[i].name, y.tensors()[i].name);
        EXPECT_EQ(x.tensors()[i].type, y.tensors()[i].type) << x.tensors()[i].name;
        q4_k |= x.tensors()[i].type == 12;  // GGML_TYPE_Q4_K
    }
    EXPECT_TRUE(q4_k);
}

// #23.9: the two size options read units by one rule: a plain number is bytes, K/M/G are powers of 1000 (as
// llama-gguf-split counts), KiB/MiB/GiB powers of 1024; --help says so.
TEST(CliSizes, OneRuleForBothSizeOptions) {
    const Models& m = models();
    TempDir dir;
    // --split-max-size: the same shards from 60000, 60K and 60KB; 58KiB (59392 bytes) is a smaller limit.
    std::vector<std::vector<std::string>> sets;
    for (const std::string size : {"60000", "60K", "60KB"}) {
        const fs::path sub = dir / ("s" + size);
        fs::create_directory(sub);
        const RunResult r =
            run_cli({"fuse", "-q", m.ph.string(), "-o", (sub / "m").string(), "--split-max-size", size});
        ASSERT_EQ(r.status, 0) << size << ": " << r.err;
        sets.push_back(list_dir(sub));
        EXPECT_GT(sets.back().size(), 1u) << size;
        if (sets.size() > 1) {
            EXPECT_EQ(sets.back(), sets.front());
            for (const std::string& f : sets.front())
                EXPECT_EQ(read_bytes(sub / f), read_bytes(dir / "s60000" / f)) << size << " " << f;
        }
    }
    // --max-shard-size: 100000, 100K and 100KB give the same export; plain bytes as before.
    std::vector<std::string> exported;
    for (const std::string size : {"100000", "100K", "100KB"}) {
        const fs::path out = dir / ("e" + size);
        const RunResult r = run_cli({"export", "-q", m.ph.string(), "-o", out.string(), "--max-shard-size", size});
        ASSERT_EQ(r.status, 0) << size << ": " << r.err;
        if (exported.empty()) exported = list_dir(out);
        EXPECT_EQ(list_dir(out), exported) << size;
        EXPECT_GT(exported.size(), 3u);  // config.json, the index and shards
    }
    const RunResult kib =
        run_cli({"export", "-q", m.ph.string(), "-o", (dir / "kib").string(), "--max-shard-size", "2MiB"});
    ASSERT_EQ(kib.status, 0) << kib.err;
    for (const std::string bad : {"0", "1.5M", "10T", "M", "-1", "1m", "18446744073709551616"}) {
        expect_refused(run_cli({"fuse", "-q", m.ph.string(), "-o", (dir / "x.gguf").string(), "--split-max-size", bad}),
                       {"--split-max-size", "'" + bad + "'", "KiB"});
        expect_refused(run_cli({"export", "-q", m.ph.string(), "-o", (dir / "x").string(), "--max-shard-size", bad}),
                       {"--max-shard-size", "'" + bad + "'", "KiB"});
    }
    for (const Args& cmd : {Args{"fuse", "--help"}, Args{"export", "--help"}}) {
        const RunResult help = run_cli(cmd);
        EXPECT_NE(help.out.find("KiB"), std::string::npos) << help.out;
        EXPECT_NE(help.out.find("10^6"), std::string::npos) << help.out;
    }
}

}  // namespace
