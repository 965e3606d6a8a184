#include "sinks/postgres/postgres_sink.h"

#include <libpq-fe.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "engine/log.h"
#include "engine/pg_connection.h"
#include "engine/sink.h"
#include "nlohmann/json.hpp"
#include "schemas/json_encoding.h"
#include "sinks/postgres/create_table.h"
#include "sinks/postgres/ddl_replay.h"
#include "sinks/postgres/net_changes.h"
#include "sinks/postgres/parallel_copy.h"
#include "sinks/postgres/parallel_statements.h"
#include "sinks/postgres/row_batch.h"
#include "sinks/postgres/sequences.h"
#include "sinks/postgres/sql_builders.h"
#include "sinks/postgres/statement_params.h"
#include "sinks/postgres/table_definition.h"
#include "sinks/postgres/target_session.h"
#include "sinks/postgres/target_table.h"
#include "sinks/postgres/target_tables.h"

namespace pgflow {
namespace {

constexpr OptionSpec kOptions[] = {
    {"url", "string", true, "", "PostgreSQL URL or conninfo of the target database"},
    {"schema", "string", false, "",
     "target schema for every table (default: the source table's own schema)"},
    {"batch_rows", "int", false, "1000", "rows per multi-row INSERT statement"},
    {"create_tables", "bool", false, "true",
     "create a table missing from the target from the source's columns and primary key"},
    {"dead_letter", "bool", false, "false",
     "record a streamed change the target refuses (a constraint, a value it rejects) in "
     "pgflow.dead_letters and go on, instead of stopping"},
    {"load_workers", "int", false, "2",
     "connections that copy the initial snapshot into the target at once (into tables that "
     "were empty), then build its indexes at once"},
    {"maintenance_work_mem", "string", false, "256MB",
     "memory for building the keys and indexes after the load (raised to this for the sink's "
     "session, never lowered)"},
};

constexpr uint32_t kFirstNonBuiltinOid = 16384;
constexpr size_t kMaxParams = 65535;

class PostgresSink : public Sink {
 public:
  PostgresSink(std::string sink_name, const PipelineConfig& pipeline,
               std::shared_ptr<const PostgresSinkOptions> options, DdlMode ddl_mode)
      : sink_name_(std::move(sink_name)),
        pipeline_(pipeline.name),
        source_(pipeline.source),
        source_is_postgres_(pipeline.source_type == "postgres"),
        wal_positions_(pipeline.positions == SourcePositions::kWal),
        options_(std::move(options)),
        ddl_mode_(ddl_mode),
        session_(options_->url, sink_name_),
        tables_(session_, sink_name_, pipeline_, source_.url, source_is_postgres_, options_) {
    // What is held back goes out before anything else is sent.
    session_.SetBeforeStatement([this]() -> absl::Status {
      if (absl::Status s = SendGroupFirst(); !s.ok()) return s;
      return ReleaseDeferred();
    });
  }

  absl::Status Open() override;
  absl::Status Write(const Event& event) override {
    absl::Status s = WriteEvent(event);
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

 private:
  PGconn* conn() { return session_.conn(); }
  absl::Status WriteEvent(const Event& event);
  absl::Status FlushGroup();
  // Forgets the rows of the current source transaction not sent yet (batches, staged net
  // changes, a COPY under way, ended with `why`) and the tables known, as a rollback needs.
  void DiscardTransactionRows(const char* why);

  // Refused rows (options_->dead_letter). `s` failed a Write or a Flush: when it is the
  // target refusing a streamed change (SQLSTATE class 22 or 23) outside the careful
  // transactions, the target transaction rolls back, careful_until_ is stored in
  // pgflow.applied, and kAborted asks for a start from the acknowledged position. Otherwise
  // `s` as it is.
  absl::Status Refused(absl::Status s);
  // Applies `change` of a careful transaction: a row change alone under a savepoint, set aside
  // in pgflow.dead_letters if the target refuses it; anything else as usual, at once.
  absl::Status ApplyCarefully(const Change& change);
  absl::Status RecordDeadLetter(const TargetTable& table, const Change& change,
                                const absl::Status& refusal);
  std::string TargetName() const { return session_.TargetName(); }

  // The target table of `schema`, loaded (and created) after sending what is held back that
  // points at the entry it replaces.
  absl::StatusOr<TargetTable*> EnsureTable(const TableSchemaPtr& schema);

  // The initial load is complete: builds what was deferred and copies the sequences.
  absl::Status FinishSnapshot(bool copy_sequences);

  // Before the current source transaction's first statement takes its savepoint: the net
  // changes of the group's complete transactions go first, outside it (a cut-off transaction
  // rolls back to its savepoint and must not take them along).
  absl::Status SendGroupFirst();

  // Opens a target transaction if none is open.
  absl::Status EnsureTransaction();
  // Ends the COPY in progress and writes the buffered inserts, updates and deletes.
  absl::Status FinishStatements();
  // Commits the open target transaction, if any, after FinishStatements(), recording in
  // pgflow.applied the end LSN of the last source transaction it holds.
  absl::Status CommitTransaction();

  absl::Status WriteRawRows(const Event& event);
  // Hands snapshot rows of `table` (fast path, initial snapshot) to the parallel loaders,
  // starting them first if needed.
  absl::Status LoadInParallel(TargetTable* table, const Event& event);
  absl::Status StartCopy(TargetTable* table);
  absl::Status EndCopy();

  absl::Status ApplyChange(const Change& change);
  // Whether `table`'s changes may be folded; checks the target once (see TargetTable).
  absl::StatusOr<bool> Foldable(TargetTable* table);
  // Folds an insert, update or delete of the current source transaction into its net changes;
  // false when it cannot be folded (sent what is staged; the caller applies it alone).
  absl::StatusOr<bool> Stage(TargetTable* table, const Change& change);
  // Sends the staged net changes: those of the complete transactions of the group first
  // (never under the current transaction's savepoint), then the current transaction's.
  // Whatever follows in the target then comes after them.
  absl::Status SendStaged();
  // Sends the net changes of `staged` and empties it: per table, its deletes, its updates
  // (rows with values unknown) and its upserts, in multi-row statements; then reads every
  // result, and applies one row at a time an update batch that found fewer rows than it held.
  struct Staged;
  absl::Status SendNet(std::vector<Staged>& staged);
  // Replays a captured schema change (sinks/postgres/ddl_replay.h) in the target transaction.
  absl::Status ApplyDdl(const Change& change);
  absl::Status QueueUpsert(TargetTable* table, const Change& change);
  // Decoded snapshot rows (`read` changes) of one table go by binary COPY into its read stage
  // and from there into the table in one INSERT ... SELECT (an upsert once the table held
  // rows): a row whose values do not come in the forms the stage expects is upserted alone.
  absl::Status QueueRead(TargetTable* table, const Change& change);
  absl::Status FlushReads();
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
  // Whether a batch of `rows` of the current source transaction is held back (see deferred_).
  bool Deferring(size_t rows) const;
  // Takes `batch` out to deferred_ when Deferring(); false, leaving it, otherwise.
  bool Defer(RowBatch& batch);
  // Sends the held-back batches, in order (under the savepoint when the source transaction is
  // not complete yet).
  absl::Status ReleaseDeferred();
  absl::Status ApplyDelete(TargetTable* table, const Change& change);

  const std::string sink_name_;
  const std::string pipeline_;
  const PostgresSourceConfig source_;
  // The pipeline reads a PostgreSQL database: tables are created from its catalog, sequences
  // copied from it. Otherwise (events read back from Kafka) from the shape events carry.
  const bool source_is_postgres_;
  // Positions are WAL positions (SourcePositions::kWal): the applied one is stored in
  // pgflow.applied and transactions at or below it are skipped after a restart. Otherwise
  // nothing is skipped: every change is applied as an idempotent upsert or delete by key.
  const bool wal_positions_;
  const std::shared_ptr<const PostgresSinkOptions> options_;
  const DdlMode ddl_mode_;

  TargetSession session_;
  TargetTables tables_;
  Lsn applied_;  // end LSN of the last source transaction committed in the target
  Lsn written_;  // the last acknowledgeable position written
  // Loaders copying the initial snapshot's rows over connections of their own
  // (options_->load_workers), from the first rows of a table that was empty until the
  // snapshot is done.
  std::unique_ptr<ParallelCopy> loaders_;
  bool in_source_txn_ = false;  // between a source kBegin and its kCommit/kRollback
  bool skipping_ = false;       // the current source transaction was applied before
  // Refused rows: source transactions whose commit LSN is at most careful_until_ (read from
  // pgflow.applied) are applied a change at a time, each in a target transaction of its own
  // (careful_txn_: the current one is). last_begun_: the commit LSN of the last source
  // transaction begun, which a refusal makes the new careful_until_.
  Lsn careful_until_;
  Lsn last_begun_;
  bool careful_txn_ = false;
  uint64_t dead_letters_ = 0;
  // Source transactions are grouped into one target transaction, committed at Flush (or
  // before snapshot rows, or once the group is large): those complete in the open target
  // transaction, their changes, and the end LSN of the last one.
  uint64_t group_txns_ = 0;
  uint64_t group_changes_ = 0;
  Lsn group_applied_;
  // A Flush came in the middle of a source transaction: commit once it is complete.
  bool commit_soon_ = false;

  // Net changes of foldable tables, not yet sent: those of the source transactions complete
  // in the open target transaction (group_net_) and those of the current one (txn_net_),
  // which is dropped if the transaction is cut off. One entry per table, in first-seen order.
  struct Staged {
    std::shared_ptr<TargetTable> table;
    NetChanges changes;
  };
  std::vector<Staged> group_net_;
  std::vector<Staged> txn_net_;
  size_t txn_folded_ = 0;  // changes folded into txn_net_ since it was last sent

  // The COPY in progress, if any.
  TargetTable* copy_table_ = nullptr;
  const TableSchema* copy_schema_ = nullptr;
  uint64_t copy_rows_ = 0;

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

  uint64_t transactions_ = 0;
  uint64_t skipped_ = 0;
  uint64_t copied_rows_ = 0;
  uint64_t changes_ = 0;
};

absl::Status PostgresSink::Open() {
  if (absl::Status s = session_.Connect(); !s.ok()) return s;
  if (absl::Status s = session_.Run(
          "CREATE SCHEMA IF NOT EXISTS pgflow; CREATE TABLE IF NOT EXISTS pgflow.applied ("
          "pipeline text PRIMARY KEY, lsn pg_lsn NOT NULL, chunk bigint); "
          "CREATE TABLE IF NOT EXISTS pgflow.pending_ddl (id bigserial PRIMARY KEY, "
          "pipeline text NOT NULL, target_table text NOT NULL, phase int NOT NULL, "
          "statement text NOT NULL, done boolean NOT NULL DEFAULT false, error text)",
          "creating pgflow.applied and pgflow.pending_ddl");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = RaiseMaintenanceWorkMem(conn(), options_->maintenance_work_mem, sink_name_);
      !s.ok()) {
    return s;
  }
  if (options_->dead_letter) {
    if (!wal_positions_) {
      return absl::InvalidArgumentError(
          absl::StrCat("sinks.", sink_name_,
                       ".dead_letter: refused rows are set aside by their source transaction's WAL "
                       "position, which only a postgres source gives"));
    }
    // (The ALTER TABLE only when needed: it locks the table out.)
    if (absl::Status s = session_.Run(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = "
            "'pgflow.applied'::regclass AND attname = 'careful_until') THEN ALTER TABLE "
            "pgflow.applied ADD COLUMN careful_until pg_lsn; END IF; END $$; "
            "CREATE TABLE IF NOT EXISTS pgflow.dead_letters (id bigserial PRIMARY KEY, "
            "pipeline text NOT NULL, lsn pg_lsn NOT NULL, source_table text NOT NULL, "
            "target_table text NOT NULL, operation text NOT NULL, key text NOT NULL, "
            "change jsonb NOT NULL, error text NOT NULL, sqlstate text NOT NULL, "
            "recorded_at timestamptz NOT NULL DEFAULT now())",
            "creating pgflow.dead_letters");
        !s.ok()) {
      return s;
    }
  }
  if (!wal_positions_) {
    LogInfo(
        "sink %s (postgres): target %s; the source's positions are not WAL positions: "
        "changes are applied as upserts and deletes by key, none skipped",
        sink_name_, TargetName());
    return absl::OkStatus();
  }
  absl::StatusOr<PgResultPtr> res =
      Exec(conn(),
           options_->dead_letter
               ? "SELECT lsn::text, careful_until::text FROM pgflow.applied WHERE pipeline = $1"
               : "SELECT lsn::text, NULL FROM pgflow.applied WHERE pipeline = $1",
           {pipeline_});
  if (!res.ok()) {
    return absl::Status(res.status().code(), absl::StrCat("postgres target ", TargetName(), ": ",
                                                          res.status().message()));
  }
  if (PQntuples(res->get()) == 1) {
    std::optional<Lsn> lsn = Lsn::Parse(PQgetvalue(res->get(), 0, 0));
    if (!lsn) return absl::DataLossError("postgres target: unreadable pgflow.applied.lsn");
    applied_ = *lsn;
    if (!PQgetisnull(res->get(), 0, 1)) {
      std::optional<Lsn> careful = Lsn::Parse(PQgetvalue(res->get(), 0, 1));
      if (!careful) {
        return absl::DataLossError("postgres target: unreadable pgflow.applied.careful_until");
      }
      // (The transaction that ends at applied_ may be followed by one whose commit record
      // starts there: not applied yet, and as careful as any.)
      if (!(*careful < applied_)) {
        careful_until_ = *careful;
        LogInfo(
            "sink %s (postgres): source transactions through %s are applied a change at a "
            "time, refused ones set aside in pgflow.dead_letters",
            sink_name_, careful_until_.ToString());
      }
    }
  }
  LogInfo("sink %s (postgres): target %s, applied through %s", sink_name_, TargetName(),
          applied_.ToString());
  return absl::OkStatus();
}

absl::Status PostgresSink::SendGroupFirst() {
  if (!session_.savepoint_pending() || group_net_.empty()) return absl::OkStatus();
  // The current transaction's held-back batches wait: they go after its savepoint.
  std::vector<RowBatch> held = std::exchange(deferred_, {});
  const size_t held_rows = std::exchange(deferred_rows_, 0);
  session_.set_savepoint_pending(false);
  absl::Status s = SendNet(group_net_);
  session_.set_savepoint_pending(true);
  deferred_ = std::move(held);
  deferred_rows_ = held_rows;
  return s;
}

absl::StatusOr<TargetTable*> PostgresSink::EnsureTable(const TableSchemaPtr& schema) {
  if (schema == nullptr) return absl::InternalError("change without a table");
  if (TargetTable* known = tables_.Find(schema); known != nullptr) return known;
  // (Held-back batches point at the TargetTable about to be replaced; staged rows have the
  // shape it knew.)
  if (absl::Status s = ReleaseDeferred(); !s.ok()) return s;
  if (tables_.Known(*schema)) {
    if (absl::Status s = SendStaged(); !s.ok()) return s;
  }
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  return tables_.Load(schema);
}
absl::Status PostgresSink::FinishSnapshot(bool copy_sequences) {
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  if (absl::Status s = CommitTransaction(); !s.ok()) return s;
  if (absl::Status s = tables_.FinishLoad(); !s.ok()) return s;
  if (!copy_sequences || !source_is_postgres_) return absl::OkStatus();
  absl::StatusOr<PGconn*> source = tables_.SourceConnection();
  absl::StatusOr<SequenceCopyResult> copied =
      source.ok() ? CopyTableSequences(*source, conn(), source_.tables, options_->schema)
                  : absl::StatusOr<SequenceCopyResult>(source.status());
  tables_.CloseSource();
  if (!copied.ok()) {
    if (absl::IsUnavailable(copied.status()) && PQstatus(conn()) != CONNECTION_OK) {
      return copied.status();
    }
    LogWarning(
        "sink %s (postgres): the sequences were not copied: %s (run `pgflow sequences` once "
        "fixed)",
        sink_name_, copied.status().message());
    return absl::OkStatus();
  }
  LogInfo("sink %s (postgres): %d sequences set to the source's values%s", sink_name_,
          copied->copied,
          copied->missing.empty()
              ? ""
              : absl::StrCat(" (not in the target: ", absl::StrJoin(copied->missing, ", "), ")"));
  return absl::OkStatus();
}

absl::Status PostgresSink::EnsureTransaction() { return session_.Begin(); }

absl::Status PostgresSink::FinishStatements() {
  if (absl::Status s = EndCopy(); !s.ok()) return s;
  if (absl::Status s = FlushReads(); !s.ok()) return s;
  if (absl::Status s = FlushInserts(); !s.ok()) return s;
  if (absl::Status s = FlushUpdates(); !s.ok()) return s;
  return FlushDeletes();
}

absl::Status PostgresSink::CommitTransaction() {
  if (absl::Status s = FinishStatements(); !s.ok()) return s;
  if (absl::Status s = ReleaseDeferred(); !s.ok()) return s;
  session_.set_savepoint_pending(false);
  if (absl::Status s = SendStaged(); !s.ok()) return s;
  if (!session_.in_transaction()) return absl::OkStatus();
  const bool record = group_txns_ > 0;
  if (record && wal_positions_) {
    StatementParams params;
    Value name = Value::Text(oid::kText, pipeline_);
    Value lsn = Value::Text(oid::kText, group_applied_.ToString());
    params.Add(name);
    params.Add(lsn);
    if (absl::Status s = session_.RunPrepared(
            "INSERT INTO pgflow.applied (pipeline, lsn) VALUES ($1, $2::pg_lsn) "
            "ON CONFLICT (pipeline) DO UPDATE SET lsn = EXCLUDED.lsn",
            params,
            [&] {
              return absl::StrCat("postgres target ", TargetName(),
                                  ": recording the applied position");
            });
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  absl::Status committed = session_.Commit();
  commit_soon_ = false;
  group_txns_ = 0;
  group_changes_ = 0;
  if (!committed.ok()) return committed;
  if (record) applied_ = group_applied_;
  return absl::OkStatus();
}

absl::Status PostgresSink::WriteEvent(const Event& event) {
  // Bounds on a group of source transactions in one target transaction.
  constexpr uint64_t kGroupTransactions = 5000;
  constexpr uint64_t kGroupChanges = 50000;
  constexpr size_t kSendAheadRows = 8192;
  if (Lsn p = event.AckPosition(); p.IsValid()) written_ = p;
  switch (event.kind) {
    case EventKind::kBegin:
      // Snapshot rows (a backfill) commit on their own before a source transaction starts.
      if (group_txns_ == 0) {
        if (absl::Status s = CommitTransaction(); !s.ok()) return s;
      }
      // The stream started, so any snapshot is over (also when a crash came between its end
      // and the DDL it defers).
      if (!tables_.load_finished()) {
        if (absl::Status s = FinishSnapshot(false); !s.ok()) return s;
      }
      in_source_txn_ = true;
      skipping_ = wal_positions_ && applied_.IsValid() && event.txn.commit_lsn < applied_;
      if (skipping_) {
        ++skipped_;
        return absl::OkStatus();
      }
      last_begun_ = event.txn.commit_lsn;
      careful_txn_ = careful_until_.IsValid() && event.txn.commit_lsn <= careful_until_;
      if (careful_txn_) {
        if (absl::Status s = CommitTransaction(); !s.ok()) return s;
        return EnsureTransaction();
      }
      if (session_.in_transaction() && group_txns_ > 0) {
        // The transactions before it in the group are kept if this one is cut off.
        if (absl::Status s = FinishStatements(); !s.ok()) return s;
        session_.set_savepoint_pending(true);
        return absl::OkStatus();
      }
      return EnsureTransaction();
    case EventKind::kChange:
      if (skipping_) return absl::OkStatus();
      if (!in_source_txn_ && group_txns_ > 0) {
        // Rows outside a source transaction (snapshot rows) do not join the group.
        if (absl::Status s = CommitTransaction(); !s.ok()) return s;
      }
      ++changes_;
      if (careful_txn_) return ApplyCarefully(event.change);
      if (in_source_txn_) ++group_changes_;
      return ApplyChange(event.change);
    case EventKind::kCommit: {
      const bool skipped = skipping_;
      in_source_txn_ = false;
      skipping_ = false;
      if (skipped) return absl::OkStatus();
      if (careful_txn_) {  // alone in its target transaction
        ++transactions_;
        group_txns_ = 1;
        group_applied_ = event.txn.end_lsn;
        absl::Status s = CommitTransaction();
        careful_txn_ = false;
        return s;
      }
      // Complete: what of it is still to be sent needs no savepoint any more.
      session_.set_savepoint_pending(false);
      if (absl::Status s = ReleaseDeferred(); !s.ok()) return s;
      if (absl::Status s = EnsureTransaction(); !s.ok()) return s;
      for (Staged& t : txn_net_) {
        auto into = std::find_if(group_net_.begin(), group_net_.end(),
                                 [&](const Staged& g) { return g.table->name == t.table->name; });
        if (into == group_net_.end()) {
          group_net_.push_back(std::move(t));
        } else {
          into->changes.Absorb(t.changes);
        }
      }
      txn_net_.clear();
      txn_folded_ = 0;
      ++transactions_;
      ++group_txns_;
      group_applied_ = event.txn.end_lsn;
      if (commit_soon_ || group_txns_ >= kGroupTransactions || group_changes_ >= kGroupChanges) {
        return CommitTransaction();
      }
      // A large group goes out while it grows, between two source transactions (so outside
      // any savepoint): the target applies what is folded so far while the next transactions
      // are folded, rather than idle until the commit. Folding spans each part only.
      size_t staged_rows = 0;
      for (const Staged& t : group_net_) staged_rows += t.changes.size();
      if (staged_rows >= kSendAheadRows) return SendNet(group_net_);
      return absl::OkStatus();
    }
    case EventKind::kRollback:
      in_source_txn_ = false;
      careful_txn_ = false;
      if (skipping_) {
        skipping_ = false;
        return absl::OkStatus();
      }
      DiscardTransactionRows("source transaction cut off");
      if (session_.savepoint_pending()) {
        // Nothing of it was sent.
        session_.set_savepoint_pending(false);
        return absl::OkStatus();
      }
      if (session_.has_savepoint()) {
        // Only the cut-off transaction goes; those before it in the group stay.
        return session_.RollbackToSavepoint("rolling back a cut-off transaction");
      }
      if (session_.in_transaction()) {
        group_net_.clear();
        group_txns_ = 0;
        group_changes_ = 0;
        commit_soon_ = false;
        return session_.Rollback("rolling back a cut-off transaction");
      }
      return absl::OkStatus();
    case EventKind::kPosition:
      if (!tables_.load_finished()) return FinishSnapshot(false);
      return absl::OkStatus();
    case EventKind::kChunkDone:
      if (absl::Status s = CommitTransaction(); !s.ok()) return s;
      return loaders_ != nullptr ? loaders_->EndChunk(event.chunk) : absl::OkStatus();
    case EventKind::kSnapshotDone:
      if (loaders_ != nullptr) {
        absl::Status s = loaders_->Finish();
        copied_rows_ += loaders_->rows();
        loaders_.reset();
        if (!s.ok()) return s;
      }
      return FinishSnapshot(true);
    case EventKind::kRawRows:
      if (group_txns_ > 0 && !in_source_txn_) {
        if (absl::Status s = CommitTransaction(); !s.ok()) return s;
      }
      return WriteRawRows(event);
  }
  return absl::OkStatus();
}

void PostgresSink::DiscardTransactionRows(const char* why) {
  deferred_.clear();
  deferred_rows_ = 0;
  txn_net_.clear();
  txn_folded_ = 0;
  reads_.Clear();
  inserts_.Clear();
  updates_.Clear();
  deletes_.Clear();
  if (copy_table_ != nullptr) {
    session_.AbortCopy(why);
    copy_table_ = nullptr;
    copy_schema_ = nullptr;
  }
  // A table created in the rolled-back transaction is gone again: check anew.
  tables_.Clear();
}

absl::Status PostgresSink::FlushGroup() {
  if (loaders_ != nullptr) {
    if (absl::Status s = loaders_->status(); !s.ok()) return s;
  }
  // A source transaction still open stays open (its position is not acknowledged yet): the
  // group before it commits as soon as it is complete, and meanwhile DurableThrough() says
  // what is committed.
  if (in_source_txn_) {
    if (group_txns_ > 0) commit_soon_ = true;
    return absl::OkStatus();
  }
  return CommitTransaction();
}

absl::Status PostgresSink::Close() {
  absl::Status status;
  if (session_.connected()) status = session_.Drain();
  if (session_.connected() && copy_table_ != nullptr) session_.AbortCopy("pgflow is stopping");
  copy_table_ = nullptr;
  // Complete source transactions not committed yet (the last Flush normally did) commit; a
  // failed transaction or a source transaction cut off rolls back.
  if (status.ok() && session_.connected() && session_.in_transaction() && group_txns_ > 0 &&
      !in_source_txn_ && session_.TransactionIntact()) {
    status = CommitTransaction();
  }
  if (loaders_ != nullptr) {
    copied_rows_ += loaders_->rows();
    loaders_.reset();  // what they had not committed rolls back
  }
  session_.Close();  // an open transaction rolls back
  tables_.CloseSource();
  LogInfo(
      "sink %s (postgres): %d snapshot rows copied, %d changes in %d transactions applied, "
      "%d transactions skipped as already applied%s",
      sink_name_, copied_rows_, changes_, transactions_, skipped_,
      dead_letters_ > 0
          ? absl::StrCat(", ", dead_letters_, " refused changes set aside in pgflow.dead_letters")
          : "");
  return status;
}

absl::Status PostgresSink::WriteRawRows(const Event& event) {
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  if (copy_table_ != nullptr && copy_schema_ == event.change.table.get()) {
    const std::string* data = &event.change.content;
    std::string rewritten;
    if (!copy_table_->array_elements.empty()) {
      rewritten = event.change.content;
      if (absl::Status s = RewriteArrayElementTypes(&rewritten, copy_table_->schema->columns.size(),
                                                    copy_table_->array_elements);
          !s.ok()) {
        return absl::DataLossError(
            absl::StrCat("snapshot rows of ", copy_table_->name, ": ", s.message()));
      }
      data = &rewritten;
    }
    if (absl::Status s = session_.PutCopyData(*data,
                                              [&] {
                                                return absl::StrCat("postgres target ",
                                                                    TargetName(), ": copying into ",
                                                                    copy_table_->name);
                                              });
        !s.ok()) {
      return s;
    }
    copy_rows_ += event.rows;
    return absl::OkStatus();
  }
  if (absl::Status s = FinishStatements(); !s.ok()) return s;
  absl::StatusOr<TargetTable*> table = EnsureTable(event.change.table);
  if (!table.ok()) return table.status();
  if (!tables_.load_finished() && options_->load_workers > 1) {
    if (absl::Status s = tables_.PrepareSnapshotLoad(*table); !s.ok()) return s;
    if (*(*table)->fast_copy) return LoadInParallel(*table, event);
  }
  if (absl::Status s = EnsureTransaction(); !s.ok()) return s;
  if (absl::Status s = StartCopy(*table); !s.ok()) return s;
  copy_schema_ = event.change.table.get();
  return WriteRawRows(event);
}

absl::Status PostgresSink::LoadInParallel(TargetTable* table, const Event& event) {
  if (table->load == nullptr) {
    // The loaders' connections must see the table, created in this transaction perhaps.
    if (absl::Status s = CommitTransaction(); !s.ok()) return s;
    auto load = std::make_shared<ParallelCopy::Table>();
    load->name = table->name;
    load->quoted = table->quoted;
    load->column_list = table->column_list;
    load->column_count = table->schema->columns.size();
    load->array_elements = table->array_elements;
    table->load = std::move(load);
  }
  if (loaders_ == nullptr) {
    auto loaders = std::make_unique<ParallelCopy>(options_->url, options_->load_workers, 8u << 20);
    if (absl::Status s = loaders->Start(); !s.ok()) return s;
    loaders_ = std::move(loaders);
    LogInfo("sink %s (postgres): loading the snapshot over %d connections", sink_name_,
            options_->load_workers);
  }
  return loaders_->Add(table->load, event.change.content, event.rows);
}

absl::Status PostgresSink::StartCopy(TargetTable* table) {
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  if (absl::Status s = tables_.PrepareSnapshotLoad(table); !s.ok()) return s;
  std::string into = table->quoted;
  if (!*table->fast_copy) {
    if (table->stage.empty()) table->stage = session_.NewName("pgflow_stage_");
    if (absl::Status s = session_.Run(CreateStageSql(*table),
                                      absl::StrCat("creating a staging table for ", table->name));
        !s.ok()) {
      return s;
    }
    into = table->stage;
  }
  if (absl::Status s = session_.BeginCopy(
          CopyInSql(*table, into),
          absl::StrCat("postgres target ", TargetName(), ": COPY into ", table->name));
      !s.ok()) {
    return s;
  }
  copy_table_ = table;
  copy_rows_ = 0;
  return absl::OkStatus();
}

absl::Status PostgresSink::EndCopy() {
  if (copy_table_ == nullptr) return absl::OkStatus();
  TargetTable* table = copy_table_;
  copy_table_ = nullptr;
  copy_schema_ = nullptr;
  const std::string context = absl::StrCat("postgres target ", TargetName(), ": COPY of ",
                                           copy_rows_, " snapshot rows into ", table->name);
  if (absl::Status s = session_.EndCopy(context); !s.ok()) return s;
  copied_rows_ += copy_rows_;
  if (*table->fast_copy) return absl::OkStatus();
  return session_.Run(UpsertFromStageSql(*table),
                      absl::StrCat("upserting staged snapshot rows into ", table->name));
}

absl::Status PostgresSink::ApplyChange(const Change& change) {
  if (change.op == Op::kMessage) return absl::OkStatus();
  if (change.op == Op::kDdl) return ApplyDdl(change);
  // A batch of another table or of another kind is sent first: statements keep the stream's
  // order.
  const TableSchema* schema = change.table.get();
  const bool upsert = change.op == Op::kRead || change.op == Op::kInsert;
  if (reads_.table() != nullptr && (reads_.schema() != schema || change.op != Op::kRead)) {
    if (absl::Status s = FlushReads(); !s.ok()) return s;
  }
  if (inserts_.table() != nullptr && (inserts_.schema() != schema || !upsert)) {
    if (absl::Status s = FlushInserts(); !s.ok()) return s;
  }
  if (updates_.table() != nullptr && (updates_.schema() != schema || change.op != Op::kUpdate)) {
    if (absl::Status s = FlushUpdates(); !s.ok()) return s;
  }
  if (deletes_.table() != nullptr && (deletes_.schema() != schema || change.op != Op::kDelete)) {
    if (absl::Status s = FlushDeletes(); !s.ok()) return s;
  }
  if (absl::Status s = EndCopy(); !s.ok()) return s;
  absl::StatusOr<TargetTable*> table = EnsureTable(change.table);
  if (!table.ok()) return table.status();
  if (absl::Status s = EnsureTransaction(); !s.ok()) return s;
  // Rows changed by the stream may reappear in later snapshot rows (a backfill): those go
  // through the staging table from now on.
  if (change.op == Op::kRead) {
    if (absl::Status s = tables_.PrepareSnapshotLoad(*table); !s.ok()) return s;
  } else {
    (*table)->fast_copy = false;
  }
  const bool row_change =
      change.op == Op::kInsert || change.op == Op::kUpdate || change.op == Op::kDelete;
  if (in_source_txn_ && row_change) {
    absl::StatusOr<bool> foldable = Foldable(*table);
    if (!foldable.ok()) return foldable.status();
    if (*foldable) {
      absl::StatusOr<bool> staged = Stage(*table, change);
      if (!staged.ok() || *staged) return staged.status();
      // Everything before it was sent: it goes now, alone and in order.
      absl::Status s;
      switch (change.op) {
        case Op::kInsert:
          s = QueueUpsert(*table, change);
          break;
        case Op::kUpdate:
          s = QueueUpdate(*table, change);
          break;
        default:
          s = QueueDelete(*table, change);
          break;
      }
      if (!s.ok()) return s;
      if (absl::Status s = FinishStatements(); !s.ok()) return s;
      return ReleaseDeferred();
    }
  }
  switch (change.op) {
    case Op::kRead:
      return QueueRead(*table, change);
    case Op::kInsert:
      return QueueUpsert(*table, change);
    case Op::kUpdate:
      return QueueUpdate(*table, change);
    case Op::kDelete:
      return QueueDelete(*table, change);
    case Op::kTruncate: {
      if (absl::Status s = SendStaged(); !s.ok()) return s;
      return session_.Run(TruncateSql(**table, change),
                          absl::StrCat("truncating ", (*table)->name));
    }
    case Op::kDdl:
    case Op::kMessage:
      break;
  }
  return absl::OkStatus();
}

bool IsRefusal(const absl::Status& s) {
  const std::string sqlstate = SqlState(s);
  return absl::StartsWith(sqlstate, "22") || absl::StartsWith(sqlstate, "23");
}

absl::Status PostgresSink::Refused(absl::Status s) {
  // Within the careful range already, the refusal is not one change's (a commit, a DDL
  // replay): it stops the pipeline, as without dead_letter, rather than start it over and over.
  const bool careful = careful_until_.IsValid() && last_begun_ <= careful_until_;
  if (!options_->dead_letter || !tables_.load_finished() || careful || !last_begun_.IsValid() ||
      !IsRefusal(s) || !session_.connected()) {
    return s;
  }
  // Whatever was sent or waits to be is void: the target transaction has failed.
  session_.Drain().IgnoreError();
  DiscardTransactionRows("a change was refused");
  group_net_.clear();
  group_txns_ = 0;
  group_changes_ = 0;
  commit_soon_ = false;
  careful_txn_ = false;
  session_.Abandon();
  absl::StatusOr<PgResultPtr> recorded =
      Exec(conn(),
           "INSERT INTO pgflow.applied (pipeline, lsn, careful_until) VALUES ($1, $2::pg_lsn, "
           "$3::pg_lsn) ON CONFLICT (pipeline) DO UPDATE SET careful_until = "
           "EXCLUDED.careful_until",
           {pipeline_, applied_.IsValid() ? applied_.ToString() : "0/0", last_begun_.ToString()});
  if (!recorded.ok()) {
    return absl::Status(
        recorded.status().code(),
        absl::StrCat("postgres target ", TargetName(),
                     ": recording where refused changes may be: ", recorded.status().message()));
  }
  return absl::AbortedError(absl::StrCat(
      s.message(), "; applying the source transactions through ", last_begun_.ToString(),
      " again, a change at a time, to set the refused ones aside in pgflow.dead_letters"));
}

absl::Status PostgresSink::ApplyCarefully(const Change& change) {
  if (change.op != Op::kInsert && change.op != Op::kUpdate && change.op != Op::kDelete) {
    if (absl::Status s = ApplyChange(change); !s.ok()) return s;
    if (absl::Status s = FinishStatements(); !s.ok()) return s;
    return session_.Drain();
  }
  absl::StatusOr<TargetTable*> table = EnsureTable(change.table);
  if (!table.ok()) return table.status();
  if (absl::Status s = EnsureTransaction(); !s.ok()) return s;
  (*table)->fast_copy = false;
  if (absl::Status s = session_.Run("SAVEPOINT pgflow_change", "starting a savepoint"); !s.ok())
    return s;
  absl::Status s = change.op == Op::kInsert   ? QueueUpsert(*table, change)
                   : change.op == Op::kUpdate ? QueueUpdate(*table, change)
                                              : QueueDelete(*table, change);
  if (s.ok()) s = FinishStatements();
  if (s.ok()) s = session_.Drain();
  if (s.ok()) return session_.Run("RELEASE SAVEPOINT pgflow_change", "releasing a savepoint");
  session_.Drain().IgnoreError();
  if (!IsRefusal(s)) return s;
  if (absl::Status r =
          session_.Run("ROLLBACK TO SAVEPOINT pgflow_change; RELEASE SAVEPOINT pgflow_change",
                       "setting a refused change aside");
      !r.ok()) {
    return r;
  }
  return RecordDeadLetter(**table, change, s);
}

absl::Status PostgresSink::RecordDeadLetter(const TargetTable& table, const Change& change,
                                            const absl::Status& refusal) {
  const Row& key_row = change.op == Op::kInsert || change.before_kind == BeforeKind::kNone
                           ? change.after
                           : change.before;
  std::string json;
  AppendChangeObject(change, JsonOptions{}, &json);
  const std::string sqlstate = SqlState(refusal);
  const std::vector<Value> values = {Value::Text(oid::kText, pipeline_),
                                     Value::Text(oid::kText, last_begun_.ToString()),
                                     Value::Text(oid::kText, change.table->QualifiedName()),
                                     Value::Text(oid::kText, table.name),
                                     Value::Text(oid::kText, OpName(change.op)),
                                     Value::Text(oid::kText, DescribeKey(table, key_row)),
                                     Value::Text(oid::kText, json),
                                     Value::Text(oid::kText, std::string(refusal.message())),
                                     Value::Text(oid::kText, sqlstate)};
  StatementParams params;
  for (const Value& v : values) params.Add(v);
  if (absl::Status s = session_.RunPrepared(
          "INSERT INTO pgflow.dead_letters (pipeline, lsn, source_table, target_table, "
          "operation, key, change, error, sqlstate) VALUES ($1, $2::pg_lsn, $3, $4, $5, $6, "
          "$7::jsonb, $8, $9)",
          params,
          [&] {
            return absl::StrCat("postgres target ", TargetName(),
                                ": recording a refused change in pgflow.dead_letters");
          });
      !s.ok()) {
    return s;
  }
  ++dead_letters_;
  LogWarning("sink %s (postgres): set aside in pgflow.dead_letters: %s", sink_name_,
             refusal.message());
  return absl::OkStatus();
}

absl::Status PostgresSink::ApplyDdl(const Change& change) {
  const DdlCommand& cmd = *change.ddl;
  if (ddl_mode_ != DdlMode::kApply) return absl::OkStatus();
  // Statements keep the stream's order: what came before the DDL is sent first.
  if (absl::Status s = FinishStatements(); !s.ok()) return s;
  if (absl::Status s = ReleaseDeferred(); !s.ok()) return s;
  if (absl::Status s = SendStaged(); !s.ok()) return s;
  if (absl::Status s = EnsureTransaction(); !s.ok()) return s;
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  TargetCatalogLookup lookup(conn());
  DdlReplayOptions replay;
  replay.target_schema = options_->schema;
  replay.config_path = absl::StrCat("sinks.", sink_name_, ".ddl");
  absl::StatusOr<DdlPlan> plan = PlanDdl(cmd, replay, lookup);
  if (!plan.ok()) {
    return absl::Status(plan.status().code(),
                        absl::StrCat("postgres target ", TargetName(), ": at ",
                                     change.lsn.ToString(), ": ", plan.status().message()));
  }
  if (!plan->passed_over.empty()) {
    LogDebug("sink %s (postgres): %s %s passed over: %s", sink_name_, cmd.tag, cmd.identity,
             plan->passed_over);
  }
  if (!plan->statements.empty()) {
    if (absl::Status s = session_.SendPendingSavepoint(); !s.ok()) return s;
  }
  for (const std::string& sql : plan->statements) {
    LogDebug("sink %s (postgres): %s %s at %s: %s", sink_name_, cmd.tag, cmd.identity,
             change.lsn.ToString(), sql);
    // One statement per call (the extended protocol refuses several), whatever the text.
    if (absl::Status s = session_.RunAlone(
            sql,
            [&] {
              return absl::StrCat("postgres target ", TargetName(), ": at ", change.lsn.ToString(),
                                  ": replaying ", cmd.tag, " ", cmd.identity, " as `", sql,
                                  "` (source statement: ", cmd.statement.substr(0, 200),
                                  "); to go on, make the target accept it, or add '",
                                  cmd.object_type, "' to sinks.", sink_name_, ".ddl.exclude");
            });
        !s.ok()) {
      return s;
    }
  }
  for (const std::string& table : plan->changed_tables) tables_.Forget(table);
  if (!plan->statements.empty()) {
    // An index or constraint may have come or gone.
    tables_.RecheckFoldable();
  }
  if (!plan->statements.empty()) {
    // A prepared statement keeps the parameter types its columns had when it was prepared
    // (an int column retyped to bigint would still take int parameters): start afresh.
    if (absl::Status s = session_.DeallocateAll("dropping prepared statements after DDL");
        !s.ok()) {
      return s;
    }
  }
  if (!plan->statements.empty()) {
    LogInfo("sink %s (postgres): replayed %s %s (%d statement%s)", sink_name_, cmd.tag,
            cmd.identity, plan->statements.size(), plan->statements.size() == 1 ? "" : "s");
  }
  return absl::OkStatus();
}

absl::Status PostgresSink::QueueRead(TargetTable* table, const Change& change) {
  constexpr size_t kReadBytes = 8u << 20;
  const size_t n = table->schema->columns.size();
  if (table->read_binary.empty()) {
    for (const Column& c : table->schema->columns) {
      table->read_binary.push_back(CanDecodeBinary(c.type_oid));
    }
  }
  bool fits = change.after.size() == n;
  for (size_t i = 0; fits && i < n; ++i) {
    const Value& v = change.after[i];
    fits = v.is_null() || v.kind == (table->read_binary[i] ? ValueKind::kBinary : ValueKind::kText);
  }
  std::optional<std::string> key = table->KeyString(change.after);
  if (!fits || (key.has_value() && reads_.HasKey(*key))) {
    // Not in the stage's forms, or a key twice in one INSERT ... ON CONFLICT: alone.
    if (absl::Status s = FlushReads(); !s.ok()) return s;
    if (!fits) {
      if (absl::Status s = QueueUpsert(table, change); !s.ok()) return s;
      return FlushInserts();  // before any later row of the table
    }
  }
  reads_.Use(table, change.table.get());
  reads_.AddTuple(change.after);
  if (key.has_value()) reads_.AddKey(*std::move(key));
  if (reads_.tuples().size() >= kReadBytes) return FlushReads();
  return absl::OkStatus();
}

absl::Status PostgresSink::FlushReads() {
  RowBatch batch = reads_.Take();
  TargetTable* table = batch.table();
  const uint64_t rows = batch.size();
  if (table == nullptr || rows == 0) return absl::OkStatus();
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  const std::string context = absl::StrCat("postgres target ", TargetName(), ": copying ", rows,
                                           " snapshot rows into ", table->name);
  if (table->read_stage.empty()) {
    table->read_stage = session_.NewName("pgflow_read_");
    if (absl::Status s = session_.Run(CreateReadStageSql(*table), context); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = session_.BeginCopy(CopyIntoReadStageSql(*table), context); !s.ok()) {
    return s;
  }
  if (absl::Status s = session_.PutCopyData(batch.tuples(), [&] { return context; }); !s.ok()) {
    return s;
  }
  if (absl::Status s = session_.EndCopy(context); !s.ok()) return s;
  copied_rows_ += rows;
  return session_.Run(UpsertFromReadStageSql(*table), context);
}

absl::Status PostgresSink::QueueUpsert(TargetTable* table, const Change& change) {
  const size_t n = table->schema->columns.size();
  if (change.after.size() != n) {
    return absl::DataLossError(absl::StrCat("a change of ", table->schema->QualifiedName(), " has ",
                                            change.after.size(), " values for ", n, " columns"));
  }
  for (const Value& v : change.after) {
    if (v.is_unchanged_toast()) {
      return absl::DataLossError(absl::StrCat("an insert into ", table->schema->QualifiedName(),
                                              " lacks a TOASTed value"));
    }
  }
  std::optional<std::string> key = table->KeyString(change.after);
  // A row with the same key twice in one INSERT ... ON CONFLICT DO UPDATE is an error.
  if (inserts_.table() != nullptr && key.has_value() && inserts_.HasKey(*key)) {
    if (absl::Status s = FlushInserts(); !s.ok()) return s;
  }
  inserts_.Use(table, change.table.get());
  inserts_.AddRow(change.after);
  if (key.has_value()) inserts_.AddKey(*std::move(key));
  const size_t per_statement = std::max<size_t>(
      1, std::min<size_t>(options_->batch_rows, kMaxParams / std::max<size_t>(n, 1)));
  if (inserts_.size() >= per_statement) return FlushInserts();
  return absl::OkStatus();
}

bool PostgresSink::Deferring(size_t rows) const {
  return in_source_txn_ && session_.savepoint_pending() && deferred_rows_ + rows <= kDeferRows;
}

bool PostgresSink::Defer(RowBatch& batch) {
  if (!Deferring(batch.size())) return false;
  deferred_rows_ += batch.size();
  deferred_.push_back(std::move(batch));
  return true;
}

absl::Status PostgresSink::ReleaseDeferred() {
  std::vector<RowBatch> batches = std::exchange(deferred_, {});
  deferred_rows_ = 0;
  for (RowBatch& b : batches) {
    absl::Status s;
    switch (b.kind()) {
      case RowBatch::Kind::kUpsert:
        s = SendUpserts(b.table(), std::move(b.rows()));
        break;
      case RowBatch::Kind::kUpdate:
        s = SendUpdates(b.table(), std::move(b.updates()), std::move(b.columns()));
        break;
      default:
        s = SendDeletes(b.table(), std::move(b.rows()));
        break;
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status PostgresSink::FlushInserts() {
  RowBatch batch = inserts_.Take();
  if (batch.table() == nullptr || batch.empty() || Defer(batch)) return absl::OkStatus();
  return SendUpserts(batch.table(), std::move(batch.rows()));
}

absl::Status PostgresSink::SendUpserts(TargetTable* table, std::vector<Row> rows, bool once) {
  StatementParams params;
  // Several rows of values in text form go as one text[] per column: the statement is the same
  // whatever the number of rows (prepared once), and it costs the target less than a VALUES
  // list of as many parameters.
  std::vector<std::string> arrays;
  const bool text = TextArrays(
      *table, rows.size(), table->schema->columns.size(),
      [&](size_t r, size_t c) -> const Value& { return rows[r][c]; }, &arrays);
  if (text) {
    for (const std::string& a : arrays) params.AddText(a);
  } else {
    for (const Row& row : rows) {
      for (const Value& v : row) params.Add(v);
    }
  }
  return session_.SendPrepared(
      text ? UnnestInsertSql(*table) : InsertSql(*table, rows.size()), params,
      absl::StrCat("postgres target ", TargetName(), ": inserting into ", table->name,
                   rows.size() == 1 ? " the row with key " : " a batch of rows from key ",
                   DescribeKey(*table, rows.front()),
                   rows.size() == 1 ? "" : absl::StrCat(" to ", DescribeKey(*table, rows.back()))),
      nullptr, once && !text);
}

absl::Status PostgresSink::QueueUpdate(TargetTable* table, const Change& change) {
  const TableSchema& schema = *table->schema;
  if (change.after.size() != schema.columns.size()) {
    return absl::DataLossError(absl::StrCat("an update of ", schema.QualifiedName(), " has ",
                                            change.after.size(), " values for ",
                                            schema.columns.size(), " columns"));
  }
  const bool has_before =
      change.before_kind != BeforeKind::kNone && change.before.size() == schema.columns.size();
  if (table->key.empty() && !has_before) {
    return absl::FailedPreconditionError(
        absl::StrCat("an update of ", schema.QualifiedName(),
                     " carries neither a primary key nor the old row: set REPLICA IDENTITY FULL "
                     "or add a primary key"));
  }
  const Row& old_row = has_before ? change.before : change.after;
  std::optional<std::string> old_key = table->KeyString(old_row);
  std::optional<std::string> new_key = table->KeyString(change.after);
  if (!old_key.has_value() || !new_key.has_value()) {
    // No key, or not all of it known: one statement for this row alone.
    if (absl::Status s = FlushUpdates(); !s.ok()) return s;
    return ApplyUpdate(table, old_row, change.after);
  }
  // An identity column the target generates ALWAYS cannot be set by an UPDATE; on the source
  // such a value cannot change either (short of SET DEFAULT).
  std::vector<size_t> columns;
  for (size_t i = 0; i < schema.columns.size(); ++i) {
    if (!change.after[i].is_unchanged_toast() && table->Settable(i)) columns.push_back(i);
  }
  if (columns.empty()) return absl::OkStatus();
  // One statement updates a set of rows: the same key twice (as old or new key) would not be
  // applied in order, so it starts a new batch.
  if (updates_.table() != nullptr && (updates_.table() != table || updates_.columns() != columns ||
                                      updates_.HasKey(*old_key) || updates_.HasKey(*new_key))) {
    if (absl::Status s = FlushUpdates(); !s.ok()) return s;
  }
  // Under another unique index, the rows of one UPDATE change in no set order, which may pass
  // through a state the index forbids: one row at a time.
  const size_t per_statement =
      table->foldable == false
          ? 1
          : std::max<size_t>(1,
                             std::min<size_t>(options_->batch_rows,
                                              kMaxParams / (table->key.size() + columns.size())));
  updates_.Use(table, change.table.get());
  updates_.set_columns(std::move(columns));
  updates_.AddUpdate(PendingUpdate{old_row, change.after});
  updates_.AddKey(std::move(*old_key));
  updates_.AddKey(std::move(*new_key));
  if (updates_.size() >= per_statement) return FlushUpdates();
  return absl::OkStatus();
}

absl::Status PostgresSink::FlushUpdates() {
  RowBatch batch = updates_.Take();
  if (batch.table() == nullptr || batch.empty() || Defer(batch)) return absl::OkStatus();
  return SendUpdates(batch.table(), std::move(batch.updates()), std::move(batch.columns()));
}

absl::Status PostgresSink::SendUpdates(TargetTable* table, std::vector<PendingUpdate> rows,
                                       std::vector<size_t> columns) {
  if (rows.size() == 1) return ApplyUpdate(table, rows[0].old_row, rows[0].after);
  uint64_t affected = 0;
  if (absl::Status s = SendUpdateBatch(*table, rows, columns, &affected, false); !s.ok()) return s;
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  if (affected >= rows.size()) return absl::OkStatus();
  // Some rows are not in the target: row by row, which upserts those (updating again the
  // others to the values they already have).
  for (const PendingUpdate& row : rows) {
    if (absl::Status s = ApplyUpdate(table, row.old_row, row.after); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status PostgresSink::SendUpdateBatch(const TargetTable& table,
                                           const std::vector<PendingUpdate>& rows,
                                           const std::vector<size_t>& columns, uint64_t* affected,
                                           bool once, bool warn_missing) {
  auto key_row = [](const PendingUpdate& row) -> const Row& {
    return row.old_row.empty() ? row.after : row.old_row;
  };
  // Each row's key values, then those of `columns` (UpdateBatchSql).
  auto value_at = [&](size_t r, size_t j) -> const Value& {
    return j < table.key.size() ? key_row(rows[r])[table.key[j]]
                                : rows[r].after[columns[j - table.key.size()]];
  };
  const size_t width = table.key.size() + columns.size();
  StatementParams params;
  // As for inserts: values in text form go as one text[] per column, one statement text for
  // any number of rows.
  std::vector<std::string> arrays;
  const bool text = TextArrays(table, rows.size(), width, value_at, &arrays);
  if (text) {
    for (const std::string& a : arrays) params.AddText(a);
  } else {
    for (size_t r = 0; r < rows.size(); ++r) {
      for (size_t j = 0; j < width; ++j) params.Add(value_at(r, j));
    }
  }
  return session_.SendPrepared(
      UpdateBatchSql(table, columns, rows.size(), text), params,
      absl::StrCat("postgres target ", TargetName(), ": updating ", table.name,
                   " a batch of rows from key ", DescribeKey(table, key_row(rows.front())), " to ",
                   DescribeKey(table, key_row(rows.back()))),
      affected, once && !text,
      warn_missing ? RowCountCheck{rows.size(), table.name} : RowCountCheck{});
}

absl::StatusOr<bool> PostgresSink::Foldable(TargetTable* table) {
  if (table->key.empty()) return false;
  if (table->foldable.has_value()) return *table->foldable;
  if (absl::StatusOr<bool> foldable = tables_.ReadFoldable(table); !foldable.ok()) {
    return foldable.status();
  }
  if (!*table->foldable) {
    // Changes of it folded before its index was built go first: what comes now is in order.
    auto held = [&](const std::vector<Staged>& staged) {
      return std::any_of(staged.begin(), staged.end(),
                         [&](const Staged& t) { return t.table->name == table->name; });
    };
    if (held(group_net_) || held(txn_net_)) {
      if (absl::Status s = SendStaged(); !s.ok()) return s;
    }
    LogInfo(
        "sink %s (postgres): %s has a unique index or exclusion constraint besides its key: its "
        "changes are applied in stream order, not folded",
        sink_name_, table->name);
  }
  return *table->foldable;
}

absl::StatusOr<bool> PostgresSink::Stage(TargetTable* table, const Change& change) {
  auto staged = std::find_if(txn_net_.rbegin(), txn_net_.rend(),
                             [&](const Staged& t) { return t.table->name == table->name; });
  NetChanges* net;
  if (staged != txn_net_.rend()) {
    net = &staged->changes;
  } else {
    txn_net_.push_back(Staged{table->shared_from_this(), NetChanges(table->key)});
    net = &txn_net_.back().changes;
  }
  if (!net->Fold(change)) {
    if (absl::Status s = SendStaged(); !s.ok()) return s;
    return false;
  }
  // A large transaction goes out in parts, under its savepoint.
  if (++txn_folded_ >= kDeferRows) {
    if (absl::Status s = SendStaged(); !s.ok()) return s;
  }
  return true;
}

absl::Status PostgresSink::SendStaged() {
  txn_folded_ = 0;
  if (absl::Status s = SendGroupFirst(); !s.ok()) return s;
  if (absl::Status s = SendNet(group_net_); !s.ok()) return s;
  return SendNet(txn_net_);
}

absl::Status PostgresSink::SendNet(std::vector<Staged>& staged) {
  if (staged.empty()) return absl::OkStatus();
  std::vector<Staged> work = std::exchange(staged, {});
  for (Staged& t : work) {
    TargetTable* table = t.table.get();
    std::vector<NetChanges::Entry>& entries = t.changes.entries();
    const size_t width = table->schema->columns.size();
    auto per_statement = [&](size_t params_per_row) {
      return std::max<size_t>(
          1,
          std::min<size_t>(options_->batch_rows, kMaxParams / std::max<size_t>(params_per_row, 1)));
    };
    // A full batch has the same text every time and is prepared; the remainder goes unnamed.
    // Deletes take the keys of the rows an upsert replaces too (copied: the upsert sends them).
    auto send_rows = [&](NetChanges::Kind kind, size_t limit, auto send) -> absl::Status {
      std::vector<Row> batch;
      for (NetChanges::Entry& e : entries) {
        if (kind == NetChanges::Kind::kDelete && e.kind == NetChanges::Kind::kUpsert &&
            e.replaces) {
          batch.push_back(e.row);
        } else if (e.kind != kind) {
          continue;
        } else {
          batch.push_back(std::move(e.row));
        }
        if (batch.size() == limit) {
          if (absl::Status s = send(std::move(batch), false); !s.ok()) return s;
          batch.clear();
        }
      }
      if (batch.empty()) return absl::OkStatus();
      return send(std::move(batch), true);
    };
    if (absl::Status s = send_rows(NetChanges::Kind::kDelete, per_statement(table->key.size()),
                                   [&](std::vector<Row> rows, bool once) {
                                     return SendDeletes(table, std::move(rows), once);
                                   });
        !s.ok()) {
      return s;
    }
    // Updates, batched by the columns they set.
    std::vector<std::pair<std::vector<size_t>, std::vector<PendingUpdate>>> updates;
    for (NetChanges::Entry& e : entries) {
      if (e.kind != NetChanges::Kind::kUpdate) continue;
      std::vector<size_t> columns;
      for (size_t i = 0; i < width; ++i) {
        if (!e.row[i].is_unchanged_toast() && table->Settable(i)) columns.push_back(i);
      }
      auto group = std::find_if(updates.begin(), updates.end(),
                                [&](const auto& u) { return u.first == columns; });
      if (group == updates.end()) group = updates.insert(updates.end(), {std::move(columns), {}});
      group->second.push_back(PendingUpdate{{}, std::move(e.row)});
    }
    for (auto& [columns, rows] : updates) {
      const size_t limit = per_statement(table->key.size() + columns.size());
      for (size_t from = 0; from < rows.size(); from += limit) {
        const size_t to = std::min(rows.size(), from + limit);
        const std::vector<PendingUpdate> batch(std::make_move_iterator(rows.begin() + from),
                                               std::make_move_iterator(rows.begin() + to));
        // Checked when the row count is read: waiting for it here would stop the target's work
        // on a group sent ahead.
        if (absl::Status s = SendUpdateBatch(*table, batch, columns, /*affected=*/nullptr,
                                             to - from != limit, /*warn_missing=*/true);
            !s.ok()) {
          return s;
        }
      }
    }
    if (absl::Status s = send_rows(NetChanges::Kind::kUpsert, per_statement(width),
                                   [&](std::vector<Row> rows, bool once) {
                                     return SendUpserts(table, std::move(rows), once);
                                   });
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status PostgresSink::ApplyUpdate(TargetTable* table, const Row& old_row, const Row& after) {
  StatementParams params;
  absl::StatusOr<std::string> sql = UpdateRowSql(*table, old_row, after, &params);
  if (!sql.ok()) return sql.status();
  if (sql->empty()) return absl::OkStatus();
  auto context = [&] {
    return absl::StrCat("postgres target ", TargetName(), ": updating ", table->name,
                        " row with key ", DescribeKey(*table, old_row));
  };
  uint64_t affected = 0;
  if (absl::Status s = session_.RunPrepared(*sql, params, context, &affected); !s.ok()) return s;
  if (affected > 0) return absl::OkStatus();
  // The row is not in the target. After a resumed snapshot a later copy may already hold the
  // update's effect (or its deletion): with every value known, upserting converges.
  const bool all_known = std::none_of(after.begin(), after.end(),
                                      [](const Value& v) { return v.is_unchanged_toast(); });
  if (all_known && !table->key.empty()) {
    StatementParams row;
    for (const Value& v : after) row.Add(v);
    return session_.RunPrepared(InsertSql(*table, 1), row, context);
  }
  LogWarning("sink %s (postgres): update of %s row with key %s found no row in the target",
             sink_name_, table->name, DescribeKey(*table, old_row));
  return absl::OkStatus();
}

absl::Status PostgresSink::QueueDelete(TargetTable* table, const Change& change) {
  const TableSchema& schema = *table->schema;
  if (change.before_kind == BeforeKind::kNone || change.before.size() != schema.columns.size()) {
    return absl::FailedPreconditionError(absl::StrCat("a delete from ", schema.QualifiedName(),
                                                      " carries no old key: set REPLICA IDENTITY "
                                                      "FULL or add a primary key"));
  }
  if (!table->KeyString(change.before).has_value()) {
    // No key, or not all of it known: one statement for this row alone.
    if (absl::Status s = FlushDeletes(); !s.ok()) return s;
    return ApplyDelete(table, change);
  }
  if (deletes_.table() != nullptr && deletes_.table() != table) {
    if (absl::Status s = FlushDeletes(); !s.ok()) return s;
  }
  deletes_.Use(table, change.table.get());
  deletes_.AddRow(change.before);
  const size_t per_statement =
      std::max<size_t>(1, std::min<size_t>(options_->batch_rows, kMaxParams / table->key.size()));
  if (deletes_.size() >= per_statement) return FlushDeletes();
  return absl::OkStatus();
}

absl::Status PostgresSink::FlushDeletes() {
  RowBatch batch = deletes_.Take();
  if (batch.table() == nullptr || batch.empty() || Defer(batch)) return absl::OkStatus();
  return SendDeletes(batch.table(), std::move(batch.rows()));
}

absl::Status PostgresSink::SendDeletes(TargetTable* table, std::vector<Row> rows, bool once) {
  StatementParams params;
  // A single-column key of a type that is not an array, with keys in text form: one array
  // parameter, WHERE k = ANY($1::type[]), one statement text for any number of rows.
  std::vector<std::string> array;
  if (DeletesByArray(*table) &&
      TextArrays(
          *table, rows.size(), 1,
          [&](size_t r, size_t) -> const Value& { return rows[r][table->key[0]]; }, &array)) {
    params.AddText(array[0]);
    return session_.SendPrepared(
        DeleteAnySql(*table), params,
        absl::StrCat("postgres target ", TargetName(), ": deleting from ", table->name,
                     " a batch of rows from key ", DescribeKey(*table, rows.front()), " to ",
                     DescribeKey(*table, rows.back())),
        nullptr, false);
  }
  for (const Row& row : rows) {
    for (size_t k : table->key) params.Add(row[k]);
  }
  return session_.SendPrepared(
      DeleteInSql(*table, rows.size()), params,
      absl::StrCat("postgres target ", TargetName(), ": deleting from ", table->name,
                   rows.size() == 1 ? " the row with key " : " a batch of rows from key ",
                   DescribeKey(*table, rows.front()),
                   rows.size() == 1 ? "" : absl::StrCat(" to ", DescribeKey(*table, rows.back()))),
      nullptr, once);
}

absl::Status PostgresSink::ApplyDelete(TargetTable* table, const Change& change) {
  StatementParams params;
  absl::StatusOr<std::string> sql = DeleteRowSql(*table, change.before, &params);
  if (!sql.ok()) return sql.status();
  return session_.RunPrepared(*sql, params, [&] {
    return absl::StrCat("postgres target ", TargetName(), ": deleting from ", table->name,
                        " the row with key ", DescribeKey(*table, change.before));
  });
}

class PostgresSinkFactory : public SinkFactory {
 public:
  std::string_view type() const override { return "postgres"; }
  std::span<const OptionSpec> options() const override { return kOptions; }

  absl::StatusOr<std::shared_ptr<const SinkOptions>> Parse(const ConfigNode& node) const override {
    if (!node.IsMap()) return node.Error("expected a mapping like {url: postgres://host/db}");
    if (absl::Status s = node.CheckKeys(kOptions); !s.ok()) return s;
    auto options = std::make_shared<PostgresSinkOptions>();
    std::optional<ConfigNode> url = node.Get("url");
    if (!url) return node.Error("url is required");
    absl::StatusOr<std::string> u = url->AsString();
    if (!u.ok()) return u.status();
    if (u->empty()) return url->Error("url is empty");
    char* err = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(u->c_str(), &err);
    if (parsed == nullptr) {
      std::string message = err != nullptr ? err : "out of memory";
      PQfreemem(err);
      return url->Error(
          absl::StrCat("invalid PostgreSQL URL: ", absl::StripTrailingAsciiWhitespace(message)));
    }
    PQconninfoFree(parsed);
    options->url = *u;
    if (auto v = node.Get("schema")) {
      absl::StatusOr<std::string> s = v->AsString();
      if (!s.ok()) return s.status();
      if (s->empty()) return v->Error("schema is empty (leave it out to keep the source's)");
      options->schema = *s;
    }
    if (auto v = node.Get("batch_rows")) {
      absl::StatusOr<int64_t> n = v->AsInt(1, 65535);
      if (!n.ok()) return n.status();
      options->batch_rows = *n;
    }
    if (auto v = node.Get("create_tables")) {
      absl::StatusOr<bool> b = v->AsBool();
      if (!b.ok()) return b.status();
      options->create_tables = *b;
    }
    if (auto v = node.Get("dead_letter")) {
      absl::StatusOr<bool> b = v->AsBool();
      if (!b.ok()) return b.status();
      options->dead_letter = *b;
    }
    if (auto v = node.Get("load_workers")) {
      absl::StatusOr<int64_t> n = v->AsInt(1, 64);
      if (!n.ok()) return n.status();
      options->load_workers = *n;
    }
    if (auto v = node.Get("maintenance_work_mem")) {
      absl::StatusOr<std::string> m = v->AsString();
      if (!m.ok()) return m.status();
      if (m->empty()) return v->Error("maintenance_work_mem is empty (leave it out for 256MB)");
      options->maintenance_work_mem = *m;
    }
    return options;
  }

  std::unique_ptr<Sink> Build(const PipelineConfig& pipeline,
                              const SinkConfig& sink) const override {
    return std::make_unique<PostgresSink>(
        sink.name, pipeline, std::static_pointer_cast<const PostgresSinkOptions>(sink.options),
        sink.ddl.mode);
  }
};

}  // namespace

void RegisterPostgresSink() { RegisterSinkFactory(std::make_unique<PostgresSinkFactory>()); }

absl::Status SyncSequences(const PipelineConfig& pipeline, const PostgresSinkOptions& options) {
  absl::StatusOr<PgConnPtr> source = ConnectToSourceCatalog(pipeline.source.url);
  if (!source.ok()) return source.status();
  absl::StatusOr<PgConnPtr> target = Connect(options.url, ConnectionKind::kRegular);
  if (!target.ok()) {
    return absl::Status(target.status().code(),
                        absl::StrCat("postgres target: ", target.status().message()));
  }
  absl::StatusOr<std::vector<SequencePair>> sequences =
      ReadTableSequences(source->get(), pipeline.source.tables, options.schema);
  if (!sequences.ok()) return sequences.status();
  absl::StatusOr<SequenceCopyResult> copied =
      CopySequenceValues(source->get(), target->get(), *sequences);
  if (!copied.ok()) return copied.status();
  LogInfo("%d sequences of pipeline %s set in %s to the source's values", copied->copied,
          pipeline.name, Describe(target->get()));
  if (!copied->missing.empty()) {
    return absl::NotFoundError(
        absl::StrCat("postgres target ", Describe(target->get()), ": ", copied->missing.size(),
                     " sequences of the source do not exist in the target (the others were set): ",
                     absl::StrJoin(copied->missing, ", ")));
  }
  return absl::OkStatus();
}

}  // namespace pgflow
