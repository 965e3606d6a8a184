#include "transformers/mask.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/components.h"
#include "engine/config.h"

namespace pgflow {
namespace {

using ::testing::HasSubstr;

TEST(MaskTest, HmacIsRfc4231) {
  // RFC 4231, test case 2.
  EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // Test case 6: a key longer than SHA-256's block, hashed first.
  HmacSha256 long_key(std::string(131, '\xaa'));
  EXPECT_EQ(long_key.Hex("Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  EXPECT_EQ(long_key.Hex("Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");  // reusable
}

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
  EXPECT_EQ(c.before[2].data, HmacSha256Hex("k", "abc").substr(0, 5));  // varchar(5)
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
              HasSubstr("transforms[0] (mask): public.t.id is part of the key: rule null would "
                        "give every row the same key"));
}

}  // namespace
}  // namespace pgflow
