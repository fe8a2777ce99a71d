// Errors carry a kind a library caller can branch on (invalid input, I/O, invalid argument, unsupported), and
// the message stays one line naming the file, tensor or key. Each kind is provoked through the public API the
// way a caller would meet it.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "headfuse/error.h"
#include "headfuse/fuse.h"
#include "headfuse/heads.h"
#include "headfuse/model.h"
#include "support/models.h"

namespace headfuse {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Runs f, which must throw headfuse::Error; returns it (a default Error when it did not throw, after failing).
Error thrown(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "threw another exception: " << e.what();
        return Error("");
    }
    ADD_FAILURE() << "did not throw";
    return Error("");
}

// The kind, and a one-line message holding every one of `named`.
void expect_error(const Error& e, ErrorKind kind, const std::vector<std::string>& named) {
    const std::string m = e.what();
    EXPECT_EQ(e.kind(), kind) << "kind " << error_kind_name(e.kind()) << ", expected " << error_kind_name(kind) << ": "
                              << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    for (const std::string& s : named) EXPECT_NE(m.find(s), std::string::npos) << "'" << s << "' not in: " << m;
}

Config small() { return test::make_config(64, 4, 2, 16, 128, 2, 300); }

// A per-head file of small(), and the same file with `edit` applied to its metadata.
fs::path per_head_file(const TempDir& dir, const std::string& name,
                       const std::function<void(Metadata&)>& edit = nullptr) {
    const fs::path p = dir / (name + ".gguf");
    write_random_init(small(), 7, p);
    if (edit) test::rewrite_metadata(p, p, edit);
    return p;
}

TEST(ErrorKinds, EachKindHasAName) {
    EXPECT_EQ(error_kind_name(ErrorKind::InvalidInput), "invalid input");
    EXPECT_EQ(error_kind_name(ErrorKind::Io), "I/O");
    EXPECT_EQ(error_kind_name(ErrorKind::InvalidArgument), "invalid argument");
    EXPECT_EQ(error_kind_name(ErrorKind::Unsupported), "unsupported");
    EXPECT_EQ(Error("x").kind(), ErrorKind::InvalidInput);
}

TEST(ErrorKinds, AFileThatIsNotWhatItSaysIsInvalidInput) {
    TempDir dir;
    const fs::path good = per_head_file(dir, "good");
    // Cut short: the header promises tensors the file does not hold.
    const fs::path cut = dir / "cut.gguf";
    {
        const auto bytes = test::read_bytes(good);
        std::ofstream(cut, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), 200);
    }
    expect_error(thrown([&] { open_model(cut); }), ErrorKind::InvalidInput, {cut.string()});
    // A hyperparameter out of range in the file is the file's fault, not the caller's.
    const fs::path eps = per_head_file(
        dir, "eps", [](Metadata& md) { md.set("llama.attention.layer_norm_rms_epsilon", Value::f32(-1.0f)); });
    expect_error(thrown([&] { open_model(eps); }), ErrorKind::InvalidInput, {eps.string(), "rms_eps"});
}

TEST(ErrorKinds, AFailedSystemCallIsIo) {
    TempDir dir;
    const fs::path missing = dir / "missing.gguf";
    expect_error(thrown([&] { open_model(missing); }), ErrorKind::Io, {missing.string(), "No such file"});
    // Writing into a folder that does not exist.
    const PerHeadModel m = open_model(per_head_file(dir, "m"));
    const fs::path out = dir / "no-such-folder" / "out.gguf";
    expect_error(thrown([&] { fuse(m, out); }), ErrorKind::Io, {out.string()});
    EXPECT_FALSE(fs::exists(dir / "no-such-folder"));
}

TEST(ErrorKinds, WhatTheCallerAskedForIsInvalidArgument) {
    TempDir dir;
    const fs::path in = per_head_file(dir, "m");
    const PerHeadModel m = open_model(in);
    // A config built by hand that does not validate.
    Config c = small();
    c.rms_eps = 0;
    expect_error(thrown([&] { c.validate(); }), ErrorKind::InvalidArgument, {"rms_eps"});
    // A head the model does not have.
    const std::vector<HeadRef> heads = {{5, 0}};
    expect_error(thrown([&] { ablate_heads(m, heads); }), ErrorKind::InvalidArgument, {"5:0"});
    // The output is the input.
    expect_error(thrown([&] {
                     FuseOptions same;
                     same.inputs = {in};
                     fuse(m, in, same);
                     ;
                 }),
                 ErrorKind::InvalidArgument, {in.filename().string()});
    // An alignment that is not a power of two.
    FuseOptions odd;
    odd.output.alignment = 48;
    expect_error(thrown([&] { fuse(m, dir / "odd.gguf", odd); }), ErrorKind::InvalidArgument, {"48"});
    EXPECT_FALSE(fs::exists(dir / "odd.gguf"));
}

TEST(ErrorKinds, AWellFormedFeatureHeadfuseDoesNotHandleIsUnsupported) {
    TempDir dir;
    const fs::path gpt2 =
        per_head_file(dir, "gpt2", [](Metadata& md) { md.set("general.architecture", Value::string("gpt2")); });
    expect_error(thrown([&] { open_model(gpt2); }), ErrorKind::Unsupported, {gpt2.string(), "gpt2"});
    const fs::path yarn =
        per_head_file(dir, "rope", [](Metadata& md) { md.set("llama.rope.scaling.type", Value::string("longrope")); });
    expect_error(thrown([&] { open_model(yarn); }), ErrorKind::Unsupported, {yarn.string(), "longrope"});
    // Encoding starts from f32, f16 or bf16 weights: a q8_0 model is not re-encoded to q4_0.
    const PerHeadModel m = open_model(per_head_file(dir, "m"));
    const fs::path q8 = dir / "q8.gguf";
    FuseOptions to_q8;
    to_q8.type = DType::Q8_0;
    fuse(m, q8, to_q8);
    const PerHeadModel q = open_model(q8);
    expect_error(thrown([&] {
                     FuseOptions to_q4;
                     to_q4.type = DType::Q4_0;
                     fuse(q, dir / "q4.gguf", to_q4);
                     ;
                 }),
                 ErrorKind::Unsupported, {"q8_0"});
    EXPECT_FALSE(fs::exists(dir / "q4.gguf"));
}

}  // namespace
}  // namespace headfuse
