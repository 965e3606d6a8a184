// A session's login (TLS, authentication, cancel requests, auth.query lookups) and the admin
// console; the relay that follows a login is in session_relay.cc.

#include "pooler/session.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/asio_support.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "pooler/admin_console.h"
#include "pooler/auth.h"
#include "pooler/pool.h"
#include "pooler/pooler_config.h"
#include "pooler/protocol.h"
#include "pooler/query_text.h"
#include "pooler/server_login.h"
#include "pooler/tls.h"

namespace pgflow::pooler {

Session::WebSocket::~WebSocket() {
  if (fd >= 0) ::close(fd);  // adopted by a session that never relayed
  if (counted != nullptr) counted->fetch_sub(1);
}

Session::~Session() {
  // First: once unregistered, no other thread reaches the session (Pooler::Impl::WithClient).
  if (info_.id != 0) impl()->Unregister(this);
  if (pool_ != nullptr) pool_->clients.fetch_sub(1);
  if (tenant_ != nullptr) tenant_->clients.fetch_sub(1);
  if (counted_) impl()->clients.fetch_sub(1);
  if (admin_) impl()->consoles.fetch_sub(1);
  impl()->sessions.fetch_sub(1);
}

Task<void> Session::Run(std::shared_ptr<Session>* owner) {
  std::unique_ptr<std::shared_ptr<Session>> hold(owner);
  Session* self = owner->get();
  if (!co_await self->Login()) {
    self->LogRefusal();
    self->CloseClient();
    co_return;
  }
  if (self->admin_) {
    co_await self->AdminLoop();  // (the console never holds a server connection)
    self->CloseClient();
    co_return;
  }
  self->StartRelay();
}

Task<bool> Session::ReadExactly(std::string* out, size_t n) {
  std::string& ahead = login_->read_ahead;
  boost::system::error_code ec;
  // (The deadline cancels a read under way only: one begun after it passed is not.)
  const auto expired = [this] {
    return login_->deadline != nullptr && login_->deadline->expired();
  };
  while (!ec && ahead.size() < n && !expired()) {
    // What the socket holds, up to kLoginReadAhead past the message: a message's header and
    // body (or the next message, when the client sent it already) cost one read.
    const size_t had = ahead.size();
    ahead.resize(n + kLoginReadAhead);
    const size_t got = co_await client().async_read_some(
        asio::buffer(ahead.data() + had, ahead.size() - had), asio::redirect_error(kUseTask, ec));
    ahead.resize(had + got);
  }
  if (ahead.size() < n) co_return false;
  out->assign(ahead, 0, n);
  ahead.erase(0, n);
  co_return true;
}

Task<bool> Session::SendToClient(std::string_view bytes) {
  std::string out = std::exchange(login_->unsent, {});
  out.append(bytes);
  Socket& socket = client();
  boost::system::error_code ec;
  if (!socket.non_blocking()) socket.non_blocking(true, ec);
  size_t sent = 0;
  if (!ec) sent = socket.write_some(asio::buffer(out), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) ec = {};
  if (!ec && sent < out.size()) {
    co_await asio::async_write(socket, asio::buffer(out.data() + sent, out.size() - sent),
                               asio::redirect_error(kUseTask, ec));
  }
  co_return !ec;
}

Task<void> Session::SendFatal(std::string_view sqlstate, std::string_view message) {
  if (login_ == nullptr) co_return;  // (the relay's own way is EndWithFatal)
  std::string_view detail = login_->password_detail;
  login_->refusal = sqlstate == "28P01" && !detail.empty() ? Cat(message, " (", detail, ")")
                                                                 : std::string(message);
  std::string out;
  AppendError(&out, "FATAL", sqlstate, message);
  co_await SendToClient(out);
}

PGFLOW_ASIO_COROUTINE_BEGIN
Task<bool> Session::Login() {
  std::shared_ptr<const PoolerConfig> config = impl()->config();
  const Clock::time_point login_deadline = Clock::now() + config->client_login_timeout;
  Deadline deadline(client(), config->client_login_timeout);
  login_->deadline = &deadline;
  absl::Cleanup forget_deadline = [this] { login_->deadline = nullptr; };
  boost::system::error_code ec;
  const std::optional<Tunnel>& tunnel = login_->tunnel;
  if (!local_ && !tunnel) client().set_option(tcp::no_delay(true), ec);
  const tcp::endpoint peer = tunnel ? tunnel->peer
                             : local_ ? tcp::endpoint()
                                      : client().remote_endpoint(ec);
  if (tunnel) tls_ = tunnel->tls;
  // (the peer read before a TLS pump takes over the socket)
  login_->address = local_ ? "unix" : peer.address().to_string(ec);
  std::string certificate_user;  // the verified client certificate's common name, if any
  std::optional<StartupPacket> startup =
      co_await ReadStartup(login_deadline, deadline, &certificate_user);
  if (!startup.has_value()) co_return false;
  if (tunnel && certificate_user.empty()) certificate_user = tunnel->certificate_user;
  if (!co_await Admit(*config, *startup, certificate_user)) co_return false;
  std::shared_ptr<const UserList> users = impl()->users();
  std::string looked_up_md5;  // the md5 hash auth.query found, for the server login
  ScramKeys proof;            // the keys of the client's SCRAM proof, for the server login
  if (!co_await Authenticate(*config, *users, certificate_user, &looked_up_md5, &proof)) {
    co_return false;
  }

  std::string out;
  AppendAuthentication(&out, kAuthenticationOk);
  info_.id = impl()->next_client_id.fetch_add(1);
  info_.port = peer.port();
  impl()->Register(this, info_);  // (which draws its BackendKeyData)

  if (admin_) {
    for (auto [name, value] : std::vector<std::pair<std::string, std::string>>{
             {"server_version", "15.0 (pgflow pooler console)"},
             {"server_encoding", "UTF8"},
             {"client_encoding", "UTF8"},
             {"DateStyle", "ISO"},
             {"integer_datetimes", "on"},
             {"standard_conforming_strings", "on"}}) {
      AppendParameterStatus(&out, name, value);
    }
  } else if (!co_await JoinPool(*startup, looked_up_md5, proof, &out)) {
    co_return false;
  }
  AppendBackendKeyData(&out, info_.cancel_pid, info_.cancel_key);
  AppendReadyForQuery(&out, 'I');
  co_return co_await SendToClient(out);
}
PGFLOW_ASIO_COROUTINE_END

PGFLOW_ASIO_COROUTINE_BEGIN
Task<std::optional<StartupPacket>> Session::ReadStartup(Clock::time_point login_deadline,
                                                        const Deadline& deadline,
                                                        std::string* certificate_user) {
  for (int round = 0;; ++round) {
    std::string head;
    if (!co_await ReadExactly(&head, 4)) co_return std::nullopt;
    absl::StatusOr<size_t> length = StartupPacketLength(head);
    if (!length.ok()) {
      co_await SendFatal("08P01", Sv(length.status().message()));
      co_return std::nullopt;
    }
    std::string rest;
    if (!co_await ReadExactly(&rest, *length - 4)) co_return std::nullopt;
    absl::StatusOr<StartupPacket> packet = ParseStartupPacket(head + rest);
    if (!packet.ok()) {
      co_await SendFatal("08P01", Sv(packet.status().message()));
      co_return std::nullopt;
    }
    if (packet->kind == StartupPacket::Kind::kCancel) {
      co_await Cancel(packet->cancel_pid, packet->cancel_key);
      co_return std::nullopt;
    }
    if (packet->kind == StartupPacket::Kind::kStartup) co_return *std::move(packet);
    if (round > 2) co_return std::nullopt;
    // TLS when configured (once); GSSAPI encryption is not offered: the client goes on
    // in the clear, or gives up when its sslmode requires encryption.
    std::shared_ptr<asio::ssl::context> tls =
        packet->kind == StartupPacket::Kind::kSslRequest && !tls_ ? impl()->client_tls() : nullptr;
    if (tls != nullptr && !login_->read_ahead.empty()) {
      // (As PostgreSQL: what follows must be the TLS handshake, which the pump reads from the
      // socket; bytes sent before the answer would be taken as the client's, in the clear.)
      co_await SendFatal("08P01", "received unencrypted data after the SSL request");
      co_return std::nullopt;
    }
    char answer = tls != nullptr ? 'S' : 'N';
    if (!co_await SendToClient(std::string_view(&answer, 1))) co_return std::nullopt;
    if (tls == nullptr) continue;
    const auto left = std::max(
        std::chrono::milliseconds(1),
        std::chrono::duration_cast<std::chrono::milliseconds>(login_deadline - Clock::now()));
    absl::StatusOr<Socket> plain =
        co_await StartTls(&client(), *tls, /*as_server=*/true, TlsMode::kRequire, "", left,
                          certificate_user, &login_->server_name, &login_->tls_link);
    // The deadline's timer, if it fired meanwhile, found no socket to cancel.
    if (plain.ok() && deadline.expired()) plain = absl::DeadlineExceededError("login timed out");
    if (!plain.ok()) {
      login_->refusal = Sv(plain.status().message());
      co_return std::nullopt;
    }
    client() = *std::move(plain);
    tls_ = true;
  }
}
PGFLOW_ASIO_COROUTINE_END

PGFLOW_ASIO_COROUTINE_BEGIN
Task<bool> Session::Admit(const PoolerConfig& config, const StartupPacket& startup,
                          const std::string& certificate_user) {
  // (As with PostgreSQL's `local` lines, a Unix-socket client needs no TLS.)
  if (config.tls.mode >= TlsMode::kRequire && !tls_ && !local_) {
    co_await SendFatal("28000",
                       "the pooler accepts TLS connections only (connect with "
                       "sslmode=require or stronger)");
    co_return false;
  }
  // (Registered, with an id, once logged in.) The address first: BAN ADDRESS is checked below.
  info_.address = login_->address;
  info_.user = startup.Get("user");
  info_.database = startup.Get("database");
  if (info_.database.empty()) info_.database = info_.user;
  if (const std::string& server_name = login_->server_name;
      config.tenant_from_sni && !server_name.empty()) {
    // shop.pooler.example.com: the database entry shop, whatever database the client named.
    const std::string label = server_name.substr(0, server_name.find('.'));
    if (config.databases.contains(label)) info_.database = label;
  }
  if (config.tenant_in_user) {
    // user.tenant: user of the database entry tenant (split at the last dot).
    const size_t dot = info_.user.rfind('.');
    if (dot != std::string::npos && dot > 0 &&
        config.databases.contains(info_.user.substr(dot + 1))) {
      info_.database = info_.user.substr(dot + 1);
      info_.user.resize(dot);
    }
  }
  if (config.tls.mode >= TlsMode::kVerifyCa && !local_) {
    // PostgreSQL's clientcert=verify-ca and verify-full.
    if (certificate_user.empty()) {
      co_await SendFatal("28000",
                         "the pooler requires a client certificate from its "
                         "authorities (tls.ca): connect with sslcert and sslkey");
      co_return false;
    }
    if (config.tls.mode == TlsMode::kVerifyFull && certificate_user != info_.user) {
      co_await SendFatal("28000", Cat("certificate validation (clientcert=verify-full) failed "
                                      "for user \"",
                                      info_.user, "\": CN mismatch"));
      co_return false;
    }
  }
  if (!startup.Get("replication").empty() && startup.Get("replication") != "false" &&
      startup.Get("replication") != "0") {
    co_await SendFatal("08P01", "replication connections are not supported by the pooler");
    co_return false;
  }
  const std::string banned = impl()->BanOf(info_.user, info_.address, info_.database);
  if (!banned.empty()) {
    co_await SendFatal("28000", banned);
    co_return false;
  }
  if (!impl()->accepting()) {
    co_await SendFatal("57P03", "the pooler is suspended (SUSPEND): try again after RESUME");
    co_return false;
  }
  counted_ = true;
  if (impl()->clients.fetch_add(1) >= config.max_client_conn) {
    co_await SendFatal(
        "53300", Cat("too many clients already (max_client_conn ", config.max_client_conn, ")"));
    co_return false;
  }
  admin_ = database() == "pgflow" || database() == "pgbouncer";
  if (admin_) impl()->consoles.fetch_add(1);
  co_return co_await AdmitTo(config);
}
PGFLOW_ASIO_COROUTINE_END

PGFLOW_ASIO_COROUTINE_BEGIN
Task<bool> Session::AdmitTo(const PoolerConfig& config) {
  if (admin_) {
    if (std::find(config.admin.users.begin(), config.admin.users.end(), user()) ==
        config.admin.users.end()) {
      co_await SendFatal("28000",
                         Cat("user \"", user(), "\" may not use the admin console (admin.users)"));
      co_return false;
    }
    co_return true;
  }
  const DatabaseOptions* db = FindDatabase(config, database());
  if (db == nullptr) {
    co_await SendFatal("3D000",
                       Cat("database \"", database(), "\" is not in the pooler's configuration"));
    co_return false;
  }
  if (db->max_client_conn > 0) {
    // Looked up, not made: a client not yet authenticated makes nothing. (JoinPool counts.)
    std::shared_ptr<Tenant> tenant = impl()->FindTenant(database());
    if (tenant != nullptr && tenant->clients.load() >= db->max_client_conn) {
      co_await SendFatal("53300", Cat("too many clients of database ", database(),
                                      " (max_client_conn ", db->max_client_conn, ")"));
      co_return false;
    }
  }
  co_return true;
}
PGFLOW_ASIO_COROUTINE_END

PGFLOW_ASIO_COROUTINE_BEGIN
Task<bool> Session::JoinPool(const StartupPacket& startup, const std::string& looked_up_md5,
                             const ScramKeys& proof, std::string* out) {
  pool_ = impl()->PoolFor(database(), user());
  if (pool_ == nullptr) {
    co_await SendFatal("3D000", Cat("database \"", database(), "\" was removed"));
    co_return false;
  }
  pool_->clients.fetch_add(1);
  tenant_ = impl()->TenantFor(database());
  const int others = tenant_->clients.fetch_add(1);
  {
    const DatabaseOptions* db = FindDatabase(*impl()->config(), database());
    if (db != nullptr && db->max_client_conn > 0 && others >= db->max_client_conn) {
      co_await SendFatal("53300", Cat("too many clients of database ", database(),
                                      " (max_client_conn ", db->max_client_conn, ")"));
      co_return false;
    }
  }
  target_ = pool_.get();
  protocol_.Start(pool_.get(), &info_);
  impl()->RefreshConfig(thread_);
  routing_version_ = thread_->config_version;
  if (std::shared_ptr<Router> router = impl()->RouterFor(database())) {
    routed_ = std::make_unique<Routed>();
    routed_->router = std::move(router);
    protocol_.SetRouting(routed_->router->NewClient(0));
    const DatabaseOptions* db = FindDatabase(*impl()->config(), database());
    const size_t replicas = db != nullptr ? db->replica_upstreams.size() : 0;
    for (size_t node = 1; node <= replicas; ++node) NodePool(static_cast<int>(node));
  }
  ClientSettings& settings = protocol_.settings();
  // What the login learned of the user's secret, for the pools that log in as the user.
  std::vector<Pool*> pools = {pool_.get()};
  if (routed_ != nullptr) {
    for (const std::shared_ptr<Pool>& replica : routed_->replica_pools) {
      if (replica != nullptr) pools.push_back(replica.get());
    }
  }
  for (Pool* pool : pools) {
    if (!proof.client_key.empty() && pool->login_user() == user()) {
      pool->OfferScramKeys(proof.client_key, proof.server_key);
    }
    if (!looked_up_md5.empty() && pool->login_user() == user()) pool->OfferMd5Hash(looked_up_md5);
  }
  SettingsMap params;  // the client's startup settings
  for (const auto& [name, value] : startup.parameters) {
    if (!IsConnectionParameter(name)) params[Lower(name)] = value;
  }
  // `options` (PGOPTIONS): command-line style settings, -c name=value or --name=value.
  if (absl::Status s = ParseOptionsParameter(startup.Get("options"), &params); !s.ok()) {
    co_await SendFatal("08P01", Sv(s.message()));
    co_return false;
  }

  std::vector<std::pair<std::string, std::string>> server_params = pool_->ServerParams();
  if (server_params.empty()) {
    // No server login yet: one now, to learn what to tell the client (server_version...).
    info_.state = 2;
    absl::StatusOr<std::unique_ptr<ServerConn>> server =
        co_await pool_->Acquire(&thread_->context, nullptr);
    info_.state = 0;
    if (!server.ok()) {
      auto [sqlstate, message] = SqlstateOf(server.status());
      co_await SendFatal(sqlstate, message);
      co_return false;
    }
    server_params = pool_->ServerParams();
    pool_->Release(*std::move(server), true);
  }
  for (const auto& [name, value] : server_params) {
    auto mine = params.find(Lower(name));
    AppendParameterStatus(out, name, mine != params.end() ? mine->second : value);
  }
  settings.defaults = pool_->Defaults();
  settings.stamp = pool_->SettingsStamp(params, settings.defaults.get());
  if (protocol_.mode() == PoolMode::kSession && !params.empty()) {
    // Session mode: the server connection starts with the client's settings, so that RESET
    // returns to them (SET would make them the session's, not its defaults).
    startup_ = std::make_unique<StartupSettings>();
    startup_->settings.assign(params.begin(), params.end());
    std::sort(startup_->settings.begin(), startup_->settings.end());
    for (const auto& [name, value] : startup_->settings) {
      startup_->key += Cat(name, "=", value, "\n");
    }
  }
  // Clients that log in alike share one copy of their settings (a change copies them).
  settings.Share(pool_->ShareSettings(settings.stamp, std::move(params)));
  co_return true;
}
PGFLOW_ASIO_COROUTINE_END

Task<std::optional<std::string>> Session::ReadPasswordMessage() {
  std::string head;
  if (!co_await ReadExactly(&head, 5)) co_return std::nullopt;
  int32_t length = ReadInt32(head.data() + 1);
  if (head[0] != 'p' || length < 4 || length > 65536) co_return std::nullopt;
  std::string body;
  if (!co_await ReadExactly(&body, static_cast<size_t>(length) - 4)) co_return std::nullopt;
  co_return body;
}

Task<void> Session::Cancel(int32_t pid, int32_t key) {
  CancelForward* forward = nullptr;
  asio::io_context* waiting = nullptr;  // the thread of a client with no query on a server
  std::weak_ptr<Session> client;
  impl()->WithClient(pid, key, [&](Session& session) {
    client = session.weak_from_this();
    std::optional<CancelTarget> target = TakeCancelTarget(session.info_);
    if (!target.has_value()) {
      waiting = &session.context();
      return;
    }
    // The requester's connection is closed once PostgreSQL closed the one passing it on, as
    // PostgreSQL closes it directly: a client that waits for that knows its query was
    // signalled. (Built apart from the co_await: GCC 12 destroys an aggregate's temporaries
    // built inside a co_await's operand twice.)
    forward = new CancelForward{impl(), &thread_->context, &session.context(), std::move(client),
                                *std::move(target)};
  });
  if (waiting != nullptr) {
    // No query on a server: one may wait for a server connection, which its session ends.
    asio::post(waiting->get_executor(), [weak = std::move(client)] {
      if (std::shared_ptr<Session> session = weak.lock()) session->CancelWaiting();
    });
  }
  if (forward != nullptr) co_await ForwardCancel(forward);
}

std::optional<Session::CancelTarget> Session::TakeCancelTarget(ClientInfo& client) {
  absl::MutexLock lock(&client.mu);
  const ServerConn* server = client.server;
  if (server == nullptr) return std::nullopt;
  ++client.cancels_in_flight;
  return CancelTarget{.server = server->remote,
                      .socket_path = server->socket_path,
                      .pid = server->backend_pid,
                      .key = server->backend_key};
}

Task<void> Session::ForwardCancel(CancelForward* forward) {
  std::unique_ptr<CancelForward> hold(forward);
  const CancelTarget& target = forward->target;
  // Settled: PostgreSQL has signalled the backend (it closed the connection after reading the
  // request), or certainly never will (no connection was made).
  bool settled = false;
  Socket socket(forward->context->get_executor());
  Deadline deadline(socket, forward->impl->config()->server_connect_timeout);
  boost::system::error_code ec;
  if (!target.socket_path.empty()) {
    absl::StatusOr<Socket> local = ConnectLocal(forward->context, target.socket_path);
    if (local.ok()) {
      socket = *std::move(local);
    } else {
      ec = asio::error::not_connected;
      LogDebug("pooler: cancel request not passed on: %s", local.status().message());
    }
  } else {
    co_await socket.async_connect(target.server, asio::redirect_error(kUseTask, ec));
    if (ec) LogDebug("pooler: cancel request not passed on: %s", ec.message());
  }
  if (ec) {
    settled = true;
  } else {
    std::string out;
    AppendCancelRequest(&out, target.pid, target.key);
    co_await asio::async_write(socket, asio::buffer(out), asio::redirect_error(kUseTask, ec));
    char byte;
    if (!ec) {
      co_await socket.async_read_some(asio::buffer(&byte, 1), asio::redirect_error(kUseTask, ec));
      settled = ec == asio::error::eof;
    }
    if (!settled) {
      LogInfo(
          "pooler: a cancel request passed on to server pid %d got no answer (%s): its "
          "connection is closed when given back",
          target.pid, deadline.expired() ? "timed out" : ec.message());
    }
  }
  // (Counted on the client's thread, where alone its session may be kept alive and let go.)
  asio::post(forward->client_context->get_executor(),
             [weak = std::move(forward->client), settled] {
               std::shared_ptr<Session> session = weak.lock();
               if (session != nullptr) session->CancelSettled(settled);
             });
}

void Session::CancelSettled(bool settled) {
  bool last;
  {
    absl::MutexLock lock(&info_.mu);
    --info_.cancels_in_flight;
    if (!settled) info_.cancel_unsettled = true;
    last = info_.cancels_in_flight == 0;
  }
  // The client's session may give its server connection back now.
  if (last && relaying()) Pump();
}

Task<absl::StatusOr<std::optional<UserSecret>>> Session::LookUpSecret(const PoolerConfig& config) {
  std::shared_ptr<Pool> pool = impl()->PoolFor(database(), config.auth.user);
  if (pool == nullptr) co_return std::nullopt;
  absl::StatusOr<std::unique_ptr<ServerConn>> server =
      co_await pool->Acquire(&thread_->context, nullptr);
  absl::Status failure;
  QueryResult result;
  if (server.ok()) {
    (*server)->MoveTo(&thread_->context);  // (asio's calls below)
    result =
        co_await QueryFirstRow(**server, config.auth.query, user(), config.server_connect_timeout);
    pool->Release(*std::move(server), result.reusable);
    failure = result.status;
  } else {
    failure = server.status();
  }
  if (!failure.ok()) {
    LogWarning("pooler: auth.query for user %s on database %s, as %s: %s", user(), database(),
               config.auth.user, failure.message());
    co_return absl::UnavailableError(
        "could not look the user up (auth.query failed: the pooler's log says why)");
  }
  if (!result.row.has_value() || result.row->size() < 2 || !(*result.row)[1].has_value()) {
    co_return std::nullopt;
  }
  std::optional<UserSecret> secret = SecretFromText(*std::move((*result.row)[1]));
  if (!secret.has_value()) {
    LogWarning(
        "pooler: auth.query for user %s returned a secret that is not a valid SCRAM "
        "secret",
        user());
  }
  co_return secret;
}

PGFLOW_ASIO_COROUTINE_BEGIN
Task<bool> Session::Authenticate(const PoolerConfig& config, const UserList& users,
                                 const std::string& certificate_user, std::string* looked_up_md5,
                                 ScramKeys* proof) {
  const bool no_password =
      config.auth.method == AuthMethod::kTrust || config.auth.method == AuthMethod::kCert;
  auto entry = users.find(user());
  const UserSecret* secret = entry == users.end() ? nullptr : &entry->second;
  std::optional<UserSecret> looked_up;
  if (secret == nullptr && !config.auth.user.empty() && !no_password &&
      FindDatabase(config, database()) != nullptr) {
    absl::StatusOr<std::optional<UserSecret>> found = co_await LookUpSecret(config);
    if (!found.ok()) {
      co_await SendFatal("58000", Sv(found.status().message()));
      co_return false;
    }
    looked_up = *std::move(found);
    if (looked_up.has_value()) {
      secret = &*looked_up;
      if (secret->kind == UserSecret::Kind::kMd5) *looked_up_md5 = secret->text;
    }
  }
  login_->password_detail = secret == nullptr ? "unknown user" : "wrong password";
  std::string refused = Cat("password authentication failed for user \"", user(), "\"");
  if (config.auth.method == AuthMethod::kCert && (local_ || certificate_user != user())) {
    co_await SendFatal("28000", Cat("certificate authentication failed for user \"", user(), "\""));
    co_return false;
  }
  if (no_password) {
    if (!config.auth.users.empty() && secret == nullptr) {
      co_await SendFatal("28000", Cat("user \"", user(), "\" is not in the users file"));
      co_return false;
    }
    co_return true;
  }
  // An empty secret lists a user for trust only: no password matches it.
  if (secret != nullptr && secret->kind == UserSecret::Kind::kPlain && secret->text.empty()) {
    secret = nullptr;
    login_->password_detail =
        "the users file gives the user no password: listed for trust only";
  }
  bool use_scram = config.auth.method == AuthMethod::kScram ||
                   (secret != nullptr && secret->kind == UserSecret::Kind::kScram);
  if (!use_scram) {
    // md5. An unknown user is asked for a password too and gets a wrong password's answer.
    std::string salt = RandomBytes(4);
    std::string out;
    AppendAuthentication(&out, kAuthenticationMd5Password, salt);
    co_await SendToClient(out);  // (a client gone fails the next read)
    std::optional<std::string> answer = co_await ReadPasswordMessage();
    if (!answer.has_value()) co_return false;
    if (secret == nullptr) {
      co_await SendFatal("28P01", refused);
      co_return false;
    }
    std::string hash = secret->kind == UserSecret::Kind::kMd5
                           ? secret->text
                           : Md5PasswordHash(user(), secret->text);
    std::string expected = Md5Response(hash, salt);
    if (answer->size() != expected.size() + 1 ||
        CRYPTO_memcmp(answer->data(), expected.data(), expected.size()) != 0) {
      co_await SendFatal("28P01", refused);
      co_return false;
    }
    co_return true;
  }
  // SCRAM. A user who cannot log in by it (unknown, or listed by an md5 hash) goes through
  // the same exchange with a mock secret, as with PostgreSQL: the answers do not tell
  // whether the user exists.
  ScramSecret scram_secret;
  if (secret == nullptr || secret->kind == UserSecret::Kind::kMd5) {
    if (secret != nullptr) {
      login_->password_detail =
          "the users file holds an md5 hash of the password, which SCRAM cannot use: give the "
          "password or its SCRAM secret";
    }
    scram_secret = MockScramSecret(user(), impl()->mock_key());
  } else if (!secret->scram.salt.empty()) {
    scram_secret = secret->scram;  // a SCRAM secret, or derived from the password at load
  } else {
    scram_secret = MakeScramSecret(secret->text, RandomBytes(16), kDefaultScramIterations);
  }
  ScramServer server(scram_secret, RandomBytes(18));
  std::string out;
  AppendAuthentication(&out, kAuthenticationSasl, std::string_view("SCRAM-SHA-256\0\0", 15));
  co_await SendToClient(out);  // (a client gone fails the next read)
  std::optional<std::string> initial = co_await ReadPasswordMessage();
  if (!initial.has_value()) co_return false;
  BodyReader reader(*initial);
  std::optional<std::string_view> mechanism = reader.CString();
  std::optional<int32_t> size = reader.Int32();
  if (!mechanism.has_value() || *mechanism != "SCRAM-SHA-256" || !size.has_value() || *size < 0 ||
      reader.rest().size() != static_cast<size_t>(*size)) {
    co_await SendFatal("08P01", "malformed SASLInitialResponse (expected SCRAM-SHA-256)");
    co_return false;
  }
  absl::StatusOr<std::string> server_first = server.ClientFirst(reader.rest());
  if (!server_first.ok()) {
    co_await SendFatal("08P01", Cat("SCRAM: ", server_first.status().message()));
    co_return false;
  }
  out.clear();
  AppendAuthentication(&out, kAuthenticationSaslContinue, *server_first);
  co_await SendToClient(out);  // (a client gone fails the next read)
  std::optional<std::string> final_message = co_await ReadPasswordMessage();
  if (!final_message.has_value()) co_return false;
  absl::StatusOr<std::string> server_final = server.ClientFinal(*final_message);
  if (!server_final.ok()) {
    if (absl::IsPermissionDenied(server_final.status())) {
      co_await SendFatal("28P01", refused);
    } else {
      co_await SendFatal("08P01", Cat("SCRAM: ", server_final.status().message()));
    }
    co_return false;
  }
  out.clear();
  AppendAuthentication(&out, kAuthenticationSaslFinal, *server_final);
  login_->unsent += out;  // (sent with AuthenticationOk, or the refusal)
  proof->client_key = server.client_key();
  proof->server_key = scram_secret.server_key;
  co_return true;
}
PGFLOW_ASIO_COROUTINE_END

void Session::LogRefusal() {
  // (No refusal: the client left, as psql does to ask its user for a password.)
  if (login_->refusal.empty()) return;
  impl()->login_failures().Note({.address = login_->address,
                                .user = info_.user,
                                .database = info_.database,
                                .reason = login_->refusal});
}

void Session::CloseClient() {
  boost::system::error_code ec;
  if (login_ == nullptr) return;
  client().shutdown(tcp::socket::shutdown_both, ec);
  client().close(ec);
}

Task<void> Session::AdminLoop() {
  std::string buffer = std::move(login_->read_ahead);  // (sent before its ReadyForQuery)
  boost::system::error_code ec;
  while (!killed_) {
    absl::StatusOr<WholeMessage> message = co_await ReadWholeMessage(client(), buffer, 1 << 20);
    if (!message.ok() || message->type == 'X') co_return;
    std::string out;
    if (message->type != 'Q') {
      AppendError(&out, "FATAL", "08P01",
                  "the admin console speaks the simple query protocol only");
      co_await SendToClient(out);
      co_return;
    }
    std::string sql = message->body;
    while (!sql.empty() && sql.back() == '\0') sql.pop_back();
    AdminReply reply = RunAdminCommand(impl(), sql);
    // Commands that wait (PAUSE, WAIT_CLOSE, SUSPEND) poll until done: every millisecond for
    // the first 200, as the transactions a PAUSE waits for usually end within milliseconds (and
    // a cutover's clients wait meanwhile), then every 50 ms.
    for (int polls = 0; reply.wait_until && !reply.wait_until(); ++polls) {
      Timer pause(thread_->context.get_executor());
      pause.expires_after(std::chrono::milliseconds(polls < 200 ? 1 : 50));
      co_await pause.async_wait(asio::redirect_error(kUseTask, ec));
      if (killed_) co_return;
    }
    out = std::move(reply.messages);
    AppendReadyForQuery(&out, 'I');
    if (!co_await SendToClient(out)) co_return;
    if (reply.after) reply.after();
  }
}

}  // namespace pgflow::pooler
