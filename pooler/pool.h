#pragma once

// Server connections and the pools that share them.
//
// A Pool holds the server connections of one (database, login user) for every network thread:
// its limits (pool_size, reserve_pool) hold across threads under one mutex taken twice a
// transaction (take, give back). An idle connection stays registered with the reactor of the
// thread that used it last (used_on); a client on another thread takes it over (its socket
// moves to that thread's reactor, pooler/reactor.h). A client that finds no idle connection and no room to open one waits in
// the pool's queue (first come, first served) until one is given back, the reserve opens, or
// query_wait_timeout passes.
//
// Opening a connection retries while the server does not answer or is starting up or
// shutting down, for up to hold_timeout: a restart or a failover of a few seconds makes new
// transactions wait instead of fail. A password refused or a database missing fails at once.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/asio_support.h"
#include "pooler/auth.h"
#include "pooler/pooler_config.h"

namespace pgflow::pooler {

using asio_support::Executor;
using asio_support::Socket;
using asio_support::Task;
using asio_support::Timer;
namespace asio = asio_support::asio;
using Clock = std::chrono::steady_clock;

// Settings by lower-case name (a client's, a server connection's).
using SettingsMap = absl::flat_hash_map<std::string, std::string>;

// How the pooler logs in to PostgreSQL for one pool.
struct LoginCredentials {
  std::string user;
  std::string password;       // plain; empty when not known
  std::string md5_hash;       // "md5..." from the users file
  std::string scram_client_key;  // from a client's SCRAM login (ScramServer::client_key)
  std::string scram_server_key;
};

// Settings a session-mode client gave at startup, sent in the startup packet of the server
// connection it gets, so that RESET returns to them as it would directly. Connections are
// matched on `key`.
struct StartupSettings {
  std::vector<std::pair<std::string, std::string>> settings;  // lower-case names, sorted
  std::string key;                                             // all of them, joined
};

// A statement prepared on a server connection under the pooler's name (transaction pooling).
struct PreparedCopy {
  // The Pool::NextPrepareStamp its Parse was sent with: which of two copies, or of a copy and
  // a client's own Parse, came first.
  uint64_t stamp = 0;
  // Its StatementShape, from the Describe the pooler sends after each Parse; 0 until that is
  // answered.
  uint64_t shape = 0;
};

// An open, logged-in server connection. Owned by one client at a time, or by its pool.
struct ServerConn {
  explicit ServerConn(asio::io_context* context)
      : home(context), used_on(context), socket(context->get_executor()) {}
  ~ServerConn() { Close(); }
  ServerConn(const ServerConn&) = delete;
  ServerConn& operator=(const ServerConn&) = delete;

  // The io_context the socket is registered with (for asio's calls: logins, auth.query).
  asio::io_context* home;
  // The network thread's io_context whose client used it last: the relay reads and writes it
  // directly (its thread's Reactor), so a connection taken on another thread moves only there
  // (MoveTo is for asio's calls, and costs three system calls more).
  asio::io_context* used_on;
  Socket socket;
  // The epoll set of the network thread whose relay last watched the socket (Reactor::Watch),
  // -1 for none. Touched by the connection's holder only.
  int watched_by = -1;
  int relay_fd = -1;  // the descriptor while asio does not hold it (LeaveAsio)
  uint64_t id = 0;
  int32_t backend_pid = 0;
  int32_t backend_key = 0;
  asio_support::tcp::endpoint remote;
  std::string socket_path;  // reached through this Unix socket (remote is then unset)
  // The parameters in force on the connection, by lower-case name: those PostgreSQL reported
  // (ParameterStatus) and those the pooler set.
  SettingsMap params;
  // What PostgreSQL reported at login, under its own names (what clients are shown).
  std::vector<std::pair<std::string, std::string>> reported;
  // The statements prepared on it under the pooler's names (transaction pooling).
  absl::flat_hash_map<std::string, PreparedCopy> prepared;
  Clock::time_point connected_at;
  Clock::time_point idle_since;
  uint64_t generation = 0;  // the pool's at login; RECONNECT closes older ones
  std::string startup_key;  // StartupSettings::key of its login ("" for none)
  // The Pool::SettingsStamp of the client settings `params` was last brought to, 0 when unknown
  // or changed since: a client with that stamp needs no SET or RESET on it.
  uint64_t settings_stamp = 0;

  // Forgets the parameters in force (a DISCARD ALL reset them), and so any client's stamp.
  void ForgetSettings() {
    params.clear();
    settings_stamp = 0;
  }
  // The socket's descriptor, whether asio holds it or the relay does (LeaveAsio); -1 closed.
  int fd() { return socket.is_open() ? socket.native_handle() : relay_fd; }
  // Takes the descriptor out of asio for the relay, whose reactor then watches it alone (an
  // asio registration, edge-triggered, would wake the thread that opened the connection at
  // every answer relayed on another). MoveTo gives it back for asio's calls.
  void LeaveAsio();
  // Registers the socket with asio on `context`, before asio's calls there.
  void MoveTo(asio::io_context* context);
  void Close();
  // Whether an idle connection still looks open: nothing to read, no end of stream.
  bool LooksAlive();
};

class PoolClient;

// Per pool counters, for SHOW STATS and /metrics.
struct PoolStats {
  std::atomic<uint64_t> transactions{0};
  std::atomic<uint64_t> queries{0};
  std::atomic<uint64_t> xact_us{0};  // transactions' time, first message to ReadyForQuery 'I'
  std::atomic<uint64_t> errors{0};   // ErrorResponses the server sent the pool's clients
  std::atomic<uint64_t> bytes_received{0};  // from clients
  std::atomic<uint64_t> bytes_sent{0};      // to clients
  std::atomic<uint64_t> wait_us{0};         // clients' time waiting for a server
  std::atomic<uint64_t> waits{0};
  std::atomic<uint64_t> server_logins{0};
  std::atomic<uint64_t> server_login_failures{0};
};

struct PoolSettings {
  std::string database;  // as clients name it
  std::string server_dbname;
  Upstream upstream;
  PoolMode mode = PoolMode::kTransaction;
  SessionStatePolicy session_state = SessionStatePolicy::kRefuse;
  int pool_size = 20;
  int min_pool_size = 0;
  int reserve_pool = 0;
  std::chrono::milliseconds reserve_pool_timeout{5000};
  std::chrono::milliseconds hold_timeout{30000};
  std::chrono::milliseconds query_wait_timeout{120000};
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds idle_timeout{600000};
  std::chrono::milliseconds lifetime{3600000};
};

class Pool {
 public:
  Pool(PoolSettings settings, LoginCredentials login);

  const PoolSettings& settings() const { return settings_; }
  PoolStats& stats() { return stats_; }

  // A server connection for a client on `context`: an idle one, a new one, or one given back
  // while waiting. Errors carry the SQLSTATE to show the client in their message's first
  // word: "08006 ..." (see SqlstateOf).
  // `startup` (may be null; must outlive the call): prefer, or open, a connection logged in
  // with these settings, closing an idle one that has others when the pool is full.
  // `resumed` (may be null; must outlive the call): a wait begun with Queue, gone on here.
  struct Waiter;
  Task<absl::StatusOr<std::unique_ptr<ServerConn>>> Acquire(
      asio::io_context* context, const StartupSettings* startup,
      const std::shared_ptr<Waiter>* resumed = nullptr);
  // A wait without a coroutine, for a client on `context` that found no idle connection
  // (TryAcquire) when the pool is full: queued as Acquire's waiters are, `client` is told on its
  // thread (PoolClient::PoolAnswered) when a connection was handed to it or the wait must go on
  // through Acquire (a slot freed for it, RESUME); then TakeHanded. nullptr when not queued (a
  // connection is idle, there is room to open one, or the pool is paused): Acquire instead.
  std::shared_ptr<Waiter> Queue(asio::io_context* context, const StartupSettings* startup,
                                std::weak_ptr<PoolClient> client);
  // Ends a Queue wait: the connection handed to it, or nullptr (then Acquire with `waiter`,
  // which goes on with what it was given: a slot to open a connection in, its place in time).
  std::unique_ptr<ServerConn> TakeHanded(const std::shared_ptr<Waiter>& waiter);
  // Gives up a Queue wait (its client is gone): a connection handed to it goes back, a slot
  // freed for it to the next waiter.
  void Abandon(const std::shared_ptr<Waiter>& waiter);
  // How long a Queue wait may last before it must go on through Acquire (the reserve pool
  // opens, query_wait_timeout passes); Clock::duration::max() for no limit.
  Clock::duration QueueWaitLimit() const;
  // When a Queue wait began.
  static Clock::time_point WaitSince(const Waiter& waiter);
  // An idle connection taken at once, without waiting or opening one; nullptr when none is
  // (then Acquire). Not a coroutine: a transaction that finds one costs no coroutine frame.
  std::unique_ptr<ServerConn> TryAcquire(asio::io_context* context,
                                         const StartupSettings* startup);
  // Gives `server` back: to the first waiting client, else to the idle list; `reusable`
  // false closes it (and lets a waiting client open another).
  void Release(std::unique_ptr<ServerConn> server, bool reusable);

  // The parameters a new client is shown at login (server_version, ...): those of the last
  // server login. Empty until one succeeded.
  std::vector<std::pair<std::string, std::string>> ServerParams() const;
  // The same by lower-case name: the values a client that never changed them expects.
  std::shared_ptr<const SettingsMap> Defaults() const;
  // A number naming the settings a client runs with: its own (`params`) over `defaults`. Equal
  // settings get the same number, within the pool and while it remembers them (up to
  // kSettingsStamps sets; then it starts over with new numbers, never reusing one), so that a
  // client landing on a connection last brought to its settings skips comparing them. Never 0.
  uint64_t SettingsStamp(const SettingsMap& params, const SettingsMap* defaults);
  // The settings named `stamp` (SettingsStamp), `params`, as one copy that the clients who
  // log in with them share: the copy the pool keeps (while it remembers the stamp), else
  // `params`, kept. Null when `params` is empty. From any thread.
  std::shared_ptr<SettingsMap> ShareSettings(uint64_t stamp, SettingsMap params);
  // A number that grows with each Parse the pool's connections are sent (from any thread): a
  // statement prepared with a larger one was prepared after one with a smaller.
  uint64_t NextPrepareStamp() { return prepare_clock_.fetch_add(1, std::memory_order_relaxed) + 1; }
  // A client's SCRAM keys, for a pool whose login has no password.
  void OfferScramKeys(const std::string& client_key, const std::string& server_key);
  // The same with an md5 hash (of a user auth.query found), for an md5 login to the server.
  void OfferMd5Hash(const std::string& hash);
  std::string login_user() const;
  // Closes and forgets every idle connection, and those handed to clients that never took
  // them (shutdown, while the io_contexts still exist).
  void CloseIdle();

  // Admin: new acquisitions wait while paused (PAUSE); RESUME lets them go on.
  void Pause();
  void Resume();
  bool paused() const;
  // Closes idle connections and marks the busy ones to be closed when given back.
  void Reconnect();
  // Closes idle connections that outlived idle_timeout / lifetime (above min_pool_size).
  void Prune();
  // Replaces settings (RELOAD); connections to another server are closed when given back.
  void Update(PoolSettings settings, LoginCredentials login);

  struct Counts {
    int active = 0;      // given to clients
    int idle = 0;
    int connecting = 0;  // being opened
    int waiting = 0;     // clients in the queue
    int stale = 0;       // in use but to be closed when given back (RECONNECT, RELOAD)
    double max_wait_s = 0;
  };
  Counts counts() const;
  // Why the last attempt to open a server connection failed (the server unreachable, the login
  // refused: "08006 ..." as Acquire's errors), until one succeeds; empty before any failed.
  std::string server_error() const;
  // One row per connection for SHOW SERVERS: state, id, pid, connected_at age in seconds.
  struct ServerRow {
    std::string state;
    uint64_t id;
    int32_t pid;
    double age_s;
    std::string remote;
  };
  std::vector<ServerRow> ServerRows() const;

  // Client-side bookkeeping the pool keeps for SHOW POOLS.
  std::atomic<int> clients{0};

 private:
  Task<absl::StatusOr<std::unique_ptr<ServerConn>>> Open(asio::io_context* context,
                                                         const StartupSettings* startup);
  // One login to the first of the url's hosts that answers as its target_session_attrs asks;
  // `transient` when trying again later may succeed.
  Task<absl::StatusOr<std::unique_ptr<ServerConn>>> Login(asio::io_context* context,
                                                          const PoolSettings& settings,
                                                          const LoginCredentials& login,
                                                          const StartupSettings* startup,
                                                          bool* transient);
  void WakeLocked(std::shared_ptr<Waiter> waiter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ServeWaitersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An idle connection for `wanted` startup settings (those found dead go to *dead, to be
  // closed outside the lock); nullptr when none.
  std::unique_ptr<ServerConn> TakeIdleLocked(asio::io_context* context, const std::string& wanted,
                                             std::vector<std::unique_ptr<ServerConn>>* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  PoolSettings settings_ ABSL_GUARDED_BY(mu_);
  LoginCredentials login_ ABSL_GUARDED_BY(mu_);
  std::deque<std::unique_ptr<ServerConn>> idle_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, ServerConn*> active_ ABSL_GUARDED_BY(mu_);
  int connecting_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<std::shared_ptr<Waiter>> waiters_ ABSL_GUARDED_BY(mu_);
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::string server_error_ ABSL_GUARDED_BY(mu_);  // server_error()
  // The url's host a server connection was last opened to: the next opening tries it first
  // (after a failover, the new primary found once is where the pool goes).
  std::atomic<size_t> last_host_{0};
  std::atomic<size_t> next_host_{0};  // load_balance_hosts round-robin: the next to start at
  std::atomic<uint64_t> prepare_clock_{0};
  std::vector<std::pair<std::string, std::string>> server_params_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const SettingsMap> defaults_
      ABSL_GUARDED_BY(mu_);
  static constexpr size_t kSettingsStamps = 1024;
  absl::flat_hash_map<std::string, uint64_t> settings_stamps_ ABSL_GUARDED_BY(mu_);
  // The settings clients share, by stamp (ShareSettings): forgotten with settings_stamps_.
  absl::flat_hash_map<uint64_t, std::shared_ptr<SettingsMap>> shared_settings_
      ABSL_GUARDED_BY(mu_);
  uint64_t last_settings_stamp_ ABSL_GUARDED_BY(mu_) = 0;
  PoolStats stats_;
};

// A client that waits for a connection without a coroutine (Pool::Queue): told on its own
// thread when the pool answered `waiter`. (An answer may come for a wait already ended: the
// client compares.)
class PoolClient {
 public:
  virtual void PoolAnswered(const std::shared_ptr<Pool::Waiter>& waiter) = 0;

 protected:
  ~PoolClient() = default;
};

// The SQLSTATE at the front of a pool error's message ("08006 server ..."), and the rest.
std::pair<std::string, std::string> SqlstateOf(const absl::Status& status);
// A pool error: Unavailable, its message `message` after the SQLSTATE (what SqlstateOf reads).
absl::Status SqlstateError(std::string_view sqlstate, std::string_view message);

// Reads one whole message from `socket` through `buffer` (bytes read past it stay there):
// the type and body. For logins and the admin console, not the relay's hot path.
struct WholeMessage {
  char type = 0;
  std::string body;
};
Task<absl::StatusOr<WholeMessage>> ReadWholeMessage(Socket& socket, std::string& buffer,
                                                    size_t max_size);

// Runs `query` with the one text parameter `param` on the idle connection `server` (extended
// protocol, within `timeout`): its first row (nullopt for a NULL; no row: no value). An
// error the server answers is the status, its SQLSTATE first (SqlstateOf), the connection
// idle again; after any other error (no answer, a malformed one) it is not reusable.
struct QueryResult {
  absl::Status status;
  std::optional<std::vector<std::optional<std::string>>> row;
  bool reusable = true;
};
Task<QueryResult> QueryFirstRow(ServerConn& server, const std::string& query,
                                                const std::string& param,
                                                std::chrono::milliseconds timeout);

// Arms a timer that cancels `socket`'s operations when `timeout` passes; disarmed when
// destroyed. expired() tells a cancelled operation from a failed one.
class Deadline {
 public:
  Deadline(Socket& socket, std::chrono::milliseconds timeout);
  ~Deadline();
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
  bool expired() const { return state_->expired; }

 private:
  struct State {
    Socket* socket;
    bool expired = false;
  };
  std::shared_ptr<State> state_;
  Timer timer_;
};

// Random bytes from OpenSSL (nonces, salts, cancel keys).
std::string RandomBytes(size_t n);

}  // namespace pgflow::pooler
