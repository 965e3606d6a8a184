// select, drop_columns and rename (transformers/columns.h, rename.h) and what they share
// (transformers/reshape.h): rows, output schemas and captured schema changes reshaped alike.

#include "transformers/reshape.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/unit/transformers/transform_testing.h"

namespace pgflow {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<TransformChain> Chain(const std::string& transforms) {
  return transform_testing::ChainOf(transforms);
}

// public.t (id int key, name text, ssn text, n int).
TableSchemaPtr Table() {
  auto t = std::make_shared<TableSchema>();
  t->schema = "public";
  t->name = "t";
  t->columns = {{"id", oid::kInt4, -1, true, ""},
                {"name", oid::kText, -1, false, ""},
                {"ssn", oid::kText, -1, false, ""},
                {"n", oid::kInt4, -1, false, ""}};
  return t;
}

Change Insert(TableSchemaPtr table) {
  Change c;
  c.op = Op::kInsert;
  c.table = std::move(table);
  c.after = {Value::Text(oid::kInt4, "1"), Value::Text(oid::kText, "Ann"),
             Value::Text(oid::kText, "123-45"), Value::UnchangedToast(oid::kInt4)};
  return c;
}

EventBatchPtr Batch(std::vector<Change> changes) { return transform_testing::BatchOf(std::move(changes)); }

std::vector<std::string> Names(const TableSchema& t) {
  std::vector<std::string> names;
  for (const Column& c : t.columns) names.push_back(c.name);
  return names;
}

TEST(ReshapeTest, DropColumnsRemovesValuesAndColumnsAndKeepsOneOutputSchemaPerVersion) {
  absl::StatusOr<TransformChain> chain =
      Chain("  - drop_columns: {table: public.t, columns: [ssn]}\n");
  ASSERT_TRUE(chain.ok()) << chain.status();
  TableSchemaPtr table = Table();
  Change update = Insert(table);
  update.op = Op::kUpdate;
  update.before = update.after;
  update.before_kind = BeforeKind::kFull;
  absl::StatusOr<EventBatchPtr> out = chain->Apply(Batch({Insert(table), update}));
  ASSERT_TRUE(out.ok()) << out.status();
  const Change& a = (*out)->events[0].change;
  const Change& b = (*out)->events[1].change;
  EXPECT_THAT(Names(*a.table), ElementsAre("id", "name", "n"));
  EXPECT_TRUE(a.table->reshaped);
  EXPECT_EQ(a.table, b.table);  // the same output object: sinks cache by pointer
  ASSERT_EQ(a.after.size(), 3u);
  EXPECT_EQ(a.after[1].data, "Ann");
  EXPECT_TRUE(a.after[2].is_unchanged_toast());  // still not sent
  ASSERT_EQ(b.before.size(), 3u);
  for (const Value& v : b.before) EXPECT_NE(v.data, "123-45");
  EXPECT_EQ(table->columns.size(), 4u);  // the input schema is untouched
}

TEST(ReshapeTest, DroppingAKeyColumnOrAMissingOneIsAnError) {
  absl::StatusOr<TransformChain> chain = Chain("  - drop_columns: {table: public.t, columns: [id]}\n");
  ASSERT_TRUE(chain.ok()) << chain.status();
  absl::StatusOr<EventBatchPtr> out = chain->Apply(Batch({Insert(Table())}));
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("public.t.id is part of the key"));
  EXPECT_THAT(out.status().message(), HasSubstr("transforms[0] (drop_columns)"));

  chain = Chain("  - drop_columns: {table: public.t, columns: [snn]}\n");
  ASSERT_TRUE(chain.ok()) << chain.status();
  out = chain->Apply(Batch({Insert(Table())}));
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("table public.t has no column 'snn'"));

  // A schema's tables need not all have it.
  chain = Chain("  - drop_columns: {table: 'public.*', columns: [snn]}\n");
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_TRUE(chain->Apply(Batch({Insert(Table())})).ok());
}

TEST(ReshapeTest, SelectKeepsTheListedColumnsAndTheKey) {
  absl::StatusOr<TransformChain> chain = Chain("  - select: {table: public.t, columns: [n]}\n");
  ASSERT_TRUE(chain.ok()) << chain.status();
  absl::StatusOr<EventBatchPtr> out = chain->Apply(Batch({Insert(Table())}));
  ASSERT_TRUE(out.ok()) << out.status();
  const Change& c = (*out)->events[0].change;
  EXPECT_THAT(Names(*c.table), ElementsAre("id", "n"));
  EXPECT_EQ(c.after[0].data, "1");
  EXPECT_EQ(c.table->RowKeyColumns(), std::vector<size_t>{0});
}

TEST(ReshapeTest, RenameRenamesTableAndColumnsForLaterTransforms) {
  absl::StatusOr<TransformChain> chain = Chain(
      "  - rename: {table: public.t, to: crm.people, columns: {name: full_name}}\n"
      "  - drop_columns: {table: crm.people, columns: [ssn]}\n");
  ASSERT_TRUE(chain.ok()) << chain.status();
  absl::StatusOr<EventBatchPtr> out = chain->Apply(Batch({Insert(Table())}));
  ASSERT_TRUE(out.ok()) << out.status();
  const Change& c = (*out)->events[0].change;
  EXPECT_EQ(c.table->QualifiedName(), "crm.people");
  EXPECT_THAT(Names(*c.table), ElementsAre("id", "full_name", "n"));

  absl::StatusOr<TransformChain> clash =
      Chain("  - rename: {table: public.t, columns: {name: ssn}}\n");
  ASSERT_TRUE(clash.ok());
  out = clash->Apply(Batch({Insert(Table())}));
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("would be named 'ssn'"));

  EXPECT_THAT(Chain("  - rename: {table: 'public.*', to: archive.t}\n").status().message(),
              HasSubstr("write {table} in `to`"));
  EXPECT_THAT(Chain("  - rename: {table: public.t}\n").status().message(),
              HasSubstr("rename needs `to`"));
  absl::StatusOr<TransformChain> templated =
      Chain("  - rename: {table: 'public.*', to: 'archive.old_{table}'}\n");
  ASSERT_TRUE(templated.ok()) << templated.status();
  out = templated->Apply(Batch({Insert(Table())}));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)->events[0].change.table->QualifiedName(), "archive.old_t");
}

// An ALTER TABLE ... ADD COLUMN as the capture describes it: the shape before and after.
Change AddColumn(const std::string& added) {
  auto col = [](int attnum, const std::string& name, const std::string& type) {
    return nlohmann::json{{"attnum", attnum}, {"name", name}, {"type", type}, {"not_null", false}};
  };
  nlohmann::json before = {
      {"relid", 42},
      {"schema", "public"},
      {"name", "t"},
      {"columns",
       {col(1, "id", "integer"), col(2, "name", "text"), col(3, "ssn", "text"), col(4, "n", "integer")}},
      {"primary_key", {"id"}},
      {"constraints",
       {{{"name", "t_ssn_check"}, {"type", "c"}, {"definition", "CHECK ((length(ssn) > 3))"}},
        {{"name", "t_name_check"}, {"type", "c"}, {"definition", "CHECK ((name <> ''::text))"}}}}};
  nlohmann::json after = before;
  after["columns"].push_back(col(5, added, "text"));
  nlohmann::json doc = {{"tag", "ALTER TABLE"}, {"object_type", "table"}, {"identity", "public.t"},
                        {"schema", "public"},   {"name", "t"},          {"objid", 42},
                        {"statement", "ALTER TABLE t ADD COLUMN " + added + " text"},
                        {"old", before},        {"table", after}};
  Change c;
  c.op = Op::kDdl;
  c.table = Table();
  c.prefix = std::string(kDdlMessagePrefix);
  c.content = doc.dump();
  c.ddl = std::make_shared<const DdlCommand>(*ParseDdlCommand(c.content));
  return c;
}

std::vector<std::string> ShapeNames(const DdlTableShape& shape) {
  std::vector<std::string> names;
  for (const DdlColumn& c : shape.columns) names.push_back(c.name);
  return names;
}

TEST(ReshapeTest, SchemaChangesAreRewrittenAsIfTheSourceHadTheOutputShape) {
  absl::StatusOr<TransformChain> chain = Chain(
      "  - drop_columns: {table: public.t, columns: [ssn]}\n"
      "  - rename: {table: public.t, to: crm.people, columns: {name: full_name}}\n");
  ASSERT_TRUE(chain.ok()) << chain.status();
  absl::StatusOr<EventBatchPtr> out = chain->Apply(Batch({AddColumn("email")}));
  ASSERT_TRUE(out.ok()) << out.status();
  const Change& c = (*out)->events[0].change;
  ASSERT_NE(c.ddl, nullptr);
  EXPECT_EQ(c.ddl->schema, "crm");
  EXPECT_EQ(c.ddl->name, "people");
  EXPECT_EQ(c.ddl->identity, "crm.people");
  ASSERT_TRUE(c.ddl->table && c.ddl->old_table);
  EXPECT_THAT(ShapeNames(*c.ddl->old_table), ElementsAre("id", "full_name", "n"));
  EXPECT_THAT(ShapeNames(*c.ddl->table), ElementsAre("id", "full_name", "n", "email"));
  EXPECT_EQ(c.ddl->table->name, "people");
  EXPECT_THAT(c.ddl->table->primary_key, ElementsAre("id"));
  // The CHECK on the dropped column is gone; the one on the renamed column follows it.
  ASSERT_EQ(c.ddl->table->constraints.size(), 1u);
  EXPECT_EQ(c.ddl->table->constraints[0].definition, "CHECK ((\"full_name\" <> ''::text))");
  EXPECT_THAT(c.content, Not(HasSubstr("\"ssn\"")));  // what jsonl writes agrees
  EXPECT_EQ(c.table->QualifiedName(), "crm.people");  // the version before the command

  // A column a select does not list stays out when the source adds it.
  chain = Chain("  - select: {table: public.t, columns: [name]}\n");
  ASSERT_TRUE(chain.ok());
  out = chain->Apply(Batch({AddColumn("secret")}));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(ShapeNames(*(*out)->events[0].change.ddl->table), ElementsAre("id", "name"));
}

// A DDL change on public.t with the shapes before and after given as JSON objects.
Change DdlWith(const nlohmann::json& before, const nlohmann::json& after,
               const std::string& object_type = "table") {
  nlohmann::json doc = {{"tag", "ALTER TABLE"}, {"object_type", object_type},
                        {"identity", "public.t"}, {"schema", "public"}, {"name", "t"},
                        {"old", before},          {"table", after}};
  Change c;
  c.op = Op::kDdl;
  c.content = doc.dump();
  c.ddl = std::make_shared<const DdlCommand>(*ParseDdlCommand(c.content));
  return c;
}

nlohmann::json Shape(const std::string& schema, const std::string& name,
                     const nlohmann::json& constraints = nlohmann::json::array()) {
  return {{"relid", 42},
          {"schema", schema},
          {"name", name},
          {"columns",
           {{{"attnum", 1}, {"name", "a"}, {"type", "integer"}},
            {{"attnum", 2}, {"name", "b"}, {"type", "integer"}}}},
          {"primary_key", {"a"}},
          {"constraints", constraints}};
}

TEST(ReshapeTest, ConstraintsAreRenamedInOnePassAndForeignKeysKeepTheirTargets) {
  absl::StatusOr<TransformChain> chain =
      Chain("  - rename: {table: public.t, columns: {a: b, b: a}}\n");
  ASSERT_TRUE(chain.ok()) << chain.status();
  nlohmann::json constraints = {
      {{"name", "c1"}, {"type", "c"}, {"definition", "CHECK ((a > b))"}},
      {{"name", "f1"}, {"type", "f"}, {"definition", "FOREIGN KEY (b) REFERENCES public.o(a)"}}};
  absl::StatusOr<EventBatchPtr> out = chain->Apply(
      Batch({DdlWith(Shape("public", "t", constraints), Shape("public", "t", constraints))}));
  ASSERT_TRUE(out.ok()) << out.status();
  const DdlTableShape& after = *(*out)->events[0].change.ddl->table;
  ASSERT_EQ(after.constraints.size(), 2u);
  EXPECT_EQ(after.constraints[0].definition, "CHECK ((\"b\" > \"a\"))");
  EXPECT_EQ(after.constraints[1].definition, "FOREIGN KEY (\"a\") REFERENCES public.o(a)");
}

TEST(ReshapeTest, ATableRenamedOutOfTheTransformsTablesStopsThePipeline) {
  absl::StatusOr<TransformChain> chain =
      Chain("  - drop_columns: {table: public.t, columns: [b]}\n");
  ASSERT_TRUE(chain.ok());
  absl::StatusOr<EventBatchPtr> out =
      chain->Apply(Batch({DdlWith(Shape("public", "t"), Shape("public", "clients"))}));
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(),
              HasSubstr("table public.t was renamed to public.clients, which this transform's "
                        "`table` does not name"));
  // An index whose `using` the capture could not describe (NULL) is passed over, not a crash.
  nlohmann::json index = {{"tag", "CREATE INDEX"}, {"object_type", "index"},
                          {"identity", "public.t_b"}, {"schema", "public"}, {"name", "t_b"},
                          {"table_schema", "public"}, {"table_name", "t"},
                          {"index", {{"using", nullptr}, {"definition", "CREATE INDEX ..."},
                                     {"table_schema", "public"}, {"table_name", "t"}}}};
  Change c;
  c.op = Op::kDdl;
  c.content = index.dump();
  c.ddl = std::make_shared<const DdlCommand>(*ParseDdlCommand(c.content));
  EXPECT_TRUE(chain->Apply(Batch({c})).ok());
}

TEST(ReshapeTest, IdentifiersAreFoundBareOrQuotedButNotInStrings) {
  // Whether `text` names `name`: a fate that drops it says so.
  auto mentions = [](std::string_view text, const std::string& name) {
    std::string out;
    return !RewriteIdentifiers(text, {{name, std::nullopt}}, &out);
  };
  EXPECT_TRUE(mentions("CHECK ((length(ssn) > 3))", "ssn"));
  EXPECT_TRUE(mentions("btree (\"Mixed Case\")", "Mixed Case"));
  EXPECT_TRUE(mentions("btree (SSN)", "ssn"));  // folded, as PostgreSQL reads it
  EXPECT_FALSE(mentions("CHECK ((note <> 'ssn'::text))", "ssn"));
  EXPECT_FALSE(mentions("btree (ssn_hash)", "ssn"));
  std::string out;
  ASSERT_TRUE(RewriteIdentifiers("btree (name, lower(name)) WHERE (note <> 'name')",
                                 {{"name", "n"}}, &out));
  EXPECT_EQ(out, "btree (\"n\", lower(\"n\")) WHERE (note <> 'name')");
}

}  // namespace
}  // namespace pgflow
