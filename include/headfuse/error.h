// headfuse: errors.
//
// Two tiers. A bad file, a bad argument or a failing system call is expected input: the library throws
// headfuse::Error with a one-line message that names the file, tensor or key, what was expected and what was
// found. The CLI catches it at its edge, prints it and exits 1. A caller bug (a broken invariant) asserts.
#pragma once

#include <stdexcept>
#include <string>

namespace headfuse {

// What every library function throws on bad input or a failed system call; what() is the one-line message.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Throws Error(message). Out of line so that call sites stay small.
[[noreturn]] void fail(const std::string& message);

}  // namespace headfuse
