// A SentencePiece model file (tokenizer.model): a ModelProto in protobuf's wire format, of which headfuse reads
// only the fields that decide how text is tokenized. Every length and offset is checked against the bytes that
// remain before it is used; a malformed file is an Error of one line naming the file, the field and the byte.
//
//   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
//   SentencePiece   1 piece (string), 2 score (float), 3 type (enum: NORMAL 1, UNKNOWN 2, CONTROL 3,
//                   USER_DEFINED 4, UNUSED 5, BYTE 6: llama.cpp's token types, number for number)
//   TrainerSpec     3 model_type (UNIGRAM 1, BPE 2, WORD 3, CHAR 4), 24 treat_whitespace_as_suffix,
//                   35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id
//   NormalizerSpec  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces,
//                   5 escape_whitespaces
// Other fields are skipped by their wire type. Defaults are the .proto's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "headfuse/gguf.h"

namespace headfuse {

struct SpModel {
    struct Piece {
        std::string text;
        float score = 0.0f;
        std::int32_t type = 1;
    };
    std::vector<Piece> pieces;
    // trainer_spec
    std::int32_t model_type = 1;
    bool byte_fallback = false, treat_whitespace_as_suffix = false;
    std::int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
    // normalizer_spec
    std::string normalizer;            // its name ("identity", "nmt_nfkc", ...)
    std::uint64_t charsmap_bytes = 0;  // the size of its precompiled_charsmap: 0 when it changes no text
    bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
};

inline constexpr std::int32_t kSpBpe = 2;

// The model in `bytes`; `where` (the file) names errors.
SpModel parse_sp_model(std::span<const std::byte> bytes, const std::string& where);

// The tokenizer.* keys of a SentencePiece model alone (no configuration files), checked by check_tokenizer
// (hf_tokenizer.cpp; read_hf_tokenizer adds what the configuration says). For the fuzzer.
Metadata sp_model_keys(std::span<const std::byte> bytes, const std::string& where);

}  // namespace headfuse
