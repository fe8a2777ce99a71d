// headfuse: checked arithmetic for every size and offset computed from file data or user input (internal).
#pragma once

#include <cstdint>
#include <string_view>

#include "headfuse/error.h"

namespace headfuse {

// a * b, or Error("<what>: size overflows 64 bits").
std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, std::string_view what);
// a + b, or Error("<what>: size overflows 64 bits").
std::uint64_t checked_add(std::uint64_t a, std::uint64_t b, std::string_view what);
// The next multiple of `alignment` (a power of two) at or above `x`, checked.
std::uint64_t checked_align(std::uint64_t x, std::uint64_t alignment, std::string_view what);

}  // namespace headfuse
