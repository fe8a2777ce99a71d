// A tokenizer fitted to the model it is written with: padded to the embedding's rows, or its trailing added
// tokens dropped, as llama.cpp's converter fits one.
#include <optional>
#include <string>
#include <vector>

#include "base/fail.h"
#include "headfuse/error.h"
#include "headfuse/vocab.h"

namespace headfuse {
namespace {

// llama.cpp's token types (enum llama_token_type).
constexpr std::int64_t kControl = 3, kUserDefined = 4, kUnused = 5;
// The score llama.cpp's converter gives its [PADn] tokens (_create_vocab_sentencepiece).
constexpr float kPadScore = -10000.0f;

// The special token ids a tokenizer may name.
constexpr const char* kSpecialKeys[] = {
    "tokenizer.ggml.bos_token_id",     "tokenizer.ggml.eos_token_id",     "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",     "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id", "tokenizer.ggml.cls_token_id",     "tokenizer.ggml.mask_token_id",
    "tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.ggml.fim_pad_token_id", "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id",
    "tokenizer.ggml.prefix_token_id",  "tokenizer.ggml.suffix_token_id",  "tokenizer.ggml.middle_token_id",
};

// A copy of the array under `key` when it has the type expected (check_tokenizer refuses anything else later).
std::optional<Value> array_of(const Metadata& md, std::string_view key, ValueType elem) {
    const Value* v = md.find(key);
    if (v && v->type == ValueType::ARRAY && v->elem_type == elem) return *v;
    return std::nullopt;
}

// More tokens than rows: the tail may go only when it is added tokens (Gemma 3's <image_soft_token>, id 262144,
// beyond the text model's 262144 rows), as the converter drops them.
void drop_added_tail(const Tokenizer& t, Value& tokens, Value* types, std::uint32_t vocab, const WarnFn& warn) {
    const std::size_t n = tokens.items.size();
    const std::string counts = std::to_string(n) + " tokens, the model's embedding " + std::to_string(vocab) + " rows";
    for (std::size_t id = vocab; id < n; ++id) {
        const std::int64_t type = types ? std::get<std::int64_t>(types->items[id].scalar) : 0;
        if (type != kControl && type != kUserDefined)
            fail(t.source + ": tokenizer has " + counts + ", and token " + std::to_string(id) + " '" +
                 std::get<std::string>(tokens.items[id].scalar) +
                 "' beyond them is not an added token (only added tokens can be left out)");
    }
    for (const char* key : kSpecialKeys)
        if (const Value* v = t.keys.find(key);
            v && v->type == ValueType::U32 && std::get<std::uint64_t>(v->scalar) >= vocab)
            fail(t.source + ": tokenizer has " + counts + ", and its " + key + " " +
                 std::to_string(std::get<std::uint64_t>(v->scalar)) + " is beyond them");
    if (warn)
        warn(t.source + ": tokenizer has " + counts + ": added token" + (n - vocab > 1 ? "s " : " ") +
             std::to_string(vocab) + (n - vocab > 1 ? ".." + std::to_string(n - 1) : "") + " ('" +
             std::get<std::string>(tokens.items[vocab].scalar) + "'" + (n - vocab > 1 ? ", ..." : "") +
             ") left out, as llama.cpp's converter leaves them out");
    tokens.items.resize(vocab);
    if (types) types->items.resize(vocab);
}

}  // namespace

void fit_tokenizer(Tokenizer& t, std::uint32_t vocab, const WarnFn& warn) {
    Metadata& md = t.keys;
    std::optional<Value> tokens = array_of(md, "tokenizer.ggml.tokens", ValueType::STRING);
    if (!t.converted || !tokens || vocab == 0 || tokens->items.size() == vocab) return;
    std::optional<Value> types = array_of(md, "tokenizer.ggml.token_type", ValueType::I32);
    std::optional<Value> scores = array_of(md, "tokenizer.ggml.scores", ValueType::F32);
    const std::size_t n = tokens->items.size();
    if ((types && types->items.size() != n) || (scores && scores->items.size() != n)) return;  // check_tokenizer's
    if (n < vocab) {
        // The rows no token names: [PAD<id>], unused, as llama.cpp's converter pads (Qwen: 151669 tokens, 151936
        // rows).
        for (std::size_t id = n; id < vocab; ++id) {
            tokens->items.push_back(Value::string("[PAD" + std::to_string(id) + "]"));
            if (types) types->items.push_back(Value::i32(kUnused));
            if (scores) scores->items.push_back(Value::f32(kPadScore));
        }
    } else {
        drop_added_tail(t, *tokens, types ? &*types : nullptr, vocab, warn);
        if (scores) scores->items.resize(vocab);
    }
    md.set("tokenizer.ggml.tokens", std::move(*tokens));
    if (types) md.set("tokenizer.ggml.token_type", std::move(*types));
    if (scores) md.set("tokenizer.ggml.scores", std::move(*scores));
}
}  // namespace headfuse
