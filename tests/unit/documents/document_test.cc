// Joined documents: their description read from a pipeline file (ParseDocuments) and their
// queries built against a catalog (DocumentSql). The queries themselves run against a real
// PostgreSQL in tests/integration/documents_test.cc.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "documents/document_sql.h"
#include "documents/document_spec.h"
#include "tests/unit/documents/shop_documents.h"

namespace pgflow::documents {
namespace {

using testdata::kOrders;
using testdata::ShopCatalog;

using ::testing::HasSubstr;

// The SQL with its identifiers' quotes taken out, to read (every identifier is quoted).
std::string Unquoted(std::string sql) {
  std::erase(sql, '"');
  return sql;
}

absl::StatusOr<std::map<std::string, DocumentSpec>> Parse(const std::string& yaml) {
  absl::StatusOr<ConfigNode> root = ParseConfigDocument(yaml, "p.yaml", "documents");
  if (!root.ok()) return root.status();
  return ParseDocuments(*root);
}


TEST(DocumentSpecTest, ReadsADocumentOfNestedChildren) {
  absl::StatusOr<std::map<std::string, DocumentSpec>> docs = Parse(kOrders);
  ASSERT_TRUE(docs.ok()) << docs.status();
  const DocumentSpec& orders = docs->at("orders");
  EXPECT_EQ(orders.root.table.ToString(), "public.orders");
  EXPECT_EQ(orders.root.fields, (std::vector<std::string>{"id", "placed_at", "status"}));
  ASSERT_EQ(orders.root.children.size(), 2u);
  const DocumentNode& customer = orders.root.children[0];
  EXPECT_EQ(customer.name, "customer");
  EXPECT_TRUE(customer.one);
  EXPECT_EQ(customer.on, (std::vector<std::pair<std::string, std::string>>{{"id", "customer_id"}}));
  const DocumentNode& lines = orders.root.children[1];
  EXPECT_FALSE(lines.one);
  ASSERT_EQ(lines.children.size(), 1u);
  EXPECT_EQ(lines.children[0].table.ToString(), "public.products");
  EXPECT_EQ(lines.children[0].path, "orders.children.lines.children.product");
  std::vector<std::string> tables;
  for (const TableRef& t : orders.Tables()) tables.push_back(t.ToString());
  EXPECT_EQ(tables, (std::vector<std::string>{"public.orders", "public.customers",
                                              "public.order_lines", "public.products"}));
}

TEST(DocumentSpecTest, EveryMistakeIsNamedWithItsPlace) {
  absl::StatusOr<std::map<std::string, DocumentSpec>> docs = Parse(R"yaml(
orders:
  table: public.orders
  fields: [id, status]
  on: {id: id}
  children:
    status: {table: public.statuses, on: {id: status}, fields: [label]}
    lines: {table: public.order_lines, fields: [sku], onn: {order_id: id}}
    tags: {table: app.*, on: {order_id: id}, fields: [tag]}
Bad-Name: {table: public.x, fields: [a]}
empty: {table: public.x, fields: []}
)yaml");
  ASSERT_FALSE(docs.ok());
  const std::string message(docs.status().message());
  EXPECT_THAT(message, HasSubstr("p.yaml:5:3: orders: the root table joins nothing"));
  EXPECT_THAT(message, HasSubstr("'status' is a field of public.orders too"));
  EXPECT_THAT(message, HasSubstr("unknown key 'onn' (did you mean 'on'?"));
  EXPECT_THAT(message, HasSubstr("missing 'on': how public.order_lines's rows join"));
  EXPECT_THAT(message, HasSubstr("a document's level is one table, not a schema"));
  EXPECT_THAT(message, HasSubstr("invalid document name 'Bad-Name'"));
  EXPECT_THAT(message, HasSubstr("empty.fields: list at least one column"));
}

TEST(DocumentSpecTest, ChildrenNestAtMostEightLevels) {
  std::string yaml = "deep:\n  table: public.t0\n  fields: [a]\n";
  std::string indent = "  ";
  for (int level = 1; level <= kMaxDepth + 1; ++level) {
    yaml += indent + "children:\n" + indent + "  c:\n";
    indent += "    ";
    yaml += indent + "table: public.t" + std::to_string(level) + "\n" + indent +
            "on: {a: a}\n" + indent + "fields: [b]\n";
  }
  absl::StatusOr<std::map<std::string, DocumentSpec>> docs = Parse(yaml);
  ASSERT_FALSE(docs.ok());
  EXPECT_THAT(docs.status().message(), HasSubstr("children nest at most 8 levels deep"));
}

TEST(DocumentSqlTest, RendersTheRootWithItsChildrenByOneStatement) {
  absl::StatusOr<std::map<std::string, DocumentSpec>> docs = Parse(kOrders);
  ASSERT_TRUE(docs.ok()) << docs.status();
  absl::StatusOr<DocumentSql> sql = DocumentSql::Make(docs->at("orders"), ShopCatalog());
  ASSERT_TRUE(sql.ok()) << sql.status();
  EXPECT_EQ(sql->root_key(), std::vector<std::string>{"id"});
  EXPECT_THAT(sql->render(), HasSubstr(R"(jsonb_build_object('id', t0."id", 'placed_at')"));
  EXPECT_EQ(
      Unquoted(sql->render()),
      "SELECT jsonb_build_object('id', v.id) AS key, CASE WHEN t0.id IS NULL THEN NULL ELSE "
      "jsonb_build_object('id', t0.id, "
      "'placed_at', t0.placed_at, 'status', t0.status, 'customer', (SELECT "
      "jsonb_build_object('name', t1.name, 'email', t1.email) FROM public.customers t1 WHERE "
      "t1.id = t0.customer_id ORDER BY t1.id LIMIT 1), 'lines', COALESCE((SELECT "
      "jsonb_agg(jsonb_build_object('sku', t2.sku, 'qty', t2.qty, 'product', (SELECT "
      "jsonb_build_object('title', t3.title) FROM public.products t3 WHERE t3.id = t2.sku "
      "ORDER BY t3.id LIMIT 1)) ORDER BY t2.order_id, t2.line) FROM public.order_lines t2 "
      "WHERE t2.order_id = t0.id), '[]'::jsonb)) END AS document, CASE WHEN "
      "jsonb_typeof(to_jsonb(v.id)) = 'string' THEN to_jsonb(v.id) #>> '{}' ELSE "
      "to_jsonb(v.id)::text END AS id FROM jsonb_to_recordset($1::jsonb) AS v(id integer) "
      "LEFT JOIN public.orders t0 ON t0.id = v.id WHERE v.id IS NOT NULL");
}

TEST(DocumentSqlTest, EachPlaceOfATableFindsItsDocuments) {
  absl::StatusOr<std::map<std::string, DocumentSpec>> docs = Parse(kOrders);
  ASSERT_TRUE(docs.ok()) << docs.status();
  absl::StatusOr<DocumentSql> sql = DocumentSql::Make(docs->at("orders"), ShopCatalog());
  ASSERT_TRUE(sql.ok()) << sql.status();
  using Match = std::vector<std::pair<std::string, std::string>>;
  // The root, and lines (joined on the root's whole key): the values are the key.
  ASSERT_EQ(sql->PlacesOf("public.orders").size(), 1u);
  EXPECT_EQ(sql->PlacesOf("public.orders")[0].roots, "");
  ASSERT_EQ(sql->PlacesOf("public.order_lines").size(), 1u);
  EXPECT_EQ(sql->PlacesOf("public.order_lines")[0].match, (Match{{"order_id", "id"}}));
  EXPECT_EQ(sql->PlacesOf("public.order_lines")[0].roots, "");
  // A customer: the orders that name it.
  const DocumentSql::Place& customer = sql->PlacesOf("public.customers").at(0);
  EXPECT_EQ(customer.match, (Match{{"id", "customer_id"}}));
  EXPECT_EQ(Unquoted(customer.roots),
            "SELECT DISTINCT jsonb_build_object('id', t0.id) AS key FROM public.orders t0 JOIN "
            "jsonb_to_recordset($1::jsonb) AS v(customer_id integer) ON t0.customer_id = "
            "v.customer_id");
  // A product: through the lines that name it.
  const DocumentSql::Place& product = sql->PlacesOf("public.products").at(0);
  EXPECT_EQ(product.match, (Match{{"id", "sku"}}));
  EXPECT_EQ(Unquoted(product.roots),
            "SELECT DISTINCT jsonb_build_object('id', t0.id) AS key FROM public.orders t0 JOIN "
            "public.order_lines t1 ON t1.order_id = t0.id JOIN jsonb_to_recordset($1::jsonb) AS "
            "v(sku text) ON t1.sku = v.sku");
  EXPECT_TRUE(sql->PlacesOf("public.other").empty());
}

TEST(DocumentSqlTest, TheCatalogIsChecked) {
  absl::StatusOr<std::map<std::string, DocumentSpec>> docs = Parse(R"yaml(
orders:
  table: public.orders
  fields: [id, total]
  children:
    lines: {table: public.order_lines, on: {order_id: ident}, fields: [sku]}
    notes: {table: public.notes, on: {order_id: id}, fields: [body]}
)yaml");
  ASSERT_TRUE(docs.ok()) << docs.status();
  Catalog catalog = ShopCatalog();
  catalog["public.notes"] = {{}, {{"order_id", "integer"}, {"body", "text"}}};
  absl::StatusOr<DocumentSql> sql = DocumentSql::Make(docs->at("orders"), catalog);
  ASSERT_FALSE(sql.ok());
  const std::string message(sql.status().message());
  EXPECT_THAT(message, HasSubstr("orders.fields: public.orders has no column 'total'"));
  EXPECT_THAT(message, HasSubstr("orders.children.lines.on: public.orders (its parent) has no "
                                 "column 'ident'"));
  EXPECT_THAT(message, HasSubstr("public.notes has no primary key to order its rows by"));
  catalog.erase("public.notes");
  sql = DocumentSql::Make(docs->at("orders"), catalog);
  ASSERT_FALSE(sql.ok());
  EXPECT_THAT(sql.status().message(), HasSubstr("table public.notes does not exist"));
}

}  // namespace
}  // namespace pgflow::documents
