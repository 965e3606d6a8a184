#pragma once

// The gateway's side of a tunnelled session (pooler/gateway.h): a PostgreSQL client over one
// end of the socketpair whose other end a Session serves. It logs in as the HTTP or WebSocket
// client asked (the session checks the password as it would a wire client's: the pooler's
// auth.method, users file and auth.query), then reads the session's messages without copying
// them. Internal to pooler/; one client, used by one coroutine at a time.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/asio_support.h"

namespace pgflow::pooler {

using asio_support::Socket;
using asio_support::Task;

// An ErrorResponse's fields by their codes ('S', 'V', 'C', 'M', 'D', 'H', 'P'...), in order.
struct PgError {
  std::vector<std::pair<char, std::string>> fields;

  static PgError Parse(std::string_view body);
  // The pooler's own error (SQLSTATE `code`) for a failure with no ErrorResponse.
  static PgError Make(std::string_view code, std::string_view message);
  // The value of field `code`, or empty.
  std::string_view Get(char code) const;
};

// Who a gateway client logs in as: the startup packet's parameters (user, database,
// application_name...) and the password it answers the session's request with (cleartext,
// md5 or SCRAM-SHA-256, as the pooler's auth.method asks).
struct GatewayLogin {
  std::vector<std::pair<std::string, std::string>> parameters;
  std::string password;
  std::string Get(std::string_view name) const;
};

// A backend message: its type and body (a view into the client's buffer, valid until the next
// Next).
struct BackendMessage {
  char type = 0;
  std::string_view body;
};

class GatewayClient {
 public:
  explicit GatewayClient(Socket socket) : socket_(std::move(socket)) {}

  // Sends the startup packet and answers the authentication requests, up to ReadyForQuery:
  // nullopt when logged in, else the error (the pooler's FATAL, or 08006 for a lost session).
  // Every message the session sends but authentication requests (AuthenticationOk,
  // ParameterStatus, BackendKeyData, ReadyForQuery, notices, the error) is appended whole to
  // `passthrough` when given: what a WebSocket client reads of its login.
  Task<std::optional<PgError>> Login(const GatewayLogin& login, std::string* passthrough);

  // Writes `bytes` whole; false when the session is gone.
  Task<bool> Write(std::string_view bytes);
  // The next whole message; an error when the session closed or sent a malformed one.
  Task<absl::StatusOr<BackendMessage>> Next();
  // The raw bytes Next has buffered but not returned, taken (the WebSocket bridge relays them
  // unparsed after the login).
  std::string TakeBuffered();

  Socket& socket() { return socket_; }
  int32_t backend_pid() const { return backend_pid_; }
  int32_t backend_key() const { return backend_key_; }

 private:
  Socket socket_;
  // What was read: in_[pos_, end_) is not yet returned; capacity_ bytes, never zero-filled.
  std::unique_ptr<char[]> in_;
  size_t capacity_ = 0;
  size_t pos_ = 0;
  size_t end_ = 0;
  int32_t backend_pid_ = 0;
  int32_t backend_key_ = 0;
};

}  // namespace pgflow::pooler
