#pragma once

// The pooler's login to a PostgreSQL server: the connection (TCP or the server's Unix socket),
// TLS as the url's sslmode asks, the startup packet, and the answers to the server's
// authentication requests (cleartext, md5, SCRAM-SHA-256), until ReadyForQuery. Pool::Login
// calls it for each host it tries; nothing here is on the relay's path.

#include <chrono>
#include <memory>
#include <string>

#include <optional>

#include "absl/status/statusor.h"
#include "pooler/auth.h"
#include "pooler/pool.h"
#include "pooler/protocol.h"
#include "pooler/pooler_config.h"

namespace pgflow::pooler {

// Opens one server connection on `context` and logs in as `login` to `dbname` (the whole
// within `timeout`). `startup` (may be null; must outlive the call): settings for the
// startup packet (session mode). The error's message starts with the SQLSTATE (PostgreSQL's
// when it answered one: SqlstateOf reads it); *transient is set when trying again later may
// succeed (no answer, starting up, shutting down), cleared when it cannot (a password
// refused, a method the pooler does not speak, a certificate refused).
Task<absl::StatusOr<std::unique_ptr<ServerConn>>> LoginServer(
    asio::io_context* context, const Upstream& upstream, const std::string& dbname,
    const LoginCredentials& login, const StartupSettings* startup,
    std::chrono::milliseconds timeout, bool* transient);

// The answer to an Authentication message `body` (as a server sends it) into *out, *scram
// holding a SCRAM exchange between its steps (empty for AuthenticationOk and SASLFinal); an
// error (one that trying again cannot mend) when `login` cannot answer it. The gateway's
// clients answer their sessions with it too.
absl::Status AnswerAuthentication(BodyReader* body, const LoginCredentials& login,
                                  std::optional<ScramClient>* scram, std::string* out);

// Connects a non-blocking stream socket to the Unix socket at `path` (PostgreSQL's
// .s.PGSQL.<port>) into *fd: 0, or the errno of the failure (ENAMETOOLONG for a path longer
// than a Unix socket path may be). A local connect completes at once or fails (EAGAIN: the
// server's backlog is full), so it needs no wait.
int ConnectUnixSocket(const std::string& path, int* fd);

// The same connection, in the Socket type the relay uses for every stream.
absl::StatusOr<Socket> ConnectLocal(asio::io_context* context, const std::string& path);

}  // namespace pgflow::pooler
