// A zero-downtime migration as a user runs it: copy a live database into another PostgreSQL
// with the postgres sink, follow a pgbench write load through crashes and a target outage,
// then prove the copy identical with `pgflow verify` and a row-by-row comparison.

#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;

TestCluster& Source() { return SharedCluster(0); }
TestCluster& Target() { return SharedCluster(1); }

class Migration {
 public:
  explicit Migration(const std::string& name,
                     const std::string& snapshot = "{mode: initial, workers: 2}",
                     const std::string& tables = "[public.*]")
      : name_(name) {
    Sql(Source().Url()).Exec("CREATE DATABASE " + name);
    Sql(Target().Url()).Exec("CREATE DATABASE " + name);
    yaml_ = dir_.File("pipeline.yaml");
    WriteFile(yaml_, "pipeline: " + name + "\nsource:\n  postgres:\n    url: " + source_url() +
                         "\n    tables: " + tables + "\n    snapshot: " + snapshot +
                         "\n"
                         "    status_interval: 200ms\nsinks:\n  target: {postgres: {url: " +
                         target_url() + "}, flush_interval: 50ms}\n");
  }
  std::string source_url() const { return Source().Url(name_); }
  std::string target_url() const { return Target().Url(name_); }
  const std::string& yaml() const { return yaml_; }
  std::string log() const { return dir_.File("pgflow.log"); }

  // `env`: for a file whose URLs name variables (${SRC}).
  std::unique_ptr<PgflowProcess> Start(std::map<std::string, std::string> env = {}) {
    return std::make_unique<PgflowProcess>(
        std::vector<std::string>{"run", yaml_, "--progress", "2"}, log(), std::move(env));
  }
  // Starts pgflow and waits until it streams (the copy is over).
  std::unique_ptr<PgflowProcess> StartStreaming(std::map<std::string, std::string> env = {}) {
    auto pgflow = Start(std::move(env));
    EXPECT_TRUE(WaitFor([&] { return ReadFile(log()).find("streaming from") != std::string::npos; },
                        std::chrono::seconds(60)))
        << ReadFile(log());
    return pgflow;
  }
  // Waits until pgflow has applied everything the source has written, then stops it.
  void CatchUpAndStop(PgflowProcess& pgflow) {
    ASSERT_TRUE(CaughtUp(std::chrono::seconds(60))) << ReadFile(log());
    pgflow.Signal(SIGTERM);
    ASSERT_EQ(pgflow.Wait(std::chrono::seconds(60)), 0) << ReadFile(log());
  }
  size_t CountInLog(const std::string& needle) const { return CountInFile(log(), needle); }
  // The slot's confirmed position ("" before the slot exists).
  std::string Confirmed() {
    return Sql(source_url())
        .Scalar(
            "SELECT coalesce(max(confirmed_flush_lsn)::text, '') FROM pg_replication_slots "
            "WHERE slot_name = 'pgflow_" +
            name_ + "'");
  }
  // Waits until the slot confirms everything the source has written so far. (Only meaningful
  // once streaming: during the snapshot the slot sits at its consistent point.)
  bool CaughtUp(std::chrono::seconds timeout) {
    Sql sql(source_url());
    std::string end = sql.Scalar("SELECT pg_current_wal_lsn()");
    return WaitFor(
        [&] {
          return sql.Scalar("SELECT confirmed_flush_lsn >= '" + end +
                            "' FROM pg_replication_slots WHERE slot_name = 'pgflow_" + name_ +
                            "'") == "t";
        },
        timeout);
  }
  // Every row of `table` on both sides, as JSON text, sorted: equal lists mean equal tables
  // (as multisets, so tables without a key compare too).
  void ExpectSameRows(const std::string& table) {
    std::string q = "SELECT row_to_json(t)::text AS r FROM " + table + " t ORDER BY r";
    Sql a(source_url());
    Sql b(target_url());
    auto source_rows = a.Query(q);
    auto target_rows = b.Query(q);
    EXPECT_EQ(source_rows.size(), target_rows.size()) << table;
    EXPECT_TRUE(source_rows == target_rows) << table << " differs";
  }

 private:
  std::string name_;
  TempDir dir_;
  std::string yaml_;
};

std::string Pgbench() { return std::string("PGHOST=127.0.0.1 PGUSER=postgres pgbench "); }

TEST(MigrationTest, CopyAndFollowAPgbenchLoadThroughThreeKillsThenVerify) {
  Migration m("bench");
  const std::string port = std::to_string(Source().port());
  ASSERT_EQ(std::system((Pgbench() + "-p " + port + " -i -q -s 1 bench >/dev/null 2>&1").c_str()),
            0);
  // pgbench_history has no key: give it one (its updates would fail on the source otherwise,
  // and keyed rows let the copy be compared exactly).
  Sql(m.source_url()).Exec("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY");

  auto pgflow = m.Start();
  std::atomic<bool> load_done{false};
  std::thread load([&] {
    std::system((Pgbench() + "-p " + port + " -n -c 2 -T 12 bench >/dev/null 2>&1").c_str());
    load_done = true;
  });
  for (size_t kill = 1; kill <= 3; ++kill) {
    // Each run is killed once it streams and has confirmed some of the load (or the load is
    // over).
    ASSERT_TRUE(
        WaitFor([&] { return m.CountInLog("streaming from") >= kill; }, std::chrono::seconds(120)))
        << ReadFile(m.log());
    const std::string streaming_at = m.Confirmed();
    ASSERT_TRUE(WaitFor([&] { return load_done.load() || m.Confirmed() != streaming_at; },
                        std::chrono::seconds(60)))
        << ReadFile(m.log());
    pgflow->Signal(SIGKILL);
    pgflow->Wait(std::chrono::seconds(10));
    pgflow = m.Start();
  }
  load.join();
  ASSERT_TRUE(m.CaughtUp(std::chrono::seconds(180))) << ReadFile(m.log());
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(m.log());

  std::string out;
  EXPECT_EQ(RunPgflow({"verify", m.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("target: identical (4 tables"));
  for (const char* t :
       {"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"}) {
    m.ExpectSameRows(t);
  }
  EXPECT_GT(std::stoi(Sql(m.target_url()).Scalar("SELECT count(*) FROM pgbench_history")), 100);

  // A change made behind pgflow's back is found, and only its range is reported.
  Sql(m.target_url()).Exec("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 4242");
  EXPECT_EQ(RunPgflow({"verify", m.yaml(), "--tables", "public.pgbench_accounts"}, &out), 1);
  EXPECT_THAT(out, HasSubstr("public.pgbench_accounts differs where"));
  EXPECT_THAT(out, HasSubstr("1 of 64 ranges differ"));
}

TEST(MigrationTest, TheTargetGoesDownMidStreamAndNothingIsLost) {
  Migration m("outage");
  Sql source(m.source_url());
  source.Exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
  source.Exec("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g");
  auto pgflow = m.Start();
  ASSERT_TRUE(WaitFor([&] { return ReadFile(m.log()).find("streaming from") != std::string::npos; },
                      std::chrono::seconds(60)))
      << ReadFile(m.log());
  ASSERT_TRUE(m.CaughtUp(std::chrono::seconds(60))) << ReadFile(m.log());

  Target().Pause();
  for (int i = 1001; i <= 1200; ++i) {
    source.Exec("INSERT INTO t VALUES (" + std::to_string(i) + ", 'during outage')");
  }
  source.Exec("UPDATE t SET v = 'updated' WHERE id <= 10; DELETE FROM t WHERE id > 1190");
  // pgflow notices the outage and waits it out rather than exit.
  EXPECT_TRUE(
      WaitFor([&] { return m.CountInLog("starting again from the confirmed position") > 0; },
              std::chrono::seconds(60)))
      << ReadFile(m.log());
  EXPECT_TRUE(pgflow->Running()) << ReadFile(m.log());
  Target().Resume();
  ASSERT_TRUE(m.CaughtUp(std::chrono::seconds(120))) << ReadFile(m.log());
  EXPECT_THAT(ReadFile(m.log()), HasSubstr("starting again from the confirmed position"));
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(m.log());
  m.ExpectSameRows("t");
  std::string out;
  EXPECT_EQ(RunPgflow({"verify", m.yaml()}, &out), 0) << out;
}

// The target goes away while the initial load runs over several connections: pgflow waits,
// starts again, and the next run finishes the load (the chunks the target had committed but
// the source had not recorded come again and replace their first copy).
TEST(MigrationTest, TheTargetGoesDownMidLoadAndTheCopyCompletes) {
  Migration m("loadoutage", "{mode: initial, workers: 2, chunk_size: 1MiB}");
  Sql source(m.source_url());
  source.Exec(
      "CREATE TABLE t (id bigint PRIMARY KEY, v text, n int); CREATE INDEX t_n ON t (n); "
      "INSERT INTO t SELECT g, md5(g::text), g % 100 FROM generate_series(1, 400000) g");
  auto pgflow = m.Start();
  Sql target(m.target_url());
  auto copied = [&] {
    if (target.Scalar("SELECT to_regclass('public.t') IS NULL") == "t") return 0;
    return std::stoi(target.Scalar("SELECT count(*) FROM t"));
  };
  ASSERT_TRUE(
      WaitFor([&] { return copied() > 40000 || !pgflow->Running(); }, std::chrono::seconds(120)))
      << ReadFile(m.log());
  Target().Pause();
  // pgflow notices the outage and waits it out rather than exit.
  EXPECT_TRUE(
      WaitFor([&] { return m.CountInLog("starting again from the confirmed position") > 0; },
              std::chrono::seconds(60)))
      << ReadFile(m.log());
  EXPECT_TRUE(pgflow->Running()) << ReadFile(m.log());
  Target().Resume();
  ASSERT_TRUE(WaitFor([&] { return ReadFile(m.log()).find("streaming from") != std::string::npos; },
                      std::chrono::seconds(180)))
      << ReadFile(m.log());
  source.Exec("UPDATE t SET v = 'after' WHERE id % 1000 = 0");
  ASSERT_TRUE(m.CaughtUp(std::chrono::seconds(120))) << ReadFile(m.log());
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(m.log());
  const std::string log = ReadFile(m.log());
  EXPECT_THAT(log, HasSubstr("loading the snapshot over 2 connections"));
  EXPECT_THAT(log, HasSubstr("starting again from the confirmed position"));
  // Rows were committed before the outage, and the key is only built after the load.
  EXPECT_THAT(log, HasSubstr("public.t: the load was interrupted"));
  m.ExpectSameRows("t");
  // The key and the index, built once the load was over.
  EXPECT_EQ(Sql(m.target_url()).Scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 't'"),
            "2");
  std::string out;
  EXPECT_EQ(RunPgflow({"verify", m.yaml()}, &out), 0) << out;
}

// The issue a user met: a keyed and a keyless table, the application inserting into both
// without a pause, SIGINT in the middle of the copy, `pgflow run` again. The keyless table is
// copied again whole as of an exact position (its partial copy truncated on the target, the
// stream skipping what the new copy holds), and both tables end identical while the writes
// never stop.
TEST(MigrationTest, AKeylessTableInterruptedMidCopyEndsIdenticalUnderConstantWrites) {
  Migration m("keylessresume", "{mode: initial, workers: 2, chunk_size: 1MiB}");
  Sql source(m.source_url());
  source.Exec(
      "CREATE TABLE accounts (id bigint PRIMARY KEY, balance int, note text); "
      "INSERT INTO accounts SELECT g, 0, md5(g::text) FROM generate_series(1, 1000000) g; "
      "CREATE TABLE audit_log (at timestamptz, account bigint, delta int); "
      "INSERT INTO audit_log SELECT now(), g % 1000, 1 FROM generate_series(1, 600000) g");
  BackgroundWriter writer(m.source_url(), [](int64_t n, std::mt19937_64& rng) {
    const std::string id = std::to_string(rng() % 1000000 + 1);
    return "BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = " + id +
           "; INSERT INTO audit_log VALUES (now(), " + id + ", 1); INSERT INTO accounts VALUES (" +
           std::to_string(1000001 + n) + ", 0, 'new'); COMMIT;";
  });
  auto pgflow = m.Start();
  auto done_chunks = [&] {
    if (source.Scalar("SELECT to_regclass('pgflow.snapshot_chunks') IS NULL") == "t") return 0;
    return std::stoi(source.Scalar(
        "SELECT count(*) FROM pgflow.snapshot_chunks WHERE done_at IS NOT NULL"));
  };
  // Interrupted as soon as two chunks are done (of about a hundred): the copy is far from its
  // end then, however loaded the machine (the size of the target's table, the earlier signal,
  // once showed the copy only when it had all but finished).
  ASSERT_TRUE(
      WaitFor([&] { return done_chunks() >= 2 || !pgflow->Running(); }, std::chrono::seconds(120)))
      << ReadFile(m.log());
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(m.log());
  ASSERT_LT(done_chunks(), std::stoi(source.Scalar("SELECT count(*) FROM pgflow.snapshot_chunks")))
      << "the copy finished before it could be interrupted";

  pgflow = m.Start();
  ASSERT_TRUE(WaitFor([&] { return ReadFile(m.log()).find("streaming from") != std::string::npos ||
                                   !pgflow->Running(); },
                      std::chrono::seconds(300)))
      << ReadFile(m.log());
  EXPECT_THAT(ReadFile(m.log()), HasSubstr("1 table(s) without a key are copied again whole"));
  const int64_t written = writer.transactions();
  ASSERT_TRUE(WaitFor([&] { return writer.transactions() > written + 50; },
                      std::chrono::seconds(30)));
  writer.Stop();
  ASSERT_TRUE(m.CaughtUp(std::chrono::seconds(180))) << ReadFile(m.log());
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(m.log());
  m.ExpectSameRows("audit_log");
  m.ExpectSameRows("accounts");
  std::string out;
  EXPECT_EQ(RunPgflow({"verify", m.yaml()}, &out), 0) << out;
}

// `init`, then schema changes and writes, then `run`: the copy, taken after them, already
// holds their effect. Replayed over it, a DROP and CREATE of a table would empty it, a DROP and
// ADD COLUMN lose the column's values (the writes before the copy are skipped): neither is.
TEST(MigrationTest, SchemaChangesBetweenInitAndRunAreInTheCopyAndNotReplayedOverIt) {
  Migration m("initddl");
  Sql source(m.source_url());
  source.Exec(
      "CREATE TABLE t (id int PRIMARY KEY, c text); INSERT INTO t SELECT g, 'old' FROM "
      "generate_series(1, 100) g; CREATE TABLE k (v int); INSERT INTO k SELECT generate_series(1, "
      "50)");
  // A partitioned table whose foreign key references itself: PostgreSQL adds one constraint
  // per referenced partition under the key, which the target makes itself.
  source.Exec(
      "CREATE TABLE tree (id int PRIMARY KEY, up int REFERENCES tree) PARTITION BY RANGE (id); "
      "CREATE TABLE tree_1 PARTITION OF tree FOR VALUES FROM (0) TO (100); "
      "CREATE TABLE tree_2 PARTITION OF tree FOR VALUES FROM (100) TO (200); "
      "INSERT INTO tree VALUES (1, NULL), (150, 1)");
  std::string out;
  ASSERT_EQ(RunPgflow({"init", m.yaml()}, &out), 0) << out;
  source.Exec(
      "ALTER TABLE t DROP COLUMN c; ALTER TABLE t ADD COLUMN c text; UPDATE t SET c = 'new' "
      "WHERE id <= 60; DROP TABLE k; CREATE TABLE k (v int, w text); INSERT INTO k SELECT g, "
      "'again' FROM generate_series(1, 30) g");
  auto pgflow = m.StartStreaming();
  source.Exec("INSERT INTO t VALUES (101, 'after'); INSERT INTO k VALUES (31, 'after')");
  m.CatchUpAndStop(*pgflow);
  EXPECT_THAT(ReadFile(m.log()), HasSubstr("taken after it: not replayed"));
  EXPECT_THAT(ReadFile(m.log()), ::testing::Not(HasSubstr("stays pending")));
  m.ExpectSameRows("t");
  m.ExpectSameRows("k");
  m.ExpectSameRows("tree");
  Sql target(m.target_url());
  EXPECT_EQ(target.Scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = "
                          "'tree'::regclass AND conparentid = 0"),
            "1");
  EXPECT_FALSE(target.Exec("INSERT INTO tree VALUES (2, 99)", /*expect_error=*/true));
}

// Whether `url` lets its user in.
bool LogsIn(const std::string& url) {
  PGconn* conn = PQconnectdb(url.c_str());
  const bool in = PQstatus(conn) == CONNECTION_OK;
  PQfinish(conn);
  return in;
}

// Role `role` logs in to `cluster` over TCP with its password only (scram-sha-256), once this
// returns.
void RequirePassword(TestCluster& cluster, const std::string& role) {
  const std::string hba = cluster.dir() + "/data/pg_hba.conf";
  const std::string rules = ReadFile(hba);
  // Written in place: the file keeps its owner, the server's user.
  std::ofstream(hba, std::ios::trunc) << "host all " << role << " 127.0.0.1/32 scram-sha-256\n"
                                      << rules;
  Sql(cluster.Url()).Exec("SELECT pg_reload_conf()");
  const std::string wrong =
      "postgres://" + role + ":wrong@127.0.0.1:" + std::to_string(cluster.port()) + "/postgres";
  ASSERT_TRUE(WaitFor([&] { return !LogsIn(wrong); }, std::chrono::seconds(10)));
}

// An object's owner and ACL, the ACL's items sorted (they hold the same grants in any order).
std::string OwnerAndAcl(const std::string& url, const std::string& catalog_row) {
  return Sql(url).Scalar(
      "SELECT o.owner::regrole || ' ' || coalesce((SELECT string_agg(a::text, "
      "',' ORDER BY a::text) FROM unnest(o.acl) a), 'default') FROM (" +
      catalog_row + ") o(owner, acl)");
}

// Roles are the cluster's, shared by every test of the file: each test names its own.
TEST(MigrationTest, RolesComeWithTheirPasswordsAndEveryObjectWithItsOwnerAndGrants) {
  Migration m("owned", "{mode: initial, workers: 2}", "[app.*]");
  Sql(Source().Url())
      .Exec(
          "CREATE ROLE owned_app LOGIN PASSWORD 'Owned-Pw1' CONNECTION LIMIT 7; "
          "ALTER ROLE owned_app SET search_path = app, public; "
          "CREATE ROLE owned_readers NOLOGIN; CREATE ROLE owned_analyst LOGIN IN ROLE "
          "owned_readers; CREATE ROLE owned_bystander LOGIN");
  Sql source(m.source_url());
  source.Exec(
      "ALTER DATABASE owned OWNER TO owned_app; ALTER DATABASE owned SET work_mem = '8MB'; "
      "CREATE SCHEMA app AUTHORIZATION owned_app; GRANT USAGE ON SCHEMA app TO owned_readers; "
      "SET ROLE owned_app; "
      "ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO owned_readers; "
      "CREATE TYPE app.mood AS ENUM ('ok'); "
      "CREATE FUNCTION app.two() RETURNS int LANGUAGE sql AS 'SELECT 2'; "
      "REVOKE EXECUTE ON FUNCTION app.two() FROM PUBLIC; "
      "GRANT EXECUTE ON FUNCTION app.two() TO owned_readers; "
      "CREATE TABLE app.t (id serial PRIMARY KEY, m app.mood); "
      "GRANT UPDATE ON app.t TO owned_readers WITH GRANT OPTION; "
      // A function of a table's row type: restored only once the table exists in the target,
      // after the first pass over owners and grants.
      "CREATE FUNCTION app.label(app.t) RETURNS text LANGUAGE sql AS 'SELECT $1.m::text'; "
      "REVOKE EXECUTE ON FUNCTION app.label(app.t) FROM PUBLIC; "
      "GRANT EXECUTE ON FUNCTION app.label(app.t) TO owned_readers; "
      // Restored again by that second pass, it is there already (a unique-key error).
      "CREATE TEXT SEARCH DICTIONARY app.plain (TEMPLATE = pg_catalog.simple); "
      "INSERT INTO app.t (m) VALUES ('ok'); RESET ROLE");
  auto pgflow = m.StartStreaming();
  // A table created while streaming gets its owner and grants too.
  source.Exec("SET ROLE owned_app; CREATE TABLE app.later (id int PRIMARY KEY); RESET ROLE");
  m.CatchUpAndStop(*pgflow);

  Sql target(m.target_url());
  EXPECT_THAT(ReadFile(m.log()), HasSubstr("roles created: owned_analyst, owned_app, "
                                           "owned_readers"));
  EXPECT_THAT(ReadFile(m.log()), ::testing::Not(HasSubstr("were not copied")));
  EXPECT_THAT(ReadFile(m.log()), ::testing::Not(HasSubstr("restoring a schema object")));
  EXPECT_EQ(target.Scalar("SELECT rolcanlogin || ' ' || rolconnlimit FROM pg_roles WHERE "
                          "rolname = 'owned_app'"),
            "true 7");
  EXPECT_EQ(target.Scalar("SELECT setconfig::text FROM pg_db_role_setting WHERE setrole = "
                          "'owned_app'::regrole"),
            "{\"search_path=app, public\"}");
  EXPECT_EQ(target.Scalar("SELECT pg_has_role('owned_analyst', 'owned_readers', 'MEMBER')"), "t");
  EXPECT_EQ(target.Scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'owned_bystander'"), "0");
  // The SCRAM secret itself: the application logs in to the new server with its password.
  const std::string secret = "SELECT rolpassword FROM pg_authid WHERE rolname = 'owned_app'";
  EXPECT_EQ(target.Scalar(secret), source.Scalar(secret));
  RequirePassword(Target(), "owned_app");
  const std::string app_url =
      "postgres://owned_app:Owned-Pw1@127.0.0.1:" + std::to_string(Target().port()) + "/owned";
  EXPECT_TRUE(LogsIn(app_url));
  EXPECT_FALSE(
      LogsIn("postgres://owned_app:wrong@127.0.0.1:" + std::to_string(Target().port()) + "/owned"));
  EXPECT_EQ(Sql(app_url).Scalar("SELECT count(*) FROM app.t WHERE app.two() = 2"), "1");

  for (const char* row :
       {"SELECT datdba, datacl FROM pg_database WHERE datname = current_database()",
        "SELECT nspowner, nspacl FROM pg_namespace WHERE nspname = 'app'",
        "SELECT relowner, relacl FROM pg_class WHERE oid = 'app.t'::regclass",
        "SELECT relowner, relacl FROM pg_class WHERE oid = 'app.t_id_seq'::regclass",
        "SELECT relowner, relacl FROM pg_class WHERE oid = 'app.later'::regclass",
        "SELECT typowner, typacl FROM pg_type WHERE oid = 'app.mood'::regtype",
        "SELECT proowner, proacl FROM pg_proc WHERE oid = 'app.two()'::regprocedure",
        "SELECT proowner, proacl FROM pg_proc WHERE oid = 'app.label(app.t)'::regprocedure",
        "SELECT defaclrole, defaclacl FROM pg_default_acl"}) {
    EXPECT_EQ(OwnerAndAcl(m.target_url(), row), OwnerAndAcl(m.source_url(), row)) << row;
  }
  EXPECT_THAT(OwnerAndAcl(m.target_url(),
                          "SELECT relowner, relacl FROM pg_class WHERE oid = "
                          "'app.later'::regclass"),
              HasSubstr("owned_readers=r/owned_app"));
  // The database's settings would apply to every new session mid-load: the sink leaves them to
  // `pgflow roles`, which logs their names, never their values.
  const std::string settings =
      "SELECT coalesce((SELECT setconfig::text FROM pg_db_role_setting WHERE setrole = 0 AND "
      "setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())), '')";
  EXPECT_EQ(target.Scalar(settings), "");
  std::string out;
  ASSERT_EQ(RunPgflow({"roles", m.yaml()}, &out), 0) << out;
  EXPECT_EQ(target.Scalar(settings), "{work_mem=8MB}");
  EXPECT_THAT(out, HasSubstr("database owned (setting work_mem)"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("8MB")));

  EXPECT_EQ(RunPgflow({"verify", m.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("target: owners and grants: identical (3 tables and sequences)"));
  // A grant taken away behind pgflow's back is found, by object.
  target.Exec("REVOKE UPDATE ON app.t FROM owned_readers");
  EXPECT_EQ(RunPgflow({"verify", m.yaml()}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("target: \"app\".\"t\": UPDATE for owned_readers on the source "
                             "only"));
  EXPECT_THAT(out, HasSubstr("1 owner or grant difference"));
}

// The sink writes into a database and schema that already exist in the target and are someone
// else's (shared): they gain the source's grants, and keep their owner and everyone's grants.
// Settings of the target database that would abort an ordinary session (read-only by default,
// tight timeouts) do not touch pgflow's.
TEST(MigrationTest, ASharedTargetDatabaseOnlyGainsGrantsAndItsSettingsDoNotStopTheLoad) {
  Migration m("shared", "{mode: initial, workers: 2}", "[app.*]");
  Sql(Source().Url()).Exec("CREATE ROLE shared_app NOLOGIN; CREATE ROLE shared_reader LOGIN");
  Sql(Target().Url()).Exec("CREATE ROLE shared_dba NOLOGIN; CREATE ROLE shared_other LOGIN");
  Sql source(m.source_url());
  source.Exec(
      "ALTER DATABASE shared OWNER TO shared_app; REVOKE ALL ON DATABASE shared FROM PUBLIC; "
      "GRANT CONNECT ON DATABASE shared TO shared_reader; "
      "CREATE SCHEMA app AUTHORIZATION shared_app; GRANT USAGE ON SCHEMA app TO shared_reader; "
      "CREATE TABLE app.t (id int PRIMARY KEY); ALTER TABLE app.t OWNER TO shared_app; "
      "INSERT INTO app.t SELECT generate_series(1, 1000)");
  Sql target(m.target_url());
  target.Exec(
      "ALTER DATABASE shared OWNER TO shared_dba; "
      "GRANT CONNECT ON DATABASE shared TO shared_other; "
      "CREATE SCHEMA app AUTHORIZATION shared_dba; GRANT USAGE ON SCHEMA app TO shared_other; "
      "ALTER DATABASE shared SET default_transaction_read_only = on; "
      "ALTER DATABASE shared SET idle_in_transaction_session_timeout = '1ms'; "
      "ALTER DATABASE shared SET lock_timeout = '1ms'");
  m.CatchUpAndStop(*m.StartStreaming());

  EXPECT_EQ(target.Scalar("SELECT count(*) FROM app.t"), "1000");
  EXPECT_EQ(target.Scalar("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = "
                          "current_database()"),
            "shared_dba");
  EXPECT_EQ(target.Scalar("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = "
                          "'app'"),
            "shared_dba");
  // Nothing revoked: the other user's and PUBLIC's grants stay; the source's reader gains its.
  EXPECT_EQ(target.Scalar("SELECT has_database_privilege('shared_other', current_database(), "
                          "'CONNECT') AND has_database_privilege('public', current_database(), "
                          "'CONNECT') AND has_database_privilege('shared_reader', "
                          "current_database(), 'CONNECT') AND has_schema_privilege('shared_other', "
                          "'app', 'USAGE') AND has_schema_privilege('shared_reader', 'app', "
                          "'USAGE')"),
            "t");
  // The table pgflow created is its own: it gets the source's owner.
  EXPECT_EQ(target.Scalar("SELECT tableowner FROM pg_tables WHERE tablename = 't'"), "shared_app");
  EXPECT_THAT(ReadFile(m.log()),
              HasSubstr("left as it is: database shared: owned by shared_dba (shared_app in the "
                        "source), not by pgflow's role"));
}

// The source role is not a superuser, so it cannot read the passwords: the roles are created
// without them, the log names them, and `pgflow roles` run as a superuser later fills them in.
TEST(MigrationTest, ASourceRoleThatIsNoSuperuserCreatesRolesWithoutPasswordsAndSaysSo) {
  Migration m("nopw");
  Sql(Source().Url())
      .Exec(
          "CREATE ROLE nopw_app LOGIN PASSWORD 'Nopw-Pw1'; CREATE ROLE nopw_run LOGIN; "
          "CREATE ROLE nopw_keep LOGIN PASSWORD 'Keep-Pw1'");
  // A role the target has without a password, on purpose (peer or certificate logins).
  Sql(Target().Url()).Exec("CREATE ROLE nopw_keep LOGIN");
  Sql source(m.source_url());
  source.Exec(
      "CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO nopw_app; "
      "INSERT INTO t VALUES (1); GRANT SELECT ON t TO nopw_keep");
  WriteFile(m.yaml(), absl::StrReplaceAll(ReadFile(m.yaml()), {{m.source_url(), "${SRC}"}}));
  const std::map<std::string, std::string> superuser = {{"SRC", m.source_url()}};
  const std::map<std::string, std::string> run_role = {
      {"SRC", "postgres://nopw_run@127.0.0.1:" + std::to_string(Source().port()) + "/nopw"}};
  std::string out;
  ASSERT_EQ(RunPgflow({"init", m.yaml(), "--grant-to", "nopw_run"}, &out, superuser), 0) << out;
  m.CatchUpAndStop(*m.StartStreaming(run_role));

  Sql target(m.target_url());
  const std::string log = ReadFile(m.log());
  EXPECT_THAT(log, HasSubstr("roles created without their password, which only a superuser may "
                             "read in the source (pg_authid) and role nopw_run is not one: "
                             "nopw_app"));
  EXPECT_THAT(log, HasSubstr("ALTER ROLE \"nopw_app\" PASSWORD '...';"));
  EXPECT_EQ(target.Scalar("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'nopw_app'"),
            "t");
  EXPECT_EQ(target.Scalar("SELECT tableowner FROM pg_tables WHERE tablename = 't'"), "nopw_app");

  ASSERT_EQ(RunPgflow({"roles", m.yaml()}, &out, superuser), 0) << out;
  EXPECT_THAT(out, HasSubstr("roles given the password they lacked: nopw_app\n"));
  const std::string secret = "SELECT rolpassword FROM pg_authid WHERE rolname = 'nopw_app'";
  EXPECT_EQ(target.Scalar(secret), source.Scalar(secret));
  EXPECT_EQ(target.Scalar("SELECT shobj_description('nopw_app'::regrole, 'pg_authid') IS NULL"),
            "t");
  // The role pgflow did not create keeps having none.
  EXPECT_EQ(target.Scalar("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'nopw_keep'"),
            "t");
}

// Teardown gives keyless tables back the replica identity they had (but one the application
// chose), and removes the sink's schema from the target.
TEST(MigrationTest, TeardownGivesBackWhatPgflowChangedAndClearsTheTarget) {
  Migration m("retire");
  Sql source(m.source_url());
  source.Exec(
      "CREATE TABLE keyless (a int); CREATE TABLE chosen (a int); "
      "ALTER TABLE chosen REPLICA IDENTITY FULL; CREATE TABLE keyed (id int PRIMARY KEY); "
      "INSERT INTO keyless VALUES (1); INSERT INTO chosen VALUES (1)");
  auto pgflow = m.StartStreaming();
  source.Exec("CREATE TABLE later (b int); INSERT INTO later VALUES (2)");  // the capture's FULL
  m.CatchUpAndStop(*pgflow);
  const std::string identities =
      "SELECT string_agg(relname || '=' || relreplident::text, ' ' ORDER BY relname) FROM pg_class "
      "WHERE relname IN ('keyless', 'chosen', 'keyed', 'later')";
  EXPECT_EQ(source.Scalar(identities), "chosen=f keyed=d keyless=f later=f");
  // The target's copy has the identity the application gave each table.
  EXPECT_THAT(Sql(m.target_url()).Scalar(identities), HasSubstr("chosen=f keyed=d keyless=d"));

  // Something not pgflow's in schema pgflow of the target: never dropped with it.
  Sql target(m.target_url());
  target.Exec("CREATE TYPE pgflow.kept AS ENUM ('a')");
  std::string out;
  ASSERT_EQ(RunPgflow({"teardown", m.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("which still holds what is not pgflow's: type pgflow.kept (once "
                             "none of it is needed: `DROP SCHEMA pgflow CASCADE` as its owner)"));
  EXPECT_EQ(target.Scalar("SELECT to_regtype('pgflow.kept') IS NOT NULL AND "
                          "to_regclass('pgflow.applied') IS NULL"),
            "t");
  EXPECT_THAT(out, HasSubstr("removed REPLICA IDENTITY FULL that pgflow set on keyless (DEFAULT "
                             "again)"));
  EXPECT_THAT(out, HasSubstr("removed REPLICA IDENTITY FULL that pgflow set on later"));
  target.Exec("DROP TYPE pgflow.kept");
  ASSERT_EQ(RunPgflow({"teardown", m.yaml()}, &out), 0) << out;
  EXPECT_THAT(out,
              HasSubstr("removed schema pgflow (the sink's applied position and pending DDL)"));
  EXPECT_EQ(source.Scalar(identities), "chosen=f keyed=d keyless=d later=d");
  const std::string schema = "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgflow'";
  EXPECT_EQ(source.Scalar(schema), "0");
  EXPECT_EQ(Sql(m.target_url()).Scalar(schema), "0");
  ASSERT_EQ(RunPgflow({"teardown", m.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("nothing to remove"));
}

}  // namespace
}  // namespace pgflow::testing
