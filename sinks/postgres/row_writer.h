#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/change.h"
#include "sinks/postgres/net_changes.h"
#include "sinks/postgres/postgres_sink.h"
#include "sinks/postgres/row_batch.h"
#include "sinks/postgres/target_session.h"
#include "sinks/postgres/target_table.h"
#include "sinks/postgres/target_tables.h"

namespace pgflow {

// Writes the rows of the postgres sink's changes into the target, in the open target
// transaction, as few statements as keep the stream's outcome:
//  - consecutive changes of one kind to one table go out together (RowBatch): multi-row
//    upserts, updates, deletes, and decoded snapshot rows by binary COPY into a staging table;
//  - raw snapshot rows by binary COPY, straight into an empty table or through a staging table;
//  - the changes of a table whose key is its only uniqueness rule, within a source transaction,
//    are folded into their net effect (sinks/postgres/net_changes.h), per source transaction
//    and then per group of transactions, and sent as multi-row statements;
//  - the batches of a source transaction that joined a group are held back until its kCommit
//    (up to 20,000 rows), so that one cut off needs no savepoint.
// The sink decides when statements must be out (FinishStatements, SendStaged) and owns the
// transaction; this owns what is not sent yet. Statements go through the sink's TargetSession,
// whose before-statement hook must call SendHeldBack(). Errors name the target, the table and
// the row's key. Not thread-safe: the sink's thread only.
class RowWriter {
 public:
  // `session` and `tables` outlive this. `in_source_txn` is the sink's flag, true between a
  // source transaction's kBegin and its kCommit or kRollback; it outlives this too.
  RowWriter(TargetSession& session, TargetTables& tables, std::string sink_name,
            std::shared_ptr<const PostgresSinkOptions> options, const bool& in_source_txn);
  RowWriter(const RowWriter&) = delete;
  RowWriter& operator=(const RowWriter&) = delete;

  // What must reach the target before any other statement: the net changes of the group's
  // complete transactions before the current transaction takes its savepoint, then the
  // held-back batches. The session's before-statement hook.
  absl::Status SendHeldBack();

  // The target table of `schema` (TargetTables::Find or Load), after sending what is held back
  // that points at the entry a Load replaces.
  absl::StatusOr<TargetTable*> Table(const TableSchemaPtr& schema);

  // Applies a kRead, kInsert, kUpdate, kDelete or kTruncate change in stream order: after the
  // batches of other tables or kinds, queued, folded or sent as its table and kind allow.
  // Opens the target transaction if none is open.
  absl::Status Apply(const Change& change);
  // Queues an insert (upsert), update or delete of `table` into its batch, or applies it at
  // once when it cannot be batched.
  absl::Status Queue(TargetTable* table, const Change& change);
  // Ends the COPY in progress and sends the batches (the held-back ones stay held back).
  absl::Status FinishStatements();
  // Sends the held-back batches, in order (under the savepoint when the source transaction is
  // not complete yet).
  absl::Status ReleaseDeferred();
  // Sends the staged net changes: those of the complete transactions of the group first
  // (never under the current transaction's savepoint), then the current transaction's.
  // Whatever follows in the target then comes after them.
  absl::Status SendStaged();

  // Raw snapshot rows (EventKind::kRawRows). Whether a COPY of rows shaped by `schema` is in
  // progress, which CopyRows continues.
  bool Copying(const TableSchema* schema) const {
    return copy_table_ != nullptr && copy_schema_ == schema;
  }
  // Starts a COPY into `table` of rows shaped by `schema`: straight in when the table was
  // empty (TargetTables::PrepareSnapshotLoad), else into its staging table, upserted when the
  // COPY ends. REQUIRES: an open target transaction, nothing in flight.
  absl::Status StartCopy(TargetTable* table, const TableSchema* schema);
  // Copies the tuples of `event` (whole binary COPY tuples). REQUIRES: Copying().
  absl::Status CopyRows(const Event& event);
  // Ends the COPY in progress, if any, as failed with `why`, and forgets it.
  void AbortCopy(const char* why);

  // The current source transaction is complete: its net changes join the group's.
  void EndSourceTransaction();
  // A large group goes out while it grows, between two source transactions: once 8,192 rows
  // of it are staged, they are sent.
  absl::Status SendAhead();
  // Forgets the group's net changes: its target transaction rolled back.
  void DropGroup() { group_net_.clear(); }
  // Forgets the rows of the current source transaction not sent yet (batches, held-back
  // batches, staged net changes, a COPY under way, ended with `why`), as a rollback needs.
  void Discard(const char* why);

  // Snapshot rows copied into the target so far.
  uint64_t copied_rows() const { return copied_rows_; }

 private:
  // Net changes of one table, not yet sent.
  struct Staged {
    std::shared_ptr<TargetTable> table;
    NetChanges changes;
  };

  // Before the current source transaction's first statement takes its savepoint: the net
  // changes of the group's complete transactions go first, outside it (a cut-off transaction
  // rolls back to its savepoint and must not take them along).
  absl::Status SendGroupFirst();
  // Whether `table`'s changes may be folded; checks the target once (see TargetTable).
  absl::StatusOr<bool> Foldable(TargetTable* table);
  // Folds an insert, update or delete of the current source transaction into its net changes;
  // false when it cannot be folded (sent what is staged; the caller applies it alone).
  absl::StatusOr<bool> Stage(TargetTable* table, const Change& change);
  // Sends the net changes of `staged` and empties it: per table, its deletes, its updates
  // (rows with values unknown) and its upserts, in multi-row statements, pipelined; an update
  // batch that finds fewer rows than it held is warned of when its result is read.
  absl::Status SendNet(std::vector<Staged>& staged);
  absl::Status EndCopy();

  // Decoded snapshot rows (`read` changes) of one table go by binary COPY into its read stage
  // and from there into the table in one INSERT ... SELECT (an upsert once the table held
  // rows): a row whose values do not come in the forms the stage expects is upserted alone.
  absl::Status QueueRead(TargetTable* table, const Change& change);
  absl::Status FlushReads();
  absl::Status QueueUpsert(TargetTable* table, const Change& change);
  absl::Status FlushInserts();
  absl::Status SendUpserts(TargetTable* table, std::vector<Row> rows, bool once = false);
  // Queues an update into the batch of consecutive updates of one table that set the same
  // columns (or applies it at once, for a table without a key).
  absl::Status QueueUpdate(TargetTable* table, const Change& change);
  absl::Status FlushUpdates();
  absl::Status SendUpdates(TargetTable* table, std::vector<PendingUpdate> rows,
                           std::vector<size_t> columns);
  // Sends one multi-row UPDATE of `rows` setting `columns` (pipelined); *affected (if given)
  // gets the number of rows it found once drained, and with `warn_missing` the drain warns
  // of the rows it did not find.
  absl::Status SendUpdateBatch(const TargetTable& table, const std::vector<PendingUpdate>& rows,
                               const std::vector<size_t>& columns, uint64_t* affected, bool once,
                               bool warn_missing = false);
  // Applies one update: `old_row` finds the row, `after` holds the new values.
  absl::Status ApplyUpdate(TargetTable* table, const Row& old_row, const Row& after);
  // Queues a delete into the batch of consecutive deletes of one table (or applies it at once,
  // for a table without a key).
  absl::Status QueueDelete(TargetTable* table, const Change& change);
  absl::Status FlushDeletes();
  absl::Status SendDeletes(TargetTable* table, std::vector<Row> rows, bool once = false);
  absl::Status ApplyDelete(TargetTable* table, const Change& change);
  // Whether a batch of `rows` of the current source transaction is held back (see deferred_).
  bool Deferring(size_t rows) const;
  // Takes `batch` out to deferred_ when Deferring(); false, leaving it, otherwise.
  bool Defer(RowBatch& batch);

  TargetSession& session_;
  TargetTables& tables_;
  const std::string sink_name_;
  const std::shared_ptr<const PostgresSinkOptions> options_;
  const bool& in_source_txn_;

  // The COPY of raw snapshot rows in progress, if any.
  TargetTable* copy_table_ = nullptr;
  const TableSchema* copy_schema_ = nullptr;
  uint64_t copy_rows_ = 0;
  uint64_t copied_rows_ = 0;

  // Consecutive changes of one table, not yet sent: decoded snapshot rows (as binary COPY
  // tuples for its read stage), upserts, updates setting the same columns, deletes (of a
  // keyed table: the old rows).
  RowBatch reads_{RowBatch::Kind::kRead};
  RowBatch inserts_{RowBatch::Kind::kUpsert};
  RowBatch updates_{RowBatch::Kind::kUpdate};
  RowBatch deletes_{RowBatch::Kind::kDelete};

  // The batches of a source transaction that joined a group, held back until its kCommit:
  // sent then, it needs no SAVEPOINT (which costs the target a subtransaction) to be undone
  // alone if it is cut off, since nothing of it was sent. Past kDeferRows rows, or before
  // anything that must go out at once (DDL, a keyless row, TRUNCATE), they are sent under the
  // savepoint as before.
  static constexpr size_t kDeferRows = 20000;
  std::vector<RowBatch> deferred_;
  size_t deferred_rows_ = 0;

  // Net changes of foldable tables, not yet sent: those of the source transactions complete
  // in the open target transaction (group_net_) and those of the current one (txn_net_),
  // which is dropped if the transaction is cut off. One entry per table, in first-seen order.
  std::vector<Staged> group_net_;
  std::vector<Staged> txn_net_;
  size_t txn_folded_ = 0;  // changes folded into txn_net_ since it was last sent
};

}  // namespace pgflow
