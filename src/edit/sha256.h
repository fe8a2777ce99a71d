// SHA-256 (FIPS 180-4), the hash of the digest a head scan records (headfuse/heads.h: tensors_digest). Internal:
// the tests check both of its paths against coreutils' sha256sum.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace headfuse {

// The SHA-256 of `bytes` in lowercase hex. `extensions`: with the x86 SHA extensions where the processor has
// them; false: the portable rounds.
std::string sha256_hex(std::span<const std::byte> bytes, bool extensions = true);

}  // namespace headfuse
