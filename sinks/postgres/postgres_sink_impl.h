#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "common/postgres/dead_letter_table.h"
#include "common/postgres/postgres_origin.h"
#include "common/postgres/table_ref.h"
#include "engine/change.h"
#include "engine/lsn.h"
#include "engine/registry.h"
#include "engine/sink.h"
#include "engine/transactional_sink.h"
#include "sinks/postgres/parallel_copy.h"
#include "sinks/postgres/postgres_sink.h"
#include "sinks/postgres/row_writer.h"
#include "sinks/postgres/target_session.h"
#include "sinks/postgres/target_table.h"
#include "sinks/postgres/target_tables.h"

namespace pgflow {

// The `postgres` sink (sinks/postgres/postgres_sink.h): applies the stream to a PostgreSQL
// target. It dispatches the events, groups consecutive source transactions into one target
// transaction and records how far it applied in pgflow.applied, hands the initial load's raw
// rows to parallel loaders, replays DDL, and sets refused changes aside (dead_letter). The
// work is done by the parts it owns: the connection (TargetSession), the tables
// (TargetTables) and the rows not sent yet (RowWriter). How it all fits:
// sinks/postgres/README.md.
//
// Built by the factory registered by RegisterPostgresSink(); the engine calls it from one
// thread, as engine/sink.h says. Errors: an unreachable target is kUnavailable; a statement the
// target refuses is an error naming the table, the row's key and PostgreSQL's message; with
// dead_letter, a refused streamed change is kAborted (the pipeline starts again from the
// acknowledged position).
class PostgresSink : public TransactionalSink {
 public:
  // `context`: the sink's name, its ddl.mode (DDL is replayed only under kApply), the source's
  // positions and, for a PostgreSQL source, where it is; `options`: shared, immutable.
  PostgresSink(const SinkContext& context, std::shared_ptr<const PostgresSinkOptions> options);
  PostgresSink(const PostgresSink&) = delete;
  PostgresSink& operator=(const PostgresSink&) = delete;

  absl::Status Open() override;
  uint64_t DeadLettered() const override { return dead_letters_.load(); }
  absl::Status Write(const Event& event) override {
    absl::Status s = TransactionalSink::Write(event);
    return s.ok() ? s : Refused(std::move(s));
  }
  absl::Status Flush() override {
    absl::Status s = FlushGroup();
    return s.ok() ? s : Refused(std::move(s));
  }
  // While source transactions applied in the open target transaction wait for its commit
  // (a Flush came in the middle of the next source transaction), only what is committed.
  // While parallel loaders have not committed a chunk they were given, chunks are tracked
  // apart (DurableChunkThrough), and every position written is durable.
  std::optional<Lsn> DurableThrough() const override {
    if (group_txns_ > 0) return applied_;
    if (loaders_ != nullptr && loaders_->Pending()) return written_;
    return std::nullopt;
  }
  uint64_t DurableChunkThrough() const override {
    return loaders_ != nullptr ? loaders_->DurableChunkThrough() : 0;
  }
  absl::Status Close() override;
  bool AcceptsRawCopy() const override { return true; }

 protected:
  // Event dispatch (engine/transactional_sink.h) and the grouping of source transactions into
  // target transactions.
  absl::Status BeforeEvent(const Event& event) override;
  absl::Status OnBegin(const TxnInfo& txn) override;
  absl::Status OnChange(const Change& change, bool in_txn) override;
  absl::Status OnCommit(const TxnInfo& txn) override;
  absl::Status OnRollback() override;
  absl::Status OnPosition(Lsn position) override;
  absl::Status OnChunkDone(uint64_t chunk, const TableSchemaPtr& table) override;
  absl::Status OnSnapshotDone() override;
  absl::Status OnRawRows(const Event& event) override;
  // With WAL positions, source transactions that ended at or below it are skipped.
  Lsn AppliedThrough() const override { return applied_; }

 private:
  absl::Status FlushGroup();
  absl::Status ApplyChange(const Change& change);
  // Replays a captured schema change (sinks/postgres/ddl_replay.h) in the target transaction.
  absl::Status ApplyDdl(const Change& change);
  absl::Status ReplayConstraint(const ConstraintReplay& c, const DdlCommand& cmd, Lsn lsn);
  // Opens a target transaction if none is open.
  absl::Status EnsureTransaction();
  // Sends what the writer holds, then commits the open target transaction, if any, recording
  // in pgflow.applied the end LSN of the last source transaction it holds.
  absl::Status CommitTransaction();
  // Forgets the rows of the current source transaction not sent yet (batches, staged net
  // changes, a COPY under way, ended with `why`) and the tables known, as a rollback needs.
  void DiscardTransactionRows(const char* why);

  // The initial load.
  absl::Status WriteRawRows(const Event& event);
  // Hands snapshot rows of `table` (fast path, initial snapshot) to the parallel loaders,
  // starting them first if needed.
  absl::Status LoadInParallel(TargetTable* table, const Event& event);
  // The initial load is complete: builds what was deferred and copies the sequences.
  absl::Status FinishSnapshot(bool copy_sequences);

  // Refused rows (`dead_letter:`, dead_letter_). `s` failed a Write or a Flush: when it is the
  // target refusing a streamed change (SQLSTATE class 22 or 23) outside the careful
  // transactions, the target transaction rolls back, careful_until_ is stored in
  // pgflow.applied, and kAborted asks for a start from the acknowledged position. Otherwise
  // `s` as it is.
  absl::Status Refused(absl::Status s);
  // Applies `change` of a careful transaction: a row change alone under a savepoint, set aside
  // in the dead-letter record if the target refuses it; anything else as usual, at once.
  absl::Status ApplyCarefully(const Change& change);
  absl::Status RecordDeadLetter(const TargetTable& table, const Change& change,
                                const absl::Status& refusal);
  // Where refused changes go, for messages.
  std::string DeadLetterPlace() const;

  PGconn* conn() { return session_.conn(); }
  std::string TargetName() const { return session_.TargetName(); }

  const std::string sink_name_;
  const std::string pipeline_;
  // The PostgreSQL database the pipeline reads: tables are created from its catalog, sequences
  // copied from it. Null otherwise (events read back from Kafka): from the shape events carry.
  const std::shared_ptr<const PostgresOrigin> origin_;
  // Positions are WAL positions (SourcePositions::kWal): the applied one is stored in
  // pgflow.applied and transactions at or below it are skipped after a restart. Otherwise
  // nothing is skipped: every change is applied as an idempotent upsert or delete by key.
  const bool wal_positions_;
  const std::shared_ptr<const PostgresSinkOptions> options_;
  const DdlMode ddl_mode_;
  const bool replay_constraints_;  // ddl.exclude does not name "table constraint"
  // `dead_letter:`. A table without a url is in the target, written in the data's target
  // transaction (dead_letter_table_); otherwise a store of its own (dead_letter_store_).
  const SinkContext context_;
  const bool dead_letter_;
  std::optional<TableRef> dead_letter_table_;
  std::unique_ptr<DeadLetterStore> dead_letter_store_;

  // Between a source kBegin and its kCommit/kRollback; read by writer_ too.
  bool in_source_txn_ = false;
  // The parts, each using those before it.
  TargetSession session_;
  TargetTables tables_;
  RowWriter writer_;

  Lsn applied_;  // end LSN of the last source transaction committed in the target
  Lsn written_;  // the last acknowledgeable position written
  // Loaders copying the initial snapshot's rows over connections of their own
  // (options_->load_workers), from the first rows of a table that was empty until the
  // snapshot is done.
  std::unique_ptr<ParallelCopy> loaders_;
  // Refused rows: source transactions whose commit LSN is at most careful_until_ (read from
  // pgflow.applied) are applied a change at a time, each in a target transaction of its own
  // (careful_txn_: the current one is). last_begun_: the commit LSN of the last source
  // transaction begun, which a refusal makes the new careful_until_.
  Lsn careful_until_;
  Lsn last_begun_;
  bool careful_txn_ = false;
  std::atomic<uint64_t> dead_letters_{0};  // read by the metrics from another thread
  // Source transactions are grouped into one target transaction, committed at Flush (or
  // before snapshot rows, or once the group is large): those complete in the open target
  // transaction, their changes, and the end LSN of the last one.
  uint64_t group_txns_ = 0;
  uint64_t group_changes_ = 0;
  Lsn group_applied_;
  // A Flush came in the middle of a source transaction: commit once it is complete.
  bool commit_soon_ = false;

  uint64_t transactions_ = 0;
  uint64_t loaded_rows_ = 0;  // copied by the parallel loaders
  uint64_t changes_ = 0;
};

}  // namespace pgflow
