#include "base/checked.h"

#include <string>

#include "base/fail.h"

namespace headfuse {

std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, std::string_view what) {
    std::uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) fail(std::string(what) + ": size overflows 64 bits");
    return r;
}

std::uint64_t checked_add(std::uint64_t a, std::uint64_t b, std::string_view what) {
    std::uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) fail(std::string(what) + ": size overflows 64 bits");
    return r;
}

std::uint64_t checked_align(std::uint64_t x, std::uint64_t alignment, std::string_view what) {
    return checked_add(x, (alignment - x % alignment) % alignment, what);
}

}  // namespace headfuse
