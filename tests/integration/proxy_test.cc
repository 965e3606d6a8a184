// The routing proxy (proxy/, pooler/router.h) in `pgflow pooler`, in front of this file's
// PostgreSQL and two streaming replicas of it made by pg_basebackup -R (scripts/pgtmp.sh
// standby), shared by the tests of the file: a corpus of statements checked by where each
// actually ran (every server logs its statements: log_statement = all), read-your-writes while
// one replica's replay is paused, and reads under a replica stopped, lagging and promoted and
// the primary stopped.

#include <libpq-fe.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/integration/support/pooler_support.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// tests/integration/data/routing_corpus.txt: where each statement must run ('R' a replica,
// 'P' the primary) and the statement (a line that starts with neither goes on the one before).
struct CorpusLine {
  char where;
  std::string sql;
};
std::vector<CorpusLine> ReadCorpus() {
  std::ifstream in(absl::StrCat(PGFLOW_SOURCE_DIR, "/tests/integration/data/routing_corpus.txt"));
  std::vector<CorpusLine> lines;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    if ((line[0] == 'R' || line[0] == 'P') && line.size() > 2 && line[1] == '\t') {
      lines.push_back({line[0], line.substr(2)});
    } else if (!lines.empty()) {
      lines.back().sql += "\n" + line;
    }
  }
  return lines;
}

// Runs `sql` (a simple query, or through the extended protocol), reading a COPY's rows or
// sending one: the error the server gave, or empty.
std::string RunStatement(PGconn* conn, const std::string& sql, bool extended) {
  PGresult* result = extended
                         ? PQexecParams(conn, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0)
                         : PQexec(conn, sql.c_str());
  std::string error;
  while (result != nullptr) {
    const ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_COPY_OUT) {
      char* row = nullptr;
      while (PQgetCopyData(conn, &row, 0) > 0) PQfreemem(row);
    } else if (status == PGRES_COPY_IN) {
      PQputCopyData(conn, "1\n", 2);
      PQputCopyEnd(conn, nullptr);
    } else if (status == PGRES_FATAL_ERROR && error.empty()) {
      error = PQresultErrorMessage(result);
    }
    PQclear(result);
    result = PQgetResult(conn);
  }
  return error;
}

class ProxyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TestCluster& primary = SharedCluster();
    Sql admin(primary.Url());
    // Every statement each server runs is in its log (the replicas copy the setting).
    admin.Exec("ALTER SYSTEM SET log_statement = 'all'");
    admin.Exec("SELECT pg_reload_conf()");
    admin.Exec(
        "CREATE SCHEMA app;"
        "CREATE TABLE items (id int PRIMARY KEY, name text);"
        "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;"
        "CREATE TABLE prices (id int PRIMARY KEY, price numeric);"
        "INSERT INTO prices SELECT g, g * 1.5 FROM generate_series(1, 100) g;"
        "CREATE TABLE events (id serial PRIMARY KEY, msg text);"
        "CREATE TABLE scratch (a int);"
        "CREATE TABLE rw (id int PRIMARY KEY);"
        "CREATE TABLE bulk (filler text);"
        "CREATE VIEW app.items_view AS SELECT * FROM items;"
        "CREATE SEQUENCE app.seq;"
        "CREATE FUNCTION app.price_of(int) RETURNS numeric STABLE LANGUAGE sql "
        "  AS 'SELECT price FROM prices WHERE id = $1';"
        "CREATE FUNCTION app.double(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT $1 * 2';"
        "CREATE FUNCTION app.touch(int) RETURNS int LANGUAGE sql "
        "  AS 'INSERT INTO events (msg) VALUES (''touch'') RETURNING $1';"
        "CREATE FUNCTION app.stable_listed() RETURNS int STABLE LANGUAGE sql AS 'SELECT 1';"
        "CREATE PROCEDURE app.proc() LANGUAGE sql "
        "  AS 'INSERT INTO events (msg) VALUES (''proc'')';"
        // The query cache's tables: a and b; rls has row-level security; src's trigger writes
        // into a; counter for the race.
        "CREATE TABLE cache_a (id int PRIMARY KEY, v int);"
        "INSERT INTO cache_a SELECT g, g FROM generate_series(1, 1000) g;"
        "CREATE TABLE cache_b (id int PRIMARY KEY, v int);"
        "INSERT INTO cache_b SELECT g, g FROM generate_series(1, 10) g;"
        "CREATE TABLE cache_rls (id int PRIMARY KEY);"
        "ALTER TABLE cache_rls ENABLE ROW LEVEL SECURITY;"
        "CREATE TABLE cache_src (id int);"
        "CREATE FUNCTION cache_copy() RETURNS trigger LANGUAGE plpgsql AS "
        "  'BEGIN INSERT INTO cache_a VALUES (NEW.id, NEW.id); RETURN NEW; END';"
        "CREATE TRIGGER cache_copy AFTER INSERT ON cache_src FOR EACH ROW "
        "  EXECUTE FUNCTION cache_copy();"
        "CREATE TABLE cache_counter (id int PRIMARY KEY, v bigint);"
        "INSERT INTO cache_counter SELECT g, 0 FROM generate_series(1, 4) g;");
    replica1_ = new Standby(primary);
    replica2_ = new Standby(primary);
    auto url = [](int port) {
      return absl::StrCat("'postgres://postgres@127.0.0.1:", port, "/postgres'");
    };
    const std::string both =
        absl::StrCat("[", url(replica1_->port()), ", ", url(replica2_->port()), "]");
    auto database = [&](const std::string& name, const std::string& replicas,
                        const std::string& extra) {
      return absl::StrCat("  ", name, ": {url: ", url(primary.port()), ", replicas: ", replicas,
                          ", pool_size: 4", extra, "}\n");
    };
    pooler_ = new PoolerProcess(
        "trust", "\"postgres\" \"\"\n",
        database("corpus", both,
                 ", read_your_writes: false, write_functions: [app.stable_listed]") +
            database("app", both, "") + database("norw", both, ", read_your_writes: false") +
            database("lag", absl::StrCat("[", url(replica1_->port()), "]"),
                     ", max_replica_lag: 64kB") +
            absl::StrCat("  cached: {url: ", url(primary.port()),
                         ", pool_size: 8, cache: {tables: [public.cache_a, public.cache_b, "
                         "public.cache_rls, public.cache_counter], ttl: 60s}}\n"));
    ASSERT_TRUE(WaitFor([] { return Healthy("app", 1) && Healthy("app", 2) && Healthy("lag", 1); },
                        seconds(20)))
        << Console(*pooler_, "SHOW REPLICAS");
  }
  static void TearDownTestSuite() {
    delete pooler_;
    delete replica1_;
    delete replica2_;
  }

  // SHOW REPLICAS's row of `database`'s node `node`: database|node|role|address|state|
  // position|lag_bytes|lag_seconds|reads.
  static std::vector<std::string> NodeRow(const std::string& database, int node) {
    for (absl::string_view line : absl::StrSplit(Console(*pooler_, "SHOW REPLICAS"), '\n')) {
      std::vector<std::string> row = absl::StrSplit(line, '|');
      if (row.size() == 9 && row[0] == database && row[1] == std::to_string(node)) return row;
    }
    return {};
  }
  static std::string State(const std::string& database, int node) {
    std::vector<std::string> row = NodeRow(database, node);
    return row.empty() ? "" : row[4];
  }
  static bool Healthy(const std::string& database, int node) {
    return State(database, node) == "healthy";
  }
  // SHOW CACHE's row of `database`: database|state|hits|misses|entries|bytes|max_memory|
  // stores|stale_stores|invalidations|evictions|fences|position.
  static std::vector<std::string> CacheRow(const std::string& database) {
    for (absl::string_view line : absl::StrSplit(Console(*pooler_, "SHOW CACHE"), '\n')) {
      std::vector<std::string> row = absl::StrSplit(line, '|');
      if (row.size() == 13 && row[0] == database) return row;
    }
    return {};
  }
  static uint64_t CacheHits(const std::string& database) {
    std::vector<std::string> row = CacheRow(database);
    return row.empty() ? 0 : std::stoull(row[2]);
  }
  static bool CacheReady(const std::string& database) {
    std::vector<std::string> row = CacheRow(database);
    return !row.empty() && row[1] == "ready";
  }

  // Runs `sql` on `client` (checking its answer) until the cache answers it, at most
  // `attempts` times: whether it did (a table just changed is cached again once settled).
  static bool Cached(Conn& client, const std::string& sql, const std::string& expected,
                     int attempts = 50) {
    return CachedBy([&] { return client.Run(sql); }, expected, attempts);
  }
  static bool CachedBy(const std::function<std::string()>& run, const std::string& expected,
                       int attempts = 50) {
    for (int i = 0; i < attempts; ++i) {
      const uint64_t hits = CacheHits("cached");
      EXPECT_EQ(run(), expected);
      if (CacheHits("cached") > hits) return true;
      std::this_thread::sleep_for(milliseconds(20));
    }
    return false;
  }

  static uint64_t Reads(const std::string& database, int node) {
    std::vector<std::string> row = NodeRow(database, node);
    return row.empty() ? 0 : std::stoull(row[8]);
  }

  static Standby* replica1_;
  static Standby* replica2_;
  static PoolerProcess* pooler_;
};

Standby* ProxyTest::replica1_ = nullptr;
Standby* ProxyTest::replica2_ = nullptr;
PoolerProcess* ProxyTest::pooler_ = nullptr;

TEST_F(ProxyTest, EachStatementOfTheCorpusRunsWhereItShould) {
  const std::vector<CorpusLine> corpus = ReadCorpus();
  ASSERT_GE(corpus.size(), 130u);
  Conn conn(pooler_->Url("corpus"));
  ASSERT_TRUE(conn.ok()) << conn.error();
  struct Ran {
    std::string tag;  // the comment it ran under, which the servers' logs show
    char where;
    std::string how;
    std::string sql;
  };
  std::vector<Ran> ran;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const CorpusLine& line = corpus[i];
    const std::string simple = absl::StrCat("/* s", i, " */ ");
    RunStatement(conn.conn, simple + line.sql, false);
    ran.push_back({simple, line.where, "simple query", line.sql});
    if (line.sql.find(';') == std::string::npos) {
      const std::string extended = absl::StrCat("/* e", i, " */ ");
      RunStatement(conn.conn, extended + line.sql, true);
      ran.push_back({extended, line.where, "extended protocol", line.sql});
    }
  }
  // Named statements: the Parse is one unit, each Bind and Execute another, judged by the text
  // the statement was prepared with.
  int named = 0;
  for (size_t i = 0; i < corpus.size(); i += 7) {
    const CorpusLine& line = corpus[i];
    if (line.sql.find(';') != std::string::npos || absl::StrContains(line.sql, "COPY") ||
        absl::StrContains(line.sql, "SELEC ") || absl::StrContains(line.sql, "SELECT (")) {
      continue;
    }
    const std::string name = absl::StrCat("named", i);
    const std::string tag = absl::StrCat("/* n", i, " */ ");
    PGresult* prepared = PQprepare(conn.conn, name.c_str(), (tag + line.sql).c_str(), 0, nullptr);
    const bool ok = PQresultStatus(prepared) == PGRES_COMMAND_OK;
    PQclear(prepared);
    if (!ok) continue;
    for (int k = 0; k < 2; ++k) {
      PQclear(PQexecPrepared(conn.conn, name.c_str(), 0, nullptr, nullptr, nullptr, 0));
    }
    ran.push_back({tag, line.where, "named statement", line.sql});
    ++named;
  }
  EXPECT_GE(named, 12);
  EXPECT_GE(ran.size(), 250u);

  const std::string primary_log = ReadFile(SharedCluster().dir() + "/server.log");
  const std::string replica_logs =
      ReadFile(replica1_->dir() + "/server.log") + ReadFile(replica2_->dir() + "/server.log");
  std::vector<std::string> wrong;
  for (const Ran& r : ran) {
    const bool on_primary = absl::StrContains(primary_log, r.tag);
    const bool on_replica = absl::StrContains(replica_logs, r.tag);
    const bool right = r.where == 'R' ? on_replica && !on_primary : on_primary && !on_replica;
    if (!right) {
      wrong.push_back(absl::StrCat(r.how, " ran on ",
                                   on_primary && on_replica ? "both"
                                   : on_primary             ? "the primary"
                                   : on_replica             ? "a replica"
                                                            : "neither",
                                   ", expected ", r.where == 'R' ? "a replica" : "the primary",
                                   ": ", r.sql));
    }
  }
  EXPECT_TRUE(wrong.empty()) << wrong.size() << " of " << ran.size() << " misrouted:\n"
                             << absl::StrJoin(wrong, "\n");
}

TEST_F(ProxyTest, AClientsReadsSeeItsOwnWritesWhileAReplicasReplayIsPaused) {
  Sql replica1(absl::StrCat("postgres://postgres@127.0.0.1:", replica1_->port(), "/postgres"));
  replica1.Exec("SELECT pg_wal_replay_pause()");
  absl::Cleanup resume = [&] { replica1.Exec("SELECT pg_wal_replay_resume()"); };

  // Through the proxy, each read after the client's own write sees it.
  Conn writer(pooler_->Url("app"));
  ASSERT_TRUE(writer.ok()) << writer.error();
  int misses = 0;
  for (int i = 1; i <= 200; ++i) {
    ASSERT_EQ(writer.Run(absl::StrCat("INSERT INTO rw VALUES (", i, ")")), "");
    if (writer.Run(absl::StrCat("SELECT count(*) FROM rw WHERE id = ", i)) != "1") ++misses;
  }
  EXPECT_EQ(misses, 0);

  // Once the primary's position after the writer's last write has been read and a replica has
  // replayed it (replica 2: only replica 1 is paused), the writer's reads go there again.
  const uint64_t on_replica2 = Reads("app", 2);
  EXPECT_TRUE(WaitFor(
      [&] {
        return writer.Run("SELECT count(*) FROM rw WHERE id = 200") == "1" &&
               Reads("app", 2) > on_replica2;
      },
      seconds(10)));

  // The same client without read-your-writes misses them where replay is paused: what the
  // check above guards against.
  Conn careless(pooler_->Url("norw"));
  int careless_misses = 0;
  for (int i = 1001; i <= 1200; ++i) {
    ASSERT_EQ(careless.Run(absl::StrCat("INSERT INTO rw VALUES (", i, ")")), "");
    if (careless.Run(absl::StrCat("SELECT count(*) FROM rw WHERE id = ", i)) != "1") {
      ++careless_misses;
    }
  }
  EXPECT_GT(careless_misses, 0);

  // Other clients' reads are not held back: they keep going to the replicas.
  Conn reader(pooler_->Url("app"));
  const uint64_t before = Reads("app", 1) + Reads("app", 2);
  for (int i = 0; i < 50; ++i) ASSERT_EQ(reader.Run("SELECT count(*) FROM items"), "100");
  EXPECT_GE(Reads("app", 1) + Reads("app", 2), before + 50);

  // A client's own position, for a write it learned of elsewhere.
  Sql direct(SharedCluster().Url());
  for (int i = 2001; i <= 2020; ++i) {
    direct.Exec(absl::StrCat("INSERT INTO rw VALUES (", i, ")"));
    const std::string lsn = direct.Query("SELECT pg_current_wal_insert_lsn()")[0][0];
    ASSERT_EQ(reader.Run(absl::StrCat("SET pgflow.min_lsn = '", lsn, "'")), "");
    EXPECT_EQ(reader.Run(absl::StrCat("SELECT count(*) FROM rw WHERE id = ", i)), "1");
  }
  const std::string refused = reader.Run("SET pgflow.min_lsn = 'yesterday'");
  EXPECT_TRUE(absl::StartsWith(refused, "ERROR 22023")) << refused;
  EXPECT_TRUE(absl::StrContains(refused, "'yesterday' is not a WAL position")) << refused;
  EXPECT_EQ(reader.Run("SELECT 1"), "1");  // (the session goes on)
}

TEST_F(ProxyTest, ARepeatedReadIsAnsweredFromTheCacheUntilItsTableChangesWhoeverChangesIt) {
  ASSERT_TRUE(WaitFor([] { return CacheReady("cached"); }, seconds(30)))
      << Console(*pooler_, "SHOW CACHE") << pooler_->Log();
  Conn client(pooler_->Url("cached"));
  ASSERT_TRUE(client.ok()) << client.error();
  Sql direct(SharedCluster().Url());
  const std::string count_a = "SELECT count(*) || ':' || sum(v) FROM cache_a";
  const std::string count_b = "SELECT count(*) FROM public.cache_b";

  // A repeated read: the cache's from the second on.
  ASSERT_EQ(client.Run(count_a), "1000:500500");
  uint64_t hits = CacheHits("cached");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(client.Run(count_a), "1000:500500");
  EXPECT_EQ(CacheHits("cached"), hits + 5) << Console(*pooler_, "SHOW CACHE");

  // Changed directly on the primary, by a trigger, through the pooler: the next read sees it,
  // at once (no wait between the change and the read), and the cache has it again soon.
  direct.Exec("UPDATE cache_a SET v = v + 1 WHERE id = 1");
  EXPECT_EQ(client.Run(count_a), "1000:500501");
  EXPECT_TRUE(Cached(client, count_a, "1000:500501"));
  direct.Exec("INSERT INTO cache_src VALUES (1001)");
  EXPECT_EQ(client.Run(count_a), "1001:501502");
  EXPECT_TRUE(Cached(client, count_a, "1001:501502"));
  Conn writer(pooler_->Url("cached"));
  ASSERT_EQ(writer.Run("DELETE FROM cache_a WHERE id = 1001"), "");
  EXPECT_EQ(client.Run(count_a), "1000:500501");
  EXPECT_TRUE(Cached(client, count_a, "1000:500501"));

  // TRUNCATE and DDL drop their own table's answers only.
  EXPECT_TRUE(Cached(client, count_b, "10"));
  direct.Exec("TRUNCATE cache_b");
  hits = CacheHits("cached");
  EXPECT_EQ(client.Run(count_a), "1000:500501");  // (still cached)
  EXPECT_EQ(CacheHits("cached"), hits + 1);
  EXPECT_EQ(client.Run(count_b), "0");
  direct.Exec("INSERT INTO cache_b VALUES (1, 1)");
  EXPECT_EQ(client.Run(count_b), "1");
  const std::string sum_w = "SELECT sum(w) FROM cache_b";
  direct.Exec("ALTER TABLE cache_b ADD COLUMN w int DEFAULT 7");
  hits = CacheHits("cached");
  EXPECT_EQ(client.Run(count_a), "1000:500501");  // (still cached)
  EXPECT_EQ(CacheHits("cached"), hits + 1);
  EXPECT_EQ(client.Run(sum_w), "7");
  EXPECT_TRUE(Cached(client, sum_w, "7"));
  direct.Exec("ALTER TABLE cache_b ALTER COLUMN w SET DEFAULT 8; UPDATE cache_b SET w = DEFAULT");
  EXPECT_EQ(client.Run(sum_w), "8");

  // Not cached: row-level security, stable and volatile functions, unlisted tables.
  for (const std::string& sql : {std::string("SELECT count(*) FROM cache_rls"),
                                 std::string("SELECT count(*) || now()::text FROM cache_a"),
                                 std::string("SELECT count(*) || random()::text FROM cache_a"),
                                 std::string("SELECT count(*) FROM items")}) {
    client.Run(sql);
    hits = CacheHits("cached");
    client.Run(sql);
    EXPECT_EQ(CacheHits("cached"), hits) << sql;
  }
  // The extended protocol, as drivers send a statement with parameters: unnamed, or prepared
  // before; cached by its text and the values bound.
  const char* statement = "SELECT count(*) FROM cache_a WHERE v <= $1";
  auto bound = [&](const char* value, bool prepared) {
    const char* values[1] = {value};
    PGresult* result =
        prepared ? PQexecPrepared(client.conn, "le", 1, values, nullptr, nullptr, 0)
                 : PQexecParams(client.conn, statement, 1, nullptr, values, nullptr, nullptr, 0);
    std::string out = PQresultStatus(result) == PGRES_TUPLES_OK ? PQgetvalue(result, 0, 0)
                                                                : PQresultErrorMessage(result);
    PQclear(result);
    return out;
  };
  PQclear(PQprepare(client.conn, "le", statement, 1, nullptr));
  for (bool prepared : {false, true}) {
    // (v is id, but 2 for id 1.)
    EXPECT_TRUE(CachedBy([&] { return bound("10", prepared); }, "10")) << prepared;
    EXPECT_TRUE(CachedBy([&] { return bound("20", prepared); }, "20")) << prepared;
  }
  direct.Exec("UPDATE cache_a SET v = 0 WHERE id = 500");
  EXPECT_EQ(bound("10", false), "11");
  EXPECT_EQ(bound("10", true), "11");
  EXPECT_TRUE(CachedBy([&] { return bound("10", true); }, "11"));
  direct.Exec("UPDATE cache_a SET v = 500 WHERE id = 500");
  EXPECT_EQ(bound("10", true), "10");

  // A client that changed a setting the pooler does not follow (its search_path, its role...)
  // is answered by the server from then on.
  ASSERT_EQ(client.Run("SET search_path = app, public"), "");
  EXPECT_FALSE(Cached(client, count_b, "1", 5));

  const std::string metrics =
      Curl(absl::StrCat("http://127.0.0.1:", pooler_->admin_port(), "/metrics")).body;
  EXPECT_TRUE(absl::StrContains(metrics, "pgflow_proxy_cache_hits_total{database=\"cached\"}"))
      << metrics;
}

// Writers and readers at full speed: every read answered (from the cache or not) holds every
// write acknowledged before the read was sent, whoever wrote it (through the pooler or
// directly on the primary).
TEST_F(ProxyTest, NoReadIsStaleWhileWritersAndReadersRunAtFullSpeed) {
  ASSERT_TRUE(WaitFor([] { return CacheReady("cached"); }, seconds(30)));
  constexpr int kKeys = 4;
  std::atomic<int64_t> acknowledged[kKeys] = {};
  std::atomic<bool> stop{false};
  std::atomic<int64_t> reads{0}, stale{0}, writes{0};
  const uint64_t hits_before = CacheHits("cached");
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      Conn conn(w == 0 ? pooler_->Url("cached") : SharedCluster().Url());
      std::mt19937 rng(w);
      while (!stop.load()) {
        const int key = static_cast<int>(rng() % kKeys);
        const std::string v = conn.Run(absl::StrCat(
            "UPDATE cache_counter SET v = v + 1 WHERE id = ", key + 1, " RETURNING v"));
        int64_t value = 0;
        if (!absl::SimpleAtoi(v, &value)) {
          ADD_FAILURE() << v;
          return;
        }
        ++writes;
        for (int64_t seen = acknowledged[key].load();
             seen < value && !acknowledged[key].compare_exchange_weak(seen, value);) {
        }
        std::this_thread::sleep_for(milliseconds(rng() % 20));  // (room for hits)
      }
    });
  }
  for (int r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] {
      Conn conn(pooler_->Url("cached"));
      std::mt19937 rng(100 + r);
      while (!stop.load()) {
        const int key = static_cast<int>(rng() % kKeys);
        const int64_t must = acknowledged[key].load();
        std::string v;
        if (r % 2 == 0) {
          v = conn.Run(absl::StrCat("SELECT v FROM cache_counter WHERE id = ", key + 1));
        } else {  // (the extended protocol, as drivers send a bound statement)
          const std::string id = std::to_string(key + 1);
          const char* values[1] = {id.c_str()};
          PGresult* result = PQexecParams(conn.conn, "SELECT v FROM cache_counter WHERE id = $1", 1,
                                          nullptr, values, nullptr, nullptr, 0);
          v = PQresultStatus(result) == PGRES_TUPLES_OK ? PQgetvalue(result, 0, 0)
                                                        : PQresultErrorMessage(result);
          PQclear(result);
        }
        int64_t value = 0;
        if (!absl::SimpleAtoi(v, &value)) {
          ADD_FAILURE() << v;
          return;
        }
        ++reads;
        if (value < must) ++stale;
      }
    });
  }
  std::this_thread::sleep_for(seconds(15));
  stop = true;
  for (std::thread& t : threads) t.join();
  const uint64_t hits = CacheHits("cached") - hits_before;
  RecordProperty("reads", std::to_string(reads.load()));
  RecordProperty("cache_hits", std::to_string(hits));
  EXPECT_EQ(stale.load(), 0) << reads.load() << " reads, " << writes.load() << " writes";
  EXPECT_GT(writes.load(), 100);
  EXPECT_GT(hits, 100u) << Console(*pooler_, "SHOW CACHE");
}

TEST_F(ProxyTest, ReadsGoOnWithoutAnErrorAsReplicasAndThePrimaryStopLagAndArePromoted) {
  Conn reader(pooler_->Url("app"));
  ASSERT_TRUE(reader.ok()) << reader.error();
  // `n` reads 20 ms apart: the errors they got.
  auto reads = [&](int n) {
    std::vector<std::string> errors;
    for (int i = 0; i < n; ++i) {
      const std::string answer = reader.Run("SELECT count(*) FROM items");
      if (answer != "100") errors.push_back(answer);
      std::this_thread::sleep_for(milliseconds(20));
    }
    return absl::StrJoin(errors, "\n");
  };
  ASSERT_EQ(reads(10), "");

  // A replica stopped: reads move to the other (or the primary) without an error.
  replica2_->Pause();
  EXPECT_EQ(reads(100), "");
  EXPECT_TRUE(WaitFor([] { return State("app", 2) == "down"; }, seconds(5)))
      << Console(*pooler_, "SHOW REPLICAS");
  replica2_->Resume();
  ASSERT_TRUE(WaitFor([] { return Healthy("app", 2); }, seconds(20)))
      << Console(*pooler_, "SHOW REPLICAS");
  const uint64_t back = Reads("app", 2);
  EXPECT_EQ(reads(40), "");
  EXPECT_GT(Reads("app", 2), back) << pooler_->Log();  // (it takes reads again)

  // A replica past max_replica_lag (64kB for `lag`) takes no reads until it catches up.
  {
    Sql replica1(absl::StrCat("postgres://postgres@127.0.0.1:", replica1_->port(), "/postgres"));
    replica1.Exec("SELECT pg_wal_replay_pause()");
    absl::Cleanup resume = [&] { replica1.Exec("SELECT pg_wal_replay_resume()"); };
    Sql(SharedCluster().Url())
        .Exec("INSERT INTO bulk SELECT repeat('x', 1000) FROM generate_series(1, 1000)");
    ASSERT_TRUE(WaitFor([] { return State("lag", 1) == "lagging"; }, seconds(10)))
        << Console(*pooler_, "SHOW REPLICAS");
    Conn lagged(pooler_->Url("lag"));
    const uint64_t on_primary = Reads("lag", 0);
    const uint64_t on_replica = Reads("lag", 1);
    for (int i = 0; i < 20; ++i) ASSERT_EQ(lagged.Run("SELECT count(*) FROM items"), "100");
    EXPECT_GE(Reads("lag", 0), on_primary + 20);
    EXPECT_EQ(Reads("lag", 1), on_replica);
  }
  ASSERT_TRUE(WaitFor([] { return Healthy("lag", 1); }, seconds(20)))
      << Console(*pooler_, "SHOW REPLICAS");

  // The primary stopped: reads go on through the replicas.
  SharedCluster().Pause();
  EXPECT_EQ(reads(60), "");
  EXPECT_TRUE(WaitFor([] { return State("app", 0) == "down"; }, seconds(5)))
      << Console(*pooler_, "SHOW REPLICAS");
  SharedCluster().Resume();
  ASSERT_TRUE(WaitFor([] { return Healthy("app", 0) && Healthy("app", 1) && Healthy("app", 2); },
                      seconds(20)))
      << Console(*pooler_, "SHOW REPLICAS");

  // A replica promoted (no longer following this primary) takes no reads.
  Sql(absl::StrCat("postgres://postgres@127.0.0.1:", replica2_->port(), "/postgres"))
      .Exec("SELECT pg_promote()");
  ASSERT_TRUE(WaitFor([] { return State("app", 2) == "promoted"; }, seconds(10)))
      << Console(*pooler_, "SHOW REPLICAS");
  const uint64_t promoted = Reads("app", 2);
  EXPECT_EQ(reads(30), "");
  EXPECT_EQ(Reads("app", 2), promoted);
}

}  // namespace
}  // namespace pgflow::testing
