#include "sources/postgres/postgres_source.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/log.h"
#include "nlohmann/json.hpp"
#include "schemas/ddl.h"
#include "schemas/pg_array_literal.h"
#include "sources/postgres/backfill.h"
#include "sources/postgres/ddl_capture.h"
#include "sources/postgres/pgoutput.h"
#include "sources/postgres/slot_holder.h"
#include "sources/postgres/slot_monitor.h"
#include "sources/postgres/snapshot.h"

namespace pgflow {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> QuotedNames(const std::vector<TableRef>& tables) {
  std::vector<std::string> names;
  for (const TableRef& t : tables) names.push_back(t.Quoted());
  return names;
}

// "a, b, c" for a log line, the first ten of a long list and how many more.
std::string NameSome(const std::vector<std::string>& names) {
  constexpr size_t kShown = 10;
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(names.size(), kShown));
  std::string text = absl::StrJoin(shown, ", ");
  if (names.size() > kShown) absl::StrAppend(&text, " and ", names.size() - kShown, " more");
  return text;
}

constexpr size_t kBatchEvents = 1024;
constexpr size_t kBatchBytes = 1 << 20;
constexpr std::string_view kHeartbeatPrefix = "pgflow.heartbeat";

int64_t NowUnixUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string QualifiedIdent(const std::string& schema, const std::string& table) {
  return absl::StrCat(QuoteIdent(schema), ".", QuoteIdent(table));
}

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

// Everything the replication loop keeps between messages: the catalog, the transaction being
// decoded, the batch being filled and where the stream stands.
class PostgresSource::StreamState {
 public:
  StreamState(PostgresSource* source, Emitter& emitter, const AckTracker& acks,
              const StopSignal& stop)
      : source_(source), emitter_(emitter), acks_(acks), stop_(stop) {}

  absl::Status Run();

 private:
  absl::Status RunConnected();
  absl::Status HandleFrame(std::string_view bytes);
  absl::Status HandleMessage(const pgoutput::XLogData& frame);
  absl::StatusOr<Row> ToRow(const pgoutput::TupleData& tuple, const TableSchema& table,
                            absl::string_view what);
  absl::StatusOr<TableSchemaPtr> FindRelation(uint32_t relation_id);
  // The primary key (column names, in key order) of table `relid`, for a table under REPLICA
  // IDENTITY FULL: the last DDL event's, else the source catalog's (read once). Unavailable
  // when the catalog cannot be asked.
  absl::StatusOr<std::vector<std::string>> PrimaryKeyOf(uint32_t relid);
  void Add(Event event);
  // Ends a transaction cut off mid-way (lost connection, stop) with a kRollback event.
  void CutTransaction();
  absl::Status QueueBackfill(std::string_view content);
  // Whether a captured DDL command concerns the pipeline's tables. Keeps the followed names
  // current across renames and drops, and asks for a backfill of a table that moves into a
  // followed schema with its rows.
  bool Follows(const DdlCommand& cmd);
  // Asks for a backfill of a table whose rows the stream did not carry.
  void RequestTableCopy(const std::string& schema, const std::string& name, const char* why);
  // The description in a 'pgflow.ddl' message if pgflow's triggers wrote it (its MAC checks
  // out in the source), nullopt otherwise.
  absl::StatusOr<std::optional<std::string>> AuthenticDdl(std::string_view content);
  bool FollowsTable(const std::string& schema, const std::string& name) const {
    return followed_schemas_.contains(schema) ||
           followed_tables_.contains(absl::StrCat(schema, ".", name));
  }
  bool FollowsSomethingIn(const std::string& schema) const;
  void NoteForBackfill(const Change& change);
  // keyless_tables: skip: a `DROP TABLE` of `held` before `cmd`, the command that brings the
  // table back (see left_tables_).
  template <typename MakeEvent>
  void AddRejoinDrop(const TableRef& held, const DdlCommand& cmd, MakeEvent& change_event);
  template <typename MakeEvent>
  absl::Status OnWatermark(std::string_view content, MakeEvent& change_event);
  // A backfill that failed: started again after a lost connection, recorded and passed over
  // when a table it names does not exist; otherwise recorded, and the pipeline stops (its
  // sinks may hold stale rows of the tables it was copying).
  absl::Status FailBackfill(const absl::Status& error);
  PGconn* StateConnection();
  void LoadPendingBackfills();
  // Starts the next backfill, and records the current one done once the sinks hold it.
  absl::Status TendBackfills();
  // Hands the batch on, answering the server while the sinks are full. kCancelled if stopped.
  absl::Status EmitBatch();
  absl::Status SendStatus(bool force);
  void MaybeHeartbeat();
  // Waits for more of the stream (at most `timeout_ms`) and reads what came. See "Catching up".
  absl::Status WaitAndRead(PGconn* conn, int timeout_ms);
  // Has socket `fd` wake the reader once kCatchUpLowat bytes wait (`on`) or at every byte.
  // Best effort: without it every change wakes the reader, as before.
  void SetCatchingUp(int fd, bool on);
  static constexpr int kCatchUpLowat = 64 << 10;

  PostgresSource* source_;
  Emitter& emitter_;
  const AckTracker& acks_;
  const StopSignal& stop_;

  Catalog catalog_;
  // What the pipeline follows: whole schemas ("schema.*") and single tables ("schema.table").
  std::set<std::string> followed_schemas_;
  std::set<std::string> followed_tables_;
  // OIDs of the tables followed, known from Relation messages and DDL: a renamed table stays.
  absl::flat_hash_set<uint32_t> followed_relids_;
  // keyless_tables: skip: the followed tables ("schema.table") left out for want of a key,
  // kept current by DDL events; their indexes and constraints are left out with them.
  std::set<std::string> skipped_tables_;
  // keyless_tables: skip: tables that lost their key while followed, by OID, under the name the
  // sinks hold them by; one that regains a key is dropped there first (its changes and schema
  // changes in between never reached them), then created and copied anew.
  absl::flat_hash_map<uint32_t, TableRef> left_tables_;
  std::optional<TableRef> drop_before_;  // set by Follows for the command it let through
  // Primary keys by table OID (see PrimaryKeyOf), kept current by DDL events in stream order.
  absl::flat_hash_map<uint32_t, std::vector<std::string>> primary_keys_;
  std::set<std::pair<Lsn, uint32_t>> rewrites_seen_;  // (commit, table) already handled
  EventBatch batch_;
  // A batch handed to the emitter but not yet taken by every sink: never dropped, so that
  // nothing handed on (and so skipped after a reconnect) can be lost.
  EventBatchPtr pending_;

  bool in_txn_ = false;
  bool skip_txn_ = false;
  TxnInfo txn_;
  uint64_t sequence_ = 0;
  // End of the last transaction (or keepalive position) handed on: after a reconnect, whatever
  // ends at or before it is skipped, since the sinks already have it.
  Lsn handed_on_;

  // Catching up: while the stream comes faster than kCatchUpBytes in kCatchUpWindow, the
  // socket wakes the reader only once kCatchUpLowat bytes wait (SO_RCVLOWAT), at most
  // kCatchUpWaitMs after the last read. Every change is otherwise a wake-up of this thread,
  // and on loopback a wake-up the WAL sender pays in its send(): a backlog then costs the
  // source server more CPU in system calls than in decoding. A wait that times out means the
  // stream slowed down: back to waking at every byte, so a quiet stream loses no latency.
  bool catching_up_ = false;
  size_t window_bytes_ = 0;
  Clock::time_point window_start_ = Clock::now();

  Clock::time_point last_status_{};
  Lsn last_status_lsn_;
  Clock::time_point last_heartbeat_ = Clock::now();
  PgConnPtr heartbeat_conn_;

  // Backfills (`pgflow snapshot`), one at a time, in the order they were asked for.
  std::unique_ptr<Backfill> backfill_;
  std::deque<int64_t> backfill_queue_;
  std::set<int64_t> backfills_seen_;
  // Requests announced in the stream but not yet visible in pgflow.backfills, since when.
  std::map<int64_t, Clock::time_point> backfill_missing_since_;
  Clock::time_point backfill_retry_at_{};  // the next look for such a request
  uint64_t backfill_rows_ = 0;
  bool backfill_ending_ = false;  // the current transaction holds the backfill's last rows
  Lsn backfill_durable_at_;       // done once this is confirmed
  PgConnPtr state_conn_;          // pgflow.backfills bookkeeping
};

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
  emitter_.NoteServerWalEnd(data.wal_end);
  return HandleMessage(data);
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

absl::Status PostgresSource::StreamState::QueueBackfill(std::string_view content) {
  int64_t id = 0;
  if (!absl::SimpleAtoi(absl::string_view(content.data(), content.size()), &id)) {
    LogWarning("ignoring a malformed %s message '%s'", kBackfillPrefix, std::string(content));
    return absl::OkStatus();
  }
  if (backfills_seen_.insert(id).second) backfill_queue_.push_back(id);
  return absl::OkStatus();
}

bool PostgresSource::StreamState::FollowsSomethingIn(const std::string& schema) const {
  if (followed_schemas_.contains(schema)) return true;
  auto it = followed_tables_.lower_bound(schema + ".");
  return it != followed_tables_.end() && absl::StartsWith(*it, schema + ".");
}

bool PostgresSource::StreamState::Follows(const DdlCommand& cmd) {
  if (cmd.IsTable()) {
    const std::string schema = cmd.table ? cmd.table->schema : cmd.schema;
    const std::string name = cmd.table ? cmd.table->name : cmd.name;
    const bool known = followed_relids_.contains(cmd.objid);
    const bool skip = source_->SkipsKeyless();
    const bool before = cmd.old_table && FollowsTable(cmd.old_table->schema, cmd.old_table->name) &&
                        !(skip && cmd.old_table->Keyless());
    // A table followed under its previous name stays followed (by OID, as the publication
    // follows it).
    const bool now = known || before || FollowsTable(schema, name);
    if (skip && cmd.old_table)
      skipped_tables_.erase(TableRef{cmd.old_table->schema, cmd.old_table->name}.ToString());
    if (cmd.dropped) skipped_tables_.erase(TableRef{schema, name}.ToString());
    if (cmd.dropped || !now) return now;
    if (skip && cmd.table && cmd.table->Keyless()) {
      // Left out of the publication by the capture, in the transaction of this command.
      skipped_tables_.insert(TableRef{schema, name}.ToString());
      if (known || before) {
        LogWarning(
            "table %s lost its primary key (%s): with keyless_tables: skip it has left the "
            "publication; the sinks keep the rows they hold and receive no more of its changes",
            TableRef{schema, name}.Quoted(), cmd.tag);
        followed_relids_.erase(cmd.objid);
        left_tables_.try_emplace(cmd.objid, cmd.old_table ? cmd.old_table->schema : schema,
                                 cmd.old_table ? cmd.old_table->name : name);
      }
      return false;
    }
    if (!known) {
      followed_relids_.insert(cmd.objid);
      if (auto left = left_tables_.find(cmd.objid); left != left_tables_.end()) {
        drop_before_ = left->second;
        left_tables_.erase(left);
      }
      if (!before && cmd.old_table && !cmd.tag.starts_with("CREATE")) {
        // Moved into a followed schema with its rows, or (keyless_tables: skip) given a key:
        // rows the stream never carried.
        RequestTableCopy(schema, name,
                         skip && cmd.old_table->Keyless()
                             ? "gained a primary key and joined the pipeline with its rows"
                             : "joined the pipeline with its rows");
      }
    }
    if (known && !FollowsTable(schema, name)) {
      // A followed table renamed or moved: the publication follows it by OID, and so does the
      // pipeline until it restarts.
      LogWarning(
          "table %s.%s (OID %d) is followed under its new name: update "
          "source.postgres.tables before the next start",
          schema, name, cmd.objid);
    }
    if (source_->reload_new_columns_ && cmd.old_table && !cmd.rewritten &&
        rewrites_seen_.insert({txn_.commit_lsn, cmd.objid}).second) {
      // A column added with a default has that value in every existing row without a change
      // in the stream. A sink holding whole rows (the kv cache) reads them again.
      for (const DdlColumn& c : cmd.table->columns) {
        if (cmd.old_table->FindAttnum(c.attnum) == nullptr && !c.default_expr.empty()) {
          RequestTableCopy(schema, name, "gained a column with a default");
          break;
        }
      }
    }
    if (cmd.rewritten && rewrites_seen_.insert({txn_.commit_lsn, cmd.objid}).second) {
      // A rewrite's rows are not decoded. A type change by a plain cast or SET LOGGED leaves
      // values as the sinks will have them; a USING expression or a new column's volatile
      // default does not: the table is copied again.
      bool added = false;
      if (cmd.old_table) {
        for (const DdlColumn& c : cmd.table->columns) {
          added = added || cmd.old_table->FindAttnum(c.attnum) == nullptr;
        }
      }
      if (added || cmd.statement.size() >= 2000 ||
          absl::AsciiStrToLower(cmd.statement).find("using") != std::string::npos) {
        RequestTableCopy(schema, name, "was rewritten with values computed by the source");
      }
    }
    return true;
  }
  const bool skipped = skipped_tables_.contains(TableRef{cmd.on_schema, cmd.on_table}.ToString());
  if (cmd.object_type == "index") {
    if (cmd.dropped) return FollowsSomethingIn(cmd.schema);
    return FollowsTable(cmd.on_schema, cmd.on_table) && !skipped;
  }
  if (cmd.object_type == "table constraint") {
    return FollowsTable(cmd.on_schema, cmd.on_table) && !skipped;
  }
  if (cmd.object_type == "sequence") return FollowsSomethingIn(cmd.schema);
  // Other objects (functions, views, types...) only when their whole schema is followed.
  return followed_schemas_.contains(cmd.schema);
}

template <typename MakeEvent>
void PostgresSource::StreamState::AddRejoinDrop(const TableRef& held, const DdlCommand& cmd,
                                                MakeEvent& change_event) {
  DdlCommand drop;
  drop.tag = "DROP TABLE";
  drop.object_type = "table";
  drop.schema = held.schema;
  drop.name = held.table;
  drop.identity = held.Quoted();
  drop.objid = cmd.objid;
  drop.dropped = true;
  drop.statement =
      "(pgflow: the table regained a key under keyless_tables: skip; its copy is "
      "made anew)";
  LogInfo(
      "table %s regained a primary key: the sinks' copy, stale since it lost its key, is "
      "dropped and made anew",
      held.Quoted());
  nlohmann::json body = {{"tag", drop.tag},           {"object_type", drop.object_type},
                         {"identity", drop.identity}, {"schema", drop.schema},
                         {"name", drop.name},         {"objid", drop.objid},
                         {"dropped", true},           {"statement", drop.statement}};
  Event event = change_event(Op::kDdl, nullptr);
  event.change.ddl = std::make_shared<const DdlCommand>(std::move(drop));
  event.change.prefix = std::string(kDdlMessagePrefix);
  event.change.content = body.dump();
  Add(std::move(event));
}

void PostgresSource::StreamState::RequestTableCopy(const std::string& schema,
                                                   const std::string& name, const char* why) {
  const TableRef ref{schema, name};
  const std::string table = ref.Quoted();
  absl::StatusOr<int64_t> id = RequestBackfill(source_->source_.url, source_->pipeline_, {ref});
  if (id.ok()) {
    LogInfo("table %s %s: backfill %d copies it", table, why, *id);
  } else {
    LogWarning(
        "table %s %s, but a backfill could not be queued (%s): run `pgflow snapshot "
        "--tables %s`",
        table, why, id.status().message(), table);
  }
}

absl::StatusOr<std::optional<std::string>> PostgresSource::StreamState::AuthenticDdl(
    std::string_view content) {
  size_t colon = content.find(':');
  if (colon != 64) return std::optional<std::string>();
  PGconn* conn = StateConnection();
  if (conn == nullptr) return absl::UnavailableError("cannot check a DDL message's signature");
  std::string body(content.substr(colon + 1));
  absl::StatusOr<PgResultPtr> res =
      Exec(conn, "SELECT pgflow.ddl_verify($1, $2)", {body, std::string(content.substr(0, colon))});
  if (!res.ok()) {
    if (PQstatus(conn) != CONNECTION_OK) return res.status();
    LogWarning(
        "cannot check DDL messages (%s): run `pgflow init` as a superuser to update "
        "pgflow's schema in the source",
        res.status().message());
    return std::optional<std::string>();
  }
  if (PQgetvalue(res->get(), 0, 0)[0] != 't') return std::optional<std::string>();
  return std::optional<std::string>(std::move(body));
}

void PostgresSource::StreamState::NoteForBackfill(const Change& change) {
  if (backfill_ == nullptr || !backfill_->Watches(change.table->relation_id)) return;
  if (change.op == Op::kTruncate) {
    backfill_->NoteTruncated();
    return;
  }
  if (!change.after.empty()) backfill_->NoteChanged(*change.table, change.after);
  if (!change.before.empty()) backfill_->NoteChanged(*change.table, change.before);
}

template <typename MakeEvent>
absl::Status PostgresSource::StreamState::OnWatermark(std::string_view content,
                                                      MakeEvent& change_event) {
  if (backfill_ == nullptr) return absl::OkStatus();
  std::optional<Backfill::Watermark> mark = backfill_->ParseWatermark(content);
  if (!mark) return absl::OkStatus();  // another run's, replayed: nothing to do
  if (!mark->high) {
    backfill_->OpenWindow(mark->chunk);
    return absl::OkStatus();
  }
  absl::StatusOr<Backfill::Chunk> chunk = backfill_->CloseWindow(mark->chunk);
  if (!chunk.ok()) return FailBackfill(chunk.status());
  if (chunk->replace) {
    // A keyless table's copy replaces what the sinks hold of it.
    Add(change_event(Op::kTruncate, chunk->table));
  }
  for (Row& row : chunk->rows) {
    Event event = change_event(Op::kRead, chunk->table);
    event.change.after = std::move(row);
    Add(std::move(event));
  }
  backfill_rows_ += chunk->rows.size();
  if (chunk->last) backfill_ending_ = true;
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::FailBackfill(const absl::Status& error) {
  const int64_t id = backfill_->id();
  backfill_.reset();
  emitter_.NoteBackfill("");
  backfill_ending_ = false;
  backfill_durable_at_ = Lsn();
  if (absl::IsUnavailable(error)) {
    LogWarning("backfill %d: %s; starting it again", id, error.message());
    backfill_queue_.push_front(id);
    return absl::OkStatus();
  }
  LogError("backfill %d failed: %s", id, error.message());
  auto res = Exec(StateConnection(), "UPDATE pgflow.backfills SET error = $2 WHERE id = $1",
                  {absl::StrCat(id), std::string(error.message())});
  if (!res.ok()) LogWarning("backfill %d: %s", id, res.status().message());
  if (absl::IsNotFound(error)) return absl::OkStatus();
  // Not a pause to wait out (kUnavailable) nor a restart from the slot (kAborted): a stop.
  return absl::FailedPreconditionError(absl::StrCat("backfill ", id,
                                                    " failed, and the sinks may hold stale rows "
                                                    "of the tables it was copying: ",
                                                    error.message()));
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

void PostgresSource::StreamState::LoadPendingBackfills() {
  PGconn* conn = StateConnection();
  if (conn == nullptr) return;
  auto res = Exec(conn,
                  "SELECT id FROM pgflow.backfills WHERE to_regclass('pgflow.backfills') IS NOT "
                  "NULL AND pipeline = $1 AND finished_at IS NULL AND error IS NULL ORDER BY id",
                  {source_->pipeline_});
  if (!res.ok()) return;  // no pgflow schema: no backfill was ever asked for
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    QueueBackfill(PQgetvalue(res->get(), i, 0)).IgnoreError();
  }
}

absl::Status PostgresSource::StreamState::TendBackfills() {
  if (backfill_ != nullptr) {
    if (absl::Status e = backfill_->error(); !e.ok()) {
      if (absl::Status s = FailBackfill(e); !s.ok()) return s;
    } else if (backfill_durable_at_.IsValid() && acks_.Confirmed() >= backfill_durable_at_) {
      auto res =
          Exec(StateConnection(), "UPDATE pgflow.backfills SET finished_at = now() WHERE id = $1",
               {absl::StrCat(backfill_->id())});
      if (!res.ok()) LogWarning("backfill: %s", res.status().message());
      LogInfo("backfill %d: done, %d rows copied", backfill_->id(), backfill_rows_);
      if (backfill_->id() == source_->full_copy_backfill_) {
        Event done;
        done.kind = EventKind::kSnapshotDone;
        Add(std::move(done));
      }
      backfill_.reset();
      emitter_.NoteBackfill("");
      backfill_durable_at_ = Lsn();
    }
  }
  if (backfill_ != nullptr || backfill_queue_.empty()) return absl::OkStatus();
  if (Clock::now() < backfill_retry_at_) return absl::OkStatus();
  const int64_t id = backfill_queue_.front();
  PGconn* conn = StateConnection();
  if (conn == nullptr)
    return absl::OkStatus();  // the request stays queued: tried again at the next turn
  auto res = Exec(conn,
                  "SELECT t FROM pgflow.backfills b LEFT JOIN LATERAL unnest(b.tables) AS t ON "
                  "true WHERE b.id = $1",
                  {absl::StrCat(id)});
  if (!res.ok() && absl::IsUnavailable(res.status())) return absl::OkStatus();  // likewise
  backfill_queue_.pop_front();
  auto refuse = [&](const std::string& why) {
    LogError("backfill %d: %s", id, why);
    auto recorded =
        Exec(conn, "UPDATE pgflow.backfills SET error = $2 WHERE id = $1", {absl::StrCat(id), why});
    if (!recorded.ok()) LogWarning("backfill %d: %s", id, recorded.status().message());
    return absl::OkStatus();
  };
  if (!res.ok()) return refuse(absl::StrCat("cannot read the request: ", res.status().message()));
  if (PQntuples(res->get()) == 0) {
    // The stream may show a committed transaction a moment before other sessions see its
    // rows (the commit record is in the WAL before the commit is visible): look again, four
    // times a second, for a minute before concluding the request was deleted.
    // (Under synchronous replication, for as long as a standby takes to confirm.)
    auto [first_missed, added] = backfill_missing_since_.try_emplace(id, Clock::now());
    if (Clock::now() - first_missed->second < std::chrono::seconds(60)) {
      backfill_queue_.push_front(id);
      backfill_retry_at_ = Clock::now() + std::chrono::milliseconds(250);
      return absl::OkStatus();
    }
    backfill_missing_since_.erase(id);
    LogWarning("backfill %d: the request is gone from pgflow.backfills; nothing to copy", id);
    return absl::OkStatus();
  }
  backfill_missing_since_.erase(id);
  Backfill::Options options;
  options.url = source_->source_.url;
  options.id = id;
  options.skip_keyless = source_->SkipsKeyless();
  std::string listed;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    if (PQgetisnull(res->get(), i, 0)) continue;  // an empty list: every table
    const char* text = PQgetvalue(res->get(), i, 0);
    absl::StatusOr<TableRef> ref = ParseTableRef(text);
    if (!ref.ok()) {
      return refuse(absl::StrCat("invalid table '", text, "': ", ref.status().message()));
    }
    absl::StrAppend(&listed, listed.empty() ? "" : ", ", ref->Quoted());
    options.tables.push_back(*std::move(ref));
  }
  if (options.tables.empty()) options.tables = source_->source_.tables;
  LogInfo("backfill %d: copying %s beside the stream", id, listed.empty() ? "every table" : listed);
  backfill_rows_ = 0;
  backfill_ = std::make_unique<Backfill>(std::move(options));
  emitter_.NoteBackfill(
      absl::StrCat("backfill ", id, ": ", listed.empty() ? "every table" : listed));
  return absl::OkStatus();
}

void PostgresSource::StreamState::Add(Event event) {
  batch_.bytes += event.ApproximateBytes();
  batch_.events.push_back(std::move(event));
}

absl::Status PostgresSource::StreamState::HandleMessage(const pgoutput::XLogData& frame) {
  absl::StatusOr<pgoutput::Message> decoded = pgoutput::DecodeMessage(frame.payload);
  if (!decoded.ok()) return decoded.status();
  pgoutput::Message& message = *decoded;

  auto change_event = [&](Op op, TableSchemaPtr table) {
    Event event;
    event.kind = EventKind::kChange;
    event.change.op = op;
    event.change.table = std::move(table);
    event.change.txn = txn_;
    event.change.lsn = frame.wal_start;
    event.change.sequence = sequence_++;
    return event;
  };

  if (auto* begin = std::get_if<pgoutput::BeginMessage>(&message)) {
    in_txn_ = true;
    txn_ = TxnInfo{begin->xid, begin->final_lsn, Lsn(), begin->commit_time_us};
    sequence_ = 0;
    // After a reconnect the server may resend what the sinks already have.
    skip_txn_ = begin->final_lsn < handed_on_;
    if (!skip_txn_) {
      Event event;
      event.kind = EventKind::kBegin;
      event.txn = txn_;
      Add(std::move(event));
    }
    return absl::OkStatus();
  }
  if (auto* commit = std::get_if<pgoutput::CommitMessage>(&message)) {
    if (!in_txn_) return absl::DataLossError("pgoutput sent a Commit outside a transaction");
    in_txn_ = false;
    if (skip_txn_) return absl::OkStatus();
    txn_.end_lsn = commit->end_lsn;
    Event event;
    event.kind = EventKind::kCommit;
    event.txn = txn_;
    Add(std::move(event));
    handed_on_ = std::max(handed_on_, commit->end_lsn);
    if (backfill_ending_) {
      // The backfill's last rows are in this transaction: it is done once this is durable.
      backfill_durable_at_ = commit->end_lsn;
      backfill_ending_ = false;
    }
    return absl::OkStatus();
  }
  if (auto* relation = std::get_if<pgoutput::RelationMessage>(&message)) {
    TableSchema schema;
    schema.relation_id = relation->relation_id;
    schema.schema = std::move(relation->schema);
    schema.name = std::move(relation->name);
    schema.replica_identity = relation->replica_identity;
    for (pgoutput::RelationColumn& c : relation->columns) {
      schema.columns.push_back(
          Column{std::move(c.name), c.type_oid, c.type_modifier, (c.flags & 1) != 0, {}});
    }
    if (schema.replica_identity == 'f') {
      // pgoutput marks every column: sinks that key rows (kafka) need the real key.
      absl::StatusOr<std::vector<std::string>> key = PrimaryKeyOf(relation->relation_id);
      if (!key.ok()) return key.status();
      schema.primary_key = *std::move(key);
    }
    followed_relids_.insert(relation->relation_id);
    TableSchemaPtr version = catalog_.UpdateRelation(std::move(schema));
    LogDebug("relation %s (oid %d) version %d", version->QualifiedName(), version->relation_id,
             version->version);
    return absl::OkStatus();
  }
  if (auto* type = std::get_if<pgoutput::TypeMessage>(&message)) {
    catalog_.UpdateType(type->type_oid, absl::StrCat(type->schema, ".", type->name));
    return absl::OkStatus();
  }
  if (std::holds_alternative<pgoutput::OriginMessage>(message)) return absl::OkStatus();

  if (auto* logical = std::get_if<pgoutput::LogicalMessage>(&message)) {
    if (logical->prefix == kHeartbeatPrefix) return absl::OkStatus();
    if (logical->transactional && skip_txn_) return absl::OkStatus();
    if (logical->prefix == kBackfillPrefix) return QueueBackfill(logical->content);
    if (logical->prefix == kWatermarkPrefix) return OnWatermark(logical->content, change_event);
    if (logical->prefix == kDdlMessagePrefix && logical->transactional) {
      absl::StatusOr<std::optional<std::string>> body = AuthenticDdl(logical->content);
      if (!body.ok()) return body.status();
      if (!body->has_value()) {
        // Anyone may call pg_logical_emit_message: what the triggers did not sign is no DDL.
        LogWarning("ignoring a %s message at %s that pgflow's DDL capture did not write",
                   kDdlMessagePrefix, frame.wal_start.ToString());
        return absl::OkStatus();
      }
      absl::StatusOr<DdlCommand> ddl = ParseDdlCommand(**body);
      if (!ddl.ok()) {
        return absl::DataLossError(absl::StrCat(
            "the DDL description at ", frame.wal_start.ToString(), " cannot be read (",
            ddl.status().message(),
            "): the source's pgflow schema may be another version's; run `pgflow init` with "
            "this one as a superuser"));
      }
      {
        drop_before_.reset();
        if (!Follows(*ddl)) return absl::OkStatus();
        if (drop_before_.has_value()) AddRejoinDrop(*drop_before_, *ddl, change_event);
        if (ddl->identity_set_full && ddl->table.has_value()) {
          const std::string table = TableRef{ddl->table->schema, ddl->table->name}.Quoted();
          if (source_->options_->keyless_tables == KeylessPolicy::kFail) {
            return absl::FailedPreconditionError(absl::StrCat(
                "table ", table, " (", ddl->tag, " at ", frame.wal_start.ToString(),
                ") has no primary key and source.postgres.keyless_tables is 'fail'. pgflow's "
                "DDL capture set REPLICA IDENTITY FULL on it so that the application's writes "
                "go on; add a primary key to it, or set keyless_tables: full, and start again"));
          }
          LogInfo(
              "table %s has no primary key (%s): pgflow's DDL capture set REPLICA IDENTITY "
              "FULL on it, so that its UPDATEs and DELETEs work and stream whole rows",
              table, ddl->tag);
        }
        uint32_t relid = ddl->IsTable() ? ddl->objid : 0;
        Event event = change_event(Op::kDdl, relid != 0 ? catalog_.Find(relid) : nullptr);
        if (ddl->IsTable() && ddl->dropped) {
          catalog_.Forget(relid);
          primary_keys_.erase(relid);
        } else if (ddl->IsTable() && ddl->table.has_value()) {
          primary_keys_[relid] = ddl->table->primary_key;
          // A key added or dropped under FULL changes no column: pgoutput need not describe
          // the table again, so its current version takes the new key now.
          TableSchemaPtr current = catalog_.Find(relid);
          if (current != nullptr && current->replica_identity == 'f' &&
              current->primary_key != ddl->table->primary_key) {
            TableSchema changed = *current;
            changed.primary_key = ddl->table->primary_key;
            catalog_.UpdateRelation(std::move(changed));
          }
        }
        // A table copied as of a later position has this command's effect in its copy, shape
        // and indexes included: replayed, a DROP and CREATE of it would empty the copy, a DROP
        // and ADD COLUMN lose the column's values, whose changes before the copy are skipped.
        const std::string on_table = ddl->IsTable() ? absl::StrCat(ddl->schema, ".", ddl->name)
                                     : !ddl->on_table.empty()
                                         ? absl::StrCat(ddl->on_schema, ".", ddl->on_table)
                                         : std::string();
        if (!on_table.empty() && source_->CopiedAfter(on_table, txn_.commit_lsn)) {
          LogInfo("%s %s at %s is in the copy of %s, taken after it: not replayed", ddl->tag,
                  ddl->identity, txn_.commit_lsn.ToString(), on_table);
          return absl::OkStatus();
        }
        LogDebug("DDL %s %s at %s", ddl->tag, ddl->identity, frame.wal_start.ToString());
        event.change.ddl = std::make_shared<const DdlCommand>(*std::move(ddl));
        event.change.prefix = std::move(logical->prefix);
        event.change.content = **std::move(body);
        Add(std::move(event));
        return absl::OkStatus();
      }
    }
    Event event;
    if (logical->transactional) {
      event = change_event(Op::kMessage, nullptr);
    } else {
      // Outside any transaction: its own LSN is its position.
      event.kind = EventKind::kChange;
      event.change.op = Op::kMessage;
      event.change.txn = TxnInfo{0, logical->lsn, Lsn(), frame.send_time_us};
      event.change.lsn = logical->lsn;
    }
    event.change.prefix = std::move(logical->prefix);
    event.change.content = std::move(logical->content);
    event.change.transactional = logical->transactional;
    Add(std::move(event));
    return absl::OkStatus();
  }

  if (!in_txn_) return absl::DataLossError("pgoutput sent a row change outside a transaction");
  if (skip_txn_) return absl::OkStatus();

  if (auto* insert = std::get_if<pgoutput::InsertMessage>(&message)) {
    absl::StatusOr<TableSchemaPtr> table = FindRelation(insert->relation_id);
    if (!table.ok()) return table.status();
    if (source_->CopiedAfter(**table, txn_.commit_lsn)) return absl::OkStatus();
    Event event = change_event(Op::kInsert, *table);
    absl::StatusOr<Row> row = ToRow(insert->new_tuple, **table, "an insert");
    if (!row.ok()) return row.status();
    event.change.after = *std::move(row);
    NoteForBackfill(event.change);
    Add(std::move(event));
    return absl::OkStatus();
  }
  if (auto* update = std::get_if<pgoutput::UpdateMessage>(&message)) {
    absl::StatusOr<TableSchemaPtr> table = FindRelation(update->relation_id);
    if (!table.ok()) return table.status();
    if (source_->CopiedAfter(**table, txn_.commit_lsn)) return absl::OkStatus();
    Event event = change_event(Op::kUpdate, *table);
    absl::StatusOr<Row> row = ToRow(update->new_tuple, **table, "an update");
    if (!row.ok()) return row.status();
    event.change.after = *std::move(row);
    if (update->old_kind != 0) {
      absl::StatusOr<Row> old = ToRow(update->old_tuple, **table, "an update's old row");
      if (!old.ok()) return old.status();
      event.change.before = *std::move(old);
      event.change.before_kind = update->old_kind == 'O' ? BeforeKind::kFull : BeforeKind::kKey;
    }
    NoteForBackfill(event.change);
    Add(std::move(event));
    return absl::OkStatus();
  }
  if (auto* del = std::get_if<pgoutput::DeleteMessage>(&message)) {
    absl::StatusOr<TableSchemaPtr> table = FindRelation(del->relation_id);
    if (!table.ok()) return table.status();
    if (source_->CopiedAfter(**table, txn_.commit_lsn)) return absl::OkStatus();
    Event event = change_event(Op::kDelete, *table);
    absl::StatusOr<Row> old = ToRow(del->old_tuple, **table, "a delete");
    if (!old.ok()) return old.status();
    event.change.before = *std::move(old);
    event.change.before_kind = del->old_kind == 'O' ? BeforeKind::kFull : BeforeKind::kKey;
    NoteForBackfill(event.change);
    Add(std::move(event));
    return absl::OkStatus();
  }
  if (auto* truncate = std::get_if<pgoutput::TruncateMessage>(&message)) {
    for (uint32_t relation_id : truncate->relation_ids) {
      absl::StatusOr<TableSchemaPtr> table = FindRelation(relation_id);
      if (!table.ok()) return table.status();
      if (source_->CopiedAfter(**table, txn_.commit_lsn)) continue;
      Event event = change_event(Op::kTruncate, *table);
      event.change.truncate_cascade = truncate->cascade;
      event.change.truncate_restart_identity = truncate->restart_identity;
      NoteForBackfill(event.change);
      Add(std::move(event));
    }
    return absl::OkStatus();
  }
  return absl::OkStatus();
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
  std::string message = pgoutput::EncodeStandbyStatus(confirmed, NowUnixUs(), false);
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
  auto res = Exec(heartbeat_conn_.get(), absl::StrCat("SELECT pg_logical_emit_message(false, ",
                                                      QuoteLiteral(kHeartbeatPrefix), ", '')"));
  if (!res.ok()) LogWarning("heartbeat: %s", res.status().message());
}

PostgresSource::PostgresSource(std::string pipeline, std::string file,
                               std::shared_ptr<const PostgresSourceOptions> options)
    : pipeline_(std::move(pipeline)),
      file_(std::move(file)),
      options_(std::move(options)),
      source_(*options_) {}

PostgresSource::~PostgresSource() = default;

absl::Status PostgresSource::CheckServer(PGconn* conn) { return CheckSourceServer(conn); }

absl::Status CheckSourceServer(PGconn* conn) {
  absl::StatusOr<PgResultPtr> res =
      Exec(conn, "SELECT current_setting('wal_level'), current_setting('server_version_num')::int");
  if (!res.ok()) return res.status();
  std::string wal_level = PQgetvalue(res->get(), 0, 0);
  int version = std::atoi(PQgetvalue(res->get(), 0, 1));
  if (version < 140000) {
    return absl::FailedPreconditionError(
        absl::StrCat("PostgreSQL at ", Describe(conn), " is version ", version / 10000,
                     ": pgflow needs PostgreSQL 14 or later (pgoutput's `messages` option)"));
  }
  if (wal_level != "logical") {
    return absl::FailedPreconditionError(absl::StrCat(
        "wal_level is '", wal_level, "' on ", Describe(conn),
        ": logical replication needs wal_level = logical (set it in postgresql.conf, or "
        "ALTER SYSTEM SET wal_level = logical, and restart PostgreSQL)"));
  }
  return absl::OkStatus();
}

absl::Status PostgresSource::CheckTables(PGconn* conn) {
  constexpr const char* kTableQuery =
      "SELECT n.nspname, c.relname, c.relkind, c.relispartition FROM pg_class c JOIN "
      "pg_namespace n ON n.oid = c.relnamespace "
      "WHERE n.nspname = $1 AND ($2 = '*' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
      "OR c.relname = $2) ORDER BY 2";
  for (const TableRef& ref : source_.tables) {
    if (ref.table == "*") {
      auto ns = Exec(conn, "SELECT 1 FROM pg_namespace WHERE nspname = $1", {ref.schema});
      if (!ns.ok()) return ns.status();
      if (PQntuples(ns->get()) == 0) {
        return absl::NotFoundError(absl::StrCat("schema ", ref.schema,
                                                " (in source.postgres.tables) "
                                                "does not exist in ",
                                                Describe(conn)));
      }
    }
    absl::StatusOr<PgResultPtr> res = Exec(conn, kTableQuery, {ref.schema, ref.table});
    if (!res.ok()) return res.status();
    PGresult* r = res->get();
    if (ref.table != "*" && PQntuples(r) == 0) {
      return absl::NotFoundError(absl::StrCat("table ", ref.ToString(),
                                              " (in source.postgres.tables) does not exist in ",
                                              Describe(conn)));
    }
    for (int i = 0; i < PQntuples(r); ++i) {
      std::string name = absl::StrCat(PQgetvalue(r, i, 0), ".", PQgetvalue(r, i, 1));
      char kind = PQgetvalue(r, i, 2)[0];
      if (kind != 'r' && kind != 'p') {
        return absl::InvalidArgumentError(absl::StrCat(
            name, " (in source.postgres.tables) is not a table (relkind '", std::string(1, kind),
            "'): only tables and partitioned tables can be replicated"));
      }
      if (SkipsKeyless() && ref.table != "*" && PQgetvalue(r, i, 3)[0] == 't') {
        // Published table by table, a partition would go through its root, which is not here.
        return absl::InvalidArgumentError(
            absl::StrCat(name,
                         " (in source.postgres.tables) is a partition: with keyless_tables: skip, "
                         "list its partitioned table instead"));
      }
    }
  }
  if (source_.snapshot.mode == SnapshotMode::kOnly ||
      options_->keyless_tables != KeylessPolicy::kFail) {
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<TableRef>> keyless = FollowedTables(conn, /*keyless=*/true);
  if (!keyless.ok()) return keyless.status();
  if (!keyless->empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "source.postgres.keyless_tables is 'fail' and ", keyless->size(),
        " followed table(s) have no primary key: ", NameSome(QuotedNames(*keyless)),
        ". Add a primary key to each, set keyless_tables: full (pgflow then sets REPLICA "
        "IDENTITY FULL on them), or keyless_tables: skip (pgflow leaves them out)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TableRef>> PostgresSource::FollowedTables(PGconn* conn, bool keyless) {
  // The listed tables, every table of a listed schema, and their partitions and inheritance
  // children, all of which a publication of the tables or schemas covers.
  const std::string query = absl::StrCat(
      "WITH RECURSIVE followed(relid) AS ("
      "  SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
      "  JOIN unnest($1::text[], $2::text[]) AS r(nsp, rel)"
      "    ON n.nspname = r.nsp AND (r.rel = '*' OR c.relname = r.rel)"
      "  WHERE c.relkind IN ('r', 'p')"
      "  UNION SELECT i.inhrelid FROM pg_inherits i JOIN followed f ON i.inhparent = f.relid) "
      "SELECT n.nspname, c.relname FROM followed f"
      " JOIN pg_class c ON c.oid = f.relid JOIN pg_namespace n ON n.oid = c.relnamespace"
      " WHERE ",
      keyless ? std::string(kKeylessCondition)
              : absl::StrCat("c.relpersistence = 'p' AND NOT c.relispartition AND NOT (",
                             kKeylessCondition, ")"),
      " ORDER BY 1, 2");
  auto [schemas, names] = TableRefArrays(source_.tables);
  absl::StatusOr<PgResultPtr> res = Exec(conn, query, {schemas, names});
  if (!res.ok()) return res.status();
  std::vector<TableRef> tables;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    tables.push_back(TableRef{PQgetvalue(res->get(), i, 0), PQgetvalue(res->get(), i, 1)});
  }
  return tables;
}

absl::Status PostgresSource::SetKeylessIdentityFull(PGconn* conn) {
  absl::StatusOr<std::vector<TableRef>> keyless = FollowedTables(conn, /*keyless=*/true);
  if (!keyless.ok()) return keyless.status();
  // What each had before, for `pgflow teardown` to give back (a role that may not record it is
  // told so).
  auto recordable = Exec(conn,
                         "SELECT coalesce(has_table_privilege(to_regclass("
                         "'pgflow.replica_identities'), 'INSERT'), false)");
  if (!recordable.ok()) return recordable.status();
  const bool record = PQgetvalue(recordable->get(), 0, 0)[0] == 't';
  if (!record && !keyless->empty()) {
    LogWarning(
        "REPLICA IDENTITY FULL is set on %s without a record in pgflow.replica_identities (a "
        "superuser's `pgflow init` installs it): `pgflow teardown` will not give those tables "
        "their identity back",
        NameSome(QuotedNames(*keyless)));
  }
  for (const TableRef& ref : *keyless) {
    const std::string table = ref.Quoted();
    if (record) {
      auto noted = Exec(conn,
                        "INSERT INTO pgflow.replica_identities (relid, previous) SELECT oid, "
                        "relreplident FROM pg_class WHERE oid = $1::regclass "
                        "ON CONFLICT (relid) DO NOTHING",
                        {table});
      if (!noted.ok()) return noted.status();
    }
    auto res = Exec(conn, absl::StrCat("ALTER TABLE ", table, " REPLICA IDENTITY FULL"));
    if (!res.ok()) {
      return absl::Status(
          res.status().code(),
          absl::StrCat("table ", table,
                       " has no primary key, and setting REPLICA IDENTITY FULL on it (so that "
                       "its UPDATEs and DELETEs still work once published) failed: ",
                       res.status().message(),
                       ". Run that ALTER TABLE as its owner, add a primary key, or set "
                       "source.postgres.keyless_tables: skip or fail"));
    }
  }
  if (!keyless->empty()) {
    LogInfo(
        "set REPLICA IDENTITY FULL on %d followed table(s) without a primary key, so that their "
        "UPDATEs and DELETEs keep working and stream whole rows (keyless_tables: full): %s",
        keyless->size(), NameSome(QuotedNames(*keyless)));
  }
  return absl::OkStatus();
}

absl::Status PostgresSource::NoteSkippedKeylessTables(PGconn* conn) {
  absl::StatusOr<std::vector<TableRef>> keyless = FollowedTables(conn, /*keyless=*/true);
  if (!keyless.ok()) return keyless.status();
  skipped_at_start_ = *std::move(keyless);
  if (!skipped_at_start_.empty()) {
    LogInfo(
        "keyless_tables: skip: %d followed table(s) without a primary key are left out of the "
        "publication, the copy and the stream (each joins when it gains a key): %s",
        skipped_at_start_.size(), NameSome(QuotedNames(skipped_at_start_)));
  }
  return absl::OkStatus();
}

absl::Status PostgresSource::EnsurePublication(PGconn* conn) {
  const std::string pub = QuoteIdent(source_.publication);
  auto existing = Exec(conn, "SELECT puballtables FROM pg_publication WHERE pubname = $1",
                       {source_.publication});
  if (!existing.ok()) return existing.status();
  const bool exists = PQntuples(existing->get()) == 1;
  if (exists && PQgetvalue(existing->get(), 0, 0)[0] == 't') {
    if (SkipsKeyless()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "publication ", source_.publication,
          " publishes all tables, keyless ones included, but source.postgres.keyless_tables is "
          "'skip': drop it (pgflow creates its own), or name another one (source.postgres."
          "publication)"));
    }
    LogInfo("publication %s exists and publishes all tables; using it as it is",
            source_.publication);
    return absl::OkStatus();
  }

  // What it lists now: tables (with whether each is keyless) and schemas.
  std::set<std::string> have_tables;
  std::set<std::string> have_schemas;
  std::vector<TableRef> have_keyed;
  if (exists) {
    auto tables = Exec(conn,
                       absl::StrCat("SELECT n.nspname, c.relname, ", kKeylessCondition,
                                    " FROM pg_publication_rel pr "
                                    "JOIN pg_publication p ON p.oid = pr.prpubid "
                                    "JOIN pg_class c ON c.oid = pr.prrelid "
                                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                    "WHERE p.pubname = $1"),
                       {source_.publication});
    if (!tables.ok()) return tables.status();
    auto schemas = Exec(conn,
                        "SELECT n.nspname FROM pg_publication_namespace pn "
                        "JOIN pg_publication p ON p.oid = pn.pnpubid "
                        "JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname = $1",
                        {source_.publication});
    if (!schemas.ok()) return schemas.status();
    for (int i = 0; i < PQntuples(tables->get()); ++i) {
      TableRef ref{PQgetvalue(tables->get(), i, 0), PQgetvalue(tables->get(), i, 1)};
      have_tables.insert(QualifiedIdent(ref.schema, ref.table));
      if (PQgetvalue(tables->get(), i, 2)[0] != 't') have_keyed.push_back(std::move(ref));
    }
    for (int i = 0; i < PQntuples(schemas->get()); ++i) {
      have_schemas.insert(QuoteIdent(PQgetvalue(schemas->get(), i, 0)));
    }
  }

  // What it should list.
  std::set<std::string> want_tables;
  std::set<std::string> want_schemas;
  if (SkipsKeyless()) {
    // Table by table (the capture adds those created or keyed later): a schema's publication
    // would take in its keyless tables too.
    absl::StatusOr<std::vector<TableRef>> keyed = FollowedTables(conn, /*keyless=*/false);
    if (!keyed.ok()) return keyed.status();
    for (const TableRef& ref : *keyed) want_tables.insert(QualifiedIdent(ref.schema, ref.table));
    // A keyed table the publication already lists stays, whatever its name: the capture keeps
    // a followed table renamed or moved away in it, as the pipeline follows it by OID.
    for (const TableRef& ref : have_keyed) {
      if (want_tables.insert(QualifiedIdent(ref.schema, ref.table)).second) {
        LogInfo(
            "table %s stays in publication %s although source.postgres.tables does not name "
            "it (renamed or moved since it joined?): remove it with ALTER PUBLICATION ... DROP "
            "TABLE if it should go",
            ref.Quoted(), source_.publication);
      }
    }
  } else {
    for (const TableRef& ref : source_.tables) {
      if (ref.table == "*") {
        want_schemas.insert(QuoteIdent(ref.schema));
      } else {
        want_tables.insert(QualifiedIdent(ref.schema, ref.table));
      }
    }
  }
  if (exists && have_tables == want_tables && have_schemas == want_schemas) {
    return absl::OkStatus();
  }

  std::vector<std::string> objects;
  if (!want_tables.empty()) {
    // ONLY when skipping: an inheritance child joins on its own, if it has a key.
    const char* only = SkipsKeyless() ? "ONLY " : "";
    std::vector<std::string> listed;
    for (const std::string& t : want_tables) listed.push_back(absl::StrCat(only, t));
    objects.push_back(absl::StrCat("TABLE ", absl::StrJoin(listed, ", ")));
  }
  if (!want_schemas.empty()) {
    objects.push_back(absl::StrCat("TABLES IN SCHEMA ", absl::StrJoin(want_schemas, ", ")));
  }
  const std::string objects_sql = absl::StrJoin(objects, ", ");
  const std::string described = objects.empty() ? "no table yet" : objects_sql;
  if (!exists) {
    auto created =
        Exec(conn, absl::StrCat("CREATE PUBLICATION ", pub, objects.empty() ? "" : " FOR ",
                                objects_sql, " WITH (publish_via_partition_root = true)"));
    if (!created.ok()) return created.status();
    LogInfo("created publication %s for %s", source_.publication, described);
    return absl::OkStatus();
  }
  std::string alter = absl::StrCat("ALTER PUBLICATION ", pub, " SET ", objects_sql);
  if (objects.empty()) {  // SET takes no empty list
    std::vector<std::string> dropped;
    if (!have_tables.empty()) {
      dropped.push_back(absl::StrCat("TABLE ", absl::StrJoin(have_tables, ", ")));
    }
    if (!have_schemas.empty()) {
      dropped.push_back(absl::StrCat("TABLES IN SCHEMA ", absl::StrJoin(have_schemas, ", ")));
    }
    alter = absl::StrCat("ALTER PUBLICATION ", pub, " DROP ", absl::StrJoin(dropped, ", "));
  }
  auto altered = Exec(conn, alter);
  if (!altered.ok()) return altered.status();
  LogInfo("updated publication %s to %s", source_.publication, described);
  return absl::OkStatus();
}

absl::StatusOr<Lsn> PostgresSource::EnsureSlot(PGconn* conn) {
  const bool initial = source_.snapshot.mode == SnapshotMode::kInitial;
  const std::string query =
      "SELECT plugin, database, confirmed_flush_lsn, active_pid, current_database() "
      "FROM pg_replication_slots WHERE slot_name = $1";
  if (absl::Status free = WaitForSlotFree(conn, pipeline_, source_.slot); !free.ok()) return free;
  auto res = Exec(conn, query, {source_.slot});
  if (!res.ok()) return res.status();
  PGresult* r = res->get();
  if (PQntuples(r) == 1) {
    std::string plugin = PQgetvalue(r, 0, 0);
    std::string database = PQgetvalue(r, 0, 1);
    if (plugin != "pgoutput" || database != PQgetvalue(r, 0, 4)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "replication slot ", source_.slot, " exists but belongs to database '", database,
          "' with plugin '", plugin, "': choose another slot name (source.postgres.slot)"));
    }
    if (!PQgetisnull(r, 0, 3)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "replication slot ", source_.slot, " is in use by ",
          DescribeSlotHolder(conn, PQgetvalue(r, 0, 3)), ": is another pgflow running pipeline ",
          pipeline_, "?"));
    }
    absl::StatusOr<SlotState> slot = ReadSlotState(conn, source_.slot);
    if (!slot.ok()) return slot.status();
    if (slot->lost()) {
      return absl::DataLossError(LostSlotMessage(conn, pipeline_, file_, *slot));
    }
    std::optional<Lsn> lsn = Lsn::Parse(PQgetvalue(r, 0, 2));
    if (!lsn) return absl::DataLossError("replication slot has no confirmed_flush_lsn");
    if (initial) {
      auto state =
          Exec(conn, "SELECT finished_at IS NULL FROM pgflow.snapshots WHERE pipeline = $1",
               {pipeline_});
      if (!state.ok()) return state.status();
      snapshot_owed_ = PQntuples(state->get()) == 1 && PQgetvalue(state->get(), 0, 0)[0] == 't';
    }
    LogInfo("resuming replication slot %s from %s%s", source_.slot, lsn->ToString(),
            snapshot_owed_ ? ", once the tables are copied (the snapshot is not finished)" : "");
    return *lsn;
  }
  if (initial) {
    // Recorded before the slot exists, so a crash in between is recognised as a snapshot owed.
    for (const char* sql : {"DELETE FROM pgflow.snapshot_chunks WHERE pipeline = $1",
                            "DELETE FROM pgflow.snapshots WHERE pipeline = $1",
                            "INSERT INTO pgflow.snapshots (pipeline) VALUES ($1)"}) {
      auto res = Exec(conn, sql, {pipeline_});
      if (!res.ok()) return res.status();
    }
  }
  PgResultPtr created(
      PQexec(replication_.get(),
             absl::StrCat("CREATE_REPLICATION_SLOT ", QuoteIdent(source_.slot),
                          " LOGICAL pgoutput ", initial ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT")
                 .c_str()));
  if (PQresultStatus(created.get()) != PGRES_TUPLES_OK) {
    return ResultError(replication_.get(), created.get(),
                       absl::StrCat("creating replication slot ", source_.slot));
  }
  std::optional<Lsn> lsn = Lsn::Parse(PQgetvalue(created.get(), 0, 1));
  if (!lsn) return absl::DataLossError("CREATE_REPLICATION_SLOT returned no consistent point");
  LogInfo("created replication slot %s at %s", source_.slot, lsn->ToString());
  created_slot_ = true;
  if (initial) {
    snapshot_owed_ = true;
    snapshot_name_ = PQgetvalue(created.get(), 0, 2);
    auto noted = Exec(conn, "UPDATE pgflow.snapshots SET consistent_point = $2 WHERE pipeline = $1",
                      {pipeline_, lsn->ToString()});
    if (!noted.ok()) return noted.status();
  }
  return *lsn;
}

absl::StatusOr<Lsn> PostgresSource::Prepare() {
  absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
  if (!conn.ok()) return conn.status();
  if (absl::Status s = CheckServer(conn->get()); !s.ok()) return s;
  if (absl::Status s = CheckTables(conn->get()); !s.ok()) return s;
  if (source_.snapshot.mode == SnapshotMode::kOnly) {
    // A one-off copy: no slot, no publication, nothing left behind.
    snapshot_owed_ = true;
    return Lsn();
  }
  absl::StatusOr<std::vector<std::string>> installed = InstallDdlCapture(conn->get());
  if (installed.ok()) {
    for (const std::string& what : *installed) LogInfo("installed %s", what);
    auto [table_schemas, table_names] = TableRefArrays(source_.tables);
    PipelineRegistration registration{
        pipeline_,     source_.slot, source_.publication, KeylessPolicyName(source_.keyless_tables),
        table_schemas, table_names};
    absl::Status s = RegisterPipeline(conn->get(), registration);
    if (!s.ok()) return s;
  } else if (absl::IsFailedPrecondition(installed.status())) {
    LogWarning("%s; until then schema changes are not streamed", installed.status().message());
  } else {
    return installed.status();
  }
  // One transaction: no moment where a keyless table is published without REPLICA IDENTITY
  // FULL, and none of it done if any of it fails. Its own statements are not schema changes
  // the pipeline streams.
  auto began = Exec(conn->get(), "BEGIN; SET LOCAL pgflow.capture_ddl = off");
  if (!began.ok()) return began.status();
  absl::Status published =
      SkipsKeyless() ? NoteSkippedKeylessTables(conn->get()) : SetKeylessIdentityFull(conn->get());
  if (published.ok()) published = EnsurePublication(conn->get());
  if (published.ok()) published = Exec(conn->get(), "COMMIT").status();
  if (!published.ok()) {
    Exec(conn->get(), "ROLLBACK").IgnoreError();
    return published;
  }
  if (source_.snapshot.mode == SnapshotMode::kInitial) {
    if (absl::Status s = EnsureSnapshotState(conn->get()); !s.ok()) return s;
  }
  absl::StatusOr<PgConnPtr> replication = Connect(source_.url, ConnectionKind::kReplication);
  if (!replication.ok()) return replication.status();
  replication_ = *std::move(replication);
  absl::StatusOr<Lsn> start = EnsureSlot(conn->get());
  if (!start.ok()) return start.status();
  start_ = *start;
  return start_;
}

absl::Status PostgresSource::EnsureFullCopy() {
  if (source_.snapshot.mode == SnapshotMode::kOnly) return absl::OkStatus();
  reload_new_columns_ = true;
  if (snapshot_owed_) {
    if (source_.snapshot.mode != SnapshotMode::kInitial) return absl::OkStatus();
    // An interrupted snapshot would skip the chunks recorded done, which the empty sink lacks:
    // copy them all again (under the new snapshot, as any resumed chunk is).
    absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
    if (!conn.ok()) return conn.status();
    auto res = Exec(conn->get(),
                    "UPDATE pgflow.snapshot_chunks SET done_at = NULL, rows = NULL "
                    "WHERE pipeline = $1 AND done_at IS NOT NULL",
                    {pipeline_});
    if (!res.ok()) return res.status();
    if (std::string n = PQcmdTuples(res->get()); n != "0") {
      LogInfo(
          "a sink starts empty: the interrupted snapshot copies its %s finished chunk(s) "
          "again",
          n);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<int64_t> id = RequestBackfill(source_.url, pipeline_, {});
  if (!id.ok()) return id.status();
  full_copy_backfill_ = *id;
  LogInfo("a sink starts empty: copying every table again beside the stream (backfill %d)", *id);
  return absl::OkStatus();
}

absl::Status PostgresSource::RunSnapshot(Emitter& emitter, const ChunkTracker& chunks,
                                         const StopSignal& stop) {
  const bool only = source_.snapshot.mode == SnapshotMode::kOnly;
  SnapshotCopier::Options options;
  options.url = source_.url;
  options.pipeline = pipeline_;
  options.tables = source_.tables;
  options.workers = source_.snapshot.workers > 0
                        ? source_.snapshot.workers
                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  options.chunk_bytes = source_.snapshot.chunk_bytes;
  options.position = start_;
  options.record_progress = !only;
  options.skip_keyless = SkipsKeyless();
  options.raw = [&emitter](const TableSchema& table) { return emitter.WantsRawCopy(table); };

  // Without a snapshot exported with the slot, take one now and hold it until the workers
  // have imported it: for a one-off copy any snapshot; for a pipeline, one exactly as of a
  // position the stream can tell changes before and after by (a temporary slot's).
  PgConnPtr holder;
  std::string name = snapshot_name_;
  if (name.empty() && only) {
    absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
    if (!conn.ok()) return conn.status();
    holder = *std::move(conn);
    auto res = Exec(holder.get(), "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (!res.ok()) return res.status();
    res = Exec(holder.get(), "SELECT pg_export_snapshot(), pg_current_wal_lsn()");
    if (!res.ok()) return res.status();
    name = PQgetvalue(res->get(), 0, 0);
    options.position = Lsn::Parse(PQgetvalue(res->get(), 0, 1)).value_or(Lsn());
  } else if (name.empty()) {
    absl::StatusOr<ExactSnapshot> exact = TakeExactSnapshot(source_.url, pipeline_);
    if (!exact.ok()) return exact.status();
    holder = std::move(exact->holder);
    name = exact->name;
    options.copied_as_of = exact->as_of;
  }
  copier_ = std::make_unique<SnapshotCopier>(std::move(options));
  absl::Status s = copier_->Run(
      name,
      [&] {
        if (holder != nullptr && only) Exec(holder.get(), "COMMIT").IgnoreError();
        holder.reset();  // (a temporary slot goes with its connection)
      },
      emitter, chunks, stop);
  if (!s.ok() || !copier_->finished() || only) return s;
  absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
  if (!conn.ok()) return conn.status();
  auto done =
      Exec(conn->get(), "UPDATE pgflow.snapshots SET finished_at = now() WHERE pipeline = $1",
           {pipeline_});
  snapshot_owed_ = false;
  return done.status();
}

absl::Status PostgresSource::LoadCopiedAsOf(PGconn* conn) {
  copied_as_of_.clear();
  if (source_.snapshot.mode != SnapshotMode::kInitial) return absl::OkStatus();
  auto res = Exec(conn,
                  "SELECT table_schema || '.' || table_name, max(as_of) FROM "
                  "pgflow.snapshot_chunks WHERE pipeline = $1 AND as_of > $2::pg_lsn GROUP BY 1",
                  {pipeline_, start_.ToString()});
  if (!res.ok()) return res.status();
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    std::optional<Lsn> as_of = Lsn::Parse(PQgetvalue(res->get(), i, 1));
    if (as_of.has_value()) copied_as_of_[PQgetvalue(res->get(), i, 0)] = *as_of;
  }
  if (!copied_as_of_.empty()) {
    std::vector<std::string> listed;
    for (const auto& [table, as_of] : copied_as_of_) {
      listed.push_back(absl::StrCat(table, " (", as_of.ToString(), ")"));
    }
    std::sort(listed.begin(), listed.end());
    LogInfo(
        "replication stream: %d table(s) were copied as of a later position than %s; their "
        "changes before it are in the copy and are skipped: %s",
        listed.size(), start_.ToString(), NameSome(listed));
  }
  return absl::OkStatus();
}

absl::Status PostgresSource::StartReplication(Lsn from) {
  streaming_ = false;
  if (replication_ == nullptr) {
    absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kReplication);
    if (!conn.ok()) return conn.status();
    replication_ = *std::move(conn);
  }
  std::string command =
      absl::StrCat("START_REPLICATION SLOT ", QuoteIdent(source_.slot), " LOGICAL ",
                   from.ToString(), " (proto_version '1', publication_names ",
                   QuoteLiteral(QuoteIdent(source_.publication)), ", messages 'true')");
  PgResultPtr res(PQexec(replication_.get(), command.c_str()));
  if (PQresultStatus(res.get()) != PGRES_COPY_BOTH) {
    absl::Status s = ResultError(replication_.get(), res.get(), "starting replication");
    replication_.reset();
    return s;
  }
  streaming_ = true;
  streamed_ = true;
  return absl::OkStatus();
}

absl::Status PostgresSource::Stream(Emitter& emitter, Acknowledgements acks,
                                    const StopSignal& stop) {
  if (snapshot_owed_) {
    if (absl::Status s = RunSnapshot(emitter, acks.chunks, stop); !s.ok()) return s;
    if (stop.requested() || source_.snapshot.mode == SnapshotMode::kOnly) {
      return absl::OkStatus();
    }
  }
  // Every snapshot row is durable in every sink: the stream starts exactly where the snapshot
  // was taken, or, for a table copied under a later one, skips what its copy holds.
  {
    absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
    if (!conn.ok()) return conn.status();
    if (absl::Status s = LoadCopiedAsOf(conn->get()); !s.ok()) return s;
  }
  absl::Status started = StartReplication(start_);
  if (!started.ok() && !absl::IsUnavailable(started)) return started;
  if (started.ok()) LogInfo("replication stream: streaming from %s", start_.ToString());
  StreamState state(this, emitter, acks.wal, stop);
  return state.Run();
}

void PostgresSource::ReleaseUnacknowledged() {
  if (source_.snapshot.mode == SnapshotMode::kOnly) return;
  // The slot may go only if nothing written since its creation can be missed and no sink holds
  // anything of this run: the snapshot is still owed and sent the sinks nothing (a sink may
  // hold rows of a chunk not every sink acknowledged, which a fresh copy would not empty
  // first), so the next run copies every table under a new slot's snapshot. Once the stream
  // began, or the copy sent anything, the slot stays: it is the record of what was written.
  if (!created_slot_ || streamed_ || !snapshot_owed_ ||
      (copier_ != nullptr && copier_->emitted()) ||
      source_.snapshot.mode != SnapshotMode::kInitial) {
    LogWarning(
        "replication slot %s keeps WAL on the server until pipeline %s runs again, or `pgflow "
        "teardown %s` removes it",
        source_.slot, pipeline_, file_);
    return;
  }
  replication_.reset();  // (the slot's holder, if Finish left it)
  absl::StatusOr<PgConnPtr> conn = Connect(source_.url, ConnectionKind::kRegular);
  absl::Status dropped = conn.status();
  if (conn.ok()) {
    dropped = WaitForSlotFree(conn->get(), pipeline_, source_.slot);
    if (dropped.ok()) {
      dropped = Exec(conn->get(), "SELECT pg_drop_replication_slot($1)", {source_.slot}).status();
    }
  }
  if (!dropped.ok()) {
    LogWarning(
        "replication slot %s, which this run created, could not be removed (%s): it keeps WAL "
        "on the server until pipeline %s runs again, or `pgflow teardown %s` removes it",
        source_.slot, dropped.message(), pipeline_, file_);
    return;
  }
  created_slot_ = false;
  LogInfo(
      "removed replication slot %s, which this run created: it stopped before it "
      "sent the sinks anything (the next run copies every table under a new one), and the slot "
      "would "
      "keep WAL on the server (pgflow's schema and publication %s stay, holding "
      "nothing; `pgflow teardown %s` removes them)",
      source_.slot, source_.publication, file_);
}

absl::Status PostgresSource::Finish(Acknowledgements acks) {
  if (copier_ != nullptr && !copier_->finished()) {
    // Stopped mid-snapshot: remember every chunk the sinks hold, so the next run skips them.
    if (absl::Status s = copier_->RecordDurable(acks.chunks); !s.ok()) {
      LogWarning("snapshot: could not record finished chunks: %s", s.message());
    }
  }
  const Lsn confirmed = acks.wal.Confirmed();
  if (replication_ == nullptr || !streaming_) return absl::OkStatus();
  PGconn* conn = replication_.get();
  std::string message = pgoutput::EncodeStandbyStatus(confirmed, NowUnixUs(), false);
  if (PQputCopyData(conn, message.data(), static_cast<int>(message.size())) != 1 ||
      PQputCopyEnd(conn, nullptr) != 1 || PQflush(conn) != 0) {
    replication_.reset();
    return absl::OkStatus();  // the slot keeps its last confirmed position; replays are safe
  }
  // Wait (briefly) for the server to end the stream: by then it has processed the update.
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < deadline) {
    char* buf = nullptr;
    int n = PQgetCopyData(conn, &buf, 1);
    if (n > 0) {
      PQfreemem(buf);
      continue;
    }
    if (n < 0) break;
    pollfd pfd = {PQsocket(conn), POLLIN, 0};
    ::poll(&pfd, 1, 100);
    if (PQconsumeInput(conn) == 0) break;
  }
  // The server answers our CopyDone with its own and a CommandComplete: only then do we know
  // it read the status update before it.
  bool ended = false;
  while (PGresult* res = PQgetResult(conn)) {
    ended = ended || PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
  }
  replication_.reset();
  if (ended) {
    LogInfo("acknowledged %s to replication slot %s", confirmed.ToString(), source_.slot);
  } else {
    LogWarning(
        "could not confirm the final acknowledgement (%s) with the server; the slot may "
        "resume a little earlier, which replays (never loses) changes",
        confirmed.ToString());
  }
  return absl::OkStatus();
}

}  // namespace pgflow
