#pragma once

// The PostgreSQL source's replication loop: what PostgresSource::Stream runs once any snapshot
// is durable. Internal to sources/postgres (its members are PostgresSource's); its parts:
//   stream_state.cc      the connection loop, frames, batches, status updates, and one
//                        handler per pgoutput message kind
//   stream_ddl.cc        which captured DDL commands concern the pipeline, and their events
//   stream_backfills.cc  backfills (`pgflow snapshot`) run beside the stream

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/postgres/pg_connection.h"
#include "engine/ack_tracker.h"
#include "engine/change.h"
#include "engine/source.h"
#include "engine/stop_signal.h"
#include "schemas/catalog.h"
#include "schemas/ddl.h"
#include "sources/postgres/backfill.h"
#include "sources/postgres/pgoutput.h"
#include "sources/postgres/postgres_source.h"

namespace pgflow {

// Everything the replication loop keeps between messages: the catalog, the transaction being
// decoded, the batch being filled and where the stream stands.
//
// Thread-compatible: PostgresSource::Stream's thread alone uses it. `source`, `emitter`,
// `acks` and `stop` outlive it.
class PostgresSource::StreamState {
 public:
  StreamState(PostgresSource* source, Emitter& emitter, const AckTracker& acks,
              const StopSignal& stop)
      : source_(source), emitter_(emitter), acks_(acks), stop_(stop) {}

  // Streams from the source's replication connection (started by the caller, or not yet when
  // streaming_ is false) until `stop`, reconnecting with backoff after a lost connection and
  // resuming after the last transaction handed on. OK once stopped (or the pipeline closed);
  // otherwise the error that is no outage (a dropped slot, a malformed message, a backfill
  // that failed).
  absl::Status Run();

 private:
  using Clock = std::chrono::steady_clock;

  absl::Status RunConnected();
  absl::Status HandleFrame(std::string_view bytes);
  // Decodes the pgoutput message in `frame` and hands it to its kind's handler (On) below.
  absl::Status HandleMessage(const pgoutput::XLogData& frame);
  // One handler per message kind; `frame` is the XLogData frame the message came in. A row
  // change (insert, update, delete, truncate) reaches its handler only inside a transaction
  // not skipped (HandleMessage checks).
  absl::Status On(pgoutput::BeginMessage& begin, const pgoutput::XLogData& frame);
  absl::Status On(pgoutput::CommitMessage& commit, const pgoutput::XLogData& frame);
  absl::Status On(pgoutput::OriginMessage& origin, const pgoutput::XLogData& frame);
  absl::Status On(pgoutput::RelationMessage& relation, const pgoutput::XLogData& frame);
  absl::Status On(pgoutput::TypeMessage& type, const pgoutput::XLogData& frame);
  absl::Status On(pgoutput::LogicalMessage& logical, const pgoutput::XLogData& frame);
  absl::Status On(pgoutput::InsertMessage& insert, const pgoutput::XLogData& frame);
  absl::Status On(pgoutput::UpdateMessage& update, const pgoutput::XLogData& frame);
  absl::Status On(pgoutput::DeleteMessage& del, const pgoutput::XLogData& frame);
  absl::Status On(pgoutput::TruncateMessage& truncate, const pgoutput::XLogData& frame);
  // A 'pgflow.ddl' message (transactional): the captured DDL command, if pgflow's triggers
  // wrote it and it concerns the pipeline's tables, as a kDdl change (stream_ddl.cc).
  absl::Status OnDdlMessage(pgoutput::LogicalMessage& logical, const pgoutput::XLogData& frame);
  // keyless_tables: fail refuses a table the DDL capture set REPLICA IDENTITY FULL on; the
  // other policies log it.
  absl::Status CheckIdentitySetFull(const DdlCommand& ddl, Lsn at) const;
  // Keeps the catalog and the primary keys current for a table's DDL command.
  void UpdateCatalog(const DdlCommand& ddl);
  // Whether a DDL command's effect is in a copy of its table taken after it: not replayed.
  bool InLaterCopy(const DdlCommand& ddl) const;
  // A change event of the current transaction, at `lsn` (its frame's start), numbered next.
  Event ChangeEvent(Op op, TableSchemaPtr table, Lsn lsn);
  // The table of a row change to relation `relation_id`, or nullptr when its rows were copied
  // under a snapshot that holds the current transaction (the change is skipped).
  absl::StatusOr<TableSchemaPtr> ChangedTable(uint32_t relation_id);
  // Adds a row change, which a running backfill takes note of first. (Taken as an rvalue: an
  // Event is some 300 bytes, which a by-value parameter would move once more per change.)
  void AddRowChange(Event&& event);
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
  void AddRejoinDrop(const TableRef& held, const DdlCommand& cmd, Lsn lsn);
  // A backfill's watermark message at `lsn`: opens a chunk's window or, at its close, adds
  // the chunk's rows.
  absl::Status OnWatermark(std::string_view content, Lsn lsn);
  // A backfill that failed: started again after a lost connection, recorded and passed over
  // when a table it names does not exist; otherwise recorded, and the pipeline stops (its
  // sinks may hold stale rows of the tables it was copying).
  absl::Status FailBackfill(const absl::Status& error);
  // A regular connection to the source for bookkeeping (pgflow.backfills, DDL signatures,
  // primary keys), made again when lost; nullptr (logged) when it cannot be made.
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

}  // namespace pgflow
