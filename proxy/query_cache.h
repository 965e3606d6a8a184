#pragma once

// The routing proxy's query cache (pooler/router.h's QueryCache): answers to autocommit
// queries (simple ones, and extended-protocol units that bind a statement: the same text,
// parameter values and formats) that only read the listed tables, kept exact by the primary's
// own change stream.
//
// Invalidation: a thread runs pgflow's PostgreSQL source (sources/postgres, through its public
// interface) on a slot and publication of the cache's own, pgflow_cache_<database>, over the
// listed tables, without a copy. Each change, TRUNCATE or DDL of a listed table drops that
// table's answers and moves its generation on, whoever made it (a client of the pooler, another
// program, a trigger, a job); DDL of anything but a table or an index (a function, a policy,
// a type, ...) drops every answer. An answer is never stored when a change of its tables came
// between the query's lookup and its answer.
//
// Fences: a change reaches the stream only after its commit, so before an answer is served
// the cache makes sure the stream has gone past every transaction committed on the primary
// when the query came. A thread of its own runs, one at a time and for every query waiting,
//   SELECT pg_current_snapshot(), pg_logical_emit_message(true, 'pgflow.cache.fence', n)
// on the primary, and the fence ends when the stream brings that message back: every commit
// before it has been read by then, in WAL order. Queries that came before the fence began are
// served when it ends (a query waits one fence or two: a round trip to the primary and the
// stream's delay, instead of running the query).
//
// A commit record is in the WAL (and may be in the stream) a moment before the transaction is
// visible to new snapshots. A table whose last change's transaction a fence's snapshot does not
// show as visible yet is "unsettled": its answers are not stored until a later fence's does
// (otherwise an answer computed in that moment, without the change, would outlive its
// invalidation).
//
// Also not cached: tables with row-level security, names the cache cannot resolve for sure
// (an unqualified name while the client set search_path, or while some schema is named after
// a role, or a role or database sets search_path), volatile and stable functions, answers
// holding anything but rows (notices, errors, COPY), and answers larger than max_memory / 16.
// While the stream or the fences fail, the cache is empty and answers nothing.
//
// Thread-safety: shared by the network threads and its two threads; one mutex.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "engine/stop_signal.h"
#include "pooler/pooler_config.h"
#include "pooler/router.h"
#include "proxy/statement_class.h"

namespace pgflow::proxy {

class ProxyRouter;

class ProxyQueryCache : public pooler::QueryCache,
                        public std::enable_shared_from_this<ProxyQueryCache> {
 public:
  // Starts the stream and the fences for `database` (its entry's cache and url); `router`
  // classifies statements and knows functions' volatility, and outlives every call.
  static std::shared_ptr<ProxyQueryCache> Start(std::string database,
                                                const pooler::DatabaseOptions& db,
                                                ProxyRouter* router);
  ~ProxyQueryCache() override;
  // Ends both threads (`wait`: returns once they have) and drops the slot.
  void Stop(bool wait);

  Probe Look(std::string_view user, std::string_view settings, std::string_view text,
             std::string_view unit) override;
  bool Wait(const Probe& probe, std::function<void()> ready) override;
  std::shared_ptr<const std::string> Answer(const Probe& probe, uint64_t position) override;
  void Store(const Probe& probe, std::string answer) override;
  // (Each client gathering an answer holds up to this much.)
  size_t max_answer() const override { return std::min<size_t>(max_memory_ / 16, 1 << 20); }

  View Stats() const override;

 private:
  struct Entry;
  struct Table {
    std::string name;  // schema.table
    uint64_t generation = 0;
    // Not cached: it has row-level security or inheritance children (whose changes the stream
    // names by the child), or the primary lacks pgflow's DDL triggers (the fences check).
    bool excluded = false;
    // The transactions of its changes that no fence's snapshot has shown visible yet (commit
    // order in the WAL is not the order in which transactions become visible), up to
    // kUnsettledXids; past it, only the newest, settled once older than a snapshot's xmin.
    // settle_fence: the fence that must have begun after the last of them was read.
    std::vector<uint32_t> unsettled;
    bool overflowed = false;  // unsettled holds the newest xid only
    uint64_t settle_fence = 0;
    bool settled() const { return unsettled.empty(); }
    absl::flat_hash_set<Entry*> entries;
  };
  struct Waiter {
    uint64_t fence;
    std::function<void()> ready;
  };
  class Emitter;

  ProxyQueryCache(std::string database, const pooler::DatabaseOptions& db, ProxyRouter* router);
  void RunStream();
  void RunFences();
  // The stream's events (Emitter): changes (`all`: of anything a cached answer may depend
  // on), fences read back, positions.
  void OnChange(const std::string& table, uint32_t xid, bool all);
  void OnFence(std::string_view content);
  void OnPosition(uint64_t position);
  // Ends fence `seq` (the fence thread's, once the stream brought it back): settles the tables
  // its snapshot shows, wakes the queries waiting for it.
  void EndFence(uint64_t seq);
  // Whether transaction `xid32` is visible in the last fence's snapshot (`before_xmin`: older
  // than every transaction running then).
  bool VisibleLocked(uint32_t xid32, bool before_xmin) const;
  bool AnyUnsettledLocked() const;
  void DropIdleSlot();
  // A fence failed or the stream stopped: nothing is answered until a fence ends again.
  void Fail(const std::string& why);

  void DropTableLocked(Table& table);
  void DropEntryLocked(Entry* entry);
  void ClearLocked();
  std::vector<Waiter> TakeWaitersLocked(uint64_t fence, bool all);
  bool Stopping();

  const std::string database_;
  const pooler::CacheOptions options_;
  const std::string url_;
  const size_t max_memory_;
  ProxyRouter* const router_;
  const std::string slot_;

  mutable std::mutex mu_;
  std::condition_variable fence_cv_;
  std::vector<Table> tables_;
  absl::flat_hash_map<std::string, uint32_t> table_index_;  // by schema.table
  absl::flat_hash_map<std::string, std::unique_ptr<Entry>> entries_;
  std::list<Entry*> lru_;  // most recently used first
  size_t bytes_ = 0;
  std::vector<Waiter> waiters_;
  uint64_t fence_started_ = 0;
  uint64_t fence_done_ = 0;
  uint64_t fence_seen_ = 0;     // the last of this cache's fences the stream brought back
  const std::string fence_id_;  // this cache's, in its fences' messages: "<id>:<seq>"
  // The fence under way: its snapshot (xmin, xmax, in-progress xids), for settling tables.
  uint64_t snapshot_xmin_ = 0, snapshot_xmax_ = 0;
  std::vector<uint64_t> snapshot_xip_;
  bool unqualified_ok_ = false;  // unqualified names resolve through public (fence's check)
  uint64_t unqualified_epoch_ = 0;  // moved on each time unqualified_ok_ turns false
  bool ready_ = false;
  bool streaming_ = false;
  uint64_t position_ = 0;
  View stats_;

  StopSignal stop_;
  std::thread stream_thread_;
  std::thread fence_thread_;
};

}  // namespace pgflow::proxy
