#pragma once

// The pooler's admin console: the virtual database `pgflow` (or `pgbouncer`, for tools that
// expect it), answering pgbouncer's commands where the names match:
//   SHOW POOLS | CLIENTS | SERVERS | STATS | DATABASES | CONFIG | VERSION
//   SHOW REPLICAS   the routing proxy's nodes: role, state, position, lag, reads
//   PAUSE [db]   new transactions wait; returns once no server connection is in use
//   RESUME [db]  lets them go on (and ends a SUSPEND)
//   SUSPEND      stops taking new clients and pauses every database
//   RECONNECT [db]   closes server connections as they come back (idle ones at once)
//   WAIT_CLOSE [db]  returns once the connections RECONNECT asked to close are closed
//   KILL db      disconnects the database's clients and closes its server connections
//   RELOAD       re-reads the configuration and users files
//   RETARGET db 'url'   points the database at another server: new server connections go
//                there, those to the old one close as they come back (after a PAUSE, none is
//                left); until the file's url for it changes or the pooler restarts
//   BAN USER name | BAN ADDRESS ip | BAN DATABASE name   refuses the user's (the address's, the
//                database's: a tenant's) logins from now on (28000) and disconnects their
//                clients; until UNBAN or the pooler restarts
//   UNBAN USER name | UNBAN ADDRESS ip | UNBAN DATABASE name
//   SHOW BANS    who is banned
//   SHOW MEM     resident and heap memory, clients, TLS clients, heap bytes per client
//   SHUTDOWN     stops the pooler
//   SHUTDOWN WAIT_FOR_SERVERS   stops listening, pauses every database, and stops the pooler
//                once no server connection is in use
//   SHUTDOWN WAIT_FOR_CLIENTS   stops listening and stops the pooler once every client (but
//                the console's) has left; another pooler may take the port meanwhile
// The commands are parsed and answered here, as protocol messages, over an AdminTarget; the
// session only carries them.

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "pooler/pool.h"
#include "pooler/router.h"

namespace pgflow::pooler {

struct PoolView {
  std::string database;
  std::string user;
  std::string mode;
  int clients = 0;
  Pool::Counts counts;
  uint64_t transactions = 0;
  uint64_t queries = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  uint64_t xact_us = 0;  // transactions' time, in microseconds
  uint64_t errors = 0;   // ErrorResponses of the server relayed to clients
  uint64_t wait_us = 0;
  uint64_t waits = 0;
  uint64_t server_logins = 0;          // server connections opened
  uint64_t server_login_failures = 0;  // attempts that failed (refused, unreachable)
  bool paused = false;
  std::string server_error;  // Pool::server_error(): empty while its server answers
  std::vector<Pool::ServerRow> servers;

  // SHOW POOLS' cl_active: the clients not waiting for a server connection.
  int active_clients() const { return clients - counts.waiting; }
};

struct ClientView {
  uint64_t id = 0;
  std::string user;
  std::string database;
  std::string state;
  std::string address;
  int port = 0;
  absl::Time connected;
};

struct DatabaseView {
  std::string name;
  std::string host;
  int port = 0;
  std::string dbname;
  std::string force_user;
  int pool_size = 0;
  int min_pool_size = 0;
  int reserve_pool = 0;
  std::string mode;
  int max_client_conn = 0;
  int current_connections = 0;
  int max_queries_per_second = 0;
  int clients = 0;               // logged in, all users together
  uint64_t queries_delayed = 0;  // queries that waited for their turn (max_queries_per_second)
  bool paused = false;
  bool retargeted = false;  // RETARGET moved it from the file's url
};

// A node of a routed database (pooler/router.h's Router::NodeView, with its database).
struct ReplicaView {
  std::string database;
  Router::NodeView node;
};

struct CacheView {
  std::string database;
  QueryCache::View cache;
};

enum class ShutdownMode { kNow, kWaitForServers, kWaitForClients };

// What the console acts on (the pooler).
class AdminTarget {
 public:
  virtual ~AdminTarget() = default;
  virtual std::vector<PoolView> Pools() = 0;
  virtual std::vector<ClientView> Clients() = 0;
  virtual std::vector<std::pair<std::string, std::string>> ConfigRows() = 0;
  virtual std::vector<DatabaseView> Databases() = 0;
  virtual std::vector<ReplicaView> Replicas() = 0;
  virtual std::vector<CacheView> Caches() { return {}; }
  // SHOW MEM's (item, value) rows: the process's memory and what its clients take.
  virtual std::vector<std::pair<std::string, std::string>> Memory() { return {}; }
  virtual bool HasDatabase(const std::string& database) = 0;
  // "" means every database.
  virtual void Pause(const std::string& database) = 0;
  virtual void Resume(const std::string& database) = 0;
  virtual void Reconnect(const std::string& database) = 0;
  virtual void Kill(const std::string& database) = 0;
  virtual void Suspend() = 0;
  virtual absl::Status Reload() = 0;
  // Points `database` (of the file, not the wildcard) at `url`; an error names what is wrong
  // with the url, and changes nothing.
  virtual absl::Status Retarget(const std::string& database, const std::string& url) = 0;
  virtual void Shutdown(ShutdownMode mode) = 0;
  // BAN / UNBAN: `kind` is "user", "address" (an IP address, or "unix" for the Unix socket's
  // clients) or "database" (one of the file's). An error names what is wrong with `who`.
  virtual absl::Status Ban(const std::string& kind, const std::string& who) = 0;
  virtual absl::Status Unban(const std::string& kind, const std::string& who) = 0;
  // Who is banned: (kind, who) pairs, sorted.
  virtual std::vector<std::pair<std::string, std::string>> Bans() = 0;
  // The SHUTDOWN WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS under way; kNow when none is.
  virtual ShutdownMode Draining() = 0;
};

struct AdminReply {
  std::string messages;              // RowDescription/DataRow/CommandComplete or an error
  std::function<bool()> wait_until;  // the reply waits until this is true (PAUSE...)
  std::function<void()> after;       // run once the reply was sent (SHUTDOWN)
};

// Runs one console command (a simple Query's text; a trailing ';' and case do not matter).
AdminReply RunAdminCommand(AdminTarget* target, std::string_view sql);

}  // namespace pgflow::pooler
