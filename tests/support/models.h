// Shared test fixtures: the shape families every round trip runs over, temporary folders, the CLI.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "headfuse/config.h"
#include "headfuse/gguf.h"

namespace headfuse::test {

struct Shape {
    std::string name;
    Config config;
};
// gtest prints a parameter with this.
inline void PrintTo(const Shape& s, std::ostream* os) { *os << s.name; }

// A config of these sizes (context 2048, the default rms_eps and rope_theta, no lens).
Config make_config(std::uint32_t d_model, std::uint32_t n_heads, std::uint32_t n_kv_heads, std::uint32_t d_head,
                   std::uint32_t d_ff, std::uint32_t n_layers, std::uint32_t vocab, bool tied = false,
                   std::uint32_t donor_d_in = 0);
// make_config with a context of 256 tokens: the models tests hand to llama.cpp (a small KV cache).
Config make_config_ctx256(std::uint32_t d_model, std::uint32_t n_heads, std::uint32_t n_kv_heads, std::uint32_t d_head,
                          std::uint32_t d_ff, std::uint32_t n_layers, std::uint32_t vocab);

// c as a model of family f, with the optional roles the family's models have: qwen2's q/k/v biases, qwen3's
// q/k norms (the others: none added).
Config with_family(Config c, Family f);

// A model whose attention is sharp enough for RoPE to matter: weights uniform in +-2/sqrt(n_in) (the
// N(0, 0.02) of `init` leaves attention almost uniform, and the positions almost invisible), norms 1 (or uniform
// in 1 +- norm_spread), biases uniform in +-0.5, embeddings uniform in +-1, rope_freqs a ramp. Written as a
// per-head checkpoint.
void write_sharp_model(const Config& c, std::uint64_t seed, const std::filesystem::path& path,
                       float norm_spread = 0.0f);

// write_sharp_model(c, test_seed(), dir/ph.gguf, 0.3) fused by the CLI into dir/fused.gguf, whose path it
// returns (a gtest failure, and an empty path, when fuse fails).
std::filesystem::path fused_sharp_model(const Config& c, const std::filesystem::path& dir);

// MHA, GQA, MQA, d_head != d_model/n_heads, tied and untied, a lens, vocabularies below 256 and in the
// thousands. Every 2-D weight has rows of whole 32-element blocks, so every type applies.
std::vector<Shape> shape_families();

// The seed of randomised tests: HEADFUSE_TEST_SEED if set, else a fixed default. Printed once.
std::uint64_t test_seed();

// A fresh folder under the system's temporary folder, removed with its contents on destruction.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
    const std::filesystem::path& path() const noexcept { return path_; }

private:
    std::filesystem::path path_;
};

struct RunResult {
    int status = -1;  // exit code, or 128 + signal
    std::string out, err;
};

// A command line's arguments.
using Args = std::vector<std::string>;
// a, then b.
Args concat(Args a, const Args& b);

// Runs the headfuse CLI built alongside the tests.
RunResult run_cli(const std::vector<std::string>& args);
// Starts the CLI in the background (stdin, stdout and stderr on /dev/null); -1 if it cannot start. The caller
// waits for it (waitpid).
pid_t spawn_cli(const std::vector<std::string>& args);
// Runs any program (argv[0] looked up in PATH).
RunResult run_program(const std::vector<std::string>& argv);

std::vector<std::byte> read_bytes(const std::filesystem::path& p);
// Writes the GGUF file `in` (not a split set) again to `out` (which may be `in`) with `edit` applied to its
// metadata: same alignment, same tensors in the same order.
void rewrite_metadata(const std::filesystem::path& in, const std::filesystem::path& out,
                      const std::function<void(Metadata&)>& edit);
// Files in `dir` (names only), sorted.
std::vector<std::string> list_dir(const std::filesystem::path& dir);

// A model the CLI wrote, for tests that start from valid files: `headfuse init` with `init_flags` (the shape and
// seed) into per_head, and its F32 fuse into fused, in a folder that lives as long as this. Throws
// std::runtime_error when the CLI fails.
struct ModelFiles {
    explicit ModelFiles(const Args& init_flags);
    TempDir dir;
    std::filesystem::path per_head, fused;
};

// Expects c.validate() to refuse c with a message containing needle (a gtest failure otherwise).
void expect_config_refused(const Config& c, std::string_view needle);

}  // namespace headfuse::test
