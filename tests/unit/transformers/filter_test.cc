#include "transformers/filter.h"

#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/components.h"
#include "engine/config.h"
#include "transformers/filter_expression.h"

namespace pgflow {
namespace {

using ::testing::HasSubstr;

// public.orders (id int key, status text, total numeric, placed timestamptz, attrs jsonb,
// paid bool).
TableSchemaPtr Orders() {
  auto t = std::make_shared<TableSchema>();
  t->schema = "public";
  t->name = "orders";
  t->replica_identity = 'd';
  t->columns = {
      {"id", oid::kInt4, -1, true, ""},        {"status", oid::kText, -1, false, ""},
      {"total", oid::kNumeric, -1, false, ""}, {"placed", oid::kTimestamptz, -1, false, ""},
      {"attrs", oid::kJsonb, -1, false, ""},   {"paid", oid::kBool, -1, false, ""}};
  return t;
}

Row OrderRow(std::string id, std::string status, std::string total, std::string placed,
             std::string attrs, std::string paid) {
  auto text = [](uint32_t type, const std::string& v) {
    return v == "NULL" ? Value::Null(type) : Value::Text(type, v);
  };
  return {text(oid::kInt4, id),       text(oid::kText, status),
          text(oid::kNumeric, total), text(oid::kTimestamptz, placed),
          text(oid::kJsonb, attrs),   text(oid::kBool, paid)};
}

bool Matches(const std::string& where, const Row& row, const Row* old = nullptr) {
  absl::StatusOr<std::shared_ptr<const FilterExpression>> e = FilterExpression::Parse(where);
  EXPECT_TRUE(e.ok()) << where << ": " << e.status();
  if (!e.ok()) return false;
  TableSchemaPtr table = Orders();
  absl::StatusOr<bool> m = (*e)->Matches(
      {table.get(), &row, old, old != nullptr ? BeforeKind::kFull : BeforeKind::kNone});
  EXPECT_TRUE(m.ok()) << where << ": " << m.status();
  return m.ok() && *m;
}

TEST(FilterExpressionTest, ComparesByTheColumnsType) {
  Row r =
      OrderRow("7", "paid", "10.50", "2026-11-24 10:00:00+00", R"({"color": "red", "n": 3})", "t");
  EXPECT_TRUE(Matches("status = 'paid' and total > 10", r));
  EXPECT_TRUE(Matches("total > 9.99", r));  // numerically: '10.50' > '9.99' as text is false
  EXPECT_FALSE(Matches("total > 100", r));
  EXPECT_TRUE(Matches("total = 10.5", r));  // 10.50 = 10.5 as numbers
  EXPECT_TRUE(Matches("placed > '2026-11-24T09:59:59Z'", r));
  EXPECT_TRUE(Matches("placed < '2026-11-25'", r));
  EXPECT_TRUE(Matches("placed = '2026-11-24 11:00:00+01'", r));  // the same instant
  EXPECT_TRUE(Matches("paid and status = 'paid'", r));           // a boolean column alone
  EXPECT_TRUE(Matches("paid = true", r));
  EXPECT_TRUE(Matches("attrs->>'color' = 'red' and attrs->'n' >= 3", r));
  EXPECT_FALSE(Matches("attrs->>'size' = 'xl'", r));  // no such key: NULL
  EXPECT_TRUE(Matches("attrs->>'size' is null", r));
  EXPECT_TRUE(Matches("status in ('new', 'paid') and id not in (1, 2)", r));
  EXPECT_TRUE(Matches("id between 5 and 7 and not (id between 8 and 9)", r));
  EXPECT_TRUE(Matches("status like 'pa%' and status not like '_x%'", r));
  EXPECT_TRUE(Matches("(status = 'x' or total < 11) and id <> 8", r));
  EXPECT_TRUE(Matches("\"status\" = 'paid'", r));
}

TEST(FilterExpressionTest, NullsFollowSql) {
  Row r = OrderRow("1", "NULL", "NULL", "NULL", "NULL", "NULL");
  EXPECT_FALSE(Matches("status = 'x'", r));
  EXPECT_FALSE(Matches("not (status = 'x')", r));  // unknown stays unknown
  EXPECT_TRUE(Matches("status is null and total is null", r));
  EXPECT_FALSE(Matches("status in ('a', 'b')", r));
  EXPECT_TRUE(Matches("status = 'x' or id = 1", r));
}

TEST(FilterExpressionTest, OldRowAndChanged) {
  Row now = OrderRow("1", "paid", "10", "NULL", "NULL", "t");
  Row was = OrderRow("1", "new", "10", "NULL", "NULL", "f");
  EXPECT_TRUE(Matches("old.status = 'new' and status = 'paid'", now, &was));
  EXPECT_TRUE(Matches("changed(status) and not changed(total)", now, &was));
}

TEST(FilterExpressionTest, ErrorsNameThePlace) {
  auto error = [](const std::string& where) {
    absl::StatusOr<std::shared_ptr<const FilterExpression>> e = FilterExpression::Parse(where);
    return e.ok() ? std::string("parsed") : std::string(e.status().message());
  };
  EXPECT_EQ(error("status = "), "at character 10: expected a column or a value, got the end");
  EXPECT_EQ(error("status = 'paid"),
            "at character 10: unterminated string (strings are in "
            "single quotes)");
  EXPECT_EQ(error("status == 'x'"), "at character 9: expected a column or a value, got '='");
  EXPECT_EQ(error("(a = 1"), "at character 7: expected ')', got the end");
  EXPECT_EQ(error("a = 1 b = 2"), "at character 7: expected and, or, or the end, got 'b'");
  EXPECT_EQ(error("a in 1"), "at character 6: expected '(' after in, got '1'");
  EXPECT_EQ(error("a # 1"), "at character 3: unexpected '#'");
  absl::StatusOr<std::shared_ptr<const FilterExpression>> e = FilterExpression::Parse("nope = 1");
  ASSERT_TRUE(e.ok());
  TableSchemaPtr table = Orders();
  Row r = OrderRow("1", "x", "1", "NULL", "NULL", "t");
  absl::StatusOr<bool> m = (*e)->Matches({table.get(), &r, nullptr, BeforeKind::kNone});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "table public.orders has no column 'nope'");
}

TEST(FilterExpressionTest, RandomTextNeverCrashesTheParser) {
  std::mt19937_64 rng(42);
  const std::string alphabet = "abc ()'\",.=<>!-%_0123456789 andornotinbetweenlikeisnull";
  for (int i = 0; i < 20000; ++i) {
    std::string text;
    const size_t n = rng() % 24;
    for (size_t j = 0; j < n; ++j) text += alphabet[rng() % alphabet.size()];
    absl::StatusOr<std::shared_ptr<const FilterExpression>> e = FilterExpression::Parse(text);
    if (!e.ok()) continue;
    TableSchemaPtr table = Orders();
    Row r = OrderRow("1", "a", "1", "NULL", "{}", "t");
    (*e)->Matches({table.get(), &r, &r, BeforeKind::kFull}).IgnoreError();
  }
}

TransformChain FilterChain(const std::string& options) {
  RegisterComponents();
  absl::StatusOr<PipelineConfig> config = ParsePipelineConfig(
      "pipeline: p\n"
      "source: {postgres: {url: 'postgres://db/x', tables: [public.orders]}}\n"
      "transforms:\n  - filter: " +
          options +
          "\n"
          "sinks: {out: {jsonl: {path: x}}}\n",
      "p.yaml");
  EXPECT_TRUE(config.ok()) << config.status();
  return BuildTransforms("p", config.ok() ? config->transforms : std::vector<TransformConfig>{});
}

std::vector<Change> RunChain(TransformChain& chain, std::vector<Change> changes) {
  auto batch = std::make_shared<EventBatch>();
  for (Change& c : changes) {
    Event e;
    e.kind = EventKind::kChange;
    e.change = std::move(c);
    batch->events.push_back(std::move(e));
  }
  absl::StatusOr<EventBatchPtr> out = chain.Apply(batch);
  EXPECT_TRUE(out.ok()) << out.status();
  std::vector<Change> result;
  if (out.ok()) {
    for (const Event& e : (*out)->events) result.push_back(e.change);
  }
  return result;
}

Change Update(Row after, Row before, BeforeKind kind) {
  Change c;
  c.op = Op::kUpdate;
  c.table = Orders();
  c.after = std::move(after);
  c.before = std::move(before);
  c.before_kind = kind;
  return c;
}

TEST(FilterTest, UpdatesThatLeaveOrEnterTheFilterBecomeDeletesAndInserts) {
  TransformChain chain = FilterChain("{table: public.orders, where: \"status = 'paid'\"}");
  Row paid = OrderRow("1", "paid", "1", "NULL", "NULL", "t");
  Row open = OrderRow("1", "open", "1", "NULL", "NULL", "t");
  std::vector<Change> out = RunChain(chain, {Update(open, paid, BeforeKind::kFull),  // leaves
                                             Update(paid, open, BeforeKind::kFull),  // enters
                                             Update(paid, paid, BeforeKind::kFull),  // stays in
                                             Update(open, open, BeforeKind::kFull),  // stays out
                                             Update(open, {}, BeforeKind::kNone)});  // may leave
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].op, Op::kDelete);
  EXPECT_TRUE(out[0].after.empty());
  EXPECT_EQ(out[0].before[0].data, "1");
  EXPECT_EQ(out[1].op, Op::kInsert);
  EXPECT_TRUE(out[1].before.empty());
  EXPECT_EQ(out[2].op, Op::kUpdate);
  EXPECT_EQ(out[3].op, Op::kDelete);
  EXPECT_EQ(out[3].before_kind, BeforeKind::kKey);
  EXPECT_EQ(out[3].before[0].data, "1");
}

TEST(FilterTest, OperationsAndOtherTables) {
  TransformChain chain = FilterChain("{table: public.orders, op: [insert, delete]}");
  Change insert;
  insert.op = Op::kInsert;
  insert.table = Orders();
  insert.after = OrderRow("1", "a", "1", "NULL", "NULL", "t");
  Change update = Update(insert.after, insert.after, BeforeKind::kFull);
  Change other = insert;
  auto t = std::make_shared<TableSchema>(*Orders());
  t->name = "customers";
  other.table = t;
  other.op = Op::kUpdate;
  std::vector<Change> out = RunChain(chain, {insert, update, other});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].op, Op::kInsert);
  EXPECT_EQ(out[1].table->name, "customers");  // not filtered: passes
}

}  // namespace
}  // namespace pgflow
