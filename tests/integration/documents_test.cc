// Joined documents' queries against a real PostgreSQL: the catalog read (ReadCatalog), the
// documents rendered by one statement, and each place of a table finding the documents a
// changed row of it is in.

#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_replace.h"
#include "common/postgres/pg_connection.h"
#include "documents/document_catalog.h"
#include "documents/document_renderer.h"
#include "documents/document_sql.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/support/test_support.h"

namespace pgflow::documents {
namespace {

using ::pgflow::testing::NewDatabase;
using ::pgflow::testing::Sql;
using ::testing::ElementsAre;
using json = nlohmann::json;

constexpr char kSchema[] = R"sql(
  CREATE TABLE customers (id int PRIMARY KEY, name text, email text);
  CREATE TABLE products (id text PRIMARY KEY, title text, "Price" numeric(8,2));
  CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers,
                       placed_at timestamptz, status text);
  CREATE TABLE order_lines (order_id int REFERENCES orders, line int, sku text, qty int,
                            PRIMARY KEY (order_id, line));
  INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com'), (2, 'Bo', NULL);
  INSERT INTO products VALUES ('p1', 'Pen', 1.50), ('p2', 'Pad', 3.00);
  INSERT INTO orders VALUES (10, 1, '2026-11-27 10:00+00', 'open'), (11, 2, NULL, 'paid'),
                            (12, NULL, NULL, 'new');
  INSERT INTO order_lines VALUES (10, 2, 'p2', 1), (10, 1, 'p1', 3), (11, 1, 'p1', 1),
                                 (11, 2, 'gone', 5);
)sql";

constexpr char kOrders[] = R"yaml(
orders:
  table: public.orders
  fields: [id, placed_at, status]
  children:
    customer: {table: public.customers, on: {id: customer_id}, one: true, fields: [name, email]}
    lines:
      table: public.order_lines
      on: {order_id: id}
      fields: [line, qty]
      children:
        product: {table: public.products, on: {id: sku}, one: true, fields: [title, Price]}
)yaml";

DocumentSpec Orders() {
  absl::StatusOr<ConfigNode> root = ParseConfigDocument(kOrders, "p.yaml", "documents");
  EXPECT_TRUE(root.ok()) << root.status();
  absl::StatusOr<std::map<std::string, DocumentSpec>> docs = ParseDocuments(*root);
  EXPECT_TRUE(docs.ok()) << docs.status();
  return docs->at("orders");
}

// `query` with $1 given `parameter`; each row's columns as JSON (SQL's null as null).
std::vector<std::vector<json>> RunQuery(Sql& sql, const std::string& query,
                                        const json& parameter) {
  absl::StatusOr<PgResultPtr> result = Exec(sql.conn(), query, {parameter.dump()});
  EXPECT_TRUE(result.ok()) << result.status() << "\n" << query;
  std::vector<std::vector<json>> rows;
  if (!result.ok()) return rows;
  for (int r = 0; r < PQntuples(result->get()); ++r) {
    std::vector<json> row;
    for (int c = 0; c < PQnfields(result->get()); ++c) {
      row.push_back(PQgetisnull(result->get(), r, c) != 0
                        ? json(nullptr)
                        : json::parse(PQgetvalue(result->get(), r, c)));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// One database for the file's tests (they only read it).
const std::string& Database() {
  static const std::string url = [] {
    std::string made = NewDatabase("documents");
    Sql(made).Exec(kSchema);
    return made;
  }();
  return url;
}

class DocumentsTest : public ::testing::Test {
 protected:
  DocumentsTest() : sql_(Database()) {
    sql_.Exec("SET TimeZone = 'UTC'");  // (times render in the session's zone)
    spec_ = Orders();
    absl::StatusOr<Catalog> catalog = ReadCatalog(sql_.conn(), spec_.Tables());
    EXPECT_TRUE(catalog.ok()) << catalog.status();
    catalog_ = *catalog;
    absl::StatusOr<DocumentSql> made = DocumentSql::Make(spec_, catalog_);
    EXPECT_TRUE(made.ok()) << made.status();
    if (made.ok()) queries_ = *std::move(made);
  }

  Sql sql_;
  DocumentSpec spec_;
  Catalog catalog_;
  DocumentSql queries_;
};

TEST_F(DocumentsTest, TheCatalogGivesTypesAndKeysInTheirOrder) {
  EXPECT_EQ(catalog_.at("public.order_lines").key, (std::vector<std::string>{"order_id", "line"}));
  EXPECT_EQ(catalog_.at("public.orders").types.at("placed_at"), "timestamp with time zone");
  EXPECT_EQ(catalog_.at("public.products").types.at("Price"), "numeric(8,2)");
  absl::StatusOr<Catalog> none = ReadCatalog(sql_.conn(), {TableRef{"public", "nothing"}});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
}

TEST_F(DocumentsTest, DocumentsAreRenderedWithTheirChildrenInKeyOrder) {
  std::vector<std::vector<json>> rows =
      RunQuery(sql_, queries_.render() + " ORDER BY 1",
               json::array({{{"id", "10"}}, {{"id", 11}}, {{"id", 12}}, {{"id", 99}}}));
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0][0], json({{"id", 10}}));  // (asked as "10": the key as its type reads it)
  EXPECT_EQ(rows[0][2], 10);                  // the id, as the sink writes a row's
  EXPECT_EQ(rows[0][1], json::parse(R"({"id": 10, "placed_at": "2026-11-27T10:00:00+00:00",
      "status": "open", "customer": {"name": "Ada", "email": "ada@example.com"},
      "lines": [{"line": 1, "qty": 3, "product": {"title": "Pen", "Price": 1.50}},
                {"line": 2, "qty": 1, "product": {"title": "Pad", "Price": 3.00}}]})"));
  // A child that joins no row: null (one) and an empty array; a line whose product is gone.
  EXPECT_EQ(rows[1][1]["lines"][1]["product"], nullptr);
  EXPECT_EQ(rows[1][1]["customer"]["email"], nullptr);
  EXPECT_EQ(rows[2][1]["customer"], nullptr);
  EXPECT_EQ(rows[2][1]["lines"], json::array());
  // A root that is gone: its key, and no document.
  EXPECT_EQ(rows[3][0], json({{"id", 99}}));
  EXPECT_EQ(rows[3][1], nullptr);
}

TEST_F(DocumentsTest, AChangedRowFindsTheDocumentsItIsIn) {
  // A line joins on the root's key: its order_id is the document's id, no query.
  ASSERT_EQ(queries_.PlacesOf("public.order_lines").size(), 1u);
  EXPECT_EQ(queries_.PlacesOf("public.order_lines")[0].roots, "");
  // A customer: the orders that name it.
  const DocumentSql::Place& customer = queries_.PlacesOf("public.customers").at(0);
  EXPECT_THAT(RunQuery(sql_, customer.roots, json::array({{{"customer_id", "1"}}})),
              ElementsAre(ElementsAre(json({{"id", 10}}))));
  // A product: the orders whose lines name it, each once, old and new values together.
  const DocumentSql::Place& product = queries_.PlacesOf("public.products").at(0);
  std::vector<std::vector<json>> rows = RunQuery(sql_, product.roots + " ORDER BY 1",
                                                json::array({{{"sku", "p1"}}, {{"sku", "p2"}}}));
  EXPECT_THAT(rows, ElementsAre(ElementsAre(json({{"id", 10}})), ElementsAre(json({{"id", 11}}))));
}

// A version of `table` with `columns` (name, type OID, in the key), every value as text.
TableSchemaPtr Shape(const std::string& table,
                     const std::vector<std::tuple<std::string, uint32_t, bool>>& columns) {
  auto shape = std::make_shared<TableSchema>();
  shape->schema = "public";
  shape->name = table;
  for (const auto& [name, type, key] : columns) {
    Column column;
    column.name = name;
    column.type_oid = type;
    column.is_key = key;
    shape->columns.push_back(column);
  }
  return shape;
}

Row Values(const std::vector<std::optional<std::string>>& values) {
  Row row;
  for (const std::optional<std::string>& v : values) {
    row.push_back(v.has_value() ? Value::Text(0, *v) : Value::Null(0));
  }
  return row;
}

TEST_F(DocumentsTest, TheDocumentsChangesTouchAreRenderedOnce) {
  const TableSchemaPtr lines = Shape("order_lines", {{"order_id", oid::kInt4, true},
                                                     {"line", oid::kInt4, true},
                                                     {"sku", oid::kText, false},
                                                     {"qty", oid::kInt4, false}});
  const TableSchemaPtr products = Shape("products", {{"id", oid::kText, true},
                                                     {"title", oid::kText, false},
                                                     {"Price", oid::kNumeric, false}});
  const TableSchemaPtr orders = Shape("orders", {{"id", oid::kInt4, true},
                                                 {"customer_id", oid::kInt4, false},
                                                 {"placed_at", oid::kTimestamptz, false},
                                                 {"status", oid::kText, false}});
  const TableSchemaPtr other = Shape("other", {{"id", oid::kInt4, true}});
  DocumentRenderer renderer(&queries_);
  // A line moved from order 11 to order 10 (its whole old row known): both documents.
  Change moved;
  moved.op = Op::kUpdate;
  moved.table = lines;
  moved.before = Values({"11", "1", "p1", "1"});
  moved.before_kind = BeforeKind::kFull;
  moved.after = Values({"10", "1", "p1", "1"});
  EXPECT_TRUE(renderer.Note(moved));
  // A product's title: the orders whose lines name it (10 again, through the query).
  Change retitled;
  retitled.op = Op::kUpdate;
  retitled.table = products;
  retitled.after = Values({"p2", "Pad (A5)", "3.00"});
  EXPECT_TRUE(renderer.Note(retitled));
  // An order deleted (its old key only): rendered as gone.
  Change deleted;
  deleted.op = Op::kDelete;
  deleted.table = orders;
  deleted.before = Values({"99", std::nullopt, std::nullopt, std::nullopt});
  deleted.before_kind = BeforeKind::kKey;
  EXPECT_TRUE(renderer.Note(deleted));
  // Another table, and a truncate: nothing.
  Change elsewhere;
  elsewhere.op = Op::kInsert;
  elsewhere.table = other;
  elsewhere.after = Values({"1"});
  EXPECT_FALSE(renderer.Note(elsewhere));
  Change truncated;
  truncated.op = Op::kTruncate;
  truncated.table = lines;
  EXPECT_FALSE(renderer.Note(truncated));
  EXPECT_FALSE(renderer.empty());
  absl::StatusOr<std::vector<RenderedDocument>> rendered = renderer.Render(sql_.conn(), 2);
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_TRUE(renderer.empty());
  ASSERT_EQ(rendered->size(), 3u);
  std::map<std::string, std::optional<std::string>> by_key;
  for (const RenderedDocument& d : *rendered) by_key[d.key] = d.document;
  ASSERT_TRUE(by_key.contains(R"({"id": 10})")) << ::testing::PrintToString(by_key);
  EXPECT_EQ(json::parse(*by_key[R"({"id": 10})"])["lines"].size(), 2u);
  ASSERT_TRUE(by_key[R"({"id": 11})"].has_value());
  // Numbers keep their digits (the document's text is PostgreSQL's).
  EXPECT_THAT(*by_key[R"({"id": 10})"], ::testing::HasSubstr(R"("Price": 1.50)"));
  EXPECT_EQ(by_key[R"({"id": 99})"], std::nullopt);
}

}  // namespace
}  // namespace pgflow::documents
