// set, cast and route (transformers/set.h, cast.h, route.h) and the templates they share.

#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/transformers/transform_testing.h"
#include "transformers/cast.h"
#include "transformers/template.h"

namespace pgflow {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<TransformChain> Chain(const std::string& transforms) {
  return transform_testing::ChainOf(transforms);
}

// public.orders (id int key, name text, cents int8, placed timestamptz, region text).
TableSchemaPtr Orders() {
  auto t = std::make_shared<TableSchema>();
  t->schema = "public";
  t->name = "orders";
  t->columns = {{"id", oid::kInt4, -1, true, ""},
                {"name", oid::kText, -1, false, ""},
                {"cents", oid::kInt8, -1, false, ""},
                {"placed", oid::kTimestamptz, -1, false, ""},
                {"region", oid::kText, -1, false, ""}};
  return t;
}

Change Row5(Op op = Op::kInsert) {
  Change c;
  c.op = op;
  c.table = Orders();
  c.txn.commit_lsn = Lsn(0x16B3748);
  c.txn.xid = 77;
  c.txn.commit_time_us = 1767348000000000;  // 2026-01-02T10:00:00Z
  c.after = {Value::Text(oid::kInt4, "5"), Value::Text(oid::kText, "Ann"),
             Value::Text(oid::kInt8, "12345"),
             Value::Text(oid::kTimestamptz, "2026-01-02 10:00:00+00"),
             Value::Text(oid::kText, "eu")};
  return c;
}

absl::StatusOr<Change> ApplyOne(TransformChain& chain, Change change) {
  std::vector<Change> changes;
  changes.push_back(std::move(change));
  absl::StatusOr<std::vector<Change>> out = transform_testing::ApplyChain(chain, std::move(changes));
  if (!out.ok()) return out.status();
  if (out->size() != 1) return absl::InternalError("not one change");
  return std::move(out->front());
}

TEST(TemplateTest, ReadsColumnsAndEventFieldsAndNamesMistakes) {
  absl::StatusOr<Template> t = Template::Parse("{schema}.{table}:{op}@{lsn}/{xid} {{{name}}} {commit_ts}");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->Columns(), ElementsAre("name"));
  Change c = Row5();
  absl::StatusOr<std::optional<std::string>> s = t->Expand(c, c.after);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(**s, "public.orders:insert@0/16B3748/77 {Ann} 2026-01-02T10:00:00Z");
  c.after[1] = Value::UnchangedToast(oid::kText);
  EXPECT_FALSE(*t->Expand(c, c.after));  // not sent: unknown
  c.after[1] = Value::Null(oid::kText);
  EXPECT_EQ(**t->Expand(c, c.after), "public.orders:insert@0/16B3748/77 {} 2026-01-02T10:00:00Z");
  EXPECT_THAT(Template::Parse("a{b").status().message(), HasSubstr("at character 2: '{' is never closed"));
  EXPECT_THAT(Template::Parse("a}b").status().message(), HasSubstr("'}' without '{'"));
  EXPECT_THAT(Template::Parse("{}").status().message(), HasSubstr("names nothing"));
  absl::StatusOr<Template> missing = Template::Parse("{nope}");
  EXPECT_THAT(missing->Expand(c, c.after).status().message(),
              HasSubstr("table public.orders has no column 'nope'"));
}

TEST(SetTest, OverwritesAndAddsColumnsOnBothImages) {
  absl::StatusOr<TransformChain> chain = Chain(
      "  - set: {table: public.orders, columns: {region: 'x-{region}', label: '{name} ({id})', "
      "synced: {value: '{commit_ts}', type: timestamptz}, n: {value: '7', type: integer}}}\n");
  ASSERT_TRUE(chain.ok()) << chain.status();
  Change update = Row5(Op::kUpdate);
  update.before = update.after;
  update.before[1] = Value::Text(oid::kText, "Old");
  update.before_kind = BeforeKind::kFull;
  absl::StatusOr<Change> c = ApplyOne(*chain, update);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->table->columns.size(), 8u);
  EXPECT_EQ(c->table->columns[5].name, "label");
  EXPECT_EQ(c->table->columns[5].type_oid, oid::kText);
  EXPECT_EQ(c->table->columns[6].type_oid, oid::kTimestamptz);
  EXPECT_EQ(c->table->columns[7].type_oid, oid::kInt4);
  EXPECT_EQ(c->after[4].data, "x-eu");
  EXPECT_EQ(c->after[5].data, "Ann (5)");
  EXPECT_EQ(c->before[5].data, "Old (5)");
  EXPECT_EQ(c->after[6].data, "2026-01-02 10:00:00+00");
  EXPECT_EQ(c->after[7].data, "7");

  // A value from an unsent column is unsent; an existing column's type is kept and checked.
  Change toast = Row5();
  toast.after[1] = Value::UnchangedToast(oid::kText);
  c = ApplyOne(*chain, toast);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->after[5].is_unchanged_toast());

  chain = Chain("  - set: {table: public.orders, columns: {cents: '{name}'}}\n");
  ASSERT_TRUE(chain.ok());
  EXPECT_THAT(ApplyOne(*chain, Row5()).status().message(),
              HasSubstr("transforms[0] (set): public.orders.cents: 'Ann' is not an integer"));
  chain = Chain("  - set: {table: public.orders, columns: {id: '1'}}\n");
  ASSERT_TRUE(chain.ok());
  EXPECT_THAT(ApplyOne(*chain, Row5()).status().message(), HasSubstr("is part of the key"));
  EXPECT_THAT(Chain("  - set: {table: public.orders, columns: {n: {value: abc, type: integer}}}\n")
                  .status()
                  .message(),
              HasSubstr("'abc' is not an integer"));
}

TEST(CastTest, ConvertsAndScalesExactlyAndNamesWhatDoesNotConvert) {
  absl::StatusOr<TransformChain> chain = Chain(
      "  - cast: {table: public.orders, columns: {cents: {type: numeric, scale: 0.01}, "
      "placed: date, name: text}}\n");
  ASSERT_TRUE(chain.ok()) << chain.status();
  absl::StatusOr<Change> c = ApplyOne(*chain, Row5());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->table->columns[2].type_oid, oid::kNumeric);
  EXPECT_EQ(c->after[2].data, "123.45");
  EXPECT_EQ(c->after[3].data, "2026-01-02");
  EXPECT_EQ(c->after[3].type_oid, oid::kDate);

  chain = Chain("  - cast: {table: public.orders, columns: {name: integer}}\n");
  ASSERT_TRUE(chain.ok());
  absl::Status s = ApplyOne(*chain, Row5()).status();
  EXPECT_THAT(s.message(), HasSubstr("transforms[0] (cast): public.orders.name of the insert at "
                                     "0/16B3748 (id=5): 'Ann' is not an integer"));

  EXPECT_EQ(*ScaleNumber("12345", "0.01"), "123.45");
  EXPECT_EQ(*ScaleNumber("-5", "0.001"), "-0.005");
  EXPECT_EQ(*ScaleNumber("1.5", "1000"), "1500");
  EXPECT_EQ(*ScaleNumber("3", "2.5"), "7.5");
  EXPECT_EQ(*ConvertText("12.5", oid::kInt4), "13");
  EXPECT_EQ(*ConvertText("-12.5", oid::kInt4), "-13");
  EXPECT_EQ(*ConvertText("99.9", oid::kInt2), "100");
  EXPECT_FALSE(ConvertText("40000", oid::kInt2).ok());
  EXPECT_FALSE(ConvertText("9223372036854775808", oid::kInt8).ok());
  EXPECT_EQ(*ConvertText("yes", oid::kBool), "t");
  EXPECT_EQ(*ConvertText("A0EEBC999C0B4EF8BB6D6BB9BD380A11", oid::kUuid),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  EXPECT_FALSE(ConvertText("{\"a\":", oid::kJsonb).ok());
  EXPECT_EQ(*ConvertText("2026-01-02T10:00:00+02:00", oid::kTimestamptz), "2026-01-02 08:00:00+00");
  EXPECT_THAT(Chain("  - cast: {table: public.orders, columns: {id: text}}\n").ok(), true);
  EXPECT_THAT(Chain("  - cast: {table: public.orders, columns: {x: money}}\n").status().message(),
              HasSubstr("unknown type 'money'"));
}

TEST(RouteTest, SetsTheDestinationFromTheRowOrTheKey) {
  absl::StatusOr<TransformChain> chain =
      Chain("  - route: {table: 'public.*', to: 'orders.{region}.{id}'}\n");
  ASSERT_TRUE(chain.ok()) << chain.status();
  absl::StatusOr<Change> c = ApplyOne(*chain, Row5());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->destination, "orders.eu.5");
  Change del = Row5(Op::kDelete);
  del.before = del.after;
  del.after.clear();
  del.before_kind = BeforeKind::kFull;
  EXPECT_EQ(ApplyOne(*chain, del)->destination, "orders.eu.5");  // the old row of a delete
  del.before_kind = BeforeKind::kKey;  // only the key is known: region is not
  EXPECT_THAT(ApplyOne(*chain, del).status().message(),
              HasSubstr("reads region, which a delete on public.orders does not carry"));
  Change toast = Row5(Op::kUpdate);
  toast.after[4] = Value::UnchangedToast(oid::kText);
  EXPECT_THAT(ApplyOne(*chain, toast).status().message(),
              HasSubstr("reads a value of public.orders the stream did not send"));
  EXPECT_THAT(Chain("  - route: {to: 'a{'}\n").status().message(), HasSubstr("invalid template"));
}

TEST(TemplateTest, RandomTextNeverCrashesTheParsersAndConverters) {
  std::mt19937_64 rng(7);
  const std::string alphabet = "{}{{}}abname id.:-+eE0123456789 '\"TZ";
  Change c = Row5();
  for (int i = 0; i < 20000; ++i) {
    std::string text;
    const size_t n = rng() % 20;
    for (size_t j = 0; j < n; ++j) text += alphabet[rng() % alphabet.size()];
    if (absl::StatusOr<Template> t = Template::Parse(text); t.ok()) {
      t->Expand(c, c.after).IgnoreError();
    }
    for (uint32_t type : {oid::kInt2, oid::kInt4, oid::kInt8, oid::kNumeric, oid::kFloat8,
                          oid::kBool, oid::kDate, oid::kTimestamptz, oid::kJsonb, oid::kUuid}) {
      ConvertText(text, type).IgnoreError();
    }
    ScaleNumber(text, "0.01").IgnoreError();
    ScaleNumber("12.5", text).IgnoreError();
  }
}

}  // namespace
}  // namespace pgflow
