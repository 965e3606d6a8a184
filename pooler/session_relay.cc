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
// What the relay does with the messages (rewriting, the expectations, the client's state) is
// RelayProtocol's (pooler/relay_protocol.h); this is its socket side.

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

// Rounds of a session's relay in one pass before the thread's other sessions get theirs.
constexpr int kPumpRounds = 32;

}  // namespace

void Session::Kill() {
  killed_ = true;
  if (relaying()) {
    Pump();
    return;
  }
  boost::system::error_code ec;
  if (login_ != nullptr) client().cancel(ec);  // (logging in, or the console)
}

void Session::DismissWaiting() {
  if (phase_ != Phase::kRelaying || !attaching_) return;
  EndWithFatal("57P01", "the pooler is shutting down (SHUTDOWN WAIT_FOR_SERVERS): connect again");
  Pump();
}

void Session::CancelWaiting() {
  if (phase_ != Phase::kRelaying) return;
  if (!attaching_ || wait_cancelled_) {
    // It got a server connection meanwhile: the request goes there, if a query runs on it.
    if (server_ != nullptr && relay_ != nullptr && !relay_->expect.empty()) {
      if (std::optional<CancelTarget> target = TakeCancelTarget(info_)) {
        asio::co_spawn(thread_->context,
                       ForwardCancel(new CancelForward{impl(), &thread_->context, &thread_->context,
                                                       weak_from_this(), *std::move(target)}),
                       asio::detached);
      }
    }
    return;
  }
  if (relay_ != nullptr && relay_->wait != nullptr) {
    target_->Abandon(std::exchange(relay_->wait, {}));
    thread_->waiting.erase(this);
    attaching_ = false;
    info_.state = 0;
  } else {
    wait_cancelled_ = true;
  }
  AppendError(&relay().to_client, "ERROR", "57014", "canceling statement due to user request");
  protocol_.DropQuery();
  Pump();
}

void Session::SweepWaits(NetThread* thread) {
  const Clock::time_point now = Clock::now();
  std::vector<Session*> due;
  for (Session* session : thread->waiting) {
    const Clock::duration limit = session->target_->QueueWaitLimit();
    if (limit != Clock::duration::max() && now - Pool::WaitSince(*session->relay_->wait) >= limit) {
      due.push_back(session);
    }
  }
  for (Session* session : due) session->EndWait();
}

void Session::AbandonRelays(NetThread* thread) {
  thread->waiting.clear();
  while (Session* session = thread->relaying) {
    if (session->relay_ != nullptr && session->relay_->wait != nullptr) {
      session->target_->Abandon(std::exchange(session->relay_->wait, {}));
    }
    session->Unlink();
    session->Advance(Phase::kFinished);
    session->CloseClientFd();
    if (session->server_ != nullptr) session->Detach(false);
    std::shared_ptr<Session> last = std::move(session->self_);
  }
}

void Session::StartRelay() {
  boost::system::error_code ec;
  // A TLS client's pump ends here: the relay reads and writes its own socket.
  // (Bytes the login read past its last message come first.)
  std::string from_client = std::move(login_->read_ahead), to_client;
  std::optional<TlsSession> taken;
  if (login_->tls_link != nullptr) {
    taken = TakeOverTls(login_->tls_link, &client(), &from_client, &to_client);
  }
  if (taken) {
    boost::system::error_code ignored;
    client().close(ignored);  // (the socketpair's end)
    client_fd_ = taken->fd;
    client_tls_ = std::move(taken->tls);
  } else {
    client_fd_ = client().release(ec);
  }
  login_.reset();
  if (ec || client_fd_ < 0) {
    LogDebug("pooler: client %d: cannot take its socket over: %s", info_.id, ec.message());
    client_fd_ = -1;
    return;
  }
  self_ = shared_from_this();
  Advance(Phase::kRelaying);
  next_ = thread_->relaying;
  if (next_ != nullptr) next_->prev_ = this;
  thread_->relaying = this;
  if (!thread_->reactor.Add(client_fd_, Reactor::kRead, this)) {
    LogWarning("pooler: cannot watch a client's socket: %s", strerror(errno));
    ::close(std::exchange(client_fd_, -1));
    client_tls_.reset();
    Advance(Phase::kClientGone);
  }
  if (!from_client.empty() || !to_client.empty()) {
    RelayState& r = relay();
    // (Read before the relay, by the login or the TLS pump: the client's bytes all the same.)
    if (pool_ != nullptr) {
      pool_->stats().bytes_received.fetch_add(from_client.size(), std::memory_order_relaxed);
    }
    r.cbuf += from_client;
    r.to_client.insert(0, to_client);
    protocol_.Unparse();
  }
  // What the channel holds is seen by no report: read, and write, at once.
  if (client_tls_ != nullptr) client_in_ = client_out_ = true;
  // Adopted before the relay began (AdoptWebSocket): the WebSocket's socket replaces the
  // tunnel's now.
  if (ws_ != nullptr && ws_->fd >= 0 && phase_ == Phase::kRelaying) SwapToWebSocket();
  Pump();
}

void Session::AdoptWebSocket(int fd, std::unique_ptr<WebSocket> ws, std::string data) {
  if (!CanAdoptWebSocket()) {
    ::close(fd);  // (the session ended meanwhile: so does the client)
    return;
  }
  ws_ = std::move(ws);
  ws_->fd = fd;
  ws_->data = std::move(data);
  if (phase_ == Phase::kLogin) return;  // StartRelay swaps the sockets
  SwapToWebSocket();
  Pump();
}

void Session::SwapToWebSocket() {
  if (client_fd_ >= 0) {
    thread_->reactor.Remove(client_fd_);
    ::close(client_fd_);
  }
  client_tls_.reset();  // (a tunnel's client never has one: its TLS is the gateway's)
  tls_read_wants_write_ = false;
  client_fd_ = std::exchange(ws_->fd, -1);
  client_in_ = true;
  client_out_ = true;
  client_hup_ = client_blocked_ = false;
  if (!thread_->reactor.Add(client_fd_, Reactor::kRead, this)) {
    LogWarning("pooler: cannot watch a client's socket: %s", strerror(errno));
    ClientGone();
    return;
  }
  if (!ws_->data.empty()) {
    relay().cbuf += ws_->data;
    protocol_.Unparse();
    std::string().swap(ws_->data);
  }
}

bool Session::ClientOutputEmpty() const {
  return (relay_ == nullptr || relay_->to_client.empty()) &&
         (ws_ == nullptr || ws_->out.empty()) && (client_tls_ == nullptr || !client_tls_->unsent());
}

void Session::OnReady(int fd, uint32_t events) {
  const bool broken = events & (EPOLLHUP | EPOLLERR);
  if (fd == client_fd_ && fd >= 0) {
    if (events & (EPOLLIN | EPOLLRDHUP) || broken) client_in_ = true;
    if (events & EPOLLOUT || broken) client_out_ = true;
    if (tls_read_wants_write_ && client_out_) {
      tls_read_wants_write_ = false;  // (the read OpenSSL held back goes on)
      client_in_ = true;
    }
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
  if (pumping_ || phase_ == Phase::kFinished) return;
  pumping_ = true;
  impl()->RefreshConfig(thread_);
  // A bound on one pass (each round reads at most a chunk from each side): a client reading
  // a large result as fast as the server makes it would otherwise hold the thread.
  int rounds = 0;
  for (bool progress = true; progress && phase_ != Phase::kFinished;) {
    if (++rounds > kPumpRounds) {
      asio::post(thread_->context, [self = shared_from_this()] { self->Pump(); });
      break;
    }
    progress = false;
    if (killed_ && (phase_ < Phase::kClientGone || server_ != nullptr)) {
      if (server_ != nullptr) Detach(false);  // (a cleanup under way included)
      if (phase_ < Phase::kClientGone) ClientGone();
      progress = true;
    }
    if (server_ != nullptr) progress |= ServerSide();
    progress |= WriteClient();
    progress |= ClientSide();
    if (server_ != nullptr) progress |= WriteServer();
    if (server_ != nullptr && !attaching_) {
      progress |= phase_ >= Phase::kClientGone ? SettleAfterClientGone() : Release();
    }
    if (phase_ >= Phase::kClientGone && server_ == nullptr && !attaching_) Finish();
  }
  pumping_ = false;
  if (phase_ == Phase::kFinished) return;
  UpdateInterest();
  if (relay_ != nullptr && server_ == nullptr && !attaching_ && phase_ < Phase::kClosing &&
      Settled()) {
    thread_->GiveRelay(std::move(relay_));  // idle: the relay's state goes back
  }
}

bool Session::Settled() const {
  const RelayState& r = *relay_;
  return r.cbuf.empty() && r.sbuf.empty() && r.to_server.empty() && ClientOutputEmpty() &&
         r.client_pass == 0 && r.server_pass == 0 && r.expect.empty();
}

bool Session::ClientSide() {
  if (phase_ >= Phase::kClosing) return false;
  RelayState& r = relay();
  bool progress = false;
  // (A WebSocket's answers to pings wait in ws_->out: a client that sends them without reading
  // is read no further until they are written, as a client that does not read its results.)
  if (client_in_ && !tls_read_wants_write_ &&
      (r.cbuf.size() < ClientReadLimit() || client_hup_) &&
      (ws_ == nullptr || ws_->out.size() < kFlushAt)) {
    const ssize_t n =
        client_tls_ != nullptr
            ? ReceiveTls(r.cbuf, client_in_, client_hup_)
            : ReceivePending(client_fd_, ws_ != nullptr ? ws_->raw : r.cbuf, client_in_,
                             client_hup_);
    if (n < 0) {
      if (client_tls_ != nullptr && client_tls_->owes_alert()) {
        // (A broken or hostile client: told why by the alert CloseClientFd sends.)
        LogWarning("pooler: client %d: refused its TLS record: %s", info_.id,
                   client_tls_->failure());
      } else {
        LogDebug("pooler: client %d: read: %s", info_.id, ReadFailure());
      }
      ClientGone();
      return true;
    }
    if (n > 0 && ws_ != nullptr) {
      // The WebSocket's frames: their payloads are the protocol's bytes.
      bool closed = false;
      const absl::Status s = ws_->decoder.Decode(&ws_->raw, &r.cbuf, &ws_->out, &closed);
      if (!s.ok() || closed) {
        LogDebug("pooler: client %d: %s", info_.id,
                 s.ok() ? "closed its WebSocket" : std::string(s.message()));
        ClientGone();
        return true;
      }
    }
    if (n > 0) {
      pool_->stats().bytes_received.fetch_add(n, std::memory_order_relaxed);
      protocol_.Unparse();
      progress = true;
    }
  }
  if (!protocol_.parsed() && (!attaching_ || protocol_.dropping()) && !protocol_.shape_wait() &&
      !protocol_.holding() && !cache_waiting() && !pacing() && !r.cbuf.empty() &&
      r.to_server.size() < kFlushAt) {
    ProcessClientInput();
    progress = true;
  }
  return progress;
}

size_t Session::ClientReadLimit() const { return std::max(kFlushAt, protocol_.need()); }

void Session::ProcessClientInput() {
  const PoolerConfig& config = *thread_->config;  // (refreshed by Pump)
  RelayState& r = relay();
  size_t pos = 0;
  // Queries past the tenant's pace wait, with what follows them, out of cbuf's sight.
  std::string later;
  // (Read once: a RELOAD may change it meanwhile.)
  const int rate =
      tenant_ != nullptr ? tenant_->max_queries_per_second.load(std::memory_order_relaxed) : 0;
  if (rate > 0) {
    const size_t cut = PaceQueries(r, rate);
    if (cut == 0) return;
    if (cut < r.cbuf.size()) {
      later.assign(r.cbuf, cut);
      r.cbuf.resize(cut);
    }
  }
  for (bool more = true; more;) {
    std::string fatal_message;
    switch (protocol_.ProcessClientBuffer(r, config, &pos, &fatal_message)) {
      case RelayProtocol::ClientStep::kMore:
        more = false;
        break;
      case RelayProtocol::ClientStep::kAttach:
        if (!attaching_ && thread_->config_version != routing_version_) FollowRouter();
        if (!attaching_ && protocol_.routed()) {
          const CacheStep cached = ServeFromCache(r, &pos);
          if (cached == CacheStep::kServed) break;
          if (cached == CacheStep::kWaiting) {
            more = false;
            break;
          }
          RouteChoice& choice = routed_->choice;
          choice = protocol_.Route(r, pos);
          if (!choice.refusal.empty() && protocol_.Refuse(r, &pos, choice.refusal)) break;
          if (routed_->probe != nullptr) choice.node = kPrimaryNode;  // (it fills the cache)
          target_ = NodePool(choice.node);
        }
        if (attaching_) {
          more = false;  // (an Acquire under way after a cancelled wait: it resumes the relay)
        } else if (!TryAttach()) {
          StartAttach();
          more = false;
        } else if (phase_ >= Phase::kClosing) {
          more = false;  // (its connection could not be watched)
        }
        break;
      case RelayProtocol::ClientStep::kFlush:
        more = false;  // written by Pump, then relayed on
        break;
      case RelayProtocol::ClientStep::kWait:
      case RelayProtocol::ClientStep::kHold:
        more = false;  // (the server's answer lets it go on)
        break;
      case RelayProtocol::ClientStep::kDetach:
        // The replica goes back before the next unit is placed (a cancel in flight on it:
        // tried again when it is answered).
        more = Detach(true);
        if (!more) protocol_.Stall();  // (Release gives it back, then the unit is placed)
        break;
      case RelayProtocol::ClientStep::kFatal:
        if (fatal_message.empty()) {
          ClientGone();
        } else {
          EndWithFatal("08P01", fatal_message);
        }
        more = false;
        break;
      case RelayProtocol::ClientStep::kLeave:
        ClientGone();
        more = false;
        break;
    }
  }
  r.cbuf.erase(0, pos);
  if (pace_ != nullptr) pace_->until -= std::min(pace_->until, pos);
  if (!later.empty() && phase_ < Phase::kClientGone) {
    r.cbuf += later;
    protocol_.Unparse();  // (what it parsed to the end of was not the end)
  }
}

size_t Session::PaceQueries(const RelayState& r, int rate) {
  const std::string& cbuf = r.cbuf;
  // From the first message boundary not yet looked at: past the rest of a message the relay
  // streams (client_pass: its bytes still to come are the first of cbuf's).
  if (pace_ == nullptr) pace_ = std::make_unique<Pace>(thread_->context);
  size_t at = std::max(pace_->until, r.client_pass);
  // Where the unit the next query belongs to begins (after a Sync or a simple query): a query
  // that must wait holds back its whole unit, so that a Parse and Bind do not reach the server
  // and hold its connection, and the unit stays whole for routing. (Its start in an earlier
  // pass, already relayed, is where this pass began.)
  size_t unit = at;
  while (at + 5 <= cbuf.size()) {
    const char type = cbuf[at];
    const auto length = static_cast<uint32_t>(ReadInt32(cbuf.data() + at + 1));
    if (length < 4) break;  // (the protocol refuses it)
    // A query is charged once its header is there, whole or not (the relay may stream it).
    if (type == 'Q' || type == 'E') {
      const std::chrono::nanoseconds wait = tenant_->queries.Take(rate, Clock::now());
      if (wait.count() > 0) {
        // Its turn is taken (in order behind those already waiting): it goes when the timer
        // ends, with no other turn to take.
        tenant_->queries_delayed.fetch_add(1, std::memory_order_relaxed);
        pace_->until = at + 1 + length;
        pace_->waiting = true;
        pace_->timer.expires_after(wait);
        pace_->timer.async_wait(
            [weak = weak_from_this()](const boost::system::error_code& ec) {
              std::shared_ptr<Session> self = weak.lock();
              if (ec || self == nullptr) return;
              self->pace_->waiting = false;
              self->Pump();
            });
        return unit;
      }
    }
    at += 1 + length;
    if (type == 'S' || type == 'Q') unit = at;
  }
  pace_->until = at;
  return cbuf.size();
}

Session::CacheStep Session::ServeFromCache(RelayState& r, size_t* position) {
  Routed& routed = *routed_;  // (only a routed client's queries are looked up)
  std::shared_ptr<QueryCache> cache = routed.router->cache();
  std::optional<RelayProtocol::CacheableUnit> unit;
  if (cache != nullptr && !protocol_.changed_settings()) unit = protocol_.CacheableAt(r, *position);
  if (!unit.has_value()) {
    routed.probe.reset();
    routed.cache_ready = false;
    return CacheStep::kRun;
  }
  if (routed.probe != nullptr && routed.cache_ready &&
      std::string_view(routed.probe->key).ends_with(unit->key)) {
    // (The unit probed is the one still at the position: nothing moved while it waited.)
    routed.cache_ready = false;
    std::shared_ptr<const std::string> answer =
        cache->Answer(*routed.probe, protocol_.routing()->position());
    if (answer == nullptr) return CacheStep::kRun;  // (the probe kept: the answer is gathered)
    protocol_.ServeCached(r, position, unit->size, *answer);
    routed.probe.reset();
    return CacheStep::kServed;
  }
  routed.probe = std::make_unique<QueryCache::Probe>(
      cache->Look(user(), CacheSettings(), unit->text, unit->key));
  if (!routed.probe->cacheable) {
    routed.probe.reset();
    return CacheStep::kRun;
  }
  if (!routed.probe->present) return CacheStep::kRun;
  std::weak_ptr<Session> weak = weak_from_this();
  asio::io_context* context = &thread_->context;
  auto ready = [weak, context] {
    asio::post(*context, [weak] {
      if (std::shared_ptr<Session> session = weak.lock()) session->CacheReady();
    });
  };
  if (cache->Wait(*routed.probe, std::move(ready))) {
    routed.cache_wait = true;
    return CacheStep::kWaiting;
  }
  routed.cache_ready = true;  // (it has ended already: Answer says whether it may be served)
  return ServeFromCache(r, position);
}

void Session::CacheReady() {
  if (routed_ == nullptr || !routed_->cache_wait) return;
  routed_->cache_wait = false;
  routed_->cache_ready = true;
  if (phase_ >= Phase::kClientGone) return;
  protocol_.Unparse();
  Pump();
}

std::string Session::CacheSettings() {
  const SettingsMap& params = protocol_.settings().params();
  std::vector<std::pair<std::string_view, std::string_view>> sorted;
  sorted.reserve(params.size());
  for (const auto& [name, value] : params) {
    if (name != "application_name" && name != "fallback_application_name") {
      sorted.emplace_back(name, value);
    }
  }
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (const auto& [name, value] : sorted) {
    out.push_back('\n');
    out.append(name).append("=").append(value);
  }
  return out;
}

Pool* Session::NodePool(int node) {
  if (node == kPrimaryNode || routed_ == nullptr) return pool_.get();
  std::vector<std::shared_ptr<Pool>>& pools = routed_->replica_pools;
  if (pools.size() < static_cast<size_t>(node)) pools.resize(node);
  std::shared_ptr<Pool>& pool = pools[node - 1];
  if (pool == nullptr) pool = impl()->PoolFor(database(), user(), node);
  return pool != nullptr ? pool.get() : pool_.get();
}

void Session::FollowRouter() {
  routing_version_ = thread_->config_version;
  std::shared_ptr<Router> router = impl()->RouterFor(database());
  if (router == (routed_ != nullptr ? routed_->router : nullptr)) return;
  // A RELOAD changed the database's replicas: the client goes on with the new router (its
  // reads still see its writes), and the replicas' pools as the new list numbers them.
  const uint64_t position = protocol_.routed() ? protocol_.routing()->position() : 0;
  const bool awaiting = protocol_.routed() && protocol_.routing()->awaiting_position();
  // (The old cache's probe and the old replicas' pools go with the old router.)
  routed_.reset();
  if (router != nullptr) {
    routed_ = std::make_unique<Routed>();
    routed_->router = std::move(router);
  }
  protocol_.SetRouting(routed_ != nullptr ? routed_->router->NewClient(position) : nullptr);
  // (The old router's read of the position after its last write may never come: the new one's
  // is after that write too.)
  if (awaiting && protocol_.routed()) protocol_.routing()->Wrote();
  target_ = pool_.get();
}

bool Session::TryAttach() {
  std::unique_ptr<ServerConn> server = target_->TryAcquire(&thread_->context, startup_settings());
  if (server == nullptr) return false;
  Attached(std::move(server));
  return true;
}

void Session::StartAttach() {
  attaching_ = true;
  info_.state = 2;
  RelayState& r = relay();
  r.wait = target_->Queue(&thread_->context, startup_settings(), weak_from_this());
  if (r.wait != nullptr) {
    thread_->waiting.insert(this);
    return;
  }
  AcquireLater(nullptr);
}

void Session::PoolAnswered(const std::shared_ptr<Pool::Waiter>& waiter) {
  if (relay_ != nullptr && waiter == relay_->wait && phase_ != Phase::kFinished) EndWait();
}

void Session::EndWait() {
  std::shared_ptr<Pool::Waiter> waiter = std::move(relay().wait);
  thread_->waiting.erase(this);
  std::unique_ptr<ServerConn> server = target_->TakeHanded(waiter);
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
  absl::StatusOr<std::unique_ptr<ServerConn>> server = co_await self->target_->Acquire(
      &self->thread_->context, self->startup_settings(), &args->resumed);
  self->AttachDone(std::move(server));
}

void Session::AttachDone(absl::StatusOr<std::unique_ptr<ServerConn>> server) {
  attaching_ = false;
  const bool cancelled = std::exchange(wait_cancelled_, false);
  if (phase_ == Phase::kFinished) {
    if (server.ok()) target_->Release(*std::move(server), true);
    return;
  }
  if (!server.ok() && routed_ != nullptr && routed_->choice.node != kPrimaryNode && !cancelled &&
      phase_ < Phase::kClosing && !killed_) {
    // A replica gave no connection: nothing of the unit was sent, so it is placed again
    // (elsewhere: the replica takes no reads until it is seen healthy).
    info_.state = 0;
    LogInfo("pooler: database %s: replica %d gave no connection (%s): its reads go elsewhere",
            database(), routed_->choice.node, SqlstateOf(server.status()).second);
    protocol_.routing()->Unavailable(routed_->choice.node);
    routed_->choice = RouteChoice();
    target_ = pool_.get();
    protocol_.Unparse();
    Pump();
    return;
  }
  if (!server.ok()) {
    info_.state = 0;
    auto [sqlstate, message] = SqlstateOf(server.status());
    if (cancelled && (relay_ == nullptr || relay_->cbuf.empty())) {
      // The query this wait was for was cancelled and answered; no other waits.
      LogDebug("pooler: client %d: a cancelled wait ended: %s", info_.id, message);
    } else {
      EndWithFatal(sqlstate, message);
    }
  } else if (phase_ >= Phase::kClosing || killed_ || (cancelled && protocol_.routed())) {
    // (Routed: a connection taken for a cancelled unit goes back; the next unit is placed.)
    info_.state = 0;
    target_->Release(*std::move(server), true);
    protocol_.Unparse();
  } else {
    Attached(*std::move(server));
  }
  Pump();
}

void Session::Attached(std::unique_ptr<ServerConn> server) {
  info_.state = 1;
  server_ = std::move(server);
  if (routed_ == nullptr) {
    protocol_.Attach(server_.get());
  } else {
    protocol_.Attach(server_.get(), routed_->choice);
    if (routed_->probe != nullptr && routed_->router->cache() != nullptr) {
      protocol_.Capture(routed_->router->cache()->max_answer());
    }
  }
  {
    absl::MutexLock lock(&info_.mu);
    info_.server = server_.get();
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
  if (protocol_.SettingsDiffer()) protocol_.AddSettingsSync(&sql);
  if (!sql.empty()) {
    AppendQuery(&relay().to_server, sql);
    relay().expect.push_back({Expect::kSyncSwallow, {}});
  }
}

bool Session::WriteServer() {
  RelayState& r = relay();
  if (r.to_server.empty() || (server_blocked_ && !server_out_)) return false;
  const ssize_t n =
      SendPending(server_->fd(), r.to_server, r.server_sent, server_blocked_, server_out_);
  if (n < 0) {
    LogDebug("pooler: client %d: write to server: %s", info_.id, strerror(errno));
    ServerLost();
    return true;
  }
  return n > 0;
}

bool Session::WriteClient() {
  if (ClientOutputEmpty()) {
    if (phase_ >= Phase::kClosing && client_fd_ >= 0) {
      ClientGone();
      return true;
    }
    return false;
  }
  RelayState& r = relay();
  if (phase_ >= Phase::kClientGone) {
    r.to_client.clear();
    r.client_sent = 0;
    client_tls_.reset();  // (records it sealed and did not send go with it)
    if (ws_ != nullptr) {
      ws_->out.clear();
      ws_->sent = 0;
    }
    return true;
  }
  if (client_blocked_ && !client_out_) return false;
  std::string* out = &r.to_client;
  size_t* sent = &r.client_sent;
  if (ws_ != nullptr) {
    // A WebSocket client: what waits is framed once the last frame is written, so that
    // to_client keeps bounding what the server's side may add.
    if (ws_->out.empty() && !r.to_client.empty()) {
      AppendWsFrame(&ws_->out, kWsBinary, r.to_client);
      r.to_client.clear();
      r.client_sent = 0;
    }
    out = &ws_->out;
    sent = &ws_->sent;
  }
  // (Sealed records a TLS client's socket now took in full are progress too, though no new
  // byte was: a closing session goes on to close.)
  const bool had_unsent = client_tls_ != nullptr && client_tls_->unsent();
  const ssize_t n = client_tls_ != nullptr
                        ? SendTls(*out, *sent, client_blocked_, client_out_)
                        : SendPending(client_fd_, *out, *sent, client_blocked_, client_out_);
  if (n < 0) {
    LogDebug("pooler: client %d: write: %s", info_.id, strerror(errno));
    ClientGone();
    return true;
  }
  pool_->stats().bytes_sent.fetch_add(n, std::memory_order_relaxed);
  return n > 0 || (had_unsent && !client_tls_->unsent());
}

void Session::UpdateInterest() {
  const RelayState* r = relay_.get();
  if (client_fd_ >= 0) {
    uint32_t want = 0;
    if (phase_ < Phase::kClosing && (r == nullptr || r->cbuf.size() < ClientReadLimit()) &&
        (ws_ == nullptr || ws_->out.size() < kFlushAt) && !tls_read_wants_write_) {
      want |= Reactor::kRead;
    }
    if (!ClientOutputEmpty() || tls_read_wants_write_) want |= Reactor::kWrite;
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
  LogWarning("pooler: client %d: cannot watch %s: %s", info_.id, what, strerror(errno));
  killed_ = true;
  asio::post(thread_->context, [self = shared_from_this()] { self->Pump(); });
}

void Session::EndWithFatal(std::string_view sqlstate, std::string_view message) {
  if (phase_ < Phase::kClientGone) AppendError(&relay().to_client, "FATAL", sqlstate, message);
  Advance(Phase::kClosing);
  if (server_ != nullptr) Detach(false);
}

void Session::ClientGone() {
  Advance(Phase::kClientGone);
  CloseClientFd();
  if (relay_ != nullptr) {
    relay_->to_client.clear();
    relay_->client_sent = 0;
    relay_->cbuf.clear();
  }
  if (pace_ != nullptr) {
    pace_->until = 0;
    pace_->waiting = false;
    pace_->timer.cancel();
  }
  if (ws_ != nullptr) {
    ws_->out.clear();
    ws_->sent = 0;
  }
}

void Session::CloseClientFd() {
  if (client_fd_ < 0) return;
  thread_->reactor.Remove(client_fd_);
  if (client_tls_ != nullptr) client_tls_->Close(client_fd_);  // (close_notify, if it fits)
  ::shutdown(client_fd_, SHUT_RDWR);
  ::close(std::exchange(client_fd_, -1));
  client_tls_.reset();
}

void Session::Unlink() {
  if (prev_ == nullptr && thread_->relaying != this) return;  // (not linked)
  if (prev_ != nullptr) {
    prev_->next_ = next_;
  } else {
    thread_->relaying = next_;
  }
  if (next_ != nullptr) next_->prev_ = prev_;
  prev_ = next_ = nullptr;
}

void Session::Finish() {
  CloseClientFd();
  Unlink();
  Advance(Phase::kFinished);
  if (relay_ != nullptr) thread_->GiveRelay(std::move(relay_));
  asio::post(thread_->context, [last = std::move(self_)] {});
}

bool Session::ServerSide() {
  RelayState& r = relay();
  bool progress = false;
  if (server_in_ && (r.to_client.size() < kFlushAt || server_hup_)) {
    const ssize_t n = ReceivePending(server_->fd(), r.sbuf, server_in_, server_hup_);
    if (n < 0) {
      LogDebug("pooler: client %d: server read: %s", info_.id, ReadFailure());
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
  std::string fatal_message;
  switch (protocol_.ProcessServerBuffer(relay(), &fatal_message)) {
    case RelayProtocol::ServerStep::kNone:
      return false;
    case RelayProtocol::ServerStep::kProgress:
      if (protocol_.captured()) {
        std::string answer = protocol_.TakeCapture();
        if (routed_ != nullptr && routed_->probe != nullptr) {
          if (std::shared_ptr<QueryCache> cache = routed_->router->cache()) {
            cache->Store(*routed_->probe, std::move(answer));
          }
          routed_->probe.reset();
        }
      }
      return true;
    case RelayProtocol::ServerStep::kFatal:
      EndWithFatal("08P01", fatal_message);
      return true;
  }
  return true;
}

bool Session::Release() {
  // (Not while the client's next messages wait to be relayed: they go on this connection.)
  if (!protocol_.Releasable(relay_.get()) || (!protocol_.parsed() && !relay_->cbuf.empty())) {
    return false;
  }
  if (!Detach(true)) return false;
  if (!relay_->cbuf.empty()) protocol_.Unparse();  // (what waited is placed now)
  return true;
}

bool Session::SettleAfterClientGone() {
  RelayState& r = relay();
  if (!r.expect.empty() || r.client_pass > 0 || r.server_pass > 0 || protocol_.unsynced() > 0 ||
      !r.to_server.empty()) {
    if (cleanup_sent_ && !r.expect.empty() && r.expect.front().kind == Expect::kSyncSwallow) {
      return false;  // our own cleanup is being answered
    }
    Detach(false);
    return true;
  }
  const bool dirty =
      protocol_.txn_status() != 'I' || protocol_.mode() == PoolMode::kSession || protocol_.pinned();
  if (!dirty || cleanup_sent_) return Detach(true);
  // Two queries: DISCARD ALL cannot run in the implicit transaction of one.
  if (protocol_.txn_status() != 'I') {
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
  // Kept only at a message boundary on both sides (a client message half sent must not have
  // its rest read as messages of their own), and when it was not shown the server's FATAL.
  const bool keep_client = phase_ < Phase::kClosing && protocol_.SurvivesLoss(r) &&
                           !protocol_.server_fatal_relayed();
  if (keep_client) {
    for (const Expectation& e : r.expect) {
      if (e.kind != Expect::kSync) continue;
      AppendError(&r.to_client, "ERROR", "08006",
                  "the server connection was lost (restart or failover) while this "
                  "statement ran: its outcome is unknown; the next one runs on a new "
                  "connection");
      AppendReadyForQuery(&r.to_client, 'I');
    }
  } else if (phase_ < Phase::kClientGone && r.server_pass == 0 &&
             !protocol_.server_fatal_relayed()) {
    AppendError(&r.to_client, "FATAL", "08006",
                "the server connection was lost (restart or failover)");
  }
  protocol_.Lost();
  r.client_pass = 0;  // a message half sent is lost with the connection
  Detach(false);
  if (!keep_client) Advance(Phase::kClosing);
}

bool Session::Detach(bool reusable) {
  {
    absl::MutexLock lock(&info_.mu);
    // (Checked under the lock that cancel requests take the server under: none can begin
    // once the connection is no longer the client's.)
    if (reusable && info_.cancels_in_flight > 0) return false;  // (CancelSettled pumps)
    if (std::exchange(info_.cancel_unsettled, false)) reusable = false;
    info_.server = nullptr;
    info_.state = 0;
  }
  protocol_.Detach(relay_.get());
  if (protocol_.routed()) protocol_.routing()->Done();
  cleanup_sent_ = false;
  server_in_ = server_out_ = server_hup_ = server_blocked_ = false;
  const int fd = server_->fd();
  if (reusable) {
    thread_->reactor.Unwatch(fd, Reactor::kRead);  // (before another thread may take it)
  } else {
    thread_->reactor.Forget(fd);  // closed by Release
  }
  target_->Release(std::move(server_), reusable);
  return true;
}

}  // namespace pgflow::pooler
