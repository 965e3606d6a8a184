// The postgres sink driven event by event against a real target: the moments a pipeline cannot
// choose (a replication connection cut inside a transaction, a row deleted and inserted again
// within one group, a key that is a replica identity index) replayed exactly, and the target
// checked against what the source holds.

#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/sink.h"
#include "gtest/gtest.h"
#include "sinks/postgres/postgres_sink.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

TestCluster& Target() { return SharedCluster(0); }

Column Col(std::string name, uint32_t type, bool key) {
  Column c;
  c.name = std::move(name);
  c.type_oid = type;
  c.is_key = key;
  return c;
}
TableSchemaPtr Table(uint32_t id, std::string name, char identity, std::vector<Column> columns) {
  auto t = std::make_shared<TableSchema>();
  t->relation_id = id;
  t->schema = "public";
  t->name = std::move(name);
  t->replica_identity = identity;
  t->columns = std::move(columns);
  return t;
}
Value Int(int v) { return Value::Text(oid::kInt4, std::to_string(v)); }
Value Text(std::string v) { return Value::Text(oid::kText, std::move(v)); }
Value Toast() { return Value::UnchangedToast(oid::kText); }
Value NullInt() { return Value::Null(oid::kInt4); }
// An int4 in its binary send form, as the snapshot reads it.
Value BinaryInt(uint8_t v) {
  return Value{ValueKind::kBinary, oid::kInt4, std::string("\0\0\0", 3) + char(v)};
}

// Feeds one sink the events a PostgreSQL source would, transaction by transaction.
class Driver {
 public:
  explicit Driver(const std::string& database) {
    Sql(Target().Url()).Exec("CREATE DATABASE " + database);
    url_ = Target().Url(database);
    RegisterPostgresSink();
    auto options = std::make_shared<PostgresSinkOptions>();
    options->url = url_;
    options->create_tables = false;
    SinkContext context;
    context.pipeline = database;
    context.sink = "target";
    context.source =
        SourceTraits{"postgres", SourcePositions::kWal, std::make_shared<PostgresOrigin>()};
    sink_ = FindSinkFactory("postgres")->Create(context, options);
    EXPECT_TRUE(sink_->Open().ok());
  }
  ~Driver() { EXPECT_TRUE(sink_->Close().ok()); }
  const std::string& url() const { return url_; }

  void Begin() {
    txn_ = TxnInfo{};
    txn_.xid = static_cast<uint32_t>(next_);
    txn_.commit_lsn = Lsn(next_ + 500);
    txn_.end_lsn = Lsn(next_ + 501);
    next_ += 1000;
    sequence_ = 0;
    Write(EventKind::kBegin);
  }
  void Change(Op op, const TableSchemaPtr& table, Row after, Row before = {},
              BeforeKind before_kind = BeforeKind::kNone) {
    Event e;
    e.kind = EventKind::kChange;
    e.txn = txn_;
    e.change.op = op;
    e.change.table = table;
    e.change.after = std::move(after);
    e.change.before = std::move(before);
    e.change.before_kind = before_kind;
    e.change.txn = txn_;
    e.change.lsn = txn_.commit_lsn;
    e.change.sequence = sequence_++;
    ASSERT_TRUE(sink_->Write(e).ok());
  }
  void Commit() { Write(EventKind::kCommit); }
  // The connection was cut: the transaction will come again, whole.
  void Rollback() {
    Write(EventKind::kRollback);
    next_ -= 1000;
  }
  void Flush() { ASSERT_TRUE(sink_->Flush().ok()); }

 private:
  void Write(EventKind kind) {
    Event e;
    e.kind = kind;
    e.txn = txn_;
    ASSERT_TRUE(sink_->Write(e).ok());
  }

  std::string url_;
  std::unique_ptr<Sink> sink_;
  TxnInfo txn_;
  uint64_t next_ = 1000;
  uint64_t sequence_ = 0;
};

std::string Rows(const std::string& url, const std::string& table) {
  std::string out;
  for (const auto& row : Sql(url).Query("SELECT * FROM " + table + " ORDER BY 1, 2")) {
    for (const std::string& v : row) out += v + "|";
    out += "\n";
  }
  return out;
}

TEST(PostgresSinkEventsTest, ACutTransactionTakesNothingOfItsOwnAlongWithTheGroup) {
  Driver d("cut_mixed");
  Sql(d.url()).Exec(
      "CREATE TABLE acc (id int PRIMARY KEY, v int); INSERT INTO acc VALUES (1, 0); "
      "CREATE TABLE log (a int, b int); ALTER TABLE log REPLICA IDENTITY FULL; "
      "INSERT INTO log VALUES (2, 2)");
  auto acc = Table(1, "acc", 'd', {Col("id", oid::kInt4, true), Col("v", oid::kInt4, false)});
  auto log = Table(2, "log", 'f', {Col("a", oid::kInt4, true), Col("b", oid::kInt4, true)});
  d.Begin();
  d.Change(Op::kUpdate, acc, {Int(1), Int(10)});
  d.Commit();
  // Held back (an insert), then sent at once (a keyless delete), then cut off.
  d.Begin();
  d.Change(Op::kInsert, log, {Int(1), Int(1)});
  d.Change(Op::kDelete, log, {}, {Int(2), Int(2)}, BeforeKind::kFull);
  d.Rollback();
  d.Begin();
  d.Change(Op::kInsert, log, {Int(1), Int(1)});
  d.Change(Op::kDelete, log, {}, {Int(2), Int(2)}, BeforeKind::kFull);
  d.Commit();
  d.Flush();
  EXPECT_EQ(Rows(d.url(), "log"), "1|1|\n");
  EXPECT_EQ(Rows(d.url(), "acc"), "1|10|\n");
}

TEST(PostgresSinkEventsTest, ALargeGroupSentAheadKeepsOrderAndACutTransactionStaysOut) {
  // Enough complete transactions that the group goes out before its commit, in parts: a key
  // changed in two parts ends with its last value, a key deleted in a later part stays
  // deleted, and a transaction cut off after a part went out takes none of it along.
  Driver d("send_ahead");
  Sql(d.url()).Exec("CREATE TABLE acc (id int PRIMARY KEY, v int)");
  auto acc = Table(1, "acc", 'd', {Col("id", oid::kInt4, true), Col("v", oid::kInt4, false)});
  for (int t = 0; t < 40; ++t) {
    d.Begin();
    for (int i = 0; i < 500; ++i) d.Change(Op::kInsert, acc, {Int(t * 500 + i), Int(t)});
    // Rows of earlier transactions (of earlier parts, once some went out) change again.
    if (t > 0) {
      d.Change(Op::kUpdate, acc, {Int((t - 1) * 500), Int(-t)});
      d.Change(Op::kDelete, acc, {}, {Int((t - 1) * 500 + 1), NullInt()}, BeforeKind::kKey);
    }
    d.Commit();
  }
  d.Begin();
  d.Change(Op::kUpdate, acc, {Int(0), Int(12345)});
  d.Change(Op::kInsert, acc, {Int(999999), Int(1)});
  d.Rollback();
  d.Flush();
  Sql target(d.url());
  EXPECT_EQ(target.Scalar("SELECT count(*) FROM acc"), std::to_string(40 * 500 - 39));
  EXPECT_EQ(target.Scalar("SELECT v FROM acc WHERE id = 0"), "-1");
  EXPECT_EQ(target.Scalar("SELECT string_agg(v::text, ',' ORDER BY id) FROM acc WHERE id IN "
                          "(19000, 19500)"),
            "-39,39");
  EXPECT_EQ(target.Scalar("SELECT count(*) FROM acc WHERE id IN (1, 9501, 19001, 999999)"), "0");

  // After parts went out ahead, a transaction too large to hold back (its parts go out under
  // its savepoint) is cut off: the group before it stays, nothing of it does.
  for (int t = 40; t < 60; ++t) {
    d.Begin();
    for (int i = 0; i < 500; ++i) d.Change(Op::kInsert, acc, {Int(t * 500 + i), Int(t)});
    d.Commit();
  }
  d.Begin();
  for (int i = 0; i < 45000; ++i) d.Change(Op::kInsert, acc, {Int(100000 + i), Int(-1)});
  d.Change(Op::kUpdate, acc, {Int(0), Int(777)});
  d.Rollback();
  d.Begin();
  d.Change(Op::kUpdate, acc, {Int(29999), Int(888)});
  d.Commit();
  d.Flush();
  EXPECT_EQ(target.Scalar("SELECT count(*) FROM acc"), std::to_string(60 * 500 - 39));
  EXPECT_EQ(target.Scalar("SELECT count(*) FROM acc WHERE id >= 100000"), "0");
  EXPECT_EQ(target.Scalar("SELECT v FROM acc WHERE id = 0"), "-1");
  EXPECT_EQ(target.Scalar("SELECT v FROM acc WHERE id = 29999"), "888");
}

TEST(PostgresSinkEventsTest, ARowDeletedAndInsertedAgainIsReplacedWhole) {
  Driver d("replaced");
  Sql(d.url()).Exec(
      "CREATE TABLE t (code text PRIMARY KEY, id int GENERATED ALWAYS AS IDENTITY, v int, "
      "extra text DEFAULT 'fresh'); "
      "INSERT INTO t (code, id, v, extra) OVERRIDING SYSTEM VALUE VALUES ('x', 5, 0, 'old')");
  auto t = Table(
      3, "t", 'd',
      {Col("code", oid::kText, true), Col("id", oid::kInt4, false), Col("v", oid::kInt4, false)});
  d.Begin();
  d.Change(Op::kDelete, t, {}, {Text("x"), NullInt(), NullInt()}, BeforeKind::kKey);
  d.Change(Op::kInsert, t, {Text("x"), Int(17), Int(1)});
  d.Commit();
  d.Flush();
  // The identity the insert carried, and the target's own column as a fresh insert leaves it.
  EXPECT_EQ(Rows(d.url(), "t"), "x|17|1|fresh|\n");
}

TEST(PostgresSinkEventsTest, AReplicaIdentityIndexKeyWithAPrimaryKeyBesideIsAppliedInOrder) {
  Driver d("replident");
  Sql(d.url()).Exec(
      "CREATE TABLE t3 (id int PRIMARY KEY, code text NOT NULL UNIQUE); "
      "ALTER TABLE t3 REPLICA IDENTITY USING INDEX t3_code_key; INSERT INTO t3 VALUES (1, 'a')");
  auto t3 = Table(4, "t3", 'i', {Col("id", oid::kInt4, false), Col("code", oid::kText, true)});
  d.Begin();
  d.Change(Op::kInsert, t3, {Int(2), Text("b")});
  d.Commit();
  d.Begin();
  d.Change(Op::kUpdate, t3, {Int(5), Text("a")});
  d.Commit();
  d.Begin();
  d.Change(Op::kUpdate, t3, {Int(1), Text("b")});
  d.Commit();
  d.Flush();
  EXPECT_EQ(Rows(d.url(), "t3"), "1|b|\n5|a|\n");
}

TEST(PostgresSinkEventsTest, ACutTransactionDropsTheSnapshotRowsItCarried) {
  Driver d("cut_read");
  Sql(d.url()).Exec(
      "CREATE TABLE acc (id int PRIMARY KEY, v int); CREATE TABLE r1 (id int PRIMARY KEY, v int)");
  auto acc = Table(1, "acc", 'd', {Col("id", oid::kInt4, true), Col("v", oid::kInt4, false)});
  auto r1 = Table(6, "r1", 'd', {Col("id", oid::kInt4, true), Col("v", oid::kInt4, false)});
  d.Begin();
  d.Change(Op::kInsert, acc, {Int(1), Int(10)});
  d.Commit();
  // A backfill's rows arrive inside its watermark transaction, which is cut off.
  d.Begin();
  d.Change(Op::kRead, r1, {BinaryInt(1), BinaryInt(1)});
  d.Rollback();
  d.Begin();
  d.Change(Op::kInsert, acc, {Int(2), Int(20)});
  d.Commit();
  d.Flush();
  EXPECT_EQ(Rows(d.url(), "r1"), "");
  EXPECT_EQ(Rows(d.url(), "acc"), "1|10|\n2|20|\n");
}

TEST(PostgresSinkEventsTest, ACutTransactionReplayedOverAPartialUpdateKeepsTheLastValue) {
  Driver d("cut_update");
  Sql(d.url()).Exec(
      "CREATE TABLE t4 (id int PRIMARY KEY, big text, v int); INSERT INTO t4 VALUES (7, 'big', 0)");
  auto t4 = Table(
      5, "t4", 'd',
      {Col("id", oid::kInt4, true), Col("big", oid::kText, false), Col("v", oid::kInt4, false)});
  d.Begin();
  d.Change(Op::kUpdate, t4, {Int(5), Toast(), Int(1)});  // row 5 is not in the target
  d.Change(Op::kUpdate, t4, {Int(7), Toast(), Int(1)});
  d.Commit();
  d.Begin();
  d.Change(Op::kUpdate, t4, {Int(7), Toast(), Int(2)});
  d.Rollback();
  d.Begin();
  d.Change(Op::kUpdate, t4, {Int(7), Toast(), Int(2)});
  d.Commit();
  d.Flush();
  EXPECT_EQ(Rows(d.url(), "t4"), "7|big|2|\n");
}

TEST(PostgresSinkEventsTest, UpdatesWithAnUnchangedToastedValueGoAheadInPartsAndLandWhole) {
  // Updates that leave a TOASTed value as it was go out as UPDATEs of the columns they carry,
  // in parts sent ahead of the group's commit; their row counts are checked by a later drain.
  // Rows the target lacks stay missing (they cannot be inserted without the value); every
  // other row ends with its last value, across the parts.
  Driver d("toast_ahead");
  Sql(d.url()).Exec(
      "CREATE TABLE docs (id int PRIMARY KEY, body text, v int); "
      "INSERT INTO docs SELECT g, repeat('x', 10), 0 FROM generate_series(0, 19999) g");
  auto docs = Table(
      7, "docs", 'd',
      {Col("id", oid::kInt4, true), Col("body", oid::kText, false), Col("v", oid::kInt4, false)});
  ::testing::internal::CaptureStderr();
  for (int t = 0; t < 30; ++t) {
    d.Begin();
    // 1,000 rows a transaction, each row twice over the run (t and t + 20 touch the same rows
    // when t < 10), and one row the target does not have.
    for (int i = 0; i < 1000; ++i)
      d.Change(Op::kUpdate, docs, {Int((t % 20) * 1000 + i), Toast(), Int(t)});
    d.Change(Op::kUpdate, docs, {Int(50000 + t), Toast(), Int(t)});
    d.Commit();
  }
  d.Flush();
  // Each of the 30 missing rows is reported once, in the warnings of the batches it was in.
  const std::string log = ::testing::internal::GetCapturedStderr();
  int reported = 0;
  const std::regex warning(R"((\d+) of \d+ updated rows of public\.docs)");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), warning);
       it != std::sregex_iterator(); ++it) {
    reported += std::stoi((*it)[1].str());
  }
  EXPECT_EQ(reported, 30) << log;
  Sql target(d.url());
  EXPECT_EQ(target.Scalar("SELECT count(*) FROM docs"), "20000");
  EXPECT_EQ(target.Scalar("SELECT count(*) FROM docs WHERE body <> repeat('x', 10)"), "0");
  // Rows 0..9,999 were updated last by transactions 20..29, rows 10,000..19,999 by 10..19.
  EXPECT_EQ(target.Scalar("SELECT count(*) FROM docs WHERE v <> (id / 1000) + "
                          "CASE WHEN id < 10000 THEN 20 ELSE 0 END"),
            "0");
}

}  // namespace
}  // namespace pgflow::testing
