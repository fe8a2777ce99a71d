#include "base/text.h"

#include <cstdint>
#include <cstdio>

namespace headfuse {
namespace {

// The well-formed UTF-8 sequence at s[i]: its length (1-4) and code point; or length 0 and in `bad` the length of
// the maximal subpart of the ill-formed sequence there (the lead byte and the continuation bytes that were still
// allowed), at least 1.
struct Decoded {
    std::size_t length = 0, bad = 0;
    std::uint32_t cp = 0;
};

Decoded decode(std::string_view s, std::size_t i) {
    const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
    const unsigned char c = b(0);
    if (c < 0x80) return {1, 0, c};
    std::size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range (table 3-7)
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return {0, 1, 0};
    std::uint32_t cp = c & (0x7F >> n);
    for (std::size_t k = 1; k < n; ++k) {
        const bool ok = i + k < s.size() && (k == 1 ? b(k) >= lo && b(k) <= hi : (b(k) & 0xC0) == 0x80);
        if (!ok) return {0, k, 0};
        cp = cp << 6 | (b(k) & 0x3F);
    }
    return {n, 0, cp};
}

// Code points that move or hide text on a terminal without being C0 controls.
bool invisible_control(std::uint32_t cp) {
    return (cp >= 0x80 && cp <= 0x9F) || cp == 0x200E || cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) ||
           (cp >= 0x2066 && cp <= 0x2069) || cp == 0x2028 || cp == 0x2029;
}

void append_hex_byte(std::string& out, unsigned char c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
}

}  // namespace

bool valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        const Decoded d = decode(s, i);
        if (d.length == 0) return false;
        i += d.length;
    }
    return true;
}

std::string utf8_replaced(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const Decoded d = decode(s, i);
        if (d.length == 0) {
            out += "\xEF\xBF\xBD";  // U+FFFD
            i += d.bad;
        } else {
            out.append(s.substr(i, d.length));
            i += d.length;
        }
    }
    return out;
}

std::string printable(std::string_view s, bool quote, bool backslash) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const Decoded d = decode(s, i);
        if (d.length == 0) {
            for (std::size_t k = 0; k < d.bad; ++k) append_hex_byte(out, static_cast<unsigned char>(s[i + k]));
            i += d.bad;
            continue;
        }
        const std::uint32_t cp = d.cp;
        if (cp == '\\' && backslash)
            out += "\\\\";
        else if (cp == '"' && quote)
            out += "\\\"";
        else if (cp < 0x20 || cp == 0x7F)
            append_hex_byte(out, static_cast<unsigned char>(cp));
        else if (invisible_control(cp)) {
            char buf[16];
            std::snprintf(buf, sizeof buf, "\\u{%04x}", static_cast<unsigned>(cp));
            out += buf;
        } else
            out.append(s.substr(i, d.length));
        i += d.length;
    }
    return out;
}

std::string hex_bytes(std::string_view s) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * s.size());
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

std::string human_bytes(double bytes) {
    static const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    int u = 0;
    while (bytes >= 1000 && u < 5) {
        bytes /= 1000;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

std::string format_shape(std::span<const std::uint64_t> ne) {
    std::string s = "[";
    for (std::size_t i = 0; i < ne.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(ne[i]);
    }
    return s + "]";
}

}  // namespace headfuse
