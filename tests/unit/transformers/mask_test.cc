#include "transformers/mask.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/components.h"
#include "common/digest.h"
#include "engine/config.h"

namespace pgflow {
namespace {

using ::testing::HasSubstr;

// The mask of `columns` over table public.t (id int key, s text, v varchar(5), n int), built
// through the registry as a pipeline file would.
TransformChain MaskChain(const std::string& columns) {
  RegisterComponents();  // as `pgflow` registers them
  absl::StatusOr<PipelineConfig> config = ParsePipelineConfig(
      "pipeline: p\n"
      "source: {postgres: {url: 'postgres://db/x', tables: [public.t]}}\n"
      "transforms:\n  - mask: {table: public.t, salt: k, columns: " +
          columns +
          "}\n"
          "sinks: {out: {jsonl: {path: x}}}\n",
      "p.yaml");
  EXPECT_TRUE(config.ok()) << config.status();
  return BuildTransforms("p", config.ok() ? config->transforms : std::vector<TransformConfig>{});
}

TableSchemaPtr Table() {
  auto t = std::make_shared<TableSchema>();
  t->schema = "public";
  t->name = "t";
  t->replica_identity = 'd';
  t->columns = {{"id", oid::kInt4, -1, true, ""},
                {"s", oid::kText, -1, false, ""},
                {"v", oid::kVarchar, 5 + 4, false, ""},
                {"n", oid::kInt4, -1, false, ""}};
  return t;
}

EventBatchPtr Batch(Change change) {
  auto batch = std::make_shared<EventBatch>();
  Event e;
  e.kind = EventKind::kChange;
  e.change = std::move(change);
  batch->events.push_back(std::move(e));
  return batch;
}

TEST(MaskTest, MasksNewAndOldRowsLeavesNullsAndUnsentValues) {
  TransformChain chain = MaskChain("{s: 'partial(2,1)', v: hash, n: null}");
  Change update;
  update.op = Op::kUpdate;
  update.table = Table();
  update.after = {Value::Text(oid::kInt4, "1"), Value::Text(oid::kText, "héllo wörld"),
                  Value::Null(oid::kVarchar), Value::Text(oid::kInt4, "7")};
  update.before = {Value::Text(oid::kInt4, "1"), Value::UnchangedToast(oid::kText),
                   Value::Text(oid::kVarchar, "abc"), Value::Text(oid::kInt4, "6")};
  update.before_kind = BeforeKind::kFull;
  absl::StatusOr<EventBatchPtr> out = chain.Apply(Batch(update));
  ASSERT_TRUE(out.ok()) << out.status();
  const Change& c = (*out)->events[0].change;
  EXPECT_EQ(c.after[1].data, "hé********d");  // characters, not bytes
  EXPECT_TRUE(c.after[2].is_null());
  EXPECT_TRUE(c.after[3].is_null());
  EXPECT_EQ(c.after[0].data, "1");
  EXPECT_TRUE(c.before[1].is_unchanged_toast());
  EXPECT_EQ(c.before[2].data, LowerHex(HmacSha256("k", {"abc"})).substr(0, 5));  // varchar(5)
  EXPECT_TRUE(c.before[3].is_null());
}

TEST(MaskTest, ANullOrRedactedKeyIsRefused) {
  TransformChain chain = MaskChain("{id: 'null'}");
  Change insert;
  insert.op = Op::kInsert;
  insert.table = Table();
  insert.after = {Value::Text(oid::kInt4, "1"), Value::Null(oid::kText), Value::Null(oid::kVarchar),
                  Value::Null(oid::kInt4)};
  absl::StatusOr<EventBatchPtr> out = chain.Apply(Batch(insert));
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(),
              HasSubstr("transforms[0] (mask): public.t.id is part of the key: rule null could "
                        "give two rows the same key"));
}

// The mask `options` over public.u (id int key, name text, phone text, born date,
// seen timestamptz, salary numeric).
TransformChain MaskOf(const std::string& options) {
  RegisterComponents();
  absl::StatusOr<PipelineConfig> config = ParsePipelineConfig(
      "pipeline: p\n"
      "source: {postgres: {url: 'postgres://db/x', tables: [public.u]}}\n"
      "transforms:\n  - mask: " +
          options + "\nsinks: {out: {jsonl: {path: x}}}\n",
      "p.yaml");
  EXPECT_TRUE(config.ok()) << config.status();
  return BuildTransforms("p", config.ok() ? config->transforms : std::vector<TransformConfig>{});
}

Change Person(const std::string& name, const std::string& phone) {
  auto t = std::make_shared<TableSchema>();
  t->schema = "public";
  t->name = "u";
  t->columns = {{"id", oid::kInt4, -1, true, ""},        {"name", oid::kText, -1, false, ""},
                {"phone", oid::kText, -1, false, ""},    {"born", oid::kDate, -1, false, ""},
                {"seen", oid::kTimestamptz, -1, false, ""}, {"salary", oid::kNumeric, -1, false, ""}};
  Change c;
  c.op = Op::kInsert;
  c.table = t;
  c.after = {Value::Text(oid::kInt4, "1"),
             Value::Text(oid::kText, name),
             Value::Text(oid::kText, phone),
             Value::Text(oid::kDate, "1985-07-23"),
             Value::Text(oid::kTimestamptz, "2026-03-17 10:11:12.345+01"),
             Value::Text(oid::kNumeric, "123456.789")};
  return c;
}

TEST(MaskTest, FakeValuesAreDeterministicAndTruncateCutsDatesAndNumbers) {
  TransformChain chain = MaskOf(
      "{table: public.u, salt: k, columns: {name: fake_name, phone: fake_phone, "
      "born: 'truncate(year)', seen: 'truncate(hour)', salary: 'truncate(-3)'}}");
  absl::StatusOr<EventBatchPtr> out =
      chain.Apply(Batch(Person("Ann Smith", "+44 7700 900123")));
  ASSERT_TRUE(out.ok()) << out.status();
  const Row& row = (*out)->events[0].change.after;
  EXPECT_NE(row[1].data, "Ann Smith");
  EXPECT_NE(row[1].data.find(' '), std::string::npos);  // "First Last"
  EXPECT_NE(row[2].data, "+44 7700 900123");
  ASSERT_EQ(row[2].data.size(), 15u);  // the format kept
  EXPECT_EQ(row[2].data[0], '+');
  EXPECT_EQ(row[2].data[3], ' ');
  EXPECT_EQ(row[3].data, "1985-01-01");
  EXPECT_EQ(row[4].data, "2026-03-17 10:00:00+01");
  EXPECT_EQ(row[5].data, "123000");
  // The same input, the same fake; another input, (almost surely) another.
  absl::StatusOr<EventBatchPtr> again = chain.Apply(Batch(Person("Ann Smith", "+44 7700 900123")));
  EXPECT_EQ((*again)->events[0].change.after[1].data, row[1].data);
  EXPECT_EQ((*again)->events[0].change.after[2].data, row[2].data);
  absl::StatusOr<EventBatchPtr> other = chain.Apply(Batch(Person("Bob Jones", "+44 7700 900124")));
  EXPECT_NE((*other)->events[0].change.after[2].data, row[2].data);

  TransformChain decimals = MaskOf("{table: public.u, columns: {salary: 'truncate(1)'}}");
  EXPECT_EQ((*decimals.Apply(Batch(Person("a", "b"))))->events[0].change.after[5].data, "123456.7");
  TransformChain wrong = MaskOf("{table: public.u, columns: {name: 'truncate(day)'}}");
  EXPECT_THAT(wrong.Apply(Batch(Person("a", "b"))).status().message(),
              HasSubstr("public.u.name: rule truncate applies to date and timestamp columns"));
}

TEST(MaskTest, APartialKeyIsRefusedAndARenamedTableStopsThePipeline) {
  TransformChain partial = MaskOf("{table: public.u, columns: {id: partial}}");
  Change text_key = Person("a", "b");
  auto t = std::make_shared<TableSchema>(*text_key.table);
  t->columns[0].type_oid = oid::kText;
  text_key.table = t;
  EXPECT_THAT(partial.Apply(Batch(text_key)).status().message(),
              HasSubstr("public.u.id is part of the key: rule partial could give two rows the "
                        "same key"));
  TransformChain chain = MaskOf("{table: public.u, salt: k, columns: {name: hash}}");
  Change ddl;
  ddl.op = Op::kDdl;
  ddl.content =
      R"({"tag":"ALTER TABLE","object_type":"table","identity":"public.clients",)"
      R"("schema":"public","name":"clients",)"
      R"("old":{"relid":1,"schema":"public","name":"u","columns":[]},)"
      R"("table":{"relid":1,"schema":"public","name":"clients","columns":[]}})";
  ddl.ddl = std::make_shared<const DdlCommand>(*ParseDdlCommand(ddl.content));
  EXPECT_THAT(chain.Apply(Batch(ddl)).status().message(),
              HasSubstr("transforms[0] (mask): table public.u was renamed to public.clients"));
}

TEST(MaskTest, StrictStopsATableOrASchemaChangeWithAColumnWithoutARule) {
  TransformChain chain = MaskOf(
      "{table: public.u, strict: true, columns: {id: keep, name: redact, phone: redact, "
      "born: keep, seen: keep}}");
  absl::StatusOr<EventBatchPtr> out = chain.Apply(Batch(Person("a", "b")));
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(),
              HasSubstr("transforms[0] (mask, strict): public.u.salary has no rule, so nothing "
                        "of the table goes out: add `salary: keep`"));

  TransformChain full = MaskOf(
      "{table: public.u, strict: true, columns: {id: keep, name: redact, phone: redact, "
      "born: keep, seen: keep, salary: 'null'}}");
  ASSERT_TRUE(full.Apply(Batch(Person("a", "b"))).ok());
  Change ddl;
  ddl.op = Op::kDdl;
  ddl.content =
      R"({"tag":"ALTER TABLE","object_type":"table","identity":"public.u","schema":"public",)"
      R"("name":"u","table":{"relid":1,"schema":"public","name":"u","columns":[)"
      R"({"attnum":1,"name":"id","type":"integer"},{"attnum":7,"name":"ssn","type":"text"}]}})";
  ddl.ddl = std::make_shared<const DdlCommand>(*ParseDdlCommand(ddl.content));
  out = full.Apply(Batch(ddl));
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("public.u.ssn has no rule"));
}

}  // namespace
}  // namespace pgflow
