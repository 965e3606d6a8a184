#pragma once

// The records of a client's TLS 1.3 connection once its handshake is over, sealed and opened
// by pgflow itself (RFC 8446, section 5) instead of by OpenSSL's session, which holds about
// 15 kB per connection for as long as it lives, idle or not. OpenSSL still runs the
// handshake, and the AEAD of each record (EVP, through one cipher context per thread); what a
// connection holds between records is its two traffic keys and their sequence numbers, a few
// hundred bytes, plus a record split across two reads, or sealed bytes its socket did not
// take, while there are any.
//
// Taken over from OpenSSL at the end of the server's handshake (Tls13Records::Take): TLS 1.3
// with TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384 or TLS_CHACHA20_POLY1305_SHA256, no
// session tickets (MakeServerTlsContext sends none) and nothing read or written past the
// client's Finished, so that both directions' application records start at sequence 0. A
// KeyUpdate from the client is followed (and answered, before the next record sent, when it
// asks for one); the keys toward the client are updated of the pooler's own accord long
// before AES-GCM's limit. Anything else (TLS 1.2, another suite) stays with OpenSSL.

#include <sys/types.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <openssl/ssl.h>

namespace pgflow::pooler {

// One TLS connection's records once its handshake is over, read and written on its socket (a
// non-blocking descriptor the caller owns) without waiting: OpenSSL's session (TLS 1.2, a
// connection toward a server) or Tls13Records. The pump of pooler/tls.h and the relay use it
// alike.
class TlsChannel {
 public:
  virtual ~TlsChannel();  // (uncounted in TlsClientsOpen)

  // Reads what socket `fd` holds (through `scratch`, `cap` bytes at a time) and appends the
  // plaintext of its complete records to *plain: the bytes appended (0: none yet). `*drained`
  // is set once nothing more can be read before the socket reports more (else the caller
  // reads again); `*wants_write`, when nothing can be read before the socket takes writes.
  // -1 at the end of the stream (errno 0: close_notify or the socket's end, what came before
  // them given first) or on an error (errno set, failure() names it).
  virtual ssize_t Read(int fd, char* scratch, size_t cap, std::string* plain, bool* drained,
                       bool* wants_write) = 0;

  // Writes `plain`, or its first part, in records to `fd`: the plaintext bytes taken, 0 when
  // the socket takes nothing now (OpenSSL must then be given the same bytes again), -1 on an
  // error (errno set). Bytes taken may be kept sealed, unsent(), till the socket takes them.
  virtual ssize_t Write(int fd, std::string_view plain) = 0;
  // Writes what was taken and not yet sent: false on an error (errno set).
  virtual bool Flush(int fd) = 0;
  virtual bool unsent() const = 0;

  // Sends close_notify if the socket takes it now (after what waits before it); after a
  // refused record, the fatal alert that says why instead, where the channel has one.
  virtual void Close(int fd) = 0;

  virtual const char* failure() const = 0;
  // A record was refused and Close owes the peer the alert that says why (OpenSSL sends its
  // own at once).
  virtual bool owes_alert() const { return false; }

  // Counts the connection in TlsClientsOpen for as long as it lives (a client's).
  void CountAsClient();

 private:
  bool counted_ = false;
};

// TLS clients open now (from their handshake until their connection ends).
int TlsClientsOpen();

class Tls13Records final : public TlsChannel {
 public:
  // Has `ctx` (a server's context) keep each handshake's traffic secrets for Take, in the
  // connection's own data (and forgotten with it).
  static void CatchSecrets(SSL_CTX* ctx);

  // The record layer of `ssl`, whose handshake (as the server) has just ended; null when it
  // cannot be taken over (see above). `ssl` may then be freed: the connection goes on on its
  // socket with what this returns.
  static std::unique_ptr<Tls13Records> Take(SSL* ssl);

  ~Tls13Records() override;

  ssize_t Read(int fd, char* scratch, size_t cap, std::string* plain, bool* drained,
               bool* wants_write) override;
  // Takes up to kMaxWrite bytes at a time, sealed at once; what the socket does not take is
  // kept (unsent()) and the next Write takes nothing till it is sent.
  ssize_t Write(int fd, std::string_view plain) override;
  bool Flush(int fd) override;
  bool unsent() const override { return !unsent_.empty(); }
  void Close(int fd) override;
  const char* failure() const override { return failure_; }
  bool owes_alert() const override { return failed_ && alert_ != 0; }

  // What one Write seals at most: bounds what a connection keeps when its socket is full.
  static constexpr size_t kMaxWrite = 4 * 16384;
  // Records sealed under one key before the pooler updates it, 2^this: AES-GCM's limit is
  // 2^24.5 full records (RFC 8446, 5.5); the same bound serves every suite.
  static constexpr uint8_t kRecordsPerKeyLog2 = 23;
  // (For the tests: the update comes after 2^`log2` records instead, not eight million.)
  void LimitRecordsPerKeyForTesting(uint8_t log2) {
    records_per_key_log2_ = std::min<uint8_t>(log2, kRecordsPerKeyLog2);
  }

 private:
  enum class Suite : uint8_t { kAes128Gcm, kAes256Gcm, kChaCha20Poly1305 };
  // One direction's keys (RFC 8446, 7.1 and 7.3).
  struct Direction {
    uint8_t secret[48];  // its application traffic secret (the hash's length)
    uint8_t key[32];     // (the AEAD's key length)
    uint8_t iv[12];
    uint64_t seq = 0;     // the next record's
    uint64_t key_id = 0;  // names `key` to the thread's cipher contexts (unique per process)
  };
  Tls13Records(Suite suite, std::string_view client_secret, std::string_view server_secret);

  // Takes in `n` bytes read from the socket: the complete records among them and what
  // partial_ held; false on an error (failure_ set, errno too).
  bool Consume(const char* bytes, size_t n, std::string* plain);
  // Opens the record at `data` (its header and `length` bytes after it) and handles what it
  // holds: application data appended to *plain; false on an error (failure_ set).
  bool Open(const uint8_t* data, size_t length, std::string* plain);
  // Handles the handshake messages of a record (`content`): a KeyUpdate, or an error.
  bool OnHandshake(std::string_view content);
  // Appends to *out the record of `content` as content type `type`, sealed toward the client:
  // first the KeyUpdate owed, or due (the keys' limit), if any.
  // False if OpenSSL failed (errno set).
  bool Seal(uint8_t type, std::string_view content, std::string* out);
  bool SealRecord(uint8_t type, std::string_view content, std::string* out);
  // Readies thread context `ctx`, which last held the key named `*loaded`, for the next
  // record of `d` (its key, when another, and the record's nonce): false if OpenSSL failed.
  bool Start(EVP_CIPHER_CTX* ctx, uint64_t* loaded, const Direction& d, bool seal) const;
  // Derives `d`'s key and iv from its secret, as a new key.
  void Derive(Direction& d);
  // Moves `d`'s secret one generation on (RFC 8446, 7.2) and derives from it.
  void Update(Direction& d);
  // Refuses the connection: `why` for failure(), errno `error`, and the alert Close sends
  // (its description; 0: none).
  bool Fail(const char* why, int error, uint8_t alert);
  size_t hash_length() const { return suite_ == Suite::kAes256Gcm ? 48 : 32; }
  size_t key_length() const { return suite_ == Suite::kAes128Gcm ? 16 : 32; }

  Suite suite_;
  bool update_owed_ = false;  // the client asked for a KeyUpdate: sent before the next record
  bool closed_ = false;       // close_notify came
  bool failed_ = false;       // a record was refused (Fail): nothing more is sent but alert_
  uint8_t alert_ = 0;         // the fatal alert owed after a refusal (0: none)
  uint8_t records_without_data_ = 0;  // in a row (KeyUpdates, empty records, warnings)
  uint8_t records_per_key_log2_ = kRecordsPerKeyLog2;  // (a byte: no idle client grows)
  const char* failure_ = "";
  Direction from_client_, to_client_;
  std::string partial_;  // a record not yet whole (held only while there is one)
  std::string unsent_;   // sealed records the socket has not taken yet
};

}  // namespace pgflow::pooler
