#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/postgres/pg_connection.h"
#include "sinks/postgres/statement_params.h"

namespace pgflow {

// A statement's row count, checked when it is read: fewer than `rows` is worth a warning.
struct RowCountCheck {
  size_t rows = 0;  // 0: no check
  std::string table;
};

// The postgres sink's connection to its target, and the state of that connection: the open
// transaction, the savepoint that marks where the current source transaction started in it,
// the prepared statements, the statements sent in libpq's pipeline mode and not read yet, and
// a COPY in progress.
//
// Errors name the target ("postgres target host:port/db: <context>: <server message>") and
// carry the SQLSTATE (SqlState()); a lost connection is kUnavailable. Not thread-safe: the
// sink's thread only.
class TargetSession {
 public:
  // `url`: the target's URL or conninfo. `sink_name`: the sink's name, for log lines.
  TargetSession(std::string url, std::string sink_name);
  TargetSession(const TargetSession&) = delete;
  TargetSession& operator=(const TargetSession&) = delete;

  // Runs at the start of every Run, RunPrepared and SendPrepared, before anything is sent: the
  // sink sends there what it holds back and must reach the target first. It may itself send
  // statements through this session (and so run again, nested).
  void SetBeforeStatement(std::function<absl::Status()> hook) {
    before_statement_ = std::move(hook);
  }

  // Connects; an error says "postgres target: " and why.
  absl::Status Connect();
  bool connected() const { return conn_ != nullptr; }
  // The connection, for queries of the catalog made with Exec(). REQUIRES: connected(), and
  // nothing in flight (Drain()).
  PGconn* conn() { return conn_.get(); }
  // "host:port/db" of the connection, or the URL before it is made.
  std::string TargetName() const;
  // Disconnects: an open transaction rolls back.
  void Close() { conn_.reset(); }

  // Runs `sql` without parameters (simple protocol: several statements allowed) after what is
  // in flight, and after the pending savepoint in the same round trip.
  absl::Status Run(const std::string& sql, absl::string_view context);
  // Runs `sql` as a prepared statement after what is in flight (and the pending savepoint);
  // *affected gets the row count when not null. `context` names it in an error.
  absl::Status RunPrepared(const std::string& sql, const StatementParams& params,
                           const std::function<std::string()>& context,
                           uint64_t* affected = nullptr);
  // Sends `sql` without waiting for its result (libpq pipeline mode), after the pending
  // savepoint if any: the target executes it while the next changes are decoded and batched.
  // Its result is read by Drain(); `context` then names it if it failed, and `*affected`, when
  // given, gets its row count; `check` warns of rows it did not find. A statement sent `once`
  // goes unnamed rather than prepared. At most 64 statements are in flight: the 64th drains.
  absl::Status SendPrepared(const std::string& sql, const StatementParams& params,
                            std::string context, uint64_t* affected = nullptr, bool once = false,
                            RowCountCheck check = {});
  // Reads the results of every statement SendPrepared sent, in order, and leaves pipeline mode:
  // the first failure, with its statement's context. Everything that needs a result, or the
  // connection to itself (a query, COPY, COMMIT), drains first.
  absl::Status Drain();
  // Runs one statement alone by the extended protocol (one statement only, whatever the text),
  // with no savepoint or hook. REQUIRES: nothing in flight.
  absl::Status RunAlone(const std::string& sql, const std::function<std::string()>& context);
  // Drops every prepared statement, if any: after DDL, whose column types they may predate.
  absl::Status DeallocateAll(absl::string_view context);
  // `prefix` followed by a number no other name of this session has: for prepared statements
  // and temporary tables.
  std::string NewName(absl::string_view prefix);

  // The target transaction, in which every statement runs under session_replication_role =
  // replica (no target triggers, no foreign key checks).
  bool in_transaction() const { return in_transaction_; }
  // Opens one if none is open.
  absl::Status Begin();
  // Commits the open transaction; it is over whatever the outcome. REQUIRES: nothing in flight.
  absl::Status Commit();
  // Rolls the open transaction back. REQUIRES: !has_savepoint() (RollbackToSavepoint undoes
  // less).
  absl::Status Rollback(absl::string_view context);
  // Rolls back what failed, ignoring the outcome: no transaction, no savepoint, none pending.
  void Abandon();
  // Whether the server holds the transaction open and healthy (not failed, not idle).
  bool TransactionIntact() { return PQtransactionStatus(conn()) == PQTRANS_INTRANS; }

  // SAVEPOINT pgflow_txn marks where the current source transaction started in the target
  // transaction. Pending: it is taken (after releasing the previous one) with the next
  // statement sent, so a source transaction that writes nothing needs none.
  bool savepoint_pending() const { return savepoint_pending_; }
  void set_savepoint_pending(bool pending) { savepoint_pending_ = pending; }
  // Whether a savepoint was taken in the open transaction.
  bool has_savepoint() const { return savepoint_; }
  // Takes the pending savepoint, if any, on its own: before statements that cannot carry it in
  // their round trip (COPY, DDL sent one statement at a time).
  absl::Status SendPendingSavepoint() {
    return savepoint_pending_ ? Run("SELECT 1", "starting a savepoint") : absl::OkStatus();
  }
  // Rolls back to the savepoint and releases it: what was sent since it is undone.
  absl::Status RollbackToSavepoint(absl::string_view context);

  // Binary COPY: BeginCopy takes the pending savepoint, runs `sql` (COPY ... FROM STDIN
  // (FORMAT binary)) and sends the header; PutCopyData sends tuples; EndCopy the trailer, and
  // reads the outcome. `context` names the COPY in errors. REQUIRES: nothing in flight.
  absl::Status BeginCopy(const std::string& sql, absl::string_view context);
  absl::Status PutCopyData(absl::string_view data, const std::function<std::string()>& context);
  absl::Status EndCopy(absl::string_view context);
  // Ends the COPY in progress as failed, with `why`, and forgets its outcome.
  void AbortCopy(const char* why);

 private:
  // The name of the prepared statement for `sql`, preparing it first if needed.
  absl::StatusOr<std::string> Prepared(const std::string& sql, size_t params,
                                       const std::function<std::string()>& context);
  // Runs prepared statement `name` after the pending savepoint, in one round trip (pipeline
  // mode); null when the connection failed.
  PgResultPtr ExecAfterSavepoint(const std::string& name, const StatementParams& params);
  absl::Status BeforeStatement() {
    return before_statement_ ? before_statement_() : absl::OkStatus();
  }

  const std::string url_;
  const std::string sink_name_;
  std::function<absl::Status()> before_statement_;
  PgConnPtr conn_;
  bool in_transaction_ = false;
  bool savepoint_ = false;
  bool savepoint_pending_ = false;
  absl::flat_hash_map<std::string, std::string> prepared_;  // SQL -> statement name
  uint64_t next_name_ = 0;
  // Statements sent and not yet drained (the connection is in pipeline mode while there are
  // any): what each one did, for the error message.
  struct InFlight {
    std::string context;
    uint64_t* affected = nullptr;  // where its row count goes, if wanted
    RowCountCheck check;           // warns, once its row count is read, if short
  };
  std::deque<InFlight> in_flight_;
};

// Keys and indexes built after the load sort in memory rather than in temporary files: raises
// maintenance_work_mem on `conn` to `memory` (the sink's option), never lowers it. An error
// names the option of sink `sink_name`.
absl::Status RaiseMaintenanceWorkMem(PGconn* conn, const std::string& memory,
                                     const std::string& sink_name);

}  // namespace pgflow
