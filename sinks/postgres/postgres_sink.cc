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
#include "sinks/postgres/row_writer.h"
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
        tables_(session_, sink_name_, pipeline_, source_.url, source_is_postgres_, options_),
        writer_(session_, tables_, sink_name_, options_, in_source_txn_) {
    // What is held back goes out before anything else is sent.
    session_.SetBeforeStatement([this] { return writer_.SendHeldBack(); });
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

  // The initial load is complete: builds what was deferred and copies the sequences.
  absl::Status FinishSnapshot(bool copy_sequences);

  // Opens a target transaction if none is open.
  absl::Status EnsureTransaction();
  // Commits the open target transaction, if any, after the writer's FinishStatements(), recording
  // in pgflow.applied the end LSN of the last source transaction it holds.
  absl::Status CommitTransaction();

  absl::Status WriteRawRows(const Event& event);
  // Hands snapshot rows of `table` (fast path, initial snapshot) to the parallel loaders,
  // starting them first if needed.
  absl::Status LoadInParallel(TargetTable* table, const Event& event);

  absl::Status ApplyChange(const Change& change);
  // Replays a captured schema change (sinks/postgres/ddl_replay.h) in the target transaction.
  absl::Status ApplyDdl(const Change& change);

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

  bool in_source_txn_ = false;  // between a source kBegin and its kCommit/kRollback
  TargetSession session_;
  TargetTables tables_;
  RowWriter writer_;
  Lsn applied_;  // end LSN of the last source transaction committed in the target
  Lsn written_;  // the last acknowledgeable position written
  // Loaders copying the initial snapshot's rows over connections of their own
  // (options_->load_workers), from the first rows of a table that was empty until the
  // snapshot is done.
  std::unique_ptr<ParallelCopy> loaders_;
  bool skipping_ = false;  // the current source transaction was applied before
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

  uint64_t transactions_ = 0;
  uint64_t skipped_ = 0;
  uint64_t loaded_rows_ = 0;  // copied by the parallel loaders
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

absl::Status PostgresSink::CommitTransaction() {
  if (absl::Status s = writer_.FinishStatements(); !s.ok()) return s;
  if (absl::Status s = writer_.ReleaseDeferred(); !s.ok()) return s;
  session_.set_savepoint_pending(false);
  if (absl::Status s = writer_.SendStaged(); !s.ok()) return s;
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
        if (absl::Status s = writer_.FinishStatements(); !s.ok()) return s;
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
      if (absl::Status s = writer_.ReleaseDeferred(); !s.ok()) return s;
      if (absl::Status s = EnsureTransaction(); !s.ok()) return s;
      writer_.EndSourceTransaction();
      ++transactions_;
      ++group_txns_;
      group_applied_ = event.txn.end_lsn;
      if (commit_soon_ || group_txns_ >= kGroupTransactions || group_changes_ >= kGroupChanges) {
        return CommitTransaction();
      }
      // A large group goes out while it grows, between two source transactions (so outside
      // any savepoint): the target applies what is folded so far while the next transactions
      // are folded, rather than idle until the commit. Folding spans each part only.
      return writer_.SendAhead();
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
        writer_.DropGroup();
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
        loaded_rows_ += loaders_->rows();
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
  writer_.Discard(why);
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
  if (session_.connected()) writer_.AbortCopy("pgflow is stopping");
  // Complete source transactions not committed yet (the last Flush normally did) commit; a
  // failed transaction or a source transaction cut off rolls back.
  if (status.ok() && session_.connected() && session_.in_transaction() && group_txns_ > 0 &&
      !in_source_txn_ && session_.TransactionIntact()) {
    status = CommitTransaction();
  }
  if (loaders_ != nullptr) {
    loaded_rows_ += loaders_->rows();
    loaders_.reset();  // what they had not committed rolls back
  }
  session_.Close();  // an open transaction rolls back
  tables_.CloseSource();
  LogInfo(
      "sink %s (postgres): %d snapshot rows copied, %d changes in %d transactions applied, "
      "%d transactions skipped as already applied%s",
      sink_name_, loaded_rows_ + writer_.copied_rows(), changes_, transactions_, skipped_,
      dead_letters_ > 0
          ? absl::StrCat(", ", dead_letters_, " refused changes set aside in pgflow.dead_letters")
          : "");
  return status;
}

absl::Status PostgresSink::WriteRawRows(const Event& event) {
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  if (writer_.Copying(event.change.table.get())) return writer_.CopyRows(event);
  if (absl::Status s = writer_.FinishStatements(); !s.ok()) return s;
  absl::StatusOr<TargetTable*> table = writer_.Table(event.change.table);
  if (!table.ok()) return table.status();
  if (!tables_.load_finished() && options_->load_workers > 1) {
    if (absl::Status s = tables_.PrepareSnapshotLoad(*table); !s.ok()) return s;
    if (*(*table)->fast_copy) return LoadInParallel(*table, event);
  }
  if (absl::Status s = EnsureTransaction(); !s.ok()) return s;
  if (absl::Status s = writer_.StartCopy(*table, event.change.table.get()); !s.ok()) return s;
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
  writer_.DropGroup();
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
    if (absl::Status s = writer_.FinishStatements(); !s.ok()) return s;
    return session_.Drain();
  }
  absl::StatusOr<TargetTable*> table = writer_.Table(change.table);
  if (!table.ok()) return table.status();
  if (absl::Status s = EnsureTransaction(); !s.ok()) return s;
  (*table)->fast_copy = false;
  if (absl::Status s = session_.Run("SAVEPOINT pgflow_change", "starting a savepoint"); !s.ok())
    return s;
  absl::Status s = writer_.Queue(*table, change);
  if (s.ok()) s = writer_.FinishStatements();
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

absl::Status PostgresSink::ApplyChange(const Change& change) {
  if (change.op == Op::kMessage) return absl::OkStatus();
  if (change.op == Op::kDdl) return ApplyDdl(change);
  return writer_.Apply(change);
}

absl::Status PostgresSink::ApplyDdl(const Change& change) {
  const DdlCommand& cmd = *change.ddl;
  if (ddl_mode_ != DdlMode::kApply) return absl::OkStatus();
  // Statements keep the stream's order: what came before the DDL is sent first.
  if (absl::Status s = writer_.FinishStatements(); !s.ok()) return s;
  if (absl::Status s = writer_.ReleaseDeferred(); !s.ok()) return s;
  if (absl::Status s = writer_.SendStaged(); !s.ok()) return s;
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
