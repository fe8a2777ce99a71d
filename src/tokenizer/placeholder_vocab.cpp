#include "tokenizer/placeholder_vocab.h"

#include <cstdio>
#include <string>
#include <vector>

#include "headfuse/error.h"
#include "headfuse/vocab.h"

namespace headfuse {
namespace {

// llama.cpp's token types (llama-vocab.h, enum llama_token_type).
constexpr std::int32_t kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6;
// Enough room below it for the LLaMA layout: 3 special tokens, 256 byte tokens, "▁", at least 2 fillers.
constexpr std::uint32_t kFullLayoutVocab = 262;
// node-llama-cpp tokenizes "\nsome test text here" while loading a model and aborts unless every character
// is a token or falls back to byte tokens; with "▁" these are the bytes that text needs.
constexpr unsigned char kLoadProbeBytes[] = {'\n', 'e', 'h', 'm', 'o', 'r', 's', 't', 'x'};

std::string byte_token(unsigned b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    return buf;
}

}  // namespace

Metadata default_tokenizer(std::uint32_t vocab) {
    std::vector<Value> tokens, scores, types;
    tokens.reserve(vocab);
    scores.reserve(vocab);
    types.reserve(vocab);
    auto add = [&](std::string text, float score, std::int32_t type) {
        tokens.push_back(Value::string(std::move(text)));
        scores.push_back(Value::f32(score));
        types.push_back(Value::i32(type));
    };
    const std::string boundary = "\xE2\x96\x81";  // "▁", SentencePiece's word boundary
    if (vocab >= kFullLayoutVocab) {
        // LLaMA's ids for the tokens it shares with LLaMA's vocabulary: <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF>
        // 3..258 (<0x0A> is 13).
        add("<unk>", 0.0f, kUnknown);
        add("<s>", 0.0f, kControl);
        add("</s>", 0.0f, kControl);
        for (unsigned b = 0; b < 256; ++b) add(byte_token(b), 0.0f, kByte);
        add(boundary, -1.0f, kNormal);
    } else {
        // Below the full layout: "▁", then the bytes of the text node-llama-cpp tokenizes while loading.
        std::vector<bool> added(256, false);
        if (tokens.size() < vocab) add(boundary, -1.0f, kNormal);
        for (unsigned char ch : kLoadProbeBytes)
            if (tokens.size() < vocab) {
                add(byte_token(ch), 0.0f, kByte);
                added[ch] = true;
            }
        for (unsigned b = 0; b < 256 && tokens.size() < vocab; ++b)
            if (!added[b]) add(byte_token(b), 0.0f, kByte);
    }
    for (std::uint32_t i = 0; tokens.size() < vocab; ++i)
        add("\xE2\x96\x81t" + std::to_string(i), -2.0f - static_cast<float>(i), kNormal);

    Metadata md;
    md.set("tokenizer.ggml.model", Value::string("llama"));
    md.set("tokenizer.ggml.tokens", Value::array(ValueType::STRING, std::move(tokens)));
    md.set("tokenizer.ggml.scores", Value::array(ValueType::F32, std::move(scores)));
    md.set("tokenizer.ggml.token_type", Value::array(ValueType::I32, std::move(types)));
    if (vocab >= kFullLayoutVocab) {
        md.set("tokenizer.ggml.unknown_token_id", Value::u32(0));
        md.set("tokenizer.ggml.bos_token_id", Value::u32(1));
        md.set("tokenizer.ggml.eos_token_id", Value::u32(2));
    }
    md.set("tokenizer.ggml.add_bos_token", Value::boolean(false));
    md.set("tokenizer.ggml.add_eos_token", Value::boolean(false));
    return md;
}

bool has_tokenizer(const Metadata& md) { return md.find("tokenizer.ggml.model") != nullptr; }

Metadata tokenizer_keys(const Metadata& md, std::uint32_t vocab, const std::string& where) {
    Metadata out;
    for (const auto& e : md.entries())
        if (e.key.rfind("tokenizer.", 0) == 0) out.set(e.key, e.value);
    check_tokenizer(out, vocab, where);
    return out;
}

}  // namespace headfuse
