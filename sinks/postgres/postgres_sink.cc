#include "sinks/postgres/postgres_sink_impl.h"

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/postgres/pg_connection.h"
#include "engine/log.h"
#include "schemas/json_encoding.h"
#include "sinks/postgres/ddl_replay.h"
#include "sinks/postgres/parallel_copy.h"
#include "sinks/postgres/sequences.h"
#include "sinks/postgres/sql_builders.h"
#include "sinks/postgres/statement_params.h"

namespace pgflow {
namespace {

// The target refused a change: a value it rejects (SQLSTATE class 22) or a constraint (23).
bool IsRefusal(const absl::Status& s) {
  const std::string sqlstate = SqlState(s);
  return absl::StartsWith(sqlstate, "22") || absl::StartsWith(sqlstate, "23");
}

}  // namespace

PostgresSink::PostgresSink(const SinkContext& context,
                           std::shared_ptr<const PostgresSinkOptions> options)
    : TransactionalSink(context.source.positions),
      sink_name_(context.sink),
      pipeline_(context.pipeline),
      origin_(context.source.postgres),
      wal_positions_(context.source.positions == SourcePositions::kWal),
      options_(std::move(options)),
      ddl_mode_(context.ddl.mode),
      replay_constraints_(context.ddl.Passes("table constraint")),
      context_(context),
      dead_letter_(context.dead_letter.enabled()),
      session_(options_->url, sink_name_),
      tables_(session_, sink_name_, pipeline_, origin_, options_),
      writer_(session_, tables_, sink_name_, options_, in_source_txn_) {
  // What is held back goes out before anything else is sent.
  session_.SetBeforeStatement([this] { return writer_.SendHeldBack(); });
}

absl::Status PostgresSink::Open() {
  if (absl::Status s = session_.Connect(); !s.ok()) return s;
  // Rows are written with triggers and foreign key checks off, as a replica's are: refused
  // now, before anything is created, when the role may not.
  if (absl::StatusOr<PgResultPtr> set =
          Exec(conn(), "BEGIN; SET LOCAL session_replication_role = replica; ROLLBACK");
      !set.ok()) {
    Exec(conn(), "ROLLBACK").IgnoreError();
    if (SqlState(set.status()) != "42501") return set.status();
    const char* user = PQuser(conn());
    const std::string role = user != nullptr ? user : "ROLE";
    return absl::PermissionDeniedError(absl::StrCat(
        "postgres target ", session_.TargetName(), ": role ", role,
        " may not set session_replication_role, which pgflow sets to 'replica' so that the "
        "target's triggers and foreign key checks do not fire on replicated rows. As a "
        "superuser, run `GRANT SET ON PARAMETER session_replication_role TO ",
        QuoteIdent(role), "` (PostgreSQL 15 and later), or connect as a superuser"));
  }
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
  if (dead_letter_) {
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
            "pgflow.applied ADD COLUMN careful_until pg_lsn; END IF; END $$",
            "recording where refused rows may be");
        !s.ok()) {
      return s;
    }
    const DeadLetterConfig& dl = context_.dead_letter;
    if (!dl.table.empty() && dl.url.empty()) {
      absl::StatusOr<TableRef> ref = ParseTableRef(dl.table);
      if (!ref.ok() || ref->is_schema()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sinks.", sink_name_, ".dead_letter.table: expected schema.name, got \"", dl.table,
            "\""));
      }
      dead_letter_table_ = *ref;
      if (absl::Status s = EnsureDeadLetterTable(conn(), *ref); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("postgres target ", TargetName(), ": ", s.message()));
      }
    } else {
      absl::StatusOr<std::unique_ptr<DeadLetterStore>> store = OpenDeadLetters(context_);
      if (!store.ok()) return store.status();
      dead_letter_store_ = *std::move(store);
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
           dead_letter_
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
            "time, refused ones set aside in %s",
            sink_name_, careful_until_.ToString(), DeadLetterPlace());
      }
    }
  }
  LogInfo("sink %s (postgres): target %s, applied through %s", sink_name_, TargetName(),
          applied_.ToString());
  return absl::OkStatus();
}

// Bounds on a group of source transactions in one target transaction.
constexpr uint64_t kGroupTransactions = 5000;
constexpr uint64_t kGroupChanges = 50000;

absl::Status PostgresSink::BeforeEvent(const Event& event) {
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
      return absl::OkStatus();
    case EventKind::kCommit:
      in_source_txn_ = false;
      return absl::OkStatus();
    case EventKind::kRollback:
      in_source_txn_ = false;
      careful_txn_ = false;
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
}

absl::Status PostgresSink::OnBegin(const TxnInfo& txn) {
  last_begun_ = txn.commit_lsn;
  careful_txn_ = careful_until_.IsValid() && txn.commit_lsn <= careful_until_;
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
}

absl::Status PostgresSink::OnChange(const Change& change, bool in_txn) {
  if (!in_txn && group_txns_ > 0) {
    // Rows outside a source transaction (snapshot rows) do not join the group.
    if (absl::Status s = CommitTransaction(); !s.ok()) return s;
  }
  ++changes_;
  if (careful_txn_) return ApplyCarefully(change);
  if (in_txn) ++group_changes_;
  return ApplyChange(change);
}

absl::Status PostgresSink::OnCommit(const TxnInfo& txn) {
  if (careful_txn_) {  // alone in its target transaction
    ++transactions_;
    group_txns_ = 1;
    group_applied_ = txn.end_lsn;
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
  group_applied_ = txn.end_lsn;
  if (commit_soon_ || group_txns_ >= kGroupTransactions || group_changes_ >= kGroupChanges) {
    return CommitTransaction();
  }
  // A large group goes out while it grows, between two source transactions (so outside any
  // savepoint): the target applies what is folded so far while the next transactions are
  // folded, rather than idle until the commit. Folding spans each part only.
  return writer_.SendAhead();
}

absl::Status PostgresSink::OnRollback() {
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
}

absl::Status PostgresSink::OnPosition(Lsn) {
  if (!tables_.load_finished()) return FinishSnapshot(false);
  return absl::OkStatus();
}

absl::Status PostgresSink::OnChunkDone(uint64_t chunk, const TableSchemaPtr& table) {
  if (table != nullptr && !tables_.Known(*table)) {
    // A table with no rows (in this chunk, and none before): created all the same.
    absl::StatusOr<TargetTable*> created = writer_.Table(table);
    if (!created.ok()) return created.status();
  }
  if (absl::Status s = CommitTransaction(); !s.ok()) return s;
  return loaders_ != nullptr ? loaders_->EndChunk(chunk) : absl::OkStatus();
}

absl::Status PostgresSink::OnSnapshotDone() {
  if (loaders_ != nullptr) {
    absl::Status s = loaders_->Finish();
    loaded_rows_ += loaders_->rows();
    loaders_.reset();
    if (!s.ok()) return s;
  }
  return FinishSnapshot(true);
}

absl::Status PostgresSink::OnRawRows(const Event& event) {
  if (group_txns_ > 0 && !in_source_txn_) {
    if (absl::Status s = CommitTransaction(); !s.ok()) return s;
  }
  return WriteRawRows(event);
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
  const uint64_t copied = loaded_rows_ + writer_.copied_rows();
  if (copied == 0 && changes_ == 0 && skipped_transactions() == 0 && dead_letters_ == 0) {
    return status;  // nothing done: a line of zeros would read like a result
  }
  LogInfo(
      "sink %s (postgres) closed: %d snapshot rows copied, %d changes in %d transactions "
      "applied, %d transactions skipped as already applied%s",
      sink_name_, copied, changes_, transactions_, skipped_transactions(),
      dead_letters_ > 0
          ? absl::StrCat(", ", dead_letters_.load(),
                         dead_letters_ == 1 ? " refused change" : " refused changes",
                         " set aside in ", DeadLetterPlace())
          : "");
  return status;
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
  replay.constraints = replay_constraints_;
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
  for (const ConstraintReplay& c : plan->constraints) {
    if (absl::Status s = ReplayConstraint(c, cmd, change.lsn); !s.ok()) return s;
  }
  for (const std::string& why : plan->constraints_passed_over) {
    LogWarning("sink %s (postgres): %s %s at %s: not replayed: %s", sink_name_, cmd.tag,
               cmd.identity, change.lsn.ToString(), why);
  }
  // A table created on the source gets the owner and grants it has there (roles: copy).
  const bool created =
      cmd.tag == "CREATE TABLE" || cmd.tag == "CREATE TABLE AS" || cmd.tag == "SELECT INTO";
  if (created && cmd.table.has_value() && !plan->statements.empty() && options_->CopiesRoles()) {
    if (absl::Status s = tables_.GiveSourceOwner(cmd.table->schema, cmd.table->name); !s.ok()) {
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

// Under a savepoint of its own: a constraint the target refuses (a referenced table it lacks,
// rows that break it) is rolled back alone and reported with the statement that adds it; the
// stream goes on. Only a lost connection stops the sink.
absl::Status PostgresSink::ReplayConstraint(const ConstraintReplay& c, const DdlCommand& cmd,
                                            Lsn lsn) {
  auto context = [&] { return absl::StrCat("postgres target ", TargetName(), ": constraint"); };
  if (absl::Status s = session_.SendPendingSavepoint(); !s.ok()) return s;
  if (absl::Status s = session_.RunAlone("SAVEPOINT pgflow_constraint", context); !s.ok()) {
    return s;
  }
  absl::Status failed;
  for (const std::string& sql : c.statements) {
    LogDebug("sink %s (postgres): %s %s at %s: %s", sink_name_, cmd.tag, cmd.identity,
             lsn.ToString(), sql);
    failed = session_.RunAlone(sql, context);
    if (!failed.ok()) break;
  }
  if (failed.ok()) return session_.RunAlone("RELEASE SAVEPOINT pgflow_constraint", context);
  if (absl::IsUnavailable(failed)) return failed;
  if (absl::Status s = session_.RunAlone("ROLLBACK TO SAVEPOINT pgflow_constraint", context);
      !s.ok()) {
    return s;
  }
  LogWarning(
      "sink %s (postgres): %s %s at %s: constraint %s on %s not replayed: %s. Add it on the "
      "target once it can hold: %s",
      sink_name_, cmd.tag, cmd.identity, lsn.ToString(), c.name, c.table, failed.message(),
      absl::StrJoin(c.statements, "; "));
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

void PostgresSink::DiscardTransactionRows(const char* why) {
  writer_.Discard(why);
  // A table created in the rolled-back transaction is gone again: check anew.
  tables_.Clear();
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

absl::Status PostgresSink::FinishSnapshot(bool copy_sequences) {
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  if (absl::Status s = CommitTransaction(); !s.ok()) return s;
  if (absl::Status s = tables_.FinishLoad(); !s.ok()) return s;
  if (!copy_sequences || origin_ == nullptr) return absl::OkStatus();
  absl::StatusOr<PGconn*> source = tables_.SourceConnection();
  absl::StatusOr<SequenceCopyResult> copied =
      source.ok() ? CopyTableSequences(*source, conn(), origin_->tables, options_->schema)
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

absl::Status PostgresSink::Refused(absl::Status s) {
  // Within the careful range already, the refusal is not one change's (a commit, a DDL
  // replay): it stops the pipeline, as without dead_letter, rather than start it over and over.
  const bool careful = careful_until_.IsValid() && last_begun_ <= careful_until_;
  if (!dead_letter_ || !tables_.load_finished() || careful || !last_begun_.IsValid() ||
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
      " again, a change at a time, to set the refused ones aside in ", DeadLetterPlace()));
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

std::string PostgresSink::DeadLetterPlace() const {
  if (dead_letter_table_) return dead_letter_table_->ToString();
  return dead_letter_store_ != nullptr ? dead_letter_store_->Describe() : "the dead-letter record";
}

absl::Status PostgresSink::RecordDeadLetter(const TargetTable& table, const Change& change,
                                            const absl::Status& refusal) {
  const Row& key_row = change.op == Op::kInsert || change.before_kind == BeforeKind::kNone
                           ? change.after
                           : change.before;
  DeadLetter letter =
      MakeDeadLetter(pipeline_, sink_name_, change, DescribeKey(table, key_row),
                     std::string(refusal.message()), SqlState(refusal));
  if (dead_letter_table_) {
    // In the target transaction: the record commits with the rest of the source transaction.
    // (StatementParams points into the values: they outlive it.)
    std::vector<Value> values;
    for (std::string& v : DeadLetterInsertParams(letter)) {
      values.push_back(Value::Text(oid::kText, std::move(v)));
    }
    StatementParams params;
    for (const Value& v : values) params.Add(v);
    if (absl::Status s = session_.RunPrepared(
            DeadLetterInsertSql(*dead_letter_table_), params,
            [&] {
              return absl::StrCat("postgres target ", TargetName(), ": recording a refused change in ",
                                  dead_letter_table_->ToString());
            });
        !s.ok()) {
      return s;
    }
  } else if (absl::Status s = dead_letter_store_->Record(letter); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("sink ", sink_name_, ": ", refusal.message(),
                                               "; and it could not be set aside: ", s.message()));
  }
  ++dead_letters_;
  LogWarning("sink %s (postgres): set aside in %s: %s", sink_name_, DeadLetterPlace(),
             refusal.message());
  return absl::OkStatus();
}

}  // namespace pgflow
