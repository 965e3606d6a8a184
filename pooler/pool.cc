#include "pooler/pool.h"

#include <openssl/rand.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "engine/asio_support.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "pooler/protocol.h"
#include "pooler/server_login.h"

namespace pgflow::pooler {
namespace {

using asio_support::kUseTask;
using asio_support::tcp;

}  // namespace

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    // OpenSSL's generator does not fail once seeded; a process without entropy cannot run.
    LogError("pooler: OpenSSL could not produce random bytes");
    std::abort();
  }
  return out;
}

std::pair<std::string, std::string> SqlstateOf(const absl::Status& status) {
  std::string_view message = Sv(status.message());
  if (message.size() > 6 && message[5] == ' ') {
    return {std::string(message.substr(0, 5)), std::string(message.substr(6))};
  }
  return {"08006", std::string(message)};
}

absl::Status SqlstateError(std::string_view sqlstate, std::string_view message) {
  return absl::UnavailableError(Cat(sqlstate, " ", message));
}

Task<QueryResult> QueryFirstRow(ServerConn& server, const std::string& query,
                                const std::string& param, std::chrono::milliseconds timeout) {
  std::string out;
  std::string parse = query;
  parse.push_back('\0');
  AppendInt16(&parse, 0);  // no parameter types: the server infers them
  AppendParse(&out, "", parse);
  std::string bind;
  AppendInt16(&bind, 0);  // parameters in text
  AppendInt16(&bind, 1);
  AppendInt32(&bind, static_cast<int32_t>(param.size()));
  bind += param;
  AppendInt16(&bind, 0);  // results in text
  AppendBind(&out, "", "", bind);
  std::string execute(1, '\0');
  AppendInt32(&execute, 0);
  AppendMessage(&out, 'E', execute);
  AppendMessage(&out, 'S', "");

  QueryResult result;
  Deadline deadline(server.socket, timeout);
  boost::system::error_code ec;
  co_await asio::async_write(server.socket, asio::buffer(out), asio::redirect_error(kUseTask, ec));
  if (ec) {
    result.status = SqlstateError("08006", Cat("sending the query: ", ec.message()));
    result.reusable = false;
    co_return result;
  }
  std::string buffer;
  while (true) {
    absl::StatusOr<WholeMessage> message = co_await ReadWholeMessage(server.socket, buffer, 1 << 20);
    if (!message.ok()) {
      result.status = SqlstateError("08006", deadline.expired()
                                                 ? Cat("no answer within ", FormatDuration(timeout))
                                                 : std::string(message.status().message()));
      result.reusable = false;
      co_return result;
    }
    switch (message->type) {
      case 'D': {
        if (result.row.has_value() || !result.status.ok()) break;  // the first row only
        BodyReader reader(message->body);
        std::optional<int16_t> count = reader.Int16();
        std::vector<std::optional<std::string>> row;
        for (int i = 0; count.has_value() && i < *count; ++i) {
          std::optional<int32_t> length = reader.Int32();
          if (!length.has_value()) break;
          if (*length < 0) {
            row.emplace_back(std::nullopt);
            continue;
          }
          std::optional<std::string_view> value = reader.Bytes(static_cast<size_t>(*length));
          if (!value.has_value()) break;
          row.emplace_back(std::string(*value));
        }
        if (!count.has_value() || row.size() != static_cast<size_t>(*count)) {
          result.status = SqlstateError("08P01", "malformed DataRow");
          result.reusable = false;
          co_return result;
        }
        result.row = std::move(row);
        break;
      }
      case 'E': {
        ErrorFields error = ParseErrorFields(message->body);
        result.status = SqlstateError(error.sqlstate, error.message);
        break;
      }
      case 'Z':
        if (message->body != "I") result.reusable = false;
        co_return result;
      default:
        break;  // ParseComplete, BindComplete, RowDescription, CommandComplete, notices
    }
  }
}

Deadline::Deadline(Socket& socket, std::chrono::milliseconds timeout)
    : state_(std::make_shared<State>(State{.socket = &socket, .expired = false})),
      timer_(socket.get_executor()) {
  timer_.expires_after(timeout);
  timer_.async_wait([state = state_](const boost::system::error_code& ec) {
    if (ec || state->socket == nullptr) return;
    state->expired = true;
    boost::system::error_code ignored;
    state->socket->cancel(ignored);
  });
}

Deadline::~Deadline() {
  state_->socket = nullptr;
  timer_.cancel();
}

void ServerConn::LeaveAsio() {
  if (!socket.is_open()) return;
  boost::system::error_code ec;
  const int fd = socket.release(ec);
  if (!ec) relay_fd = fd;
}

void ServerConn::Close() {
  boost::system::error_code ec;
  socket.close(ec);
  if (relay_fd >= 0) ::close(std::exchange(relay_fd, -1));
}

void ServerConn::MoveTo(asio::io_context* context) {
  if (relay_fd >= 0) {
    Socket back(context->get_executor());
    boost::system::error_code ec;
    back.assign(remote.protocol(), relay_fd, ec);  // (a Unix socket: any stream protocol)
    if (ec) return;  // (left to the relay; asio's calls then fail)
    relay_fd = -1;
    back.non_blocking(true, ec);
    socket = std::move(back);
    home = context;
    return;
  }
  if (context == home) return;
  boost::system::error_code ec;
  tcp protocol = socket.local_endpoint(ec).protocol();
  int fd = socket.release(ec);
  Socket moved(context->get_executor());
  if (fd >= 0) moved.assign(protocol, fd, ec);
  moved.non_blocking(true, ec);
  socket = std::move(moved);
  home = context;
}

bool ServerConn::LooksAlive() {
  if (fd() < 0) return false;
  char byte;
  ssize_t n = ::recv(fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  // Nothing to read is the only healthy state of an idle connection: a byte would be an
  // error PostgreSQL sent before closing (an administrator's shutdown), 0 its end.
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

Task<absl::StatusOr<WholeMessage>> ReadWholeMessage(Socket& socket, std::string& buffer,
                                                    size_t max_size) {
  while (true) {
    absl::StatusOr<std::optional<MessageHeader>> header = ReadMessageHeader(buffer, max_size);
    if (!header.ok()) co_return header.status();
    if (header->has_value() && buffer.size() >= (*header)->size) {
      WholeMessage message{.type = (*header)->type,
                           .body = buffer.substr(5, (*header)->body_size())};
      buffer.erase(0, (*header)->size);
      co_return message;
    }
    char chunk[8192];
    boost::system::error_code ec;
    size_t n = co_await socket.async_read_some(asio::buffer(chunk),
                                               asio::redirect_error(kUseTask, ec));
    if (ec) {
      co_return absl::UnavailableError(ec == asio::error::eof ? "connection closed"
                                                              : ec.message());
    }
    buffer.append(chunk, n);
  }
}

// ---------------------------------------------------------------------------------------------

// A client waiting for a server connection. Shared with whoever hands it one: the handing
// side sets what it got and cancels the timer on the waiter's own thread.
// A released connection goes to the longest-waiting client, or to one of the next
// kLocalHandOffScan on the connection's own thread while the longest has waited less than
// kLocalHandOffSlack: FIFO within a few milliseconds, and most hand-overs stay on their thread.
constexpr ptrdiff_t kLocalHandOffScan = 16;
constexpr std::chrono::milliseconds kLocalHandOffSlack{5};

struct Pool::Waiter {
  explicit Waiter(asio::io_context* c) : context(c) {}
  asio::io_context* context;
  std::optional<Timer> timer;  // Acquire's wait only (a timer costs asio's service registry)
  Clock::time_point since = Clock::now();
  std::unique_ptr<ServerConn> server;  // handed over
  bool may_open = false;               // a slot was freed for it: it opens a connection
  std::string wanted;                  // the startup settings' key it asked for
  bool woken = false;                  // by a Release, a RESUME or a reserve slot
  std::weak_ptr<PoolClient> client;    // a Queue wait's client (none: Acquire's timer)
  bool queued = false;                 // a Queue wait (told through `client`)
};

Pool::Pool(PoolSettings settings, LoginCredentials login)
    : settings_(std::move(settings)), login_(std::move(login)) {}

void Pool::WakeLocked(std::shared_ptr<Waiter> waiter) {
  waiter->woken = true;
  if (waiter->queued) {
    asio::post(waiter->context->get_executor(), [waiter] {
      if (std::shared_ptr<PoolClient> client = waiter->client.lock()) client->PoolAnswered(waiter);
    });
    return;
  }
  asio::post(waiter->context->get_executor(), [waiter] { waiter->timer->cancel(); });
}

std::shared_ptr<Pool::Waiter> Pool::Queue(asio::io_context* context,
                                          const StartupSettings* startup,
                                          std::weak_ptr<PoolClient> client) {
  absl::MutexLock lock(&mu_);
  // (An idle connection, of any settings, is Acquire's to take or to close for room.)
  const int total = static_cast<int>(active_.size() + idle_.size()) + connecting_;
  if (paused_ || !idle_.empty() || total < settings_.pool_size) return nullptr;
  auto waiter = std::make_shared<Waiter>(context);
  waiter->wanted = startup != nullptr ? startup->key : std::string();
  waiter->client = std::move(client);
  waiter->queued = true;
  waiters_.push_back(waiter);
  stats_.waits.fetch_add(1, std::memory_order_relaxed);
  return waiter;
}

std::unique_ptr<ServerConn> Pool::TakeHanded(const std::shared_ptr<Waiter>& waiter) {
  absl::MutexLock lock(&mu_);
  std::erase(waiters_, waiter);
  if (waiter->server == nullptr) return nullptr;
  stats_.wait_us.fetch_add(std::chrono::duration_cast<std::chrono::microseconds>(
                               Clock::now() - waiter->since)
                               .count(),
                           std::memory_order_relaxed);
  std::unique_ptr<ServerConn> server = std::move(waiter->server);
  server->used_on = waiter->context;
  return server;
}

void Pool::Abandon(const std::shared_ptr<Waiter>& waiter) {
  std::unique_ptr<ServerConn> handed;
  {
    absl::MutexLock lock(&mu_);
    std::erase(waiters_, waiter);
    handed = std::move(waiter->server);
    if (handed == nullptr && waiter->may_open) {
      waiter->may_open = false;
      --connecting_;
      ServeWaitersLocked();
    }
  }
  if (handed != nullptr) Release(std::move(handed), true);
}

Clock::duration Pool::QueueWaitLimit() const {
  absl::MutexLock lock(&mu_);
  Clock::duration limit = Clock::duration::max();
  if (settings_.query_wait_timeout.count() > 0) limit = settings_.query_wait_timeout;
  if (settings_.reserve_pool > 0) {
    limit = std::min<Clock::duration>(limit, settings_.reserve_pool_timeout);
  }
  return limit;
}

Clock::time_point Pool::WaitSince(const Waiter& waiter) { return waiter.since; }

// Whether a logged-in server is of the kind `target` asks for, from what it reported at login
// (PostgreSQL 14 and later report in_hot_standby and default_transaction_read_only); an error
// when it did not report them.
absl::StatusOr<bool> ServerMatches(TargetSession target, const ServerConn& server) {
  if (target == TargetSession::kAny) return true;
  auto reported = [&](const char* name) -> std::optional<bool> {
    auto it = server.params.find(name);
    if (it == server.params.end()) return std::nullopt;
    return it->second == "on";
  };
  std::optional<bool> standby = reported("in_hot_standby");
  std::optional<bool> read_only = reported("default_transaction_read_only");
  if (!standby.has_value() || !read_only.has_value()) {
    return absl::FailedPreconditionError(
        Cat("target_session_attrs=", TargetSessionName(target),
            " needs PostgreSQL 14 or later, which reports in_hot_standby at login"));
  }
  switch (target) {
    case TargetSession::kReadWrite:
      return !*standby && !*read_only;
    case TargetSession::kReadOnly:
      return *standby || *read_only;
    case TargetSession::kPrimary:
      return !*standby;
    case TargetSession::kStandby:
    case TargetSession::kPreferStandby:
      return *standby;
    case TargetSession::kAny:
      break;
  }
  return true;
}

Task<absl::StatusOr<std::unique_ptr<ServerConn>>> Pool::Login(asio::io_context* context,
                                                                const PoolSettings& settings,
                                                                const LoginCredentials& login,
                                                                const StartupSettings* startup,
                                                                bool* transient) {
  // The url's hosts in turn, from the one last reached (round-robin: from the one after the
  // last connection's first), until one answers as the url's target_session_attrs asks;
  // prefer-standby goes round twice, the second time for any.
  const Upstream& upstream = settings.upstream;
  const size_t count = upstream.host_count();
  const size_t first = (upstream.round_robin ? next_host_.fetch_add(1, std::memory_order_relaxed)
                                             : last_host_.load(std::memory_order_relaxed)) %
                       count;
  const int rounds = upstream.target == TargetSession::kPreferStandby ? 2 : 1;
  *transient = false;
  absl::Status failure;
  for (int round = 0; round < rounds; ++round) {
    const TargetSession target = round == 0 ? upstream.target : TargetSession::kAny;
    for (size_t k = 0; k < count; ++k) {
      const size_t i = (first + k) % count;
      const Upstream host = upstream.Host(i);
      bool host_transient = false;
      absl::StatusOr<std::unique_ptr<ServerConn>> server =
          co_await LoginServer(context, host, settings.server_dbname, login, startup,
                               settings.connect_timeout, &host_transient);
      if (!server.ok()) {
        *transient = *transient || host_transient;
        failure = server.status();
        continue;
      }
      absl::StatusOr<bool> matches = ServerMatches(target, **server);
      if (matches.ok() && *matches) {
        last_host_.store(i, std::memory_order_relaxed);
        co_return server;
      }
      if (matches.ok()) {
        *transient = true;  // a standby may be promoted, a primary demoted
        failure = SqlstateError("08001", Cat("server at ", host.Where(), " is not ",
                                             TargetSessionName(target), " (target_session_attrs)"));
      } else {
        failure = SqlstateError("08001",
                                Cat("server at ", host.Where(), ": ", matches.status().message()));
      }
    }
  }
  if (count > 1) {
    auto [sqlstate, message] = SqlstateOf(failure);
    failure = SqlstateError(sqlstate, Cat("none of the url's ", count,
                                          " hosts answered as wanted; the last: ", message));
  }
  co_return failure;
}

Task<absl::StatusOr<std::unique_ptr<ServerConn>>> Pool::Open(asio::io_context* context,
                                                               const StartupSettings* startup) {
  PoolSettings settings;
  LoginCredentials login;
  uint64_t generation;
  std::optional<Clock::time_point> give_up;
  std::chrono::milliseconds backoff(50);
  while (true) {
    {
      // (Read again at each try: a RETARGET or RELOAD while the server was held, a failover
      // followed, sends the next try to the new server.)
      absl::MutexLock lock(&mu_);
      settings = settings_;
      login = login_;
      generation = generation_;
    }
    if (!give_up.has_value()) give_up = Clock::now() + settings.hold_timeout;
    bool transient = false;
    absl::StatusOr<std::unique_ptr<ServerConn>> server =
        co_await Login(context, settings, login, startup, &transient);
    if (server.ok()) {
      stats_.server_logins.fetch_add(1, std::memory_order_relaxed);
      (*server)->generation = generation;
      absl::MutexLock lock(&mu_);
      server_error_.clear();
      if (startup == nullptr || server_params_.empty()) server_params_ = (*server)->reported;
      if (startup == nullptr || defaults_ == nullptr) {
        defaults_ = std::make_shared<const SettingsMap>(
            (*server)->params);
      }
      (*server)->reported.clear();
      (*server)->reported.shrink_to_fit();
      co_return server;
    }
    stats_.server_login_failures.fetch_add(1, std::memory_order_relaxed);
    {
      absl::MutexLock lock(&mu_);
      server_error_ = Sv(server.status().message());
    }
    if (!transient || Clock::now() + backoff >= *give_up) {
      LogWarning("pooler: database %s: %s", settings.database, server.status().message());
      co_return server.status();
    }
    // Held: the server restarts or fails over; new transactions wait for it. A RETARGET
    // meanwhile (a failover followed) ends the wait at once: the new server is tried next.
    const Clock::time_point retry_at = Clock::now() + backoff;
    while (Clock::now() < retry_at) {
      {
        absl::MutexLock lock(&mu_);
        if (!(settings_.upstream == settings.upstream)) break;
      }
      Timer pause(context->get_executor());
      pause.expires_after(std::min<Clock::duration>(std::chrono::milliseconds(50),
                                                    retry_at - Clock::now()));
      boost::system::error_code ec;
      co_await pause.async_wait(asio::redirect_error(asio_support::kUseTask, ec));
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
}

std::unique_ptr<ServerConn> Pool::TakeIdleLocked(asio::io_context* context,
                                                 const std::string& wanted,
                                                 std::vector<std::unique_ptr<ServerConn>>* dead) {
  // The most recently used idle connection with the same startup settings, on the client's
  // own thread if one is (moving a socket to another thread's reactor costs system calls),
  // else on another.
  while (true) {
    size_t pick = idle_.size();
    for (size_t i = idle_.size(); i-- > 0;) {
      if (idle_[i]->startup_key != wanted) continue;
      if (pick == idle_.size()) pick = i;
      if (idle_[i]->used_on == context) {
        pick = i;
        break;
      }
    }
    if (pick == idle_.size()) return nullptr;
    std::unique_ptr<ServerConn> candidate = std::move(idle_[pick]);
    idle_.erase(idle_.begin() + static_cast<ptrdiff_t>(pick));
    if (candidate->generation == generation_ && candidate->LooksAlive()) return candidate;
    dead->push_back(std::move(candidate));
  }
}

std::unique_ptr<ServerConn> Pool::TryAcquire(asio::io_context* context,
                                             const StartupSettings* startup) {
  const std::string& wanted = startup != nullptr ? startup->key : std::string();
  std::vector<std::unique_ptr<ServerConn>> dead;
  std::unique_ptr<ServerConn> taken;
  {
    absl::MutexLock lock(&mu_);
    if (paused_ || idle_.empty()) return nullptr;
    taken = TakeIdleLocked(context, wanted, &dead);
    if (taken != nullptr) active_[taken->id] = taken.get();
  }
  dead.clear();  // closed outside the lock
  if (taken != nullptr) taken->used_on = context;
  return taken;
}

Task<absl::StatusOr<std::unique_ptr<ServerConn>>> Pool::Acquire(
    asio::io_context* context, const StartupSettings* startup,
    const std::shared_ptr<Waiter>* resumed) {
  const std::string& wanted = startup != nullptr ? startup->key : std::string();
  Clock::time_point start = Clock::now();
  std::shared_ptr<Waiter> waiter;
  bool counted_wait = false;
  if (resumed != nullptr && *resumed != nullptr) {
    waiter = *resumed;  // taken up where the Queue wait left it
    start = waiter->since;
    counted_wait = true;
  }
  auto done_waiting = [&] {
    if (!counted_wait) return;
    stats_.wait_us.fetch_add(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count(),
        std::memory_order_relaxed);
  };
  while (true) {
    std::vector<std::unique_ptr<ServerConn>> dead;
    std::unique_ptr<ServerConn> taken;
    bool open = false;
    std::chrono::milliseconds wait_for{0};
    {
      absl::MutexLock lock(&mu_);
      if (waiter != nullptr) {
        // Back from waiting: what was handed over, if anything.
        std::erase(waiters_, waiter);
        if (waiter->server != nullptr) {
          taken = std::move(waiter->server);
        } else if (waiter->may_open) {
          open = true;  // the slot was counted in connecting_ by the giver
        }
      }
      if (taken == nullptr && !open && !paused_) {
        taken = TakeIdleLocked(context, wanted, &dead);
        int total = static_cast<int>(active_.size() + idle_.size()) + connecting_;
        int limit = settings_.pool_size;
        if (settings_.reserve_pool > 0 && Clock::now() - start >= settings_.reserve_pool_timeout) {
          limit += settings_.reserve_pool;
        }
        if (taken == nullptr && total >= limit && !idle_.empty()) {
          // Full, and the idle connections were started with other settings: one makes room.
          dead.push_back(std::move(idle_.front()));
          idle_.pop_front();
          --total;
        }
        if (taken == nullptr && total < limit) {
          ++connecting_;
          open = true;
        }
      }
      if (taken != nullptr) {
        active_[taken->id] = taken.get();
      } else if (!open) {
        Clock::time_point now = Clock::now();
        // query_wait_timeout 0: no limit (the wait is renewed every hour).
        Clock::time_point deadline = settings_.query_wait_timeout.count() > 0
                                         ? start + settings_.query_wait_timeout
                                         : now + std::chrono::hours(1);
        if (paused_) deadline = std::max(deadline, start + settings_.hold_timeout);
        if (now >= deadline && settings_.query_wait_timeout.count() > 0) {
          done_waiting();
          co_return SqlstateError(
              "08P01",
              Cat("query_wait_timeout: no server connection for database ", settings_.database,
                  " within ", FormatDuration(settings_.query_wait_timeout)));
        }
        wait_for = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
        if (settings_.reserve_pool > 0 && now - start < settings_.reserve_pool_timeout) {
          wait_for = std::min(wait_for, std::chrono::duration_cast<std::chrono::milliseconds>(
                                            start + settings_.reserve_pool_timeout - now) +
                                            std::chrono::milliseconds(1));
        }
        waiter = std::make_shared<Waiter>(context);
        waiter->timer.emplace(context->get_executor());
        waiter->since = start;
        waiter->wanted = wanted;
        waiters_.push_back(waiter);
      }
    }
    dead.clear();  // closed outside the lock
    if (taken != nullptr) {
      done_waiting();
      taken->used_on = context;
      co_return taken;
    }
    if (open) {
      done_waiting();
      absl::StatusOr<std::unique_ptr<ServerConn>> server = co_await Open(context, startup);
      absl::MutexLock lock(&mu_);
      --connecting_;
      if (!server.ok()) {
        ServeWaitersLocked();  // the slot is free again
        co_return server.status();
      }
      active_[(*server)->id] = server->get();
      co_return server;
    }
    if (!counted_wait) stats_.waits.fetch_add(1, std::memory_order_relaxed);
    counted_wait = true;
    waiter->timer->expires_after(wait_for);
    boost::system::error_code ec;
    co_await waiter->timer->async_wait(asio::redirect_error(asio_support::kUseTask, ec));
  }
}

void Pool::ServeWaitersLocked() {
  // A slot is free: the first waiter opens a connection in it.
  int total = static_cast<int>(active_.size() + idle_.size()) + connecting_;
  while (!waiters_.empty() && !paused_ && total < settings_.pool_size) {
    std::shared_ptr<Waiter> waiter = waiters_.front();
    waiters_.pop_front();
    if (waiter->woken) continue;
    waiter->may_open = true;
    ++connecting_;
    ++total;
    WakeLocked(waiter);
  }
}

void Pool::Release(std::unique_ptr<ServerConn> server, bool reusable) {
  std::unique_ptr<ServerConn> closing;
  {
    absl::MutexLock lock(&mu_);
    active_.erase(server->id);
    Clock::time_point now = Clock::now();
    if (server->generation != generation_ ||
        (settings_.lifetime.count() > 0 && now - server->connected_at >= settings_.lifetime)) {
      reusable = false;
    }
    if (!reusable) {
      closing = std::move(server);
      ServeWaitersLocked();
    } else {
      server->idle_since = now;
      while (!waiters_.empty() && waiters_.front()->woken) waiters_.pop_front();
      if (!waiters_.empty() && !paused_ && waiters_.front()->wanted != server->startup_key) {
        // The next client wants a connection started with other settings: this one closes
        // and its slot is that client's to open.
        closing = std::move(server);
        ServeWaitersLocked();
      } else if (!waiters_.empty() && !paused_) {
        // The first waiter, or one a little behind it on the connection's own thread (no
        // socket move, no cross-thread wake-up) while the first has waited only briefly.
        auto chosen = waiters_.begin();
        if ((*chosen)->context != server->used_on && now - (*chosen)->since < kLocalHandOffSlack) {
          auto end = waiters_.begin() + std::min<ptrdiff_t>(waiters_.size(), kLocalHandOffScan);
          for (auto it = std::next(waiters_.begin()); it != end; ++it) {
            if ((*it)->context == server->used_on && !(*it)->woken &&
                (*it)->wanted == server->startup_key) {
              chosen = it;
              break;
            }
          }
        }
        std::shared_ptr<Waiter> waiter = *chosen;
        waiters_.erase(chosen);
        waiter->server = std::move(server);
        active_[waiter->server->id] = waiter->server.get();
        WakeLocked(waiter);
      } else {
        idle_.push_back(std::move(server));
      }
    }
  }
  if (closing != nullptr) {
    closing->Close();
  }
}

std::vector<std::pair<std::string, std::string>> Pool::ServerParams() const {
  absl::MutexLock lock(&mu_);
  return server_params_;
}

std::shared_ptr<const SettingsMap> Pool::Defaults() const {
  absl::MutexLock lock(&mu_);
  return defaults_;
}

uint64_t Pool::SettingsStamp(const SettingsMap& params, const SettingsMap* defaults) {
  // The settings written out in order; a name or value holds no zero byte.
  auto append_sorted = [](std::string* key, const auto& settings) {
    std::vector<std::pair<std::string_view, std::string_view>> sorted(settings.begin(),
                                                                      settings.end());
    std::sort(sorted.begin(), sorted.end());
    for (const auto& [name, value] : sorted) {
      key->append(name).push_back('\0');
      key->append(value).push_back('\0');
    }
  };
  std::string key;
  append_sorted(&key, params);
  key.push_back('\1');
  if (defaults != nullptr) append_sorted(&key, *defaults);
  absl::MutexLock lock(&mu_);
  if (auto it = settings_stamps_.find(key); it != settings_stamps_.end()) return it->second;
  if (settings_stamps_.size() >= kSettingsStamps) {
    settings_stamps_.clear();
    shared_settings_.clear();
  }
  settings_stamps_.emplace(std::move(key), ++last_settings_stamp_);
  return last_settings_stamp_;
}

std::shared_ptr<SettingsMap> Pool::ShareSettings(uint64_t stamp, SettingsMap params) {
  if (params.empty()) return nullptr;
  absl::MutexLock lock(&mu_);
  std::shared_ptr<SettingsMap>& shared = shared_settings_[stamp];
  if (shared == nullptr) shared = std::make_shared<SettingsMap>(std::move(params));
  return shared;
}

void Pool::OfferScramKeys(const std::string& client_key, const std::string& server_key) {
  absl::MutexLock lock(&mu_);
  if (!login_.password.empty() || !login_.md5_hash.empty()) return;
  login_.scram_client_key = client_key;
  login_.scram_server_key = server_key;
}

void Pool::OfferMd5Hash(const std::string& hash) {
  absl::MutexLock lock(&mu_);
  if (!login_.password.empty() || !login_.scram_client_key.empty()) return;
  login_.md5_hash = hash;
}

std::string Pool::login_user() const {
  absl::MutexLock lock(&mu_);
  return login_.user;
}

void Pool::CloseIdle() {
  std::deque<std::unique_ptr<ServerConn>> closing;
  {
    absl::MutexLock lock(&mu_);
    closing.swap(idle_);
    for (const std::shared_ptr<Waiter>& waiter : waiters_) {
      if (waiter->server != nullptr) closing.push_back(std::move(waiter->server));
    }
  }
  for (auto& server : closing) {
    server->Close();
  }
}

void Pool::Pause() {
  absl::MutexLock lock(&mu_);
  paused_ = true;
}

void Pool::Resume() {
  absl::MutexLock lock(&mu_);
  paused_ = false;
  for (const std::shared_ptr<Waiter>& waiter : waiters_) {
    if (!waiter->woken) WakeLocked(waiter);
  }
  waiters_.clear();
}

bool Pool::paused() const {
  absl::MutexLock lock(&mu_);
  return paused_;
}

void Pool::Reconnect() {
  std::deque<std::unique_ptr<ServerConn>> closing;
  {
    absl::MutexLock lock(&mu_);
    ++generation_;
    closing.swap(idle_);
    ServeWaitersLocked();
  }
  for (auto& server : closing) {
    server->Close();
  }
}

void Pool::Prune() {
  std::vector<std::unique_ptr<ServerConn>> closing;
  {
    absl::MutexLock lock(&mu_);
    Clock::time_point now = Clock::now();
    int total = static_cast<int>(active_.size() + idle_.size()) + connecting_;
    for (auto it = idle_.begin(); it != idle_.end();) {
      ServerConn& s = **it;
      bool too_old = settings_.lifetime.count() > 0 && now - s.connected_at >= settings_.lifetime;
      bool idle_long = settings_.idle_timeout.count() > 0 &&
                       now - s.idle_since >= settings_.idle_timeout &&
                       total > settings_.min_pool_size;
      if (too_old || idle_long || s.generation != generation_) {
        closing.push_back(std::move(*it));
        it = idle_.erase(it);
        --total;
      } else {
        ++it;
      }
    }
  }
  for (auto& server : closing) {
    server->Close();
  }
}

void Pool::Update(PoolSettings settings, LoginCredentials login) {
  absl::MutexLock lock(&mu_);
  // Any change of the url (hosts, target, TLS options, ...) or of the login: connections
  // made the old way close when given back. (load_balance_hosts only orders new ones.)
  Upstream before = settings_.upstream;
  before.round_robin = settings.upstream.round_robin;
  bool moved = settings.upstream != before ||
               settings.server_dbname != settings_.server_dbname ||
               login.user != login_.user || login.password != login_.password ||
               // (An md5 hash a client's login offered is not in the new file's login.)
               (!login.md5_hash.empty() && login.md5_hash != login_.md5_hash);
  if (login.password.empty() && login.md5_hash.empty() && login.user == login_.user) {
    login.scram_client_key = login_.scram_client_key;
    login.scram_server_key = login_.scram_server_key;
  }
  settings_ = std::move(settings);
  login_ = std::move(login);
  if (moved) ++generation_;
  ServeWaitersLocked();
}

std::string Pool::server_error() const {
  absl::MutexLock lock(&mu_);
  return server_error_;
}

Pool::Counts Pool::counts() const {
  absl::MutexLock lock(&mu_);
  Counts c;
  c.active = static_cast<int>(active_.size());
  c.idle = static_cast<int>(idle_.size());
  c.connecting = connecting_;
  for (const auto& [id, server] : active_) {
    if (server->generation != generation_) ++c.stale;
  }
  Clock::time_point now = Clock::now();
  for (const auto& waiter : waiters_) {
    if (waiter->woken) continue;
    ++c.waiting;
    c.max_wait_s = std::max(c.max_wait_s, std::chrono::duration<double>(now - waiter->since).count());
  }
  return c;
}

std::vector<Pool::ServerRow> Pool::ServerRows() const {
  absl::MutexLock lock(&mu_);
  std::vector<ServerRow> rows;
  Clock::time_point now = Clock::now();
  auto row = [&](const ServerConn& s, std::string state) {
    boost::system::error_code ec;
    rows.push_back(ServerRow{.state = std::move(state),
                             .id = s.id,
                             .pid = s.backend_pid,
                             .age_s = std::chrono::duration<double>(now - s.connected_at).count(),
                             .remote = s.socket_path.empty()
                                           ? Cat(s.remote.address().to_string(ec), ":",
                                                 s.remote.port())
                                           : Cat("unix:", s.socket_path.substr(
                                                              s.socket_path.rfind('.') + 1))});
  };
  for (const auto& [id, s] : active_) row(*s, "active");
  for (const auto& s : idle_) row(*s, "idle");
  return rows;
}

}  // namespace pgflow::pooler
