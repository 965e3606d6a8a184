#include "schemas/ddl.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgflow {
namespace {

using ::testing::HasSubstr;

TEST(ParseDdlCommandTest, TableWithShapesBeforeAndAfter) {
  absl::StatusOr<DdlCommand> cmd = ParseDdlCommand(R"json({
    "tag": "ALTER TABLE", "object_type": "table", "identity": "app.t", "schema": "app",
    "name": "t", "objid": 16386, "statement": "ALTER TABLE app.t ADD c int",
    "old": {"relid": 16386, "schema": "app", "name": "t",
            "columns": [{"attnum": 1, "name": "id", "type": "integer", "not_null": true}],
            "primary_key": ["id"]},
    "table": {"relid": "16386", "schema": "app", "name": "t",
              "columns": [{"attnum": 1, "name": "id", "type": "integer", "not_null": true,
                           "identity": "a"},
                          {"attnum": 3, "name": "c", "type": "integer", "default": "7",
                           "generated": null}],
              "primary_key": ["id"]}})json");
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_TRUE(cmd->IsTable());
  EXPECT_EQ(cmd->objid, 16386u);
  ASSERT_TRUE(cmd->table.has_value());
  ASSERT_TRUE(cmd->old_table.has_value());
  EXPECT_EQ(cmd->table->relid, 16386u) << "OIDs may arrive as strings";
  ASSERT_EQ(cmd->table->columns.size(), 2u);
  EXPECT_EQ(cmd->table->columns[0].identity, 'a');
  EXPECT_EQ(cmd->table->columns[1].attnum, 3);
  EXPECT_EQ(cmd->table->columns[1].default_expr, "7");
  EXPECT_EQ(cmd->table->FindAttnum(3)->name, "c");
  EXPECT_EQ(cmd->table->FindName("id")->attnum, 1);
  EXPECT_EQ(cmd->table->FindName("nope"), nullptr);
  EXPECT_EQ(cmd->old_table->primary_key, std::vector<std::string>{"id"});
}

TEST(ParseDdlCommandTest, IndexSequenceAndDrop) {
  absl::StatusOr<DdlCommand> index = ParseDdlCommand(R"json({
    "tag": "CREATE INDEX", "object_type": "index", "identity": "app.t_v", "schema": "app",
    "name": "t_v", "index": {"definition": "CREATE INDEX t_v ON app.t USING btree (v)",
    "using": "btree (v)", "unique": false, "table_schema": "app", "table_name": "t",
    "constraint": false}})json");
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->index_using, "btree (v)");
  EXPECT_EQ(index->on_table, "t");

  absl::StatusOr<DdlCommand> seq = ParseDdlCommand(R"json({
    "tag": "CREATE SEQUENCE", "object_type": "sequence", "identity": "app.s", "schema": "app",
    "name": "s", "sequence": {"type": "bigint", "start": "1", "increment": "1", "min": "1",
    "max": "9223372036854775807", "cycle": false, "identity": false,
    "owned_by": {"schema": "app", "table": "t", "column": "id"}}})json");
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(seq->sequence_max, 9223372036854775807LL);
  EXPECT_EQ(seq->sequence_owner_column, "id");

  absl::StatusOr<DdlCommand> drop = ParseDdlCommand(
      R"json({"tag": "DROP TABLE", "object_type": "table", "identity": "app.t",
              "schema": "app", "name": "t", "dropped": true})json");
  ASSERT_TRUE(drop.ok()) << drop.status();
  EXPECT_TRUE(drop->dropped);
  EXPECT_FALSE(drop->table.has_value());
}

TEST(ParseDdlCommandTest, MalformedContentNamesTheField) {
  EXPECT_THAT(ParseDdlCommand("not json").status().message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(ParseDdlCommand("[1]").status().message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(ParseDdlCommand(R"({"object_type": "table"})").status().message(),
              HasSubstr("tag or object_type is missing"));
  EXPECT_THAT(ParseDdlCommand(R"({"tag": 5, "object_type": "table"})").status().message(),
              HasSubstr("tag is not a string"));
  EXPECT_THAT(ParseDdlCommand(R"({"tag": "ALTER TABLE", "object_type": "table", "identity": "t"})")
                  .status()
                  .message(),
              HasSubstr("has no table shape"));
  EXPECT_THAT(ParseDdlCommand(R"({"tag": "ALTER TABLE", "object_type": "table",
                                  "table": {"name": "t", "columns": [{"name": "a"}]}})")
                  .status()
                  .message(),
              HasSubstr("table.columns[0] lacks its attnum, name or type"));
  EXPECT_THAT(ParseDdlCommand(R"({"tag": "X", "object_type": "sequence",
                                  "sequence": {"start": "abc"}})")
                  .status()
                  .message(),
              HasSubstr("sequence.start is not an integer"));
  // Truncations of a valid message never crash and never parse as something else.
  const std::string valid =
      R"({"tag": "DROP TABLE", "object_type": "table", "name": "t", "dropped": true})";
  for (size_t n = 0; n < valid.size(); ++n) {
    EXPECT_FALSE(ParseDdlCommand(valid.substr(0, n)).ok()) << n;
  }
}

}  // namespace
}  // namespace pgflow
