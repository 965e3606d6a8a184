#pragma once

// The initial copy of a pipeline's tables: PeerDB's CTID-range method, made exact.
//
// All workers read under one exported snapshot, so the copy is the database as of one instant
// (the slot's consistent point when the slot was created with it). Each table is cut into
// ranges of heap pages sized in bytes; every range is read by
//   COPY (SELECT cols FROM ONLY t WHERE ctid >= '(a,0)' AND ctid < '(b,0)') TO STDOUT (FORMAT
//   binary)
// (a TID range scan), the last range of a table left open so rows on pages added since the size
// was read are not missed. All tables' ranges share one queue, largest tables first.
//
// Progress is durable: the plan is stored in the source (pgflow.snapshot_chunks) and a chunk is
// marked done once every sink holds it, so a crash resumes with the chunks still to do.

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/postgres/pg_connection.h"
#include "common/postgres/table_ref.h"
#include "engine/source.h"
#include "schemas/table_schema.h"
#include "sources/postgres/table_reader.h"

namespace pgflow {

// One range of heap pages of one relation to copy.
struct SnapshotChunk {
  std::string table_schema;  // the published table the rows belong to (the root of a
  std::string table_name;    // partitioned table)
  std::string leaf_schema;   // the relation actually read (a leaf partition, or the table)
  std::string leaf_name;
  uint32_t first_page = 0;
  std::optional<uint32_t> end_page;  // exclusive; nullopt: to the end of the relation
  uint64_t bytes = 0;                // estimated heap bytes, for progress

  std::string TableName() const { return table_schema + "." + table_name; }
};

// Cuts a relation of `pages` heap pages into chunks of at most `pages_per_chunk`, which shrink
// toward the relation's end (guided scheduling): each takes at most a 1/(2 × workers) share of
// the pages still to cut, and at least `min_pages` (or what is left). Where chunks of one size
// leave a single worker reading a last large chunk while the others wait, the workers here
// finish the relation within a small chunk of each other. The last chunk is open-ended (an
// empty relation gets one open chunk). Pure; exposed for tests.
std::vector<SnapshotChunk> CutIntoChunks(const SnapshotChunk& relation, uint32_t pages,
                                         uint32_t pages_per_chunk, uint32_t min_pages, int workers,
                                         uint32_t block_size);

// The SQL pgflow keeps its snapshot progress in, in the source database. Idempotent.
absl::Status EnsureSnapshotState(PGconn* conn);

// Forgets that `pipeline`'s slot was made (pgflow.snapshots' consistent point), for whoever
// drops it on purpose: the next run's slot is then a first one, not one lost in a failover.
absl::Status ForgetSlotMade(PGconn* conn, const std::string& pipeline);

// A snapshot exactly as of a WAL position, apart from a pipeline's slot: a temporary logical
// slot's, exported when it is created. It holds every transaction that committed before
// `as_of` and none after (what logical decoding from `as_of` would send), so a stream can tell
// the changes a copy under it holds by their commit LSN. Valid while `holder` (the slot's
// replication connection, which drops the slot when it closes) stays open and unused: close
// it once the snapshot is imported. Creating the slot waits for the transactions in progress
// to end, and needs a free replication slot and WAL sender.
struct ExactSnapshot {
  PgConnPtr holder;
  std::string name;
  Lsn as_of;
};
absl::StatusOr<ExactSnapshot> TakeExactSnapshot(const std::string& url, const std::string& pipeline);

// Runs one snapshot to its end (or until stopped), emitting `read` changes and one
// kChunkDone per chunk, and recording chunks durable in every sink as done.
class SnapshotCopier {
 public:
  struct Options {
    std::string url;
    std::string pipeline;
    std::vector<TableRef> tables;
    int workers = 1;
    uint64_t chunk_bytes = 64ull << 20;
    Lsn position;  // the LSN `read` events carry (the slot's consistent point)
    // When the snapshot is not the one the slot exported at `position` but a later one taken
    // apart from it (a resumed copy, or `pgflow init` some time before the first run): the
    // position it is exactly as of (a temporary slot's consistent point). A table copied
    // whole under it is recorded with it (pgflow.snapshot_chunks.as_of): the stream skips
    // that table's changes committed before it, which the copy holds already. A fresh plan
    // records it for every table; a resumed one copies its tables without a key again whole
    // (after a truncate of what the sinks hold of them), since the stream cannot make their
    // rows copied under the first snapshot meet the rest exactly.
    Lsn copied_as_of;
    // Which tables' rows go on as raw COPY data (EventKind::kRawRows); none when empty.
    std::function<bool(const TableSchema&)> raw;
    bool record_progress = true;  // keep the plan and finished chunks in pgflow.snapshot_chunks
    bool skip_keyless = false;    // keyless_tables: skip: tables without a key are not copied
  };

  explicit SnapshotCopier(Options options);

  // Copies every chunk not yet done under snapshot `snapshot_name` (which some connection must
  // keep alive until this returns... or at least until every worker imported it: `imported`
  // is called then). Plans first when no plan is stored.
  // Returns OK when every chunk is durable in every sink (or when stopped: then the chunks
  // still owed stay recorded as not done).
  absl::Status Run(const std::string& snapshot_name, const std::function<void()>& imported,
                   Emitter& emitter, const ChunkTracker& chunks, const StopSignal& stop);

  // Records the chunks `chunks` now confirms (after the pipeline drained). Call once at the end.
  absl::Status RecordDurable(const ChunkTracker& chunks);

  bool finished() const { return finished_; }
  // Whether any batch went to the sinks: rows, a truncate, a chunk's end.
  bool emitted() const { return emitted_.load(std::memory_order_relaxed); }

  // The tables without a key a resumed snapshot copied again whole (Options::copied_as_of).
  const std::vector<std::string>& recopied_keyless() const { return recopied_keyless_; }

 private:
  struct Worker;
  struct Shared;
  struct Progress;

  // Run's steps, in order.
  // Connects state_conn_, and a planner connection in a transaction under the snapshot.
  absl::StatusOr<PgConnPtr> OpenPlanner(const std::string& snapshot_name);
  // Loads the stored plan into `shared`, or plans anew; returns the tables to truncate in the
  // sinks before any row (RecopyKeyless).
  absl::StatusOr<std::vector<TableSchemaPtr>> PreparePlan(PGconn* planner, Shared* shared);
  // The progress of every table, counting what earlier runs copied (done_before_).
  Progress PlannedProgress(const std::vector<SnapshotChunk>& plan) const;
  // A reader for every table of the plan, described under the snapshot.
  absl::Status DescribeTables(PGconn* planner, Shared* shared) const;
  static void OrderLargestFirst(Shared* shared);
  // Hands on what the workers copy, each chunk's end marked, until all `workers` finished
  // (true) or the copy is stopped (false). The first error of a worker, or of recording.
  absl::StatusOr<bool> HandOn(Shared* shared, int workers, Emitter& emitter,
                              const ChunkTracker& chunks, const StopSignal& stop,
                              Progress* progress, uint64_t* ordinal);
  // Waits until every sink holds the `ordinal` chunks handed on, records them, and tells the
  // sinks the copy is complete (kSnapshotDone). OK when stopped meanwhile too.
  absl::Status Conclude(Emitter& emitter, const ChunkTracker& chunks, const StopSignal& stop,
                        uint64_t ordinal, Progress* progress);

  absl::StatusOr<std::vector<SnapshotChunk>> Plan(PGconn* snapshot_conn, PGconn* state_conn);
  absl::StatusOr<std::vector<SnapshotChunk>> LoadPlan(PGconn* state_conn);
  // A resumed plan under a snapshot apart from the slot's: the tables without a key (as the
  // snapshot describes them) get every chunk back into `shared->plan`, recorded not done and
  // as of Options::copied_as_of; their schemas, to be truncated in the sinks first.
  absl::StatusOr<std::vector<TableSchemaPtr>> RecopyKeyless(PGconn* snapshot_conn, Shared* shared);
  // Hands `truncated`'s truncates on, ahead of every row, with a chunk mark of their own (a
  // PostgreSQL target commits them before its loaders write the tables again).
  absl::Status EmitTruncates(const std::vector<TableSchemaPtr>& truncated, Emitter& emitter,
                             const StopSignal& stop, uint64_t* ordinal);

  Options options_;
  PgConnPtr state_conn_;
  // Ordinal (1-based, in emission order) -> chunk, for chunks emitted but not yet recorded.
  std::vector<std::pair<uint64_t, SnapshotChunk>> unrecorded_;
  std::vector<std::pair<uint64_t, uint64_t>> unrecorded_rows_;
  // Chunks an earlier run finished, with their row counts (for progress only).
  std::vector<std::pair<SnapshotChunk, uint64_t>> done_before_;
  std::vector<std::string> recopied_keyless_;
  bool finished_ = false;
  std::atomic<bool> emitted_{false};
};

}  // namespace pgflow
