#include "sinks/postgres/sql_builders.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgflow {
namespace {

using ::testing::HasSubstr;

Value V(const std::string& s) { return Value::Text(oid::kText, s); }

// shop.items (id bigint, name text, qty integer) keyed on id, as TargetTables would know it.
TargetTable Items() {
  auto schema = std::make_shared<TableSchema>();
  schema->schema = "shop";
  schema->name = "items";
  schema->columns = {{"id", oid::kInt8, -1, true, ""},
                     {"name", oid::kText, -1, false, ""},
                     {"qty", oid::kInt4, -1, false, ""}};
  TargetTable t;
  t.schema = schema;
  t.name = "shop.items";
  t.quoted = R"("shop"."items")";
  t.column_list = R"("id", "name", "qty")";
  t.key = {0};
  t.types = {"bigint", "text", "integer"};
  t.always_identity = {false, false, false};
  return t;
}

// The same table without a key (REPLICA IDENTITY FULL), one column json.
TargetTable Keyless() {
  TargetTable t = Items();
  auto schema = std::make_shared<TableSchema>(*t.schema);
  schema->columns[2] = {"doc", oid::kJson, -1, false, ""};
  t.schema = schema;
  t.key.clear();
  return t;
}

TEST(PostgresSqlBuildersTest, AppendArrayElementQuotesEscapesAndWritesNull) {
  std::string array = "{";
  AppendArrayElement(&array, V("plain"));
  AppendArrayElement(&array, V(R"(a "quoted" \ b)"));
  AppendArrayElement(&array, Value::Null(oid::kText));
  AppendArrayElement(&array, V(""));
  array += '}';
  EXPECT_EQ(array, R"({plain,"a \"quoted\" \\ b",NULL,""})");
}

TEST(PostgresSqlBuildersTest, TextArraysOnePerColumn) {
  const TargetTable t = Items();
  const std::vector<Row> rows = {{V("1"), V("a,b"), Value::Null(oid::kInt4)},
                                 {V("2"), V("c"), V("7")}};
  std::vector<std::string> arrays;
  ASSERT_TRUE(TextArrays(
      t, rows.size(), 3, [&](size_t r, size_t c) -> const Value& { return rows[r][c]; }, &arrays));
  EXPECT_THAT(arrays, ::testing::ElementsAre(R"({1,2})", R"({"a,b",c})", R"({NULL,7})"));
}

TEST(PostgresSqlBuildersTest, TextArraysRefusesOneRowBinaryValuesAndRegTypes) {
  TargetTable t = Items();
  std::vector<Row> rows = {{V("1"), V("a"), V("1")}, {V("2"), V("b"), V("2")}};
  auto at = [&](size_t r, size_t c) -> const Value& { return rows[r][c]; };
  std::vector<std::string> arrays;
  EXPECT_FALSE(TextArrays(t, 1, 3, at, &arrays));
  rows[1][2].kind = ValueKind::kBinary;
  EXPECT_FALSE(TextArrays(t, 2, 3, at, &arrays));
  rows[1][2].kind = ValueKind::kText;
  t.text_casts = false;
  EXPECT_FALSE(TextArrays(t, 2, 3, at, &arrays));
}

TEST(PostgresSqlBuildersTest, UpsertStatements) {
  TargetTable t = Items();
  EXPECT_EQ(
      ConflictClause(t),
      R"( ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", "qty" = EXCLUDED."qty")");
  EXPECT_EQ(InsertSql(t, 2),
            R"(INSERT INTO "shop"."items" ("id", "name", "qty") OVERRIDING SYSTEM VALUE VALUES )"
            R"(($1, $2, $3), ($4, $5, $6))" +
                ConflictClause(t));
  EXPECT_EQ(UnnestInsertSql(t),
            R"(INSERT INTO "shop"."items" ("id", "name", "qty") OVERRIDING SYSTEM VALUE SELECT )"
            R"(pgflow_u.pgflow_c0::bigint AS pgflow_c0, pgflow_u.pgflow_c1::text AS pgflow_c1, )"
            R"(pgflow_u.pgflow_c2::integer AS pgflow_c2 FROM unnest($1::text[], $2::text[], )"
            R"($3::text[]) AS pgflow_u (pgflow_c0, pgflow_c1, pgflow_c2))" +
                ConflictClause(t));
  // A GENERATED ALWAYS column is not set on conflict; with nothing left to set, DO NOTHING.
  t.always_identity = {false, true, true};
  EXPECT_EQ(ConflictClause(t), R"( ON CONFLICT ("id") DO NOTHING)");
  // Until the key is built, and without a key, plain inserts.
  t.plain_inserts = true;
  EXPECT_EQ(ConflictClause(t), "");
  EXPECT_EQ(ConflictClause(Keyless()), "");
}

TEST(PostgresSqlBuildersTest, UpdateBatchAsUnnestOrValues) {
  const TargetTable t = Items();
  EXPECT_EQ(UpdateBatchSql(t, {2}, 5, /*text_arrays=*/true),
            R"(UPDATE "shop"."items" AS pgflow_t SET "qty" = pgflow_v.pgflow_c0 FROM (SELECT )"
            R"(pgflow_u.pgflow_k0::bigint AS pgflow_k0, pgflow_u.pgflow_c0::integer AS )"
            R"(pgflow_c0 FROM unnest($1::text[], $2::text[]) AS pgflow_u (pgflow_k0, )"
            R"(pgflow_c0)) AS pgflow_v (pgflow_k0, pgflow_c0) WHERE pgflow_t."id" = )"
            R"(pgflow_v.pgflow_k0)");
  EXPECT_EQ(UpdateBatchSql(t, {1, 2}, 2, /*text_arrays=*/false),
            R"(UPDATE "shop"."items" AS pgflow_t SET "name" = pgflow_v.pgflow_c0, "qty" = )"
            R"(pgflow_v.pgflow_c1 FROM (VALUES ($1::bigint, $2::text, $3::integer), )"
            R"(($4::bigint, $5::text, $6::integer)) AS pgflow_v (pgflow_k0, pgflow_c0, )"
            R"(pgflow_c1) WHERE pgflow_t."id" = pgflow_v.pgflow_k0)");
}

TEST(PostgresSqlBuildersTest, UpdateOneRowSetsKnownValuesOnly) {
  TargetTable t = Items();
  StatementParams params;
  absl::StatusOr<std::string> sql = UpdateRowSql(
      t, {V("5"), V("old"), V("1")}, {V("5"), Value::UnchangedToast(oid::kText), V("2")}, &params);
  ASSERT_TRUE(sql.ok()) << sql.status();
  EXPECT_EQ(*sql, R"(UPDATE "shop"."items" SET "id" = $1, "qty" = $2 WHERE "id" = $3)");
  EXPECT_EQ(params.size(), 3);
  EXPECT_STREQ(params.values()[0], "5");
  EXPECT_STREQ(params.values()[1], "2");
  EXPECT_STREQ(params.values()[2], "5");

  // Nothing to set: no statement, and the key is not looked at.
  t.always_identity = {true, false, true};
  StatementParams none;
  sql = UpdateRowSql(t, {Value::Null(oid::kInt8), V("a"), V("1")},
                     {V("5"), Value::UnchangedToast(oid::kText), V("2")}, &none);
  ASSERT_TRUE(sql.ok()) << sql.status();
  EXPECT_EQ(*sql, "");

  StatementParams missing;
  sql = UpdateRowSql(Items(), {Value::Null(oid::kInt8), V("a"), V("1")}, {V("5"), V("a"), V("2")},
                     &missing);
  EXPECT_TRUE(absl::IsDataLoss(sql.status()));
  EXPECT_THAT(sql.status().message(), HasSubstr("no value for key column id"));
}

TEST(PostgresSqlBuildersTest, KeylessRowsFoundByEveryKnownValue) {
  const TargetTable t = Keyless();
  StatementParams params;
  absl::StatusOr<std::string> sql =
      DeleteRowSql(t, {V("5"), Value::Null(oid::kText), V(R"({"a": 1})")}, &params);
  ASSERT_TRUE(sql.ok()) << sql.status();
  EXPECT_EQ(*sql, R"(DELETE FROM "shop"."items" WHERE ctid = (SELECT ctid FROM "shop"."items" )"
                  R"(WHERE "id" = $1 AND "name" IS NULL AND "doc"::text = $2 LIMIT 1))");
  EXPECT_EQ(params.size(), 2);

  StatementParams none;
  sql = DeleteRowSql(t,
                     {Value::UnchangedToast(oid::kInt8), Value::UnchangedToast(oid::kText),
                      Value::UnchangedToast(oid::kJson)},
                     &none);
  EXPECT_TRUE(absl::IsDataLoss(sql.status()));
}

TEST(PostgresSqlBuildersTest, DeleteStatements) {
  TargetTable t = Items();
  EXPECT_TRUE(DeletesByArray(t));
  EXPECT_EQ(DeleteAnySql(t), R"(DELETE FROM "shop"."items" WHERE "id" = ANY ($1::bigint[]))");
  EXPECT_EQ(DeleteInSql(t, 3), R"(DELETE FROM "shop"."items" WHERE "id" IN ($1, $2, $3))");
  t.types[0] = "integer[]";
  EXPECT_FALSE(DeletesByArray(t));
  t.key = {0, 2};
  EXPECT_FALSE(DeletesByArray(t));
  EXPECT_EQ(DeleteInSql(t, 2),
            R"(DELETE FROM "shop"."items" WHERE ("id", "qty") IN (($1, $2), ($3, $4)))");
}

TEST(PostgresSqlBuildersTest, SnapshotStages) {
  TargetTable t = Items();
  t.stage = "pgflow_stage_1";
  t.read_stage = "pgflow_read_2";
  t.read_binary = {true, false, true};
  EXPECT_EQ(CreateStageSql(t),
            R"(CREATE TEMP TABLE IF NOT EXISTS pgflow_stage_1 AS SELECT "id", "name", "qty" )"
            R"(FROM "shop"."items" WITH NO DATA)");
  EXPECT_EQ(CopyInSql(t, t.quoted),
            R"(COPY "shop"."items" ("id", "name", "qty") FROM STDIN (FORMAT binary))");
  EXPECT_EQ(UpsertFromStageSql(t),
            R"(INSERT INTO "shop"."items" ("id", "name", "qty") OVERRIDING SYSTEM VALUE )"
            R"(SELECT "id", "name", "qty" FROM pgflow_stage_1)" +
                ConflictClause(t) + "; TRUNCATE pgflow_stage_1");
  EXPECT_EQ(CreateReadStageSql(t),
            "CREATE TEMP TABLE IF NOT EXISTS pgflow_read_2 (c0 bigint, c1 text, c2 integer)");
  EXPECT_EQ(CopyIntoReadStageSql(t), "COPY pgflow_read_2 FROM STDIN (FORMAT binary)");
  t.read_binary = {true, false, false};
  EXPECT_EQ(UpsertFromReadStageSql(t),
            R"(INSERT INTO "shop"."items" ("id", "name", "qty") OVERRIDING SYSTEM VALUE )"
            R"(SELECT c0, c1::text, c2::integer FROM pgflow_read_2)" +
                ConflictClause(t) + "; TRUNCATE pgflow_read_2");
}

TEST(PostgresSqlBuildersTest, TruncateWithItsOptions) {
  Change change;
  change.op = Op::kTruncate;
  EXPECT_EQ(TruncateSql(Items(), change), R"(TRUNCATE "shop"."items")");
  change.truncate_restart_identity = true;
  change.truncate_cascade = true;
  EXPECT_EQ(TruncateSql(Items(), change), R"(TRUNCATE "shop"."items" RESTART IDENTITY CASCADE)");
}

TEST(PostgresSqlBuildersTest, KeyColumnsAndDescribedKeys) {
  TargetTable t = Items();
  auto schema = std::make_shared<TableSchema>(*t.schema);
  schema->columns[2].name = R"(q"ty)";
  t.schema = schema;
  t.key = {0, 2};
  EXPECT_EQ(KeyColumnsArray(t), R"({id,"q\"ty"})");
  EXPECT_EQ(DescribeKey(t, {V("5"), V("x"), Value::Null(oid::kInt4)}), R"((id, q"ty)=(5, null))");
  EXPECT_EQ(
      DescribeKey(Keyless(), {V("5"), Value::UnchangedToast(oid::kText), V(std::string(120, 'x'))}),
      "(id, name, doc)=(5, <unchanged toast>, " + std::string(100, 'x') + "...)");
}

}  // namespace
}  // namespace pgflow
