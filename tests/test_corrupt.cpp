// One lie per field: handcrafted hostile files, each run through the real CLI. Every case must end with exit
// status 1, exactly one line on stderr naming the field, key or tensor, no crash and no output file.
//
// The files start from valid ones the CLI writes (a per-head checkpoint and its fused file). A small GGUF
// builder re-serialises them field by field, byte for byte as the library wrote them (checked first), so that
// each case changes one field and everything else stays as the writer made it.
#include <sys/resource.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "headfuse/gguf.h"
#include "support/models.h"

namespace {

namespace fs = std::filesystem;
using namespace headfuse;
using headfuse::test::list_dir, headfuse::test::read_bytes, headfuse::test::run_cli, headfuse::test::TempDir;
using Bytes = std::vector<std::byte>;

// ------------------------------------------------------------------------------------------------------------
// A tiny GGUF byte builder.

template <class T>
void put(Bytes& b, T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    b.insert(b.end(), p, p + sizeof v);
}
void put_string(Bytes& b, std::string_view s) {
    put<std::uint64_t>(b, s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    b.insert(b.end(), p, p + s.size());
}

void put_scalar(Bytes& b, const Value& v) {
    switch (v.type) {
        case ValueType::U8: put(b, static_cast<std::uint8_t>(std::get<std::uint64_t>(v.scalar))); break;
        case ValueType::I8: put(b, static_cast<std::int8_t>(std::get<std::int64_t>(v.scalar))); break;
        case ValueType::U16: put(b, static_cast<std::uint16_t>(std::get<std::uint64_t>(v.scalar))); break;
        case ValueType::I16: put(b, static_cast<std::int16_t>(std::get<std::int64_t>(v.scalar))); break;
        case ValueType::U32: put(b, static_cast<std::uint32_t>(std::get<std::uint64_t>(v.scalar))); break;
        case ValueType::I32: put(b, static_cast<std::int32_t>(std::get<std::int64_t>(v.scalar))); break;
        case ValueType::U64: put(b, std::get<std::uint64_t>(v.scalar)); break;
        case ValueType::I64: put(b, std::get<std::int64_t>(v.scalar)); break;
        case ValueType::F32: put(b, static_cast<float>(std::get<double>(v.scalar))); break;
        case ValueType::F64: put(b, std::get<double>(v.scalar)); break;
        case ValueType::BOOL: put<std::uint8_t>(b, std::get<bool>(v.scalar) ? 1 : 0); break;
        case ValueType::STRING: put_string(b, std::get<std::string>(v.scalar)); break;
        case ValueType::ARRAY: break;
    }
}

// A value as it goes on the wire after its key: u32 type, then the value.
Bytes encode(const Value& v) {
    Bytes b;
    put(b, static_cast<std::uint32_t>(v.type));
    if (v.type != ValueType::ARRAY) {
        put_scalar(b, v);
        return b;
    }
    put(b, static_cast<std::uint32_t>(v.elem_type));
    put<std::uint64_t>(b, v.items.size());
    for (const Value& item : v.items) put_scalar(b, item);
    return b;
}

struct RawKV {
    std::string key;
    Bytes value;  // u32 type + value, raw: a case may write anything here
};

struct RawTensor {
    std::string name;
    std::vector<std::uint64_t> ne;
    std::optional<std::uint32_t> n_dims;  // the field as written; ne.size() unless a case lies
    std::uint32_t type = 0;
    std::optional<std::uint64_t> offset;  // computed (contiguous, aligned) unless a case lies
    Bytes data;
};

struct RawGguf {
    char magic[4] = {'G', 'G', 'U', 'F'};
    std::uint32_t version = 3;
    std::optional<std::uint64_t> n_tensors, n_kv;  // computed unless a case lies
    std::vector<RawKV> kvs;
    std::vector<RawTensor> tensors;
    std::uint32_t alignment = 32;  // layout alignment (general.alignment is an ordinary key in kvs)

    static RawGguf from_file(const fs::path& path) {
        const GgufFile f = GgufFile::open(path);
        RawGguf g;
        g.version = f.version();
        g.alignment = f.alignment();
        for (const auto& e : f.metadata().entries()) g.kvs.push_back({e.key, encode(e.value)});
        for (const TensorInfo& t : f.tensors()) {
            const auto d = f.tensor_data(t);
            g.tensors.push_back(
                {t.name, {t.ne.begin(), t.ne.begin() + t.n_dims}, {}, t.type, {}, {d.begin(), d.end()}});
        }
        return g;
    }

    Bytes bytes() const {
        Bytes b(reinterpret_cast<const std::byte*>(magic), reinterpret_cast<const std::byte*>(magic) + 4);
        put(b, version);
        put<std::uint64_t>(b, n_tensors.value_or(tensors.size()));
        put<std::uint64_t>(b, n_kv.value_or(kvs.size()));
        for (const RawKV& kv : kvs) {
            put_string(b, kv.key);
            b.insert(b.end(), kv.value.begin(), kv.value.end());
        }
        auto align = [&](std::uint64_t x) { return (x + alignment - 1) / alignment * alignment; };
        std::uint64_t offset = 0;
        for (const RawTensor& t : tensors) {
            put_string(b, t.name);
            put<std::uint32_t>(b, t.n_dims.value_or(static_cast<std::uint32_t>(t.ne.size())));
            for (std::uint64_t d : t.ne) put(b, d);
            put(b, t.type);
            put(b, t.offset.value_or(offset));
            offset = align(offset + t.data.size());
        }
        b.resize(align(b.size()));
        for (const RawTensor& t : tensors) {
            b.insert(b.end(), t.data.begin(), t.data.end());
            b.resize(align(b.size()));
        }
        return b;
    }

    RawKV& kv(std::string_view key) {
        for (RawKV& e : kvs)
            if (e.key == key) return e;
        throw std::runtime_error("test bug: no key " + std::string(key));
    }
    void set(std::string_view key, const Value& v) { kv(key).value = encode(v); }
    void add(std::string key, const Value& v) { kvs.push_back({std::move(key), encode(v)}); }
    // set() when the key is there, add() when it is not.
    void put_kv(std::string key, const Value& v) {
        for (auto& e : kvs)
            if (e.key == key) return void(e.value = encode(v));
        add(std::move(key), v);
    }
    void erase_kv(std::string_view key) {
        std::erase_if(kvs, [&](const RawKV& e) { return e.key == key; });
    }
    // Where the first tensor info starts, and where the data section starts.
    std::size_t tensor_infos_at() const {
        std::size_t at = 24;
        for (const RawKV& kv : kvs) at += 8 + kv.key.size() + kv.value.size();
        return at;
    }
    std::size_t data_at() const {
        std::size_t at = tensor_infos_at();
        for (const RawTensor& t : tensors) at += 8 + t.name.size() + 4 + 8 * t.ne.size() + 4 + 8;
        return (at + alignment - 1) / alignment * alignment;
    }
    // The data offset a tensor gets when none lies: contiguous, each padded to the alignment.
    std::uint64_t natural_offset(std::string_view name) const {
        std::uint64_t offset = 0;
        for (const RawTensor& t : tensors) {
            if (t.name == name) return offset;
            offset = (offset + t.data.size() + alignment - 1) / alignment * alignment;
        }
        throw std::runtime_error("test bug: no tensor " + std::string(name));
    }
    RawTensor& tensor(std::string_view name) {
        for (RawTensor& t : tensors)
            if (t.name == name) return t;
        throw std::runtime_error("test bug: no tensor " + std::string(name));
    }
    void erase_tensor(std::string_view name) {
        std::erase_if(tensors, [&](const RawTensor& t) { return t.name == name; });
    }
};

// Raw bytes of a typed value: u32 type followed by whatever a case wants.
template <class... T>
Bytes raw(std::uint32_t type, T... fields) {
    Bytes b;
    put(b, type);
    (put(b, fields), ...);
    return b;
}

void set_float(RawTensor& t, std::size_t i, float v) { std::memcpy(t.data.data() + i * sizeof(float), &v, sizeof v); }

void write_file(const fs::path& p, const Bytes& b) {
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// ------------------------------------------------------------------------------------------------------------
// The valid files every case starts from, written once by the CLI.

enum class Base { PerHead, Fused };
// inspect FILE | fuse FILE -o OUT | split FILE -o OUT | verify PER_HEAD FILE (or FILE FUSED) | logits FILE -o OUT
enum class Cmd { Inspect, Fuse, Split, Verify, Logits };

// 4 query heads sharing 2 kv heads of width 4 (q_dim 16 != d_model 8), d_ff 12, 2 layers, vocab 12.
const test::ModelFiles& fixture() {
    static const test::ModelFiles f({"--d-model", "8", "--n-heads", "4", "--n-kv-heads", "2", "--d-head", "4", "--d-ff",
                                     "12", "--n-layers", "2", "--vocab", "12", "--seed", "7"});
    return f;
}

struct Case {
    std::string name;
    Base base;
    Cmd cmd;
    std::vector<std::string> expect;  // substrings of the one error line
    std::function<void(RawGguf&)> edit = {};
    std::function<void(const RawGguf&, Bytes&)> patch = {};  // on the serialised bytes, after `edit`
    bool names_file = true;  // false: the error is about a tensor's values and names the tensor only
};

// Where the first key's length field sits (after magic, version and the two counts).
constexpr std::size_t kFirstKeyAt = 24;

template <class T>
void poke(Bytes& b, std::size_t at, T v) {
    std::memcpy(b.data() + at, &v, sizeof v);
}

std::vector<Case> cases() {
    const std::uint64_t huge = std::uint64_t{1} << 62;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    return {
        // ---- header
        {"magic", Base::Fused, Cmd::Inspect, {"bad magic"}, [](RawGguf& g) { std::memcpy(g.magic, "GGML", 4); }},
        {"empty_file", Base::Fused, Cmd::Split, {"bad magic"}, {}, [](const RawGguf&, Bytes& b) { b.clear(); }},
        {"version_1", Base::Fused, Cmd::Inspect, {"version", "found 1"}, [](RawGguf& g) { g.version = 1; }},
        {"version_4", Base::PerHead, Cmd::Fuse, {"version", "found 4"}, [](RawGguf& g) { g.version = 4; }},
        {"truncated_header",
         Base::Fused,
         Cmd::Inspect,
         {"version", "needs 4 bytes"},
         {},
         [](const RawGguf&, Bytes& b) { b.resize(6); }},
        {"tensor_count_huge",
         Base::Fused,
         Cmd::Inspect,
         {"tensor count", "cannot fit"},
         [=](RawGguf& g) { g.n_tensors = huge; }},
        {"tensor_count_one_less",
         Base::PerHead,
         Cmd::Fuse,
         {"missing tensor 'blk.1.ffn_down.weight'"},
         [](RawGguf& g) { g.n_tensors = g.tensors.size() - 1; }},
        {"metadata_count_huge",
         Base::Fused,
         Cmd::Inspect,
         {"metadata count", "cannot fit"},
         [=](RawGguf& g) { g.n_kv = huge; }},
        // One key too many: the first tensor info is read as a key, and the real tensor infos run off the end.
        {"metadata_count_one_more",
         Base::PerHead,
         Cmd::Fuse,
         {"name of tensor 0", "needs"},
         [](RawGguf& g) { g.n_kv = g.kvs.size() + 1; }},
        // ---- strings
        {"key_length_huge",
         Base::Fused,
         Cmd::Inspect,
         {"key 0", "needs"},
         {},
         [=](const RawGguf&, Bytes& b) { poke(b, kFirstKeyAt, huge); }},
        {"string_value_length_huge",
         Base::Fused,
         Cmd::Split,
         {"general.architecture", "needs"},
         [=](RawGguf& g) { g.kv("general.architecture").value = raw(8, huge); }},
        {"tensor_name_length_huge",
         Base::Fused,
         Cmd::Inspect,
         {"name of tensor 0", "needs"},
         {},
         [=](const RawGguf& g, Bytes& b) { poke(b, g.tensor_infos_at(), huge); }},
        {"tensor_name_too_long",
         Base::PerHead,
         Cmd::Fuse,
         {"name is 64 bytes", "at most 63"},
         [](RawGguf& g) { g.tensors[1].name = std::string(64, 'n'); }},
        // ---- metadata values and arrays
        {"value_type_unknown",
         Base::Fused,
         Cmd::Inspect,
         {"general.architecture", "value type must be 0..12, found 13"},
         [](RawGguf& g) { g.kv("general.architecture").value = raw(13u); }},
        {"bool_value_2",
         Base::Fused,
         Cmd::Split,
         {"tokenizer.ggml.add_bos_token", "must be 0 or 1, found 2"},
         [](RawGguf& g) { g.kv("tokenizer.ggml.add_bos_token").value = raw(7u, std::uint8_t{2}); }},
        {"array_element_type_unknown",
         Base::Fused,
         Cmd::Inspect,
         {"tokenizer.ggml.tokens", "element type must be 0..12, found 13"},
         [](RawGguf& g) { poke(g.kv("tokenizer.ggml.tokens").value, 4, std::uint32_t{13}); }},
        {"array_nested",
         Base::Fused,
         Cmd::Split,
         {"tokenizer.ggml.scores", "nested arrays"},
         [](RawGguf& g) { poke(g.kv("tokenizer.ggml.scores").value, 4, std::uint32_t{9}); }},
        {"array_length_huge",
         Base::Fused,
         Cmd::Inspect,
         {"tokenizer.ggml.token_type", "cannot fit"},
         [=](RawGguf& g) { poke(g.kv("tokenizer.ggml.token_type").value, 8, huge); }},
        {"array_string_length_huge",
         Base::Fused,
         Cmd::Verify,
         {"tokenizer.ggml.tokens", "needs"},
         [=](RawGguf& g) { poke(g.kv("tokenizer.ggml.tokens").value, 16, huge); }},
        // ---- tensor infos
        {"n_dims_0",
         Base::PerHead,
         Cmd::Fuse,
         {"token_embd.weight", "n_dims must be 1..4, found 0"},
         [](RawGguf& g) { g.tensors[0].n_dims = 0; }},
        {"n_dims_5",
         Base::Fused,
         Cmd::Inspect,
         {"token_embd.weight", "n_dims must be 1..4, found 5"},
         [](RawGguf& g) { g.tensors[0].n_dims = 5; }},
        {"ne_product_overflows",
         Base::Fused,
         Cmd::Inspect,
         {"output.weight", "overflows the element count"},
         [](RawGguf& g) {
             g.tensor("output.weight").ne = {std::uint64_t{1} << 32, std::uint64_t{1} << 32};
         }},
        {"ne_above_int64",
         Base::PerHead,
         Cmd::Logits,
         {"output_norm.weight", "overflows the element count"},
         [](RawGguf& g) { g.tensor("output_norm.weight").ne = {std::uint64_t{1} << 63}; }},
        {"type_id_unknown",
         Base::Fused,
         Cmd::Split,
         {"blk.0.ffn_up.weight", "unknown ggml type id 4"},
         [](RawGguf& g) { g.tensor("blk.0.ffn_up.weight").type = 4; }},
        {"type_id_huge",
         Base::PerHead,
         Cmd::Inspect,
         {"blk.0.ffn_gate.weight", "unknown ggml type id 4294967295"},
         [](RawGguf& g) { g.tensor("blk.0.ffn_gate.weight").type = 0xFFFFFFFFu; }},
        {"ne0_not_whole_blocks",
         Base::Fused,
         Cmd::Inspect,
         {"token_embd.weight", "not a multiple of the q8_0 block size 32"},
         [](RawGguf& g) { g.tensor("token_embd.weight").type = 8; }},
        // ---- offsets and data
        {"offset_misaligned",
         Base::Fused,
         Cmd::Split,
         {"output_norm.weight", "data offset is", "tensors are contiguous"},
         [](RawGguf& g) { g.tensor("output_norm.weight").offset = g.natural_offset("output_norm.weight") + 4; }},
        {"offset_overlapping",
         Base::PerHead,
         Cmd::Fuse,
         {"output_norm.weight", "data offset is 0, expected"},
         [](RawGguf& g) { g.tensor("output_norm.weight").offset = 0; }},
        {"offset_past_the_end",
         Base::Fused,
         Cmd::Inspect,
         {"blk.1.ffn_down.weight", "data offset is"},
         [](RawGguf& g) { g.tensors.back().offset = std::uint64_t{1} << 40; }},
        {"data_truncated",
         Base::Fused,
         Cmd::Split,
         {"blk.1.ffn_down.weight", "needs 384 bytes at offset"},
         {},
         [](const RawGguf& g, Bytes& b) {  // cut into the last tensor, not only its padding
             const RawTensor& last = g.tensors.back();
             b.resize(g.data_at() + g.natural_offset(last.name) + last.data.size() - 200);
         }},
        {"data_missing",
         Base::PerHead,
         Cmd::Logits,
         {"token_embd.weight", "needs 384 bytes"},
         {},
         [](const RawGguf& g, Bytes& b) { b.resize(g.data_at()); }},
        // ---- duplicates
        {"duplicate_key",
         Base::Fused,
         Cmd::Inspect,
         {"duplicate key 'llama.block_count'"},
         [](RawGguf& g) { g.kvs.push_back(g.kv("llama.block_count")); }},
        {"duplicate_key_with_newline",
         Base::Fused,
         Cmd::Inspect,
         {"duplicate key 'bad\\x0akey'"},
         [](RawGguf& g) {
             g.add("bad\nkey", Value::u32(1));
             g.add("bad\nkey", Value::u32(2));
         }},
        {"duplicate_tensor_name",
         Base::PerHead,
         Cmd::Fuse,
         {"duplicate tensor 'blk.0.attn_norm.weight'"},
         [](RawGguf& g) { g.tensor("blk.0.ffn_norm.weight").name = "blk.0.attn_norm.weight"; }},
        // ---- alignment
        {"alignment_0",
         Base::Fused,
         Cmd::Inspect,
         {"general.alignment", "power of two, found 0"},
         [](RawGguf& g) { g.put_kv("general.alignment", Value::u32(0)); }},
        {"alignment_48",
         Base::PerHead,
         Cmd::Fuse,
         {"general.alignment", "power of two, found 48"},
         [](RawGguf& g) { g.put_kv("general.alignment", Value::u32(48)); }},
        {"alignment_wrong_type",
         Base::Fused,
         Cmd::Split,
         {"general.alignment", "type u64, expected u32"},
         [](RawGguf& g) { g.put_kv("general.alignment", Value::u64(32)); }},
        {"alignment_lie",
         Base::Fused,
         Cmd::Inspect,
         {"output_norm.weight", "padded to 256 bytes"},
         [](RawGguf& g) { g.put_kv("general.alignment", Value::u32(256)); }},
        // ---- tensors against the model
        {"missing_tensor",
         Base::PerHead,
         Cmd::Fuse,
         {"missing tensor 'blk.0.ffn_up.weight'", "[8, 12]"},
         [](RawGguf& g) { g.erase_tensor("blk.0.ffn_up.weight"); }},
        {"missing_head",
         Base::PerHead,
         Cmd::Logits,
         {"missing tensor 'blk.1.attn_q.head_3.weight'"},
         [](RawGguf& g) { g.erase_tensor("blk.1.attn_q.head_3.weight"); }},
        {"extra_tensor",
         Base::Fused,
         Cmd::Split,
         {"unexpected tensor 'extra.weight'"},
         [](RawGguf& g) {
             g.tensors.push_back({"extra.weight", {8}, {}, 0, {}, Bytes(32)});
         }},
        {"extra_lens_in_fused",
         Base::Fused,
         Cmd::Verify,
         {"unexpected tensor 'lens.proj.weight'"},
         [](RawGguf& g) {
             g.tensors.push_back({"lens.proj.weight", {8, 8}, {}, 0, {}, Bytes(256)});
         }},
        {"misshaped_tensor",
         Base::Fused,
         Cmd::Split,
         {"blk.0.attn_k.weight", "expected [8, 8], got [4, 16]"},
         [](RawGguf& g) {
             g.tensor("blk.0.attn_k.weight").ne = {4, 16};
         }},
        {"misshaped_head",
         Base::PerHead,
         Cmd::Fuse,
         {"blk.0.attn_v.head_1.weight", "expected [8, 4], got [8, 2, 2]"},
         [](RawGguf& g) {
             g.tensor("blk.0.attn_v.head_1.weight").ne = {8, 2, 2};
         }},
        {"norm_not_f32",
         Base::Fused,
         Cmd::Logits,
         {"blk.0.ffn_norm.weight", "has type f16, expected f32"},
         [](RawGguf& g) {
             RawTensor& t = g.tensor("blk.0.ffn_norm.weight");
             t.type = 1;
             t.data.resize(16);
         }},
        {"weight_type_not_handled",
         Base::PerHead,
         Cmd::Fuse,
         {"blk.0.ffn_gate.weight", "has type i32"},
         [](RawGguf& g) { g.tensor("blk.0.ffn_gate.weight").type = 26; }},
        {"token_embd_1d",
         Base::Fused,
         Cmd::Split,
         {"token_embd.weight", "expected 2 dimensions"},
         [](RawGguf& g) { g.tensor("token_embd.weight").ne = {96}; }},
        {"per_head_given_to_split", Base::PerHead, Cmd::Split, {"a per-head checkpoint", "blk.0.attn_q.head_0.weight"}},
        // ---- metadata against the model
        {"missing_key",
         Base::Fused,
         Cmd::Split,
         {"missing key 'llama.embedding_length'"},
         [](RawGguf& g) { g.erase_kv("llama.embedding_length"); }},
        {"key_wrong_type_u64",
         Base::PerHead,
         Cmd::Fuse,
         {"llama.block_count", "has type u64, expected u32"},
         [](RawGguf& g) { g.set("llama.block_count", Value::u64(2)); }},
        {"key_wrong_type_f64",
         Base::Fused,
         Cmd::Logits,
         {"llama.attention.layer_norm_rms_epsilon", "has type f64, expected f32"},
         [](RawGguf& g) { g.set("llama.attention.layer_norm_rms_epsilon", Value::f64(1e-5)); }},
        {"architecture_not_llama",
         Base::PerHead,
         Cmd::Fuse,
         {"general.architecture", "must be one of llama, deci", "found \"gpt2\""},
         [](RawGguf& g) { g.set("general.architecture", Value::string("gpt2")); }},
        {"head_count_0",
         Base::Fused,
         Cmd::Split,
         {"llama.attention.head_count", "found 0"},
         [](RawGguf& g) { g.set("llama.attention.head_count", Value::u32(0)); }},
        {"head_count_kv_not_dividing",
         Base::PerHead,
         Cmd::Fuse,
         {"n_kv_heads must divide n_heads (4), found 3"},
         [](RawGguf& g) { g.set("llama.attention.head_count_kv", Value::u32(3)); }},
        {"key_length_ne_rope_dims",
         Base::Fused,
         Cmd::Split,
         {"llama.rope.dimension_count", "is 6, expected key_length 4"},
         [](RawGguf& g) { g.set("llama.rope.dimension_count", Value::u32(6)); }},
        {"value_length_ne_key_length",
         Base::PerHead,
         Cmd::Logits,
         {"llama.attention.value_length", "is 8, expected key_length 4"},
         [](RawGguf& g) { g.set("llama.attention.value_length", Value::u32(8)); }},
        {"vocab_size_mismatch",
         Base::Fused,
         Cmd::Split,
         {"llama.vocab_size", "is 13", "12 rows"},
         [](RawGguf& g) { g.set("llama.vocab_size", Value::u32(13)); }},
        {"embedding_length_mismatch",
         Base::PerHead,
         Cmd::Fuse,
         {"token_embd.weight", "expected [16, 12], got [8, 12]"},
         [](RawGguf& g) { g.set("llama.embedding_length", Value::u32(16)); }},
        {"d_head_odd",
         Base::Fused,
         Cmd::Split,
         {"d_head must be even", "found 3"},
         [](RawGguf& g) {
             for (const char* k :
                  {"llama.attention.key_length", "llama.attention.value_length", "llama.rope.dimension_count"})
                 g.set(k, Value::u32(3));
         }},
        {"rms_eps_nan",
         Base::PerHead,
         Cmd::Fuse,
         {"rms_eps must be a positive number"},
         [=](RawGguf& g) { g.set("llama.attention.layer_norm_rms_epsilon", Value::f32(nan)); }},
        {"block_count_absurd",
         Base::PerHead,
         Cmd::Fuse,
         {"n_layers 4096", "50356228 tensors", "more than the 1048576"},
         [](RawGguf& g) {
             g.set("llama.block_count", Value::u32(4096));
             g.set("llama.attention.head_count", Value::u32(4096));
             g.set("llama.attention.head_count_kv", Value::u32(4096));
         }},
        {"block_count_one_more",
         Base::Fused,
         Cmd::Split,
         {"missing tensor 'blk.2.attn_norm.weight'"},
         [](RawGguf& g) { g.set("llama.block_count", Value::u32(3)); }},
        // ---- weights
        {"nan_weight",
         Base::PerHead,
         Cmd::Fuse,
         {"blk.1.ffn_up.weight", "non-finite", "row 1"},
         [=](RawGguf& g) { set_float(g.tensor("blk.1.ffn_up.weight"), 13, nan); },
         {},
         false},
        {"inf_weight_in_head",
         Base::PerHead,
         Cmd::Fuse,
         {"blk.0.attn_k.head_1.weight", "non-finite", "row 1"},
         [=](RawGguf& g) { set_float(g.tensor("blk.0.attn_k.head_1.weight"), 8 + 3, -inf); },
         {},
         false},
        {"nan_in_norm",
         Base::PerHead,
         Cmd::Fuse,
         {"output_norm.weight", "non-finite", "row 0"},
         [=](RawGguf& g) { set_float(g.tensor("output_norm.weight"), 2, nan); },
         {},
         false},
    };
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class Corrupt : public ::testing::TestWithParam<Case> {};

TEST(CorruptBuilder, ReserialisesTheLibrarysFilesByteForByte) {
    for (const fs::path& p : {fixture().per_head, fixture().fused})
        EXPECT_EQ(RawGguf::from_file(p).bytes(), read_bytes(p)) << p;
}

TEST_P(Corrupt, EndsInOneClearLineAndNoOutput) {
    const Case& c = GetParam();
    const test::ModelFiles& fx = fixture();
    TempDir work;
    const fs::path in_dir = work / "in", out_dir = work / "out";
    fs::create_directories(in_dir);
    fs::create_directories(out_dir);

    const fs::path base = c.base == Base::PerHead ? fx.per_head : fx.fused;
    RawGguf g = RawGguf::from_file(base);
    if (c.edit) c.edit(g);
    Bytes bytes = g.bytes();
    if (c.patch) c.patch(g, bytes);
    const fs::path in = in_dir / ("case_" + c.name + ".gguf");
    write_file(in, bytes);
    const std::vector<std::byte> before = read_bytes(in);

    const fs::path out = out_dir / "out.gguf";
    std::vector<std::string> args;
    switch (c.cmd) {
        case Cmd::Inspect: args = {"inspect", in.string()}; break;
        case Cmd::Fuse: args = {"fuse", "-q", in.string(), "-o", out.string()}; break;
        case Cmd::Split: args = {"split", "-q", in.string(), "-o", out.string()}; break;
        case Cmd::Verify:
            args = c.base == Base::PerHead
                       ? std::vector<std::string>{"verify", "-q", in.string(), fx.fused.string()}
                       : std::vector<std::string>{"verify", "-q", fx.per_head.string(), in.string()};
            break;
        case Cmd::Logits:
            args = {"logits", "-q", in.string(), "--tokens", "0,11", "-o", (out_dir / "logits.bin").string()};
            break;
    }
    const auto r = run_cli(args);
    std::printf("[corrupt] %-28s %s", c.name.c_str(), r.err.c_str());

    EXPECT_LT(r.status, 128) << "killed by a signal: " << r.err;
    EXPECT_EQ(r.status, c.cmd == Cmd::Verify ? 2 : 1) << r.err;  // verify: 2, they could not be compared
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.back(), '\n') << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr must be one line:\n" << r.err;
    for (const std::string& s : c.expect)
        EXPECT_NE(r.err.find(s), std::string::npos) << "missing '" << s << "' in: " << r.err;
    if (c.names_file) {
        EXPECT_NE(r.err.find(in.filename().string()), std::string::npos) << "the file is not named: " << r.err;
    }
    EXPECT_TRUE(list_dir(out_dir).empty()) << "output left behind";
    EXPECT_EQ(list_dir(in_dir), std::vector<std::string>{in.filename().string()}) << "stray file next to the input";
    EXPECT_EQ(read_bytes(in), before) << "the input was changed";
}

INSTANTIATE_TEST_SUITE_P(Cases, Corrupt, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(CorruptTable, HasAtLeastFortyCases) { EXPECT_GE(cases().size(), 40u); }

// ------------------------------------------------------------------------------------------------------------
// Sizes a hostile file can ask for cheaply: every step must stay n log n. A per-key or per-tensor linear search
// made these quadratic (a 2 MB file of 100k keys took 6 minutes to split; 49k head tensors 21 s to write).
// Measured as the CLI's CPU time at n and 4n, so that the machine's speed and load cancel out: linear work
// grows 4x (less, with the fixed start-up cost), quadratic work 16x.

constexpr double kMaxGrowthFor4x = 8.0;

double children_cpu_seconds() {
    rusage u{};
    ::getrusage(RUSAGE_CHILDREN, &u);
    auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
    return s(u.ru_utime) + s(u.ru_stime);
}

// CPU seconds the CLI spends on `args` (it must succeed).
double cli_cpu_seconds(const std::vector<std::string>& args) {
    const double before = children_cpu_seconds();
    const auto r = run_cli(args);
    EXPECT_EQ(r.status, 0) << args[0] << ": " << r.err;
    return children_cpu_seconds() - before;
}

TEST(HostileScale, ManyKeysCostNLogN) {
    TempDir dir;
    auto split_with_keys = [&](int n) {
        RawGguf g = RawGguf::from_file(fixture().fused);
        for (int i = 0; i < n; ++i) g.add("junk." + std::to_string(i), Value::u8(1));
        const fs::path in = dir / ("keys_" + std::to_string(n) + ".gguf");
        write_file(in, g.bytes());
        return cli_cpu_seconds({"split", "-q", in.string(), "-o", (dir / "out.gguf").string()});
    };
    const double small = split_with_keys(25000), large = split_with_keys(100000);
    std::printf("[scale] split with 25k keys %.2f s, with 100k keys %.2f s of CPU\n", small, large);
    EXPECT_LT(large, kMaxGrowthFor4x * small);
}

TEST(HostileScale, ManyHeadTensorsCostNLogN) {
    TempDir dir;
    auto convert_with_layers = [&](int layers) {
        const std::string ph = (dir / "heads.gguf").string(), fu = (dir / "fused.gguf").string();
        return cli_cpu_seconds({"init", "-q", "-o", ph, "--d-model", "2", "--n-heads", "4096", "--n-kv-heads", "4096",
                                "--d-head", "2", "--d-ff", "2", "--n-layers", std::to_string(layers), "--vocab",
                                "16"}) +
               cli_cpu_seconds({"fuse", "-q", ph, "-o", fu}) +
               cli_cpu_seconds({"split", "-q", fu, "-o", (dir / "again.gguf").string()});
    };
    // 2 layers of 3 x 4096 head tensors, then 8: 24.6k and 98.3k tensors.
    const double small = convert_with_layers(2), large = convert_with_layers(8);
    std::printf("[scale] init+fuse+split with 24.6k head tensors %.2f s, with 98.3k %.2f s of CPU\n", small, large);
    EXPECT_LT(large, kMaxGrowthFor4x * small);
}

}  // namespace
