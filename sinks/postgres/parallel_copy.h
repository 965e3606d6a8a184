#pragma once

// Snapshot rows copied into the target over several connections at once (why:
// sinks/postgres/README.md, "Initial load"). ParallelCopy keeps `workers` connections, each
// with its own thread and a queue bounded in bytes, and deals the raw binary COPY tuples it is
// given among them; each worker runs `COPY <table> (<columns>) FROM STDIN (FORMAT binary)` in a
// transaction of its own.
//
// Durability goes by snapshot chunk: EndChunk(n) tells every worker to commit what it holds
// and then count chunk n (and every chunk before it) as done; DurableChunkThrough() is the
// lowest such count over the workers. Rows given after a chunk's end belong to later chunks,
// so a chunk is durable exactly when every worker has committed past its end.
//
// Only for tables that were empty when their load started: a chunk copied again after a crash
// would otherwise leave duplicates (the PostgreSQL sink checks this before using it).
// The calling side is one thread (the sink's); workers report their first error to it.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "engine/bounded_queue.h"

namespace pgflow {

// PostgreSQL's binary COPY framing: the signature, flags and header extension (19 bytes), and
// the int16 -1 that ends the data.
inline constexpr char kCopyHeader[] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
inline constexpr size_t kCopyHeaderSize = 19;
inline constexpr char kCopyTrailer[] = "\377\377";
inline constexpr size_t kCopyTrailerSize = 2;

// Rewrites, in binary COPY tuples, the element type OID of the arrays in `columns` (source
// column index, target element type OID; sorted by column) to the target's: binary array data
// names its element type by OID, which differs between databases for types that are not
// built in. DataLoss on malformed data.
absl::Status RewriteArrayElementTypes(std::string* tuples, size_t column_count,
                                      const std::vector<std::pair<size_t, uint32_t>>& columns);

class ParallelCopy {
 public:
  // What a worker needs to know of a target table; immutable, shared by every worker.
  struct Table {
    std::string name;         // "schema.table", for messages
    std::string quoted;       // "schema"."table"
    std::string column_list;  // "a", "b", ... in the order the tuples hold them
    size_t column_count = 0;
    std::vector<std::pair<size_t, uint32_t>> array_elements;  // see RewriteArrayElementTypes
  };

  // `url`: the target. `queue_bytes`: the bound of each worker's queue.
  ParallelCopy(std::string url, int workers, size_t queue_bytes);
  // Stops the workers; whatever they had not committed is rolled back.
  ~ParallelCopy();
  ParallelCopy(const ParallelCopy&) = delete;
  ParallelCopy& operator=(const ParallelCopy&) = delete;

  // Connects every worker (with session_replication_role = replica, as the sink's own
  // connection) and starts their threads. Errors name the target.
  absl::Status Start();

  // Queues `rows` tuples of `table` (whole tuples, no header or trailer) for one worker,
  // blocking while its queue is full. Returns a worker's error, once one has failed.
  absl::Status Add(std::shared_ptr<const Table> table, std::string tuples, uint64_t rows);

  // Every tuple given so far belongs to chunks up to `chunk`: see above.
  absl::Status EndChunk(uint64_t chunk);

  // The highest chunk that every worker has committed through (0: none).
  uint64_t DurableChunkThrough() const;
  // True while a chunk ended has not been committed by every worker.
  bool Pending() const;
  // The first error a worker met, or OK.
  absl::Status status() const;
  // Waits until every worker has done all it was given; then status().
  absl::Status Finish();
  // Tuples committed so far.
  uint64_t rows() const { return rows_.load(); }

 private:
  struct Work {
    std::shared_ptr<const Table> table;  // null: the end of chunk `chunk`
    std::string tuples;
    uint64_t rows = 0;
    uint64_t chunk = 0;
  };
  class Worker;

  void Fail(absl::Status status);

  const std::string url_;
  std::vector<std::unique_ptr<Worker>> workers_;
  size_t next_ = 0;           // the worker the next tuples go to
  uint64_t ended_chunk_ = 0;  // the last chunk given to EndChunk
  std::atomic<uint64_t> rows_{0};

  mutable absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pgflow
