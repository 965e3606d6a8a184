#include "sinks/kv/kv_protocols.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>

#include "sinks/kv/http_session.h"
#include "sinks/kv/kv_store.h"
#include "sinks/kv/memcached_session.h"
#include "sinks/kv/redis_session.h"
#include "sinks/kv/resp.h"

namespace pgflow {
namespace {

TableSchemaPtr Users() {
  auto t = std::make_shared<TableSchema>();
  t->relation_id = 1;
  t->schema = "public";
  t->name = "users";
  t->columns = {{"id", oid::kInt4, -1, true, ""},
                {"name", oid::kText, -1, false, ""},
                {"score", oid::kNumeric, -1, false, ""},
                {"note", oid::kText, -1, false, ""}};
  return t;
}

Change Insert(const TableSchemaPtr& t, int id, const std::string& name, Lsn lsn) {
  Change c;
  c.op = Op::kInsert;
  c.table = t;
  c.after = {Value::Text(oid::kInt4, std::to_string(id)), Value::Text(oid::kText, name),
             Value::Text(oid::kNumeric, "1.50"), Value::Null(oid::kText)};
  c.txn.commit_lsn = lsn;
  return c;
}

// An UPDATE of row `id` that sends `name` and leaves score unchanged (a TOAST value not sent).
Change UpdateKeepingScore(const TableSchemaPtr& t, int id, const std::string& name, Lsn lsn) {
  Change c = Insert(t, id, name, lsn);
  c.op = Op::kUpdate;
  c.after[2] = Value::UnchangedToast(oid::kNumeric);
  return c;
}

class KvProtocolsTest : public ::testing::Test {
 protected:
  KvProtocolsTest() : store_(KvStoreOptions{}), service_(&store_, Config(), nullptr) {
    users_ = Users();
    for (int i = 1; i <= 30; ++i) {
      EXPECT_TRUE(store_.Stage(Insert(users_, i, "user" + std::to_string(i), Lsn(0x100))).ok());
    }
    EXPECT_TRUE(store_.Commit(Lsn(0x200)).ok());
    store_.SetReady();
  }
  static KvServiceConfig Config() {
    KvServiceConfig c;
    c.publication = "pub";
    c.max_request_bytes = 4096;
    return c;
  }
  std::string Redis(const std::string& input, SessionStep::Kind* kind = nullptr) {
    RedisSession session(&service_);
    std::string out;
    SessionStep step = session.Feed(input, &out);
    if (kind != nullptr) *kind = step.kind;
    return out;
  }

  KvStore store_;
  KvService service_;
  TableSchemaPtr users_;
};

TEST_F(KvProtocolsTest, RedisHashCommandsAndPipelining) {
  EXPECT_EQ(Redis("*2\r\n$4\r\nHGET\r\n$7\r\nusers:7\r\n*3\r\n$4\r\nHGET\r\n$7\r\nusers:7\r\n$4\r\n"
                  "name\r\n"),
            "-ERR wrong number of arguments for 'hget' command\r\n$5\r\nuser7\r\n");
  EXPECT_EQ(Redis("GET users:2\r\n"),
            "$50\r\n{\"id\":2,\"name\":\"user2\",\"score\":\"1.50\",\"note\":null}\r\n");
  EXPECT_EQ(Redis("GET pub.users.2\r\n").substr(0, 4), "$50\r");
  EXPECT_EQ(Redis("HLEN users:2\r\nHEXISTS users:2 note\r\nTYPE users:2\r\nTYPE users:99\r\n"),
            ":3\r\n:0\r\n+hash\r\n+none\r\n");
  EXPECT_EQ(
      Redis("HGETALL users:3\r\n"),
      "*6\r\n$2\r\nid\r\n$1\r\n3\r\n$4\r\nname\r\n$5\r\nuser3\r\n$5\r\nscore\r\n$4\r\n1.50\r\n");
  EXPECT_EQ(Redis("HELLO 3\r\nHGETALL users:3\r\n").find("%3\r\n$2\r\nid\r\n$1\r\n3\r\n") !=
                std::string::npos,
            true);
  EXPECT_EQ(Redis("MGET users:1 users:404\r\n").substr(0, 4), "*2\r\n");
  EXPECT_NE(Redis("MGET users:1 users:404\r\n").find("$-1\r\n"), std::string::npos);
  EXPECT_EQ(Redis("DBSIZE\r\nEXISTS users:1 users:2 users:404\r\nTTL users:1\r\nTTL nope:1\r\n"),
            ":30\r\n:2\r\n:-1\r\n:-2\r\n");
  EXPECT_EQ(Redis("HSET users:1 name x\r\n").substr(0, 9), "-READONLY");
  EXPECT_EQ(Redis("SELECT 1\r\nSELECT 0\r\n"), "-ERR DB index is out of range\r\n+OK\r\n");
  SessionStep::Kind kind;
  EXPECT_EQ(Redis("QUIT\r\nPING\r\n", &kind), "+OK\r\n");
  EXPECT_EQ(kind, SessionStep::kClose);
}

TEST_F(KvProtocolsTest, RedisCommandDescribesTheCommands) {
  EXPECT_EQ(Redis("COMMAND COUNT\r\n"), ":34\r\n");
  EXPECT_EQ(Redis("COMMAND INFO get nope hset\r\n"),
            "*3\r\n"
            "*6\r\n$3\r\nget\r\n:2\r\n*1\r\n+readonly\r\n:1\r\n:1\r\n:1\r\n"
            "$-1\r\n"
            "*6\r\n$4\r\nhset\r\n:-4\r\n*1\r\n+write\r\n:1\r\n:1\r\n:1\r\n");
  const std::string all = Redis("COMMAND\r\n");
  const std::string first_two =
      "*34\r\n*6\r\n$4\r\nping\r\n:-1\r\n*1\r\n+fast\r\n:0\r\n:0\r\n:0\r\n"
      "*6\r\n$4\r\necho\r\n:2\r\n*1\r\n+fast\r\n:0\r\n:0\r\n:0\r\n";
  EXPECT_EQ(all.substr(0, first_two.size()), first_two);
  EXPECT_NE(all.find("*6\r\n$3\r\ndel\r\n:-2\r\n*1\r\n+write\r\n:1\r\n:-1\r\n:1\r\n"),
            std::string::npos);
}

// The replies a row encodes once (fields, JSON) answer each read form, null columns left out.
TEST_F(KvProtocolsTest, RedisRepliesFromTheEncodedRow) {
  EXPECT_EQ(Redis("HMGET users:1 name note nope id\r\n"),
            "*4\r\n$5\r\nuser1\r\n$-1\r\n$-1\r\n$1\r\n1\r\n");
  EXPECT_EQ(Redis("HSTRLEN users:12 name\r\nHSTRLEN users:12 note\r\nHEXISTS users:12 score\r\n"),
            ":6\r\n:0\r\n:1\r\n");
  EXPECT_EQ(Redis("HGET users:12 score\r\nHGET users:12 sc\r\nHGET users:404 name\r\n"),
            "$4\r\n1.50\r\n$-1\r\n$-1\r\n");
  EXPECT_EQ(Redis("HKEYS users:3\r\nHVALS users:3\r\n"),
            "*3\r\n$2\r\nid\r\n$4\r\nname\r\n$5\r\nscore\r\n"
            "*3\r\n$1\r\n3\r\n$5\r\nuser3\r\n$4\r\n1.50\r\n");
  EXPECT_EQ(
      Redis("HELLO 3\r\nHGETALL users:3\r\nGET users:404\r\n").substr(Redis("HELLO 3\r\n").size()),
      "%3\r\n$2\r\nid\r\n$1\r\n3\r\n$4\r\nname\r\n$5\r\nuser3\r\n$5\r\nscore\r\n$4\r\n1."
      "50\r\n_\r\n");
  EXPECT_EQ(Redis("hget USERS:1 name\r\nhGeT users:1\r\n"),
            "$-1\r\n-ERR wrong number of arguments for 'hget' command\r\n");
  // A row rewritten with an unchanged TOAST column keeps that column's value in every form.
  ASSERT_TRUE(store_.Stage(UpdateKeepingScore(users_, 5, "five", Lsn(0x300))).ok());
  ASSERT_TRUE(store_.Commit(Lsn(0x310)).ok());
  EXPECT_EQ(Redis("HGET users:5 score\r\nHGET users:5 name\r\n"), "$4\r\n1.50\r\n$4\r\nfive\r\n");
  EXPECT_EQ(Redis("GET users:5\r\n"),
            "$49\r\n{\"id\":5,\"name\":\"five\",\"score\":\"1.50\",\"note\":null}\r\n");
  KvRowPtr row = store_.Lookup("users:5", "");
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->Field("score"), "1.50");
  EXPECT_FALSE(row->Field("note").has_value());
}

// A row keeps each value once, as JSON; a string with escapes keeps its text beside it, and
// lengths past one and two bytes of the row's encoding come back whole.
TEST_F(KvProtocolsTest, EveryFormOfAValueComesFromTheOneEncoding) {
  const std::string escaped = "say \"hi\"\\ \n\t\x01 caf\xc3\xa9";
  const std::string medium(200, 'm');
  const std::string large(20000, 'L');
  for (const auto& [id, name] : {std::pair{101, escaped}, {102, medium}, {103, large}}) {
    ASSERT_TRUE(store_.Stage(Insert(users_, id, name, Lsn(0x300))).ok());
  }
  ASSERT_TRUE(store_.Commit(Lsn(0x310)).ok());
  auto bulk = [](const std::string& s) { return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n"; };
  EXPECT_EQ(Redis("HGET users:101 name\r\n"), bulk(escaped));
  EXPECT_EQ(Redis("HGET users:102 name\r\n"), bulk(medium));
  EXPECT_EQ(Redis("HGET users:103 name\r\n"), bulk(large));
  EXPECT_EQ(Redis("HSTRLEN users:103 name\r\nHSTRLEN users:101 name\r\n"),
            ":20000\r\n:" + std::to_string(escaped.size()) + "\r\n");
  const std::string json =
      "{\"id\":101,\"name\":\"say \\\"hi\\\"\\\\ \\n\\t\\u0001 caf\xc3\xa9\",\"score\":\"1.50\","
      "\"note\":null}";
  EXPECT_EQ(Redis("GET users:101\r\n"), bulk(json));
  EXPECT_EQ(Redis("HGETALL users:101\r\n"), "*6\r\n" + bulk("id") + bulk("101") + bulk("name") +
                                                bulk(escaped) + bulk("score") + bulk("1.50"));
  EXPECT_EQ(Redis("HVALS users:102\r\n"), "*3\r\n" + bulk("102") + bulk(medium) + bulk("1.50"));
  const std::string large_json = "{\"id\":103,\"name\":\"" + large + "\",\"score\":\"1.50\",\"note\":null}";
  EXPECT_EQ(Redis("GET users:103\r\n"), bulk(large_json));
  MemcachedSession memcached(&service_);
  std::string out;
  memcached.Feed("get users:101\r\n", &out);
  EXPECT_EQ(out, "VALUE users:101 0 " + std::to_string(json.size()) + "\r\n" + json + "\r\nEND\r\n");
  KvRowPtr row = store_.Lookup("users:101", "");
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->key(), "101");
  EXPECT_EQ(row->Field("name"), escaped);
  std::optional<KvColumn> name = row->Column("name");
  ASSERT_TRUE(name.has_value());
  EXPECT_EQ(name->json, json.substr(17, json.find(",\"score\"") - 17));
  std::optional<KvColumn> note = row->Column("note");
  ASSERT_TRUE(note.has_value());
  EXPECT_TRUE(note->null);
  EXPECT_EQ(note->json, "null");
  EXPECT_FALSE(row->Column("nope").has_value());
  // A row's weight counts its bytes: the large one weighs at least its text.
  EXPECT_GT(row->bytes(), escaped.size());
  EXPECT_GT(store_.Lookup("users:103", "")->bytes(), 20000u);
}

TEST_F(KvProtocolsTest, RedisScanVisitsEveryKeyOnce) {
  std::set<std::string> seen;
  std::string cursor = "0";
  int rounds = 0;
  do {
    RedisSession session(&service_);
    std::string out;
    session.Feed("SCAN " + cursor + " MATCH users:* COUNT 7\r\n", &out);
    // *2\r\n$<n>\r\n<cursor>\r\n*<k>\r\n...
    size_t p = out.find("\r\n", 4);
    size_t c_end = out.find("\r\n", p + 2);
    cursor = out.substr(p + 2, c_end - p - 2);
    size_t pos = out.find("\r\n", c_end + 2) + 2;
    while (pos < out.size()) {
      size_t len_end = out.find("\r\n", pos);
      int len = std::stoi(out.substr(pos + 1, len_end - pos - 1));
      EXPECT_TRUE(seen.insert(out.substr(len_end + 2, len)).second);
      pos = len_end + 2 + len + 2;
    }
    ASSERT_LT(++rounds, 20);
  } while (cursor != "0");
  EXPECT_EQ(seen.size(), 30u);
  EXPECT_TRUE(seen.contains("users:30"));
  std::string keys = Redis("KEYS users:2?\r\n");
  EXPECT_EQ(keys.substr(0, 5), "*10\r\n");  // users:20 .. users:29
}

TEST_F(KvProtocolsTest, RedisKeyspaceNotifications) {
  RedisSession session(&service_);
  std::string out;
  session.Feed("PSUBSCRIBE __keyspace@0__:users:*\r\n", &out);
  EXPECT_TRUE(session.subscribed());
  out.clear();
  session.Feed("GET users:1\r\n", &out);
  EXPECT_NE(out.find("only (P)SUBSCRIBE"), std::string::npos);
  out.clear();
  session.Deliver({KeyEvent{"users:5", false}, KeyEvent{"users:6", true}}, &out);
  EXPECT_EQ(out,
            "*4\r\n$8\r\npmessage\r\n$22\r\n__keyspace@0__:users:*\r\n$22\r\n__keyspace@0__:"
            "users:5\r\n$4\r\nhset\r\n"
            "*4\r\n$8\r\npmessage\r\n$22\r\n__keyspace@0__:users:*\r\n$22\r\n__keyspace@0__:"
            "users:6\r\n$3\r\ndel\r\n");
}

TEST_F(KvProtocolsTest, StoreAppliesTransactionsWhole) {
  Change update = Insert(users_, 1, "renamed", Lsn(0x300));
  update.op = Op::kUpdate;
  update.after[3] = Value::UnchangedToast(oid::kText);
  ASSERT_TRUE(store_.Stage(update).ok());
  Change del;
  del.op = Op::kDelete;
  del.table = users_;
  del.before = {Value::Text(oid::kInt4, "2"), Value::Null(oid::kText), Value::Null(oid::kNumeric),
                Value::Null(oid::kText)};
  del.before_kind = BeforeKind::kKey;
  ASSERT_TRUE(store_.Stage(del).ok());
  // Staged, not yet visible.
  EXPECT_EQ(*store_.Lookup("users:1", "")->Field("name"), "user1");
  EXPECT_NE(store_.Lookup("users:2", ""), nullptr);
  ASSERT_TRUE(store_.Commit(Lsn(0x310)).ok());
  EXPECT_EQ(*store_.Lookup("users:1", "")->Field("name"), "renamed");
  EXPECT_EQ(store_.Lookup("users:2", ""), nullptr);
  EXPECT_EQ(store_.applied(), Lsn(0x310));
  EXPECT_EQ(store_.TotalRows(), 29u);
  // A discarded transaction leaves nothing behind.
  ASSERT_TRUE(store_.Stage(Insert(users_, 500, "ghost", Lsn(0x400))).ok());
  store_.Discard();
  ASSERT_TRUE(store_.Commit(Lsn(0x410)).ok());
  EXPECT_EQ(store_.Lookup("users:500", ""), nullptr);
}

// A truncate staged in a transaction hides the table's rows from the changes staged after it
// (an unchanged TOAST value is not taken from a row the truncate removes), and only within
// that transaction.
TEST_F(KvProtocolsTest, ATruncateInATransactionHidesTheRowsBeforeIt) {
  const uint64_t before = store_.MemoryBytes();
  Change truncate;
  truncate.op = Op::kTruncate;
  truncate.table = users_;
  ASSERT_TRUE(store_.Stage(Insert(users_, 1, "one", Lsn(0x300))).ok());
  ASSERT_TRUE(store_.Stage(truncate).ok());
  ASSERT_TRUE(store_.Stage(Insert(users_, 2, "two", Lsn(0x300))).ok());
  ASSERT_TRUE(store_.Stage(UpdateKeepingScore(users_, 3, "three", Lsn(0x300))).ok());
  EXPECT_EQ(Redis("DBSIZE\r\n"), ":30\r\n");  // nothing shows before the commit
  ASSERT_TRUE(store_.Commit(Lsn(0x310)).ok());
  EXPECT_EQ(Redis("DBSIZE\r\n"), ":2\r\n");
  EXPECT_EQ(Redis("HGET users:1 name\r\nHGET users:2 name\r\nHGET users:3 name\r\n"
                  "HEXISTS users:3 score\r\n"),
            "$-1\r\n$3\r\ntwo\r\n$5\r\nthree\r\n:0\r\n");
  EXPECT_LT(store_.MemoryBytes(), before / 10);
  // The next transaction takes an unchanged TOAST value from the row again.
  ASSERT_TRUE(store_.Stage(UpdateKeepingScore(users_, 2, "zwei", Lsn(0x400))).ok());
  ASSERT_TRUE(store_.Commit(Lsn(0x410)).ok());
  EXPECT_EQ(Redis("HGET users:2 name\r\nHGET users:2 score\r\n"), "$4\r\nzwei\r\n$4\r\n1.50\r\n");
}

// What a transaction stages for a table and then truncates weighs nothing, and a second
// truncate takes nothing more away.
TEST_F(KvProtocolsTest, ATruncateCountsTheMemoryOfWhatWasStagedBeforeIt) {
  KvStore store(KvStoreOptions{});
  Change truncate;
  truncate.op = Op::kTruncate;
  truncate.table = users_;
  ASSERT_TRUE(store.Stage(Insert(users_, 1, "one", Lsn(1))).ok());
  ASSERT_TRUE(store.Stage(truncate).ok());
  ASSERT_TRUE(store.Commit(Lsn(2)).ok());
  EXPECT_EQ(store.MemoryBytes(), 0u);
  ASSERT_TRUE(store.Stage(Insert(users_, 2, "two", Lsn(3))).ok());
  ASSERT_TRUE(store.Commit(Lsn(4)).ok());
  const uint64_t one_row = store.MemoryBytes();
  EXPECT_GT(one_row, 0u);
  ASSERT_TRUE(store.Stage(truncate).ok());
  ASSERT_TRUE(store.Stage(truncate).ok());
  ASSERT_TRUE(store.Stage(Insert(users_, 3, "six", Lsn(5))).ok());
  ASSERT_TRUE(store.Commit(Lsn(6)).ok());
  EXPECT_EQ(store.MemoryBytes(), one_row);  // the same size of row, alone
  EXPECT_EQ(store.TotalRows(), 1u);
}

// Keys that name the same integer differently ("7", "007": a Kafka source may send either)
// are two rows in both indexes: deleting one leaves the other listed and counted.
TEST_F(KvProtocolsTest, IntegerKeysWrittenDifferentlyAreDifferentRows) {
  KvStore store(KvStoreOptions{});
  Change padded = Insert(users_, 0, "padded", Lsn(1));
  padded.after[0] = Value::Text(oid::kInt4, "007");
  ASSERT_TRUE(store.Stage(Insert(users_, 7, "plain", Lsn(1))).ok());
  ASSERT_TRUE(store.Stage(padded).ok());
  ASSERT_TRUE(store.Commit(Lsn(2)).ok());
  Change remove;
  remove.op = Op::kDelete;
  remove.table = users_;
  remove.before_kind = BeforeKind::kKey;
  remove.before = Insert(users_, 7, "", Lsn(3)).after;
  ASSERT_TRUE(store.Stage(remove).ok());
  ASSERT_TRUE(store.Commit(Lsn(4)).ok());
  std::shared_ptr<const KvTable> table = store.FindTable("users");
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(table->rows(), 1u);
  bool more = true;
  std::vector<KvRowPtr> page = table->Page("", 10, &more);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0]->key(), "007");
  EXPECT_EQ(table->Get("7"), nullptr);
  // Paging one row at a time, each page after the last row of the one before (HTTP's `next`),
  // visits every row once, whatever way its key is written.
  for (const char* id : {"5", "6", "+5", "-0", "8"}) {
    Change c = Insert(users_, 0, "x", Lsn(5));
    c.after[0] = Value::Text(oid::kInt4, id);
    ASSERT_TRUE(store.Stage(c).ok());
  }
  ASSERT_TRUE(store.Commit(Lsn(6)).ok());
  std::vector<std::string> visited;
  std::string after;
  for (more = true; more && visited.size() < 20;) {
    page = table->Page(after, 1, &more);
    if (page.empty()) break;
    after = std::string(page[0]->key());
    visited.push_back(after);
  }
  EXPECT_EQ(visited, (std::vector<std::string>{"5", "6", "8", "+5", "-0", "007"}));
  // A key that is no row's still finds its integer's place.
  page = table->Page("07", 10, &more);
  ASSERT_FALSE(page.empty());
  EXPECT_EQ(page[0]->key(), "8");
}

// Rows written under two shapes in turn (a snapshot's rows between the stream's after a column
// was added) share the two sets of column names instead of making one at every turn.
TEST_F(KvProtocolsTest, AlternatingShapesShareTheirColumnNames) {
  KvStore store(KvStoreOptions{});
  TableSchemaPtr wider = Users();
  auto shape = std::make_shared<TableSchema>(*wider);
  shape->version = 2;
  shape->columns.push_back({"extra", oid::kText, -1, false, ""});
  for (int i = 0; i < 100; ++i) {
    Change c = Insert(i % 2 == 0 ? users_ : TableSchemaPtr(shape), i, "n", Lsn(1));
    if (i % 2 == 1) c.after.push_back(Value::Text(oid::kText, "x"));
    ASSERT_TRUE(store.Stage(c).ok());
  }
  ASSERT_TRUE(store.Commit(Lsn(2)).ok());
  EXPECT_EQ(store.column_name_sets(), 2u);
  EXPECT_EQ(store.Lookup("users:1", "")->Field("extra"), "x");
  EXPECT_FALSE(store.Lookup("users:2", "")->Column("extra").has_value());
}

TEST_F(KvProtocolsTest, MemoryLimitRefusesRatherThanDropping) {
  KvStoreOptions options;
  options.max_memory = 2000;
  KvStore small(options);
  absl::Status status;
  int i = 0;
  for (; i < 100 && status.ok(); ++i) status = small.Stage(Insert(users_, i, "name", Lsn(1)));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(status.message()).find("max_memory"), std::string::npos);
}

TEST_F(KvProtocolsTest, HttpRowsPagesAndErrors) {
  HttpSession session(&service_);
  std::string out;
  session.Feed("GET /users/4 HTTP/1.1\r\nHost: x\r\n\r\nGET /users/404 HTTP/1.1\r\n\r\n", &out);
  EXPECT_NE(out.find("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 50"),
            std::string::npos);
  EXPECT_NE(out.find("ETag: \"0/100\""), std::string::npos);
  EXPECT_NE(out.find("HTTP/1.1 404 Not Found"), std::string::npos);
  EXPECT_NE(out.find("{\"error\":\"not found\",\"table\":\"users\",\"key\":\"404\"}"),
            std::string::npos);
  out.clear();
  session.Feed("GET /users?limit=2&after=9 HTTP/1.1\r\n\r\n", &out);
  EXPECT_NE(out.find("{\"rows\":[{\"id\":10,"), std::string::npos);
  EXPECT_NE(out.find("\"next\":\"11\"}"), std::string::npos);
  out.clear();
  session.Feed("GET / HTTP/1.1\r\n\r\n", &out);
  EXPECT_NE(out.find("\"applied_lsn\":\"0/200\""), std::string::npos);
  out.clear();
  SessionStep step =
      session.Feed("GET /users/1?min_lsn=0/FFFF&timeout_ms=5 HTTP/1.1\r\n\r\n", &out);
  EXPECT_EQ(step.kind, SessionStep::kWait);
  step = session.Resume(false, &out);
  EXPECT_NE(out.find("504 Gateway Timeout"), std::string::npos);
  out.clear();
  step = session.Feed("BREW /coffee HTTP/1.1\r\n\r\n", &out);
  EXPECT_NE(out.find("405 Method Not Allowed"), std::string::npos);
  out.clear();
  step = session.Feed("garbage\r\n\r\n", &out);
  EXPECT_NE(out.find("400 Bad Request"), std::string::npos);
  EXPECT_EQ(step.kind, SessionStep::kClose);
}

TEST_F(KvProtocolsTest, HttpBearerTokenAndRedisPassword) {
  KvServiceConfig config;
  config.http_token = "t0ken";
  config.password = "pw";
  KvService guarded(&store_, config, nullptr);
  HttpSession http(&guarded);
  std::string out;
  http.Feed("GET /users/1 HTTP/1.1\r\n\r\n", &out);
  EXPECT_NE(out.find("401 Unauthorized"), std::string::npos);
  EXPECT_NE(out.find("WWW-Authenticate: Bearer"), std::string::npos);
  out.clear();
  http.Feed("GET /users/1 HTTP/1.1\r\nAuthorization: Bearer t0ken\r\n\r\n", &out);
  EXPECT_NE(out.find("200 OK"), std::string::npos);
  RedisSession redis(&guarded);
  out.clear();
  redis.Feed("GET users:1\r\nAUTH nope\r\nAUTH pw\r\nEXISTS users:1\r\n", &out);
  EXPECT_EQ(out,
            "-NOAUTH Authentication required.\r\n-WRONGPASS invalid username-password pair or "
            "user is disabled.\r\n+OK\r\n:1\r\n");
}

TEST_F(KvProtocolsTest, MemcachedGetAndMetaGet) {
  MemcachedSession session(&service_);
  std::string out;
  session.Feed("get users:1 users:404 users:2\r\nmg users:3 v k s t\r\nmg users:404 v\r\n", &out);
  EXPECT_EQ(out.substr(0, 24), "VALUE users:1 0 50\r\n{\"id");
  EXPECT_NE(out.find("VALUE users:2 0 50\r\n"), std::string::npos);
  EXPECT_NE(out.find("END\r\nVA 50 kusers:3 s50 t-1\r\n{\"id\":3"), std::string::npos);
  EXPECT_NE(out.find("EN\r\n"), std::string::npos);
  out.clear();
  // A storage command's data block is skipped, the refusal is clear, and the session goes on.
  session.Feed("set users:1 0 0 5\r\nhello\r\nversion\r\n", &out);
  EXPECT_EQ(out.substr(0, 12), "SERVER_ERROR");
  EXPECT_NE(out.find("VERSION "), std::string::npos);
}

// A pipeline whose replies pass max_output_bytes is answered in parts, none lost.
TEST_F(KvProtocolsTest, OutputBoundPausesAndResumes) {
  KvServiceConfig config;
  config.max_output_bytes = 200;
  KvService small(&store_, config, nullptr);
  RedisSession session(&small);
  std::string input;
  for (int i = 0; i < 50; ++i) input += "GET users:1\r\n";
  std::string out;
  session.Feed(input, &out);
  EXPECT_TRUE(session.more());
  EXPECT_LT(out.size(), 50 * 56u);
  int rounds = 0;
  while (session.more() && ++rounds < 100) session.Feed("", &out);
  EXPECT_FALSE(session.more());
  size_t replies = 0;
  for (size_t at = out.find("$50\r\n"); at != std::string::npos; at = out.find("$50\r\n", at + 1))
    ++replies;
  EXPECT_EQ(replies, 50u);
}

TEST(RespTest, ParsesAndRejects) {
  resp::ParseLimits limits;
  limits.max_request_bytes = 64;
  std::vector<std::string_view> args;
  size_t consumed = 0;
  std::string error;
  EXPECT_EQ(resp::ParseCommand("*1\r\n$4\r\nPING\r\n", limits, &args, &consumed, &error),
            resp::ParseStatus::kComplete);
  EXPECT_EQ(consumed, 14u);
  EXPECT_EQ(resp::ParseCommand("*1\r\n$4\r\nPI", limits, &args, &consumed, &error),
            resp::ParseStatus::kIncomplete);
  // Oversized before the bytes arrive.
  EXPECT_EQ(resp::ParseCommand("*1\r\n$100000\r\n", limits, &args, &consumed, &error),
            resp::ParseStatus::kError);
  EXPECT_EQ(resp::ParseCommand("*-5\r\n", limits, &args, &consumed, &error),
            resp::ParseStatus::kError);
  EXPECT_EQ(resp::ParseCommand("*1\r\n:4\r\n", limits, &args, &consumed, &error),
            resp::ParseStatus::kError);
  EXPECT_EQ(resp::ParseCommand("*1\r\n$4\r\nPINGxx", limits, &args, &consumed, &error),
            resp::ParseStatus::kError);
  EXPECT_EQ(resp::ParseCommand(std::string(100, 'a'), limits, &args, &consumed, &error),
            resp::ParseStatus::kError);
  EXPECT_TRUE(resp::GlobMatch("users:*", "users:12"));
  EXPECT_TRUE(resp::GlobMatch("u?ers:[0-9]*", "users:12"));
  EXPECT_FALSE(resp::GlobMatch("users:[^1]*", "users:12"));
  EXPECT_TRUE(resp::GlobMatch("*a*a*a*a*b", std::string(40, 'a') + "b"));
  EXPECT_FALSE(resp::GlobMatch("*a*a*a*a*b", std::string(2000, 'a')));
}

// Random, truncated and mutated input never crashes a session, and a session never buffers
// more than its limit.
TEST_F(KvProtocolsTest, FuzzedInputNeverCrashes) {
  std::mt19937_64 rng(42);
  const std::vector<std::string> seeds = {
      "*3\r\n$4\r\nHGET\r\n$7\r\nusers:1\r\n$4\r\nname\r\n",
      "SCAN 0 MATCH * COUNT 5\r\nHELLO 3\r\nSUBSCRIBE a\r\n",
      "get users:1 users:2\r\nmg users:1 v k c O123\r\nset k 0 0 3\r\nabc\r\n",
      "GET /users/1?min_lsn=0/1 HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
  };
  for (int round = 0; round < 20000; ++round) {
    std::string input = seeds[rng() % seeds.size()];
    switch (rng() % 4) {
      case 0:
        input.resize(rng() % (input.size() + 1));
        break;
      case 1:
        for (int i = 0; i < 4; ++i) input[rng() % input.size()] = static_cast<char>(rng());
        break;
      case 2:
        input.clear();
        for (size_t i = rng() % 300; i > 0; --i) input.push_back(static_cast<char>(rng()));
        break;
      default:
        input = input + std::string(rng() % 5000, static_cast<char>(rng()));
    }
    std::string out;
    RedisSession redis(&service_);
    MemcachedSession memcached(&service_);
    HttpSession http(&service_);
    // Fed in random pieces, as a socket delivers them.
    for (size_t pos = 0; pos < input.size();) {
      size_t n = 1 + rng() % 64;
      std::string_view piece = std::string_view(input).substr(pos, n);
      pos += n;
      if (redis.Feed(piece, &out).kind == SessionStep::kWait) redis.Resume(false, &out);
      memcached.Feed(piece, &out);
      if (http.Feed(piece, &out).kind == SessionStep::kWait) http.Resume(false, &out);
    }
  }
}

}  // namespace
}  // namespace pgflow
