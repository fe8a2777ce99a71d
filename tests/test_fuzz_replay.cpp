// Replays the fuzz corpus (fuzz/corpus/<target>/) through the fuzzers' own entry points, so that ordinary CI,
// with any compiler and with or without sanitizers, runs every seed and every reproducer of a past finding.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>

#include "../fuzz/entry_points.h"
#include "support/models.h"

namespace {

namespace fs = std::filesystem;
using headfuse::test::read_bytes;

struct Target {
    std::string name;
    std::function<bool(std::span<const std::byte>)> run;
    std::string accepts;  // seeds whose names start with this must be accepted ("" for none)
};

void PrintTo(const Target& t, std::ostream* os) { *os << t.name; }

class FuzzReplay : public ::testing::TestWithParam<Target> {};

TEST_P(FuzzReplay, EveryCorpusFileEndsCleanly) {
    const Target& t = GetParam();
    const fs::path dir = fs::path(HEADFUSE_SOURCE_DIR) / "fuzz" / "corpus" / t.name;
    ASSERT_TRUE(fs::is_directory(dir)) << dir;
    int files = 0, accepted = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
        const std::string name = e.path().filename().string();
        const std::vector<std::byte> bytes = read_bytes(e.path());
        SCOPED_TRACE(t.name + "/" + name);
        bool ok = false;
        ASSERT_NO_THROW(ok = t.run(bytes)) << "only headfuse::Error may reject an input";
        ++files;
        accepted += ok;
        if (!t.accepts.empty() && name.rfind("seed-" + t.accepts, 0) == 0) {
            EXPECT_TRUE(ok) << "a valid seed was rejected";
        }
        if (name.rfind("seed-broken_", 0) == 0) {
            EXPECT_FALSE(ok) << "a broken seed was accepted";
        }
    }
    EXPECT_GT(files, 0);
    EXPECT_GT(accepted, 0) << "no input reached the end of the entry point";
    std::printf("[replay] %s: %d files, %d accepted\n", t.name.c_str(), files, accepted);
}

INSTANTIATE_TEST_SUITE_P(Corpus, FuzzReplay,
                         ::testing::Values(Target{"gguf", headfuse::fuzz::gguf, "fu_"},
                                           Target{"config", headfuse::fuzz::config, "fu_"},
                                           Target{"per_head", headfuse::fuzz::per_head, "ph_"},
                                           Target{"fused", headfuse::fuzz::fused, "fu_"},
                                           Target{"safetensors", headfuse::fuzz::safetensors, "st_"},
                                           Target{"tokenizer", headfuse::fuzz::tokenizer, "tk_"},
                                           Target{"sp_model", headfuse::fuzz::sp_model, "sp_"}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
