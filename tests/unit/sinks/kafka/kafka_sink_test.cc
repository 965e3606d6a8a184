// The kafka sink against librdkafka's mock cluster, in process: what lands on which topic,
// and that DurableThrough moves only once Kafka has confirmed delivery.

#include "sinks/kafka/kafka_sink.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <chrono>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"
#include "tests/unit/support/wait_until.h"

namespace pgflow {
namespace {

using json = nlohmann::json;

class MockCluster {
 public:
  MockCluster() {
    char errstr[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
    host_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cluster_ = rd_kafka_mock_cluster_new(host_, 3);
  }
  ~MockCluster() {
    rd_kafka_mock_cluster_destroy(cluster_);
    rd_kafka_destroy(host_);
  }
  std::string bootstrap() const { return rd_kafka_mock_cluster_bootstraps(cluster_); }
  void Topic(const std::string& name, int partitions) {
    ASSERT_EQ(rd_kafka_mock_topic_create(cluster_, name.c_str(), partitions, 1),
              RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  void SetDown(bool down) {
    for (int b = 1; b <= 3; ++b) {
      down ? rd_kafka_mock_broker_set_down(cluster_, b) : rd_kafka_mock_broker_set_up(cluster_, b);
    }
  }

  // Every message of partition 0 of `topic`: (key, value or "<null>"). *schemas, when given,
  // gets each message's `pgflow.schema` header ("" when it has none).
  std::vector<std::pair<std::string, std::string>> Read(
      const std::string& topic, size_t want, std::vector<std::string>* schemas = nullptr) {
    char errstr[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap().c_str(), errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "group.id", "test", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
    rd_kafka_t* consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic.c_str(), 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(consumer, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    std::vector<std::pair<std::string, std::string>> out;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (out.size() < want && std::chrono::steady_clock::now() < deadline) {
      rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer, 100);
      if (m == nullptr) continue;
      if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        std::string key(static_cast<const char*>(m->key), m->key_len);
        std::string value = m->payload == nullptr
                                ? "<null>"
                                : std::string(static_cast<const char*>(m->payload), m->len);
        out.emplace_back(key, value);
        rd_kafka_headers_t* headers = nullptr;
        const void* header = nullptr;
        size_t header_size = 0;
        if (schemas != nullptr) {
          bool found = rd_kafka_message_headers(m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                       rd_kafka_header_get_last(headers, "pgflow.schema", &header, &header_size) ==
                           RD_KAFKA_RESP_ERR_NO_ERROR;
          schemas->push_back(found ? std::string(static_cast<const char*>(header), header_size)
                                   : "");
        }
      }
      rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    return out;
  }

 private:
  rd_kafka_t* host_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
};

TableSchemaPtr Items() {
  auto t = std::make_shared<TableSchema>();
  t->schema = "public";
  t->name = "items";
  t->columns = {{"id", oid::kInt8, -1, true, {}}, {"name", oid::kText, -1, false, {}}};
  return t;
}

std::vector<Event> Transaction(uint64_t lsn, std::vector<Change> changes) {
  TxnInfo txn{9, Lsn(lsn), Lsn(lsn + 8), 1'795'000'000'000'000};
  std::vector<Event> events;
  events.push_back(Event{EventKind::kBegin, txn, {}, {}});
  uint64_t seq = 0;
  for (Change& c : changes) {
    Event e;
    e.change = std::move(c);
    e.change.txn = txn;
    e.change.sequence = seq++;
    events.push_back(std::move(e));
  }
  events.push_back(Event{EventKind::kCommit, txn, {}, {}});
  return events;
}

// Flushes until the sink reports `lsn` durable (true) or 20 s pass or a flush fails (false).
bool WaitDurable(KafkaSink& sink, Lsn lsn) {
  bool flushed = true;
  const bool ended = test_support::WaitUntil(
      [&] {
        flushed = sink.Flush().ok();
        return !flushed || sink.DurableThrough().value_or(Lsn()) >= lsn;
      },
      std::chrono::seconds(20));
  return ended && flushed;
}

TEST(KafkaSinkMockTest, RowsDdlAndMessagesGoToTheirTopicsAndAreDurableOnlyWhenDelivered) {
  MockCluster kafka;
  kafka.Topic("shop.public.items", 1);
  kafka.Topic("shop.schema_changes", 1);
  kafka.Topic("shop.messages", 1);
  auto options = std::make_shared<KafkaSinkOptions>();
  options->client.brokers = kafka.bootstrap();
  options->create_topics = false;
  options->record.format = KafkaFormat::kCompact;
  KafkaSink sink("shop", options);
  ASSERT_TRUE(sink.Open().ok());

  Change insert;
  insert.op = Op::kInsert;
  insert.table = Items();
  insert.after = {Value::Text(oid::kInt8, "1"), Value::Text(oid::kText, "pen")};
  Change ddl;
  ddl.op = Op::kDdl;
  ddl.prefix = "pgflow.ddl";
  ddl.content = R"({"command_tag":"ALTER TABLE","ddl":"ALTER TABLE items ADD c int"})";
  Change message;
  message.op = Op::kMessage;
  message.prefix = "app";
  message.content = "hello";

  // Brokers down: written, flushed, but not durable.
  kafka.SetDown(true);
  for (const Event& e : Transaction(0x1000, {insert, ddl, message}))
    ASSERT_TRUE(sink.Write(e).ok());
  // (A fixed second: that nothing becomes durable over it is what is tested.)
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(sink.Flush().ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_FALSE(sink.DurableThrough().value_or(Lsn()).IsValid());
  kafka.SetDown(false);
  ASSERT_TRUE(WaitDurable(sink, Lsn(0x1008)));

  std::vector<std::string> schemas;
  auto rows = kafka.Read("shop.public.items", 1, &schemas);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].first, R"({"id":1})");
  EXPECT_EQ(json::parse(rows[0].second)["op"], "insert");
  // What a consumer needs to type the values: the table's columns, types and key.
  EXPECT_EQ(schemas, std::vector<std::string>{
                         R"({"relid":0,"schema":"public","table":"items","identity":"d",)"
                         R"("version":1,"columns":[["id",20,-1,1],["name",25,-1,0]]})"});
  schemas.clear();
  auto ddls = kafka.Read("shop.schema_changes", 1, &schemas);
  ASSERT_EQ(ddls.size(), 1u);
  EXPECT_EQ(ddls[0].first, "shop");
  EXPECT_EQ(json::parse(ddls[0].second)["ddl"]["command_tag"], "ALTER TABLE");
  EXPECT_EQ(schemas, std::vector<std::string>{""});
  auto messages = kafka.Read("shop.messages", 1);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(json::parse(messages[0].second)["content"], "hello");
  EXPECT_TRUE(sink.Close().ok());
}

TEST(KafkaSinkMockTest, AMissingTopicIsAnErrorWhenCreationIsOff) {
  MockCluster kafka;
  auto options = std::make_shared<KafkaSinkOptions>();
  options->client.brokers = kafka.bootstrap();
  options->create_topics = false;
  KafkaSink sink("shop", options);
  ASSERT_TRUE(sink.Open().ok());
  Change insert;
  insert.op = Op::kInsert;
  insert.table = Items();
  insert.after = {Value::Text(oid::kInt8, "1"), Value::Text(oid::kText, "pen")};
  std::vector<Event> events = Transaction(0x2000, {insert});
  ASSERT_TRUE(sink.Write(events[0]).ok());
  absl::Status s = sink.Write(events[1]);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(s.message()).find("shop.public.items does not exist"), std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace pgflow
