#pragma once

// Message digests: as hexadecimal text, for names made from data (an OpenSearch document id too
// long to send, a webhook event id of a snapshot row's key), and HMAC-SHA256 (SCRAM, webhook
// signatures). Inline, so that it belongs to no library of its own: a component that includes
// it links OpenSSL::Crypto.

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <iterator>
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

// The digest of `data` by `md` (Sha256Method(), EVP_md5(), ...), its raw bytes; empty when
// OpenSSL cannot compute it.
inline std::string Digest(const EVP_MD* md, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (md == nullptr || EVP_Digest(data.data(), data.size(), digest, &n, md, nullptr) != 1) {
    return {};
  }
  return std::string(reinterpret_cast<const char*>(digest), n);
}

// The digest of `data` by `md`: two lower-case hexadecimal digits a byte; empty when OpenSSL
// cannot compute it.
inline std::string HexDigest(const EVP_MD* md, std::string_view data) {
  return LowerHex(Digest(md, data));
}

// The SHA-256 digest of `data`: 64 lower-case hexadecimal digits.
inline std::string Sha256Hex(std::string_view data) { return HexDigest(Sha256Method(), data); }

// HMAC-SHA256 (RFC 2104): H((K ^ opad) || H((K ^ ipad) || data)), run over Sha256Method(), as
// OpenSSL 3's HMAC() fetches the MAC and builds its parameters at every call. Two forms: a
// function for one MAC under a key (SCRAM, a webhook's signature) and HmacSha256Key for many
// values under one (the mask transform's `hash`). Both give the 32 raw bytes, or empty when
// OpenSSL fails (no SHA-256), which equals no expected value.
namespace hmac_internal {

inline constexpr size_t kBlock = 64;  // SHA-256's block size

// K: the key zero-padded to a block, or its digest when it is longer than one.
inline bool KeyBlock(std::string_view key, unsigned char (&block)[kBlock]) {
  std::fill(std::begin(block), std::end(block), 0);
  if (key.size() <= kBlock) {
    std::copy(key.begin(), key.end(), block);
    return true;
  }
  unsigned int n = 0;
  return EVP_Digest(key.data(), key.size(), block, &n, Sha256Method(), nullptr) == 1;
}

// Starts `ctx` on SHA-256 and feeds it K ^ `pad` (0x36: ipad, 0x5c: opad).
inline bool StartPadded(EVP_MD_CTX* ctx, const unsigned char (&block)[kBlock],
                        unsigned char pad) {
  unsigned char padded[kBlock];
  for (size_t i = 0; i < kBlock; ++i) padded[i] = block[i] ^ pad;
  const bool ok = EVP_DigestInit_ex(ctx, Sha256Method(), nullptr) == 1 &&
                  EVP_DigestUpdate(ctx, padded, kBlock) == 1;
  OPENSSL_cleanse(padded, sizeof padded);
  return ok;
}

// Ends the inner hash in `ctx` and returns H(outer || it), `outer` being a context that has
// fed K ^ opad (copied into `ctx` when not `ctx` itself), or empty on failure.
inline std::string Finish(EVP_MD_CTX* ctx, const EVP_MD_CTX* outer) {
  unsigned char inner[EVP_MAX_MD_SIZE];
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int inner_size = 0;
  unsigned int mac_size = 0;
  const bool ok = EVP_DigestFinal_ex(ctx, inner, &inner_size) == 1 &&
                  EVP_MD_CTX_copy_ex(ctx, outer) == 1 &&
                  EVP_DigestUpdate(ctx, inner, inner_size) == 1 &&
                  EVP_DigestFinal_ex(ctx, mac, &mac_size) == 1;
  OPENSSL_cleanse(inner, sizeof inner);
  if (!ok) return {};
  return std::string(reinterpret_cast<const char*>(mac), mac_size);
}

// Contexts for this thread, reset after each use.
struct ThreadContexts {
  EVP_MD_CTX* work = EVP_MD_CTX_new();
  EVP_MD_CTX* outer = EVP_MD_CTX_new();
  ~ThreadContexts() {
    EVP_MD_CTX_free(work);
    EVP_MD_CTX_free(outer);
  }
};

}  // namespace hmac_internal

// The HMAC-SHA256 under `key` of `parts` one after the other, which are not joined.
inline std::string HmacSha256(std::string_view key, std::initializer_list<std::string_view> parts) {
  using namespace hmac_internal;
  thread_local ThreadContexts contexts;
  if (Sha256Method() == nullptr || contexts.work == nullptr || contexts.outer == nullptr) {
    return {};
  }
  unsigned char block[kBlock];
  bool ok = KeyBlock(key, block) && StartPadded(contexts.outer, block, 0x5c) &&
            StartPadded(contexts.work, block, 0x36);
  OPENSSL_cleanse(block, sizeof block);
  for (std::string_view part : parts) {
    ok = ok && EVP_DigestUpdate(contexts.work, part.data(), part.size()) == 1;
  }
  std::string mac = ok ? Finish(contexts.work, contexts.outer) : std::string();
  // (What it hashed is not left in memory, as HMAC() leaves nothing.)
  EVP_MD_CTX_reset(contexts.work);
  EVP_MD_CTX_reset(contexts.outer);
  return mac;
}

// HMAC-SHA256 under one key, whose padded inner and outer states are hashed once: each value
// then costs SHA-256 over it and over the inner digest, nothing more. Thread-compatible.
class HmacSha256Key {
 public:
  explicit HmacSha256Key(std::string_view key) {
    using namespace hmac_internal;
    unsigned char block[kBlock];
    ready_ = inner_ != nullptr && outer_ != nullptr && work_ != nullptr &&
             Sha256Method() != nullptr && KeyBlock(key, block) &&
             StartPadded(inner_, block, 0x36) && StartPadded(outer_, block, 0x5c);
    OPENSSL_cleanse(block, sizeof block);
  }
  ~HmacSha256Key() {
    EVP_MD_CTX_free(inner_);
    EVP_MD_CTX_free(outer_);
    EVP_MD_CTX_free(work_);
  }
  HmacSha256Key(const HmacSha256Key&) = delete;
  HmacSha256Key& operator=(const HmacSha256Key&) = delete;

  // Whether OpenSSL took the key: when not, every MAC is empty.
  bool ok() const { return ready_; }

  // The MAC of `value`.
  std::string Mac(std::string_view value) {
    if (!ready_ || EVP_MD_CTX_copy_ex(work_, inner_) != 1 ||
        EVP_DigestUpdate(work_, value.data(), value.size()) != 1) {
      return {};
    }
    return hmac_internal::Finish(work_, outer_);
  }

 private:
  EVP_MD_CTX* inner_ = EVP_MD_CTX_new();  // having fed K ^ ipad
  EVP_MD_CTX* outer_ = EVP_MD_CTX_new();  // having fed K ^ opad
  EVP_MD_CTX* work_ = EVP_MD_CTX_new();
  bool ready_ = false;
};

}  // namespace pgflow
