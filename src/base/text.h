// Strings for messages and for what the CLI prints. Strings read from files, made safe to show: a GGUF string is
// any bytes (control characters, terminal escapes, NUL, invalid UTF-8), and the CLI prints them to a terminal or
// into JSON. Sizes and shapes as messages spell them. Internal to headfuse (the library and its command line).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace headfuse {

// True if `s` is well-formed UTF-8 (Unicode table 3-7: no overlong forms, surrogates or code points past U+10FFFF).
bool valid_utf8(std::string_view s);

// `s` with each ill-formed part replaced by U+FFFD, one per maximal subpart (Unicode 3.9, as Python's and the
// WHATWG decoders do); well-formed text is returned unchanged.
std::string utf8_replaced(std::string_view s);

// `s` as text safe for a terminal, one line: a backslash is "\\", control bytes (newline and tab included, DEL)
// and bytes that are not UTF-8 are "\xNN", and the invisible control code points
// (C1 controls, bidirectional overrides and isolates, line and paragraph separators) are "\u{XXXX}". With `quote`,
// '"' is '\"' as well; without `backslash`, a backslash is left as it is (error messages, whose own text quotes
// strings that hold them). Everything else, UTF-8 text included, is kept.
std::string printable(std::string_view s, bool quote = false, bool backslash = true);

// The bytes of `s` in lowercase hexadecimal, two digits each.
std::string hex_bytes(std::string_view s);

// A shape for messages: "[2048, 32000]".
std::string format_shape(std::span<const std::uint64_t> ne);

// "1.43 GB" (decimal units, as disks are sold)
std::string human_bytes(double bytes);

}  // namespace headfuse
