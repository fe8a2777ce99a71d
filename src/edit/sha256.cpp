// SHA-256 by OpenSSL's libcrypto; its failures become headfuse::Error.
#include "edit/sha256.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <array>
#include <cassert>

#include "base/fail.h"
#include "headfuse/error.h"

namespace headfuse {
namespace {

// libcrypto's reasons for the failure (its error queue, oldest first, which it then forgets), on one line.
std::string crypto_reasons() {
    std::string out;
    const char* data = nullptr;
    int flags = 0;
    while (const unsigned long e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
        std::array<char, 256> s{};
        ERR_error_string_n(e, s.data(), s.size());
        if (!out.empty()) out += "; ";
        out += s.data();
        if (data != nullptr && (flags & ERR_TXT_STRING) != 0 && *data != '\0') out += std::string(" (") + data + ")";
    }
    return out.empty() ? "no reason given" : out;
}

[[noreturn]] void crypto_failed(const char* call) {
    fail(ErrorKind::Unsupported,
         std::string("SHA-256 of the tensors: expected OpenSSL's libcrypto to compute it, but ") + call +
             " failed: " + crypto_reasons());
}

}  // namespace

void Sha256::Free::operator()(evp_md_ctx_st* ctx) const noexcept { EVP_MD_CTX_free(ctx); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_) crypto_failed("EVP_MD_CTX_new");
    if (EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) crypto_failed("EVP_DigestInit_ex(EVP_sha256())");
}

Sha256::~Sha256() = default;

void Sha256::update(std::span<const std::byte> bytes) {
    assert(!done_);
    if (!bytes.empty() && EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()) != 1)
        crypto_failed("EVP_DigestUpdate");
}

std::string Sha256::hex() {
    assert(!done_);
    done_ = true;
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), md.data(), &n) != 1 || n != 32) crypto_failed("EVP_DigestFinal_ex");
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * n);
    for (unsigned int i = 0; i < n; ++i) out += {kHex[md[i] >> 4], kHex[md[i] & 15]};
    return out;
}

std::string sha256_hex(std::span<const std::byte> bytes) {
    Sha256 sha;
    sha.update(bytes);
    return sha.hex();
}

}  // namespace headfuse
