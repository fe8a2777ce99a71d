// Throwing headfuse::Error from the library: out of line, so that call sites stay small.
#pragma once

#include <string>

#include "headfuse/error.h"

namespace headfuse {

// Throws Error(kind, message).
[[noreturn]] void fail(ErrorKind kind, const std::string& message);
// Throws Error(ErrorKind::InvalidInput, message): the common case, a file that is not what it should be.
[[noreturn]] void fail(const std::string& message);

}  // namespace headfuse
