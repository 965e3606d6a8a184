#pragma once

// The seam a routing proxy plugs into (proxy/ implements it): where each transaction of a
// client runs, the primary or one of its database's replicas.
//
// The relay (pooler/relay_protocol.h) asks at the first message of each unit of work a client
// sends while it holds no server connection (a simple query, or the extended-protocol messages
// up to their Sync), before anything of it is relayed, handing over the unit's statement texts
// as they came; it then takes a connection from the pool of the node chosen. A unit placed on a
// replica runs there whole, and the client's next unit is placed again once the replica has
// answered (a read-only transaction stays on its replica to its end). When a unit placed on the
// primary that may write ends its transaction, the client's routing is told (Wrote): its reads
// then go only where a position of the primary's WAL read after that end has been replayed
// (read-your-writes by LSN: the position the primary reports, not a clock).
//
// A database entry without replicas or a cache gets no router: the relay then does none of
// this. (With a cache and no replicas, every unit is placed on the primary.)
//
// Thread-safety: a Router is shared by the network threads (its methods are safe to call at
// once); a ClientRouting belongs to one client, used on its thread only.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "pooler/pooler_config.h"

namespace pgflow::pooler {

// Node 0 is the database's primary (its url); node i ≥ 1 its replica i (replicas[i - 1]).
inline constexpr int kPrimaryNode = 0;
inline constexpr uint64_t kPositionUnknown = ~uint64_t{0};

struct RouteChoice {
  int node = kPrimaryNode;
  // The unit may write: on the primary, the routing is told when its transaction ends
  // (ClientRouting::Wrote: read-your-writes).
  bool may_write = true;
  // Nonempty: the unit is refused with this message (SQLSTATE 22023) without running, e.g. a
  // SET pgflow.min_lsn whose value is no position.
  std::string refusal;
};

// What the relay knows of a unit when it asks.
struct RouteUnit {
  // The texts of its statements, in order (a simple query's whole text, or each Parse's, or
  // the text a Bind's named statement was prepared with).
  std::vector<std::string_view> statements;
  // Whether the whole unit was seen (its Sync, or the simple query whole). A unit seen in
  // part, or holding what cannot be judged (a Bind of a statement prepared elsewhere, a
  // FunctionCall, COPY data), goes to the primary.
  bool whole = true;
  // The client's default_transaction_read_only is on: a plain BEGIN begins a read-only
  // transaction, which a replica can run.
  bool read_only_session = false;
};

class ClientRouting {
 public:
  virtual ~ClientRouting() = default;
  // Where `unit` runs.
  virtual RouteChoice Choose(const RouteUnit& unit) = 0;
  // What `unit` does, without placing it (the node is the primary's): for a unit the primary
  // runs anyway.
  virtual RouteChoice Judge(const RouteUnit& unit) = 0;
  // No server connection could be had from `node` (down, refusing): it takes no reads until
  // it is seen healthy again. The relay then asks again.
  virtual void Unavailable(int node) = 0;
  // What the last Choose placed is over: its server connection went back (or was lost).
  virtual void Done() = 0;
  // A transaction of the client that may have written ended on the primary (its commit, or
  // its rollback, was answered): its later reads go only where a position of the primary read
  // after now has been replayed, and to the primary until one has been read.
  virtual void Wrote() = 0;
  // The client's reads must see `lsn` (a position of the primary's WAL): a RELOAD's new
  // routing takes its predecessor's. kPositionUnknown: whether and when a transaction
  // committed is not known (its connection was lost in it): its reads go to the primary until
  // the position after a later transaction of its is read.
  virtual void Committed(uint64_t lsn) = 0;
  // The highest position the client's reads must see (its own and the one it gave), which a
  // new ClientRouting takes over (Router::NewClient) when a RELOAD changes the router;
  // kPositionUnknown while the position after its last transaction has not been read.
  virtual uint64_t position() const = 0;
  // Whether the position after a transaction of its (Wrote) has been asked for and not read
  // yet: a new ClientRouting is then told Wrote too, and its router reads one.
  virtual bool awaiting_position() const = 0;
  // Whether Wrote is wanted (the database's read_your_writes).
  virtual bool read_your_writes() const = 0;
};

// The query cache of a routed database (proxy/query_cache.h), as the relay sees it: answers
// to autocommit queries (simple, or an extended-protocol unit binding a statement) that only
// read listed tables, kept exact by the primary's change stream.
//
// A client's cacheable query (Look) is answered from the cache only after the stream has gone
// past every transaction committed on the primary before the query came (a fence: the cache
// writes a message into the primary's WAL after the query's arrival and waits to read it back
// from the stream, one fence at a time for all clients waiting): Wait, then Answer. A query
// the cache cannot answer runs on the primary, and its answer is offered back (Store), kept
// only when no change of its tables came since Look.
//
// Thread-safety: shared by the network threads; every method may be called at once.
class QueryCache {
 public:
  virtual ~QueryCache() = default;
  // What Look found for a query.
  struct Probe {
    bool cacheable = false;  // a read of listed tables only, with immutable functions only
    bool present = false;    // an answer is held (Wait, then Answer)
    std::string key;         // the user, the client's settings and the unit
    // Its tables (the cache's numbers) and their generations when looked up: Store keeps an
    // answer only if none changed since.
    std::vector<std::pair<uint32_t, uint64_t>> tables;
    uint64_t fence = 0;  // the fence that must end before an answer is served
    // It names a table without its schema: served and kept only while such names surely mean
    // public's (the cache's fences check), as of `epoch`.
    bool unqualified = false;
    uint64_t epoch = 0;
  };
  // `settings`: what of the client's settings changes a query's answer or meaning (its
  // search_path, DateStyle, ...), as one string; `text`: the statement's; `unit`: what
  // identifies the answer beside them (the text, parameter values and formats, the messages
  // sent: RelayProtocol::CacheableUnit::key).
  virtual Probe Look(std::string_view user, std::string_view settings, std::string_view text,
                     std::string_view unit) = 0;
  // Calls `ready` (on the cache's thread, once) when probe.fence has ended; false, calling
  // nothing, when it has already (or the cache cannot fence: Answer then finds nothing).
  virtual bool Wait(const Probe& probe, std::function<void()> ready) = 0;
  // The answer held (RowDescription, DataRows, CommandComplete of each statement, without the
  // ReadyForQuery), if still valid for a client whose reads must see `position`; null else.
  virtual std::shared_ptr<const std::string> Answer(const Probe& probe, uint64_t position) = 0;
  // The primary's answer to a probed query, kept when nothing of its tables changed since.
  virtual void Store(const Probe& probe, std::string answer) = 0;
  // Largest answer kept (a bigger one is not gathered).
  virtual size_t max_answer() const = 0;

  // SHOW CACHE and /metrics.
  struct View {
    bool ready = false;  // its change stream runs and its last fence ended
    uint64_t hits = 0, misses = 0;
    uint64_t stores = 0, stale_stores = 0;  // answers kept; refused (a change came meanwhile)
    uint64_t invalidations = 0;             // answers dropped by changes
    uint64_t evictions = 0;                 // dropped for max_memory or ttl
    uint64_t entries = 0, bytes = 0, max_memory = 0;
    uint64_t fences = 0;
    uint64_t position = 0;  // the change stream's
  };
  virtual View Stats() const = 0;
};

class Router {
 public:
  virtual ~Router() = default;
  // The database's query cache, when its entry has one.
  virtual std::shared_ptr<QueryCache> cache() const { return nullptr; }
  // A client's routing; `position`: what its reads must see already (ClientRouting::position
  // of the routing it replaces, 0 for a new client).
  virtual std::unique_ptr<ClientRouting> NewClient(uint64_t position) = 0;
  // Stops its health checks (`wait`: returns once they have; else at once, from a network
  // thread). Routing goes on with what they last saw.
  virtual void Stop(bool wait) = 0;
  // One row per node for SHOW REPLICAS and /metrics.
  struct NodeView {
    int node = 0;
    std::string role;        // primary, replica
    std::string address;     // host:port
    std::string state;       // healthy, lagging, down, promoted, unknown
    uint64_t position = 0;   // the primary's WAL position, or the replica's replay position
    uint64_t lag_bytes = 0;  // behind the primary (replicas)
    double lag_seconds = 0;  // how long it has been behind (replicas)
    uint64_t reads = 0;      // units placed on it
  };
  virtual std::vector<NodeView> Nodes() const = 0;
};

// Makes the router of a database whose entry lists replicas (the routing proxy's; the pooler
// knows it only through this). Called at start and at each RELOAD that changes the entry.
class RouterFactory {
 public:
  virtual ~RouterFactory() = default;
  virtual absl::StatusOr<std::shared_ptr<Router>> Make(const std::string& database,
                                                       const DatabaseOptions& db) = 0;
};

}  // namespace pgflow::pooler
