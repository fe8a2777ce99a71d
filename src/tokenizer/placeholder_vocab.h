// The tokenizer written into a fused file: a default one that llama.cpp and node-llama-cpp load at any
// vocabulary size, or a real one carried over from another GGUF file.
#pragma once

#include <cstdint>
#include <string>

#include "headfuse/gguf.h"

namespace headfuse {

// A SentencePiece ("llama") vocabulary of exactly `vocab` unique tokens. From 262 tokens on it has the
// LLaMA layout (<unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, "▁", fillers); below that, "▁", the
// byte tokens of the text node-llama-cpp tokenizes on load, the other byte tokens as fit, then fillers.
// node-llama-cpp loads it from kMinLoadableVocab tokens on; libllama at any size.
Metadata default_tokenizer(std::uint32_t vocab);
inline constexpr std::uint32_t kMinLoadableVocab = 10;

// The tokenizer.* keys of `md`, checked by check_tokenizer (Error naming `where`) for `vocab` tokens.
Metadata tokenizer_keys(const Metadata& md, std::uint32_t vocab, const std::string& where);

// True when md has a tokenizer (tokenizer.ggml.model).
bool has_tokenizer(const Metadata& md);

}  // namespace headfuse
