// The relay of a logged-in session (pooler/session.h).
//
// After login the client's socket leaves asio for the thread's Reactor, and the relay is a
// state machine run from there: each report of a ready socket, and the end of a wait for a
// server connection, runs Pump, which does what the sockets allow without waiting and
// returns. Nothing of it waits in a coroutine: an idle client holds its session only, and
// a transaction costs no coroutine frame unless it waits for a server connection.
//
// Bounds: the client is read while less than kFlushAt of its bytes wait to be relayed, the
// server while less than kFlushAt wait for the client (its answers stream through).
//
// Every function the relay runs per message is here, in one source, for the compiler to see
// them together.

#include "pooler/session.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/asio_support.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "pooler/pool.h"
#include "pooler/pooler_config.h"
#include "pooler/protocol.h"
#include "pooler/query_text.h"
#include "pooler/reactor.h"

namespace pgflow::pooler {
namespace {

// A server message the relay must read whole (ReadyForQuery, ParameterStatus, errors...) is
// at most this large; the rest streams through in pieces.
constexpr size_t kMaxInspectedServerMessage = 1 << 20;
// Bytes gathered for one side before they are written out mid-batch.
constexpr size_t kFlushAt = 64 * 1024;
// Rounds of a session's relay in one pass before the thread's other sessions get theirs.
constexpr int kPumpRounds = 32;

}  // namespace

void Session::Kill() {
  killed_ = true;
  if (relaying_) {
    Pump();
    return;
  }
  boost::system::error_code ec;
  client_.cancel(ec);  // (logging in, or the console)
}

void Session::DismissWaiting() {
  if (!relaying_ || finished_ || client_gone_ || closing_ || !attaching_) return;
  EndWithFatal("57P01", "the pooler is shutting down (SHUTDOWN WAIT_FOR_SERVERS): connect again");
  Pump();
}

void Session::CancelWaiting() {
  if (!relaying_ || finished_ || client_gone_ || closing_) return;
  if (!attaching_ || wait_cancelled_) {
    // It got a server connection meanwhile: the request goes there, if a query runs on it.
    if (server_ != nullptr && relay_ != nullptr && !relay_->expect.empty()) {
      if (std::optional<CancelTarget> target = TakeCancelTarget(*info_)) {
        asio::co_spawn(
            thread_->context,
            ForwardCancel(new CancelForward{impl_, &thread_->context, info_, *std::move(target)}),
            asio::detached);
      }
    }
    return;
  }
  if (wait_ != nullptr) {
    pool_->Abandon(std::exchange(wait_, {}));
    thread_->waiting.erase(this);
    attaching_ = false;
    info_->state = 0;
  } else {
    wait_cancelled_ = true;
  }
  AppendError(&relay().to_client, "ERROR", "57014", "canceling statement due to user request");
  drop_until_sync_ = true;
  client_parsed_ = false;  // (the query's messages are dropped now)
  Pump();
}

void Session::SweepWaits(NetThread* thread) {
  const Clock::time_point now = Clock::now();
  std::vector<Session*> due;
  for (Session* session : thread->waiting) {
    const Clock::duration limit = session->pool_->QueueWaitLimit();
    if (limit != Clock::duration::max() && now - Pool::WaitSince(*session->wait_) >= limit) {
      due.push_back(session);
    }
  }
  for (Session* session : due) session->EndWait();
}

void Session::AbandonRelays(NetThread* thread) {
  thread->waiting.clear();
  while (Session* session = thread->relaying) {
    if (session->wait_ != nullptr) session->pool_->Abandon(std::exchange(session->wait_, {}));
    session->finished_ = true;
    session->Unlink();
    session->CloseClientFd();
    if (session->server_ != nullptr) session->Detach(false);
    std::shared_ptr<Session> last = std::move(session->self_);
  }
}

void Session::StartRelay() {
  boost::system::error_code ec;
  client_fd_ = client_.release(ec);
  if (ec || client_fd_ < 0) {
    LogDebug("pooler: client %d: cannot take its socket over: %s", info_->id, ec.message());
    client_fd_ = -1;
    return;
  }
  self_ = shared_from_this();
  relaying_ = true;
  next_ = thread_->relaying;
  if (next_ != nullptr) next_->prev_ = this;
  thread_->relaying = this;
  if (!thread_->reactor.Add(client_fd_, Reactor::kRead, this)) {
    LogWarning("pooler: cannot watch a client's socket: %s", strerror(errno));
    ::close(std::exchange(client_fd_, -1));
    client_gone_ = true;
  }
  Pump();
}

void Session::OnReady(int fd, uint32_t events) {
  const bool broken = events & (EPOLLHUP | EPOLLERR);
  if (fd == client_fd_ && fd >= 0) {
    if (events & (EPOLLIN | EPOLLRDHUP) || broken) client_in_ = true;
    if (events & EPOLLOUT || broken) client_out_ = true;
    client_hup_ = client_hup_ || broken;
  } else if (server_ != nullptr && fd == server_->fd()) {
    if (events & (EPOLLIN | EPOLLRDHUP) || broken) server_in_ = true;
    if (events & EPOLLOUT || broken) server_out_ = true;
    server_hup_ = server_hup_ || broken;
  } else {
    return;  // stale: the socket went on meanwhile
  }
  Pump();
}

void Session::Pump() {
  if (pumping_ || finished_) return;
  pumping_ = true;
  impl_->RefreshConfig(thread_);
  // A bound on one pass (each round reads at most a chunk from each side): a client reading
  // a large result as fast as the server makes it would otherwise hold the thread.
  int rounds = 0;
  for (bool progress = true; progress && !finished_;) {
    if (++rounds > kPumpRounds) {
      asio::post(thread_->context, [self = shared_from_this()] { self->Pump(); });
      break;
    }
    progress = false;
    if (killed_ && (!client_gone_ || server_ != nullptr)) {
      if (server_ != nullptr) Detach(false);  // (a cleanup under way included)
      if (!client_gone_) ClientGone();
      progress = true;
    }
    if (server_ != nullptr) progress |= ServerSide();
    progress |= WriteClient();
    progress |= ClientSide();
    if (server_ != nullptr) progress |= WriteServer();
    if (server_ != nullptr && !attaching_) {
      progress |= client_gone_ ? SettleAfterClientGone() : Release();
    }
    if (client_gone_ && server_ == nullptr && !attaching_) Finish();
  }
  pumping_ = false;
  if (finished_) return;
  UpdateInterest();
  if (relay_ != nullptr && server_ == nullptr && !attaching_ && !closing_ && Settled()) {
    thread_->GiveRelay(std::move(relay_));  // idle: the relay's state goes back
  }
}

bool Session::Settled() const {
  const RelayState& r = *relay_;
  return r.cbuf.empty() && r.sbuf.empty() && r.to_server.empty() && r.to_client.empty() &&
         r.client_pass == 0 && r.server_pass == 0 && r.expect.empty();
}

bool Session::ClientSide() {
  if (client_gone_ || closing_) return false;
  RelayState& r = relay();
  bool progress = false;
  if (client_in_ && (r.cbuf.size() < ClientReadLimit() || client_hup_)) {
    const ssize_t n = ReceivePending(client_fd_, r.cbuf, client_in_, client_hup_);
    if (n < 0) {
      LogDebug("pooler: client %d: read: %s", info_->id, ReadFailure());
      ClientGone();
      return true;
    }
    if (n > 0) {
      pool_->stats().bytes_received.fetch_add(n, std::memory_order_relaxed);
      client_parsed_ = false;
      progress = true;
    }
  }
  if (!client_parsed_ && (!attaching_ || drop_until_sync_) && !shape_wait_ && !r.cbuf.empty() &&
      r.to_server.size() < kFlushAt) {
    ProcessClientInput();
    progress = true;
  }
  return progress;
}

size_t Session::ClientReadLimit() const { return std::max(kFlushAt, client_need_); }

void Session::ProcessClientInput() {
  client_need_ = 0;
  const PoolerConfig& config = *thread_->config;  // (refreshed by Pump)
  RelayState& r = relay();
  size_t pos = 0;
  for (bool more = true; more;) {
    std::string fatal_message;
    switch (ProcessClientBuffer(config, &pos, &fatal_message)) {
      case ClientStep::kMore:
        client_parsed_ = true;
        more = false;
        break;
      case ClientStep::kAttach:
        if (attaching_) {
          more = false;  // (an Acquire under way after a cancelled wait: it resumes the relay)
        } else if (!TryAttach()) {
          StartAttach();
          more = false;
        } else if (closing_) {
          more = false;  // (its connection could not be watched)
        }
        break;
      case ClientStep::kFlush:
        more = false;  // written by Pump, then relayed on
        break;
      case ClientStep::kWait:
        shape_wait_ = true;  // (LearnShape or DropUntilSync lets it go on)
        more = false;
        break;
      case ClientStep::kFatal:
        if (fatal_message.empty()) {
          ClientGone();
        } else {
          EndWithFatal("08P01", fatal_message);
        }
        more = false;
        break;
      case ClientStep::kLeave:
        ClientGone();
        more = false;
        break;
    }
  }
  r.cbuf.erase(0, pos);
}

bool Session::TryAttach() {
  std::unique_ptr<ServerConn> server = pool_->TryAcquire(&thread_->context, startup_settings());
  if (server == nullptr) return false;
  Attached(std::move(server));
  return true;
}

void Session::StartAttach() {
  attaching_ = true;
  info_->state = 2;
  wait_ = pool_->Queue(&thread_->context, startup_settings(), weak_from_this());
  if (wait_ != nullptr) {
    thread_->waiting.insert(this);
    return;
  }
  AcquireLater(nullptr);
}

void Session::PoolAnswered(const std::shared_ptr<Pool::Waiter>& waiter) {
  if (waiter == wait_ && !finished_) EndWait();
}

void Session::EndWait() {
  std::shared_ptr<Pool::Waiter> waiter = std::move(wait_);
  thread_->waiting.erase(this);
  std::unique_ptr<ServerConn> server = pool_->TakeHanded(waiter);
  if (server != nullptr) {
    AttachDone(std::move(server));
    return;
  }
  AcquireLater(waiter);
}

void Session::AcquireLater(const std::shared_ptr<Pool::Waiter>& resumed) {
  asio::co_spawn(thread_->context, AttachLater(new AttachArgs{self_, resumed}), asio::detached);
}

Task<void> Session::AttachLater(AttachArgs* args) {
  std::unique_ptr<AttachArgs> hold(args);
  Session* self = args->self.get();
  absl::StatusOr<std::unique_ptr<ServerConn>> server = co_await self->pool_->Acquire(
      &self->thread_->context, self->startup_settings(), &args->resumed);
  self->AttachDone(std::move(server));
}

void Session::AttachDone(absl::StatusOr<std::unique_ptr<ServerConn>> server) {
  attaching_ = false;
  const bool cancelled = std::exchange(wait_cancelled_, false);
  if (finished_) {
    if (server.ok()) pool_->Release(*std::move(server), true);
    return;
  }
  if (!server.ok()) {
    info_->state = 0;
    auto [sqlstate, message] = SqlstateOf(server.status());
    if (cancelled && (relay_ == nullptr || relay_->cbuf.empty())) {
      // The query this wait was for was cancelled and answered; no other waits.
      LogDebug("pooler: client %d: a cancelled wait ended: %s", info_->id, message);
    } else {
      EndWithFatal(sqlstate, message);
    }
  } else if (client_gone_ || killed_ || closing_) {
    info_->state = 0;
    pool_->Release(*std::move(server), true);
  } else {
    Attached(*std::move(server));
  }
  Pump();
}

void Session::Attached(std::unique_ptr<ServerConn> server) {
  info_->state = 1;
  server_ = std::move(server);
  {
    absl::MutexLock lock(&info_->mu);
    info_->server = server_->remote;
    info_->server_path = server_->socket_path.empty() ? nullptr : &server_->socket_path;
    info_->server_pid = server_->backend_pid;
    info_->server_key = server_->backend_key;
  }
  server_in_ = server_out_ = server_hup_ = false;
  server_->LeaveAsio();
  if (!thread_->reactor.Watch(server_->fd(), &server_->watched_by, Reactor::kRead, this)) {
    LogWarning("pooler: cannot watch a server connection: %s", strerror(errno));
    EndWithFatal("53000", "the pooler could not watch a server connection (see its log)");
    return;
  }
  // The client's settings, where the connection may differ (it was last brought to other
  // settings, or they changed since).
  std::string sql;
  if (settings_stamp_ == 0 || server_->settings_stamp != settings_stamp_) AddSettingsSync(&sql);
  if (!sql.empty()) {
    AppendQuery(&relay().to_server, sql);
    relay().expect.push_back({Expect::kSyncSwallow, {}});
  }
}

ssize_t Session::ReceivePending(int fd, std::string& buffer, bool& in, bool& hup) {
  ssize_t n;
  do {
    n = ::recv(fd, thread_->scratch.get(), kReadChunk, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    buffer.append(thread_->scratch.get(), static_cast<size_t>(n));
    if (static_cast<size_t>(n) < kReadChunk) in = false;
    return n;
  }
  if (n == 0) {
    errno = 0;
    return -1;
  }
  if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
  in = false;
  hup = false;
  return 0;
}

const char* Session::ReadFailure() { return errno == 0 ? "end of stream" : strerror(errno); }

ssize_t Session::SendPending(int fd, std::string& out, size_t& sent, bool& blocked,
                             bool& writable) {
  ssize_t n;
  do {
    n = ::send(fd, out.data() + sent, out.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    n = 0;
  }
  sent += static_cast<size_t>(n);
  blocked = sent < out.size();
  if (blocked) {
    writable = false;
  } else {
    out.clear();
    sent = 0;
  }
  return n;
}

bool Session::WriteServer() {
  RelayState& r = relay();
  if (r.to_server.empty() || (server_blocked_ && !server_out_)) return false;
  const ssize_t n =
      SendPending(server_->fd(), r.to_server, r.server_sent, server_blocked_, server_out_);
  if (n < 0) {
    LogDebug("pooler: client %d: write to server: %s", info_->id, strerror(errno));
    ServerLost();
    return true;
  }
  return n > 0;
}

bool Session::WriteClient() {
  if (relay_ == nullptr || relay_->to_client.empty()) {
    if (closing_ && client_fd_ >= 0) {
      ClientGone();
      return true;
    }
    return false;
  }
  RelayState& r = *relay_;
  if (client_gone_) {
    r.to_client.clear();
    r.client_sent = 0;
    return true;
  }
  if (client_blocked_ && !client_out_) return false;
  const ssize_t n =
      SendPending(client_fd_, r.to_client, r.client_sent, client_blocked_, client_out_);
  if (n < 0) {
    LogDebug("pooler: client %d: write: %s", info_->id, strerror(errno));
    ClientGone();
    return true;
  }
  pool_->stats().bytes_sent.fetch_add(n, std::memory_order_relaxed);
  return n > 0;
}

void Session::UpdateInterest() {
  const RelayState* r = relay_.get();
  if (client_fd_ >= 0) {
    uint32_t want = 0;
    if (!client_gone_ && !closing_ && (r == nullptr || r->cbuf.size() < ClientReadLimit())) {
      want |= Reactor::kRead;
    }
    if (r != nullptr && !r->to_client.empty()) want |= Reactor::kWrite;
    if (!thread_->reactor.Modify(client_fd_, want)) WatchFailed("its socket");
  }
  if (server_ != nullptr) {
    uint32_t want = 0;
    if (r == nullptr || r->to_client.size() < kFlushAt) want |= Reactor::kRead;
    if (r != nullptr && !r->to_server.empty()) want |= Reactor::kWrite;
    if (!thread_->reactor.Modify(server_->fd(), want)) WatchFailed("its server connection");
  }
}

void Session::WatchFailed(std::string_view what) {
  LogWarning("pooler: client %d: cannot watch %s: %s", info_->id, what, strerror(errno));
  killed_ = true;
  asio::post(thread_->context, [self = shared_from_this()] { self->Pump(); });
}

void Session::EndWithFatal(std::string_view sqlstate, std::string_view message) {
  if (!client_gone_) AppendError(&relay().to_client, "FATAL", sqlstate, message);
  closing_ = true;
  if (server_ != nullptr) Detach(false);
}

void Session::ClientGone() {
  client_gone_ = true;
  CloseClientFd();
  if (relay_ != nullptr) {
    relay_->to_client.clear();
    relay_->client_sent = 0;
    relay_->cbuf.clear();
  }
}

void Session::CloseClientFd() {
  if (client_fd_ < 0) return;
  thread_->reactor.Remove(client_fd_);
  ::shutdown(client_fd_, SHUT_RDWR);
  ::close(std::exchange(client_fd_, -1));
}

void Session::Unlink() {
  if (!relaying_) return;
  relaying_ = false;
  if (prev_ != nullptr) {
    prev_->next_ = next_;
  } else {
    thread_->relaying = next_;
  }
  if (next_ != nullptr) next_->prev_ = prev_;
  prev_ = next_ = nullptr;
}

void Session::Finish() {
  finished_ = true;
  CloseClientFd();
  Unlink();
  if (relay_ != nullptr) thread_->GiveRelay(std::move(relay_));
  asio::post(thread_->context, [last = std::move(self_)] {});
}

void Session::AddSettingsSync(std::string* out) {
  std::string& sql = *out;
  for (const auto& [name, value] : params_) {
    auto theirs = server_->params.find(name);
    if (theirs != server_->params.end() && theirs->second == value) continue;
    sql += Cat("SET ", QuoteIdentifier(name), " = ", QuoteLiteral(value), ";");
    server_->params[name] = value;
  }
  if (defaults_ != nullptr) {
    for (auto it = server_->params.begin(); it != server_->params.end();) {
      const std::string& name = it->first;
      if (params_.contains(name) || IsReadOnlyParameter(name)) {
        ++it;
        continue;
      }
      auto standard = defaults_->find(name);
      if (standard == defaults_->end()) {
        // A setting another client's startup gave (not reported by PostgreSQL): undone.
        sql += Cat("RESET ", QuoteIdentifier(name), ";");
        server_->params.erase(it++);
        continue;
      }
      if (standard->second != it->second) {
        sql += Cat("SET ", QuoteIdentifier(name), " = ", QuoteLiteral(standard->second), ";");
        it->second = standard->second;
      }
      ++it;
    }
  }
  server_->settings_stamp = settings_stamp_;
}

void Session::Rewrite(char type, std::string_view message, const PoolerConfig& config) {
  std::string_view body = message.substr(5);
  switch (type) {
    case 'P': {
      std::optional<ParseMessage> parse = SplitParse(body);
      if (!parse.has_value() || parse->name.empty()) {
        relay().expect.push_back({Expect::kParse, {}});
        break;
      }
      if (!statements().contains(std::string(parse->name)) &&
          statements().size() >= config.max_client_prepared_statements) {
        // Refused (its unnamed stand-in fails), as a server at a limit would.
        relay().to_server.append(FailingParse(
            "", Cat("pgflow pooler: this client has ", statements().size(),
                    " prepared statements, max_client_prepared_statements: close some (the "
                    "protocol's Close) before preparing more")));
        relay().expect.push_back({Expect::kParse, {}});
        return;
      }
      std::string server_name = ServerStatementName(parse->rest);
      const uint64_t parsed =
          PrepareOnServer(server_name, parse->rest, Expect::kParse, config, parse->name);
      statements()[std::string(parse->name)] = {std::move(server_name), std::string(parse->rest),
                                                parsed, /*shape=*/0};
      return;
    }
    case 'B': {
      std::optional<BindMessage> bind = SplitBind(body);
      if (!bind.has_value() || bind->statement.empty()) break;
      const Statement* statement = Prepared(bind->statement);
      if (statement == nullptr) break;
      AppendBind(&relay().to_server, bind->portal, statement->server_name, bind->rest);
      return;
    }
    case 'D': {
      std::optional<TargetMessage> target = SplitTarget(body);
      if (!target.has_value() || target->kind != 'S' || target->name.empty()) break;
      const Statement* statement = Prepared(target->name);
      if (statement == nullptr) break;
      AppendTarget(&relay().to_server, 'D', 'S', statement->server_name);
      return;
    }
    case 'C': {
      std::optional<TargetMessage> target = SplitTarget(body);
      relay().expect.push_back({Expect::kClose, {}});
      if (!target.has_value() || target->kind != 'S' || target->name.empty()) break;
      if (statements_ != nullptr) statements_->erase(std::string(target->name));
      // The server's statement may serve other clients: it stays. Closing a name that
      // does not exist answers CloseComplete, which the client expects.
      AppendTarget(&relay().to_server, 'C', 'S', "pgflow_closed");
      return;
    }
    default:
      break;
  }
  relay().to_server.append(message);
}

const Session::Statement* Session::Prepared(std::string_view name) const {
  if (statements_ == nullptr) return nullptr;
  auto it = statements_->find(std::string(name));
  return it == statements_->end() ? nullptr : &it->second;
}

Session::StatementUse Session::ResolveStatement(std::string_view name, const PoolerConfig& config) {
  const Statement* statement = Prepared(name);
  if (statement == nullptr || skipping_) return StatementUse::kReady;
  auto copy = server_->prepared.find(statement->server_name);
  if (copy == server_->prepared.end()) {
    PrepareOnServer(statement->server_name, statement->parse_rest, Expect::kParseSwallow, config,
                    {});
    return StatementUse::kWait;
  }
  const PreparedCopy& prepared = copy->second;
  if (prepared.stamp == statement->parsed) return StatementUse::kReady;  // the client's own
  if (prepared.shape == 0) {
    // Prepared earlier in this batch, its Describe not yet answered.
    return describing_ > 0 ? StatementUse::kWait : StatementUse::kReady;
  }
  if (statement->shape == 0 || prepared.shape == statement->shape) return StatementUse::kReady;
  if (prepared.stamp < statement->parsed) {
    // Prepared before the client's Parse, on a table's shape from before a change the client
    // has seen: replaced (the client's Parse must never fail 0A000, as it cannot directly).
    PrepareOnServer(statement->server_name, statement->parse_rest, Expect::kParseSwallow, config,
                    {});
    return StatementUse::kWait;
  }
  // Prepared after the client's Parse, and of another shape: the client's statement would
  // fail its revalidation directly, so it fails here (never run with a shape the client does
  // not expect: a driver reading binary results by the old types would misread them).
  return StatementUse::kStale;
}

uint64_t Session::PrepareOnServer(const std::string& name, std::string_view rest, Expect expected,
                                  const PoolerConfig& config, std::string_view client_statement) {
  RelayState& r = relay();
  if (server_->prepared.size() >= config.max_prepared_statements) {
    for (const auto& [old, copy] : server_->prepared) {
      AppendTarget(&r.to_server, 'C', 'S', old);
      r.expect.push_back({Expect::kCloseSwallow, {}});
    }
    server_->prepared.clear();
  }
  AppendTarget(&r.to_server, 'C', 'S', name);
  r.expect.push_back({Expect::kCloseSwallow, {}});
  AppendParse(&r.to_server, name, rest);
  r.expect.push_back({expected, name});
  AppendTarget(&r.to_server, 'D', 'S', name);
  r.expect.push_back({Expect::kDescribeSwallow, name, 0, std::string(client_statement)});
  ++describing_;
  const uint64_t stamp = pool_->NextPrepareStamp();
  server_->prepared[name] = PreparedCopy{.stamp = stamp, .shape = 0};
  return stamp;
}

void Session::LearnShape(char type, std::string_view body) {
  RelayState& r = relay();
  if (type == 't') {
    r.described_parameters.assign(body);
    return;
  }
  ExpectQueue& expect = r.expect;
  const Expectation answered = std::move(expect.front());
  expect.pop_front();
  --describing_;
  const uint64_t shape =
      StatementShape(r.described_parameters, type == 'T' ? body : std::string_view()).value_or(0);
  r.described_parameters.clear();
  auto copy = server_->prepared.find(answered.statement);
  if (copy != server_->prepared.end()) {
    copy->second.shape = shape;
    if (!answered.client_statement.empty() && statements_ != nullptr) {
      auto mine = statements_->find(answered.client_statement);
      if (mine != statements_->end() && mine->second.parsed == copy->second.stamp) {
        mine->second.shape = shape;
      }
    }
  }
  if (shape_wait_) {
    shape_wait_ = false;
    client_parsed_ = false;  // (the waiting message is relayed now)
  }
}

Session::ClientStep Session::ProcessClientBuffer(const PoolerConfig& config, size_t* position,
                                                 std::string* fatal_message) {
  size_t& pos = *position;
  RelayState& r = relay();  // (not a coroutine: nothing parks the session meanwhile)
  while (pos < r.cbuf.size()) {
    if (r.client_pass > 0) {
      size_t n = std::min(r.client_pass, r.cbuf.size() - pos);
      if (!client_drop_) r.to_server.append(r.cbuf, pos, n);
      pos += n;
      r.client_pass -= n;
      continue;
    }
    absl::StatusOr<std::optional<MessageHeader>> header =
        ReadMessageHeader(std::string_view(r.cbuf).substr(pos), config.max_message_size);
    if (!header.ok()) {
      if (server_ == nullptr) *fatal_message = std::string(Sv(header.status().message()));
      return ClientStep::kFatal;
    }
    if (!header->has_value()) return ClientStep::kMore;
    const MessageHeader h = **header;
    if (h.type == 'X') return ClientStep::kLeave;  // Terminate
    if (drop_until_sync_) {
      // The rest of a query cancelled while it waited for a server connection
      // (CancelWaiting): dropped up to its end, which gets the ReadyForQuery its error needs.
      const size_t n = std::min(h.size, r.cbuf.size() - pos);
      pos += n;
      r.client_pass = h.size - n;
      client_drop_ = true;
      if (h.type == 'Q' || h.type == 'S' || h.type == 'F') {
        AppendReadyForQuery(&r.to_client, 'I');
        drop_until_sync_ = false;
      }
      continue;
    }
    if (server_ == nullptr) return ClientStep::kAttach;
    bool rewrite = mode_ != PoolMode::kSession &&
                   (h.type == 'P' || h.type == 'B' || h.type == 'D' || h.type == 'C');
    if (rewrite && r.cbuf.size() - pos < h.size) {
      client_need_ = h.size;  // read whole (Rewrite), however large (max_message_size)
      return ClientStep::kMore;
    }
    // The query text, or the start of it that has come (a Parse is whole here: it is
    // rewritten).
    const std::string_view text =
        mode_ != PoolMode::kSession && (h.type == 'Q' || h.type == 'P')
            ? QueryText(h.type, std::string_view(r.cbuf).substr(pos + 5, h.size - 5))
            : std::string_view();
    if (!text.empty() && r.cbuf.size() - pos >= h.size && DeallocatesAll(text)) {
      // The client's DEALLOCATE ALL or DISCARD ALL: its statements named before it are
      // gone (the connection's list is cleared by the answer's tag, however sent).
      statements_.reset();
    }
    if (rewrite && (h.type == 'B' || h.type == 'D') && statements_ != nullptr &&
        !statements_->empty()) {
      const std::string_view body = std::string_view(r.cbuf).substr(pos + 5, h.size - 5);
      std::optional<std::string_view> name;
      if (h.type == 'B') {
        if (std::optional<BindMessage> bind = SplitBind(body)) name = bind->statement;
      } else if (std::optional<TargetMessage> target = SplitTarget(body);
                 target.has_value() && target->kind == 'S') {
        name = target->name;
      }
      if (name.has_value() && !name->empty()) {
        const StatementUse use = ResolveStatement(*name, config);
        if (use == StatementUse::kWait) {
          // (The server answers an unsynced Describe only when asked to send what it holds.)
          AppendMessage(&r.to_server, 'H', {});
          return ClientStep::kWait;
        }
        if (use == StatementUse::kStale) {
          // A statement fails on the server in its place, so that the server skips the rest up
          // to the Sync (and aborts a transaction) as for PostgreSQL's own error, which the
          // client is told instead. The Close before it is answered only if nothing earlier in
          // the batch failed: the error after it is then this one.
          AppendTarget(&r.to_server, 'C', 'S', "pgflow_closed");
          r.expect.push_back({Expect::kCloseSwallow, {}});
          r.to_server.append(FailingParse("", "pgflow pooler: a statement changed shape"));
          r.expect.push_back({Expect::kErrorReplace, {}});
          ++unsynced_;
          pos += h.size;
          if (r.to_server.size() >= kFlushAt) return ClientStep::kFlush;
          continue;
        }
      }
    }
    std::string refused;  // the message sent instead of one refused
    if (!pinned_ && !text.empty()) {
      // (A query larger than what came so far is judged by its start and, if refused, its
      // rest dropped.)
      if (TakesSessionState(text)) {
        if (pool_->settings().session_state == SessionStatePolicy::kPin) {
          pinned_ = true;
          LogInfo(
              "pooler: client %d (%s@%s) keeps its server connection: it took session "
              "state (LISTEN or an advisory lock)",
              info_->id, user(), database());
        } else {
          refused = RefusedSessionState(h.type, std::string_view(r.cbuf).substr(pos + 5));
        }
      }
    }
    switch (h.type) {
      case 'Q':
      case 'S':
      case 'F':
        // PostgreSQL ignores a Sync that arrives while it copies in.
        if (copy_in_ && h.type == 'S') break;
        if (h.type == 'S') skipping_ = false;
        r.expect.push_back({Expect::kSync, {}, h.type});
        unsynced_ = 0;
        break;
      case 'c':
      case 'f':
        copy_in_ = false;  // CopyDone, CopyFail
        break;
      case 'P':
        if (!rewrite) r.expect.push_back({Expect::kParse, {}});
        ++unsynced_;
        break;
      case 'C':
        if (!rewrite) r.expect.push_back({Expect::kClose, {}});
        ++unsynced_;
        break;
      case 'H':
        if (!copy_in_) ++unsynced_;  // ignored during copy-in, as Sync
        break;
      case 'B':
      case 'D':
      case 'E':
        ++unsynced_;
        break;
      default:
        break;
    }
    if (!refused.empty() && h.type == 'Q') {
      // The server runs a statement that fails as the refused one should: its
      // transaction state stays the server's own.
      r.to_server.append(refused);
      size_t n = std::min(h.size, r.cbuf.size() - pos);
      pos += n;
      r.client_pass = h.size - n;
      client_drop_ = r.client_pass > 0;
    } else if (rewrite) {
      Rewrite(h.type,
              refused.empty() ? std::string_view(r.cbuf).substr(pos, h.size)
                              : std::string_view(refused),
              config);
      pos += h.size;
    } else {
      size_t n = std::min(h.size, r.cbuf.size() - pos);
      r.to_server.append(r.cbuf, pos, n);
      pos += n;
      r.client_pass = h.size - n;
      client_drop_ = false;
    }
    if (r.to_server.size() >= kFlushAt) return ClientStep::kFlush;
  }
  return ClientStep::kMore;
}

bool Session::Releasable() const {
  const bool settled = relay_ == nullptr || (relay_->expect.empty() && relay_->client_pass == 0 &&
                                             relay_->server_pass == 0);
  return mode_ != PoolMode::kSession && !pinned_ && settled && unsynced_ == 0 &&
         (relay_ == nullptr || relay_->to_server.empty()) && txn_status_ == 'I';
}

void Session::DropUntilSync() {
  ExpectQueue& expect = relay().expect;
  while (!expect.empty() && expect.front().kind != Expect::kSync &&
         expect.front().kind != Expect::kSyncSwallow) {
    const Expectation& dropped = expect.front();
    if (!dropped.statement.empty() &&
        (dropped.kind == Expect::kParse || dropped.kind == Expect::kParseSwallow)) {
      server_->prepared.erase(dropped.statement);
    }
    if (dropped.kind == Expect::kDescribeSwallow) {
      --describing_;
      if (shape_wait_) {
        // The waiting message comes before the client's next Sync: the server skips it.
        shape_wait_ = false;
        skipping_ = true;
        client_parsed_ = false;
      }
    }
    expect.pop_front();
  }
}

bool Session::Answered(Expect pass, Expect swallow, bool swallowing) {
  ExpectQueue& expect = relay().expect;
  if (!expect.empty() && (expect.front().kind == pass || expect.front().kind == swallow)) {
    const bool forward = expect.front().kind == pass;
    expect.pop_front();
    return forward;
  }
  return !swallowing;
}

bool Session::OnServerMessage(char type, std::string_view body) {
  bool swallowing = !relay().expect.empty() && relay().expect.front().kind == Expect::kSyncSwallow;
  switch (type) {
    case 'Z': {
      DropUntilSync();
      bool forward = true;
      if (!relay().expect.empty()) {
        forward = relay().expect.front().kind == Expect::kSync;
        relay().expect.pop_front();
      }
      txn_status_ = body.empty() ? 'I' : body[0];
      if (forward) {
        pool_->stats().queries.fetch_add(1, std::memory_order_relaxed);
        if (txn_status_ == 'I') pool_->stats().transactions.fetch_add(1, std::memory_order_relaxed);
        if (mode_ == PoolMode::kStatement && txn_status_ != 'I') statement_violation_ = true;
      }
      return forward;
    }
    case '1':  // ParseComplete
      return Answered(Expect::kParse, Expect::kParseSwallow, swallowing);
    case '3':  // CloseComplete
      return Answered(Expect::kClose, Expect::kCloseSwallow, swallowing);
    case 'E':
      if (swallowing) {
        ErrorFields error = ParseErrorFields(body);
        LogWarning("pooler: database %s: setting a client's parameters failed: %s", database(),
                   error.message);
        return false;
      }
      if (!relay().expect.empty() && relay().expect.front().kind == Expect::kErrorReplace) {
        relay().expect.pop_front();
        AppendCachedPlanChanged(&relay().to_client);
        DropUntilSync();
        return false;
      }
      DropUntilSync();
      return true;
    case 't':  // ParameterDescription
    case 'T':  // RowDescription
    case 'n':  // NoData
      if (!relay().expect.empty() && relay().expect.front().kind == Expect::kDescribeSwallow) {
        LearnShape(type, body);
        return false;
      }
      return !swallowing;
    case 'C': {
      // CommandComplete (inspected in transaction and statement modes). DEALLOCATE ALL or
      // DISCARD ALL, however the client sent it, dropped every statement on the connection,
      // other clients' too (they are prepared again on demand: each Parse goes after a
      // Close of its name, so forgetting too much is safe); DISCARD ALL also reset the
      // settings, to the values every client is shown at login (ParameterStatus messages
      // follow for the reported ones).
      std::string_view tag = body.substr(0, body.find('\0'));
      if (tag == "DEALLOCATE ALL" || tag == "DISCARD ALL") server_->prepared.clear();
      if (tag == "DISCARD ALL") {
        server_->ForgetSettings();
        if (defaults_ != nullptr) {
          server_->params.insert(defaults_->begin(), defaults_->end());
        }
      }
      return !swallowing;
    }
    case 'G':
      // CopyInResponse. In the extended protocol the client's Sync after Execute arrives
      // during the copy and is ignored: the ReadyForQuery comes for the Sync after CopyDone.
      copy_in_ = true;
      if (!relay().expect.empty() && relay().expect.front().kind == Expect::kSync &&
          relay().expect.front().origin == 'S') {
        relay().expect.pop_front();
      }
      return !swallowing;
    case 'S': {
      BodyReader reader(body);
      std::optional<std::string_view> name = reader.CString();
      std::optional<std::string_view> value = reader.CString();
      if (name.has_value() && value.has_value()) {
        std::string key = Lower(*name);
        auto [known, added] = server_->params.try_emplace(key);
        if (added || known->second != *value) {
          known->second = std::string(*value);
          server_->settings_stamp = 0;
        }
        if (params_.contains(key) || !swallowing) {
          auto [mine, added] = params_.try_emplace(key);
          if (added || mine->second != *value) {
            mine->second = std::string(*value);
            settings_stamp_ = pool_->SettingsStamp(params_, defaults_.get());
          }
        }
      }
      return !swallowing;
    }
    default:
      return !swallowing;
  }
}

bool Session::Inspected(char type) const {
  return type == 'Z' || type == '1' || type == '3' || type == 'E' || type == 'S' || type == 'G' ||
         (type == 'C' && mode_ != PoolMode::kSession) ||
         (describing_ > 0 && (type == 't' || type == 'T' || type == 'n'));
}

bool Session::ServerSide() {
  RelayState& r = relay();
  bool progress = false;
  if (server_in_ && (r.to_client.size() < kFlushAt || server_hup_)) {
    const ssize_t n = ReceivePending(server_->fd(), r.sbuf, server_in_, server_hup_);
    if (n < 0) {
      LogDebug("pooler: client %d: server read: %s", info_->id, ReadFailure());
      ServerLost();
      return true;
    }
    progress = n > 0;
  }
  if (server_ != nullptr && !r.sbuf.empty() && r.to_client.size() < kFlushAt) {
    progress |= ProcessServerInput();
  }
  return progress;
}

bool Session::ProcessServerInput() {
  RelayState& r = relay();
  std::string& sbuf = r.sbuf;
  size_t pos = 0;
  bool protocol_failure = false;
  while (pos < sbuf.size() && r.to_client.size() < kFlushAt) {
    if (r.server_pass > 0) {
      size_t k = std::min(r.server_pass, sbuf.size() - pos);
      if (!server_pass_swallow_) r.to_client.append(sbuf, pos, k);
      pos += k;
      r.server_pass -= k;
      continue;
    }
    absl::StatusOr<std::optional<MessageHeader>> header =
        ReadMessageHeader(std::string_view(sbuf).substr(pos), size_t{1} << 31);
    if (!header.ok()) {
      LogWarning("pooler: database %s: server sent a malformed message: %s", database(),
                 header.status().message());
      protocol_failure = true;
      break;
    }
    if (!header->has_value()) break;
    const MessageHeader h = **header;
    bool swallowing = !r.expect.empty() && r.expect.front().kind == Expect::kSyncSwallow;
    bool large_error = h.type == 'E' && !swallowing && h.size > kMaxInspectedServerMessage;
    if (large_error) DropUntilSync();  // read in pieces; only its type matters here
    if (!Inspected(h.type) || large_error) {
      size_t k = std::min(h.size, sbuf.size() - pos);
      if (!swallowing) r.to_client.append(sbuf, pos, k);
      r.server_pass = h.size - k;
      server_pass_swallow_ = swallowing;
      pos += k;
    } else {
      if (h.size > kMaxInspectedServerMessage) {
        LogWarning("pooler: database %s: a server message of type '%c' is %d bytes", database(),
                   h.type, h.size);
        protocol_failure = true;
        break;
      }
      if (sbuf.size() - pos < h.size) break;
      if (OnServerMessage(h.type, std::string_view(sbuf).substr(pos + 5, h.body_size()))) {
        r.to_client.append(sbuf, pos, h.size);
      }
      pos += h.size;
    }
  }
  sbuf.erase(0, pos);
  if (protocol_failure) {
    // The answer cannot be relayed whole: the client is told and closed, the connection too.
    EndWithFatal("08P01", "the pooler could not relay the server's answer (see its log)");
    return true;
  }
  if (statement_violation_) {
    EndWithFatal("08P01", "transaction blocks are not allowed in statement pooling mode");
    return true;
  }
  return pos > 0;
}

bool Session::Release() {
  // (Not while the client's next messages wait to be relayed: they go on this connection.)
  if (!Releasable() || (!client_parsed_ && !relay_->cbuf.empty())) return false;
  return Detach(true);
}

bool Session::SettleAfterClientGone() {
  RelayState& r = relay();
  if (!r.expect.empty() || r.client_pass > 0 || r.server_pass > 0 || unsynced_ > 0 ||
      !r.to_server.empty()) {
    if (cleanup_sent_ && !r.expect.empty() && r.expect.front().kind == Expect::kSyncSwallow) {
      return false;  // our own cleanup is being answered
    }
    Detach(false);
    return true;
  }
  const bool dirty = txn_status_ != 'I' || mode_ == PoolMode::kSession || pinned_;
  if (!dirty || cleanup_sent_) return Detach(true);
  // Two queries: DISCARD ALL cannot run in the implicit transaction of one.
  if (txn_status_ != 'I') {
    AppendQuery(&r.to_server, "ROLLBACK");
    r.expect.push_back({Expect::kSyncSwallow, {}});
  }
  const PoolerConfig& config = *thread_->config;  // (refreshed by Pump)
  if (!config.server_reset_query.empty()) {
    AppendQuery(&r.to_server, config.server_reset_query);
    r.expect.push_back({Expect::kSyncSwallow, {}});
  }
  if (r.to_server.empty()) return Detach(true);
  cleanup_sent_ = true;
  server_->ForgetSettings();  // DISCARD ALL resets what the client set...
  server_->prepared.clear();  // ...and deallocates every prepared statement
  return true;
}

void Session::ServerLost() {
  LogWarning("pooler: database %s: lost a server connection (pid %d) while a client held it",
             database(), server_->backend_pid);
  RelayState& r = relay();
  // Kept only at a message boundary on both sides: a client message half sent must not have
  // its rest read as messages of their own.
  const bool keep_client = !client_gone_ && !closing_ && mode_ != PoolMode::kSession &&
                           r.server_pass == 0 && r.client_pass == 0 && unsynced_ == 0 &&
                           !r.expect.empty() && txn_status_ == 'I';
  if (keep_client) {
    for (const Expectation& e : r.expect) {
      if (e.kind != Expect::kSync) continue;
      AppendError(&r.to_client, "ERROR", "08006",
                  "the server connection was lost (restart or failover) while this "
                  "statement ran: its outcome is unknown; the next one runs on a new "
                  "connection");
      AppendReadyForQuery(&r.to_client, 'I');
    }
  } else if (!client_gone_ && r.server_pass == 0) {
    AppendError(&r.to_client, "FATAL", "08006",
                "the server connection was lost (restart or failover)");
  }
  unsynced_ = 0;
  r.client_pass = 0;  // a message half sent is lost with the connection
  txn_status_ = 'I';
  Detach(false);
  if (!keep_client) closing_ = true;
}

bool Session::Detach(bool reusable) {
  if (info_ != nullptr) {
    absl::MutexLock lock(&info_->mu);
    // (Checked under the lock that cancel requests take the server under: none can begin
    // once the connection is no longer the client's.)
    if (reusable && info_->cancels_in_flight > 0) return false;  // (ForwardCancel pumps)
    if (std::exchange(info_->cancel_unsettled, false)) reusable = false;
    info_->server.reset();
    info_->server_path = nullptr;
    info_->state = 0;
  }
  if (relay_ != nullptr) {
    RelayState& r = *relay_;
    r.expect.clear();
    r.described_parameters.clear();
    r.sbuf.clear();
    r.server_pass = 0;
    r.to_server.clear();  // (empty unless the connection is closed)
    r.server_sent = 0;
  }
  copy_in_ = false;
  cleanup_sent_ = false;
  describing_ = 0;
  shape_wait_ = skipping_ = false;
  server_in_ = server_out_ = server_hup_ = server_blocked_ = false;
  const int fd = server_->fd();
  if (reusable) {
    thread_->reactor.Unwatch(fd, Reactor::kRead);  // (before another thread may take it)
  } else {
    thread_->reactor.Forget(fd);  // closed by Release
  }
  pool_->Release(std::move(server_), reusable);
  return true;
}

}  // namespace pgflow::pooler
