#pragma once

// The routing proxy of one database (pooler/router.h's Router): reads to healthy replicas,
// everything else to the primary, a client's reads after its writes only where they are
// replayed.
//
// Where a unit goes (ClientRouting::Choose): each statement is read by PostgreSQL's parser
// (proxy/statement_class.h; its class cached under its text without literal values). A unit
// that only reads, calls no volatile function (pg_proc.provolatile, looked up from the
// primary's catalog and refreshed when a name is not found; write_functions adds to them) and
// is whole goes to a healthy replica: the fewest units in flight first. A read-only
// transaction (BEGIN READ ONLY, or a plain BEGIN in a default_transaction_read_only session)
// goes to one whole. Everything else goes to the primary.
//
// Health (a thread of its own, one connection per node, every `interval`): a replica is
// healthy while it answers, is in recovery, and is within max_replica_lag of the primary's
// last position; a replica a client could not get a connection from is left out until the
// next check finds it healthy. While the primary does not answer, replicas keep taking reads,
// judged against its last known position.
//
// Read-your-writes: a client's required position is the highest of the primary's positions
// read after its transactions there and the one it gave with SET pgflow.min_lsn; its reads go
// to a replica whose replay position, as last checked, is at or past it, else to the primary.
// The primary's position after a client's transaction is read by a thread of its own, on a
// connection of its own, once for every client whose transaction ended before the read was
// sent (a ticket each: WantPosition, PositionRead), one read at a time and at most one each
// position_every: its cost does not follow the rate of writes. Until it comes, the client's
// reads go to the primary.
//
// A database entry with `cache` has its query cache (proxy/query_cache.h), which the router
// starts and stops with its checks.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/postgres/pg_connection.h"
#include "pooler/pooler_config.h"
#include "pooler/router.h"
#include "proxy/statement_class.h"

namespace pgflow::proxy {

class ProxyQueryCache;

// `sql` on `conn` without blocking past `timeout` (a server that stopped answering, its kernel
// still acknowledging, would hold a blocking call forever): its first result, checked as Exec
// checks it. An error leaves the connection to be closed.
absl::StatusOr<PgResultPtr> ExecWithin(PGconn* conn, const std::string& sql,
                                       std::chrono::milliseconds timeout);

struct RouterOptions {
  // Between checks: a replica's replay position, and so how soon a client's reads after its
  // writes may go to it again, is as fresh as the last.
  std::chrono::milliseconds interval{200};
  std::chrono::milliseconds timeout{2000};   // a check's connection and query at most
  // Between two reads of the primary's position for read-your-writes, at least: under any
  // rate of writes, at most one read this often (a replica's replay, checked every
  // `interval`, is what lets a writer's reads leave the primary; this adds little to it).
  std::chrono::milliseconds position_every{20};
  size_t max_cached_statements = 10000;      // classes kept by text (then started over)
};

class ProxyRouter : public pooler::Router, public std::enable_shared_from_this<ProxyRouter> {
 public:
  // Starts the health checks of `db`'s primary and replicas (no connection is waited for: a
  // node is "unknown", taking no reads, until its first check).
  static std::shared_ptr<ProxyRouter> Start(std::string database, const pooler::DatabaseOptions& db,
                                            RouterOptions options = {});
  ~ProxyRouter() override;  // (after the checks ended: they hold the router)

  std::unique_ptr<pooler::ClientRouting> NewClient(uint64_t position) override;
  void Stop(bool wait) override;
  std::vector<NodeView> Nodes() const override;

  // Where a unit goes, for a client whose reads must see `committed` (its last transaction on
  // the primary) and *min_lsn (its SET pgflow.min_lsn; a unit that sets it changes it).
  pooler::RouteChoice Choose(const pooler::RouteUnit& unit, uint64_t* min_lsn, uint64_t committed);
  // What `unit` does (a write, a read, refused), without placing it.
  pooler::RouteChoice Judge(const pooler::RouteUnit& unit, uint64_t* min_lsn);
  // Read-your-writes: a ticket for a position of the primary read after now, and the position
  // read for it (nullopt while none has been: a read that fails, or finds the server in
  // recovery, is tried again).
  uint64_t WantPosition();
  std::optional<uint64_t> PositionRead(uint64_t ticket) const;
  // A client's unit on `node` ended or never started (Unavailable: the node is left out).
  void Finished(int node);
  void Unavailable(int node);
  bool read_your_writes() const { return read_your_writes_; }

  // The class of `sql`, from the cache or the parser.
  std::shared_ptr<const StatementClass> Classify(std::string_view sql);
  // Whether every function `statement` calls is immutable (the query cache's rule).
  bool CallsOnlyImmutable(const StatementClass& statement);
  std::shared_ptr<pooler::QueryCache> cache() const override;

 private:
  struct Node {
    std::string url;
    std::string address;  // host:port, for views and logs
    // Written by the checks, read by the network threads.
    std::atomic<bool> healthy{false};
    std::atomic<bool> suspect{false};   // a client got no connection: out until checked again
    std::atomic<uint64_t> position{0};  // replay position (replicas), WAL position (primary)
    std::atomic<int> in_flight{0};
    std::atomic<uint64_t> reads{0};
    // The checks' own (guarded for views).
    std::string state = "unknown";
    uint64_t lag_bytes = 0;
    double lag_seconds = 0;
  };

  ProxyRouter(std::string database, const pooler::DatabaseOptions& db, RouterOptions options);
  void Run();
  // The reads of the primary's position for tickets (its own thread).
  void ReadPositions();
  bool PositionWanted() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(stop_mu_);
  // One round of checks: the primary's position (and its catalog of functions when wanted),
  // then each replica's.
  void CheckAll();
  // `sql` on node `i`'s check connection (opened when it has none), within the timeout: its
  // first row's text values; an error closes the connection.
  absl::StatusOr<std::vector<std::string>> CheckQuery(size_t i, const std::string& sql);
  // The same on `conn`, a connection to node `i`.
  absl::StatusOr<std::vector<std::string>> QueryNode(PgConnPtr& conn, size_t i,
                                                     const std::string& sql);
  void ReadCatalog();
  // The volatility of function `name` ('i', 's', 'v'), or 0 when the catalog does not know it.
  char Volatility(const std::string& name) const;
  bool CallsWritingFunction(const StatementClass& statement);
  // The replica for a read, at or past `required`; kPrimaryNode when none is.
  int PickReplica(uint64_t required);

  const std::string database_;
  const RouterOptions options_;
  const pooler::ReplicaLag max_lag_;
  const bool read_your_writes_;
  absl::flat_hash_set<std::string> write_functions_;
  std::vector<std::unique_ptr<Node>> nodes_;  // [0]: the primary
  std::atomic<uint64_t> turn_{0};             // ties between replicas go round

  mutable absl::Mutex mu_;  // the checks' state, the catalog and the statement cache
  // The primary's positions over the last while, oldest first: (when seen, position), for a
  // replica's lag in time.
  std::vector<std::pair<std::chrono::steady_clock::time_point, uint64_t>> history_
      ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const absl::flat_hash_map<std::string, char>> volatility_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> catalog_wanted_{true};  // a name not found: the checks read it again
  std::chrono::steady_clock::time_point catalog_read_at_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<const StatementClass>> statements_
      ABSL_GUARDED_BY(mu_);

  std::shared_ptr<ProxyQueryCache> cache_;  // the entry's cache, if any

  std::vector<PgConnPtr> connections_;  // the checks' own, by node (the check thread's)

  absl::Mutex stop_mu_;  // stopping_ and the tickets' wake-ups
  bool stopping_ ABSL_GUARDED_BY(stop_mu_) = false;
  uint64_t tickets_ ABSL_GUARDED_BY(stop_mu_) = 0;  // the last ticket given
  // The last ticket a read of the primary's position was for, and what it read (the position
  // is stored first: a client that sees its ticket served reads that read's or a later one's).
  std::atomic<uint64_t> served_{0};
  std::atomic<uint64_t> served_position_{0};
  std::thread thread_;           // the health checks
  std::thread position_thread_;  // ReadPositions
};

// The pooler's RouterFactory: a ProxyRouter per database that lists replicas.
class ProxyRouterFactory : public pooler::RouterFactory {
 public:
  explicit ProxyRouterFactory(RouterOptions options = {}) : options_(options) {}
  absl::StatusOr<std::shared_ptr<pooler::Router>> Make(const std::string& database,
                                                       const pooler::DatabaseOptions& db) override;

 private:
  RouterOptions options_;
};

}  // namespace pgflow::proxy
