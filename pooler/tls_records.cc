// pgflow's own TLS 1.3 record layer for clients after their handshake (pooler/tls_records.h).

#include "pooler/tls_records.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

namespace pgflow::pooler {
namespace {

// Content types (RFC 8446, 5.1) and the one handshake message after the handshake.
constexpr uint8_t kAlert = 21;
constexpr uint8_t kHandshake = 22;
constexpr uint8_t kApplicationData = 23;
constexpr uint8_t kKeyUpdate = 24;

constexpr size_t kHeader = 5;
constexpr size_t kTag = 16;
constexpr size_t kMaxPlain = 16384;
constexpr size_t kMaxSealed = kMaxPlain + 256;  // a record's length at most (5.2)
constexpr int kMaxRecordsWithoutData = 32;
// Alert descriptions (6) sent after a refused record.
constexpr uint8_t kUnexpectedMessage = 10;
constexpr uint8_t kBadRecordMac = 20;
constexpr uint8_t kRecordOverflow = 22;
constexpr uint8_t kIllegalParameter = 47;
constexpr uint8_t kDecodeError = 50;

std::atomic<int> tls_clients{0};
std::atomic<uint64_t> next_key_id{1};

// A connection's traffic secrets as the key log gave them, till Take takes them.
struct Secrets {
  uint8_t client[48];
  uint8_t server[48];
  size_t client_length = 0;
  size_t server_length = 0;
};

void FreeSecrets(void*, void* secrets, CRYPTO_EX_DATA*, int, long, void*) {  // NOLINT
  if (secrets == nullptr) return;
  OPENSSL_cleanse(secrets, sizeof(Secrets));
  delete static_cast<Secrets*>(secrets);
}

int SecretsIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeSecrets);
  return index;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// OpenSSL's key log (NSS's format): "<LABEL> <client random> <secret>", in hex.
void KeepSecret(const SSL* ssl, const char* line) {
  const std::string_view text(line);
  const bool client = text.starts_with("CLIENT_TRAFFIC_SECRET_0 ");
  if (!client && !text.starts_with("SERVER_TRAFFIC_SECRET_0 ")) return;
  const std::string_view hex = text.substr(text.rfind(' ') + 1);
  if (hex.size() % 2 != 0 || hex.size() > 2 * sizeof(Secrets::client)) return;
  auto* secrets = static_cast<Secrets*>(SSL_get_ex_data(ssl, SecretsIndex()));
  if (secrets == nullptr) {
    secrets = new Secrets;
    if (SSL_set_ex_data(const_cast<SSL*>(ssl), SecretsIndex(), secrets) != 1) {
      delete secrets;
      return;
    }
  }
  uint8_t* into = client ? secrets->client : secrets->server;
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int high = HexDigit(hex[i]);
    const int low = HexDigit(hex[i + 1]);
    if (high < 0 || low < 0) return;
    into[i / 2] = static_cast<uint8_t>(high << 4 | low);
  }
  (client ? secrets->client_length : secrets->server_length) = hex.size() / 2;
}

// HKDF-Expand-Label(secret, label, "", length) (7.1), for a length of at most the hash's.
void ExpandLabel(const EVP_MD* md, const uint8_t* secret, size_t secret_length,
                 std::string_view label, uint8_t* out, size_t length) {
  uint8_t info[2 + 1 + 6 + 32 + 1 + 1];
  size_t n = 0;
  info[n++] = static_cast<uint8_t>(length >> 8);
  info[n++] = static_cast<uint8_t>(length);
  info[n++] = static_cast<uint8_t>(6 + label.size());
  std::memcpy(info + n, "tls13 ", 6);
  std::memcpy(info + n + 6, label.data(), label.size());
  n += 6 + label.size();
  info[n++] = 0;  // the context: empty
  info[n++] = 1;  // HKDF-Expand's first block (T(1)), which is all of it
  uint8_t block[EVP_MAX_MD_SIZE];
  unsigned int block_length = 0;
  HMAC(md, secret, static_cast<int>(secret_length), info, n, block, &block_length);
  std::memcpy(out, block, length);
  OPENSSL_cleanse(block, sizeof block);
}

// The per-record nonce (5.3): the iv with the sequence number XORed into its last 8 bytes.
void Nonce(const uint8_t iv[12], uint64_t seq, uint8_t nonce[12]) {
  std::memcpy(nonce, iv, 12);
  for (int i = 0; i < 8; ++i) nonce[11 - i] ^= static_cast<uint8_t>(seq >> (8 * i));
}

// One thread's cipher contexts, one to seal and one to open, and the key each was last given:
// a record under the same key sets its nonce alone.
struct CipherContexts {
  EVP_CIPHER_CTX* seal = EVP_CIPHER_CTX_new();
  EVP_CIPHER_CTX* open = EVP_CIPHER_CTX_new();
  uint64_t seal_key = 0;
  uint64_t open_key = 0;
  CipherContexts() = default;
  CipherContexts(const CipherContexts&) = delete;
  CipherContexts& operator=(const CipherContexts&) = delete;
  ~CipherContexts() {
    EVP_CIPHER_CTX_free(seal);
    EVP_CIPHER_CTX_free(open);
  }
};

CipherContexts& Contexts() {
  thread_local CipherContexts contexts;
  return contexts;
}

// What a thread seals one Write into before the socket takes it.
std::string& SealScratch() {
  thread_local std::string sealed;
  return sealed;
}

}  // namespace

TlsChannel::~TlsChannel() {
  if (counted_) tls_clients.fetch_sub(1, std::memory_order_relaxed);
}

void TlsChannel::CountAsClient() {
  if (!std::exchange(counted_, true)) tls_clients.fetch_add(1, std::memory_order_relaxed);
}

int TlsClientsOpen() { return tls_clients.load(std::memory_order_relaxed); }

void Tls13Records::CatchSecrets(SSL_CTX* ctx) {
  SecretsIndex();  // (made before any handshake, on the thread that makes the context)
  SSL_CTX_set_keylog_callback(ctx, KeepSecret);
}

std::unique_ptr<Tls13Records> Tls13Records::Take(SSL* ssl) {
  if (SSL_version(ssl) != TLS1_3_VERSION) return nullptr;
  Suite suite;
  switch (SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(ssl))) {
    case 0x1301: suite = Suite::kAes128Gcm; break;
    case 0x1302: suite = Suite::kAes256Gcm; break;
    case 0x1303: suite = Suite::kChaCha20Poly1305; break;
    default: return nullptr;
  }
  // (OpenSSL reads a record at a time: nothing of the client's past its Finished is in it.)
  if (SSL_has_pending(ssl) != 0) return nullptr;
  auto* secrets = static_cast<Secrets*>(SSL_get_ex_data(ssl, SecretsIndex()));
  if (secrets == nullptr) return nullptr;
  std::unique_ptr<Tls13Records> records;
  const size_t hash = suite == Suite::kAes256Gcm ? 48 : 32;
  if (secrets->client_length == hash && secrets->server_length == hash) {
    records.reset(new Tls13Records(
        suite, std::string_view(reinterpret_cast<char*>(secrets->client), hash),
        std::string_view(reinterpret_cast<char*>(secrets->server), hash)));
  }
  SSL_set_ex_data(ssl, SecretsIndex(), nullptr);
  FreeSecrets(nullptr, secrets, nullptr, 0, 0, nullptr);
  return records;
}

Tls13Records::Tls13Records(Suite suite, std::string_view client_secret,
                           std::string_view server_secret)
    : suite_(suite) {
  std::memcpy(from_client_.secret, client_secret.data(), client_secret.size());
  std::memcpy(to_client_.secret, server_secret.data(), server_secret.size());
  Derive(from_client_);
  Derive(to_client_);
}

Tls13Records::~Tls13Records() {
  OPENSSL_cleanse(&from_client_, sizeof from_client_);
  OPENSSL_cleanse(&to_client_, sizeof to_client_);
}

void Tls13Records::Derive(Direction& d) {
  const EVP_MD* md = suite_ == Suite::kAes256Gcm ? EVP_sha384() : EVP_sha256();
  ExpandLabel(md, d.secret, hash_length(), "key", d.key, key_length());
  ExpandLabel(md, d.secret, hash_length(), "iv", d.iv, sizeof d.iv);
  d.seq = 0;
  d.key_id = next_key_id.fetch_add(1, std::memory_order_relaxed);
}

void Tls13Records::Update(Direction& d) {
  const EVP_MD* md = suite_ == Suite::kAes256Gcm ? EVP_sha384() : EVP_sha256();
  uint8_t next[48];
  ExpandLabel(md, d.secret, hash_length(), "traffic upd", next, hash_length());
  std::memcpy(d.secret, next, hash_length());
  OPENSSL_cleanse(next, sizeof next);
  Derive(d);
}

bool Tls13Records::Fail(const char* why, int error, uint8_t alert) {
  failed_ = true;
  failure_ = why;
  alert_ = alert;
  errno = error;
  return false;
}

namespace {

const EVP_CIPHER* CipherOf(int suite) {
  static EVP_CIPHER* const ciphers[] = {
      EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr),
      EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr),
      EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr),
  };
  return ciphers[suite];
}

}  // namespace

bool Tls13Records::Start(EVP_CIPHER_CTX* ctx, uint64_t* loaded, const Direction& d,
                         bool seal) const {
  uint8_t nonce[12];
  Nonce(d.iv, d.seq, nonce);
  const bool same_key = *loaded == d.key_id;
  *loaded = 0;  // (until the record is done: a failure leaves the context unknown)
  if (EVP_CipherInit_ex2(ctx, same_key ? nullptr : CipherOf(static_cast<int>(suite_)),
                         same_key ? nullptr : d.key, nonce, seal ? 1 : 0, nullptr) != 1) {
    return false;
  }
  *loaded = d.key_id;
  return true;
}

bool Tls13Records::SealRecord(uint8_t type, std::string_view content, std::string* out) {
  const size_t length = content.size() + 1 + kTag;
  const size_t at = out->size();
  out->resize(at + kHeader + length);
  auto* record = reinterpret_cast<uint8_t*>(out->data() + at);
  // The header, which is also the AEAD's additional data (5.2).
  record[0] = kApplicationData;
  record[1] = 3;
  record[2] = 3;
  record[3] = static_cast<uint8_t>(length >> 8);
  record[4] = static_cast<uint8_t>(length);
  CipherContexts& c = Contexts();
  uint8_t* sealed = record + kHeader;
  int n = 0;
  int done = 0;
  const bool ok =
      Start(c.seal, &c.seal_key, to_client_, /*seal=*/true) &&
      EVP_EncryptUpdate(c.seal, nullptr, &n, record, kHeader) == 1 &&
      EVP_EncryptUpdate(c.seal, sealed, &n, reinterpret_cast<const uint8_t*>(content.data()),
                        static_cast<int>(content.size())) == 1 &&
      (done += n, EVP_EncryptUpdate(c.seal, sealed + done, &n, &type, 1) == 1) &&
      (done += n, EVP_EncryptFinal_ex(c.seal, sealed + done, &n) == 1) &&
      (done += n, static_cast<size_t>(done) == content.size() + 1) &&
      EVP_CIPHER_CTX_ctrl(c.seal, EVP_CTRL_AEAD_GET_TAG, kTag, sealed + done) == 1;
  if (!ok) {
    out->resize(at);
    // (No alert: the records sealed before it in this batch were dropped, so the client could
    // not open one sealed after them.)
    return Fail("OpenSSL could not seal a record", EPROTO, /*alert=*/0);
  }
  ++to_client_.seq;
  return true;
}

bool Tls13Records::Seal(uint8_t type, std::string_view content, std::string* out) {
  if (update_owed_ || to_client_.seq >> records_per_key_log2_ != 0) {
    // KeyUpdate, update_not_requested (4.6.3), under the old key; the next record under the new.
    static constexpr char kUpdate[] = {kKeyUpdate, 0, 0, 1, 0};
    if (!SealRecord(kHandshake, std::string_view(kUpdate, sizeof kUpdate), out)) return false;
    Update(to_client_);
    update_owed_ = false;
  }
  return SealRecord(type, content, out);
}

bool Tls13Records::Open(const uint8_t* record, size_t length, std::string* plain) {
  if (length <= kTag) return Fail("a record too short to hold its tag", EPROTO, kBadRecordMac);
  // (TLSInnerPlaintext: the content, its type and the padding, 2^14 + 1 bytes at most, 5.4.)
  if (length - kTag > kMaxPlain + 1) {
    return Fail("a record longer than TLS allows (record_overflow)", EPROTO, kRecordOverflow);
  }
  const size_t at = plain->size();
  const size_t sealed_length = length - kTag;
  plain->resize(at + sealed_length);
  auto* out = reinterpret_cast<uint8_t*>(plain->data() + at);
  CipherContexts& c = Contexts();
  int n = 0;
  int done = 0;
  const bool ok =
      Start(c.open, &c.open_key, from_client_, /*seal=*/false) &&
      EVP_DecryptUpdate(c.open, nullptr, &n, record, kHeader) == 1 &&
      EVP_DecryptUpdate(c.open, out, &n, record + kHeader, static_cast<int>(sealed_length)) ==
          1 &&
      (done += n, EVP_CIPHER_CTX_ctrl(c.open, EVP_CTRL_AEAD_SET_TAG, kTag,
                                      const_cast<uint8_t*>(record + kHeader + sealed_length)) ==
                      1) &&
      EVP_DecryptFinal_ex(c.open, out + done, &n) == 1 &&
      static_cast<size_t>(done + n) == sealed_length;
  if (!ok) {
    plain->resize(at);
    return Fail("a record failed its authentication (bad_record_mac)", EBADMSG, kBadRecordMac);
  }
  ++from_client_.seq;
  // The content type is the last byte that is not padding (5.4).
  size_t end = sealed_length;
  while (end > 0 && out[end - 1] == 0) --end;
  if (end == 0) {
    plain->resize(at);
    return Fail("a record with no content type", EPROTO, kUnexpectedMessage);
  }
  const uint8_t type = out[end - 1];
  const size_t content_length = end - 1;
  if (type == kApplicationData && content_length > 0) {
    plain->resize(at + content_length);
    records_without_data_ = 0;
    return true;
  }
  // Records that carry no data (empty ones, KeyUpdates, warnings) are few in a row, or a
  // client could keep the thread busy with them (OpenSSL allows 32).
  if (++records_without_data_ > kMaxRecordsWithoutData) {
    plain->resize(at);
    return Fail("too many records in a row without data", EPROTO, kUnexpectedMessage);
  }
  if (type == kApplicationData) {
    plain->resize(at);
    return true;
  }
  const std::string content(reinterpret_cast<char*>(out), content_length);
  plain->resize(at);
  if (type == kHandshake) return OnHandshake(content);
  if (type != kAlert) {
    return Fail("a record of an unknown content type", EPROTO, kUnexpectedMessage);
  }
  if (content.size() != 2) return Fail("a malformed alert", EPROTO, kDecodeError);
  if (content[1] == 0) {  // close_notify: the end of what the client sends
    closed_ = true;
    return true;
  }
  if (content[1] == 90) return true;  // user_canceled: a warning (close_notify follows)
  return Fail("the client sent a fatal alert", ECONNRESET, /*alert=*/0);
}

bool Tls13Records::OnHandshake(std::string_view content) {
  // A KeyUpdate (4.6.3), whole in its record and the record's last message (5.1).
  if (content.empty() || static_cast<uint8_t>(content[0]) != kKeyUpdate) {
    return Fail("a handshake message after the handshake other than a KeyUpdate", EPROTO,
                kUnexpectedMessage);
  }
  if (content.size() != 5 || content[1] != 0 || content[2] != 0 || content[3] != 1) {
    return Fail("a KeyUpdate of the wrong length", EPROTO, kDecodeError);
  }
  if (content[4] != 0 && content[4] != 1) {
    return Fail("a malformed KeyUpdate", EPROTO, kIllegalParameter);
  }
  Update(from_client_);
  if (content[4] == 1) update_owed_ = true;  // (update_requested)
  return true;
}

bool Tls13Records::Consume(const char* bytes, size_t n, std::string* plain) {
  std::string_view in(bytes, n);
  if (!partial_.empty()) {
    partial_.append(in);
    in = partial_;
  }
  size_t used = 0;
  bool ok = true;
  while (!closed_ && in.size() - used >= kHeader) {
    const auto* record = reinterpret_cast<const uint8_t*>(in.data() + used);
    if (record[0] != kApplicationData) {  // (told at once, not once a whole "record" came)
      ok = Fail(record[0] == kAlert ? "an alert in the clear after the handshake"
                                    : "a record of a type TLS 1.3 does not send encrypted",
                EPROTO, kUnexpectedMessage);
      break;
    }
    const size_t length = static_cast<size_t>(record[3]) << 8 | record[4];
    if (length > kMaxSealed) {
      ok = Fail("a record longer than TLS allows (record_overflow)", EPROTO, kRecordOverflow);
      break;
    }
    if (in.size() - used < kHeader + length) break;
    if (!Open(record, length, plain)) {
      ok = false;
      break;
    }
    used += kHeader + length;
  }
  if (!ok || closed_) {
    std::string().swap(partial_);
  } else if (in.data() == partial_.data()) {
    partial_.erase(0, used);
    if (partial_.empty()) std::string().swap(partial_);  // (an idle client holds none)
  } else {
    partial_.assign(in.substr(used));
  }
  return ok;
}

ssize_t Tls13Records::Read(int fd, char* scratch, size_t cap, std::string* plain,
                           bool* drained, bool* wants_write) {
  *drained = false;
  *wants_write = false;
  const size_t before = plain->size();
  while (true) {
    const ssize_t given = static_cast<ssize_t>(plain->size() - before);
    if (closed_) {
      if (given > 0) return given;
      errno = 0;
      return -1;
    }
    const ssize_t n = ::recv(fd, scratch, cap, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      *drained = true;
      return given;
    }
    if (n <= 0) {
      if (given > 0) return given;  // (the end, or the error, is read again next time)
      if (n == 0) {
        failure_ = partial_.empty() ? "end of stream" : "the stream ended inside a record";
        errno = 0;
      } else {
        failure_ = "the socket failed";
      }
      return -1;
    }
    if (!Consume(scratch, static_cast<size_t>(n), plain)) return -1;
    if (static_cast<size_t>(n) < cap) {
      *drained = true;  // (a read that did not fill `scratch` emptied the socket)
      return static_cast<ssize_t>(plain->size() - before);
    }
    if (plain->size() > before) return static_cast<ssize_t>(plain->size() - before);
  }
}

namespace {

// Writes `data` to `fd` from `*sent` on, as far as the socket takes it now: false on an error.
bool SendSome(int fd, std::string_view data, size_t* sent) {
  while (*sent < data.size()) {
    const ssize_t n =
        ::send(fd, data.data() + *sent, data.size() - *sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
    *sent += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

bool Tls13Records::Flush(int fd) {
  size_t sent = 0;
  if (!SendSome(fd, unsent_, &sent)) return false;
  unsent_.erase(0, sent);
  if (unsent_.empty()) std::string().swap(unsent_);  // (an idle client holds none)
  return true;
}

ssize_t Tls13Records::Write(int fd, std::string_view plain) {
  if (!unsent_.empty()) {
    if (!Flush(fd)) return -1;
    if (!unsent_.empty()) return 0;
  }
  std::string& sealed = SealScratch();
  sealed.clear();
  const size_t take = std::min(plain.size(), kMaxWrite);
  for (size_t at = 0; at < take; at += kMaxPlain) {
    if (!Seal(kApplicationData, plain.substr(at, std::min(kMaxPlain, take - at)), &sealed)) {
      return -1;
    }
  }
  size_t sent = 0;
  if (!SendSome(fd, sealed, &sent)) return -1;
  if (sent < sealed.size()) unsent_.assign(sealed, sent);
  return static_cast<ssize_t>(take);
}

void Tls13Records::Close(int fd) {
  // close_notify, or after a refused record the fatal alert that names why (6.2): not
  // close_notify, which would tell a clean end. Either only if what was sealed before is sent.
  if ((failed_ && alert_ == 0) || !Flush(fd) || !unsent_.empty()) return;
  const char alert[] = {static_cast<char>(failed_ ? 2 : 1), static_cast<char>(alert_)};
  std::string& sealed = SealScratch();
  sealed.clear();
  if (!Seal(kAlert, std::string_view(alert, sizeof alert), &sealed)) return;
  (void)::send(fd, sealed.data(), sealed.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

}  // namespace pgflow::pooler
