#include <algorithm>
#include <cstdio>
#include <string>

#include "base/fail.h"
#include "headfuse/error.h"
#include "headfuse/gguf.h"

namespace headfuse {

std::string_view value_type_name(ValueType t) noexcept {
    switch (t) {
        case ValueType::U8: return "u8";
        case ValueType::I8: return "i8";
        case ValueType::U16: return "u16";
        case ValueType::I16: return "i16";
        case ValueType::U32: return "u32";
        case ValueType::I32: return "i32";
        case ValueType::F32: return "f32";
        case ValueType::BOOL: return "bool";
        case ValueType::STRING: return "string";
        case ValueType::ARRAY: return "array";
        case ValueType::U64: return "u64";
        case ValueType::I64: return "i64";
        case ValueType::F64: return "f64";
    }
    return "unknown";
}

namespace {
Value make(ValueType t, decltype(Value::scalar) s) {
    Value v;
    v.type = t;
    v.scalar = std::move(s);
    return v;
}
}  // namespace

Value Value::u8(std::uint8_t v) { return make(ValueType::U8, std::uint64_t{v}); }
Value Value::i8(std::int8_t v) { return make(ValueType::I8, std::int64_t{v}); }
Value Value::u16(std::uint16_t v) { return make(ValueType::U16, std::uint64_t{v}); }
Value Value::i16(std::int16_t v) { return make(ValueType::I16, std::int64_t{v}); }
Value Value::u32(std::uint32_t v) { return make(ValueType::U32, std::uint64_t{v}); }
Value Value::i32(std::int32_t v) { return make(ValueType::I32, std::int64_t{v}); }
Value Value::u64(std::uint64_t v) { return make(ValueType::U64, v); }
Value Value::i64(std::int64_t v) { return make(ValueType::I64, v); }
Value Value::f32(float v) { return make(ValueType::F32, double{v}); }
Value Value::f64(double v) { return make(ValueType::F64, v); }
Value Value::boolean(bool v) { return make(ValueType::BOOL, v); }
Value Value::string(std::string v) { return make(ValueType::STRING, std::move(v)); }

Value Value::array(ValueType elem, std::vector<Value> items) {
    if (elem == ValueType::ARRAY) fail(ErrorKind::InvalidArgument, "GGUF arrays cannot hold arrays");
    for (const Value& item : items)
        if (item.type != elem)
            fail(ErrorKind::InvalidArgument, "array of " + std::string(value_type_name(elem)) + " holds a " +
                                                 std::string(value_type_name(item.type)));
    Value v;
    v.type = ValueType::ARRAY;
    v.elem_type = elem;
    v.items = std::move(items);
    return v;
}

const Value* Metadata::find(std::string_view key) const noexcept {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &entries_[it->second].value;
}

void Metadata::set(std::string key, Value value) {
    if (auto it = index_.find(key); it != index_.end()) {
        entries_[it->second].value = std::move(value);
        return;
    }
    index_.emplace(key, entries_.size());
    entries_.push_back({std::move(key), std::move(value)});
}

void Metadata::merge(Metadata&& other) {
    for (Entry& e : other.entries_) set(std::move(e.key), std::move(e.value));
    other = Metadata();
}

bool Metadata::erase(std::string_view key) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    const std::size_t pos = it->second;
    index_.erase(it);
    entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(pos));
    for (auto& [k, i] : index_)
        if (i > pos) --i;
    return true;
}

namespace {
const Value& typed(const Metadata& md, std::string_view key, ValueType want, std::string_view where) {
    const Value* v = md.find(key);
    if (!v) fail(std::string(where) + ": missing key '" + std::string(key) + "'");
    if (v->type != want)
        fail(std::string(where) + ": key '" + std::string(key) + "' has type " + std::string(value_type_name(v->type)) +
             ", expected " + std::string(value_type_name(want)));
    return *v;
}
}  // namespace

std::uint32_t Metadata::get_u32(std::string_view key, std::string_view where) const {
    return static_cast<std::uint32_t>(std::get<std::uint64_t>(typed(*this, key, ValueType::U32, where).scalar));
}

float Metadata::get_f32(std::string_view key, std::string_view where) const {
    return static_cast<float>(std::get<double>(typed(*this, key, ValueType::F32, where).scalar));
}

const std::string& Metadata::get_string(std::string_view key, std::string_view where) const {
    return std::get<std::string>(typed(*this, key, ValueType::STRING, where).scalar);
}
}  // namespace headfuse
