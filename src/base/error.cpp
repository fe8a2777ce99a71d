#include "base/fail.h"

#include <string>

namespace headfuse {

std::string_view error_kind_name(ErrorKind kind) noexcept {
    switch (kind) {
        case ErrorKind::InvalidInput: return "invalid input";
        case ErrorKind::Io: return "I/O";
        case ErrorKind::InvalidArgument: return "invalid argument";
        case ErrorKind::Unsupported: return "unsupported";
    }
    return "unknown";
}

void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

void fail(const std::string& message) { throw Error(ErrorKind::InvalidInput, message); }

}  // namespace headfuse
