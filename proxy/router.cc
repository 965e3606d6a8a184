#include "proxy/router.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <string>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "engine/log.h"
#include "engine/lsn.h"
#include "engine/str_cat.h"
#include "proxy/query_cache.h"

namespace pgflow::proxy {
namespace {

using Clock = std::chrono::steady_clock;
using pooler::kPrimaryNode;
using pooler::RouteChoice;
using pooler::RouteUnit;
using Kind = StatementClass::Kind;

// How long the primary's positions are remembered (a replica's lag in time is measured against
// them; a replica further behind is "lagging" by at least this).
constexpr auto kHistory = std::chrono::minutes(10);
// The catalog of functions is read again at most this often when a name is not found in it.
constexpr auto kCatalogEvery = std::chrono::seconds(5);

// PostgreSQL's functions that the catalog marks stable but that assign a transaction id,
// which a server in recovery refuses to do.
bool AssignsTransactionId(std::string_view name) {
  if (name.starts_with("pg_catalog.")) name.remove_prefix(11);
  return name == "txid_current" || name == "pg_current_xact_id";
}

class Routing : public pooler::ClientRouting {
 public:
  Routing(std::shared_ptr<ProxyRouter> router, uint64_t position) : router_(std::move(router)) {
    Committed(position);
  }
  ~Routing() override { Done(); }

  RouteChoice Choose(const RouteUnit& unit) override {
    Done();
    Settle();
    const uint64_t required = unknown_ || ticket_ != 0 ? pooler::kPositionUnknown : committed_;
    RouteChoice choice = router_->Choose(unit, &min_lsn_, required);
    current_ = choice.node;
    return choice;
  }
  RouteChoice Judge(const RouteUnit& unit) override { return router_->Judge(unit, &min_lsn_); }
  void Unavailable(int node) override {
    if (node == current_) Done();
    router_->Unavailable(node);
  }
  void Done() override {
    if (current_ != kPrimaryNode) router_->Finished(std::exchange(current_, kPrimaryNode));
  }
  void Wrote() override { ticket_ = router_->WantPosition(); }
  void Committed(uint64_t lsn) override {
    if (lsn == pooler::kPositionUnknown) {
      unknown_ = true;  // (until a later transaction's position is read)
      ticket_ = 0;      // (an earlier transaction's would not do)
      return;
    }
    committed_ = std::max(committed_, lsn);
    unknown_ = false;
  }
  uint64_t position() const override {
    uint64_t committed = committed_;
    bool unknown = unknown_;
    if (ticket_ != 0) {  // (as Settle takes it)
      const std::optional<uint64_t> read = router_->PositionRead(ticket_);
      if (!read.has_value()) return pooler::kPositionUnknown;
      committed = std::max(committed, *read);
      unknown = false;
    }
    return unknown ? pooler::kPositionUnknown : std::max(committed, min_lsn_);
  }
  bool awaiting_position() const override {
    return ticket_ != 0 && !router_->PositionRead(ticket_).has_value();
  }
  bool read_your_writes() const override { return router_->read_your_writes(); }

 private:
  std::shared_ptr<ProxyRouter> router_;
  int current_ = kPrimaryNode;  // the replica of the unit under way (counted in its in_flight)
  uint64_t min_lsn_ = 0;        // the client's SET pgflow.min_lsn (0: none)
  uint64_t committed_ = 0;      // the primary's position after the client's last transaction there
  bool unknown_ = false;        // the position of a later transaction could not be read
  uint64_t ticket_ = 0;         // the position after its last transaction, asked for (0: none)

  // The position asked for, once read, taken.
  void Settle() {
    if (ticket_ == 0) return;
    const std::optional<uint64_t> read = router_->PositionRead(ticket_);
    if (!read.has_value()) return;
    ticket_ = 0;
    Committed(*read);
  }
};

}  // namespace

absl::StatusOr<PgResultPtr> ExecWithin(PGconn* conn, const std::string& sql,
                                       std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  auto wait = [&](short events) -> absl::Status {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd fd{.fd = PQsocket(conn), .events = events, .revents = 0};
    if (left <= 0 || ::poll(&fd, 1, static_cast<int>(left)) == 0) {
      return absl::DeadlineExceededError(
          Cat("no answer from ", Describe(conn), " within ", timeout.count(), " ms"));
    }
    return absl::OkStatus();
  };
  if (PQsetnonblocking(conn, 1) != 0 || PQsendQuery(conn, sql.c_str()) == 0) {
    return ResultError(conn, nullptr, "sending a health check");
  }
  for (int flushed; (flushed = PQflush(conn)) != 0;) {
    if (flushed < 0) return ResultError(conn, nullptr, "sending a health check");
    if (absl::Status s = wait(POLLOUT); !s.ok()) return s;
  }
  PgResultPtr first;
  while (true) {
    while (PQisBusy(conn)) {
      if (absl::Status s = wait(POLLIN); !s.ok()) return s;
      if (PQconsumeInput(conn) == 0) return ResultError(conn, nullptr, "a health check");
    }
    PGresult* result = PQgetResult(conn);
    if (result == nullptr) break;
    if (first == nullptr) {
      first.reset(result);
    } else {
      PQclear(result);
    }
  }
  const ExecStatusType status = first ? PQresultStatus(first.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    return ResultError(conn, first.get(), "a health check");
  }
  return first;
}

std::shared_ptr<ProxyRouter> ProxyRouter::Start(std::string database,
                                                const pooler::DatabaseOptions& db,
                                                RouterOptions options) {
  std::shared_ptr<ProxyRouter> router(new ProxyRouter(std::move(database), db, options));
  // (The threads hold the router until they end: Stop need not wait for them.)
  router->thread_ = std::thread([self = router] { self->Run(); });
  router->position_thread_ = std::thread([self = router] { self->ReadPositions(); });
  if (!db.cache.tables.empty()) {
    router->cache_ = ProxyQueryCache::Start(router->database_, db, router.get());
  }
  return router;
}

ProxyRouter::ProxyRouter(std::string database, const pooler::DatabaseOptions& db,
                         RouterOptions options)
    : database_(std::move(database)),
      options_(options),
      max_lag_(db.max_replica_lag),
      read_your_writes_(db.read_your_writes) {
  for (const std::string& name : db.write_functions) write_functions_.insert(name);
  auto primary = std::make_unique<Node>();
  primary->url = db.url;
  primary->address = db.upstream.Where();
  nodes_.push_back(std::move(primary));
  for (size_t i = 0; i < db.replicas.size(); ++i) {
    auto replica = std::make_unique<Node>();
    replica->url = db.replicas[i];
    replica->address = i < db.replica_upstreams.size() ? db.replica_upstreams[i].Where() : "";
    nodes_.push_back(std::move(replica));
  }
  connections_.resize(nodes_.size());
}

ProxyRouter::~ProxyRouter() {
  // (A thread's end drops the last reference when Stop did not wait: on that thread, the
  // other one has ended or is ending.)
  const std::thread::id self = std::this_thread::get_id();
  Stop(thread_.get_id() != self && position_thread_.get_id() != self);
  for (std::thread* thread : {&thread_, &position_thread_}) {
    if (!thread->joinable()) continue;
    if (thread->get_id() == std::this_thread::get_id()) {
      thread->detach();
    } else {
      thread->join();
    }
  }
}

void ProxyRouter::Stop(bool wait) {
  if (cache_ != nullptr) cache_->Stop(wait);
  {
    absl::MutexLock lock(&stop_mu_);
    stopping_ = true;
  }
  if (!wait) return;
  for (std::thread* thread : {&thread_, &position_thread_}) {
    if (thread->joinable() && thread->get_id() != std::this_thread::get_id()) thread->join();
  }
}

uint64_t ProxyRouter::WantPosition() {
  absl::MutexLock lock(&stop_mu_);
  return ++tickets_;
}

std::optional<uint64_t> ProxyRouter::PositionRead(uint64_t ticket) const {
  if (served_.load(std::memory_order_acquire) < ticket) return std::nullopt;
  return served_position_.load(std::memory_order_acquire);
}

bool ProxyRouter::PositionWanted() const {
  return stopping_ || tickets_ > served_.load(std::memory_order_relaxed);
}

void ProxyRouter::ReadPositions() {
  PgConnPtr conn;
  Clock::time_point next = Clock::now();  // the next read, at the soonest
  while (true) {
    uint64_t ticket = 0;
    {
      absl::MutexLock lock(&stop_mu_);
      stop_mu_.Await(absl::Condition(this, &ProxyRouter::PositionWanted));
      // (The tickets given meanwhile wait for the same read.)
      const auto wait = std::max(next - Clock::now(), Clock::duration::zero());
      stop_mu_.AwaitWithTimeout(
          absl::Condition(&stopping_),
          absl::FromChrono(std::chrono::duration_cast<std::chrono::nanoseconds>(wait)));
      if (stopping_) return;
      ticket = tickets_;  // (every ticket given so far: their transactions have ended)
    }
    next = Clock::now() + options_.position_every;
    // (NULL from a server in recovery: a failover happened under the url.)
    absl::StatusOr<std::vector<std::string>> row =
        QueryNode(conn, 0,
                  "SELECT CASE WHEN pg_is_in_recovery() THEN NULL "
                  "ELSE pg_current_wal_insert_lsn() END");
    std::optional<Lsn> position;
    if (row.ok() && row->size() == 1) position = Lsn::Parse((*row)[0]);
    if (!position.has_value()) {
      // The tickets wait for a later read (their clients' reads go to the primary meanwhile),
      // not before a check's interval.
      LogDebug("proxy: database %s: reading the primary's position: %s", database_,
               row.ok() ? "it is in recovery" : row.status().message());
      next = Clock::now() + options_.interval;
      continue;
    }
    served_position_.store(position->value, std::memory_order_release);
    served_.store(ticket, std::memory_order_release);
  }
}

std::unique_ptr<pooler::ClientRouting> ProxyRouter::NewClient(uint64_t position) {
  return std::make_unique<Routing>(shared_from_this(), position);
}

std::shared_ptr<const StatementClass> ProxyRouter::Classify(std::string_view sql) {
  std::string key = LiteralFreeKey(sql);
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = statements_.find(key);
    if (it != statements_.end()) return it->second;
  }
  auto parsed = std::make_shared<const StatementClass>(ClassifySql(sql));
  absl::MutexLock lock(&mu_);
  if (statements_.size() >= options_.max_cached_statements) statements_.clear();
  statements_.emplace(std::move(key), parsed);
  return parsed;
}

char ProxyRouter::Volatility(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  if (volatility_ == nullptr) return 0;
  auto it = volatility_->find(name);
  return it == volatility_->end() ? 0 : it->second;
}

std::shared_ptr<pooler::QueryCache> ProxyRouter::cache() const { return cache_; }

bool ProxyRouter::CallsOnlyImmutable(const StatementClass& statement) {
  if (CallsWritingFunction(statement)) return false;  // (and unknown names asked for)
  return std::all_of(statement.functions.begin(), statement.functions.end(),
                     [&](const std::string& name) { return Volatility(name) == 'i'; });
}

bool ProxyRouter::CallsWritingFunction(const StatementClass& statement) {
  for (const std::string& name : statement.functions) {
    const size_t dot = name.rfind('.');
    if (write_functions_.contains(name) || AssignsTransactionId(name) ||
        (dot != std::string::npos && write_functions_.contains(name.substr(dot + 1)))) {
      return true;
    }
    const char volatility = Volatility(name);
    if (volatility == 0) {
      catalog_wanted_.store(true, std::memory_order_relaxed);  // (a function made since?)
      return true;
    }
    if (volatility == 'v') return true;
  }
  return false;
}

RouteChoice ProxyRouter::Choose(const RouteUnit& unit, uint64_t* min_lsn, uint64_t committed) {
  RouteChoice choice = Judge(unit, min_lsn);
  if (!choice.may_write && choice.refusal.empty()) {
    choice.node = PickReplica(std::max(*min_lsn, committed));
  }
  return choice;
}

RouteChoice ProxyRouter::Judge(const RouteUnit& unit, uint64_t* min_lsn) {
  RouteChoice write;  // the primary, may write
  if (!unit.whole) return write;
  for (std::string_view text : unit.statements) {
    std::shared_ptr<const StatementClass> statement = Classify(text);
    if (statement->min_lsn.has_value()) {
      // (The cached class is of another value: the text's own is read.)
      const StatementClass own = ClassifySql(text);
      const std::string value = own.min_lsn.value_or("");
      if (value.empty()) {
        *min_lsn = 0;
      } else if (std::optional<Lsn> lsn = Lsn::Parse(value)) {
        *min_lsn = lsn->value;
      } else {
        write.refusal = Cat("pgflow.min_lsn: '", value,
                            "' is not a WAL position (PostgreSQL's form: 16/B374D848)");
        return write;
      }
    }
    switch (statement->kind) {
      case Kind::kWrite:
      case Kind::kUnknown:
        return write;
      case Kind::kBegin:
        if (!unit.read_only_session) return write;
        break;  // (a read-only transaction runs whole where its first unit goes)
      case Kind::kBeginReadOnly:
      case Kind::kRead:
        break;
    }
    if (CallsWritingFunction(*statement)) return write;
  }
  RouteChoice read;
  read.may_write = false;
  return read;
}

int ProxyRouter::PickReplica(uint64_t required) {
  int best = kPrimaryNode;
  int best_load = 0;
  const size_t n = nodes_.size() - 1;
  if (n == 0) return kPrimaryNode;
  const size_t start = turn_.fetch_add(1, std::memory_order_relaxed);
  for (size_t k = 0; k < n; ++k) {
    const int i = static_cast<int>(1 + (start + k) % n);
    Node& node = *nodes_[i];
    if (!node.healthy.load(std::memory_order_acquire) ||
        node.suspect.load(std::memory_order_acquire)) {
      continue;
    }
    if (required != 0 && node.position.load(std::memory_order_acquire) < required) continue;
    const int load = node.in_flight.load(std::memory_order_relaxed);
    if (best == kPrimaryNode || load < best_load) {
      best = i;
      best_load = load;
    }
  }
  if (best != kPrimaryNode) nodes_[best]->in_flight.fetch_add(1, std::memory_order_relaxed);
  nodes_[best]->reads.fetch_add(1, std::memory_order_relaxed);
  return best;
}

void ProxyRouter::Finished(int node) {
  if (node <= 0 || static_cast<size_t>(node) >= nodes_.size()) return;
  nodes_[node]->in_flight.fetch_sub(1, std::memory_order_relaxed);
}

void ProxyRouter::Unavailable(int node) {
  if (node <= 0 || static_cast<size_t>(node) >= nodes_.size()) return;
  nodes_[node]->suspect.store(true, std::memory_order_release);
}

std::vector<pooler::Router::NodeView> ProxyRouter::Nodes() const {
  std::vector<NodeView> out;
  absl::ReaderMutexLock lock(&mu_);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& node = *nodes_[i];
    out.push_back(NodeView{
        .node = static_cast<int>(i),
        .role = i == 0 ? "primary" : "replica",
        .address = node.address,
        .state = node.suspect.load() && node.state == "healthy" ? "suspect" : node.state,
        .position = node.position.load(),
        .lag_bytes = node.lag_bytes,
        .lag_seconds = node.lag_seconds,
        .reads = node.reads.load(),
    });
  }
  return out;
}

void ProxyRouter::Run() {
  absl::Cleanup done = [this] { connections_.clear(); };
  while (true) {
    const Clock::time_point next = Clock::now() + options_.interval;
    CheckAll();
    absl::MutexLock lock(&stop_mu_);
    const auto wait = std::max(next - Clock::now(), Clock::duration::zero());
    stop_mu_.AwaitWithTimeout(
        absl::Condition(&stopping_),
        absl::FromChrono(std::chrono::duration_cast<std::chrono::nanoseconds>(wait)));
    if (stopping_) break;
  }
}

absl::StatusOr<std::vector<std::string>> ProxyRouter::CheckQuery(size_t i, const std::string& sql) {
  return QueryNode(connections_[i], i, sql);
}

absl::StatusOr<std::vector<std::string>> ProxyRouter::QueryNode(PgConnPtr& conn, size_t i,
                                                                const std::string& sql) {
  if (conn == nullptr || PQstatus(conn.get()) != CONNECTION_OK) {
    const std::string timeout_s =
        std::to_string(std::max<int64_t>(2, (options_.timeout.count() + 999) / 1000));
    const std::string timeout_ms = std::to_string(options_.timeout.count());
    const std::string options = Cat("-c statement_timeout=", options_.timeout.count());
    const char* keys[] = {"dbname",           "connect_timeout", "tcp_user_timeout",
                          "application_name", "options",         nullptr};
    const char* values[] = {nodes_[i]->url.c_str(), timeout_s.c_str(), timeout_ms.c_str(),
                            "pgflow proxy health",  options.c_str(),   nullptr};
    conn.reset(PQconnectdbParams(keys, values, /*expand_dbname=*/1));
    if (conn == nullptr || PQstatus(conn.get()) != CONNECTION_OK) {
      std::string message = conn != nullptr ? PQerrorMessage(conn.get()) : "out of memory";
      conn.reset();
      while (!message.empty() && message.back() == '\n') message.pop_back();
      return absl::UnavailableError(message);
    }
  }
  absl::StatusOr<PgResultPtr> result = ExecWithin(conn.get(), sql, options_.timeout);
  if (!result.ok()) {
    conn.reset();
    return result.status();
  }
  std::vector<std::string> row;
  if (PQntuples(result->get()) > 0) {
    for (int c = 0; c < PQnfields(result->get()); ++c) {
      row.emplace_back(PQgetisnull(result->get(), 0, c) ? "" : PQgetvalue(result->get(), 0, c));
    }
  }
  return row;
}

void ProxyRouter::ReadCatalog() {
  PgConnPtr& conn = connections_[0];
  if (conn == nullptr) return;
  // The most volatile of a name's overloads, by schema and alone (an unqualified call may
  // reach any schema on the search path).
  absl::StatusOr<PgResultPtr> result =
      ExecWithin(conn.get(),
                 "SELECT n.nspname, p.proname, max(p.provolatile::text) FROM pg_proc p "
                 "JOIN pg_namespace n ON n.oid = p.pronamespace GROUP BY 1, 2",
                 4 * options_.timeout);
  if (!result.ok()) conn.reset();
  if (!result.ok()) {
    LogWarning("proxy: database %s: reading the primary's functions: %s", database_,
               result.status().message());
    return;
  }
  auto catalog = std::make_shared<absl::flat_hash_map<std::string, char>>();
  for (int r = 0; r < PQntuples(result->get()); ++r) {
    const std::string schema = PQgetvalue(result->get(), r, 0);
    const std::string name = PQgetvalue(result->get(), r, 1);
    const char volatility = PQgetvalue(result->get(), r, 2)[0];
    (*catalog)[schema + "." + name] = volatility;
    char& any = (*catalog)[name];
    any = std::max(any, volatility);  // ('i' < 's' < 'v')
  }
  absl::MutexLock lock(&mu_);
  volatility_ = std::move(catalog);
  catalog_read_at_ = Clock::now();
  catalog_wanted_.store(false, std::memory_order_relaxed);
}

void ProxyRouter::CheckAll() {
  const Clock::time_point now = Clock::now();
  // The primary: its position (and whether it is one).
  absl::StatusOr<std::vector<std::string>> primary =
      CheckQuery(0,
                 "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN NULL "
                 "ELSE pg_current_wal_lsn() END");
  uint64_t primary_position = 0;
  {
    Node& node = *nodes_[0];
    std::string state = "down";
    if (primary.ok() && primary->size() == 2) {
      state = (*primary)[0] == "t" ? "in recovery" : "healthy";
      if (std::optional<Lsn> lsn = Lsn::Parse((*primary)[1])) primary_position = lsn->value;
    } else if (!primary.ok()) {
      LogDebug("proxy: database %s: primary %s: %s", database_, node.address,
               primary.status().message());
    }
    node.healthy.store(state == "healthy", std::memory_order_release);
    absl::MutexLock lock(&mu_);
    if (state != node.state) {
      LogInfo("proxy: database %s: primary %s is %s", database_, node.address, state);
    }
    node.state = state;
    if (primary_position != 0) {
      node.position.store(primary_position, std::memory_order_release);
      history_.emplace_back(now, primary_position);
      while (!history_.empty() && now - history_.front().first > kHistory) {
        history_.erase(history_.begin());
      }
    }
  }
  bool want_catalog = false;
  {
    absl::ReaderMutexLock lock(&mu_);
    want_catalog = volatility_ == nullptr || (catalog_wanted_.load(std::memory_order_relaxed) &&
                                              now - catalog_read_at_ >= kCatalogEvery);
  }
  if (primary.ok() && want_catalog) ReadCatalog();

  for (size_t i = 1; i < nodes_.size(); ++i) {
    Node& node = *nodes_[i];
    absl::StatusOr<std::vector<std::string>> replica =
        CheckQuery(i, "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()");
    std::string state = "down";
    uint64_t replay = 0;
    if (replica.ok() && replica->size() == 2) {
      if ((*replica)[0] != "t") {
        state = "promoted";  // (no longer a replica of this primary: it takes no reads)
      } else if (std::optional<Lsn> lsn = Lsn::Parse((*replica)[1])) {
        replay = lsn->value;
        state = "healthy";
      } else {
        state = "not replaying";
      }
    } else if (!replica.ok()) {
      LogDebug("proxy: database %s: replica %s: %s", database_, node.address,
               replica.status().message());
    }
    absl::MutexLock lock(&mu_);
    uint64_t lag_bytes = 0;
    double lag_seconds = 0;
    if (state == "healthy" && !history_.empty()) {
      const uint64_t last = history_.back().second;
      lag_bytes = last > replay ? last - replay : 0;
      for (const auto& [seen, position] : history_) {
        if (position > replay) {
          lag_seconds = std::chrono::duration<double>(now - seen).count();
          break;
        }
      }
      const bool too_far = (max_lag_.bytes != 0 && lag_bytes > max_lag_.bytes) ||
                           (max_lag_.time.count() != 0 &&
                            lag_seconds * 1000 > static_cast<double>(max_lag_.time.count()));
      if (too_far) state = "lagging";
    }
    if (state != node.state) {
      LogInfo("proxy: database %s: replica %s is %s%s", database_, node.address, state,
              state == "lagging" ? Cat(" (", lag_bytes, " bytes, ", lag_seconds, " s behind)")
                                 : std::string());
    }
    node.state = state;
    node.lag_bytes = lag_bytes;
    node.lag_seconds = lag_seconds;
    if (replay != 0) node.position.store(replay, std::memory_order_release);
    node.healthy.store(state == "healthy", std::memory_order_release);
    if (state == "healthy") node.suspect.store(false, std::memory_order_release);
  }
}

absl::StatusOr<std::shared_ptr<pooler::Router>> ProxyRouterFactory::Make(
    const std::string& database, const pooler::DatabaseOptions& db) {
  if (db.upstream.user.empty()) {
    return absl::InvalidArgumentError(
        "its url names no user: the routing proxy's health checks log in to the primary and "
        "the replicas with the url's user (and password, or ~/.pgpass)");
  }
  return std::shared_ptr<pooler::Router>(ProxyRouter::Start(database, db, options_));
}

}  // namespace pgflow::proxy
