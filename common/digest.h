#pragma once

// Message digests as hexadecimal text, for names made from data: an OpenSearch document id too
// long to send, a webhook event id of a snapshot row's key. Inline, so that it belongs to no
// library of its own: a component that includes it links OpenSSL::Crypto.

#include <openssl/evp.h>

#include <string>
#include <string_view>

#include "schemas/ascii.h"

namespace pgflow {

// The digest of `data` by `md` (EVP_sha256(), EVP_md5(), ...): two lower-case hexadecimal
// digits a byte.
inline std::string HexDigest(const EVP_MD* md, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), digest, &n, md, nullptr);
  std::string out;
  out.reserve(2 * n);
  for (unsigned int i = 0; i < n; ++i) {
    out.push_back(kLowerHexDigits[digest[i] >> 4]);
    out.push_back(kLowerHexDigits[digest[i] & 15]);
  }
  return out;
}

// The SHA-256 digest of `data`: 64 lower-case hexadecimal digits.
inline std::string Sha256Hex(std::string_view data) { return HexDigest(EVP_sha256(), data); }

}  // namespace pgflow
