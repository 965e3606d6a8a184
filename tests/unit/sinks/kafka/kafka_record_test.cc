#include "sinks/kafka/kafka_record.h"

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "gtest/gtest.h"
#include "sinks/kafka/kafka_sink.h"
#include "sources/postgres/postgres_source_config.h"

namespace pgflow {
namespace {

using json = nlohmann::json;

TableSchemaPtr Items() {
  auto t = std::make_shared<TableSchema>();
  t->schema = "public";
  t->name = "items";
  t->columns = {{"id", oid::kInt8, -1, true, {}},
                {"name", oid::kText, -1, false, {}},
                {"notes", oid::kText, -1, false, {}}};
  return t;
}

Change Update() {
  Change c;
  c.op = Op::kUpdate;
  c.table = Items();
  c.txn = TxnInfo{745, Lsn(0x1A2B3C8), Lsn(0x1A2B400), 1'795'000'000'123'456};
  c.sequence = 3;
  c.after = {Value::Text(oid::kInt8, "1"), Value::Text(oid::kText, "pen"),
             Value::UnchangedToast(oid::kText)};
  c.before = {Value::Text(oid::kInt8, "7"), Value::Null(oid::kText), Value::Null(oid::kText)};
  c.before_kind = BeforeKind::kKey;
  return c;
}

KafkaRecordOptions Options(KafkaFormat format) {
  KafkaRecordOptions o;
  o.format = format;
  o.pipeline = "shop";
  return o;
}

TEST(KafkaRecordTest, DebeziumEnvelopeOfAnUpdate) {
  std::string value;
  AppendKafkaValue(Update(), Options(KafkaFormat::kDebezium), 1'795'000'000'999, &value);
  json v = json::parse(value);
  EXPECT_EQ(v["op"], "u");
  EXPECT_EQ(v["before"], json::parse(R"({"id": 7})"));  // the old key only
  EXPECT_EQ(v["after"], json::parse(R"({"id": 1, "name": "pen"})"));
  EXPECT_EQ(v["unchanged_toast"], json::parse(R"(["notes"])"));  // never made up
  EXPECT_EQ(v["ts_ms"], 1'795'000'000'999);
  EXPECT_EQ(v["source"], json::parse(R"({"connector": "pgflow", "name": "shop",
      "schema": "public", "table": "items", "lsn": 27440072, "txId": 745,
      "ts_ms": 1795000000123, "snapshot": "false", "seq": 3})"));
}

TEST(KafkaRecordTest, OpLettersAndDeletes) {
  Change c = Update();
  std::string value;
  c.op = Op::kRead;
  c.before_kind = BeforeKind::kNone;
  AppendKafkaValue(c, Options(KafkaFormat::kDebezium), 0, &value);
  EXPECT_EQ(json::parse(value)["op"], "r");
  EXPECT_EQ(json::parse(value)["source"]["snapshot"], "true");
  EXPECT_TRUE(json::parse(value)["before"].is_null());

  c = Update();
  c.op = Op::kDelete;
  value.clear();
  AppendKafkaValue(c, Options(KafkaFormat::kDebezium), 0, &value);
  json v = json::parse(value);
  EXPECT_EQ(v["op"], "d");
  EXPECT_TRUE(v["after"].is_null());
  EXPECT_EQ(v["before"], json::parse(R"({"id": 7})"));

  c.op = Op::kTruncate;
  c.before_kind = BeforeKind::kNone;
  value.clear();
  AppendKafkaValue(c, Options(KafkaFormat::kDebezium), 0, &value);
  EXPECT_EQ(json::parse(value)["op"], "t");
  EXPECT_EQ(std::string(DebeziumOp(Op::kInsert)), "c");
}

TEST(KafkaRecordTest, KeyIsThePrimaryKeyOldForDeletesNoneWithoutKey) {
  Change c = Update();
  std::string key;
  ASSERT_TRUE(AppendKafkaKey(c, {}, &key));
  EXPECT_EQ(key, R"({"id":1})");  // an update keys on the new row
  c.op = Op::kDelete;
  key.clear();
  ASSERT_TRUE(AppendKafkaKey(c, {}, &key));
  EXPECT_EQ(key, R"({"id":7})");
  c.op = Op::kTruncate;
  key.clear();
  EXPECT_FALSE(AppendKafkaKey(c, {}, &key));
  EXPECT_EQ(key, "");
  auto keyless = std::make_shared<TableSchema>(*Items());
  for (Column& col : const_cast<std::vector<Column>&>(keyless->columns)) col.is_key = false;
  c = Update();
  c.table = keyless;
  EXPECT_FALSE(AppendKafkaKey(c, {}, &key));
}

TEST(KafkaRecordTest, UnderReplicaIdentityFullTheKeyIsThePrimaryKeyNotTheRow) {
  // pgoutput marks every column of a FULL table as identity: keyed by the whole row, an
  // update would move the row to another key (a delete and a create in two partitions).
  auto full = std::make_shared<TableSchema>(*Items());
  full->replica_identity = 'f';
  for (Column& col : full->columns) col.is_key = true;
  full->primary_key = {"id"};
  Change c = Update();
  c.table = full;
  c.before = {Value::Text(oid::kInt8, "1"), Value::Text(oid::kText, "old"),
              Value::Text(oid::kText, "n")};
  c.before_kind = BeforeKind::kFull;
  std::string key;
  std::string old_key;
  ASSERT_TRUE(AppendKafkaKey(c, {}, &key));
  ASSERT_TRUE(AppendKafkaOldKey(c, {}, &old_key));
  EXPECT_EQ(key, R"({"id":1})");
  EXPECT_EQ(old_key, key);  // one update, in its row's partition
  // Without a primary key there is no key at all (null: no order to keep by key).
  full->primary_key.clear();
  key.clear();
  EXPECT_FALSE(AppendKafkaKey(c, {}, &key));
  EXPECT_EQ(key, "");
}

TEST(KafkaRecordTest, OldKeyOfAnUpdate) {
  Change c = Update();
  std::string key;
  ASSERT_TRUE(AppendKafkaOldKey(c, {}, &key));
  EXPECT_EQ(key, R"({"id":7})");
  c.before_kind = BeforeKind::kNone;
  key.clear();
  EXPECT_FALSE(AppendKafkaOldKey(c, {}, &key));
  c = Update();
  c.op = Op::kDelete;
  EXPECT_FALSE(AppendKafkaOldKey(c, {}, &key));
  EXPECT_EQ(key, "");
}

TEST(KafkaRecordTest, CompactFormatIsTheJsonlObject) {
  std::string value;
  AppendKafkaValue(Update(), Options(KafkaFormat::kCompact), 0, &value);
  json v = json::parse(value);
  EXPECT_EQ(v["op"], "update");
  EXPECT_EQ(v["lsn"], "0/1A2B3C8");
  EXPECT_EQ(v["xid"], 745);
  EXPECT_EQ(v["seq"], 3);
  EXPECT_EQ(v["after"], json::parse(R"({"id": 1, "name": "pen"})"));
  EXPECT_EQ(v["before"], json::parse(R"({"id": 7})"));
  EXPECT_EQ(v["commit_ts"], "2026-11-18T11:06:40.123456Z");
}

TEST(KafkaRecordTest, EventIdAndSchemaChange) {
  std::string id;
  AppendEventId(Update(), &id);
  EXPECT_EQ(id, "0/1A2B3C8:3");
  Change ddl;
  ddl.op = Op::kDdl;
  ddl.content = R"({"command_tag":"ALTER TABLE"})";
  std::string value;
  AppendSchemaChangeValue(ddl, Options(KafkaFormat::kDebezium), 5, &value);
  json v = json::parse(value);
  EXPECT_EQ(v["ddl"]["command_tag"], "ALTER TABLE");
  ddl.content = "not json";
  value.clear();
  AppendSchemaChangeValue(ddl, Options(KafkaFormat::kDebezium), 5, &value);
  EXPECT_EQ(json::parse(value)["ddl"], "not json");
}

TEST(KafkaRecordTest, DebeziumMessageContentIsABase64String) {
  Change message;
  message.op = Op::kMessage;
  message.prefix = "app";
  message.content = std::string("bin\0ary", 7);
  std::string value;
  AppendKafkaValue(message, Options(KafkaFormat::kDebezium), 0, &value);
  json v = json::parse(value);
  EXPECT_EQ(v["op"], "m");
  EXPECT_EQ(v["message"]["prefix"], "app");
  EXPECT_EQ(v["message"]["content"], "YmluAGFyeQ==");
}

TEST(KafkaRecordTest, TopicTemplate) {
  EXPECT_EQ(ExpandTopic("{pipeline}.{schema}.{table}", "shop", "public", "order items"),
            "shop.public.order_items");
  EXPECT_EQ(ExpandTopic("all-changes", "shop", "public", "t"), "all-changes");
  EXPECT_EQ(ExpandTopic("{pipeline}.{nope}", "shop", "s", "t"), "shop._nope_");
}

TEST(KafkaSinkConfigTest, OptionsAndErrorsWithTheirPlace) {
  RegisterPostgresSource();
  RegisterKafkaSink();
  auto parse = [](const std::string& sink) {
    return ParsePipelineConfig(
        "pipeline: shop\n"
        "source: {postgres: {url: \"postgres://u@h/db\", tables: [public.t]}}\n"
        "sinks:\n"
        "  events: " +
            sink + "\n",
        "p.yaml");
  };
  auto ok = parse(
      "{kafka: {brokers: [a:9092, b:9092], topic: \"cdc.{table}\", format: compact, "
      "partitions: 6, replication_factor: 3, tombstones: false, "
      "security: {protocol: sasl_ssl, sasl_mechanism: SCRAM-SHA-512, sasl_username: u, "
      "sasl_password: p}, properties: {compression.type: lz4}}}");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  const auto& o = static_cast<const KafkaSinkOptions&>(*ok->sinks[0].options);
  EXPECT_EQ(o.client.brokers, "a:9092,b:9092");
  EXPECT_EQ(o.topic, "cdc.{table}");
  EXPECT_EQ(o.record.format, KafkaFormat::kCompact);
  EXPECT_EQ(o.partitions, 6);
  EXPECT_EQ(o.replication_factor, 3);
  EXPECT_FALSE(o.tombstones);
  EXPECT_EQ(o.client.brokers_position, "p.yaml:4:29");
  std::vector<std::pair<std::string, std::string>> expected = {{"security.protocol", "sasl_ssl"},
                                                               {"sasl.mechanism", "SCRAM-SHA-512"},
                                                               {"sasl.username", "u"},
                                                               {"sasl.password", "p"},
                                                               {"compression.type", "lz4"}};
  EXPECT_EQ(o.client.properties, expected);

  struct Bad {
    std::string sink;
    std::string message;
  };
  for (const Bad& bad : std::vector<Bad>{
           {"{kafka: {topic: t}}",
            "p.yaml:4:19: sinks.events.kafka: missing required key 'brokers'"},
           {"{kafka: {brokers: h:1, topic: \"{pipeline}.{db}\"}}", "unknown placeholder {db}"},
           {"{kafka: {brokers: h:1, format: avro}}", "unknown format 'avro'"},
           {"{kafka: {brokers: h:1, properties: {acks: \"1\"}}}", "'acks' is set by pgflow"},
           {"{kafka: {brokers: h:1, properties: {no.such.thing: 1}}}",
            "p.yaml:4:62: sinks.events.kafka.properties.no.such.thing: No such configuration "
            "property"},
           {"{kafka: {brokers: h:1, security: {protocol: carrier_pigeon}}}",
            "sinks.events.kafka.security.protocol: Invalid value"},
           {"{kafka: {brokers: h:1, replication_factor: 0}}", "must be -1"},
       }) {
    auto r = parse(bad.sink);
    ASSERT_FALSE(r.ok()) << bad.sink;
    EXPECT_NE(std::string(r.status().message()).find(bad.message), std::string::npos)
        << bad.sink << " -> " << r.status().message();
  }
}

}  // namespace
}  // namespace pgflow
