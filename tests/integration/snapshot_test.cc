// The initial snapshot against a real PostgreSQL: exact under concurrent writes, resumable
// after kill -9, handed over to streaming with nothing missed or doubled.

#include <signal.h>

#include <atomic>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "engine/source.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sources/postgres/snapshot.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

class SnapshotPipeline {
 public:
  SnapshotPipeline(const std::string& name, const std::string& tables, const std::string& snapshot)
      : name_(name) {
    Sql admin(SharedCluster().Url());
    admin.Exec("CREATE DATABASE " + name);
    yaml_ = dir_.File("pipeline.yaml");
    WriteFile(yaml_, "pipeline: " + name + "\nsource:\n  postgres:\n    url: " + url() +
                         "\n    tables: " + tables + "\n    snapshot: " + snapshot +
                         "\n    status_interval: 200ms\nsinks:\n  out: {jsonl: {path: " + output() +
                         "}, flush_interval: 50ms}\n");
  }
  std::string url() const { return SharedCluster().Url(name_); }
  const std::string& yaml() const { return yaml_; }
  std::string output() const { return dir_.File("out.jsonl"); }
  std::string log() const { return dir_.File("pgflow.log"); }
  std::unique_ptr<PgflowProcess> Start() {
    return std::make_unique<PgflowProcess>(
        std::vector<std::string>{"run", yaml_, "--progress", "1"}, log());
  }
  bool LogHas(const std::string& needle) const {
    return ReadFile(log()).find(needle) != std::string::npos;
  }
  std::string ConfirmedAtLeast(const std::string& lsn) {
    Sql sql(url());
    return sql.Scalar("SELECT confirmed_flush_lsn >= '" + lsn +
                      "' FROM pg_replication_slots WHERE slot_name = 'pgflow_" + name_ + "'");
  }

 private:
  std::string name_;
  TempDir dir_;
  std::string yaml_;
};

// The state a consumer of the jsonl file ends with for `table`: key -> row, applying every
// line in order (read and insert as upsert; update merges, keeping unchanged TOAST columns;
// delete; truncate).
std::map<std::string, json> Replay(const std::vector<json>& lines, const std::string& table,
                                   const std::string& key) {
  std::map<std::string, json> state;
  for (const json& l : lines) {
    if (l.value("table", "") != table) continue;
    const std::string op = l["op"];
    if (op == "truncate") {
      state.clear();
    } else if (op == "delete") {
      state.erase(l.at("before").at(key).dump());
    } else {
      if (op == "update" && l.contains("before")) state.erase(l.at("before").at(key).dump());
      json row = l.at("after");
      json& slot = state[row.at(key).dump()];
      if (op == "update" && l.contains("unchanged_toast")) {
        for (const auto& c : l["unchanged_toast"]) {
          row[c.get<std::string>()] = slot[c.get<std::string>()];
        }
      }
      slot = row;
    }
  }
  return state;
}

// The rows of `table` in the source, as the jsonl sink would write them, by key.
std::map<std::string, json> SourceRows(Sql& sql, const std::string& table, const std::string& key) {
  std::map<std::string, json> rows;
  for (const auto& r : sql.Query("SELECT row_to_json(t)::text FROM " + table + " t")) {
    json row = json::parse(r[0]);
    rows[row[key].dump()] = row;
  }
  return rows;
}

// The keys whose rows differ between what a consumer replayed and the source, with both sides
// (at most 10), or "" when they are equal.
std::string Diff(const std::map<std::string, json>& replayed,
                 const std::map<std::string, json>& source) {
  std::string out;
  int shown = 0;
  auto show = [&](const std::string& key, const json* a, const json* b) {
    if (++shown > 10) return;
    out += "key " + key + ": replayed " + (a ? a->dump() : "(absent)") + ", source " +
           (b ? b->dump() : "(absent)") + "\n";
  };
  for (const auto& [key, row] : replayed) {
    auto it = source.find(key);
    if (it == source.end())
      show(key, &row, nullptr);
    else if (it->second != row)
      show(key, &row, &it->second);
  }
  for (const auto& [key, row] : source) {
    if (!replayed.count(key)) show(key, nullptr, &row);
  }
  if (shown > 10) out += std::to_string(shown - 10) + " more\n";
  return out;
}

// A table without a key, as a consumer ends with it: a bag of rows, applying every line in
// order (truncate empties it; read and insert add a row; delete removes one equal to `before`;
// update replaces one).
std::multiset<std::string> ReplayBag(const std::vector<json>& lines, const std::string& table) {
  std::multiset<std::string> bag;
  auto remove = [&](const json& row) {
    auto it = bag.find(row.dump());
    if (it != bag.end()) bag.erase(it);
  };
  for (const json& l : lines) {
    if (l.value("table", "") != table) continue;
    const std::string op = l["op"];
    if (op == "truncate") {
      bag.clear();
    } else if (op == "delete") {
      remove(l.at("before"));
    } else {
      if (op == "update") remove(l.at("before"));
      bag.insert(l.at("after").dump());
    }
  }
  return bag;
}

std::multiset<std::string> SourceBag(Sql& sql, const std::string& table) {
  std::multiset<std::string> bag;
  for (const auto& r : sql.Query("SELECT row_to_json(t)::text FROM " + table + " t")) {
    bag.insert(json::parse(r[0]).dump());
  }
  return bag;
}

// Random inserts, updates and deletes on the keyless logs(id, v).
BackgroundWriter::Make LogsLoad(int64_t first_new_id) {
  return [first_new_id](int64_t n, std::mt19937_64& rng) {
    const int64_t next = first_new_id + n;
    const int64_t a = rng() % next + 1;
    return "BEGIN; INSERT INTO logs VALUES (" + std::to_string(next) +
           ", 0); UPDATE logs SET v = v + 1 WHERE id = " + std::to_string(a) +
           "; DELETE FROM logs WHERE id = " + std::to_string(a + 1) + "; COMMIT;";
  };
}

void CreateLogs(Sql& sql, int rows) {
  sql.Exec("CREATE TABLE logs (id bigint, v int NOT NULL)");
  sql.Exec("INSERT INTO logs SELECT g % 1000, 0 FROM generate_series(1, " + std::to_string(rows) +
           ") g");
  sql.Exec("CREATE INDEX ON logs (id)");
}

// Random inserts, updates and deletes on items(id, v, payload), new ids from `first_new_id`.
BackgroundWriter::Make ItemsLoad(int64_t first_new_id) {
  return [first_new_id](int64_t n, std::mt19937_64& rng) {
    const int64_t next = first_new_id + n;
    const int64_t a = rng() % next + 1;
    const int64_t b = rng() % next + 1;
    return "BEGIN; INSERT INTO items VALUES (" + std::to_string(next) +
           ", 1, md5(random()::text)); UPDATE items SET v = v + 1, payload = md5(payload) "
           "WHERE id = " +
           std::to_string(a) + "; DELETE FROM items WHERE id = " + std::to_string(b) + "; COMMIT;";
  };
}

void CreateItems(Sql& sql, int rows) {
  sql.Exec("CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, payload text)");
  sql.Exec("INSERT INTO items SELECT g, 0, repeat(md5(g::text), 2) FROM generate_series(1, " +
           std::to_string(rows) + ") g");
  sql.Exec("ANALYZE items");
}

// The events written replay to exactly the source's rows: `items` by key, the keyless `logs`
// as a multiset.
void ExpectItemsAndLogsAsInTheSource(SnapshotPipeline& p, Sql& sql) {
  auto lines = ReadJsonl(p.output());
  EXPECT_EQ(Diff(Replay(lines, "items", "id"), SourceRows(sql, "items", "id")), "");
  EXPECT_TRUE(ReplayBag(lines, "logs") == SourceBag(sql, "logs"))
      << ReplayBag(lines, "logs").size() << " rows replayed, " << SourceBag(sql, "logs").size()
      << " in the source";
}

// Waits for the stream to confirm everything written so far, then stops pgflow cleanly.
void DrainAndStop(SnapshotPipeline& p, PgflowProcess& pgflow, Sql& sql) {
  std::string end = sql.Scalar("SELECT pg_current_wal_lsn()");
  EXPECT_TRUE(WaitFor([&] { return p.ConfirmedAtLeast(end) == "t"; }, std::chrono::seconds(120)))
      << ReadFile(p.log());
  pgflow.Signal(SIGTERM);
  EXPECT_EQ(pgflow.Wait(std::chrono::seconds(60)), 0) << ReadFile(p.log());
}

// Lets the keyless table be written to past the copy's position (the stream goes on from
// there), stops both writers, and drains and stops pgflow.
void WriteOnPastTheCopyThenDrain(SnapshotPipeline& p, PgflowProcess& pgflow, Sql& sql,
                                 BackgroundWriter& writer, BackgroundWriter& logs_writer) {
  const int64_t after_copy = logs_writer.transactions();
  ASSERT_TRUE(WaitFor([&] { return logs_writer.transactions() > after_copy + 20; },
                      std::chrono::seconds(30)));
  writer.Stop();
  logs_writer.Stop();
  DrainAndStop(p, pgflow, sql);
}

TEST(SnapshotTest, ExactUnderConcurrentWritesAndHandedOverToTheStream) {
  SnapshotPipeline p("exact", "[public.items, public.empty, public.nokey, public.parted]",
                     "{mode: initial, workers: 4, chunk_size: 1MiB}");
  Sql sql(p.url());
  CreateItems(sql, 200000);
  sql.Exec("CREATE TABLE empty (id int PRIMARY KEY)");
  sql.Exec(
      "CREATE TABLE nokey (a int, b text); ALTER TABLE nokey REPLICA IDENTITY FULL; "
      "INSERT INTO nokey SELECT g, 'x' || g FROM generate_series(1, 1000) g");
  sql.Exec(
      "CREATE TABLE parted (id int PRIMARY KEY, note text) PARTITION BY RANGE (id); "
      "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (500); "
      "CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (500) TO (1000); "
      "INSERT INTO parted SELECT g, 'n' || g FROM generate_series(0, 999) g");

  BackgroundWriter writer(p.url(), ItemsLoad(200001));
  ASSERT_TRUE(WaitFor([&] { return writer.transactions() > 50; }, std::chrono::seconds(30)));
  auto pgflow = p.Start();
  ASSERT_TRUE(WaitFor([&] { return p.LogHas("snapshot: done") || !pgflow->Running(); },
                      std::chrono::seconds(300)))
      << ReadFile(p.log());
  ASSERT_TRUE(pgflow->Running()) << ReadFile(p.log());
  sql.Exec(
      "UPDATE parted SET note = 'changed' WHERE id = 7; DELETE FROM nokey WHERE a = 5; "
      "INSERT INTO parted VALUES (999, 'x') ON CONFLICT (id) DO UPDATE SET note = 'dup'");
  int64_t before = writer.transactions();
  ASSERT_TRUE(
      WaitFor([&] { return writer.transactions() > before + 50; }, std::chrono::seconds(30)));
  writer.Stop();
  DrainAndStop(p, *pgflow, sql);

  std::vector<json> lines = ReadJsonl(p.output());
  EXPECT_EQ(Diff(Replay(lines, "items", "id"), SourceRows(sql, "items", "id")), "");
  EXPECT_EQ(Diff(Replay(lines, "parted", "id"), SourceRows(sql, "parted", "id")), "");
  EXPECT_EQ(Replay(lines, "empty", "id").size(), 0u);
  EXPECT_EQ(Diff(Replay(lines, "nokey", "a"), SourceRows(sql, "nokey", "a")), "");

  // Every snapshot row comes before every streamed change, and partitions appear as their
  // root table, as the stream shows them.
  size_t last_read = 0;
  size_t first_stream = lines.size();
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i]["op"] == "read")
      last_read = i;
    else
      first_stream = std::min(first_stream, i);
    EXPECT_NE(lines[i]["table"], "parted_1");
  }
  EXPECT_LT(last_read, first_stream);
  EXPECT_GE(std::stoi(sql.Scalar("SELECT count(*) FROM pgflow.snapshot_chunks WHERE pipeline = "
                                 "'exact' AND table_name = 'items' AND done_at IS NOT NULL")),
            8);
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pgflow.snapshot_chunks WHERE done_at IS NULL"), "0");
  EXPECT_EQ(sql.Scalar("SELECT finished_at IS NOT NULL FROM pgflow.snapshots"), "t");
  EXPECT_THAT(ReadFile(p.log()), HasSubstr("snapshot: "));
}

// kill -9 mid-copy while both tables take writes without a pause, then a restart: the keyed
// table resumes with the chunks still owed (the stream, replayed from the first snapshot's
// point, brings its copied rows up to date); the keyless one cannot meet the stream that way
// and is copied again whole under a snapshot taken at an exact position, the stream skipping
// its changes before it. Both end exactly as the source, with the writes never stopped.
TEST(SnapshotTest, KillNineMidSnapshotResumesExactlyUnderConstantWrites) {
  SnapshotPipeline p("resume", "[public.items, public.logs]",
                     "{mode: initial, workers: 2, chunk_size: 1MiB}");
  Sql sql(p.url());
  CreateItems(sql, 400000);
  CreateLogs(sql, 200000);
  BackgroundWriter writer(p.url(), ItemsLoad(400001));
  BackgroundWriter logs_writer(p.url(), LogsLoad(1000));
  auto pgflow = p.Start();
  auto done_chunks = [&] {
    if (sql.Scalar("SELECT to_regclass('pgflow.snapshot_chunks') IS NULL") == "t") return 0;
    return std::stoi(
        sql.Scalar("SELECT count(*) FROM pgflow.snapshot_chunks WHERE done_at IS "
                   "NOT NULL"));
  };
  ASSERT_TRUE(
      WaitFor([&] { return done_chunks() >= 3 || !pgflow->Running(); }, std::chrono::seconds(120)))
      << ReadFile(p.log());
  pgflow->Signal(SIGKILL);
  pgflow->Wait(std::chrono::seconds(10));
  int total = std::stoi(sql.Scalar("SELECT count(*) FROM pgflow.snapshot_chunks"));
  int done = done_chunks();
  ASSERT_LT(done, total) << "the snapshot finished before it could be interrupted";
  std::string status;
  EXPECT_EQ(RunPgflow({"status", p.yaml()}, &status), 1) << status;
  EXPECT_THAT(status, HasSubstr("the initial copy is not finished"));
  const int64_t logs_written = logs_writer.transactions();

  pgflow = p.Start();
  ASSERT_TRUE(WaitFor([&] { return p.LogHas("streaming from") || !pgflow->Running(); },
                      std::chrono::seconds(300)))
      << ReadFile(p.log());
  EXPECT_THAT(ReadFile(p.log()),
              HasSubstr("once the tables are copied (the snapshot is not finished)"));
  EXPECT_THAT(ReadFile(p.log()), HasSubstr("1 table(s) without a key are copied again whole"));
  EXPECT_THAT(ReadFile(p.log()), HasSubstr("their changes before it are in the copy"));
  EXPECT_GT(logs_writer.transactions(), logs_written) << "the keyless table was not written to";
  ASSERT_NO_FATAL_FAILURE(WriteOnPastTheCopyThenDrain(p, *pgflow, sql, writer, logs_writer));
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pgflow.backfills"), "0");

  ExpectItemsAndLogsAsInTheSource(p, sql);
}

// `pgflow init`, the application writing, then `pgflow run` a while later (docs/guides/migrate.md's
// steps 4 and 5): the slot init made starts the stream at init's moment, the copy is taken
// later, and the rows written in between must reach the sinks once, keyed or not.
TEST(SnapshotTest, InitThenRunLaterMeetsTheStreamExactlyForEveryTable) {
  SnapshotPipeline p("initrun", "[public.items, public.logs]",
                     "{mode: initial, workers: 2, chunk_size: 1MiB}");
  Sql sql(p.url());
  CreateItems(sql, 20000);
  CreateLogs(sql, 20000);
  std::string out;
  ASSERT_EQ(RunPgflow({"init", p.yaml()}, &out), 0) << out;
  BackgroundWriter writer(p.url(), ItemsLoad(20001));
  BackgroundWriter logs_writer(p.url(), LogsLoad(1000));
  // Writes between init and run.
  ASSERT_TRUE(WaitFor([&] { return logs_writer.transactions() > 100 && writer.transactions() > 100; },
                      std::chrono::seconds(60)));
  auto pgflow = p.Start();
  ASSERT_TRUE(WaitFor([&] { return p.LogHas("snapshot: done") || !pgflow->Running(); },
                      std::chrono::seconds(300)))
      << ReadFile(p.log());
  EXPECT_TRUE(p.LogHas("taking a snapshot as of an exact position")) << ReadFile(p.log());
  ASSERT_NO_FATAL_FAILURE(WriteOnPastTheCopyThenDrain(p, *pgflow, sql, writer, logs_writer));

  ExpectItemsAndLogsAsInTheSource(p, sql);
}

// A table without a key cannot have its changed rows left out of a chunk: its copy is exact
// only if nothing changed from its first chunk to its last, and is started again otherwise.
TEST(SnapshotTest, BackfillOfAKeylessTableIsExactOrStopsThePipelineNamingIt) {
  SnapshotPipeline p("keylessfill", "[public.logs]", "{mode: never}");
  Sql sql(p.url());
  CreateLogs(sql, 400000);  // duplicate rows too: 400 of each id
  auto pgflow = p.Start();
  ASSERT_TRUE(WaitFor([&] { return p.LogHas("streaming from") || !pgflow->Running(); },
                      std::chrono::seconds(30)));
  EXPECT_TRUE(p.LogHas("set REPLICA IDENTITY FULL on 1 followed table(s)"));
  {
    // Written to without a pause: every copy is voided, and after the last attempt the
    // pipeline stops rather than go on with a partial copy.
    BackgroundWriter writer(p.url(), LogsLoad(1000));
    // (Writing already when the first copy starts: else it may end before the first write.)
    ASSERT_TRUE(WaitFor([&] { return writer.transactions() > 0; }, std::chrono::seconds(30)));
    std::string out;
    EXPECT_NE(RunPgflow({"snapshot", p.yaml(), "--tables", "public.logs"}, &out), 0);
    EXPECT_EQ(pgflow->Wait(std::chrono::seconds(120)), 1) << ReadFile(p.log());
    EXPECT_TRUE(p.LogHas("changed during its copy: copying it again (attempt 2 of 5)"));
    EXPECT_TRUE(
        p.LogHas("table public.logs has no primary key and changed during each of its 5 "
                 "copies"))
        << ReadFile(p.log());
    EXPECT_TRUE(p.LogHas("run `pgflow snapshot --tables public.logs` when it is quieter"));
  }
  // Quiet again: the same request, asked again, copies it exactly, replacing the partial copy.
  pgflow = p.Start();
  ASSERT_TRUE(WaitFor([&] { return p.LogHas("streaming from") || !pgflow->Running(); },
                      std::chrono::seconds(30)));
  std::string out;
  EXPECT_EQ(RunPgflow({"snapshot", p.yaml(), "--tables", "public.logs"}, &out), 0)
      << out << ReadFile(p.log());
  BackgroundWriter after(p.url(), LogsLoad(2000), 50);
  ASSERT_TRUE(WaitFor([&] { return after.transactions() >= 50; }, std::chrono::seconds(60)));
  DrainAndStop(p, *pgflow, sql);
  auto lines = ReadJsonl(p.output());
  EXPECT_TRUE(ReplayBag(lines, "logs") == SourceBag(sql, "logs"))
      << ReplayBag(lines, "logs").size() << " rows replayed, " << SourceBag(sql, "logs").size()
      << " in the source";
}

// A sink option that does not fit the source's tables (examples/kv-cache.yaml's columns on a
// table without them) is found by `validate --source`, and `run` refuses it before creating
// anything in the source. So is a server whose wal_level cannot stream.
TEST(SnapshotTest, ASinkThatDoesNotFitTheTablesIsRefusedBeforeAnythingIsCreated) {
  Sql sql(NewDatabase("unfit"));
  sql.Exec("CREATE TABLE orders (id int PRIMARY KEY, total int)");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("unfit", "[public.orders]") +
                      "sinks:\n  cache:\n    kv: {http: 127.0.0.1:" +
                      std::to_string(FreeLoopbackPort()) +
                      ", columns: {public.orders: [customer, total]}}\n");
  std::string out;
  EXPECT_EQ(RunPgflow({"validate", yaml, "--source"}, &out), 2) << out;
  EXPECT_THAT(out, HasSubstr("sinks.cache.kv.columns (of public.orders) names customer, which "
                             "the table does not have"));
  EXPECT_EQ(RunPgflow({"run", yaml}, &out), 2) << out;
  EXPECT_THAT(out, HasSubstr("not started, nothing created in the source"));
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgflow_unfit'"),
            "0");
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_publication WHERE pubname = 'pgflow_unfit'"), "0");
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgflow'"), "0");

  // A server that cannot stream: validate names the setting to change, run creates nothing.
  TestCluster replica;
  Sql(replica.Url()).Exec("ALTER SYSTEM SET wal_level = replica");
  replica.Pause();
  replica.Resume();
  Sql(replica.Url()).Exec("CREATE TABLE orders (id int PRIMARY KEY, total int)");
  const std::string fits = dir.File("fits.yaml");
  WriteFile(fits, "pipeline: unfit\nsource: {postgres: {url: '" + replica.Url() +
                      "', tables: [public.orders]}}\nsinks: {out: {jsonl: {path: " +
                      dir.File("out.jsonl") + "}}}\n");
  EXPECT_EQ(RunPgflow({"validate", fits, "--source"}, &out), 2) << out;
  EXPECT_THAT(out, HasSubstr("wal_level is 'replica'"));
  EXPECT_THAT(out, HasSubstr("wal_level = logical"));
  EXPECT_EQ(RunPgflow({"run", fits}, &out), 2) << out;
  EXPECT_THAT(out, HasSubstr("not started, nothing created in the source"));
  EXPECT_EQ(Sql(replica.Url()).Scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgflow'"),
            "0");
}

TEST(SnapshotTest, SnapshotRowsLookExactlyLikeStreamedRows) {
  SnapshotPipeline p("sametypes", "[public.kinds]", "{mode: initial, workers: 2}");
  Sql sql(p.url());
  sql.Exec(R"sql(
    CREATE TYPE mood AS ENUM ('sad', 'happy');
    CREATE TABLE kinds (id int PRIMARY KEY, i2 smallint, i8 bigint, n numeric, f4 real,
      f8 float8, b bool, t text, c char(3), by bytea, u uuid, d date, ts timestamp,
      tz timestamptz, iv interval, tm time, j json, jb jsonb, ia int[], ta text[], na numeric[],
      tza timestamptz[], m mood, ma mood[], ip inet, ipa inet[], ch "char", nul text);
    CREATE TABLE template AS SELECT 2 AS id, -3::int2 AS i2, 9007199254740993::int8 AS i8,
      '-12.3400'::numeric AS n, 0.1::real AS f4, 1e-7::float8 AS f8, false AS b,
      E'line\nbreak "q" \u00e9' AS t, 'ab'::char(3) AS c, '\x00ff'::bytea AS by,
      gen_random_uuid() AS u, '1999-12-31'::date AS d, '2000-01-01 00:00:00.5'::timestamp AS ts,
      '2024-06-01 12:00:00-07'::timestamptz AS tz, '1 year -2 days 03:00:00.25'::interval AS iv,
      '23:59:59.999'::time AS tm, '{"a" : [1, 2.50]}'::json AS j, '{"z": 1, "a": [true]}'::jsonb AS jb,
      '{{1,2},{3,NULL}}'::int[] AS ia, '{"a,b","",NULL,"NULL"}'::text[] AS ta,
      '{1.10,NaN}'::numeric[] AS na, '{"2024-01-01 00:00:00+00",infinity}'::timestamptz[] AS tza,
      'happy'::mood AS m, '{sad,happy}'::mood[] AS ma, '10.0.0.1'::inet AS ip,
      '{10.0.0.1,::1/128}'::inet[] AS ipa, 'x'::"char" AS ch, NULL::text AS nul;
    INSERT INTO kinds SELECT * FROM template;
  )sql");
  auto pgflow = p.Start();
  ASSERT_TRUE(WaitFor([&] { return p.LogHas("snapshot: done") || !pgflow->Running(); },
                      std::chrono::seconds(60)))
      << ReadFile(p.log());
  sql.Exec(
      "INSERT INTO kinds SELECT 3, i2, i8, n, f4, f8, b, t, c, by, u, d, ts, tz, iv, tm, j, "
      "jb, ia, ta, na, tza, m, ma, ip, ipa, ch, nul FROM kinds WHERE id = 2");
  DrainAndStop(p, *pgflow, sql);
  auto lines = ReadJsonl(p.output());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["op"], "read");
  EXPECT_EQ(lines[1]["op"], "insert");
  json read = lines[0]["after"];
  json streamed = lines[1]["after"];
  read.erase("id");
  streamed.erase("id");
  EXPECT_EQ(read.dump(), streamed.dump());
  EXPECT_EQ(read["ip"], "10.0.0.1");
  EXPECT_EQ(read["ia"], json::parse("[[1, 2], [3, null]]"));
}

TEST(SnapshotTest, BackfillIntoARunningPipelineIsExactUnderWrites) {
  SnapshotPipeline p("backfill", "[public.items]", "{mode: never}");
  Sql sql(p.url());
  CreateItems(sql, 200000);
  auto pgflow = p.Start();
  ASSERT_TRUE(WaitFor([&] { return p.LogHas("streaming from") || !pgflow->Running(); },
                      std::chrono::seconds(30)));
  BackgroundWriter writer(p.url(), ItemsLoad(200001));
  ASSERT_TRUE(WaitFor([&] { return writer.transactions() > 20; }, std::chrono::seconds(30)));

  std::string out;
  EXPECT_EQ(RunPgflow({"snapshot", p.yaml(), "--tables", "public.nope"}, &out), 2);
  EXPECT_THAT(out, HasSubstr("public.nope is not among the tables pipeline backfill follows"));
  // --tables reads names as the pipeline file does: unquoted names are folded to lower case.
  EXPECT_EQ(RunPgflow({"snapshot", p.yaml(), "--tables", "Public.Nope"}, &out), 2);
  EXPECT_THAT(out, HasSubstr("public.nope is not among the tables pipeline backfill follows"));
  // Waits until every sink holds the copy; the stream goes on meanwhile.
  EXPECT_EQ(RunPgflow({"snapshot", p.yaml(), "--tables", "public.items"}, &out), 0)
      << out << ReadFile(p.log());
  EXPECT_THAT(out, HasSubstr("done"));
  // A request the pipeline cannot read (written by hand: a name that does not parse) is
  // refused with its reason recorded where `pgflow snapshot` looks.
  sql.Exec(
      "WITH r AS (INSERT INTO pgflow.backfills (pipeline, tables) VALUES ('backfill', "
      "ARRAY['no such table']) RETURNING id) "
      "SELECT pg_logical_emit_message(true, 'pgflow.backfill', id::text) FROM r");
  ASSERT_TRUE(WaitFor(
      [&] {
        return sql.Scalar(
                   "SELECT count(*) FROM pgflow.backfills WHERE error LIKE "
                   "'invalid table ''no such table''%'") == "1";
      },
      std::chrono::seconds(30)))
      << ReadFile(p.log());
  int64_t before = writer.transactions();
  ASSERT_TRUE(
      WaitFor([&] { return writer.transactions() > before + 20; }, std::chrono::seconds(30)));
  writer.Stop();
  DrainAndStop(p, *pgflow, sql);

  auto lines = ReadJsonl(p.output());
  size_t reads = 0;
  for (const json& l : lines) reads += l["op"] == "read";
  EXPECT_GT(reads, 190000u);
  EXPECT_EQ(Diff(Replay(lines, "items", "id"), SourceRows(sql, "items", "id")), "");
  EXPECT_EQ(sql.Scalar("SELECT finished_at IS NOT NULL AND error IS NULL FROM pgflow.backfills "
                       "WHERE tables = '{public.items}'"),
            "t");
}

// Collects what a snapshot emits, and acknowledges every chunk at once, as one sink would.
class CollectingEmitter : public Emitter {
 public:
  explicit CollectingEmitter(ChunkTracker* chunks) : chunks_(chunks) {}
  Result Emit(const EventBatchPtr& batch, absl::Duration) override {
    for (const Event& e : batch->events) {
      if (e.kind == EventKind::kRawRows) {
        raw += e.change.content;
        rows += e.rows;
      }
      if (e.kind == EventKind::kChunkDone) chunks_->Report(0, e.chunk);
    }
    return Result::kOk;
  }
  bool WantsRawCopy(const TableSchema&) const override { return true; }
  std::string raw;
  uint64_t rows = 0;

 private:
  ChunkTracker* chunks_;
};

TEST(SnapshotTest, TheRawCopyPathHandsOnDataPostgresCopiesInUntouched) {
  SnapshotPipeline p("rawcopy", "[public.kinds]", "{mode: only}");
  Sql sql(p.url());
  sql.Exec(
      "CREATE TABLE kinds (id int PRIMARY KEY, n numeric, iv interval, ip inet, t text[], "
      "j jsonb, z timestamptz); "
      "INSERT INTO kinds SELECT g, g / 7.0, g * interval '1 minute', '10.0.0.1', "
      "ARRAY['a', g::text], jsonb_build_object('g', g), now() FROM generate_series(1, 50000) g; "
      "CREATE TABLE target (LIKE kinds)");
  Sql holder(p.url());
  holder.Exec("BEGIN ISOLATION LEVEL REPEATABLE READ");
  std::string snapshot = holder.Scalar("SELECT pg_export_snapshot()");
  SnapshotCopier::Options options;
  options.url = p.url();
  options.pipeline = "rawcopy";
  options.tables = {TableRef{"public", "kinds"}};
  options.workers = 2;
  options.chunk_bytes = 1 << 20;
  options.record_progress = false;
  options.raw = [](const TableSchema&) { return true; };
  SnapshotCopier copier(options);
  ChunkTracker chunks(1);
  CollectingEmitter emitter(&chunks);
  StopSignal stop;
  ASSERT_TRUE(copier
                  .Run(
                      snapshot, [&] { holder.Exec("COMMIT"); }, emitter, chunks, stop)
                  .ok());
  EXPECT_EQ(emitter.rows, 50000u);

  // Wrapped in a header and a trailer, the bytes go into PostgreSQL as they are.
  std::string data("PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0", 19);
  data += emitter.raw;
  data += std::string("\377\377", 2);
  PGresult* res = PQexec(sql.conn(), "COPY target FROM STDIN (FORMAT binary)");
  ASSERT_EQ(PQresultStatus(res), PGRES_COPY_IN);
  PQclear(res);
  ASSERT_EQ(PQputCopyData(sql.conn(), data.data(), static_cast<int>(data.size())), 1);
  ASSERT_EQ(PQputCopyEnd(sql.conn(), nullptr), 1);
  res = PQgetResult(sql.conn());
  EXPECT_EQ(PQresultStatus(res), PGRES_COMMAND_OK) << PQresultErrorMessage(res);
  PQclear(res);
  while (PGresult* r = PQgetResult(sql.conn())) PQclear(r);
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM ((SELECT * FROM kinds EXCEPT SELECT * FROM target) "
                       "UNION ALL (SELECT * FROM target EXCEPT SELECT * FROM kinds)) d"),
            "0");
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM target"), "50000");
}

TEST(SnapshotTest, OnlyModeCopiesAndExitsLeavingNothingBehind) {
  SnapshotPipeline p("onlymode", "[public.items]", "{mode: only}");
  Sql sql(p.url());
  CreateItems(sql, 5000);
  auto pgflow = p.Start();
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(p.log());
  auto lines = ReadJsonl(p.output());
  EXPECT_EQ(lines.size(), 5000u);
  EXPECT_EQ(Diff(Replay(lines, "items", "id"), SourceRows(sql, "items", "id")), "");
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_replication_slots WHERE database = 'onlymode'"),
            "0");
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM pg_publication"), "0");
}

TEST(SnapshotTest, KeylessTablesSkipPolicyLeavesThemOutOfTheCopy) {
  SnapshotPipeline p("skipcopy", "[public.*]", "{mode: only}\n    keyless_tables: skip");
  Sql sql(p.url());
  CreateItems(sql, 100);
  sql.Exec(
      "CREATE TABLE nokey (a int); INSERT INTO nokey SELECT generate_series(1, 10);"
      "CREATE TABLE parted (k int) PARTITION BY RANGE (k);"
      "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);"
      "INSERT INTO parted VALUES (1)");
  auto pgflow = p.Start();
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(p.log());
  std::set<std::string> tables;
  for (const json& l : ReadJsonl(p.output())) tables.insert(l.value("table", ""));
  EXPECT_EQ(tables, std::set<std::string>{"items"}) << ReadFile(p.log());
}

TEST(SnapshotTest, ATableDroppedMidSnapshotIsSkippedWithAWarning) {
  SnapshotPipeline p("dropped", "[public.items, public.doomed]",
                     "{mode: initial, workers: 1, chunk_size: 1MiB}");
  Sql sql(p.url());
  CreateItems(sql, 400000);
  sql.Exec("CREATE TABLE doomed (id int PRIMARY KEY); INSERT INTO doomed VALUES (1)");
  auto pgflow = p.Start();
  // The largest table is copied first: drop the small one while items is being copied.
  ASSERT_TRUE(WaitFor([&] { return p.LogHas("snapshot: ") || !pgflow->Running(); },
                      std::chrono::seconds(60)));
  sql.Exec("DROP TABLE doomed");
  ASSERT_TRUE(WaitFor([&] { return p.LogHas("snapshot: done") || !pgflow->Running(); },
                      std::chrono::seconds(120)))
      << ReadFile(p.log());
  EXPECT_THAT(ReadFile(p.log()), HasSubstr("public.doomed was dropped while being copied"));
  DrainAndStop(p, *pgflow, sql);
  EXPECT_EQ(Replay(ReadJsonl(p.output()), "items", "id").size(), 400000u);
}

}  // namespace
}  // namespace pgflow::testing
