// End to end through Kafka: a real PostgreSQL, the real pgflow binary, a real Apache Kafka
// broker (KRaft, scripts/kafkatmp.sh) and kcat as an independent consumer. Each test checks
// what a user would: the topics the sink created, the messages on them (key, partition order,
// envelope, headers) and the position acknowledged to the slot.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/support/kafka_broker.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

// One consumed message, as kcat -J reports it.
struct Message {
  int partition = 0;
  int64_t offset = 0;
  std::string key;  // "" for a null key
  bool null_value = false;
  json value;  // parsed payload (null for a tombstone)
  std::map<std::string, std::string> headers;
};

// Every message of `topic`, read from the beginning by kcat, in partition then offset order.
std::vector<Message> Consume(const std::string& bootstrap, const std::string& topic) {
  std::string command =
      "kcat -q -b '" + bootstrap + "' -C -t '" + topic + "' -o beginning -e -J -Z 2>&1";
  FILE* p = popen(command.c_str(), "r");
  std::vector<Message> messages;
  std::string line;
  char buf[65536];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) {
    line += buf;
    if (line.empty() || line.back() != '\n') continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      ADD_FAILURE() << "kcat: " << line;
      line.clear();
      continue;
    }
    line.clear();
    Message m;
    m.partition = j["partition"].get<int>();
    m.offset = j["offset"].get<int64_t>();
    if (j["key"].is_string()) m.key = j["key"].get<std::string>();
    m.null_value = !j["payload"].is_string();
    if (!m.null_value) m.value = json::parse(j["payload"].get<std::string>());
    if (j.contains("headers") && j["headers"].is_array()) {
      const json& h = j["headers"];
      for (size_t i = 0; i + 1 < h.size(); i += 2) {
        m.headers[h[i].get<std::string>()] = h[i + 1].get<std::string>();
      }
    }
    messages.push_back(std::move(m));
  }
  int status = pclose(p);
  EXPECT_EQ(status, 0) << "kcat failed on " << topic;
  std::sort(messages.begin(), messages.end(), [](const Message& a, const Message& b) {
    return std::tie(a.partition, a.offset) < std::tie(b.partition, b.offset);
  });
  return messages;
}

// A pipeline in its own database whose sink is the broker.
class KafkaPipeline {
 public:
  KafkaPipeline(const std::string& name, KafkaCluster& kafka, const std::string& sink_extra = "",
                const std::string& snapshot = "never")
      : name_(name), kafka_(kafka) {
    Sql admin(SharedCluster().Url());
    admin.Exec("CREATE DATABASE " + name);
    yaml_ = dir_.File("pipeline.yaml");
    WriteFile(yaml_, "pipeline: " + name +
                         "\n"
                         "source:\n"
                         "  postgres:\n"
                         "    url: ${SOURCE_URL}\n"
                         "    tables: [public.items]\n"
                         "    snapshot: {mode: " +
                         snapshot +
                         "}\n"
                         "    status_interval: 200ms\n"
                         "sinks:\n"
                         "  events:\n"
                         "    kafka: {brokers: \"" +
                         kafka.bootstrap() + "\"" + sink_extra +
                         "}\n"
                         "    flush_interval: 50ms\n");
  }
  std::string url() const { return SharedCluster().Url(name_); }
  std::string yaml() const { return yaml_; }
  std::string log() const { return dir_.File("pgflow.log"); }
  std::string topic() const { return name_ + ".public.items"; }

  std::unique_ptr<PgflowProcess> Start(const std::string& wait_for = "streaming from") {
    return StartPgflowUntilLogged({"run", yaml_, "--progress", "1"}, log(), {{"SOURCE_URL", url()}},
                                  wait_for);
  }
  std::string Confirmed() {
    Sql sql(url());
    return sql.Scalar(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = "
        "'pgflow_" +
        name_ + "'");
  }
  // Waits until the slot is acknowledged at or past `lsn`.
  bool WaitConfirmed(const std::string& lsn,
                     std::chrono::seconds timeout = std::chrono::seconds(60)) {
    Sql sql(url());
    return WaitFor(
        [&] {
          return sql.Scalar("SELECT coalesce(confirmed_flush_lsn >= '" + lsn +
                            "', false) FROM pg_replication_slots WHERE slot_name = 'pgflow_" +
                            name_ + "'") == "t";
        },
        timeout);
  }

 private:
  std::string name_;
  KafkaCluster& kafka_;
  TempDir dir_;
  std::string yaml_;
};

// The event id header's commit LSN as a number, from "X/X:seq".
uint64_t EventLsn(const std::string& id) {
  size_t slash = id.find('/');
  size_t colon = id.find(':');
  return (std::stoull(id.substr(0, slash), nullptr, 16) << 32) |
         std::stoull(id.substr(slash + 1, colon - slash - 1), nullptr, 16);
}

uint64_t ParseLsn(const std::string& text) { return EventLsn(text + ":0"); }

// Replays the row events of `messages` (in partition/offset order; keys never span
// partitions) into id -> row, checking per key that events come in commit order and that
// every message carries its key, headers and envelope. Duplicates (same event id) are
// counted in *duplicates and must be identical but for ts_ms.
std::map<int64_t, json> Replay(const std::vector<Message>& messages, int* duplicates,
                               std::set<std::string>* event_ids, uint64_t* min_duplicate_lsn) {
  std::map<int64_t, json> rows;
  std::map<std::string, int> partition_of_key;
  std::map<std::string, std::pair<uint64_t, uint64_t>> last_of_key;  // (lsn, seq)
  std::map<std::string, json> seen;
  *duplicates = 0;
  *min_duplicate_lsn = UINT64_MAX;
  for (const Message& m : messages) {
    EXPECT_FALSE(m.key.empty());
    auto [it, fresh] = partition_of_key.emplace(m.key, m.partition);
    EXPECT_EQ(it->second, m.partition) << "key " << m.key << " in two partitions";
    if (m.null_value) continue;  // a tombstone: checked by the caller
    const json& v = m.value;
    const std::string& id = m.headers.at("pgflow.event_id");
    EXPECT_EQ(m.headers.at("pgflow.lsn"), id.substr(0, id.find(':')));
    EXPECT_EQ(v["source"]["lsn"].get<uint64_t>(), EventLsn(id));
    EXPECT_EQ(v["source"]["seq"].get<uint64_t>(), std::stoull(id.substr(id.find(':') + 1)));
    EXPECT_EQ(v["source"]["table"], "items");
    EXPECT_EQ(v["source"]["schema"], "public");
    json comparable = v;
    comparable.erase("ts_ms");
    auto [s, first] = seen.emplace(id, comparable);
    if (!first) {
      ++*duplicates;
      *min_duplicate_lsn = std::min(*min_duplicate_lsn, EventLsn(id));
      EXPECT_EQ(s->second, comparable) << "event " << id << " produced twice, differently";
    }
    event_ids->insert(id);
    std::pair<uint64_t, uint64_t> order{EventLsn(id), v["source"]["seq"].get<uint64_t>()};
    auto last = last_of_key.find(m.key);
    if (last != last_of_key.end() && !(order > last->second)) {
      // Only a replay after a restart may go back, and then to an event already produced.
      EXPECT_FALSE(first) << "key " << m.key << " out of commit order at " << id;
    }
    last_of_key[m.key] = order;
    const std::string op = v["op"];
    json key = json::parse(m.key);
    int64_t row_id = key["id"].get<int64_t>();
    if (op == "c" || op == "u" || op == "r") {
      EXPECT_EQ(v["after"]["id"].get<int64_t>(), row_id);
      rows[row_id] = v["after"];
    } else if (op == "d") {
      EXPECT_EQ(v["before"]["id"].get<int64_t>(), row_id);
      EXPECT_TRUE(v["after"].is_null());
      rows.erase(row_id);
    } else {
      ADD_FAILURE() << "unexpected op " << op;
    }
  }
  return rows;
}

// The table as the consumer should have rebuilt it: id -> {"id","qty","note"}.
std::map<int64_t, json> TableRows(Sql& sql) {
  std::map<int64_t, json> rows;
  for (const auto& r : sql.Query("SELECT id, qty, note FROM items")) {
    json row = {{"id", std::stoll(r[0])},
                {"qty", std::stoll(r[1])},
                {"note", r[2] == "<NULL>" ? json(nullptr) : json(r[2])}};
    rows[std::stoll(r[0])] = row;
  }
  return rows;
}

constexpr char kSchema[] =
    "CREATE TABLE items (id bigint PRIMARY KEY, qty bigint NOT NULL, note text)";

// Transaction n: inserts row n, updates row n/2 (qty = n), and every 7th deletes row n-3.
std::string Workload(int64_t n) {
  std::string id = std::to_string(n);
  std::string sql = "BEGIN; INSERT INTO items VALUES (" + id + ", 0, 'row " + id + "');" +
                    "UPDATE items SET qty = " + id + " WHERE id = " + std::to_string(n / 2) + ";";
  if (n % 7 == 0) sql += "DELETE FROM items WHERE id = " + std::to_string(n - 3) + ";";
  return sql + "COMMIT;";
}

// How many of Workload(1..n)'s updates find their row.
int ExpectedUpdates(int64_t n) {
  std::set<int64_t> live;
  int updates = 0;
  for (int64_t i = 1; i <= n; ++i) {
    live.insert(i);
    updates += live.count(i / 2);
    if (i % 7 == 0) live.erase(i - 3);
  }
  return updates;
}

TEST(KafkaSinkTest, SnapshotAndChangesArriveKeyedInOrderWithTheEnvelope) {
  KafkaBroker kafka;
  // The sink creates the topic: 3 partitions, compacted (a keyed topic keeps each row's last).
  KafkaPipeline p("kafka_e2e", kafka, ", tombstones: true, topic_config: {cleanup.policy: compact}",
                  "initial");
  Sql sql(p.url());
  sql.Exec(kSchema);
  sql.Exec("INSERT INTO items SELECT g, g * 10, 'seed ' || g FROM generate_series(1000, 1199) g");
  auto pgflow = p.Start();
  for (int64_t n = 1; n <= 300; ++n) sql.Exec(Workload(n));
  sql.Exec("UPDATE items SET note = NULL WHERE id = 1000");
  // A key change: a delete (and tombstone) under the old key, a create under the new one.
  sql.Exec("UPDATE items SET id = 5000 WHERE id = 1001");
  std::string end = sql.Scalar("SELECT pg_current_wal_lsn()");
  ASSERT_TRUE(p.WaitConfirmed(end)) << ReadFile(p.log());

  std::vector<Message> messages = Consume(kafka.bootstrap(), p.topic());
  int duplicates = 0;
  uint64_t min_dup = 0;
  std::set<std::string> ids;
  std::map<int64_t, json> rows = Replay(messages, &duplicates, &ids, &min_dup);
  EXPECT_EQ(duplicates, 0);
  EXPECT_EQ(rows, TableRows(sql));

  // Counts by op: 200 snapshot reads, 300 inserts, the updates that found a row, 42 deletes
  // each followed by a tombstone with its key.
  std::map<std::string, int> ops;
  std::set<int> partitions;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    partitions.insert(m.partition);
    if (m.null_value) {
      ++ops["tombstone"];
      ASSERT_GT(i, 0u);
      EXPECT_EQ(messages[i - 1].value["op"], "d");
      EXPECT_EQ(messages[i - 1].key, m.key);
      continue;
    }
    ++ops[m.value["op"].get<std::string>()];
    const json& source = m.value["source"];
    EXPECT_EQ(source["connector"], "pgflow");
    EXPECT_EQ(source["name"], "kafka_e2e");
    EXPECT_TRUE(m.value["ts_ms"].is_number());
    EXPECT_TRUE(source["ts_ms"].is_number());
    EXPECT_EQ(source["snapshot"], m.value["op"] == "r" ? "true" : "false");
    if (m.value["op"] != "r") {
      EXPECT_GT(source["txId"].get<int64_t>(), 0);
    }
  }
  EXPECT_EQ(ops["r"], 200);
  EXPECT_EQ(ops["c"], 300 + 1);
  EXPECT_EQ(ops["d"], 42 + 1);
  EXPECT_EQ(ops["tombstone"], 42 + 1);
  bool old_key_deleted = false;
  for (const Message& m : messages) {
    if (m.null_value || m.key != R"({"id":1001})" || m.value["op"] != "d") continue;
    old_key_deleted = true;
    EXPECT_THAT(m.headers.at("pgflow.event_id"), ::testing::EndsWith(":old-key"));
  }
  EXPECT_TRUE(old_key_deleted);
  EXPECT_EQ(ops["u"], ExpectedUpdates(300) + 1);
  EXPECT_EQ(partitions.size(), 3u);
  EXPECT_EQ(TopicConfig(kafka.bootstrap(), p.topic(), "cleanup.policy"), "compact");
  // The schema changes' topic is not compacted: every DDL event is kept.
  EXPECT_NE(TopicConfig(kafka.bootstrap(), "kafka_e2e.schema_changes", "cleanup.policy"),
            "compact");

  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(p.log());
}

TEST(KafkaSinkTest, ARouteTransformChoosesTheTopicPerChange) {
  KafkaBroker kafka;
  KafkaPipeline p("kafka_routed", kafka, "", "initial");
  // The sink's own transforms: each row to the topic of its note; deletes by their old row.
  std::string yaml = ReadFile(p.yaml());
  yaml += "    transforms:\n      - route: {table: public.items, to: 'routed.{note}'}\n";
  WriteFile(p.yaml(), yaml);
  // The sink creates routed.red and routed.blue when their first change comes.
  Sql sql(p.url());
  sql.Exec(kSchema);
  sql.Exec("ALTER TABLE items REPLICA IDENTITY FULL");
  sql.Exec("INSERT INTO items VALUES (1, 1, 'red'), (2, 2, 'blue')");
  auto pgflow = p.Start();
  sql.Exec("INSERT INTO items VALUES (3, 3, 'red')");
  sql.Exec("UPDATE items SET qty = 20 WHERE id = 2");
  sql.Exec("DELETE FROM items WHERE id = 1");
  std::string end = sql.Scalar("SELECT pg_current_wal_lsn()");
  ASSERT_TRUE(p.WaitConfirmed(end)) << ReadFile(p.log());
  auto ids = [&](const std::string& topic) {
    std::vector<std::string> out;
    for (const Message& m : Consume(kafka.bootstrap(), topic)) {
      if (m.null_value) continue;
      out.push_back(m.value["op"].get<std::string>() + m.key);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(ids("routed.red"),
            (std::vector<std::string>{"c{\"id\":3}", "d{\"id\":1}", "r{\"id\":1}"}));
  EXPECT_EQ(ids("routed.blue"), (std::vector<std::string>{"r{\"id\":2}", "u{\"id\":2}"}));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(p.log());
}

TEST(KafkaSinkTest, KillNineThenRestartLosesNothingAndDuplicatesOnlyAfterTheAcknowledgement) {
  KafkaBroker kafka;
  KafkaPipeline p("kafka_kill", kafka, ", format: debezium");
  Sql sql(p.url());
  sql.Exec(kSchema);
  auto pgflow = p.Start();
  {
    BackgroundWriter writer(p.url(), [](int64_t n, std::mt19937_64&) { return Workload(n + 1); });
    ASSERT_TRUE(WaitFor([&] { return writer.transactions() > 400; }, std::chrono::seconds(60)));
    kill(pgflow->pid(), SIGKILL);
    pgflow->Wait(std::chrono::seconds(10));
    ASSERT_TRUE(WaitFor([&] { return writer.transactions() > 800; }, std::chrono::seconds(60)));
    writer.Stop();
  }
  std::string acknowledged = p.Confirmed();
  pgflow = p.Start();
  std::string end = sql.Scalar("SELECT pg_current_wal_lsn()");
  ASSERT_TRUE(p.WaitConfirmed(end)) << ReadFile(p.log());

  std::vector<Message> messages = Consume(kafka.bootstrap(), p.topic());
  int duplicates = 0;
  uint64_t min_dup = UINT64_MAX;
  std::set<std::string> ids;
  std::map<int64_t, json> rows = Replay(messages, &duplicates, &ids, &min_dup);
  // At-least-once: the consumer's rebuilt table is the table; every insert is there.
  EXPECT_EQ(rows, TableRows(sql));
  int64_t committed = std::stoll(sql.Scalar("SELECT max(id) FROM items"));
  std::set<int64_t> inserted;
  for (const Message& m : messages) {
    if (!m.null_value && m.value["op"] == "c")
      inserted.insert(m.value["after"]["id"].get<int64_t>());
  }
  EXPECT_EQ(static_cast<int64_t>(inserted.size()), committed);
  // Duplicates, if any, are of transactions after what was acknowledged when pgflow died.
  if (duplicates > 0) {
    EXPECT_GE(min_dup, ParseLsn(acknowledged));
  }
  std::printf("kill -9: %zu messages, %d duplicates (acknowledged %s at the kill)\n",
              messages.size(), duplicates, acknowledged.c_str());

  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(p.log());
}

TEST(KafkaSinkTest, BrokerOutageLosesNothingKeepsKeyOrderAndHoldsTheAcknowledgement) {
  KafkaBroker kafka;
  // A small producer queue: the outage fills it, and pgflow must back off, not grow or drop.
  KafkaPipeline p("kafka_outage", kafka, ", format: debezium, queue_messages: 50");
  Sql sql(p.url());
  sql.Exec(kSchema);
  auto pgflow = p.Start();
  for (int64_t n = 1; n <= 100; ++n) sql.Exec(Workload(n));
  ASSERT_TRUE(p.WaitConfirmed(sql.Scalar("SELECT pg_current_wal_lsn()"))) << ReadFile(p.log());

  kafka.Kill();  // kill -9 of the broker, mid-stream
  for (int64_t n = 101; n <= 300; ++n) sql.Exec(Workload(n));
  std::string during = sql.Scalar("SELECT pg_current_wal_lsn()");
  // Nothing written during the outage may be acknowledged while the brokers are down. (A fixed
  // wait: that nothing is acknowledged over it is what is tested.)
  std::this_thread::sleep_for(std::chrono::seconds(3));
  Sql check(p.url());
  EXPECT_EQ(check.Scalar("SELECT confirmed_flush_lsn < '" + during +
                         "' FROM pg_replication_slots WHERE slot_name = 'pgflow_kafka_outage'"),
            "t");
  EXPECT_TRUE(pgflow->Running());
  kafka.Resume();
  for (int64_t n = 301; n <= 400; ++n) sql.Exec(Workload(n));
  ASSERT_TRUE(p.WaitConfirmed(sql.Scalar("SELECT pg_current_wal_lsn()"), std::chrono::seconds(120)))
      << ReadFile(p.log());

  std::vector<Message> messages = Consume(kafka.bootstrap(), p.topic());
  int duplicates = 0;
  uint64_t min_dup = 0;
  std::set<std::string> ids;
  std::map<int64_t, json> rows = Replay(messages, &duplicates, &ids, &min_dup);
  EXPECT_EQ(rows, TableRows(sql));
  EXPECT_EQ(duplicates, 0);  // the idempotent producer retried without doubling anything
  std::set<int64_t> inserted;
  for (const Message& m : messages) {
    if (!m.null_value && m.value["op"] == "c")
      inserted.insert(m.value["after"]["id"].get<int64_t>());
  }
  EXPECT_EQ(inserted.size(), 400u);
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(p.log());
}

TEST(KafkaSinkTest, ClearErrorsForAMissingTopicAndUnreachableBrokers) {
  KafkaBroker kafka;
  {
    KafkaPipeline p("kafka_notopic", kafka, ", create_topics: false");
    Sql sql(p.url());
    sql.Exec(kSchema);
    auto pgflow = p.Start();
    sql.Exec(Workload(1));
    EXPECT_NE(pgflow->Wait(std::chrono::seconds(60)), 0);
    EXPECT_THAT(ReadFile(p.log()),
                HasSubstr("Kafka topic kafka_notopic.public.items does not exist and "
                          "create_topics is false"));
  }
  {
    // A topic the sink creates gets the partitions and replication factor it is given.
    KafkaPipeline p("kafka_create", kafka, ", partitions: 5, replication_factor: 1");
    Sql sql(p.url());
    sql.Exec(kSchema);
    auto pgflow = p.Start();
    sql.Exec(Workload(1));
    ASSERT_TRUE(p.WaitConfirmed(sql.Scalar("SELECT pg_current_wal_lsn()"))) << ReadFile(p.log());
    EXPECT_EQ(TopicPartitions(kafka.bootstrap(), p.topic()), 5);
    EXPECT_THAT(ReadFile(p.log()), HasSubstr("created topic kafka_create.public.items (5 partitions)"));
    pgflow->Signal(SIGTERM);
    EXPECT_EQ(pgflow->Wait(std::chrono::seconds(60)), 0) << ReadFile(p.log());
  }
  {
    TempDir dir;
    std::string yaml = dir.File("p.yaml");
    const std::string down_url = NewDatabase("kafka_down");
    Sql(down_url).Exec("CREATE TABLE x (id int PRIMARY KEY)");
    WriteFile(yaml,
              "pipeline: kafka_down\n"
              "source: {postgres: {url: \"" +
                  down_url +
                  "\", tables: [public.x]}}\n"
                  "sinks:\n"
                  "  events: {kafka: {brokers: \"127.0.0.1:1\", connect_timeout: 1s}}\n");
    std::string output;
    EXPECT_NE(RunPgflow({"run", yaml}, &output), 0);
    EXPECT_THAT(output, HasSubstr("no Kafka broker of 127.0.0.1:1 (brokers, at " + yaml + ":4:"));
  }
  {
    TempDir dir;
    std::string yaml = dir.File("p.yaml");
    WriteFile(yaml,
              "pipeline: kafka_bad\n"
              "source: {postgres: {url: \"postgres://x@127.0.0.1/x\", tables: [public.x]}}\n"
              "sinks:\n"
              "  events:\n"
              "    kafka:\n"
              "      brokers: 127.0.0.1:9092\n"
              "      properties: {linger.ms: soon}\n");
    std::string output;
    EXPECT_EQ(RunPgflow({"validate", yaml}, &output), 2);
    EXPECT_THAT(output, HasSubstr(yaml + ":7:31: sinks.events.kafka.properties.linger.ms"));
    WriteFile(yaml,
              "pipeline: kafka_bad\n"
              "source: {postgres: {url: \"postgres://x@127.0.0.1/x\", tables: [public.x]}}\n"
              "sinks:\n"
              "  events: {kafka: {brokers: 127.0.0.1:9092, properties: {acks: 1}}}\n");
    EXPECT_EQ(RunPgflow({"validate", yaml}, &output), 2);
    EXPECT_THAT(output, HasSubstr("'acks' is set by pgflow"));
  }
  std::string output;
  EXPECT_EQ(
      RunPgflow({"validate", std::string(PGFLOW_SOURCE_DIR) + "/examples/kafka.yaml"}, &output), 0)
      << output;
  EXPECT_EQ(RunPgflow({"options"}, &output), 0);
  EXPECT_THAT(output, HasSubstr("sinks.<name>.kafka"));
}

}  // namespace
}  // namespace pgflow::testing
