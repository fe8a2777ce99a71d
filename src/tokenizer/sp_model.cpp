// A bounded reader of protobuf's wire format, for the few fields of a SentencePiece ModelProto that headfuse
// needs (sp_model.h lists them). Lengths are compared with the bytes left before anything is read or allocated.
#include "tokenizer/sp_model.h"

#include <cstring>

#include "base/fail.h"
#include "headfuse/error.h"

namespace headfuse {
namespace {

enum Wire : std::uint32_t { kVarint = 0, kFixed64 = 1, kLength = 2, kFixed32 = 5 };

const char* wire_name(std::uint32_t w) {
    switch (w) {
        case kVarint: return "varint";
        case kFixed64: return "fixed64";
        case kLength: return "length-delimited";
        case kFixed32: return "fixed32";
        case 3:
        case 4: return "group";
        default: return "invalid";
    }
}

// One message: the bytes [pos, end) of the file, `name` saying which message it is.
struct Reader {
    std::span<const std::byte> file;
    std::size_t pos, end;
    const std::string& where;
    const char* name;

    [[noreturn]] void bad(std::size_t at, const std::string& what) const {
        fail(where + ": byte " + std::to_string(at) + ": " + name + ": " + what);
    }

    bool done() const { return pos >= end; }

    std::uint64_t varint(const char* what) {
        const std::size_t start = pos;
        std::uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos >= end) bad(start, std::string(what) + ": varint runs past the end of the message");
            const auto b = static_cast<std::uint8_t>(file[pos++]);
            v |= std::uint64_t{b & 0x7Fu} << shift;
            if (!(b & 0x80)) return v;
        }
        bad(start, std::string(what) + ": varint longer than 10 bytes");
    }

    // The next field's number and wire type; field numbers start at 1.
    std::pair<std::uint32_t, std::uint32_t> tag() {
        const std::size_t at = pos;
        const std::uint64_t t = varint("field tag");
        const std::uint64_t field = t >> 3;
        if (field == 0 || field > 0x1FFFFFFF) bad(at, "field number " + std::to_string(field) + " is invalid");
        return {static_cast<std::uint32_t>(field), static_cast<std::uint32_t>(t & 7)};
    }

    void expect(std::size_t at, std::uint32_t field, const char* field_name, std::uint32_t wire,
                std::uint32_t wanted) const {
        if (wire != wanted)
            bad(at, "field " + std::to_string(field) + " (" + field_name + ") has wire type " + std::to_string(wire) +
                        " (" + wire_name(wire) + "), expected " + std::to_string(wanted) + " (" + wire_name(wanted) +
                        ")");
    }

    // The [begin, end) of a length-delimited value, checked against the message's end.
    std::pair<std::size_t, std::size_t> span_of(const char* what) {
        const std::size_t at = pos;
        const std::uint64_t n = varint(what);
        if (n > end - pos)
            bad(at, std::string(what) + ": length " + std::to_string(n) + " runs past the end of the message (" +
                        std::to_string(end - pos) + " bytes left)");
        const std::size_t begin = pos;
        pos += static_cast<std::size_t>(n);
        return {begin, pos};
    }

    std::string string(const char* what) {
        const auto [b, e] = span_of(what);
        return {reinterpret_cast<const char*>(file.data()) + b, e - b};
    }

    std::uint32_t fixed32(const char* what) {
        if (end - pos < 4) bad(pos, std::string(what) + ": 4 bytes needed, " + std::to_string(end - pos) + " left");
        std::uint32_t v = 0;
        for (int i = 0; i < 4; ++i) v |= std::uint32_t{static_cast<std::uint8_t>(file[pos + i])} << (8 * i);
        pos += 4;
        return v;
    }

    void skip(std::size_t at, std::uint32_t field, std::uint32_t wire) {
        switch (wire) {
            case kVarint: varint("skipped field"); return;
            case kLength: span_of("skipped field"); return;
            case kFixed64:
            case kFixed32: {
                const std::size_t n = wire == kFixed64 ? 8 : 4;
                if (end - pos < n) bad(at, "field " + std::to_string(field) + " runs past the end of the message");
                pos += n;
                return;
            }
            default:
                bad(at, "field " + std::to_string(field) + " has wire type " + std::to_string(wire) + " (" +
                            wire_name(wire) + "), which a SentencePiece model does not use");
        }
    }

    Reader sub(const char* what, const char* sub_name) {
        const auto [b, e] = span_of(what);
        return Reader{file, b, e, where, sub_name};
    }
};

float as_float(std::uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

SpModel::Piece read_piece(Reader r) {
    SpModel::Piece p;
    while (!r.done()) {
        const std::size_t at = r.pos;
        const std::pair<std::uint32_t, std::uint32_t> t = r.tag();
        const std::uint32_t field = t.first, wire = t.second;
        if (field == 1) {
            r.expect(at, field, "piece", wire, kLength);
            p.text = r.string("piece");
        } else if (field == 2) {
            r.expect(at, field, "score", wire, kFixed32);
            p.score = as_float(r.fixed32("score"));
        } else if (field == 3) {
            r.expect(at, field, "type", wire, kVarint);
            p.type = static_cast<std::int32_t>(r.varint("type"));
        } else {
            r.skip(at, field, wire);
        }
    }
    return p;
}

void read_trainer_spec(Reader r, SpModel& m) {
    while (!r.done()) {
        const std::size_t at = r.pos;
        // Not a structured binding: clang 14's lambdas cannot capture one.
        const std::pair<std::uint32_t, std::uint32_t> t = r.tag();
        const std::uint32_t field = t.first, wire = t.second;
        auto int_field = [&](const char* name, std::int32_t& into) {
            r.expect(at, field, name, wire, kVarint);
            into = static_cast<std::int32_t>(r.varint(name));  // int32: the low 32 bits, as protobuf reads them
        };
        auto bool_field = [&](const char* name, bool& into) {
            r.expect(at, field, name, wire, kVarint);
            into = r.varint(name) != 0;
        };
        switch (field) {
            case 3: int_field("model_type", m.model_type); break;
            case 24: bool_field("treat_whitespace_as_suffix", m.treat_whitespace_as_suffix); break;
            case 35: bool_field("byte_fallback", m.byte_fallback); break;
            case 40: int_field("unk_id", m.unk_id); break;
            case 41: int_field("bos_id", m.bos_id); break;
            case 42: int_field("eos_id", m.eos_id); break;
            case 43: int_field("pad_id", m.pad_id); break;
            default: r.skip(at, field, wire);
        }
    }
}

void read_normalizer_spec(Reader r, SpModel& m) {
    while (!r.done()) {
        const std::size_t at = r.pos;
        // Not a structured binding: clang 14's lambdas cannot capture one.
        const std::pair<std::uint32_t, std::uint32_t> t = r.tag();
        const std::uint32_t field = t.first, wire = t.second;
        auto bool_field = [&](const char* name, bool& into) {
            r.expect(at, field, name, wire, kVarint);
            into = r.varint(name) != 0;
        };
        switch (field) {
            case 1:
                r.expect(at, field, "name", wire, kLength);
                m.normalizer = r.string("name");
                break;
            case 2: {
                r.expect(at, field, "precompiled_charsmap", wire, kLength);
                const auto [b, e] = r.span_of("precompiled_charsmap");
                m.charsmap_bytes = e - b;
                break;
            }
            case 3: bool_field("add_dummy_prefix", m.add_dummy_prefix); break;
            case 4: bool_field("remove_extra_whitespaces", m.remove_extra_whitespaces); break;
            case 5: bool_field("escape_whitespaces", m.escape_whitespaces); break;
            default: r.skip(at, field, wire);
        }
    }
}

}  // namespace

SpModel parse_sp_model(std::span<const std::byte> bytes, const std::string& where) {
    SpModel m;
    Reader r{bytes, 0, bytes.size(), where, "ModelProto"};
    while (!r.done()) {
        const std::size_t at = r.pos;
        const std::pair<std::uint32_t, std::uint32_t> t = r.tag();
        const std::uint32_t field = t.first, wire = t.second;
        if (field == 1) {
            r.expect(at, field, "pieces", wire, kLength);
            m.pieces.push_back(read_piece(r.sub("pieces", "SentencePiece")));
        } else if (field == 2) {
            r.expect(at, field, "trainer_spec", wire, kLength);
            read_trainer_spec(r.sub("trainer_spec", "TrainerSpec"), m);
        } else if (field == 3) {
            r.expect(at, field, "normalizer_spec", wire, kLength);
            read_normalizer_spec(r.sub("normalizer_spec", "NormalizerSpec"), m);
        } else {
            r.skip(at, field, wire);
        }
    }
    if (m.pieces.empty()) fail(where + ": no pieces (not a SentencePiece model)");
    return m;
}

}  // namespace headfuse
