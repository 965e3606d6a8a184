#include "pooler/pooler_config.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgflow::pooler {
namespace {

using ::testing::HasSubstr;

constexpr const char* kDatabases =
    "databases:\n  app: {url: 'postgres://127.0.0.1:5432/app', pool_mode: session}\n";

// A directory of its own holding a pooler file's neighbours, as a user keeps them.
class ConfigDir {
 public:
  ConfigDir() : path_(::testing::TempDir() + "/pooler_config_test_" + std::to_string(getpid())) {
    std::filesystem::create_directories(path_);
  }
  ~ConfigDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(File(name)) << text;
  }

 private:
  std::string path_;
};

TEST(PoolerConfigTest, ReadsAuthAndDatabases) {
  ConfigDir dir;
  dir.Write("u.txt", "\"alice\" \"secret\"\n");
  absl::StatusOr<PoolerConfig> config =
      ParsePoolerConfig(std::string("listen: 127.0.0.1:6432\n"
                                    "auth: {method: md5, users: u.txt, user: lookup}\n") +
                            kDatabases,
                        dir.File("pooler.yaml"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->auth.method, AuthMethod::kMd5);
  EXPECT_EQ(config->auth.users, dir.File("u.txt"));
  ASSERT_NE(config->auth.user_list, nullptr);
  EXPECT_TRUE(config->auth.user_list->contains("alice"));
  EXPECT_EQ(config->auth.user, "lookup");
  EXPECT_EQ(config->auth.query, kDefaultAuthQuery);
  ASSERT_NE(FindDatabase(*config, "app"), nullptr);
  EXPECT_EQ(FindDatabase(*config, "app")->pool_mode, PoolMode::kSession);
  EXPECT_EQ(FindDatabase(*config, "other"), nullptr);
}

TEST(PoolerConfigTest, ACacheListsTablesOneByOneOnATransactionPooledDatabase) {
  auto parse = [](const std::string& entry) {
    return ParsePoolerConfig("listen: 127.0.0.1:6432\nauth: {method: trust}\ndatabases:\n" + entry,
                             "/etc/pgflow/pooler.yaml");
  };
  absl::StatusOr<PoolerConfig> config = parse(
      "  app: {url: 'postgres://u@127.0.0.1:5432/app', cache: {tables: [public.items, "
      "'\"Sales\".Orders'], ttl: 30s, max_memory: 1MiB}}\n");
  ASSERT_TRUE(config.ok()) << config.status();
  const DatabaseOptions* app = FindDatabase(*config, "app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(app->cache.tables, (std::vector<std::string>{"public.items", "Sales.orders"}));
  EXPECT_EQ(app->cache.ttl, std::chrono::milliseconds(30000));
  EXPECT_EQ(app->cache.max_memory, 1u << 20);

  struct Case {
    std::string entry;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {"  app: {url: 'postgres://u@h/app', cache: {tables: [public.*]}}\n",
            "the cache lists tables one by one"},
           {"  app: {url: 'postgres://u@h/app', cache: {tables: [items]}}\n", "items"},
           {"  app: {url: 'postgres://u@h/app', cache: {tables: [public.a, public.a]}}\n",
            "public.a is listed twice"},
           {"  app: {url: 'postgres://u@h/app', cache: {ttl: 5s}}\n", "tables"},
           {"  app: {url: 'postgres://u@h/app', cache: {tables: [public.a], size: 1}}\n", "size"},
           {"  app: {url: 'postgres://u@h/app', pool_mode: session, cache: {tables: [public.a]}}\n",
            "the cache answers per query: it needs pool_mode transaction or statement"},
           {"  '*': {url: 'postgres://u@h/app', cache: {tables: [public.a]}}\n",
            "the wildcard entry serves any database: it cannot cache"}}) {
    absl::StatusOr<PoolerConfig> bad = parse(c.entry);
    ASSERT_FALSE(bad.ok()) << c.entry;
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr(c.error)) << c.entry;
  }
}

TEST(PoolerConfigTest, SchedulingIsBatchUnlessNormal) {
  auto parse = [](const std::string& scheduling) {
    return ParsePoolerConfig(
        "listen: 127.0.0.1:6432\nauth: {method: trust}\n" + scheduling + kDatabases, "pooler.yaml");
  };
  absl::StatusOr<PoolerConfig> plain = parse("");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->scheduling, ThreadScheduling::kBatch);
  absl::StatusOr<PoolerConfig> normal = parse("scheduling: normal\n");
  ASSERT_TRUE(normal.ok()) << normal.status();
  EXPECT_EQ(normal->scheduling, ThreadScheduling::kNormal);
  absl::StatusOr<PoolerConfig> other = parse("scheduling: fifo\n");
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(other.status().message(), HasSubstr("scheduling"));
}

// A configuration whose one database, app, has `fields` (a flow mapping's contents).
absl::StatusOr<PoolerConfig> WithApp(const std::string& fields) {
  return ParsePoolerConfig(
      "listen: 127.0.0.1:6432\nauth: {method: trust}\ndatabases:\n  app: {" + fields + "}\n",
      "pooler.yaml");
}

TEST(PoolerConfigTest, AUrlMayNameSeveralHostsAndATarget) {
  auto parse = [](const std::string& url) { return WithApp("url: '" + url + "'"); };
  absl::StatusOr<PoolerConfig> config =
      parse("postgres://db1:5433,db2,%2Frun%2Fpg:5435/app?target_session_attrs=read-write");
  ASSERT_TRUE(config.ok()) << config.status();
  const Upstream& up = FindDatabase(*config, "app")->upstream;
  ASSERT_EQ(up.host_count(), 3u);
  EXPECT_EQ(up.Host(0).Where(), "db1:5433");
  EXPECT_EQ(up.Host(1).Where(), "db2:5432");  // libpq's default port for an empty one
  EXPECT_EQ(up.Host(2).Where(), "/run/pg/.s.PGSQL.5435");
  EXPECT_EQ(up.Host(2).host_count(), 1u);
  EXPECT_EQ(up.HostList(), "db1,db2,/run/pg");
  EXPECT_EQ(up.target, TargetSession::kReadWrite);
  // One port for all hosts (key=value form).
  config = parse("host=a,b port=6000 dbname=app");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(FindDatabase(*config, "app")->upstream.Host(1).Where(), "b:6000");

  absl::StatusOr<PoolerConfig> ports = parse("host=a,b,c port=1,2 dbname=app");
  ASSERT_FALSE(ports.ok());
  EXPECT_THAT(ports.status().message(), HasSubstr("2 ports for 3 hosts"));
  absl::StatusOr<PoolerConfig> empty = parse("host=a,,c dbname=app");
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("host number 2 is empty"));
  absl::StatusOr<PoolerConfig> target = parse("postgres://a/app?target_session_attrs=master");
  ASSERT_FALSE(target.ok());
  EXPECT_THAT(target.status().message(), HasSubstr("invalid target_session_attrs 'master'"));

  // load_balance_hosts, beside the url (libpq 15 knows no such url parameter).
  auto balanced = [](const std::string& value) {
    return WithApp("url: 'postgres://a,b/app', load_balance_hosts: " + value);
  };
  config = balanced("round-robin");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(FindDatabase(*config, "app")->upstream.round_robin);
  config = balanced("disable");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(FindDatabase(*config, "app")->upstream.round_robin);
  EXPECT_FALSE(FindDatabase(*parse("postgres://a,b/app"), "app")->upstream.round_robin);
  absl::StatusOr<PoolerConfig> random = balanced("random");
  ASSERT_FALSE(random.ok());
  EXPECT_THAT(random.status().message(), HasSubstr("load_balance_hosts"));
  EXPECT_THAT(random.status().message(), HasSubstr("random"));
}

TEST(PoolerConfigTest, ClientCertificatesNeedTheirAuthorities) {
  auto parse = [](const std::string& keys) {
    return ParsePoolerConfig("listen: 127.0.0.1:6432\n" + keys + kDatabases, "pooler.yaml");
  };
  absl::StatusOr<PoolerConfig> verify =
      parse("auth: {method: trust}\ntls: {mode: verify-full, cert: c.pem, key: k.pem}\n");
  ASSERT_FALSE(verify.ok());
  EXPECT_THAT(verify.status().message(), HasSubstr("need tls.ca"));
  // A certificate without a mode would silently offer no TLS: refused, saying so.
  absl::StatusOr<PoolerConfig> unmoded =
      parse("auth: {method: trust}\ntls: {cert: c.pem, key: k.pem}\n");
  ASSERT_FALSE(unmoded.ok());
  EXPECT_THAT(unmoded.status().message(), HasSubstr("tls.mode is disable (the default)"));
  absl::StatusOr<PoolerConfig> cert = parse("auth: {method: cert}\n");
  ASSERT_FALSE(cert.ok());
  EXPECT_THAT(cert.status().message(), HasSubstr("auth.method cert needs TLS"));
  absl::StatusOr<PoolerConfig> good = parse(
      "auth: {method: cert}\ntls: {mode: verify-ca, cert: c.pem, key: k.pem, ca: ca.pem}\n");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->auth.method, AuthMethod::kCert);
  EXPECT_EQ(good->tls.mode, TlsMode::kVerifyCa);
  EXPECT_EQ(good->tls.ca, "ca.pem");
  absl::StatusOr<PoolerConfig> half = ParsePoolerConfig(
      "listen: 127.0.0.1:6432\nauth: {method: trust}\ndatabases:\n"
      "  app: {url: 'postgres://db/app?sslmode=require&sslcert=c.pem'}\n",
      "pooler.yaml");
  ASSERT_FALSE(half.ok());
  EXPECT_THAT(half.status().message(), HasSubstr("sslcert and sslkey go together"));
  absl::StatusOr<PoolerConfig> crl =
      parse("auth: {method: trust}\ntls: {mode: require, cert: c.pem, key: k.pem, crl: r.pem}\n");
  ASSERT_FALSE(crl.ok());
  EXPECT_THAT(crl.status().message(), HasSubstr("give tls.ca too"));
  absl::StatusOr<PoolerConfig> crl_dir = parse(
      "auth: {method: trust}\ntls: {mode: require, cert: c.pem, key: k.pem, crl_dir: crls}\n");
  ASSERT_FALSE(crl_dir.ok());
  EXPECT_THAT(crl_dir.status().message(), HasSubstr("tls.crl_dir revokes client certificates"));
  auto url = [](const std::string& query) {
    return WithApp("url: 'postgres://db/app?" + query + "'");
  };
  EXPECT_TRUE(url("sslmode=verify-full&sslcrl=r.pem").ok());
  absl::StatusOr<PoolerConfig> unverified = url("sslmode=require&sslcrl=r.pem");
  ASSERT_FALSE(unverified.ok());
  EXPECT_THAT(unverified.status().message(), HasSubstr("needs sslmode verify-ca or verify-full"));
  absl::StatusOr<PoolerConfig> dir = url("sslmode=verify-ca&sslcrldir=/etc/crls");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(dir->databases.at("app").upstream.sslcrldir, "/etc/crls");
  absl::StatusOr<PoolerConfig> unverified_dir = url("sslmode=prefer&sslcrldir=/etc/crls");
  ASSERT_FALSE(unverified_dir.ok());
  EXPECT_THAT(unverified_dir.status().message(), HasSubstr("sslcrldir checks a verified server"));
}

// libpq's keepalive parameters in the url: how soon a vanished server is given up.
TEST(PoolerConfigTest, TheUrlsKeepalivesAreRead) {
  auto url = [](const std::string& query) {
    return WithApp("url: 'postgres://db/app?" + query + "'");
  };
  absl::StatusOr<PoolerConfig> set =
      url("keepalives_idle=5&keepalives_interval=2&keepalives_count=3&tcp_user_timeout=9000");
  ASSERT_TRUE(set.ok()) << set.status();
  const Upstream& up = set->databases.at("app").upstream;
  EXPECT_TRUE(up.keepalives);
  EXPECT_EQ(up.keepalives_idle, 5);
  EXPECT_EQ(up.keepalives_interval, 2);
  EXPECT_EQ(up.keepalives_count, 3);
  EXPECT_EQ(up.tcp_user_timeout, 9000);
  absl::StatusOr<PoolerConfig> off = url("keepalives=0");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->databases.at("app").upstream.keepalives);
  absl::StatusOr<PoolerConfig> bad = url("keepalives_idle=soon");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              HasSubstr("keepalives_idle is a whole number from 0 to 32767, not 'soon'"));
  absl::StatusOr<PoolerConfig> neither = url("keepalives=yes");
  ASSERT_FALSE(neither.ok());
  EXPECT_THAT(neither.status().message(), HasSubstr("keepalives is 1 (on) or 0 (off)"));
}

// Every path in the file is relative to the file's directory, wherever the pooler runs from.
TEST(PoolerConfigTest, PathsAreRelativeToTheFile) {
  ConfigDir dir;
  dir.Write("users.txt", "\"alice\" \"secret\"\n");
  absl::StatusOr<PoolerConfig> config = ParsePoolerConfig(
      "listen: 127.0.0.1:6432\nunix_socket_dir: sockets\n"
      "auth: {users: users.txt}\n"
      "tls: {mode: verify-ca, cert: tls/server.crt, key: tls/server.key, ca: /etc/ca.crt, "
      "crl: crl.pem, crl_dir: crls}\n"
      "databases:\n"
      "  app: {url: 'postgres://db/app?sslmode=verify-full&sslrootcert=root.crt"
      "&sslcert=client.crt&sslkey=/keys/client.key&sslcrl=server.crl&sslcrldir=server-crls'}\n",
      dir.File("pooler.yaml"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->auth.users, dir.File("users.txt"));
  EXPECT_EQ(config->unix_socket_dir, dir.File("sockets"));
  EXPECT_EQ(config->tls.cert, dir.File("tls/server.crt"));
  EXPECT_EQ(config->tls.key, dir.File("tls/server.key"));
  EXPECT_EQ(config->tls.ca, "/etc/ca.crt");
  EXPECT_EQ(config->tls.crl, dir.File("crl.pem"));
  EXPECT_EQ(config->tls.crl_dir, dir.File("crls"));
  const Upstream& up = config->databases.at("app").upstream;
  EXPECT_EQ(up.sslrootcert, dir.File("root.crt"));
  EXPECT_EQ(up.sslcert, dir.File("client.crt"));
  EXPECT_EQ(up.sslkey, "/keys/client.key");
  EXPECT_EQ(up.sslcrl, dir.File("server.crl"));
  EXPECT_EQ(up.sslcrldir, dir.File("server-crls"));
}

// RETARGET's url is read as the file's is: its hosts, database and files (relative to the
// file's directory); a wrong one changes nothing.
TEST(PoolerConfigTest, ARetargetedUrlIsReadAsTheFilesIs) {
  absl::StatusOr<PoolerConfig> config =
      ParsePoolerConfig(std::string("listen: 127.0.0.1:6432\nauth: {method: trust}\n") + kDatabases,
                        "/etc/pgflow/p.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  DatabaseOptions db = config->databases.at("app");
  ASSERT_TRUE(SetDatabaseUrl(config->file,
                             "postgres://new-db:5433/shop?sslmode=verify-full&"
                             "sslrootcert=ca.crt",
                             &db)
                  .ok());
  EXPECT_EQ(db.url, "postgres://new-db:5433/shop?sslmode=verify-full&sslrootcert=ca.crt");
  EXPECT_EQ(db.upstream.HostList(), "new-db");
  EXPECT_EQ(db.upstream.port, 5433);
  EXPECT_EQ(db.upstream.dbname, "shop");
  EXPECT_EQ(db.upstream.sslrootcert, "/etc/pgflow/ca.crt");
  EXPECT_EQ(db.pool_mode, PoolMode::kSession);  // the rest stays

  const DatabaseOptions before = db;
  for (const char* bad : {"", "postgres://h:99999/x", "postgres://h/x?sslmode=sometimes",
                          "host=h load_balance_hosts=random"}) {
    absl::Status s = SetDatabaseUrl(config->file, bad, &db);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_THAT(s.message(), HasSubstr("url: ")) << bad;
    EXPECT_EQ(db, before) << bad;
  }
}

// A users file that cannot be read is an error at the key that names it, beside the file's
// other errors; one that is malformed, at its own line.
TEST(PoolerConfigTest, AUsersFileThatCannotBeReadIsAnErrorAtItsKey) {
  ConfigDir dir;
  const std::string file = dir.File("pooler.yaml");
  absl::StatusOr<PoolerConfig> missing = ParsePoolerConfig(
      std::string("listen: 127.0.0.1:6432\nauth: {users: missing.txt}\nthreds: 2\n") + kDatabases,
      file);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(),
              HasSubstr(file + ":2:15: auth.users: " + dir.File("missing.txt") +
                        ": cannot read the file: No such file or directory"));
  EXPECT_THAT(missing.status().message(), HasSubstr(file + ":3:1: unknown key 'threds'"));
  dir.Write("users.txt", "\"alice\" \"secret\"\nbob secret\n");
  absl::StatusOr<PoolerConfig> malformed = ParsePoolerConfig(
      std::string("listen: 127.0.0.1:6432\nauth: {users: users.txt}\n") + kDatabases, file);
  ASSERT_FALSE(malformed.ok());
  EXPECT_THAT(malformed.status().message(),
              HasSubstr(dir.File("users.txt") + ":2:1: expected a quoted user name"));
}

// `pgflow validate` tells a pooler file from a pipeline file by its keys.
TEST(PoolerConfigTest, APoolerFileIsKnownByItsKeys) {
  EXPECT_TRUE(LooksLikePoolerConfig("listen: 127.0.0.1:6432\ndatabases: {}\n"));
  EXPECT_TRUE(LooksLikePoolerConfig("databases:\n  app: {url: x}\nthreds: 2\n"));
  EXPECT_FALSE(LooksLikePoolerConfig("pipeline: shop\nsource: {}\nsinks: {}\n"));
  // A pipeline's admin listens too: its own keys decide.
  EXPECT_FALSE(LooksLikePoolerConfig("pipeline: shop\nadmin: {listen: 127.0.0.1:9187}\n"));
  EXPECT_FALSE(LooksLikePoolerConfig("listen: x\nsinks: {}\n"));
  EXPECT_FALSE(LooksLikePoolerConfig("- a list\n"));
  EXPECT_FALSE(LooksLikePoolerConfig("listen: [unclosed\n"));
}

TEST(PoolerConfigTest, AuthLookupsNeedAPasswordMethodAndAParameter) {
  ConfigDir dir;
  dir.Write("u.txt", "\"lookup\" \"secret\"\n");
  absl::StatusOr<PoolerConfig> trust = ParsePoolerConfig(
      std::string("listen: 127.0.0.1:6432\nauth: {method: trust, user: lookup}\n") + kDatabases,
      "pooler.yaml");
  ASSERT_FALSE(trust.ok());
  EXPECT_THAT(trust.status().message(), HasSubstr("not with trust"));
  absl::StatusOr<PoolerConfig> no_parameter =
      ParsePoolerConfig(std::string("listen: 127.0.0.1:6432\n"
                                    "auth: {users: u.txt, user: lookup, query: 'SELECT 1, 2'}\n") +
                            kDatabases,
                        dir.File("pooler.yaml"));
  ASSERT_FALSE(no_parameter.ok());
  EXPECT_THAT(no_parameter.status().message(), HasSubstr("$1"));
  absl::StatusOr<PoolerConfig> unknown = ParsePoolerConfig(
      std::string("listen: 127.0.0.1:6432\nauth: {users: u.txt, auth_user: x}\n") + kDatabases,
      dir.File("pooler.yaml"));
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.status().message(), HasSubstr("auth_user"));
}

}  // namespace
}  // namespace pgflow::pooler
