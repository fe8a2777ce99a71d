// Token attributes llama.cpp's vocabulary loader sets by the model's name rather than from the file
// (llama_vocab::impl::load in src/llama-vocab.cpp).
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace headfuse {

// llama.cpp never reads Hugging Face's lstrip/rstrip flags from a file. For Phi-3 it sets rstrip itself (the
// whitespace after the token is dropped when special tokens are parsed) when general.name, lowercased, contains
// "phi-3" or "phi3": on every control, user-defined and unknown token and on "</s>", but not on "<unk>", "<s>" or
// "<|endoftext|>", exactly the flags of Phi-3's tokenizer.json. A converted tokenizer whose rstrip flags are those
// asks for `name` as general.name (Tokenizer::general_name).
struct NamedStripRule {
    std::string_view name;        // the general.name fuse writes when the model has none
    std::string_view matches[2];  // what general.name must contain, lowercased
    std::string_view also[1];     // tokens that strip whatever their type
    std::string_view except[3];   // tokens that never strip
};
inline constexpr NamedStripRule kNamedStrip{"Phi-3", {"phi-3", "phi3"}, {"</s>"}, {"<unk>", "<s>", "<|endoftext|>"}};

// True when llama.cpp applies kNamedStrip to a model of this general.name.
inline bool named_strip_applies(std::string_view general_name) {
    std::string lower(general_name);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return std::any_of(std::begin(kNamedStrip.matches), std::end(kNamedStrip.matches),
                       [&](std::string_view m) { return lower.find(m) != std::string::npos; });
}

}  // namespace headfuse
