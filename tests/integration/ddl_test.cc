// Schema changes flowing through the stream: DDL captured by pgflow's event triggers in the
// source, passed on in order as `ddl` events (jsonl), replayed on a PostgreSQL target, under a
// concurrent write load, across rollbacks and a kill -9; and `pgflow init` / `teardown`.

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/support/replication.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TestCluster& Source() { return SharedCluster(0); }
TestCluster& Target() { return SharedCluster(1); }

// `pg_dump --schema-only` of one schema, without what differs between two clusters by nature
// (comments, SET lines, the \restrict token of recent pg_dump versions, ownership).
std::string SchemaDump(const TestCluster& cluster, const std::string& database,
                       const std::string& schema) {
  std::string command = "pg_dump -h 127.0.0.1 -p " + std::to_string(cluster.port()) +
                        " -U postgres --schema-only --no-owner --no-privileges -n " + schema + " " +
                        database;
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  if (pipe == nullptr) return "";
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof(buf), pipe) != nullptr) {
    std::string line(buf);
    if (line.starts_with("--") || line.starts_with("SET ") ||
        line.starts_with("SELECT pg_catalog") || line.starts_with("\\restrict") ||
        line.starts_with("\\unrestrict") || line == "\n") {
      continue;
    }
    out += line;
  }
  EXPECT_EQ(pclose(pipe), 0) << command;
  return out;
}

// Every table of `schema` holds the same rows on both sides.
void ExpectSameTables(const Replication& r, const std::string& schema) {
  auto tables = Sql(r.source_url())
                    .Query(
                        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) "
                        "FROM pg_tables WHERE schemaname = '" +
                        schema + "' ORDER BY 1");
  ASSERT_FALSE(tables.empty());
  for (const auto& t : tables) {
    std::string q = "SELECT row_to_json(row_)::text AS r FROM " + t[0] + " row_ ORDER BY r";
    EXPECT_EQ(Sql(r.source_url()).Query(q), Sql(r.target_url()).Query(q)) << t[0] << " differs";
  }
}

// Index of the first jsonl event for which `match` holds, or -1.
template <typename Match>
int FindEvent(const std::vector<nlohmann::json>& events, Match match) {
  for (size_t i = 0; i < events.size(); ++i) {
    if (match(events[i])) return static_cast<int>(i);
  }
  return -1;
}

bool IsDdl(const nlohmann::json& e, const std::string& tag, const std::string& identity) {
  return e.value("op", "") == "ddl" && e.value("tag", "") == tag &&
         e.value("identity", "") == identity;
}

TEST(DdlTest, EveryStatementUnderAWriteLoadEndsIdentical) {
  TempDir dir;
  Replication r(Source(), Target(), "load", "[app.*]", "{mode: initial, workers: 2}",
                "  out: {jsonl: {path: " + dir.File("out.jsonl") + "}, flush_interval: 50ms}\n");
  Sql sql(r.source_url());
  sql.Exec(R"sql(
    CREATE SCHEMA app;
    CREATE TABLE app.t (id int PRIMARY KEY, v text, a text, b int, n int);
    INSERT INTO app.t SELECT g, 'v' || g, 'a' || g, g, g FROM generate_series(1, 500) g;
    CREATE TABLE app.r (id int PRIMARY KEY, note text);
    INSERT INTO app.r SELECT g, 'r' || g FROM generate_series(1, 50) g;
    CREATE TABLE app.gone (id int PRIMARY KEY);
    INSERT INTO app.gone SELECT generate_series(1, 10);
    CREATE TABLE app.trunc (id int PRIMARY KEY, x text);
    INSERT INTO app.trunc SELECT g, 'x' FROM generate_series(1, 20) g;
  )sql");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());

  // Writes to columns no statement below touches, all along.
  BackgroundWriter writer(r.source_url(), [](int64_t n, std::mt19937_64& rng) {
    int64_t id = 1000 + n;
    int64_t old = 1 + static_cast<int64_t>(rng() % 500);
    return "BEGIN; INSERT INTO app.t (id, v) VALUES (" + std::to_string(id) + ", 'w" +
           std::to_string(n) + "'); UPDATE app.t SET v = 'u" + std::to_string(n) +
           "' WHERE id = " + std::to_string(old) +
           (n % 7 == 0 ? "; DELETE FROM app.t WHERE id = " + std::to_string(id - 3) : "") +
           "; COMMIT";
  });
  // Lets the writer commit between two steps, so that its transactions neighbour the DDL.
  auto pause = [&writer] {
    const int64_t before = writer.transactions();
    ASSERT_TRUE(
        WaitFor([&] { return writer.transactions() >= before + 2; }, std::chrono::seconds(30)));
  };
  // DDL and writes in the same transaction, and in the neighbouring ones.
  sql.Exec(
      "BEGIN; UPDATE app.t SET a = 'before add' WHERE id = 1; "
      "ALTER TABLE app.t ADD COLUMN c text NOT NULL DEFAULT 'dflt'; "
      "UPDATE app.t SET c = 'after add' WHERE id = 2; COMMIT");
  sql.Exec("INSERT INTO app.t (id, v, c) VALUES (900001, 'with c', 'c value')");
  pause();
  sql.Exec("ALTER TABLE app.t RENAME COLUMN a TO a2");
  sql.Exec("UPDATE app.t SET a2 = 'renamed' WHERE id = 3");
  pause();
  sql.Exec(
      "BEGIN; ALTER TABLE app.t ALTER COLUMN n TYPE bigint; "
      "UPDATE app.t SET n = 5000000000 WHERE id = 4; COMMIT");
  pause();
  sql.Exec("ALTER TABLE app.t DROP COLUMN b");
  sql.Exec("INSERT INTO app.t (id, v, a2, n) VALUES (900002, 'no b', 'a', 7)");
  pause();
  sql.Exec("CREATE INDEX t_v_idx ON app.t (v) WHERE v IS NOT NULL");
  pause();
  sql.Exec(
      "BEGIN; CREATE TABLE app.fresh (id bigserial PRIMARY KEY, note text DEFAULT 'n'); "
      "INSERT INTO app.fresh (note) SELECT 'f' || g FROM generate_series(1, 30) g; COMMIT");
  sql.Exec("UPDATE app.fresh SET note = 'changed' WHERE id = 5");
  pause();
  sql.Exec("ALTER TABLE app.r RENAME TO r2");
  sql.Exec(
      "INSERT INTO app.r2 VALUES (51, 'after rename'); UPDATE app.r2 SET note = 'u' WHERE id = 1");
  pause();
  sql.Exec("DROP TABLE app.gone");
  sql.Exec(
      "BEGIN; TRUNCATE app.trunc; INSERT INTO app.trunc VALUES (100, 'after truncate'); COMMIT");
  pause();
  writer.Stop();
  ASSERT_GT(writer.transactions(), 0);
  r.DrainAndStop(*pgflow);

  EXPECT_EQ(SchemaDump(Source(), "load", "app"), SchemaDump(Target(), "load", "app"));
  ExpectSameTables(r, "app");
  EXPECT_EQ(Sql(r.target_url()).Scalar("SELECT to_regclass('app.gone') IS NULL"), "t");

  // The jsonl sink: each ddl event in its place, the rows after it in their new shape.
  std::vector<nlohmann::json> events = ReadJsonl(dir.File("out.jsonl"));
  int add = FindEvent(events, [](const auto& e) {
    return IsDdl(e, "ALTER TABLE", "app.t") && e["ddl"]["table"]["columns"].size() == 6;
  });
  ASSERT_GE(add, 0);
  int before = FindEvent(events, [](const auto& e) {
    return e.value("op", "") == "update" && e["after"].value("a", "") == "before add";
  });
  int after = FindEvent(events, [](const auto& e) {
    return e.value("op", "") == "update" && e["after"].value("c", "") == "after add";
  });
  ASSERT_GE(before, 0);
  ASSERT_GE(after, 0);
  EXPECT_LT(before, add);
  EXPECT_GT(after, add);
  EXPECT_FALSE(events[before]["after"].contains("c"));
  EXPECT_EQ(events[add]["lsn"], events[after]["lsn"]) << "one transaction";
  int rename = FindEvent(events, [](const auto& e) {
    return IsDdl(e, "ALTER TABLE", "app.t") && e["ddl"]["table"]["columns"][2]["name"] == "a2";
  });
  int renamed_row = FindEvent(events, [](const auto& e) {
    return e.value("op", "") == "update" && e["after"].value("a2", "") == "renamed";
  });
  ASSERT_GE(rename, 0);
  EXPECT_GT(renamed_row, rename);
  EXPECT_GE(
      FindEvent(events, [](const auto& e) { return IsDdl(e, "CREATE INDEX", "app.t_v_idx"); }), 0);
  EXPECT_GE(FindEvent(events, [](const auto& e) { return IsDdl(e, "CREATE TABLE", "app.fresh"); }),
            0);
  EXPECT_GE(FindEvent(events, [](const auto& e) { return IsDdl(e, "DROP TABLE", "app.gone"); }), 0);
  EXPECT_GE(FindEvent(events, [](const auto& e) { return IsDdl(e, "ALTER TABLE", "app.r2"); }), 0);
}

TEST(DdlTest, RolledBackDdlLeavesNoTrace) {
  TempDir dir;
  Replication r(Source(), Target(), "rollback", "[public.t]", "{mode: initial}",
                "  out: {jsonl: {path: " + dir.File("out.jsonl") + "}, flush_interval: 50ms}\n");
  Sql sql(r.source_url());
  sql.Exec("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  sql.Exec(
      "BEGIN; ALTER TABLE t ADD COLUMN ghost int; INSERT INTO t VALUES (2, 'two', 2); "
      "CREATE INDEX t_ghost ON t (ghost); ROLLBACK");
  sql.Exec("INSERT INTO t VALUES (3, 'three')");
  r.DrainAndStop(*pgflow);
  EXPECT_EQ(SchemaDump(Source(), "rollback", "public"), SchemaDump(Target(), "rollback", "public"));
  ExpectSameRows(r, "t", "id");
  std::string jsonl = ReadFile(dir.File("out.jsonl"));
  EXPECT_THAT(jsonl, Not(HasSubstr("ghost")));
  EXPECT_THAT(jsonl, Not(HasSubstr("\"ddl\"")));
}

TEST(DdlTest, KillBetweenADdlAndTheNextChangeThenRestart) {
  Replication r(Source(), Target(), "killed", "[public.*]", "{mode: initial}");
  Sql sql(r.source_url());
  sql.Exec(
      "CREATE TABLE t (id int PRIMARY KEY, v text); "
      "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  sql.Exec("ALTER TABLE t ADD COLUMN extra int DEFAULT 7, ALTER COLUMN v TYPE varchar(20)");
  Sql target(r.target_url());
  ASSERT_TRUE(WaitFor(
      [&] {
        return target.Scalar(
                   "SELECT count(*) FROM information_schema.columns WHERE table_name = "
                   "'t' AND column_name = 'extra'") == "1";
      },
      std::chrono::seconds(60)))
      << ReadFile(r.log());
  pgflow->Signal(SIGKILL);
  pgflow->Wait(std::chrono::seconds(10));
  sql.Exec("INSERT INTO t VALUES (101, 'new', 8); UPDATE t SET extra = 9 WHERE id = 1");
  sql.Exec("ALTER TABLE t DROP COLUMN extra");
  sql.Exec("INSERT INTO t VALUES (102, 'newer')");
  pgflow = r.Start();
  r.DrainAndStop(*pgflow);
  EXPECT_EQ(SchemaDump(Source(), "killed", "public"), SchemaDump(Target(), "killed", "public"));
  ExpectSameRows(r, "t", "id");
}

TEST(DdlTest, PerSinkPolicyAndRefusal) {
  TempDir dir;
  // The target takes tables and columns but not indexes; the jsonl sink ignores DDL.
  Replication r(Source(), Target(), "policy", "[app.*]", "{mode: never}",
                "  out: {jsonl: {path: " + dir.File("out.jsonl") +
                    "}, ddl: {mode: ignore}, flush_interval: 50ms}\n",
                "}, ddl: {exclude: [index]");
  Sql sql(r.source_url());
  sql.Exec("CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY, v text)");
  Sql(r.target_url()).Exec("CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY, v text)");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  sql.Exec("CREATE INDEX t_v ON app.t (v); ALTER TABLE app.t ADD COLUMN w int");
  sql.Exec("INSERT INTO app.t VALUES (1, 'one', 1)");
  ASSERT_TRUE(r.CaughtUp(std::chrono::seconds(60))) << ReadFile(r.log());
  Sql target(r.target_url());
  EXPECT_EQ(target.Scalar("SELECT w FROM app.t WHERE id = 1"), "1");
  EXPECT_EQ(target.Scalar("SELECT to_regclass('app.t_v') IS NULL"), "t");
  EXPECT_THAT(ReadFile(dir.File("out.jsonl")), Not(HasSubstr("\"ddl\"")));

  // A view cannot be replayed: the pipeline stops, naming it, before acknowledging it.
  std::string confirmed = r.Confirmed();
  sql.Exec("CREATE VIEW app.names AS SELECT v FROM app.t");
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 1) << ReadFile(r.log());
  EXPECT_TRUE(r.LogHas("cannot replay CREATE VIEW of view app.names")) << ReadFile(r.log());
  EXPECT_TRUE(r.LogHas("ddl.exclude"));
  EXPECT_EQ(r.Confirmed(), confirmed);
}

TEST(DdlTest, TableMovedIntoAFollowedSchemaIsCopiedWithItsRows) {
  Replication r(Source(), Target(), "moved", "[app.*]", "{mode: initial}");
  Sql sql(r.source_url());
  sql.Exec(
      "CREATE SCHEMA app; CREATE SCHEMA elsewhere; "
      "CREATE TABLE app.t (id int PRIMARY KEY); "
      "CREATE TABLE elsewhere.m (id int PRIMARY KEY, v text); "
      "INSERT INTO elsewhere.m SELECT g, 'm' || g FROM generate_series(1, 300) g");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  sql.Exec("ALTER TABLE elsewhere.m SET SCHEMA app");
  sql.Exec("UPDATE app.m SET v = 'changed' WHERE id = 7");
  ASSERT_TRUE(WaitFor(
      [&] {
        Sql target(r.target_url());
        return target.Scalar("SELECT to_regclass('app.m') IS NOT NULL") == "t" &&
               target.Scalar("SELECT count(*) FROM app.m") == "300";
      },
      std::chrono::seconds(60)))
      << ReadFile(r.log());
  r.DrainAndStop(*pgflow);
  ExpectSameRows(r, "app.m", "id");
}

TEST(DdlTest, ForgedMessagesAndHostileNamesChangeNothingOnTheTarget) {
  TempDir dir;
  Replication r(Source(), Target(), "hostile", "[public.*]", "{mode: initial}",
                "  out: {jsonl: {path: " + dir.File("out.jsonl") + "}, flush_interval: 50ms}\n");
  Sql sql(r.source_url());
  sql.Exec(
      "CREATE TABLE t (id int PRIMARY KEY, v int); CREATE TABLE victim (id int PRIMARY KEY);"
      "INSERT INTO victim VALUES (1); CREATE ROLE mallory LOGIN;"
      "GRANT CREATE, USAGE ON SCHEMA public TO mallory");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  // Anyone may emit a message with pgflow's prefix; it is not DDL.
  Sql mallory(Source().Url("hostile") + "?user=mallory");
  mallory.Exec(
      "SELECT pg_logical_emit_message(true, 'pgflow.ddl', '{\"tag\": \"DROP TABLE\", "
      "\"object_type\": \"table\", \"schema\": \"public\", \"name\": \"victim\", "
      "\"dropped\": true}')");
  // An index whose name imitates the rest of its definition.
  mallory.Exec("CREATE TABLE m (id int PRIMARY KEY, v int); INSERT INTO m VALUES (1, 1)");
  mallory.Exec("CREATE INDEX \"a ON public.m USING btree (v); DROP TABLE victim; --\" ON m (v)");
  sql.Exec("INSERT INTO t VALUES (1, 1)");
  r.DrainAndStop(*pgflow);
  EXPECT_TRUE(r.LogHas("that pgflow's DDL capture did not write")) << ReadFile(r.log());
  EXPECT_EQ(Sql(r.target_url()).Scalar("SELECT to_regclass('public.victim') IS NOT NULL"), "t");
  EXPECT_EQ(Sql(r.target_url())
                .Scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'm' "
                        "AND indexname LIKE 'a ON%'"),
            "1");
  ExpectSameRows(r, "m", "id");
  ExpectSameRows(r, "t", "id");
  EXPECT_EQ(FindEvent(ReadJsonl(dir.File("out.jsonl")),
                      [](const auto& e) { return e.value("tag", "") == "DROP TABLE"; }),
            -1);
}

TEST(DdlTest, RewritesWithComputedValuesInheritanceAndConstraintDrops) {
  Replication r(Source(), Target(), "rewrite", "[public.*]", "{mode: initial}");
  Sql sql(r.source_url());
  sql.Exec(
      "CREATE TABLE p (id int PRIMARY KEY, price int, code text);"
      "INSERT INTO p SELECT g, g, 'c' || g FROM generate_series(1, 200) g;"
      "CREATE TABLE parent (id int PRIMARY KEY, v text);"
      "CREATE TABLE child (extra int) INHERITS (parent);"
      "ALTER TABLE child ADD PRIMARY KEY (id);"
      "INSERT INTO child VALUES (1, 'one', 1);"
      "CREATE TABLE u (id int PRIMARY KEY, code text, CONSTRAINT u_code UNIQUE (code));"
      "INSERT INTO u VALUES (1, 'same')");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  // Values computed by the source during a rewrite reach the target by a backfill.
  sql.Exec("ALTER TABLE p ALTER COLUMN price TYPE bigint USING price * 100");
  sql.Exec("ALTER TABLE p ADD COLUMN token uuid DEFAULT gen_random_uuid()");
  // A column added to a parent reaches its inheritance child too.
  sql.Exec("ALTER TABLE parent ADD COLUMN w int DEFAULT 5");
  sql.Exec("INSERT INTO child VALUES (2, 'two', 2, 6)");
  // A dropped UNIQUE constraint stops rejecting rows on the target as well.
  sql.Exec("ALTER TABLE u DROP CONSTRAINT u_code; INSERT INTO u VALUES (2, 'same')");
  // A column dropped and added again under its name is a new column.
  sql.Exec("ALTER TABLE p DROP COLUMN code, ADD COLUMN code int DEFAULT 1");
  ASSERT_TRUE(WaitFor(
      [&] {
        return Sql(r.target_url()).Scalar("SELECT count(*) FROM p WHERE price >= 100") == "200";
      },
      std::chrono::seconds(60)))
      << ReadFile(r.log());
  ASSERT_TRUE(WaitFor(
      [&] {
        return Sql(r.target_url()).Scalar("SELECT count(*) FROM p p1 JOIN p p2 USING (token)") ==
               "200";
      },
      std::chrono::seconds(60)))
      << ReadFile(r.log());
  r.DrainAndStop(*pgflow);
  // (pgflow copies an inheritance child as a table of its own: the tables are compared alone.)
  for (const char* table : {"p", "u", "ONLY parent", "child"}) ExpectSameRows(r, table, "id");
  EXPECT_EQ(Sql(r.target_url()).Scalar("SELECT w FROM child WHERE id = 2"), "6");
  EXPECT_EQ(
      Sql(r.target_url()).Scalar("SELECT count(*) FROM pg_constraint WHERE conname = 'u_code'"),
      "0");
}

// Foreign keys, checks and unique constraints of tables created or altered while streaming
// reach the target (checked ones added NOT VALID, then validated); one the target cannot hold
// is a warning naming it and the statement that adds it.
TEST(DdlTest, ConstraintsCreatedWhileStreamingAreReplayedOrNamed) {
  Replication r(Source(), Target(), "constraints", "[public.*]", "{mode: never}");
  Sql sql(r.source_url());
  sql.Exec("CREATE SCHEMA outside; CREATE TABLE outside.ref (id int PRIMARY KEY)");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  sql.Exec(
      "CREATE TABLE parent (id int PRIMARY KEY);"
      "CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id),"
      "  qty int CHECK (qty > 0), code text UNIQUE, out_id int REFERENCES outside.ref (id));"
      "INSERT INTO outside.ref VALUES (7); INSERT INTO parent VALUES (1);"
      "INSERT INTO child VALUES (1, 1, 5, 'a', 7)");
  sql.Exec("ALTER TABLE child ADD CONSTRAINT qty_small CHECK (qty < 1000)");
  r.DrainAndStop(*pgflow);
  ExpectSameRows(r, "child", "id");
  auto constraints = Sql(r.target_url())
                         .Query(
                             "SELECT conname || ':' || contype::text || ':' || convalidated FROM "
                             "pg_constraint WHERE conrelid = 'child'::regclass ORDER BY 1");
  std::vector<std::string> names;
  for (const auto& row : constraints) names.push_back(row[0]);
  EXPECT_THAT(names, ::testing::ElementsAre("child_code_key:u:true", "child_parent_id_fkey:f:true",
                                            "child_pkey:p:true", "child_qty_check:c:true",
                                            "qty_small:c:true"))
      << ReadFile(r.log());
  EXPECT_TRUE(r.LogHas("constraint child_out_id_fkey on \"public\".\"child\" not replayed"))
      << ReadFile(r.log());
  EXPECT_TRUE(
      r.LogHas("Add it on the target once it can hold: ALTER TABLE \"public\".\"child\" "
               "ADD CONSTRAINT \"child_out_id_fkey\" FOREIGN KEY (out_id) REFERENCES "
               "outside.ref(id) NOT VALID"))
      << ReadFile(r.log());
}

TEST(DdlTest, APipelineRunByAnotherRoleAfterASuperuserInit) {
  Replication r(Source(), Target(), "roles", "[public.t]", "{mode: never}");
  Sql sql(r.source_url());
  sql.Exec(
      "CREATE TABLE t (id int PRIMARY KEY); CREATE ROLE replicator LOGIN REPLICATION;"
      "GRANT SELECT ON t TO replicator; GRANT CREATE ON DATABASE roles TO replicator;"
      "ALTER TABLE t OWNER TO replicator");
  Sql(r.target_url()).Exec("CREATE TABLE t (id int PRIMARY KEY)");
  std::string out;
  ASSERT_EQ(RunPgflow({"init", r.yaml()}, &out), 0) << out;
  // The same pipeline, run as the unprivileged role.
  std::string yaml = ReadFile(r.yaml());
  const std::string url = r.source_url();
  yaml.replace(yaml.find(url), url.size(), url + "?user=replicator");
  WriteFile(r.yaml(), yaml);
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  EXPECT_FALSE(r.LogHas("schema changes are not streamed")) << ReadFile(r.log());
  sql.Exec("ALTER TABLE t ADD COLUMN v text; INSERT INTO t VALUES (1, 'one')");
  r.DrainAndStop(*pgflow);
  ExpectSameRows(r, "t", "id");
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pgflow.pipelines WHERE name = 'roles'"), "1");
  // The registry steers what the capture does to publications: a role that is not a superuser
  // may not point it at a publication it does not own, nor change a pipeline's settings.
  Sql as_replicator(url + "?user=replicator");
  EXPECT_FALSE(as_replicator.Exec(
      "SELECT pgflow.register_pipeline('roles', 'pgflow_roles', 'pgflow_roles', 'skip', "
      "'{public}', '{*}')",
      /*expect_error=*/true));
  EXPECT_FALSE(as_replicator.Exec(
      "SELECT pgflow.register_pipeline('other', 'x', 'pgflow_roles', 'skip', '{public}', '{*}')",
      /*expect_error=*/true));
  EXPECT_EQ(sql.Scalar("SELECT keyless FROM pgflow.pipelines WHERE name = 'roles'"), "full");
}

// A target role that may not write rows as a replica is refused before anything is created,
// with the grant that lets it.
TEST(DdlTest, ATargetRoleWithoutSessionReplicationRoleIsRefusedAtOnce) {
  Replication r(Source(), Target(), "norepl", "[public.t]", "{mode: initial}");
  Sql(r.source_url()).Exec("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)");
  Sql(r.target_url())
      .Exec(
          "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plainwriter') "
          "THEN CREATE ROLE plainwriter LOGIN; END IF; END $$;"
          "GRANT CREATE ON DATABASE norepl TO plainwriter; GRANT CREATE ON SCHEMA public TO "
          "plainwriter");
  std::string yaml = ReadFile(r.yaml());
  const std::string url = r.target_url();
  yaml.replace(yaml.find(url), url.size(), "'" + url + "?user=plainwriter'");
  WriteFile(r.yaml(), yaml);
  std::string out;
  EXPECT_EQ(RunPgflow({"run", r.yaml()}, &out), 1);
  EXPECT_THAT(out, HasSubstr("role plainwriter may not set session_replication_role"));
  EXPECT_THAT(out, HasSubstr("GRANT SET ON PARAMETER session_replication_role TO \"plainwriter\""));
  // No summary of zeros before the error, to be read as a result.
  EXPECT_THAT(out, Not(HasSubstr("snapshot rows copied")));
  EXPECT_EQ(Sql(r.target_url())
                .Scalar("SELECT count(*) FROM pg_tables WHERE schemaname IN "
                        "('public', 'pgflow')"),
            "0");
  // Granted, the same pipeline runs.
  Sql(r.target_url()).Exec("GRANT SET ON PARAMETER session_replication_role TO plainwriter");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  r.DrainAndStop(*pgflow);
  ExpectSameRows(r, "t", "id");
}

TEST(DdlTest, InitAndTeardown) {
  Replication r(Source(), Target(), "lifecycle", "[public.t]", "{mode: initial}");
  Sql sql(r.source_url());
  sql.Exec("CREATE TABLE t (id int PRIMARY KEY)");
  std::string out;
  ASSERT_EQ(RunPgflow({"init", r.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("installed DDL capture"));
  EXPECT_THAT(out, HasSubstr("created publication pgflow_lifecycle"));
  EXPECT_THAT(out, HasSubstr("created replication slot pgflow_lifecycle"));
  ASSERT_EQ(RunPgflow({"init", r.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, Not(HasSubstr("created")));
  EXPECT_THAT(out, Not(HasSubstr("NOTICE")));
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgflow%'"), "3");

  // Changes made between init and the first run are not lost.
  sql.Exec("INSERT INTO t VALUES (1)");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  sql.Exec("INSERT INTO t VALUES (2)");
  ASSERT_EQ(RunPgflow({"teardown", r.yaml()}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("stop the pgflow running pipeline lifecycle first"));
  r.DrainAndStop(*pgflow);
  ExpectSameRows(r, "t", "id");

  ASSERT_EQ(RunPgflow({"teardown", r.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("removed replication slot pgflow_lifecycle"));
  EXPECT_THAT(out, HasSubstr("removed publication pgflow_lifecycle"));
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_replication_slots "
                       "WHERE slot_name = 'pgflow_lifecycle'"),
            "0");
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgflow%'"), "0");
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgflow'"), "0");
  ASSERT_EQ(RunPgflow({"teardown", r.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("nothing to remove"));
}

}  // namespace
}  // namespace pgflow::testing
