#pragma once

// The in-memory row store behind the `kv` sink: every row of the cached tables, keyed by table
// and primary key, served to the Redis, memcached and HTTP listeners.
//
// Layout: one KvTable per source table; inside it the rows sit in kShards hash shards (each
// with its own reader-writer lock) for point reads, and in a B-tree in key order for paging
// and SCAN; both hold the same counted row pointers, 8 bytes a slot, and find a row by the key
// inside it. A row is an immutable KvRow (one allocation), so a reader copies a pointer under
// a shard's lock and formats the answer after releasing it. Tables are never dropped while the
// store lives (a truncate empties one), so a reader may keep a table's address (TableCache).
//
// Writes come from the sink's one thread. Rows are encoded (each column's JSON, the sort key)
// before any lock is taken; a transaction's changes are kept aside until its commit and then
// applied under every lock they touch at once (plus the store's commit lock), so a reader sees
// all of a transaction or none of it, and waits at most for those pointer swaps, never for the
// encoding of a long batch. Multi-key reads (MGET, pages) take the commit lock in shared mode.

#include <pthread.h>

#include <atomic>
#include <chrono>
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
#include "absl/container/btree_set.h"
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

// The names of a table's cached columns, in table order, kept once for every row encoded
// under the same ones, each also in the two forms replies put before a value: a RESP bulk
// string (HGETALL) and a JSON object key with its colon (GET, memcached, HTTP).
class KvColumnNames {
 public:
  explicit KvColumnNames(std::vector<std::string> names);
  size_t size() const { return names_.size(); }
  const std::string& operator[](size_t i) const { return names_[i]; }
  const std::vector<std::string>& names() const { return names_; }
  std::string_view resp(size_t i) const { return resp_[i]; }
  std::string_view json_key(size_t i) const { return json_key_[i]; }
  // The index of column `name`, or size() when there is none.
  size_t IndexOf(std::string_view name) const;

 private:
  std::vector<std::string> names_;
  std::vector<std::string> resp_;      // "$4\r\nname\r\n"
  std::vector<std::string> json_key_;  // "\"name\":"
};

class KvRow;

// A counted reference to a row (the count lives in the row: 8 bytes in each index slot, where
// a shared_ptr took 16 and a control block).
class KvRowPtr {
 public:
  KvRowPtr() = default;
  KvRowPtr(std::nullptr_t) {}  // NOLINT: as a pointer converts
  KvRowPtr(const KvRowPtr& other);
  KvRowPtr(KvRowPtr&& other) noexcept : row_(std::exchange(other.row_, nullptr)) {}
  KvRowPtr& operator=(KvRowPtr other) noexcept {
    std::swap(row_, other.row_);
    return *this;
  }
  ~KvRowPtr();

  const KvRow* get() const { return row_; }
  const KvRow* operator->() const { return row_; }
  const KvRow& operator*() const { return *row_; }
  explicit operator bool() const { return row_ != nullptr; }
  friend bool operator==(const KvRowPtr& a, std::nullptr_t) { return a.row_ == nullptr; }

 private:
  friend class KvRow;
  explicit KvRowPtr(const KvRow* adopted) : row_(adopted) {}
  const KvRow* row_ = nullptr;
};

// One cached row, immutable once built by Make, in a single allocation: a 40-byte header, then
// its key, its sort key, and each column as a kind byte, a length and its JSON (a string's
// text follows it only when the JSON has escapes; otherwise it is the JSON within the quotes).
// Every reply (HGET, HGETALL, GET, memcached, HTTP) is written from these bytes and the
// table's KvColumnNames. The names must outlive the row: the store keeps every set it made.
class KvRow {
 public:
  // One column's value as Encode hands it to Make.
  struct Value {
    std::string json;  // empty: absent (an unchanged TOAST value the cache never held)
    bool null = false;
  };
  // `values[i]` is the value of column names[i]. Null when the row would pass 4 GiB.
  static KvRowPtr Make(std::string_view key, std::string_view sort_key,
                       const KvColumnNames* names, const std::vector<Value>& values, Lsn lsn);
  KvRow(const KvRow&) = delete;
  KvRow& operator=(const KvRow&) = delete;

  // The key columns' values joined by ':' ("42", "7:2026-01-01").
  std::string_view key() const { return {data(), key_size_}; }
  // The key in an order-preserving encoding (integers as numbers): the B-tree's order.
  std::string_view sort_key() const { return {data() + key_size_, sort_key_size_}; }
  // Commit LSN of the transaction that wrote it (the snapshot's for reads).
  Lsn lsn() const { return lsn_; }
  // Bytes the row holds in the heap (its allocation as malloc rounds it), for max_memory.
  size_t bytes() const;

  // The row as a typed JSON object, null columns included: its size, and the object itself.
  size_t json_size() const { return json_size_; }
  void AppendJson(std::string* out) const;
  // The JSON object as a RESP bulk string (GET).
  void AppendRespJson(std::string* out) const;
  // Every non-null column as two RESP bulk strings, name then text, in table order: an
  // HGETALL reply once a map header of field_count() pairs is put before it.
  void AppendRespFields(std::string* out) const;
  // Column `name`'s text as a RESP bulk string; false (and nothing written) when the column
  // is absent or null.
  bool AppendFieldBulk(std::string_view name, std::string* out) const;
  size_t field_count() const { return field_count_; }  // non-null columns

  // The columns the row may have (the table's cached ones), and the i-th of them; nullopt
  // when this row lacks it.
  size_t column_count() const { return names_->size(); }
  std::optional<KvColumn> column(size_t i) const;
  // The column named `name`, null ones included; nullopt when the row lacks it.
  std::optional<KvColumn> Column(std::string_view name) const;
  // Calls visit(KvColumn) for each column the row has, null ones included, in table order: one
  // pass over the row, where column(i) for each i would decode from the start every time.
  template <typename Visit>
  void ForEachColumn(Visit visit) const {
    const char* p = cells();
    for (size_t i = 0; i < names_->size(); ++i) {
      const Cell cell = ReadCell(&p);
      if (cell.kind != kAbsent) {
        visit(KvColumn{(*names_)[i], cell.json, cell.text, cell.kind == kNull});
      }
    }
  }
  // The column named `name`, or nullopt when it is absent or null (Redis hashes have no null:
  // such fields are left out).
  std::optional<KvColumn> Find(std::string_view name) const;
  // Find's text, or nullopt.
  std::optional<std::string_view> Field(std::string_view name) const;

 private:
  friend class KvRowPtr;
  // A column's kind, the first byte of its encoding.
  enum Kind : uint8_t {
    kAbsent,   // nothing follows
    kNull,     // nothing follows; JSON null
    kRaw,      // length, JSON; the text is the JSON (numbers, booleans, arrays, objects)
    kString,   // length, JSON string without escapes; the text is within the quotes
    kEscaped,  // length, JSON string; length, text
  };
  // A column as its encoding gives it: views into the row.
  struct Cell {
    Kind kind = kAbsent;
    std::string_view json;
    std::string_view text;
  };
  KvRow() = default;
  static Kind KindOf(const Value& v);
  const char* data() const { return reinterpret_cast<const char*>(this) + sizeof(KvRow); }
  // The cell whose encoding starts at *p; moves *p past it.
  static Cell ReadCell(const char** p);
  const char* cells() const { return data() + key_size_ + sort_key_size_; }
  // The cell of column `index` (< column_count()).
  Cell CellAt(size_t index) const;
  void Ref() const { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() const;

  mutable std::atomic<uint32_t> refs_{1};
  uint32_t key_size_ = 0;
  uint32_t sort_key_size_ = 0;
  uint32_t data_size_ = 0;  // bytes after the header
  uint32_t json_size_ = 0;
  uint32_t field_count_ = 0;
  Lsn lsn_;
  const KvColumnNames* names_ = nullptr;
};
static_assert(sizeof(KvRow) == 40);

inline KvRowPtr::KvRowPtr(const KvRowPtr& other) : row_(other.row_) {
  if (row_ != nullptr) row_->Ref();
}
inline KvRowPtr::~KvRowPtr() {
  if (row_ != nullptr) row_->Unref();
}

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
  // The hash sets hold rows, found by the key inside them.
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(std::string_view key) const { return HashOf(key); }
    size_t operator()(const KvRowPtr& row) const { return HashOf(row->key()); }
  };
  // Compares rows, or a row and a key, by one of the keys inside the rows.
  template <std::string_view (KvRow::*kKey)() const, typename Compare>
  struct ByRowKey {
    using is_transparent = void;
    static std::string_view KeyOf(std::string_view key) { return key; }
    static std::string_view KeyOf(const KvRowPtr& row) { return ((*row).*kKey)(); }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return Compare()(KeyOf(a), KeyOf(b));
    }
  };
  using KeyEq = ByRowKey<&KvRow::key, std::equal_to<>>;
  // The B-tree holds rows too, ordered by the sort key inside them.
  using SortKeyLess = ByRowKey<&KvRow::sort_key, std::less<>>;
  struct alignas(64) Shard {  // a cache line of its own: no false sharing between shards
    mutable RwLock mu;
    absl::flat_hash_set<KvRowPtr, KeyHash, KeyEq> rows ABSL_GUARDED_BY(mu);
  };
  // The hash the shard sets use for `key` (absl's string hash): computed once per lookup, it
  // picks the shard (top bits) and is handed to the set's find.
  static size_t HashOf(std::string_view key);
  static size_t ShardOfHash(size_t hash) { return hash >> (64 - kShardBits); }
  size_t ShardOf(std::string_view key) const { return ShardOfHash(HashOf(key)); }

  const std::string schema_;
  const std::string name_;
  const std::string key_name_;
  Shard shards_[kShards];
  mutable absl::Mutex order_mu_;
  // The rows in sort key order (an order-preserving encoding of the key columns).
  absl::btree_set<KvRowPtr, SortKeyLess> order_ ABSL_GUARDED_BY(order_mu_);
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

// What is wrong when `selected` (a table's kv.columns) names columns `schema` lacks; empty when
// it names none.
std::string MissingSelectedColumns(const TableSchema& schema,
                                   const std::vector<std::string>& selected);

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
  // Sets of column names made so far (one per table version the rows were written under).
  // Writer thread only.
  size_t column_name_sets() const { return all_names_.size(); }
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
  // The cache became whole: from now on it serves. Asks for a trim (TrimDue).
  void SetReady();

  // --- memory given back, from the kv server's maintenance (any one thread) ---

  // True, once, when the free pages the heap holds should go back to the system: a copy ended
  // (its batches, freed by several threads, leave pages free in their malloc arenas) or a
  // commit let go of many rows, at least kTrimDelay after the latest such request (so the last
  // of those frees are in).
  bool TrimDue();
  static constexpr std::chrono::seconds kTrimDelay{2};

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
  const KvColumnNames* NamesFor(const KvTable& table, const TableSchema& schema,
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
  // Steady-clock nanoseconds of the first trim request not yet served (0: none).
  std::atomic<int64_t> trim_requested_{0};
  void RequestTrim();

  // Writer-thread state.
  std::vector<Pending> pending_;
  absl::flat_hash_map<std::string, size_t> pending_index_;  // table key_name + '\0' + key
  int64_t pending_bytes_ = 0;                               // net change of bytes_ once applied
  absl::flat_hash_set<const KvTable*> pending_truncates_;   // tables the staged changes truncate
  absl::flat_hash_map<const KvTable*, int64_t> pending_table_bytes_;  // pending_bytes_ by table
  absl::flat_hash_set<std::pair<uint32_t, uint32_t>> columns_checked_;  // (relation, version)
  absl::flat_hash_set<uint32_t> columns_checked_tables_;
  // The column names of each table's latest rows (NamesFor), and every set made, kept while
  // the store lives (rows point at theirs; a new set is made only by a schema change).
  absl::flat_hash_map<const KvTable*, const KvColumnNames*> names_;
  std::vector<std::unique_ptr<const KvColumnNames>> all_names_;

  absl::Mutex listener_mu_;
  std::function<void(const std::vector<KeyEvent>&)> listener_ ABSL_GUARDED_BY(listener_mu_);
  std::atomic<int> keyspace_listeners_{0};
};

// "users" for public.users, "sales.orders" otherwise.
std::string KeyNameOf(std::string_view schema, std::string_view table);

}  // namespace pgflow
