// End to end: a real PostgreSQL, the real pgflow binary, a jsonl file; each test checks what a
// user would check: the lines written, and the position acknowledged to the slot.

#include <signal.h>

#include <atomic>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

#include "common/postgres/conninfo.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

// One pipeline in its own database, with its output file and log.
class Pipeline {
 public:
  // `extra` is YAML added at the top level (after `source`).
  Pipeline(const std::string& name, const std::string& tables, const std::string& extra = "")
      : name_(name) {
    Sql admin(SharedCluster().Url());
    admin.Exec("CREATE DATABASE " + name);
    yaml_ = dir_.File("pipeline.yaml");
    WriteFile(yaml_, "pipeline: " + name + "\n" +
                         "source:\n"
                         "  postgres:\n"
                         "    url: ${SOURCE_URL}\n"
                         "    tables: " +
                         tables + "\n" +
                         "    snapshot: {mode: never}\n"
                         "    status_interval: 200ms\n" +
                         extra +
                         "sinks:\n"
                         "  out: {jsonl: {path: " +
                         output() + "}, flush_interval: 50ms}\n");
  }
  std::string url() const { return SharedCluster().Url(name_); }
  std::string output() const { return dir_.File("out.jsonl"); }
  std::string log() const { return dir_.File("pgflow.log"); }
  std::string yaml() const { return yaml_; }

  // Starts pgflow and waits until it streams.
  std::unique_ptr<PgflowProcess> Start() {
    size_t before = CountInLog("streaming from");
    auto p = std::make_unique<PgflowProcess>(
        std::vector<std::string>{"run", yaml_, "--progress", "1"}, log(),
        std::map<std::string, std::string>{{"SOURCE_URL", url()}});
    bool up = WaitFor([&] { return CountInLog("streaming from") > before || !p->Running(); },
                      std::chrono::seconds(30));
    EXPECT_TRUE(up && p->Running()) << ReadFile(log());
    return p;
  }
  size_t CountInLog(const std::string& needle) const {
    std::string text = ReadFile(log());
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
      ++n;
    return n;
  }
  // The lines written whole so far (the output is read while pgflow appends to it).
  std::vector<json> Lines() const { return ReadJsonlWritten(output()); }
  // Waits until the output has at least `n` lines.
  std::vector<json> WaitForLines(size_t n) const {
    std::vector<json> lines;
    WaitFor([&] { return (lines = Lines()).size() >= n; }, std::chrono::seconds(30));
    EXPECT_GE(lines.size(), n) << ReadFile(log());
    return lines;
  }
  std::string ConfirmedLsn() {
    Sql sql(url());
    return sql.Scalar(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = "
        "'pgflow_" +
        name_ + "'");
  }
  // "t" when the slot's confirmed position is at or past `lsn`.
  std::string ConfirmedAtLeast(const std::string& lsn) {
    Sql sql(url());
    return sql.Scalar("SELECT confirmed_flush_lsn >= '" + lsn +
                      "' FROM pg_replication_slots "
                      "WHERE slot_name = 'pgflow_" +
                      name_ + "'");
  }

 private:
  std::string name_;
  TempDir dir_;
  std::string yaml_;
};

TEST(StreamTest, EveryOperationAndTypeArrivesInCommitOrder) {
  Pipeline p("types", "[public.kinds, public.other]");
  Sql sql(p.url());
  sql.Exec(R"sql(
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TABLE kinds (
      id bigint PRIMARY KEY, i2 smallint, i4 integer, n numeric(12,3), f4 real, f8 double precision,
      b boolean, t text, vc varchar(20), by bytea, u uuid, d date, ts timestamp, tstz timestamptz,
      iv interval, j json, jb jsonb, ia integer[], ta text[], m mood, ma mood[], big text);
    -- Stored out of line and uncompressed: an update that leaves it alone does not resend it.
    ALTER TABLE kinds ALTER COLUMN big SET STORAGE EXTERNAL;
    CREATE TABLE other (k text PRIMARY KEY, v int);
  )sql");
  auto pgflow = p.Start();

  sql.Exec(R"sql(
    INSERT INTO kinds VALUES (1, -2, 40000, 12345.678, 1.5, 3.141592653589793, true, 'tab	"quote"',
      'vc', '\xdeadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29',
      '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02', '1 day 02:03:04',
      '{"a": [1, 2]}', '{"b": {"c": null}}', '{1,NULL,3}', '{"x y","z\"w",NULL}', 'happy',
      '{sad,ok}', repeat('toast me ', 2000));
    INSERT INTO kinds (id) VALUES (2);
  )sql");
  // An update that leaves the TOASTed column untouched, then one that changes the key.
  sql.Exec("UPDATE kinds SET i4 = 41 WHERE id = 1");
  sql.Exec("UPDATE kinds SET id = 3 WHERE id = 2");
  // A multi-table transaction, and a rolled-back one that must not appear.
  sql.Exec(
      "BEGIN; INSERT INTO other VALUES ('a', 1); DELETE FROM kinds WHERE id = 3; "
      "INSERT INTO other VALUES ('b', 2); COMMIT;");
  sql.Exec("BEGIN; INSERT INTO other VALUES ('rolled back', 0); ROLLBACK;");
  sql.Exec("TRUNCATE other");
  sql.Exec("INSERT INTO other VALUES ('last', 9)");

  auto lines = p.WaitForLines(9);
  ASSERT_EQ(lines.size(), 9u);
  std::vector<std::string> ops;
  for (const json& l : lines) {
    ops.push_back(l["op"].get<std::string>() + ":" + l["table"].get<std::string>());
  }
  EXPECT_THAT(ops, ::testing::ElementsAre("insert:kinds", "insert:kinds", "update:kinds",
                                          "update:kinds", "insert:other", "delete:kinds",
                                          "insert:other", "truncate:other", "insert:other"));

  const json& row = lines[0]["after"];
  EXPECT_EQ(lines[0]["schema"], "public");
  EXPECT_EQ(row["id"], 1);
  EXPECT_EQ(row["i2"], -2);
  EXPECT_EQ(row["i4"], 40000);
  EXPECT_EQ(row["n"], "12345.678");
  EXPECT_EQ(row["f4"], 1.5);
  EXPECT_EQ(row["f8"], 3.141592653589793);
  EXPECT_EQ(row["b"], true);
  EXPECT_EQ(row["t"], "tab\t\"quote\"");
  EXPECT_EQ(row["vc"], "vc");
  EXPECT_EQ(row["by"], "3q2+7w==");
  EXPECT_EQ(row["u"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  EXPECT_EQ(row["d"], "2024-02-29");
  EXPECT_EQ(row["ts"], "2024-01-02T03:04:05.123456");
  EXPECT_EQ(row["tstz"], "2024-01-02T01:04:05+00:00");
  EXPECT_EQ(row["iv"], "P1DT2H3M4S");
  EXPECT_EQ(row["j"], json::parse(R"({"a": [1, 2]})"));
  EXPECT_EQ(row["jb"], json::parse(R"({"b": {"c": null}})"));
  EXPECT_EQ(row["ia"], json::parse("[1, null, 3]"));
  EXPECT_EQ(row["ta"], json::parse(R"(["x y", "z\"w", null])"));
  EXPECT_EQ(row["m"], "happy");
  EXPECT_EQ(row["ma"], json::parse(R"(["sad", "ok"])"));
  EXPECT_EQ(row["big"].get<std::string>().size(), 18000u);
  EXPECT_FALSE(lines[0].contains("unchanged_toast"));

  // NULLs are JSON nulls.
  EXPECT_EQ(lines[1]["after"]["id"], 2);
  EXPECT_TRUE(lines[1]["after"]["t"].is_null());
  EXPECT_TRUE(lines[1]["after"]["ia"].is_null());

  // The TOASTed column was not sent: absent from `after`, listed, never given a value.
  const json& toast = lines[2];
  EXPECT_EQ(toast["after"]["i4"], 41);
  EXPECT_FALSE(toast["after"].contains("big"));
  EXPECT_EQ(toast["unchanged_toast"], json::parse(R"(["big"])"));
  EXPECT_FALSE(toast.contains("before"));  // key unchanged under REPLICA IDENTITY DEFAULT

  // A key change carries the old key.
  EXPECT_EQ(lines[3]["before"], json::parse(R"({"id": 2})"));
  EXPECT_EQ(lines[3]["after"]["id"], 3);

  // One transaction: same lsn and xid, consecutive sequence numbers.
  EXPECT_EQ(lines[4]["lsn"], lines[6]["lsn"]);
  EXPECT_EQ(lines[4]["xid"], lines[5]["xid"]);
  EXPECT_EQ(lines[4]["seq"], 0);
  EXPECT_EQ(lines[5]["seq"], 1);
  EXPECT_EQ(lines[6]["seq"], 2);
  EXPECT_EQ(lines[5]["before"], json::parse(R"({"id": 3})"));
  EXPECT_NE(lines[3]["lsn"], lines[4]["lsn"]);
  EXPECT_THAT(lines[4]["commit_ts"].get<std::string>(),
              ::testing::MatchesRegex(
                  "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?Z"));
  EXPECT_EQ(lines[7]["cascade"], false);
  EXPECT_EQ(lines[8]["after"], json::parse(R"({"k": "last", "v": 9})"));
  for (const json& l : lines) EXPECT_EQ(l.dump().find("rolled back"), std::string::npos);

  // SIGINT drains, flushes, acknowledges and exits 0; the slot then sits at or past the
  // last commit, so a restart writes nothing again.
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(p.log());
  EXPECT_EQ(p.ConfirmedAtLeast(lines[8]["lsn"]), "t");
  auto again = p.Start();
  sql.Exec("INSERT INTO other VALUES ('after restart', 10)");
  auto after = p.WaitForLines(10);
  EXPECT_EQ(after.size(), 10u);
  EXPECT_EQ(after.back()["after"]["k"], "after restart");
  again->Signal(SIGTERM);
  EXPECT_EQ(again->Wait(std::chrono::seconds(30)), 0) << ReadFile(p.log());
}

TEST(StreamTest, KillNineLosesNothingThatWasCommitted) {
  Pipeline p("crash", "[public.events]");
  Sql sql(p.url());
  sql.Exec("CREATE TABLE events (id bigint PRIMARY KEY, payload text, n int)");
  auto pgflow = p.Start();

  // A writer commits transactions of 20 inserts and 5 updates until told to stop.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> committed{0};
  std::thread writer([&] {
    Sql w(p.url());
    int64_t next = 1;
    while (!stop.load()) {
      std::string batch = "BEGIN;";
      for (int i = 0; i < 20; ++i, ++next) {
        batch += "INSERT INTO events VALUES (" + std::to_string(next) + ", md5('" +
                 std::to_string(next) + "'), 0);";
      }
      batch += "UPDATE events SET n = n + 1 WHERE id > " + std::to_string(next - 6) + ";COMMIT;";
      if (w.Exec(batch)) committed.store(next - 1);
    }
  });
  auto wait_rows = [&](int64_t n) {
    return WaitFor([&] { return committed.load() >= n; }, std::chrono::seconds(60));
  };
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(wait_rows(committed.load() + 2000));
    pgflow->Signal(SIGKILL);
    EXPECT_EQ(pgflow->Wait(std::chrono::seconds(10)), 128 + SIGKILL);
    ASSERT_TRUE(wait_rows(committed.load() + 1000));  // writes go on while pgflow is down
    pgflow = p.Start();
  }
  ASSERT_TRUE(wait_rows(committed.load() + 1000));
  stop.store(true);
  writer.join();
  const int64_t total = committed.load();
  // Once the slot confirms the end of the WAL, every change must be in the output.
  std::string end = sql.Scalar("SELECT pg_current_wal_lsn()");
  EXPECT_TRUE(WaitFor([&] { return p.ConfirmedAtLeast(end) == "t"; }, std::chrono::seconds(120)))
      << ReadFile(p.log());
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(p.log());

  // Every committed insert is in the output; an id seen twice is a replay of a change after
  // the last acknowledgement, and then it carries the same event id (lsn, seq).
  std::map<int64_t, std::set<std::string>> inserts;
  int64_t updates = 0;
  for (const json& l : p.Lines()) {
    if (l["op"] == "insert") {
      inserts[l["after"]["id"].get<int64_t>()].insert(l["lsn"].get<std::string>() + "/" +
                                                      std::to_string(l["seq"].get<int>()));
    } else if (l["op"] == "update") {
      ++updates;
    }
  }
  ASSERT_EQ(static_cast<int64_t>(inserts.size()), total);
  EXPECT_EQ(inserts.begin()->first, 1);
  EXPECT_EQ(inserts.rbegin()->first, total);
  for (const auto& [id, event_ids] : inserts) {
    EXPECT_EQ(event_ids.size(), 1u) << "id " << id << " arrived with different event ids";
  }
  EXPECT_GE(updates, total / 20 * 5);
}

TEST(StreamTest, ReconnectsAfterTheServerDropsTheStream) {
  Pipeline p("reconnect", "[public.t]");
  Sql sql(p.url());
  sql.Exec("CREATE TABLE t (id int PRIMARY KEY)");
  auto pgflow = p.Start();
  sql.Exec("INSERT INTO t VALUES (1)");
  p.WaitForLines(1);
  sql.Exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active");
  sql.Exec("INSERT INTO t VALUES (2)");
  EXPECT_TRUE(WaitFor([&] { return p.CountInLog("reconnected") > 0; }, std::chrono::seconds(30)))
      << ReadFile(p.log());
  sql.Exec("INSERT INTO t VALUES (3)");
  auto lines = p.WaitForLines(3);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[1]["after"]["id"], 2);
  EXPECT_EQ(lines[2]["after"]["id"], 3);
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

TEST(StreamTest, AConnectionCutMidTransactionUnderBackPressureLosesAndDoublesNothing) {
  Pipeline p("cut", "[public.big]", "buffer: {queue_bytes: 1MiB}\n");
  Sql sql(p.url());
  sql.Exec("CREATE TABLE big (id bigint PRIMARY KEY, pad text)");
  auto pgflow = p.Start();
  // One large transaction, then small ones; the WAL sender is terminated while the large one
  // streams, so the sinks hold part of it when the connection goes.
  sql.Exec("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g");
  for (int i = 0; i < 50; ++i) {
    sql.Exec("INSERT INTO big VALUES (" + std::to_string(300001 + i) + ", 'small')");
  }
  ASSERT_TRUE(
      WaitFor([&] { return std::ifstream(p.output()).peek() != EOF; }, std::chrono::seconds(30)));
  sql.Exec(
      "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
      "WHERE slot_name = 'pgflow_cut'");
  std::string end = sql.Scalar("SELECT pg_current_wal_lsn()");
  EXPECT_TRUE(WaitFor([&] { return p.ConfirmedAtLeast(end) == "t"; }, std::chrono::seconds(120)))
      << ReadFile(p.log());
  EXPECT_GT(p.CountInLog("reconnected"), 0u) << ReadFile(p.log());
  std::cerr << "[ info ] cut mid-transaction: " << p.CountInLog("took back") << " time(s)\n";
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
  std::map<int64_t, int> seen;
  for (const json& l : p.Lines()) ++seen[l["after"]["id"].get<int64_t>()];
  EXPECT_EQ(seen.size(), 300050u);
  int doubled = 0;
  for (const auto& [id, n] : seen) doubled += n > 1;
  EXPECT_EQ(doubled, 0);
}

TEST(StreamTest, QuietPipelineDoesNotPinWal) {
  Pipeline p("quiet", "[public.watched]");
  Sql sql(p.url());
  sql.Exec("CREATE TABLE watched (id int PRIMARY KEY); CREATE TABLE busy (id int, pad text)");
  auto pgflow = p.Start();
  std::string before = p.ConfirmedLsn();
  // Only unwatched tables change: the slot must still move forward.
  sql.Exec("INSERT INTO busy SELECT generate_series(1, 10000)");
  std::string target = sql.Scalar("SELECT pg_current_wal_lsn()");
  EXPECT_TRUE(WaitFor([&] { return p.ConfirmedAtLeast(target) == "t"; }, std::chrono::seconds(30)))
      << "confirmed stayed at " << p.ConfirmedLsn() << " (was " << before << ")";
  // With the default settings, the WAL the slot retains stays bounded while 64 MB of it go
  // by for other tables.
  for (int i = 0; i < 8; ++i) {
    sql.Exec("INSERT INTO busy SELECT g, repeat('x', 1000) FROM generate_series(1, 8000) g");
  }
  auto retained = [&] {
    return std::stoll(
        sql.Scalar("SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots "
                   "WHERE slot_name = 'pgflow_quiet'"));
  };
  EXPECT_TRUE(WaitFor([&] { return retained() < (16 << 20); }, std::chrono::seconds(60)))
      << retained() << " bytes retained";
  EXPECT_TRUE(p.Lines().empty());
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

// PostgreSQL refuses UPDATE and DELETE on a published table without a replica identity:
// following a schema must not break the application's writes.
TEST(StreamTest, KeylessTablesGetReplicaIdentityFullAndTheApplicationsWritesGoOn) {
  Pipeline p("nokey", "[public.*]");
  Sql sql(p.url());
  sql.Exec(R"sql(
    CREATE TABLE nokey (a int, b text);
    CREATE TABLE keyed (id int PRIMARY KEY, v text);
    CREATE TABLE parted (k int, v text) PARTITION BY RANGE (k);
    CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
    CREATE TABLE parent (a int);
    CREATE SCHEMA elsewhere;
    CREATE TABLE elsewhere.child () INHERITS (parent);
    CREATE TABLE elsewhere.unfollowed (a int);
    INSERT INTO nokey VALUES (1, 'x'), (2, 'y');
    INSERT INTO keyed VALUES (1, 'v');
  )sql");
  auto pgflow = p.Start();
  EXPECT_THAT(ReadFile(p.log()),
              HasSubstr("set REPLICA IDENTITY FULL on 5 followed table(s) without a primary "
                        "key"));
  auto identity = [&](const std::string& table) {
    return sql.Scalar("SELECT relreplident FROM pg_class WHERE oid = '" + table + "'::regclass");
  };
  for (const char* table : {"nokey", "parted", "parted_1", "parent", "elsewhere.child"}) {
    EXPECT_EQ(identity(table), "f") << table;
  }
  EXPECT_EQ(identity("keyed"), "d");
  EXPECT_EQ(identity("elsewhere.unfollowed"), "d");

  // The application's statements, on tables that exist, are created, lose their key, or are
  // attached as partitions while pgflow runs: none fails.
  sql.Exec("UPDATE nokey SET b = 'z' WHERE a = 1; DELETE FROM nokey WHERE a = 2");
  sql.Exec(
      "BEGIN; CREATE TABLE later (a int); INSERT INTO later VALUES (7); "
      "UPDATE later SET a = 8; COMMIT");
  sql.Exec("ALTER TABLE keyed DROP CONSTRAINT keyed_pkey; UPDATE keyed SET v = 'w'");
  sql.Exec(
      "CREATE TABLE parted_2 (k int, v text); "
      "ALTER TABLE parted ATTACH PARTITION parted_2 FOR VALUES FROM (100) TO (200); "
      "INSERT INTO parted VALUES (150, 'p'); UPDATE parted SET v = 'q'; DELETE FROM parted");
  EXPECT_EQ(identity("later"), "f");
  EXPECT_EQ(identity("keyed"), "f");
  EXPECT_EQ(identity("parted_2"), "f");

  std::vector<json> lines;
  WaitFor(
      [&] {
        lines = p.Lines();
        return !lines.empty() && lines.back()["op"] == "delete" &&
               lines.back()["table"] == "parted";
      },
      std::chrono::seconds(30));
  std::vector<std::string> ops;
  for (const json& l : lines) {
    ops.push_back(l["op"].get<std::string>() + ":" +
                  (l["op"] == "ddl" ? l["identity"] : l["table"]).get<std::string>());
  }
  // The capture's own ALTER TABLE is no event: one `ddl` event per application command.
  EXPECT_THAT(ops, ::testing::ElementsAre(
                       "update:nokey", "delete:nokey", "ddl:public.later", "insert:later",
                       "update:later", "ddl:keyed_pkey on public.keyed", "ddl:public.keyed",
                       "update:keyed", "ddl:public.parted_2", "ddl:public.parted", "insert:parted",
                       "update:parted", "delete:parted"))
      << ReadFile(p.log());
  EXPECT_EQ(lines[1]["before"], json::parse(R"({"a": 2, "b": "y"})"));
  EXPECT_EQ(lines[4]["before"], json::parse(R"({"a": 7})"));
  EXPECT_EQ(lines[7]["before"], json::parse(R"({"id": 1, "v": "v"})"));
  EXPECT_EQ(lines.back()["before"], json::parse(R"({"k": 150, "v": "q"})"));
  EXPECT_THAT(ReadFile(p.log()), HasSubstr("table public.later has no primary key (CREATE TABLE): "
                                           "pgflow's DDL capture set REPLICA IDENTITY FULL"));
  // A replica identity the application sets itself is its choice, kept.
  sql.Exec("CREATE TABLE chosen (a int); ALTER TABLE chosen REPLICA IDENTITY NOTHING");
  EXPECT_EQ(identity("chosen"), "n");
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

TEST(StreamTest, KeylessTablesFailPolicyRefusesToStartAndStopsOnANewOne) {
  Pipeline p("nokeyfail", "[public.*]", "    keyless_tables: fail\n");
  Sql sql(p.url());
  sql.Exec("CREATE TABLE nokey (a int); CREATE TABLE keyed (id int PRIMARY KEY)");
  std::string out;
  EXPECT_EQ(RunPgflow({"run", p.yaml()}, &out, {{"SOURCE_URL", p.url()}}), 1);
  EXPECT_THAT(out, HasSubstr("source.postgres.keyless_tables is 'fail' and 1 followed table(s) "
                             "have no primary key: public.nokey. Add a primary key"));
  EXPECT_EQ(sql.Scalar("SELECT relreplident FROM pg_class WHERE relname = 'nokey'"), "d");

  sql.Exec("ALTER TABLE nokey ADD PRIMARY KEY (a)");
  auto pgflow = p.Start();
  // A new keyless table: the application's writes go on, the pipeline stops and says why.
  sql.Exec("CREATE TABLE later (a int); INSERT INTO later VALUES (1); UPDATE later SET a = 2");
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 1);
  EXPECT_THAT(ReadFile(p.log()), HasSubstr("table public.later (CREATE TABLE at "));
  EXPECT_THAT(ReadFile(p.log()), HasSubstr("has no primary key and "
                                           "source.postgres.keyless_tables is 'fail'"));
}

// keyless_tables: skip. The publication lists the keyed tables one by one; the capture takes
// in tables created with a key or given one, and lets go of those that lose it, in the
// transaction of the command, so the application's writes never fail.
TEST(StreamTest, KeylessTablesSkipPolicyLeavesThemOutAndTakesThemInOnceKeyed) {
  Pipeline p("nokeyskip", "[public.*]", "    keyless_tables: skip\n");
  Sql sql(p.url());
  sql.Exec(R"sql(
    CREATE TABLE nokey (a int, b text);
    CREATE TABLE keyed (id int PRIMARY KEY, v text);
    CREATE TABLE parted (k int, v text) PARTITION BY RANGE (k);
    CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
    CREATE TABLE parent (id int PRIMARY KEY);
    CREATE TABLE child () INHERITS (parent);
    CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
    INSERT INTO nokey VALUES (1, 'x'), (2, 'y');
    INSERT INTO keyed VALUES (1, 'v');
  )sql");
  auto pgflow = p.Start();
  EXPECT_THAT(ReadFile(p.log()),
              HasSubstr("keyless_tables: skip: 4 followed table(s) without a primary key are left "
                        "out of the publication, the copy and the stream (each joins when it "
                        "gains a key): public.child, public.nokey, public.parted, "
                        "public.parted_1"))
      << ReadFile(p.log());
  auto published = [&] {
    return sql.Scalar(
        "SELECT string_agg(prrelid::regclass::text, ',' ORDER BY prrelid::regclass::text) "
        "FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
        "WHERE p.pubname = 'pgflow_nokeyskip'");
  };
  EXPECT_EQ(published(), "keyed,parent");
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_class WHERE relreplident = 'f'"), "0");

  // The application's statements: none fails, none makes pgflow set a replica identity.
  sql.Exec("UPDATE nokey SET b = 'z' WHERE a = 1; DELETE FROM nokey WHERE a = 2");
  sql.Exec("UPDATE child SET id = 1; UPDATE parted SET v = 'w'");
  sql.Exec(
      "BEGIN; CREATE TABLE later (a int); INSERT INTO later VALUES (7); UPDATE later SET a = 8; "
      "CREATE INDEX later_a ON later (a); COMMIT");
  sql.Exec(
      "BEGIN; CREATE TABLE later_keyed (id int PRIMARY KEY); INSERT INTO later_keyed VALUES (3); "
      "COMMIT");
  sql.Exec("ALTER TABLE keyed DROP CONSTRAINT keyed_pkey; UPDATE keyed SET v = 'gone'");
  EXPECT_EQ(published(), "later_keyed,parent");
  // Given a key: it joins, with its rows (a backfill), and its changes stream from then on.
  sql.Exec("ALTER TABLE nokey ADD PRIMARY KEY (a)");
  EXPECT_EQ(published(), "later_keyed,nokey,parent");
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_class WHERE relreplident = 'f'"), "0");

  std::vector<json> lines;
  auto copied = [&] {
    lines = p.Lines();
    for (const json& l : lines) {
      // (op first: a ddl line has no "table", and a const json's operator[] of a missing key
      // reads past the object's end.)
      if (l["op"] == "read" && l["table"] == "nokey") return true;
    }
    return false;
  };
  ASSERT_TRUE(WaitFor(copied, std::chrono::seconds(30))) << ReadFile(p.log());
  sql.Exec("UPDATE nokey SET b = 'after' WHERE a = 1");
  ASSERT_TRUE(WaitFor(
      [&] {
        lines = p.Lines();
        return !lines.empty() && lines.back()["op"] == "update" && lines.back()["table"] == "nokey";
      },
      std::chrono::seconds(30)))
      << ReadFile(p.log());
  std::vector<std::string> ops;
  for (const json& l : lines) {
    ops.push_back(l["op"].get<std::string>() + ":" +
                  (l["op"] == "ddl" ? l["identity"] : l["table"]).get<std::string>());
  }
  EXPECT_THAT(ops, ::testing::ElementsAre("ddl:public.later_keyed", "ddl:public.later_keyed_pkey",
                                          "insert:later_keyed", "ddl:keyed_pkey on public.keyed",
                                          "ddl:public.nokey", "read:nokey", "update:nokey"))
      << ReadFile(p.log());
  EXPECT_EQ(lines[5]["after"], json::parse(R"({"a": 1, "b": "z"})"));
  const std::string log = ReadFile(p.log());
  EXPECT_THAT(log, HasSubstr("table public.keyed lost its primary key (ALTER TABLE): with "
                             "keyless_tables: skip it has left the publication"));
  EXPECT_THAT(log, HasSubstr("table public.nokey gained a primary key and joined the pipeline "
                             "with its rows: backfill"));

  // A table that left and changed meanwhile comes back whole: dropped from the sinks, created
  // from its shape now, copied.
  sql.Exec(
      "ALTER TABLE keyed ADD COLUMN extra int DEFAULT 7; UPDATE keyed SET v = 'while out';"
      "ALTER TABLE keyed ADD PRIMARY KEY (id)");
  ASSERT_TRUE(WaitFor(
      [&] {
        lines = p.Lines();
        return !lines.empty() && lines.back()["op"] == "read" && lines.back()["table"] == "keyed";
      },
      std::chrono::seconds(30)))
      << ReadFile(p.log());
  const size_t rejoin = ops.size();
  ASSERT_GE(lines.size(), rejoin + 3);
  EXPECT_EQ(lines[rejoin]["tag"], "DROP TABLE");
  EXPECT_EQ(lines[rejoin]["identity"], "public.keyed");
  EXPECT_EQ(lines[rejoin + 1]["tag"], "ALTER TABLE");
  EXPECT_EQ(lines.back()["after"], json::parse(R"({"id": 1, "v": "while out", "extra": 7})"));
  EXPECT_THAT(ReadFile(p.log()), HasSubstr("table public.keyed regained a primary key"));

  // A backfill of the whole schema leaves the keyless tables out, and says so.
  std::string out;
  EXPECT_EQ(
      RunPgflow({"snapshot", p.yaml(), "--tables", "public.*"}, &out, {{"SOURCE_URL", p.url()}}), 0)
      << out;
  EXPECT_TRUE(WaitFor([&] { return p.CountInLog("not copied (keyless_tables: skip)") > 0; },
                      std::chrono::seconds(30)));
  EXPECT_THAT(ReadFile(p.log()),
              HasSubstr("table(s) without a primary key not copied (keyless_tables: skip): "
                        "public.child, public.later, public.parted"));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

// A backfill copying a table whose columns keep changing under it (ALTER TABLE after ALTER
// TABLE, as PostgreSQL's regression suite does): each COPY of a column dropped meanwhile fails,
// and the backfill describes the table again and goes on, however many times it changed,
// instead of stopping the pipeline.
TEST(StreamTest, ABackfillFollowsATableWhoseColumnsKeepChanging) {
  Pipeline p("churn", "[public.*]", "    keyless_tables: skip\n");
  Sql sql(p.url());
  sql.Exec(
      "CREATE TABLE churn (id int, v text, c0 int); "
      "INSERT INTO churn SELECT g, 'v' || g, 0 FROM generate_series(1, 100000) g");
  auto pgflow = p.Start();
  sql.Exec("ALTER TABLE churn ADD PRIMARY KEY (id)");
  constexpr int kChanges = 12;
  for (int i = 1; i <= kChanges; ++i) {
    sql.Exec("ALTER TABLE churn ADD COLUMN c" + std::to_string(i) + " int DEFAULT " +
             std::to_string(i) + "; ALTER TABLE churn DROP COLUMN c" + std::to_string(i - 1));
    // Each change reaches pgflow before the next is made, while the backfill copies.
    ASSERT_TRUE(WaitSlotSentAll(p.url(), "pgflow_churn", std::chrono::seconds(30)))
        << ReadFile(p.log());
  }
  sql.Exec("UPDATE churn SET v = 'last' WHERE id = 1");
  ASSERT_TRUE(WaitFor(
      [&] { return !pgflow->Running() || p.CountInLog("backfill 1: done") > 0; },
      std::chrono::seconds(60)))
      << ReadFile(p.log());
  ASSERT_TRUE(pgflow->Running()) << ReadFile(p.log());
  const std::string log = ReadFile(p.log());
  EXPECT_THAT(log, ::testing::Not(HasSubstr("failed"))) << log;
  std::cerr << "copies started again after a column change: "
            << p.CountInLog("changed its columns while being copied") << "\n";
  // Every row was copied, and the row changed last ends in its last shape and value.
  std::vector<json> lines;
  ASSERT_TRUE(WaitFor(
      [&] {
        lines = p.Lines();
        for (const json& l : lines) {
          if (l["op"] == "update") return true;
        }
        return false;
      },
      std::chrono::seconds(30)));
  std::set<int64_t> ids;
  json first;
  for (const json& l : lines) {
    if (l["op"] != "read" && l["op"] != "update") continue;
    ids.insert(l["after"]["id"].get<int64_t>());
    if (l["after"]["id"] == 1) first = l["after"];
  }
  EXPECT_EQ(ids.size(), 100000u);
  EXPECT_EQ(first, json::parse(R"({"id": 1, "v": "last", "c12": 12})"));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

TEST(StreamTest, ClearErrorsForAMissingTableAndAnUnreachableServer) {
  Pipeline p("missing", "[public.nope]");
  std::string out;
  TempDir tmp;
  EXPECT_EQ(RunPgflow({"run", tmp.File("absent.yaml")}, &out), 2);
  // The table does not exist.
  std::string yaml = tmp.File("p.yaml");
  WriteFile(yaml, "pipeline: missing\nsource:\n  postgres:\n    url: " + p.url() +
                      "\n    tables: [public.nope]\n    snapshot: {mode: never}\n"
                      "sinks:\n  out: {jsonl: {path: " +
                      tmp.File("o.jsonl") + "}}\n");
  EXPECT_EQ(RunPgflow({"run", yaml}, &out), 2);
  EXPECT_THAT(out, HasSubstr("source.postgres.tables: table public.nope does not exist"));
  EXPECT_THAT(out, HasSubstr("not started, nothing created in the source"));
  // Nothing listens on port 1.
  WriteFile(yaml,
            "pipeline: missing\nsource:\n  postgres:\n"
            "    url: postgres://postgres:secret@127.0.0.1:1/x\n"
            "    tables: [public.nope]\n    snapshot: {mode: never}\n"
            "sinks:\n  out: {jsonl: {path: " +
                tmp.File("o.jsonl") + "}}\n");
  EXPECT_EQ(RunPgflow({"run", yaml}, &out), 1);
  EXPECT_THAT(out, HasSubstr("cannot connect to PostgreSQL at 127.0.0.1:1/x"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("secret")));
}

// Every command, with good and broken connection strings holding a known password, in URI and
// key=value form: no output shows the password, whole or any four characters of it.
TEST(CliTest, NoCommandEverShowsAPassword) {
  const std::string password = "Zq9xW7vK";
  Sql admin(SharedCluster().Url());
  admin.Exec("CREATE DATABASE pwsource");
  admin.Exec("CREATE DATABASE pwtarget");
  admin.Exec(
      "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pwuser') THEN "
      "CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD '" +
      password + "'; END IF; END $$");
  Sql(SharedCluster().Url("pwsource"))
      .Exec("CREATE TABLE t (id int PRIMARY KEY); CREATE SEQUENCE s; SELECT nextval('s')");
  const std::string port = std::to_string(SharedCluster().port());
  const std::string good = "postgres://pwuser:" + password + "@127.0.0.1:" + port;
  const std::vector<std::string> sources = {
      good + "/pwsource",
      "host=127.0.0.1 port=" + port + " user=pwuser password=" + password + " dbname=pwsource",
      "postgres://pwuser:" + password + "/127.0.0.1/pwsource",    // no '@'
      "postgres://pwuser:" + password + "@127.0.0.1:1/pwsource",  // nothing listens
      "postgres://pwuser:Zq9%xW7vK@127.0.0.1/pwsource",           // bad percent-encoding
      "host=127.0.0.1 port=w user=pwuser password=" + password,   // bad port
      "password='" + password + " host=127.0.0.1",                // unterminated quote
      "postgres://pwuser:" + password + "@127.0.0.1:" + port + "/nosuchdb"};
  TempDir dir;
  std::string all;
  for (size_t i = 0; i < sources.size(); ++i) {
    for (const char* mode : {"initial", "only"}) {
      const std::string yaml = dir.File("p" + std::to_string(i) + mode + ".yaml");
      WriteFile(yaml, std::string("pipeline: pw\nsource:\n  postgres:\n    url: ${SRC}\n") +
                          "    tables: [public.*]\n    snapshot: {mode: " + mode + "}\n" +
                          "sinks:\n  target: {postgres: {url: '" + good + "/pwtarget'}}\n");
      const std::map<std::string, std::string> env = {{"SRC", sources[i]}};
      for (const std::vector<std::string>& args :
           std::vector<std::vector<std::string>>{{"validate", yaml},
                                                 {"init", yaml},
                                                 {"run", yaml, "--until", "0/1"},
                                                 {"snapshot", yaml, "--no-wait"},
                                                 {"verify", yaml},
                                                 {"sequences", yaml},
                                                 {"roles", yaml},
                                                 {"teardown", yaml}}) {
        std::string out;
        RunPgflow(args, &out, env);
        all += out;
        for (size_t at = 0; at + 4 <= password.size(); ++at) {
          EXPECT_THAT(out, Not(HasSubstr(password.substr(at, 4))))
              << "pgflow " << args[0] << " with " << MaskPasswords(sources[i]);
        }
      }
    }
  }
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--help"}, {"run", "--help"}, {"options"}, {"options", "--markdown"}}) {
    std::string out;
    EXPECT_EQ(RunPgflow(args, &out), 0);
    EXPECT_THAT(out, Not(HasSubstr(password)));
  }
  // The commands did run: a copy, a verification, a refusal.
  for (const char* expected : {"target: identical", "invalid connection string",
                               "cannot connect to PostgreSQL at 127.0.0.1:1/pwsource",
                               "pipeline pw: ready in pwuser@127.0.0.1:"}) {
    EXPECT_NE(all.find(expected), std::string::npos) << expected;
  }
}

TEST(CliTest, ABareOrWrongCommandLineExitsWithTheUsageCode) {
  std::string out;
  EXPECT_EQ(RunPgflow({}, &out), 2);
  EXPECT_THAT(out, HasSubstr("name a command"));
  EXPECT_EQ(RunPgflow({"frobnicate"}, &out), 2);
  EXPECT_EQ(RunPgflow({"run"}, &out), 2);
  EXPECT_EQ(RunPgflow({"--help"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("Subcommands:"));
}

TEST(CliTest, ValidateNamesFileLineAndColumn) {
  TempDir tmp;
  std::string yaml = tmp.File("bad.yaml");
  WriteFile(yaml,
            "pipeline: shop\nsource:\n  postgres:\n    url: postgres://h/db\n"
            "    tables: [public.a]\n    tabels: [x]\nsinks:\n  out: {jsonl: {path: -}}\n");
  std::string out;
  EXPECT_EQ(RunPgflow({"validate", yaml}, &out), 2);
  EXPECT_THAT(out, HasSubstr(yaml + ":6:5:"));
  EXPECT_THAT(out, HasSubstr("tabels"));

  WriteFile(yaml,
            "pipeline: shop\nsource:\n  postgres:\n    url: postgres://h/db\n"
            "    tables: [public.a]\nsinks:\n  out: {jsonl: {path: -}}\n");
  EXPECT_EQ(RunPgflow({"validate", yaml}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("ok"));

  // Every example validates as written.
  for (const char* example : {"quickstart.yaml", "migrate.yaml", "changes-to-file.yaml",
                              "kv-cache.yaml", "anonymised-copy.yaml", "search-index.yaml",
                              "webhook.yaml", "documents.yaml"}) {
    EXPECT_EQ(RunPgflow({"validate", std::string(PGFLOW_SOURCE_DIR) + "/examples/" + example}, &out,
                        {{"SOURCE_URL", "postgres://u@h/db"},
                         {"TARGET_URL", "postgres://u@h2/db"},
                         {"MASK_SALT", "s"}}),
              0)
        << example << ": " << out;
  }
  EXPECT_EQ(RunPgflow({"--help"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("validate"));
  EXPECT_THAT(out, HasSubstr("run"));
  EXPECT_EQ(RunPgflow({"run", "--help"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("--progress"));
  EXPECT_EQ(RunPgflow({"options"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("sinks.<name>.jsonl"));
}

TEST(CliTest, EveryExampleFindsItsTablesInExamplesShopSql) {
  // The shop the examples say they read (examples/shop.sql, the quickstart's), loaded as
  // written: each example that reads it validates against it, its tables and transforms.
  const std::string url = NewDatabase("shop");
  ASSERT_TRUE(Sql(url).Exec(ReadFile(std::string(PGFLOW_SOURCE_DIR) + "/examples/shop.sql")));
  for (const char* example :
       {"quickstart.yaml", "changes-to-file.yaml", "kafka.yaml", "kv-cache.yaml",
        "search-index.yaml", "webhook.yaml", "anonymised-copy.yaml", "migrate.yaml",
        "documents.yaml"}) {
    std::string out;
    EXPECT_EQ(
        RunPgflow({"validate", "--source", std::string(PGFLOW_SOURCE_DIR) + "/examples/" + example},
                  &out,
                  {{"SOURCE_URL", url},
                   {"PGPORT", std::to_string(SharedCluster().port())},
                   {"TARGET_URL", "postgres://u@h2/db"},
                   {"MASK_SALT", "s"}}),
        0)
        << example << ": " << out;
  }
}

}  // namespace
}  // namespace pgflow::testing
