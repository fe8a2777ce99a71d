// Split sets, as llama.cpp's llama-gguf-split writes and llama.cpp's loader reads them: headfuse writes them from
// every writing command (--split-max-size, --split-max-tensors), reads them from any shard, and llama.cpp loads
// headfuse's shards given the first; a set fuses, splits and fuses back to the same bytes; a broken set is
// refused with one line naming the shard; a failed write leaves no shard behind. Keys headfuse does not own
// pass through fuse and split in their places.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "gguf/writer.h"
#include "headfuse/error.h"
#include "headfuse/file_io.h"
#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/model.h"
#include "headfuse/verify.h"
#include "support/ggml_lib.h"
#include "support/judge.h"
#include "support/models.h"

using namespace headfuse;
using test::TempDir;

namespace {

Config small_model() { return test::make_config_ctx256(128, 4, 2, 32, 1024, 3, 300); }

test::RunResult cli(std::vector<std::string> args) {
    args.push_back("-q");
    return test::run_cli(args);
}

// Files in dir whose names start with prefix.
std::vector<std::string> files_of(const TempDir& dir, const std::string& prefix) {
    std::vector<std::string> out;
    for (const std::string& f : test::list_dir(dir.path()))
        if (f.rfind(prefix, 0) == 0) out.push_back(f);
    return out;
}

// Rewrites one GGUF file (not a set) with `edit` applied to its metadata; tensors unchanged.
void rewrite(const std::filesystem::path& p, const std::function<void(Metadata&)>& edit) {
    test::rewrite_metadata(p, p, edit);
}

}  // namespace

TEST(SplitSets, NamesFollowLlamaGgufSplit) {
    EXPECT_EQ(shard_path("out/m", 0, 3), "out/m-00001-of-00003.gguf");
    EXPECT_EQ(shard_path("out/m.gguf", 2, 3), "out/m-00003-of-00003.gguf");
}

TEST(SplitSets, EveryWritingCommandWritesASetThatReadsFromAnyShard) {
    TempDir dir;
    const auto d = [&](const std::string& n) { return (dir / n).string(); };
    const Config c = small_model();
    // init and fuse the plain way, for comparison
    write_random_init(c, test::test_seed(), dir / "ph.gguf");
    fuse(PerHeadModel::open(dir / "ph.gguf"), dir / "fused.gguf");

    // init --split-max-tensors: a per-head set; -o PREFIX.gguf and -o PREFIX name the same shards
    auto r = cli({"init",
                  "-o",
                  d("phs.gguf"),
                  "--d-model",
                  "128",
                  "--n-heads",
                  "4",
                  "--n-kv-heads",
                  "2",
                  "--d-ff",
                  "1024",
                  "--n-layers",
                  "3",
                  "--vocab",
                  "300",
                  "--context",
                  "256",
                  "--seed",
                  std::to_string(test::test_seed()),
                  "--split-max-tensors",
                  "10"});
    ASSERT_EQ(r.status, 0) << r.err;
    const auto ph_shards = files_of(dir, "phs-");
    ASSERT_GE(ph_shards.size(), 3u);
    EXPECT_EQ(ph_shards.front(), "phs-00001-of-0000" + std::to_string(ph_shards.size()) + ".gguf");

    // fuse from a middle shard, into a set cut by size
    r = cli({"fuse", d(ph_shards[1]), "-o", d("fs"), "--split-max-size", "1M"});
    ASSERT_EQ(r.status, 0) << r.err;
    const auto f_shards = files_of(dir, "fs-");
    ASSERT_GE(f_shards.size(), 3u);
    for (const std::string& s : f_shards) {  // at most 1e6 bytes of tensor data, unless one tensor is larger
        const std::vector<std::byte> bytes = test::read_bytes(dir / s);
        const GgufFile g = GgufFile::parse(bytes, s);
        std::uint64_t data = 0;
        for (const TensorInfo& t : g.tensors()) data += (t.nbytes + g.alignment() - 1) / g.alignment() * g.alignment();
        EXPECT_TRUE(data <= 1'000'000 || g.tensors().size() == 1) << s << ": " << data << " bytes of tensors";
    }

    // split the fused set from its last shard into a set again, fuse that into one file: the plain fused file
    r = cli({"split", d(f_shards.back()), "-o", d("sp"), "--split-max-tensors", "7"});
    ASSERT_EQ(r.status, 0) << r.err;
    const auto s_shards = files_of(dir, "sp-");
    ASSERT_GE(s_shards.size(), 3u);
    r = cli({"fuse", d(s_shards[0]), "-o", d("again.gguf")});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(test::read_bytes(dir / "again.gguf") == test::read_bytes(dir / "fused.gguf"));

    // inspect names the set; verify and logits take any shard
    r = test::run_cli({"inspect", d(f_shards[1])});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("split set of " + std::to_string(f_shards.size()) + " shards"), std::string::npos) << r.out;
    r = cli({"verify", d(ph_shards.back()), d(f_shards.front())});
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    const auto a = forward_logits(open_model(dir / f_shards.back()).views(), default_tokens(c.vocab));
    const auto b = forward_logits(open_model(dir / "fused.gguf").views(), default_tokens(c.vocab));
    EXPECT_TRUE(a == b);
}

TEST(SplitSets, LlamaCppLoadsTheShardsAndAgrees) {
    HEADFUSE_REQUIRE_JUDGES();
    HEADFUSE_REQUIRE_GGML(ggml);
    TempDir dir;
    const Config c = small_model();
    write_random_init(c, test::test_seed(), dir / "ph.gguf");
    FuseOptions opt;
    opt.output.shards.max_tensors = 8;
    const auto shards = fuse(PerHeadModel::open(dir / "ph.gguf"), dir / "m.gguf", opt);
    ASSERT_GE(shards.size(), 3u);
    const std::size_t total = FusedModel::open(shards[1]).file().tensors().size();
    for (std::size_t i = 0; i < shards.size(); ++i) {
        SCOPED_TRACE(shards[i].string());
        ASSERT_TRUE(ggml->read_gguf(shards[i].string()).ok);  // ggml's reader accepts each shard
        // @huggingface/gguf: the split keys with llama-gguf-split's types; all metadata in the first shard only
        const auto j = test::hf_parse(shards[i].string());
        EXPECT_EQ(j["metadata_types"]["split.no"], "UINT16");
        EXPECT_EQ(j["metadata_types"]["split.count"], "UINT16");
        EXPECT_EQ(j["metadata_types"]["split.tensors.count"], "INT32");
        EXPECT_EQ(j["metadata"]["split.no"], i);
        EXPECT_EQ(j["metadata"]["split.count"], shards.size());
        EXPECT_EQ(j["metadata"]["split.tensors.count"], total);
        EXPECT_EQ(j["metadata"].contains("general.architecture"), i == 0);
        EXPECT_EQ(j["metadata"].contains("tokenizer.ggml.tokens"), i == 0);
    }
    // llama.cpp, given the first shard, loads the set and computes what headfuse computes (F32: the F32 bound)
    const auto a = test::agreement_with_llama(shards[0].string(), default_tokens(c.vocab, 8));
    std::printf("[headfuse] split set of %zu shards: llama.cpp max |dlogp| %.3g\n", shards.size(), a.max_diff);
    EXPECT_LE(a.max_diff, 1e-4);
    EXPECT_EQ(a.top_agree, a.positions);
}

TEST(SplitSets, ABrokenSetIsRefusedNamingTheShard) {
    TempDir dir;
    write_random_init(small_model(), test::test_seed(), dir / "ph.gguf");
    FuseOptions opt;
    opt.output.shards.max_tensors = 10;
    const auto shards = fuse(PerHeadModel::open(dir / "ph.gguf"), dir / "m", opt);
    ASSERT_EQ(shards.size(), 3u);
    const auto backup = [&](int i) { return dir / ("backup" + std::to_string(i)); };
    for (int i = 0; i < 3; ++i) std::filesystem::copy_file(shards[i], backup(i));
    const auto restore = [&] {
        for (int i = 0; i < 3; ++i)
            std::filesystem::copy_file(backup(i), shards[i], std::filesystem::copy_options::overwrite_existing);
    };
    struct Case {
        std::string name;
        std::function<void()> damage;
        std::vector<std::string> expect;  // in the error line
    };
    const std::vector<Case> cases = {
        {"missing shard", [&] { std::filesystem::remove(shards[2]); }, {"m-00003-of-00003.gguf", "missing shard 3"}},
        {"renamed shard", [&] { std::filesystem::rename(shards[1], dir / "other.gguf"); }, {"missing shard 2"}},
        {"split.no wrong",
         [&] { rewrite(shards[1], [](Metadata& md) { md.set("split.no", Value::u16(2)); }); },
         {"m-00002-of-00003.gguf", "split.no", "2"}},
        {"split.count wrong",
         [&] { rewrite(shards[2], [](Metadata& md) { md.set("split.count", Value::u16(4)); }); },
         {"m-00003-of-00003.gguf", "split.count"}},
        {"split.count of another type",
         [&] { rewrite(shards[0], [](Metadata& md) { md.set("split.count", Value::u32(3)); }); },
         {"m-00001-of-00003.gguf", "split.count", "u32", "expected u16"}},
        {"split.tensors.count wrong",
         [&] { rewrite(shards[0], [](Metadata& md) { md.set("split.tensors.count", Value::i32(5)); }); },
         {"m-00001-of-00003.gguf", "split.tensors.count", "5"}},
        {"split.tensors.count missing",
         [&] { rewrite(shards[0], [](Metadata& md) { md.erase("split.tensors.count"); }); },
         {"m-00001-of-00003.gguf", "split.tensors.count"}},
    };
    for (const Case& k : cases) {
        SCOPED_TRACE(k.name);
        restore();
        k.damage();
        for (const char* given : {"m-00001-of-00003.gguf", "m-00002-of-00003.gguf"}) {
            if (!std::filesystem::exists(dir / given)) continue;
            const auto r = test::run_cli({"split", (dir / given).string(), "-o", (dir / "out.gguf").string()});
            EXPECT_EQ(r.status, 1) << r.out;
            EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
            for (const std::string& e : k.expect) EXPECT_NE(r.err.find(e), std::string::npos) << r.err;
            EXPECT_FALSE(std::filesystem::exists(dir / "out.gguf"));
        }
        if (std::filesystem::exists(dir / "other.gguf")) std::filesystem::remove(dir / "other.gguf");
    }
    // a shard not named as one
    restore();
    std::filesystem::copy_file(shards[0], dir / "first.gguf");
    const auto r = test::run_cli({"inspect", (dir / "first.gguf").string()});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("must be named PREFIX-00001-of-00003.gguf"), std::string::npos) << r.err;
}

TEST(SplitSets, AFailedWriteLeavesNoShard) {
    TempDir dir;
    write_random_init(small_model(), test::test_seed(), dir / "ph.gguf");
    // a NaN in the last tensor: the set fails after its first shards are written
    {
        const std::vector<std::byte> bytes = test::read_bytes(dir / "ph.gguf");
        const GgufFile g = GgufFile::parse(bytes, "ph.gguf");
        const TensorInfo& last = g.tensors().back();
        std::vector<std::byte> patched = bytes;
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(patched.data() + g.data_start() + last.offset + 4 * 7, &nan, sizeof nan);
        std::filesystem::remove(dir / "ph.gguf");
        write_file_atomically(dir / "ph.gguf", patched);
    }
    const auto r =
        test::run_cli({"fuse", (dir / "ph.gguf").string(), "-o", (dir / "m").string(), "--split-max-tensors", "4"});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("non-finite"), std::string::npos) << r.err;
    EXPECT_EQ(test::list_dir(dir.path()), std::vector<std::string>{"ph.gguf"});
}

// Keys headfuse does not own, wherever they are, pass through split and fuse in their places.
TEST(SplitSets, UnownedKeysPassThroughInTheirPlaces) {
    TempDir dir;
    write_random_init(small_model(), test::test_seed(), dir / "ph.gguf");
    fuse(PerHeadModel::open(dir / "ph.gguf"), dir / "x.gguf");
    rewrite(dir / "x.gguf", [](Metadata& md) {
        Metadata out;
        out.set("aaa.first", Value::string("before everything"));
        for (const auto& e : md.entries()) {
            out.set(e.key, e.value);
            if (e.key == "llama.block_count")
                out.set("custom.array", Value::array(ValueType::I16, {Value::i16(-1), Value::i16(7)}));
        }
        out.set("zzz.last", Value::f64(2.5));
        md = std::move(out);
    });
    auto r = cli({"split", (dir / "x.gguf").string(), "-o", (dir / "ph2.gguf").string()});
    ASSERT_EQ(r.status, 0) << r.err;
    const GgufFile split_file = GgufFile::open(dir / "ph2.gguf");
    const Metadata& split_md = split_file.metadata();
    EXPECT_EQ(split_md.entries().front().key, "aaa.first");
    EXPECT_EQ(split_md.entries().back().key, "zzz.last");
    r = cli({"fuse", (dir / "ph2.gguf").string(), "-o", (dir / "x2.gguf").string()});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(test::read_bytes(dir / "x2.gguf") == test::read_bytes(dir / "x.gguf"));
}
