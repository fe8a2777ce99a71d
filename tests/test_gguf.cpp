// GGUF reader and writer: every value type round trips; tensors of every type land where ggml's own reader
// expects them; the writer refuses what the reader would refuse and publishes atomically.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "base/fail.h"
#include "gguf/writer.h"
#include "headfuse/error.h"
#include "headfuse/file_io.h"
#include "headfuse/gguf.h"
#include "support/ggml_lib.h"
#include "support/judge.h"
#include "support/models.h"

using namespace headfuse;
using headfuse::test::TempDir;

namespace {

Metadata every_value_type() {
    Metadata md;
    md.set("general.architecture", Value::string("test"));
    md.set("t.u8", Value::u8(250));
    md.set("t.i8", Value::i8(-120));
    md.set("t.u16", Value::u16(65000));
    md.set("t.i16", Value::i16(-32000));
    md.set("t.u32", Value::u32(4000000000u));
    md.set("t.i32", Value::i32(-2000000000));
    md.set("t.u64", Value::u64(18000000000000000000ull));
    md.set("t.i64", Value::i64(-9000000000000000000ll));
    md.set("t.f32", Value::f32(3.25f));
    md.set("t.f64", Value::f64(-1e300));
    md.set("t.bool", Value::boolean(true));
    md.set("t.string", Value::string("h\xC3\xA9llo \xE2\x96\x81 world"));
    md.set("t.empty_string", Value::string(""));
    md.set("t.array_u8", Value::array(ValueType::U8, {Value::u8(1), Value::u8(2)}));
    md.set("t.array_i32", Value::array(ValueType::I32, {Value::i32(-1), Value::i32(7)}));
    md.set("t.array_f32", Value::array(ValueType::F32, {Value::f32(0.5f)}));
    md.set("t.array_f64", Value::array(ValueType::F64, {Value::f64(2.5), Value::f64(-0.0)}));
    md.set("t.array_bool", Value::array(ValueType::BOOL, {Value::boolean(false), Value::boolean(true)}));
    md.set("t.array_string",
           Value::array(ValueType::STRING, {Value::string("a"), Value::string(""), Value::string("ccc")}));
    md.set("t.array_u64", Value::array(ValueType::U64, {Value::u64(1ull << 60)}));
    md.set("t.array_empty", Value::array(ValueType::I16, {}));
    return md;
}

std::function<void(ByteSink&)> bytes_of(std::vector<std::byte> data) {
    return [data = std::move(data)](ByteSink& s) { s.write(data); };
}

std::vector<std::byte> random_bytes(std::size_t n, std::mt19937_64& rng) {
    std::vector<std::byte> b(n);
    for (auto& x : b) x = std::byte(rng() & 0xff);
    return b;
}

}  // namespace

TEST(Gguf, EveryValueTypeRoundTrips) {
    TempDir dir;
    GgufWriter w;
    w.metadata = every_value_type();
    w.write(dir / "kv.gguf");
    const GgufFile f = GgufFile::open(dir / "kv.gguf");
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.metadata().entries(), w.metadata.entries());
    EXPECT_TRUE(f.tensors().empty());
}

TEST(Gguf, TensorsOfEveryTypeAndAlignmentRoundTripAndGgmlAgrees) {
    HEADFUSE_OPTIONAL_GGML(ggml);
    std::mt19937_64 rng(test::test_seed());
    for (std::uint32_t alignment : {32u, 64u, 1u, 4096u}) {
        TempDir dir;
        GgufWriter w;
        w.metadata = every_value_type();
        w.alignment = alignment;
        std::vector<std::vector<std::byte>> data;
        std::uint32_t i = 0;
        for (DType t : writable_dtypes()) {
            for (std::vector<std::uint64_t> ne : {std::vector<std::uint64_t>{64}, {32, 3}, {96, 5, 2}, {32, 1, 1, 3}}) {
                if (traits(t).block_size > 32) ne[0] *= traits(t).block_size / 32;  // whole K-quant super-blocks
                std::uint64_t rows = 1;
                for (std::size_t d = 1; d < ne.size(); ++d) rows *= ne[d];
                data.push_back(random_bytes(row_bytes(t, ne[0]) * rows, rng));
                w.add_tensor("t" + std::to_string(i++) + "." + std::string(type_name(t)), static_cast<std::uint32_t>(t),
                             ne, bytes_of(data.back()));
            }
        }
        const auto path = dir / "tensors.gguf";
        w.write(path);
        EXPECT_EQ(std::filesystem::file_size(path), w.file_size());
        const GgufFile f = GgufFile::open(path);
        EXPECT_EQ(f.alignment(), alignment);
        ASSERT_EQ(f.tensors().size(), data.size());
        for (std::size_t k = 0; k < data.size(); ++k) {
            const TensorInfo& t = f.tensors()[k];
            const auto got = f.tensor_data(t);
            ASSERT_EQ(got.size(), data[k].size());
            EXPECT_EQ(std::memcmp(got.data(), data[k].data(), got.size()), 0) << t.name;
            EXPECT_EQ(t.offset % alignment, 0u);
        }
        if (!ggml) continue;
        const auto summary = ggml->read_gguf(path.string());
        ASSERT_TRUE(summary.ok) << "ggml rejected a file headfuse wrote, alignment " << alignment;
        EXPECT_EQ(summary.data_offset, f.data_start());
        EXPECT_EQ(static_cast<std::size_t>(summary.n_kv), f.metadata().size());
        ASSERT_EQ(summary.names.size(), f.tensors().size());
        for (std::size_t k = 0; k < data.size(); ++k) {
            const TensorInfo& t = f.tensors()[k];
            EXPECT_EQ(summary.names[k], t.name);
            EXPECT_EQ(summary.offsets[k], t.offset);
            EXPECT_EQ(summary.types[k], t.type);
        }
    }
}

// general.alignment, when the metadata does not hold it, goes right after general.architecture (so a model built
// in memory and the same model read back write the same bytes); held, it stays in its place; without an
// architecture it goes last.
TEST(Gguf, AlignmentKeyHasOnePlace) {
    auto keys_written = [](const Metadata& md) {
        TempDir dir;
        GgufWriter w;
        w.metadata = md;
        w.alignment = 64;
        w.write(dir / "a.gguf");
        std::vector<std::string> keys;
        const GgufFile f = GgufFile::open(dir / "a.gguf");
        for (const auto& e : f.metadata().entries()) keys.push_back(e.key);
        return keys;
    };
    Metadata md;
    md.set("x.first", Value::u8(1));
    md.set("general.architecture", Value::string("test"));
    md.set("x.last", Value::u8(2));
    using Keys = std::vector<std::string>;
    EXPECT_EQ(keys_written(md), (Keys{"x.first", "general.architecture", "general.alignment", "x.last"}));
    md.set("general.alignment", Value::u32(32));  // held: its place is kept, its value is the writer's
    EXPECT_EQ(keys_written(md), (Keys{"x.first", "general.architecture", "x.last", "general.alignment"}));
    md.erase("general.alignment");
    md.erase("general.architecture");
    EXPECT_EQ(keys_written(md), (Keys{"x.first", "x.last", "general.alignment"}));
}

TEST(Gguf, HuggingFaceParserReadsWhatWeWrite) {
    HEADFUSE_REQUIRE_JUDGES();
    TempDir dir;
    GgufWriter w;
    w.metadata = every_value_type();
    std::vector<float> x(64 * 3, 0.25f);
    std::vector<std::byte> b(x.size() * 4);
    std::memcpy(b.data(), x.data(), b.size());
    w.add_tensor("blk.0.x.weight", 0, std::vector<std::uint64_t>{64, 3}, bytes_of(b));
    w.write(dir / "hf.gguf");
    const auto j = test::hf_parse((dir / "hf.gguf").string());
    EXPECT_EQ(j["metadata"]["t.string"], "h\xC3\xA9llo \xE2\x96\x81 world");
    EXPECT_EQ(j["metadata"]["t.u32"], 4000000000u);
    ASSERT_EQ(j["tensors"].size(), 1u);
    EXPECT_EQ(j["tensors"][0]["name"], "blk.0.x.weight");
}

TEST(Gguf, WriterRefusesWhatTheReaderWould) {
    GgufWriter w;
    const std::vector<std::uint64_t> ok{32, 2};
    w.add_tensor("a", 0, ok, {});
    EXPECT_THROW(w.add_tensor("a", 0, ok, {}), Error);                                         // duplicate name
    EXPECT_THROW(w.add_tensor(std::string(64, 'n'), 0, ok, {}), Error);                        // name too long
    EXPECT_THROW(w.add_tensor("q", 8, std::vector<std::uint64_t>{48, 2}, {}), Error);          // not whole q8_0 blocks
    EXPECT_THROW(w.add_tensor("d", 0, std::vector<std::uint64_t>{1, 1, 1, 1, 1}, {}), Error);  // 5 dims
    EXPECT_THROW(w.add_tensor("u", 99, ok, {}), Error);                                        // unknown type
    EXPECT_THROW(w.add_tensor("o", 0, std::vector<std::uint64_t>{1ull << 40, 1ull << 40}, {}), Error);  // overflow
    EXPECT_THROW(Value::array(ValueType::ARRAY, {}), Error);                                            // nested arrays
    w.alignment = 48;
    EXPECT_THROW(w.header(), Error);  // alignment not a power of two
}

TEST(Gguf, FailedWriteLeavesNothingAndKeepsTheOldFile) {
    TempDir dir;
    const auto path = dir / "out.gguf";
    {
        GgufWriter w;
        w.metadata.set("k", Value::u32(1));
        w.write(path);
    }
    const auto before = test::read_bytes(path);
    GgufWriter w;
    w.add_tensor("short", 0, std::vector<std::uint64_t>{32}, [](ByteSink& s) {
        std::vector<std::byte> half(64);
        s.write(half);  // 64 of 128 bytes, then the producer gives up
    });
    EXPECT_THROW(w.write(path), Error);
    EXPECT_EQ(test::read_bytes(path), before);
    EXPECT_EQ(test::list_dir(dir.path()), std::vector<std::string>{"out.gguf"});
    GgufWriter thrower;
    thrower.add_tensor("t", 0, std::vector<std::uint64_t>{32}, [](ByteSink&) { fail("producer failed"); });
    EXPECT_THROW(thrower.write(dir / "new.gguf"), Error);
    EXPECT_EQ(test::list_dir(dir.path()), std::vector<std::string>{"out.gguf"});
}

TEST(Gguf, ReaderNamesTheFileAndTheProblem) {
    TempDir dir;
    const auto path = dir / "bad.gguf";
    const std::string junk("GGUF\x03\x00\x00\x00", 8);  // version 3, then the file ends
    write_file_atomically(path, {reinterpret_cast<const std::byte*>(junk.data()), junk.size()});
    try {
        GgufFile::open(path);
        FAIL() << "a truncated header was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("tensor count"), std::string::npos) << e.what();
    }
}
