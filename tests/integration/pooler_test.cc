// Longer than 1,000 lines because each integration test file is one binary with one
// PostgreSQL of its own: the pooler's tests share this file's server (and its roles, databases
// and TLS settings) instead of starting one more per file. Its helpers are in
// tests/integration/support/pooler_support.h.
//
// The connection pooler (`pgflow pooler`) against a real PostgreSQL, with real clients:
// libpq, psql and pgbench in every protocol mode, through session and transaction pooling;
// logins with right and wrong passwords; malformed startup packets; cancel requests; a client
// that leaves in the middle of a transaction; a server restart under load; the admin console
// (SHOW, PAUSE/RESUME, RELOAD, KILL) and /metrics.

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "pooler/auth.h"
#include "pooler/protocol.h"
#include "tests/integration/support/pooler_support.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class PoolerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Sql admin(SharedCluster().Url());
    admin.Exec("ALTER SYSTEM SET max_connections = 200");
    SharedCluster().Pause();
    SharedCluster().Resume();
    admin_ = std::make_unique<Sql>(SharedCluster().Url());
    admin_->Exec(
        "CREATE ROLE alice LOGIN PASSWORD 'alice-secret';"
        "SET password_encryption = 'md5'; CREATE ROLE bob LOGIN PASSWORD 'bob-secret';"
        "RESET password_encryption;");
    for (const char* db : {"pool_app", "pool_bench", "pool_restart"}) {
      admin_->Exec(absl::StrCat("CREATE DATABASE ", db));
    }
    Sql app(SharedCluster().Url("pool_app"));
    app.Exec(
        "CREATE TABLE items (id int PRIMARY KEY, name text); GRANT ALL ON items TO alice, bob");
  }
  static void TearDownTestSuite() { admin_.reset(); }

  static std::unique_ptr<Sql> admin_;
};
std::unique_ptr<Sql> PoolerTest::admin_;

const char* kTrustUsers = "\"postgres\" \"\"\n";

// With session_state: refuse (the default), LISTEN and session advisory locks fail with
// SQLSTATE 0A000 and say why, in the simple and the extended protocol; inside a transaction
// the error aborts it, as any error would; transaction-level advisory locks are fine.
void ExpectSessionStateRefused(const PoolerProcess& pooler) {
  Conn strict(pooler.Url("strict"));
  ASSERT_TRUE(strict.ok()) << strict.error();
  std::string listen = strict.Run("LISTEN refused_channel");
  EXPECT_NE(listen.find("ERROR 0A000"), std::string::npos) << listen;
  EXPECT_NE(listen.find("session_state: pin"), std::string::npos) << listen;
  EXPECT_EQ(strict.Run("BEGIN"), "");
  EXPECT_NE(strict.Run("SELECT pg_advisory_lock(42)").find("ERROR 0A000"), std::string::npos);
  EXPECT_NE(strict.Run("SELECT 1").find("ERROR 25P02"), std::string::npos);
  EXPECT_EQ(strict.Run("ROLLBACK"), "");
  const char* key[1] = {"42"};
  PGresult* prepared = PQexecParams(strict.conn, "SELECT pg_advisory_lock($1::bigint)", 1, nullptr,
                                    key, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(prepared), PGRES_FATAL_ERROR);
  EXPECT_NE(std::string(PQresultErrorMessage(prepared)).find("are refused in transaction pooling"),
            std::string::npos)
      << PQresultErrorMessage(prepared);
  PQclear(prepared);
  EXPECT_EQ(strict.Run("SELECT pg_advisory_xact_lock(42)::text || 'ok'"), "ok");
  // Named in a literal, a quoted identifier, a comment or another name: not a lock.
  EXPECT_EQ(strict.Run("SELECT 'pg_advisory_lock(1); LISTEN x' AS \"pg_advisory_lock(\" "
                       "/* pg_advisory_lock(2) */ -- LISTEN y\n"),
            "pg_advisory_lock(1); LISTEN x");
  EXPECT_EQ(strict.Run("SELECT 1 AS app_advisory_locks"), "1");
  // In a DO block, or a second statement, it is.
  EXPECT_NE(
      strict.Run("DO $$BEGIN PERFORM pg_catalog.pg_advisory_lock (7); END$$").find("ERROR 0A000"),
      std::string::npos);
  EXPECT_NE(strict.Run("SELECT 1; listen refused_channel").find("ERROR 0A000"), std::string::npos);
  EXPECT_EQ(Sql(SharedCluster().Url("pool_app"))
                .Scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
            "0");
}

TEST_F(PoolerTest, ClientsRunThroughSessionAndTransactionPools) {
  PoolerProcess pooler(
      "trust", kTrustUsers,
      Database("tx", "transaction", 2, "pool_app", "postgres", "session_state: pin") +
          Database("strict", "transaction", 2, "pool_app") +
          Database("sess", "session", 2, "pool_app"));
  // Transaction mode: more clients than server connections, each with its own settings.
  std::vector<std::unique_ptr<Conn>> clients;
  for (int i = 0; i < 6; ++i) {
    clients.push_back(
        std::make_unique<Conn>(pooler.Url("tx") + absl::StrCat("?application_name=client", i)));
    ASSERT_TRUE(clients.back()->ok()) << clients.back()->error();
  }
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 6; ++i) {
      EXPECT_EQ(clients[i]->Run("SELECT current_setting('application_name')"),
                absl::StrCat("client", i));
    }
  }
  // A client's SET of a reported setting follows it across server connections.
  EXPECT_EQ(clients[0]->Run("SET DateStyle = 'German'"), "");
  for (int i = 1; i < 6; ++i) clients[i]->Run("SELECT 1");
  EXPECT_EQ(clients[0]->Run("SELECT current_setting('DateStyle')"), "German, DMY");
  EXPECT_EQ(clients[1]->Run("SELECT current_setting('DateStyle')"), "ISO, MDY");
  // Clients that logged in with the same settings skip comparing them on a connection last
  // brought to them, until one changes its own: the other never sees the change.
  {
    Conn a(pooler.Url("strict")), b(pooler.Url("strict"));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a.Run("SHOW DateStyle"), "ISO, MDY");
    EXPECT_EQ(b.Run("SHOW DateStyle"), "ISO, MDY");
    EXPECT_EQ(a.Run("SET DateStyle = 'German'"), "");
    for (int round = 0; round < 3; ++round) {
      EXPECT_EQ(b.Run("SHOW DateStyle"), "ISO, MDY");
      EXPECT_EQ(a.Run("SHOW DateStyle"), "German, DMY");
    }
    EXPECT_EQ(a.Run("RESET DateStyle"), "");
    EXPECT_EQ(b.Run("SHOW DateStyle"), "ISO, MDY");
    EXPECT_EQ(a.Run("SHOW DateStyle"), "ISO, MDY");
  }
  // A transaction keeps its connection: its rows are seen inside it only until COMMIT.
  EXPECT_EQ(clients[0]->Run("BEGIN"), "");
  EXPECT_EQ(clients[0]->Run("INSERT INTO items VALUES (1, 'one')"), "");
  EXPECT_EQ(clients[1]->Run("SELECT count(*) FROM items WHERE id = 1"), "0");
  EXPECT_EQ(clients[0]->Run("SELECT count(*) FROM items WHERE id = 1"), "1");
  EXPECT_EQ(clients[0]->Run("COMMIT"), "");
  EXPECT_EQ(clients[1]->Run("SELECT count(*) FROM items WHERE id = 1"), "1");
  // An error inside a transaction, then ROLLBACK, as directly.
  EXPECT_EQ(clients[2]->Run("BEGIN"), "");
  EXPECT_NE(clients[2]->Run("SELECT 1/0").find("ERROR 22012"), std::string::npos);
  EXPECT_NE(clients[2]->Run("SELECT 1").find("ERROR 25P02"), std::string::npos);
  EXPECT_EQ(clients[2]->Run("ROLLBACK"), "");
  EXPECT_EQ(clients[2]->Run("SELECT 2"), "2");

  // PGOPTIONS-style settings in the startup packet hold on every connection the client gets.
  Conn optioned(pooler.Url("tx") +
                "?options=-c%20intervalstyle%3Dpostgres_verbose%20--work-mem%3D5MB");
  ASSERT_TRUE(optioned.ok()) << optioned.error();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(optioned.Run("SHOW intervalstyle"), "postgres_verbose");
    EXPECT_EQ(optioned.Run("SHOW work_mem"), "5MB");
    EXPECT_EQ(clients[i]->Run("SHOW work_mem"), "4MB");  // not passed on to the others
  }
  Conn bad_options(pooler.Url("tx") + "?options=-x");
  EXPECT_NE(bad_options.error().find("unsupported startup option '-x'"), std::string::npos)
      << bad_options.error();

  // LISTEN in transaction mode keeps the client on its connection: notifications arrive.
  EXPECT_EQ(clients[3]->Run("LISTEN pooled_channel"), "");
  for (int i = 0; i < 6; ++i) clients[i]->Run("SELECT 1");
  Sql(SharedCluster().Url("pool_app")).Exec("NOTIFY pooled_channel, 'hello'");
  EXPECT_EQ(clients[3]->Run("SELECT 1"), "1");
  PQconsumeInput(clients[3]->conn);
  PGnotify* notify = PQnotifies(clients[3]->conn);
  ASSERT_NE(notify, nullptr);
  EXPECT_EQ(std::string(notify->relname), "pooled_channel");
  EXPECT_EQ(std::string(notify->extra), "hello");
  PQfreemem(notify);

  // With session_state: refuse (the default), what takes session state fails.
  ASSERT_NO_FATAL_FAILURE(ExpectSessionStateRefused(pooler));

  // Session mode: the session's state stays (a temporary table, a plain SET).
  {
    Conn a(pooler.Url("sess"));
    ASSERT_TRUE(a.ok()) << a.error();
    EXPECT_EQ(a.Run("CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (7); SET work_mem = '7MB'"),
              "");
    EXPECT_EQ(a.Run("SELECT x FROM t"), "7");
    EXPECT_EQ(a.Run("SHOW work_mem"), "7MB");
    Conn b(pooler.Url("sess"));
    EXPECT_NE(b.Run("SELECT x FROM t").find("ERROR 42P01"), std::string::npos);
  }
  // A session-mode client's startup settings are its session's defaults: RESET returns to
  // them, as directly.
  {
    Conn german(pooler.Url("sess") + "?options=-c%20DateStyle%3DGerman");
    ASSERT_TRUE(german.ok()) << german.error();
    EXPECT_EQ(german.Run("SET DateStyle = 'ISO'; RESET DateStyle; SHOW DateStyle"), "German, DMY");
  }
  // A session given back is reset (DISCARD ALL) before the next client gets it.
  for (int i = 0; i < 2; ++i) {
    Conn d(pooler.Url("sess"));
    EXPECT_EQ(d.Run("SHOW work_mem"), "4MB");
    EXPECT_NE(d.Run("SELECT x FROM t").find("ERROR 42P01"), std::string::npos);
  }

  // COPY in and out through the pool.
  Sql copy(pooler.Url("tx"));
  copy.Exec("CREATE TEMP TABLE IF NOT EXISTS c (x int)");
  PGresult* r = PQexec(copy.conn(), "COPY (SELECT g FROM generate_series(1, 50000) g) TO STDOUT");
  ASSERT_EQ(PQresultStatus(r), PGRES_COPY_OUT);
  PQclear(r);
  int lines = 0;
  char* line = nullptr;
  while (PQgetCopyData(copy.conn(), &line, 0) > 0) {
    ++lines;
    PQfreemem(line);
  }
  PQclear(PQgetResult(copy.conn()));
  EXPECT_EQ(lines, 50000);
  EXPECT_EQ(copy.Scalar("SELECT 42"), "42");
}

TEST_F(PoolerTest, PgbenchRunsInEveryProtocolModeInTransactionPooling) {
  PoolerProcess pooler("trust", kTrustUsers, Database("bench", "transaction", 4, "pool_bench"));
  std::string output;
  ASSERT_EQ(Shell(absl::StrCat(PgBin(), "/pgbench -q -i -s 1 -h 127.0.0.1 -p ",
                               SharedCluster().port(), " -U postgres pool_bench"),
                  &output),
            0)
      << output;
  for (const char* mode : {"simple", "extended", "prepared"}) {
    SCOPED_TRACE(mode);
    // One thread per client: pgbench 15 prepares a statement with a blocking call in the
    // middle of its transaction, so clients sharing a thread would wait on each other for the
    // 4 server connections (the same happens through pgbouncer).
    ASSERT_EQ(Shell(absl::StrCat(PgBin(), "/pgbench -n -c 12 -j 12 -t 150 -M ", mode,
                                 " -h 127.0.0.1 -p ", pooler.port(), " -U postgres bench"),
                    &output),
              0)
        << output;
    EXPECT_NE(output.find("number of transactions actually processed: 1800/1800"),
              std::string::npos)
        << output;
    EXPECT_EQ(output.find("aborted"), std::string::npos) << output;
  }
  // The balances add up: every transaction's three updates landed once.
  Sql direct(SharedCluster().Url("pool_bench"));
  EXPECT_EQ(direct.Scalar("SELECT count(*) FROM pgbench_history"), "5400");
  EXPECT_EQ(direct.Scalar("SELECT sum(delta) = (SELECT sum(abalance) FROM pgbench_accounts) "
                          "FROM pgbench_history"),
            "t");
}

// The threads of `pid` scheduled as SCHED_BATCH: the pooler's network threads (`threads: 2`)
// and the threads they start (asio's resolver thread inherits the policy); -1 if the main
// thread is one (it must not be).
int BatchThreads(pid_t pid) {
  if (sched_getscheduler(pid) == SCHED_BATCH) return -1;
  int batch = 0;
  DIR* tasks = opendir(absl::StrCat("/proc/", pid, "/task").c_str());
  if (tasks == nullptr) return -1;
  while (dirent* entry = readdir(tasks)) {
    if (entry->d_name[0] == '.') continue;
    if (sched_getscheduler(static_cast<pid_t>(atoi(entry->d_name))) == SCHED_BATCH) ++batch;
  }
  closedir(tasks);
  return batch;
}

TEST_F(PoolerTest, NetworkThreadsRunAsBatchUnlessToldOtherwise) {
  PoolerProcess batch("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"));
  Sql through(batch.Url("app"));
  EXPECT_EQ(through.Scalar("SELECT 1"), "1");
  EXPECT_GE(BatchThreads(batch.process().pid()), 2);
  PoolerProcess normal("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"),
                       "scheduling: normal\n");
  Sql through_normal(normal.Url("app"));
  EXPECT_EQ(through_normal.Scalar("SELECT 1"), "1");
  EXPECT_EQ(BatchThreads(normal.process().pid()), 0);
}

TEST_F(PoolerTest, PreparedStatementsFollowClientsAcrossServerConnections) {
  PoolerProcess pooler("trust", kTrustUsers, Database("tx", "transaction", 1, "pool_app"));
  Conn a(pooler.Url("tx"));
  Conn b(pooler.Url("tx"));
  ASSERT_TRUE(a.ok() && b.ok());
  // The same name, different statements, on the one shared server connection.
  PQclear(PQprepare(a.conn, "q", "SELECT $1::int + 1", 1, nullptr));
  PQclear(PQprepare(b.conn, "q", "SELECT $1::text || '!'", 1, nullptr));
  for (int i = 0; i < 5; ++i) {
    std::string n = std::to_string(i);
    const char* values[1] = {n.c_str()};
    PGresult* ra = PQexecPrepared(a.conn, "q", 1, values, nullptr, nullptr, 0);
    PGresult* rb = PQexecPrepared(b.conn, "q", 1, values, nullptr, nullptr, 0);
    ASSERT_EQ(PQresultStatus(ra), PGRES_TUPLES_OK) << PQresultErrorMessage(ra);
    ASSERT_EQ(PQresultStatus(rb), PGRES_TUPLES_OK) << PQresultErrorMessage(rb);
    EXPECT_EQ(std::string(PQgetvalue(ra, 0, 0)), std::to_string(i + 1));
    EXPECT_EQ(std::string(PQgetvalue(rb, 0, 0)), n + "!");
    PQclear(ra);
    PQclear(rb);
  }
  // Describe of a statement prepared on another connection.
  PGresult* described = PQdescribePrepared(b.conn, "q");
  ASSERT_EQ(PQresultStatus(described), PGRES_COMMAND_OK) << PQresultErrorMessage(described);
  EXPECT_EQ(PQnparams(described), 1);
  EXPECT_EQ(PQftype(described, 0), 25u);  // text
  PQclear(described);
  // A statement the client never prepared is an error, as directly.
  PGresult* missing = PQexecPrepared(a.conn, "nope", 0, nullptr, nullptr, nullptr, 0);
  EXPECT_NE(std::string(PQresultErrorMessage(missing)).find("does not exist"), std::string::npos);
  PQclear(missing);
  EXPECT_EQ(a.Run("SELECT 5"), "5");
  // The server connection was restarted under them: statements are prepared again.
  Conn console(pooler.Url("pgflow"));
  ASSERT_TRUE(console.ok()) << console.error();
  console.Run("RECONNECT tx");
  const char* values[1] = {"41"};
  PGresult* again = PQexecPrepared(a.conn, "q", 1, values, nullptr, nullptr, 0);
  ASSERT_EQ(PQresultStatus(again), PGRES_TUPLES_OK) << PQresultErrorMessage(again);
  EXPECT_EQ(std::string(PQgetvalue(again, 0, 0)), "42");
  PQclear(again);
}

TEST_F(PoolerTest, SeveralHostsLeadToTheServerTheUrlAsksFor) {
  // main: the primary; standby: its hot standby; other: a primary whose database is read-only
  // by default; dead: nothing listens.
  TestCluster& main = SharedCluster();
  TestCluster& other = SharedCluster(1);
  admin_->Exec("CREATE DATABASE pool_multi");
  Sql(other.Url()).Exec("CREATE DATABASE pool_multi");
  Sql(other.Url()).Exec("ALTER DATABASE pool_multi SET default_transaction_read_only = on");
  Standby standby(main);
  ASSERT_GT(standby.port(), 0);
  const int dead = FreeLoopbackPort();
  auto database = [](const std::string& name, std::vector<int> ports, const std::string& target) {
    std::vector<std::string> hosts;
    for (int port : ports) hosts.push_back(absl::StrCat("127.0.0.1:", port));
    return absl::StrCat("  ", name, ": {url: 'postgres://postgres@", absl::StrJoin(hosts, ","),
                        "/pool_multi", target.empty() ? "" : "?target_session_attrs=", target,
                        "', pool_mode: transaction, pool_size: 2}\n");
  };
  PoolerProcess pooler(
      "trust", kTrustUsers,
      database("rw", {dead, other.port(), standby.port(), main.port()}, "read-write") +
          database("ro", {main.port(), other.port()}, "read-only") +
          database("prim", {standby.port(), other.port()}, "primary") +
          database("stby", {main.port(), other.port(), standby.port()}, "standby") +
          database("prefer", {main.port(), dead}, "prefer-standby") +
          database("any", {dead, other.port(), main.port()}, "") +
          database("none", {dead, standby.port()}, "read-write") +
          absl::StrCat("  spread: {url: 'postgres://postgres@127.0.0.1:", main.port(),
                       ",127.0.0.1:", other.port(), "/pool_multi', pool_mode: transaction, ",
                       "pool_size: 2, load_balance_hosts: round-robin}\n"),
      "hold_timeout: 1s\n");
  auto port_of = [&](const std::string& db) {
    Conn client(pooler.Url(db));
    return client.ok() ? client.Run("SELECT inet_server_port()") : client.error();
  };
  EXPECT_EQ(port_of("rw"), std::to_string(main.port()));
  EXPECT_EQ(port_of("ro"), std::to_string(other.port()));
  EXPECT_EQ(port_of("prim"), std::to_string(other.port()));  // read-only, yet no standby
  EXPECT_EQ(port_of("stby"), std::to_string(standby.port()));
  EXPECT_EQ(port_of("prefer"), std::to_string(main.port()));  // no standby among them: any
  EXPECT_EQ(port_of("any"), std::to_string(other.port()));    // the first that answers
  Conn none(pooler.Url("none"));  // (the login needs a server's parameters: refused there)
  ASSERT_FALSE(none.ok());
  const std::string refused = none.error();
  EXPECT_NE(refused.find("none of the url's 2 hosts"), std::string::npos) << refused;
  EXPECT_NE(refused.find("is not read-write"), std::string::npos) << refused;

  // load_balance_hosts: round-robin: two transactions held at once, on connections opened
  // one after the other, one on each host (without it both would go to the first).
  {
    Conn first(pooler.Url("spread")), second(pooler.Url("spread"));
    ASSERT_TRUE(first.ok() && second.ok()) << first.error() << second.error();
    first.Run("BEGIN");
    second.Run("BEGIN");
    std::set<std::string> ports = {first.Run("SELECT inet_server_port()"),
                                   second.Run("SELECT inet_server_port()")};
    EXPECT_EQ(ports,
              (std::set<std::string>{std::to_string(main.port()), std::to_string(other.port())}));
  }

  // A switchover: main turns read-only, other read-write. RECONNECT, and a client that stays
  // connected runs its next transaction on the new read-write server.
  Conn client(pooler.Url("rw"));
  ASSERT_TRUE(client.ok()) << client.error();
  EXPECT_EQ(client.Run("SELECT inet_server_port()"), std::to_string(main.port()));
  admin_->Exec("ALTER DATABASE pool_multi SET default_transaction_read_only = on");
  Sql(other.Url()).Exec("ALTER DATABASE pool_multi RESET default_transaction_read_only");
  Conn console(pooler.Url("pgflow"));
  ASSERT_TRUE(console.ok()) << console.error();
  console.Run("RECONNECT rw");
  EXPECT_EQ(client.Run("SELECT inet_server_port()"), std::to_string(other.port()));
  EXPECT_EQ(client.Run("SELECT current_setting('transaction_read_only')"), "off");
  admin_->Exec("ALTER DATABASE pool_multi RESET default_transaction_read_only");
}

TEST_F(PoolerTest, LoginsCheckPasswordsForEachMethod) {
  std::string users = absl::StrCat("\"postgres\" \"\"\n\"alice\" \"alice-secret\"\n", "\"bob\" \"",
                                   pooler::Md5PasswordHash("bob", "bob-secret"), "\"\n");
  for (const char* method : {"scram-sha-256", "md5"}) {
    SCOPED_TRACE(method);
    PoolerProcess pooler(method, users, Database("app", "transaction", 2, "pool_app", ""));
    Conn alice(pooler.Url("app", "alice", "alice-secret"));
    ASSERT_TRUE(alice.ok()) << alice.error();
    EXPECT_EQ(alice.Run("SELECT current_user"), "alice");
    Conn wrong(pooler.Url("app", "alice", "nope"));
    EXPECT_FALSE(wrong.ok());
    EXPECT_NE(wrong.error().find("password authentication failed for user \"alice\""),
              std::string::npos)
        << wrong.error();
    Conn stranger(pooler.Url("app", "mallory", "x"));
    EXPECT_FALSE(stranger.ok());
    EXPECT_NE(stranger.error().find("password authentication failed"), std::string::npos);
    // bob's entry is an md5 hash: md5 logins work, SCRAM cannot use it.
    Conn bob(pooler.Url("app", "bob", "bob-secret"));
    if (std::string(method) == "md5") {
      ASSERT_TRUE(bob.ok()) << bob.error();
      EXPECT_EQ(bob.Run("SELECT current_user"), "bob");
    } else {
      EXPECT_FALSE(bob.ok());
      EXPECT_NE(bob.error().find("password authentication failed for user \"bob\""),
                std::string::npos)
          << bob.error();
    }
    // Whether a user exists does not show in the pooler's first answer: the same
    // authentication request for alice, bob (no SCRAM secret) and mallory (unknown).
    auto first_request = [&](const std::string& user) {
      std::string body = Int32(196608) + "user" + std::string(1, '\0') + user +
                         std::string(1, '\0') + "database" + std::string(1, '\0') + "app" +
                         std::string(2, '\0');
      std::string answer = RawExchange(pooler.port(), Int32(4 + body.size()) + body, 9);
      return answer.substr(0, 9);  // 'R', length, request code (salt of md5 left out)
    };
    const std::string asked = first_request("alice");
    EXPECT_EQ(asked.substr(0, 1), "R");
    EXPECT_EQ(first_request("bob"), asked);
    EXPECT_EQ(first_request("mallory"), asked);
    Conn bad_db(pooler.Url("nosuch", "alice", "alice-secret"));
    EXPECT_NE(bad_db.error().find("not in the pooler's configuration"), std::string::npos)
        << bad_db.error();
  }
  // A SCRAM secret in the users file, copied from pg_authid, logs in too (and the pooler
  // logs in to PostgreSQL with the keys of the client's own proof).
  std::string stored = admin_->Scalar("SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'");
  ASSERT_EQ(stored.rfind("SCRAM-SHA-256$", 0), 0u) << stored;
  PoolerProcess pooler("scram-sha-256", absl::StrCat("\"alice\" \"", stored, "\"\n"),
                       Database("app", "transaction", 2, "pool_app", ""));
  Conn alice(pooler.Url("app", "alice", "alice-secret"));
  ASSERT_TRUE(alice.ok()) << alice.error();
  EXPECT_EQ(alice.Run("SELECT current_user"), "alice");
  Conn wrong(pooler.Url("app", "alice", "alice-wrong"));
  EXPECT_FALSE(wrong.ok());
}

// BAN ADDRESS refuses the address's logins from then on, not only its clients connected then
// (the check ran before the client's address was known, and let every login through).
TEST_F(PoolerTest, AnAddressBanRefusesItsLogins) {
  PoolerProcess pooler("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"));
  Conn before(pooler.Url("app"));
  ASSERT_TRUE(before.ok()) << before.error();
  Console(pooler, "BAN ADDRESS 127.0.0.1");
  EXPECT_NE(before.Run("SELECT 1"), "1");  // disconnected
  Conn after(pooler.Url("app"));
  EXPECT_FALSE(after.ok());
  EXPECT_NE(after.error().find("clients from 127.0.0.1 are banned from the pooler (BAN ADDRESS)"),
            std::string::npos)
      << after.error();
}

// tenant_in_user: `alice.shop` is user alice of the database entry shop, whatever database the
// client names; a name whose suffix is no entry, or without the option, is a user name as is.
TEST_F(PoolerTest, TenantsAreNamedByTheUserNameSuffix) {
  const std::string users =
      "\"postgres\" \"pg-secret\"\n\"alice\" \"alice-secret\"\n\"b.c\" \"bc-secret\"\n";
  const std::string databases = Database("shop", "transaction", 2, "pool_app", "") +
                                Database("bench", "transaction", 2, "pool_bench", "");
  PoolerProcess pooler("scram-sha-256", users, databases, "tenant_in_user: true\n");
  for (const char* asked : {"postgres", "anything", "shop"}) {
    Conn alice(pooler.Url(asked, "alice.shop", "alice-secret"));
    ASSERT_TRUE(alice.ok()) << asked << ": " << alice.error();
    EXPECT_EQ(alice.Run("SELECT current_user || '@' || current_database()"), "alice@pool_app");
  }
  Conn other(pooler.Url("postgres", "alice.bench", "alice-secret"));
  ASSERT_TRUE(other.ok()) << other.error();
  EXPECT_EQ(other.Run("SELECT current_database()"), "pool_bench");
  // SHOW POOLS counts them under the tenant's entry and the plain user name.
  setenv("PGPASSWORD", "pg-secret", 1);  // the console's user, by SCRAM
  const std::string pools = Console(pooler, "SHOW POOLS");
  // Each tenant's errors are counted apart (SHOW STATS' total_errors).
  EXPECT_EQ(other.Run("SELECT 1/0").rfind("ERROR 22012", 0), 0u);
  const std::string stats = Console(pooler, "SHOW STATS");
  EXPECT_NE(stats.find("bench|alice|"), std::string::npos) << stats;
  for (const std::string& line : std::vector<std::string>(absl::StrSplit(stats, '\n'))) {
    std::vector<std::string> cells = absl::StrSplit(line, '|');
    if (cells.size() < 10 || cells[1] != "alice") continue;
    EXPECT_EQ(cells[9], cells[0] == "bench" ? "1" : "0") << line;  // total_errors
  }
  // A tenant banned: its clients are refused, however they name it; the other goes on.
  Console(pooler, "BAN DATABASE shop");
  Conn banned(pooler.Url("postgres", "alice.shop", "alice-secret"));
  EXPECT_FALSE(banned.ok());
  EXPECT_NE(banned.error().find("database \"shop\" is banned from the pooler"), std::string::npos)
      << banned.error();
  Conn named(pooler.Url("shop", "alice", "alice-secret"));
  EXPECT_FALSE(named.ok());
  EXPECT_EQ(other.Run("SELECT 1"), "1");
  Console(pooler, "UNBAN DATABASE shop");
  unsetenv("PGPASSWORD");
  Conn back(pooler.Url("postgres", "alice.shop", "alice-secret"));
  EXPECT_TRUE(back.ok()) << back.error();
  EXPECT_NE(pools.find("shop|alice|"), std::string::npos) << pools;
  EXPECT_NE(pools.find("bench|alice|"), std::string::npos) << pools;
  // "b.c": c is no entry, so b.c is the user, of the database it names.
  Conn dotted(pooler.Url("shop", "b.c", "bc-secret"));
  EXPECT_FALSE(dotted.ok());  // (no role b.c in PostgreSQL: but the pooler let it through)
  EXPECT_EQ(dotted.error().find("not in the users file"), std::string::npos) << dotted.error();
  Conn unknown(pooler.Url("postgres", "alice.nosuch", "alice-secret"));
  EXPECT_FALSE(unknown.ok());
  // Without the option, alice.shop is a user of its own (not in the file).
  PoolerProcess plain("scram-sha-256", users, databases);
  Conn as_is(plain.Url("shop", "alice.shop", "alice-secret"));
  EXPECT_FALSE(as_is.ok());
}

// A tenant's limits hold across its users: max_client_conn counts the database's clients
// whoever they log in as, and max_queries_per_second paces its queries, simple and extended,
// counted in SHOW DATABASES; another tenant is not paced, and RELOAD lifts the pace.
TEST_F(PoolerTest, TenantLimitsHoldAcrossUsers) {
  const std::string users =
      "\"postgres\" \"pg-secret\"\n\"alice\" \"alice-secret\"\n\"bob\" \"bob-secret\"\n";
  const std::string bench = Database("bench", "transaction", 2, "pool_bench", "");
  PoolerProcess pooler(
      "scram-sha-256", users,
      Database("shop", "transaction", 2, "pool_app", "",
               "max_client_conn: 2, max_queries_per_second: 20") + bench);
  Conn alice(pooler.Url("shop", "alice", "alice-secret"));
  ASSERT_TRUE(alice.ok()) << alice.error();
  Conn bob(pooler.Url("shop", "bob", "bob-secret"));
  ASSERT_TRUE(bob.ok()) << bob.error();
  Conn third(pooler.Url("shop", "alice", "alice-secret"));
  EXPECT_FALSE(third.ok());
  EXPECT_NE(third.error().find("too many clients of database shop (max_client_conn 2)"),
            std::string::npos)
      << third.error();
  // 20 at once (a second's worth), then one every 50 ms: 50 queries take 1.5 s at least.
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 40; ++i) ASSERT_EQ((i % 2 ? alice : bob).Run("SELECT 1"), "1");
  for (int i = 0; i < 10; ++i) {
    const char* const value[] = {"7"};
    PGresult* result =
        PQexecParams(alice.conn, "SELECT $1::int", 1, nullptr, value, nullptr, nullptr, 0);
    ASSERT_EQ(PQresultStatus(result), PGRES_TUPLES_OK) << PQerrorMessage(alice.conn);
    EXPECT_STREQ(PQgetvalue(result, 0, 0), "7");
    PQclear(result);
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(1450));
  Conn other(pooler.Url("bench", "alice", "alice-secret"));
  ASSERT_TRUE(other.ok()) << other.error();
  for (int i = 0; i < 100; ++i) ASSERT_EQ(other.Run("SELECT 1"), "1");
  setenv("PGPASSWORD", "pg-secret", 1);
  auto delayed = [&](const std::string& name) {
    for (const std::string& line :
         std::vector<std::string>(absl::StrSplit(Console(pooler, "SHOW DATABASES"), '\n'))) {
      std::vector<std::string> cells = absl::StrSplit(line, '|');
      // name ... clients (13), max_queries_per_second (14), queries_delayed (15)
      if (cells.size() == 16 && cells[0] == name) {
        return absl::StrJoin({cells[13], cells[14], cells[15]}, "/");
      }
    }
    return std::string("none");
  };
  const std::string shop = delayed("shop");
  std::vector<std::string> fields = absl::StrSplit(shop, '/');
  ASSERT_EQ(fields.size(), 3u) << shop;
  EXPECT_EQ(fields[0], "2");
  EXPECT_EQ(fields[1], "20");
  EXPECT_GE(std::stoi(fields[2]), 25) << shop;  // (about 30: the queries past the burst)
  EXPECT_EQ(delayed("bench"), "1/0/0");
  // SHOW MEM: the clients (the console's own apart) and what the heap holds per client.
  const std::string memory = Console(pooler, "SHOW MEM");
  EXPECT_NE(memory.find("\nclients|3\n"), std::string::npos) << memory;
  EXPECT_NE(memory.find("\ntls_clients|0\n"), std::string::npos) << memory;
  EXPECT_TRUE(std::regex_search(memory, std::regex("heap_bytes_per_client\\|[1-9][0-9]*")))
      << memory;
  // RELOAD without the pace: no query waits any more.
  pooler.WriteConfig("scram-sha-256",
                     Database("shop", "transaction", 2, "pool_app", "", "max_client_conn: 2") +
                         bench);
  Console(pooler, "RELOAD");
  for (int i = 0; i < 100; ++i) ASSERT_EQ(alice.Run("SELECT 1"), "1");
  EXPECT_EQ(delayed("shop"), absl::StrCat(fields[0], "/0/", fields[2]));
  unsetenv("PGPASSWORD");
}

// With no file descriptor left, a new client is told so (FATAL 53300) at once rather than
// left queued until its own timeout; once clients leave, new ones get in again.
TEST_F(PoolerTest, ClientsPastTheOpenFilesLimitAreRefusedSayingWhy) {
  PoolerProcess pooler("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"));
  std::string output;
  ASSERT_EQ(
      Shell(absl::StrCat("prlimit --pid ", pooler.process().pid(), " --nofile=64:64"), &output),
      0)
      << output;
  std::vector<std::unique_ptr<Conn>> held;
  std::string refusal;
  for (int i = 0; i < 100 && refusal.empty(); ++i) {
    auto client = std::make_unique<Conn>(pooler.Url("app") + "?sslmode=disable");
    if (client->ok()) {
      held.push_back(std::move(client));
    } else {
      refusal = client->error();
    }
  }
  EXPECT_NE(refusal.find("too many clients: the pooler has no file descriptor left (its "
                         "open-files limit is 64)"),
            std::string::npos)
      << refusal;
  EXPECT_GT(held.size(), 20u);
  // A client that asks for TLS first (libpq's default, sslmode=prefer) gets the same answer
  // at once, though libpq does not show the text of an error sent before encryption is settled.
  // (A descriptor the pooler held for a moment when the last client was refused may be free
  // again: a client that gets in is held, and the next one tried.)
  std::string prefer_refusal;
  for (int i = 0; i < 10 && prefer_refusal.empty(); ++i) {
    auto client = std::make_unique<Conn>(pooler.Url("app"));
    if (client->ok()) {
      held.push_back(std::move(client));
    } else {
      prefer_refusal = client->error();
    }
  }
  EXPECT_NE(prefer_refusal.find("server sent an error response during SSL exchange"),
            std::string::npos)
      << prefer_refusal;
  ASSERT_FALSE(held.empty());
  EXPECT_EQ(held.front()->Run("SELECT 1"), "1");  // (those in go on)
  held.clear();
  EXPECT_TRUE(WaitFor([&] { return Conn(pooler.Url("app")).ok(); }, seconds(10)));
  EXPECT_NE(pooler.Log().find("no file descriptor left: new clients are refused"),
            std::string::npos);
}

// tenant_from_sni: the host name a TLS client connects to (shop.pooler.test) names the entry.
TEST_F(PoolerTest, TenantsAreNamedByTheTlsServerName) {
  TempDir certs;
  MakeCertificate(certs.path());
  if (HasFatalFailure()) return;
  PoolerProcess pooler(
      "trust", kTrustUsers,
      Database("shop", "transaction", 2, "pool_app") +
          Database("bench", "transaction", 2, "pool_bench"),
      absl::StrCat("tls: {mode: require, cert: ", certs.File("tls.crt"),
                   ", key: ", certs.File("tls.key"), "}\ntenant_from_sni: true\n"));
  // hostaddr: where libpq connects; host: the name it sends (sslsni is on by default).
  auto at = [&](const std::string& host) {
    return absl::StrCat("postgres://postgres@", host, ":", pooler.port(),
                        "/postgres?hostaddr=127.0.0.1&sslmode=require");
  };
  Conn shop(at("shop.pooler.test"));
  ASSERT_TRUE(shop.ok()) << shop.error() << pooler.Log();
  EXPECT_EQ(shop.Run("SELECT current_database()"), "pool_app");
  Conn bench(at("bench.pooler.test"));
  ASSERT_TRUE(bench.ok()) << bench.error();
  EXPECT_EQ(bench.Run("SELECT current_database()"), "pool_bench");
  // A name that is no entry leaves the database the client named (none such here).
  Conn other(at("other.pooler.test"));
  EXPECT_FALSE(other.ok());
  EXPECT_NE(other.error().find("\"postgres\" is not in the pooler's configuration"),
            std::string::npos)
      << other.error();
}

// How many times `needle` occurs in `text`.
size_t Occurrences(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

// The failed logins `log` accounts for: a line each, and the count each summary line gives.
int FailedLoginsLogged(const std::string& log) {
  int count = static_cast<int>(Occurrences(log, "pooler: failed login from "));
  constexpr std::string_view kSummary = "pooler: ... and ";
  for (size_t at = log.find(kSummary); at != std::string::npos; at = log.find(kSummary, at + 1)) {
    count += std::atoi(log.c_str() + at + kSummary.size());
  }
  return count;
}

// A refused login is logged once, naming the client's address, user and database and why (what
// the client is not told too: unknown user or wrong password), never the password; a client
// guessing passwords does not flood the log: a few lines a second, and one that counts the rest.
TEST_F(PoolerTest, FailedLoginsAreLoggedWithoutPasswordsAndWithoutFlooding) {
  PoolerProcess pooler("scram-sha-256", "\"alice\" \"alice-secret\"\n",
                       Database("app", "transaction", 2, "pool_app", ""));
  EXPECT_FALSE(Conn(pooler.Url("app", "alice", "guess-one")).ok());
  const std::string wrong =
      "pooler: failed login from 127.0.0.1: user \"alice\", database \"app\": password "
      "authentication failed for user \"alice\" (wrong password)";
  ASSERT_TRUE(WaitFor([&] { return pooler.Log().find(wrong) != std::string::npos; }, seconds(5)))
      << pooler.Log();
  EXPECT_EQ(Occurrences(pooler.Log(), wrong), 1u) << pooler.Log();
  EXPECT_FALSE(Conn(pooler.Url("app", "mallory", "guess-two")).ok());
  EXPECT_FALSE(Conn(pooler.Url("nosuch", "alice", "alice-secret")).ok());
  const std::string unknown =
      "user \"mallory\", database \"app\": password authentication failed for user "
      "\"mallory\" (unknown user)";
  const std::string no_database =
      "user \"alice\", database \"nosuch\": database \"nosuch\" is not in the pooler's "
      "configuration";
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::string log = pooler.Log();
        return log.find(unknown) != std::string::npos && log.find(no_database) != std::string::npos;
      },
      seconds(5)))
      << pooler.Log();
  Conn alice(pooler.Url("app", "alice", "alice-secret"));  // a login that works says nothing
  ASSERT_TRUE(alice.ok()) << alice.error();
  EXPECT_EQ(FailedLoginsLogged(pooler.Log()), 3) << pooler.Log();

  // A client guessing passwords as fast as it can.
  const size_t before = pooler.Log().size();
  auto burst_log = [&] { return pooler.Log().substr(before); };
  constexpr int kGuesses = 40;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < kGuesses; ++i) EXPECT_FALSE(Conn(pooler.Url("app", "alice", "guess-x")).ok());
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_TRUE(WaitFor([&] { return FailedLoginsLogged(burst_log()) == kGuesses; }, seconds(5)))
      << burst_log();
  // At most 5 lines a second (and a summary each): the rest counted.
  const size_t lines = Occurrences(burst_log(), "pooler: failed login from ");
  EXPECT_LE(lines, 5 * (static_cast<size_t>(took) + 2)) << "in " << took << "s: " << burst_log();
  EXPECT_LT(lines, static_cast<size_t>(kGuesses)) << burst_log();
  EXPECT_NE(burst_log().find("more failed logins in the last"), std::string::npos) << burst_log();
  EXPECT_EQ(pooler.Log().find("guess-"), std::string::npos) << pooler.Log();
}

// examples/pooler.yaml as written, run from a directory that is neither the repository's nor
// the file's: its users file (`pooler-users.txt`, beside it) is found, a client logs in with a
// password from it, and `pgflow pooler status` from there reaches the console. Only its ports
// are moved (to free ones, and to the test's PostgreSQL), and the two files copied together.
TEST_F(PoolerTest, TheExampleRunsFromAnotherDirectory) {
  std::string yaml = ReadFile(std::string(PGFLOW_SOURCE_DIR) + "/examples/pooler.yaml");
  const int port = FreeLoopbackPort();
  const std::pair<std::string, std::string> moves[] = {
      {"127.0.0.1:6432", absl::StrCat("127.0.0.1:", port)},
      {"127.0.0.1:9188", absl::StrCat("127.0.0.1:", FreeLoopbackPort())},
      {"127.0.0.1:5432", absl::StrCat("127.0.0.1:", SharedCluster().port())}};
  for (const auto& [from, to] : moves) {
    ASSERT_NE(yaml.find(from), std::string::npos) << "the example no longer listens on " << from;
    absl::StrReplaceAll({{from, to}}, &yaml);
  }
  ASSERT_NE(yaml.find("users: pooler-users.txt"), std::string::npos) << yaml;
  TempDir example;
  WriteFile(example.File("pooler.yaml"), yaml);
  WriteFile(example.File("pooler-users.txt"),
            ReadFile(std::string(PGFLOW_SOURCE_DIR) + "/examples/pooler-users.txt"));
  admin_->Exec("CREATE DATABASE reports");
  absl::Cleanup drop = [] { admin_->Exec("DROP DATABASE reports WITH (FORCE)"); };

  TempDir elsewhere;
  const std::filesystem::path home = std::filesystem::current_path();
  std::filesystem::current_path(elsewhere.path());  // the pooler's and pgflow status's
  absl::Cleanup back = [&] { std::filesystem::current_path(home); };
  auto pooler = StartPgflowUntilLogged({"pooler", "--config", example.File("pooler.yaml")},
                                       example.File("pooler.log"), {}, "pooler: listening on");
  // reports: the client logs in to PostgreSQL as itself, with the users file's password.
  Conn reports(absl::StrCat("postgres://postgres:postgres@127.0.0.1:", port, "/reports"));
  ASSERT_TRUE(reports.ok()) << reports.error() << ReadFile(example.File("pooler.log"));
  EXPECT_EQ(reports.Run("SELECT current_database()"), "reports");
  std::string out;
  EXPECT_EQ(RunPgflow({"pooler", "status", "--config", example.File("pooler.yaml")}, &out), 0)
      << out;
  EXPECT_NE(out.find("health     healthy"), std::string::npos) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("\\breports +session "))) << out;
  pooler->Signal(SIGTERM);
  EXPECT_EQ(pooler->Wait(seconds(10)), 0) << ReadFile(example.File("pooler.log"));
}

// `pgflow validate` knows a pooler file by its keys and checks it, its users file with it,
// without a server and from any directory (a relative path in the file is relative to the
// file); every mistake at once, each at its line and column. The pooler says the same at start.
TEST_F(PoolerTest, ValidateChecksAPoolerFileFromAnyDirectory) {
  TempDir elsewhere;
  std::string out;
  const std::string example = std::string(PGFLOW_SOURCE_DIR) + "/examples/pooler.yaml";
  EXPECT_EQ(
      Shell(absl::StrCat("cd ", elsewhere.path(), " && ", PGFLOW_BINARY, " validate ", example),
            &out),
      0)
      << out;
  EXPECT_NE(out.find(example + ": ok: pooler on 127.0.0.1:6432, databases app, reports, 2 users "
                               "in the users file"),
            std::string::npos)
      << out;

  TempDir dir;
  const std::string file = dir.File("pooler.yaml");
  WriteFile(file,
            "listen: 127.0.0.1:6432\nthreds: 2\nauth: {users: users.txt}\ndatabases:\n"
            "  app: {url: 'postgres://127.0.0.1/app', pool_mode: sesion}\n");
  EXPECT_EQ(
      Shell(absl::StrCat("cd ", elsewhere.path(), " && ", PGFLOW_BINARY, " validate ", file), &out),
      2)
      << out;
  const std::string no_users = absl::StrCat(file, ":3:15: auth.users: ", dir.File("users.txt"),
                                            ": cannot read the file: No such file or directory");
  EXPECT_NE(out.find(no_users), std::string::npos) << out;
  EXPECT_NE(out.find(file + ":2:1: unknown key 'threds' (did you mean 'threads'?"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("databases.app.pool_mode: unknown pool mode 'sesion'"), std::string::npos)
      << out;
  EXPECT_EQ(RunPgflow({"pooler", "--config", file}, &out), 2) << out;
  EXPECT_NE(out.find(no_users), std::string::npos) << out;
  EXPECT_EQ(RunPgflow({"validate", "--source", example}, &out), 2) << out;
  EXPECT_NE(out.find("a pooler file has no source"), std::string::npos) << out;
}

// auth.user and auth.query: users not in the file are looked up in PostgreSQL (here through
// a SECURITY DEFINER function, as pgbouncer's documentation suggests, so that the lookup user
// needs no superuser), with a SCRAM secret or an md5 hash, and log in to the server too.
TEST_F(PoolerTest, UsersNotInTheFileAreLookedUpWithAuthQuery) {
  admin_->Exec(
      "CREATE ROLE lookup LOGIN PASSWORD 'lookup-secret';"
      "CREATE ROLE carol LOGIN PASSWORD 'carol-secret';"
      "SET password_encryption = 'md5'; CREATE ROLE dave LOGIN PASSWORD 'dave-secret';"
      "RESET password_encryption;");
  Sql(SharedCluster().Url("pool_app"))
      .Exec(
          "CREATE FUNCTION user_lookup(text, OUT usename name, OUT passwd text) RETURNS record "
          "LANGUAGE sql SECURITY DEFINER AS "
          "'SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = $1';"
          "REVOKE ALL ON FUNCTION user_lookup(text) FROM public;"
          "GRANT EXECUTE ON FUNCTION user_lookup(text) TO lookup;");
  const std::string users = "\"lookup\" \"lookup-secret\"\n";
  for (const char* method : {"scram-sha-256", "md5"}) {
    SCOPED_TRACE(method);
    PoolerProcess pooler(
        absl::StrCat(method, ", user: lookup, query: 'SELECT * FROM user_lookup($1)'"), users,
        Database("app", "transaction", 2, "pool_app", ""));
    Conn carol(pooler.Url("app", "carol", "carol-secret"));
    ASSERT_TRUE(carol.ok()) << carol.error() << pooler.Log();
    EXPECT_EQ(carol.Run("SELECT current_user"), "carol");
    Conn wrong(pooler.Url("app", "carol", "nope"));
    EXPECT_NE(wrong.error().find("password authentication failed for user \"carol\""),
              std::string::npos)
        << wrong.error();
    Conn nobody(pooler.Url("app", "nobody", "x"));
    EXPECT_NE(nobody.error().find("password authentication failed for user \"nobody\""),
              std::string::npos)
        << nobody.error();
    // dave's pg_authid entry is an md5 hash: md5 logins (to the pooler and to the server)
    // work with it, SCRAM cannot use it.
    Conn dave(pooler.Url("app", "dave", "dave-secret"));
    if (std::string(method) == "md5") {
      ASSERT_TRUE(dave.ok()) << dave.error() << pooler.Log();
      EXPECT_EQ(dave.Run("SELECT current_user"), "dave");
    } else {
      EXPECT_NE(dave.error().find("password authentication failed for user \"dave\""),
                std::string::npos)
          << dave.error();
    }
    // A password changed in PostgreSQL holds at the next login, without a reload.
    admin_->Exec("ALTER ROLE carol PASSWORD 'carol-new'");
    EXPECT_FALSE(Conn(pooler.Url("app", "carol", "carol-secret")).ok());
    Conn renewed(pooler.Url("app", "carol", "carol-new"));
    EXPECT_TRUE(renewed.ok()) << renewed.error();
    admin_->Exec("ALTER ROLE carol PASSWORD 'carol-secret'");
  }
  // A lookup that fails says so, and the log says why.
  PoolerProcess broken("scram-sha-256, user: lookup, query: 'SELECT * FROM no_such_lookup($1)'",
                       users, Database("app", "transaction", 2, "pool_app", ""));
  Conn carol(broken.Url("app", "carol", "carol-secret"));
  EXPECT_NE(carol.error().find("auth.query failed"), std::string::npos) << carol.error();
  EXPECT_NE(broken.Log().find("no_such_lookup"), std::string::npos) << broken.Log();
}

// What a client logging in through a pooler (trust) to database `url` is told: the error,
// or "logged in".
std::string LoginErrorThrough(const std::string& url) {
  PoolerProcess pooler("trust", kTrustUsers,
                       absl::StrCat("  app: {url: '", url, "', pool_mode: transaction}\n"));
  Conn client(pooler.Url("app"));
  return client.ok() ? "logged in" : client.error();
}

// Whether the shared cluster takes TLS connections now (ssl on, its reload done).
bool ServerSpeaksTls() {
  Conn probe(absl::StrCat("postgres://postgres@127.0.0.1:", SharedCluster().port(),
                          "/postgres?sslmode=require"));
  return probe.ok();
}

// TLS toward clients (tls.mode require: libpq's sslmode=require and verify-full connect, a
// client in the clear is refused) and toward the server (the url's sslmode=verify-full against
// a server with ssl on; sslmode=require against one without it is a clear error).
TEST_F(PoolerTest, TlsTowardClientsAndServers) {
  TempDir certs;
  MakeCertificate(certs.path());
  if (HasFatalFailure()) return;
  const std::string crt = certs.File("tls.crt");
  const std::string key = certs.File("tls.key");
  {
    PoolerProcess pooler("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"),
                         absl::StrCat("tls: {mode: require, cert: ", crt, ", key: ", key, "}\n"));
    Conn encrypted(pooler.Url("app") + "?sslmode=require");
    ASSERT_TRUE(encrypted.ok()) << encrypted.error() << pooler.Log();
    EXPECT_EQ(PQsslInUse(encrypted.conn), 1);
    EXPECT_EQ(encrypted.Run("SELECT count(*) FROM generate_series(1, 200000)"), "200000");
    // A large answer goes through the pump whole.
    EXPECT_EQ(encrypted.Run("SELECT length(string_agg(md5(i::text), '')) FROM "
                            "generate_series(1, 50000) i"),
              "1600000");
    EXPECT_EQ(encrypted.Run("SELECT sum(length(repeat('x', i))) FROM generate_series(1, 3000) i"),
              "4501500");
    // libpq's TLS 1.3: its records are the pooler's own once the handshake is over
    // (Tls13Records), a query larger than a record included.
    EXPECT_STREQ(PQsslAttribute(encrypted.conn, "protocol"), "TLSv1.3");
    const std::string literal(300000, 'q');
    EXPECT_EQ(encrypted.Run("SELECT length('" + literal + "')"), "300000");
    // A TLS 1.2 client stays with OpenSSL's session.
    Conn older(pooler.Url("app") + "?sslmode=require&ssl_max_protocol_version=TLSv1.2");
    ASSERT_TRUE(older.ok()) << older.error() << pooler.Log();
    EXPECT_STREQ(PQsslAttribute(older.conn, "protocol"), "TLSv1.2");
    EXPECT_EQ(older.Run("SELECT length(string_agg(md5(i::text), '')) FROM "
                        "generate_series(1, 50000) i"),
              "1600000");
    EXPECT_EQ(older.Run("SELECT length('" + literal + "')"), "300000");
    Conn verified(absl::StrCat("postgres://postgres@localhost:", pooler.port(),
                               "/app?sslmode=verify-full&sslrootcert=", crt));
    ASSERT_TRUE(verified.ok()) << verified.error();
    EXPECT_EQ(verified.Run("SELECT 7"), "7");
    // A client that sends bytes after its SSL request before the answer (in the clear, where
    // only its TLS handshake may follow) is refused, as PostgreSQL refuses it; others go on.
    std::string answer =
        RawExchange(pooler.port(), Int32(8) + Int32(80877103) + "this is not a TLS hello\n");
    EXPECT_EQ(answer.substr(0, 1), "E") << answer;
    EXPECT_NE(answer.find("received unencrypted data after the SSL request"), std::string::npos)
        << answer;
    // One that waits for the answer and then sends no handshake is closed (reset: its bytes
    // are left unread).
    {
      const int fd = ConnectLoopback(pooler.port());
      ASSERT_GE(fd, 0);
      timeval timeout{.tv_sec = 5, .tv_usec = 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
      const std::string request = Int32(8) + Int32(80877103);
      ASSERT_EQ(write(fd, request.data(), request.size()), 8);
      char byte = 0;
      ASSERT_EQ(read(fd, &byte, 1), 1);
      EXPECT_EQ(byte, 'S');
      const std::string junk = "this is not a TLS hello\n";
      ASSERT_EQ(write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
      char rest[256];
      ssize_t n;
      while ((n = read(fd, rest, sizeof rest)) > 0) {
      }
      EXPECT_TRUE(n == 0 || errno == ECONNRESET) << strerror(errno);  // (not timed out)
      close(fd);
    }
    EXPECT_EQ(encrypted.Run("SELECT 1"), "1");
    Conn clear(pooler.Url("app") + "?sslmode=disable");
    EXPECT_FALSE(clear.ok());
    EXPECT_NE(clear.error().find("accepts TLS connections only"), std::string::npos)
        << clear.error();
    // Reached under a name the certificate does not hold (hostaddr: where libpq connects).
    Conn other_name(absl::StrCat("postgres://postgres@elsewhere.invalid:", pooler.port(),
                                 "/app?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert=", crt));
    EXPECT_FALSE(other_name.ok());
    EXPECT_NE(other_name.error().find("does not match host name \"elsewhere.invalid\""),
              std::string::npos)
        << other_name.error();
  }
  {
    // The pooler's own verify-full toward a server (another pooler stands in for one) whose
    // certificate names neither the url's host name nor its address: refused, saying which.
    MakeCertificate(certs.path(), "elsewhere", "DNS:elsewhere.invalid");
    if (HasFatalFailure()) return;
    PoolerProcess server("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"),
                         absl::StrCat("tls: {mode: require, cert: ", certs.File("elsewhere.crt"),
                                      ", key: ", certs.File("elsewhere.key"), "}\n"));
    const std::string rest = absl::StrCat(
        server.port(), "/app?sslmode=verify-full&sslrootcert=", certs.File("elsewhere.crt"));
    std::string refused = LoginErrorThrough(absl::StrCat("postgres://postgres@localhost:", rest));
    EXPECT_NE(refused.find("certificate verify failed (hostname mismatch)"), std::string::npos)
        << refused;
    refused = LoginErrorThrough(absl::StrCat("postgres://postgres@127.0.0.1:", rest));
    EXPECT_NE(refused.find("certificate verify failed (IP address mismatch)"), std::string::npos)
        << refused;
  }

  // Toward the server: the cluster's ssl turned on for this test, with the same certificate
  // (owned by the server's user, as PostgreSQL requires of its key).
  const std::string data = SharedCluster().dir() + "/data";
  for (const char* file : {"tls.crt", "tls.key"}) {
    CopyToServer(certs.File(file), absl::StrCat(data, "/pooler-", file));
  }
  admin_->Exec(absl::StrCat("ALTER SYSTEM SET ssl_cert_file = '", data, "/pooler-tls.crt'"));
  admin_->Exec(absl::StrCat("ALTER SYSTEM SET ssl_key_file = '", data, "/pooler-tls.key'"));
  admin_->Exec("ALTER SYSTEM SET ssl = on");
  admin_->Exec("SELECT pg_reload_conf()");
  absl::Cleanup ssl_off = [] {
    admin_->Exec("ALTER SYSTEM RESET ssl");
    admin_->Exec("SELECT pg_reload_conf()");
    EXPECT_TRUE(WaitFor([] { return !ServerSpeaksTls(); }, seconds(10)));
  };
  // (The reload is asynchronous.)
  ASSERT_TRUE(WaitFor(ServerSpeaksTls, seconds(10)));
  std::string url = absl::StrCat("postgres://postgres@127.0.0.1:", SharedCluster().port(),
                                 "/pool_app?sslmode=verify-full&sslrootcert=", crt);
  {
    // First in clear; then RELOAD turns TLS on, and the same client's next transaction runs
    // on a connection made the new way (the old one closed when given back).
    const std::string clear_url =
        absl::StrCat("postgres://postgres@127.0.0.1:", SharedCluster().port(), "/pool_app");
    PoolerProcess pooler("trust", kTrustUsers,
                         absl::StrCat("  app: {url: '", clear_url, "', pool_mode: transaction}\n"));
    Conn client(pooler.Url("app"));
    ASSERT_TRUE(client.ok()) << client.error() << pooler.Log();
    const char* ssl_in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    EXPECT_EQ(client.Run(ssl_in_use), "f");
    pooler.WriteConfig("trust",
                       absl::StrCat("  app: {url: '", url, "', pool_mode: transaction}\n"));
    pooler.process().Signal(SIGHUP);
    ASSERT_TRUE(WaitFor([&] { return client.Run(ssl_in_use) == "t"; }, std::chrono::seconds(10)))
        << pooler.Log();
    EXPECT_EQ(client.Run("SELECT count(*) FROM generate_series(1, 100000)"), "100000");
  }
  std::move(ssl_off).Invoke();
  absl::StrReplaceAll({{"verify-full", "require"}}, &url);
  const std::string refused = LoginErrorThrough(url);
  EXPECT_NE(refused.find("does not accept TLS (sslmode require)"), std::string::npos) << refused;
}

// Revocation lists of the authority MakeAuthority made in `dir`: clients.crl revokes mallory's
// certificate, all.crl the server's too; clients.d and all.d hold the same lists as
// directories (each file under its issuer's hash).
void MakeRevocationLists(const std::string& dir) {
  std::string crl_output;
  ASSERT_EQ(Shell(absl::StrCat(
                      "set -e; cd ", dir, "; touch index.txt; echo 01 > crlnumber; ",
                      "printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\n",
                      "crlnumber=crlnumber\\ndefault_md=sha256\\ndefault_crl_days=2\\n' > ca.cnf; ",
                      "sign='openssl ca -batch -config ca.cnf -keyfile ca.key -cert ca.crt'; ",
                      "$sign -revoke mallory.crt; $sign -gencrl -out clients.crl; ",
                      "$sign -revoke server.crt; $sign -gencrl -out all.crl; ",
                      // The same lists as directories, each file under its issuer's hash.
                      "for list in clients all; do mkdir $list.d; cp $list.crl $list.d/; ",
                      "openssl rehash $list.d; done"),
                  &crl_output),
            0)
      << crl_output;
}

// The server reached with dana's key encrypted: opened with the url's sslpassword (OpenSSL is
// never left to prompt); without it, or with a wrong one, the login says why.
void ExpectSealedKeyOpens(const TempDir& certs, const std::string& server_url) {
  std::string output;
  ASSERT_EQ(Shell(absl::StrCat("cd ", certs.path(),
                               " && openssl pkey -in dana.key "
                               "-aes-256-cbc -passout pass:open-sesame -out sealed.key && "
                               "chmod 600 sealed.key"),
                  &output),
            0)
      << output;
  const std::string sealed = absl::StrCat(server_url, "&sslcert=", certs.File("dana.crt"),
                                          "&sslkey=", certs.File("sealed.key"));
  PoolerProcess pooler("trust", kTrustUsers,
                       absl::StrCat("  app: {url: '", sealed,
                                    "&sslpassword=open-sesame', pool_mode: transaction}\n"));
  Conn client(pooler.Url("app"));
  ASSERT_TRUE(client.ok()) << client.error() << pooler.Log();
  EXPECT_EQ(client.Run("SELECT current_user"), "dana");
  std::string refused = LoginErrorThrough(sealed);
  EXPECT_NE(refused.find("is encrypted and no sslpassword was given"), std::string::npos)
      << refused;
  refused = LoginErrorThrough(sealed + "&sslpassword=open-sesame-not");
  EXPECT_NE(refused.find("sslpassword does not open it"), std::string::npos) << refused;
}

// Client certificates toward clients (tls.mode verify-full and auth.method cert: the
// certificate must come from tls.ca and name the user) and toward the server (the url's
// sslcert and sslkey, against a PostgreSQL with ssl on and a `cert` line in pg_hba.conf).
TEST_F(PoolerTest, ClientCertificatesOnEitherSide) {
  TempDir certs;
  MakeAuthority(certs.path());
  if (HasFatalFailure()) return;
  admin_->Exec("CREATE ROLE dana LOGIN");
  auto client_url = [&](int port, const std::string& user, const std::string& cert) {
    std::string url = absl::StrCat("postgres://", user, "@localhost:", port,
                                   "/app?sslmode=verify-full&sslrootcert=", certs.File("ca.crt"));
    if (!cert.empty()) {
      absl::StrAppend(&url, "&sslcert=", certs.File(cert + ".crt"),
                      "&sslkey=", certs.File(cert + ".key"));
    }
    return url;
  };
  const std::string tls =
      absl::StrCat("tls: {mode: verify-full, cert: ", certs.File("server.crt"),
                   ", key: ", certs.File("server.key"), ", ca: ", certs.File("ca.crt"), "}\n");
  const std::string users = "\"dana\" \"\"\n\"mallory\" \"\"\n";
  {
    PoolerProcess pooler("cert", users, Database("app", "transaction", 2, "pool_app", ""), tls);
    Conn dana(client_url(pooler.port(), "dana", "dana"));
    ASSERT_TRUE(dana.ok()) << dana.error() << pooler.Log();
    EXPECT_EQ(dana.Run("SELECT current_user"), "dana");
    Conn no_certificate(client_url(pooler.port(), "dana", ""));
    EXPECT_FALSE(no_certificate.ok());
    EXPECT_NE(no_certificate.error().find("requires a client certificate"), std::string::npos)
        << no_certificate.error();
    Conn borrowed(client_url(pooler.port(), "dana", "mallory"));
    EXPECT_FALSE(borrowed.ok());
    EXPECT_NE(borrowed.error().find("CN mismatch"), std::string::npos) << borrowed.error();
    Conn stranger(client_url(pooler.port(), "dana", "stranger"));  // not from tls.ca
    EXPECT_FALSE(stranger.ok());
    EXPECT_NE(stranger.error().find("SSL error"), std::string::npos) << stranger.error();
    EXPECT_EQ(dana.Run("SELECT 1"), "1");
  }
  {
    // tls.mode require: a certificate is asked for, not required, but auth.method cert wants
    // one that names the user.
    std::string require = tls;
    absl::StrReplaceAll({{"verify-full", "require"}}, &require);
    PoolerProcess pooler("cert", users, Database("app", "transaction", 2, "pool_app", ""), require);
    Conn mallory(client_url(pooler.port(), "mallory", "dana"));
    EXPECT_FALSE(mallory.ok());
    EXPECT_NE(mallory.error().find("certificate authentication failed for user \"mallory\""),
              std::string::npos)
        << mallory.error();
    Conn dana(client_url(pooler.port(), "dana", "dana"));
    EXPECT_TRUE(dana.ok()) << dana.error();
  }
  // Revocations: clients.crl revokes mallory's certificate, all.crl the server's too.
  MakeRevocationLists(certs.path());
  if (HasFatalFailure()) return;
  // tls.crl, and tls.crl_dir (the same list found in a directory when a certificate is
  // checked): a revoked client certificate fails the handshake; others still log in.
  for (const auto& [key, file] : {std::pair{"crl", "clients.crl"}, {"crl_dir", "clients.d"}}) {
    SCOPED_TRACE(key);
    std::string revoking = tls;
    absl::StrReplaceAll({{"}\n", absl::StrCat(", ", key, ": ", certs.File(file), "}\n")}},
                        &revoking);
    PoolerProcess pooler("cert", users, Database("app", "transaction", 2, "pool_app", ""),
                         revoking);
    Conn mallory(client_url(pooler.port(), "mallory", "mallory"));
    EXPECT_FALSE(mallory.ok());
    EXPECT_NE(mallory.error().find("revoked"), std::string::npos) << mallory.error();
    Conn dana(client_url(pooler.port(), "dana", "dana"));
    EXPECT_TRUE(dana.ok()) << dana.error() << pooler.Log();
  }

  // Toward the server: ssl on, its certificate from the authority, and dana let in over TCP
  // to pool_app only by her certificate.
  const std::string data = SharedCluster().dir() + "/data";
  for (const char* file : {"server.crt", "server.key", "ca.crt"}) {
    CopyToServer(certs.File(file), absl::StrCat(data, "/pooler-", file));
  }
  const std::string hba = data + "/pg_hba.conf";
  const std::string original_hba = ReadFile(hba);
  WriteFile(hba,
            "hostssl pool_app dana 127.0.0.1/32 cert\n"
            "host pool_app dana 127.0.0.1/32 reject\n" +
                original_hba);
  admin_->Exec(absl::StrCat("ALTER SYSTEM SET ssl_cert_file = '", data, "/pooler-server.crt'"));
  admin_->Exec(absl::StrCat("ALTER SYSTEM SET ssl_key_file = '", data, "/pooler-server.key'"));
  admin_->Exec(absl::StrCat("ALTER SYSTEM SET ssl_ca_file = '", data, "/pooler-ca.crt'"));
  admin_->Exec("ALTER SYSTEM SET ssl = on");
  admin_->Exec("SELECT pg_reload_conf()");
  absl::Cleanup restore = [&] {
    WriteFile(hba, original_hba);
    admin_->Exec("ALTER SYSTEM RESET ssl");
    admin_->Exec("ALTER SYSTEM RESET ssl_ca_file");
    admin_->Exec("SELECT pg_reload_conf()");
    EXPECT_TRUE(WaitFor([] { return !ServerSpeaksTls(); }, seconds(10)));
  };
  // (The reload, of pg_hba.conf too, is asynchronous.)
  ASSERT_TRUE(WaitFor(ServerSpeaksTls, seconds(10)));
  const std::string server_url =
      absl::StrCat("postgres://dana@localhost:", SharedCluster().port(),
                   "/pool_app?sslmode=verify-full&sslrootcert=", certs.File("ca.crt"));
  // ...showing dana's certificate.
  const std::string dana_url = absl::StrCat(server_url, "&sslcert=", certs.File("dana.crt"),
                                            "&sslkey=", certs.File("dana.key"));
  {
    PoolerProcess pooler("trust", kTrustUsers,
                         absl::StrCat("  app: {url: '", dana_url, "', pool_mode: transaction}\n"));
    Conn client(pooler.Url("app"));
    ASSERT_TRUE(client.ok()) << client.error() << pooler.Log();
    EXPECT_EQ(client.Run("SELECT current_user"), "dana");
    EXPECT_EQ(client.Run("SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
              "/CN=dana");
  }
  ASSERT_NO_FATAL_FAILURE(ExpectSealedKeyOpens(certs, server_url));
  const std::string refused = LoginErrorThrough(server_url);
  EXPECT_NE(refused.find("requires a valid client certificate"), std::string::npos) << refused;
  // The url's sslcrl: a server certificate it revokes is refused, one it does not is not.
  const std::string with_cert = dana_url + "&sslcrl=";
  EXPECT_EQ(LoginErrorThrough(with_cert + certs.File("clients.crl")), "logged in");
  const std::string revoked = LoginErrorThrough(with_cert + certs.File("all.crl"));
  EXPECT_NE(revoked.find("revoked"), std::string::npos) << revoked;
  // The url's sslcrldir: the same from a directory; one that is not there is named.
  const std::string with_dir = dana_url + "&sslcrldir=";
  EXPECT_EQ(LoginErrorThrough(with_dir + certs.File("clients.d")), "logged in");
  const std::string revoked_by_dir = LoginErrorThrough(with_dir + certs.File("all.d"));
  EXPECT_NE(revoked_by_dir.find("certificate revoked"), std::string::npos) << revoked_by_dir;
  const std::string missing = LoginErrorThrough(with_dir + certs.File("none.d"));
  EXPECT_NE(missing.find("is not a directory this process can read"), std::string::npos) << missing;
}

// ---- Differential protocol sessions ----------------------------------------------------------

// The same client sessions (simple and extended protocol, pipelining, errors mid-transaction,
// named and unnamed statements, portals read in parts, COPY in and out, large results,
// notices, NOTIFY) directly and through the pooler in session and transaction mode: the same
// answers, byte for byte, but for a notification's sender pid.
TEST_F(PoolerTest, SessionsGetTheSameBytesAsDirectly) {
  Sql(SharedCluster().Url("pool_app"))
      .Exec("CREATE TABLE IF NOT EXISTS wire (id int PRIMARY KEY, note text)");
  PoolerProcess pooler(
      "trust", kTrustUsers,
      Database("sess", "session", 2, "pool_app") + Database("tx", "transaction", 2, "pool_app"));
  std::string copy_data;
  for (int i = 1; i <= 3000; ++i) copy_data += Message('d', absl::StrCat(i, "\tnote ", i, "\n"));
  const std::vector<Step> common = {
      // Simple protocol: several statements, a notice, an error mid-transaction, ROLLBACK.
      {Query("TRUNCATE wire; SELECT 1 AS one, 'two'::text AS two; SELECT NULL::int")},
      {Query("DO $$BEGIN RAISE NOTICE 'hello %', 42; END$$")},
      {Query("BEGIN; INSERT INTO wire VALUES (1, 'a'); SELECT 1/0; SELECT 2")},
      {Query("SELECT 3")},
      {Query("ROLLBACK")},
      {Query("")},  // EmptyQueryResponse
      {Query("SELECT 10") + Query("SELECT 11; SELECT 12") + Query("SELECT 13"), 'Z', 3},
      // COPY in, then out: a large answer.
      {Query("COPY wire FROM STDIN"), 'G'},
      {copy_data + Message('c', "")},
      {Query("COPY wire FROM STDIN"), 'G'},
      {Message('d', "9999\tz\n") + Message('f', std::string("client gave up") + '\0')},
      {Query("COPY (SELECT * FROM wire ORDER BY id) TO STDOUT")},
      {Query("SELECT id, note, repeat(note, 20) FROM wire ORDER BY id")},
      // Extended protocol, pipelined: three syncs in one write, an error in the second.
      {Parse("", "SELECT $1::int + 1") + Bind("", "", {"41"}) + Describe('P', "") + Execute("") +
           Sync() + Parse("", "SELECT 1/$1::int") + Bind("", "", {"0"}) + Execute("") + Sync() +
           Parse("", "SELECT 'after'") + Bind("", "", {}) + Execute("") + Sync(),
       'Z', 3},
      // Named statements, Describe of a statement, a portal read in parts inside a
      // transaction, Close.
      {Parse("named", "SELECT id, note FROM wire WHERE id <= $1::int ORDER BY id") +
       Describe('S', "named") + Sync()},
      {Query("BEGIN")},
      {Bind("cursor", "named", {"10"}) + Execute("cursor", 4) + Execute("cursor", 4) +
       Execute("cursor", 4) + Sync()},
      {Query("COMMIT")},
      {Bind("", "named", {"2"}) + Execute("") + Message('C', std::string("Snamed") + '\0') +
       Sync()},
      {Bind("", "named", {"2"}) + Execute("") + Sync()},  // closed: an error
      {Bind("", "nosuch", {}) + Execute("") + Sync()},
      // Flush ('H') without Sync answers what is done so far.
      {Parse("", "SELECT 5") + Bind("", "", {}) + Execute("") + Message('H', ""), 'C'},
      {Sync()},
  };
  const std::string direct = Replay(SharedCluster().port(), "pool_app", common);
  EXPECT_NE(direct.find("hello 42"), std::string::npos);
  EXPECT_NE(direct.find("client gave up"), std::string::npos);
  EXPECT_EQ(Replay(pooler.port(), "sess", common), direct);
  EXPECT_EQ(Replay(pooler.port(), "tx", common), direct);

  // NOTIFY in session mode: a session's own notification and one from another session.
  const std::vector<Step> notify = {
      {Query("LISTEN wire_channel")},
      {Query("NOTIFY wire_channel, 'one'")},
      {Query("SELECT pg_notify('wire_channel', 'two')")},
      {Query("UNLISTEN *")},
  };
  const std::string notified = Replay(SharedCluster().port(), "pool_app", notify);
  EXPECT_NE(notified.find("one"), std::string::npos);
  EXPECT_EQ(Replay(pooler.port(), "sess", notify), notified);
}

// Prepared statements are bounded: a server connection keeps at most max_prepared_statements
// (past it, it closes them and prepares again on demand, unseen by clients), a client holds at
// most max_client_prepared_statements (past it, its Parse fails, saying so).
TEST_F(PoolerTest, PreparedStatementsAreBounded) {
  PoolerProcess pooler("trust", kTrustUsers, Database("app", "transaction", 1, "pool_app"),
                       "max_prepared_statements: 3\nmax_client_prepared_statements: 5\n");
  Conn a(pooler.Url("app"));
  Conn b(pooler.Url("app"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto prepare = [](Conn& c, const std::string& name, int n) {
    PGresult* r = PQprepare(c.conn, name.c_str(), absl::StrCat("SELECT ", n, " + $1::int").c_str(),
                            0, nullptr);
    std::string error = PQresultStatus(r) == PGRES_COMMAND_OK ? "" : PQresultErrorMessage(r);
    PQclear(r);
    return error;
  };
  auto run = [](Conn& c, const std::string& name) {
    const char* values[1] = {"1"};
    PGresult* r = PQexecPrepared(c.conn, name.c_str(), 1, values, nullptr, nullptr, 0);
    std::string out =
        PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : PQresultErrorMessage(r);
    PQclear(r);
    return out;
  };
  for (int i = 1; i <= 5; ++i) EXPECT_EQ(prepare(a, absl::StrCat("a", i), i), "") << i;
  for (int i = 1; i <= 4; ++i) EXPECT_EQ(prepare(b, absl::StrCat("b", i), 100 + i), "") << i;
  // One server connection served 9 statements: it never held more than 3.
  EXPECT_LE(std::stoi(a.Run("SELECT count(*) FROM pg_prepared_statements")), 3);
  for (int round = 0; round < 2; ++round) {
    for (int i = 1; i <= 5; ++i) EXPECT_EQ(run(a, absl::StrCat("a", i)), std::to_string(i + 1));
    for (int i = 1; i <= 4; ++i) EXPECT_EQ(run(b, absl::StrCat("b", i)), std::to_string(101 + i));
  }
  EXPECT_LE(std::stoi(b.Run("SELECT count(*) FROM pg_prepared_statements")), 3);
  std::string refused = prepare(a, "a6", 6);
  EXPECT_NE(refused.find("max_client_prepared_statements"), std::string::npos) << refused;
  EXPECT_EQ(run(a, "a5"), "6");  // the others still work
  // Another client's DEALLOCATE ALL, in the extended protocol, empties the one connection:
  // a's statements are prepared again on demand; b's own are gone, as directly.
  PGresult* deallocated =
      PQexecParams(b.conn, "DEALLOCATE ALL", 0, nullptr, nullptr, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(deallocated), PGRES_COMMAND_OK) << PQresultErrorMessage(deallocated);
  PQclear(deallocated);
  EXPECT_EQ(run(a, "a5"), "6");
  EXPECT_NE(run(b, "b1").find("does not exist"), std::string::npos);
  // DISCARD ALL resets the connection's settings too: a client's own are set again.
  Conn tuned(pooler.Url("app") + "?options=-c%20work_mem%3D5MB");
  ASSERT_TRUE(tuned.ok()) << tuned.error();
  EXPECT_EQ(tuned.Run("SHOW work_mem"), "5MB");
  EXPECT_EQ(b.Run("DISCARD ALL"), "");
  EXPECT_EQ(tuned.Run("SHOW work_mem"), "5MB");
  EXPECT_EQ(run(a, "a5"), "6");
  // Closed (libpq 15 has no call for Close: on the wire), one makes room for another.
  WireClient wire(pooler.port(), "app");
  ASSERT_TRUE(wire.ok());
  std::string parses;
  for (int i = 1; i <= 5; ++i) parses += Parse(absl::StrCat("w", i), absl::StrCat("SELECT ", i));
  wire.Send(parses + Parse("w6", "SELECT 6") + Sync());
  std::vector<std::string> messages = wire.Until('Z');
  std::string answer = Normalized(messages);
  EXPECT_EQ(std::count_if(messages.begin(), messages.end(),
                          [](const std::string& m) { return m == "1"; }),
            5)
      << answer;  // ParseComplete
  EXPECT_NE(answer.find("max_client_prepared_statements"), std::string::npos) << answer;
  wire.Send(Message('C', std::string("Sw1") + '\0') + Parse("w6", "SELECT 6") + Bind("", "w6", {}) +
            Execute("") + Sync());
  answer = Normalized(wire.Until('Z'));
  EXPECT_EQ(answer.find("ERROR"), std::string::npos) << answer;
  EXPECT_NE(answer.find(std::string("D\0\x01\0\0\0\x01", 7) + "6"), std::string::npos) << answer;
}

TEST_F(PoolerTest, MalformedStartupPacketsGetAnErrorAndHurtNoOne) {
  PoolerProcess pooler("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"));
  Conn bystander(pooler.Url("app"));
  ASSERT_TRUE(bystander.ok());
  std::string answer = RawExchange(pooler.port(), Int32(3));
  EXPECT_NE(answer.find("invalid startup packet length 3"), std::string::npos) << answer;
  answer = RawExchange(pooler.port(), Int32(1 << 30) + "xxxx");
  EXPECT_NE(answer.find("invalid startup packet length"), std::string::npos) << answer;
  answer = RawExchange(pooler.port(), Int32(16) + Int32(0x00020000) + Int32(0) + Int32(0));
  EXPECT_NE(answer.find("unsupported frontend protocol 2.0"), std::string::npos) << answer;
  answer = RawExchange(pooler.port(), Int32(16) + Int32(196608) + "user" + std::string(1, '\0') +
                                          "bob");  // no terminators
  EXPECT_NE(answer.find("08P01"), std::string::npos) << answer;
  answer = RawExchange(pooler.port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(answer.find("invalid startup packet length"), std::string::npos) << answer;
  // An oversized message after login: an error, the connection closed.
  {
    Conn big(pooler.Url("app"));
    ASSERT_TRUE(big.ok());
  }
  EXPECT_EQ(bystander.Run("SELECT 'still here'"), "still here");
  EXPECT_TRUE(pooler.process().Running());
}

// HTTPS with http.tls.ca: a client certificate counts as a wire client's does. Under
// tls.mode verify-full and auth.method cert, a request logs in by its certificate alone; one
// without a certificate, or with another user's, is refused as on the wire.
TEST_F(PoolerTest, HttpsClientsShowCertificatesAsWireClientsDo) {
  TempDir certs;
  MakeAuthority(certs.path());
  if (HasFatalFailure()) return;
  admin_->Exec("DO $$BEGIN CREATE ROLE dana LOGIN; EXCEPTION WHEN duplicate_object THEN END$$");
  const int http_port = FreeLoopbackPort();
  const std::string tls_files = absl::StrCat("cert: ", certs.File("server.crt"), ", key: ",
                                             certs.File("server.key"), ", ca: ",
                                             certs.File("ca.crt"));
  PoolerProcess pooler("cert", "\"dana\" \"\"\n\"mallory\" \"\"\n",
                       Database("app", "transaction", 2, "pool_app", ""),
                       absl::StrCat("tls: {mode: verify-full, ", tls_files, "}\n",
                                    "http: {listen: 127.0.0.1:", http_port, ", tls: {",
                                    tls_files, "}}\n"));
  auto request = [&](const std::string& certificate) {
    std::string args = absl::StrCat(
        "--cacert ", certs.File("ca.crt"), " --resolve localhost:", http_port, ":127.0.0.1",
        " -H 'Neon-Connection-String: postgres://dana@localhost/app' -H 'Neon-Array-Mode: true'",
        " -d '{\"query\":\"SELECT current_user\"}'");
    if (!certificate.empty()) {
      absl::StrAppend(&args, " --cert ", certs.File(certificate + ".crt"), " --key ",
                      certs.File(certificate + ".key"));
    }
    return Curl(absl::StrCat("https://localhost:", http_port, "/sql"), args);
  };
  HttpAnswer dana = request("dana");
  EXPECT_EQ(dana.code, 200) << dana.body << pooler.Log();
  EXPECT_NE(dana.body.find(R"("rows":[["dana"]])"), std::string::npos) << dana.body;
  HttpAnswer none = request("");
  EXPECT_EQ(none.code, 400) << none.body;
  EXPECT_NE(none.body.find("requires a client certificate"), std::string::npos) << none.body;
  HttpAnswer borrowed = request("mallory");
  EXPECT_EQ(borrowed.code, 400) << borrowed.body;
  EXPECT_NE(borrowed.body.find("CN mismatch"), std::string::npos) << borrowed.body;
}

// Runs `SELECT pg_sleep(30)` on `client` and cancels it once it runs on the server, as libpq's
// PQcancel does: the query ends at once with SQLSTATE 57014.
void ExpectCancelled(Conn& client) {
  std::thread canceller([&] {
    Sql watcher(SharedCluster().Url());
    EXPECT_TRUE(WaitFor(
        [&] {
          return watcher.Scalar(
                     "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                     "AND query = 'SELECT pg_sleep(30)'") != "0";
        },
        seconds(10)));
    PGcancel* cancel = PQgetCancel(client.conn);
    char error[256];
    PQcancel(cancel, error, sizeof error);
    PQfreeCancel(cancel);
  });
  auto start = std::chrono::steady_clock::now();
  std::string result = client.Run("SELECT pg_sleep(30)");
  canceller.join();
  EXPECT_NE(result.find("ERROR 57014"), std::string::npos) << result;
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(10));
}

TEST_F(PoolerTest, CancelReachesTheServerRunningTheQuery) {
  PoolerProcess pooler("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"));
  Conn slow(pooler.Url("app"));
  ASSERT_TRUE(slow.ok());
  ExpectCancelled(slow);
  EXPECT_EQ(slow.Run("SELECT 3"), "3");
}

// A setting a client empties (application_name = '', when the database gives another default)
// follows it, and only it, across the connection they share.
TEST_F(PoolerTest, AnEmptiedSettingFollowsItsClient) {
  admin_->Exec("CREATE DATABASE pool_named");
  admin_->Exec("ALTER DATABASE pool_named SET application_name = 'db_default'");
  PoolerProcess pooler("trust", kTrustUsers, Database("named", "transaction", 1, "pool_named"));
  Conn a(pooler.Url("named")), b(pooler.Url("named"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(b.Run("SHOW application_name"), "db_default");
  EXPECT_EQ(a.Run("SET application_name = ''"), "");
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(b.Run("SHOW application_name"), "db_default");
    EXPECT_EQ(a.Run("SHOW application_name"), "");
  }
}

// Waits until SHOW CLIENTS lists `idle` clients of `database` idle and `active` holding a
// server connection.
bool WaitForClients(const PoolerProcess& pooler, const std::string& database, int idle,
                    int active) {
  return WaitFor(
      [&] {
        const std::string clients = Console(pooler, "SHOW CLIENTS");
        return Occurrences(clients, absl::StrCat("|", database, "|idle|")) ==
                   static_cast<size_t>(idle) &&
               Occurrences(clients, absl::StrCat("|", database, "|active|")) ==
                   static_cast<size_t>(active);
      },
      seconds(10));
}

// An idle client holds its session and its socket's registration only (the relay's state goes
// back once it is idle: after login, or after its last transaction); a client inside a
// transaction keeps its server connection however long it waits. Each comes back when it
// speaks, with a message of any size (read in several pieces).
TEST_F(PoolerTest, IdleClientsComeBack) {
  PoolerProcess pooler("trust", kTrustUsers, Database("one", "transaction", 2, "pool_app"));
  Conn after_login(pooler.Url("one")), after_query(pooler.Url("one")), in_txn(pooler.Url("one"));
  ASSERT_TRUE(after_login.ok() && after_query.ok() && in_txn.ok());
  EXPECT_EQ(after_query.Run("SELECT 1"), "1");
  EXPECT_EQ(in_txn.Run("BEGIN; INSERT INTO items VALUES (300, 'kept')"), "");
  ASSERT_TRUE(WaitForClients(pooler, "one", /*idle=*/2, /*active=*/1)) << pooler.Log();
  EXPECT_EQ(after_login.Run("SELECT 2"), "2");
  EXPECT_EQ(after_query.Run("SELECT 3"), "3");
  EXPECT_EQ(in_txn.Run("SELECT count(*) FROM items WHERE id = 300"), "1");
  EXPECT_EQ(in_txn.Run("COMMIT"), "");
  const std::string big(100000, 'x');
  ASSERT_TRUE(WaitForClients(pooler, "one", /*idle=*/3, /*active=*/0)) << pooler.Log();
  EXPECT_EQ(after_query.Run(absl::StrCat("SELECT length('", big, "')")), "100000");
  EXPECT_EQ(in_txn.Run("SELECT count(*) FROM items WHERE id = 300"), "1");
}

// Clients past the pool wait in its queue: one that waited reserve_pool_timeout gets a
// connection of the reserve; without a reserve, one that waited query_wait_timeout gets an
// error naming it, and the client holding the connection notices nothing.
TEST_F(PoolerTest, WaitingClientsGetTheReserveOrGiveUpInTime) {
  PoolerProcess pooler("trust", kTrustUsers,
                       Database("reserve", "transaction", 1, "pool_app", "postgres",
                                "reserve_pool: 1, reserve_pool_timeout: 300ms") +
                           Database("strict", "transaction", 1, "pool_app"),
                       "query_wait_timeout: 1s\n");
  auto seconds_since = [](std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  Conn holder(pooler.Url("reserve")), waiter(pooler.Url("reserve"));
  ASSERT_TRUE(holder.ok() && waiter.ok());
  EXPECT_EQ(holder.Run("BEGIN; SELECT 1"), "1");  // holds the pool's one connection
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(waiter.Run("SELECT 2"), "2");  // on the reserve's
  EXPECT_GE(seconds_since(start), 0.25);
  EXPECT_LT(seconds_since(start), 0.9);

  Conn strict_holder(pooler.Url("strict")), strict_waiter(pooler.Url("strict"));
  ASSERT_TRUE(strict_holder.ok() && strict_waiter.ok());
  EXPECT_EQ(strict_holder.Run("BEGIN; SELECT 3"), "3");
  start = std::chrono::steady_clock::now();
  // (A FATAL, then the connection closed: libpq keeps the FATAL's text on the connection.)
  std::string refused = strict_waiter.Run("SELECT 4");
  refused += strict_waiter.error();
  EXPECT_NE(refused.find("query_wait_timeout"), std::string::npos) << refused;
  EXPECT_GE(seconds_since(start), 0.95);
  EXPECT_EQ(strict_holder.Run("SELECT 5"), "5");
  EXPECT_EQ(strict_holder.Run("COMMIT"), "");
  EXPECT_EQ(holder.Run("COMMIT"), "");
}

// In transaction mode the pooler reads a Parse or a Bind whole (it rewrites them): one larger
// than the relay's buffer bound is read on to its end, relayed, and the connection given back.
TEST_F(PoolerTest, LargeParseAndBindMessagesGoThroughTransactionPooling) {
  PoolerProcess pooler("trust", kTrustUsers, Database("one", "transaction", 1, "pool_app"));
  Conn a(pooler.Url("one")), b(pooler.Url("one"));
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string value(300000, 'v');  // a Bind of about 300 kB
  const char* values[] = {value.c_str()};
  PGresult* bound =
      PQexecParams(a.conn, "SELECT length($1)", 1, nullptr, values, nullptr, nullptr, 0);
  ASSERT_EQ(PQresultStatus(bound), PGRES_TUPLES_OK) << PQresultErrorMessage(bound);
  EXPECT_STREQ(PQgetvalue(bound, 0, 0), "300000");
  PQclear(bound);
  // A named statement of about 200 kB of SQL, prepared, then run on the one connection after
  // another client used it.
  const std::string sql = absl::StrCat("SELECT length('", std::string(200000, 'q'), "')");
  PGresult* prepared = PQprepare(a.conn, "big", sql.c_str(), 0, nullptr);
  ASSERT_EQ(PQresultStatus(prepared), PGRES_COMMAND_OK) << PQresultErrorMessage(prepared);
  PQclear(prepared);
  EXPECT_EQ(b.Run("SELECT 7"), "7");  // the connection was given back
  PGresult* run = PQexecPrepared(a.conn, "big", 0, nullptr, nullptr, nullptr, 0);
  ASSERT_EQ(PQresultStatus(run), PGRES_TUPLES_OK) << PQresultErrorMessage(run);
  EXPECT_STREQ(PQgetvalue(run, 0, 0), "200000");
  PQclear(run);
}

// unix_socket_dir: psql's `-h <dir>` and libpq's host=<dir> reach the pooler as they reach
// PostgreSQL, in both pool modes, and the console shows such a client at `unix`. A socket file
// left by a killed pooler is replaced at the next start; one another pooler answers on is not.
TEST_F(PoolerTest, ClientsComeThroughTheUnixSocket) {
  TempDir sockets;
  const std::string unix_dir = absl::StrCat("unix_socket_dir: ", sockets.path(), "\n");
  auto pooler = std::make_unique<PoolerProcess>(
      "trust", kTrustUsers,
      Database("tx", "transaction", 1, "pool_app") + Database("sess", "session", 1, "pool_app"),
      unix_dir);
  const int port = pooler->port();
  const std::string socket_file = absl::StrCat(sockets.path(), "/.s.PGSQL.", port);
  EXPECT_NE(pooler->Log().find(absl::StrCat("and ", socket_file)), std::string::npos)
      << pooler->Log();
  auto local_url = [&](const std::string& database) {
    return absl::StrCat("host=", sockets.path(), " port=", port, " dbname=", database,
                        " user=postgres");
  };
  Conn tx(local_url("tx")), sess(local_url("sess")), tcp_client(pooler->Url("tx"));
  ASSERT_TRUE(tx.ok()) << tx.error();
  ASSERT_TRUE(sess.ok()) << sess.error();
  ASSERT_TRUE(tcp_client.ok());
  EXPECT_EQ(tx.Run("SELECT 40 + 2"), "42");
  EXPECT_EQ(sess.Run("SET application_name = 'kept'"), "");
  EXPECT_EQ(tcp_client.Run("SELECT 1"), "1");  // the one server connection, in turn
  EXPECT_EQ(tx.Run("SELECT count(*) >= 0 FROM items"), "t");
  EXPECT_EQ(sess.Run("SHOW application_name"), "kept");
  std::string output;
  EXPECT_EQ(Shell(absl::StrCat(PgBin(), "/psql -X -At -h ", sockets.path(), " -p ", port,
                               " -U postgres -d pgflow -c 'SHOW CLIENTS'"),
                  &output),
            0)
      << output;
  EXPECT_NE(output.find("C|postgres|tx|idle|unix|0|"), std::string::npos) << output;
  EXPECT_NE(output.find("|127.0.0.1|"), std::string::npos) << output;

  // Killed, the pooler leaves its socket file; the next one on the same port replaces it.
  pooler->process().Signal(SIGKILL);
  pooler->process().Wait(std::chrono::seconds(10));
  struct stat st;
  ASSERT_EQ(lstat(socket_file.c_str(), &st), 0);
  TempDir next;
  const std::string config = next.File("pooler.yaml");
  WriteFile(next.File("users.txt"), kTrustUsers);
  WriteFile(config, absl::StrCat("listen: 127.0.0.1:", port, "\n", unix_dir,
                                 "auth: {method: trust, users: ", next.File("users.txt"), "}\n",
                                 "databases:\n", Database("tx", "transaction", 1, "pool_app")));
  auto restarted = StartPgflowUntilLogged({"pooler", "--config", config}, next.File("log"), {},
                                          "pooler: listening on");
  Conn again(local_url("tx"));
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_EQ(again.Run("SELECT 'back'"), "back");
  // A second pooler on the same socket is refused, and the first keeps it.
  EXPECT_NE(RunPgflow({"pooler", "--config", config}, &output), 0);
  EXPECT_NE(
      output.find(absl::StrCat("cannot listen on ", socket_file, ": another server listens on it")),
      std::string::npos)
      << output;
  EXPECT_EQ(again.Run("SELECT 'still'"), "still");
  ASSERT_EQ(lstat(socket_file.c_str(), &st), 0) << "the refused pooler left the socket alone";
  Conn newcomer(local_url("tx"));
  ASSERT_TRUE(newcomer.ok()) << newcomer.error();
  EXPECT_EQ(newcomer.Run("SELECT 'new'"), "new");
  restarted->Signal(SIGTERM);
  EXPECT_EQ(restarted->Wait(std::chrono::seconds(30)), 0);
  EXPECT_NE(lstat(socket_file.c_str(), &st), 0) << "removed at a clean stop";
}

// A database whose url's host is a directory is reached through PostgreSQL's Unix socket in
// it, as libpq does: queries, SHOW SERVERS (at `unix`) and cancel requests go that way.
TEST_F(PoolerTest, ServersAreReachedThroughTheirUnixSocket) {
  const std::string url =
      absl::StrCat("host=", SharedCluster().dir(), " port=", SharedCluster().port(),
                   " dbname=pool_app user=postgres");
  PoolerProcess pooler("trust", kTrustUsers,
                       absl::StrCat("  local: {url: '", url,
                                    "', pool_mode: transaction, "
                                    "pool_size: 1}\n"));
  Conn client(pooler.Url("local"));
  ASSERT_TRUE(client.ok()) << client.error() << pooler.Log();
  // A backend reached over a Unix socket has no client address.
  EXPECT_EQ(client.Run("SELECT client_addr IS NULL AND client_port = -1 FROM pg_stat_activity "
                       "WHERE pid = pg_backend_pid()"),
            "t");
  std::string output;
  EXPECT_EQ(Shell(absl::StrCat(PgBin(), "/psql -X -At -h 127.0.0.1 -p ", pooler.port(),
                               " -U postgres -d pgflow -c 'SHOW SERVERS'"),
                  &output),
            0)
      << output;
  EXPECT_NE(output.find(absl::StrCat("S|postgres|local|idle|unix|", SharedCluster().port(), "|")),
            std::string::npos)
      << output;
  ExpectCancelled(client);
  EXPECT_EQ(client.Run("SELECT 4"), "4");
}

TEST_F(PoolerTest, AClientLeavingMidTransactionLeavesNothingBehind) {
  PoolerProcess pooler("trust", kTrustUsers, Database("one", "transaction", 1, "pool_app"));
  {
    Conn leaver(pooler.Url("one"));
    ASSERT_TRUE(leaver.ok());
    EXPECT_EQ(leaver.Run("BEGIN; INSERT INTO items VALUES (100, 'left'); "
                         "LOCK TABLE items IN ACCESS EXCLUSIVE MODE"),
              "");
  }  // gone without COMMIT
  Conn next(pooler.Url("one"));
  ASSERT_TRUE(next.ok());
  // The one server connection was rolled back: no row, no lock, no open transaction.
  EXPECT_EQ(next.Run("SELECT count(*) FROM items WHERE id = 100"), "0");
  EXPECT_EQ(next.Run("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in%'"), "0");

  // COPY FROM STDIN over the extended protocol (its Sync during the copy is ignored by the
  // server): the one connection comes back to the pool afterwards.
  next.Run("CREATE TEMP TABLE IF NOT EXISTS copied (x int)");
  PGresult* copy = PQexecParams(next.conn, "COPY items (id, name) FROM STDIN", 0, nullptr, nullptr,
                                nullptr, nullptr, 0);
  ASSERT_EQ(PQresultStatus(copy), PGRES_COPY_IN) << PQresultErrorMessage(copy);
  PQclear(copy);
  std::string rows = "200\ttwo hundred\n201\ttwo hundred one\n";
  ASSERT_EQ(PQputCopyData(next.conn, rows.data(), static_cast<int>(rows.size())), 1);
  ASSERT_EQ(PQputCopyEnd(next.conn, nullptr), 1);
  PGresult* done = PQgetResult(next.conn);
  EXPECT_EQ(PQresultStatus(done), PGRES_COMMAND_OK) << PQresultErrorMessage(done);
  PQclear(done);
  PQclear(PQgetResult(next.conn));
  Conn other(pooler.Url("one"));
  EXPECT_EQ(other.Run("SELECT count(*) FROM items WHERE id IN (200, 201)"), "2");

  // An error message larger than the pooler reads whole (PostgreSQL quotes the input).
  std::string big = next.Run("SELECT repeat('x', 2000000)::int");
  EXPECT_NE(big.find("ERROR 22P02"), std::string::npos) << big.substr(0, 200);
  EXPECT_EQ(next.Run("SELECT 'after the big error'"), "after the big error");

  // A client that leaves while receiving a large result: the connection is not leaked.
  for (int i = 0; i < 3; ++i) {
    Conn reader(pooler.Url("one"));
    PQsendQuery(reader.conn, "SELECT repeat('y', 1000) FROM generate_series(1, 100000)");
  }
  EXPECT_EQ(other.Run("SELECT 'the connection came back'"), "the connection came back");
}

TEST_F(PoolerTest, TransactionsWaitThroughAServerRestart) {
  PoolerProcess pooler("trust", kTrustUsers, Database("app", "transaction", 4, "pool_restart"),
                       "hold_timeout: 30s\n");
  Sql(SharedCluster().Url("pool_restart")).Exec("CREATE TABLE IF NOT EXISTS hits (n bigint)");
  constexpr int kClients = 4;
  std::atomic<bool> stop{false};
  std::atomic<int> failures[kClients];
  std::atomic<int> successes{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    failures[c] = 0;
    threads.emplace_back([&, c] {
      Conn conn(pooler.Url("app"));
      int64_t n = c * 1000000;
      while (!stop) {
        std::string r = conn.Run(absl::StrCat("INSERT INTO hits VALUES (", n++, ")"));
        if (r.empty()) {
          ++successes;
        } else {
          ++failures[c];
        }
        // (Paces the clients: fifty transactions a second each is the load, not a wait.)
        std::this_thread::sleep_for(milliseconds(20));
      }
    });
  }
  EXPECT_TRUE(WaitFor([&] { return successes.load() > 40; }, seconds(20)));
  int before = successes.load();
  SharedCluster().Pause();  // pg_ctl stop -m fast
  // The outage itself, what the test is about: two seconds without a server.
  std::this_thread::sleep_for(seconds(2));
  SharedCluster().Resume();
  EXPECT_TRUE(WaitFor([&] { return successes.load() > before + 40; }, seconds(30)));
  stop = true;
  for (std::thread& t : threads) t.join();
  int after = successes.load();
  EXPECT_GT(before, 20);
  EXPECT_GT(after, before + 20) << "transactions resumed after the restart";
  for (int c = 0; c < kClients; ++c) {
    // Only a transaction in flight at the moment of the stop may fail.
    EXPECT_LE(failures[c].load(), 1) << "client " << c;
  }
  Sql direct(SharedCluster().Url("pool_restart"));
  EXPECT_EQ(direct.Scalar("SELECT count(*) FROM hits"), std::to_string(after));

  // The same under a rate-limited pgbench (4 clients, 100 transactions a second in all):
  // pgbench gives up on a client at its first error, so a failed transaction shows as an
  // aborted client; only those in flight at the stop may be, and every transaction pgbench
  // counts is in the table (plus, at most, the aborted ones that committed before the
  // connection went).
  direct.Exec("CREATE TABLE bench_hits (n bigint)");
  const std::string script = pooler.dir().File("insert.sql");
  WriteFile(script, "INSERT INTO bench_hits VALUES (1);\n");
  std::string output;
  int status = -1;
  std::thread bench([&] {
    status = Shell(absl::StrCat(PgBin(), "/pgbench -n -c 4 -j 4 -R 100 -T 10 -f ", script,
                                " -U postgres -h 127.0.0.1 -p ", pooler.port(), " app"),
                   &output);
  });
  // (pgbench runs for ten seconds: the outage comes once it has begun.)
  EXPECT_TRUE(WaitFor(
      [&] { return std::atoi(direct.Scalar("SELECT count(*) FROM bench_hits").c_str()) >= 100; },
      seconds(20)));
  SharedCluster().Pause();
  // The outage itself, what the test is about: two seconds without a server.
  std::this_thread::sleep_for(seconds(2));
  SharedCluster().Resume();
  bench.join();
  constexpr std::string_view kProcessed = "number of transactions actually processed: ";
  size_t at = output.find(kProcessed);
  ASSERT_NE(at, std::string::npos) << output;
  int processed = std::atoi(output.c_str() + at + kProcessed.size());
  int aborted = 0;
  for (size_t p = output.find("aborted in command"); p != std::string::npos;
       p = output.find("aborted in command", p + 1)) {
    ++aborted;
  }
  EXPECT_LE(aborted, 2) << output;  // each client runs a transaction 2.5% of the time
  EXPECT_EQ(status, aborted == 0 ? 0 : 2) << output;
  EXPECT_GT(processed, 500) << output;  // ~1,000 scheduled; the outage is waited through
  int64_t rows = std::stoll(
      Sql(SharedCluster().Url("pool_restart")).Scalar("SELECT count(*) FROM bench_hits"));
  EXPECT_GE(rows, processed) << output;
  EXPECT_LE(rows, processed + aborted) << output;
}

TEST_F(PoolerTest, TheAdminConsoleShowsPausesReloadsAndKills) {
  PoolerProcess pooler("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"));
  Conn client(pooler.Url("app"));
  ASSERT_TRUE(client.ok());
  EXPECT_EQ(client.Run("SELECT 1"), "1");
  std::string output;
  auto psql = [&](const std::string& sql) {
    Shell(absl::StrCat(PgBin(), "/psql -X -At -h 127.0.0.1 -p ", pooler.port(),
                       " -U postgres -d pgflow -c \"", sql, "\""),
          &output);
    return output;
  };
  EXPECT_NE(psql("SHOW POOLS").find("app|postgres|1|0|0|1|"), std::string::npos) << output;
  EXPECT_NE(psql("SHOW CLIENTS").find("C|postgres|app|idle|127.0.0.1|"), std::string::npos)
      << output;
  EXPECT_NE(psql("SHOW SERVERS").find("S|postgres|app|idle|127.0.0.1|"), std::string::npos)
      << output;
  EXPECT_NE(psql("SHOW DATABASES").find("app|127.0.0.1|"), std::string::npos) << output;
  EXPECT_NE(psql("SHOW CONFIG").find("hold_timeout|30s"), std::string::npos) << output;
  EXPECT_NE(psql("SHOW STATS").find("app|postgres|"), std::string::npos) << output;
  EXPECT_NE(psql("SHOW NONSENSE").find("unknown SHOW"), std::string::npos) << output;

  // PAUSE: new transactions wait; RESUME lets them run.
  psql("PAUSE app");
  std::atomic<bool> done{false};
  std::thread waiting([&] {
    EXPECT_EQ(client.Run("SELECT 'after resume'"), "after resume");
    done = true;
  });
  EXPECT_TRUE(
      WaitFor([&] { return psql("SHOW POOLS").find("app|postgres|0|1|") != std::string::npos; },
              seconds(10)))
      << output;
  EXPECT_FALSE(done.load());
  EXPECT_NE(psql("SHOW POOLS").find("app|postgres|0|1|"), std::string::npos) << output;
  psql("RESUME app");
  waiting.join();
  EXPECT_TRUE(done.load());

  // RELOAD applies a changed file without dropping clients.
  pooler.WriteConfig("trust", Database("app", "transaction", 5, "pool_app") +
                                  Database("app2", "session", 1, "pool_app"));
  EXPECT_EQ(psql("RELOAD"), "RELOAD\n");
  EXPECT_NE(psql("SHOW DATABASES").find("app2|"), std::string::npos) << output;
  EXPECT_EQ(client.Run("SELECT 'kept'"), "kept");
  Conn second(pooler.Url("app2"));
  EXPECT_TRUE(second.ok()) << second.error();

  // /metrics
  HttpAnswer metrics = Curl(absl::StrCat("http://127.0.0.1:", pooler.admin_port(), "/metrics"));
  EXPECT_EQ(metrics.code, 200);
  EXPECT_NE(
      metrics.body.find("pgflow_pooler_transactions_total{database=\"app\",user=\"postgres\"}"),
      std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("pgflow_pooler_servers{database=\"app\""), std::string::npos);
  EXPECT_NE(metrics.body.find("state=\"idle\""), std::string::npos);

  // KILL disconnects the database's clients.
  psql("KILL app");
  EXPECT_TRUE(WaitFor([&] { return client.Run("SELECT 1") != "1"; }, seconds(5)));
  Conn console(pooler.Url("pgflow", "alice"));
  EXPECT_FALSE(console.ok());  // not an admin user (nor in the file)
  EXPECT_EQ(psql("SHUTDOWN"), "SHUTDOWN\n");
  EXPECT_EQ(pooler.process().Wait(seconds(10)), 0);
}

// `pgflow pooler status`, the real binary, against a running pooler (its console reached as the
// first admin user, with the users file's password): up, clients and server connections per
// database, rates, a database whose server is gone; then against the pooler stopped. Its exit
// status tells each apart, as `pgflow status`'s does.
TEST_F(PoolerTest, PoolerStatusSaysHowThePoolerStands) {
  const std::string gone =
      absl::StrCat("  gone: {url: 'postgres://postgres@127.0.0.1:", FreeLoopbackPort(),
                   "/gone', pool_mode: transaction}\n");
  PoolerProcess pooler("scram-sha-256",
                       "\"postgres\" \"console-secret\"\n\"alice\" \"alice-secret\"\n",
                       Database("app", "transaction", 2, "pool_app") + gone, "hold_timeout: 1s\n");
  Conn busy(pooler.Url("app", "alice", "alice-secret"));
  Conn idle(pooler.Url("app", "alice", "alice-secret"));
  ASSERT_TRUE(busy.ok() && idle.ok()) << busy.error() << idle.error();
  EXPECT_EQ(busy.Run("BEGIN"), "");  // holds a server connection until its COMMIT
  EXPECT_EQ(busy.Run("SELECT 1"), "1");
  EXPECT_EQ(idle.Run("SELECT 2"), "2");  // opens a second one, idle again since
  std::string out;
  EXPECT_EQ(RunPgflow({"pooler", "status", "--config", pooler.config()}, &out), 0) << out;
  EXPECT_NE(out.find("health     healthy"), std::string::npos) << out;
  EXPECT_NE(out.find("console    up: pgflow pooler "), std::string::npos) << out;
  // app: clients 1 active, 0 waiting, 1 idle; servers 1 active, 1 idle.
  EXPECT_TRUE(std::regex_search(out, std::regex("\\bapp +transaction +1/0/1 +1/1 "))) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("\\bgone +transaction +0/0/0 +0/0 "))) << out;

  // --json, while a client runs queries: the same, and its rates.
  std::atomic<bool> stop{false};
  std::thread load([&] {
    Conn client(pooler.Url("app", "alice", "alice-secret"));
    while (!stop.load()) client.Run("SELECT 3");
  });
  const int json_status =
      RunPgflow({"pooler", "status", "--config", pooler.config(), "--json"}, &out);
  stop = true;
  load.join();
  EXPECT_EQ(json_status, 0) << out;
  nlohmann::json report = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(report.is_object()) << out;
  EXPECT_EQ(report["health"], "healthy");
  EXPECT_EQ(report["up"], true);
  ASSERT_EQ(report["databases"].size(), 2u) << out;
  const nlohmann::json& app = report["databases"][0];
  EXPECT_EQ(app["name"], "app");
  EXPECT_EQ(app["paused"], false);
  EXPECT_GT(app["queries_per_second"].get<double>(), 10) << out;
  EXPECT_GT(app["transactions_per_second"].get<double>(), 10) << out;
  EXPECT_EQ(app["servers"]["active"].get<int>() + app["servers"]["idle"].get<int>(), 2) << out;

  // A database whose server does not answer: the pool says so (its user the url's, whom the
  // pooler logs in as), and the status is degraded.
  Conn lost(pooler.Url("gone", "alice", "alice-secret"));
  EXPECT_FALSE(lost.ok());
  EXPECT_EQ(RunPgflow({"pooler", "status", "--config", pooler.config()}, &out), 1) << out;
  EXPECT_NE(out.find("health     degraded"), std::string::npos) << out;
  EXPECT_NE(out.find("problem    database gone cannot reach its server (user postgres: "),
            std::string::npos)
      << out;

  // Stopped: down, and exit status 2.
  Conn console(pooler.Url("pgflow", "postgres", "console-secret"));
  ASSERT_TRUE(console.ok()) << console.error();
  console.Run("SHUTDOWN");
  EXPECT_EQ(pooler.process().Wait(seconds(10)), 0);
  EXPECT_EQ(RunPgflow({"pooler", "status", "--config", pooler.config()}, &out), 2) << out;
  EXPECT_NE(out.find("health     unreachable"), std::string::npos) << out;
  EXPECT_NE(out.find("console    down"), std::string::npos) << out;
  EXPECT_NE(out.find("Connection refused"), std::string::npos) << out;
}

// Whether `pooler` logs, within 5 seconds, that a SHUTDOWN closed all its listening sockets.
bool StoppedListening(const PoolerProcess& pooler) {
  return WaitFor([&] { return pooler.Log().find("no longer listening") != std::string::npos; },
                 seconds(5));
}

// A rolling restart: SHUTDOWN WAIT_FOR_CLIENTS stops the old pooler listening while a new one
// bound to the same port (SO_REUSEPORT) takes every new client; the old one serves the clients
// it has until they leave (its console session aside), then exits.
TEST_F(PoolerTest, ShutdownWaitForClientsHandsThePortToANewPooler) {
  TempDir sockets;
  PoolerProcess old_pooler("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"),
                           absl::StrCat("unix_socket_dir: ", sockets.path(), "\n"));
  const std::string socket_file = sockets.File(absl::StrCat(".s.PGSQL.", old_pooler.port()));
  ASSERT_TRUE(std::filesystem::exists(socket_file));
  auto client = std::make_unique<Conn>(old_pooler.Url("app"));
  ASSERT_TRUE(client->ok()) << client->error();
  // A connection that will stay in its login (accepted long before the SHUTDOWN: a console
  // logs in and a new pooler starts in between).
  const int logging_in = ConnectLoopback(old_pooler.port());
  ASSERT_GE(logging_in, 0);
  Conn console(old_pooler.Url("pgflow"));  // (before another pooler shares the port)
  ASSERT_TRUE(console.ok()) << console.error();
  PoolerProcess new_pooler("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"), "",
                           old_pooler.port());
  EXPECT_EQ(console.Run("SHUTDOWN WAIT_FOR_CLIENTS"), "");
  ASSERT_TRUE(StoppedListening(old_pooler)) << old_pooler.Log();
  EXPECT_FALSE(std::filesystem::exists(socket_file));  // for the next pooler to create
  // New clients all reach the new pooler, whose console counts them; the old one still serves
  // the client it has.
  std::vector<std::unique_ptr<Conn>> arrivals;
  for (int i = 0; i < 8; ++i) {
    arrivals.push_back(std::make_unique<Conn>(old_pooler.Url("app")));
    ASSERT_TRUE(arrivals.back()->ok()) << arrivals.back()->error();
    EXPECT_EQ(arrivals.back()->Run("SELECT 1"), "1");
  }
  Conn new_console(new_pooler.Url("pgflow"));
  ASSERT_TRUE(new_console.ok()) << new_console.error();
  PGresult* shown = PQexec(new_console.conn, "SHOW CLIENTS");
  EXPECT_EQ(PQntuples(shown), 9) << "8 clients and the console";  // (none of them the old one's)
  PQclear(shown);
  EXPECT_EQ(client->Run("SELECT 2"), "2");
  EXPECT_TRUE(old_pooler.process().Running());
  EXPECT_NE(console.Run("SHOW NOTHING").find("unknown SHOW nothing"), std::string::npos)
      << "the console stays until the pooler exits";
  EXPECT_NE(console.Run("PAUSE").find("SHUTDOWN WAIT_FOR_CLIENTS is under way"), std::string::npos);
  EXPECT_NE(console.Run("SHUTDOWN WAIT_FOR_SERVERS").find("is under way"), std::string::npos);
  // The connection still logging in (it has sent no startup packet) is a client too: the
  // pooler waits for it past its last logged-in client.
  client.reset();
  EXPECT_FALSE(WaitFor([&] { return !old_pooler.process().Running(); }, milliseconds(500)))
      << old_pooler.Log();
  close(logging_in);
  EXPECT_EQ(old_pooler.process().Wait(seconds(10)), 0) << old_pooler.Log();
  EXPECT_NE(old_pooler.Log().find("the last client left: stopping"), std::string::npos)
      << old_pooler.Log();
  EXPECT_EQ(arrivals.front()->Run("SELECT 3"), "3");
}

// SHUTDOWN WAIT_FOR_SERVERS: no new clients; a transaction under way runs to its end, a client
// between transactions waits; the pooler exits once no server connection is in use.
TEST_F(PoolerTest, ShutdownWaitForServersLetsTransactionsFinish) {
  PoolerProcess pooler("trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"));
  Conn busy(pooler.Url("app"));
  Conn idle(pooler.Url("app"));
  Conn console(pooler.Url("pgflow"));
  ASSERT_TRUE(busy.ok() && idle.ok() && console.ok()) << pooler.Log();
  EXPECT_EQ(busy.Run("BEGIN"), "");
  EXPECT_EQ(busy.Run("SELECT 1"), "1");
  EXPECT_EQ(console.Run("SHUTDOWN WAIT_FOR_SERVERS"), "");
  EXPECT_NE(console.Run("SHUTDOWN NOW").find("unknown SHUTDOWN mode 'now'"), std::string::npos);
  // Nothing undoes the pause the shutdown waits behind.
  EXPECT_NE(console.Run("RESUME").find("SHUTDOWN WAIT_FOR_SERVERS is under way"),
            std::string::npos);
  EXPECT_NE(console.Run("SHUTDOWN WAIT_FOR_CLIENTS").find("is under way"), std::string::npos);
  ASSERT_TRUE(StoppedListening(pooler)) << pooler.Log();
  EXPECT_FALSE(Conn(pooler.Url("app")).ok());  // refused: nothing listens
  EXPECT_EQ(busy.Run("SELECT 2"), "2");
  // A client asking for a server connection is told at once, free to connect elsewhere.
  EXPECT_NE(idle.Run("SELECT 3"), "3");
  const std::string dismissed = PQerrorMessage(idle.conn);  // (the FATAL, then the closing)
  EXPECT_NE(dismissed.find("the pooler is shutting down"), std::string::npos) << dismissed;
  EXPECT_TRUE(pooler.process().Running());
  EXPECT_EQ(busy.Run("COMMIT"), "");
  EXPECT_EQ(pooler.process().Wait(seconds(10)), 0) << pooler.Log();
  EXPECT_NE(pooler.Log().find("no server connection is in use: stopping"), std::string::npos)
      << pooler.Log();
}


// Sends each of `steps` to `port` in turn, reading after each until the answer holds its
// `until` (empty: the sending side is shut after the last, and the answer read to its end),
// the pooler closes, or `quiet` passes without a byte. The answers, joined.
struct Step {
  std::string bytes;
  std::string until;
};
std::string FuzzExchange(int port, const std::vector<Step>& steps,
                         milliseconds quiet = milliseconds(200)) {
  const int fd = ConnectLoopback(port);
  if (fd < 0) return "<no connection>";
  timeval timeout{.tv_sec = 0, .tv_usec = static_cast<suseconds_t>(quiet.count() * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string answer;
  for (const Step& step : steps) {
    (void)!write(fd, step.bytes.data(), step.bytes.size());
    if (step.until.empty()) shutdown(fd, SHUT_WR);
    char buffer[4096];
    while (answer.size() < (1u << 20)) {
      ssize_t n = read(fd, buffer, sizeof buffer);
      if (n <= 0) break;
      answer.append(buffer, n);
      if (!step.until.empty() && answer.find(step.until) != std::string::npos) break;
    }
  }
  close(fd);
  return answer;
}
std::string FuzzExchange(int port, const std::string& bytes) {
  return FuzzExchange(port, std::vector<Step>{{bytes, ""}});
}

// A masked binary WebSocket frame, as a client sends it.
std::string ClientFrame(const std::string& payload) {
  std::string frame = "\x82";
  if (payload.size() < 126) {
    frame.push_back(static_cast<char>(0x80 | payload.size()));
  } else {
    frame.push_back(static_cast<char>(0x80 | 126));
    frame.push_back(static_cast<char>(payload.size() >> 8));
    frame.push_back(static_cast<char>(payload.size() & 0xff));
  }
  const char mask[4] = {0x11, 0x22, 0x33, 0x44};
  frame.append(mask, 4);
  for (size_t i = 0; i < payload.size(); ++i) frame.push_back(payload[i] ^ mask[i % 4]);
  return frame;
}

// The http listener (SQL over HTTP, the protocol over WebSocket) under random mutations of
// valid requests and frames: Beast's parsers within http.max_request_size and the pooler's
// message limits. Each gets an answer or a closed connection; none crashes the pooler, holds a
// session, or disturbs a client of the wire.
TEST_F(PoolerTest, FuzzedHttpRequestsAndWebSocketFramesHurtNoOne) {
  const int http_port = FreeLoopbackPort();
  PoolerProcess pooler(
      "trust", kTrustUsers, Database("app", "transaction", 2, "pool_app"),
      absl::StrCat("http: {listen: 127.0.0.1:", http_port,
                   ", max_request_size: 16KiB, max_connections: 8}\n"));
  Conn bystander(pooler.Url("app"));
  ASSERT_TRUE(bystander.ok());
  const std::string body = R"({"query":"SELECT $1::int + 1 AS n","params":["41"]})";
  const std::string sql_request = absl::StrCat(
      "POST /sql HTTP/1.1\r\nHost: x\r\nNeon-Connection-String: postgres://postgres@x/app\r\n"
      "Neon-Array-Mode: true\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
  std::string answer = FuzzExchange(http_port, sql_request);
  ASSERT_NE(answer.find("200 OK"), std::string::npos) << answer;
  EXPECT_NE(answer.find(R"("rows":[["42"]])"), std::string::npos) << answer;

  std::string startup;
  for (const char* kv : {"user", "postgres", "database", "app"}) {
    startup += kv;
    startup.push_back('\0');
  }
  startup.push_back('\0');
  startup = Int32(static_cast<int32_t>(startup.size() + 8)) + Int32(196608) + startup;
  const std::string password = std::string("p") + Int32(9) + "none" + std::string(1, '\0');
  const std::string query = std::string("Q") + Int32(13) + "SELECT 7" + std::string(1, '\0');
  const std::string upgrade =
      "GET /v2 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  const std::string frames = ClientFrame(startup + password) + ClientFrame(query);
  // (The answer's DataRow: one column, "7". A client sends frames once upgraded: RFC 6455.)
  const std::string row = std::string("D") + Int32(11) + std::string("\0\x01", 2) + Int32(1) + "7";
  answer = FuzzExchange(http_port, {{upgrade, "\r\n\r\n"}, {frames, row}}, milliseconds(999));
  ASSERT_NE(answer.find("101 Switching Protocols"), std::string::npos) << answer;
  EXPECT_NE(answer.find(row), std::string::npos) << absl::CEscape(answer);

  std::mt19937 random(20261128);
  const std::vector<std::string> seeds = {sql_request, upgrade + frames, frames};
  for (int i = 0; i < 1500; ++i) {
    const bool frames_only = i % 3 == 2;  // mutated frames after a valid upgrade
    std::string input = seeds[i % seeds.size()];
    const int edits = 1 + static_cast<int>(random() % 8);
    for (int e = 0; e < edits && !input.empty(); ++e) {
      const size_t at = random() % input.size();
      switch (random() % 5) {
        case 0: input[at] = static_cast<char>(random()); break;               // a byte changed
        case 1: input.erase(at, 1 + random() % 16); break;                     // bytes cut
        case 2:  // bytes inserted
          input.insert(at, std::string(1 + random() % 64, static_cast<char>(random())));
          break;
        case 3: input.resize(at); break;                                        // truncated
        case 4: input.insert(at, input.substr(at, random() % 4096)); break;    // repeated
      }
    }
    if (frames_only) {
      FuzzExchange(http_port, {{upgrade, "\r\n\r\n"}, {input, ""}});
    } else {
      FuzzExchange(http_port, input);
    }
  }
  ASSERT_TRUE(pooler.process().Running()) << pooler.Log();
  answer = FuzzExchange(http_port, sql_request);
  EXPECT_NE(answer.find(R"("rows":[["42"]])"), std::string::npos) << answer;
  EXPECT_EQ(bystander.Run("SELECT 'still here'"), "still here");
  // Every tunnelled session ended with its connection: the bystander alone remains.
  EXPECT_TRUE(WaitForClients(pooler, "app", 1, 0)) << Console(pooler, "SHOW CLIENTS");

  // http.max_connections: with 8 held, the next is answered 503 at once; once they go, served.
  // (Counted by pgflow_pooler_http_connections: the fuzzing's last connections may linger a
  // second, reading what their client still sends after a refusal.)
  const std::string metrics = absl::StrCat("http://127.0.0.1:", pooler.admin_port(), "/metrics");
  auto open_connections = [&](int n) {
    return WaitFor(
        [&] {
          return Curl(metrics).body.find(absl::StrCat("pgflow_pooler_http_connections ", n,
                                                      "\n")) != std::string::npos;
        },
        seconds(10));
  };
  ASSERT_TRUE(open_connections(0)) << Curl(metrics).body;
  std::vector<int> held;
  for (int i = 0; i < 8; ++i) held.push_back(ConnectLoopback(http_port));
  ASSERT_TRUE(open_connections(8)) << Curl(metrics).body;
  answer = FuzzExchange(http_port, sql_request);
  EXPECT_NE(answer.find("503 Service Unavailable"), std::string::npos) << answer;
  EXPECT_NE(answer.find("53300"), std::string::npos) << answer;
  for (int fd : held) close(fd);
  EXPECT_TRUE(WaitFor(
      [&] {
        return FuzzExchange(http_port, sql_request).find(R"("rows":[["42"]])") !=
               std::string::npos;
      },
      seconds(10)));
}

}  // namespace
}  // namespace pgflow::testing
