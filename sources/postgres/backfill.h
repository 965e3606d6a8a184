#pragma once

// `pgflow snapshot`: re-copying tables into a pipeline that keeps streaming, exactly.
//
// DBLog's watermark algorithm. A worker copies each table in primary-key order, a chunk at a
// time: it writes a low watermark into the WAL (pg_logical_emit_message), selects the chunk,
// hands the rows over, then writes a high watermark. The stream thread, reading the WAL in
// commit order, notes every key of that table changed between the two watermarks; at the high
// watermark it emits the chunk's rows as `read` events, leaving out the keys it noted (the
// stream already carried those, as new or newer than the select saw them). So every row is
// emitted at a point of the stream where its value is current: no copied row ever overwrites
// a later change, and the stream never stops.
//
// A table without a primary key has no key to leave out: it is copied in CTID ranges (8 MiB of
// heap per chunk), and its first chunk replaces what the sinks hold (a `truncate` event before
// its rows). The stream thread watches the table from the first low watermark to the last high
// one; a change anywhere in that span (the rows it touched may sit in a range copied before or
// after it) voids the copy, which starts over with a new first chunk. After kKeylessAttempts
// copies voided so, the backfill fails, naming the table: it changes too often to be copied
// exactly without a key.
//
// Requests travel in the WAL too: `pgflow snapshot` records one in pgflow.backfills and writes
// a 'pgflow.backfill' message in the same transaction, so the pipeline starts it at its place
// in the stream, and finds it again after a restart.

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/postgres/pg_connection.h"
#include "common/postgres/table_ref.h"
#include "engine/change.h"
#include "sources/postgres/snapshot.h"

namespace pgflow {

inline constexpr char kBackfillPrefix[] = "pgflow.backfill";
inline constexpr char kWatermarkPrefix[] = "pgflow.watermark";

// Records a backfill request of `tables` ("schema.table" or "schema.*"; empty: every table of
// the pipeline) for `pipeline` and announces it in the WAL. Returns its id.
absl::StatusOr<int64_t> RequestBackfill(const std::string& url, const std::string& pipeline,
                                        const std::vector<TableRef>& tables);

struct BackfillStatus {
  bool started = false;
  bool finished = false;
  int64_t rows = 0;
  std::string error;  // empty unless it failed
};
absl::StatusOr<BackfillStatus> GetBackfillStatus(PGconn* conn, int64_t id);

// One backfill running beside the stream. The worker thread is its own; every other method is
// for the stream thread.
class Backfill {
 public:
  struct Options {
    std::string url;
    int64_t id = 0;
    std::vector<TableRef> tables;
    size_t chunk_rows = 10000;
    bool skip_keyless = false;  // keyless_tables: skip: tables without a key are not copied
  };

  explicit Backfill(Options options);
  ~Backfill();  // stops and joins the worker

  int64_t id() const { return options_.id; }

  // A watermark message of this backfill: "<run>:<chunk>:low|high". Others are ignored.
  struct Watermark {
    uint64_t chunk = 0;
    bool high = false;
  };
  std::optional<Watermark> ParseWatermark(std::string_view content) const;

  void OpenWindow(uint64_t chunk);
  // True while a window is open on the table with this relation id.
  bool Watches(uint32_t relation_id) const;
  // Notes a streamed change of the watched table: `row` is in `table`'s column order (the
  // key is read from it by column name).
  void NoteChanged(const TableSchema& table, const Row& row);
  // The watched table was truncated in the window: none of the chunk's rows may be emitted.
  void NoteTruncated() {
    truncated_ = true;
    keyless_changed_ = true;
  }

  struct Chunk {
    TableSchemaPtr table;
    std::vector<Row> rows;  // without the keys changed in the window
    bool replace = false;   // emit a `truncate` of the table first (a keyless table's first chunk)
    bool last = false;      // the backfill's final chunk
  };
  // Closes the window of `chunk` and returns its rows to emit now.
  absl::StatusOr<Chunk> CloseWindow(uint64_t chunk);

  // The worker's failure, if any (the backfill is then abandoned; the stream goes on).
  absl::Status error() const;

 private:
  struct Copied {
    uint64_t chunk = 0;
    TableSchemaPtr table;
    std::vector<std::string> key_columns;  // none: a keyless table, copied by CTID range
    std::vector<Row> rows;
    std::vector<std::string> keys;
    bool replace = false;     // a keyless table's first chunk
    bool table_last = false;  // the table's final chunk
    bool last = false;
  };

  static constexpr int kKeylessAttempts = 5;
  // A table whose columns change while it is copied is described and copied again, as long
  // as each description differs from the last (the table really changes: ALTER TABLE after
  // ALTER TABLE); the same columns failing kSameShapeAttempts times in a row, or
  // kDescribeAttempts descriptions in all, end the backfill with the error.
  static constexpr int kSameShapeAttempts = 3;
  static constexpr int kDescribeAttempts = 100;
  static constexpr uint32_t kKeylessChunkPages = 1024;

  void Work();
  absl::Status CopyAll();
  // Copies one table by primary key, or (keyless) by CTID range; false in *done when the
  // stream thread voided a keyless copy.
  absl::Status CopyTable(PGconn* conn, const TableReader& reader, const std::string& from,
                         bool last_table, uint64_t* chunk, bool* done);
  // One chunk: the low watermark, the COPY of `select`, the hand-over, the high watermark;
  // returns once the stream thread took the rows. `key_fields` trailing fields of each row are
  // its key (their text kept in *last_key).
  absl::Status CopyChunk(PGconn* conn, const TableReader& reader, const std::string& select,
                         Copied copied, std::vector<std::string>* last_key, size_t* rows,
                         bool* voided);
  absl::Status AwaitEarlierCommits(PGconn* conn);

  Options options_;
  std::string run_;  // distinguishes this run's watermarks from any replayed older ones
  std::thread worker_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // guarded by mu_: what the next window watches, announced before its low watermark
  uint64_t announced_chunk_ = 0;
  uint32_t announced_relation_ = 0;
  std::vector<std::string> announced_key_;
  bool announced_replace_ = false;
  bool voided_ = false;          // guarded by mu_: the stream thread voided the keyless copy
  std::optional<Copied> ready_;  // guarded by mu_: handed over before the high watermark
  bool taken_ = false;           // guarded by mu_: the stream thread took ready_
  bool stop_ = false;            // guarded by mu_
  absl::Status error_;           // guarded by mu_

  // Stream-thread state.
  uint64_t open_chunk_ = 0;
  uint32_t watched_relation_ = 0;
  std::vector<std::string> watched_key_;  // key column names of the watched table
  absl::flat_hash_set<std::string> changed_;
  bool truncated_ = false;
  // A keyless table is watched from its copy's first low watermark to its last high one.
  bool keyless_span_ = false;
  bool keyless_changed_ = false;
};

}  // namespace pgflow
