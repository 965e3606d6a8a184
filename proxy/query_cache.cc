#include "proxy/query_cache.h"

#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/ack_tracker.h"
#include "engine/log.h"
#include "engine/source.h"
#include "engine/str_cat.h"
#include "proxy/router.h"
#include "sources/postgres/postgres_source.h"
#include "sources/postgres/snapshot.h"

namespace pgflow::proxy {
namespace {

using Clock = std::chrono::steady_clock;
using Kind = StatementClass::Kind;

constexpr std::string_view kFencePrefix = "pgflow.cache.fence";
// A probe's generation of a table that is unsettled: Store keeps nothing.
constexpr uint64_t kUnsettled = ~uint64_t{0};
// How long a fence may take, from its query to its message read back from the stream.
constexpr auto kFenceTimeout = std::chrono::milliseconds(2000);
// Bytes an entry costs beside its key and answer.
constexpr size_t kEntryOverhead = 160;
// Unsettled transactions remembered per table (Table::unsettled).
constexpr size_t kUnsettledXids = 256;

// A slot's name from the database's: lower-case letters, digits and '_' only.
std::string SlotName(std::string_view database) {
  std::string slot = "pgflow_cache_";
  for (char c : database) {
    const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    slot.push_back(std::isalnum(static_cast<unsigned char>(lower)) ? lower : '_');
  }
  return slot.substr(0, 63);
}

}  // namespace

struct ProxyQueryCache::Entry {
  std::string key;
  bool unqualified = false;
  std::shared_ptr<const std::string> answer;
  std::vector<uint32_t> tables;
  Clock::time_point expires;
  std::list<Entry*>::iterator lru;
  size_t bytes = 0;
};

// The change stream's events, handed to the cache as the source emits them; each position is
// acknowledged once read (the cache keeps nothing that a restart would need).
class ProxyQueryCache::Emitter : public pgflow::Emitter {
 public:
  Emitter(ProxyQueryCache* cache, AckTracker* acks) : cache_(cache), acks_(acks) {}

  Result Emit(const EventBatchPtr& batch, absl::Duration) override {
    for (const Event& event : batch->events) {
      if (event.kind == EventKind::kChange) {
        const Change& change = event.change;
        if (change.op == Op::kMessage) {
          if (change.prefix == kFencePrefix) cache_->OnFence(change.content);
        } else if (change.op == Op::kDdl) {
          const DdlCommand* ddl = change.ddl.get();
          if (ddl == nullptr || (ddl->object_type != "table" && ddl->object_type != "index" &&
                                 ddl->object_type != "sequence")) {
            cache_->OnChange("", change.txn.xid, true);  // (a function, a policy, a view...)
          } else if (ddl->object_type == "table") {
            cache_->OnChange(ddl->schema + "." + ddl->name, change.txn.xid, false);
            if (ddl->old_table.has_value()) {
              cache_->OnChange(ddl->old_table->schema + "." + ddl->old_table->name, change.txn.xid,
                               false);
            }
          }
        } else if (change.table != nullptr) {
          cache_->OnChange(change.table->QualifiedName(), change.txn.xid, false);
        }
      } else if (event.kind == EventKind::kCommit || event.kind == EventKind::kPosition) {
        const Lsn position = event.AckPosition();
        cache_->OnPosition(position.value);
        acks_->Report(0, position);
      }
    }
    return Result::kOk;
  }

 private:
  ProxyQueryCache* const cache_;
  AckTracker* const acks_;
};

std::shared_ptr<ProxyQueryCache> ProxyQueryCache::Start(std::string database,
                                                        const pooler::DatabaseOptions& db,
                                                        ProxyRouter* router) {
  std::shared_ptr<ProxyQueryCache> cache(new ProxyQueryCache(std::move(database), db, router));
  // (Each thread holds the cache until it ends.)
  cache->stream_thread_ = std::thread([cache] { cache->RunStream(); });
  cache->fence_thread_ = std::thread([cache] { cache->RunFences(); });
  return cache;
}

ProxyQueryCache::ProxyQueryCache(std::string database, const pooler::DatabaseOptions& db,
                                 ProxyRouter* router)
    : database_(std::move(database)),
      options_(db.cache),
      url_(db.cache.url.empty() ? db.url : db.cache.url),
      max_memory_(db.cache.max_memory),
      router_(router),
      slot_(SlotName(database_)),
      fence_id_(std::to_string(std::random_device()()) + std::to_string(::getpid())) {
  for (const std::string& name : options_.tables) {
    table_index_.emplace(name, static_cast<uint32_t>(tables_.size()));
    Table table;
    table.name = name;
    tables_.push_back(std::move(table));
  }
  stats_.max_memory = max_memory_;
}

ProxyQueryCache::~ProxyQueryCache() {
  for (std::thread* t : {&stream_thread_, &fence_thread_}) {
    if (!t->joinable()) continue;
    if (t->get_id() == std::this_thread::get_id()) {
      t->detach();
    } else {
      t->join();
    }
  }
}

void ProxyQueryCache::Stop(bool wait) {
  stop_.Request();
  fence_cv_.notify_all();
  if (!wait) return;
  for (std::thread* t : {&stream_thread_, &fence_thread_}) {
    if (t->joinable() && t->get_id() != std::this_thread::get_id()) t->join();
  }
}

bool ProxyQueryCache::Stopping() { return stop_.requested(); }

pooler::QueryCache::Probe ProxyQueryCache::Look(std::string_view user, std::string_view settings,
                                                std::string_view text, std::string_view unit) {
  Probe probe;
  std::shared_ptr<const StatementClass> statement = router_->Classify(text);
  if (statement->kind != Kind::kRead || statement->tables.empty() || statement->min_lsn ||
      !router_->CallsOnlyImmutable(*statement)) {
    return probe;
  }
  bool unqualified = false;
  std::lock_guard lock(mu_);
  if (!ready_) return probe;
  for (const std::string& name : statement->tables) {
    auto it = name.find('.') == std::string::npos ? table_index_.find("public." + name)
                                                  : table_index_.find(name);
    unqualified = unqualified || name.find('.') == std::string::npos;
    if (it == table_index_.end() || tables_[it->second].excluded) return probe;
    const Table& table = tables_[it->second];
    probe.tables.emplace_back(it->second, table.settled() ? table.generation : kUnsettled);
  }
  if (unqualified && (!unqualified_ok_ || settings.find("\nsearch_path=") != std::string::npos)) {
    probe.tables.clear();
    return probe;
  }
  probe.cacheable = true;
  probe.unqualified = unqualified;
  probe.epoch = unqualified_epoch_;
  probe.key = Cat(user, std::string_view("\0", 1), settings, std::string_view("\0", 1), unit);
  probe.fence = fence_started_ + 1;
  auto it = entries_.find(probe.key);
  probe.present = it != entries_.end() && it->second->expires > Clock::now();
  if (!probe.present) ++stats_.misses;
  return probe;
}

bool ProxyQueryCache::Wait(const Probe& probe, std::function<void()> ready) {
  {
    std::lock_guard lock(mu_);
    if (!ready_ || fence_done_ >= probe.fence) return false;
    waiters_.push_back(Waiter{probe.fence, std::move(ready)});
  }
  fence_cv_.notify_all();
  return true;
}

std::shared_ptr<const std::string> ProxyQueryCache::Answer(const Probe& probe, uint64_t position) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(probe.key);
  bool fresh = ready_ && fence_done_ >= probe.fence && it != entries_.end() &&
               (position == pooler::kPositionUnknown ? false : position_ >= position);
  for (const auto& [index, generation] : probe.tables) fresh = fresh && !tables_[index].excluded;
  // (The fence that ended after the query came checked the names again.)
  fresh = fresh && (!probe.unqualified || unqualified_ok_);
  if (fresh && it->second->expires <= Clock::now()) {
    DropEntryLocked(it->second.get());
    ++stats_.evictions;
    fresh = false;
  }
  if (!fresh) {
    ++stats_.misses;
    return nullptr;
  }
  Entry* entry = it->second.get();
  lru_.splice(lru_.begin(), lru_, entry->lru);
  ++stats_.hits;
  return entry->answer;
}

void ProxyQueryCache::Store(const Probe& probe, std::string answer) {
  std::lock_guard lock(mu_);
  if (!ready_ || answer.size() > max_answer() ||
      (probe.unqualified && (!unqualified_ok_ || probe.epoch != unqualified_epoch_))) {
    return;
  }
  for (const auto& [index, generation] : probe.tables) {
    const Table& table = tables_[index];
    if (generation == kUnsettled || table.generation != generation || !table.settled() ||
        table.excluded) {
      ++stats_.stale_stores;
      return;
    }
  }
  if (auto it = entries_.find(probe.key); it != entries_.end()) DropEntryLocked(it->second.get());
  auto entry = std::make_unique<Entry>();
  entry->key = probe.key;
  entry->unqualified = probe.unqualified;
  entry->bytes = 2 * probe.key.size() + answer.size() + kEntryOverhead;  // (the map's key too)
  entry->answer = std::make_shared<const std::string>(std::move(answer));
  entry->expires = Clock::now() + options_.ttl;
  for (const auto& [index, generation] : probe.tables) {
    if (std::find(entry->tables.begin(), entry->tables.end(), index) == entry->tables.end()) {
      entry->tables.push_back(index);
      tables_[index].entries.insert(entry.get());
    }
  }
  lru_.push_front(entry.get());
  entry->lru = lru_.begin();
  bytes_ += entry->bytes;
  ++stats_.stores;
  entries_.emplace(entry->key, std::move(entry));
  while (bytes_ > max_memory_ && !lru_.empty()) {
    DropEntryLocked(lru_.back());
    ++stats_.evictions;
  }
}

pooler::QueryCache::View ProxyQueryCache::Stats() const {
  std::lock_guard lock(mu_);
  View view = stats_;
  view.ready = ready_;
  view.entries = entries_.size();
  view.bytes = bytes_;
  view.position = position_;
  return view;
}

void ProxyQueryCache::DropEntryLocked(Entry* entry) {
  for (uint32_t index : entry->tables) tables_[index].entries.erase(entry);
  lru_.erase(entry->lru);
  bytes_ -= entry->bytes;
  entries_.erase(entry->key);  // (destroys it)
}

void ProxyQueryCache::DropTableLocked(Table& table) {
  while (!table.entries.empty()) {
    DropEntryLocked(*table.entries.begin());
    ++stats_.invalidations;
  }
}

void ProxyQueryCache::ClearLocked() {
  while (!lru_.empty()) DropEntryLocked(lru_.back());
}

void ProxyQueryCache::OnChange(const std::string& name, uint32_t xid, bool all) {
  {
    std::lock_guard lock(mu_);
    auto mark = [&](Table& table) {
      DropTableLocked(table);
      ++table.generation;
      if (xid == 0) return;  // (a transaction without an xid wrote nothing a snapshot misses)
      if (table.overflowed) {
        // (The newest, wraparound considered: the stream brings commits, not xids, in order.)
        if (static_cast<int32_t>(xid - table.unsettled[0]) > 0) table.unsettled[0] = xid;
      } else if (table.unsettled.size() < kUnsettledXids) {
        if (std::find(table.unsettled.begin(), table.unsettled.end(), xid) ==
            table.unsettled.end()) {
          table.unsettled.push_back(xid);
        }
      } else {
        uint32_t newest = xid;
        for (uint32_t other : table.unsettled) {
          if (static_cast<int32_t>(other - newest) > 0) newest = other;
        }
        table.unsettled.assign(1, newest);
        table.overflowed = true;
      }
      table.settle_fence = fence_started_ + 1;
    };
    if (all) {
      for (Table& table : tables_) mark(table);
    } else if (auto it = table_index_.find(name); it != table_index_.end()) {
      mark(tables_[it->second]);
    } else {
      return;
    }
  }
  fence_cv_.notify_all();
}

void ProxyQueryCache::OnFence(std::string_view content) {
  const size_t colon = content.rfind(':');
  uint64_t seq = 0;
  if (colon == std::string_view::npos || content.substr(0, colon) != fence_id_ ||
      !absl::SimpleAtoi(std::string(content.substr(colon + 1)), &seq)) {
    return;
  }
  {
    std::lock_guard lock(mu_);
    fence_seen_ = std::max(fence_seen_, seq);
  }
  fence_cv_.notify_all();
}

void ProxyQueryCache::OnPosition(uint64_t position) {
  std::lock_guard lock(mu_);
  position_ = std::max(position_, position);
}

bool ProxyQueryCache::VisibleLocked(uint32_t xid32, bool before_xmin) const {
  // The full transaction id: the snapshot's epoch, or the one before for an id past xmax's.
  uint64_t xid = (snapshot_xmax_ & ~uint64_t{0xffffffff}) | xid32;
  if (xid > snapshot_xmax_ && xid >= (uint64_t{1} << 32)) xid -= uint64_t{1} << 32;
  if (xid < snapshot_xmin_) return true;
  return !before_xmin && xid < snapshot_xmax_ &&
         std::find(snapshot_xip_.begin(), snapshot_xip_.end(), xid) == snapshot_xip_.end();
}

bool ProxyQueryCache::AnyUnsettledLocked() const {
  return std::any_of(tables_.begin(), tables_.end(), [](const Table& t) { return !t.settled(); });
}

std::vector<ProxyQueryCache::Waiter> ProxyQueryCache::TakeWaitersLocked(uint64_t fence, bool all) {
  std::vector<Waiter> woken;
  auto keep = std::partition(waiters_.begin(), waiters_.end(),
                             [&](const Waiter& w) { return !all && w.fence > fence; });
  std::move(keep, waiters_.end(), std::back_inserter(woken));
  waiters_.erase(keep, waiters_.end());
  return woken;
}

void ProxyQueryCache::EndFence(uint64_t seq) {
  std::vector<Waiter> woken;
  {
    std::lock_guard lock(mu_);
    fence_done_ = seq;
    ++stats_.fences;
    for (Table& table : tables_) {
      if (table.settled() || table.settle_fence > seq) continue;
      std::erase_if(table.unsettled,
                    [&](uint32_t xid) { return VisibleLocked(xid, table.overflowed); });
      if (table.settled()) table.overflowed = false;
    }
    if (!ready_ && streaming_) {
      LogInfo("proxy: database %s: the query cache is ready (change stream at %s)", database_,
              Lsn(position_).ToString());
    }
    ready_ = streaming_;
    woken = TakeWaitersLocked(seq, false);
  }
  for (Waiter& w : woken) w.ready();
}

void ProxyQueryCache::Fail(const std::string& why) {
  std::vector<Waiter> woken;
  {
    std::lock_guard lock(mu_);
    if (ready_) {
      LogWarning(
          "proxy: database %s: the query cache answers nothing until its fences work "
          "again: %s",
          database_, why);
    }
    ready_ = false;
    ClearLocked();
    for (Table& table : tables_) ++table.generation;  // (answers under way are not kept)
    woken = TakeWaitersLocked(0, true);
  }
  for (Waiter& w : woken) w.ready();
}

void ProxyQueryCache::RunFences() {
  // The checks the fence makes with its snapshot: whether an unqualified name surely means
  // public's table (no schema named after a role, no role or database setting search_path),
  // and which listed tables are not to be cached: with row-level security, or with
  // inheritance children, or all of them when pgflow's DDL triggers are missing (a schema
  // change would not reach the stream).
  std::string tables_sql;
  for (const Table& table : tables_) {
    absl::StatusOr<TableRef> ref = ParseTableRef(table.name);
    if (!ref.ok()) continue;
    if (!tables_sql.empty()) tables_sql += ", ";
    tables_sql += Cat("(", QuoteLiteral(ref->schema), ", ", QuoteLiteral(ref->table), ")");
  }
  const std::string checks =
      Cat("NOT EXISTS (SELECT 1 FROM pg_namespace n JOIN pg_roles r ON r.rolname = n.nspname) AND "
          "NOT EXISTS (SELECT 1 FROM pg_db_role_setting s, unnest(s.setconfig) c "
          "WHERE c LIKE 'search_path=%'), (SELECT string_agg(n.nspname || '.' || c.relname, ',') "
          "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
          "WHERE c.relrowsecurity AND (n.nspname, c.relname) IN (VALUES ",
          tables_sql, "))");
  PgConnPtr conn;
  while (true) {
    uint64_t seq = 0;
    {
      std::unique_lock lock(mu_);
      auto wanted = [&] {
        return !waiters_.empty() || AnyUnsettledLocked() || (streaming_ && !ready_);
      };
      fence_cv_.wait_for(lock, std::chrono::seconds(1), [&] { return Stopping() || wanted(); });
      if (Stopping()) break;
      if (!wanted()) continue;
      seq = ++fence_started_;
    }
    if (conn == nullptr) {
      absl::StatusOr<PgConnPtr> connected = Connect(url_, ConnectionKind::kRegular);
      if (!connected.ok()) {
        Fail(std::string(connected.status().message()));
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        continue;
      }
      conn = *std::move(connected);
    }
    absl::StatusOr<PgResultPtr> result =
        ExecWithin(conn.get(),
                   Cat("SELECT pg_current_snapshot()::text, pg_logical_emit_message(true, '",
                       kFencePrefix, "', '", fence_id_, ":", seq, "')::text, ", checks),
                   kFenceTimeout);
    if (!result.ok()) {
      conn.reset();
      Fail(std::string(result.status().message()));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    PGresult* res = result->get();
    {
      std::unique_lock lock(mu_);
      // xmin:xmax:xip,xip,...
      const std::vector<std::string> snapshot = absl::StrSplit(PQgetvalue(res, 0, 0), ':');
      snapshot_xip_.clear();
      if (snapshot.size() == 3 && absl::SimpleAtoi(snapshot[0], &snapshot_xmin_) &&
          absl::SimpleAtoi(snapshot[1], &snapshot_xmax_)) {
        const std::vector<std::string> xip = absl::StrSplit(snapshot[2], ',', absl::SkipEmpty());
        for (const std::string& xid : xip) {
          uint64_t value = 0;
          if (absl::SimpleAtoi(xid, &value)) snapshot_xip_.push_back(value);
        }
      } else {
        snapshot_xmin_ = snapshot_xmax_ = 0;  // (settles nothing)
      }
      const bool unqualified_ok = std::string_view(PQgetvalue(res, 0, 2)) == "t";
      if (unqualified_ok_ && !unqualified_ok) {
        ++unqualified_epoch_;
        std::vector<Entry*> unqualified;
        for (const auto& [key, entry] : entries_) {
          if (entry->unqualified) unqualified.push_back(entry.get());
        }
        for (Entry* entry : unqualified) DropEntryLocked(entry);
      }
      unqualified_ok_ = unqualified_ok;
      const std::vector<std::string> excluded =
          absl::StrSplit(PQgetvalue(res, 0, 3), ',', absl::SkipEmpty());
      for (Table& table : tables_) {
        const bool now = std::find(excluded.begin(), excluded.end(), table.name) != excluded.end();
        if (now && !table.excluded) DropTableLocked(table);
        table.excluded = now;
      }
      if (!fence_cv_.wait_for(lock, kFenceTimeout,
                              [&] { return Stopping() || fence_seen_ >= seq; })) {
        lock.unlock();
        Fail(Cat("the change stream did not bring a fence back within ", kFenceTimeout.count(),
                 " ms"));
        continue;
      }
      if (Stopping()) break;
    }
    EndFence(seq);
  }
  Fail("stopping");
}

void ProxyQueryCache::DropIdleSlot() {
  absl::StatusOr<PgConnPtr> conn = Connect(url_, ConnectionKind::kRegular);
  if (!conn.ok()) return;
  absl::StatusOr<PgResultPtr> dropped =
      Exec(conn->get(),
           "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
           "WHERE slot_name = $1 AND NOT active",
           {slot_});
  if (dropped.ok()) {
    // (Dropped on purpose: the next slot is a first one, not one a failover lost.)
    if (absl::Status s = ForgetSlotMade(conn->get(), slot_); !s.ok()) {
      LogWarning("proxy: database %s: %s", database_, s.message());
    }
  }
  if (!dropped.ok()) {
    LogWarning("proxy: database %s: dropping the cache's slot %s: %s", database_, slot_,
               dropped.status().message());
  }
}

void ProxyQueryCache::RunStream() {
  auto options = std::make_shared<PostgresSourceOptions>();
  options->url = url_;
  for (const std::string& name : options_.tables) {
    if (absl::StatusOr<TableRef> ref = ParseTableRef(name); ref.ok()) {
      options->tables.push_back(*ref);
    }
  }
  options->slot = slot_;
  options->publication = slot_;
  options->snapshot.mode = SnapshotMode::kNever;
  while (!Stopping()) {
    // The cache starts empty: it follows from now, not from where a process before it stopped.
    DropIdleSlot();
    PostgresSource source(slot_, "the pooler's configuration", options);
    absl::StatusOr<Lsn> start = source.Prepare();
    if (start.ok()) {
      AckTracker acks(1, *start);
      ChunkTracker chunks(1);
      Emitter emitter(this, &acks);
      {
        std::lock_guard lock(mu_);
        streaming_ = true;
        position_ = start->value;
      }
      fence_cv_.notify_all();
      absl::Status streamed = source.Stream(emitter, {acks, chunks}, stop_);
      {
        std::lock_guard lock(mu_);
        streaming_ = false;
      }
      Fail(streamed.ok() ? "the change stream stopped" : std::string(streamed.message()));
      (void)source.Finish({acks, chunks});
      if (!streamed.ok() && !Stopping()) {
        LogWarning("proxy: database %s: the query cache's change stream: %s", database_,
                   streamed.message());
      }
    } else {
      LogWarning("proxy: database %s: the query cache cannot follow the primary's changes: %s",
                 database_, start.status().message());
    }
    for (int i = 0; i < 20 && !Stopping(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  DropIdleSlot();
}

}  // namespace pgflow::proxy
