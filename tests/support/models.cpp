#include "support/models.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>

#include "gguf/writer.h"
#include "headfuse/error.h"
#include "headfuse/model.h"
#include "model/roles.h"
#include "support/sharp_model.h"

extern char** environ;

namespace headfuse::test {

void write_sharp_model(const Config& c, std::uint64_t seed, const std::filesystem::path& path, float norm_spread) {
    const std::vector<SharpTensor> tensors = sharp_tensors(c, seed, norm_spread);
    sharp_model(c, tensors).save(path);
}

Config with_family(Config c, Family f) {
    c.family = f;
    if (f == Family::Qwen2)
        for (Role r : {Role::AttnQBias, Role::AttnKBias, Role::AttnVBias}) c.optional_roles.insert(r);
    if (f == Family::Qwen3)
        for (Role r : {Role::AttnQNorm, Role::AttnKNorm}) c.optional_roles.insert(r);
    return c;
}

Config make_config(std::uint32_t d_model, std::uint32_t n_heads, std::uint32_t n_kv_heads, std::uint32_t d_head,
                   std::uint32_t d_ff, std::uint32_t n_layers, std::uint32_t vocab, bool tied,
                   std::uint32_t donor_d_in) {
    Config c;
    c.d_model = d_model;
    c.n_heads = n_heads;
    c.n_kv_heads = n_kv_heads;
    c.d_head = d_head;
    c.d_ff = d_ff;
    c.n_layers = n_layers;
    c.vocab = vocab;
    c.tied = tied;
    c.donor_d_in = donor_d_in;
    return c;
}

Config make_config_ctx256(std::uint32_t d_model, std::uint32_t n_heads, std::uint32_t n_kv_heads, std::uint32_t d_head,
                          std::uint32_t d_ff, std::uint32_t n_layers, std::uint32_t vocab) {
    Config c = make_config(d_model, n_heads, n_kv_heads, d_head, d_ff, n_layers, vocab);
    c.context_length = 256;
    return c;
}

std::vector<Shape> shape_families() {
    auto make = [](std::string name, std::uint32_t dm, std::uint32_t nh, std::uint32_t nkv, std::uint32_t dh,
                   std::uint32_t ff, std::uint32_t nl, std::uint32_t vocab, bool tied, std::uint32_t donor = 0) {
        Config c = make_config(dm, nh, nkv, dh, ff, nl, vocab, tied, donor);
        c.context_length = 256;
        return Shape{std::move(name), c};
    };
    return {
        make("mha", 64, 4, 4, 16, 128, 2, 300, false),
        make("gqa", 64, 8, 2, 8, 96, 2, 1000, false),
        make("mqa_tied", 96, 6, 1, 16, 160, 2, 512, true),
        make("wide_heads", 64, 4, 2, 32, 128, 2, 200, false),  // n_heads*d_head = 128 != d_model
        make("tiny_vocab_tied", 32, 2, 1, 16, 64, 1, 100, true),
        make("lens", 64, 4, 2, 16, 128, 2, 3000, false, 48),
        make("vocab_4096", 128, 8, 4, 16, 256, 2, 4096, false),
    };
}

std::uint64_t test_seed() {
    static const std::uint64_t seed = [] {
        const char* env = std::getenv("HEADFUSE_TEST_SEED");
        const std::uint64_t s = env ? std::strtoull(env, nullptr, 10) : 20261128;
        std::fprintf(stderr, "[headfuse] test seed %llu (set HEADFUSE_TEST_SEED to change)\n",
                     static_cast<unsigned long long>(s));
        return s;
    }();
    return seed;
}

TempDir::TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "headfuse-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
}

TempDir::~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

namespace {
std::string slurp(int fd) {
    std::string s;
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<std::size_t>(n));
    return s;
}
}  // namespace

RunResult run_program(const std::vector<std::string>& argv) {
    // stdout and stderr go to temporary files: no pipe can fill up and block the child.
    FILE* out = std::tmpfile();
    FILE* err = std::tmpfile();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fileno(out), 1);
    posix_spawn_file_actions_adddup2(&fa, fileno(err), 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = 0;
    RunResult r;
    if (posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ) != 0) {
        r.err = "cannot start " + argv[0];
    } else {
        int status = 0;
        ::waitpid(pid, &status, 0);
        r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    posix_spawn_file_actions_destroy(&fa);
    std::rewind(out);
    std::rewind(err);
    r.out = slurp(fileno(out));
    r.err = slurp(fileno(err));
    std::fclose(out);
    std::fclose(err);
    return r;
}

std::filesystem::path fused_sharp_model(const Config& c, const std::filesystem::path& dir) {
    write_sharp_model(c, test_seed(), dir / "ph.gguf", 0.3f);
    const std::filesystem::path fused = dir / "fused.gguf";
    const auto r = run_cli({"fuse", (dir / "ph.gguf").string(), "-o", fused.string(), "-q"});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.status == 0 ? fused : std::filesystem::path();
}

RunResult run_cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv{HEADFUSE_CLI};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_program(argv);
}

pid_t spawn_cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv{HEADFUSE_CLI};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> p;
    for (std::string& a : argv) p.push_back(a.data());
    p.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    if (posix_spawn(&pid, p[0], &fa, nullptr, p.data(), environ) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

std::vector<std::byte> read_bytes(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> b(c.size());
    std::transform(c.begin(), c.end(), b.begin(), [](char x) { return std::byte(x); });
    return b;
}

std::vector<std::string> list_dir(const std::filesystem::path& dir) {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

void rewrite_metadata(const std::filesystem::path& in, const std::filesystem::path& out,
                      const std::function<void(Metadata&)>& edit) {
    const std::vector<std::byte> bytes = read_bytes(in);
    const GgufFile g = GgufFile::parse(bytes, in.string());
    GgufWriter w;
    w.alignment = g.alignment();
    w.metadata = g.metadata();
    edit(w.metadata);
    for (const TensorInfo& t : g.tensors())
        w.add_tensor(t.name, t.type, {t.ne.data(), t.n_dims},
                     [&g, &t](ByteSink& sink) { sink.write(g.tensor_data(t)); });
    std::filesystem::remove(out);
    w.write(out);
}

Args concat(Args a, const Args& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

ModelFiles::ModelFiles(const Args& init_flags) : per_head(dir / "per_head.gguf"), fused(dir / "fused.gguf") {
    const RunResult a = run_cli(concat({"init", "-q", "-o", per_head.string()}, init_flags));
    const RunResult b = a.status == 0 ? run_cli({"fuse", "-q", per_head.string(), "-o", fused.string()}) : RunResult{};
    if (a.status != 0 || b.status != 0) throw std::runtime_error("cannot write the base files: " + a.err + b.err);
}

void expect_config_refused(const Config& c, std::string_view needle) {
    try {
        c.validate();
        ADD_FAILURE() << "accepted; expected a refusal naming " << needle;
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
}

}  // namespace headfuse::test
