// The shortest decimal that reads back as an f32, for messages and for the configs headfuse writes.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <string>

namespace headfuse {

// The shortest decimal that reads back as x, so one ulp shows: "500000", "1e-05", "1.0000001e-05" (plain digits
// for exponents -4 to 15, as Python's repr).
inline std::string shortest_float(float x) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf - 1, x, std::chars_format::scientific);
    *r.ptr = '\0';  // atoi reads up to a terminator
    const int exponent = std::atoi(std::find(buf, r.ptr, 'e') + 1);
    if (exponent >= -4 && exponent < 16) r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::fixed);
    return std::string(buf, r.ptr);
}

}  // namespace headfuse
