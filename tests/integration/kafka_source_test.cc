// PostgreSQL -> kafka -> (kafka source) -> postgres sink, end to end: a capture pipeline
// (postgres source, kafka sink) writes into librdkafka's mock cluster (3 brokers, a process of
// its own); a delivery pipeline (kafka source, postgres sink) reads it back into a second
// PostgreSQL server. Each test checks what a user would: the target holds exactly the
// source's rows (EXCEPT ALL both ways), and the consumer group's committed offsets.

#include <librdkafka/rdkafka.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/support/kafka_broker.h"
#include "tests/integration/support/kafka_mock.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

// The partitions a delivery holds according to its log: its "assigned" and "gave up" (or
// "lost") lines replayed in order (an eager rebalance gives everything up before assigning
// anew; a cooperative one moves a few partitions).
std::set<std::string> Holding(const std::string& log) {
  std::set<std::string> held;
  constexpr absl::string_view kMarker = "kafka source: group ";
  for (absl::string_view line : absl::StrSplit(absl::string_view(log.data(), log.size()), '\n')) {
    const size_t at = line.find(kMarker);
    if (at == absl::string_view::npos) continue;
    absl::string_view rest = line.substr(at + kMarker.size());
    rest.remove_prefix(std::min(rest.size(), rest.find(' ') + 1));  // the group's name
    bool add = true;
    if (absl::ConsumePrefix(&rest, "assigned ")) {
      add = true;
    } else if (absl::ConsumePrefix(&rest, "gave up ") || absl::ConsumePrefix(&rest, "lost ")) {
      add = false;
    } else {
      continue;
    }
    if (rest == "none") continue;
    for (absl::string_view partition : absl::StrSplit(rest, ", ")) {
      if (add) {
        held.insert(std::string(partition));
      } else {
        held.erase(std::string(partition));
      }
    }
  }
  return held;
}

using ::testing::HasSubstr;

constexpr char kAccountsColumns[] =
    "id bigint, name text, balance numeric(12,2), tags text[], doc jsonb, blob bytea, "
    "updated timestamptz, flag boolean, score float8, nums int4[], day date, big text";
constexpr char kAccountsList[] =
    "id, name, balance, tags, doc, blob, updated, flag, score, nums, day, big";
// What the schema-change step of the end-to-end test adds.
constexpr char kExtraColumn[] = "extra int";
constexpr char kLedgerColumns[] = "acct bigint, n int, amount numeric, note text";
constexpr char kLedgerList[] = "acct, n, amount, note";

// Transaction n (from 1) of the workload: inserts, updates, deletes, a key change now and
// then, over every type above: NULLs, quotes, braces and commas in strings and arrays, nested
// jsonb with exact numerics, bytea with zero bytes, infinities and NaN, multidimensional
// arrays, and a TOASTed column (big) that most updates leave alone.
std::string Workload(int64_t n) {
  const std::string id = std::to_string(n);
  std::string sql = "BEGIN;";
  sql +=
      "INSERT INTO accounts VALUES (" + id + ", " +
      (n % 9 == 0 ? "NULL" : "'row ' || " + id + " || ' \"q\", {b} \\ é ''s'") + ", " +
      std::to_string(n * 37 % 100000) + ".25, " +
      (n % 6 == 0 ? "NULL"
                  : "ARRAY['a,b', 'c\"d', NULL, '{x}', 'back\\slash', '', 'NULL', '" + id + "']") +
      ", jsonb_build_object('n', " + id + ", 'price', 1.50 * " + id +
      ", 'nested', jsonb_build_array(1, 'x', null, true), 'big', "
      "123456789012345678901234567890.10), "
      "decode(md5('" +
      id + "'), 'hex') || '\\x00ff'::bytea, " + "'2024-01-02 03:04:05.123456+00'::timestamptz + " +
      id + " * interval '1 minute 1.5 second', " +
      (n % 5 == 0   ? "NULL"
       : n % 3 == 0 ? "true"
                    : "false") +
      ", " +
      (n % 13 == 0   ? "'NaN'"
       : n % 17 == 0 ? "'-Infinity'"
                     : id + " / 7.0::float8") +
      ", " + (n % 4 == 1 ? "ARRAY[[1, 2], [3, NULL]]" : "ARRAY[" + id + ", NULL, -" + id + "]") +
      ", '2024-01-01'::date + " + id + ", " +
      (n % 4 == 0 ? "(SELECT string_agg(md5(g::text || " + id +
                        "::text), '') FROM generate_series(1, 400) g)"
                  : "NULL") +
      ");";
  // Updates leave `big` alone: the stream carries it as an unchanged TOAST value.
  sql += "UPDATE accounts SET balance = balance + 1.10, tags = array_append(tags, 'u" + id +
         "'), doc = jsonb_set(doc, '{n}', to_jsonb(" + id +
         ")), updated = updated + interval '1 day'"
         " WHERE id = " +
         std::to_string(n / 2) + ";";
  if (n % 5 == 0) sql += "DELETE FROM accounts WHERE id = " + std::to_string(n - 3) + ";";
  // A key change: a delete of the old key and a create of the new one, in two partitions.
  // (Rows with a TOASTed value are left alone: their create would lack it, see
  // docs/guides/kafka-to-postgres.md.)
  if (n % 11 == 0) {
    sql += "UPDATE accounts SET id = -id WHERE id = " + std::to_string(n - 5) + " AND big IS NULL;";
  }
  sql += "INSERT INTO ledger VALUES (" + std::to_string(n % 20) + ", " + id + ", " + id +
         ".001, 'n" + id + "') ON CONFLICT DO NOTHING;";
  sql +=
      "UPDATE ledger SET amount = amount * 2, note = NULL WHERE acct = " + std::to_string(n % 20) +
      " AND n = " + std::to_string(n - 20) + ";";
  return sql + "COMMIT;";
}

// Copies what `query` returns on `from_url` into `into` on `to_url` (text COPY).
void CopyRows(const std::string& from_url, const std::string& query, const std::string& to_url,
              const std::string& into) {
  Sql from(from_url);
  Sql to(to_url);
  PGresult* r = PQexec(from.conn(), ("COPY (" + query + ") TO STDOUT").c_str());
  ASSERT_EQ(PQresultStatus(r), PGRES_COPY_OUT) << PQerrorMessage(from.conn());
  PQclear(r);
  std::string data;
  char* buf = nullptr;
  int n;
  while ((n = PQgetCopyData(from.conn(), &buf, 0)) > 0) {
    data.append(buf, n);
    PQfreemem(buf);
  }
  while ((r = PQgetResult(from.conn())) != nullptr) PQclear(r);
  r = PQexec(to.conn(), ("COPY " + into + " FROM STDIN").c_str());
  ASSERT_EQ(PQresultStatus(r), PGRES_COPY_IN) << PQerrorMessage(to.conn());
  PQclear(r);
  ASSERT_EQ(PQputCopyData(to.conn(), data.data(), static_cast<int>(data.size())), 1);
  ASSERT_EQ(PQputCopyEnd(to.conn(), nullptr), 1);
  while ((r = PQgetResult(to.conn())) != nullptr) {
    EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(to.conn());
    PQclear(r);
  }
}

// Committed offsets of `group` and the high watermarks of `topic`'s `partitions` partitions;
// fails the test when the brokers do not answer.
GroupOffsets Offsets(const KafkaCluster& kafka, const std::string& group, const std::string& topic,
                     int partitions) {
  std::optional<GroupOffsets> offsets =
      QueryGroupOffsets(kafka.bootstrap(), group, topic, partitions);
  EXPECT_TRUE(offsets) << "the brokers did not say what " << group << " committed on " << topic;
  return offsets.value_or(GroupOffsets{std::vector<int64_t>(partitions, -1001),
                                       std::vector<int64_t>(partitions, 0),
                                       std::vector<int64_t>(partitions, 0)});
}

// One test's world: database `name` on both servers, the capture pipeline into the Kafka
// cluster and the delivery pipeline out of it.
class KafkaRoundTrip {
 public:
  // `ledger_config`: topic settings of the ledger's topic (a short retention).
  KafkaRoundTrip(const std::string& name, KafkaCluster& kafka, const std::string& source_extra = "",
                 const std::map<std::string, std::string>& ledger_config = {})
      : name_(name), kafka_(kafka) {
    Sql(SharedCluster(0).Url()).Exec("CREATE DATABASE " + name);
    Sql(SharedCluster(1).Url()).Exec("CREATE DATABASE " + name);
    Sql(SharedCluster(0).Url()).Exec("CREATE DATABASE " + name + "_check");
    Sql check(check_url());
    for (const char* side : {"src", "dst"}) {
      check.Exec(std::string("CREATE TABLE ") + side + "_accounts (" + kAccountsColumns + ")");
      check.Exec(std::string("CREATE TABLE ") + side + "_ledger (" + kLedgerColumns + ")");
    }
    Sql source(source_url());
    source.Exec(std::string("CREATE TABLE accounts (") + kAccountsColumns + ", PRIMARY KEY (id))");
    source.Exec(std::string("CREATE TABLE ledger (") + kLedgerColumns + ", PRIMARY KEY (acct, n))");
    kafka_.CreateTopic(name + ".public.accounts", 3);
    // One partition: the ledger's truncates can be placed, and are applied.
    kafka_.CreateTopic(name + ".public.ledger", 1, ledger_config);
    kafka_.CreateTopic(name + ".schema_changes", 1);
    capture_yaml_ = dir_.File("capture.yaml");
    WriteFile(capture_yaml_, "pipeline: " + name +
                                 "\nsource:\n  postgres:\n    url: " + source_url() +
                                 "\n    tables: [public.accounts, public.ledger]\n"
                                 "    snapshot: {mode: initial}\n    status_interval: 200ms\n"
                                 "sinks:\n  events:\n    kafka: {brokers: \"" +
                                 kafka.bootstrap() + "\"}\n    flush_interval: 50ms\n");
    delivery_yaml_ = dir_.File("delivery.yaml");
    WriteFile(delivery_yaml_,
              "pipeline: " + name + "_replica\nsource:\n  kafka:\n    brokers: \"" +
                  kafka.bootstrap() + "\"\n    topics: [" + name + ".public.accounts, " + name +
                  ".public.ledger, " + name + ".schema_changes]\n    group: " + group() +
                  "\n    commit_interval: 200ms\n" +
                  // A member that is gone (killed, or closed: librdkafka 2.0.2's
                  // mock cluster does not act on LeaveGroup) holds the group's
                  // next rebalance until its session times out (45 s by default).
                  "    properties: {session.timeout.ms: \"6000\", "
                  "heartbeat.interval.ms: \"500\"}\n" +
                  source_extra + "sinks:\n  target:\n    postgres: {url: " + target_url() +
                  ", batch_rows: 100}\n    flush_interval: 50ms\n" +
                  "admin: {listen: '127.0.0.1:" + std::to_string(admin_port_) + "'}\n");
  }

  std::string source_url() const { return SharedCluster(0).Url(name_); }
  std::string target_url() const { return SharedCluster(1).Url(name_); }
  std::string check_url() const { return SharedCluster(0).Url(name_ + "_check"); }
  std::string group() const { return name_ + "_group"; }
  std::string capture_log() const { return dir_.File("capture.log"); }
  std::string delivery_log() const { return dir_.File("delivery.log"); }
  const std::string& delivery_yaml() const { return delivery_yaml_; }
  std::string delivery_admin(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(admin_port_) + path;
  }
  std::string topic(const std::string& table) const { return name_ + ".public." + table; }

  std::unique_ptr<PgflowProcess> StartCapture() {
    return StartPgflowUntilLogged({"run", capture_yaml_, "--progress", "1"}, capture_log(), {},
                                  "replication stream: streaming");
  }
  std::unique_ptr<PgflowProcess> StartDelivery() {
    return StartPgflowUntilLogged({"run", delivery_yaml_, "--progress", "1"}, delivery_log(), {},
                                  "assigned");
  }
  // A second delivery process of the same group (its own admin port and log), as a user
  // scales the delivery out to another host.
  std::unique_ptr<PgflowProcess> StartSecondDelivery() {
    std::string yaml = ReadFile(delivery_yaml_);
    const std::string port = std::to_string(admin_port_);
    yaml.replace(yaml.find(port), port.size(), std::to_string(FreeLoopbackPort()));
    WriteFile(dir_.File("delivery2.yaml"), yaml);
    return StartPgflowUntilLogged({"run", dir_.File("delivery2.yaml"), "--progress", "1"},
                                  second_delivery_log(), {}, "assigned");
  }
  std::string second_delivery_log() const { return dir_.File("delivery2.log"); }

  // A cheap fingerprint of both tables on one side (row count and md5 of every row in key
  // order), to wait on before the exact comparison; nullopt when the query lost a deadlock to
  // pgflow's DDL on the target.
  std::optional<std::string> Fingerprint(const std::string& url) {
    return Sql(url).PollScalar(
        "SELECT (SELECT count(*) || ':' || coalesce(md5(string_agg(a::text, '|' ORDER BY id)), "
        "'') FROM accounts a) || '/' || (SELECT count(*) || ':' || "
        "coalesce(md5(string_agg(l::text, '|' ORDER BY acct, n)), '') FROM ledger l)");
  }
  std::optional<std::string> AccountsFingerprint(const std::string& url) {
    return Sql(url).PollScalar(
        "SELECT count(*) || ':' || coalesce(md5(string_agg(a::text, '|' ORDER BY id)), '') "
        "FROM accounts a");
  }
  bool TargetHasTables() {
    return Sql(target_url())
               .Scalar(
                   "SELECT count(*) FROM pg_tables WHERE tablename IN "
                   "('accounts', 'ledger') AND schemaname = 'public'") == "2";
  }
  // Waits until the target's rows look like the source's.
  bool WaitForTarget(std::chrono::seconds timeout = std::chrono::seconds(180)) {
    return WaitFor(
        [&] {
          if (!TargetHasTables()) return false;
          auto source = Fingerprint(source_url());
          auto target = Fingerprint(target_url());
          return source && target && *source == *target;
        },
        timeout);
  }
  // The source's accounts lost `column`: so do the comparisons.
  void DropColumn(const std::string& column) {
    Sql check(check_url());
    for (const char* side : {"src", "dst"}) {
      check.Exec(std::string("ALTER TABLE ") + side + "_accounts DROP COLUMN " + column);
    }
    accounts_list_.erase(accounts_list_.find(", " + column), column.size() + 2);
  }
  // The source's accounts gained kExtraColumn: so do the comparisons.
  void AddExtraColumn() {
    Sql check(check_url());
    for (const char* side : {"src", "dst"}) {
      check.Exec(std::string("ALTER TABLE ") + side + "_accounts ADD COLUMN " + kExtraColumn);
    }
    accounts_list_ += ", extra";
  }
  // For a failure message: the accounts keys that differ between source and target (at most
  // 10), each with what the accounts topic holds for it (partition, offset, operation), so that
  // a loss can be placed: capture, Kafka, or delivery.
  std::string ExplainAccounts() {
    auto rows = [](const std::string& url) {
      std::map<std::string, std::string> out;
      for (const auto& r : Sql(url).Query("SELECT id::text, md5(accounts::text) FROM accounts")) {
        out[r[0]] = r[1];
      }
      return out;
    };
    const std::map<std::string, std::string> src = rows(source_url()), dst = rows(target_url());
    std::vector<std::pair<std::string, std::string>> keys;  // key, how it differs
    for (const auto& [id, hash] : src) {
      auto it = dst.find(id);
      if (it == dst.end() || it->second != hash) {
        keys.emplace_back(id, it == dst.end() ? "missing from the target" : "differs");
      }
    }
    for (const auto& [id, hash] : dst) {
      if (!src.contains(id)) keys.emplace_back(id, "only in the target");
    }
    std::string topic;
    FILE* kcat = popen(("kcat -q -C -e -b '" + kafka_.bootstrap() + "' -t " +
                        this->topic("accounts") + " -f '%p %o %k %s\\n' 2>&1")
                           .c_str(),
                       "r");
    std::vector<std::string> lines;
    if (kcat != nullptr) {
      char buf[1 << 16];
      std::string line;
      while (std::fgets(buf, sizeof(buf), kcat) != nullptr) {
        line += buf;
        if (line.empty() || line.back() != '\n') continue;
        lines.push_back(std::move(line));
        line.clear();
      }
      pclose(kcat);
    }
    std::string out = absl::StrCat(keys.size(), " accounts keys differ");
    if (keys.size() > 10) keys.resize(10);
    for (const auto& [id, how] : keys) {
      absl::StrAppend(&out, "\n  id ", id, ": ", how, "; in Kafka:");
      const std::string key = "{\"id\":" + id + "}";
      for (const std::string& l : lines) {
        std::vector<std::string> f = absl::StrSplit(l, absl::MaxSplits(' ', 3));
        if (f.size() < 4 || f[2] != key) continue;
        const size_t op = f[3].find("\"op\":\"");
        absl::StrAppend(&out, " [", f[0], "]@", f[1], " ",
                        op == std::string::npos ? "?" : f[3].substr(op + 6, 1));
      }
    }
    return out;
  }

  // Rows in one side and not the other, both ways, as the check database sees them.
  void ExpectIdentical(bool with_ledger = true) {
    Sql check(check_url());
    check.Exec("TRUNCATE src_accounts, dst_accounts, src_ledger, dst_ledger");
    CopyRows(source_url(), "SELECT " + accounts_list_ + " FROM accounts", check_url(),
             "src_accounts");
    CopyRows(target_url(), "SELECT " + accounts_list_ + " FROM accounts", check_url(),
             "dst_accounts");
    if (with_ledger) {
      CopyRows(source_url(), std::string("SELECT ") + kLedgerList + " FROM ledger", check_url(),
               "src_ledger");
      CopyRows(target_url(), std::string("SELECT ") + kLedgerList + " FROM ledger", check_url(),
               "dst_ledger");
    }
    for (const char* table : {"accounts", "ledger"}) {
      if (!with_ledger && std::string(table) == "ledger") continue;
      const std::string src = std::string("src_") + table;
      const std::string dst = std::string("dst_") + table;
      EXPECT_EQ(
          check.Scalar("SELECT count(*) FROM (TABLE " + src + " EXCEPT ALL TABLE " + dst + ") d"),
          "0")
          << table << ": rows of the source missing from the target";
      EXPECT_EQ(
          check.Scalar("SELECT count(*) FROM (TABLE " + dst + " EXCEPT ALL TABLE " + src + ") d"),
          "0")
          << table << ": rows in the target that the source does not have";
      EXPECT_NE(check.Scalar("SELECT count(*) FROM " + src), "0") << table;
    }
  }

 private:
  std::string name_;
  KafkaCluster& kafka_;
  TempDir dir_;
  int admin_port_ = FreeLoopbackPort();  // the delivery pipeline's admin endpoint
  std::string capture_yaml_;
  std::string delivery_yaml_;
  std::string accounts_list_ = kAccountsList;
};

TEST(KafkaSourceTest, PostgresThroughKafkaIntoPostgresLeavesTheTargetIdentical) {
  KafkaBroker kafka;
  KafkaRoundTrip t("ks_e2e", kafka);
  Sql source(t.source_url());
  // Rows before the pipeline starts reach Kafka as snapshot reads (op r).
  for (int64_t n = 1; n <= 60; ++n) source.Exec(Workload(n));
  auto capture = t.StartCapture();
  auto delivery = t.StartDelivery();
  for (int64_t n = 61; n <= 300; ++n) source.Exec(Workload(n));
  // A schema change: the rows written after it carry the new column, possibly read before the
  // DDL event (another topic); they wait for it, and the target gets the column first.
  source.Exec(std::string("ALTER TABLE accounts ADD COLUMN ") + kExtraColumn + " DEFAULT 7");
  t.AddExtraColumn();
  source.Exec("UPDATE accounts SET extra = id % 100 WHERE id % 3 = 0");
  for (int64_t n = 301; n <= 400; ++n) source.Exec(Workload(n));
  // A truncate of a table whose topic has one partition is applied in its place.
  source.Exec("TRUNCATE ledger");
  for (int64_t n = 401; n <= 460; ++n) source.Exec(Workload(n));
  ASSERT_TRUE(t.WaitForTarget()) << ReadFile(t.delivery_log());
  t.ExpectIdentical();
  // A kafka source has no WAL end to report: the pipeline is ready, and streaming, all the same.
  EXPECT_EQ(Curl(t.delivery_admin("/readyz")).code, 200);
  EXPECT_THAT(Curl(t.delivery_admin("/status")).body, HasSubstr("\"phase\": \"streaming\""));

  // A clean stop commits every offset read: nothing is read twice by the next run.
  delivery->Signal(SIGTERM);
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.delivery_log());
  GroupOffsets accounts = Offsets(kafka, t.group(), t.topic("accounts"), 3);
  EXPECT_EQ(accounts.committed, accounts.high);
  GroupOffsets ledger = Offsets(kafka, t.group(), t.topic("ledger"), 1);
  EXPECT_EQ(ledger.committed, ledger.high);
  const std::string log = ReadFile(t.delivery_log());
  EXPECT_THAT(log, HasSubstr("changes are applied as upserts and deletes by key, none skipped"));
  // (accounts is created either so or by the replay of its ALTER TABLE, whichever is read
  // first; ledger has no DDL.)
  EXPECT_THAT(log, HasSubstr("created table public.ledger in the target"));
  EXPECT_THAT(log, ::testing::Not(HasSubstr("truncate of")));  // none skipped
  EXPECT_THAT(log, HasSubstr("replayed ALTER TABLE public.accounts"));

  // Written while the delivery pipeline is down: read from the committed offsets.
  for (int64_t n = 461; n <= 500; ++n) source.Exec(Workload(n));
  delivery = t.StartDelivery();
  ASSERT_TRUE(t.WaitForTarget()) << ReadFile(t.delivery_log());
  t.ExpectIdentical();
  delivery->Signal(SIGTERM);
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.delivery_log());
  capture->Signal(SIGTERM);
  EXPECT_EQ(capture->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.capture_log());
}

TEST(KafkaSourceTest, SchemaChangesReachTheTargetInTheirPlaceAmongTheRows) {
  // The mock cluster: the test slows one broker's answers (rtt) so that a topic's rows are read
  // before the DDL event on another topic, which a real single broker cannot be made to do.
  MockKafka kafka;
  KafkaRoundTrip t("ks_ddl", kafka);
  // The rows' partitions on broker 1, the schema changes on broker 2: slowing one broker
  // down makes the other's messages arrive first.
  for (int p = 0; p < 3; ++p)
    kafka.Command("leader ks_ddl.public.accounts " + std::to_string(p) + " 1");
  kafka.Command("leader ks_ddl.public.ledger 0 1");
  kafka.Command("leader ks_ddl.schema_changes 0 2");
  Sql source(t.source_url());
  auto capture = t.StartCapture();
  auto delivery = t.StartDelivery();
  for (int64_t n = 1; n <= 40; ++n) source.Exec(Workload(n));
  ASSERT_TRUE(t.WaitForTarget()) << ReadFile(t.delivery_log());

  // A column added, the DDL event late: rows with the column wait for it.
  kafka.Command("rtt 2 3000");
  source.Exec(std::string("ALTER TABLE accounts ADD COLUMN ") + kExtraColumn + " DEFAULT 7");
  t.AddExtraColumn();
  for (int64_t n = 41; n <= 60; ++n) source.Exec(Workload(n));
  ASSERT_TRUE(t.WaitForTarget()) << ReadFile(t.delivery_log());
  t.ExpectIdentical();
  EXPECT_THAT(ReadFile(t.delivery_log()),
              HasSubstr("with a column its last shape lacks waits (at most 30000ms) for the DDL "
                        "event that added it"));
  kafka.Command("rtt 2 0");

  // A column dropped, the rows written before it late: they go on without it. Some of them
  // are in the DROP's own transaction (same commit LSN, placed before it by sequence).
  kafka.Command("rtt 1 3000");
  source.Exec("UPDATE accounts SET balance = balance + 1, day = day + 1 WHERE id % 2 = 0");
  source.Exec(
      "BEGIN; UPDATE accounts SET balance = balance + 2, day = day + 2 WHERE id % 3 = 0; "
      "ALTER TABLE accounts DROP COLUMN day; COMMIT");
  t.DropColumn("day");
  ASSERT_TRUE(t.WaitForTarget()) << ReadFile(t.delivery_log());
  t.ExpectIdentical();
  kafka.Command("rtt 1 0");
  EXPECT_THAT(ReadFile(t.delivery_log()), HasSubstr("replayed ALTER TABLE public.accounts"));
  delivery->Signal(SIGTERM);
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.delivery_log());
  capture->Signal(SIGTERM);
  EXPECT_EQ(capture->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.capture_log());
}

TEST(KafkaSourceTest, FullTablesAreKeyedByTheirPrimaryKeyAndKeylessOnesRefused) {
  KafkaBroker kafka;
  KafkaRoundTrip t("ks_full", kafka);
  Sql source(t.source_url());
  // Under FULL pgoutput marks every column as identity; the primary key must still key rows.
  source.Exec("ALTER TABLE accounts REPLICA IDENTITY FULL");
  // No key at all: its rows cannot be applied idempotently.
  source.Exec("ALTER TABLE ledger DROP CONSTRAINT ledger_pkey, REPLICA IDENTITY FULL");
  for (int64_t n = 1; n <= 40; ++n) source.Exec(Workload(n));
  auto capture = t.StartCapture();
  for (int64_t n = 41; n <= 120; ++n) source.Exec(Workload(n));

  auto delivery = std::make_unique<PgflowProcess>(
      std::vector<std::string>{"run", t.delivery_yaml(), "--progress", "1"}, t.delivery_log());
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(120)), 1) << ReadFile(t.delivery_log());
  EXPECT_THAT(ReadFile(t.delivery_log()),
              HasSubstr("table public.ledger has no primary key (REPLICA IDENTITY FULL)"));
  EXPECT_THAT(ReadFile(t.delivery_log()), HasSubstr("set source.kafka.keyless: skip"));

  std::string yaml = ReadFile(t.delivery_yaml());
  yaml.replace(yaml.find("    commit_interval"), 0, "    keyless: skip\n");
  WriteFile(t.delivery_yaml(), yaml);
  delivery = t.StartDelivery();
  auto accounts_match = [&] {
    if (Sql(t.target_url()).Scalar("SELECT to_regclass('public.accounts') IS NOT NULL") != "t") {
      return false;
    }
    auto source = t.AccountsFingerprint(t.source_url());
    auto target = t.AccountsFingerprint(t.target_url());
    return source && target && *source == *target;
  };
  ASSERT_TRUE(WaitFor(accounts_match, std::chrono::seconds(180))) << ReadFile(t.delivery_log());
  t.ExpectIdentical(/*with_ledger=*/false);
  EXPECT_TRUE(WaitFor(
      [&] { return CountInFile(t.delivery_log(), "its rows are skipped (keyless: skip)") == 1; },
      std::chrono::seconds(60)))
      << ReadFile(t.delivery_log());
  delivery->Signal(SIGTERM);
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.delivery_log());

  // Everything read again (a new group starts at the beginning of every topic) into the same
  // target: upserts and deletes by the primary key leave it as it was, nothing doubled.
  yaml = ReadFile(t.delivery_yaml());
  yaml.replace(yaml.find("group: "), 7, "group: replay_");
  WriteFile(t.delivery_yaml(), yaml);
  delivery = t.StartDelivery();
  ASSERT_TRUE(WaitFor(
      [&] {
        GroupOffsets o = Offsets(kafka, "replay_" + t.group(), t.topic("accounts"), 3);
        return o.committed == o.high;
      },
      std::chrono::seconds(180)))
      << ReadFile(t.delivery_log());
  t.ExpectIdentical(/*with_ledger=*/false);
  delivery->Signal(SIGTERM);
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.delivery_log());
  capture->Signal(SIGTERM);
  EXPECT_EQ(capture->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.capture_log());
}

TEST(KafkaSourceTest, KillNineMidStreamThenRestartLeavesTheTargetIdentical) {
  KafkaBroker kafka;
  KafkaRoundTrip t("ks_kill", kafka);
  auto capture = t.StartCapture();
  auto delivery = t.StartDelivery();
  int64_t written = 0;
  for (int round = 0; round < 2; ++round) {
    // Writes go on while the delivery pipeline streams, with offsets committed and more in
    // flight, when it is killed.
    const int64_t base = written;
    BackgroundWriter writer(
        t.source_url(), [base](int64_t n, std::mt19937_64&) { return Workload(base + n + 1); },
        /*limit=*/500);
    const GroupOffsets before = Offsets(kafka, t.group(), t.topic("accounts"), 3);
    ASSERT_TRUE(WaitFor([&] { return writer.transactions() > 200; }, std::chrono::seconds(120)));
    ASSERT_TRUE(WaitFor(
        [&] {
          GroupOffsets o = Offsets(kafka, t.group(), t.topic("accounts"), 3);
          return o.committed != before.committed;
        },
        std::chrono::seconds(120)))
        << ReadFile(t.delivery_log());
    kill(delivery->pid(), SIGKILL);
    delivery->Wait(std::chrono::seconds(10));
    writer.Stop();
    written += writer.transactions();
    GroupOffsets o = Offsets(kafka, t.group(), t.topic("accounts"), 3);
    for (int p = 0; p < 3; ++p) EXPECT_LE(o.committed[p], o.high[p]);
    delivery = t.StartDelivery();
  }
  ASSERT_TRUE(t.WaitForTarget()) << ReadFile(t.delivery_log()) << "\n" << t.ExplainAccounts();
  t.ExpectIdentical();
  delivery->Signal(SIGTERM);
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.delivery_log());
  capture->Signal(SIGTERM);
  EXPECT_EQ(capture->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.capture_log());
}

TEST(KafkaSourceTest, AMalformedMessageStopsThePipelineNamingItsPlaceOrIsSkipped) {
  KafkaBroker kafka;
  KafkaRoundTrip t("ks_bad", kafka);
  Sql source(t.source_url());
  auto capture = t.StartCapture();
  for (int64_t n = 1; n <= 50; ++n) source.Exec(Workload(n));
  // Everything written is in Kafka (the capture pipeline acknowledged it): the partition's end
  // does not move until we write again.
  const std::string written = source.Scalar("SELECT pg_current_wal_lsn()");
  ASSERT_TRUE(WaitFor(
      [&] {
        return source.Scalar("SELECT confirmed_flush_lsn >= '" + written +
                             "' FROM pg_replication_slots WHERE slot_name = 'pgflow_ks_bad'") ==
               "t";
      },
      std::chrono::seconds(60)))
      << ReadFile(t.capture_log());
  // Not a pgflow event, in the middle of the ledger's partition.
  const int64_t bad_offset = Offsets(kafka, "nobody", t.topic("ledger"), 1).high[0];
  std::string output;
  FILE* kcat = popen(("kcat -q -b '" + kafka.bootstrap() + "' -P -t " + t.topic("ledger") +
                      " -p 0 -k '{\"acct\":1}'")
                         .c_str(),
                     "w");
  ASSERT_NE(kcat, nullptr);
  std::fputs("{\"op\":\"c\",\"after\":{\"acct\":1}}\n", kcat);
  ASSERT_EQ(pclose(kcat), 0);
  for (int64_t n = 51; n <= 80; ++n) source.Exec(Workload(n));

  auto delivery = std::make_unique<PgflowProcess>(
      std::vector<std::string>{"run", t.delivery_yaml(), "--progress", "1"}, t.delivery_log());
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(120)), 1) << ReadFile(t.delivery_log());
  const std::string log = ReadFile(t.delivery_log());
  EXPECT_THAT(log, HasSubstr("kafka topic ks_bad.public.ledger partition 0 offset " +
                             std::to_string(bad_offset) +
                             ": a debezium event without its "
                             "\"source\" object"));
  EXPECT_THAT(log, HasSubstr("set source.kafka.malformed: skip"));
  // Everything before it is committed; it is where the group resumes.
  EXPECT_EQ(Offsets(kafka, t.group(), t.topic("ledger"), 1).committed[0], bad_offset);

  // With malformed: skip it is logged the same way and passed over.
  std::string yaml = ReadFile(t.delivery_yaml());
  yaml.replace(yaml.find("    commit_interval"), 0, "    malformed: skip\n");
  WriteFile(t.delivery_yaml(), yaml);
  delivery = t.StartDelivery();
  ASSERT_TRUE(t.WaitForTarget()) << ReadFile(t.delivery_log());
  t.ExpectIdentical();
  EXPECT_THAT(ReadFile(t.delivery_log()),
              HasSubstr("kafka topic ks_bad.public.ledger partition 0 offset " +
                        std::to_string(bad_offset) + ": skipped (malformed: skip)"));
  delivery->Signal(SIGTERM);
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.delivery_log());

  // A group whose next message is no longer on the topic (retention deleted it first) stops
  // rather than skip to what is there: its sinks would miss those changes.
  const int64_t end = Offsets(kafka, t.group(), t.topic("ledger"), 1).high[0];
  {
    // As a member of the group, while no other member is active.
    GroupMember member(kafka.bootstrap(), t.group(), t.topic("ledger"));
    ASSERT_TRUE(member.WaitForAssignment(std::chrono::seconds(60)));
    member.Commit(0, end + 1000);
  }
  delivery = std::make_unique<PgflowProcess>(
      std::vector<std::string>{"run", t.delivery_yaml(), "--progress", "1"}, t.delivery_log());
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(120)), 1) << ReadFile(t.delivery_log());
  EXPECT_THAT(ReadFile(t.delivery_log()),
              HasSubstr("is no longer on the topic (retention deleted it first)"));
  capture->Signal(SIGTERM);
  EXPECT_EQ(capture->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.capture_log());
}

// Scale-out as a user sets it up: one capture into Kafka, two delivery processes of one group
// into one target; one is killed with -9 mid-stream and the other takes its partitions over.
TEST(KafkaSourceTest, TwoDeliveriesOfOneGroupShareTheWorkAndOneTakesOverFromTheOtherKilled) {
  KafkaBroker kafka;
  KafkaRoundTrip t("ks_scale", kafka);
  auto capture = t.StartCapture();
  auto first = t.StartDelivery();
  auto second = t.StartSecondDelivery();
  BackgroundWriter writer(
      t.source_url(), [](int64_t n, std::mt19937_64&) { return Workload(n + 1); },
      /*limit=*/1500);
  // Both hold partitions at once, and both commit. What each holds is replayed from its log;
  // the two sets must not overlap (a member that left the group, slow on a loaded machine, may
  // not have logged giving its partitions up yet while the other already logged taking them).
  std::set<std::string> shared;  // every partition of the two, once they share the work
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::set<std::string> a = Holding(ReadFile(t.delivery_log()));
        const std::set<std::string> b = Holding(ReadFile(t.second_delivery_log()));
        if (a.empty() || b.empty() || writer.transactions() <= 300) return false;
        for (const std::string& partition : a) {
          if (b.contains(partition)) return false;
        }
        shared = a;
        shared.insert(b.begin(), b.end());
        return true;
      },
      std::chrono::seconds(120)))
      << ReadFile(t.delivery_log()) << "\n" << ReadFile(t.second_delivery_log());
  const GroupOffsets before = Offsets(kafka, t.group(), t.topic("accounts"), 3);
  ASSERT_TRUE(WaitFor(
      [&] { return Offsets(kafka, t.group(), t.topic("accounts"), 3).committed != before.committed; },
      std::chrono::seconds(120)));
  kill(first->pid(), SIGKILL);
  first->Wait(std::chrono::seconds(10));
  ASSERT_TRUE(WaitFor([&] { return writer.transactions() >= 1500; }, std::chrono::seconds(180)));
  // The survivor takes every partition once the group rebalances, and the target catches up.
  ASSERT_TRUE(t.WaitForTarget()) << ReadFile(t.second_delivery_log()) << "\n" << t.ExplainAccounts();
  t.ExpectIdentical();
  // `pgflow verify` with a file naming the capture's source and the delivery's target, as the
  // recipe in docs/guides/kafka-to-postgres.md does.
  TempDir dir;
  const std::string verify_yaml = dir.File("verify.yaml");
  WriteFile(verify_yaml, "pipeline: ks_scale_verify\nsource:\n  postgres:\n    url: " +
                             t.source_url() + "\n    tables: [public.accounts, public.ledger]\n" +
                             "sinks:\n  target:\n    postgres: {url: " + t.target_url() + "}\n");
  std::string out;
  EXPECT_EQ(RunPgflow({"verify", verify_yaml}, &out), 0) << out;
  EXPECT_TRUE(second->Running()) << ReadFile(t.second_delivery_log());
  // Its own share at first, and the killed one's once the group has seen it gone (its session
  // times out after 6 s; the target may be complete before that when the writer is quick).
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::set<std::string> survivor = Holding(ReadFile(t.second_delivery_log()));
        return std::includes(survivor.begin(), survivor.end(), shared.begin(), shared.end());
      },
      std::chrono::seconds(60)))
      << ReadFile(t.second_delivery_log());
  second->Signal(SIGTERM);
  EXPECT_EQ(second->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.second_delivery_log());
  capture->Signal(SIGTERM);
  EXPECT_EQ(capture->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.capture_log());
}

// Retention on a real broker: the group stopped at an offset, the broker then deleted what came
// after it before the group read it; started again, the delivery stops with a data-loss error
// naming the partition and offsets, rather than skip to what is there.
TEST(KafkaSourceTest, WhatRetentionDeletedBeforeTheGroupReadItStopsTheDeliveryAsDataLoss) {
  KafkaBroker kafka;
  // Segments of 100 ms, kept 1 s: what is not read within a few seconds is gone.
  KafkaRoundTrip t("ks_retention", kafka, "", {{"retention.ms", "1000"}, {"segment.ms", "100"}});
  Sql source(t.source_url());
  auto capture = t.StartCapture();
  for (int64_t n = 1; n <= 20; ++n) source.Exec(Workload(n));
  auto delivery = t.StartDelivery();
  ASSERT_TRUE(t.WaitForTarget()) << ReadFile(t.delivery_log());
  delivery->Signal(SIGTERM);
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.delivery_log());
  const int64_t committed = Offsets(kafka, t.group(), t.topic("ledger"), 1).committed[0];
  // Written while no member reads; later writes roll the segments, and retention deletes them.
  for (int64_t n = 21; n <= 40; ++n) source.Exec(Workload(n));
  ASSERT_TRUE(WaitFor(
      [&] {
        source.Exec(Workload(1000 + std::stoll(source.Scalar("SELECT count(*) FROM ledger"))));
        // Paced, not waited on: a write every 200 ms rolls the 100 ms segments.
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        return Offsets(kafka, t.group(), t.topic("ledger"), 1).low[0] > committed;
      },
      std::chrono::seconds(120)))
      << "the broker did not delete the ledger's old segments";
  delivery = std::make_unique<PgflowProcess>(
      std::vector<std::string>{"run", t.delivery_yaml(), "--progress", "1"}, t.delivery_log());
  EXPECT_EQ(delivery->Wait(std::chrono::seconds(120)), 1) << ReadFile(t.delivery_log());
  const std::string log = ReadFile(t.delivery_log());
  EXPECT_THAT(log, HasSubstr("(partition 0, offset " + std::to_string(committed) +
                             "): the next message group ks_retention_group has to read is no "
                             "longer on the topic (retention deleted it first; offsets " +
                             std::to_string(committed) + " to "));
  EXPECT_THAT(log, HasSubstr("the partition now starts at offset "));
  capture->Signal(SIGTERM);
  EXPECT_EQ(capture->Wait(std::chrono::seconds(60)), 0) << ReadFile(t.capture_log());
}

TEST(KafkaSourceTest, ConfigurationIsValidatedWithItsPlaceAndListed) {
  std::string output;
  EXPECT_EQ(
      RunPgflow({"validate", std::string(PGFLOW_SOURCE_DIR) + "/examples/kafka-to-postgres.yaml"},
                &output),
      0)
      << output;
  EXPECT_THAT(output, HasSubstr("source kafka"));
  TempDir dir;
  const std::string yaml = dir.File("p.yaml");
  WriteFile(yaml,
            "pipeline: d\n"
            "source:\n"
            "  kafka:\n"
            "    brokers: 127.0.0.1:9092\n"
            "    topics: [a.b, '^(c']\n"
            "    group: g\n"
            "sinks: {out: {jsonl: {path: \"-\"}}}\n");
  EXPECT_EQ(RunPgflow({"validate", yaml}, &output), 2);
  EXPECT_THAT(output,
              HasSubstr(yaml + ":5:19: source.kafka.topics[1]: invalid regular expression"));
  WriteFile(yaml,
            "pipeline: d\n"
            "source:\n"
            "  kafka: {brokers: 127.0.0.1:9092, topics: [a], group: g,\n"
            "          properties: {enable.auto.commit: \"true\"}}\n"
            "sinks: {out: {jsonl: {path: \"-\"}}}\n");
  EXPECT_EQ(RunPgflow({"validate", yaml}, &output), 2);
  EXPECT_THAT(output, HasSubstr(yaml + ":4:24: source.kafka.properties: 'enable.auto.commit' is "
                                       "set by pgflow"));
  WriteFile(yaml,
            "pipeline: d\n"
            "source:\n"
            "  kafka: {brokers: 127.0.0.1:9092, topics: [a], group: g, truncate: never}\n"
            "sinks: {out: {jsonl: {path: \"-\"}}}\n");
  EXPECT_EQ(RunPgflow({"validate", yaml}, &output), 2);
  EXPECT_THAT(output, HasSubstr(yaml + ":3:69: source.kafka.truncate: unknown truncate mode"));
  // A rebalance waits inside the poll: longer than max.poll.interval.ms would cost the group.
  WriteFile(yaml,
            "pipeline: d\n"
            "source:\n"
            "  kafka: {brokers: 127.0.0.1:9092, topics: [a], group: g, rebalance_timeout: 10m}\n"
            "sinks: {out: {jsonl: {path: \"-\"}}}\n");
  EXPECT_EQ(RunPgflow({"validate", yaml}, &output), 2);
  EXPECT_THAT(output, HasSubstr(yaml + ":3:78: source.kafka.rebalance_timeout: rebalance_timeout "
                                       "(600000ms) must be below the consumer's "
                                       "max.poll.interval.ms (300000ms)"));
  WriteFile(yaml,
            "pipeline: d\n"
            "source:\n"
            "  kafka: {brokers: 127.0.0.1:9092, topics: [a], group: g, rebalance_timeout: 10m,\n"
            "          properties: {max.poll.interval.ms: \"900000\"}}\n"
            "sinks: {out: {jsonl: {path: \"-\"}}}\n");
  EXPECT_EQ(RunPgflow({"validate", yaml}, &output), 0) << output;
  // The kv sink copies its rows from, and writes through to, a PostgreSQL source.
  WriteFile(yaml,
            "pipeline: d\n"
            "source:\n"
            "  kafka: {brokers: 127.0.0.1:9092, topics: [a], group: g}\n"
            "sinks:\n"
            "  cache: {kv: {redis: 127.0.0.1:6380}}\n");
  EXPECT_EQ(RunPgflow({"validate", yaml}, &output), 2);
  EXPECT_THAT(output, HasSubstr(yaml + ":5:11: sinks.cache: the kv sink cannot follow a kafka "
                                       "source"));
  // Unreachable brokers: an error naming them and their place in the file.
  WriteFile(yaml,
            "pipeline: d\n"
            "source:\n"
            "  kafka: {brokers: \"127.0.0.1:1\", topics: [a], group: g, connect_timeout: 1s}\n"
            "sinks: {out: {jsonl: {path: \"-\"}}}\n");
  EXPECT_EQ(RunPgflow({"run", yaml}, &output), 1);
  EXPECT_THAT(output, HasSubstr("no Kafka broker of 127.0.0.1:1 (source.kafka.brokers, at " + yaml +
                                ":3:20)"));
  // Commands that work on a PostgreSQL source say so.
  EXPECT_EQ(RunPgflow({"init", yaml}, &output), 2);
  EXPECT_THAT(output, HasSubstr("reads from a kafka source: `pgflow init` works on a postgres"));
  EXPECT_EQ(RunPgflow({"options"}, &output), 0);
  EXPECT_THAT(output, HasSubstr("source.kafka\n"));
  EXPECT_THAT(output, HasSubstr("rebalance_timeout"));
  EXPECT_EQ(RunPgflow({"run", "--help"}, &output), 0);
  EXPECT_THAT(output, HasSubstr("kafka source"));
}

}  // namespace
}  // namespace pgflow::testing
