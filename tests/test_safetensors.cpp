// The safetensors reader and writer: round trips (single file and shards), numpy reading what we write, and one
// hostile header per rule.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "headfuse/error.h"
#include "support/models.h"

namespace {

namespace fs = std::filesystem;
using namespace headfuse;
using headfuse::test::list_dir, headfuse::test::read_bytes, headfuse::test::run_cli, headfuse::test::run_program,
    headfuse::test::TempDir;
using Bytes = std::vector<std::byte>;

Bytes random_bytes(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    Bytes b(n);
    for (auto& x : b) x = static_cast<std::byte>(rng());
    return b;
}

struct Owned {
    std::string name;
    DType type;
    std::vector<std::uint64_t> shape;
    Bytes data;
};

std::vector<StTensorPlan> plans(const std::vector<Owned>& ts) {
    std::vector<StTensorPlan> out;
    for (const Owned& t : ts) out.push_back({t.name, t.type, t.shape, [&t](ByteSink& s) { s.write(t.data); }});
    return out;
}

std::vector<Owned> sample_tensors() {
    return {{"model.embed_tokens.weight", DType::F32, {7, 4}, random_bytes(7 * 4 * 4, 1)},
            {"model.norm.weight", DType::BF16, {4}, random_bytes(8, 2)},
            {"scalar", DType::F32, {}, random_bytes(4, 3)},
            {"empty", DType::F16, {0, 3}, {}},
            {"model.layers.0.mlp.up_proj.weight", DType::F16, {6, 4}, random_bytes(48, 4)}};
}

void expect_same(const std::vector<Owned>& want, const SafetensorsSet& got) {
    EXPECT_EQ(got.tensors().size(), want.size());
    for (const Owned& w : want) {
        const StTensor* t = got.find(w.name);
        ASSERT_NE(t, nullptr) << w.name;
        EXPECT_EQ(t->readable_type(), w.type) << w.name;
        EXPECT_EQ(t->shape, w.shape) << w.name;
        EXPECT_EQ(Bytes(t->bytes.begin(), t->bytes.end()), w.data) << w.name;
    }
}

TEST(Safetensors, RoundTripsOneFile) {
    TempDir dir;
    const auto ts = sample_tensors();
    const auto written = write_safetensors(dir.path(), plans(ts), {});
    ASSERT_EQ(written.size(), 1u);
    EXPECT_EQ(written[0].filename(), "model.safetensors");
    const Bytes b = read_bytes(written[0]);
    std::uint64_t n = 0;
    std::memcpy(&n, b.data(), 8);
    EXPECT_EQ(n % 8, 0u) << "the header is padded to 8 bytes, as the reference writer pads it";
    const SafetensorsSet s = SafetensorsSet::open(dir.path());
    expect_same(ts, s);
    EXPECT_EQ(SafetensorsFile::open(written[0]).metadata().at("format"), "pt");
}

TEST(Safetensors, ShardsBeyondTheLimitWithAnIndex) {
    TempDir dir;
    const auto ts = sample_tensors();
    StWriteOptions opt;
    opt.max_shard_bytes = 115;  // embed (112) alone, then the rest (8 + 4 + 0 + 48)
    const auto written = write_safetensors(dir.path(), plans(ts), opt);
    EXPECT_EQ(list_dir(dir.path()),
              (std::vector<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                        "model.safetensors.index.json"}));
    for (const fs::path& p : {dir.path(), dir / "model.safetensors.index.json"}) {
        const SafetensorsSet s = SafetensorsSet::open(p);
        expect_same(ts, s);
        EXPECT_EQ(s.paths().size(), 3u);
    }
    // A shard of one tensor larger than the limit is still one shard.
    TempDir dir2;
    opt.max_shard_bytes = 1;
    EXPECT_EQ(write_safetensors(dir2.path(), plans(ts), opt).size(), ts.size());  // the empty tensor joins a shard
    expect_same(ts, SafetensorsSet::open(dir2.path()));
}

TEST(Safetensors, NumpyReadsWhatWeWrite) {
    // An independent reader: the format decoded by a few lines of Python and numpy (Debian's python3-numpy).
    TempDir dir;
    const auto ts = sample_tensors();
    write_safetensors(dir.path(), plans(ts), {});
    const char* script = R"(
import json, struct, sys
import numpy as np
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
data = b[8 + n:]
dt = {'F32': np.float32, 'F16': np.float16, 'BF16': np.uint16}
for k, v in h.items():
    if k == '__metadata__': continue
    s, e = v['data_offsets']
    a = np.frombuffer(data[s:e], dtype=dt[v['dtype']]).reshape(v['shape'])
    print(k, v['dtype'], list(a.shape), a.tobytes().hex())
)";
    const auto r = run_program({"/usr/bin/python3", "-c", script, (dir / "model.safetensors").string()});
    ASSERT_EQ(r.status, 0) << r.err;
    for (const Owned& t : ts) {
        std::string hex;
        char buf[3];
        for (std::byte x : t.data) {
            std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned>(x));
            hex += buf;
        }
        std::string shape = "[";
        for (std::size_t i = 0; i < t.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape[i]);
        shape += "]";
        const std::string line =
            t.name + " " + std::string(safetensors_dtype_name(t.type)) + " " + shape + " " + hex + "\n";
        EXPECT_NE(r.out.find(line), std::string::npos) << line << "in\n" << r.out;
    }
}

// ------------------------------------------------------------------------------------------------------------
// Hostile headers: each breaks one rule and must end in an Error naming what is wrong.

Bytes file_of(std::string header, const Bytes& data, bool pad = true) {
    if (pad) header.append((8 - header.size() % 8) % 8, ' ');
    Bytes b(8);
    const std::uint64_t n = header.size();
    std::memcpy(b.data(), &n, 8);
    const auto* h = reinterpret_cast<const std::byte*>(header.data());
    b.insert(b.end(), h, h + header.size());
    b.insert(b.end(), data.begin(), data.end());
    return b;
}

struct Hostile {
    std::string name;
    Bytes bytes;
    std::string expect;  // a part of the error message
};

void PrintTo(const Hostile& h, std::ostream* os) { *os << h.name; }

std::vector<Hostile> hostile() {
    const Bytes d24 = random_bytes(24, 9);
    const std::string w = R"("w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]})";
    auto len = [](std::uint64_t n, std::string rest) {
        Bytes b(8);
        std::memcpy(b.data(), &n, 8);
        for (char c : rest) b.push_back(static_cast<std::byte>(c));
        return b;
    };
    return {
        {"short", Bytes(5), "too short for the 8-byte header length"},
        {"header_over_100mb", len(100'000'001, "{}"), "exceeds the 100000000 bytes"},
        {"header_past_end", len(40, "{}      "), "runs past the end of the file"},
        {"not_brace", file_of(" {" + w + "}", d24), "must start with '{'"},
        {"bad_json", file_of("{\"w\":", d24), "not valid JSON"},
        {"buffer_without_tensors", file_of("{}", d24, false), "tensors end at offset 0 of a data buffer of 24"},
        {"entry_not_object", file_of(R"({"w":5})", {}), "entry must be an object"},
        {"unknown_field", file_of(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"x":1}})", {}),
         "unexpected field 'x'"},
        {"missing_shape", file_of(R"({"w":{"dtype":"F32","data_offsets":[0,0]}})", {}), "missing field \"shape\""},
        {"dtype_unknown", file_of(R"({"w":{"dtype":"F7","shape":[3],"data_offsets":[0,24]}})", d24),
         "unknown dtype 'F7'"},
        {"dtype_size", file_of(R"({"w":{"dtype":"F64","shape":[6],"data_offsets":[0,24]}})", d24),
         "F64 [6] needs 48 bytes, data_offsets give 24"},
        {"dtype_number", file_of(R"({"w":{"dtype":1,"shape":[24],"data_offsets":[0,24]}})", d24),
         "\"dtype\" must be a string"},
        {"negative_dim", file_of(R"({"w":{"dtype":"F32","shape":[-6],"data_offsets":[0,24]}})", d24),
         "must hold unsigned integers"},
        {"float_dim", file_of(R"({"w":{"dtype":"F32","shape":[6.0],"data_offsets":[0,24]}})", d24),
         "must hold unsigned integers"},
        {"too_many_dims", file_of(R"({"w":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,6],"data_offsets":[0,24]}})", d24),
         "9 dimensions"},
        {"elements_overflow",
         file_of(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,24]}})", d24),
         "size overflows 64 bits"},
        {"bytes_overflow", file_of(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,24]}})", d24),
         "size overflows 64 bits"},
        {"length_mismatch", file_of(R"({"w":{"dtype":"F32","shape":[5],"data_offsets":[0,24]}})", d24),
         "needs 20 bytes, data_offsets give 24"},
        {"offsets_reversed", file_of(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[24,0]}})", d24),
         "end before they begin"},
        {"offsets_three", file_of(R"({"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24,24]}})", d24),
         "must be [begin, end]"},
        {"past_buffer", file_of(R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", d24),
         "past the data buffer of 24 bytes"},
        {"gap", file_of(R"({"w":{"dtype":"F32","shape":[5],"data_offsets":[4,24]}})", d24),
         "4 bytes at offset 0 of the data buffer belong to no tensor"},
        {"overlap",
         file_of(
             R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
             d24),
         "overlaps tensor 'a'"},
        {"trailing_bytes", file_of(R"({"w":{"dtype":"F32","shape":[5],"data_offsets":[0,20]}})", d24),
         "tensors end at offset 20 of a data buffer of 24"},
        {"duplicate_name", file_of("{" + w + "," + w + "}", d24), "key 'w' twice"},
        {"metadata_not_string", file_of(R"({"__metadata__":{"format":3}})", {}), "must be a string"},
        {"deep", file_of(R"({"w":{"shape":[[[[1]]]]}})", {}), "nests deeper"},
    };
}

class SafetensorsHostile : public ::testing::TestWithParam<Hostile> {};

TEST_P(SafetensorsHostile, EndsInAnErrorNamingTheProblem) {
    const Hostile& h = GetParam();
    try {
        SafetensorsFile::parse(h.bytes, "x.safetensors");
        FAIL() << "accepted";
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("x.safetensors"), std::string::npos) << msg;
        EXPECT_NE(msg.find(h.expect), std::string::npos) << msg;
        EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
}

INSTANTIATE_TEST_SUITE_P(Cases, SafetensorsHostile, ::testing::ValuesIn(hostile()),
                         [](const auto& info) { return info.param.name; });

// ------------------------------------------------------------------------------------------------------------
// Headers of many entries: read in time linear in the header (the benchmark's st_header_100k times one), and
// refused with the count of what they hold.

// A header (JSON written as Python's json.dumps writes it) of `n` members made by `member(i)`.
std::string many_entries(std::size_t n, const std::function<std::string(std::size_t)>& member,
                         const std::string& wrap_begin = "{", const std::string& wrap_end = "}") {
    std::string h = wrap_begin;
    for (std::size_t i = 0; i < n; ++i) h += (i ? ", " : "") + member(i);
    return h + wrap_end;
}

// `fuse` on the file `bytes`: exit 1, one line on stderr holding `expect`, no output file.
void expect_cli_refusal(const Bytes& bytes, const std::string& expect) {
    TempDir dir;
    const fs::path in = dir / "x.safetensors", out = dir / "out.gguf";
    std::ofstream(in, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    const auto r = run_cli({"fuse", "-q", in.string(), "-o", out.string()});
    EXPECT_EQ(r.status, 1) << r.err;
    EXPECT_EQ(r.err, "headfuse: " + in.string() + ": " + expect + "\n");
    EXPECT_FALSE(fs::exists(out));
}

// safetensors' own attack payload (attacks/safetensors_abuse_attempt_3.py): 100,000 F32 [200, 200] tensors that
// all claim bytes [0, 160000) of a buffer as long as the header.
TEST(SafetensorsScale, AttackOfSharedBytesRefusedNamingTheFirstTwo) {
    auto member = [](std::size_t i) {
        return "\"weight_" + std::to_string(i) +
               R"(": {"dtype": "F32", "shape": [200, 200], "data_offsets": [0, 160000]})";
    };
    const std::string header = many_entries(100'000, member);
    expect_cli_refusal(file_of(header, Bytes(header.size()), false),
                       "tensor 'weight_1' at [0, 160000) overlaps tensor 'weight_0' (ends at 160000)");
}

// More tensors than one file may hold: the refusal counts them, all of them.
TEST(SafetensorsScale, TensorsBeyondTheCapRefusedWithTheirCount) {
    const std::string header = many_entries(300'000, [](std::size_t i) {
        return "\"t" + std::to_string(i) + R"(": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]})";
    });
    expect_cli_refusal(file_of(header, {}, false),
                       "header declares 300000 tensors, more than the 262144 headfuse reads from one file");
}

TEST(SafetensorsScale, MetadataBeyondTheCapRefusedWithItsCount) {
    const std::string header = many_entries(
        300'000, [](std::size_t i) { return "\"k" + std::to_string(i) + "\": \"v\""; }, R"({"__metadata__": {)", "}}");
    expect_cli_refusal(file_of(header, {}, false),
                       "\"__metadata__\" holds 300000 entries, more than the 262144 headfuse reads");
}

// As many tensors as the cap allows are read, every one.
TEST(SafetensorsScale, TensorsUpToTheCapAreRead) {
    constexpr std::size_t kCap = std::size_t{1} << 18;
    const std::string header = many_entries(kCap, [](std::size_t i) {
        return "\"t" + std::to_string(i) + R"(": {"dtype": "BF16", "shape": [1], "data_offsets": [)" +
               std::to_string(2 * i) + ", " + std::to_string(2 * i + 2) + "]}";
    });
    const Bytes b = file_of(header, Bytes(2 * kCap), false);
    const SafetensorsFile f = SafetensorsFile::parse(b, "x.safetensors");
    ASSERT_EQ(f.tensors().size(), kCap);
    EXPECT_EQ(f.tensors().back().name, "t" + std::to_string(kCap - 1));
    EXPECT_EQ(f.find("t12345")->file_offset, 8 + header.size() + 2 * 12345);
}

// The fields of an entry in any order, as JSON allows.
TEST(Safetensors, FieldsInAnyOrder) {
    const Bytes d = random_bytes(24, 6);
    // The parsed file borrows these bytes: they must outlive it.
    const Bytes bytes = file_of(
        R"({"b":{"data_offsets":[8,24],"shape":[2,2],"dtype":"F32"},"a":{"shape":[4],"data_offsets":[0,8],"dtype":"BF16"}})",
        d);
    const SafetensorsFile f = SafetensorsFile::parse(bytes, "x.safetensors");
    ASSERT_EQ(f.tensors().size(), 2u);
    EXPECT_EQ(f.find("b")->shape, (std::vector<std::uint64_t>{2, 2}));
    EXPECT_EQ(Bytes(f.find("b")->bytes.begin(), f.find("b")->bytes.end()), Bytes(d.begin() + 8, d.end()));
    EXPECT_EQ(f.find("a")->readable_type(), DType::BF16);
    EXPECT_EQ(f.tensors().front().name, "a") << "tensors in data-offset order";
}

TEST(Safetensors, ValidatesEveryDtypeAndRefusesOthersByNameWhenUsed) {
    const Bytes d = random_bytes(24, 5);
    const SafetensorsFile f = SafetensorsFile::parse(
        file_of(
            R"({"m":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]},"w":{"dtype":"F64","shape":[2],"data_offsets":[4,20]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[20,24]}})",
            d),
        "x.safetensors");
    EXPECT_EQ(f.find("b")->readable_type(), DType::BF16);
    try {
        (void)f.find("w")->readable_type();
        FAIL();
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "tensor 'w' has dtype F64; headfuse reads F32, F16 and BF16");
    }
}

TEST(SafetensorsIndex, RefusesAMapThatLiesAboutItsShards) {
    TempDir dir;
    const auto ts = sample_tensors();
    StWriteOptions opt;
    opt.max_shard_bytes = 115;
    write_safetensors(dir.path(), plans(ts), opt);
    const fs::path index = dir / "model.safetensors.index.json";
    const std::string good = [&] {
        std::ifstream f(index);
        return std::string(std::istreambuf_iterator<char>(f), {});
    }();
    auto with = [&](const std::string& text) {
        std::ofstream(index, std::ios::trunc) << text;
        try {
            SafetensorsSet::open(dir.path());
            return std::string("accepted");
        } catch (const Error& e) {
            return std::string(e.what());
        }
    };
    auto replaced = [&](const std::string& from, const std::string& to) {
        std::string s = good;
        const auto at = s.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        return s.replace(at, from.size(), to);
    };
    EXPECT_NE(with("[]").find("expected an object with a \"weight_map\" object"), std::string::npos);
    EXPECT_NE(with("{\"weight_map\":").find("not valid JSON"), std::string::npos);
    EXPECT_NE(with(replaced("\"model.norm.weight\": \"model-00002-of-00002.safetensors\"",
                            "\"model.norm.weight\": \"../model-00002-of-00002.safetensors\""))
                  .find("expected a file in the index's folder"),
              std::string::npos);
    EXPECT_NE(with(replaced("\"model.norm.weight\": \"model-00002-of-00002.safetensors\"",
                            "\"model.norm.weight\": \"model-00001-of-00002.safetensors\""))
                  .find("tensor 'model.norm.weight' is in"),
              std::string::npos);
    EXPECT_NE(with(replaced("\"model.norm.weight\": \"model-00002-of-00002.safetensors\",", ""))
                  .find("is not in the weight_map"),
              std::string::npos);
    EXPECT_NE(with(replaced("\"empty\"", "\"ghost\"")).find("is not in the weight_map"), std::string::npos);
    EXPECT_NE(with(replaced("model-00002-of-00002.safetensors\",", "missing.safetensors\",")).find("cannot open"),
              std::string::npos);
    EXPECT_EQ(with(good), "accepted");
}

TEST(SafetensorsWriter, RefusesDuplicateNamesAndShortProducers) {
    TempDir dir;
    auto ts = sample_tensors();
    ts.push_back(ts.front());
    EXPECT_THROW(write_safetensors(dir.path(), plans(ts), {}), Error);
    std::vector<StTensorPlan> p = {{"w", DType::F32, {4}, [](ByteSink& s) { s.write(Bytes(12)); }}};
    EXPECT_THROW(write_safetensors(dir.path(), p, {}), Error);
    EXPECT_TRUE(list_dir(dir.path()).empty()) << "nothing is left behind";
    std::vector<StTensorPlan> q8 = {{"w", DType::Q8_0, {32}, [](ByteSink& s) { s.write(Bytes(34)); }}};
    EXPECT_THROW(write_safetensors(dir.path(), q8, {}), Error);
}

}  // namespace
