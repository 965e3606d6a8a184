#include "sinks/jsonl/jsonl_sink.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"

namespace pgflow {
namespace {

using json = nlohmann::json;

TableSchemaPtr Items() {
  auto t = std::make_shared<TableSchema>();
  t->relation_id = 16384;
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

TEST(JsonlLineTest, HasTheKeysTheFormatPromises) {
  std::string line;
  AppendJsonlLine(Update(), JsonOptions(), &line);
  ASSERT_EQ(line.back(), '\n');
  json j = json::parse(line);
  EXPECT_EQ(j["op"], "update");
  EXPECT_EQ(j["schema"], "public");
  EXPECT_EQ(j["table"], "items");
  EXPECT_EQ(j["lsn"], "0/1A2B3C8");
  EXPECT_EQ(j["xid"], 745);
  EXPECT_EQ(j["seq"], 3);
  EXPECT_EQ(j["commit_ts"], "2026-11-18T11:06:40.123456Z");
  EXPECT_EQ(j["after"], json::parse(R"({"id": 1, "name": "pen"})"));
  EXPECT_EQ(j["before"], json::parse(R"({"id": 7})"));  // the old key only
  EXPECT_EQ(j["unchanged_toast"], json::parse(R"(["notes"])"));
}

TEST(JsonlLineTest, DeleteTruncateAndMessage) {
  Change del = Update();
  del.op = Op::kDelete;
  del.before_kind = BeforeKind::kFull;
  del.before = {Value::Text(oid::kInt8, "1"), Value::Text(oid::kText, "pen"),
                Value::Null(oid::kText)};
  std::string line;
  AppendJsonlLine(del, JsonOptions(), &line);
  json j = json::parse(line);
  EXPECT_FALSE(j.contains("after"));
  EXPECT_EQ(j["before"], json::parse(R"({"id": 1, "name": "pen", "notes": null})"));

  Change truncate;
  truncate.op = Op::kTruncate;
  truncate.table = Items();
  truncate.truncate_cascade = true;
  line.clear();
  AppendJsonlLine(truncate, JsonOptions(), &line);
  j = json::parse(line);
  EXPECT_EQ(j["op"], "truncate");
  EXPECT_EQ(j["cascade"], true);
  EXPECT_EQ(j["restart_identity"], false);

  Change message;
  message.op = Op::kMessage;
  message.prefix = "app";
  message.content = "hello \"world\"";
  line.clear();
  AppendJsonlLine(message, JsonOptions(), &line);
  j = json::parse(line);
  EXPECT_EQ(j["prefix"], "app");
  EXPECT_EQ(j["content"], "hello \"world\"");
  EXPECT_FALSE(j.contains("table"));
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(JsonlSinkTest, WritesOnFlushAndCutsAPartialLineLeftByACrash) {
  char tmpl[] = "/tmp/jsonl-test.XXXXXX";
  int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  const std::string path = tmpl;
  std::string existing = "{\"op\":\"insert\"}\n{\"op\":\"ins";
  ASSERT_EQ(write(fd, existing.data(), existing.size()), static_cast<ssize_t>(existing.size()));
  close(fd);

  auto options = std::make_shared<JsonlSinkOptions>();
  options->path = path;
  JsonlSink sink(options);
  ASSERT_TRUE(sink.Open().ok());
  EXPECT_EQ(Slurp(path), "{\"op\":\"insert\"}\n");
  Event event;
  event.kind = EventKind::kChange;
  event.change = Update();
  ASSERT_TRUE(sink.Write(event).ok());
  Event commit;
  commit.kind = EventKind::kCommit;
  ASSERT_TRUE(sink.Write(commit).ok());  // not a line
  ASSERT_TRUE(sink.Flush().ok());
  std::string text = Slurp(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  EXPECT_TRUE(sink.Close().ok());
  std::remove(path.c_str());
}

TEST(JsonlSinkTest, AnUnwritablePathIsAClearError) {
  auto options = std::make_shared<JsonlSinkOptions>();
  options->path = "/nonexistent-dir/out.jsonl";
  JsonlSink sink(options);
  absl::Status s = sink.Open();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cannot open /nonexistent-dir/out.jsonl"), absl::string_view::npos);
}

}  // namespace
}  // namespace pgflow

namespace pgflow {
namespace {

TEST(JsonlSinkTest, ARolledBackTransactionLeavesNoLines) {
  char tmpl[] = "/tmp/jsonl-rollback.XXXXXX";
  int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  close(fd);
  const std::string path = tmpl;
  auto options = std::make_shared<JsonlSinkOptions>();
  options->path = path;
  JsonlSink sink(options);
  ASSERT_TRUE(sink.Open().ok());
  auto event = [](EventKind kind) {
    Event e;
    e.kind = kind;
    if (kind == EventKind::kChange) e.change = Update();
    return e;
  };
  // A committed transaction, then one cut off after part of it reached the file.
  for (EventKind k : {EventKind::kBegin, EventKind::kChange, EventKind::kCommit, EventKind::kBegin,
                      EventKind::kChange}) {
    ASSERT_TRUE(sink.Write(event(k)).ok());
  }
  ASSERT_TRUE(sink.Flush().ok());
  ASSERT_TRUE(sink.Write(event(EventKind::kChange)).ok());
  ASSERT_TRUE(sink.Write(event(EventKind::kRollback)).ok());
  ASSERT_TRUE(sink.Flush().ok());
  std::string text = Slurp(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  // Writing goes on after it.
  for (EventKind k : {EventKind::kBegin, EventKind::kChange, EventKind::kCommit}) {
    ASSERT_TRUE(sink.Write(event(k)).ok());
  }
  ASSERT_TRUE(sink.Close().ok());
  text = Slurp(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2) << text;
  std::remove(path.c_str());
}

}  // namespace
}  // namespace pgflow
