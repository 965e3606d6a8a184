#pragma once

// The connection pooler (`pgflow pooler --config pooler.yaml`): PostgreSQL clients connect
// to it as to PostgreSQL, and it shares a few server connections among them.
//
// Threads: `threads` network threads, each with its own io_context and its own listening
// socket on the same port (SO_REUSEPORT: the kernel spreads new clients over them). A client
// logs in through a coroutine (pooler/session_login.cc); then its socket joins its thread's
// epoll set (pooler/reactor.h) and the relay is a state machine run from there
// (pooler/session_relay.cc). Pools (pooler/pool.h) are shared by all threads.
//
// The admin console is the virtual database `pgflow` (SHOW, PAUSE, RESUME, RECONNECT, KILL,
// RELOAD, SHUTDOWN, ...); /metrics is served on admin.listen.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/console.h"
#include "pooler/pooler_config.h"
#include "pooler/pooler_file.h"
#include "pooler/router.h"

namespace pgflow {
class MetricsRegistry;
}

namespace pgflow::pooler {

class Pooler {
 public:
  // `config` as LoadPoolerConfig read it (the users file with it). Starts nothing yet.
  // `routers` (may be null: then a database listing replicas is refused at Start) makes the
  // routing proxy of each database that lists replicas; it must outlive the pooler.
  explicit Pooler(PoolerConfig config, RouterFactory* routers = nullptr);
  ~Pooler();  // Stop()

  // Reads the TLS files, binds the listeners (an error names the address) and starts the
  // threads. `metrics` (may be null) receives the pooler's metrics; it must outlive Stop.
  absl::Status Start(MetricsRegistry* metrics);
  // Re-reads the configuration file and the users file and applies them: new databases
  // appear, removed ones refuse new clients, changed pools take their settings (clients stay
  // connected). An error leaves the running configuration as it was.
  absl::Status Reload();
  // Blocks until SHUTDOWN (from the console) or Stop, or `timeout`: whether it came.
  bool WaitForShutdown(std::chrono::milliseconds timeout);
  // Closes the listeners and every connection and joins the threads. Idempotent.
  void Stop();

  int port() const;
  // The port of http.listen (SQL over HTTP and WebSocket); 0 without it.
  int http_port() const;

  // For what else runs in the process (the leader watch of a database that follows a
  // cluster): a hold of `database`'s new transactions (they wait, as under PAUSE), apart from
  // the console's PAUSE: its pools run again once neither holds, so RESUME does not end a hold
  // and Release does not end a PAUSE. And the console's RETARGET.
  void Hold(const std::string& database);
  void Release(const std::string& database);
  absl::Status Retarget(const std::string& database, const std::string& url);
  // RETARGET with the routing proxy's replicas too (a database following a cluster's
  // standbys), in one change.
  absl::Status Retarget(const std::string& database, const std::string& url,
                        const std::vector<std::string>& replicas);

  // The web console's pooler page (engine/console.h; pooler/pooler_console.cc): databases,
  // pools, replicas, caches and bans, charts of transactions per database, and PAUSE,
  // RESUME, RELOAD, BAN and UNBAN. Its login is admin.users' with their users-file password
  // (or, without a users file, their login to the SQL console). The pooler must outlive it.
  ConsoleHooks Console();
  // Runs one SQL console command in the process, waiting (at most 30 s) for what it waits
  // for (PAUSE): its tag, or its error with its SQLSTATE.
  absl::StatusOr<std::string> RunConsoleCommand(std::string_view sql);
  // Ends the waits of RunConsoleCommand under way, and of those to come: before the web
  // console's server stops, so that it does not wait for a PAUSE to be done.
  void InterruptConsole();
  // Adds a database to the pooler's file (pooler/pooler_file.h), or removes one, then RELOADs:
  // the file stays the source of truth. An edit that the file would not load with, or that
  // RELOAD refuses, is not kept (the file is put back as it was).
  absl::Status AddDatabase(const NewDatabase& database);
  absl::Status RemoveDatabase(const std::string& name);

  class Impl;  // public for the sessions (pooler/session.h)

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pgflow::pooler
