#pragma once

// Message digests: as hexadecimal text, for names made from data (an OpenSearch document id too
// long to send, a webhook event id of a snapshot row's key), and HMAC-SHA256 (SCRAM, webhook
// signatures). Inline, so that it belongs to no library of its own: a component that includes
// it links OpenSSL::Crypto.

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <initializer_list>
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

// A digest context for this thread, reset after each use.
inline EVP_MD_CTX* ThreadDigestContext() {
  struct Owned {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~Owned() { EVP_MD_CTX_free(ctx); }
  };
  thread_local Owned owned;
  return owned.ctx;
}

// HMAC-SHA256 (RFC 2104) under `key` of `parts` one after the other, which are not joined:
// H((K ^ opad) || H((K ^ ipad) || parts...)). It runs over Sha256Method(), as OpenSSL 3's
// HMAC() fetches the MAC and builds its parameters at every call. The 32 raw bytes; empty
// when OpenSSL fails (no SHA-256), which equals no expected value.
inline std::string HmacSha256(std::string_view key, std::initializer_list<std::string_view> parts) {
  constexpr size_t kBlock = 64;  // SHA-256's block size
  const EVP_MD* method = Sha256Method();
  EVP_MD_CTX* ctx = ThreadDigestContext();
  if (method == nullptr || ctx == nullptr) return {};
  unsigned char block[kBlock] = {};
  if (key.size() > kBlock) {
    unsigned int n = 0;
    if (EVP_Digest(key.data(), key.size(), block, &n, method, nullptr) != 1) return {};
  } else {
    std::copy(key.begin(), key.end(), block);
  }
  unsigned char pad[kBlock];
  unsigned char inner[EVP_MAX_MD_SIZE];
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int inner_size = 0;
  unsigned int mac_size = 0;
  for (size_t i = 0; i < kBlock; ++i) pad[i] = block[i] ^ 0x36;
  bool ok = EVP_DigestInit_ex(ctx, method, nullptr) == 1 &&
            EVP_DigestUpdate(ctx, pad, sizeof pad) == 1;
  for (std::string_view part : parts) {
    ok = ok && EVP_DigestUpdate(ctx, part.data(), part.size()) == 1;
  }
  ok = ok && EVP_DigestFinal_ex(ctx, inner, &inner_size) == 1;
  for (size_t i = 0; i < kBlock; ++i) pad[i] = block[i] ^ 0x5c;
  ok = ok && EVP_DigestInit_ex(ctx, method, nullptr) == 1 &&
       EVP_DigestUpdate(ctx, pad, sizeof pad) == 1 &&
       EVP_DigestUpdate(ctx, inner, inner_size) == 1 &&
       EVP_DigestFinal_ex(ctx, mac, &mac_size) == 1;
  EVP_MD_CTX_reset(ctx);  // (what it hashed is not left in memory, as HMAC() leaves nothing)
  OPENSSL_cleanse(block, sizeof block);
  OPENSSL_cleanse(pad, sizeof pad);
  OPENSSL_cleanse(inner, sizeof inner);
  if (!ok) return {};
  return std::string(reinterpret_cast<const char*>(mac), mac_size);
}

// The SHA-256 digest of `data`: 64 lower-case hexadecimal digits.
inline std::string Sha256Hex(std::string_view data) { return HexDigest(Sha256Method(), data); }

}  // namespace pgflow
