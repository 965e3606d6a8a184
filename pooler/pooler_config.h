#pragma once

// The pooler's configuration file (`pgflow pooler --config pooler.yaml`), read with the same
// rules as a pipeline file (engine/options.h: unknown keys refused with a suggestion, every
// error at its file, line and column):
//
//   listen: 127.0.0.1:6432
//   admin: {listen: 127.0.0.1:9188, users: [postgres]}
//   auth: {method: scram-sha-256, users: /etc/pgflow/users.txt}
//   databases:
//     app: {url: postgres://app:${APP_PASSWORD}@127.0.0.1:5432/app, pool_mode: transaction,
//           pool_size: 20}
//
// docs/guides/pooler.md lists every key.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/options.h"
#include "pooler/auth.h"

namespace pgflow::pooler {

enum class PoolMode : uint8_t { kSession, kTransaction, kStatement };
std::string_view PoolModeName(PoolMode mode);

// How clients prove who they are. cert: a TLS client certificate, verified against tls.ca,
// whose common name is the user name (PostgreSQL's cert method).
enum class AuthMethod { kScram, kMd5, kTrust, kCert };

// What transaction and statement pooling do with a query that takes session state (LISTEN, a
// session-level advisory lock): refuse it with an error (SQLSTATE 0A000), or pin the client
// to its server connection until it leaves.
enum class SessionStatePolicy { kRefuse, kPin };

// How the network threads are scheduled. batch (SCHED_BATCH): a thread that wakes does not
// preempt the task running on its CPU, often a PostgreSQL backend on the same machine; it runs
// when that task blocks or its time slice ends, and finds more events ready. normal: the
// kernel's default, where a waking thread may preempt at once (lower latency when every core
// is busy with long queries, more context switches when PostgreSQL shares a saturated machine).
enum class ThreadScheduling { kBatch, kNormal };

// libpq's sslmode names. Toward clients: disable (SSLRequest answered 'N'), prefer (TLS for
// those who ask), require (a client that does not is refused). Toward servers (the url's
// sslmode): disable, prefer (TLS if the server offers it), require, verify-ca (the
// certificate chains to sslrootcert), verify-full (and names the url's host).
enum class TlsMode { kDisable, kPrefer, kRequire, kVerifyCa, kVerifyFull };
// nullopt for a name that is none of them ("allow" is read as prefer).
std::optional<TlsMode> ParseTlsMode(std::string_view name);
std::string_view TlsModeName(TlsMode mode);

// TLS toward clients. verify-ca: a client must also show a certificate that chains to `ca`;
// verify-full: and whose common name is the user it logs in as (PostgreSQL's clientcert).
struct TlsOptions {
  TlsMode mode = TlsMode::kDisable;  // disable, prefer, require, verify-ca or verify-full
  std::string cert;                  // PEM certificate chain
  std::string key;                   // PEM private key
  std::string ca;  // PEM authorities of client certificates; empty: none asked for
  std::string crl;  // PEM revocation lists of those authorities; empty: none
  std::string crl_dir;  // a directory of them, named by `openssl rehash`; empty: none
  bool operator==(const TlsOptions&) const = default;
};

// libpq's target_session_attrs: which server a url's hosts must lead to. read-write: not in hot
// standby, and default_transaction_read_only off; read-only: either; primary: not in hot
// standby; standby: in hot standby; prefer-standby: a standby if one answers, else any.
enum class TargetSession { kAny, kReadWrite, kReadOnly, kPrimary, kStandby, kPreferStandby };
std::optional<TargetSession> ParseTargetSession(std::string_view name);
std::string_view TargetSessionName(TargetSession target);

// Where a database's server connections go, from its `url` (a libpq URI or key=value string).
struct Upstream {
  std::string host = "127.0.0.1";  // a name, an address or a Unix socket directory
  int port = 5432;
  // The url's further hosts, as libpq's host=a,b,c with port=1,2,3 (or one port for all):
  // tried after the first until one answers as `target` asks.
  std::vector<std::pair<std::string, int>> more_hosts;
  TargetSession target = TargetSession::kAny;
  // The database's load_balance_hosts: round-robin: each new connection starts at the host
  // after the one the last started at; disable (false): at the one that last answered.
  bool round_robin = false;
  std::string dbname;    // empty: the client's database name
  std::string user;      // empty: the client's user
  std::string password;  // empty: the users file's secret or the client's SCRAM keys
  TlsMode sslmode = TlsMode::kDisable;  // the url's sslmode (default disable, unlike libpq)
  std::string sslrootcert;              // the url's sslrootcert
  std::string sslcert;                  // the url's sslcert: a client certificate to show
  std::string sslkey;                   // its key (the url's sslkey)
  std::string sslpassword;              // the url's sslpassword: opens an encrypted sslkey
  std::string sslcrl;                   // the url's sslcrl: revocations of server certificates
  std::string sslcrldir;                // the url's sslcrldir: a directory of them
  // TCP keepalives on the server connection, as libpq's url parameters: a server that
  // vanishes (its machine lost, the network cut) is noticed after keepalives_idle +
  // keepalives_count x keepalives_interval seconds, or once data sent has gone unacknowledged
  // for tcp_user_timeout milliseconds, instead of the system's hours. 0: the system's.
  bool keepalives = true;
  int keepalives_idle = 0;
  int keepalives_interval = 0;
  int keepalives_count = 0;
  int tcp_user_timeout = 0;
  bool operator==(const Upstream&) const = default;

  // A host starting with '/' is a directory holding PostgreSQL's Unix socket, as in libpq.
  bool local() const { return !host.empty() && host[0] == '/'; }
  std::string SocketPath() const { return host + "/.s.PGSQL." + std::to_string(port); }
  // host:port, or the socket's path.
  std::string Where() const;
  size_t host_count() const { return 1 + more_hosts.size(); }
  // This upstream with its host number `i` (0: the first) alone.
  Upstream Host(size_t i) const;
  // The hosts as the url lists them, comma-separated.
  std::string HostList() const;
};

// How far behind its primary a replica may be and still take reads (max_replica_lag): in bytes
// of WAL, or in time (how long it has been behind a position the primary had). 0: no limit.
struct ReplicaLag {
  uint64_t bytes = 0;
  std::chrono::milliseconds time{0};
  bool operator==(const ReplicaLag&) const = default;
};

// The routing proxy's query cache (proxy/query_cache.h), `cache:` of a database entry.
struct CacheOptions {
  std::vector<std::string> tables;  // "schema.table"; empty: no cache
  std::chrono::milliseconds ttl{300000};
  uint64_t max_memory = 64ull << 20;
  // The change stream's connection (a user with REPLICATION); empty: the database's url.
  std::string url;
  bool operator==(const CacheOptions&) const = default;
};

// A high-availability cluster a database entry follows (`cluster:`, cluster/node.h): the
// pooler sends its connections to the server of whichever node holds the cluster's leader key.
struct ClusterFollowOptions {
  std::string name;               // the cluster's name (its keys under /pgflow/<name>/)
  std::vector<std::string> etcd;  // the etcd members' client urls; empty: no cluster
  // The cluster's streaming standbys take the reads (the routing proxy, as `replicas` would).
  bool replicas = false;
  bool operator==(const ClusterFollowOptions&) const = default;
};

struct DatabaseOptions {
  std::string url;
  PoolMode pool_mode = PoolMode::kTransaction;
  int pool_size = 20;
  int min_pool_size = 0;
  int reserve_pool = 0;
  std::chrono::milliseconds reserve_pool_timeout{5000};
  int max_client_conn = 0;  // 0: only the global limit
  // Queries (simple queries and extended-protocol Executes) a second, across the entry's
  // clients on every thread; a query past it waits for its turn. 0: no limit.
  int max_queries_per_second = 0;
  SessionStatePolicy session_state = SessionStatePolicy::kRefuse;
  bool load_balance_hosts = false;  // round-robin (true) or disable
  // The routing proxy (proxy/, pooler/router.h): streaming replicas of `url` that take the
  // reads a replica can run. Transaction and statement pooling only.
  std::vector<std::string> replicas;
  ReplicaLag max_replica_lag{.bytes = 16ull << 20, .time = std::chrono::milliseconds(0)};
  bool read_your_writes = true;
  // Functions that write though nothing in the catalog says so ("name" or "schema.name"):
  // a statement calling one goes to the primary.
  std::vector<std::string> write_functions;
  CacheOptions cache;
  ClusterFollowOptions cluster;

  Upstream upstream;  // from url (and load_balance_hosts)
  std::vector<Upstream> replica_upstreams;  // from replicas, in order
  bool operator==(const DatabaseOptions&) const = default;
};

struct AdminOptions {
  std::string listen;               // /metrics over HTTP; empty: none
  std::vector<std::string> users;   // who may use the SQL console (database "pgflow")
};

// SQL over HTTP and the PostgreSQL protocol over WebSocket (pooler/gateway.h): the protocol
// Neon's serverless driver speaks, served through the pooler's own pools and logins.
struct HttpOptions {
  std::string listen;  // host:port; empty: no HTTP listener
  TlsOptions tls;      // cert and key: HTTPS and wss:// (mode is not read)
  int max_connections = 1000;                     // HTTP and WebSocket connections at once
  uint64_t max_request_size = 10ull << 20;        // a POST /sql body at most
  uint64_t max_response_size = 0;                 // a /sql answer at most; 0: no limit
  std::chrono::milliseconds statement_timeout{0};  // a /sql request at most; 0: none
  std::chrono::milliseconds idle_timeout{60000};   // a keep-alive connection with no request
  bool operator==(const HttpOptions&) const = default;
};

// pgbouncer's default auth_query.
inline constexpr std::string_view kDefaultAuthQuery =
    "SELECT usename, passwd FROM pg_shadow WHERE usename = $1";

struct AuthOptions {
  AuthMethod method = AuthMethod::kScram;
  std::string users;  // path of a pgbouncer-style userlist.txt (resolved: see PoolerConfig)
  // What that file held when the configuration was read; nullptr without a file.
  std::shared_ptr<const UserList> user_list;
  // A user not in the users file is looked up by running `query` (its $1 the user name; the
  // second column the secret) on the database the client named, as `user`; empty: no lookup.
  std::string user;
  std::string query = std::string(kDefaultAuthQuery);
  bool operator==(const AuthOptions&) const = default;
};

// Paths in the file (auth.users, tls.*, unix_socket_dir, the url's sslrootcert, sslcert,
// sslkey, sslcrl and sslcrldir) are relative to the file's directory, as in a pipeline file;
// the fields hold them so resolved.
struct PoolerConfig {
  std::string listen;
  // Also listens on <unix_socket_dir>/.s.PGSQL.<listen's port>, as PostgreSQL and pgbouncer
  // do (psql -h <dir> -p <port>); empty: no Unix socket.
  std::string unix_socket_dir;
  int threads = 0;  // 0: one per two cores (at least one)
  ThreadScheduling scheduling = ThreadScheduling::kBatch;
  AdminOptions admin;
  AuthOptions auth;
  TlsOptions tls;
  HttpOptions http;
  int max_client_conn = 10000;
  // A client's user name `alice.shop` names user alice of database entry shop, whatever
  // database it asks for (Supavisor's and pgcat's tenants), when shop is an entry.
  bool tenant_in_user = false;
  // A TLS client's server name (SNI) shop.pooler.example.com names the database entry shop,
  // when it is one (the user name's suffix, with tenant_in_user, goes first).
  bool tenant_from_sni = false;
  std::chrono::milliseconds hold_timeout{30000};
  std::chrono::milliseconds query_wait_timeout{120000};
  std::chrono::milliseconds client_login_timeout{60000};
  std::chrono::milliseconds server_connect_timeout{5000};
  std::chrono::milliseconds server_idle_timeout{600000};
  std::chrono::milliseconds server_lifetime{3600000};
  std::string server_reset_query = "DISCARD ALL";
  uint64_t max_message_size = 64ull << 20;
  // Transaction pooling: statements a server connection keeps prepared (past it, it closes
  // them all), and named statements one client may hold (past it, its Parse fails with an
  // error naming the limit).
  size_t max_prepared_statements = 1000;
  size_t max_client_prepared_statements = 10000;
  std::map<std::string, DatabaseOptions> databases;

  std::string file;  // where it was read from (RELOAD reads it again)
};

// The database clients name `name`: its own entry, else the wildcard entry "*" (any other
// name, served by the same server under the client's database name), else nullptr.
const DatabaseOptions* FindDatabase(const PoolerConfig& config, const std::string& name);

// `db` pointed at `url` (the console's RETARGET): its url and upstream, read as the file's
// `url` is (relative paths against the directory of `file`, the configuration file). An
// InvalidArgument error names what is wrong, and leaves `db` as it was.
absl::Status SetDatabaseUrl(const std::string& file, const std::string& url, DatabaseOptions* db);

// The same for db's replicas (the routing proxy's): `urls`, read as the file's would be.
absl::Status SetDatabaseReplicas(const std::string& file, const std::vector<std::string>& urls,
                                 DatabaseOptions* db);

const OptionSchema& PoolerOptionSchema();
const OptionSchema& PoolerDatabaseOptionSchema();

// Every key a pooler file accepts, as the markdown table docs/reference/pooler-options.md
// carries (| key | type | default | meaning |): generated from the option tables above, never
// written by hand (tests/unit/docs/reference_pages_test.cc keeps the page equal to it).
std::string PoolerOptionsReference();

// Reads and checks the file, and the users file it names (every error at once, each at its
// position: a users file that cannot be read at the auth.users key). No network. The database
// named "pgflow" is refused: it is the admin console.
absl::StatusOr<PoolerConfig> LoadPoolerConfig(const std::string& path);

// Whether `yaml` is a pooler file rather than a pipeline file (`pgflow validate` takes
// either): a mapping with the pooler's `listen` or `databases` and none of a pipeline's
// `pipeline`, `source` and `sinks`. False for text that is no such mapping.
bool LooksLikePoolerConfig(std::string_view yaml);
absl::StatusOr<PoolerConfig> ParsePoolerConfig(std::string_view yaml, const std::string& file);

}  // namespace pgflow::pooler
