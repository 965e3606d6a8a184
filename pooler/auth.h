#pragma once

// The pooler's password authentication, both ways: as a server toward its clients
// (SCRAM-SHA-256, md5) and as a client toward PostgreSQL (SCRAM-SHA-256, md5, cleartext), and
// pgbouncer's users file. Plain functions and small state machines over byte strings; no
// sockets (pooler/session.cc drives them over the wire).
//
// SCRAM-SHA-256 is RFC 5802 / RFC 7677 as PostgreSQL speaks it: no channel binding
// (gs2 header "n,,", or "y,," from a client that could bind but was not offered
// SCRAM-SHA-256-PLUS), the user name in the client-first message ignored (PostgreSQL sends it
// empty; the startup packet names the user), iterations and salt from the stored secret.
// Passwords are used as their bytes, without SASLprep: the same as PostgreSQL for ASCII
// passwords and for any password that SASLprep leaves unchanged (already NFKC, no non-ASCII
// spaces or invisible characters).
//
// Nonces: the ScramServer and ScramClient constructors take the random part of the nonce as
// bytes. Bytes that are already a valid printable nonce (non-empty, '!' to '~' except ',') are
// sent verbatim, which is how the RFC 7677 test vector is reproduced; anything else is sent as
// its base64. Pass at least 18 bytes from a cryptographic generator (RAND_bytes).
//
// Thread-safety: the functions are plain functions of their arguments; a ScramServer or
// ScramClient is one exchange, used by one thread at a time.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pgflow::pooler {

// A server-first-message asking for more iterations than this is refused: PBKDF2 over it would
// take the client seconds (PostgreSQL's default is 4096).
inline constexpr int kMaxScramIterations = 10'000'000;
// A SCRAM message longer than this is refused before it is parsed (libpq's are under 200 bytes).
inline constexpr size_t kMaxScramMessage = 4096;

// A SCRAM secret as pg_authid keeps it:
//   SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>
struct ScramSecret {
  int iterations = 0;
  std::string salt;        // raw bytes
  std::string stored_key;  // raw 32 bytes
  std::string server_key;  // raw 32 bytes
};
// nullopt when `text` is not such a secret (iterations 1 to INT_MAX, a non-empty salt, keys of
// 32 bytes, all base64 in its canonical padded form).
std::optional<ScramSecret> ParseScramSecret(std::string_view text);
// The secret PostgreSQL would store for `password` with `salt` and `iterations`.
// REQUIRES: iterations >= 1, salt not empty.
ScramSecret MakeScramSecret(std::string_view password, std::string_view salt, int iterations);
// The text form of `secret`, as ParseScramSecret reads it.
std::string FormatScramSecret(const ScramSecret& secret);

// A user's entry in the users file: a plain password, an md5 hash ("md5" + 32 lower-case hex
// digits of md5(password || user)) or a SCRAM secret.
struct UserSecret {
  enum class Kind { kPlain, kMd5, kScram };
  Kind kind = Kind::kPlain;
  std::string text;   // as written in the file
  ScramSecret scram;  // kScram; kPlain once DeriveScramSecrets ran (else empty)
};
// The secret `text` stands for: a SCRAM secret when it starts "SCRAM-SHA-256$" (nullopt when
// it is not a valid one), an md5 hash, else a plain password.
std::optional<UserSecret> SecretFromText(std::string text);
// What a users file holds, by user name.
using UserList = absl::flat_hash_map<std::string, UserSecret>;

// Parses pgbouncer's userlist.txt: one `"user" "secret"` per line (a doubled quote `""` inside
// quotes stands for a quote), blank lines and lines starting with ';' or '#' ignored; anything
// else is an InvalidArgument naming `file_name`, the line and the problem
// ("users.txt:3:9: ..."), every such line at once (the first 20). Also refused: an empty user
// name or secret, a user named twice, and a secret starting "SCRAM-SHA-256$" that is not a
// valid SCRAM secret. Error messages never quote a secret.
absl::StatusOr<UserList> ParseUserList(std::string_view text, std::string_view file_name);

// PostgreSQL's iteration count for the SCRAM secrets it makes (scram_iterations' default).
inline constexpr int kDefaultScramIterations = 4096;
// Gives each non-empty plain password its SCRAM secret (a random salt, 4096 iterations), so
// that a login checks a proof instead of deriving keys: done once when the file is loaded.
void DeriveScramSecrets(UserList* users);
// The secret a SCRAM exchange is run with for a user who cannot log in with SCRAM (unknown,
// or listed by an md5 hash), so that the answers do not tell them apart from real users: its
// salt is the same for the same `user` and `key` (a per-process random key), no password
// matches it. PostgreSQL does the same ("mock authentication").
ScramSecret MockScramSecret(std::string_view user, std::string_view key);

// Whether `password` is `user`'s, by the users file's `users` (a plain password, an md5 hash or a
// SCRAM secret), compared in constant time. An unknown user costs the same PBKDF2 as a known
// one (MockScramSecret), so that the time taken does not tell user names apart. The web
// console's login (engine/console.h).
bool CheckPassword(const UserList& users, std::string_view user, std::string_view password);

// "md5" + hex(md5(password || user)): what pg_authid keeps for md5 passwords.
std::string Md5PasswordHash(std::string_view user, std::string_view password);
// What a client sends in its PasswordMessage for md5 authentication with `salt` (4 bytes):
// "md5" + hex(md5(hex(md5(password || user)) || salt)); `hash` is Md5PasswordHash's value.
// A server checking a client's response compares it with this in constant time
// (CRYPTO_memcmp).
std::string Md5Response(std::string_view hash, std::string_view salt);

// The server side of one SCRAM-SHA-256 exchange with a client, given the user's secret (for a
// user whose file entry is a plain password: MakeScramSecret with a random salt).
//   ScramServer s(secret, nonce_random_bytes);
//   server_first = s.ClientFirst(client_first)   // from SASLInitialResponse's data
//   server_final = s.ClientFinal(client_final)   // from SASLResponse; error: wrong password
// After a successful ClientFinal, client_key() is the client's ClientKey (recovered from its
// proof), with which the pooler can log in to PostgreSQL as the same user without knowing the
// password (ScramClient::FromKeys). Each call is made once, in this order: a call out of turn,
// or any call after an error, is a FailedPrecondition.
class ScramServer {
 public:
  // `nonce` is the server's random part (see "Nonces" above). REQUIRES: nonce not empty.
  ScramServer(ScramSecret secret, std::string_view nonce);
  // The server-first-message, or InvalidArgument for a malformed message (or one asking for
  // channel binding, an authorization identity or a mandatory extension).
  absl::StatusOr<std::string> ClientFirst(std::string_view client_first);
  // The server-final-message ("v=..."), or PermissionDenied when the proof is wrong,
  // InvalidArgument when the message is malformed or its nonce or channel binding is not this
  // exchange's.
  absl::StatusOr<std::string> ClientFinal(std::string_view client_final);
  // Empty until ClientFinal succeeded.
  const std::string& client_key() const { return client_key_; }

 private:
  enum class Step { kClientFirst, kClientFinal, kDone };

  ScramSecret secret_;
  std::string server_nonce_;
  std::string gs2_header_;  // "n,," or "y,,", as the client sent it
  std::string client_first_bare_;
  std::string server_first_;
  std::string combined_nonce_;
  std::string client_key_;
  Step step_ = Step::kClientFirst;
};

// The client side of one SCRAM-SHA-256 exchange with PostgreSQL.
//   ScramClient c = ScramClient::FromPassword(password, nonce_random_bytes);
//   send c.ClientFirst()                                // SASLInitialResponse data
//   send *c.ServerFirst(server_first)                   // SASLResponse data
//   *c.ServerFinal(server_final)                        // OK when the server proved itself
// `user` is the name sent in the client-first message: PostgreSQL ignores it and libpq sends
// none (the default); other SCRAM servers, and RFC 7677's test vector, want it.
// ServerFirst and ServerFinal are each called once, in this order: a call out of turn, or any
// call after an error, is a FailedPrecondition.
class ScramClient {
 public:
  // `nonce`: the client's random part (see "Nonces" above). REQUIRES: nonce not empty.
  static ScramClient FromPassword(std::string_view password, std::string_view nonce,
                                  std::string_view user = "");
  // Logs in with a ClientKey and ServerKey (ScramServer::client_key and the secret's
  // server_key) instead of the password: valid when PostgreSQL holds the same secret. The
  // server's salt and iteration count are then not used.
  static ScramClient FromKeys(std::string client_key, std::string server_key,
                              std::string_view nonce, std::string_view user = "");

  // The client-first-message (the same on every call).
  std::string ClientFirst();
  // The client-final-message; InvalidArgument when the server's message is malformed, its
  // nonce does not extend ours or its iteration count is absurd (above kMaxScramIterations).
  absl::StatusOr<std::string> ServerFirst(std::string_view server_first);
  // PermissionDenied when the server's signature is wrong; InvalidArgument when malformed or
  // an error ("e=...") the server sent.
  absl::Status ServerFinal(std::string_view server_final);

 private:
  enum class Step { kServerFirst, kServerFinal, kDone };

  ScramClient() = default;
  std::optional<std::string> password_;
  std::string client_key_;  // given, or derived in ServerFirst
  std::string server_key_;
  std::string client_nonce_;
  std::string user_;  // saslname-escaped
  std::string client_first_bare_;
  std::string expected_server_signature_;
  Step step_ = Step::kServerFirst;
};

}  // namespace pgflow::pooler
