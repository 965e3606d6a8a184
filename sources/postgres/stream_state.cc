#include "sources/postgres/stream_state.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <thread>
#include <type_traits>
#include <variant>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/log.h"

namespace pgflow {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kBatchEvents = 1024;
constexpr size_t kBatchBytes = 1 << 20;

// Sleeps up to `d`, waking early when a stop is requested. Returns false if stopped.
bool SleepUnlessStopped(std::chrono::milliseconds d, const StopSignal& stop) {
  auto until = Clock::now() + d;
  while (Clock::now() < until) {
    if (stop.requested()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return !stop.requested();
}

}  // namespace

absl::Status PostgresSource::StreamState::Run() {
  for (const TableRef& ref : source_->source_.tables) {
    if (ref.table == "*") {
      followed_schemas_.insert(ref.schema);
    } else {
      followed_tables_.insert(ref.ToString());
    }
  }
  for (const TableRef& ref : source_->skipped_at_start_) skipped_tables_.insert(ref.ToString());
  handed_on_ = source_->start_;
  LoadPendingBackfills();
  auto backoff = std::chrono::milliseconds(500);
  int attempt = 0;
  while (true) {
    absl::Status s = source_->streaming_ ? RunConnected() : absl::UnavailableError("not connected");
    if (stop_.requested() || absl::IsCancelled(s)) {
      // A transaction cut short here comes again in full after a restart.
      CutTransaction();
      absl::Status e = EmitBatch();
      return e.ok() || absl::IsCancelled(e) ? absl::OkStatus() : e;
    }
    if (!absl::IsUnavailable(s)) return s;
    // Lost the connection: whatever part of a transaction the sinks got will come again.
    source_->streaming_ = false;
    CutTransaction();
    if (absl::Status e = EmitBatch(); !e.ok()) {
      return absl::IsCancelled(e) ? absl::OkStatus() : e;
    }
    source_->replication_.reset();
    ++attempt;
    LogWarning("replication stream: %s; reconnecting in %.1fs (attempt %d)", s.message(),
               backoff.count() / 1000.0, attempt);
    if (!SleepUnlessStopped(backoff, stop_)) return absl::OkStatus();
    backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
    absl::Status started = source_->StartReplication(std::max(handed_on_, acks_.Confirmed()));
    if (started.ok()) {
      LogInfo("replication stream: reconnected, resuming after %s", handed_on_.ToString());
      backoff = std::chrono::milliseconds(500);
      attempt = 0;
    } else if (!absl::IsUnavailable(started)) {
      return started;
    } else {
      LogWarning("replication stream: %s", started.message());
    }
  }
}

void PostgresSource::StreamState::CutTransaction() {
  if (in_txn_ && !skip_txn_) {
    Event rollback;
    rollback.kind = EventKind::kRollback;
    rollback.txn = txn_;
    Add(std::move(rollback));
  }
  in_txn_ = false;
}

absl::Status PostgresSource::StreamState::RunConnected() {
  PGconn* conn = source_->replication_.get();
  const auto status_interval = source_->source_.status_interval;
  catching_up_ = false;  // a new connection's socket wakes at every byte
  window_bytes_ = 0;
  // Whatever ends the stream, the socket wakes at every byte again: the end of the COPY and
  // the server's last replies are a few bytes, which a blocking libpq call waits for.
  absl::Cleanup wake_at_every_byte = [&] {
    if (catching_up_) SetCatchingUp(PQsocket(conn), false);
  };
  while (!stop_.requested()) {
    char* buf = nullptr;
    int n = PQgetCopyData(conn, &buf, /*async=*/1);
    if (n > 0) {
      window_bytes_ += static_cast<size_t>(n);
      absl::Status s = HandleFrame(std::string_view(buf, static_cast<size_t>(n)));
      PQfreemem(buf);
      if (!s.ok()) return s;
      if (batch_.events.size() >= kBatchEvents || batch_.bytes >= kBatchBytes) {
        if (absl::Status e = EmitBatch(); !e.ok()) return e;
      }
      if (Clock::now() - last_status_ >= status_interval) {
        if (absl::Status e = SendStatus(false); !e.ok()) return e;
        if (absl::Status e = TendBackfills(); !e.ok()) return e;
      }
      continue;
    }
    if (n == 0) {
      // Nothing complete is buffered: hand on what we have, answer the server, then wait.
      if (absl::Status e = EmitBatch(); !e.ok()) return e;
      if (absl::Status e = SendStatus(false); !e.ok()) return e;
      MaybeHeartbeat();
      if (absl::Status e = TendBackfills(); !e.ok()) return e;
      if (absl::Status s = WaitAndRead(conn, 100); !s.ok()) return s;
      continue;
    }
    if (n == -2) return ResultError(conn, nullptr, "reading the stream");
    // n == -1: the server ended the stream. A shutdown or a terminated WAL sender is worth a
    // reconnect; a dropped slot or publication is not.
    PgResultPtr res(PQgetResult(conn));
    if (PQresultStatus(res.get()) == PGRES_COMMAND_OK) {
      return absl::UnavailableError("the server ended the replication stream");
    }
    return ResultError(conn, res.get(), "the server ended the replication stream");
  }
  return absl::OkStatus();
}

void PostgresSource::StreamState::SetCatchingUp(int fd, bool on) {
  const int lowat = on ? kCatchUpLowat : 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) == 0) catching_up_ = on;
}

absl::Status PostgresSource::StreamState::WaitAndRead(PGconn* conn, int timeout_ms) {
  constexpr size_t kCatchUpBytes = 512 << 10;
  constexpr auto kCatchUpWindow = std::chrono::milliseconds(50);
  constexpr int kCatchUpWaitMs = 5;
  const int fd = PQsocket(conn);
  const auto now = Clock::now();
  if (now - window_start_ >= kCatchUpWindow) {
    const bool busy = window_bytes_ >= kCatchUpBytes;
    if (busy != catching_up_) SetCatchingUp(fd, busy);
    window_bytes_ = 0;
    window_start_ = now;
  }
  pollfd pfd = {fd, POLLIN, 0};
  ::poll(&pfd, 1, catching_up_ ? kCatchUpWaitMs : timeout_ms);
  // A non-blocking read takes whatever is there, below the low-water mark too.
  if (PQconsumeInput(conn) == 0) return ResultError(conn, nullptr, "reading the stream");
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::HandleFrame(std::string_view bytes) {
  absl::StatusOr<pgoutput::StreamFrame> frame = pgoutput::DecodeFrame(bytes);
  if (!frame.ok()) return frame.status();
  if (auto* keepalive = std::get_if<pgoutput::Keepalive>(&*frame)) {
    emitter_.NoteServerWalEnd(keepalive->wal_end);
    // Between transactions, everything before the server's position has been received: once
    // the sinks hold what came before, that position can be confirmed, so a quiet or
    // filtered-out stream never pins WAL.
    if (!in_txn_ && keepalive->wal_end > handed_on_) {
      Event position;
      position.kind = EventKind::kPosition;
      position.position = keepalive->wal_end;
      Add(std::move(position));
      handed_on_ = keepalive->wal_end;
    }
    if (keepalive->reply_requested) return SendStatus(true);
    return absl::OkStatus();
  }
  const auto& data = std::get<pgoutput::XLogData>(*frame);
  // (A logical WAL sender sets it on the last message of each decoded change only: 0 on the
  // relation and type messages sent before it.)
  if (data.wal_end.IsValid()) emitter_.NoteServerWalEnd(data.wal_end);
  return HandleMessage(data);
}

absl::Status PostgresSource::StreamState::HandleMessage(const pgoutput::XLogData& frame) {
  absl::StatusOr<pgoutput::Message> decoded = pgoutput::DecodeMessage(frame.payload);
  if (!decoded.ok()) return decoded.status();
  return std::visit(
      [&](auto& message) -> absl::Status {
        using Kind = std::decay_t<decltype(message)>;
        if constexpr (std::is_same_v<Kind, pgoutput::InsertMessage> ||
                      std::is_same_v<Kind, pgoutput::UpdateMessage> ||
                      std::is_same_v<Kind, pgoutput::DeleteMessage> ||
                      std::is_same_v<Kind, pgoutput::TruncateMessage>) {
          if (!in_txn_) {
            return absl::DataLossError("pgoutput sent a row change outside a transaction");
          }
          if (skip_txn_) return absl::OkStatus();
        }
        return On(message, frame);
      },
      *decoded);
}

Event PostgresSource::StreamState::ChangeEvent(Op op, TableSchemaPtr table, Lsn lsn) {
  Event event;
  event.kind = EventKind::kChange;
  event.change.op = op;
  event.change.table = std::move(table);
  event.change.txn = txn_;
  event.change.lsn = lsn;
  event.change.sequence = sequence_++;
  return event;
}

absl::Status PostgresSource::StreamState::On(pgoutput::BeginMessage& begin,
                                             const pgoutput::XLogData& /*frame*/) {
  in_txn_ = true;
  txn_ = TxnInfo{begin.xid, begin.final_lsn, Lsn(), begin.commit_time_us};
  sequence_ = 0;
  // After a reconnect the server may resend what the sinks already have.
  skip_txn_ = begin.final_lsn < handed_on_;
  if (!skip_txn_) {
    Event event;
    event.kind = EventKind::kBegin;
    event.txn = txn_;
    Add(std::move(event));
  }
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::On(pgoutput::CommitMessage& commit,
                                             const pgoutput::XLogData& /*frame*/) {
  if (!in_txn_) return absl::DataLossError("pgoutput sent a Commit outside a transaction");
  in_txn_ = false;
  if (skip_txn_) return absl::OkStatus();
  txn_.end_lsn = commit.end_lsn;
  Event event;
  event.kind = EventKind::kCommit;
  event.txn = txn_;
  Add(std::move(event));
  handed_on_ = std::max(handed_on_, commit.end_lsn);
  if (backfill_ending_) {
    // The backfill's last rows are in this transaction: it is done once this is durable.
    backfill_durable_at_ = commit.end_lsn;
    backfill_ending_ = false;
  }
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::On(pgoutput::OriginMessage& /*origin*/,
                                             const pgoutput::XLogData& /*frame*/) {
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::On(pgoutput::RelationMessage& relation,
                                             const pgoutput::XLogData& /*frame*/) {
  TableSchema schema;
  schema.relation_id = relation.relation_id;
  schema.schema = std::move(relation.schema);
  schema.name = std::move(relation.name);
  schema.replica_identity = relation.replica_identity;
  for (pgoutput::RelationColumn& c : relation.columns) {
    schema.columns.push_back(
        Column{std::move(c.name), c.type_oid, c.type_modifier, (c.flags & 1) != 0, {}});
  }
  if (schema.replica_identity == 'f') {
    // pgoutput marks every column: sinks that key rows (kafka) need the real key.
    absl::StatusOr<std::vector<std::string>> key = PrimaryKeyOf(relation.relation_id);
    if (!key.ok()) return key.status();
    schema.primary_key = *std::move(key);
  }
  followed_relids_.insert(relation.relation_id);
  TableSchemaPtr version = catalog_.UpdateRelation(std::move(schema));
  LogDebug("relation %s (oid %d) version %d", version->QualifiedName(), version->relation_id,
           version->version);
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::On(pgoutput::TypeMessage& type,
                                             const pgoutput::XLogData& /*frame*/) {
  catalog_.UpdateType(type.type_oid, absl::StrCat(type.schema, ".", type.name));
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::On(pgoutput::LogicalMessage& logical,
                                             const pgoutput::XLogData& frame) {
  if (logical.prefix == kHeartbeatPrefix) return absl::OkStatus();
  if (logical.transactional && skip_txn_) return absl::OkStatus();
  if (logical.prefix == kBackfillPrefix) return QueueBackfill(logical.content);
  if (logical.prefix == kWatermarkPrefix) return OnWatermark(logical.content, frame.wal_start);
  if (logical.prefix == kDdlMessagePrefix && logical.transactional) {
    return OnDdlMessage(logical, frame);
  }
  Event event;
  if (logical.transactional) {
    event = ChangeEvent(Op::kMessage, nullptr, frame.wal_start);
  } else {
    // Outside any transaction: its own LSN is its position.
    event.kind = EventKind::kChange;
    event.change.op = Op::kMessage;
    event.change.txn = TxnInfo{0, logical.lsn, Lsn(), frame.send_time_us};
    event.change.lsn = logical.lsn;
  }
  event.change.prefix = std::move(logical.prefix);
  event.change.content = std::move(logical.content);
  event.change.transactional = logical.transactional;
  Add(std::move(event));
  return absl::OkStatus();
}

absl::StatusOr<TableSchemaPtr> PostgresSource::StreamState::ChangedTable(uint32_t relation_id) {
  absl::StatusOr<TableSchemaPtr> table = FindRelation(relation_id);
  if (!table.ok()) return table.status();
  if (source_->CopiedAfter(**table, txn_.commit_lsn)) return TableSchemaPtr();
  return table;
}

void PostgresSource::StreamState::AddRowChange(Event&& event) {
  NoteForBackfill(event.change);
  Add(std::move(event));
}

absl::Status PostgresSource::StreamState::On(pgoutput::InsertMessage& insert,
                                             const pgoutput::XLogData& frame) {
  absl::StatusOr<TableSchemaPtr> table = ChangedTable(insert.relation_id);
  if (!table.ok() || *table == nullptr) return table.status();
  Event event = ChangeEvent(Op::kInsert, *table, frame.wal_start);
  absl::StatusOr<Row> row = ToRow(insert.new_tuple, **table, "an insert");
  if (!row.ok()) return row.status();
  event.change.after = *std::move(row);
  AddRowChange(std::move(event));
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::On(pgoutput::UpdateMessage& update,
                                             const pgoutput::XLogData& frame) {
  absl::StatusOr<TableSchemaPtr> table = ChangedTable(update.relation_id);
  if (!table.ok() || *table == nullptr) return table.status();
  Event event = ChangeEvent(Op::kUpdate, *table, frame.wal_start);
  absl::StatusOr<Row> row = ToRow(update.new_tuple, **table, "an update");
  if (!row.ok()) return row.status();
  event.change.after = *std::move(row);
  if (update.old_kind != 0) {
    absl::StatusOr<Row> old = ToRow(update.old_tuple, **table, "an update's old row");
    if (!old.ok()) return old.status();
    event.change.before = *std::move(old);
    event.change.before_kind = update.old_kind == 'O' ? BeforeKind::kFull : BeforeKind::kKey;
  }
  AddRowChange(std::move(event));
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::On(pgoutput::DeleteMessage& del,
                                             const pgoutput::XLogData& frame) {
  absl::StatusOr<TableSchemaPtr> table = ChangedTable(del.relation_id);
  if (!table.ok() || *table == nullptr) return table.status();
  Event event = ChangeEvent(Op::kDelete, *table, frame.wal_start);
  absl::StatusOr<Row> old = ToRow(del.old_tuple, **table, "a delete");
  if (!old.ok()) return old.status();
  event.change.before = *std::move(old);
  event.change.before_kind = del.old_kind == 'O' ? BeforeKind::kFull : BeforeKind::kKey;
  AddRowChange(std::move(event));
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::On(pgoutput::TruncateMessage& truncate,
                                             const pgoutput::XLogData& frame) {
  for (uint32_t relation_id : truncate.relation_ids) {
    absl::StatusOr<TableSchemaPtr> table = ChangedTable(relation_id);
    if (!table.ok()) return table.status();
    if (*table == nullptr) continue;
    Event event = ChangeEvent(Op::kTruncate, *table, frame.wal_start);
    event.change.truncate_cascade = truncate.cascade;
    event.change.truncate_restart_identity = truncate.restart_identity;
    AddRowChange(std::move(event));
  }
  return absl::OkStatus();
}

absl::StatusOr<TableSchemaPtr> PostgresSource::StreamState::FindRelation(uint32_t relation_id) {
  TableSchemaPtr table = catalog_.Find(relation_id);
  if (table == nullptr) {
    return absl::DataLossError(
        absl::StrCat("pgoutput sent a change for relation ", relation_id, " before describing it"));
  }
  return table;
}

absl::StatusOr<Row> PostgresSource::StreamState::ToRow(const pgoutput::TupleData& tuple,
                                                       const TableSchema& table,
                                                       absl::string_view what) {
  if (tuple.size() != table.columns.size()) {
    return absl::DataLossError(absl::StrCat(what, " of ", table.QualifiedName(), " has ",
                                            tuple.size(), " columns, its relation has ",
                                            table.columns.size()));
  }
  Row row;
  row.reserve(tuple.size());
  for (size_t i = 0; i < tuple.size(); ++i) {
    const pgoutput::TupleColumn& col = tuple[i];
    uint32_t oid = table.columns[i].type_oid;
    switch (col.kind) {
      case 'n':
        row.push_back(Value::Null(oid));
        break;
      case 'u':
        row.push_back(Value::UnchangedToast(oid));
        break;
      case 'b':
        row.push_back(Value{ValueKind::kBinary, oid, col.data});
        break;
      default:
        row.push_back(Value::Text(oid, col.data));
        break;
    }
  }
  return row;
}

absl::StatusOr<std::vector<std::string>> PostgresSource::StreamState::PrimaryKeyOf(uint32_t relid) {
  if (auto it = primary_keys_.find(relid); it != primary_keys_.end()) return it->second;
  // The catalog as it is now, not as of the stream's position: a key changed since is set
  // right by that change's DDL event, further on in the stream.
  PGconn* conn = StateConnection();
  if (conn == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot read the primary key of the table with OID ", relid,
                     " (REPLICA IDENTITY FULL): no connection to the source"));
  }
  absl::StatusOr<PgResultPtr> res =
      Exec(conn,
           "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
           "AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1]) "
           "WHERE i.indrelid = $1::oid AND i.indisprimary "
           "ORDER BY array_position((i.indkey::int2[])[0:i.indnkeyatts - 1], a.attnum)",
           {std::to_string(relid)});
  if (!res.ok()) {
    return absl::UnavailableError(absl::StrCat("reading the primary key of the table with OID ",
                                               relid, ": ", res.status().message()));
  }
  std::vector<std::string> key;
  for (int i = 0; i < PQntuples(res->get()); ++i) key.push_back(PQgetvalue(res->get(), i, 0));
  primary_keys_[relid] = key;
  return key;
}

PGconn* PostgresSource::StreamState::StateConnection() {
  if (state_conn_ == nullptr || PQstatus(state_conn_.get()) != CONNECTION_OK) {
    absl::StatusOr<PgConnPtr> conn = Connect(source_->source_.url, ConnectionKind::kRegular);
    if (!conn.ok()) {
      LogWarning("%s", conn.status().message());
      return nullptr;
    }
    state_conn_ = *std::move(conn);
    Exec(state_conn_.get(), "SET statement_timeout = '10s'").IgnoreError();
  }
  return state_conn_.get();
}

void PostgresSource::StreamState::Add(Event event) {
  batch_.bytes += event.ApproximateBytes();
  batch_.events.push_back(std::move(event));
}

absl::Status PostgresSource::StreamState::EmitBatch() {
  while (pending_ != nullptr || !batch_.events.empty()) {
    if (pending_ == nullptr) {
      pending_ = std::make_shared<const EventBatch>(std::move(batch_));
      batch_ = EventBatch();
      batch_.events.reserve(kBatchEvents);
    }
    switch (emitter_.Emit(pending_, absl::Milliseconds(100))) {
      case Emitter::Result::kOk:
        pending_.reset();
        break;
      case Emitter::Result::kClosed:
        return absl::CancelledError("pipeline closed");
      case Emitter::Result::kTimeout:
        // The sinks are full: keep the server answered so it does not time us out, and stop
        // reading until there is room (back-pressure reaches the WAL sender). The batch is
        // kept: if the connection fails now, it is still handed on before anything after it.
        if (stop_.requested()) return absl::CancelledError("stopping");
        if (absl::Status s = SendStatus(false); !s.ok()) return s;
        break;
    }
  }
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::SendStatus(bool force) {
  auto now = Clock::now();
  Lsn confirmed = acks_.Confirmed();
  if (!force && now - last_status_ < source_->source_.status_interval &&
      confirmed == last_status_lsn_) {
    return absl::OkStatus();
  }
  if (!force && now - last_status_ < std::chrono::milliseconds(100)) return absl::OkStatus();
  PGconn* conn = source_->replication_.get();
  if (!source_->streaming_ || conn == nullptr) return absl::OkStatus();
  std::string message =
      pgoutput::EncodeStandbyStatus(confirmed, absl::ToUnixMicros(absl::Now()), false);
  if (PQputCopyData(conn, message.data(), static_cast<int>(message.size())) != 1 ||
      PQflush(conn) != 0) {
    return ResultError(conn, nullptr, "sending a standby status update");
  }
  last_status_ = now;
  last_status_lsn_ = confirmed;
  return absl::OkStatus();
}

void PostgresSource::StreamState::MaybeHeartbeat() {
  auto interval = source_->source_.heartbeat_interval;
  if (interval.count() == 0 || Clock::now() - last_heartbeat_ < interval) return;
  last_heartbeat_ = Clock::now();
  if (heartbeat_conn_ == nullptr || PQstatus(heartbeat_conn_.get()) != CONNECTION_OK) {
    absl::StatusOr<PgConnPtr> conn = Connect(source_->source_.url, ConnectionKind::kRegular);
    if (!conn.ok()) {
      LogWarning("heartbeat: %s", conn.status().message());
      return;
    }
    heartbeat_conn_ = *std::move(conn);
  }
  absl::StatusOr<std::string> written = WriteHeartbeat(heartbeat_conn_.get());
  if (!written.ok()) LogWarning("heartbeat: %s", written.status().message());
}

}  // namespace pgflow
