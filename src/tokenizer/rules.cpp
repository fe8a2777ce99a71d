// The rules llama.cpp's vocabulary loader (src/llama-vocab.cpp, llama_vocab::impl::load) enforces, checked
// before a tokenizer is written, so that every file headfuse writes loads; and the summary inspect shows.
#include <algorithm>
#include <array>
#include <string>
#include <string_view>
#include <unordered_set>

#include "base/fail.h"
#include "base/text.h"
#include "headfuse/error.h"
#include "headfuse/vocab.h"

namespace headfuse {
namespace {

// tokenizer.ggml.model values llama.cpp loads, and those with BPE merges and a pre-tokenizer.
constexpr std::array<std::string_view, 9> kModels = {"llama",  "gpt2",   "bert",      "t5",        "rwkv",
                                                     "plamo2", "gemma4", "hybriddna", "whitespace"};
constexpr std::array<std::string_view, 3> kBpeModels = {"gpt2", "hybriddna", "whitespace"};

// tokenizer.ggml.pre values llama.cpp knows for a BPE vocabulary ("unknown pre-tokenizer type" otherwise).
constexpr std::array<std::string_view, 87> kPreTokenizers = {
    "default",
    "minicpm5",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "deepseek-llm",
    "deepseek-coder",
    "deepseek-v3",
    "youtu",
    "falcon",
    "mpt",
    "starcoder",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "jais-2",
    "gemma4",
    "granite-embed-multi-311m",
    "sarvam-moe",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "whitespace",
    "refact",
    "command-r",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "qwen35",
    "stablelm2",
    "olmo",
    "dbrx",
    "smaug-bpe",
    "poro-chat",
    "glm4",
    "chatglm-bpe",
    "viking",
    "jais",
    "tekken",
    "smollm",
    "codeshell",
    "bloom",
    "gpt3-finnish",
    "exaone",
    "exaone4",
    "exaone-moe",
    "chameleon",
    "minerva-7b",
    "megrez",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "granite-embed-multi-97m",
    "tiny_aya",
    "cohere2moe",
    "superbpe",
    "trillion",
    "granite-docling",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "seed-coder",
    "hunyuan",
    "hunyuan-dense",
    "joyai-llm",
    "kimi-k2",
    "grok-2",
    "afmoe",
    "laguna",
    "minimax-m2",
    "solar-open",
    "mellum2",
};

// Special token ids llama.cpp reads as u32 (get_key checks the type) and uses only when in range.
constexpr std::array<std::pair<std::string_view, std::string_view>, 18> kSpecialIds = {{
    {"tokenizer.ggml.bos_token_id", "bos"},
    {"tokenizer.ggml.eos_token_id", "eos"},
    {"tokenizer.ggml.eot_token_id", "eot"},
    {"tokenizer.ggml.eom_token_id", "eom"},
    {"tokenizer.ggml.unknown_token_id", "unk"},
    {"tokenizer.ggml.seperator_token_id", "sep"},
    {"tokenizer.ggml.padding_token_id", "pad"},
    {"tokenizer.ggml.cls_token_id", "cls"},
    {"tokenizer.ggml.mask_token_id", "mask"},
    {"tokenizer.ggml.fim_pre_token_id", "fim_pre"},
    {"tokenizer.ggml.fim_suf_token_id", "fim_suf"},
    {"tokenizer.ggml.fim_mid_token_id", "fim_mid"},
    {"tokenizer.ggml.fim_pad_token_id", "fim_pad"},
    {"tokenizer.ggml.fim_rep_token_id", "fim_rep"},
    {"tokenizer.ggml.fim_sep_token_id", "fim_sep"},
    {"tokenizer.ggml.prefix_token_id", "prefix"},
    {"tokenizer.ggml.suffix_token_id", "suffix"},
    {"tokenizer.ggml.middle_token_id", "middle"},
}};

constexpr std::array<std::string_view, 7> kFlags = {
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_sep_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.remove_extra_whitespaces",
    "tokenizer.ggml.normalizer.lowercase",
    "tokenizer.ggml.normalizer.strip_accents",
};

// llama.cpp's enum llama_token_type: undefined 0 .. byte 6.
constexpr std::int64_t kMaxTokenType = 6, kByteType = 6;

template <std::size_t N>
bool one_of(std::string_view s, const std::array<std::string_view, N>& set) {
    return std::find(set.begin(), set.end(), s) != set.end();
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); }

std::string shown(std::string_view s) {
    constexpr std::size_t kShown = 40;
    return "'" + std::string(s.substr(0, kShown)) + (s.size() > kShown ? "...'" : "'");
}

std::string type_of(const Value& v) {
    if (v.type != ValueType::ARRAY) return std::string(value_type_name(v.type));
    return "array of " + std::string(value_type_name(v.elem_type));
}

struct Checker {
    const Metadata& md;
    const std::string& where;

    [[noreturn]] void bad(std::string_view key, const std::string& what) const {
        fail(where + ": key '" + std::string(key) + "': " + what);
    }
    const Value* scalar(std::string_view key, ValueType t) const {
        const Value* v = md.find(key);
        if (v && v->type != t) bad(key, "expected " + std::string(value_type_name(t)) + ", found " + type_of(*v));
        return v;
    }
    const Value* array(std::string_view key, std::initializer_list<ValueType> elems) const {
        const Value* v = md.find(key);
        if (!v) return nullptr;
        const bool ok =
            v->type == ValueType::ARRAY && std::find(elems.begin(), elems.end(), v->elem_type) != elems.end();
        if (!ok) {
            std::string want;
            for (ValueType e : elems) want += (want.empty() ? "" : " or ") + std::string(value_type_name(e));
            bad(key, "expected an array of " + want + ", found " + type_of(*v));
        }
        return v;
    }
    void per_token(std::string_view key, const Value* v, std::size_t n) const {
        if (v && v->items.size() != n)
            bad(key, std::to_string(v->items.size()) + " values for " + std::to_string(n) + " tokens");
    }
};

}  // namespace

void check_tokenizer(const Metadata& md, std::uint32_t vocab, const std::string& where) {
    const Checker c{md, where};
    const Value* model = c.scalar("tokenizer.ggml.model", ValueType::STRING);
    if (!model) fail(where + ": no tokenizer (key 'tokenizer.ggml.model')");
    const std::string& name = std::get<std::string>(model->scalar);
    if (name == "no_vocab" || name == "none")
        c.bad("tokenizer.ggml.model", "'" + name + "' has no vocabulary to carry over");
    if (!one_of(name, kModels))
        c.bad("tokenizer.ggml.model",
              "unknown tokenizer " + shown(name) +
                  " (llama.cpp knows llama, gpt2, bert, t5, rwkv, plamo2, gemma4, hybriddna, whitespace)");

    std::string pre;
    if (const Value* p = c.scalar("tokenizer.ggml.pre", ValueType::STRING)) pre = std::get<std::string>(p->scalar);
    if (one_of(name, kBpeModels) && !pre.empty() && !one_of(pre, kPreTokenizers))
        c.bad("tokenizer.ggml.pre", "pre-tokenizer " + shown(pre) + " is unknown to llama.cpp");

    const Value* tokens = c.array("tokenizer.ggml.tokens", {ValueType::STRING});
    if (!tokens) fail(where + ": no token list (key 'tokenizer.ggml.tokens')");
    const std::size_t n = tokens->items.size();
    if (n == 0) c.bad("tokenizer.ggml.tokens", "no tokens");
    if (vocab != 0 && n != vocab)
        fail(where + ": tokenizer has " + std::to_string(n) + " tokens, the model's vocabulary " +
             std::to_string(vocab));

    const Value* scores = c.array("tokenizer.ggml.scores", {ValueType::F32, ValueType::I32});
    c.per_token("tokenizer.ggml.scores", scores, n);
    const Value* types = c.array("tokenizer.ggml.token_type", {ValueType::I32});
    c.per_token("tokenizer.ggml.token_type", types, n);
    c.scalar("tokenizer.ggml.token_type_count", ValueType::U32);

    // llama.cpp maps token text to id in a hash map and asserts both directions have the same size.
    std::unordered_set<std::string_view> seen;
    seen.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        const std::string& t = std::get<std::string>(tokens->items[i].scalar);
        const std::string key = "tokenizer.ggml.tokens";
        if (t.empty()) c.bad(key, "token " + std::to_string(i) + " is empty");
        if (!valid_utf8(t)) c.bad(key, "token " + std::to_string(i) + " is not valid UTF-8");
        if (!seen.insert(t).second) c.bad(key, "token " + std::to_string(i) + " " + shown(t) + " appears twice");
        if (types) {
            const std::int64_t ty = std::get<std::int64_t>(types->items[i].scalar);
            if (ty < 0 || ty > kMaxTokenType)
                c.bad("tokenizer.ggml.token_type",
                      "token " + std::to_string(i) + " has type " + std::to_string(ty) + ", expected 0..6");
            // llama.cpp reads a byte token's value from its text at characters 3 and 4.
            if (ty == kByteType &&
                (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || !is_hex(t[3]) || !is_hex(t[4]) || t[5] != '>'))
                c.bad("tokenizer.ggml.token_type",
                      "token " + std::to_string(i) + " " + shown(t) + " has the byte type but is not spelled <0xHH>");
        }
    }

    const Value* merges = c.array("tokenizer.ggml.merges", {ValueType::STRING});
    if ((one_of(name, kBpeModels) || name == "gemma4") && !merges && pre != "kimi-k2")
        fail(where + ": a '" + name + "' tokenizer needs merges (key 'tokenizer.ggml.merges')");

    if (name == "t5")
        if (const Value* cm = c.array("tokenizer.ggml.precompiled_charsmap", {ValueType::U8, ValueType::I8})) {
            // A u32 blob size, then at least that many bytes and one more.
            const std::size_t size = cm->items.size();
            std::uint64_t blob = 0;
            for (std::size_t i = 0; i < 4 && i < size; ++i) {
                const auto& s = cm->items[i].scalar;
                const auto byte = std::holds_alternative<std::uint64_t>(s)
                                      ? std::get<std::uint64_t>(s)
                                      : static_cast<std::uint64_t>(std::get<std::int64_t>(s) & 0xFF);
                blob |= byte << (8 * i);
            }
            if (size < 4 || blob + 4 >= size)
                c.bad("tokenizer.ggml.precompiled_charsmap",
                      "blob size " + std::to_string(blob) + " does not fit in " + std::to_string(size) + " bytes");
        }

    for (const auto& [key, role] : kSpecialIds)
        if (const Value* v = c.scalar(key, ValueType::U32))
            if (const std::uint64_t id = std::get<std::uint64_t>(v->scalar); id >= n)
                c.bad(key, std::string(role) + " token id " + std::to_string(id) + " is out of range (" +
                               std::to_string(n) + " tokens)");
    for (std::string_view key : kFlags) c.scalar(key, ValueType::BOOL);
    c.scalar("tokenizer.chat_template", ValueType::STRING);
    c.array("tokenizer.ggml.suppress_tokens", {ValueType::I32});
}

std::optional<TokenizerSummary> summarize_tokenizer(const Metadata& md) {
    const Value* model = md.find("tokenizer.ggml.model");
    if (!model || model->type != ValueType::STRING) return std::nullopt;
    TokenizerSummary s;
    s.model = std::get<std::string>(model->scalar);
    if (const Value* p = md.find("tokenizer.ggml.pre"); p && p->type == ValueType::STRING)
        s.pre = std::get<std::string>(p->scalar);
    const Value* tokens = md.find("tokenizer.ggml.tokens");
    const bool have_tokens = tokens && tokens->type == ValueType::ARRAY && tokens->elem_type == ValueType::STRING;
    if (have_tokens) s.n_tokens = tokens->items.size();
    if (const Value* m = md.find("tokenizer.ggml.merges"); m && m->type == ValueType::ARRAY)
        s.n_merges = m->items.size();
    for (const auto& [key, role] : kSpecialIds)
        if (const Value* v = md.find(key); v && v->type == ValueType::U32) {
            const std::uint64_t id = std::get<std::uint64_t>(v->scalar);
            s.specials.push_back(
                {std::string(role), id,
                 have_tokens && id < s.n_tokens ? std::get<std::string>(tokens->items[id].scalar) : std::string()});
        }
    auto flag = [&](std::string_view key) -> std::optional<bool> {
        const Value* v = md.find(key);
        if (!v || v->type != ValueType::BOOL) return std::nullopt;
        return std::get<bool>(v->scalar);
    };
    s.add_bos = flag("tokenizer.ggml.add_bos_token");
    s.add_eos = flag("tokenizer.ggml.add_eos_token");
    s.chat_template = md.find("tokenizer.chat_template") != nullptr;
    return s;
}

}  // namespace headfuse
