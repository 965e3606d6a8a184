// The postgres sink against two real PostgreSQL servers, a source and a target: the initial
// load by binary COPY, the stream applied transaction by transaction, exactly once across a
// kill -9, and a target that refuses a row stopping the pipeline before acknowledging it.

#include <signal.h>

#include <stdio.h>

#include <atomic>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sinks/postgres/postgres_sink.h"
#include "tests/integration/support/replication.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;

TestCluster* source = nullptr;
TestCluster* target = nullptr;

class Environment : public ::testing::Environment {
 public:
  void SetUp() override {
    source = new TestCluster();
    target = new TestCluster();
  }
  void TearDown() override {
    delete source;
    delete target;
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new Environment);

// One pipeline from database `name` of the source cluster to database `name` of the target.
class Replication : public testing::Replication {
 public:
  Replication(const std::string& name, const std::string& tables, const std::string& snapshot,
              const std::string& extra_sinks = "", const std::string& sink_options = "")
      : testing::Replication(*source, *target, name, tables, snapshot, extra_sinks, sink_options) {}
};

// `decoded`: a second sink needs decoded rows, so snapshot rows reach the postgres sink as
// `read` changes (binary values as binary parameters) instead of raw COPY data.
void InitialLoadThenStream(const std::string& name, bool decoded) {
  TempDir dir;
  Replication r(name, "[public.kinds, public.nokey, public.gone]",
                "{mode: initial, workers: 2, chunk_size: 1MiB}",
                decoded ? "  out: {jsonl: {path: " + dir.File("out.jsonl") + "}}\n" : "");
  Sql sql(r.source_url());
  sql.Exec(R"sql(
    CREATE TABLE kinds (id int PRIMARY KEY, name text, amount numeric, at timestamptz,
      doc jsonb, tags int[], nothing text, big text);
    ALTER TABLE kinds ALTER COLUMN big SET STORAGE EXTERNAL;
    INSERT INTO kinds SELECT g, 'name ' || g, g / 7.0, '2024-01-01'::timestamptz + g * interval
      '1 minute', jsonb_build_object('g', g, 'odd', g % 2 = 1), ARRAY[g, g + 1], NULL,
      CASE WHEN g % 10 = 0 THEN repeat(md5(g::text), 100) ELSE 'small' END
      FROM generate_series(1, 4000) g;
    CREATE TABLE nokey (a int, b text, j json);
    ALTER TABLE nokey REPLICA IDENTITY FULL;
    INSERT INTO nokey SELECT g % 50, 'b' || g, '{"x": 1}' FROM generate_series(1, 200) g;
    CREATE TABLE gone (id int PRIMARY KEY);
    INSERT INTO gone SELECT generate_series(1, 100);
  )sql");
  auto pgflow = r.Start();
  // Writes while the snapshot runs...
  sql.Exec("UPDATE kinds SET name = 'during' WHERE id % 97 = 0");
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  // ...and after it, through the stream.
  sql.Exec(R"sql(
    INSERT INTO kinds SELECT g, 'new', 1.5, now(), '{"n": [1, 2]}', '{}', NULL, repeat('x', 5000)
      FROM generate_series(4001, 4500) g;
    UPDATE kinds SET name = 'toast untouched', amount = amount * 2 WHERE id % 10 = 0;
    UPDATE kinds SET big = 'rewritten ' || id WHERE id % 30 = 0;
    UPDATE kinds SET id = id + 100000 WHERE id BETWEEN 11 AND 19;
    DELETE FROM kinds WHERE id % 7 = 3;
    BEGIN; UPDATE kinds SET doc = '{"in": "txn"}' WHERE id = 1; DELETE FROM kinds WHERE id = 2;
      INSERT INTO kinds VALUES (2, 'again', NULL, NULL, NULL, NULL, NULL, NULL); COMMIT;
    UPDATE nokey SET b = 'changed' WHERE a = 3;
    DELETE FROM nokey WHERE a = 4;
    DELETE FROM nokey WHERE b = 'b105';
    TRUNCATE gone;
    INSERT INTO gone VALUES (7);
  )sql");
  r.DrainAndStop(*pgflow);

  ExpectSameRows(r, "kinds", "id");
  ExpectSameRows(r, "nokey", "a, b");
  ExpectSameRows(r, "gone", "id");
  Sql dst(r.target_url());
  // The table was created with the source's key and types.
  EXPECT_EQ(dst.Scalar("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                       "'kinds'::regclass AND contype = 'p'"),
            "PRIMARY KEY (id)");
  EXPECT_EQ(dst.Scalar("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                       "attrelid = 'kinds'::regclass AND attname = 'tags'"),
            "integer[]");
  EXPECT_EQ(dst.Scalar("SELECT count(*) FROM kinds WHERE big = repeat(md5('20'), 100) AND name "
                       "= 'toast untouched'"),
            "1");
  // The applied position is the stream's.
  EXPECT_EQ(dst.Scalar("SELECT lsn >= '" + r.Confirmed() +
                       "' FROM pgflow.applied WHERE pipeline = '" + name + "'"),
            "t");
  EXPECT_EQ(r.LogHas("rows are not decoded"), !decoded);
}

TEST(PostgresSinkTest, InitialLoadThenStreamLeavesTheTargetEqualToTheSource) {
  InitialLoadThenStream("fullcopy", false);
}

TEST(PostgresSinkTest, DecodedSnapshotRowsAreUpsertedToTheSameResult) {
  InitialLoadThenStream("decoded", true);
}

// Streamed changes are grouped into one target transaction and batched per table and kind:
// the result must still be that of applying them one by one, in order.
TEST(PostgresSinkTest, BatchedUpdatesAndDeletesKeepTheStreamsOrder) {
  Replication r("batched", "[public.s, public.pair]", "{mode: initial, workers: 1}");
  Sql sql(r.source_url());
  sql.Exec(R"sql(
    CREATE TABLE s (id int PRIMARY KEY, v text, n int, big text);
    ALTER TABLE s ALTER COLUMN big SET STORAGE EXTERNAL;
    INSERT INTO s SELECT g, 'v' || g, g, CASE WHEN g IN (5, 6) THEN 'small' ELSE
      repeat(md5(g::text), 100) END FROM generate_series(1, 20) g;
    CREATE TABLE pair (a int, b text, v numeric(6,2), PRIMARY KEY (a, b));
    INSERT INTO pair SELECT g % 5, 'b' || g, g FROM generate_series(1, 30) g;
  )sql");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  // Rows missing from the target: their updates are upserted (the batch falls back).
  Sql dst(r.target_url());
  dst.Exec("DELETE FROM s WHERE id IN (5, 6)");
  sql.Exec(R"sql(
    BEGIN;
    INSERT INTO s SELECT g, 'new', g, 'small' FROM generate_series(21, 60) g;
    UPDATE s SET n = n + 1 WHERE id <= 30;
    UPDATE s SET v = 'once' WHERE id = 2;
    UPDATE s SET v = 'twice' WHERE id = 2;
    DELETE FROM s WHERE id BETWEEN 10 AND 15;
    INSERT INTO s VALUES (10, 'back', 0, 'b'), (11, 'back', 0, 'b');
    DELETE FROM s WHERE id = 11;
    UPDATE s SET id = id + 1000 WHERE id BETWEEN 40 AND 45;
    UPDATE s SET id = 1100 WHERE id = 1040;
    UPDATE s SET id = 1040 WHERE id = 1041;
    UPDATE s SET v = 'toast kept' WHERE id BETWEEN 16 AND 19;
    UPDATE pair SET v = v * 2 WHERE a = 1;
    DELETE FROM pair WHERE a = 2;
    INSERT INTO pair VALUES (2, 'b2', 1.5);
    COMMIT;
    UPDATE s SET n = -1 WHERE id BETWEEN 50 AND 55;
    DELETE FROM s WHERE id BETWEEN 56 AND 58;
    BEGIN; DELETE FROM pair WHERE a = 3; UPDATE pair SET b = b || 'x' WHERE a = 4; COMMIT;
  )sql");
  r.DrainAndStop(*pgflow);
  ExpectSameRows(r, "s", "id");
  ExpectSameRows(r, "pair", "a, b");
}

// Batches of rows in text form travel as one array per column: values that need quoting in an
// array literal (quotes, backslashes, braces, commas, "NULL", blanks) must arrive intact, in
// inserts, updates (which leave a TOASTed value, so not whole rows) and deletes alike, with a
// text key as well.
TEST(PostgresSinkTest, BatchedValuesThatNeedQuotingArriveIntact) {
  Replication r("quoting", "[public.q]", "{mode: initial, workers: 1}");
  Sql sql(r.source_url());
  sql.Exec(R"sql(
    CREATE TABLE q (k text PRIMARY KEY, txt text, b bytea, a text[], j jsonb, n numeric,
      big text);
    ALTER TABLE q ALTER COLUMN big SET STORAGE EXTERNAL;
    CREATE TABLE odd (v text);
    INSERT INTO odd VALUES ('a"b'), (E'c\\d'), ('{x}'), ('NULL'), (''), (' spaced '), ('comma,'),
      (E'tab\there'), (E'new\nline'), ('ünï ✓'), (E'\\"'), ('('), (')'), ('''quote''');
  )sql");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  sql.Exec(R"sql(
    INSERT INTO q SELECT v, v || v, convert_to(v, 'UTF8'), ARRAY[v, NULL, 'x'],
      jsonb_build_object(v, v), length(v), repeat(v || 'big', 1000) FROM odd;
    INSERT INTO q SELECT 'k' || v, NULL, NULL, NULL, NULL, NULL, NULL FROM odd;
  )sql");
  // In the target first, so that the updates and deletes are not folded into the inserts.
  Sql dst(r.target_url());
  ASSERT_TRUE(WaitFor([&] { return dst.PollScalar("SELECT count(*) FROM q") == "28"; },
                      std::chrono::seconds(30)))
      << ReadFile(r.log());
  sql.Exec(R"sql(
    UPDATE q SET txt = reverse(txt), a = ARRAY[txt] WHERE k IN (SELECT v FROM odd);
    DELETE FROM q WHERE k IN (SELECT 'k' || v FROM odd WHERE v <> 'NULL');
  )sql");
  r.DrainAndStop(*pgflow);
  ExpectSameRows(r, "q", "k");
  EXPECT_EQ(dst.Scalar("SELECT count(*) FROM q"), "15");
  EXPECT_EQ(dst.Scalar("SELECT a[1] FROM q WHERE k = E'c\\\\d'"), "c\\dc\\d");
  EXPECT_EQ(dst.Scalar("SELECT txt FROM q WHERE k = E'c\\\\d'"), "d\\cd\\c");
}

// A table whose only uniqueness rule is its key has the changes of a group folded into their
// net effect per row; one with another unique index is applied in stream order, where a swap
// of unique values through a third one and a value freed then taken again are legal.
TEST(PostgresSinkTest, AnotherUniqueIndexKeepsATablesChangesInStreamOrder) {
  Replication r("uniq", "[public.u, public.plain]", "{mode: initial, workers: 1}");
  Sql sql(r.source_url());
  sql.Exec(R"sql(
    CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE, n int);
    INSERT INTO u VALUES (1, 'a', 0), (2, 'b', 0), (3, 'c', 0);
    CREATE TABLE plain (id int PRIMARY KEY, email text, n int);
    INSERT INTO plain VALUES (1, 'a', 0), (2, 'b', 0), (3, 'c', 0);
  )sql");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  for (const char* table : {"u", "plain"}) {
    sql.Exec(absl::StrReplaceAll(R"sql(
      BEGIN;
      UPDATE {T} SET email = 'tmp' WHERE id = 1;
      UPDATE {T} SET email = 'a' WHERE id = 2;
      UPDATE {T} SET email = 'b' WHERE id = 1;
      COMMIT;
      BEGIN; DELETE FROM {T} WHERE id = 3; INSERT INTO {T} VALUES (4, 'c', 1); COMMIT;
      BEGIN;
      INSERT INTO {T} VALUES (5, 'e', 0);
      UPDATE {T} SET email = 'f', n = n + 1 WHERE id = 5;
      INSERT INTO {T} VALUES (6, 'e', 0);
      UPDATE {T} SET n = n + 1 WHERE id = 6;
      COMMIT;
    )sql",
                                 {{"{T}", table}}));
  }
  r.DrainAndStop(*pgflow);
  ExpectSameRows(r, "u", "id");
  ExpectSameRows(r, "plain", "id");
  EXPECT_TRUE(r.LogHas("public.u has a unique index or exclusion constraint besides its key"))
      << ReadFile(r.log());
  EXPECT_FALSE(r.LogHas("public.plain has a unique index")) << ReadFile(r.log());
}

// Transactions of several statements, on a keyed table and on a keyless one (where applying
// a transaction twice would leave duplicate rows); new ids from `first_new_id`.
BackgroundWriter::Make ItemsAndEventsLoad(int64_t first_new_id) {
  return [first_new_id](int64_t n, std::mt19937_64& rng) {
    const int64_t next = first_new_id + n;
    const int64_t a = rng() % next + 1;
    const int64_t b = rng() % next + 1;
    const std::string id = std::to_string(next);
    return "BEGIN; INSERT INTO items VALUES (" + id +
           ", 1, md5(random()::text)); "
           "UPDATE items SET v = v + 1 WHERE id = " +
           std::to_string(a) +
           "; "
           "DELETE FROM items WHERE id = " +
           std::to_string(b) +
           "; "
           "INSERT INTO events VALUES (" +
           id + ", 'txn " + id + "'); COMMIT;";
  };
}

TEST(PostgresSinkTest, KillNineMidStreamAppliesEveryTransactionExactlyOnce) {
  Replication r("crash", "[public.items, public.events]", "{mode: initial, workers: 2}");
  Sql sql(r.source_url());
  sql.Exec(
      "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, payload text); "
      "INSERT INTO items SELECT g, 0, md5(g::text) FROM generate_series(1, 20000) g; "
      "CREATE TABLE events (n bigint, note text); ALTER TABLE events REPLICA IDENTITY FULL");
  BackgroundWriter writer(r.source_url(), ItemsAndEventsLoad(20001));
  auto pgflow = r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.LogHas("snapshot: done") || !pgflow->Running(); },
                      std::chrono::seconds(120)))
      << ReadFile(r.log());
  Sql dst(r.target_url());
  auto applied = [&] {
    return dst.Scalar("SELECT count(*) FROM pgflow.applied WHERE pipeline = 'crash'") == "1";
  };
  ASSERT_TRUE(WaitFor([&] { return applied() || !pgflow->Running(); }, std::chrono::seconds(60)))
      << ReadFile(r.log());
  int64_t before = writer.transactions();
  ASSERT_TRUE(
      WaitFor([&] { return writer.transactions() > before + 200; }, std::chrono::seconds(60)));
  pgflow->Signal(SIGKILL);
  pgflow->Wait(std::chrono::seconds(10));

  pgflow = r.Start();
  before = writer.transactions();
  ASSERT_TRUE(
      WaitFor([&] { return writer.transactions() > before + 200; }, std::chrono::seconds(60)));
  writer.Stop();
  r.DrainAndStop(*pgflow);

  ExpectSameRows(r, "items", "id");
  ExpectSameRows(r, "events", "n, note");
  EXPECT_EQ(dst.Scalar("SELECT count(*) - count(DISTINCT n) FROM events"), "0");
}

TEST(PostgresSinkTest, SourceConnectionCutMidTransactionLeavesTheTargetEqual) {
  // Small source transactions join a group and are held back until their commit; one large
  // enough goes out under a savepoint. Cutting the replication connection in the middle of
  // either leaves the target equal to the source once the cut transaction arrives again.
  Replication r("cut", "[public.items]", "{mode: never}");
  Sql sql(r.source_url());
  sql.Exec("CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text)");
  Sql(r.target_url()).Exec("CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text)");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  // Paced (about 40,000 changes a second): unpaced, the writer can outrun the WAL sender on a
  // loaded machine, and "sent what was written" below would never come.
  BackgroundWriter writer(r.source_url(), [](int64_t n, std::mt19937_64& rng) {
    const int64_t base = n * 100000;
    const int64_t rows = n % 5 == 4 ? 30000 : 40 + static_cast<int64_t>(rng() % 200);
    return "SELECT pg_sleep(0.2); BEGIN; INSERT INTO items SELECT g, 0, 'n' FROM generate_series(" +
           std::to_string(base) + ", " + std::to_string(base + rows - 1) +
           ") g; UPDATE items SET v = v + 1 WHERE id BETWEEN " + std::to_string(base) + " AND " +
           std::to_string(base + rows / 3) + "; DELETE FROM items WHERE id BETWEEN " +
           std::to_string(base + rows / 2) + " AND " + std::to_string(base + rows / 2 + 10) +
           "; INSERT INTO items VALUES (" + std::to_string(base + rows) + ", 1, 'last'); COMMIT";
  });
  for (int cut = 0; cut < 6; ++cut) {
    int64_t before = writer.transactions();
    // A few more transactions each time, so the cuts fall at different points of the load.
    ASSERT_TRUE(WaitFor([&] { return writer.transactions() > before + 3 + cut; },
                        std::chrono::seconds(60)));
    // pgflow is connected again (after the last cut) and has been sent what was written.
    ASSERT_TRUE(WaitSlotSentAll(r.source_url(), "pgflow_cut", std::chrono::seconds(60)))
        << ReadFile(r.log());
    sql.Exec(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        "WHERE slot_name = 'pgflow_cut' AND active");
  }
  writer.Stop();
  r.DrainAndStop(*pgflow);
  EXPECT_TRUE(r.LogHas("reconnect")) << ReadFile(r.log());
  ExpectSameRows(r, "items", "id");
}

TEST(PostgresSinkTest, KillNineMidSnapshotResumesAndUpsertsTheChunksCopiedAgain) {
  // Keyed tables only: a keyless table copied again after a crash keeps duplicates.
  Replication r("resume", "[public.items]", "{mode: initial, workers: 2, chunk_size: 1MiB}");
  Sql sql(r.source_url());
  sql.Exec(
      "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, payload text); "
      "INSERT INTO items SELECT g, 0, repeat(md5(g::text), 2) FROM generate_series(1, 400000) g; "
      "CREATE TABLE events (n bigint, note text); ALTER TABLE events REPLICA IDENTITY FULL; "
      "CREATE INDEX items_v ON items (v); ANALYZE items");
  BackgroundWriter writer(r.source_url(), ItemsAndEventsLoad(400001));
  auto pgflow = r.Start();
  Sql dst(r.target_url());
  // Killed once the target holds part of the table, before the snapshot ends.
  auto copied = [&] {
    if (dst.Scalar("SELECT to_regclass('public.items') IS NULL") == "t") return 0;
    return std::stoi(dst.Scalar("SELECT count(*) FROM items"));
  };
  ASSERT_TRUE(
      WaitFor([&] { return copied() > 50000 || !pgflow->Running(); }, std::chrono::seconds(120)))
      << ReadFile(r.log());
  pgflow->Signal(SIGKILL);
  pgflow->Wait(std::chrono::seconds(10));
  ASSERT_FALSE(r.LogHas("snapshot: done")) << "the snapshot finished before it was interrupted";

  pgflow = r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.LogHas("snapshot: done") || !pgflow->Running(); },
                      std::chrono::seconds(300)))
      << ReadFile(r.log());
  EXPECT_THAT(ReadFile(r.log()), HasSubstr("public.items already holds rows"));
  // Its primary key was not built yet (it comes after the load): rows copied twice are removed
  // and the key built before the rest is upserted.
  EXPECT_THAT(ReadFile(r.log()), HasSubstr("public.items: the load was interrupted"));
  int64_t before = writer.transactions();
  ASSERT_TRUE(
      WaitFor([&] { return writer.transactions() > before + 100; }, std::chrono::seconds(60)));
  writer.Stop();
  r.DrainAndStop(*pgflow);
  ExpectSameRows(r, "items", "id");
  // The key and the index deferred by the first run, which created the table, are built by the
  // second.
  EXPECT_EQ(dst.Scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'items_v'"), "1");
  EXPECT_EQ(dst.Scalar("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                       "'items'::regclass AND contype = 'p'"),
            "PRIMARY KEY (id)");
}

TEST(PostgresSinkTest, ARowTheTargetRefusesStopsThePipelineUnacknowledged) {
  Replication r("refused", "[public.people]", "{mode: initial, workers: 1}");
  Sql sql(r.source_url());
  sql.Exec("CREATE TABLE people (id int PRIMARY KEY, email text)");
  sql.Exec("INSERT INTO people VALUES (1, 'a@example.com')");
  Sql dst(r.target_url());
  // The target has a rule the source does not.
  dst.Exec("CREATE TABLE people (id int PRIMARY KEY, email text UNIQUE)");
  auto pgflow = r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.LogHas("snapshot: done") || !pgflow->Running(); },
                      std::chrono::seconds(60)))
      << ReadFile(r.log());
  sql.Exec("INSERT INTO people VALUES (2, 'b@example.com')");
  std::string good = sql.Scalar("SELECT pg_current_wal_lsn()");
  ASSERT_TRUE(WaitFor([&] { return r.ConfirmedAtLeast(good); }, std::chrono::seconds(60)))
      << ReadFile(r.log());
  sql.Exec("INSERT INTO people VALUES (3, 'a@example.com')");
  int status = pgflow->Wait(std::chrono::seconds(60));
  EXPECT_NE(status, 0) << ReadFile(r.log());
  EXPECT_NE(status, -1) << "pgflow kept running after the target refused a row";
  std::string log = ReadFile(r.log());
  EXPECT_THAT(log, HasSubstr("public.people"));
  EXPECT_THAT(log, HasSubstr("(id)=(3)"));
  EXPECT_THAT(log, HasSubstr("duplicate key value violates unique constraint"));
  // Nothing from the refused transaction on is acknowledged or applied.
  std::string end = sql.Scalar("SELECT pg_current_wal_lsn()");
  EXPECT_FALSE(r.ConfirmedAtLeast(end)) << r.Confirmed();
  EXPECT_EQ(sql.Scalar("SELECT '" + r.Confirmed() + "'::pg_lsn <= '" + end + "'::pg_lsn"), "t");
  EXPECT_EQ(dst.Scalar("SELECT string_agg(id::text, ',' ORDER BY id) FROM people"), "1,2");
}

// With dead_letter, the changes the target refuses are set aside in pgflow.dead_letters, with
// the reason, and everything else is applied, the rest of their transactions included; a
// restart records none of them twice.
TEST(PostgresSinkTest, WithDeadLetterRefusedChangesAreSetAsideAndTheRestApplied) {
  const int admin_port = FreeLoopbackPort();
  Replication r("deadletter", "[public.people]", "{mode: initial, workers: 1}",
                "admin: {listen: '127.0.0.1:" + std::to_string(admin_port) + "'}\n",
                "}, dead_letter: {table: pgflow.dead_letters");
  Sql sql(r.source_url());
  sql.Exec("CREATE TABLE people (id int PRIMARY KEY, email text, age int)");
  sql.Exec("INSERT INTO people VALUES (1, 'a@example.com', 20)");
  Sql dst(r.target_url());
  // The target has rules the source does not.
  dst.Exec(
      "CREATE TABLE people (id int PRIMARY KEY, email varchar(20) UNIQUE, age int CHECK (age >= "
      "0))");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  sql.Exec(R"sql(
    BEGIN;
    INSERT INTO people VALUES (2, 'b@example.com', 30), (3, 'a@example.com', 31),
      (4, 'c@example.com', -1), (5, 'd@example.com', 40);
    COMMIT;
    BEGIN;
    UPDATE people SET age = 32 WHERE id = 2;
    INSERT INTO people VALUES (6, repeat('x', 30) || '@example.com', 50);
    COMMIT;
    DELETE FROM people WHERE id = 5;
    INSERT INTO people VALUES (7, 'e@example.com', 70);
  )sql");
  // The metric counts what was set aside, across the restarts that set it aside.
  const std::string metric =
      "pgflow_sink_dead_lettered_total{pipeline=\"deadletter\",sink=\"replica\"} ";
  EXPECT_TRUE(WaitFor(
      [&] {
        return Curl("http://127.0.0.1:" + std::to_string(admin_port) + "/metrics")
                   .body.find(metric + "3\n") != std::string::npos;
      },
      std::chrono::seconds(60)))
      << Curl("http://127.0.0.1:" + std::to_string(admin_port) + "/metrics").body;
  r.DrainAndStop(*pgflow);
  EXPECT_EQ(dst.Scalar("SELECT string_agg(id || ':' || age, ',' ORDER BY id) FROM people"),
            "1:20,2:32,7:70");
  EXPECT_EQ(dst.Scalar("SELECT string_agg(key || ' ' || code || ' ' || operation, ', ' ORDER "
                       "BY key) FROM pgflow.dead_letters WHERE pipeline = 'deadletter'"),
            "(id)=(3) 23505 insert, (id)=(4) 23514 insert, (id)=(6) 22001 insert");
  EXPECT_EQ(dst.Scalar("SELECT change->'after'->>'email' FROM pgflow.dead_letters WHERE key = "
                       "'(id)=(3)'"),
            "a@example.com");
  EXPECT_EQ(dst.Scalar("SELECT bool_and(reason LIKE '%public.people%') FROM pgflow.dead_letters"),
            "t");
  std::string log = ReadFile(r.log());
  EXPECT_THAT(log, HasSubstr("set aside in pgflow.dead_letters"));
  // The three may be set aside by one restart or by two, as the stream's batches fall: each
  // closing line counts its own, and together they count three.
  const std::regex closing(R"re((\d+) refused changes? set aside in pgflow\.dead_letters)re");
  int set_aside = 0;
  for (std::sregex_iterator it(log.begin(), log.end(), closing), end; it != end; ++it) {
    set_aside += std::stoi((*it)[1].str());
  }
  EXPECT_EQ(set_aside, 3) << log;
  // Again, with nothing new: nothing is applied or recorded twice.
  auto again = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*again)) << ReadFile(r.log());
  sql.Exec("INSERT INTO people VALUES (8, 'f@example.com', 80)");
  r.DrainAndStop(*again);
  EXPECT_EQ(dst.Scalar("SELECT count(*) FROM pgflow.dead_letters"), "3");
  EXPECT_EQ(dst.Scalar("SELECT string_agg(id::text, ',' ORDER BY id) FROM people"), "1,2,7,8");

  // The check is mended on the target: `pgflow dlq replay` applies that row and keeps the two
  // still refused.
  dst.Exec("ALTER TABLE people DROP CONSTRAINT people_age_check");
  std::string out;
  ASSERT_EQ(RunPgflow({"dlq", "list", r.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("sink replica (table pgflow.dead_letters in 127.0.0.1:"));
  EXPECT_THAT(out, HasSubstr("/deadletter): 3 records"));
  EXPECT_NE(RunPgflow({"dlq", "replay", r.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("(insert public.people (id)=(4)) delivered"));
  EXPECT_THAT(out, HasSubstr("(insert public.people (id)=(3)) not delivered"));
  EXPECT_THAT(out, HasSubstr("2 records not delivered: kept"));
  EXPECT_EQ(dst.Scalar("SELECT string_agg(id || ':' || age, ',' ORDER BY id) FROM people"),
            "1:20,2:32,4:-1,7:70,8:80");
  EXPECT_EQ(dst.Scalar("SELECT string_agg(key, ', ' ORDER BY key) FROM pgflow.dead_letters"),
            "(id)=(3), (id)=(6)");
}

// Into an empty database: the types, domains, functions, collations and extensions the tables
// use come first (pg_dump's pre-data), then the tables and rows, then keys and constraints,
// then statistics.
TEST(PostgresSinkTest, TheSchemaObjectsTablesNeedAreBroughtIntoAnEmptyTarget) {
  Replication r("types", "[public.*]", "{mode: initial, workers: 1}");
  Sql sql(r.source_url());
  sql.Exec(R"sql(
    CREATE EXTENSION citext;
    CREATE TYPE mood AS ENUM ('sad', 'happy');
    CREATE DOMAIN positive AS int CHECK (VALUE > 0);
    CREATE TYPE pair AS (x int, label text);
    CREATE TYPE floatrange AS RANGE (subtype = float8);
    CREATE COLLATION bytewise (locale = 'C');
    CREATE FUNCTION next_code() RETURNS int LANGUAGE sql AS 'SELECT 42';
    CREATE FUNCTION is_small(int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 < 1000';
    CREATE TABLE moods (id int PRIMARY KEY, m mood, ms mood[], v varchar(12), n numeric(10, 2),
      p positive, pr pair, fr floatrange, name text COLLATE bytewise, email citext,
      code int DEFAULT next_code() CHECK (is_small(code)));
    INSERT INTO moods VALUES (1, 'happy', '{sad,happy}', 'abc', 1.5, 3, ROW(1, 'one'),
      '[1.5,2)', 'B', 'A@x.org');
    CREATE TABLE emptied (a int, b text);
    ALTER TABLE emptied DROP COLUMN a, DROP COLUMN b;
    INSERT INTO emptied DEFAULT VALUES;
    CREATE TABLE nothing_yet (id int PRIMARY KEY);
  )sql");
  Sql dst(r.target_url());
  // A type of the same name already there is left as it is; another one first makes the OIDs
  // differ between the databases (binary arrays carry their element's OID).
  dst.Exec("CREATE TYPE unrelated AS ENUM ('x'); CREATE TYPE mood AS ENUM ('sad', 'happy')");
  auto pgflow = r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.LogHas("snapshot: done") || !pgflow->Running(); },
                      std::chrono::seconds(60)))
      << ReadFile(r.log());
  EXPECT_TRUE(r.LogHas("already there")) << ReadFile(r.log());
  sql.Exec("INSERT INTO moods (id, m, p, email) VALUES (2, 'sad', 7, 'b@X.org')");
  r.DrainAndStop(*pgflow);
  ExpectSameRows(r, "moods", "id");
  EXPECT_EQ(dst.Scalar("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                       "attrelid = 'moods'::regclass AND attname = 'n'"),
            "numeric(10,2)");
  EXPECT_EQ(dst.Scalar("SELECT code FROM moods WHERE id = 2"), "42");
  EXPECT_EQ(dst.Scalar("SELECT count(*) FROM moods WHERE email = 'a@X.ORG'"), "1");  // citext
  // A table whose columns were all dropped exists, with its one row; an empty one too.
  EXPECT_EQ(dst.Scalar("SELECT count(*) FROM emptied"), "1");
  EXPECT_EQ(dst.Scalar("SELECT to_regclass('nothing_yet') IS NOT NULL"), "t");
  // Statistics for the planner, each step with its time in the log.
  EXPECT_EQ(dst.Scalar("SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('moods', "
                       "'emptied', 'nothing_yet') AND last_analyze IS NOT NULL"),
            "3");
  EXPECT_TRUE(r.LogHas("schema objects restored in"));
  EXPECT_TRUE(r.LogHas("keys, indexes and constraints built in"));
  EXPECT_TRUE(r.LogHas("3 table(s) analyzed in"));
  std::string out;
  EXPECT_EQ(RunPgflow({"verify", r.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("identical (3 tables, 3 rows)"));
}

TEST(PostgresSinkTest, AnUnreachableTargetIsReportedByName) {
  Replication r("unreachable", "[public.t]", "{mode: never}");
  Sql(r.source_url()).Exec("CREATE TABLE t (id int PRIMARY KEY)");
  TempDir dir;
  std::string yaml = dir.File("p.yaml");
  WriteFile(yaml, "pipeline: unreachable\nsource:\n  postgres:\n    url: " + r.source_url() +
                      "\n    tables: [public.t]\nsinks:\n  replica: {postgres: {url: "
                      "postgres://postgres@127.0.0.1:1/nowhere}}\n");
  std::string out;
  EXPECT_NE(RunPgflow({"run", yaml}, &out), 0);
  EXPECT_THAT(out, HasSubstr("127.0.0.1:1/nowhere"));
  EXPECT_THAT(out, HasSubstr("replica"));
}

TEST(PostgresSinkTest, OptionsAreValidatedWithoutADatabase) {
  TempDir dir;
  std::string yaml = dir.File("p.yaml");
  WriteFile(yaml,
            "pipeline: opts\nsource:\n  postgres:\n    url: postgres://x@127.0.0.1:1/db\n    "
            "tables: [public.t]\nsinks:\n  replica: {postgres: {url: postgres://h/db, "
            "batch_row: 10}}\n");
  std::string out;
  EXPECT_EQ(RunPgflow({"validate", yaml}, &out), 2);
  EXPECT_THAT(out, HasSubstr("batch_row"));
  WriteFile(yaml,
            "pipeline: opts\nsource:\n  postgres:\n    url: postgres://x@127.0.0.1:1/db\n    "
            "tables: [public.t]\nsinks:\n  replica: {postgres: {schema: s}}\n");
  EXPECT_EQ(RunPgflow({"validate", yaml}, &out), 2);
  EXPECT_THAT(out, HasSubstr("url"));
  WriteFile(yaml,
            "pipeline: opts\nsource:\n  postgres:\n    url: postgres://x@127.0.0.1:1/db\n    "
            "tables: [public.t]\nsinks:\n  replica: {postgres: {url: postgres://h/db, "
            "roles: all}}\n");
  EXPECT_EQ(RunPgflow({"validate", yaml}, &out), 2);
  EXPECT_THAT(out, HasSubstr("roles policy 'all'"));
}

// The schema of `tables` as pg_dump prints it, without comments, blank lines, session settings
// and the \restrict lines newer pg_dump versions add with a random key.
std::string SchemaDump(const std::string& url, const std::vector<std::string>& tables) {
  std::string command =
      "/usr/lib/postgresql/15/bin/pg_dump --schema-only --no-owner "
      "--no-privileges -d '" +
      url + "'";
  for (const std::string& t : tables) command += " -t '" + t + "'";
  command += " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "cannot run " << command;
    return "";
  }
  std::string out;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) out.append(buffer, n);
  EXPECT_EQ(pclose(pipe), 0) << out;
  std::istringstream lines(out);
  std::string kept;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line.rfind("--", 0) == 0 || line.rfind("SET ", 0) == 0 ||
        line.rfind("SELECT pg_catalog.set_config", 0) == 0 || line.rfind("\\", 0) == 0) {
      continue;
    }
    kept += line + "\n";
  }
  return kept;
}

const char kDefinitionSchema[] = R"sql(
  CREATE TABLE parents (id bigserial PRIMARY KEY, name text NOT NULL,
    CONSTRAINT parents_name_key UNIQUE (name));
  CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    parent_id bigint NOT NULL REFERENCES parents (id) ON DELETE CASCADE,
    status varchar(12) NOT NULL DEFAULT 'new',
    qty int NOT NULL DEFAULT 1 CONSTRAINT qty_positive CHECK (qty > 0),
    code text COLLATE "C",
    ticket int GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 5),
    total numeric GENERATED ALWAYS AS (qty * 2.5) STORED,
    created timestamptz NOT NULL DEFAULT now());
  CREATE UNIQUE INDEX orders_code ON orders (code);
  CREATE INDEX orders_open ON orders (parent_id, created DESC) WHERE status <> 'done';
  INSERT INTO parents (name) SELECT 'p' || g FROM generate_series(1, 50) g;
  INSERT INTO orders (parent_id, qty, code)
    SELECT g % 50 + 1, g % 9 + 1, 'c' || g FROM generate_series(1, 3000) g;
)sql";

std::string SequenceState(const std::string& url, const std::string& sequence) {
  return Sql(url).Scalar("SELECT last_value || ' ' || is_called FROM " + sequence);
}

TEST(PostgresSinkTest, AMissingTableIsCreatedFromTheSourcesDefinitionWithItsIndexesAfterTheLoad) {
  Replication r("definition", "[public.parents, public.orders]", "{mode: initial, workers: 2}");
  Sql sql(r.source_url());
  sql.Exec(kDefinitionSchema);
  auto pgflow = r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.LogHas("sequences set") || !pgflow->Running(); },
                      std::chrono::seconds(120)))
      << ReadFile(r.log());
  ASSERT_TRUE(pgflow->Running()) << ReadFile(r.log());
  std::string log = ReadFile(r.log());
  // Built after the load, not during it.
  EXPECT_THAT(log, HasSubstr("5 indexes and constraints are built once the snapshot is loaded"));
  EXPECT_THAT(log, HasSubstr("CREATE UNIQUE INDEX orders_code ON \"public\".\"orders\""));

  // Columns, defaults, NOT NULL, identity and generated columns, the key, the sequences and
  // their ownership, every index and constraint: pg_dump cannot tell the two apart.
  const std::vector<std::string> tables = {"public.parents", "public.orders"};
  std::string from = SchemaDump(r.source_url(), tables);
  EXPECT_THAT(from, HasSubstr("orders_open"));
  EXPECT_THAT(from, HasSubstr("FOREIGN KEY"));
  EXPECT_EQ(SchemaDump(r.target_url(), tables), from);
  Sql dst(r.target_url());
  EXPECT_EQ(dst.Scalar("SELECT count(*) FROM pgflow.pending_ddl WHERE pipeline = 'definition' "
                       "AND NOT done"),
            "0");
  for (const char* seq : {"parents_id_seq", "orders_id_seq", "orders_ticket_seq"}) {
    EXPECT_EQ(SequenceState(r.target_url(), seq), SequenceState(r.source_url(), seq)) << seq;
  }
  EXPECT_EQ(SequenceState(r.target_url(), "orders_ticket_seq"), "15095 true");

  // The stream applies over the recreated definition: an identity the target generates ALWAYS
  // is inserted as sent and never updated, a generated column is computed by the target, a
  // cascade arrives as the source's own deletes.
  sql.Exec(R"sql(
    INSERT INTO orders (parent_id, code) SELECT g % 10 + 1, 'n' || g FROM generate_series(1, 200) g;
    UPDATE orders SET qty = 7, status = 'done' WHERE id % 11 = 0;
    DELETE FROM parents WHERE id = 50;
    INSERT INTO parents (name) VALUES ('late');
  )sql");
  r.DrainAndStop(*pgflow);
  ExpectSameRows(r, "parents", "id");
  ExpectSameRows(r, "orders", "id");

  // On demand (`pgflow sequences`): the target's sequences catch up with the source's.
  EXPECT_NE(SequenceState(r.target_url(), "orders_id_seq"),
            SequenceState(r.source_url(), "orders_id_seq"));
  PostgresOrigin origin;
  origin.url = r.source_url();
  origin.tables = {{"public", "*"}};
  PostgresSinkOptions options;
  options.url = r.target_url();
  ASSERT_TRUE(SyncSequences("definition", origin, options).ok());
  for (const char* seq : {"parents_id_seq", "orders_id_seq", "orders_ticket_seq"}) {
    EXPECT_EQ(SequenceState(r.target_url(), seq), SequenceState(r.source_url(), seq)) << seq;
  }
  EXPECT_EQ(dst.Scalar("SELECT nextval('orders_id_seq') = (SELECT max(id) + 1 FROM orders)"), "t");
}

TEST(PostgresSinkTest, AnIndexTheTargetCannotBuildStaysPendingAndTheOthersAreBuiltBesideIt) {
  Replication r("unbuildable", "[public.coded]", "{mode: initial, workers: 2}");
  Sql sql(r.source_url());
  // The index calls a function the target has under the same name but not IMMUTABLE (left as
  // it is when the source's schema objects are restored): its build fails there, and only there.
  Sql(r.target_url())
      .Exec(
          "CREATE FUNCTION code_key(text) RETURNS text VOLATILE LANGUAGE plpgsql AS "
          "'BEGIN RETURN lower($1); END'");
  sql.Exec(R"sql(
    CREATE FUNCTION code_key(text) RETURNS text IMMUTABLE LANGUAGE sql AS 'SELECT lower($1)';
    CREATE TABLE coded (id bigint PRIMARY KEY, code text NOT NULL, qty int,
      CONSTRAINT coded_code_unique UNIQUE (code));
    CREATE INDEX coded_qty ON coded (qty);
    CREATE INDEX coded_key ON coded (public.code_key(code));
    INSERT INTO coded SELECT g, 'C' || g, g % 10 FROM generate_series(1, 2000) g;
  )sql");
  auto pgflow = r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.LogHas("sequences set") || !pgflow->Running(); },
                      std::chrono::seconds(120)))
      << ReadFile(r.log());
  ASSERT_TRUE(pgflow->Running()) << ReadFile(r.log());
  const std::string log = ReadFile(r.log());
  EXPECT_THAT(log, HasSubstr("4 indexes and constraints are built once the snapshot is loaded"));
  EXPECT_THAT(log, HasSubstr("building on public.coded: CREATE INDEX coded_key"));
  EXPECT_THAT(log, HasSubstr("it stays pending in pgflow.pending_ddl"));

  Sql dst(r.target_url());
  // Everything else is there: the key and the UNIQUE constraint (attached to the indexes built
  // beside the others), the plain index.
  EXPECT_EQ(
      dst.Scalar("SELECT string_agg(conname || ':' || contype::text, ',' ORDER BY conname) FROM "
                 "pg_constraint WHERE conrelid = 'public.coded'::regclass"),
      "coded_code_unique:u,coded_pkey:p");
  EXPECT_EQ(
      dst.Scalar(
          "SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY indexrelid::regclass::text) "
          "FROM "
          "pg_index WHERE indrelid = 'public.coded'::regclass"),
      "coded_code_unique,coded_pkey,coded_qty");
  EXPECT_EQ(dst.Scalar("SELECT count(*) || ' ' || bool_and(error LIKE '%IMMUTABLE%') FROM "
                       "pgflow.pending_ddl WHERE pipeline = 'unbuildable' AND NOT done"),
            "1 true");
  EXPECT_EQ(dst.Scalar("SELECT statement FROM pgflow.pending_ddl WHERE pipeline = 'unbuildable' "
                       "AND NOT done"),
            "CREATE INDEX coded_key ON \"public\".\"coded\" USING btree (public.code_key(code))");
  ExpectSameRows(r, "coded", "id");
  r.DrainAndStop(*pgflow);

  // Once the target's function is fixed, the next run builds the index at its first transaction.
  dst.Exec(
      "CREATE OR REPLACE FUNCTION code_key(text) RETURNS text IMMUTABLE LANGUAGE plpgsql AS "
      "'BEGIN RETURN lower($1); END'");
  pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  sql.Exec("INSERT INTO coded VALUES (2001, 'C2001', 1)");
  ASSERT_TRUE(WaitFor(
      [&] {
        return dst.Scalar(
                   "SELECT count(*) FROM pgflow.pending_ddl WHERE pipeline = "
                   "'unbuildable' AND NOT done") == "0";
      },
      std::chrono::seconds(60)))
      << ReadFile(r.log());
  r.DrainAndStop(*pgflow);
  EXPECT_EQ(dst.Scalar("SELECT count(*) FROM pg_index WHERE indrelid = 'public.coded'::regclass"),
            "4");
  ExpectSameRows(r, "coded", "id");
}

TEST(PostgresSinkTest, TheSchemaOptionMapsEveryGeneratedNameAndAnExistingTableIsLeftAlone) {
  Replication r("mapped", "[public.parents, public.orders, public.kept]",
                "{mode: initial, workers: 1}", "", ", schema: copy");
  Sql sql(r.source_url());
  sql.Exec(kDefinitionSchema);
  sql.Exec(
      "CREATE TABLE kept (id serial PRIMARY KEY, v text UNIQUE); INSERT INTO kept (v) "
      "VALUES ('a'), ('b')");
  Sql dst(r.target_url());
  dst.Exec("CREATE SCHEMA copy; CREATE TABLE copy.kept (id int PRIMARY KEY, v text)");
  auto pgflow = r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.LogHas("sequences set") || !pgflow->Running(); },
                      std::chrono::seconds(120)))
      << ReadFile(r.log());
  sql.Exec("INSERT INTO orders (parent_id, code) VALUES (1, 'streamed')");
  r.DrainAndStop(*pgflow);
  EXPECT_EQ(Rows(r.target_url(), "copy.orders", "id"), Rows(r.source_url(), "public.orders", "id"));
  EXPECT_EQ(dst.Scalar("SELECT to_regclass('public.orders') IS NULL"), "t");
  EXPECT_EQ(dst.Scalar("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = "
                       "'copy.orders'::regclass AND adnum = 1"),
            "nextval('copy.orders_id_seq'::regclass)");
  EXPECT_EQ(dst.Scalar("SELECT pg_get_serial_sequence('copy.orders', 'ticket')"),
            "copy.orders_ticket_seq");
  EXPECT_EQ(dst.Scalar("SELECT confrelid::regclass::text FROM pg_constraint WHERE conrelid = "
                       "'copy.orders'::regclass AND contype = 'f'"),
            "copy.parents");
  EXPECT_EQ(dst.Scalar("SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY "
                       "indexrelid::regclass::text) FROM pg_index WHERE indrelid = "
                       "'copy.orders'::regclass"),
            "copy.orders_code,copy.orders_open,copy.orders_pkey");
  // As the source's at the end of the snapshot, before the streamed insert.
  EXPECT_EQ(SequenceState(r.target_url(), "copy.orders_id_seq"), "3000 true");
  // The existing table keeps its own definition: no unique constraint, no default.
  EXPECT_EQ(dst.Scalar("SELECT count(*) FROM pg_index WHERE indrelid = 'copy.kept'::regclass"),
            "1");
  EXPECT_EQ(dst.Scalar("SELECT count(*) FROM pg_attrdef WHERE adrelid = 'copy.kept'::regclass"),
            "0");
  EXPECT_EQ(Rows(r.target_url(), "copy.kept", "id"), Rows(r.source_url(), "public.kept", "id"));
}

}  // namespace
}  // namespace pgflow::testing
