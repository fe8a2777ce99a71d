// headfuse: errors.
//
// Two tiers. A bad file, a bad argument or a failing system call is expected input: the library throws
// headfuse::Error with a one-line message that names the file, tensor or key, what was expected and what was
// found, and a kind that callers can branch on. The CLI catches it at its edge, prints it and exits 1. A caller
// bug (a broken invariant) asserts.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace headfuse {

// What went wrong, for callers that act on it (retry, ask the user again, fall back to another path).
enum class ErrorKind : std::uint8_t {
    // A file's contents are not what it claims or what headfuse reads: malformed, truncated, inconsistent
    // (a GGUF header, a safetensors index, a tokenizer.json, a tensor of the wrong shape, a non-finite weight).
    InvalidInput,
    // A system call failed: open, stat, map, read, write, rename, fsync, no space left, permissions.
    Io,
    // What the caller asked for is wrong whatever the files hold: an option out of range, a head that the model
    // does not have, an output path that is a folder or is the input, a config that does not validate.
    InvalidArgument,
    // Well-formed, but a feature headfuse does not handle (or that llama.cpp would read differently): a weight
    // type it does not encode, an architecture or RoPE scaling it does not model, a tokenizer llama.cpp cannot
    // reproduce, a tensor an export format has no place for.
    Unsupported,
};

// "invalid input", "I/O", "invalid argument" or "unsupported".
std::string_view error_kind_name(ErrorKind kind) noexcept;

// What every library function throws on bad input or a failed system call; what() is the one-line message.
class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
    // An InvalidInput error.
    explicit Error(const std::string& message) : Error(ErrorKind::InvalidInput, message) {}

    ErrorKind kind() const noexcept { return kind_; }

private:
    ErrorKind kind_;
};

}  // namespace headfuse
