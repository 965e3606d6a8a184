#pragma once

// Message digests as hexadecimal text, for names made from data: an OpenSearch document id too
// long to send, a webhook event id of a snapshot row's key. Inline, so that it belongs to no
// library of its own: a component that includes it links OpenSSL::Crypto.

#include <openssl/evp.h>

#include <string>
#include <string_view>

#include "schemas/ascii.h"

namespace pgflow {

// SHA-256, fetched from OpenSSL's providers once. OpenSSL 3 looks a method named by
// EVP_sha256() up in its providers at every use, which costs more than the digest of a short
// value. Null when no provider offers SHA-256 (a broken OpenSSL configuration).
inline const EVP_MD* Sha256Method() {
  static EVP_MD* const method = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return method;
}

// The digest of `data` by `md` (Sha256Method(), EVP_md5(), ...): two lower-case hexadecimal
// digits a byte; empty when OpenSSL cannot compute it.
inline std::string HexDigest(const EVP_MD* md, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (md == nullptr || EVP_Digest(data.data(), data.size(), digest, &n, md, nullptr) != 1) {
    return {};
  }
  std::string out;
  out.reserve(2 * n);
  for (unsigned int i = 0; i < n; ++i) {
    out.push_back(kLowerHexDigits[digest[i] >> 4]);
    out.push_back(kLowerHexDigits[digest[i] & 15]);
  }
  return out;
}

// The SHA-256 digest of `data`: 64 lower-case hexadecimal digits.
inline std::string Sha256Hex(std::string_view data) { return HexDigest(Sha256Method(), data); }

}  // namespace pgflow
