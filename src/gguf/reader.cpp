// The GGUF reader: every length, count and offset is checked against the bytes that remain before it is
// used, with checked arithmetic, so a crafted file ends in an Error, never in an out-of-bounds access.
#include <cstring>
#include <string>
#include <unordered_set>

#include "base/checked.h"
#include "base/fail.h"
#include "base/text.h"
#include "headfuse/error.h"
#include "headfuse/gguf.h"
#include "io/mapped_file.h"

namespace headfuse {
namespace {

// Bounded little-endian reads over a byte span. Every failure names the file and the byte offset.
class Cursor {
public:
    Cursor(std::span<const std::byte> bytes, const std::string& name) : bytes_(bytes), name_(name) {}

    std::uint64_t pos() const noexcept { return pos_; }
    std::uint64_t remaining() const noexcept { return bytes_.size() - pos_; }

    [[noreturn]] void error(const std::string& what) const {
        fail(name_ + ": " + what + " (at byte " + std::to_string(pos_) + ")");
    }

    void need(std::uint64_t n, std::string_view what) const {
        if (n > remaining())
            error(std::string(what) + " needs " + std::to_string(n) + " bytes, only " + std::to_string(remaining()) +
                  " remain in the file");
    }

    template <class T>
    T read(std::string_view what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    std::string read_string(std::string_view what) {
        auto len = read<std::uint64_t>(what);
        need(len, what);
        std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), len);
        pos_ += len;
        return s;
    }

private:
    std::span<const std::byte> bytes_;
    const std::string& name_;
    std::uint64_t pos_ = 0;
};

bool valid_value_type(std::uint32_t t) noexcept { return t <= static_cast<std::uint32_t>(ValueType::F64); }

// Bytes a value of scalar type t occupies at least (strings: their length field).
std::uint64_t min_value_size(ValueType t) noexcept {
    switch (t) {
        case ValueType::U8:
        case ValueType::I8:
        case ValueType::BOOL: return 1;
        case ValueType::U16:
        case ValueType::I16: return 2;
        case ValueType::U32:
        case ValueType::I32:
        case ValueType::F32: return 4;
        default: return 8;
    }
}

Value read_scalar(Cursor& c, ValueType t, const std::string& key) {
    const std::string what = "value of key '" + key + "'";
    switch (t) {
        case ValueType::U8: return Value::u8(c.read<std::uint8_t>(what));
        case ValueType::I8: return Value::i8(c.read<std::int8_t>(what));
        case ValueType::U16: return Value::u16(c.read<std::uint16_t>(what));
        case ValueType::I16: return Value::i16(c.read<std::int16_t>(what));
        case ValueType::U32: return Value::u32(c.read<std::uint32_t>(what));
        case ValueType::I32: return Value::i32(c.read<std::int32_t>(what));
        case ValueType::F32: return Value::f32(c.read<float>(what));
        case ValueType::U64: return Value::u64(c.read<std::uint64_t>(what));
        case ValueType::I64: return Value::i64(c.read<std::int64_t>(what));
        case ValueType::F64: return Value::f64(c.read<double>(what));
        case ValueType::BOOL: {
            auto b = c.read<std::uint8_t>(what);
            if (b > 1) c.error("key '" + key + "': bool value must be 0 or 1, found " + std::to_string(b));
            return Value::boolean(b != 0);
        }
        case ValueType::STRING: return Value::string(c.read_string(what));
        case ValueType::ARRAY: break;
    }
    c.error("key '" + key + "': unexpected value type");
}

// `keep_items` false: array items are read and checked but not kept (validating a header costs no copy).
Value read_value(Cursor& c, ValueType t, const std::string& key, std::uint64_t& items_left, bool keep_items) {
    if (t != ValueType::ARRAY) return read_scalar(c, t, key);
    auto elem = c.read<std::uint32_t>("array type of key '" + key + "'");
    if (!valid_value_type(elem))
        c.error("key '" + key + "': array element type must be 0..12, found " + std::to_string(elem));
    auto et = static_cast<ValueType>(elem);
    if (et == ValueType::ARRAY) c.error("key '" + key + "': nested arrays are not allowed");
    auto count = c.read<std::uint64_t>("array length of key '" + key + "'");
    // Bound the count by the bytes left before reserving anything.
    if (count > c.remaining() / min_value_size(et))
        c.error("key '" + key + "': array of " + std::to_string(count) + " " + std::string(value_type_name(et)) +
                " values cannot fit in the " + std::to_string(c.remaining()) + " bytes that remain");
    if (count > items_left)
        c.error("key '" + key + "': array of " + std::to_string(count) + " items takes the file's arrays past " +
                std::to_string(kMaxArrayItems) + " items in all, the most headfuse reads");
    items_left -= count;
    Value v;
    v.type = ValueType::ARRAY;
    v.elem_type = et;
    if (keep_items) v.items.reserve(count);
    for (std::uint64_t i = 0; i < count; ++i) {
        Value item = read_scalar(c, et, key);
        if (keep_items) v.items.push_back(std::move(item));
    }
    return v;
}

}  // namespace

GgufFile GgufFile::open_one(const std::filesystem::path& path) {
    auto file = std::make_shared<MappedFile>(MappedFile::open(path));
    GgufFile g = parse(file->bytes(), path.string());
    g.file_ = std::move(file);
    return g;
}

GgufFile GgufFile::parse(std::span<const std::byte> bytes, std::string name) {
    return parse_impl(bytes, std::move(name), true);
}

void GgufFile::validate_header(std::span<const std::byte> header, std::string name) {
    parse_impl(header, std::move(name), false);
}

GgufFile GgufFile::parse_impl(std::span<const std::byte> bytes, std::string name, bool check_data) {
    GgufFile g;
    g.bytes_ = bytes;
    g.name_ = std::move(name);
    Cursor c(bytes, g.name_);

    if (bytes.size() < 4 || std::memcmp(bytes.data(), "GGUF", 4) != 0) c.error("not a GGUF file: bad magic");
    c.read<std::uint32_t>("magic");
    g.version_ = c.read<std::uint32_t>("version");
    if (g.version_ != 2 && g.version_ != 3) c.error("GGUF version must be 2 or 3, found " + std::to_string(g.version_));
    auto n_tensors = c.read<std::uint64_t>("tensor count");
    auto n_kv = c.read<std::uint64_t>("metadata count");

    // A key is at least a length, a type and one byte of value; a tensor info at least 8+4+8+4+8 bytes.
    if (n_kv > c.remaining() / 13)
        c.error("metadata count " + std::to_string(n_kv) + " cannot fit in the " + std::to_string(c.remaining()) +
                " bytes that remain");
    std::unordered_set<std::string> keys;
    std::uint64_t items_left = kMaxArrayItems;
    for (std::uint64_t i = 0; i < n_kv; ++i) {
        std::string key = c.read_string("key " + std::to_string(i));
        auto type = c.read<std::uint32_t>("type of key '" + key + "'");
        if (!valid_value_type(type))
            c.error("key '" + key + "': value type must be 0..12, found " + std::to_string(type));
        Value v = read_value(c, static_cast<ValueType>(type), key, items_left, check_data);
        if (!keys.insert(key).second) c.error("duplicate key '" + key + "'");
        g.metadata_.set(std::move(key), std::move(v));
    }

    if (const Value* a = g.metadata_.find("general.alignment")) {
        if (a->type != ValueType::U32)
            c.error("key 'general.alignment' has type " + std::string(value_type_name(a->type)) + ", expected u32");
        auto al = std::get<std::uint64_t>(a->scalar);
        if (al == 0 || (al & (al - 1)) != 0)
            c.error("key 'general.alignment' must be a power of two, found " + std::to_string(al));
        g.alignment_ = static_cast<std::uint32_t>(al);
    }

    if (n_tensors > c.remaining() / 32)
        c.error("tensor count " + std::to_string(n_tensors) + " cannot fit in the " + std::to_string(c.remaining()) +
                " bytes that remain");
    if (n_tensors > kMaxTensors)
        c.error("tensor count " + std::to_string(n_tensors) + " is more than the " + std::to_string(kMaxTensors) +
                " headfuse reads");
    std::unordered_set<std::string> names;
    std::uint64_t expected_offset = 0;
    g.tensors_.reserve(n_tensors);
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
        TensorInfo t;
        t.name = c.read_string("name of tensor " + std::to_string(i));
        const std::string tn = "tensor '" + t.name + "'";
        if (t.name.size() > kMaxTensorName)
            c.error(tn + ": name is " + std::to_string(t.name.size()) + " bytes, at most " +
                    std::to_string(kMaxTensorName) + " allowed");
        if (!names.insert(t.name).second) c.error("duplicate " + tn);
        t.n_dims = c.read<std::uint32_t>(tn + " n_dims");
        if (t.n_dims == 0 || t.n_dims > kMaxDims)
            c.error(tn + ": n_dims must be 1.." + std::to_string(kMaxDims) + ", found " + std::to_string(t.n_dims));
        std::uint64_t n_elements = 1;
        for (std::uint32_t d = 0; d < t.n_dims; ++d) {
            t.ne[d] = c.read<std::uint64_t>(tn + " ne");
            // ggml keeps ne as int64_t: the element count must fit in it.
            if (t.ne[d] > static_cast<std::uint64_t>(INT64_MAX) ||
                __builtin_mul_overflow(n_elements, t.ne[d], &n_elements) ||
                n_elements > static_cast<std::uint64_t>(INT64_MAX))
                c.error(tn + ": shape " + format_shape({t.ne.data(), d + 1}) + " overflows the element count");
        }
        t.type = c.read<std::uint32_t>(tn + " type");
        const TypeTraits* tt = find_type(t.type);
        if (!tt) c.error(tn + ": unknown ggml type id " + std::to_string(t.type));
        if (t.ne[0] % tt->block_size != 0)
            c.error(tn + ": ne[0] = " + std::to_string(t.ne[0]) + " is not a multiple of the " + std::string(tt->name) +
                    " block size " + std::to_string(tt->block_size));
        t.offset = c.read<std::uint64_t>(tn + " offset");
        t.nbytes = checked_mul(row_bytes(t.type, t.ne[0]), t.n_rows(), g.name_ + ": " + tn + " size");
        if (t.offset != expected_offset)
            c.error(tn + ": data offset is " + std::to_string(t.offset) + ", expected " +
                    std::to_string(expected_offset) + " (tensors are contiguous, each padded to " +
                    std::to_string(g.alignment_) + " bytes)");
        expected_offset = checked_align(checked_add(t.offset, t.nbytes, g.name_ + ": " + tn + " end"), g.alignment_,
                                        g.name_ + ": " + tn + " end");
        g.tensors_.push_back(std::move(t));
    }

    g.data_start_ = checked_align(c.pos(), g.alignment_, g.name_ + ": data section");
    if (!check_data) return g;
    for (const TensorInfo& t : g.tensors_) {
        std::uint64_t end = checked_add(checked_add(g.data_start_, t.offset, g.name_), t.nbytes, g.name_);
        if (end > bytes.size())
            fail(g.name_ + ": tensor '" + t.name + "' needs " + std::to_string(t.nbytes) + " bytes at offset " +
                 std::to_string(g.data_start_ + t.offset) + ", the file has " + std::to_string(bytes.size()));
    }
    return g;
}

const TensorInfo* GgufFile::find_tensor(std::string_view name) const noexcept {
    for (const TensorInfo& t : tensors_)
        if (t.name == name) return &t;
    return nullptr;
}

std::span<const std::byte> GgufFile::tensor_data(const TensorInfo& t) const noexcept {
    const GgufFile& f = shard_of(t);
    return f.bytes_.subspan(f.data_start_ + t.offset, t.nbytes);
}

const MappedFile* GgufFile::mapping(const TensorInfo& t) const noexcept { return shard_of(t).mapping(); }

std::uint64_t GgufFile::file_offset(const TensorInfo& t) const noexcept { return shard_of(t).data_start_ + t.offset; }

std::vector<std::filesystem::path> GgufFile::paths() const {
    std::vector<std::filesystem::path> out;
    for (std::size_t s = 0; s < shard_count(); ++s)
        if (const MappedFile* m = s ? shards_[s - 1].mapping() : mapping()) out.push_back(m->path());
    return out;
}

}  // namespace headfuse
