// The kafka source's decoder against what the kafka sink writes: every change, in both
// formats, comes back as the change it was made from (values in their text form).

#include "sources/kafka/kafka_message.h"

#include <string>

#include <gtest/gtest.h>

#include "schemas/table_schema_json.h"
#include "sinks/kafka/kafka_record.h"

namespace pgflow {
namespace {

TableSchemaPtr Items(char identity = 'd') {
  auto t = std::make_shared<TableSchema>();
  t->relation_id = 16400;
  t->schema = "public";
  t->name = "items";
  t->replica_identity = identity;
  t->columns = {{"id", oid::kInt8, -1, true, ""},
                {"name", oid::kText, -1, identity == 'f', ""},
                {"price", oid::kNumeric, 655366, identity == 'f', ""},
                {"tags", 1009, -1, identity == 'f', ""},
                {"doc", oid::kJsonb, -1, identity == 'f', ""},
                {"blob", oid::kBytea, -1, identity == 'f', ""},
                {"at", oid::kTimestamptz, -1, identity == 'f', ""},
                {"ok", oid::kBool, -1, identity == 'f', ""},
                {"mood", 16390, -1, identity == 'f', "public.mood"}};
  return t;
}

Row FullRow(const std::string& id) {
  return {Value::Text(oid::kInt8, id),
          Value::Text(oid::kText, "a \"pen\", blue\n"),
          Value::Text(oid::kNumeric, "12.50"),
          Value::Text(1009, R"({red,"dark blue",NULL})"),
          Value::Text(oid::kJsonb, R"({"w": 1.50, "h": [1, 2]})"),
          Value::Text(oid::kBytea, "\\x00ff10"),
          Value::Text(oid::kTimestamptz, "2024-01-02 03:04:05.25+00"),
          Value::Text(oid::kBool, "t"),
          Value::Null(16390)};
}

Change Base(Op op, TableSchemaPtr table) {
  Change c;
  c.op = op;
  c.table = std::move(table);
  c.txn.xid = 745;
  c.txn.commit_lsn = Lsn(0x16B3748);
  c.txn.end_lsn = Lsn(0x16B3780);
  c.txn.commit_time_us = 1'795'000'000'123'456;
  c.lsn = c.txn.commit_lsn;
  c.sequence = 3;
  return c;
}

struct Encoded {
  std::string value;
  std::string header;
};

Encoded Encode(const Change& change, KafkaFormat format) {
  KafkaRecordOptions options;
  options.format = format;
  options.pipeline = "shop";
  Encoded e;
  if (change.op == Op::kDdl) {
    AppendSchemaChangeValue(change, options, 1, &e.value);
  } else {
    AppendKafkaValue(change, options, 1, &e.value);
  }
  if (change.table != nullptr) AppendTableSchemaJson(*change.table, &e.header);
  return e;
}

DecodedMessage RoundTrip(const Change& change, KafkaFormat format) {
  Encoded e = Encode(change, format);
  KafkaMessageDecoder decoder;
  absl::StatusOr<std::optional<DecodedMessage>> d = decoder.Decode(
      e.value, e.header.empty() ? std::nullopt : std::optional<std::string_view>(e.header));
  EXPECT_TRUE(d.ok()) << d.status() << "\n" << e.value;
  if (!d.ok() || !d->has_value()) return {};
  return **d;
}

void ExpectSameChange(const Change& got, const Change& want, KafkaFormat format) {
  EXPECT_EQ(got.op, want.op);
  ASSERT_EQ(got.table != nullptr, want.table != nullptr);
  if (want.table != nullptr) {
    EXPECT_TRUE(got.table->SameShape(*want.table));
  }
  EXPECT_EQ(got.after, want.after);
  EXPECT_EQ(got.before_kind, want.before_kind);
  EXPECT_EQ(got.before, want.before);
  EXPECT_EQ(got.txn.commit_lsn, want.txn.commit_lsn);
  EXPECT_EQ(got.txn.xid, want.txn.xid);
  // Debezium's source.ts_ms has milliseconds.
  EXPECT_EQ(got.txn.commit_time_us, format == KafkaFormat::kDebezium
                                        ? want.txn.commit_time_us / 1000 * 1000
                                        : want.txn.commit_time_us);
  EXPECT_EQ(got.sequence, want.sequence);
}

class KafkaMessageTest : public ::testing::TestWithParam<KafkaFormat> {};

TEST_P(KafkaMessageTest, RowChangesComeBackAsTheyWere) {
  Change insert = Base(Op::kInsert, Items());
  insert.after = FullRow("42");
  ExpectSameChange(RoundTrip(insert, GetParam()).change, insert, GetParam());

  Change read = Base(Op::kRead, Items());
  read.after = FullRow("7");
  ExpectSameChange(RoundTrip(read, GetParam()).change, read, GetParam());

  // An update that left a TOASTed column alone: unchanged, never made up.
  Change update = Base(Op::kUpdate, Items());
  update.after = FullRow("42");
  update.after[4] = Value::UnchangedToast(oid::kJsonb);
  ExpectSameChange(RoundTrip(update, GetParam()).change, update, GetParam());

  // A delete carries the old key; the other columns are null.
  Change del = Base(Op::kDelete, Items());
  del.before_kind = BeforeKind::kKey;
  del.before = FullRow("42");
  for (size_t i = 1; i < del.before.size(); ++i) {
    del.before[i] = Value::Null(del.before[i].type_oid);
  }
  ExpectSameChange(RoundTrip(del, GetParam()).change, del, GetParam());

  // REPLICA IDENTITY FULL: the whole old row.
  Change full = Base(Op::kUpdate, Items('f'));
  full.after = FullRow("42");
  full.before_kind = BeforeKind::kFull;
  full.before = FullRow("42");
  full.before[1] = Value::Text(oid::kText, "old name");
  ExpectSameChange(RoundTrip(full, GetParam()).change, full, GetParam());
}

TEST_P(KafkaMessageTest, JsonNullAndSqlNullStayApart) {
  // Index 4 is the jsonb column `doc`.
  Change insert = Base(Op::kInsert, Items());
  insert.after = FullRow("42");
  insert.after[4] = Value::Text(oid::kJsonb, "null");
  ExpectSameChange(RoundTrip(insert, GetParam()).change, insert, GetParam());
  insert.after[4] = Value::Null(oid::kJsonb);
  ExpectSameChange(RoundTrip(insert, GetParam()).change, insert, GetParam());
  // A snapshot row in jsonb's send format (version byte 1) comes back as its text.
  Change read = Base(Op::kRead, Items());
  read.after = FullRow("7");
  read.after[4] = Value{ValueKind::kBinary, oid::kJsonb, std::string("\x01null", 5)};
  DecodedMessage d = RoundTrip(read, GetParam());
  ASSERT_EQ(d.change.after.size(), read.after.size());
  EXPECT_EQ(d.change.after[4], Value::Text(oid::kJsonb, "null"));

  // A json_null list that does not fit the row is refused.
  Encoded e = Encode(insert, GetParam());
  const std::string bad = e.value.substr(0, e.value.size() - 1) + R"(,"json_null":["name"]})";
  KafkaMessageDecoder decoder;
  absl::StatusOr<std::optional<DecodedMessage>> refused = decoder.Decode(bad, e.header);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("json_null names column \"name\""), std::string::npos)
      << refused.status();
}

TEST_P(KafkaMessageTest, AFullTableWithAPrimaryKeyComesBackKeyedByIt) {
  auto full = std::make_shared<TableSchema>(*Items('f'));
  full->primary_key = {"id"};
  Change update = Base(Op::kUpdate, full);
  update.after = FullRow("42");
  update.before_kind = BeforeKind::kFull;
  update.before = FullRow("42");
  update.before[1] = Value::UnchangedToast(oid::kText);  // not logged: unknown, not NULL
  update.after[1] = Value::UnchangedToast(oid::kText);
  DecodedMessage d = RoundTrip(update, GetParam());
  ASSERT_NE(d.change.table, nullptr);
  // As under DEFAULT: sinks upsert and delete it by its key.
  EXPECT_EQ(d.change.table->replica_identity, 'd');
  EXPECT_EQ(d.change.table->RowKeyColumns(), std::vector<size_t>{0});
  EXPECT_EQ(d.change.before_kind, BeforeKind::kFull);
  EXPECT_EQ(d.change.before, update.before);
  EXPECT_EQ(d.change.after, update.after);
  // Without a primary key it stays FULL, keyless.
  Change keyless = Base(Op::kInsert, Items('f'));
  keyless.after = FullRow("1");
  d = RoundTrip(keyless, GetParam());
  ASSERT_NE(d.change.table, nullptr);
  EXPECT_EQ(d.change.table->replica_identity, 'f');
  EXPECT_TRUE(d.change.table->RowKeyColumns().empty());
}

TEST_P(KafkaMessageTest, BinarySnapshotValuesComeBackAsText) {
  Change read = Base(Op::kRead, Items());
  read.after = FullRow("1");
  read.after[0] = Value{ValueKind::kBinary, oid::kInt8, std::string("\0\0\0\0\0\0\0\x2a", 8)};
  read.after[5] = Value{ValueKind::kBinary, oid::kBytea, "foo"};
  Change got = RoundTrip(read, GetParam()).change;
  EXPECT_EQ(got.after[0], Value::Text(oid::kInt8, "42"));
  EXPECT_EQ(got.after[5], Value::Text(oid::kBytea, "\\x666f6f"));
}

TEST_P(KafkaMessageTest, TruncatesMessagesAndDdl) {
  Change truncate = Base(Op::kTruncate, Items());
  truncate.truncate_cascade = true;
  Change got = RoundTrip(truncate, GetParam()).change;
  EXPECT_EQ(got.op, Op::kTruncate);
  EXPECT_TRUE(got.truncate_cascade);
  EXPECT_FALSE(got.truncate_restart_identity);
  EXPECT_EQ(got.table->QualifiedName(), "public.items");

  Change message = Base(Op::kMessage, nullptr);
  message.prefix = "app";
  message.content = std::string("bin\0ary", 7);
  message.transactional = false;
  got = RoundTrip(message, GetParam()).change;
  EXPECT_EQ(got.op, Op::kMessage);
  EXPECT_EQ(got.prefix, "app");
  EXPECT_EQ(got.content, message.content);
  EXPECT_FALSE(got.transactional);

  Change ddl = Base(Op::kDdl, nullptr);
  ddl.prefix = "pgflow.ddl";
  ddl.content = R"({"tag":"CREATE INDEX","object_type":"index","identity":"public.items_name",)"
                R"("schema":"public","name":"items_name","statement":"CREATE INDEX ..."})";
  got = RoundTrip(ddl, GetParam()).change;
  EXPECT_EQ(got.op, Op::kDdl);
  ASSERT_NE(got.ddl, nullptr);
  EXPECT_EQ(got.ddl->tag, "CREATE INDEX");
  EXPECT_EQ(got.ddl->name, "items_name");
  EXPECT_EQ(got.content, ddl.content);
  EXPECT_EQ(got.txn.commit_lsn, ddl.txn.commit_lsn);
}

TEST_P(KafkaMessageTest, ARowMovedToANewKeyWithoutItsToastedValuesIsAnUpdate) {
  // What the sink publishes for an update of the key: the create under the new key.
  Change moved = Base(Op::kInsert, Items());
  moved.after = FullRow("43");
  moved.after[4] = Value::UnchangedToast(oid::kJsonb);
  DecodedMessage d = RoundTrip(moved, GetParam());
  EXPECT_EQ(d.change.op, Op::kUpdate);
  EXPECT_EQ(d.change.before_kind, BeforeKind::kNone);
  EXPECT_TRUE(d.change.after[4].is_unchanged_toast());
  EXPECT_NE(d.warning.find("without the values of doc"), std::string::npos) << d.warning;
}

INSTANTIATE_TEST_SUITE_P(Formats, KafkaMessageTest,
                         ::testing::Values(KafkaFormat::kDebezium, KafkaFormat::kCompact));

std::string ErrorOf(std::string_view value, std::optional<std::string_view> header) {
  KafkaMessageDecoder decoder;
  absl::StatusOr<std::optional<DecodedMessage>> d = decoder.Decode(value, header);
  return d.ok() ? "ok" : std::string(d.status().message());
}

TEST(KafkaMessageErrorsTest, WhatIsNotAPgflowEventIsRefusedWithTheReason) {
  KafkaMessageDecoder decoder;
  // A tombstone: nothing.
  absl::StatusOr<std::optional<DecodedMessage>> tombstone = decoder.Decode(std::nullopt, "");
  ASSERT_TRUE(tombstone.ok());
  EXPECT_FALSE(tombstone->has_value());

  Change insert = Base(Op::kInsert, Items());
  insert.after = FullRow("1");
  Encoded e = Encode(insert, KafkaFormat::kDebezium);
  EXPECT_EQ(ErrorOf(e.value, e.header), "ok");
  EXPECT_EQ(ErrorOf("hello", std::nullopt).substr(0, 47),
            "the value is not a pgflow event: invalid JSON a");
  EXPECT_EQ(ErrorOf(R"({"a":1})", std::nullopt),
            "the value is not a pgflow event: it has neither \"op\" nor \"ddl\"");
  EXPECT_EQ(ErrorOf(e.value, std::nullopt).substr(0, 42),
            "a row event without a pgflow.schema header");
  EXPECT_EQ(ErrorOf(e.value, "{}"), "header pgflow.schema: table description: relid: missing");

  TableSchemaPtr other = Items();
  auto renamed = std::make_shared<TableSchema>(*other);
  renamed->name = "orders";
  std::string header;
  AppendTableSchemaJson(*renamed, &header);
  EXPECT_EQ(ErrorOf(e.value, header),
            "the event is about public.items but its pgflow.schema header describes "
            "public.orders");

  std::string bad = e.value;
  bad.replace(bad.find(R"("id":1)"), 6, R"("id":{})");
  EXPECT_EQ(ErrorOf(bad, e.header),
            "after.id: expected a number or a string for type OID 20, got an object");
  bad = e.value;
  bad.replace(bad.find(R"("ok":true,)"), 10, "");
  EXPECT_EQ(ErrorOf(bad, e.header),
            "after lacks column \"ok\", which is not listed in unchanged_toast either");
  bad = e.value;
  bad.replace(bad.find(R"("ok":true)"), 9, R"("ko":true)");
  EXPECT_EQ(ErrorOf(bad, e.header),
            "after has a column \"ko\" that public.items does not have (by the message's "
            "pgflow.schema header)");
  EXPECT_EQ(ErrorOf(R"({"op":"x","source":{}})", std::nullopt), "unknown op \"x\"");
  EXPECT_EQ(ErrorOf(R"({"source":{"lsn":1},"ddl":{"tag":"x"}})", std::nullopt),
            "DDL message: tag or object_type is missing");
}

}  // namespace
}  // namespace pgflow
