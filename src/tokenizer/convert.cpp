// Hugging Face tokenizers (tokenizer.json + tokenizer_config.json + special_tokens_map.json) to the tokenizer.*
// keys llama.cpp reads, and read_tokenizer, which takes a GGUF file, a folder or a tokenizer.json.
//
// Only what llama.cpp reproduces exactly is converted; anything else is refused by name (a normalizer, a
// pre-tokenizer, a model type) so that a converted file tokenizes as Hugging Face does or is not written.
#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/fail.h"
#include "headfuse/error.h"
#include "headfuse/vocab.h"
#include "io/mapped_file.h"
#include "tokenizer/named_rules.h"
#include "tokenizer/sp_model.h"

namespace headfuse {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// llama.cpp's token types (enum llama_token_type).
constexpr std::int32_t kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kByte = 6;
// SentencePiece's word boundary, U+2581.
constexpr std::string_view kSpace = "\xE2\x96\x81";
// The score llama.cpp's converter gives the tokens of added_tokens_decoder.
constexpr float kAddedTokenScore = -1000.0f;
// Scores are f32: ranks above 2^24 would no longer be distinct.
constexpr std::size_t kMaxExactRank = std::size_t{1} << 24;

// The pre-tokenizer regexes llama.cpp implements, as tokenizer.json spells them, and llama.cpp's name for each.
// llama.cpp's BPE tokenizer skips the merges for a word that is a token itself only for "llama-bpe" and "tekken"
// (its ignore_merges), so the tokenizer.json must say the same. `limitation`, when not empty, is where llama.cpp's
// own regex for that name splits some text otherwise, said in a warning.
struct KnownPre {
    std::string_view regex, name;
    bool ignore_merges;
    std::string_view limitation = {};
};
constexpr KnownPre kLlama3Pre{
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    "llama-bpe", true};
// ByteLevel with use_regex: GPT-2's own regex, llama.cpp's "gpt-2".
constexpr KnownPre kGpt2Pre{"", "gpt-2", false};
// Qwen2's (LLaMA 3's with digits one at a time; Qwen2, Qwen2.5, Qwen3): llama.cpp's "qwen2".
constexpr KnownPre kQwen2Pre{
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    "qwen2", false};
// Mistral NeMo's Tekken (CamelCase words split before each capital run, digits one at a time, "/" kept after a
// punctuation run): llama.cpp's "tekken". llama.cpp's regex engine sees letter case in ASCII only and no combining
// marks, and its regex for "tekken" spells the cases as "a letter not in a-z" and "a letter not in A-Z", without
// \p{M}. The first keeps together words Tekken splits where no Tekken token spans the cut ("éAb": "é" + "Ab"), which
// gives the same ids; the second cuts words with marks, which Tekken's tokens hold (Indic vowel signs, Arabic
// harakat: not Latin accents, which none of its tokens joins to a letter).
constexpr KnownPre kTekkenPre{
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    "tekken", true,
    "llama.cpp's 'tekken' regex does not count combining marks (\\p{M}) as parts of words, so words with them in "
    "Tekken's tokens (Indic vowel signs, Thai tone marks, Arabic harakat) tokenize differently there"};
// The Split regexes headfuse converts.
constexpr const KnownPre* kSplitPres[] = {&kLlama3Pre, &kQwen2Pre, &kTekkenPre};
// The pre-tokenizers headfuse converts, for its refusals.
constexpr std::string_view kKnownPres =
    "headfuse converts LLaMA 3's (llama.cpp's 'llama-bpe'), Qwen2's ('qwen2'), Mistral NeMo's Tekken ('tekken') and "
    "GPT-2's ('gpt-2')";

// Deeper nesting than any tokenizer file has; refused before parsing, as printing or freeing a deeply nested
// value recurses.
constexpr int kMaxJsonDepth = 64;

// The deepest nesting of arrays and objects in `text`, outside strings (stops counting past the limit).
int json_depth(std::string_view text) {
    int depth = 0, deepest = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size() && deepest <= kMaxJsonDepth; ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return deepest;
}

std::string_view as_chars(std::span<const std::byte> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::vector<Value> byte_values(std::span<const std::byte> bytes) {
    std::vector<Value> out;
    out.reserve(bytes.size());
    for (std::byte b : bytes) out.push_back(Value::u8(static_cast<std::uint8_t>(b)));
    return out;
}

json parse_json(const fs::path& path, std::span<const std::byte> bytes) {
    if (json_depth({reinterpret_cast<const char*>(bytes.data()), bytes.size()}) > kMaxJsonDepth)
        fail(path.string() + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    try {
        return json::parse(reinterpret_cast<const char*>(bytes.data()),
                           reinterpret_cast<const char*>(bytes.data()) + bytes.size());
    } catch (const json::exception& e) {
        fail(path.string() + ": not valid JSON: " + e.what());
    }
}

std::string dump(const json& j) {
    std::string s = j.dump();
    constexpr std::size_t kShown = 80;
    return s.size() > kShown ? s.substr(0, kShown) + "..." : s;
}

// Code points of a UTF-8 string, as byte offsets (the last one is s.size()).
std::vector<std::size_t> char_bounds(std::string_view s) {
    std::vector<std::size_t> b;
    for (std::size_t i = 0; i < s.size(); ++i)
        if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) b.push_back(i);
    b.push_back(s.size());
    return b;
}

// For each token, its longest proper prefix (suffix: `reversed`) that is also a token, or -1. The tokens sorted by
// text, a token's token prefixes are the chain on a stack of the previous token's: linear in the bytes of the
// tokens after the sort.
std::vector<std::int32_t> affix_parents(const std::vector<std::string>& tokens, bool reversed) {
    std::vector<std::string> rev;
    if (reversed) {
        rev.reserve(tokens.size());
        for (const std::string& t : tokens) rev.emplace_back(t.rbegin(), t.rend());
    }
    const std::vector<std::string>& text = reversed ? rev : tokens;
    std::vector<std::uint32_t> order(text.size());
    for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) { return text[a] < text[b]; });
    std::vector<std::int32_t> parent(text.size(), -1);
    std::vector<std::uint32_t> chain;
    for (const std::uint32_t id : order) {
        const std::string_view t = text[id];
        while (!chain.empty() && !t.starts_with(text[chain.back()])) chain.pop_back();
        if (!chain.empty()) parent[id] = static_cast<std::int32_t>(chain.back());
        chain.push_back(id);
    }
    return parent;
}

// Added tokens llama.cpp's converter makes control tokens although the files do not call them special
// (does_token_look_special): <|...|>, <｜...｜>, <unused...>, and Gemma's <mask>, <2mass>, [@BOS@]; and
// DeepSeek's <pad>.
bool looks_special(std::string_view t) {
    auto wrapped = [&](std::string_view open, std::string_view close) {
        return t.size() >= open.size() + close.size() && t.starts_with(open) && t.ends_with(close);
    };
    return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
           wrapped("<\xEF\xBD\x9C", "\xEF\xBD\x9C>") || wrapped("<unused", ">");
}

// The texts llama.cpp's vocabulary loader makes control tokens whatever the file says (its end-of-generation list in
// llama-vocab.cpp): with special tokens parsed, a text spelling one out becomes that token.
constexpr std::string_view kForcedControl[] = {"<|eot_id|>",
                                               "<|im_end|>",
                                               "<|end|>",
                                               "<|return|>",
                                               "<|call|>",
                                               "<|flush|>",
                                               "<|calls|>",
                                               "<end_of_turn>",
                                               "<|endoftext|>",
                                               "</s>",
                                               "<|eom_id|>",
                                               "<EOT>",
                                               "_<EOT>",
                                               "[EOT]",
                                               "[EOS]",
                                               "<|end_of_text|>",
                                               "<end_of_utterance>",
                                               "<eos>",
                                               "<turn|>",
                                               "<|tool_response>",
                                               "<\xEF\xBD\x9C"
                                               "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
                                               "[e~["};

bool is_byte_token(std::string_view t) {
    auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
    return t.size() == 6 && t.substr(0, 3) == "<0x" && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

// Special token ids (-1: none) and add_bos, when the configuration files say nothing.
struct Fallback {
    std::int64_t bos = -1, eos = -1, unk = -1, pad = -1;
    bool add_bos = false;
};

struct Converter {
    const std::string src;  // tokenizer.json's path, naming errors
    const json& tj;         // tokenizer.json
    const json& config;     // tokenizer_config.json, or null
    const json& stm;        // special_tokens_map.json, or null
    const json& hf_config;  // the model's config.json beside them, or null: its bos_token_id, ... as a fallback
    const WarnFn& warn;

    std::vector<std::string> tokens;
    std::unordered_map<std::string, std::uint32_t> ids;  // every token, added tokens first
    std::vector<std::int32_t> types;
    std::vector<std::pair<std::string, std::string>> merges;
    std::vector<std::pair<std::uint32_t, const char*>> stripped;  // tokenizer.json's added tokens' strip flags
    std::string llama_name;                                       // see strip_flags

    [[noreturn]] void bad(const std::string& what) const { fail(src + ": " + what); }
    // Well-formed, but llama.cpp would not tokenize it as Hugging Face or SentencePiece does.
    [[noreturn]] void unsupported(const std::string& what) const { fail(ErrorKind::Unsupported, src + ": " + what); }

    const json& field(const json& j, const char* key) const {
        static const json null;
        return j.is_object() && j.contains(key) ? j.at(key) : null;
    }
    std::string type_of(const json& j) const {
        const json& t = field(j, "type");
        return t.is_string() ? t.get<std::string>() : "";
    }
    // The objects of a Sequence (under `list`), or the object itself.
    std::vector<const json*> flatten(const json& j, const char* list) const {
        std::vector<const json*> out;
        if (j.is_null()) return out;
        if (type_of(j) == "Sequence")
            for (const json& e : field(j, list)) out.push_back(&e);
        else
            out.push_back(&j);
        return out;
    }

    void index_tokens() {
        ids.reserve(tokens.size());
        for (std::uint32_t i = 0; i < tokens.size(); ++i)
            if (!ids.emplace(tokens[i], i).second)
                bad("token '" + tokens[i] + "' appears twice (ids " + std::to_string(ids[tokens[i]]) + " and " +
                    std::to_string(i) + ")");
    }

    void read_vocab() {
        const json& model = field(tj, "model");
        if (type_of(model) != "BPE")
            unsupported(
                "model type '" + type_of(model) +
                "' is not supported (headfuse converts BPE tokenizers: SentencePiece-style with byte fallback, or "
                "byte-level)");
        for (const char* key : {"dropout", "continuing_subword_prefix", "end_of_word_suffix"}) {
            const json& v = field(model, key);
            if (!v.is_null() && !(v.is_string() && v.get<std::string>().empty()))
                unsupported("model." + std::string(key) + " " + dump(v) + " has no llama.cpp equivalent");
        }
        const json& vocab = field(model, "vocab");
        if (!vocab.is_object()) bad("model.vocab is not an object");
        std::map<std::uint64_t, std::string> by_id;
        auto put = [&](const std::string& text, const json& id) {
            if (!id.is_number_unsigned() || id.get<std::uint64_t>() >= std::numeric_limits<std::uint32_t>::max())
                bad("token '" + text + "' has id " + dump(id) + ", expected an unsigned 32-bit integer");
            const auto [it, fresh] = by_id.emplace(id.get<std::uint64_t>(), text);
            if (!fresh && it->second != text)
                bad("id " + dump(id) + " is both '" + it->second + "' and '" + text + "'");
        };
        for (const auto& [text, id] : vocab.items()) put(text, id);
        for (const json& a : field(tj, "added_tokens")) {
            if (!field(a, "content").is_string()) bad("an added token has no content: " + dump(a));
            put(a["content"].get<std::string>(), field(a, "id"));
        }
        if (by_id.empty()) bad("no tokens");
        const std::uint64_t n = by_id.rbegin()->first + 1;
        if (by_id.size() != n) {
            std::uint64_t hole = 0;
            while (by_id.count(hole)) ++hole;
            bad("token ids are not contiguous: no token has id " + std::to_string(hole) + " (" +
                std::to_string(by_id.size()) + " tokens, ids up to " + std::to_string(n - 1) + ")");
        }
        tokens.reserve(n);
        for (auto& [id, text] : by_id) tokens.push_back(std::move(text));
        index_tokens();
        types.assign(n, kNormal);
        for (const json& a : field(tj, "added_tokens")) {
            const std::uint32_t id = a["id"].get<std::uint32_t>();
            const bool special = field(a, "special").is_boolean() && a["special"].get<bool>();
            types[id] = special || looks_special(tokens[id]) ? kControl : kUserDefined;
            for (const char* flag : {"lstrip", "rstrip", "single_word"})
                if (field(a, flag).is_boolean() && a[flag].get<bool>()) stripped.emplace_back(id, flag);
        }
    }

    // Added tokens' lstrip, rstrip and single_word, which llama.cpp's loader never reads from the file. It sets
    // rstrip itself, by general.name, for one family (kNamedStrip): when the tokenizer's flags are exactly that
    // rule's, the model is to be named so (llama_name); otherwise each flag is said in a warning.
    void strip_flags() {
        std::set<std::uint32_t> rule, rstrip;
        bool others = false;
        for (std::uint32_t id = 0; id < tokens.size(); ++id)
            if (types[id] == kControl || types[id] == kUserDefined || types[id] == kUnknown) rule.insert(id);
        for (const std::string_view t : kNamedStrip.also)
            if (const auto it = ids.find(std::string(t)); it != ids.end()) rule.insert(it->second);
        for (const std::string_view t : kNamedStrip.except)
            if (const auto it = ids.find(std::string(t)); it != ids.end()) rule.erase(it->second);
        for (const auto& [id, flag] : stripped) {
            if (std::string_view(flag) == "rstrip")
                rstrip.insert(id);
            else
                others = true;
        }
        if (!others && !rstrip.empty() && rstrip == rule) {
            llama_name = kNamedStrip.name;
            return;
        }
        if (warn)
            for (const auto& [id, flag] : stripped)
                warn(src + ": added token '" + tokens[id] + "' has " + flag +
                     ", which llama.cpp does not apply when it matches the token in text");
    }

    void read_merges() {
        const json& list = field(field(tj, "model"), "merges");
        if (!list.is_array()) bad("model.merges is not an array");
        merges.reserve(list.size());
        for (const json& m : list) {
            std::string a, b;
            if (m.is_string()) {  // "a b"
                const std::string s = m.get<std::string>();
                const std::size_t sp = s.find(' ');
                if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                    bad("merge " + dump(m) + " is not two pieces separated by a space");
                a = s.substr(0, sp);
                b = s.substr(sp + 1);
            } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["a", "b"]
                a = m[0].get<std::string>();
                b = m[1].get<std::string>();
            } else {
                bad("merge " + dump(m) + " is neither \"a b\" nor [\"a\", \"b\"]");
            }
            if (!ids.count(a) || !ids.count(b) || !ids.count(a + b))
                bad("merge " + dump(m) + " joins pieces that are not all tokens");
            merges.emplace_back(std::move(a), std::move(b));
        }
    }

    // The token of a special role: tokenizer_config.json, then special_tokens_map.json (a string, or an
    // object with "content"). -1 when neither names one.
    std::int64_t special(const std::string& role) const {
        const std::string key = role + "_token";
        for (const json* j : {&config, &stm}) {
            const json& v = field(*j, key.c_str());
            const json& text = v.is_object() ? field(v, "content") : v;
            if (text.is_null()) continue;
            if (!text.is_string()) bad(key + " is " + dump(v) + ", expected a token");
            const auto it = ids.find(text.get<std::string>());
            if (it == ids.end()) bad(key + " '" + text.get<std::string>() + "' is not a token");
            return it->second;
        }
        return -1;
    }

    // The special token ids of the model's config.json (bos_token_id, ..., at its top or in text_config), for
    // the roles the tokenizer's own files leave unnamed, as llama.cpp's converter takes them (Qwen's
    // tokenizer_config.json names no bos token, its config.json does). Ids that are not one integer, or not
    // a token, are passed over, as the converter passes them over.
    Fallback model_fallback() const {
        Fallback f;
        for (auto [role, id] : {std::pair{"bos", &f.bos}, {"eos", &f.eos}, {"unk", &f.unk}, {"pad", &f.pad}}) {
            const std::string key = std::string(role) + "_token_id";
            const json* v = &field(hf_config, key.c_str());
            if (v->is_null()) v = &field(field(hf_config, "text_config"), key.c_str());
            if (v->is_number_unsigned() && v->get<std::uint64_t>() < tokens.size())
                *id = static_cast<std::int64_t>(v->get<std::uint64_t>());
        }
        return f;
    }

    // A SentencePiece-style token's text as llama.cpp's converter writes it: a user-defined token's U+2581 become
    // spaces. llama.cpp matches user-defined tokens in the text before it writes spaces as U+2581 and
    // detokenizes them as they are spelled: Gemma's runs of spaces ("▁▁", ...) are then matched in text as
    // spaces and give spaces back (kept as "▁▁", llama.cpp would print U+2581 for the spaces of its output).
    std::string spm_text(std::uint32_t id) const {
        std::string t = tokens[id];
        if (types[id] == kUserDefined)
            for (std::size_t at = 0; (at = t.find(kSpace, at)) != std::string::npos; ++at)
                t.replace(at, kSpace.size(), " ");
        return t;
    }

    // add_bos/add_eos: tokenizer_config.json's add_bos_token/add_eos_token, else the post-processor's template
    // (a special token before or after the text). Also the template's first special token as bos when the
    // configuration names none.
    // `fallback` holds the ids when neither file names the token, and the default of add_bos.
    void special_keys(Metadata& md, const Fallback& fallback = {}) {
        auto either = [](std::int64_t id, std::int64_t other) { return id >= 0 ? id : other; };
        std::int64_t bos = either(special("bos"), fallback.bos), eos = either(special("eos"), fallback.eos),
                     unk = either(special("unk"), fallback.unk), pad = either(special("pad"), fallback.pad);
        if (unk < 0)
            if (const json& u = field(field(tj, "model"), "unk_token");
                u.is_string() && ids.count(u.get<std::string>()))
                unk = ids.at(u.get<std::string>());
        bool add_bos = fallback.add_bos, add_eos = false;
        for (const json* p : flatten(field(tj, "post_processor"), "processors")) {
            if (type_of(*p) != "TemplateProcessing") continue;
            const json& single = field(*p, "single");
            auto special_at = [&](const json& item) -> std::int64_t {
                const json& st = field(item, "SpecialToken");
                if (st.is_null()) return -1;
                const json& name = field(st, "id");
                if (!name.is_string()) return -1;
                const json& known = field(field(field(*p, "special_tokens"), name.get<std::string>().c_str()), "ids");
                if (known.is_array() && known.size() == 1 && known[0].is_number_unsigned())
                    return known[0].get<std::int64_t>();
                const auto it = ids.find(name.get<std::string>());
                return it == ids.end() ? -1 : it->second;
            };
            if (!single.is_array() || single.empty()) continue;
            if (const std::int64_t first = special_at(single.front()); first >= 0) {
                add_bos = true;
                if (bos < 0) bos = first;
            }
            if (single.size() > 1)
                if (const std::int64_t last = special_at(single.back()); last >= 0) {
                    add_eos = true;
                    if (eos < 0) eos = last;
                }
        }
        if (field(config, "add_bos_token").is_boolean()) add_bos = config["add_bos_token"].get<bool>();
        if (field(config, "add_eos_token").is_boolean()) add_eos = config["add_eos_token"].get<bool>();
        if (unk >= 0 && types[unk] != kByte) types[unk] = kUnknown;
        for (const auto& [key, id] : {std::pair{"tokenizer.ggml.bos_token_id", bos},
                                      {"tokenizer.ggml.eos_token_id", eos},
                                      {"tokenizer.ggml.unknown_token_id", unk},
                                      {"tokenizer.ggml.padding_token_id", pad}})
            if (id >= 0) md.set(key, Value::u32(static_cast<std::uint32_t>(id)));
        md.set("tokenizer.ggml.add_bos_token", Value::boolean(add_bos));
        md.set("tokenizer.ggml.add_eos_token", Value::boolean(add_eos));
    }

    void chat_template(Metadata& md) const {
        const json& t = field(config, "chat_template");
        if (t.is_string()) {
            md.set("tokenizer.chat_template", Value::string(t.get<std::string>()));
        } else if (t.is_array()) {  // [{"name": ..., "template": ...}]: "default" and tokenizer.chat_template.NAME
            for (const json& e : t) {
                if (!field(e, "name").is_string() || !field(e, "template").is_string())
                    bad("chat_template entry " + dump(e) + " has no name and template");
                const std::string name = e["name"].get<std::string>();
                md.set(name == "default" ? "tokenizer.chat_template" : "tokenizer.chat_template." + name,
                       Value::string(e["template"].get<std::string>()));
            }
        } else if (!t.is_null()) {
            bad("chat_template is " + dump(t) + ", expected a string");
        }
    }

    // SentencePiece-style: "▁" for spaces (a Replace normalizer or a Metaspace pre-tokenizer), an optional
    // "▁" before the text (Prepend, or Metaspace's prefix), byte fallback. Returns add_space_prefix.
    bool spm_text_rules() const {
        bool escapes = false, prefix = false;
        for (const json* n : flatten(field(tj, "normalizer"), "normalizers")) {
            const std::string t = type_of(*n);
            if (t == "Prepend" && field(*n, "prepend") == json(kSpace)) {
                prefix = true;
            } else if (t == "Replace" && field(field(*n, "pattern"), "String") == json(" ") &&
                       field(*n, "content") == json(kSpace)) {
                escapes = true;
            } else {
                unsupported("normalizer " + dump(*n) +
                            " has no llama.cpp equivalent for a SentencePiece-style tokenizer");
            }
        }
        const json& pre = field(tj, "pre_tokenizer");
        if (type_of(pre) == "Metaspace") {
            if (field(pre, "replacement") != json(kSpace) || field(pre, "split") == json(true))
                unsupported("pre-tokenizer " + dump(pre) +
                            " has no llama.cpp equivalent (llama.cpp does not split at spaces)");
            escapes = true;
            const json& scheme = field(pre, "prepend_scheme");
            if (scheme.is_string()) {
                prefix = scheme.get<std::string>() != "never";
                if (scheme.get<std::string>() == "first" && warn)
                    warn(src +
                         ": prepend_scheme 'first': llama.cpp also puts a space before text that follows a "
                         "special token");
            } else {
                prefix = field(pre, "add_prefix_space") != json(false);
            }
        } else if (type_of(pre) == "Split" && escapes && field(field(pre, "pattern"), "String") == json(" ") &&
                   field(pre, "invert") != json(true)) {
            // Gemma's: a split at spaces after a normalizer that left none, which splits nothing.
        } else if (!pre.is_null()) {
            unsupported("pre-tokenizer " + dump(pre) +
                        " has no llama.cpp equivalent for a SentencePiece-style tokenizer");
        }
        if (!escapes)
            unsupported("a SentencePiece-style tokenizer must write spaces as U+2581 (no Replace or Metaspace found)");
        if (field(field(tj, "model"), "byte_fallback") != json(true))
            unsupported(
                "a SentencePiece-style tokenizer without byte_fallback: llama.cpp has no unknown-token fallback for "
                "it");
        return prefix;
    }

    // Scores that make llama.cpp's SentencePiece merging (the adjacent pair whose joined piece scores highest,
    // leftmost on ties) follow the merges: a piece scores minus the rank of the first merge that forms it; a
    // piece no merge forms scores -n_merges, below all of them. Warns when llama.cpp can join pieces that the
    // merges never join (a pair missing from the merges, or a piece no merge forms), as it then may differ.
    std::vector<Value> spm_scores() const {
        if (merges.size() >= kMaxExactRank)
            unsupported(std::to_string(merges.size()) + " merges: ranks beyond 2^24 are not exact as f32 scores");
        const float none = -static_cast<float>(merges.size());
        std::vector<float> score(tokens.size(), none);
        std::vector<bool> formed(tokens.size(), false);
        std::unordered_set<std::uint64_t> pairs;  // the ids a and b of every merge, as a << 32 | b
        for (std::size_t r = 0; r < merges.size(); ++r) {
            const auto& [a, b] = merges[r];
            const std::uint32_t id = ids.at(a + b);
            if (!formed[id]) score[id] = -static_cast<float>(r);
            formed[id] = true;
            pairs.insert(std::uint64_t{ids.at(a)} << 32 | ids.at(b));
        }
        // Pieces llama.cpp can hold while merging: single characters and pieces merges form.
        std::vector<bool> reach(tokens.size());
        for (std::uint32_t id = 0; id < tokens.size(); ++id)
            reach[id] = formed[id] || (!tokens[id].empty() && char_bounds(tokens[id]).size() == 2);
        auto reachable = [&](std::int32_t id) { return reach[static_cast<std::uint32_t>(id)]; };
        // A token's splits into two tokens are found through the chains of its token prefixes and token
        // suffixes, not by looking up every split (hashing each split of a piece of n bytes costs n^2, minutes
        // for a piece of a few megabytes); each chain is at most as long as the token, so this is linear in the
        // bytes of the vocabulary.
        const std::vector<std::int32_t> prefix = affix_parents(tokens, false), suffix = affix_parents(tokens, true);
        std::size_t extra = 0;
        std::string example;
        std::vector<std::pair<std::size_t, std::uint32_t>> heads;  // (split, prefix token), split decreasing
        for (std::uint32_t id = 0; id < tokens.size(); ++id) {
            if (types[id] != kNormal) continue;
            const std::string& t = tokens[id];
            heads.clear();
            for (std::int32_t p = prefix[id]; p >= 0; p = prefix[p])
                if (!tokens[p].empty() && reachable(p)) heads.emplace_back(tokens[p].size(), p);
            // Suffixes from the longest: their splits increase, so the first split found is the leftmost.
            auto h = heads.rbegin();
            for (std::int32_t q = suffix[id]; q >= 0 && h != heads.rend(); q = suffix[q]) {
                if (tokens[q].empty() || !reachable(q)) continue;
                const std::size_t k = t.size() - tokens[q].size();
                while (h != heads.rend() && h->first < k) ++h;
                if (h != heads.rend() && h->first == k &&
                    !pairs.count(std::uint64_t{h->second} << 32 | static_cast<std::uint32_t>(q))) {
                    if (extra++ == 0) example = "'" + t.substr(0, k) + "' + '" + t.substr(k) + "'";
                    break;
                }
            }
        }
        if (extra && warn)
            warn(src + ": " + std::to_string(extra) + " tokens can be joined from pairs the merges do not list (e.g. " +
                 example + "); llama.cpp may tokenize some texts differently");
        std::vector<Value> out;
        out.reserve(score.size());
        for (float s : score) out.push_back(Value::f32(s));
        return out;
    }

    // Byte-level: the llama.cpp pre-tokenizer whose regex is the tokenizer.json's. llama.cpp normalizes no text
    // for a byte-level vocabulary: Qwen's NFC normalizer is converted with a warning (text already in NFC, as
    // most text is, tokenizes the same; decomposed text does not), any other normalizer is refused.
    const KnownPre& byte_level_pre() const {
        const auto parts = flatten(field(tj, "pre_tokenizer"), "pretokenizers");
        if (const json& n = field(tj, "normalizer"); type_of(n) == "NFC") {
            if (warn)
                warn(src +
                     ": normalizer NFC: llama.cpp does not normalize text, so text not in NFC (decomposed accents, "
                     "Hangul jamo) tokenizes differently unless the caller normalizes it first");
        } else if (!n.is_null()) {
            unsupported("normalizer " + dump(n) + " has no llama.cpp equivalent for a byte-level tokenizer");
        }
        auto byte_level = [&](const json& j, bool regex) {
            return type_of(j) == "ByteLevel" && field(j, "add_prefix_space") != json(true) &&
                   field(j, "use_regex") == json(regex);
        };
        const KnownPre* pre = nullptr;
        if (parts.size() == 1 && byte_level(*parts[0], true)) {
            pre = &kGpt2Pre;
        } else if (parts.size() == 2 && type_of(*parts[0]) == "Split" && byte_level(*parts[1], false)) {
            const json& split = *parts[0];
            const json& regex = field(field(split, "pattern"), "Regex");
            if (field(split, "behavior") == json("Isolated") && field(split, "invert") != json(true))
                for (const KnownPre* known : kSplitPres)
                    if (regex == json(known->regex)) pre = known;
            if (!pre)
                unsupported("pre-tokenizer regex " + dump(regex) + " is not one headfuse converts (" +
                            std::string(kKnownPres) + ")");
        }
        if (!pre)
            unsupported("pre-tokenizer " + dump(field(tj, "pre_tokenizer")) + " is not one headfuse converts (" +
                        std::string(kKnownPres) + ")");
        const bool ignore = field(field(tj, "model"), "ignore_merges") == json(true);
        if (ignore != pre->ignore_merges)
            unsupported("model.ignore_merges is " + std::string(ignore ? "true" : "false") + ", but llama.cpp's '" +
                        std::string(pre->name) + "' pre-tokenizer has it " + (pre->ignore_merges ? "true" : "false"));
        if (!pre->limitation.empty() && warn) warn(src + ": " + std::string(pre->limitation));
        return *pre;
    }

    // A SentencePiece model, as llama.cpp's converter takes one (convert_hf_to_gguf.py's
    // _set_vocab_sentencepiece): its pieces, scores and piece types, the entries of tokenizer_config.json's
    // added_tokens_decoder as control (special) or user-defined tokens scored -1000, add_space_prefix from the
    // normalizer's add_dummy_prefix. SentencePiece's BPE merges the adjacent pair whose joined piece scores
    // highest, as llama.cpp does, so the model's own scores need no change; what llama.cpp would not reproduce is
    // refused by name.
    Metadata convert_sp(const SpModel& sp) {
        static constexpr const char* kModelTypes[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
        if (sp.model_type != kSpBpe)
            unsupported(
                "model type " +
                std::string(sp.model_type >= 1 && sp.model_type <= 4 ? kModelTypes[sp.model_type]
                                                                     : std::to_string(sp.model_type).c_str()) +
                ": llama.cpp's SentencePiece tokenizer merges pieces by score, which reproduces BPE models only");
        if (!sp.byte_fallback)
            unsupported("a SentencePiece model without byte_fallback: llama.cpp has no unknown-token fallback for it");
        if (sp.charsmap_bytes)
            unsupported("normalization rule '" + sp.normalizer +
                        "' changes text before tokenizing, which llama.cpp does not (only 'identity' converts)");
        if (sp.remove_extra_whitespaces)
            unsupported("remove_extra_whitespaces is on: SentencePiece drops runs of spaces, llama.cpp keeps them");
        if (!sp.escape_whitespaces) unsupported("escape_whitespaces is off: llama.cpp always writes spaces as U+2581");
        if (sp.treat_whitespace_as_suffix)
            unsupported("treat_whitespace_as_suffix is on: llama.cpp puts U+2581 before words, not after");
        std::vector<float> scores;
        for (std::size_t i = 0; i < sp.pieces.size(); ++i) {
            const SpModel::Piece& p = sp.pieces[i];
            if (p.type < kNormal || p.type > kByte)
                bad("piece " + std::to_string(i) + " '" + p.text + "' has type " + std::to_string(p.type) +
                    ", expected 1..6");
            tokens.push_back(p.text);
            types.push_back(p.type);
            scores.push_back(p.score);
        }
        index_tokens();
        added_tokens_decoder(scores);
        // The model's own ids for its special pieces (-1: none), unless the configuration names others.
        auto own = [&](std::int32_t id) { return id >= 0 && std::size_t(id) < tokens.size() ? id : -1; };
        const std::int64_t bos = own(sp.bos_id);
        Metadata specials;
        const Fallback cf = model_fallback();
        auto either = [](std::int64_t id, std::int64_t other) { return id >= 0 ? id : other; };
        special_keys(specials, {either(cf.bos, bos), either(cf.eos, own(sp.eos_id)), either(cf.unk, own(sp.unk_id)),
                                either(cf.pad, own(sp.pad_id)), bos >= 0});
        Metadata md;
        md.set("tokenizer.ggml.model", Value::string("llama"));
        std::vector<Value> tv, sv, ty;
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            tv.push_back(Value::string(spm_text(i)));
            sv.push_back(Value::f32(scores[i]));
            ty.push_back(Value::i32(types[i]));
        }
        md.set("tokenizer.ggml.tokens", Value::array(ValueType::STRING, std::move(tv)));
        md.set("tokenizer.ggml.scores", Value::array(ValueType::F32, std::move(sv)));
        md.set("tokenizer.ggml.token_type", Value::array(ValueType::I32, std::move(ty)));
        md.set("tokenizer.ggml.add_space_prefix", Value::boolean(sp.add_dummy_prefix));
        md.merge(std::move(specials));
        chat_template(md);
        return md;
    }

    // tokenizer_config.json's added_tokens_decoder {"id": {"content": ..., "special": ...}}: a token the model
    // has (same text) or the next id after the model's pieces.
    void added_tokens_decoder(std::vector<float>& scores) {
        const json& added = field(config, "added_tokens_decoder");
        if (added.is_null()) return;
        if (!added.is_object()) bad("added_tokens_decoder is " + dump(added) + ", expected an object");
        std::map<std::uint64_t, const json*> by_id;
        for (const auto& [key, value] : added.items()) {
            std::uint64_t id = 0;
            const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
            if (ec != std::errc() || end != key.data() + key.size() || !field(value, "content").is_string())
                bad("added_tokens_decoder entry \"" + key + "\": " + dump(value) + " is not an id and a content");
            by_id.emplace(id, &value);
        }
        for (const auto& [id, value] : by_id) {
            const std::string text = (*value)["content"].get<std::string>();
            if (id > tokens.size())
                bad("added_tokens_decoder token " + std::to_string(id) + " '" + text + "' leaves a gap after the " +
                    std::to_string(tokens.size()) + " tokens");
            if (id == tokens.size()) {
                if (!ids.emplace(text, static_cast<std::uint32_t>(id)).second)
                    bad("added_tokens_decoder token " + std::to_string(id) + " '" + text + "' is already token " +
                        std::to_string(ids[text]));
                tokens.push_back(text);
                types.push_back(kNormal);
                scores.push_back(0.0f);
            } else if (tokens[id] != text) {
                bad("added_tokens_decoder token " + std::to_string(id) + " is '" + text + "', the model's piece " +
                    std::to_string(id) + " is '" + tokens[id] + "'");
            }
            types[id] = field(*value, "special") == json(true) ? kControl : kUserDefined;
            scores[id] = kAddedTokenScore;
        }
    }

    // Warns, in one line, when ordinary tokens have texts llama.cpp makes control tokens: the reference tokenizer
    // spells such a text out of smaller pieces, llama.cpp (parsing special tokens) gives the one token.
    void forced_control() const {
        if (!warn) return;
        std::string found;
        for (const std::string_view t : kForcedControl)
            if (const auto it = ids.find(std::string(t)); it != ids.end() && types[it->second] == kNormal)
                found += (found.empty() ? "" : ", ") + std::to_string(it->second) + " '" + std::string(t) + "'";
        if (!found.empty())
            warn(src + ": ordinary tokens " + found +
                 ": llama.cpp makes every token of these texts a control token, so a text spelling one out tokenizes "
                 "differently there when special tokens are parsed");
    }

    Metadata convert() {
        read_vocab();
        read_merges();
        const bool byte_level = [&] {
            for (const json* p : flatten(field(tj, "pre_tokenizer"), "pretokenizers"))
                if (type_of(*p) == "ByteLevel") return true;
            return false;
        }();
        Metadata md;
        if (byte_level) {
            const KnownPre& pre = byte_level_pre();
            md.set("tokenizer.ggml.model", Value::string("gpt2"));
            md.set("tokenizer.ggml.pre", Value::string(std::string(pre.name)));
        } else {
            const bool prefix = spm_text_rules();
            for (std::uint32_t id = 0; id < tokens.size(); ++id)
                if (types[id] == kNormal && is_byte_token(tokens[id])) types[id] = kByte;
            md.set("tokenizer.ggml.model", Value::string("llama"));
            md.set("tokenizer.ggml.add_space_prefix", Value::boolean(prefix));
        }
        Metadata specials;
        special_keys(specials, model_fallback());  // settles the unknown token's type
        std::vector<Value> tv, ty;
        tv.reserve(tokens.size());
        ty.reserve(tokens.size());
        for (std::uint32_t i = 0; i < tokens.size(); ++i) {
            tv.push_back(Value::string(byte_level ? tokens[i] : spm_text(i)));
            ty.push_back(Value::i32(types[i]));
        }
        forced_control();
        strip_flags();
        md.set("tokenizer.ggml.tokens", Value::array(ValueType::STRING, std::move(tv)));
        if (!byte_level) md.set("tokenizer.ggml.scores", Value::array(ValueType::F32, spm_scores()));
        md.set("tokenizer.ggml.token_type", Value::array(ValueType::I32, std::move(ty)));
        if (byte_level) {
            std::vector<Value> mv;
            mv.reserve(merges.size());
            for (const auto& [a, b] : merges) {
                // llama.cpp splits a merge at its first space after the first byte.
                if (a.find(' ', 1) != std::string::npos || b.find(' ') != std::string::npos)
                    unsupported("merge '" + a + "' + '" + b + "' holds a space, which llama.cpp's merge list cannot");
                mv.push_back(Value::string(a + " " + b));
            }
            md.set("tokenizer.ggml.merges", Value::array(ValueType::STRING, std::move(mv)));
        }
        md.merge(std::move(specials));
        chat_template(md);
        return md;
    }
};

bool starts_with_gguf_magic(const fs::path& path) {
    const MappedFile f = MappedFile::open(path);
    return f.bytes().size() >= 4 && std::memcmp(f.bytes().data(), "GGUF", 4) == 0;
}

}  // namespace

Tokenizer read_hf_tokenizer(const fs::path& path, const WarnFn& warn) {
    fs::path file = path, dir = path.parent_path();
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
        dir = path;
        file = path / "tokenizer.json";
        if (!fs::exists(file, ec)) file = path / "tokenizer.model";
        if (!fs::exists(file, ec)) fail(path.string() + ": no tokenizer.json or tokenizer.model");
    }
    const bool sentencepiece = file.extension() == ".model";
    Tokenizer t;
    t.source = file.string();
    t.converted = true;
    t.inputs.push_back(file);
    // The files' exact bytes are kept (kTokenizerFiles) for `export --format hf` to write back, under their
    // standard names whatever the given file is called.
    Metadata sources;
    auto keep = [&](std::string_view name, std::span<const std::byte> bytes) {
        for (const TokenizerFile& f : kTokenizerFiles)
            if (name == f.file)
                sources.set(std::string(f.key), f.binary ? Value::array(ValueType::U8, byte_values(bytes))
                                                         : Value::string(std::string(as_chars(bytes))));
    };
    const MappedFile main = MappedFile::open(file);
    json tj, config, stm;
    if (!sentencepiece) tj = parse_json(file, main.bytes());
    keep(sentencepiece ? "tokenizer.model" : "tokenizer.json", main.bytes());
    for (auto [name, into] : {std::pair{"tokenizer_config.json", &config}, {"special_tokens_map.json", &stm}})
        if (const fs::path p = dir / name; fs::exists(p, ec)) {
            const MappedFile f = MappedFile::open(p);
            *into = parse_json(p, f.bytes());
            keep(name, f.bytes());
            t.inputs.push_back(p);
        }
    // A tokenizer.model beside a tokenizer.json (LLaMA 2's folders have both) is not read, only kept.
    if (const fs::path p = dir / "tokenizer.model";
        !sentencepiece && file.filename() == "tokenizer.json" && fs::exists(p, ec) && !fs::is_directory(p, ec)) {
        keep("tokenizer.model", MappedFile::open(p).bytes());
        t.inputs.push_back(p);
    }
    if (!sentencepiece && !tj.is_object()) fail(t.source + ": not a tokenizer (a JSON object with a model)");
    // The model's config.json, read only for its special token ids (not kept: it is the checkpoint's).
    json model_config;
    if (const fs::path p = dir / "config.json"; fs::is_regular_file(p, ec)) {
        const MappedFile f = MappedFile::open(p);
        model_config = parse_json(p, f.bytes());
    }
    Converter c{t.source, tj, config, stm, model_config, warn, {}, {}, {}, {}, {}, {}};
    t.keys = sentencepiece ? c.convert_sp(parse_sp_model(main.bytes(), t.source)) : c.convert();
    t.general_name = c.llama_name;
    check_tokenizer(t.keys, 0, t.source);
    t.keys.merge(std::move(sources));
    return t;
}

Metadata sp_model_keys(std::span<const std::byte> bytes, const std::string& where) {
    const json none;
    Converter c{where, none, none, none, none, {}, {}, {}, {}, {}, {}, {}};
    Metadata keys = c.convert_sp(parse_sp_model(bytes, where));
    check_tokenizer(keys, 0, where);
    return keys;
}

Tokenizer read_tokenizer(const fs::path& path, const WarnFn& warn) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) return read_hf_tokenizer(path, warn);
    if (!starts_with_gguf_magic(path)) {
        if (path.extension() == ".json" || path.extension() == ".model") return read_hf_tokenizer(path, warn);
        fail(path.string() + ": not a GGUF file, a Hugging Face folder, a tokenizer.json or a tokenizer.model");
    }
    const GgufFile f = GgufFile::open(path);
    Tokenizer t;
    t.source = f.name();
    t.inputs.push_back(path);
    for (const auto& e : f.metadata().entries())
        if (e.key.rfind("tokenizer.", 0) == 0) t.keys.set(e.key, e.value);
    check_tokenizer(t.keys, 0, t.source);
    return t;
}

}  // namespace headfuse
