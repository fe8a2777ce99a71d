// The metadata of a written model file: the config's hyperparameters set into the keys the model carries.
#include "model/model_keys.h"

#include <string>
#include <vector>

namespace headfuse {

namespace {

// True when llama.cpp, reading `md` without `key`, takes the value `c` would write for it: such a key is not
// added to a file that lacks it, so that a file read and written again keeps exactly its keys.
bool implied(const Metadata& md, const Config& c, std::string_view key) {
    const std::uint32_t heads0 = c.n_heads_at(0);       // llama.cpp's n_head(): layer 0's
    const std::uint32_t per_head = c.d_model / heads0;  // llama.cpp's n_embd_head_k default
    if (key == c.key("attention.head_count_kv")) return c.n_kv_heads == c.n_heads && c.layer_kv_heads == c.layer_heads;
    if (key == c.key("attention.key_length") || key == c.key("attention.value_length") ||
        key == c.key("rope.dimension_count"))
        return c.d_head == per_head && c.d_model % heads0 == 0;
    if (key == c.key("rope.freq_base")) return c.rope_theta == 10000.0f;
    if (key == c.key("vocab_size")) {  // llama.cpp counts the tokenizer's tokens
        const Value* tokens = md.find("tokenizer.ggml.tokens");
        return tokens && tokens->type == ValueType::ARRAY && tokens->items.size() == c.vocab;
    }
    return false;
}

// `carried` with its ARCH.* keys renamed to c's architecture, in place, when the two differ (a llama model given
// per-layer head counts becomes a deci one).
Metadata renamed(const Metadata& carried, const Config& c) {
    const std::string from = carried.get_string("general.architecture", "the model") + ".";
    const std::string to = std::string(c.architecture()) + ".";
    if (from == to) return carried;
    Metadata md;
    for (const auto& e : carried.entries())
        md.set(e.key.starts_with(from) ? to + e.key.substr(from.size()) : e.key, e.value);
    return md;
}

// A count as `c` writes it (u32, or an i32 array when per layer), in the form the carried file gave it: a scalar
// when the file had one and every layer has the same count, an array of the file's element type.
Value carried_form(const Value& owned, const Value* carried) {
    if (!carried || owned.type != ValueType::ARRAY) return owned;
    if (carried->type != ValueType::ARRAY) {
        for (const Value& x : owned.items)
            if (x != owned.items.front()) return owned;
        return owned.items.empty()
                   ? owned
                   : Value::u32(static_cast<std::uint32_t>(std::get<std::int64_t>(owned.items[0].scalar)));
    }
    if (carried->elem_type != ValueType::U32) return owned;
    std::vector<Value> items;
    for (const Value& x : owned.items)
        items.push_back(Value::u32(static_cast<std::uint32_t>(std::get<std::int64_t>(x.scalar))));
    return Value::array(ValueType::U32, std::move(items));
}

}  // namespace

Metadata per_head_metadata(const Config& c, const Metadata& carried) {
    Metadata owned;
    c.write_metadata(owned);
    if (!carried.find("general.architecture")) {  // a model from memory: the hyperparameters, then the rest
        Metadata md = std::move(owned);
        for (const auto& e : carried.entries())
            if (!md.find(e.key)) md.set(e.key, e.value);
        return md;
    }
    // A model read from a file: its keys in their order, the hyperparameters set in place.
    Metadata md = renamed(carried, c);
    for (const auto& e : owned.entries())
        if (md.find(e.key) || !implied(md, c, e.key)) md.set(e.key, carried_form(e.value, md.find(e.key)));
    return md;
}

}  // namespace headfuse
