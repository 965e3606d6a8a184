#pragma once

// What the pooler's sources share (pooler.cc, session_login.cc, session_relay.cc): the network
// threads, what a relaying session keeps while its client speaks, what the admin console and
// cancel requests see of a client, and Pooler::Impl. Internal to pooler/.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/hash/hash.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "boost/asio/ssl.hpp"
#include "engine/asio_support.h"
#include "pooler/admin_console.h"
#include "pooler/auth.h"
#include "pooler/login_failures.h"
#include "pooler/pool.h"
#include "pooler/pooler.h"
#include "pooler/pooler_config.h"
#include "pooler/reactor.h"
#include "pooler/relay_protocol.h"
#include "pooler/tenant.h"

namespace pgflow::pooler {

using asio_support::Acceptor;
using asio_support::kUseTask;
using asio_support::tcp;
using LocalAcceptor =
    asio::basic_socket_acceptor<asio::local::stream_protocol, asio_support::Executor>;

// What one read from a socket takes at most (NetThread::scratch).
constexpr size_t kReadChunk = 16384;

class Session;
class Gateway;

// Opens `acceptor` listening on `at` with SO_REUSEPORT, so that each network thread listens
// on the same address with a socket of its own and the kernel spreads connections among them.
boost::system::error_code ListenShared(Acceptor* acceptor, const tcp::endpoint& at);

// After an accept failed (out of descriptors, EMFILE, and the like): a little wait on `thread`
// rather than a spin.
struct NetThread;
asio_support::Task<void> PauseAfterFailedAccept(NetThread* thread);
// The process has no descriptor left: accepts the next client queued on `listener` with the
// thread's spare one and closes it with FATAL 53300 saying so, rather than leaving it queued
// until its own timeout. False when there was none to accept (or no spare).
bool RefuseWithoutDescriptors(NetThread* thread, int listener);

// A client that reached the pooler through its HTTP listener (pooler/gateway.h): the gateway
// speaks for it over one end of a socketpair, the session serves the other end as it would a
// socket of its own, with the client's address (for SHOW CLIENTS, bans and the log) and whether
// the client's connection is TLS (for tls.mode require).
struct Tunnel {
  tcp::endpoint peer;
  bool tls = false;
  // The common name of the client certificate its TLS verified (http.tls.ca), or empty.
  std::string certificate_user;
};

struct NetThread {
  Pooler::Impl* impl = nullptr;  // the pooler it is one of
  asio::io_context context{1};
  Reactor reactor{&context};  // the relay's sockets
  std::optional<Acceptor> acceptor;
  std::optional<LocalAcceptor> local_acceptor;  // the Unix socket (the first thread only)
  std::thread thread;
  Session* relaying = nullptr;            // the thread's relaying sessions, linked through them
  absl::flat_hash_set<Session*> waiting;  // its sessions in a Queue wait (Session::SweepWaits)

  // Where the thread's sockets are read into, so that a buffer grows by what came and is
  // never zero-filled ahead of a read.
  std::unique_ptr<char[]> scratch = std::make_unique<char[]>(kReadChunk);

  // A descriptor held in reserve (/dev/null), given up for a moment when the process has no
  // other left, to accept a queued client and tell it so (RefuseWithoutDescriptors).
  int spare_fd = -1;
  ~NetThread() {
    if (spare_fd >= 0) ::close(spare_fd);
  }

  // The configuration as the thread's relay last saw it (refreshed at each Pump, when a
  // RELOAD changed it): read without a lock or a reference count per transaction.
  std::shared_ptr<const PoolerConfig> config;
  uint64_t config_version = 0;

  // Relay states the thread's sessions take while they relay and give back when idle, with
  // their buffers' room, so that a transaction costs no allocation and an idle client holds
  // none. Touched from this thread only; at most kSpareRelays kept.
  static constexpr size_t kSpareRelays = 64;
  static constexpr size_t kKeptExpectations = 16;
  std::vector<std::unique_ptr<RelayState>> spare;
  std::unique_ptr<RelayState> TakeRelay() {
    if (spare.empty()) return std::make_unique<RelayState>();
    std::unique_ptr<RelayState> relay = std::move(spare.back());
    spare.pop_back();
    return relay;
  }
  void GiveRelay(std::unique_ptr<RelayState> relay) {
    if (spare.size() >= kSpareRelays) return;
    for (std::string* buffer : {&relay->cbuf, &relay->sbuf, &relay->to_server, &relay->to_client}) {
      buffer->clear();
      if (buffer->capacity() > 4 * kReadChunk) std::string().swap(*buffer);
    }
    relay->described_parameters.clear();
    relay->server_sent = relay->client_sent = 0;
    relay->client_pass = relay->server_pass = 0;
    relay->expect.Reset(kKeptExpectations);
    spare.push_back(std::move(relay));
  }
};

// What the admin console and cancel requests see of a client, readable from any thread while
// the client is registered (Pooler::Impl::Register). A part of its Session (Session::info), not
// an object of its own, and its members in an order that leaves no padding: an idle client
// costs one allocation, as small as it goes.
struct ClientInfo {
  // What changes while the client is registered:
  absl::Mutex mu;
  // The server connection the client holds, for its cancel requests (its address, Unix socket,
  // backend key): set while the client holds it, cleared before it goes back to its pool
  // (Session::Detach), so that it outlives this pointer; its fields read are set at its login.
  const ServerConn* server ABSL_GUARDED_BY(mu) = nullptr;
  // Cancel requests passed on to that server and not yet answered (PostgreSQL closes a cancel
  // connection once it has signalled the backend). Until they are, the server connection is
  // not given back: a late signal would cancel the next client's query (pgbouncer#717).
  int cancels_in_flight ABSL_GUARDED_BY(mu) = 0;
  // A cancel passed on whose delivery is unknown (no answer in time): the connection the
  // client holds is closed, not reused, when given back.
  bool cancel_unsettled ABSL_GUARDED_BY(mu) = false;
  std::atomic<uint8_t> state{0};  // 0 idle, 1 active (holds a server), 2 waiting

  // What is set before it is registered, and does not change after:
  uint16_t port = 0;
  uint64_t id = 0;
  std::string user;
  std::string database;
  std::string address;
  // When it connected, in microseconds since the epoch (an absl::Time takes twice the room).
  int64_t connected_us = absl::ToUnixMicros(absl::Now());
  int32_t cancel_pid = 0;
  int32_t cancel_key = 0;
};

class Pooler::Impl : public AdminTarget {
 public:
  Impl(PoolerConfig config, RouterFactory* routers);
  ~Impl() override;  // (in pooler.cc, where Gateway is complete)

  absl::Status Start(MetricsRegistry* metrics);
  absl::Status Reload() override;
  absl::Status Retarget(const std::string& database, const std::string& url) override;
  // `replicas` null: the database's stay.
  absl::Status Move(const std::string& database, const std::string& url,
                    const std::vector<std::string>* replicas);
  bool WaitForShutdown(std::chrono::milliseconds timeout);
  void Stop();
  int port() const { return port_; }
  int http_port() const;

  // Sessions.
  std::shared_ptr<const PoolerConfig> config() const {
    absl::MutexLock lock(&config_mu_);
    return config_snapshot_;
  }
  // Brings thread->config to the current configuration, if a RELOAD changed it.
  void RefreshConfig(NetThread* thread) const {
    const uint64_t version = config_version_.load(std::memory_order_acquire);
    if (thread->config != nullptr && thread->config_version == version) return;
    thread->config = config();
    thread->config_version = version;
  }
  std::shared_ptr<const UserList> users() const {
    absl::MutexLock lock(&config_mu_);
    return users_;
  }
  // TLS toward clients: nullptr when tls.mode is disable.
  std::shared_ptr<asio::ssl::context> client_tls() const {
    absl::MutexLock lock(&config_mu_);
    return client_tls_;
  }
  // The pool of (database, login user) on `node` (kPrimaryNode: the url; i: replica i),
  // created on first use; nullptr when the database (or the replica) is not (or no longer)
  // configured.
  std::shared_ptr<Pool> PoolFor(const std::string& database, const std::string& client_user,
                                int node = kPrimaryNode);
  // The routing proxy of a database that lists replicas; nullptr for others.
  std::shared_ptr<Router> RouterFor(const std::string& database) const {
    absl::MutexLock lock(&config_mu_);
    auto it = routers_.find(database);
    return it == routers_.end() ? nullptr : it->second;
  }
  std::map<std::string, std::shared_ptr<Router>> Routers() const {
    absl::MutexLock lock(&config_mu_);
    return routers_;
  }
  // The tenant of `database` (as clients name it), made on first use; FindTenant: nullptr
  // when there is none yet. Kept while a session holds it (PruneTenants).
  std::shared_ptr<Tenant> TenantFor(const std::string& database);
  std::shared_ptr<Tenant> FindTenant(const std::string& database);
  // The tenants, by database.
  std::map<std::string, std::shared_ptr<Tenant>> Tenants();
  // A session served over one end of a socketpair on `thread`, for a gateway client (Tunnel);
  // the other end, on the thread's executor (and the session in *session, when given). An
  // error when the socketpair cannot be made.
  absl::StatusOr<Socket> OpenTunnel(NetThread* thread, const Tunnel& tunnel,
                                    std::weak_ptr<Session>* session = nullptr);
  // The network threads (the gateway serves its connections on them).
  std::vector<NetThread*> threads() const;
  // A logged-in client's session, by its BackendKeyData: `info`'s (the session's own)
  // cancel_pid and cancel_key are drawn at random here, unlike any other client's. The session
  // unregisters first thing in its destructor, so a registered one is alive while the registry's
  // lock is held (and only then: it may end on its own thread at any time after).
  void Register(Session* session, ClientInfo& info);
  void Unregister(const Session* session);
  // Calls `found` under the registry's lock with the session of the client a cancel request
  // with BackendKeyData (pid, key) is for: false when there is none. `found` must not block,
  // and keeps nothing of the session but what it copies and a weak_ptr, locked on the
  // session's own thread only (the thread a session is destroyed on).
  bool WithClient(int32_t pid, int32_t key, absl::FunctionRef<void(Session&)> found);
  std::atomic<int> clients{0};
  // Sessions alive, from accept to their end (logging in included), and those of them that
  // are the console: what SHUTDOWN WAIT_FOR_CLIENTS waits for is the difference.
  std::atomic<int> sessions{0};
  std::atomic<int> consoles{0};
  std::atomic<uint64_t> next_client_id{1};
  // Connections accepted (StartSession), and TrimAfterBurst's own state (on the first thread).
  std::atomic<uint64_t> accepted{0};
  uint64_t accepted_at_last_trim_check_ = 0;
  bool in_burst_ = false;
  std::atomic<uint64_t> refusals_without_descriptors_{0};
  bool accepting() const { return !suspended_.load(); }
  // The key of MockScramSecret: random, drawn once per process.
  const std::string& mock_key() const { return mock_key_; }
  // Where sessions report the logins they refused.
  LoginFailureLog& login_failures() { return login_failures_; }

  // AdminTarget.
  std::vector<PoolView> Pools() override;
  std::vector<ClientView> Clients() override;
  std::vector<std::pair<std::string, std::string>> ConfigRows() override;
  std::vector<DatabaseView> Databases() override;
  std::vector<ReplicaView> Replicas() override;
  std::vector<CacheView> Caches() override;
  std::vector<std::pair<std::string, std::string>> Memory() override;
  // The process's resident memory and what malloc and the sessions' slab hold in use, in bytes.
  static uint64_t ResidentBytes();
  static uint64_t HeapBytes();
  void Pause(const std::string& database) override;
  void Resume(const std::string& database) override;
  void Hold(const std::string& database);
  void Release(const std::string& database);
  // Adds `database` to `set` (paused_databases_ or held_databases_), then pauses its pools.
  void PauseInto(const std::string& database, std::set<std::string>* set);
  // Whether `database`'s pools stay paused: PAUSEd or held.
  bool KeptPaused(const std::string& database) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pools_mu_);
  // Resumes `database`'s pools ("": every database's) that nothing keeps paused.
  void ResumeFree(const std::string& database);
  void Reconnect(const std::string& database) override;
  void Kill(const std::string& database) override;
  void Suspend() override;
  void Shutdown(ShutdownMode mode) override;
  ShutdownMode Draining() override;
  bool HasDatabase(const std::string& database) override;
  absl::Status Ban(const std::string& kind, const std::string& who) override;
  absl::Status Unban(const std::string& kind, const std::string& who) override;
  std::vector<std::pair<std::string, std::string>> Bans() override;
  // Why a login of `user` from `address` to `database` is refused by a BAN, or "" when it is
  // not.
  std::string BanOf(const std::string& user, const std::string& address,
                    const std::string& database);

 private:
  absl::Mutex bans_mu_;
  std::set<std::pair<std::string, std::string>> bans_ ABSL_GUARDED_BY(bans_mu_);  // (kind, who)
  std::atomic<bool> any_bans_{false};  // a login looks no further while there is none

 public:
  // Set by Pooler::InterruptConsole: a console command waiting (PAUSE) returns at once.
  std::atomic<bool> console_interrupted{false};

 private:

  Task<void> Accept(NetThread* thread);
  Task<void> AcceptLocal(NetThread* thread);
  absl::Status ListenLocal(NetThread* thread);
  std::weak_ptr<Session> StartSession(NetThread* thread, Socket socket, bool local,
                                      std::optional<Tunnel> tunnel = std::nullopt);
  Task<void> Every(NetThread* thread, std::chrono::milliseconds period,
                   void (Impl::*work)(NetThread*));
  void PrunePools(NetThread* thread);  // (and the tenants no session holds)
  void SweepWaits(NetThread* thread);
  void SumUpLoginFailures(NetThread* thread);
  void TrimAfterBurst(NetThread* thread);
  void StopListening();
  void FinishDrain(NetThread* thread);
  // Runs `what` on the session of every registered client that `which` picks, each on its own
  // thread (posted).
  void PostToSessions(const std::function<bool(const ClientInfo&)>& which, void (Session::*what)());
  PoolSettings SettingsFor(const PoolerConfig& config, const std::string& database,
                           const DatabaseOptions& db, int node) const;
  // The routers `config` asks for: those of `old` kept where a database's entry is unchanged,
  // new ones made (RouterFactory) for the rest. An error names the database.
  absl::StatusOr<std::map<std::string, std::shared_ptr<Router>>> MakeRouters(
      const PoolerConfig& config, const std::map<std::string, std::shared_ptr<Router>>& old);
  LoginCredentials LoginFor(const DatabaseOptions& db, const std::string& client_user,
                            const UserList& users) const;
  std::vector<std::shared_ptr<Pool>> PoolsOf(const std::string& database);
  std::vector<std::shared_ptr<Pool>> PoolsOfLocked(const std::string& database)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pools_mu_);
  // Makes `snapshot` (with `users`) the running configuration, and gives the pools their new
  // settings: a changed url or login closes their connections as they come back.
  void Install(std::shared_ptr<const PoolerConfig> snapshot, std::shared_ptr<const UserList> users,
               std::shared_ptr<asio::ssl::context> client_tls,
               std::map<std::string, std::shared_ptr<Router>> routers);
  void CollectMetrics();

  PoolerConfig config_;
  RouterFactory* router_factory_;  // may be null
  const std::string mock_key_ = RandomBytes(32);
  const uint64_t heap_at_start_ = HeapBytes();  // (SHOW MEM: what clients add to it)
  LoginFailureLog login_failures_;
  // Held through a RELOAD or a RETARGET, so that one does not undo the other.
  absl::Mutex reconfigure_mu_;
  // A database RETARGET moved: the url the file had for it then, and the url it serves now.
  // It holds until the file's url changes (or the pooler restarts).
  struct Retargeted {
    std::string file_url;
    std::string url;
    std::optional<std::vector<std::string>> replicas;  // set by a cluster's leader watch
  };
  std::map<std::string, Retargeted> retargeted_ ABSL_GUARDED_BY(reconfigure_mu_);
  mutable absl::Mutex config_mu_;
  std::shared_ptr<const PoolerConfig> config_snapshot_ ABSL_GUARDED_BY(config_mu_);
  std::shared_ptr<const UserList> users_ ABSL_GUARDED_BY(config_mu_);
  std::shared_ptr<asio::ssl::context> client_tls_ ABSL_GUARDED_BY(config_mu_);
  std::atomic<uint64_t> config_version_{1};  // changed with config_snapshot_ (RefreshConfig)
  // The routing proxies, by database (those whose entry lists replicas), with the options
  // each was made from.
  std::map<std::string, std::shared_ptr<Router>> routers_ ABSL_GUARDED_BY(config_mu_);
  // Routers a RELOAD replaced (stopped without waiting), joined by Stop.
  std::vector<std::shared_ptr<Router>> retired_routers_ ABSL_GUARDED_BY(config_mu_);

  absl::Mutex pools_mu_;
  // By (database, login user, node).
  using PoolKey = std::tuple<std::string, std::string, int>;
  std::map<PoolKey, std::shared_ptr<Pool>> pools_ ABSL_GUARDED_BY(pools_mu_);
  // The databases PAUSEd ("" for all), and those held (Hold): a pool made for one meanwhile
  // starts paused.
  std::set<std::string> paused_databases_ ABSL_GUARDED_BY(pools_mu_);
  std::set<std::string> held_databases_ ABSL_GUARDED_BY(pools_mu_);

  absl::Mutex tenants_mu_;
  std::map<std::string, std::shared_ptr<Tenant>> tenants_ ABSL_GUARDED_BY(tenants_mu_);

  absl::Mutex clients_mu_;
  // The logged-in clients' sessions by their BackendKeyData (CancelKey): a cancel request
  // finds its client at once, whatever the number of clients. A set of the pointers alone, the
  // key read from the session (its ClientInfo's, set before it is registered): 8 bytes a slot
  // where a map from the key took 16.
  static uint64_t CancelKey(int32_t pid, int32_t key) {
    return (uint64_t{static_cast<uint32_t>(pid)} << 32) | static_cast<uint32_t>(key);
  }
  static uint64_t CancelKey(const Session* session);
  struct ByCancelKey {
    using is_transparent = void;
    size_t operator()(uint64_t key) const { return absl::Hash<uint64_t>()(key); }
    size_t operator()(const Session* session) const { return (*this)(CancelKey(session)); }
    bool operator()(const Session* a, const Session* b) const {
      return CancelKey(a) == CancelKey(b);
    }
    bool operator()(const Session* a, uint64_t key) const { return CancelKey(a) == key; }
    bool operator()(uint64_t key, const Session* a) const { return CancelKey(a) == key; }
  };
  absl::flat_hash_set<Session*, ByCancelKey, ByCancelKey> client_infos_
      ABSL_GUARDED_BY(clients_mu_);

  std::vector<std::unique_ptr<NetThread>> threads_;
  std::unique_ptr<Gateway> gateway_;  // http.listen's (pooler/gateway.h); null without it
  int port_ = 0;
  std::string local_path_;  // the Unix socket's path, when unix_socket_dir is set
  std::atomic<bool> suspended_{false};
  absl::Mutex stop_mu_;
  bool stopping_ ABSL_GUARDED_BY(stop_mu_) = false;
  // A SHUTDOWN WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS under way (kNow: none).
  ShutdownMode draining_ ABSL_GUARDED_BY(stop_mu_) = ShutdownMode::kNow;
  bool stopped_ = false;

  MetricsRegistry* metrics_ = nullptr;
  int collector_ = -1;
  std::map<std::string, uint64_t> exported_;  // counters' last exported values
};

}  // namespace pgflow::pooler
