#include "pooler/pooler_config.h"

#include <algorithm>
#include <climits>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "cluster/etcd.h"
#include "common/postgres/conninfo.h"
#include "common/postgres/table_ref.h"
#include "engine/config_node.h"
#include "engine/listen_address.h"

namespace pgflow::pooler {
namespace {

using std::chrono::milliseconds;

constexpr std::string_view kAdminDatabase = "pgflow";

const OptionTable<AdminOptions>& AdminTable() {
  static const auto* table = new OptionTable<AdminOptions>({
      StringOption("listen", &AdminOptions::listen)
          .NoDefault()
          .Check(CheckListenAddress)
          .Help("host:port of the HTTP endpoint serving /metrics (Prometheus) and /healthz."),
      ListOption("users", &AdminOptions::users)
          .NoDefault()
          .Help("Users (from the users file) who may connect to the SQL console, the virtual "
                "database `pgflow`: SHOW, PAUSE, RESUME, RELOAD, ..."),
  });
  return *table;
}

// auth.users: the path (relative to the pooler file's directory) and the users file it names,
// read now, so that a file missing, unreadable or malformed is an error at this key, found by
// `pgflow validate` too (a malformed line is reported at its own line of the users file).
absl::Status ReadUsersFile(const ConfigNode& node, AuthOptions* auth) {
  absl::StatusOr<std::string> path = node.AsPath();
  if (!path.ok()) return path.status();
  absl::StatusOr<std::string> text = ReadConfigFile(*path);
  if (!text.ok()) return node.Error(Sv(text.status().message()));
  absl::StatusOr<UserList> users = ParseUserList(*text, *path);
  if (!users.ok()) return users.status();
  auth->users = *std::move(path);
  auth->user_list = std::make_shared<const UserList>(*std::move(users));
  return absl::OkStatus();
}

const OptionTable<AuthOptions>& AuthTable() {
  static const auto* table = new OptionTable<AuthOptions>({
      ChoiceOption("method", &AuthOptions::method)
          .Choices({{"scram-sha-256", AuthMethod::kScram},
                    {"md5", AuthMethod::kMd5},
                    {"trust", AuthMethod::kTrust},
                    {"cert", AuthMethod::kCert}},
                   "auth method")
          .Help("How clients prove who they are. md5 accepts a SCRAM-only user with SCRAM, as "
                "PostgreSQL does; trust asks nothing (the user must still be in the users file "
                "when one is given); cert takes a TLS client certificate from tls.ca whose "
                "common name is the user name, and asks no password."),
      CustomOption<AuthOptions>("users", OptionType::kString, ReadUsersFile)
          .Help("pgbouncer's userlist.txt: one `\"user\" \"password, md5 hash or SCRAM secret\"` "
                "a line; a relative path is relative to this file's directory. Re-read on "
                "RELOAD. Required unless auth.method is trust or cert."),
      StringOption("user", &AuthOptions::user)
          .NoDefault()
          .Help("pgbouncer's auth_user: a user not in the users file is looked up in "
                "PostgreSQL by auth.query, run as this user (its secret in the users file, or "
                "a url that names it) on the database the client named."),
      StringOption("query", &AuthOptions::query)
          .Help("pgbouncer's auth_query: one row of (name, secret) for the user $1; a NULL or "
                "missing row refuses the login as a wrong password would. The secret is a "
                "SCRAM secret or an md5 hash, as pg_authid holds it."),
  });
  return *table;
}

// The url's `keyword`, read by `parse` into `*out` (left as it is when the url has none); an
// error naming the value and the `choices` for one `parse` does not know.
template <typename Node, typename T>
absl::Status ReadUrlChoice(const Node& node, const std::string& url, const char* keyword,
                           std::optional<T> (*parse)(std::string_view), std::string_view choices,
                           T* out) {
  std::string text = ConninfoValue(url, keyword);
  if (text.empty()) return absl::OkStatus();
  std::optional<T> value = parse(text);
  if (!value.has_value()) return node.Error(Cat("invalid ", keyword, " '", text, "' (", choices, ")"));
  *out = *value;
  return absl::OkStatus();
}

// Where a url given on the console (RETARGET) is read: its errors are the message alone, and
// its relative paths are the configuration file's.
class ConsoleUrl {
 public:
  explicit ConsoleUrl(std::string file) : file_(std::move(file)) {}
  absl::Status Error(std::string_view message) const {
    return absl::InvalidArgumentError(Cat("url: ", message));
  }
  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

// The database's upstream from its url (libpq's own parser). `node` is the url's ConfigNode,
// or a ConsoleUrl.
template <typename Node>
absl::Status ReadUpstream(const Node& node, DatabaseOptions* db) {
  if (absl::Status s = CheckConninfo(db->url); !s.ok()) return node.Error(Sv(s.message()));
  Upstream up;
  // host=a,b,c and port=1,2,3 (or one port for all), as libpq reads them.
  std::vector<std::string> hosts = absl::StrSplit(ConninfoValue(db->url, "host"), ',');
  std::vector<std::string> ports = absl::StrSplit(ConninfoValue(db->url, "port"), ',');
  if (ports.size() != 1 && ports.size() != hosts.size()) {
    return node.Error(Cat("the url names ", ports.size(), " ports for ", hosts.size(),
                          " hosts: give one port for all, or one for each"));
  }
  for (size_t i = 0; i < hosts.size(); ++i) {
    std::string host = hosts.size() == 1 && hosts[0].empty() ? Upstream().host : hosts[i];
    if (host.empty()) return node.Error(Cat("the url's host number ", i + 1, " is empty"));
    const std::string& text = ports.size() == 1 ? ports[0] : ports[i];
    int port = Upstream().port;  // (libpq's default for an empty one)
    if (!text.empty() && (!absl::SimpleAtoi(text, &port) || port <= 0 || port > 65535)) {
      return node.Error(Cat("invalid port '", text, "'"));
    }
    if (i == 0) {
      up.host = host;
      up.port = port;
    } else {
      up.more_hosts.emplace_back(host, port);
    }
  }
  if (absl::Status s = ReadUrlChoice(node, db->url, "target_session_attrs", ParseTargetSession,
                                     "any, read-write, read-only, primary, standby, prefer-standby",
                                     &up.target);
      !s.ok()) {
    return s;
  }
  if (!ConninfoValue(db->url, "load_balance_hosts").empty()) {
    // (libpq 16 would take it in the url; the pool would not act on it there.)
    return node.Error("load_balance_hosts goes beside the url (load_balance_hosts: "
                      "round-robin), not in it");
  }
  up.round_robin = db->load_balance_hosts;
  up.dbname = ConninfoValue(db->url, "dbname");
  up.user = ConninfoValue(db->url, "user");
  up.password = ConninfoValue(db->url, "password");
  if (absl::Status s = ReadUrlChoice(node, db->url, "sslmode", ParseTlsMode,
                                     "disable, allow, prefer, require, verify-ca, verify-full",
                                     &up.sslmode);
      !s.ok()) {
    return s;
  }
  // The url's files, as the file's own paths: relative to its directory.
  auto file_of = [&](const char* keyword) {
    return ResolveConfigPath(node.file(), ConninfoValue(db->url, keyword));
  };
  up.sslrootcert = file_of("sslrootcert");
  up.sslcert = file_of("sslcert");
  up.sslkey = file_of("sslkey");
  up.sslpassword = ConninfoValue(db->url, "sslpassword");
  up.sslcrl = file_of("sslcrl");
  up.sslcrldir = file_of("sslcrldir");
  if ((!up.sslcrl.empty() || !up.sslcrldir.empty()) && up.sslmode != TlsMode::kVerifyCa &&
      up.sslmode != TlsMode::kVerifyFull) {
    return node.Error(Cat(up.sslcrl.empty() ? "sslcrldir" : "sslcrl",
                          " checks a verified server's certificate: it needs sslmode verify-ca "
                          "or verify-full"));
  }
  if (up.sslcert.empty() != up.sslkey.empty()) {
    return node.Error("sslcert and sslkey go together: the certificate and its key");
  }
  const std::string keepalives = ConninfoValue(db->url, "keepalives");
  if (!keepalives.empty() && keepalives != "0" && keepalives != "1") {
    return node.Error(Cat("keepalives is 1 (on) or 0 (off), not '", keepalives, "'"));
  }
  up.keepalives = keepalives != "0";
  const std::tuple<const char*, int*, int> timings[] = {
      {"keepalives_idle", &up.keepalives_idle, 32767},
      {"keepalives_interval", &up.keepalives_interval, 32767},
      {"keepalives_count", &up.keepalives_count, 127},
      {"tcp_user_timeout", &up.tcp_user_timeout, 86400000}};
  for (auto [keyword, value, most] : timings) {
    const std::string text = ConninfoValue(db->url, keyword);
    if (!text.empty() && (!absl::SimpleAtoi(text, value) || *value < 0 || *value > most)) {
      return node.Error(Cat(keyword, " is a whole number from 0 to ", most, ", not '", text,
                            "'"));
    }
  }
  db->upstream = std::move(up);
  return absl::OkStatus();
}

// max_replica_lag: a size of WAL or a time.
absl::Status ReadReplicaLag(const ConfigNode& node, ReplicaLag* lag) {
  if (absl::StatusOr<uint64_t> bytes = node.AsBytes(); bytes.ok()) {
    *lag = ReplicaLag{.bytes = *bytes, .time = std::chrono::milliseconds(0)};
    return absl::OkStatus();
  }
  if (absl::StatusOr<std::chrono::milliseconds> time = node.AsDuration(); time.ok()) {
    *lag = ReplicaLag{.bytes = 0, .time = *time};
    return absl::OkStatus();
  }
  return node.Error("expected a size of WAL (16MiB) or a time (5s)");
}

// cache.tables: each "schema.table", none twice.
absl::Status ReadCacheTables(const ConfigNode& node, std::vector<std::string>* tables) {
  const std::vector<ConfigNode> items =
      node.IsSequence() ? node.Items() : std::vector<ConfigNode>{node};
  for (const ConfigNode& item : items) {
    absl::StatusOr<std::string> text = item.AsString();
    if (!text.ok()) return text.status();
    absl::StatusOr<TableRef> table = ParseTableRef(*text);
    if (!table.ok()) return item.Error(std::string(table.status().message()));
    if (table->is_schema())
      return item.Error("the cache lists tables one by one, not \"schema.*\"");
    std::string name = table->ToString();
    if (std::find(tables->begin(), tables->end(), name) != tables->end()) {
      return item.Error(Cat(name, " is listed twice"));
    }
    tables->push_back(std::move(name));
  }
  return absl::OkStatus();
}

const OptionTable<CacheOptions>& CacheTable() {
  static const auto* table = new OptionTable<CacheOptions>({
      CustomOption("tables", OptionType::kList, ReadCacheTables, &CacheOptions::tables)
          .Required()
          .Help("The tables whose reads are cached (schema.table each): an autocommit query "
                "(simple, or a statement bound with its parameters) that reads only these, "
                "calling only immutable functions, is answered from memory until one of its "
                "tables changes on the primary, whoever changes it."),
      DurationOption("ttl", &CacheOptions::ttl)
          .Range(milliseconds(1), milliseconds(86400000))
          .Help("An answer is kept at most this long."),
      BytesOption("max_memory", &CacheOptions::max_memory)
          .Help("The answers kept at most, in bytes; past it the least recently used go."),
      StringOption("url", &CacheOptions::url)
          .Help("The primary, as a user with the REPLICATION attribute, for the change stream "
                "that keeps the cache exact (a slot of its own, pgflow_cache_<database>); "
                "default: the database's url."),
  });
  return *table;
}

const OptionTable<ClusterFollowOptions>& ClusterFollowTable() {
  static const auto* table = new OptionTable<ClusterFollowOptions>({
      StringOption("name", &ClusterFollowOptions::name)
          .Required()
          .NonEmpty()
          .Help("The cluster's name, as its nodes' files give it."),
      ListOption("etcd", &ClusterFollowOptions::etcd)
          .Required()
          .Check(cluster::CheckEtcdUrls)
          .Help("The etcd members' client urls (http://host:2379)."),
      BoolOption("replicas", &ClusterFollowOptions::replicas)
          .Help("The cluster's streaming standbys take the reads a replica can run, as "
                "`replicas` would list them (the routing proxy; pool_mode transaction or "
                "statement)."),
  });
  return *table;
}

const OptionTable<DatabaseOptions>& DatabaseTable() {
  static const auto* table = new OptionTable<DatabaseOptions>({
      StringOption("url", &DatabaseOptions::url)
          .Required()
          .NonEmpty()
          .Help("The PostgreSQL server, postgres://user:password@host:port/dbname. Without a "
                "user, clients log in to it as themselves (with the users file's password or "
                "the keys of their SCRAM login); without dbname, the database's name here. "
                "?sslmode=prefer|require|verify-ca|verify-full (default disable) and "
                "sslrootcert=file: TLS toward the server. Several hosts (host1:port1,host2:port2) "
                "with ?target_session_attrs=any|read-write|read-only|primary|standby|"
                "prefer-standby, as libpq: the first that answers as asked. A host that is a "
                "directory is PostgreSQL's Unix socket in it (host=/var/run/postgresql "
                "port=5432), where sslmode does not apply. ?keepalives_idle=s&keepalives_interval=s&"
                "keepalives_count=n&tcp_user_timeout=ms, as libpq: how soon a server that "
                "vanished (its machine lost, the network cut) is given up (default: the "
                "system's timings). libpq's key=value form works too."),
      ChoiceOption("load_balance_hosts", &DatabaseOptions::load_balance_hosts)
          .Choices({{"disable", false}, {"round-robin", true}}, "load_balance_hosts")
          .Help("With several hosts in url: round-robin starts each new server connection at "
                "the host after the one the last started at, spreading the pool over them "
                "(the others still tried in turn when it does not answer as asked); disable "
                "starts at the host that answered last, as libpq would. (pgbouncer's name; "
                "libpq 15, which reads the url, knows no such url parameter.)"),
      ChoiceOption("pool_mode", &DatabaseOptions::pool_mode)
          .Choices({{"session", PoolMode::kSession},
                    {"transaction", PoolMode::kTransaction},
                    {"statement", PoolMode::kStatement}},
                   "pool mode")
          .Help("When a server connection goes back to the pool: when the client leaves, at "
                "the end of each transaction, or after each statement."),
      IntOption("pool_size", &DatabaseOptions::pool_size)
          .Range(1, 10000)
          .Help("Server connections per (database, user), across all threads."),
      IntOption("min_pool_size", &DatabaseOptions::min_pool_size)
          .Range(0, 10000)
          .Help("Server connections kept open even when idle."),
      IntOption("reserve_pool", &DatabaseOptions::reserve_pool)
          .Range(0, 10000)
          .Help("Extra server connections allowed when a client has waited "
                "reserve_pool_timeout."),
      DurationOption("reserve_pool_timeout", &DatabaseOptions::reserve_pool_timeout)
          .Range(milliseconds(0), milliseconds(3600000))
          .Help("How long a client waits before the reserve pool is used."),
      IntOption("max_client_conn", &DatabaseOptions::max_client_conn)
          .Range(0, 1000000)
          .Help("Clients of this database at most, all its users together (0: only the "
                "global limit); one more is refused with SQLSTATE 53300."),
      IntOption("max_queries_per_second", &DatabaseOptions::max_queries_per_second)
          .Range(0, 10000000)
          .Help("Queries a second this database's clients may run together (simple queries "
                "and extended-protocol Executes; 0: no limit). Up to one second's worth may "
                "come at once after a quiet second; a query past that waits for its turn "
                "(counted in SHOW DATABASES' queries_delayed)."),
      ListOption("replicas", &DatabaseOptions::replicas)
          .NoDefault()
          .Help("Streaming replicas of url (postgres://user:password@host:port/dbname each, "
                "read as url is): autocommit reads and read-only transactions go to a healthy "
                "one, balanced by the fewest in flight; writes and everything else to url. "
                "Transaction and statement pooling only. docs/guides/routing.md says what "
                "goes where."),
      CustomOption("max_replica_lag", OptionType::kString, ReadReplicaLag,
                   &DatabaseOptions::max_replica_lag)
          .DefaultText("16MiB")
          .Help("A replica further behind the primary than this takes no reads until it "
                "catches up: a size of WAL (1MB) or a time (5s: how long it has been behind a "
                "position the primary had). 0: no limit."),
      BoolOption("read_your_writes", &DatabaseOptions::read_your_writes)
          .Help("A client's reads after its own writes go only to a replica that has replayed "
                "them (the primary's WAL position after its commit), or to the primary. "
                "Clients may also SET pgflow.min_lsn = '<lsn>' to read at least that fresh."),
      ListOption("write_functions", &DatabaseOptions::write_functions)
          .NoDefault()
          .Help("Functions (name or schema.name) whose calls go to the primary, beside every "
                "function the catalog marks volatile."),
      SectionOption("cluster", &DatabaseOptions::cluster, ClusterFollowTable())
          .Help("A high-availability cluster of `pgflow node`s (docs/guides/high-availability.md) "
                "to follow: server connections go to the server of the node that holds its "
                "leader key, whatever host the url names; while it has none, the database is "
                "paused (clients wait, up to hold_timeout), and when another node takes the "
                "lead it is pointed there."),
      SectionOption("cache", &DatabaseOptions::cache, CacheTable())
          .Help("The routing proxy's query cache, kept exact by the primary's change stream "
                "(docs/guides/routing.md). Transaction and statement pooling only."),
      ChoiceOption("session_state", &DatabaseOptions::session_state)
          .Choices({{"refuse", SessionStatePolicy::kRefuse}, {"pin", SessionStatePolicy::kPin}},
                   "session_state policy")
          .Help("Transaction and statement modes: a query that takes session state (LISTEN, "
                "pg_advisory_lock and its session-level kin) is refused with SQLSTATE 0A000, "
                "or pins its client to its server connection until it leaves. Seen in the "
                "query's text: a query starting with LISTEN or naming advisory_lock."),
  });
  return *table;
}

// The replicas' upstreams, each read as the url is (its own user and password, or the url's).
absl::Status ReadReplicas(const ConfigNode& value, DatabaseOptions* db) {
  if (db->pool_mode == PoolMode::kSession) {
    return value.Get("replicas")
        ->Error(
            "replicas are routed to per transaction: they need pool_mode transaction or statement");
  }
  const ConfigNode list = *value.Get("replicas");
  const std::vector<ConfigNode> items =
      list.IsSequence() ? list.Items() : std::vector<ConfigNode>{list};
  for (size_t i = 0; i < db->replicas.size() && i < items.size(); ++i) {
    DatabaseOptions replica;
    replica.url = db->replicas[i];
    if (absl::Status s = ReadUpstream(items[i], &replica); !s.ok()) return s;
    if (replica.upstream.host_count() > 1) {
      return items[i].Error("a replica is one server: give each its own url");
    }
    db->replica_upstreams.push_back(std::move(replica.upstream));
  }
  return absl::OkStatus();
}

absl::Status ReadDatabases(const ConfigNode& node, std::map<std::string, DatabaseOptions>* out) {
  if (!node.IsMap()) return node.Error(Cat("expected a mapping, got ", node.KindName()));
  for (const auto& [name, value] : node.Entries()) {
    std::optional<ConfigNode> key = node.KeyNode(name);
    if (name == kAdminDatabase) {
      if (absl::Status s = ConfigErrors::Note(key->Error(
              "the database name `pgflow` is the admin console's: choose another name"));
          !s.ok()) {
        return s;
      }
      continue;
    }
    if (name.empty() || name.size() > 63 || (name.find('*') != std::string::npos && name != "*")) {
      if (absl::Status s =
              ConfigErrors::Note(key->Error("a database name has 1 to 63 characters ('*' alone "
                                            "stands for any other name)"));
          !s.ok()) {
        return s;
      }
      continue;
    }
    DatabaseOptions db;
    absl::Status s = DatabaseTable().Parse(value, &db);
    if (s.ok() && !db.url.empty()) s = ReadUpstream(*value.Get("url"), &db);
    if (s.ok() && !db.replicas.empty()) {
      s = name == "*"
              ? value.Get("replicas")
                    ->Error("the wildcard entry serves any database: it cannot list replicas")
              : ReadReplicas(value, &db);
    }
    if (s.ok() && db.cluster.replicas) {
      const ConfigNode where = *value.Get("cluster");
      if (name == "*") {
        s = where.Error("the wildcard entry serves any database: it cannot follow replicas");
      } else if (!db.replicas.empty()) {
        s = where.Error("give replicas or cluster.replicas, not both");
      } else if (db.pool_mode == PoolMode::kSession) {
        s = where.Error("replicas are routed to per transaction: they need pool_mode "
                        "transaction or statement");
      }
    }
    if (s.ok() && !db.cache.tables.empty()) {
      if (name == "*") {
        s = value.Get("cache")->Error("the wildcard entry serves any database: it cannot cache");
      } else if (db.pool_mode == PoolMode::kSession) {
        s = value.Get("cache")->Error(
            "the cache answers per query: it needs pool_mode transaction or statement");
      }
    }
    if (s.ok() && db.min_pool_size > db.pool_size) {
      s = value.Error(Cat("min_pool_size (", db.min_pool_size, ") exceeds pool_size (",
                          db.pool_size, ")"));
    }
    if (absl::Status kept = ConfigErrors::Note(s); !kept.ok()) return kept;
    (*out)[name] = std::move(db);
  }
  return absl::OkStatus();
}

const OptionTable<TlsOptions>& TlsTable() {
  static const auto* table = new OptionTable<TlsOptions>({
      ChoiceOption("mode", &TlsOptions::mode)
          .Choices({{"disable", TlsMode::kDisable},
                    {"prefer", TlsMode::kPrefer},
                    {"require", TlsMode::kRequire},
                    {"verify-ca", TlsMode::kVerifyCa},
                    {"verify-full", TlsMode::kVerifyFull}},
                   "TLS mode")
          .Help("disable: SSLRequest is answered N; prefer: clients that ask get TLS; require: "
                "a client that does not ask is refused (SQLSTATE 28000); verify-ca: and one "
                "without a certificate from tls.ca; verify-full: and one whose certificate's "
                "common name is not its user name."),
      PathOption("cert", &TlsOptions::cert)
          .NoDefault()
          .Help("PEM certificate (chain) shown to clients. Re-read on RELOAD."),
      PathOption("key", &TlsOptions::key).NoDefault().Help("PEM private key of tls.cert."),
      PathOption("ca", &TlsOptions::ca)
          .NoDefault()
          .Help("PEM authorities of client certificates: when given, clients are asked for "
                "one (needed by verify-ca, verify-full and auth.method cert)."),
      PathOption("crl", &TlsOptions::crl)
          .NoDefault()
          .Help("PEM revocation lists of tls.ca's authorities: a client certificate they "
                "revoke fails the handshake (PostgreSQL's ssl_crl_file). As in PostgreSQL, "
                "every authority of a chain needs its list (an intermediate's missing one fails "
                "the handshake with `unable to get certificate CRL`). Re-read on RELOAD."),
      PathOption("crl_dir", &TlsOptions::crl_dir)
          .NoDefault()
          .Help("A directory of PEM revocation lists of tls.ca's authorities, each under the "
                "name `openssl rehash` gives it, read when a certificate is checked "
                "(PostgreSQL's ssl_crl_dir)."),
  });
  return *table;
}

const OptionTable<TlsOptions>& HttpTlsTable() {
  static const auto* table = new OptionTable<TlsOptions>({
      PathOption("cert", &TlsOptions::cert)
          .NoDefault()
          .Help("PEM certificate (chain) of the HTTP listener: with it, https:// and wss:// "
                "only."),
      PathOption("key", &TlsOptions::key).NoDefault().Help("PEM private key of http.tls.cert."),
      PathOption("ca", &TlsOptions::ca)
          .NoDefault()
          .Help("PEM authorities of client certificates, as tls.ca: a client that sends one "
                "must chain to them, and its common name counts as a wire client's does "
                "(tls.mode verify-ca and verify-full, auth.method cert)."),
      PathOption("crl", &TlsOptions::crl)
          .NoDefault()
          .Help("PEM revocation lists of http.tls.ca's authorities, as tls.crl."),
      PathOption("crl_dir", &TlsOptions::crl_dir)
          .NoDefault()
          .Help("A directory of revocation lists of http.tls.ca's authorities, as tls.crl_dir."),
  });
  return *table;
}

const OptionTable<HttpOptions>& HttpTable() {
  static const auto* table = new OptionTable<HttpOptions>({
      StringOption("listen", &HttpOptions::listen)
          .NoDefault()
          .Check(CheckListenAddress)
          .Help("host:port of SQL over HTTP (POST /sql) and of the PostgreSQL protocol over "
                "WebSocket, as Neon's serverless driver speaks them."),
      SectionOption("tls", &HttpOptions::tls, HttpTlsTable())
          .Help("{cert, key, ca, crl, crl_dir}: HTTPS and wss://, with client certificates "
                "as the wire's tls takes them (read at start only)."),
      IntOption("max_connections", &HttpOptions::max_connections)
          .Range(1, 1000000)
          .Help("HTTP and WebSocket connections at once; past it a connection is answered 503 "
                "and closed. Each also counts toward max_client_conn while it holds a login."),
      BytesOption("max_request_size", &HttpOptions::max_request_size)
          .Range(uint64_t{1024}, uint64_t{1} << 30)
          .Help("A larger POST /sql body is answered 413."),
      BytesOption("max_response_size", &HttpOptions::max_response_size)
          .Range(uint64_t{0}, uint64_t{1} << 40)
          .Help("A /sql answer growing past this is cut off (the connection closed, so the "
                "client sees an error, never a partial result); 0: no limit. Answers are "
                "streamed, so the pooler holds a bounded part of one whatever this is."),
      DurationOption("statement_timeout", &HttpOptions::statement_timeout)
          .Range(milliseconds(0), milliseconds(86400000))
          .ZeroMeansOff()
          .Help("A /sql request still running after this is cancelled (SQLSTATE 57014)."),
      DurationOption("idle_timeout", &HttpOptions::idle_timeout)
          .Range(milliseconds(100), milliseconds(86400000))
          .Help("A keep-alive connection with no request for this long is closed."),
  });
  return *table;
}

const OptionTable<PoolerConfig>& PoolerTable() {
  static const auto* table = new OptionTable<PoolerConfig>(
      {
          StringOption("listen", &PoolerConfig::listen)
              .Required()
              .Check(CheckListenAddress)
              .Help("host:port where clients connect, as they would to PostgreSQL."),
          PathOption("unix_socket_dir", &PoolerConfig::unix_socket_dir)
              .Help("A directory: also listen on its Unix socket .s.PGSQL.<port> (psql -h "
                    "<dir> -p <port>), mode 0777, as PostgreSQL and pgbouncer do. Such clients "
                    "need no TLS under tls.mode require, and show as `unix` in SHOW CLIENTS."),
          IntOption("threads", &PoolerConfig::threads)
              .Range(0, 256)
              .DefaultText("half the cores")
              .Help("Network threads, each with its own listening socket (SO_REUSEPORT)."),
          ChoiceOption("scheduling", &PoolerConfig::scheduling)
              .Choices({{"batch", ThreadScheduling::kBatch}, {"normal", ThreadScheduling::kNormal}})
              .Help("batch: the network threads run as SCHED_BATCH, so a thread that wakes "
                    "does not preempt a running task (a PostgreSQL backend on the same machine) "
                    "but runs when it blocks; normal: the kernel's default."),
          SectionOption("admin", &PoolerConfig::admin, AdminTable())
              .Help("{listen: host:port, users: [...]}: /metrics and the SQL console."),
          SectionOption("auth", &PoolerConfig::auth, AuthTable())
              .Help("{method, users, user, query}: how clients log in."),
          SectionOption("tls", &PoolerConfig::tls, TlsTable())
              .Help("{mode, cert, key}: TLS toward clients (toward servers: the url's sslmode)."),
          SectionOption("http", &PoolerConfig::http, HttpTable())
              .Help("{listen, tls, ...}: SQL over HTTP and WebSocket (Neon's serverless "
                    "driver), through the same pools and logins."),
          IntOption("max_client_conn", &PoolerConfig::max_client_conn)
              .Range(1, 1000000)
              .Help("Client connections at most; past it a client gets SQLSTATE 53300."),
          BoolOption("tenant_in_user", &PoolerConfig::tenant_in_user)
              .Help("A client's user name user.tenant names user `user` of the database entry "
                    "`tenant`, whatever database it asks for (as Supavisor and pgcat read it), "
                    "when `tenant` is an entry; split at the last dot."),
          BoolOption("tenant_from_sni", &PoolerConfig::tenant_from_sni)
              .Help("A TLS client's server name (SNI) tenant.pooler.example.com names the "
                    "database entry `tenant` (its first label), whatever database it asks "
                    "for, when that is an entry; a user name's tenant (tenant_in_user) goes "
                    "first."),
          DurationOption("hold_timeout", &PoolerConfig::hold_timeout)
              .Range(milliseconds(0), milliseconds(3600000))
              .Help("How long a transaction waits for a server that does not answer (a "
                    "restart, a failover) before its client gets an error."),
          DurationOption("query_wait_timeout", &PoolerConfig::query_wait_timeout)
              .Range(milliseconds(0), milliseconds(86400000))
              .Help("How long a client waits in the queue for a server connection (looked "
                    "at every 100 ms)."),
          DurationOption("client_login_timeout", &PoolerConfig::client_login_timeout)
              .Range(milliseconds(100), milliseconds(3600000))
              .Help("A client must have logged in within this time."),
          DurationOption("server_connect_timeout", &PoolerConfig::server_connect_timeout)
              .Range(milliseconds(100), milliseconds(600000))
              .Help("How long one attempt to open and log in a server connection may take."),
          DurationOption("server_idle_timeout", &PoolerConfig::server_idle_timeout)
              .Range(milliseconds(0), milliseconds(86400000))
              .ZeroMeansOff()
              .Help("An idle server connection is closed after this time (above "
                    "min_pool_size)."),
          DurationOption("server_lifetime", &PoolerConfig::server_lifetime)
              .Range(milliseconds(0), milliseconds(86400000 * 30LL))
              .ZeroMeansOff()
              .Help("A server connection is closed when released after this age."),
          StringOption("server_reset_query", &PoolerConfig::server_reset_query)
              .Help("Run on a server connection before another client gets it in session "
                    "mode, and after a client left in the middle of a transaction (after a "
                    "ROLLBACK)."),
          IntOption("max_prepared_statements", &PoolerConfig::max_prepared_statements)
              .Range(1, 1000000)
              .Help("Transaction and statement modes: prepared statements a server connection "
                    "keeps for its clients; past it, it closes them all and prepares again on "
                    "demand."),
          IntOption("max_client_prepared_statements", &PoolerConfig::max_client_prepared_statements)
              .Range(1, 10000000)
              .Help("Transaction and statement modes: named prepared statements one client "
                    "may hold; past it, its Parse fails with an error that says so."),
          BytesOption("max_message_size", &PoolerConfig::max_message_size)
              .Range(uint64_t{8192}, uint64_t{1} << 30)
              .Help("A client message larger than this is refused (SQLSTATE 54000)."),
          CustomOption("databases", OptionType::kMap, ReadDatabases, &PoolerConfig::databases)
              .Required()
              .Help("The databases clients may name, each {url, pool_mode, pool_size, ...}: "
                    "see databases.<name> below. `\"*\"` serves any other name, on its url's "
                    "server, under the client's database name."),
      },
      [](const PoolerConfig& config, const ConfigNode& map) -> absl::Status {
        if (config.tls.mode != TlsMode::kDisable && (config.tls.cert.empty() || config.tls.key.empty())) {
          return map.Error("tls.mode other than disable needs tls.cert and tls.key");
        }
        if (config.tls.mode == TlsMode::kDisable && !config.tls.cert.empty()) {
          // (A certificate given means TLS was meant: not offering it would go unnoticed.)
          return map.Error("tls.cert is given but tls.mode is disable (the default), so TLS "
                           "would not be offered: set tls.mode to prefer or require, or drop "
                           "tls.cert and tls.key");
        }
        if (config.http.tls.cert.empty() != config.http.tls.key.empty()) {
          return map.Error("http.tls needs both cert and key");
        }
        if (!config.http.tls.cert.empty() && config.http.listen.empty()) {
          return map.Error("http.tls is for http.listen: give it");
        }
        if (!config.http.tls.ca.empty() && config.http.tls.cert.empty()) {
          return map.Error("http.tls.ca asks HTTPS clients for certificates: give http.tls.cert "
                           "and key");
        }
        if ((!config.http.tls.crl.empty() || !config.http.tls.crl_dir.empty()) &&
            config.http.tls.ca.empty()) {
          return map.Error("http.tls.crl and crl_dir revoke client certificates of http.tls.ca: "
                           "give http.tls.ca too");
        }
        if (config.tls.mode >= TlsMode::kVerifyCa && config.tls.ca.empty()) {
          return map.Error("tls.mode verify-ca and verify-full need tls.ca, the authorities "
                           "client certificates must chain to");
        }
        if ((!config.tls.crl.empty() || !config.tls.crl_dir.empty()) && config.tls.ca.empty()) {
          return map.Error(Cat(config.tls.crl.empty() ? "tls.crl_dir" : "tls.crl",
                               " revokes client certificates of tls.ca: give tls.ca too"));
        }
        if (config.auth.method == AuthMethod::kCert &&
            (config.tls.mode == TlsMode::kDisable || config.tls.ca.empty())) {
          return map.Error("auth.method cert needs TLS toward clients with tls.ca (the "
                           "authorities client certificates must chain to)");
        }
        if (!config.auth.user.empty() &&
            (config.auth.method == AuthMethod::kTrust || config.auth.method == AuthMethod::kCert)) {
          return map.Error("auth.user looks users up for a password check: not with trust or "
                           "cert");
        }
        if (!config.auth.user.empty() && config.auth.query.find("$1") == std::string::npos) {
          return map.Error("auth.query must take the user name as $1");
        }
        if (config.auth.method != AuthMethod::kTrust && config.auth.method != AuthMethod::kCert &&
            config.auth.users.empty()) {
          return map.Error(
              "auth.users is required unless auth.method is trust or cert: the pooler needs "
              "each user's password or SCRAM secret");
        }
        return absl::OkStatus();
      });
  return *table;
}

}  // namespace

std::string Upstream::Where() const {
  return local() ? SocketPath() : Cat(host, ":", port);
}

Upstream Upstream::Host(size_t i) const {
  Upstream one = *this;
  one.more_hosts.clear();
  if (i > 0) std::tie(one.host, one.port) = more_hosts.at(i - 1);
  return one;
}

std::string Upstream::HostList() const {
  std::string list = host;
  for (const auto& [name, port] : more_hosts) list += Cat(",", name);
  return list;
}

namespace {
constexpr std::pair<std::string_view, TargetSession> kTargetSessions[] = {
    {"any", TargetSession::kAny},
    {"read-write", TargetSession::kReadWrite},
    {"read-only", TargetSession::kReadOnly},
    {"primary", TargetSession::kPrimary},
    {"standby", TargetSession::kStandby},
    {"prefer-standby", TargetSession::kPreferStandby},
};
}  // namespace

std::optional<TargetSession> ParseTargetSession(std::string_view name) {
  for (const auto& [text, target] : kTargetSessions) {
    if (text == name) return target;
  }
  return std::nullopt;
}

std::string_view TargetSessionName(TargetSession target) {
  for (const auto& [text, value] : kTargetSessions) {
    if (value == target) return text;
  }
  return "any";
}

std::optional<TlsMode> ParseTlsMode(std::string_view name) {
  if (name == "disable") return TlsMode::kDisable;
  if (name == "allow" || name == "prefer") return TlsMode::kPrefer;
  if (name == "require") return TlsMode::kRequire;
  if (name == "verify-ca") return TlsMode::kVerifyCa;
  if (name == "verify-full") return TlsMode::kVerifyFull;
  return std::nullopt;
}

std::string_view TlsModeName(TlsMode mode) {
  switch (mode) {
    case TlsMode::kDisable:
      return "disable";
    case TlsMode::kPrefer:
      return "prefer";
    case TlsMode::kRequire:
      return "require";
    case TlsMode::kVerifyCa:
      return "verify-ca";
    case TlsMode::kVerifyFull:
      return "verify-full";
  }
  return "disable";
}

std::string_view PoolModeName(PoolMode mode) {
  switch (mode) {
    case PoolMode::kSession:
      return "session";
    case PoolMode::kTransaction:
      return "transaction";
    case PoolMode::kStatement:
      return "statement";
  }
  return "?";
}

const DatabaseOptions* FindDatabase(const PoolerConfig& config, const std::string& name) {
  auto it = config.databases.find(name);
  if (it == config.databases.end()) it = config.databases.find("*");
  return it == config.databases.end() ? nullptr : &it->second;
}

absl::Status SetDatabaseReplicas(const std::string& file, const std::vector<std::string>& urls,
                                 DatabaseOptions* db) {
  std::vector<Upstream> upstreams;
  for (const std::string& url : urls) {
    DatabaseOptions replica;
    replica.url = url;
    if (absl::Status s = ReadUpstream(ConsoleUrl(file), &replica); !s.ok()) return s;
    upstreams.push_back(std::move(replica.upstream));
  }
  db->replicas = urls;
  db->replica_upstreams = std::move(upstreams);
  return absl::OkStatus();
}

absl::Status SetDatabaseUrl(const std::string& file, const std::string& url, DatabaseOptions* db) {
  DatabaseOptions changed = *db;
  changed.url = url;
  if (url.empty()) return absl::InvalidArgumentError("url: empty");
  if (absl::Status s = ReadUpstream(ConsoleUrl(file), &changed); !s.ok()) return s;
  *db = std::move(changed);
  return absl::OkStatus();
}

const OptionSchema& PoolerOptionSchema() { return PoolerTable(); }
const OptionSchema& PoolerDatabaseOptionSchema() { return DatabaseTable(); }

std::string PoolerOptionsReference() {
  std::string out = "| key | type | default | meaning |\n|---|---|---|---|\n";
  AppendOptionsMarkdown("", PoolerTable(), &out);
  AppendOptionsMarkdown("databases.<name>", DatabaseTable(), &out);
  return out;
}

absl::StatusOr<PoolerConfig> ParsePoolerConfig(std::string_view yaml, const std::string& file) {
  absl::StatusOr<ConfigNode> root =
      ParseConfigDocument(yaml, file, "a mapping with the keys listen, auth and databases");
  if (!root.ok()) return root.status();
  ConfigErrors errors;
  PoolerConfig config;
  absl::Status s = PoolerTable().Parse(*root, &config);
  if (absl::Status all = errors.Finish(s); !all.ok()) return all;
  config.file = file;
  return config;
}

bool LooksLikePoolerConfig(std::string_view yaml) {
  absl::StatusOr<ConfigNode> root = ParseConfigDocument(yaml, "", "a mapping");
  if (!root.ok() || !root->IsMap()) return false;
  auto has = [&](std::string_view key) { return root->KeyNode(key).has_value(); };
  return (has("listen") || has("databases")) && !has("pipeline") && !has("source") && !has("sinks");
}

absl::StatusOr<PoolerConfig> LoadPoolerConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadConfigFile(path);
  if (!text.ok()) return text.status();
  return ParsePoolerConfig(*text, path);
}

}  // namespace pgflow::pooler
