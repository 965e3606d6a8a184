#include "sinks/postgres/row_writer.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/log.h"
#include "schemas/json_encoding.h"
#include "sinks/postgres/parallel_copy.h"
#include "sinks/postgres/sql_builders.h"

namespace pgflow {
namespace {

constexpr size_t kMaxParams = 65535;

// Rows per multi-row statement of `params_per_row` parameters each: the sink's batch_rows,
// bounded by the protocol's limit of 65,535 parameters per statement.
size_t RowsPerStatement(const PostgresSinkOptions& options, size_t params_per_row) {
  return std::max<size_t>(
      1, std::min<size_t>(options.batch_rows, kMaxParams / std::max<size_t>(params_per_row, 1)));
}

}  // namespace

RowWriter::RowWriter(TargetSession& session, TargetTables& tables, std::string sink_name,
                     std::shared_ptr<const PostgresSinkOptions> options, const bool& in_source_txn)
    : session_(session),
      tables_(tables),
      sink_name_(std::move(sink_name)),
      options_(std::move(options)),
      in_source_txn_(in_source_txn) {}

absl::Status RowWriter::SendHeldBack() {
  if (absl::Status s = SendGroupFirst(); !s.ok()) return s;
  return ReleaseDeferred();
}

absl::StatusOr<TargetTable*> RowWriter::Table(const TableSchemaPtr& schema) {
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

absl::Status RowWriter::Apply(const Change& change) {
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
  absl::StatusOr<TargetTable*> table = Table(change.table);
  if (!table.ok()) return table.status();
  if (absl::Status s = session_.Begin(); !s.ok()) return s;
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
      if (absl::Status s = Queue(*table, change); !s.ok()) return s;
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

absl::Status RowWriter::Queue(TargetTable* table, const Change& change) {
  switch (change.op) {
    case Op::kInsert:
      return QueueUpsert(table, change);
    case Op::kUpdate:
      return QueueUpdate(table, change);
    default:
      return QueueDelete(table, change);
  }
}

absl::Status RowWriter::FinishStatements() {
  if (absl::Status s = EndCopy(); !s.ok()) return s;
  if (absl::Status s = FlushReads(); !s.ok()) return s;
  if (absl::Status s = FlushInserts(); !s.ok()) return s;
  if (absl::Status s = FlushUpdates(); !s.ok()) return s;
  return FlushDeletes();
}

absl::Status RowWriter::ReleaseDeferred() {
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

absl::Status RowWriter::SendStaged() {
  txn_folded_ = 0;
  if (absl::Status s = SendGroupFirst(); !s.ok()) return s;
  if (absl::Status s = SendNet(group_net_); !s.ok()) return s;
  return SendNet(txn_net_);
}

absl::Status RowWriter::StartCopy(TargetTable* table, const TableSchema* schema) {
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
          absl::StrCat("postgres target ", session_.TargetName(), ": COPY into ", table->name));
      !s.ok()) {
    return s;
  }
  copy_table_ = table;
  copy_schema_ = schema;
  copy_rows_ = 0;
  return absl::OkStatus();
}

absl::Status RowWriter::CopyRows(const Event& event) {
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
                                              return absl::StrCat(
                                                  "postgres target ", session_.TargetName(),
                                                  ": copying into ", copy_table_->name);
                                            });
      !s.ok()) {
    return s;
  }
  copy_rows_ += event.rows;
  return absl::OkStatus();
}

void RowWriter::AbortCopy(const char* why) {
  if (copy_table_ != nullptr) session_.AbortCopy(why);
  copy_table_ = nullptr;
  copy_schema_ = nullptr;
}

void RowWriter::EndSourceTransaction() {
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
}

absl::Status RowWriter::SendAhead() {
  constexpr size_t kSendAheadRows = 8192;
  size_t staged_rows = 0;
  for (const Staged& t : group_net_) staged_rows += t.changes.size();
  if (staged_rows >= kSendAheadRows) return SendNet(group_net_);
  return absl::OkStatus();
}

void RowWriter::Discard(const char* why) {
  deferred_.clear();
  deferred_rows_ = 0;
  txn_net_.clear();
  txn_folded_ = 0;
  reads_.Clear();
  inserts_.Clear();
  updates_.Clear();
  deletes_.Clear();
  AbortCopy(why);
}

absl::Status RowWriter::SendGroupFirst() {
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

absl::StatusOr<bool> RowWriter::Foldable(TargetTable* table) {
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

absl::StatusOr<bool> RowWriter::Stage(TargetTable* table, const Change& change) {
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

absl::Status RowWriter::SendNet(std::vector<Staged>& staged) {
  if (staged.empty()) return absl::OkStatus();
  std::vector<Staged> work = std::exchange(staged, {});
  for (Staged& t : work) {
    TargetTable* table = t.table.get();
    std::vector<NetChanges::Entry>& entries = t.changes.entries();
    const size_t width = table->schema->columns.size();
    auto per_statement = [&](size_t params_per_row) {
      return RowsPerStatement(*options_, params_per_row);
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

absl::Status RowWriter::EndCopy() {
  if (copy_table_ == nullptr) return absl::OkStatus();
  TargetTable* table = copy_table_;
  copy_table_ = nullptr;
  copy_schema_ = nullptr;
  const std::string context = absl::StrCat("postgres target ", session_.TargetName(), ": COPY of ",
                                           copy_rows_, " snapshot rows into ", table->name);
  if (absl::Status s = session_.EndCopy(context); !s.ok()) return s;
  copied_rows_ += copy_rows_;
  if (*table->fast_copy) return absl::OkStatus();
  return session_.Run(UpsertFromStageSql(*table),
                      absl::StrCat("upserting staged snapshot rows into ", table->name));
}

absl::Status RowWriter::QueueRead(TargetTable* table, const Change& change) {
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

absl::Status RowWriter::FlushReads() {
  RowBatch batch = reads_.Take();
  TargetTable* table = batch.table();
  const uint64_t rows = batch.size();
  if (table == nullptr || rows == 0) return absl::OkStatus();
  if (absl::Status s = session_.Drain(); !s.ok()) return s;
  const std::string context = absl::StrCat("postgres target ", session_.TargetName(), ": copying ",
                                           rows, " snapshot rows into ", table->name);
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

absl::Status RowWriter::QueueUpsert(TargetTable* table, const Change& change) {
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
  if (inserts_.size() >= RowsPerStatement(*options_, n)) return FlushInserts();
  return absl::OkStatus();
}

absl::Status RowWriter::FlushInserts() {
  RowBatch batch = inserts_.Take();
  if (batch.table() == nullptr || batch.empty() || Defer(batch)) return absl::OkStatus();
  return SendUpserts(batch.table(), std::move(batch.rows()));
}

absl::Status RowWriter::SendUpserts(TargetTable* table, std::vector<Row> rows, bool once) {
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
      absl::StrCat("postgres target ", session_.TargetName(), ": inserting into ", table->name,
                   rows.size() == 1 ? " the row with key " : " a batch of rows from key ",
                   DescribeKey(*table, rows.front()),
                   rows.size() == 1 ? "" : absl::StrCat(" to ", DescribeKey(*table, rows.back()))),
      nullptr, once && !text);
}

absl::Status RowWriter::QueueUpdate(TargetTable* table, const Change& change) {
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
      table->foldable == false ? 1
                               : RowsPerStatement(*options_, table->key.size() + columns.size());
  updates_.Use(table, change.table.get());
  updates_.set_columns(std::move(columns));
  updates_.AddUpdate(PendingUpdate{old_row, change.after});
  updates_.AddKey(std::move(*old_key));
  updates_.AddKey(std::move(*new_key));
  if (updates_.size() >= per_statement) return FlushUpdates();
  return absl::OkStatus();
}

absl::Status RowWriter::FlushUpdates() {
  RowBatch batch = updates_.Take();
  if (batch.table() == nullptr || batch.empty() || Defer(batch)) return absl::OkStatus();
  return SendUpdates(batch.table(), std::move(batch.updates()), std::move(batch.columns()));
}

absl::Status RowWriter::SendUpdates(TargetTable* table, std::vector<PendingUpdate> rows,
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

absl::Status RowWriter::SendUpdateBatch(const TargetTable& table,
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
      absl::StrCat("postgres target ", session_.TargetName(), ": updating ", table.name,
                   " a batch of rows from key ", DescribeKey(table, key_row(rows.front())), " to ",
                   DescribeKey(table, key_row(rows.back()))),
      affected, once && !text,
      warn_missing ? RowCountCheck{rows.size(), table.name} : RowCountCheck{});
}

absl::Status RowWriter::ApplyUpdate(TargetTable* table, const Row& old_row, const Row& after) {
  StatementParams params;
  absl::StatusOr<std::string> sql = UpdateRowSql(*table, old_row, after, &params);
  if (!sql.ok()) return sql.status();
  if (sql->empty()) return absl::OkStatus();
  auto context = [&] {
    return absl::StrCat("postgres target ", session_.TargetName(), ": updating ", table->name,
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

absl::Status RowWriter::QueueDelete(TargetTable* table, const Change& change) {
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
  if (deletes_.size() >= RowsPerStatement(*options_, table->key.size())) return FlushDeletes();
  return absl::OkStatus();
}

absl::Status RowWriter::FlushDeletes() {
  RowBatch batch = deletes_.Take();
  if (batch.table() == nullptr || batch.empty() || Defer(batch)) return absl::OkStatus();
  return SendDeletes(batch.table(), std::move(batch.rows()));
}

absl::Status RowWriter::SendDeletes(TargetTable* table, std::vector<Row> rows, bool once) {
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
        absl::StrCat("postgres target ", session_.TargetName(), ": deleting from ", table->name,
                     " a batch of rows from key ", DescribeKey(*table, rows.front()), " to ",
                     DescribeKey(*table, rows.back())),
        nullptr, false);
  }
  for (const Row& row : rows) {
    for (size_t k : table->key) params.Add(row[k]);
  }
  return session_.SendPrepared(
      DeleteInSql(*table, rows.size()), params,
      absl::StrCat("postgres target ", session_.TargetName(), ": deleting from ", table->name,
                   rows.size() == 1 ? " the row with key " : " a batch of rows from key ",
                   DescribeKey(*table, rows.front()),
                   rows.size() == 1 ? "" : absl::StrCat(" to ", DescribeKey(*table, rows.back()))),
      nullptr, once);
}

absl::Status RowWriter::ApplyDelete(TargetTable* table, const Change& change) {
  StatementParams params;
  absl::StatusOr<std::string> sql = DeleteRowSql(*table, change.before, &params);
  if (!sql.ok()) return sql.status();
  return session_.RunPrepared(*sql, params, [&] {
    return absl::StrCat("postgres target ", session_.TargetName(), ": deleting from ", table->name,
                        " the row with key ", DescribeKey(*table, change.before));
  });
}

bool RowWriter::Deferring(size_t rows) const {
  return in_source_txn_ && session_.savepoint_pending() && deferred_rows_ + rows <= kDeferRows;
}

bool RowWriter::Defer(RowBatch& batch) {
  if (!Deferring(batch.size())) return false;
  deferred_rows_ += batch.size();
  deferred_.push_back(std::move(batch));
  return true;
}

}  // namespace pgflow
