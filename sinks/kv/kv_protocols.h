#pragma once

// The three protocols the kv cache speaks, as sessions over bytes: each takes what a client
// sent and appends what to answer, with no socket in sight (kv_server.h moves the bytes).
// Every session bounds what it buffers (max_request_bytes) and answers malformed input with
// the protocol's own error, closing the connection when the framing is lost.
//
// This header is what the sessions share: the service every connection uses (the store, the
// configuration, SCAN cursors, counters) and the step a session asks of its connection. The
// sessions themselves: redis_session.h (RESP2/RESP3 commands), memcached_session.h (the text
// protocol with meta get) and http_session.h (HTTP/1.1 GETs of rows and pages).
//
// Keys, in Redis and memcached alike: "<table>:<key>", where <table> is the table name
// ("schema.table" outside the public schema) and <key> the primary key's values joined by
// ':'; and PGEC's "<publication>.<table>.<key>".

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/lsn.h"
#include "sinks/kv/kv_store.h"

namespace pgflow {

// Writes to PostgreSQL on behalf of Redis clients (write_through). Implemented by the sink,
// which owns the connection; called from server threads.
class KvWriteThrough {
 public:
  virtual ~KvWriteThrough() = default;
  // HSET: upserts the row of `redis_key` with the given column values (text, cast by the
  // server to each column's type). Returns the commit's end LSN, or an error for the client.
  virtual absl::StatusOr<Lsn> Upsert(std::string_view redis_key,
                                     const std::vector<std::pair<std::string, std::string>>& values,
                                     int64_t* added) = 0;
  // DEL: deletes the rows; *deleted counts those that existed.
  virtual absl::StatusOr<Lsn> Delete(const std::vector<std::string>& redis_keys,
                                     int64_t* deleted) = 0;
};

struct KvServiceConfig {
  std::string publication;  // for PGEC-style keys; empty: not accepted
  std::string password;     // Redis AUTH; empty: none
  std::string http_token;   // HTTP bearer token; empty: none
  size_t max_request_bytes = 1 << 20;
  size_t max_output_bytes = 64 << 20;         // replies and notifications buffered per connection
  std::chrono::milliseconds max_wait{60000};  // WAITLSN / min_lsn cap
  std::string version = "0.1.0";
};

// A counter bumped by every network thread on every request: each thread adds to a slot on a
// cache line of its own, and Load sums the slots, so threads do not pass one line back and
// forth per request.
class ShardedCounter {
 public:
  void Add(uint64_t n) { slots_[SlotOfThisThread()].n.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Load() const;

 private:
  static constexpr size_t kSlots = 16;
  static size_t SlotOfThisThread();
  struct alignas(64) Slot {
    std::atomic<uint64_t> n{0};
  };
  Slot slots_[kSlots];
};

// What every connection shares: the store, the configuration, SCAN cursors, counters.
class KvService {
 public:
  KvService(KvStore* store, KvServiceConfig config, KvWriteThrough* write_through);

  KvStore& store() const { return *store_; }
  const KvServiceConfig& config() const { return config_; }
  KvWriteThrough* write_through() const { return write_through_; }

  // SCAN cursors are numbers (redis-cli parses them): each names a position kept here, the
  // oldest forgotten past kMaxCursors (its SCAN then fails with a clear error).
  struct CursorState {
    std::string table;     // key_name of the table to continue in
    std::string sort_key;  // position in it
  };
  uint64_t SaveCursor(CursorState state);
  bool LoadCursor(uint64_t id, CursorState* state);

  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> total_connections{0};
  ShardedCounter commands;
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

 private:
  static constexpr size_t kMaxCursors = 4096;
  KvStore* store_;
  const KvServiceConfig config_;
  KvWriteThrough* write_through_;
  absl::Mutex cursor_mu_;
  uint64_t next_cursor_ ABSL_GUARDED_BY(cursor_mu_) = 1;
  std::vector<std::pair<uint64_t, CursorState>> cursors_ ABSL_GUARDED_BY(cursor_mu_);  // ring
};

// The outcome of a write-through command: the LSN to wait for, and the count to answer.
struct WriteResult {
  absl::StatusOr<Lsn> lsn;
  int64_t count = 0;
};

// What a session asks of its connection after consuming input.
struct SessionStep {
  enum Kind {
    kContinue,  // wait for more input
    kClose,     // send what was appended, then close
    kWait,      // wait until store().applied() >= lsn or the timeout, then call Resume
    kWrite,     // run `write` away from the network thread, then call FinishWrite
  } kind = kContinue;
  std::function<WriteResult()> write;
  Lsn lsn;
  std::chrono::milliseconds timeout{0};
};

}  // namespace pgflow
