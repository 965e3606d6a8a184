#pragma once

// The in-memory row store behind the `kv` sink: every row of the cached tables, keyed by table
// and primary key, served to the Redis, memcached and HTTP listeners.
//
// Layout: one KvTable per source table; inside it the rows sit in kShards hash shards (each
// with its own reader-writer lock) for point reads, and in a B-tree in key order for paging
// and SCAN. A row is an immutable KvRow shared by pointer, so a reader copies a pointer under
// a shard's lock and formats the answer after releasing it. Tables are never dropped while the
// store lives (a truncate empties one), so a reader may keep a table's address (TableCache).
//
// Writes come from the sink's one thread. Rows are encoded (JSON, hash fields, sort key)
// before any lock is taken; a transaction's changes are kept aside until its commit and then
// applied under every lock they touch at once (plus the store's commit lock), so a reader sees
// all of a transaction or none of it, and waits at most for those pointer swaps, never for the
// encoding of a long batch. Multi-key reads (MGET, pages) take the commit lock in shared mode.

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/change.h"
#include "engine/lsn.h"
#include "schemas/json_encoding.h"

namespace pgflow {

// The lock of the store's read path (shards, commit): pthread's reader-writer lock, set to
// prefer writers, so a commit waiting for a shard is not starved by a stream of readers, and
// readers queue behind it only for its pointer swaps. Not absl::Mutex: as packaged here (built
// without NDEBUG) its every lock and unlock also runs deadlock-detection bookkeeping under a
// process-wide spinlock, which cost a point read more than the lookup itself (callgrind) and
// made every network thread touch the same cache line.
class ABSL_LOCKABLE RwLock {
 public:
  RwLock();
  ~RwLock();
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { pthread_rwlock_wrlock(&lock_); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { pthread_rwlock_unlock(&lock_); }
  void ReaderLock() ABSL_SHARED_LOCK_FUNCTION() { pthread_rwlock_rdlock(&lock_); }
  void ReaderUnlock() ABSL_UNLOCK_FUNCTION() { pthread_rwlock_unlock(&lock_); }

 private:
  pthread_rwlock_t lock_;
};

class ABSL_SCOPED_LOCKABLE ReadLock {
 public:
  explicit ReadLock(RwLock* mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) { mu_->ReaderLock(); }
  ~ReadLock() ABSL_UNLOCK_FUNCTION() { mu_->ReaderUnlock(); }
  ReadLock(const ReadLock&) = delete;
  ReadLock& operator=(const ReadLock&) = delete;

 private:
  RwLock* const mu_;
};

class ABSL_SCOPED_LOCKABLE WriteLock {
 public:
  explicit WriteLock(RwLock* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~WriteLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  WriteLock(const WriteLock&) = delete;
  WriteLock& operator=(const WriteLock&) = delete;

 private:
  RwLock* const mu_;
};

// One column of a cached row as a reader sees it: views into the row, valid while it lives.
struct KvColumn {
  std::string_view name;
  std::string_view json;  // the value as JSON ("42", "\"pen\"", "null")
  // The value as a Redis hash field or memcached text: a JSON string's text, the JSON text
  // of anything else (numbers, booleans, arrays, objects). Empty when null.
  std::string_view text;
  bool null = false;
};

// The names of a table's cached columns, in table order: kept once, shared by every row
// encoded under the same ones.
using KvColumnNames = std::vector<std::string>;

// One cached row, immutable once built by Make: one allocation for its bytes (beside the
// object itself), from which every reply is taken. What the servers answer most is encoded
// here once, when the row is applied, and copied into replies as it is.
struct KvRow {
  // One column's value as Encode hands it to Make.
  struct Value {
    std::string json;  // empty: absent (an unchanged TOAST value the cache never held)
    std::string text;  // see KvColumn::text
    bool null = false;
  };
  // `values[i]` is the value of column names[i].
  static std::shared_ptr<KvRow> Make(std::string key,
                                     std::shared_ptr<const KvColumnNames> names,
                                     const std::vector<Value>& values, Lsn lsn);
  KvRow() = default;
  KvRow(const KvRow&) = delete;  // the views below point into the row itself
  KvRow& operator=(const KvRow&) = delete;

  // What a point read touches comes first, on the cache line of the shared_ptr's counts.
  // Every non-null column as two RESP bulk strings, name then text, in table order: an
  // HGETALL reply once a map header is put before it.
  std::string_view resp_hash;
  std::string_view resp_json;  // json as a RESP bulk string (GET)
  size_t field_count = 0;      // non-null columns
  std::string_view json_crlf;  // json, then "\r\n" (a memcached data block)
  std::string_view json;       // the row as a typed JSON object, null columns included

  std::string key;  // the key columns' values joined by ':' ("42", "7:2026-01-01")
  Lsn lsn;          // commit LSN of the transaction that wrote it (the snapshot's for reads)
  uint64_t bytes = 0;  // approximate memory held, for the memory limit

  // The value of field `name` as a RESP bulk string, found in resp_hash (no second pointer
  // to follow); empty when the column is absent or null.
  std::string_view FieldBulk(std::string_view name) const;
  // The columns the row may have (the table's cached ones), and the i-th of them; nullopt
  // when this row lacks it.
  size_t column_count() const { return names_ == nullptr ? 0 : names_->size(); }
  std::optional<KvColumn> column(size_t i) const;
  // The column named `name`, null ones included; nullopt when the row lacks it.
  std::optional<KvColumn> Column(std::string_view name) const;
  // The column named `name`, or nullopt when it is absent or null (Redis hashes have no null:
  // such fields are left out).
  std::optional<KvColumn> Find(std::string_view name) const;
  // Find's text, or nullopt.
  std::optional<std::string_view> Field(std::string_view name) const;
  size_t FieldCount() const { return field_count; }

 private:
  // Where column i's bytes are in encoded_: json_size 0 for a column the row lacks,
  // text_at kNull for a null one.
  struct Span {
    uint32_t json_at = 0;
    uint32_t json_size = 0;
    uint32_t text_at = 0;
    uint32_t text_size = 0;
  };
  static constexpr uint32_t kNull = UINT32_MAX;
  Span SpanOf(size_t i) const;

  std::shared_ptr<const KvColumnNames> names_;
  // The columns' Spans, then resp_json, then resp_hash: the bytes the views point into.
  std::string encoded_;
};
using KvRowPtr = std::shared_ptr<const KvRow>;

class KvTable {
 public:
  static constexpr size_t kShards = 16;

  KvTable(std::string schema, std::string name);

  const std::string& schema() const { return schema_; }
  const std::string& name() const { return name_; }
  // The name used in keys and URLs: "users", or "sales.orders" outside the public schema.
  const std::string& key_name() const { return key_name_; }

  // The row with key text `key`, or nullptr.
  KvRowPtr Get(std::string_view key) const;
  // Up to `limit` rows in key order, starting after key text `after` (from the first when
  // empty); `*more` tells whether rows follow. Keys that do not parse start from the first
  // row whose sort key is greater than `after`'s.
  std::vector<KvRowPtr> Page(std::string_view after, size_t limit, bool* more) const;
  // Up to `limit` rows in key order from sort key `from` on (SCAN keeps the sort key of the
  // next row as its cursor); *next_sort_key is set to the following row's, or cleared at the
  // end.
  std::vector<KvRowPtr> ScanFrom(const std::string& from_sort_key, size_t limit,
                                 std::string* next_sort_key) const;
  // The sort key of key text `key` under the current shape ("" when there is no shape yet).
  std::string SortKeyOf(std::string_view key) const;

  uint64_t rows() const { return rows_.load(std::memory_order_relaxed); }
  // The latest shape seen (columns, types, key columns), for write-through; may be null.
  TableSchemaPtr shape() const;

 private:
  friend class KvStore;
  static constexpr int kShardBits = 4;
  static_assert(kShards == size_t{1} << kShardBits);
  static_assert(sizeof(size_t) == 8);
  struct alignas(64) Shard {  // a cache line of its own: no false sharing between shards
    mutable RwLock mu;
    absl::flat_hash_map<std::string, KvRowPtr> rows ABSL_GUARDED_BY(mu);
  };
  // The hash the shard maps use for `key` (absl's string hash): computed once per lookup, it
  // picks the shard (top bits) and is handed to the map's find.
  static size_t HashOf(std::string_view key);
  static size_t ShardOfHash(size_t hash) { return hash >> (64 - kShardBits); }
  size_t ShardOf(std::string_view key) const { return ShardOfHash(HashOf(key)); }

  const std::string schema_;
  const std::string name_;
  const std::string key_name_;
  Shard shards_[kShards];
  mutable absl::Mutex order_mu_;
  // Sort key (order-preserving encoding of the key columns) → row.
  absl::btree_map<std::string, KvRowPtr> order_ ABSL_GUARDED_BY(order_mu_);
  std::atomic<uint64_t> rows_{0};
  std::atomic<uint64_t> bytes_{0};
  mutable absl::Mutex shape_mu_;
  TableSchemaPtr shape_ ABSL_GUARDED_BY(shape_mu_);
};

// What the keyspace notifications report for one key after a commit.
struct KeyEvent {
  std::string key;       // "<table>:<key>"
  bool deleted = false;  // "del", else "hset"
};

struct KvStoreOptions {
  // Columns to keep per table ("schema.table" → names); tables not listed keep every column.
  // Key columns are always kept.
  absl::flat_hash_map<std::string, std::vector<std::string>> columns;
  uint64_t max_memory = 1ull << 30;  // bytes of rows; past it, Apply fails
  JsonOptions json;
};

class KvStore {
 public:
  explicit KvStore(KvStoreOptions options);

  // --- reads, from any thread ---

  // The table named `key_name` ("users", "sales.orders"), or nullptr.
  std::shared_ptr<const KvTable> FindTable(std::string_view key_name) const;
  std::vector<std::shared_ptr<const KvTable>> Tables() const;
  // The last table a reader found by name, kept by one reader (a connection) to spare the
  // tables lock on its next lookups; valid because tables are never dropped. Not thread-safe.
  struct TableCache {
    std::string name;
    const KvTable* table = nullptr;
  };

  // FindTable through `cache` (may be null): the table stays valid while the store lives.
  const KvTable* FindTable(std::string_view key_name, TableCache* cache) const;

  // Splits a Redis key "<table>:<key>" (or "<publication>.<table>.<key>" when `publication`
  // is not empty) and finds the row; nullptr when the table or row is absent. `cache` may be
  // null.
  KvRowPtr Lookup(std::string_view redis_key, std::string_view publication,
                  TableCache* cache = nullptr) const;
  // Lookup of several keys as of one moment (no transaction half-seen across them); the rows
  // (or nullptr) replace *rows, in the order of `redis_keys`.
  void LookupMany(std::span<const std::string_view> redis_keys, std::string_view publication,
                  TableCache* cache, std::vector<KvRowPtr>* rows) const;
  uint64_t TotalRows() const;
  uint64_t MemoryBytes() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t max_memory() const { return options_.max_memory; }
  // End LSN of the last transaction applied (or stream position passed): a client that
  // committed at or before it reads its own write.
  Lsn applied() const { return Lsn(applied_.load(std::memory_order_acquire)); }
  // False until the tables are loaded whole (the snapshot, or the copy made after a restart).
  bool ready() const { return ready_.load(std::memory_order_acquire); }

  // Called after each applied commit with the keys it changed, from the writer thread, while
  // `has_listener` says someone listens (set by the servers).
  void SetCommitListener(std::function<void(const std::vector<KeyEvent>&)> listener);
  std::atomic<int>& keyspace_listeners() { return keyspace_listeners_; }

  // --- writes, from the sink's thread only ---

  // Stages one change of the open transaction (or a snapshot row, applied in batches).
  // Fails, leaving the store as it was, when the memory limit would be passed.
  absl::Status Stage(const Change& change);
  // Makes the staged changes visible at once; `end` becomes applied() (when valid).
  absl::Status Commit(Lsn end);
  // Drops the staged changes (a transaction cut off).
  void Discard();
  // Everything before `position` is applied (a stream keepalive with nothing pending).
  void NotePosition(Lsn position);
  void SetReady() { ready_.store(true, std::memory_order_release); }

 private:
  struct Pending {
    std::shared_ptr<KvTable> table;
    std::string key;
    size_t hash = 0;  // KvTable::HashOf(key), computed before any lock is taken
    std::string sort_key;
    KvRowPtr row;  // null: delete
    bool truncate = false;
  };
  std::shared_ptr<KvTable> TableFor(const TableSchema& schema);
  // The row as it will be once the staged changes apply (for TOAST merges).
  KvRowPtr Current(const KvTable& table, const std::string& key) const;
  absl::StatusOr<Pending> Encode(const std::shared_ptr<KvTable>& table, const TableSchema& schema,
                                 const Row& row, const Row* key_source, bool delete_op, Lsn lsn);
  // The names of the columns `schema` caches (all, or those `selected`), shared with the rows
  // encoded before under the same ones.
  std::shared_ptr<const KvColumnNames> NamesFor(const KvTable& table, const TableSchema& schema,
                                                const std::vector<std::string>* selected);
  // `columns` names only columns of the table: an error at its first version (a mistake in the
  // file), a warning after a schema change dropped one.
  absl::Status CheckSelectedColumns(const TableSchema& schema,
                                    const std::vector<std::string>& selected);

  const KvStoreOptions options_;
  mutable absl::Mutex tables_mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<KvTable>> tables_ ABSL_GUARDED_BY(tables_mu_);
  // Held exclusively while a commit swaps rows in, shared by multi-key reads.
  mutable RwLock commit_mu_;
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> applied_{0};
  std::atomic<bool> ready_{false};

  // Writer-thread state.
  std::vector<Pending> pending_;
  absl::flat_hash_map<std::string, size_t> pending_index_;  // table key_name + '\0' + key
  int64_t pending_bytes_ = 0;                               // net change of bytes_ once applied
  absl::flat_hash_set<std::pair<uint32_t, uint32_t>> columns_checked_;  // (relation, version)
  absl::flat_hash_set<uint32_t> columns_checked_tables_;
  // The column names of each table's latest rows (NamesFor).
  absl::flat_hash_map<const KvTable*, std::shared_ptr<const KvColumnNames>> names_;

  absl::Mutex listener_mu_;
  std::function<void(const std::vector<KeyEvent>&)> listener_ ABSL_GUARDED_BY(listener_mu_);
  std::atomic<int> keyspace_listeners_{0};
};

// "users" for public.users, "sales.orders" otherwise.
std::string KeyNameOf(std::string_view schema, std::string_view table);

}  // namespace pgflow
