#include "pooler/pooler.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/resource.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <atomic>
#include <cctype>
#include <deque>
#include <map>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/digest.h"
#include "engine/asio_support.h"
#include "engine/log.h"
#include "engine/metrics.h"
#include "engine/str_cat.h"
#include "pooler/admin_console.h"
#include "pooler/auth.h"
#include "pooler/pool.h"
#include "pooler/protocol.h"
#include "pooler/reactor.h"
#include "pooler/tls.h"

namespace pgflow::pooler {
namespace {

using asio_support::Acceptor;
using asio_support::kUseTask;
using asio_support::tcp;
using LocalAcceptor =
    asio::basic_socket_acceptor<asio::local::stream_protocol, asio_support::Executor>;
using LocalSocket = asio::basic_stream_socket<asio::local::stream_protocol, asio_support::Executor>;

constexpr size_t kReadChunk = 16384;

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
// A server message the relay must read whole (ReadyForQuery, ParameterStatus, errors...) is
// at most this large; the rest streams through in pieces.
constexpr size_t kMaxInspectedServerMessage = 1 << 20;
// Bytes gathered for one side before they are written out mid-batch.
constexpr size_t kFlushAt = 64 * 1024;
// Rounds of a session's relay in one pass before the thread's other sessions get theirs.
constexpr int kPumpRounds = 32;

// Setting names compare case-insensitively (Debian's abseil takes its own string_view).
std::string Lower(std::string_view s) {
  return absl::AsciiStrToLower(absl::string_view(s.data(), s.size()));
}

// The pooler's name for a statement a client prepared: the same for the same query and
// parameter types, whichever client prepared it, so that a server connection prepares each
// once.
std::string ServerStatementName(std::string_view parse_rest) {
  return Cat("pgflow_", Sha256Hex(parse_rest).substr(0, 24));
}

// Whether `text` holds "listen" or "advisory_lock", in any case: one pass, each candidate
// dropped at its first differing letter (it runs on every query in transaction mode).
bool MentionsSessionState(std::string_view text) {
  static constexpr std::string_view kListen = "listen", kLock = "advisory_lock";
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = absl::ascii_tolower(text[i]);
    const std::string_view word = c == 'l' ? kListen : c == 'a' ? kLock : std::string_view();
    if (word.empty() || text.size() - i < word.size()) continue;
    size_t k = 1;
    while (k < word.size() && absl::ascii_tolower(text[i + k]) == word[k]) ++k;
    if (k == word.size()) return true;
  }
  return false;
}

// Whether `sql` (a query's text, or its start) takes state that outlives its transaction and
// which transaction pooling would lose: a statement starting with LISTEN, or a call of a
// session-level advisory lock (pg_advisory_lock, pg_try_advisory_lock and their _shared forms;
// the _xact_ ones end with the transaction). String literals, quoted identifiers and comments
// are skipped; a call in a function body ($$...$$, a DO block) counts.
bool TakesSessionState(std::string_view sql) {
  // Most queries hold neither word: told apart by a plain scan before the tokenizer's.
  if (!MentionsSessionState(sql)) return false;
  auto ident = [](char c) { return absl::ascii_isalnum(c) || c == '_' || c == '$'; };
  bool statement_start = true;
  size_t i = 0;
  while (i < sql.size()) {
    const char c = sql[i];
    const char next = i + 1 < sql.size() ? sql[i + 1] : '\0';
    if (c == '\'' || c == '"') {  // a literal or a quoted identifier; '' and "" inside
      for (++i; i < sql.size(); ++i) {
        if (sql[i] != c) continue;
        if (i + 1 < sql.size() && sql[i + 1] == c) {
          ++i;
          continue;
        }
        break;
      }
      ++i;
      statement_start = false;
    } else if (c == '-' && next == '-') {
      while (i < sql.size() && sql[i] != '\n') ++i;
    } else if (c == '/' && next == '*') {
      size_t end = sql.find("*/", i + 2);
      i = end == std::string_view::npos ? sql.size() : end + 2;
    } else if (c == ';') {
      statement_start = true;
      ++i;
    } else if (absl::ascii_isspace(c) || c == '(') {
      ++i;
    } else if (ident(c)) {
      size_t end = i;
      while (end < sql.size() && ident(sql[end])) ++end;
      absl::string_view word(sql.data() + i, end - i);
      if (statement_start && absl::EqualsIgnoreCase(word, "listen")) return true;
      statement_start = false;
      if (absl::EqualsIgnoreCase(word, "pg_advisory_lock") ||
          absl::EqualsIgnoreCase(word, "pg_advisory_lock_shared") ||
          absl::EqualsIgnoreCase(word, "pg_try_advisory_lock") ||
          absl::EqualsIgnoreCase(word, "pg_try_advisory_lock_shared")) {
        size_t k = end;
        while (k < sql.size() && absl::ascii_isspace(sql[k])) ++k;
        if (k < sql.size() && sql[k] == '(') return true;
      }
      i = end;
    } else {
      statement_start = false;
      ++i;
    }
  }
  return false;
}

// Whether a query's text is DEALLOCATE [PREPARE] ALL or DISCARD ALL (alone, case and spaces
// as SQL allows, a trailing semicolon). Runs on every query in transaction pooling: it
// allocates nothing, and most queries are told apart by their first letter.
bool DeallocatesAll(std::string_view sql) {
  const size_t start = sql.find_first_not_of(" \t\r\n;");
  if (start == std::string_view::npos || (sql[start] != 'd' && sql[start] != 'D')) return false;
  std::array<absl::string_view, 3> words;
  size_t count = 0;
  for (absl::string_view word : absl::StrSplit(absl::string_view(sql.data(), sql.size()),
                                               absl::ByAnyChar(" \t\r\n;"), absl::SkipEmpty())) {
    if (count == words.size()) return false;
    words[count++] = word;
  }
  auto is = [&](size_t i, absl::string_view expected) {
    return absl::EqualsIgnoreCase(words[i], expected);
  };
  if (count == 2) return (is(0, "deallocate") || is(0, "discard")) && is(1, "all");
  return count == 3 && is(0, "deallocate") && is(1, "prepare") && is(2, "all");
}

// The SQL text of a query ('Q') or a Parse ('P'), given the message's body: a Parse's
// statement name is skipped, and the text ends at its terminating zero (or with the body, when
// only the start of a long query has come).
std::string_view QueryText(char type, std::string_view body) {
  if (type == 'P') body.remove_prefix(std::min(body.size(), body.find('\0') + 1));
  return body.substr(0, body.find('\0'));
}

// What the server is sent instead of a query the pooler refuses: a statement that fails with
// `sqlstate` and `reason`, so that the server's transaction state stays exact (an error inside
// a transaction block aborts it).
std::string FailingQuery(std::string_view sqlstate, std::string_view reason) {
  std::string out;
  AppendQuery(&out, Cat("DO $pgflow$BEGIN RAISE EXCEPTION USING ERRCODE = ",
                        QuoteLiteral(sqlstate), ", MESSAGE = ", QuoteLiteral(reason),
                        "; END$pgflow$"));
  return out;
}

// What the server is sent instead of a Parse (of statement `name`) the pooler refuses: one that
// fails at parse time, whatever parameters its Bind would bring, by a cast whose error (SQLSTATE
// 22P02, invalid text representation: a Parse cannot raise a chosen one) quotes `reason`.
std::string FailingParse(std::string_view name, std::string_view reason) {
  std::string rest = Cat("SELECT ", QuoteLiteral(reason), "::pg_catalog.int4");
  rest.push_back('\0');
  AppendInt16(&rest, 0);
  std::string out;
  AppendParse(&out, name, rest);
  return out;
}

// The failing statement for one that takes session state under session_state: refuse
// (`body` the original message's, for a Parse's statement name).
std::string RefusedSessionState(char type, std::string_view body) {
  constexpr std::string_view kReason =
      "pgflow pooler: LISTEN and session-level advisory locks are refused in transaction "
      "pooling (they would stay with a server connection other clients then use); use "
      "pool_mode: session or session_state: pin for this database";
  if (type == 'Q') return FailingQuery("0A000", kReason);
  return FailingParse(body.substr(0, body.find('\0')), kReason);
}

// Adds the settings of a startup packet's `options` (what PGOPTIONS holds: "-c a=1 --b=2",
// backslash escaping a space) to `params`; other switches are refused, naming them.
absl::Status ParseOptionsParameter(std::string_view options,
                                   absl::flat_hash_map<std::string, std::string>* params) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < options.size(); ++i) {
    char c = options[i];
    if (c == '\\' && i + 1 < options.size()) {
      word.push_back(options[++i]);
      in_word = true;
    } else if (absl::ascii_isspace(c)) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word.push_back(c);
      in_word = true;
    }
  }
  if (in_word) words.push_back(std::move(word));
  for (size_t i = 0; i < words.size(); ++i) {
    std::string setting;
    if (words[i] == "-c" && i + 1 < words.size()) {
      setting = words[++i];
    } else if (words[i].rfind("-c", 0) == 0 && words[i].size() > 2) {
      setting = words[i].substr(2);
    } else if (words[i].rfind("--", 0) == 0) {
      setting = words[i].substr(2);
    } else {
      return absl::InvalidArgumentError(
          Cat("unsupported startup option '", words[i], "': the pooler passes on -c name=value "
              "and --name=value only"));
    }
    size_t eq = setting.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(Cat("startup option '", setting, "' is not name=value"));
    }
    std::string name = Lower(setting.substr(0, eq));
    std::replace(name.begin(), name.end(), '-', '_');
    (*params)[name] = setting.substr(eq + 1);
  }
  return absl::OkStatus();
}

// Parameters PostgreSQL reports that no SET can change.
bool IsReadOnlyParameter(std::string_view name) {
  return name == "server_version" || name == "server_encoding" || name == "is_superuser" ||
         name == "session_authorization" || name == "integer_datetimes" ||
         name == "in_hot_standby" || name == "scram_iterations";
}

// Startup parameters that are not settings to pass on.
bool IsConnectionParameter(std::string_view name) {
  return name == "user" || name == "database" || name == "replication" || name == "options";
}

}  // namespace

// ---------------------------------------------------------------------------------------------

class Session;

// The relay's bookkeeping of what a server connection owes.
enum class Expect : uint8_t {
  kParse,         // a ParseComplete to pass on
  kParseSwallow,  // a ParseComplete of a Parse the pooler added
  kClose,         // a CloseComplete to pass on
  kCloseSwallow,  // a CloseComplete of a Close the pooler added
  kSync,          // a ReadyForQuery to pass on (after Sync, Query, FunctionCall)
  kSyncSwallow,   // everything up to a ReadyForQuery of a query the pooler sent
};
struct Expectation {
  Expect kind;
  std::string statement;  // kParse/kParseSwallow of a named statement: its server name
  char origin = 0;        // kSync: the message that asked for it ('Q', 'S', 'F')
};
// A FIFO of expectations on a vector: empty, it holds no memory (a std::deque allocates
// its first block when constructed, half a kilobyte per idle client).
class ExpectQueue {
 public:
  bool empty() const { return head_ == items_.size(); }
  size_t size() const { return items_.size() - head_; }
  Expectation& front() { return items_[head_]; }
  void push_back(Expectation e) { items_.push_back(std::move(e)); }
  void pop_front() {
    if (++head_ == items_.size()) {
      clear();
    } else if (head_ >= 64 && head_ * 2 >= items_.size()) {
      // Never empty (a pipelining client in session mode): what was answered goes.
      items_.erase(items_.begin(), items_.begin() + static_cast<ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  void clear() {
    items_.clear();
    head_ = 0;
  }
  // Empty; its memory goes back only when it grew past `keep` items (a spare relay state
  // keeps a transaction's few, so that the next transaction allocates none).
  void Reset(size_t keep) {
    if (items_.capacity() > keep) std::vector<Expectation>().swap(items_);
    clear();
  }
  auto begin() const { return items_.begin() + static_cast<ptrdiff_t>(head_); }
  auto end() const { return items_.end(); }

 private:
  std::vector<Expectation> items_;
  size_t head_ = 0;
};

// What a session needs only while its client speaks: taken when it first does, given back
// when it parks (Park), so that an idle client holds none of it.
struct RelayState {
  std::string cbuf;       // read from the client, not yet relayed
  std::string sbuf;       // read from the server, not yet relayed
  std::string to_server;  // for the server connection, not yet written
  std::string to_client;  // for the client, not yet written
  size_t server_sent = 0;  // bytes of to_server written (the rest waits for the socket)
  size_t client_sent = 0;  // bytes of to_client written
  size_t client_pass = 0;  // bytes of the client's current message still to relay
  size_t server_pass = 0;  // bytes of the server's current message still to relay
  ExpectQueue expect;      // the answers owed by the server connection, in order
};
struct NetThread {
  asio::io_context context{1};
  Reactor reactor{&context};  // the relay's sockets
  std::optional<Acceptor> acceptor;
  std::optional<LocalAcceptor> local_acceptor;  // the Unix socket (the first thread only)
  std::thread thread;
  Session* relaying = nullptr;  // the thread's relaying sessions, linked through them
  absl::flat_hash_set<Session*> waiting;  // its sessions in a Queue wait (Session::SweepWaits)

  // Where the thread's sockets are read into, so that a buffer grows by what came and is
  // never zero-filled ahead of a read.
  std::unique_ptr<char[]> scratch = std::make_unique<char[]>(kReadChunk);

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
    relay->server_sent = relay->client_sent = 0;
    relay->client_pass = relay->server_pass = 0;
    relay->expect.Reset(kKeptExpectations);
    spare.push_back(std::move(relay));
  }
};

// What the admin console and cancel requests see of a client, readable from any thread.
struct ClientInfo {
  uint64_t id = 0;
  std::string user;
  std::string database;
  std::string address;
  int port = 0;
  absl::Time connected = absl::Now();
  int32_t cancel_pid = 0;
  int32_t cancel_key = 0;
  std::atomic<int> state{0};  // 0 idle, 1 active (holds a server), 2 waiting
  asio::io_context* context = nullptr;
  std::weak_ptr<Session> session;

  absl::Mutex mu;
  // The server the client holds, for its cancel requests.
  std::optional<tcp::endpoint> server ABSL_GUARDED_BY(mu);
  // Its Unix socket, when reached through one: the server connection's own string, which
  // outlives this pointer (cleared at Detach, before the connection goes back to its pool).
  const std::string* server_path ABSL_GUARDED_BY(mu) = nullptr;
  int32_t server_pid ABSL_GUARDED_BY(mu) = 0;
  int32_t server_key ABSL_GUARDED_BY(mu) = 0;
};

class Pooler::Impl : public AdminTarget {
 public:
  explicit Impl(PoolerConfig config) : config_(std::move(config)) {}

  absl::Status Start(MetricsRegistry* metrics);
  absl::Status Reload() override;
  bool WaitForShutdown(std::chrono::milliseconds timeout);
  void Stop();
  int port() const { return port_; }

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
  // The pool of (database, login user), created on first use; nullptr when the database is
  // not (or no longer) configured.
  std::shared_ptr<Pool> PoolFor(const std::string& database, const std::string& client_user);
  // The same, if it exists already.
  std::shared_ptr<Pool> FindPool(const std::string& database, const std::string& client_user);
  void Register(const std::shared_ptr<ClientInfo>& info);
  void Unregister(uint64_t id);
  // Where a cancel request for the client with BackendKeyData (pid, key) goes: the server
  // connection it is running on; nullopt when it runs nothing (or no such client).
  struct CancelTarget {
    tcp::endpoint server;
    std::string socket_path;  // the server's Unix socket, when it is reached through one
    int32_t pid = 0;
    int32_t key = 0;
  };
  std::optional<CancelTarget> FindCancelTarget(int32_t pid, int32_t key);
  std::atomic<int> clients{0};
  std::atomic<uint64_t> next_client_id{1};
  bool accepting() const { return !suspended_.load(); }
  // The key of MockScramSecret: random, drawn once per process.
  const std::string& mock_key() const { return mock_key_; }

  // AdminTarget.
  std::vector<PoolView> Pools() override;
  std::vector<ClientView> Clients() override;
  std::vector<std::pair<std::string, std::string>> ConfigRows() override;
  std::vector<DatabaseView> Databases() override;
  void Pause(const std::string& database) override;
  void Resume(const std::string& database) override;
  void Reconnect(const std::string& database) override;
  void Kill(const std::string& database) override;
  void Suspend() override;
  void Shutdown(ShutdownMode mode) override;
  bool HasDatabase(const std::string& database) override;

 private:
  Task<void> Accept(NetThread* thread);
  Task<void> AcceptLocal(NetThread* thread);
  absl::Status ListenLocal(NetThread* thread);
  void StartSession(NetThread* thread, Socket socket, bool local);
  Task<void> Every(NetThread* thread, std::chrono::milliseconds period,
                   void (Impl::*work)(NetThread*));
  void PrunePools(NetThread* thread);
  void SweepWaits(NetThread* thread);
  void StopListening();
  void FinishDrain(NetThread* thread);
  PoolSettings SettingsFor(const PoolerConfig& config, const std::string& database,
                           const DatabaseOptions& db) const;
  LoginCredentials LoginFor(const DatabaseOptions& db, const std::string& client_user,
                            const UserList& users) const;
  std::vector<std::shared_ptr<Pool>> PoolsOf(const std::string& database);
  void CollectMetrics();

  PoolerConfig config_;
  const std::string mock_key_ = RandomBytes(32);
  mutable absl::Mutex config_mu_;
  std::shared_ptr<const PoolerConfig> config_snapshot_ ABSL_GUARDED_BY(config_mu_);
  std::shared_ptr<const UserList> users_ ABSL_GUARDED_BY(config_mu_);
  std::shared_ptr<asio::ssl::context> client_tls_ ABSL_GUARDED_BY(config_mu_);
  std::atomic<uint64_t> config_version_{1};  // changed with config_snapshot_ (RefreshConfig)

  absl::Mutex pools_mu_;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<Pool>> pools_
      ABSL_GUARDED_BY(pools_mu_);

  absl::Mutex clients_mu_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<ClientInfo>> client_infos_
      ABSL_GUARDED_BY(clients_mu_);

  std::vector<std::unique_ptr<NetThread>> threads_;
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

// ---------------------------------------------------------------------------------------------

// The keys of a client's SCRAM proof (ScramServer::client_key, the secret's ServerKey), with
// which the pooler can log in to PostgreSQL as that user.
struct ScramKeys {
  std::string client_key;
  std::string server_key;
};

// One client connection: its login, then either the admin console or the relay.
class Session : public std::enable_shared_from_this<Session>,
                public Reactor::Target,
                public PoolClient {
 public:
  // `local`: the client came through the Unix socket.
  Session(Pooler::Impl* impl, NetThread* thread, Socket socket, bool local)
      : impl_(impl), thread_(thread), client_(std::move(socket)), local_(local) {}
  ~Session() {
    if (info_ != nullptr && info_->id != 0) impl_->Unregister(info_->id);
    if (pool_ != nullptr) pool_->clients.fetch_sub(1);
    if (counted_) impl_->clients.fetch_sub(1);
  }

  // The session's life: login, then the console or the relay. `owner` (heap-held, deleted at
  // the end) keeps the session alive while it logs in; the relay keeps it itself (self_).
  // Coroutines here take no class-type parameter by value: GCC 12 was seen to copy a
  // shared_ptr parameter into the coroutine frame wrongly (the copy pointed at the control
  // block), so owners travel by pointer.
  static Task<void> Run(std::shared_ptr<Session>* owner) {
    std::unique_ptr<std::shared_ptr<Session>> hold(owner);
    Session* self = owner->get();
    if (!co_await self->Login()) {
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

  // From another thread (KILL, shutdown): posted to this session's thread.
  void Kill() {
    killed_ = true;
    if (relaying_) {
      Pump();
      return;
    }
    boost::system::error_code ec;
    client_.cancel(ec);  // (logging in, or the console)
  }

  // Every 100 ms on each thread (Pooler::Impl::SweepWaits): a Queue wait past its limit goes
  // on through Acquire, which opens the reserve pool or gives up after query_wait_timeout.
  static void SweepWaits(NetThread* thread) {
    const Clock::time_point now = Clock::now();
    std::vector<Session*> due;
    for (Session* session : thread->waiting) {
      const Clock::duration limit = session->pool_->QueueWaitLimit();
      if (limit != Clock::duration::max() &&
          now - Pool::WaitSince(*session->wait_) >= limit) {
        due.push_back(session);
      }
    }
    for (Session* session : due) session->EndWait();
  }

  // The pooler stops (its threads have): every relaying session of `thread` is let go, its
  // server connection closed, before the io_contexts go.
  static void AbandonRelays(NetThread* thread) {
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

 private:
  struct Statement {
    std::string server_name;
    std::string parse_rest;
  };

  RelayState& relay() {
    if (relay_ == nullptr) relay_ = thread_->TakeRelay();
    return *relay_;
  }

  // --- login ------------------------------------------------------------------------------

  Task<bool> ReadExactly(std::string* out, size_t n) {
    out->resize(n);
    boost::system::error_code ec;
    co_await asio::async_read(client_, asio::buffer(out->data(), n),
                              asio::redirect_error(kUseTask, ec));
    co_return !ec;
  }

  Task<void> SendFatal(std::string_view sqlstate, std::string_view message) {
    std::string out;
    AppendError(&out, "FATAL", sqlstate, message);
    boost::system::error_code ec;
    co_await asio::async_write(client_, asio::buffer(out), asio::redirect_error(kUseTask, ec));
  }

  Task<bool> Login() {
    std::shared_ptr<const PoolerConfig> config = impl_->config();
    const Clock::time_point login_deadline = Clock::now() + config->client_login_timeout;
    Deadline deadline(client_, config->client_login_timeout);
    boost::system::error_code ec;
    if (!local_) client_.set_option(tcp::no_delay(true), ec);
    const tcp::endpoint peer = local_ ? tcp::endpoint() : client_.remote_endpoint(ec);
    // (the peer read before a TLS pump takes over the socket)
    const std::string peer_address = local_ ? "unix" : peer.address().to_string(ec);
    std::string certificate_user;  // the verified client certificate's common name, if any
    StartupPacket startup;
    for (int round = 0;; ++round) {
      std::string head;
      if (!co_await ReadExactly(&head, 4)) co_return false;
      absl::StatusOr<size_t> length = StartupPacketLength(head);
      if (!length.ok()) {
        co_await SendFatal("08P01", Sv(length.status().message()));
        co_return false;
      }
      std::string rest;
      if (!co_await ReadExactly(&rest, *length - 4)) co_return false;
      absl::StatusOr<StartupPacket> packet = ParseStartupPacket(head + rest);
      if (!packet.ok()) {
        co_await SendFatal("08P01", Sv(packet.status().message()));
        co_return false;
      }
      if (packet->kind == StartupPacket::Kind::kCancel) {
        std::optional<Pooler::Impl::CancelTarget> target =
            impl_->FindCancelTarget(packet->cancel_pid, packet->cancel_key);
        if (target.has_value()) co_await ForwardCancel(*target);
        co_return false;
      }
      if (packet->kind != StartupPacket::Kind::kStartup) {
        if (round > 2) co_return false;
        // TLS when configured (once); GSSAPI encryption is not offered: the client goes on
        // in the clear, or gives up when its sslmode requires encryption.
        std::shared_ptr<asio::ssl::context> tls =
            packet->kind == StartupPacket::Kind::kSslRequest && !tls_ ? impl_->client_tls()
                                                                      : nullptr;
        char answer = tls != nullptr ? 'S' : 'N';
        co_await asio::async_write(client_, asio::buffer(&answer, 1), asio::redirect_error(kUseTask, ec));
        if (ec) co_return false;
        if (tls != nullptr) {
          absl::StatusOr<Socket> plain = co_await StartTls(
              &client_, *tls, /*as_server=*/true, TlsMode::kRequire, "",
              std::max(std::chrono::milliseconds(1),
                       std::chrono::duration_cast<std::chrono::milliseconds>(
                           login_deadline - Clock::now())),
              &certificate_user);
          // The deadline's timer, if it fired meanwhile, found no socket to cancel.
          if (plain.ok() && deadline.expired()) plain = absl::DeadlineExceededError("login timed out");
          if (!plain.ok()) {
            LogInfo("pooler: client %s: %s", peer_address, plain.status().message());
            co_return false;
          }
          client_ = *std::move(plain);
          tls_ = true;
        }
        continue;
      }
      startup = *std::move(packet);
      break;
    }
    // (As with PostgreSQL's `local` lines, a Unix-socket client needs no TLS.)
    if (config->tls.mode >= TlsMode::kRequire && !tls_ && !local_) {
      co_await SendFatal("28000", "the pooler accepts TLS connections only (connect with "
                                  "sslmode=require or stronger)");
      co_return false;
    }
    // (Registered, with an id, once logged in.)
    info_ = std::make_shared<ClientInfo>();
    info_->user = startup.Get("user");
    info_->database = startup.Get("database");
    if (info_->database.empty()) info_->database = info_->user;
    if (config->tls.mode >= TlsMode::kVerifyCa && !local_) {
      // PostgreSQL's clientcert=verify-ca and verify-full.
      if (certificate_user.empty()) {
        co_await SendFatal("28000", "the pooler requires a client certificate from its "
                                    "authorities (tls.ca): connect with sslcert and sslkey");
        co_return false;
      }
      if (config->tls.mode == TlsMode::kVerifyFull && certificate_user != info_->user) {
        co_await SendFatal("28000", Cat("certificate validation (clientcert=verify-full) failed "
                                        "for user \"", info_->user, "\": CN mismatch"));
        co_return false;
      }
    }
    if (!startup.Get("replication").empty() && startup.Get("replication") != "false" &&
        startup.Get("replication") != "0") {
      co_await SendFatal("08P01", "replication connections are not supported by the pooler");
      co_return false;
    }
    if (!impl_->accepting()) {
      co_await SendFatal("57P03", "the pooler is suspended (SUSPEND): try again after RESUME");
      co_return false;
    }
    counted_ = true;
    if (impl_->clients.fetch_add(1) >= config->max_client_conn) {
      co_await SendFatal("53300", Cat("too many clients already (max_client_conn ",
                                      config->max_client_conn, ")"));
      co_return false;
    }

    admin_ = database() == "pgflow" || database() == "pgbouncer";
    std::shared_ptr<const UserList> users = impl_->users();
    if (admin_) {
      if (std::find(config->admin.users.begin(), config->admin.users.end(), user()) ==
          config->admin.users.end()) {
        co_await SendFatal("28000", Cat("user \"", user(),
                                        "\" may not use the admin console (admin.users)"));
        co_return false;
      }
    } else {
      const DatabaseOptions* db = FindDatabase(*config, database());
      if (db == nullptr) {
        co_await SendFatal("3D000", Cat("database \"", database(),
                                        "\" is not in the pooler's configuration"));
        co_return false;
      }
      if (db->max_client_conn > 0) {
        // Looked up, not created: a client not yet authenticated creates nothing.
        std::shared_ptr<Pool> pool = impl_->FindPool(database(), user());
        if (pool != nullptr && pool->clients.load() >= db->max_client_conn) {
          co_await SendFatal("53300", Cat("too many clients of database ", database(),
                                          " (max_client_conn ", db->max_client_conn, ")"));
          co_return false;
        }
      }
    }
    std::string looked_up_md5;  // the md5 hash auth.query found, for the server login
    ScramKeys proof;            // the keys of the client's SCRAM proof, for the server login
    if (!co_await Authenticate(*config, *users, certificate_user, &looked_up_md5, &proof)) {
      co_return false;
    }

    std::string out;
    AppendAuthentication(&out, 0);
    info_->id = impl_->next_client_id.fetch_add(1);
    info_->address = peer_address;
    info_->port = peer.port();
    info_->context = &thread_->context;
    info_->session = weak_from_this();
    std::string key_bytes = RandomBytes(8);
    info_->cancel_pid = ReadInt32(key_bytes.data()) & 0x7fffffff;
    info_->cancel_key = ReadInt32(key_bytes.data() + 4);
    impl_->Register(info_);

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
      AppendBackendKeyData(&out, info_->cancel_pid, info_->cancel_key);
      AppendReadyForQuery(&out, 'I');
      co_await asio::async_write(client_, asio::buffer(out), asio::redirect_error(kUseTask, ec));
      co_return !ec;
    }

    pool_ = impl_->PoolFor(database(), user());
    if (pool_ == nullptr) {
      co_await SendFatal("3D000", Cat("database \"", database(), "\" was removed"));
      co_return false;
    }
    pool_->clients.fetch_add(1);
    mode_ = pool_->settings().mode;
    if (!proof.client_key.empty() && pool_->login_user() == user()) {
      pool_->OfferScramKeys(proof.client_key, proof.server_key);
    }
    if (!looked_up_md5.empty() && pool_->login_user() == user()) pool_->OfferMd5Hash(looked_up_md5);
    for (const auto& [name, value] : startup.parameters) {
      if (!IsConnectionParameter(name)) params_[Lower(name)] = value;
    }
    // `options` (PGOPTIONS): command-line style settings, -c name=value or --name=value.
    if (absl::Status s = ParseOptionsParameter(startup.Get("options"), &params_); !s.ok()) {
      co_await SendFatal("08P01", Sv(s.message()));
      co_return false;
    }

    std::vector<std::pair<std::string, std::string>> server_params = pool_->ServerParams();
    if (server_params.empty()) {
      // No server login yet: one now, to learn what to tell the client (server_version...).
      info_->state = 2;
      absl::StatusOr<std::unique_ptr<ServerConn>> server =
          co_await pool_->Acquire(&thread_->context, nullptr);
      info_->state = 0;
      if (!server.ok()) {
        auto [sqlstate, message] = SqlstateOf(server.status());
        co_await SendFatal(sqlstate, message);
        co_return false;
      }
      server_params = pool_->ServerParams();
      pool_->Release(*std::move(server), true);
    }
    for (const auto& [name, value] : server_params) {
      auto mine = params_.find(Lower(name));
      AppendParameterStatus(&out, name, mine != params_.end() ? mine->second : value);
    }
    defaults_ = pool_->Defaults();
    settings_stamp_ = pool_->SettingsStamp(params_, defaults_.get());
    if (mode_ == PoolMode::kSession && !params_.empty()) {
      // Session mode: the server connection starts with the client's settings, so that RESET
      // returns to them (SET would make them the session's, not its defaults).
      startup_ = std::make_unique<StartupSettings>();
      startup_->settings.assign(params_.begin(), params_.end());
      std::sort(startup_->settings.begin(), startup_->settings.end());
      for (const auto& [name, value] : startup_->settings) {
        startup_->key += Cat(name, "=", value, "\n");
      }
    }
    AppendBackendKeyData(&out, info_->cancel_pid, info_->cancel_key);
    AppendReadyForQuery(&out, 'I');
    co_await asio::async_write(client_, asio::buffer(out), asio::redirect_error(kUseTask, ec));
    co_return !ec;
  }

  // Reads one password-phase message ('p').
  Task<std::optional<std::string>> ReadPasswordMessage() {
    std::string head;
    if (!co_await ReadExactly(&head, 5)) co_return std::nullopt;
    int32_t length = ReadInt32(head.data() + 1);
    if (head[0] != 'p' || length < 4 || length > 65536) co_return std::nullopt;
    std::string body;
    if (!co_await ReadExactly(&body, static_cast<size_t>(length) - 4)) co_return std::nullopt;
    co_return body;
  }

  // Passes a cancel request on to the server connection running the client's query, on this
  // session's own connection: as many at once as clients connected, each bounded by the
  // server connect timeout.
  Task<void> ForwardCancel(const Pooler::Impl::CancelTarget& target) {
    Socket socket(thread_->context.get_executor());
    Deadline deadline(socket, impl_->config()->server_connect_timeout);
    boost::system::error_code ec;
    if (!target.socket_path.empty()) {
      absl::StatusOr<Socket> local = ConnectLocal(&thread_->context, target.socket_path);
      if (!local.ok()) {
        LogDebug("pooler: cancel request not passed on: %s", local.status().message());
        co_return;
      }
      socket = *std::move(local);
    } else {
      co_await socket.async_connect(target.server, asio::redirect_error(kUseTask, ec));
      if (ec) {
        LogDebug("pooler: cancel request not passed on: %s", ec.message());
        co_return;
      }
    }
    std::string out;
    AppendCancelRequest(&out, target.pid, target.key);
    co_await asio::async_write(socket, asio::buffer(out), asio::redirect_error(kUseTask, ec));
    char byte;
    // PostgreSQL closes the connection once it has read the request.
    co_await socket.async_read_some(asio::buffer(&byte, 1), asio::redirect_error(kUseTask, ec));
  }

  // Looks the client's user up with auth.query, as auth.user, on the database it named: its
  // secret, or none (no such user, a NULL secret, one that is not a secret). An error when the
  // lookup itself fails (the server unreachable, the query refused: the log says which).
  Task<absl::StatusOr<std::optional<UserSecret>>> LookUpSecret(const PoolerConfig& config) {
    std::shared_ptr<Pool> pool = impl_->PoolFor(database(), config.auth.user);
    if (pool == nullptr) co_return std::nullopt;
    absl::StatusOr<std::unique_ptr<ServerConn>> server =
        co_await pool->Acquire(&thread_->context, nullptr);
    absl::Status failure;
    QueryResult result;
    if (server.ok()) {
      (*server)->MoveTo(&thread_->context);  // (asio's calls below)
      result = co_await QueryFirstRow(**server, config.auth.query, user(),
                                      config.server_connect_timeout);
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
      LogWarning("pooler: auth.query for user %s returned a secret that is not a valid SCRAM "
                 "secret", user());
    }
    co_return secret;
  }

  // `certificate_user`: the common name of the client's verified TLS certificate, or empty.
  Task<bool> Authenticate(const PoolerConfig& config, const UserList& users,
                          const std::string& certificate_user, std::string* looked_up_md5,
                          ScramKeys* proof) {
    const bool no_password =
        config.auth.method == AuthMethod::kTrust || config.auth.method == AuthMethod::kCert;
    auto entry = users.find(user());
    const UserSecret* secret = entry == users.end() ? nullptr : &entry->second;
    std::optional<UserSecret> looked_up;
    if (secret == nullptr && !config.auth.user.empty() &&
        !no_password && FindDatabase(config, database()) != nullptr) {
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
    }
    bool use_scram = config.auth.method == AuthMethod::kScram ||
                     (secret != nullptr && secret->kind == UserSecret::Kind::kScram);
    boost::system::error_code ec;
    if (!use_scram) {
      // md5. An unknown user is asked for a password too and gets a wrong password's answer.
      std::string salt = RandomBytes(4);
      std::string out;
      AppendAuthentication(&out, 5, salt);
      co_await asio::async_write(client_, asio::buffer(out), asio::redirect_error(kUseTask, ec));
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
        LogWarning("pooler: user %s cannot log in by SCRAM: the users file holds an md5 hash "
                   "of the password (give the password or its SCRAM secret)", user());
      }
      scram_secret = MockScramSecret(user(), impl_->mock_key());
    } else if (!secret->scram.salt.empty()) {
      scram_secret = secret->scram;  // a SCRAM secret, or derived from the password at load
    } else {
      scram_secret = MakeScramSecret(secret->text, RandomBytes(16), kDefaultScramIterations);
    }
    ScramServer server(scram_secret, RandomBytes(18));
    std::string out;
    AppendAuthentication(&out, 10, std::string_view("SCRAM-SHA-256\0\0", 15));
    co_await asio::async_write(client_, asio::buffer(out), asio::redirect_error(kUseTask, ec));
    std::optional<std::string> initial = co_await ReadPasswordMessage();
    if (!initial.has_value()) co_return false;
    BodyReader reader(*initial);
    std::optional<std::string_view> mechanism = reader.CString();
    std::optional<int32_t> size = reader.Int32();
    if (!mechanism.has_value() || *mechanism != "SCRAM-SHA-256" || !size.has_value() ||
        *size < 0 || reader.rest().size() != static_cast<size_t>(*size)) {
      co_await SendFatal("08P01", "malformed SASLInitialResponse (expected SCRAM-SHA-256)");
      co_return false;
    }
    absl::StatusOr<std::string> server_first = server.ClientFirst(reader.rest());
    if (!server_first.ok()) {
      co_await SendFatal("08P01", Cat("SCRAM: ", server_first.status().message()));
      co_return false;
    }
    out.clear();
    AppendAuthentication(&out, 11, *server_first);
    co_await asio::async_write(client_, asio::buffer(out), asio::redirect_error(kUseTask, ec));
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
    AppendAuthentication(&out, 12, *server_final);
    co_await asio::async_write(client_, asio::buffer(out), asio::redirect_error(kUseTask, ec));
    proof->client_key = server.client_key();
    proof->server_key = scram_secret.server_key;
    co_return !ec;
  }

  // --- relay ------------------------------------------------------------------------------
  //
  // After login the client's socket leaves asio for the thread's Reactor, and the relay is a
  // state machine run from there: each report of a ready socket, and the end of a wait for a
  // server connection, runs Pump, which does what the sockets allow without waiting and
  // returns. Nothing of it waits in a coroutine: an idle client holds its session only, and
  // a transaction costs no coroutine frame unless it waits for a server connection.
  //
  // Bounds: the client is read while less than kFlushAt of its bytes wait to be relayed, the
  // server while less than kFlushAt wait for the client (its answers stream through).

  void StartRelay() {
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

  void OnReady(int fd, uint32_t events) override {
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

  // Does what the sockets allow, until nothing moves; then watches for what is awaited.
  void Pump() {
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

  bool Settled() const {
    const RelayState& r = *relay_;
    return r.cbuf.empty() && r.sbuf.empty() && r.to_server.empty() && r.to_client.empty() &&
           r.client_pass == 0 && r.server_pass == 0 && r.expect.empty();
  }

  // Reads what the client sent and relays its messages (the client's side of Pump).
  bool ClientSide() {
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
    if (!client_parsed_ && !attaching_ && !r.cbuf.empty() && r.to_server.size() < kFlushAt) {
      ProcessClientInput();
      progress = true;
    }
    return progress;
  }

  // How much of the client's bytes may wait in cbuf before it is no longer read: kFlushAt, or
  // a message that must be read whole (client_need_).
  size_t ClientReadLimit() const { return std::max(kFlushAt, client_need_); }

  // Relays the client's buffered messages as far as they go: until one waits for more of its
  // bytes (client_parsed_), for a server connection, or for to_server to be written.
  void ProcessClientInput() {
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
          if (!TryAttach()) {
            StartAttach();
            more = false;
          } else if (closing_) {
            more = false;  // (its connection could not be watched)
          }
          break;
        case ClientStep::kFlush:
          more = false;  // written by Pump, then relayed on
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

  // The client's first message of a transaction needs a server connection: an idle one now.
  bool TryAttach() {
    std::unique_ptr<ServerConn> server = pool_->TryAcquire(&thread_->context, startup_settings());
    if (server == nullptr) return false;
    Attached(std::move(server));
    return true;
  }

  // ...else one handed over by the pool when a client gives one back (Pool::Queue: no
  // coroutine, no timer), or, when the pool has room to open one, is paused, or the wait goes
  // on past the reserve pool's or query_wait_timeout's time, one Pool::Acquire gets, in a
  // coroutine that resumes the relay.
  void StartAttach() {
    attaching_ = true;
    info_->state = 2;
    wait_ = pool_->Queue(&thread_->context, startup_settings(), weak_from_this());
    if (wait_ != nullptr) {
      thread_->waiting.insert(this);
      return;
    }
    AcquireLater(nullptr);
  }
  const StartupSettings* startup_settings() const {
    return mode_ == PoolMode::kSession ? startup_.get() : nullptr;
  }

  // The pool answered the Queue wait (posted to this thread).
  void PoolAnswered(const std::shared_ptr<Pool::Waiter>& waiter) override {
    if (waiter == wait_ && !finished_) EndWait();
  }
  // Ends the Queue wait: with the connection handed to it, else through Acquire.
  void EndWait() {
    std::shared_ptr<Pool::Waiter> waiter = std::move(wait_);
    thread_->waiting.erase(this);
    std::unique_ptr<ServerConn> server = pool_->TakeHanded(waiter);
    if (server != nullptr) {
      AttachDone(std::move(server));
      return;
    }
    AcquireLater(waiter);
  }

  void AcquireLater(const std::shared_ptr<Pool::Waiter>& resumed) {
    asio::co_spawn(thread_->context, AttachLater(new AttachArgs{self_, resumed}), asio::detached);
  }
  struct AttachArgs {
    std::shared_ptr<Session> self;
    std::shared_ptr<Pool::Waiter> resumed;  // a Queue wait gone on with, or null
  };
  static Task<void> AttachLater(AttachArgs* args) {
    std::unique_ptr<AttachArgs> hold(args);
    Session* self = args->self.get();
    absl::StatusOr<std::unique_ptr<ServerConn>> server = co_await self->pool_->Acquire(
        &self->thread_->context, self->startup_settings(), &args->resumed);
    self->AttachDone(std::move(server));
  }
  void AttachDone(absl::StatusOr<std::unique_ptr<ServerConn>> server) {
    attaching_ = false;
    if (finished_) {
      if (server.ok()) pool_->Release(*std::move(server), true);
      return;
    }
    if (!server.ok()) {
      info_->state = 0;
      auto [sqlstate, message] = SqlstateOf(server.status());
      EndWithFatal(sqlstate, message);
    } else if (client_gone_ || killed_) {
      info_->state = 0;
      pool_->Release(*std::move(server), true);
    } else {
      Attached(*std::move(server));
    }
    Pump();
  }

  void Attached(std::unique_ptr<ServerConn> server) {
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

  // Reads what `fd` holds into `buffer` without waiting (through the thread's scratch): the
  // bytes read, `in` cleared once a short read shows the socket emptied; 0 when it had
  // nothing, `in` and `hup` cleared (a hung-up socket reads its end, not EAGAIN, so a hang-up
  // report is stale then); -1 at the end of the stream (errno 0) or on an error (errno set).
  ssize_t ReceivePending(int fd, std::string& buffer, bool& in, bool& hup) {
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

  // What ended a ReceivePending that gave -1.
  static const char* ReadFailure() { return errno == 0 ? "end of stream" : strerror(errno); }

  // Writes what `out` holds past `sent` to `fd` without waiting, keeping the count: the bytes
  // written (0 when the socket is full: `blocked` until the reactor reports it writable,
  // `writable`), -1 on an error (errno set). `out` is emptied once all of it is written.
  static ssize_t SendPending(int fd, std::string& out, size_t& sent, bool& blocked,
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

  // Writes what waits for the server, as far as the socket takes it.
  bool WriteServer() {
    RelayState& r = relay();
    if (r.to_server.empty() || (server_blocked_ && !server_out_)) return false;
    const ssize_t n = SendPending(server_->fd(), r.to_server, r.server_sent,
                                  server_blocked_, server_out_);
    if (n < 0) {
      LogDebug("pooler: client %d: write to server: %s", info_->id, strerror(errno));
      ServerLost();
      return true;
    }
    return n > 0;
  }

  // Writes what waits for the client; a client closing once told (closing_) is closed when
  // it is written.
  bool WriteClient() {
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

  // Watches each socket for what the relay awaits of it.
  void UpdateInterest() {
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

  // epoll refused a registration (out of memory or watches): the client is ended, its server
  // connection closed (Pump, posted: this runs at the end of one).
  void WatchFailed(std::string_view what) {
    LogWarning("pooler: client %d: cannot watch %s: %s", info_->id, what, strerror(errno));
    killed_ = true;
    asio::post(thread_->context, [self = shared_from_this()] { self->Pump(); });
  }

  // The client is told `message` and closed once it has read it; its server connection (if
  // any) is closed.
  void EndWithFatal(std::string_view sqlstate, std::string_view message) {
    if (!client_gone_) AppendError(&relay().to_client, "FATAL", sqlstate, message);
    closing_ = true;
    if (server_ != nullptr) Detach(false);
  }

  // The client left, broke the protocol, was killed or was closed: its socket is closed, and
  // its server connection, if it holds one, cleaned up before it goes back (SettleAfterClientGone).
  void ClientGone() {
    client_gone_ = true;
    CloseClientFd();
    if (relay_ != nullptr) {
      relay_->to_client.clear();
      relay_->client_sent = 0;
      relay_->cbuf.clear();
    }
  }

  void CloseClientFd() {
    if (client_fd_ < 0) return;
    thread_->reactor.Remove(client_fd_);
    ::shutdown(client_fd_, SHUT_RDWR);
    ::close(std::exchange(client_fd_, -1));
  }

  void Unlink() {
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

  // The relay is over: the session goes once the handler running this returns.
  void Finish() {
    finished_ = true;
    CloseClientFd();
    Unlink();
    if (relay_ != nullptr) thread_->GiveRelay(std::move(relay_));
    asio::post(thread_->context, [last = std::move(self_)] {});
  }

  // --- relay: client to server ------------------------------------------------------------

  // Appends to *out the SETs and RESETs that bring the server connection to the client's
  // settings, and notes that it has them: what the client gave at startup or changed since
  // (params_), and, for the rest, the values every client is shown at login (defaults_), which
  // another client may have changed on this connection.
  void AddSettingsSync(std::string* out) {
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

  // Rewrites a Parse, Bind, Describe or Close for transaction pooling into to_server.
  void Rewrite(char type, std::string_view message, const PoolerConfig& config) {
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
        statements()[std::string(parse->name)] = {server_name, std::string(parse->rest)};
        PrepareOnServer(server_name, parse->rest, Expect::kParse, config);
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

  // The client's statement `name`, prepared on the current server connection (a Parse is
  // added first when it is not); nullptr when the client has no such statement.
  const Statement* Prepared(std::string_view name) {
    if (statements_ == nullptr) return nullptr;
    auto it = statements_->find(std::string(name));
    if (it == statements_->end()) return nullptr;
    if (!server_->prepared.contains(it->second.server_name)) {
      PrepareOnServer(it->second.server_name, it->second.parse_rest, Expect::kParseSwallow,
                      *impl_->config());
    }
    return &it->second;
  }

  // Prepares statement `name` on the server connection (`expected` tells whether the client
  // sees the ParseComplete). A Close of the name goes first: after an error skipped a batch,
  // the server may still hold a statement this connection's list forgot (the same query:
  // names are digests). A connection holding max_prepared_statements closes them all first.
  void PrepareOnServer(const std::string& name, std::string_view rest, Expect expected,
                       const PoolerConfig& config) {
    if (server_->prepared.size() >= config.max_prepared_statements) {
      for (const std::string& old : server_->prepared) {
        AppendTarget(&relay().to_server, 'C', 'S', old);
        relay().expect.push_back({Expect::kCloseSwallow, {}});
      }
      server_->prepared.clear();
    }
    AppendTarget(&relay().to_server, 'C', 'S', name);
    relay().expect.push_back({Expect::kCloseSwallow, {}});
    AppendParse(&relay().to_server, name, rest);
    relay().expect.push_back({expected, name});
    server_->prepared.insert(name);
  }

  // What relaying the client's buffer stopped for.
  enum class ClientStep : uint8_t {
    kMore,    // all of it relayed, or a message waits for more of its bytes
    kAttach,  // the message at the position needs a server connection first
    kFlush,   // to_server is full: send it, then go on
    kFatal,   // a malformed message (*fatal_message: what to tell a client holding no server)
    kLeave,   // Terminate
  };

  // Relays the messages in cbuf from *position on into to_server (rewritten where
  // transaction pooling needs it), keeping the expectations and counters in step, and
  // advances *position past what it took. A plain function, called again after each step the
  // client loop takes for it: its locals live on the stack, not in every idle client's
  // coroutine frame.
  ClientStep ProcessClientBuffer(const PoolerConfig& config, size_t* position,
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
      std::string refused;  // the message sent instead of one refused
      if (!pinned_ && !text.empty()) {
        // (A query larger than what came so far is judged by its start and, if refused, its
        // rest dropped.)
        if (TakesSessionState(text)) {
          if (pool_->settings().session_state == SessionStatePolicy::kPin) {
            pinned_ = true;
            LogInfo("pooler: client %d (%s@%s) keeps its server connection: it took session "
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

  const std::string& user() const { return info_->user; }
  const std::string& database() const { return info_->database; }

  // --- relay: server to client ------------------------------------------------------------

  bool Releasable() const {
    const bool settled = relay_ == nullptr || (relay_->expect.empty() && relay_->client_pass == 0 &&
                                               relay_->server_pass == 0);
    return mode_ != PoolMode::kSession && !pinned_ && settled && unsynced_ == 0 &&
           (relay_ == nullptr || relay_->to_server.empty()) && txn_status_ == 'I';
  }

  // Drops what the server will not answer after an error: everything up to the next Sync.
  void DropUntilSync() {
    while (!relay().expect.empty() && relay().expect.front().kind != Expect::kSync &&
           relay().expect.front().kind != Expect::kSyncSwallow) {
      if (!relay().expect.front().statement.empty() &&
          (relay().expect.front().kind == Expect::kParse || relay().expect.front().kind == Expect::kParseSwallow)) {
        server_->prepared.erase(relay().expect.front().statement);
      }
      relay().expect.pop_front();
    }
  }

  // Handles one whole inspected message from the server; false to swallow it.
  bool OnServerMessage(char type, std::string_view body) {
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
      case '1':
        if (!relay().expect.empty() && (relay().expect.front().kind == Expect::kParse ||
                                 relay().expect.front().kind == Expect::kParseSwallow)) {
          bool forward = relay().expect.front().kind == Expect::kParse;
          relay().expect.pop_front();
          return forward;
        }
        return !swallowing;
      case '3':
        if (!relay().expect.empty() && (relay().expect.front().kind == Expect::kClose ||
                                 relay().expect.front().kind == Expect::kCloseSwallow)) {
          bool forward = relay().expect.front().kind == Expect::kClose;
          relay().expect.pop_front();
          return forward;
        }
        return !swallowing;
      case 'E':
        if (swallowing) {
          ErrorFields error = ParseErrorFields(body);
          LogWarning("pooler: database %s: setting a client's parameters failed: %s",
                     database(), error.message);
          return false;
        }
        DropUntilSync();
        return true;
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

  bool Inspected(char type) const {
    return type == 'Z' || type == '1' || type == '3' || type == 'E' || type == 'S' ||
           type == 'G' || (type == 'C' && mode_ != PoolMode::kSession);
  }

  // Reads what the server sent and relays its messages (the server's side of Pump).
  bool ServerSide() {
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

  // Relays the server's buffered messages into to_client (swallowing the answers the pooler's
  // own queries get), until one waits for more of its bytes or to_client holds kFlushAt;
  // whether anything was taken.
  bool ProcessServerInput() {
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
          LogWarning("pooler: database %s: a server message of type '%c' is %d bytes",
                     database(), h.type, h.size);
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

  // Gives the server connection back once nothing more is owed on it.
  bool Release() {
    // (Not while the client's next messages wait to be relayed: they go on this connection.)
    if (!Releasable() || (!client_parsed_ && !relay_->cbuf.empty())) return false;
    Detach(true);
    return true;
  }

  // The client left while holding its server connection: a connection in the middle of an
  // answer or a message is closed, one inside a transaction (or in session mode, or pinned)
  // is rolled back and reset first, then given back.
  bool SettleAfterClientGone() {
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
    if (!dirty || cleanup_sent_) {
      Detach(true);
      return true;
    }
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
    if (r.to_server.empty()) {
      Detach(true);
      return true;
    }
    cleanup_sent_ = true;
    server_->ForgetSettings();  // DISCARD ALL resets what the client set...
    server_->prepared.clear();  // ...and deallocates every prepared statement
    return true;
  }

  // The server connection failed under the client: what was in flight gets an error (its
  // outcome unknown), and the client goes on with its next transaction on another connection.
  // A client in the middle of an answer, inside a transaction or in session mode is closed.
  void ServerLost() {
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

  // Gives the server connection back (`reusable` false: closed), with what was owed on it.
  void Detach(bool reusable) {
    if (info_ != nullptr) {
      absl::MutexLock lock(&info_->mu);
      info_->server.reset();
      info_->server_path = nullptr;
      info_->state = 0;
    }
    if (relay_ != nullptr) {
      RelayState& r = *relay_;
      r.expect.clear();
      r.sbuf.clear();
      r.server_pass = 0;
      r.to_server.clear();  // (empty unless the connection is closed)
      r.server_sent = 0;
    }
    copy_in_ = false;
    cleanup_sent_ = false;
    server_in_ = server_out_ = server_hup_ = server_blocked_ = false;
    const int fd = server_->fd();
    if (reusable) {
      thread_->reactor.Unwatch(fd, Reactor::kRead);  // (before another thread may take it)
    } else {
      thread_->reactor.Forget(fd);  // closed by Release
    }
    pool_->Release(std::move(server_), reusable);
  }

  void CloseClient() {
    boost::system::error_code ec;
    client_.shutdown(tcp::socket::shutdown_both, ec);
    client_.close(ec);
  }

  // --- admin console ----------------------------------------------------------------------

  Task<void> AdminLoop() {
    std::string buffer;
    boost::system::error_code ec;
    while (!killed_) {
      absl::StatusOr<WholeMessage> message = co_await ReadWholeMessage(client_, buffer, 1 << 20);
      if (!message.ok() || message->type == 'X') co_return;
      std::string out;
      if (message->type != 'Q') {
        AppendError(&out, "FATAL", "08P01",
                    "the admin console speaks the simple query protocol only");
        co_await asio::async_write(client_, asio::buffer(out), asio::redirect_error(kUseTask, ec));
        co_return;
      }
      std::string sql = message->body;
      while (!sql.empty() && sql.back() == '\0') sql.pop_back();
      AdminReply reply = RunAdminCommand(impl_, sql);
      // Commands that wait (PAUSE, WAIT_CLOSE, SUSPEND) poll until done.
      while (reply.wait_until && !reply.wait_until()) {
        Timer pause(thread_->context.get_executor());
        pause.expires_after(std::chrono::milliseconds(50));
        co_await pause.async_wait(asio::redirect_error(kUseTask, ec));
        if (killed_) co_return;
      }
      out = std::move(reply.messages);
      AppendReadyForQuery(&out, 'I');
      co_await asio::async_write(client_, asio::buffer(out), asio::redirect_error(kUseTask, ec));
      if (ec) co_return;
      if (reply.after) reply.after();
    }
  }

  Pooler::Impl* impl_;
  NetThread* thread_;
  Socket client_;
  std::shared_ptr<ClientInfo> info_;  // from the startup packet on
  std::shared_ptr<Pool> pool_;
  bool counted_ = false;
  bool admin_ = false;
  PoolMode mode_ = PoolMode::kTransaction;
  // The client's settings (lower-case names): its startup parameters and what it changed.
  absl::flat_hash_map<std::string, std::string> params_;
  // The client's named statements (transaction pooling), made at its first.
  using Statements = absl::flat_hash_map<std::string, Statement>;
  std::unique_ptr<Statements> statements_;
  Statements& statements() {
    if (statements_ == nullptr) statements_ = std::make_unique<Statements>();
    return *statements_;
  }
  std::shared_ptr<const absl::flat_hash_map<std::string, std::string>> defaults_;
  uint64_t settings_stamp_ = 0;  // Pool::SettingsStamp of params_ over defaults_
  // Session mode, a client with settings: those its server connections start with.
  std::unique_ptr<StartupSettings> startup_;

  std::unique_ptr<ServerConn> server_;
  std::unique_ptr<RelayState> relay_;  // while the client speaks (RelayState)
  bool client_drop_ = false;  // client_pass bytes are dropped (the rest of a refused query)
  bool server_pass_swallow_ = false;  // server_pass bytes are swallowed
  int unsynced_ = 0;  // extended-protocol messages sent since the last Sync
  char txn_status_ = 'I';
  bool client_gone_ = false;  // its socket is closed (it left, broke the protocol, was killed)
  bool killed_ = false;
  bool statement_violation_ = false;
  bool copy_in_ = false;  // the server copies in (CopyInResponse seen, no CopyDone/Fail yet)
  bool pinned_ = false;  // took session state: keeps its server connection (TakesSessionState)
  bool tls_ = false;     // the client speaks TLS (through a pump: pooler/tls.h)
  bool local_ = false;   // the client came through the Unix socket

  // The relay's state machine (Pump).
  std::shared_ptr<Session> self_;  // keeps the session while it relays
  Session* prev_ = nullptr;        // in thread_->relaying
  Session* next_ = nullptr;
  int client_fd_ = -1;  // the client's socket, taken from asio at the relay's start
  bool relaying_ = false;
  bool pumping_ = false;
  bool finished_ = false;
  bool attaching_ = false;  // waiting for a server connection (Queue, AttachLater)
  std::shared_ptr<Pool::Waiter> wait_;  // a Queue wait (in thread_->waiting)
  bool closing_ = false;    // closed once to_client is written (EndWithFatal)
  bool cleanup_sent_ = false;  // the ROLLBACK and reset of a client gone were sent
  bool client_parsed_ = false;  // cbuf holds only the start of a message
  size_t client_need_ = 0;      // ...one to be read whole, of this size
  // What the reactor reported and the last read or write left: *_in_ readable (until a read
  // comes back short), *_out_ writable, *_hup_ hung up or failed, *_blocked_ a write waits.
  bool client_in_ = false, client_out_ = false, client_hup_ = false, client_blocked_ = false;
  bool server_in_ = false, server_out_ = false, server_hup_ = false, server_blocked_ = false;
};

// ---------------------------------------------------------------------------------------------

PoolSettings Pooler::Impl::SettingsFor(const PoolerConfig& config, const std::string& database,
                                       const DatabaseOptions& db) const {
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
                                            const std::string& client_user) {
  std::shared_ptr<const PoolerConfig> config = this->config();
  const DatabaseOptions* db = FindDatabase(*config, database);
  if (db == nullptr) return nullptr;
  std::shared_ptr<const UserList> users = this->users();
  LoginCredentials login = LoginFor(*db, client_user, *users);
  absl::MutexLock lock(&pools_mu_);
  std::shared_ptr<Pool>& pool = pools_[{database, login.user}];
  if (pool == nullptr) {
    pool = std::make_shared<Pool>(SettingsFor(*config, database, *db), std::move(login));
  }
  return pool;
}

std::shared_ptr<Pool> Pooler::Impl::FindPool(const std::string& database,
                                             const std::string& client_user) {
  std::shared_ptr<const PoolerConfig> config = this->config();
  const DatabaseOptions* db = FindDatabase(*config, database);
  if (db == nullptr) return nullptr;
  const std::string& login_user = db->upstream.user.empty() ? client_user : db->upstream.user;
  absl::MutexLock lock(&pools_mu_);
  auto it = pools_.find({database, login_user});
  return it == pools_.end() ? nullptr : it->second;
}

void Pooler::Impl::Register(const std::shared_ptr<ClientInfo>& info) {
  absl::MutexLock lock(&clients_mu_);
  client_infos_[info->id] = info;
}

void Pooler::Impl::Unregister(uint64_t id) {
  absl::MutexLock lock(&clients_mu_);
  client_infos_.erase(id);
}

std::optional<Pooler::Impl::CancelTarget> Pooler::Impl::FindCancelTarget(int32_t pid,
                                                                        int32_t key) {
  absl::MutexLock lock(&clients_mu_);
  for (const auto& [id, info] : client_infos_) {
    if (info->cancel_pid != pid || info->cancel_key != key) continue;
    absl::MutexLock info_lock(&info->mu);
    if (!info->server.has_value()) return std::nullopt;
    return CancelTarget{.server = *info->server,
                        .socket_path = info->server_path != nullptr ? *info->server_path : "",
                        .pid = info->server_pid,
                        .key = info->server_key};
  }
  return std::nullopt;
}

std::vector<std::shared_ptr<Pool>> Pooler::Impl::PoolsOf(const std::string& database) {
  absl::MutexLock lock(&pools_mu_);
  std::vector<std::shared_ptr<Pool>> out;
  for (const auto& [key, pool] : pools_) {
    if (database.empty() || key.first == database) out.push_back(pool);
  }
  return out;
}

std::vector<PoolView> Pooler::Impl::Pools() {
  std::vector<std::pair<std::pair<std::string, std::string>, std::shared_ptr<Pool>>> pools;
  {
    absl::MutexLock lock(&pools_mu_);
    pools.assign(pools_.begin(), pools_.end());
  }
  std::vector<PoolView> out;
  for (const auto& [key, pool] : pools) {
    Pool::Counts counts = pool->counts();
    PoolStats& stats = pool->stats();
    out.push_back(PoolView{
        .database = key.first,
        .user = key.second,
        .mode = std::string(PoolModeName(pool->settings().mode)),
        .clients = pool->clients.load(),
        .counts = counts,
        .transactions = stats.transactions.load(),
        .queries = stats.queries.load(),
        .bytes_received = stats.bytes_received.load(),
        .bytes_sent = stats.bytes_sent.load(),
        .wait_us = stats.wait_us.load(),
        .waits = stats.waits.load(),
        .server_logins = stats.server_logins.load(),
        .server_login_failures = stats.server_login_failures.load(),
        .paused = pool->paused(),
        .servers = pool->ServerRows(),
    });
  }
  return out;
}

std::vector<ClientView> Pooler::Impl::Clients() {
  absl::MutexLock lock(&clients_mu_);
  std::vector<ClientView> out;
  for (const auto& [id, info] : client_infos_) {
    static constexpr const char* kStates[] = {"idle", "active", "waiting"};
    out.push_back(ClientView{.id = id,
                             .user = info->user,
                             .database = info->database,
                             .state = kStates[std::clamp(info->state.load(), 0, 2)],
                             .address = info->address,
                             .port = info->port,
                             .connected = info->connected});
  }
  std::sort(out.begin(), out.end(),
            [](const ClientView& a, const ClientView& b) { return a.id < b.id; });
  return out;
}

std::vector<std::pair<std::string, std::string>> Pooler::Impl::ConfigRows() {
  std::shared_ptr<const PoolerConfig> c = config();
  return {
      {"listen", c->listen},
      {"threads", std::to_string(threads_.size())},
      {"auth_method", c->auth.method == AuthMethod::kScram ? "scram-sha-256"
                      : c->auth.method == AuthMethod::kMd5 ? "md5"
                      : c->auth.method == AuthMethod::kCert ? "cert"
                                                            : "trust"},
      {"auth_users", c->auth.users},
      {"admin_listen", c->admin.listen},
      {"max_client_conn", std::to_string(c->max_client_conn)},
      {"hold_timeout", FormatDuration(c->hold_timeout)},
      {"query_wait_timeout", FormatDuration(c->query_wait_timeout)},
      {"client_login_timeout", FormatDuration(c->client_login_timeout)},
      {"server_connect_timeout", FormatDuration(c->server_connect_timeout)},
      {"server_idle_timeout", FormatDuration(c->server_idle_timeout)},
      {"server_lifetime", FormatDuration(c->server_lifetime)},
      {"server_reset_query", c->server_reset_query},
      {"max_message_size", FormatBytes(c->max_message_size)},
  };
}

std::vector<DatabaseView> Pooler::Impl::Databases() {
  std::shared_ptr<const PoolerConfig> c = config();
  std::vector<DatabaseView> out;
  for (const auto& [name, db] : c->databases) {
    int connections = 0;
    bool paused = false;
    for (const std::shared_ptr<Pool>& pool : PoolsOf(name)) {
      Pool::Counts counts = pool->counts();
      connections += counts.active + counts.idle + counts.connecting;
      paused = paused || pool->paused();
    }
    out.push_back(DatabaseView{
        .name = name,
        .host = db.upstream.HostList(),
        .port = db.upstream.port,
        .dbname = db.upstream.dbname.empty() ? name : db.upstream.dbname,
        .force_user = db.upstream.user,
        .pool_size = db.pool_size,
        .min_pool_size = db.min_pool_size,
        .reserve_pool = db.reserve_pool,
        .mode = std::string(PoolModeName(db.pool_mode)),
        .max_client_conn = db.max_client_conn,
        .current_connections = connections,
        .paused = paused,
    });
  }
  return out;
}

bool Pooler::Impl::HasDatabase(const std::string& database) {
  std::shared_ptr<const PoolerConfig> c = config();
  return FindDatabase(*c, database) != nullptr;
}

void Pooler::Impl::Pause(const std::string& database) {
  for (const std::shared_ptr<Pool>& pool : PoolsOf(database)) {
    pool->Pause();
    pool->Reconnect();  // idle connections close; busy ones when given back
  }
}

void Pooler::Impl::Resume(const std::string& database) {
  suspended_ = false;
  for (const std::shared_ptr<Pool>& pool : PoolsOf(database)) pool->Resume();
}

void Pooler::Impl::Reconnect(const std::string& database) {
  for (const std::shared_ptr<Pool>& pool : PoolsOf(database)) pool->Reconnect();
}

void Pooler::Impl::Kill(const std::string& database) {
  std::vector<std::shared_ptr<ClientInfo>> victims;
  {
    absl::MutexLock lock(&clients_mu_);
    for (const auto& [id, info] : client_infos_) {
      if (info->database == database) victims.push_back(info);
    }
  }
  for (const std::shared_ptr<ClientInfo>& info : victims) {
    asio::post(info->context->get_executor(), [weak = info->session] {
      if (std::shared_ptr<Session> session = weak.lock()) session->Kill();
    });
  }
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
    first_drain = draining_ == ShutdownMode::kNow;
    // (WAIT_FOR_SERVERS after WAIT_FOR_CLIENTS ends sooner: the later one holds.)
    draining_ = mode;
  }
  if (mode == ShutdownMode::kWaitForServers) {
    LogInfo("pooler: SHUTDOWN WAIT_FOR_SERVERS: new transactions wait, and the pooler stops "
            "once no server connection is in use");
    Pause("");
  } else {
    LogInfo("pooler: SHUTDOWN WAIT_FOR_CLIENTS: the pooler stops once its %d clients have left",
            clients.load());
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

// Every 100 ms once a SHUTDOWN waits (on the first thread): stops the pooler once what it
// waits for is done. Console sessions are not waited for: one is asking.
void Pooler::Impl::FinishDrain(NetThread*) {
  ShutdownMode mode;
  {
    absl::MutexLock lock(&stop_mu_);
    if (stopping_) return;
    mode = draining_;
  }
  if (mode == ShutdownMode::kWaitForClients) {
    absl::MutexLock lock(&clients_mu_);
    for (const auto& [id, info] : client_infos_) {
      if (info->database != "pgflow" && info->database != "pgbouncer") return;
    }
  } else {
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

// The users file `config` names, parsed; for SCRAM logins each plain password's secret derived
// now, once, rather than at every login. Empty without a file.
absl::StatusOr<std::shared_ptr<const UserList>> LoadUsers(const PoolerConfig& config) {
  auto users = std::make_shared<UserList>();
  if (config.auth.users.empty()) return users;
  absl::StatusOr<std::string> text = ReadConfigFile(config.auth.users);
  if (!text.ok()) return text.status();
  absl::StatusOr<UserList> parsed = ParseUserList(*text, config.auth.users);
  if (!parsed.ok()) return parsed.status();
  *users = *std::move(parsed);
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
  absl::StatusOr<PoolerConfig> config = LoadPoolerConfig(config_.file);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::shared_ptr<const UserList>> users = LoadUsers(*config);
  if (!users.ok()) return users.status();
  absl::StatusOr<std::shared_ptr<asio::ssl::context>> tls = LoadTls(*config);
  if (!tls.ok()) return tls.status();
  if (config->listen != config_.listen || config->threads != config_.threads ||
      config->unix_socket_dir != config_.unix_socket_dir ||
      config->scheduling != config_.scheduling) {
    LogWarning("pooler: listen, unix_socket_dir, threads and scheduling take effect at the next "
               "start");
  }
  PoolerConfig applied = *config;
  applied.listen = config_.listen;
  applied.unix_socket_dir = config_.unix_socket_dir;
  applied.threads = config_.threads;
  applied.scheduling = config_.scheduling;
  applied.file = config_.file;
  auto snapshot = std::make_shared<const PoolerConfig>(applied);
  {
    absl::MutexLock lock(&config_mu_);
    config_snapshot_ = snapshot;
    users_ = *users;
    client_tls_ = *tls;
    config_version_.fetch_add(1, std::memory_order_release);
  }
  absl::MutexLock lock(&pools_mu_);
  for (auto it = pools_.begin(); it != pools_.end(); ++it) {
    const DatabaseOptions* db = FindDatabase(*snapshot, it->first.first);
    if (db == nullptr) {
      it->second->Reconnect();  // removed: its connections close as they come back
      continue;
    }
    LoginCredentials login = LoginFor(*db, it->first.second, **users);
    it->second->Update(SettingsFor(*snapshot, it->first.first, *db), std::move(login));
  }
  LogInfo("pooler: configuration reloaded from %s (%d databases)", config_.file,
          snapshot->databases.size());
  return absl::OkStatus();
}

void Pooler::Impl::CollectMetrics() {
  std::vector<PoolView> pools = Pools();
  auto counter = [&](const std::string& name, const std::string& help, const MetricLabels& labels,
                     uint64_t value) {
    std::string key = name;
    for (const auto& [k, v] : labels) key += Cat("|", k, "=", v);
    uint64_t& last = exported_[key];
    Counter* c = metrics_->GetCounter(name, help, labels);
    if (value > last) c->Add(value - last);
    last = value;
  };
  int waiting_total = 0;
  for (const PoolView& p : pools) {
    MetricLabels labels = {{"database", p.database}, {"user", p.user}};
    auto with = [&](const char* state) {
      MetricLabels l = labels;
      l.emplace_back("state", state);
      return l;
    };
    metrics_->GetGauge("pgflow_pooler_clients", "Client connections by state.", with("active"))
        ->Set(p.clients - p.counts.waiting);
    metrics_->GetGauge("pgflow_pooler_clients", "Client connections by state.", with("waiting"))
        ->Set(p.counts.waiting);
    waiting_total += p.counts.waiting;
    metrics_->GetGauge("pgflow_pooler_servers", "Server connections by state.", with("active"))
        ->Set(p.counts.active);
    metrics_->GetGauge("pgflow_pooler_servers", "Server connections by state.", with("idle"))
        ->Set(p.counts.idle);
    metrics_->GetGauge("pgflow_pooler_servers", "Server connections by state.", with("login"))
        ->Set(p.counts.connecting);
    metrics_->GetGauge("pgflow_pooler_wait_max_seconds",
                       "The longest a waiting client has waited for a server connection.", labels)
        ->Set(p.counts.max_wait_s);
    counter("pgflow_pooler_transactions_total", "Transactions completed.", labels, p.transactions);
    counter("pgflow_pooler_queries_total", "Queries (ReadyForQuery answers) completed.", labels,
            p.queries);
    counter("pgflow_pooler_received_bytes_total", "Bytes received from clients.", labels,
            p.bytes_received);
    counter("pgflow_pooler_sent_bytes_total", "Bytes sent to clients.", labels, p.bytes_sent);
    counter("pgflow_pooler_wait_microseconds_total",
            "Time clients spent waiting for a server connection.", labels, p.wait_us);
    counter("pgflow_pooler_waits_total", "Times a client had to wait for a server connection.",
            labels, p.waits);
    counter("pgflow_pooler_server_logins_total", "Server connections opened.", labels,
            p.server_logins);
    counter("pgflow_pooler_server_login_failures_total",
            "Server connection attempts that failed (refused, unreachable, shutting down).",
            labels, p.server_login_failures);
  }
  metrics_->GetGauge("pgflow_pooler_client_connections", "Client connections, all databases.", {})
      ->Set(clients.load());
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  double cpu = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
               (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  metrics_->GetGauge("pgflow_pooler_cpu_seconds",
                     "CPU seconds the pooler process has used (user + system); divided by "
                     "pgflow_pooler_transactions_total: CPU per transaction.",
                     {})
      ->Set(cpu);
}

// Out of descriptors (EMFILE) and the like: a little wait rather than a spin.
static Task<void> PauseAfterFailedAccept(NetThread* thread) {
  Timer pause(thread->context.get_executor());
  pause.expires_after(std::chrono::milliseconds(100));
  boost::system::error_code ec;
  co_await pause.async_wait(asio::redirect_error(kUseTask, ec));
}

Task<void> Pooler::Impl::Accept(NetThread* thread) {
  while (true) {
    boost::system::error_code ec;
    Socket socket(thread->context.get_executor());
    co_await thread->acceptor->async_accept(socket, asio::redirect_error(kUseTask, ec));
    if (ec == asio::error::operation_aborted || !thread->acceptor->is_open()) co_return;
    if (ec) {
      LogWarning("pooler: accepting a client failed: %s", ec.message());
      co_await PauseAfterFailedAccept(thread);
      continue;
    }
    socket.non_blocking(true, ec);
    StartSession(thread, std::move(socket), /*local=*/false);
  }
}

void Pooler::Impl::StartSession(NetThread* thread, Socket socket, bool local) {
  auto* owner = new std::shared_ptr<Session>(
      std::make_shared<Session>(this, thread, std::move(socket), local));
  asio::co_spawn(thread->context, Session::Run(owner), asio::detached);
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
      return absl::FailedPreconditionError(Cat("pooler: cannot listen on ", path,
                                               ": cannot tell whether a server listens on it: ",
                                               strerror(answer)));
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
}

// Every 100 ms on each thread: the relay's waits for a server connection that reached the
// reserve pool's or query_wait_timeout's time go on through Pool::Acquire.
void Pooler::Impl::SweepWaits(NetThread* thread) { Session::SweepWaits(thread); }

absl::Status Pooler::Impl::Start(MetricsRegistry* metrics) {
  absl::StatusOr<std::shared_ptr<const UserList>> users = LoadUsers(config_);
  if (!users.ok()) return users.status();
  absl::StatusOr<std::shared_ptr<asio::ssl::context>> tls = LoadTls(config_);
  if (!tls.ok()) return tls.status();
  {
    absl::MutexLock lock(&config_mu_);
    config_snapshot_ = std::make_shared<const PoolerConfig>(config_);
    users_ = *std::move(users);
    client_tls_ = *std::move(tls);
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
    if (absl::Status s = thread->reactor.Open(); !s.ok()) return s;
    thread->acceptor.emplace(thread->context.get_executor());
    boost::system::error_code ec;
    tcp::endpoint at = *endpoint;
    if (i > 0) at.port(static_cast<unsigned short>(port_));
    thread->acceptor->open(at.protocol(), ec);
    if (!ec) thread->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) {
      int one = 1;
      if (setsockopt(thread->acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one,
                     sizeof one) != 0) {
        ec = boost::system::error_code(errno, boost::system::system_category());
      }
    }
    if (!ec) thread->acceptor->bind(at, ec);
    if (!ec) thread->acceptor->listen(asio::socket_base::max_listen_connections, ec);
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
  // The coroutines suspended on the contexts go with them (their frames are destroyed with the
  // handlers that hold them), sessions and server connections with them.
  for (auto& thread : threads_) {
    boost::system::error_code ec;
    if (thread->acceptor) thread->acceptor->close(ec);
    if (thread->local_acceptor) thread->local_acceptor->close(ec);
  }
  if (!local_path_.empty()) ::unlink(local_path_.c_str());
  threads_.clear();
  absl::MutexLock lock(&pools_mu_);
  pools_.clear();
}

Pooler::Pooler(PoolerConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Pooler::~Pooler() { Stop(); }
absl::Status Pooler::Start(MetricsRegistry* metrics) { return impl_->Start(metrics); }
absl::Status Pooler::Reload() { return impl_->Reload(); }
bool Pooler::WaitForShutdown(std::chrono::milliseconds timeout) {
  return impl_->WaitForShutdown(timeout);
}
void Pooler::Stop() { impl_->Stop(); }
int Pooler::port() const { return impl_->port(); }

}  // namespace pgflow::pooler
