#pragma once

// The node's own PostgreSQL server, run by the node as its child and driven through
// PostgreSQL's programs (initdb, pg_basebackup, pg_rewind, from postgres.bin_dir) and a
// superuser connection over the server's Unix socket (in /tmp, its name carrying the port).
//
// The server dies with its node (PR_SET_PDEATHSIG): a node killed with -9 can no longer renew
// its lease, and its server, left running as a primary, would take writes after another node
// took the lead. (Its backends then notice the postmaster's death and end.) Kill stops the
// postmaster, kills each of its processes, then it: every backend is a session leader of its
// own (setsid), so no process group holds them all.
//
// The node manages its settings in <data_dir>/pgflow.conf, included at the end of
// postgresql.conf: port, listen_addresses, unix_socket_directories, wal_level replica,
// hot_standby, wal_log_hints (pg_rewind needs it), synchronous_standby_names, and a standby's
// primary_conninfo naming the leader (recovery_target_timeline latest, PostgreSQL's default);
// a standby has standby.signal. postgres.parameters are written there too.
//
// Not thread-safe: the node's loop owns it, except Kill (any thread: the fence).

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <chrono>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cluster/ha_decision.h"
#include "common/postgres/pg_connection.h"
#include "cluster/node_config.h"

namespace pgflow::cluster {

class LocalServer {
 public:
  explicit LocalServer(const NodeConfig& config);
  ~LocalServer();  // the server is killed with its node

  // What the data directory and the server are now (connecting within `timeout`).
  ServerStatus Read(int timeout_seconds = 2);
  // The primary this node's standby was last pointed at ("" when none).
  const std::string& primary() const { return primary_; }
  // Whether the data directory was last a standby's (standby.signal).
  bool WasStandby() const;

  // initdb into the empty data directory.
  absl::Status Initialize();
  // pg_basebackup of `primary` (a conninfo) into the empty data directory, as its standby.
  absl::Status Clone(const std::string& primary);
  // pg_rewind against `source` (the new primary), the server stopped; then its standby.
  // Unavailable when `source` does not answer (nothing was changed).
  absl::Status Rewind(const std::string& source);
  // Moves the data directory aside (<data_dir>.<unix time>), for a clone to replace it.
  absl::Status SetAside();

  // Starts the server, a standby (of `primary`, or of none yet when empty) or a primary, and
  // waits until it answers, at most `timeout_seconds`.
  absl::Status Start(bool standby, const std::string& primary, int timeout_seconds = 120);
  // Stops it: `fast` (SIGINT: a clean shutdown, every WAL record sent to the standbys) or
  // immediately (SIGQUIT); waits for it to end, then kills what is left.
  absl::Status Stop(bool fast);
  // `pg_ctl stop -m fast` of a server running in the data directory that this node did not
  // start.
  absl::Status StopForeign();
  // Whether the server answers at all (one starting up or recovering rejects connections, and
  // answers), within `timeout_seconds`.
  bool Answers(int timeout_seconds) const;
  // SIGKILL to the server: the postmaster stopped, each of its processes killed, then it (the
  // fence): any thread.
  void Kill();
  // Whether the server this node started still runs.
  bool Alive();

  absl::Status Promote();
  // A standby of `primary` (primary_conninfo), reloaded.
  absl::Status Follow(const std::string& primary);
  // synchronous_standby_names (empty: none), reloaded.
  absl::Status SetSynchronous(const std::string& standby);

  // The standbys streaming from this primary now.
  struct Standby {
    std::string name;        // application_name
    std::string sync_state;  // "sync", "async", ...
    uint64_t flushed = 0;    // flush_lsn
  };
  std::vector<Standby> Standbys();
  // Waits until no client session has a transaction open (after a moment for the poolers to
  // see a switchover and pause), at most `limit`.
  void WaitForTransactions(std::chrono::milliseconds limit);

  // The conninfo another node streams from this server with (its application_name added).
  std::string ReplicationConninfo() const;
  // host:port, for views.
  const std::string& address() const { return address_; }

 private:
  std::string Program(std::string_view name) const;
  absl::StatusOr<PgConnPtr> ConnectLocal(int timeout_seconds) const;
  // A standby's timeline: IDENTIFY_SYSTEM's on a walsender of its own (nullopt: unknown).
  std::optional<uint32_t> ReplayTimeline(int timeout_seconds) const;
  absl::Status Run(std::string_view program, const std::vector<std::string>& args);
  absl::Status WriteSettings(bool standby, const std::string& primary);
  absl::Status Reload();

  NodeConfig config_;
  std::string host_;
  int port_ = 0;
  std::string address_;
  std::string synchronous_;  // synchronous_standby_names as written
  bool synchronous_written_ = false;
  std::string primary_;      // the conninfo primary_conninfo was written with
  std::atomic<pid_t> pid_{-1};
};

}  // namespace pgflow::cluster
