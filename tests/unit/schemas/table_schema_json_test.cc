#include "schemas/table_schema_json.h"

#include <string>

#include <gtest/gtest.h>

namespace pgflow {
namespace {

TableSchema Items() {
  TableSchema t;
  t.relation_id = 16385;
  t.schema = "public";
  t.name = "it\"ems";
  t.replica_identity = 'd';
  t.version = 3;
  t.columns = {{"id", 20, -1, true, ""},
               {"price", 1700, 655366, false, ""},
               {"mood", 16390, -1, false, "public.mood"},
               {"tags", 16391, -1, false, "public._mood"}};
  return t;
}

TEST(TableSchemaJsonTest, RoundTrips) {
  std::string json;
  AppendTableSchemaJson(Items(), &json);
  EXPECT_EQ(json,
            R"({"relid":16385,"schema":"public","table":"it\"ems","identity":"d","version":3,)"
            R"("columns":[["id",20,-1,1],["price",1700,655366,0],["mood",16390,-1,0,)"
            R"("public.mood"],["tags",16391,-1,0,"public._mood"]]})");
  absl::StatusOr<TableSchema> back = ParseTableSchemaJson(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->SameShape(Items()));
  EXPECT_EQ(back->version, 3u);
}

TEST(TableSchemaJsonTest, TheRealPrimaryKeyOfAFullTableTravels) {
  TableSchema t = Items();
  t.replica_identity = 'f';
  for (Column& c : t.columns) c.is_key = true;
  t.primary_key = {"price", "id"};
  std::string json;
  AppendTableSchemaJson(t, &json);
  EXPECT_NE(json.find(R"(,"primary_key":["price","id"]})"), std::string::npos) << json;
  absl::StatusOr<TableSchema> back = ParseTableSchemaJson(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->SameShape(t));
  EXPECT_EQ(back->RowKeyColumns(), (std::vector<size_t>{0, 1}));  // table order
  t.primary_key.clear();
  EXPECT_FALSE(back->SameShape(t));
  EXPECT_TRUE(t.RowKeyColumns().empty());
}

TEST(TableSchemaJsonTest, MistakesAreNamed) {
  auto error = [](const std::string& json) {
    absl::StatusOr<TableSchema> t = ParseTableSchemaJson(json);
    return t.ok() ? std::string("ok") : std::string(t.status().message());
  };
  const std::string head = R"({"relid":1,"schema":"s","table":"t",)";
  EXPECT_EQ(error(head + R"("identity":"d","columns":[]})"), "ok");
  EXPECT_EQ(error(R"({"schema":"s"})"), "table description: relid: missing");
  EXPECT_EQ(error(head + R"("identity":"x","columns":[]})"),
            "table description: identity: expected d, n, f or i, got 'x'");
  EXPECT_EQ(error(head + R"("identity":"d","columns":[["",1,-1,0]]})"),
            "table description: columns[0]: empty column name");
  EXPECT_EQ(error(head + R"("identity":"d","columns":[["a",0,-1,0]]})"),
            "table description: columns[0] type OID: out of range [1, 4294967295]: 0");
  EXPECT_EQ(error(head + R"("identity":"d","columns":[["a",1,-1,2]]})"),
            "table description: columns[0] key: out of range [0, 1]: 2");
  EXPECT_EQ(error(head + R"("identity":"d","columns":[["a",1]]})"),
            "table description: columns[0]: expected [name, type OID, type modifier, key] and a "
            "type name");
  EXPECT_EQ(error(head + R"("identity":"f","columns":[["a",1,-1,1]],"primary_key":["b"]})"),
            "table description: primary_key: no column \"b\"");
  EXPECT_EQ(error(head + R"("identity":"f","columns":[["a",1,-1,1]],"primary_key":["a","a"]})"),
            "table description: primary_key: \"a\" twice");
  EXPECT_EQ(error("[]"), "table description: expected an object, got an array");
  EXPECT_NE(error("{"), "ok");
}

}  // namespace
}  // namespace pgflow
