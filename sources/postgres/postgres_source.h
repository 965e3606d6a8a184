#pragma once

// The PostgreSQL source: logical replication with the built-in pgoutput plugin.
//
// Prepare() checks the server (wal_level, version), resolves the configured tables, warns about
// tables whose updates and deletes cannot be streamed correctly, creates or updates the
// publication and creates the logical slot if missing (exporting its snapshot when the tables
// are to be copied first). Stream() copies the tables when a snapshot is owed (snapshot.h),
// waits until every sink holds the copy, then runs START_REPLICATION from the slot's
// consistent point, decodes every message into typed events, answers keepalives, sends standby
// status updates carrying only the confirmed (durable everywhere) position, and reconnects with
// backoff after a lost connection, resuming after the last transaction it handed on.

#include <memory>
#include <string>

#include "common/postgres/pg_connection.h"
#include "engine/source.h"
#include "schemas/catalog.h"
#include "sources/postgres/postgres_source_config.h"
#include "sources/postgres/snapshot.h"

namespace pgflow {

// Whether the server at `conn` can be a pipeline's source: PostgreSQL 14 or later, wal_level =
// logical. The error says what to change.
absl::Status CheckSourceServer(PGconn* conn);

class PostgresSource : public Source {
 public:
  // `file`: the pipeline file, named in messages that tell the user what to run.
  PostgresSource(std::string pipeline, std::string file,
                 std::shared_ptr<const PostgresSourceOptions> options);
  ~PostgresSource() override;

  absl::StatusOr<Lsn> Prepare() override;
  absl::Status Stream(Emitter& emitter, Acknowledgements acks, const StopSignal& stop) override;
  absl::Status Finish(Acknowledgements acks) override;
  // Drops the replication slot when this process created it (the pgflow schema and the
  // publication stay: they keep nothing); names an older slot that stays.
  void ReleaseUnacknowledged() override;
  // Without a snapshot owed, requests a backfill of every table (as `pgflow snapshot` does);
  // its end is announced to the sinks with kSnapshotDone.
  absl::Status EnsureFullCopy() override;
  void CopyAgainAfterDdl() override { reload_new_columns_ = true; }

 private:
  class StreamState;

  absl::Status CheckServer(PGconn* conn);
  absl::Status CheckTables(PGconn* conn);
  absl::Status EnsurePublication(PGconn* conn);
  // The followed tables (partitions and inheritance children included) that have no primary
  // key nor replica identity index, and are not REPLICA IDENTITY FULL (`keyless`); or the
  // others, without partitions (published through their root): what a publication that skips
  // keyless tables lists.
  absl::StatusOr<std::vector<TableRef>> FollowedTables(PGconn* conn, bool keyless);
  absl::Status SetKeylessIdentityFull(PGconn* conn);
  // keyless_tables: skip. Notes (and logs) the followed tables left out.
  absl::Status NoteSkippedKeylessTables(PGconn* conn);
  bool SkipsKeyless() const { return source_.keyless_tables == KeylessPolicy::kSkip; }
  // The tables copied whole under a snapshot later than the stream's start (SnapshotCopier's
  // copied_as_of), with its position: read from pgflow.snapshot_chunks before streaming.
  absl::Status LoadCopiedAsOf(PGconn* conn);
  // Whether `table`'s rows were copied whole under a snapshot that holds a transaction
  // committed at `commit_lsn` already: its change is skipped.
  // (The exported snapshot of a slot created at C holds exactly the transactions whose commit
  // record starts before C, so the comparison is with the commit's start, as pgoutput's BEGIN
  // gives it; a streamed in-progress or two-phase protocol would have to buffer until then.)
  bool CopiedAfter(const TableSchema& table, Lsn commit_lsn) const {
    // (Asked for every row change: without copies, no name is made.)
    return !copied_as_of_.empty() && CopiedAfter(table.QualifiedName(), commit_lsn);
  }
  bool CopiedAfter(const std::string& qualified_name, Lsn commit_lsn) const {
    if (copied_as_of_.empty()) return false;
    auto it = copied_as_of_.find(qualified_name);
    return it != copied_as_of_.end() && commit_lsn < it->second;
  }
  absl::StatusOr<Lsn> EnsureSlot(PGconn* conn);
  // The slot missing: false when it was never made (a first run); true when it was made and
  // lost (a failover, a restore) and a copy of every table asked for since (`pgflow
  // snapshot`) covers what it would have read; an error naming the gap and the way out
  // otherwise.
  absl::StatusOr<bool> CheckMissingSlot(PGconn* conn);
  // The error of a slot lost: what went unread (after `held`, the sinks' position, when
  // known) and the way out.
  absl::Status MissingSlotError(PGconn* conn, Lsn held);
  // Notes in pgflow.snapshots that the slot was made, at `lsn` (a pipeline without an
  // initial snapshot; one with it records its consistent point there anyway).
  absl::Status RecordSlotMade(PGconn* conn, Lsn lsn);
  absl::Status StartReplication(Lsn from);
  absl::Status RunSnapshot(Emitter& emitter, const ChunkTracker& chunks, const StopSignal& stop);

  const std::string pipeline_;
  const std::string file_;
  std::shared_ptr<const PostgresSourceOptions> options_;
  const PostgresSourceOptions& source_;
  PgConnPtr replication_;
  bool streaming_ = false;  // START_REPLICATION is running on replication_
  Lsn start_;
  // The initial copy still owed before streaming may start, and the snapshot exported with the
  // slot for it (empty: take a new one).
  bool snapshot_owed_ = false;

  int64_t full_copy_backfill_ = 0;  // the backfill EnsureFullCopy asked for, if any
  // A sink holds whole rows and cannot fill a column added with a default (CopyAgainAfterDdl):
  // such a table is copied again.
  bool reload_new_columns_ = false;
  std::string snapshot_name_;
  bool created_slot_ = false;  // EnsureSlot created the slot in this process
  bool streamed_ = false;  // StartReplication succeeded in this process
  std::unique_ptr<SnapshotCopier> copier_;
  absl::flat_hash_map<std::string, Lsn> copied_as_of_;  // by "schema.table" (LoadCopiedAsOf)
  // keyless_tables: skip: the followed tables left out when the pipeline started.
  std::vector<TableRef> skipped_at_start_;
};

}  // namespace pgflow
