#include "pooler/server_login.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "engine/asio_support.h"
#include "engine/str_cat.h"
#include "pooler/auth.h"
#include "pooler/protocol.h"
#include "pooler/tls.h"

namespace pgflow::pooler {
namespace {

using asio_support::kUseTask;
using asio_support::tcp;

std::atomic<uint64_t> next_server_id{1};

// What a server login message may be at most (its ParameterStatus and errors are small).
constexpr size_t kMaxLoginMessage = 1 << 20;

// SQLSTATEs after which trying again later may succeed: the server is starting up, shutting
// down, in recovery, or out of connection slots for a moment.
bool TransientSqlstate(std::string_view sqlstate) {
  return sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03" || sqlstate == "53300" ||
         sqlstate.substr(0, 2) == "08";
}

// The url's keepalives on a connected TCP socket, as libpq sets them (0: the system's).
void SetKeepalives(const Upstream& upstream, int fd) {
  const int on = upstream.keepalives ? 1 : 0;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  if (!upstream.keepalives) return;
  for (auto [option, value] : {std::pair{TCP_KEEPIDLE, upstream.keepalives_idle},
                               std::pair{TCP_KEEPINTVL, upstream.keepalives_interval},
                               std::pair{TCP_KEEPCNT, upstream.keepalives_count},
                               std::pair{TCP_USER_TIMEOUT, upstream.tcp_user_timeout}}) {
    if (value > 0) ::setsockopt(fd, IPPROTO_TCP, option, &value, sizeof value);
  }
}

// Connects `server`'s socket to `upstream` (its Unix socket, or its host resolved), within
// `deadline`.
PGFLOW_ASIO_COROUTINE_BEGIN
Task<absl::Status> Connect(asio::io_context* context, const Upstream& upstream,
                           const Deadline& deadline, ServerConn* server) {
  const std::string where = upstream.Where();
  boost::system::error_code ec;
  if (upstream.local()) {
    absl::StatusOr<Socket> local = ConnectLocal(context, where);
    if (!local.ok()) {
      co_return SqlstateError(
          "08001", Cat("cannot connect to the server at ", where, ": ", local.status().message()));
    }
    server->socket = *std::move(local);
    server->socket_path = where;
  } else {
    asio::ip::basic_resolver<tcp, Executor> resolver(context->get_executor());
    auto endpoints = co_await resolver.async_resolve(upstream.host, std::to_string(upstream.port),
                                                     asio::redirect_error(kUseTask, ec));
    if (ec) {
      co_return SqlstateError("08001", Cat("cannot resolve ", upstream.host, ": ", ec.message()));
    }
    co_await asio::async_connect(server->socket, endpoints, asio::redirect_error(kUseTask, ec));
    if (ec) {
      co_return SqlstateError("08001", Cat("cannot connect to the server at ", where, ": ",
                                           deadline.expired() ? "timed out" : ec.message()));
    }
    server->socket.set_option(tcp::no_delay(true), ec);
    SetKeepalives(upstream, server->socket.native_handle());
    server->remote = server->socket.remote_endpoint(ec);
  }
  server->socket.non_blocking(true, ec);  // the relay reads with read_some after a wait
  co_return absl::OkStatus();
}
PGFLOW_ASIO_COROUTINE_END

// PostgreSQL's negotiation, as the url's sslmode asks: SSLRequest, then 'S' and the handshake
// (finished by `give_up`), or 'N' (in the clear for prefer, a failure otherwise). *transient
// is cleared for what trying again cannot mend.
PGFLOW_ASIO_COROUTINE_BEGIN
Task<absl::Status> NegotiateTls(const Upstream& upstream, const Deadline& deadline,
                                Clock::time_point give_up, ServerConn* server, bool* transient) {
  const std::string where = upstream.Where();
  boost::system::error_code ec;
  std::string request;
  AppendInt32(&request, 8);
  AppendInt32(&request, kSslRequestCode);
  co_await asio::async_write(server->socket, asio::buffer(request),
                             asio::redirect_error(kUseTask, ec));
  char answer = 0;
  if (!ec) {
    co_await asio::async_read(server->socket, asio::buffer(&answer, 1),
                              asio::redirect_error(kUseTask, ec));
  }
  if (ec) {
    co_return SqlstateError("08006", Cat("server at ", where,
                                         " closed the connection during the "
                                         "TLS request: ",
                                         deadline.expired() ? "timed out" : ec.message()));
  }
  if (answer == 'N' && upstream.sslmode == TlsMode::kPrefer) co_return absl::OkStatus();
  if (answer != 'S') {
    *transient = false;
    co_return SqlstateError("08001", Cat("server at ", where, " does not accept TLS (sslmode ",
                                         TlsModeName(upstream.sslmode), ")"));
  }
  absl::StatusOr<std::shared_ptr<asio::ssl::context>> tls = MakeClientTlsContext(upstream);
  if (!tls.ok()) {
    *transient = false;
    co_return SqlstateError("08001", Sv(tls.status().message()));
  }
  const auto left =
      std::max(std::chrono::milliseconds(1),
               std::chrono::duration_cast<std::chrono::milliseconds>(give_up - Clock::now()));
  absl::StatusOr<Socket> plain =
      co_await StartTls(&server->socket, **tls, false, upstream.sslmode, upstream.host, left);
  // The deadline's timer, if it fired meanwhile, found no socket to cancel.
  if (plain.ok() && deadline.expired()) plain = absl::DeadlineExceededError("timed out");
  if (!plain.ok()) {
    *transient = upstream.sslmode < TlsMode::kVerifyCa;  // a certificate refused stays so
    co_return SqlstateError("08001", Cat("server at ", where, ": ", plain.status().message()));
  }
  server->socket = *std::move(plain);
  co_return absl::OkStatus();
}
PGFLOW_ASIO_COROUTINE_END

// An AuthenticationSASL request: the SCRAM-SHA-256 exchange begun into *scram, its
// SASLInitialResponse in *out; an error when the server offers no mechanism the pooler speaks
// or the pooler has neither the password nor a client's SCRAM keys.
absl::Status StartScram(BodyReader* body, const LoginCredentials& login,
                        std::optional<ScramClient>* scram, std::string* out) {
  bool offered = false;
  while (std::optional<std::string_view> mechanism = body->CString()) {
    if (mechanism->empty()) break;
    if (*mechanism == "SCRAM-SHA-256") offered = true;
  }
  if (!offered) return SqlstateError("28000", "the server offers no SCRAM-SHA-256 authentication");
  std::string nonce = RandomBytes(18);
  if (!login.password.empty()) {
    *scram = ScramClient::FromPassword(login.password, nonce);
  } else if (!login.scram_client_key.empty()) {
    *scram = ScramClient::FromKeys(login.scram_client_key, login.scram_server_key, nonce);
  } else {
    return SqlstateError("28P01", Cat("no password for user ", login.user,
                                      ": give one in the database url or the users file, "
                                      "or let the user log in with SCRAM first"));
  }
  AppendSaslInitialResponse(out, "SCRAM-SHA-256", (*scram)->ClientFirst());
  return absl::OkStatus();
}

}  // namespace

absl::Status AnswerAuthentication(BodyReader* body, const LoginCredentials& login,
                                  std::optional<ScramClient>* scram, std::string* out) {
  const int32_t code = body->Int32().value_or(-1);
  switch (code) {
    case kAuthenticationOk:
      return absl::OkStatus();
    case kAuthenticationCleartextPassword:
      if (login.password.empty()) {
        return SqlstateError("28P01", Cat("the server asks user ", login.user,
                                          "'s password in clear, and the pooler has none"));
      }
      AppendPassword(out, login.password);
      return absl::OkStatus();
    case kAuthenticationMd5Password: {
      std::optional<std::string_view> salt = body->Bytes(4);
      std::string hash = !login.md5_hash.empty()   ? login.md5_hash
                         : !login.password.empty() ? Md5PasswordHash(login.user, login.password)
                                                   : "";
      if (!salt.has_value() || hash.empty()) {
        return SqlstateError("28P01", Cat("the server asks an md5 password for user ", login.user,
                                          " and the pooler has neither it nor its md5 hash"));
      }
      AppendPassword(out, Md5Response(hash, *salt));
      return absl::OkStatus();
    }
    case kAuthenticationSasl:
      return StartScram(body, login, scram, out);
    case kAuthenticationSaslContinue: {
      if (!scram->has_value()) break;
      absl::StatusOr<std::string> final_message = (*scram)->ServerFirst(body->rest());
      if (!final_message.ok()) {
        return SqlstateError("28000",
                             Cat("SCRAM with the server: ", final_message.status().message()));
      }
      AppendSaslResponse(out, *final_message);
      return absl::OkStatus();
    }
    case kAuthenticationSaslFinal:
      if (!scram->has_value()) break;
      if (absl::Status s = (*scram)->ServerFinal(body->rest()); !s.ok()) {
        return SqlstateError("28000", Cat("the server's SCRAM signature: ", s.message()));
      }
      return absl::OkStatus();
    default:
      break;
  }
  return SqlstateError("28000",
                       Cat("unsupported authentication request ", code, " from the server"));
}

namespace {

// A ParameterStatus the server sent at login, noted in `server`'s parameters.
void NoteParameter(BodyReader* body, ServerConn* server) {
  std::optional<std::string_view> name = body->CString();
  std::optional<std::string_view> value = body->CString();
  if (!name.has_value() || !value.has_value()) return;
  server->params[absl::AsciiStrToLower(absl::string_view(name->data(), name->size()))] =
      std::string(*value);
  server->reported.emplace_back(std::string(*name), std::string(*value));
}

}  // namespace

int ConnectUnixSocket(const std::string& path, int* fd) {
  *fd = -1;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) return ENAMETOOLONG;
  std::memcpy(address.sun_path, path.data(), path.size());
  const int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  if (::connect(s, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    const int error = errno;
    ::close(s);
    return error;
  }
  *fd = s;
  return 0;
}

absl::StatusOr<Socket> ConnectLocal(asio::io_context* context, const std::string& path) {
  int fd;
  if (const int error = ConnectUnixSocket(path, &fd); error != 0) {
    return absl::UnavailableError(error == EAGAIN ? "its connection backlog is full"
                                                  : strerror(error));
  }
  Socket socket(context->get_executor());
  boost::system::error_code ec;
  socket.assign(tcp::v4(), fd, ec);  // any stream socket: the calls made are those of all
  if (ec) {
    ::close(fd);
    return absl::UnavailableError(ec.message());
  }
  return socket;
}

PGFLOW_ASIO_COROUTINE_BEGIN
Task<absl::StatusOr<std::unique_ptr<ServerConn>>> LoginServer(
    asio::io_context* context, const Upstream& upstream, const std::string& dbname,
    const LoginCredentials& login, const StartupSettings* startup,
    std::chrono::milliseconds timeout, bool* transient) {
  *transient = true;
  auto server = std::make_unique<ServerConn>(context);
  server->id = next_server_id.fetch_add(1);
  const std::string where = upstream.Where();
  const Clock::time_point give_up = Clock::now() + timeout;
  Deadline deadline(server->socket, timeout);
  if (absl::Status s = co_await Connect(context, upstream, deadline, server.get()); !s.ok()) {
    co_return s;
  }
  // (As libpq, no TLS over a Unix socket, whatever the url's sslmode.)
  if (upstream.sslmode != TlsMode::kDisable && !upstream.local()) {
    absl::Status s = co_await NegotiateTls(upstream, deadline, give_up, server.get(), transient);
    if (!s.ok()) co_return s;
  }

  boost::system::error_code ec;
  std::string out;
  std::vector<std::pair<std::string, std::string>> parameters = {{"user", login.user},
                                                                 {"database", dbname}};
  if (startup != nullptr) {
    parameters.insert(parameters.end(), startup->settings.begin(), startup->settings.end());
    server->startup_key = startup->key;
  }
  AppendStartup(&out, parameters);
  co_await asio::async_write(server->socket, asio::buffer(out), asio::redirect_error(kUseTask, ec));
  std::optional<ScramClient> scram;
  std::string buffer;
  auto lost = [&](const absl::Status& s) {
    return SqlstateError(
        "08006",
        Cat("server at ", where, " ", deadline.expired() ? "timed out" : "",
            deadline.expired() ? "" : "closed the connection", " during login: ", s.message()));
  };
  while (true) {
    absl::StatusOr<WholeMessage> message =
        co_await ReadWholeMessage(server->socket, buffer, kMaxLoginMessage);
    if (!message.ok()) co_return lost(message.status());
    BodyReader body(message->body);
    out.clear();
    switch (message->type) {
      case 'R':
        if (absl::Status s = AnswerAuthentication(&body, login, &scram, &out); !s.ok()) {
          *transient = false;
          co_return s;
        }
        break;
      case 'E': {
        ErrorFields error = ParseErrorFields(message->body);
        *transient = TransientSqlstate(error.sqlstate);
        co_return SqlstateError(error.sqlstate.empty() ? "08006" : error.sqlstate,
                                Cat("server at ", where, ": ", error.message));
      }
      case 'S':
        NoteParameter(&body, server.get());
        break;
      case 'K':
        server->backend_pid = body.Int32().value_or(0);
        server->backend_key = body.Int32().value_or(0);
        break;
      case 'Z':
        server->connected_at = server->idle_since = Clock::now();
        if (startup != nullptr) {
          // What it was started with is in force, reported or not.
          for (const auto& [name, value] : startup->settings)
            server->params.try_emplace(name, value);
        }
        co_return server;
      default:
        break;  // NoticeResponse, NegotiateProtocolVersion
    }
    if (!out.empty()) {
      co_await asio::async_write(server->socket, asio::buffer(out),
                                 asio::redirect_error(kUseTask, ec));
      if (ec) co_return lost(absl::UnavailableError(ec.message()));
    }
  }
}
PGFLOW_ASIO_COROUTINE_END

}  // namespace pgflow::pooler
