#pragma once

// Thin RAII and error helpers over libpq, shared by the PostgreSQL source (setup queries,
// replication stream, snapshot) and the PostgreSQL sink.

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pgflow {

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct PgResultDeleter {
  void operator()(PGresult* res) const { PQclear(res); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnDeleter>;
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

enum class ConnectionKind { kRegular, kReplication };

// Connects with the user's URL or conninfo, adding what pgflow needs: the replication
// flag, an application_name, and session settings that fix how values print (ISO dates, UTC,
// ISO 8601 intervals, round-trip floats), so that the values decoded downstream never depend
// on the server's configuration. Errors name the host and database, never the password.
absl::StatusOr<PgConnPtr> Connect(const std::string& url, ConnectionKind kind);

// "host:port/dbname" of a connection, for messages.
std::string Describe(PGconn* conn);

// The application_name of pgflow's replication connections (unless the URL gives one):
// "pgflow pid <pid> on <host>", which pg_stat_activity shows beside the slot's holder.
std::string ReplicationApplicationName();
// The pid and host a ReplicationApplicationName names; nullopt for any other name.
struct PgflowProcessName {
  int64_t pid = 0;
  std::string host;
};
std::optional<PgflowProcessName> ParseReplicationApplicationName(std::string_view name);

// Runs `sql` with text parameters and expects PGRES_COMMAND_OK or PGRES_TUPLES_OK.
absl::StatusOr<PgResultPtr> Exec(PGconn* conn, const std::string& sql,
                                 const std::vector<std::string>& params = {});

// The result of `sql`, sent with PQsendQuery (or its kin), checked as Exec checks its own. Reads
// every result the query returns, so the connection is ready for the next one even after an
// error; returns the first.
absl::StatusOr<PgResultPtr> ReceiveResult(PGconn* conn, const std::string& sql);

// An error status from a failed result or connection: the server's message with its SQLSTATE.
// Connection-class failures (lost connection, server shutting down, too many connections)
// are kUnavailable, so callers can tell a retryable failure from a fatal one.
// The status carries the SQLSTATE for SqlState().
absl::Status ResultError(PGconn* conn, const PGresult* res, absl::string_view context);

// The SQLSTATE of a status ResultError made; empty for any other status.
std::string SqlState(const absl::Status& status);

// The prefix of pgflow's heartbeat messages, which its stream passes over.
inline constexpr char kHeartbeatPrefix[] = "pgflow.heartbeat";

// Writes a heartbeat into the server's WAL, outside any transaction: the position ("X/X") of
// its end. It follows every commit the server holds when it is written, and the WAL writer
// flushes it within wal_writer_delay, so a reader of the stream reaches it even while a
// transaction stays open. (pg_current_wal_lsn() is no such point: with a transaction open,
// the WAL writer writes whole pages, so the position can fall inside a record, which no
// reader gets past before the rest of it is written.)
absl::StatusOr<std::string> WriteHeartbeat(PGconn* conn);

// Reads a COPY TO STDOUT stream the way PQgetCopyData(conn, buf, 0) does, but waking the
// calling thread only once `low_water` bytes wait in the socket (SO_RCVLOWAT), or after
// `max_wait_ms`, rather than at every message the server sends. On loopback a wake-up costs the
// sending server as much as the reader: a bulk COPY is otherwise one wake-up per 8 KiB that the
// server's send() pays for. The socket wakes at every byte again once the reader is destroyed
// or Release()d: later blocking libpq calls wait for replies of a few bytes.
// Best effort: where SO_RCVLOWAT cannot be set, the reader simply wakes more often.
class CopyOutReader {
 public:
  // 256 KiB and 2 ms: a busy 8 KiB-at-a-time sender fills that much in about 2 ms on loopback.
  explicit CopyOutReader(PGconn* conn, int low_water = 256 << 10, int max_wait_ms = 2);
  ~CopyOutReader() { Release(); }
  CopyOutReader(const CopyOutReader&) = delete;
  CopyOutReader& operator=(const CopyOutReader&) = delete;

  // The next CopyData message: its length (> 0) with *buf to free with PQfreemem, -1 at the
  // end of the COPY (then PQgetResult), -2 on a connection error.
  int Next(char** buf);
  // Has the socket wake at every byte again. Idempotent.
  void Release();

 private:
  PGconn* conn_;
  int fd_;
  int max_wait_ms_;
  bool lowered_ = false;
  bool dry_ = false;  // the last read of the socket brought no complete message
};

// Quotes an identifier for SQL: "name", with embedded quotes doubled.
std::string QuoteIdent(std::string_view name);
// Quotes a string literal for SQL: 'text', with embedded quotes doubled.
std::string QuoteLiteral(std::string_view text);

}  // namespace pgflow
