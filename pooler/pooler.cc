#include "pooler/pooler.h"

#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/asio_support.h"
#include "engine/log.h"
#include "engine/metrics.h"
#include "engine/str_cat.h"
#include "pooler/admin_console.h"
#include "pooler/kernel_limits.h"
#include "pooler/auth.h"
#include "pooler/gateway.h"
#include "pooler/pool.h"
#include "pooler/pooler_config.h"
#include "pooler/pooler_internal.h"
#include "pooler/protocol.h"
#include "pooler/server_login.h"
#include "pooler/session.h"
#include "pooler/slab.h"
#include "pooler/tls.h"

namespace pgflow::pooler {
namespace {

using LocalSocket = asio::basic_stream_socket<asio::local::stream_protocol, asio_support::Executor>;

// A file descriptor closed with its owner unless released.
class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  void release() { fd_ = -1; }

 private:
  int fd_;
};

}  // namespace

Pooler::Impl::Impl(PoolerConfig config, RouterFactory* routers)
    : config_(std::move(config)), router_factory_(routers) {}

Pooler::Impl::~Impl() = default;

PoolSettings Pooler::Impl::SettingsFor(const PoolerConfig& config, const std::string& database,
                                       const DatabaseOptions& db, int node) const {
  if (node != kPrimaryNode && static_cast<size_t>(node) <= db.replica_upstreams.size()) {
    // A replica's pool: its server, and no waiting for a replica that does not answer (the
    // router places the read elsewhere at once).
    PoolSettings settings = SettingsFor(config, database, db, kPrimaryNode);
    settings.upstream = db.replica_upstreams[node - 1];
    settings.upstream.round_robin = false;
    settings.min_pool_size = 0;
    settings.hold_timeout = std::chrono::milliseconds(0);
    if (!settings.upstream.dbname.empty()) settings.server_dbname = settings.upstream.dbname;
    return settings;
  }
  return PoolSettings{
      .database = database,
      // The wildcard entry serves each name as itself.
      .server_dbname = db.upstream.dbname.empty() || !config.databases.contains(database)
                           ? database
                           : db.upstream.dbname,
      .upstream = db.upstream,
      .mode = db.pool_mode,
      .session_state = db.session_state,
      .pool_size = db.pool_size,
      .min_pool_size = db.min_pool_size,
      .reserve_pool = db.reserve_pool,
      .reserve_pool_timeout = db.reserve_pool_timeout,
      .hold_timeout = config.hold_timeout,
      .query_wait_timeout = config.query_wait_timeout,
      .connect_timeout = config.server_connect_timeout,
      .idle_timeout = config.server_idle_timeout,
      .lifetime = config.server_lifetime,
  };
}

LoginCredentials Pooler::Impl::LoginFor(const DatabaseOptions& db, const std::string& client_user,
                                        const UserList& users) const {
  LoginCredentials login;
  if (!db.upstream.user.empty()) {
    login.user = db.upstream.user;
    login.password = db.upstream.password;
    if (login.password.empty()) {
      if (auto it = users.find(login.user); it != users.end()) {
        if (it->second.kind == UserSecret::Kind::kPlain) login.password = it->second.text;
        if (it->second.kind == UserSecret::Kind::kMd5) login.md5_hash = it->second.text;
      }
    }
    return login;
  }
  login.user = client_user;
  if (auto it = users.find(client_user); it != users.end()) {
    if (it->second.kind == UserSecret::Kind::kPlain) login.password = it->second.text;
    if (it->second.kind == UserSecret::Kind::kMd5) login.md5_hash = it->second.text;
  }
  return login;
}

std::shared_ptr<Pool> Pooler::Impl::PoolFor(const std::string& database,
                                            const std::string& client_user, int node) {
  std::shared_ptr<const PoolerConfig> config = this->config();
  const DatabaseOptions* db = FindDatabase(*config, database);
  if (db == nullptr || node < 0 || static_cast<size_t>(node) > db->replica_upstreams.size()) {
    return nullptr;
  }
  std::shared_ptr<const UserList> users = this->users();
  LoginCredentials login = LoginFor(*db, client_user, *users);
  absl::MutexLock lock(&pools_mu_);
  std::shared_ptr<Pool>& pool = pools_[{database, login.user, node}];
  if (pool == nullptr) {
    pool = std::make_shared<Pool>(SettingsFor(*config, database, *db, node), std::move(login));
    if (KeptPaused(database)) pool->Pause();
  }
  return pool;
}

absl::StatusOr<std::map<std::string, std::shared_ptr<Router>>> Pooler::Impl::MakeRouters(
    const PoolerConfig& config, const std::map<std::string, std::shared_ptr<Router>>& old) {
  std::map<std::string, std::shared_ptr<Router>> routers;
  std::shared_ptr<const PoolerConfig> running = this->config();
  for (const auto& [name, db] : config.databases) {
    if (db.replicas.empty() && db.cache.tables.empty()) continue;
    if (auto kept = old.find(name); kept != old.end() && running != nullptr) {
      auto before = running->databases.find(name);
      if (before != running->databases.end() && before->second == db) {
        routers[name] = kept->second;
        continue;
      }
    }
    if (router_factory_ == nullptr) {
      return absl::FailedPreconditionError(
          Cat("database ", name, " lists replicas, and this pooler has no routing proxy"));
    }
    absl::StatusOr<std::shared_ptr<Router>> router = router_factory_->Make(name, db);
    if (!router.ok()) {
      for (const auto& [made, made_router] : routers) {
        if (!old.contains(made) || old.at(made) != made_router) made_router->Stop(false);
      }
      return absl::Status(router.status().code(),
                          Cat("database ", name, ": ", router.status().message()));
    }
    routers[name] = *std::move(router);
  }
  return routers;
}

uint64_t Pooler::Impl::CancelKey(const Session* session) {
  const ClientInfo& info = session->info();
  return CancelKey(info.cancel_pid, info.cancel_key);
}

void Pooler::Impl::Register(Session* session, ClientInfo& info) {
  for (;;) {
    const std::string key_bytes = RandomBytes(8);  // (drawn outside the lock)
    info.cancel_pid = ReadInt32(key_bytes.data()) & 0x7fffffff;
    info.cancel_key = ReadInt32(key_bytes.data() + 4);
    absl::MutexLock lock(&clients_mu_);
    // (Refused when another session has the same key: the hash and equality are the key's.)
    if (client_infos_.insert(session).second) return;
  }
}

void Pooler::Impl::Unregister(const Session* session) {
  absl::MutexLock lock(&clients_mu_);
  auto it = client_infos_.find(CancelKey(session));
  if (it != client_infos_.end() && *it == session) client_infos_.erase(it);
}

bool Pooler::Impl::WithClient(int32_t pid, int32_t key, absl::FunctionRef<void(Session&)> found) {
  absl::MutexLock lock(&clients_mu_);
  auto it = client_infos_.find(CancelKey(pid, key));
  if (it == client_infos_.end()) return false;
  found(**it);
  return true;
}

std::vector<std::shared_ptr<Pool>> Pooler::Impl::PoolsOf(const std::string& database) {
  absl::MutexLock lock(&pools_mu_);
  return PoolsOfLocked(database);
}

std::vector<std::shared_ptr<Pool>> Pooler::Impl::PoolsOfLocked(const std::string& database) {
  std::vector<std::shared_ptr<Pool>> out;
  for (const auto& [key, pool] : pools_) {
    if (database.empty() || std::get<0>(key) == database) out.push_back(pool);
  }
  return out;
}

bool Pooler::Impl::HasDatabase(const std::string& database) {
  std::shared_ptr<const PoolerConfig> c = config();
  return FindDatabase(*c, database) != nullptr;
}

void Pooler::Impl::Pause(const std::string& database) { PauseInto(database, &paused_databases_); }

void Pooler::Impl::PauseInto(const std::string& database, std::set<std::string>* set) {
  // Under the lock a RESUME takes too (ResumeFree): one running meanwhile either comes after,
  // and resumes these pools, or before, and leaves the set and the pools paused alike.
  absl::MutexLock lock(&pools_mu_);
  set->insert(database);
  for (const std::shared_ptr<Pool>& pool : PoolsOfLocked(database)) {
    pool->Pause();
    pool->Reconnect();  // idle connections close; busy ones when given back
  }
}

void Pooler::Impl::Resume(const std::string& database) {
  suspended_ = false;
  {
    absl::MutexLock lock(&pools_mu_);
    if (database.empty()) {
      paused_databases_.clear();
    } else {
      paused_databases_.erase(database);
    }
  }
  ResumeFree(database);
}

void Pooler::Impl::Hold(const std::string& database) { PauseInto(database, &held_databases_); }

void Pooler::Impl::Release(const std::string& database) {
  {
    absl::MutexLock lock(&pools_mu_);
    held_databases_.erase(database);
  }
  ResumeFree(database);
}

bool Pooler::Impl::KeptPaused(const std::string& database) {
  return paused_databases_.contains(database) || paused_databases_.contains("") ||
         held_databases_.contains(database);
}

void Pooler::Impl::ResumeFree(const std::string& database) {
  absl::MutexLock lock(&pools_mu_);
  for (const auto& [key, pool] : pools_) {
    const std::string& of = std::get<0>(key);
    if ((database.empty() || of == database) && !KeptPaused(of)) pool->Resume();
  }
}

void Pooler::Impl::Reconnect(const std::string& database) {
  for (const std::shared_ptr<Pool>& pool : PoolsOf(database)) pool->Reconnect();
}

void Pooler::Impl::PostToSessions(const std::function<bool(const ClientInfo&)>& which,
                                  void (Session::*what)()) {
  std::vector<std::pair<asio::io_context*, std::weak_ptr<Session>>> picked;
  {
    absl::MutexLock lock(&clients_mu_);
    for (Session* session : client_infos_) {
      if (which(session->info())) {
        picked.emplace_back(&session->context(), session->weak_from_this());
      }
    }
  }
  for (auto& [context, weak] : picked) {
    // (Locked on the session's thread: the last owner may let it go there only.)
    asio::post(context->get_executor(), [weak = std::move(weak), what] {
      if (std::shared_ptr<Session> session = weak.lock()) (session.get()->*what)();
    });
  }
}

void Pooler::Impl::Kill(const std::string& database) {
  PostToSessions([&](const ClientInfo& info) { return info.database == database; }, &Session::Kill);
  Reconnect(database);
}

void Pooler::Impl::Suspend() {
  suspended_ = true;
  Pause("");
}

void Pooler::Impl::Shutdown(ShutdownMode mode) {
  bool first_drain;
  {
    absl::MutexLock lock(&stop_mu_);
    if (mode == ShutdownMode::kNow) {
      stopping_ = true;
      return;
    }
    if (draining_ != ShutdownMode::kNow && draining_ != mode) return;  // (refused by the console)
    first_drain = draining_ == ShutdownMode::kNow;
    draining_ = mode;
  }
  if (mode == ShutdownMode::kWaitForServers) {
    LogInfo(
        "pooler: SHUTDOWN WAIT_FOR_SERVERS: new transactions wait, and the pooler stops "
        "once no server connection is in use");
    Pause("");
  } else {
    LogInfo("pooler: SHUTDOWN WAIT_FOR_CLIENTS: the pooler stops once its %d clients have left",
            sessions.load() - consoles.load());
    if (!MigratesQueuedConnections()) {
      LogWarning(
          "pooler: net.ipv4.tcp_migrate_req is 0: connections the kernel still queues for this "
          "pooler are reset when it stops listening, not handed to the other poolers on the "
          "port (sysctl -w net.ipv4.tcp_migrate_req=1)");
    }
  }
  if (!first_drain) return;
  StopListening();
  asio::co_spawn(threads_[0]->context,
                 Every(threads_[0].get(), std::chrono::milliseconds(100), &Impl::FinishDrain),
                 asio::detached);
}

// Closes the listening sockets, each on its own thread (a pending accept ends with it), so
// that new connections go to another pooler bound to the port (SO_REUSEPORT) or are refused;
// the Unix socket's file is removed, for a new pooler to create.
void Pooler::Impl::StopListening() {
  auto open = std::make_shared<std::atomic<size_t>>(threads_.size());
  for (const std::unique_ptr<NetThread>& thread : threads_) {
    NetThread* t = thread.get();
    asio::post(t->context, [this, t, open] {
      boost::system::error_code ec;
      if (t->acceptor) t->acceptor->close(ec);
      if (t->local_acceptor && t->local_acceptor->is_open()) {
        t->local_acceptor->close(ec);
        ::unlink(local_path_.c_str());
        local_path_.clear();  // (not unlinked again at Stop: it may be another pooler's now)
      }
      if (open->fetch_sub(1) == 1) LogInfo("pooler: no longer listening (SHUTDOWN)");
    });
  }
}

ShutdownMode Pooler::Impl::Draining() {
  absl::MutexLock lock(&stop_mu_);
  return draining_;
}

// Every 100 ms once a SHUTDOWN waits (on the first thread): stops the pooler once what it
// waits for is done. Console sessions are not waited for: one is asking. Under
// WAIT_FOR_SERVERS, clients waiting for a server connection are told and closed meanwhile, as
// PgBouncer does: free to connect again, to the pooler that takes the port over.
void Pooler::Impl::FinishDrain(NetThread*) {
  ShutdownMode mode;
  {
    absl::MutexLock lock(&stop_mu_);
    if (stopping_) return;
    mode = draining_;
  }
  if (mode == ShutdownMode::kWaitForClients) {
    // (Sessions still logging in count: they may become clients.)
    if (sessions.load() - consoles.load() > 0) return;
  } else {
    PostToSessions([](const ClientInfo& info) { return info.state.load() == 2; },
                   &Session::DismissWaiting);
    for (const std::shared_ptr<Pool>& pool : PoolsOf("")) {
      const Pool::Counts counts = pool->counts();
      if (counts.active > 0 || counts.connecting > 0) return;
    }
  }
  LogInfo("pooler: %s", mode == ShutdownMode::kWaitForClients
                            ? "the last client left: stopping"
                            : "no server connection is in use: stopping");
  Shutdown(ShutdownMode::kNow);
}

namespace {

// The users file's entries, read with `config`; for SCRAM logins each plain password's secret
// derived now, once, rather than at every login. Empty without a file.
std::shared_ptr<const UserList> PrepareUsers(const PoolerConfig& config) {
  auto users = std::make_shared<UserList>();
  if (config.auth.user_list != nullptr) *users = *config.auth.user_list;
  if (config.auth.method == AuthMethod::kScram) DeriveScramSecrets(users.get());
  return users;
}

// The TLS context `config.tls` describes (its files read now), nullptr when disabled.
absl::StatusOr<std::shared_ptr<asio::ssl::context>> LoadTls(const PoolerConfig& config) {
  if (config.tls.mode == TlsMode::kDisable) return nullptr;
  return MakeServerTlsContext(config.tls);
}

}  // namespace

absl::Status Pooler::Impl::Reload() {
  absl::MutexLock reconfiguring(&reconfigure_mu_);
  absl::StatusOr<PoolerConfig> config = LoadPoolerConfig(config_.file);
  if (!config.ok()) return config.status();
  std::shared_ptr<const UserList> users = PrepareUsers(*config);
  absl::StatusOr<std::shared_ptr<asio::ssl::context>> tls = LoadTls(*config);
  if (!tls.ok()) return tls.status();
  if (config->listen != config_.listen || config->threads != config_.threads ||
      config->unix_socket_dir != config_.unix_socket_dir ||
      config->scheduling != config_.scheduling || config->http.listen != config_.http.listen ||
      config->http.tls != config_.http.tls) {
    LogWarning(
        "pooler: listen, unix_socket_dir, threads, scheduling, http.listen and http.tls take "
        "effect at the next start");
  }
  PoolerConfig applied = *config;
  applied.listen = config_.listen;
  applied.unix_socket_dir = config_.unix_socket_dir;
  applied.threads = config_.threads;
  applied.scheduling = config_.scheduling;
  applied.http.listen = config_.http.listen;
  applied.http.tls = config_.http.tls;
  applied.file = config_.file;
  // A RETARGET holds while the file keeps the url it moved the database from.
  for (auto it = retargeted_.begin(); it != retargeted_.end();) {
    auto db = applied.databases.find(it->first);
    if (db != applied.databases.end() && db->second.url == it->second.file_url &&
        SetDatabaseUrl(applied.file, it->second.url, &db->second).ok() &&
        (!it->second.replicas.has_value() ||
         SetDatabaseReplicas(applied.file, *it->second.replicas, &db->second).ok())) {
      ++it;
      continue;
    }
    LogWarning("pooler: database %s: the file's url changed since RETARGET, and now applies",
               it->first);
    it = retargeted_.erase(it);
  }
  absl::StatusOr<std::map<std::string, std::shared_ptr<Router>>> routers =
      MakeRouters(applied, Routers());
  if (!routers.ok()) return routers.status();
  const size_t databases = applied.databases.size();
  Install(std::make_shared<const PoolerConfig>(std::move(applied)), std::move(users), *tls,
          *std::move(routers));
  LogInfo("pooler: configuration reloaded from %s (%d databases)", config_.file, databases);
  return absl::OkStatus();
}

absl::Status Pooler::Impl::Retarget(const std::string& database, const std::string& url) {
  return Move(database, url, nullptr);
}

absl::Status Pooler::Impl::Move(const std::string& database, const std::string& url,
                                const std::vector<std::string>* replicas) {
  absl::MutexLock reconfiguring(&reconfigure_mu_);
  std::shared_ptr<const PoolerConfig> current = config();
  auto db = current->databases.find(database);
  if (db == current->databases.end() || database == "*") {
    return absl::NotFoundError(
        Cat("no such database: ", database, " (RETARGET moves a database the file names)"));
  }
  PoolerConfig changed = *current;
  DatabaseOptions& moved = changed.databases.at(database);
  if (absl::Status s = SetDatabaseUrl(changed.file, url, &moved); !s.ok()) return s;
  if (replicas != nullptr) {
    if (absl::Status s = SetDatabaseReplicas(changed.file, *replicas, &moved); !s.ok()) return s;
  }
  auto [entry, first] = retargeted_.try_emplace(
      database, Retargeted{.file_url = db->second.url, .url = {}, .replicas = {}});
  entry->second.url = url;
  if (replicas != nullptr) entry->second.replicas = *replicas;
  LogInfo("pooler: database %s retargeted to %s:%d/%s%s", database, moved.upstream.HostList(),
          moved.upstream.port, moved.upstream.dbname.empty() ? database : moved.upstream.dbname,
          first ? "" : " (it was retargeted before)");
  if (replicas != nullptr) {
    std::string where;
    for (const Upstream& up : moved.replica_upstreams) {
      where += Cat(where.empty() ? ": " : ", ", up.Where());
    }
    LogInfo("pooler: database %s reads from %d replica(s)%s", database, replicas->size(), where);
  }
  absl::StatusOr<std::map<std::string, std::shared_ptr<Router>>> routers =
      MakeRouters(changed, Routers());
  if (!routers.ok()) return routers.status();
  Install(std::make_shared<const PoolerConfig>(std::move(changed)), users(), client_tls(),
          *std::move(routers));
  return absl::OkStatus();
}

void Pooler::Impl::Install(std::shared_ptr<const PoolerConfig> snapshot,
                           std::shared_ptr<const UserList> users,
                           std::shared_ptr<asio::ssl::context> client_tls,
                           std::map<std::string, std::shared_ptr<Router>> routers) {
  std::map<std::string, std::shared_ptr<Router>> replaced;
  {
    absl::MutexLock lock(&config_mu_);
    config_snapshot_ = snapshot;
    users_ = users;
    client_tls_ = std::move(client_tls);
    for (auto& [name, router] : routers_) {
      auto kept = routers.find(name);
      if (kept == routers.end() || kept->second != router) replaced[name] = std::move(router);
    }
    routers_ = std::move(routers);
    config_version_.fetch_add(1, std::memory_order_release);
  }
  // (Their clients keep them until their next transaction: FollowRouter.)
  for (auto& [name, router] : replaced) {
    router->Stop(false);
    absl::MutexLock lock(&config_mu_);
    retired_routers_.push_back(router);  // (joined by Stop: their threads post to ours)
  }
  {
    absl::MutexLock lock(&tenants_mu_);
    for (auto& [database, tenant] : tenants_) tenant->Follow(FindDatabase(*snapshot, database));
  }
  absl::MutexLock lock(&pools_mu_);
  for (auto it = pools_.begin(); it != pools_.end(); ++it) {
    const auto& [database, login_user, node] = it->first;
    const DatabaseOptions* db = FindDatabase(*snapshot, database);
    if (db == nullptr || static_cast<size_t>(node) > db->replica_upstreams.size()) {
      it->second->Reconnect();  // removed: its connections close as they come back
      continue;
    }
    LoginCredentials login = LoginFor(*db, login_user, *users);
    it->second->Update(SettingsFor(*snapshot, database, *db, node), std::move(login));
  }
}

Task<void> PauseAfterFailedAccept(NetThread* thread) {
  Timer pause(thread->context.get_executor());
  pause.expires_after(std::chrono::milliseconds(100));
  boost::system::error_code ec;
  co_await pause.async_wait(asio::redirect_error(kUseTask, ec));
}

bool RefuseWithoutDescriptors(NetThread* thread, int listener) {
  // (Lost when another took the slot between its close and its reopening: taken back when
  // one is free again.)
  if (thread->spare_fd < 0) thread->spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (thread->spare_fd < 0) return false;
  ::close(std::exchange(thread->spare_fd, -1));
  const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) {
    // What the client sent is read first: closed with it unread, the socket would be reset,
    // and the answer with it.
    char sent[512];
    (void)::recv(fd, sent, sizeof sent, MSG_DONTWAIT);
    std::string out;
    rlimit files{};
    getrlimit(RLIMIT_NOFILE, &files);
    AppendError(&out, "FATAL", "53300",
                Cat("too many clients: the pooler has no file descriptor left (its open-files "
                    "limit is ", static_cast<uint64_t>(files.rlim_cur), ")"));
    (void)::send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::shutdown(fd, SHUT_WR);
    while (::recv(fd, sent, sizeof sent, MSG_DONTWAIT) > 0) {
    }
    ::close(fd);
  }
  thread->spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd >= 0;
}

Task<void> Pooler::Impl::Accept(NetThread* thread) {
  while (true) {
    boost::system::error_code ec;
    Socket socket(thread->context.get_executor());
    co_await thread->acceptor->async_accept(socket, asio::redirect_error(kUseTask, ec));
    if (ec == asio::error::operation_aborted || !thread->acceptor->is_open()) co_return;
    if (ec == asio::error::no_descriptors || ec.value() == ENFILE) {
      const bool refused = RefuseWithoutDescriptors(thread, thread->acceptor->native_handle());
      if (refused && refusals_without_descriptors_.fetch_add(1) % 1000 == 0) {
        LogWarning("pooler: no file descriptor left: new clients are refused (53300) until "
                   "some leave (%llu so far); raise the open-files limit (ulimit -n) or lower "
                   "max_client_conn",
                   static_cast<unsigned long long>(refusals_without_descriptors_.load()));
      }
      if (refused) continue;
    }
    if (ec) {
      LogWarning("pooler: accepting a client failed: %s", ec.message());
      co_await PauseAfterFailedAccept(thread);
      continue;
    }
    socket.non_blocking(true, ec);
    StartSession(thread, std::move(socket), /*local=*/false);
  }
}

Slab& SessionSlab() {
  // A session and its shared_ptr counts, one block (std::allocate_shared's, in libstdc++: its
  // counts and vtable pointer, then the object). Whichever comes first, this or the first
  // session's allocate_shared, makes the slab for a block that size: sessions fit either way.
  return SlabOf<Session>(sizeof(Session) + 16, alignof(Session));
}
#ifdef __GLIBCXX__
static_assert(sizeof(std::_Sp_counted_ptr_inplace<Session, SlabAllocator<Session>,
                                                  std::__default_lock_policy>) <=
              sizeof(Session) + 16);
#endif

std::weak_ptr<Session> Pooler::Impl::StartSession(NetThread* thread, Socket socket, bool local,
                                                  std::optional<Tunnel> tunnel) {
  accepted.fetch_add(1, std::memory_order_relaxed);
  auto* owner = new std::shared_ptr<Session>(std::allocate_shared<Session>(
      SlabAllocator<Session>(), thread, std::move(socket), local, tunnel));
  std::weak_ptr<Session> session = *owner;
  asio::co_spawn(thread->context, Session::Run(owner), asio::detached);
  return session;
}

absl::StatusOr<Socket> Pooler::Impl::OpenTunnel(NetThread* thread, const Tunnel& tunnel,
                                                std::weak_ptr<Session>* session) {
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) != 0) {
    return absl::ResourceExhaustedError(Cat("cannot make a socketpair: ", strerror(errno)));
  }
  UniqueFd session_end(ends[0]);
  UniqueFd gateway_end(ends[1]);
  // (Stream sockets, driven through a tcp socket object as the Unix socket's clients are.)
  Socket served(thread->context.get_executor());
  Socket ours(thread->context.get_executor());
  boost::system::error_code ec;
  served.assign(tcp::v4(), session_end.get(), ec);
  if (!ec) session_end.release();
  if (!ec) ours.assign(tcp::v4(), gateway_end.get(), ec);
  if (!ec) gateway_end.release();
  if (ec) return absl::ResourceExhaustedError(Cat("cannot use a socketpair: ", ec.message()));
  std::weak_ptr<Session> started = StartSession(thread, std::move(served), /*local=*/false, tunnel);
  if (session != nullptr) *session = std::move(started);
  return ours;
}

boost::system::error_code ListenShared(Acceptor* acceptor, const tcp::endpoint& at) {
  boost::system::error_code ec;
  acceptor->open(at.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) {
    int one = 1;
    if (setsockopt(acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
      ec = boost::system::error_code(errno, boost::system::system_category());
    }
  }
  if (!ec) acceptor->bind(at, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  return ec;
}

int Pooler::Impl::http_port() const { return gateway_ == nullptr ? 0 : gateway_->port(); }

std::vector<NetThread*> Pooler::Impl::threads() const {
  std::vector<NetThread*> out;
  for (const auto& thread : threads_) out.push_back(thread.get());
  return out;
}

// The Unix socket is one, accepted on the first thread; its clients go to the threads in turn.
Task<void> Pooler::Impl::AcceptLocal(NetThread* thread) {
  size_t turn = 0;
  while (true) {
    boost::system::error_code ec;
    LocalSocket peer(thread->context.get_executor());
    co_await thread->local_acceptor->async_accept(peer, asio::redirect_error(kUseTask, ec));
    if (ec == asio::error::operation_aborted || !thread->local_acceptor->is_open()) co_return;
    if (ec) {
      LogWarning("pooler: accepting a client on %s failed: %s", local_path_, ec.message());
      co_await PauseAfterFailedAccept(thread);
      continue;
    }
    // Owned by the handler below: closed with it if the pooler stops before it runs.
    auto fd = std::make_shared<UniqueFd>(peer.release(ec));
    if (ec) continue;
    NetThread* target = threads_[turn++ % threads_.size()].get();
    asio::post(target->context, [this, target, fd] {
      // The relay reads and writes through a tcp socket object; the calls it makes are those
      // of any stream socket (as with a TLS pump's socketpair).
      Socket socket(target->context.get_executor());
      boost::system::error_code ec;
      socket.assign(tcp::v4(), fd->get(), ec);
      if (ec) return;
      fd->release();
      socket.non_blocking(true, ec);
      StartSession(target, std::move(socket), /*local=*/true);
    });
  }
}

// Listens on <unix_socket_dir>/.s.PGSQL.<port> with mode 0777, as pgbouncer does; a socket
// file no server answers on (left by a pooler that was killed) is replaced.
absl::Status Pooler::Impl::ListenLocal(NetThread* thread) {
  // (local_path_, which Stop unlinks, is set only once the socket file is this pooler's.)
  const std::string path = Cat(config_.unix_socket_dir, "/.s.PGSQL.", port_);
  sockaddr_un address{};
  if (path.size() >= sizeof address.sun_path) {
    return absl::InvalidArgumentError(Cat("pooler: unix_socket_dir: the socket path ", path,
                                          " is longer than a Unix socket path may be (",
                                          sizeof address.sun_path - 1, " bytes)"));
  }
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          Cat("pooler: cannot listen on ", path, ": it exists and is not a socket"));
    }
    // Only a refused connection shows the file is stale; the probe does not wait (a full
    // backlog answers EAGAIN: a live server).
    int probe;
    const int answer = ConnectUnixSocket(path, &probe);
    if (probe >= 0) ::close(probe);
    if (answer == 0 || answer == EAGAIN) {
      return absl::FailedPreconditionError(
          Cat("pooler: cannot listen on ", path, ": another server listens on it"));
    }
    if (answer != ECONNREFUSED) {
      return absl::FailedPreconditionError(
          Cat("pooler: cannot listen on ", path,
              ": cannot tell whether a server listens on it: ", strerror(answer)));
    }
    ::unlink(path.c_str());
  }
  thread->local_acceptor.emplace(thread->context.get_executor());
  boost::system::error_code ec;
  asio::local::stream_protocol::endpoint at(path);
  thread->local_acceptor->open(at.protocol(), ec);
  if (!ec) thread->local_acceptor->bind(at, ec);
  if (ec) {  // (another pooler's, made since the check: not ours to remove)
    thread->local_acceptor.reset();
    return absl::UnavailableError(Cat("pooler: cannot listen on ", path, ": ", ec.message()));
  }
  local_path_ = path;  // ours from here on: removed by Stop, also if the rest fails
  if (::chmod(path.c_str(), 0777) != 0) {
    ec = boost::system::error_code(errno, boost::system::system_category());
  }
  if (!ec) thread->local_acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    thread->local_acceptor.reset();
    return absl::UnavailableError(Cat("pooler: cannot listen on ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

// Runs `work` on `thread` every `period` until the pooler stops.
Task<void> Pooler::Impl::Every(NetThread* thread, std::chrono::milliseconds period,
                               void (Impl::*work)(NetThread*)) {
  Timer timer(thread->context.get_executor());
  while (true) {
    timer.expires_after(period);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(kUseTask, ec));
    if (ec) co_return;
    {
      absl::MutexLock lock(&stop_mu_);
      if (stopped_) co_return;
    }
    (this->*work)(thread);
  }
}

// Every second (on the first thread): closes idle server connections past their time.
void Pooler::Impl::PrunePools(NetThread*) {
  std::vector<std::shared_ptr<Pool>> pools = PoolsOf("");
  for (const std::shared_ptr<Pool>& pool : pools) pool->Prune();
  // (A tenant no session holds has no clients, and a pace that a new one may start afresh.)
  absl::MutexLock lock(&tenants_mu_);
  std::erase_if(tenants_, [](const auto& entry) { return entry.second.use_count() == 1; });
}

// Every second (on the first thread): the count of failed logins the log held back.
void Pooler::Impl::SumUpLoginFailures(NetThread*) { login_failures_.SumUp(); }

// Every second (on the first thread): once a burst of connections (a reconnection storm, a
// fleet's clients coming back) is over, what malloc holds free goes back to the kernel. Each
// login allocates and frees its buffers, its SCRAM exchange and its coroutine frames, and
// what a burst of them freed stays resident otherwise, in pages among those in use
// (malloc_trim gives back every free page of every arena).
void Pooler::Impl::TrimAfterBurst(NetThread*) {
  static constexpr uint64_t kBurst = 200;  // connections a second
  const uint64_t now = accepted.load();
  const uint64_t during = now - std::exchange(accepted_at_last_trim_check_, now);
  if (during >= kBurst) {
    in_burst_ = true;
    return;
  }
  if (!std::exchange(in_burst_, false)) return;
  malloc_trim(0);
}

// Every 100 ms on each thread: the relay's waits for a server connection that reached the
// reserve pool's or query_wait_timeout's time go on through Pool::Acquire.
void Pooler::Impl::SweepWaits(NetThread* thread) { Session::SweepWaits(thread); }

absl::Status Pooler::Impl::Start(MetricsRegistry* metrics) {
  for (const std::string& problem : KernelLimitProblems(config_, ReadKernelLimits(config_))) {
    LogWarning("pooler: %s", problem);
  }
  std::shared_ptr<const UserList> users = PrepareUsers(config_);
  absl::StatusOr<std::shared_ptr<asio::ssl::context>> tls = LoadTls(config_);
  if (!tls.ok()) return tls.status();
  absl::StatusOr<std::map<std::string, std::shared_ptr<Router>>> routers = MakeRouters(config_, {});
  if (!routers.ok()) return routers.status();
  {
    absl::MutexLock lock(&config_mu_);
    config_snapshot_ = std::make_shared<const PoolerConfig>(config_);
    users_ = std::move(users);
    client_tls_ = *std::move(tls);
    routers_ = *std::move(routers);
  }
  absl::StatusOr<tcp::endpoint> endpoint = asio_support::ParseEndpoint(config_.listen);
  if (!endpoint.ok()) return endpoint.status();
  // By default one thread per two cores, as the kv cache: PostgreSQL usually shares the
  // machine, and a thread that sleeps between events and must be woken for the next costs a
  // context switch each time (on 2 cores, 2 threads made 0.62 a transaction, 1 thread 0.36).
  int count = config_.threads > 0
                  ? config_.threads
                  : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / 2);
  for (int i = 0; i < count; ++i) {
    auto thread = std::make_unique<NetThread>();
    thread->impl = this;
    if (absl::Status s = thread->reactor.Open(); !s.ok()) return s;
    thread->spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    thread->acceptor.emplace(thread->context.get_executor());
    tcp::endpoint at = *endpoint;
    if (i > 0) at.port(static_cast<unsigned short>(port_));
    boost::system::error_code ec = ListenShared(&*thread->acceptor, at);
    if (ec) {
      return absl::UnavailableError(
          Cat("pooler: cannot listen on ", config_.listen, ": ", ec.message()));
    }
    if (i == 0) port_ = thread->acceptor->local_endpoint(ec).port();
    threads_.push_back(std::move(thread));
  }
  if (!config_.unix_socket_dir.empty()) {
    if (absl::Status s = ListenLocal(threads_[0].get()); !s.ok()) return s;
  }
  metrics_ = metrics;
  if (!config_.http.listen.empty()) {
    gateway_ = std::make_unique<Gateway>(this, metrics);
    if (absl::Status s = gateway_->Listen(config_.http, threads()); !s.ok()) return s;
    gateway_->Start();
  }
  if (metrics_ != nullptr) collector_ = metrics_->AddCollector([this] { CollectMetrics(); });
  if (threads_[0]->local_acceptor) {
    asio::co_spawn(threads_[0]->context, AcceptLocal(threads_[0].get()), asio::detached);
  }
  for (auto& thread : threads_) {
    asio::co_spawn(thread->context, Accept(thread.get()), asio::detached);
    asio::co_spawn(thread->context,
                   Every(thread.get(), std::chrono::milliseconds(100), &Impl::SweepWaits),
                   asio::detached);
  }
  asio::co_spawn(threads_[0]->context,
                 Every(threads_[0].get(), std::chrono::seconds(1), &Impl::PrunePools),
                 asio::detached);
  asio::co_spawn(threads_[0]->context,
                 Every(threads_[0].get(), std::chrono::seconds(1), &Impl::SumUpLoginFailures),
                 asio::detached);
  asio::co_spawn(threads_[0]->context,
                 Every(threads_[0].get(), std::chrono::seconds(1), &Impl::TrimAfterBurst),
                 asio::detached);
  for (auto& thread : threads_) {
    NetThread* t = thread.get();
    t->thread = std::thread([t, batch = config_.scheduling == ThreadScheduling::kBatch] {
      if (batch) {
        // (Linux schedules threads one by one: this thread only.)
        sched_param param{};
        if (sched_setscheduler(0, SCHED_BATCH, &param) != 0) {
          LogWarning("pooler: cannot schedule a network thread as SCHED_BATCH: %s",
                     strerror(errno));
        }
      }
      auto guard = asio::make_work_guard(t->context);
      t->context.run();
    });
  }
  LogInfo("pooler: listening on %s (port %d)%s, %d threads, %d databases", config_.listen, port_,
          local_path_.empty() ? "" : Cat(" and ", local_path_), count, config_.databases.size());
  return absl::OkStatus();
}

bool Pooler::Impl::WaitForShutdown(std::chrono::milliseconds timeout) {
  absl::MutexLock lock(&stop_mu_);
  return stop_mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::FromChrono(timeout));
}

void Pooler::Impl::Stop() {
  {
    absl::MutexLock lock(&stop_mu_);
    if (stopped_) return;
    stopped_ = true;
    stopping_ = true;
  }
  if (metrics_ != nullptr && collector_ >= 0) metrics_->RemoveCollector(collector_);
  for (auto& thread : threads_) thread->context.stop();
  for (auto& thread : threads_) {
    if (thread->thread.joinable()) thread->thread.join();
  }
  // The relaying sessions end, and idle server connections close, while the io_contexts
  // they belong to still exist.
  for (auto& thread : threads_) Session::AbandonRelays(thread.get());
  {
    absl::MutexLock lock(&pools_mu_);
    for (auto& [key, pool] : pools_) pool->CloseIdle();
  }
  // The routers' threads end while the io_contexts they may post to (a query cache waking a
  // session) still exist.
  std::map<std::string, std::shared_ptr<Router>> routers;
  std::vector<std::shared_ptr<Router>> retired;
  {
    absl::MutexLock lock(&config_mu_);
    routers.swap(routers_);
    retired.swap(retired_routers_);
  }
  for (auto& [name, router] : routers) router->Stop(true);
  for (auto& router : retired) router->Stop(true);
  // The coroutines suspended on the contexts go with them (their frames are destroyed with the
  // handlers that hold them), sessions and server connections with them.
  for (auto& thread : threads_) {
    boost::system::error_code ec;
    if (thread->acceptor) thread->acceptor->close(ec);
    if (thread->local_acceptor) thread->local_acceptor->close(ec);
  }
  if (gateway_ != nullptr) gateway_->Close();
  if (!local_path_.empty()) ::unlink(local_path_.c_str());
  threads_.clear();
  {
    absl::MutexLock lock(&pools_mu_);
    pools_.clear();
  }
}

Pooler::Pooler(PoolerConfig config, RouterFactory* routers)
    : impl_(std::make_unique<Impl>(std::move(config), routers)) {}
Pooler::~Pooler() { Stop(); }
absl::Status Pooler::Start(MetricsRegistry* metrics) { return impl_->Start(metrics); }
absl::Status Pooler::Reload() { return impl_->Reload(); }
bool Pooler::WaitForShutdown(std::chrono::milliseconds timeout) {
  return impl_->WaitForShutdown(timeout);
}
void Pooler::Stop() { impl_->Stop(); }
int Pooler::port() const { return impl_->port(); }
int Pooler::http_port() const { return impl_->http_port(); }

void Pooler::Hold(const std::string& database) { impl_->Hold(database); }

void Pooler::Release(const std::string& database) { impl_->Release(database); }

absl::Status Pooler::Retarget(const std::string& database, const std::string& url) {
  return impl_->Retarget(database, url);
}

absl::Status Pooler::Retarget(const std::string& database, const std::string& url,
                              const std::vector<std::string>& replicas) {
  return impl_->Move(database, url, &replicas);
}

}  // namespace pgflow::pooler
