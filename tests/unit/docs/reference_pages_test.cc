// The reference pages under docs/reference/ that are generated from the code, kept equal to it:
// each page holds its generated part between `<!-- NAME: begin -->` and `<!-- NAME: end -->`
// lines, and this test compares that part with what the code makes now. Run
// scripts/update-references.sh after changing the code they come from: it runs these tests
// with PGFLOW_UPDATE_REFERENCES=1, which rewrites the parts instead of comparing them.
//
//   docs/reference/pooler-options.md  every key of a pooler file (pooler/pooler_config.cc)
//   docs/reference/node-options.md    every key of a node file (cluster/node_config.cc)
//   docs/reference/lua.md             the Lua API, transformers/lua.h's opening comment
//   docs/reference/events.md          what the encoders write for sample changes: jsonl lines,
//                                     Kafka keys and values (debezium, compact)
// (docs/reference/pipeline-options.md and cli.md have their own tests, beside the CLI's:
// tests/unit/cli/options_reference_test.cc and cli_reference_test.cc.)

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/node_config.h"
#include "engine/change.h"
#include "gtest/gtest.h"
#include "pooler/pooler_config.h"
#include "schemas/table_schema.h"
#include "sinks/jsonl/jsonl_sink.h"
#include "sinks/kafka/kafka_record.h"
#include "tests/unit/cli/generated_section.h"

namespace pgflow {
namespace {

std::string ReadSource(std::string_view path) {
  std::ifstream in(std::string(PGFLOW_SOURCE_DIR) + "/" + std::string(path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Expects the part of `page` between the markers named `name` to be `generated`; with
// PGFLOW_UPDATE_REFERENCES set, writes it there instead.
void ExpectGenerated(std::string_view page, std::string_view name, const std::string& generated) {
  if (std::getenv("PGFLOW_UPDATE_REFERENCES") != nullptr) {
    std::string text = ReadSource(page);
    const std::string begin = "<!-- " + std::string(name) + ": begin -->\n";
    const size_t from = text.find(begin);
    const size_t to = text.find("<!-- " + std::string(name) + ": end -->");
    ASSERT_TRUE(from != std::string::npos && to != std::string::npos) << page << ": no markers";
    text.replace(from + begin.size(), to - from - begin.size(), generated);
    std::ofstream(std::string(PGFLOW_SOURCE_DIR) + "/" + std::string(page)) << text;
    return;
  }
  absl::StatusOr<std::string> section = GeneratedSection(std::string(page), std::string(name));
  ASSERT_TRUE(section.ok()) << section.status();
  EXPECT_EQ(*section, generated) << page << " is out of date: run scripts/update-references.sh";
}

TEST(ReferencePagesTest, NodeOptionsAreTheNodeFilesOptionTables) {
  ExpectGenerated("docs/reference/node-options.md", "node options",
                  cluster::NodeOptionsReference());
}

TEST(ReferencePagesTest, PoolerOptionsAreThePoolerFilesOptionTables) {
  ExpectGenerated("docs/reference/pooler-options.md", "pooler options",
                  pooler::PoolerOptionsReference());
}

// transformers/lua.h opens with the whole contract a script works under: the page shows it as
// written there, comment markers taken off.
TEST(ReferencePagesTest, LuaApiIsLuaHeaderComment) {
  std::istringstream header(ReadSource("transformers/lua.h"));
  std::string line;
  std::string api;
  bool started = false;
  while (std::getline(header, line)) {
    if (line.rfind("//", 0) == 0) {
      started = true;
      api += line.size() > 3 ? line.substr(3) : "";
      api += "\n";
    } else if (started) {
      break;
    }
  }
  ASSERT_FALSE(api.empty());
  ExpectGenerated("docs/reference/lua.md", "transformers/lua.h", "```text\n" + api + "```\n");
}

// ---------------------------------------------------------------------------------------------
// Events: sample changes of one table, as each format writes them.

TableSchemaPtr Orders() {
  auto t = std::make_shared<TableSchema>();
  t->schema = "public";
  t->name = "orders";
  t->columns = {{"id", oid::kInt8, -1, true, {}},
                {"customer", oid::kText, -1, false, {}},
                {"total", oid::kNumeric, -1, false, {}},
                {"paid", oid::kBool, -1, false, {}},
                {"placed_at", oid::kTimestamptz, -1, false, {}},
                {"notes", oid::kText, -1, false, {}}};
  return t;
}

struct Sample {
  std::string title;
  Change change;
};

std::vector<Sample> Samples() {
  TxnInfo txn{745, Lsn(0x1A2B3C8), Lsn(0x1A2B400), 1'795'000'000'123'456};
  auto row = [](std::string id, std::string total, std::string notes) {
    return Row{Value::Text(oid::kInt8, std::move(id)),
               Value::Text(oid::kText, "ada"),
               Value::Text(oid::kNumeric, std::move(total)),
               Value::Text(oid::kBool, "t"),
               Value::Text(oid::kTimestamptz, "2026-11-22 10:43:00.123456+00"),
               notes.empty() ? Value::UnchangedToast(oid::kText)
                             : Value::Text(oid::kText, std::move(notes))};
  };
  auto change = [&](Op op, uint64_t seq) {
    Change c;
    c.op = op;
    c.table = Orders();
    c.txn = txn;
    c.lsn = txn.commit_lsn;
    c.sequence = seq;
    return c;
  };
  std::vector<Sample> samples;
  Change insert = change(Op::kInsert, 0);
  insert.after = row("42", "19.90", "leave at the door");
  samples.push_back({"An insert", insert});
  Change update = change(Op::kUpdate, 1);
  update.after = row("42", "24.50", "");  // notes: TOASTed and unchanged, so not sent
  samples.push_back({"An update that left a TOASTed column (`notes`) unchanged", update});
  Change moved = change(Op::kUpdate, 2);
  moved.after = row("43", "24.50", "leave at the door");
  moved.before = {Value::Text(oid::kInt8, "42"),  Value::Null(oid::kText),
                  Value::Null(oid::kNumeric),     Value::Null(oid::kBool),
                  Value::Null(oid::kTimestamptz), Value::Null(oid::kText)};
  moved.before_kind = BeforeKind::kKey;
  samples.push_back({"An update that changed the key (`before` holds the old key)", moved});
  Change remove = change(Op::kDelete, 3);
  remove.before = moved.before;
  remove.before[0] = Value::Text(oid::kInt8, "43");
  remove.before_kind = BeforeKind::kKey;
  samples.push_back({"A delete", remove});
  Change truncate = change(Op::kTruncate, 4);
  truncate.truncate_restart_identity = true;
  samples.push_back({"A truncate", truncate});
  Change read = change(Op::kRead, 0);
  read.txn = TxnInfo{0, Lsn(0x16B3748), Lsn(0x16B3748), 1'795'000'000'000'000};
  read.lsn = read.txn.commit_lsn;
  read.after = row("7", "5.00", "first order");
  samples.push_back({"A snapshot row", read});
  return samples;
}

std::string EventsReference() {
  std::string out;
  KafkaRecordOptions debezium;
  debezium.pipeline = "shop";
  KafkaRecordOptions compact = debezium;
  compact.format = KafkaFormat::kCompact;
  constexpr int64_t kProducedMs = 1'795'000'000'200;
  for (const Sample& s : Samples()) {
    out += "### " + s.title + "\n\n";
    std::string line;
    AppendJsonlLine(s.change, JsonOptions{}, &line);
    out += "`jsonl` (and the `data` of a webhook body, the value of Kafka's `compact` format):\n\n";
    out += "```json\n" + line + "```\n\n";
    std::string key;
    if (AppendKafkaKey(s.change, JsonOptions{}, &key)) {
      out += "Kafka key: `" + key + "`";
      std::string old_key;
      if (AppendKafkaOldKey(s.change, JsonOptions{}, &old_key) && old_key != key) {
        out += " (the old key `" + old_key + "` also gets a delete and a tombstone)";
      }
      out += "\n\n";
    } else {
      out += "Kafka key: none (null)\n\n";
    }
    std::string value;
    AppendKafkaValue(s.change, debezium, kProducedMs, &value);
    out += "Kafka value, format `debezium`:\n\n```json\n" + value + "\n```\n\n";
    std::string compact_value;
    AppendKafkaValue(s.change, compact, kProducedMs, &compact_value);
    if (compact_value + "\n" != line) {
      out += "Kafka value, format `compact`:\n\n```json\n" + compact_value + "\n```\n\n";
    }
  }
  return out;
}

TEST(ReferencePagesTest, EventsAreWhatTheEncodersWrite) {
  ExpectGenerated("docs/reference/events.md", "sample events", EventsReference());
}

}  // namespace
}  // namespace pgflow
