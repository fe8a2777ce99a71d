// SHA-256, the hash of the digest a head scan records (headfuse/heads.h: tensors_digest), computed by OpenSSL's
// libcrypto (EVP_sha256, which takes the x86 SHA extensions where the processor has them). Internal: libcrypto is
// linked privately, and this header does not include its headers.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace headfuse {

// SHA-256 fed in pieces: the digest of the concatenation of every update. Throws Error (ErrorKind::Unsupported)
// when libcrypto cannot compute it (a configuration that offers no SHA-256, or a failed allocation), naming the
// call that failed and libcrypto's reason.
class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;

    void update(std::span<const std::byte> bytes);
    // The digest in lowercase hex; ends the hash (call once, and update no more).
    std::string hex();

private:
    struct Free {
        void operator()(evp_md_ctx_st* ctx) const noexcept;
    };
    std::unique_ptr<evp_md_ctx_st, Free> ctx_;
    bool done_ = false;
};

// The SHA-256 of `bytes` in lowercase hex.
std::string sha256_hex(std::span<const std::byte> bytes);

}  // namespace headfuse
