#pragma once

// The three protocols the kv cache speaks, as sessions over bytes: each takes what a client
// sent and appends what to answer, with no socket in sight (kv_server.h moves the bytes).
// Every session bounds what it buffers (max_request_bytes) and answers malformed input with
// the protocol's own error, closing the connection when the framing is lost.
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

#include "absl/container/flat_hash_set.h"
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

enum class RedisCommand;  // the Redis commands RedisSession tells apart (kv_protocols.cc)

class RedisSession {
 public:
  explicit RedisSession(KvService* service) : service_(service) {}

  // Appends `data` to the input and runs every complete command (pipelining), appending the
  // replies to *out. Stops early at a WAITLSN that must wait (kWait) or a QUIT (kClose).
  SessionStep Feed(std::string_view data, std::string* out);
  // Ends a kWait: `reached` says whether the LSN was applied in time. Continues with the
  // commands already received.
  SessionStep Resume(bool reached, std::string* out);
  // Ends a kWrite: answers an error at once, or asks to wait for the write's LSN (kWait).
  SessionStep FinishWrite(WriteResult result, std::string* out);

  // In subscribed mode, the notifications for one commit's keys that match a subscription.
  void Deliver(const std::vector<KeyEvent>& events, std::string* out) const;
  bool subscribed() const { return !channels_.empty() || !patterns_.empty(); }
  // True when Feed stopped at the output bound with commands still buffered: once the output
  // is written, call Feed("") to go on.
  bool more() const { return more_; }

 private:
  SessionStep Run(std::string* out);
  // Runs one command; may ask to close or wait.
  SessionStep Execute(const std::vector<std::string_view>& args, std::string* out);
  // The hash and string reads (GET, HGET, HGETALL, ...): `id` names one of them.
  void Read(RedisCommand id, const std::vector<std::string_view>& args, std::string* out);
  void Subscribe(bool pattern, const std::vector<std::string_view>& args, std::string* out);
  void Unsubscribe(bool pattern, const std::vector<std::string_view>& args, std::string* out);
  void Scan(const std::vector<std::string_view>& args, std::string* out);
  void Keys(std::string_view pattern, std::string* out);
  void Info(std::string* out);
  void AppendHash(const KvRow& row, std::string* out) const;

  KvService* service_;
  std::string in_;
  size_t in_pos_ = 0;
  std::vector<std::string_view> args_;  // the command being run (views into in_)
  std::vector<KvRowPtr> rows_;          // MGET / EXISTS results, kept for their capacity
  KvStore::TableCache tables_;
  bool more_ = false;
  bool resp3_ = false;
  bool authed_ = false;
  std::string pending_reply_;  // a write-through reply, sent once its LSN is applied
  char write_reply_ = ':';     // how the running write-through answers: ":<count>" or "+OK"
  absl::flat_hash_set<std::string> channels_;
  absl::flat_hash_set<std::string> patterns_;
};

class MemcachedSession {
 public:
  explicit MemcachedSession(KvService* service) : service_(service) {}
  SessionStep Feed(std::string_view data, std::string* out);
  bool more() const { return more_; }

 private:
  KvService* service_;
  std::string in_;
  size_t in_pos_ = 0;
  std::vector<std::string_view> tokens_;  // the line being run (views into in_)
  std::vector<KvRowPtr> rows_;            // a multi-key get's results, kept for their capacity
  KvStore::TableCache tables_;
  bool more_ = false;
  size_t skip_ = 0;  // bytes of a storage command's data block still to discard
};

class HttpSession {
 public:
  explicit HttpSession(KvService* service) : service_(service) {}
  SessionStep Feed(std::string_view data, std::string* out);
  SessionStep Resume(bool reached, std::string* out);
  bool more() const { return more_; }

 private:
  struct Request {
    std::string method;
    std::string path;   // decoded later, per segment
    std::string query;  // after '?', raw
    bool keep_alive = true;
    std::string authorization;
    std::string if_none_match;
  };
  SessionStep Run(std::string* out);
  // Answers `request`; returns false when the connection must close after it.
  SessionStep Answer(const Request& request, std::string* out);

  KvService* service_;
  std::string in_;
  size_t in_pos_ = 0;
  KvStore::TableCache tables_;
  bool more_ = false;
  Request waiting_;  // the request a kWait is for
};

// Appends an HTTP/1.1 response with a JSON body.
void AppendHttpResponse(int status, std::string_view body, bool keep_alive,
                        std::string_view extra_headers, bool head, std::string* out);

}  // namespace pgflow
