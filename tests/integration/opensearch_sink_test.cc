// The opensearch sink against a real OpenSearch node (scripts/ostmp.sh) and a real PostgreSQL:
// snapshot rows and changes become documents keyed by the row's key, ordered by external
// versions; a column added by the source is mapped before its first document; TRUNCATE empties
// the index; a default added by DDL and a rewrite reach every document; an unreachable node is
// named.

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <random>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"

#include "tests/integration/support/opensearch_node.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

// id -> document source, of every document in `index` (refreshed first).
std::map<std::string, json> Documents(const std::string& index) {
  SharedOpenSearch().Get("/" + index + "/_refresh", "-X POST");
  HttpAnswer a = SharedOpenSearch().Get("/" + index + "/_search?size=1000");
  std::map<std::string, json> docs;
  json body = json::parse(a.body, nullptr, false);
  if (!body.is_object() || !body.contains("hits")) return docs;
  for (const json& hit : body["hits"]["hits"]) docs[hit["_id"].get<std::string>()] = hit["_source"];
  return docs;
}

// "id:name:color" of every document, sorted by id.
std::vector<std::string> Described(const std::string& index) {
  std::vector<std::string> out;
  for (const auto& [id, doc] : Documents(index)) {
    out.push_back(id + ":" + (doc.contains("name") && doc["name"].is_string() ? doc["name"].get<std::string>() : "-") +
                  ":" + (doc.contains("color") && doc["color"].is_string() ? doc["color"].get<std::string>() : "-"));
  }
  return out;
}

TEST(OpenSearchSinkTest, SnapshotChangesAddedColumnsDeletesAndTruncateEndAsTheTable) {
  Sql sql(NewDatabase("searched"));
  sql.Exec(R"sql(
    CREATE TABLE products (id int PRIMARY KEY, name text, price numeric(10,2), tags text[],
                           attrs jsonb, created timestamptz DEFAULT '2026-01-02 10:00+00');
    INSERT INTO products (id, name, price, tags, attrs) VALUES
      (1, 'pen', 1.50, '{office,blue}', '{"ink": "gel"}'),
      (2, 'pad', 3.00, '{office}', NULL),
      (3, 'mug', 7.25, NULL, '{"size": {"ml": 300}}');
  )sql");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("searched", "[public.products]") +
                      "sinks:\n  search:\n    opensearch: {url: \"" + SharedOpenSearch().url() +
                      "\", index: \"shop_{table}\", replicas: 0}\n    flush_interval: 50ms\n");
  std::string out;
  ASSERT_EQ(RunPgflow({"validate", yaml}, &out), 0) << out;
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  sql.Exec("INSERT INTO products (id, name, price) VALUES (4, 'ink', 2.00)");
  sql.Exec("UPDATE products SET name = 'pen (gel)' WHERE id = 1");
  sql.Exec("DELETE FROM products WHERE id = 2");
  // One transaction, one document changed three times: its last state wins.
  sql.Exec("BEGIN; INSERT INTO products (id, name) VALUES (5, 'cup'); "
           "UPDATE products SET name = 'cup 2' WHERE id = 5; "
           "UPDATE products SET name = 'cup 3' WHERE id = 5; COMMIT");
  sql.Exec("ALTER TABLE products ADD COLUMN color text");
  sql.Exec("UPDATE products SET color = 'red' WHERE id = 3");
  const std::vector<std::string> expected = {"1:pen (gel):-", "3:mug:red", "4:ink:-", "5:cup 3:-"};
  std::vector<std::string> got;
  EXPECT_TRUE(WaitFor([&] { return (got = Described("shop_products")) == expected; },
                      std::chrono::seconds(60)))
      << ::testing::PrintToString(got) << "\n" << ReadFile(dir.File("pgflow.log"));
  // The mapping came from the column types, and grew with the added column.
  HttpAnswer mapping = SharedOpenSearch().Get("/shop_products/_mapping");
  json props = json::parse(mapping.body)["shop_products"]["mappings"]["properties"];
  EXPECT_EQ(props["id"]["type"], "integer");
  EXPECT_EQ(props["price"]["type"], "double");
  EXPECT_EQ(props["created"]["type"], "date");
  EXPECT_EQ(props["name"]["fields"]["keyword"]["type"], "keyword");
  // (flat_object came with OpenSearch 2.7: on 1.x, OPENSEARCH_VERSION=1.3.20, an object.)
  const char* version = std::getenv("OPENSEARCH_VERSION");
  EXPECT_EQ(props["attrs"]["type"], version != nullptr && version[0] == '1' ? "object" : "flat_object");
  EXPECT_EQ(props["color"]["type"], "text");
  // Created for the snapshot with refresh off, given its refresh interval once loaded.
  HttpAnswer settings = SharedOpenSearch().Get("/shop_products/_settings");
  EXPECT_EQ(json::parse(settings.body)["shop_products"]["settings"]["index"]["refresh_interval"],
            "1s")
      << settings.body;
  // replicas: 0, as docs/guides/search-index.md and examples/search-index.yaml have it for a single
  // node: green (the cluster's default of one replica would leave it yellow, unassigned).
  EXPECT_EQ(json::parse(settings.body)["shop_products"]["settings"]["index"]["number_of_replicas"],
            "0")
      << settings.body;
  HttpAnswer health =
      SharedOpenSearch().Get("/_cluster/health/shop_products?wait_for_status=green&timeout=10s");
  EXPECT_EQ(json::parse(health.body, nullptr, false).value("status", ""), "green") << health.body;
  EXPECT_EQ(json::parse(mapping.body)["shop_products"]["mappings"]["_meta"]["pgflow"]["loading"],
            false);
  EXPECT_THAT(ReadFile(dir.File("pgflow.log")),
              HasSubstr("created index shop_products with a mapping of 6 fields, refresh off and "
                        "no replicas for the initial load"));
  std::map<std::string, json> docs = Documents("shop_products");
  EXPECT_EQ(docs["1"]["tags"], json({"office", "blue"}));
  EXPECT_EQ(docs["3"]["attrs"]["size"]["ml"], 300);

  sql.Exec("TRUNCATE products");
  sql.Exec("INSERT INTO products (id, name) VALUES (6, 'new')");
  EXPECT_TRUE(WaitFor([&] { return (got = Described("shop_products")) ==
                                   std::vector<std::string>{"6:new:-"}; },
                      std::chrono::seconds(60)))
      << ::testing::PrintToString(got) << "\n" << ReadFile(dir.File("pgflow.log"));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));

  // Run again from the slot: what is replayed carries the same versions and changes nothing.
  auto again = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow2.log"), {},
                                      "replication stream: streaming");
  sql.Exec("UPDATE products SET name = 'newer' WHERE id = 6");
  EXPECT_TRUE(WaitFor([&] { return (got = Described("shop_products")) ==
                                   std::vector<std::string>{"6:newer:-"}; },
                      std::chrono::seconds(60)))
      << ::testing::PrintToString(got) << "\n" << ReadFile(dir.File("pgflow2.log"));
  again->Signal(SIGINT);
  EXPECT_EQ(again->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow2.log"));
}

// id -> qty of every document, and of every row.
std::map<std::string, std::string> DocQty(const std::string& index) {
  std::map<std::string, std::string> out;
  for (const auto& [id, doc] : Documents(index)) out[id] = doc["qty"].dump();
  return out;
}

TEST(OpenSearchSinkTest, ADefaultAddedByDdlAndARewriteReachEveryDocument) {
  // ADD COLUMN ... DEFAULT gives every existing row the value without a row change in the WAL,
  // and a rewrite by TYPE ... USING computes new values the same way: the table is read again,
  // so every document holds them, not only the rows written afterwards.
  Sql sql(NewDatabase("ddl_values_os"));
  sql.Exec("CREATE TABLE goods (id int PRIMARY KEY, name varchar(20));"
           "INSERT INTO goods SELECT g, 'item ' || g FROM generate_series(1, 1000) g");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("ddl_values_os", "[public.goods]") +
                      "sinks:\n  search:\n    opensearch: {url: \"" + SharedOpenSearch().url() +
                      "\", index: \"ddl_{table}\", replicas: 0}\n    flush_interval: 50ms\n");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  // Expects every one of the 1,000 documents to satisfy `holds` within a minute.
  auto every_document = [&](auto&& holds) {
    std::map<std::string, json> docs;
    const bool held = WaitFor(
        [&] {
          docs = Documents("ddl_goods");
          return docs.size() == 1000 &&
                 std::all_of(docs.begin(), docs.end(),
                             [&](const auto& entry) { return holds(entry.first, entry.second); });
        },
        std::chrono::seconds(60));
    EXPECT_TRUE(held) << docs.size() << " documents, the first: "
                      << (docs.empty() ? "" : docs.begin()->second.dump()) << "\n"
                      << ReadFile(dir.File("pgflow.log"));
  };
  sql.Exec("ALTER TABLE goods ADD COLUMN stock int DEFAULT 0");
  sql.Exec("UPDATE goods SET stock = 5 WHERE id = 7");
  every_document([](const std::string& id, const json& doc) {
    return doc.contains("stock") && doc["stock"] == (id == "7" ? 5 : 0);
  });
  sql.Exec("ALTER TABLE goods ALTER COLUMN name TYPE text USING upper(name)");
  every_document(
      [](const std::string& id, const json& doc) { return doc["name"] == "ITEM " + id; });
  EXPECT_THAT(ReadFile(dir.File("pgflow.log")), HasSubstr("gained a column with a default"));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));
}

// Waits up to `timeout` until `index` holds exactly the documents `expected` computes; says
// so, or what differed first (a document missing, extra or not as computed).
using DocumentsById = std::map<std::string, json>;
::testing::AssertionResult IndexBecomes(const std::string& index,
                                        const std::function<DocumentsById()>& expected,
                                        std::chrono::seconds timeout = std::chrono::seconds(60)) {
  std::map<std::string, json> want, got;
  if (WaitFor([&] { return (got = Documents(index)) == (want = expected()); }, timeout)) {
    return ::testing::AssertionSuccess();
  }
  auto result = ::testing::AssertionFailure()
                << index << ": " << got.size() << " documents, " << want.size() << " expected";
  for (const auto& [id, doc] : want) {
    auto it = got.find(id);
    if (it == got.end()) return result << "; " << id << " missing: " << doc.dump();
    if (it->second != doc) {
      return result << "; " << id << ": " << it->second.dump() << "\nexpected " << doc.dump();
    }
  }
  for (const auto& [id, doc] : got) {
    if (!want.contains(id)) return result << "; " << id << " should be gone: " << doc.dump();
  }
  return result;
}

// Each order's document as the test computes it from the tables, by id.
std::map<std::string, json> ExpectedOrders(Sql& sql) {
  std::map<std::string, json> out;
  const std::string rows = sql.Scalar(R"sql(
    SELECT coalesce(jsonb_object_agg(o.id, jsonb_build_object(
      'id', o.id, 'status', o.status,
      'customer', (SELECT jsonb_build_object('name', c.name) FROM customers c
                   WHERE c.id = o.customer_id),
      'lines', coalesce((SELECT jsonb_agg(jsonb_build_object(
                           'line', l.line, 'qty', l.qty,
                           'product', (SELECT jsonb_build_object('title', p.title)
                                       FROM products p WHERE p.id = l.sku))
                         ORDER BY l.order_id, l.line)
                         FROM order_lines l WHERE l.order_id = o.id), '[]'))), '{}')
    FROM orders o)sql");
  const json orders = json::parse(rows);
  for (auto& [id, doc] : orders.items()) out[id] = doc;
  return out;
}

// Each customer's document (with its orders) as the test computes it, by id.
std::map<std::string, json> ExpectedCustomers(Sql& sql) {
  std::map<std::string, json> out;
  const json customers = json::parse(sql.Scalar(R"sql(
    SELECT coalesce(jsonb_object_agg(c.id, jsonb_build_object('name', c.name,
      'orders', coalesce((SELECT jsonb_agg(jsonb_build_object('id', o.id, 'status', o.status)
                                           ORDER BY o.id)
                          FROM orders o WHERE o.customer_id = c.id), '[]'))), '{}')
    FROM customers c)sql"));
  for (auto& [id, doc] : customers.items()) out[id] = doc;
  return out;
}

TEST(OpenSearchSinkTest, JoinedDocumentsFollowEveryTableTheyRead) {
  Sql sql(NewDatabase("joined"));
  sql.Exec(R"sql(
    CREATE TABLE customers (id int PRIMARY KEY, name text);
    CREATE TABLE products (id text PRIMARY KEY, title text);
    CREATE TABLE orders (id int PRIMARY KEY, customer_id int, status text);
    CREATE TABLE order_lines (order_id int, line int, sku text, qty int,
                              PRIMARY KEY (order_id, line));
    INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 20) g;
    INSERT INTO products SELECT 'p' || g, 'product ' || g FROM generate_series(1, 10) g;
    INSERT INTO orders SELECT g, g % 20 + 1, 'new' FROM generate_series(1, 300) g;
    INSERT INTO order_lines SELECT o, l, 'p' || ((o + l) % 10 + 1), l
      FROM generate_series(1, 300) o, generate_series(1, 3) l;
  )sql");
  TempDir dir;
  const std::string documents = R"yaml(documents:
  orders:
    table: public.orders
    fields: [id, status]
    children:
      customer: {table: public.customers, on: {id: customer_id}, one: true, fields: [name]}
      lines:
        table: public.order_lines
        on: {order_id: id}
        fields: [line, qty]
        children:
          product: {table: public.products, on: {id: sku}, one: true, fields: [title]}
  customers:
    table: public.customers
    fields: [name]
    children:
      orders: {table: public.orders, on: {customer_id: id}, fields: [id, status]}
)yaml";
  const std::string yaml = dir.File("pipeline.yaml");
  const std::string head =
      PipelineHead("joined", "[public.orders, public.customers, public.order_lines, "
                             "public.products]") + documents;
  WriteFile(yaml, head + "sinks:\n  search:\n    opensearch: {url: \"" + SharedOpenSearch().url() +
                      "\", index: \"docs_{document}\", replicas: 0, batch_docs: 100,"
                      " documents: [orders, customers]}\n    flush_interval: 50ms\n");
  std::string out;
  ASSERT_EQ(RunPgflow({"validate", yaml}, &out), 0) << out;
  // A document no one described is named where the sink names it.
  const std::string wrong = dir.File("wrong.yaml");
  WriteFile(wrong, head + "sinks:\n  search:\n    opensearch: {url: \"http://127.0.0.1:1\", "
                          "documents: [order]}\n");
  EXPECT_NE(RunPgflow({"validate", wrong}, &out), 0);
  EXPECT_THAT(out, HasSubstr("no document 'order' under `documents:` (customers, orders)"));
  // Documents take mask, filter and set (at every level); a transform that reshapes events
  // is refused, naming it.
  WriteFile(wrong, head + "transforms:\n  - mask: {table: public.customers, columns: "
                          "{name: redact}}\nsinks:\n  search:\n    opensearch: {url: "
                          "\"http://127.0.0.1:1\", documents: [orders]}\n    transforms:\n"
                          "      - rename: {table: public.orders, columns: {status: state}}\n");
  EXPECT_NE(RunPgflow({"validate", wrong}, &out), 0);
  EXPECT_THAT(out, HasSubstr("sinks.search.transforms[0]: a rename transform, which "
                             "sinks.search.opensearch.documents does not take")) << out;
  WriteFile(wrong, head + "sinks:\n  search:\n    opensearch: {url: \"http://127.0.0.1:1\", "
                          "shared: true, index: shop, documents: [orders]}\n");
  EXPECT_NE(RunPgflow({"validate", wrong}, &out), 0);
  EXPECT_THAT(out, HasSubstr("`shared: true` (several tables in one index) does not apply"));
  // Against the catalog: an order moved to another customer must be found in the customer it
  // leaves, so orders must send whole old rows; the joins no index serves are named with the
  // index to make; a table the source does not follow is a mistake.
  EXPECT_NE(RunPgflow({"validate", "--source", yaml}, &out), 0);
  EXPECT_THAT(out, HasSubstr("documents.customers.children.orders: public.orders joins on "
                             "(\"customer_id\"), outside its key, and sends no whole old rows"));
  sql.Exec("ALTER TABLE orders REPLICA IDENTITY FULL");
  EXPECT_EQ(RunPgflow({"validate", "--source", yaml}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("no index of public.orders leads with (\"customer_id\")"));
  EXPECT_THAT(out, HasSubstr("CREATE INDEX ON public.order_lines (\"sku\")"));
  EXPECT_THAT(out,
              ::testing::Not(HasSubstr("CREATE INDEX ON public.order_lines (\"order_id\")")));
  WriteFile(wrong,
            PipelineHead("joined", "[public.orders, public.customers, public.order_lines]") +
                documents +
                "sinks:\n  search:\n    opensearch: {url: \"http://127.0.0.1:1\", "
                "documents: [orders]}\n");
  // (Known without the catalog: `validate` alone names the place.)
  EXPECT_NE(RunPgflow({"validate", wrong}, &out), 0);
  EXPECT_THAT(out, HasSubstr("documents.orders.children.lines.children.product: public.products "
                             "is not among the tables the source follows"));

  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  std::map<std::string, json> got, customers;
  auto documents_as_tables = [&](const std::string& when, const std::string& log) {
    EXPECT_TRUE(IndexBecomes("docs_orders", [&] { return ExpectedOrders(sql); }))
        << when << "\n" << ReadFile(log);
    EXPECT_TRUE(IndexBecomes("docs_customers", [&] { return ExpectedCustomers(sql); }))
        << when << "\n" << ReadFile(log);
    got = Documents("docs_orders");
    customers = Documents("docs_customers");
  };
  documents_as_tables("after the snapshot", dir.File("pgflow.log"));
  ASSERT_EQ(got.size(), 300u);
  // Loaded with refresh off, then given its refresh interval.
  EXPECT_THAT(ReadFile(dir.File("pgflow.log")),
              HasSubstr("created index docs_orders for document orders, refresh off"));
  EXPECT_TRUE(WaitFor(
      [] {
        const json settings = json::parse(
            SharedOpenSearch().Get("/docs_orders/_settings").body, nullptr, false);
        return settings.is_object() &&
               settings["docs_orders"]["settings"]["index"].value("refresh_interval", "") == "1s";
      },
      std::chrono::seconds(10)));
  // A customer in 15 orders, a product in 90 lines, a line moved from one order to another,
  // an order gone with its lines, a new one with its lines in one transaction.
  sql.Exec("UPDATE customers SET name = 'Ada' WHERE id = 3");
  sql.Exec("UPDATE products SET title = 'Pen' WHERE id = 'p4'");
  sql.Exec("UPDATE order_lines SET order_id = 11, line = 9 WHERE order_id = 10 AND line = 2");
  sql.Exec("UPDATE orders SET customer_id = 5 WHERE id = 7");  // (from customer 8)
  sql.Exec("BEGIN; DELETE FROM order_lines WHERE order_id = 12; DELETE FROM orders WHERE id = 12;"
           "INSERT INTO orders VALUES (301, 1, 'paid');"
           "INSERT INTO order_lines VALUES (301, 1, 'p1', 7), (301, 2, 'p2', 8); COMMIT");
  documents_as_tables("after the changes", dir.File("pgflow.log"));
  EXPECT_EQ(got.count("12"), 0u);
  EXPECT_EQ(got["11"]["lines"].size(), 4u);
  EXPECT_EQ(customers["8"]["orders"].size(), 14u);
  // Every product gone: every document renders again, without them; an order deleted after,
  // in the same transaction, is deleted too.
  sql.Exec("BEGIN; TRUNCATE products; DELETE FROM order_lines WHERE order_id = 20;"
           "DELETE FROM orders WHERE id = 20; COMMIT");
  documents_as_tables("after TRUNCATE products", dir.File("pgflow.log"));
  EXPECT_EQ(got["1"]["lines"][0]["product"], nullptr);
  EXPECT_EQ(got.count("20"), 0u);
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));

  // From the slot again; a schema change renders every document from the new catalog.
  auto again = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow2.log"), {},
                                      "replication stream: streaming");
  // (An order deleted before the schema change, in its transaction, is deleted too.)
  sql.Exec("BEGIN; DELETE FROM orders WHERE id = 21;"
           "ALTER TABLE orders ALTER COLUMN status TYPE varchar(10); COMMIT");
  documents_as_tables("after a restart and ALTER", dir.File("pgflow2.log"));
  EXPECT_EQ(got.count("21"), 0u);
  sql.Exec("UPDATE orders SET status = 'shipped' WHERE id < 50");
  sql.Exec("TRUNCATE orders, order_lines");
  sql.Exec("INSERT INTO orders VALUES (1, 3, 'again')");
  documents_as_tables("after a restart, ALTER and TRUNCATE orders", dir.File("pgflow2.log"));
  EXPECT_EQ(got.size(), 1u);
  EXPECT_EQ(customers["3"]["orders"].size(), 1u);
  EXPECT_EQ(customers["4"]["orders"].size(), 0u);
  again->Signal(SIGINT);
  EXPECT_EQ(again->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow2.log"));
}

// Each order's document of the random workload's five tables, as the test computes it.
std::map<std::string, json> ExpectedShopOrders(Sql& sql) {
  std::map<std::string, json> out;
  const json orders = json::parse(sql.Scalar(R"sql(
    SELECT coalesce(jsonb_object_agg(o.id, jsonb_build_object(
      'id', o.id, 'status', o.status, 'note', o.note,
      'customer', (SELECT jsonb_build_object('name', c.name) FROM customers c
                   WHERE c.id = o.customer_id),
      'lines', coalesce((SELECT jsonb_agg(jsonb_build_object(
          'qty', l.qty,
          'product', (SELECT jsonb_build_object('title', p.title,
                        'category', (SELECT jsonb_build_object('name', k.name) FROM categories k
                                     WHERE k.id = p.category_id))
                      FROM products p WHERE p.id = l.sku)) ORDER BY l.id)
        FROM order_lines l WHERE l.order_id = o.id), '[]'))), '{}')
    FROM orders o)sql"));
  for (auto& [id, doc] : orders.items()) out[id] = doc;
  return out;
}

TEST(OpenSearchSinkTest, JoinedDocumentsStayExactUnderARandomWorkloadAndAKill) {
  // Five tables, every kind of change to each (keys changed, rows moved between parents, shared
  // rows renamed, TOASTed values left unchanged, rolled-back transactions), a kill -9 in the
  // middle and changes made while pgflow is down: at the end every document is its orders' row
  // joined with the others, as the test's own query builds it.
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Sql sql(NewDatabase("joined_random"));
  sql.Exec(R"sql(
    CREATE TABLE categories (id int PRIMARY KEY, name text);
    CREATE TABLE products (id int PRIMARY KEY, title text, category_id int);
    CREATE TABLE customers (id int PRIMARY KEY, name text);
    CREATE TABLE orders (id int PRIMARY KEY, customer_id int, status text, note text);
    CREATE TABLE order_lines (id int PRIMARY KEY, order_id int, sku int, qty int);
    ALTER TABLE order_lines REPLICA IDENTITY FULL;
    CREATE INDEX ON order_lines (order_id); CREATE INDEX ON order_lines (sku);
    CREATE INDEX ON orders (customer_id); CREATE INDEX ON products (category_id);
    INSERT INTO categories SELECT g, 'category ' || g FROM generate_series(1, 5) g;
    INSERT INTO products SELECT g, 'product ' || g, g % 6 FROM generate_series(1, 30) g;
    INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 40) g;
    -- (A note of 4 kB that does not compress: stored out of line, left out of updates.)
    INSERT INTO orders SELECT g, g % 41, 'new',
        (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 128) i)
      FROM generate_series(1, 200) g;
    INSERT INTO order_lines SELECT g, g % 200 + 1, g % 31, g % 7 FROM generate_series(1, 500) g;
  )sql");
  sql.Scalar(absl::StrCat("SELECT setseed(", (seed % 1000) / 1000.0, ")"));
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("joined_random", "[public.categories, public.products, "
                                                "public.customers, public.orders, "
                                                "public.order_lines]") +
                      R"yaml(documents:
  orders:
    table: public.orders
    fields: [id, status, note]
    children:
      customer: {table: public.customers, on: {id: customer_id}, one: true, fields: [name]}
      lines:
        table: public.order_lines
        on: {order_id: id}
        fields: [qty]
        children:
          product:
            table: public.products
            on: {id: sku}
            one: true
            fields: [title]
            children:
              category: {table: public.categories, on: {id: category_id}, one: true, fields: [name]}
sinks:
  search:
    opensearch: {url: ")yaml" + SharedOpenSearch().url() +
                      "\", index: \"random_{document}\", replicas: 0, batch_docs: 50,"
                      " documents: [orders]}\n    flush_interval: 50ms\n");
  std::string out;
  ASSERT_EQ(RunPgflow({"validate", "--source", yaml}, &out), 0) << out;

  std::mt19937 random(seed);
  auto pick = [&](int n) { return static_cast<int>(random() % static_cast<unsigned>(n)); };
  int next_order = 1000, next_line = 1000;
  // One random change (a statement or two).
  auto change = [&]() -> std::string {
    const std::string any_order = "(SELECT id FROM orders ORDER BY random() LIMIT 1)";
    const std::string any_line = "(SELECT id FROM order_lines ORDER BY random() LIMIT 1)";
    switch (pick(13)) {
      case 0: {
        const int order = next_order++;
        const int line = next_line++;
        return absl::StrCat("INSERT INTO orders VALUES (", order, ", ", pick(45), ", 'new', 'n');",
                            "INSERT INTO order_lines VALUES (", line, ", ", order, ", ", pick(32),
                            ", 1)");
      }
      case 1:
        return absl::StrCat("UPDATE orders SET status = 's", pick(9), "' WHERE id = ", any_order);
      case 2:
        return absl::StrCat("UPDATE orders SET customer_id = ", pick(45), " WHERE id = ",
                            any_order);
      case 3:
        return absl::StrCat("UPDATE orders SET id = ", next_order++, " WHERE id = ", any_order);
      case 4:
        return "DELETE FROM orders WHERE id = " + any_order;
      case 5:
        return absl::StrCat("UPDATE order_lines SET order_id = ", any_order, " WHERE id = ",
                            any_line);
      case 6:
        return absl::StrCat("UPDATE order_lines SET qty = qty + 1, sku = ", pick(32),
                            " WHERE id = ", any_line);
      case 7:
        return "DELETE FROM order_lines WHERE id = " + any_line;
      case 8:
        return absl::StrCat("INSERT INTO order_lines SELECT ", next_line++, ", id, ", pick(32),
                            ", 2 FROM orders ORDER BY random() LIMIT 1");
      case 9:
        return absl::StrCat("UPDATE products SET title = 'title ", pick(1000),
                            "', category_id = ", pick(7), " WHERE id = ", pick(32));
      case 10:
        return absl::StrCat("UPDATE categories SET name = 'name ", pick(1000),
                            "' WHERE id = ", pick(6));
      case 11:
        return absl::StrCat("UPDATE customers SET name = 'name ", pick(1000),
                            "' WHERE id = ", pick(42));
      default:
        return absl::StrCat("DELETE FROM customers WHERE id = ", pick(42), ";",
                            "INSERT INTO customers VALUES (", 100 + pick(100),
                            ", 'new') ON CONFLICT DO NOTHING");
    }
  };
  // `n` transactions of 1 to 4 changes, one in ten rolled back.
  auto workload = [&](int n) {
    for (int t = 0; t < n; ++t) {
      std::string statements;
      for (int k = pick(4); k >= 0; --k) statements += change() + ";";
      sql.Exec("BEGIN;" + statements + (pick(10) == 0 ? "ROLLBACK" : "COMMIT"));
    }
  };
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  workload(400);
  pgflow->Signal(SIGKILL);
  pgflow->Wait(std::chrono::seconds(10));
  workload(200);
  auto again = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow2.log"), {},
                                      "replication stream: streaming");
  workload(400);
  EXPECT_TRUE(IndexBecomes("random_orders", [&] { return ExpectedShopOrders(sql); },
                           std::chrono::seconds(90)))
      << ReadFile(dir.File("pgflow2.log"));
  again->Signal(SIGINT);
  EXPECT_EQ(again->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow2.log"));
}

TEST(OpenSearchSinkTest, ADocumentIsRenderedOnceTheCommitsItFollowsAreVisible) {
  // A commit reaches the replication stream before the server shows it to other sessions: on
  // a primary waiting for a synchronous standby, for as long as the standby takes. Here the
  // standby never answers (synchronous_standby_names names none there is): the writer's commit
  // is streamed at once but stays invisible until its wait is cancelled. A document rendered
  // in between would hold the old row under the new commit's version, and stay so.
  const std::string url = NewDatabase("visible");
  Sql sql(url);
  sql.Exec("CREATE TABLE orders (id int PRIMARY KEY, status text);"
           "INSERT INTO orders VALUES (1, 'new'), (2, 'new')");
  // (pgflow's own sessions commit without waiting for a standby.)
  sql.Exec("ALTER DATABASE visible SET synchronous_commit = local");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("visible", "[public.orders]") +
                      "documents:\n  orders: {table: public.orders, fields: [status]}\n"
                      "sinks:\n  search:\n    opensearch: {url: \"" + SharedOpenSearch().url() +
                      "\", index: \"visible_{document}\", replicas: 0, documents: [orders]}\n"
                      "    flush_interval: 50ms\n");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  auto status_of = [](const std::string& id) {
    const DocumentsById docs = Documents("visible_orders");
    auto it = docs.find(id);
    return it == docs.end() ? std::string("-") : it->second.value("status", "?");
  };
  ASSERT_TRUE(WaitFor([&] { return status_of("1") == "new"; }, std::chrono::seconds(30)));

  sql.Exec("ALTER SYSTEM SET synchronous_standby_names = 'nobody'");
  sql.Scalar("SELECT pg_reload_conf()");
  absl::Cleanup reset = [&] {
    sql.Exec("ALTER SYSTEM RESET synchronous_standby_names");
    sql.Scalar("SELECT pg_reload_conf()");
  };
  Sql writer(url);
  const std::string pid = writer.Scalar("SELECT pg_backend_pid()");
  writer.Exec("SET synchronous_commit = on");
  std::thread commit([&] { writer.Exec("UPDATE orders SET status = 'paid' WHERE id = 1"); });
  // Committed and streamed, not visible yet.
  EXPECT_TRUE(WaitFor(
      [&] {
        return sql.Scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") ==
               "1";
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(sql.Scalar("SELECT status FROM orders WHERE id = 1"), "new");
  std::this_thread::sleep_for(std::chrono::seconds(2));  // (many flushes)
  EXPECT_EQ(status_of("1"), "new");
  sql.Scalar("SELECT pg_cancel_backend(" + pid + ")");  // committed locally: visible now
  commit.join();
  EXPECT_TRUE(WaitFor([&] { return status_of("1") == "paid"; }, std::chrono::seconds(30)))
      << status_of("1") << "\n" << ReadFile(dir.File("pgflow.log"));
  std::move(reset).Invoke();
  sql.Exec("UPDATE orders SET status = 'shipped' WHERE id = 2");
  EXPECT_TRUE(WaitFor([&] { return status_of("2") == "shipped"; }, std::chrono::seconds(30)));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));
}

TEST(OpenSearchSinkTest, AnOutageAKillAndPartialBulkFailuresLoseNothingAndKeepOrder) {
  Sql sql(NewDatabase("outage_os"));
  sql.Exec("CREATE TABLE items (id int PRIMARY KEY, qty int);"
           "INSERT INTO items SELECT g, g FROM generate_series(1, 50) g");
  FaultProxy proxy(SharedOpenSearch().url());
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("outage_os", "[public.items]") +
                      "sinks:\n  search:\n    opensearch: {url: \"" +
                      proxy.url() +
                      "\", index: outage_items, batch_docs: 20}\n    flush_interval: 50ms\n");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  auto workload = [&](int from, int to) {
    for (int n = from; n < to; ++n) {
      const std::string id = std::to_string(100 + n);
      sql.Exec("BEGIN; INSERT INTO items VALUES (" + id + ", " + std::to_string(n) +
               "); UPDATE items SET qty = qty + 1 WHERE id = " + std::to_string(1 + n % 50) +
               (n % 5 == 0 ? "; DELETE FROM items WHERE id = " + std::to_string(100 + n - 3) : "") +
               "; COMMIT");
    }
  };
  // What the proxy injected so far (the 503s, the 429s, the failed items it answered).
  auto injected = [&] {
    json stats = json::parse(proxy.Stats(), nullptr, false);
    return stats.is_object() ? stats["stats"].value("injected", 0) : 0;
  };
  workload(0, 40);
  const int before_outage = injected();
  proxy.Fault("status=503&count=-1");  // the node answers 503 to everything
  workload(40, 80);
  // Refused, and sent again at least once: pgflow is retrying.
  ASSERT_TRUE(WaitFor([&] { return injected() >= before_outage + 2; }, std::chrono::seconds(30)))
      << proxy.Stats() << "\n"
      << ReadFile(dir.File("pgflow.log"));
  pgflow->Signal(SIGKILL);  // kill -9 during the outage
  pgflow->Wait(std::chrono::seconds(10));
  auto again = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow2.log"), {}, "pipeline");
  workload(80, 100);
  proxy.Fault("status=429&retry_after=1&count=3");
  // Up to a second for the three 429s to be taken (the requests of what was written may have
  // gone before the rule: then the items below are what is refused).
  WaitFor(
      [&] {
        json stats = json::parse(proxy.Stats(), nullptr, false);
        return stats.is_object() && stats["fault"].value("count", -1) == 0;
      },
      std::chrono::seconds(1));
  proxy.Fault("items=5&count=4");  // then _bulk answers with items to send again
  workload(100, 140);
  auto rows = [&] {
    std::map<std::string, std::string> out;
    for (const auto& r : sql.Query("SELECT id, qty FROM items")) out[r[0]] = r[1];
    return out;
  };
  std::map<std::string, std::string> got;
  EXPECT_TRUE(WaitFor([&] { return (got = DocQty("outage_items")) == rows(); },
                      std::chrono::seconds(90)))
      << got.size() << " documents, " << rows().size() << " rows\n"
      << ReadFile(dir.File("pgflow2.log"));
  const json stats = json::parse(proxy.Stats());
  EXPECT_GT(stats["stats"]["injected"].get<int>(), 3);
  EXPECT_GT(stats["stats"]["items_failed"].get<int>(), 0);
  EXPECT_THAT(ReadFile(dir.File("pgflow2.log")), HasSubstr("document(s) to send again"));
  // Pushed back, it sent fewer requests at once for a while.
  EXPECT_THAT(ReadFile(dir.File("pgflow2.log")), HasSubstr("pushed back, "));
  again->Signal(SIGINT);
  EXPECT_EQ(again->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow2.log"));
}

// With dead_letter, a document the index refuses for good (a value its mapping cannot take:
// 400) is recorded with the reason and the rest goes on; a write block only holds documents
// back until it is lifted. `pgflow dlq` lists the records, shows one, replays them (refused
// again until the mapping is mended, then delivered and removed) and purges.
TEST(OpenSearchSinkTest, RefusedDocumentsAreSetAsideAndReplayedWithDlq) {
  Sql sql(NewDatabase("dlq_os"));
  sql.Exec("CREATE TABLE items (id int PRIMARY KEY, note text, qty int)");
  // The index exists already, its `note` mapped as a number: a note that is not one is refused.
  HttpAnswer created = SharedOpenSearch().Get(
      "/dlq_items", "-X PUT -H 'Content-Type: application/json' -d "
                    "'{\"mappings\":{\"properties\":{\"note\":{\"type\":\"integer\"}}}}'");
  ASSERT_EQ(created.code, 200) << created.body;
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  const std::string rejected = dir.File("rejected.jsonl");
  const int admin_port = FreeLoopbackPort();
  WriteFile(yaml, PipelineHead("dlq_os", "[public.items]") +
                      "admin: {listen: '127.0.0.1:" + std::to_string(admin_port) + "'}\n"
                      "sinks:\n  search:\n    opensearch: {url: \"" +
                      SharedOpenSearch().url() +
                      "\", index: dlq_items}\n    flush_interval: 50ms\n"
                      "    dead_letter: {path: " + rejected + "}\n");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  sql.Exec("INSERT INTO items VALUES (1, '12', 1), (2, 'twelve', 2), (3, '7', 3)");
  const std::string metric = "pgflow_sink_dead_lettered_total{pipeline=\"dlq_os\",sink=\"search\"} ";
  auto dead_lettered = [&](const std::string& n) {
    return WaitFor(
        [&] {
          return Curl("http://127.0.0.1:" + std::to_string(admin_port) + "/metrics")
                     .body.find(metric + n + "\n") != std::string::npos;
        },
        std::chrono::seconds(60));
  };
  EXPECT_TRUE(dead_lettered("1")) << ReadFile(dir.File("pgflow.log"));
  // A write block: the change waits (sent again) until it is lifted; nothing is set aside.
  auto block = [&](const char* on) {
    HttpAnswer a = SharedOpenSearch().Get(
        "/dlq_items/_settings", std::string("-X PUT -H 'Content-Type: application/json' -d "
                                            "'{\"index.blocks.write\":") + on + "}'");
    ASSERT_EQ(a.code, 200) << a.body;
  };
  block("true");
  sql.Exec("UPDATE items SET qty = 10 WHERE id = 1");
  EXPECT_TRUE(WaitFor([&] { return CountInFile(dir.File("pgflow.log"), "to send again") > 0; },
                      std::chrono::seconds(30)))
      << ReadFile(dir.File("pgflow.log"));
  block("false");
  std::map<std::string, std::string> got;
  EXPECT_TRUE(WaitFor([&] { return (got = DocQty("dlq_items"))["1"] == "10"; },
                      std::chrono::seconds(60)))
      << ReadFile(dir.File("pgflow.log"));
  sql.Exec("UPDATE items SET note = 'seven' WHERE id = 3");
  EXPECT_TRUE(dead_lettered("2")) << ReadFile(dir.File("pgflow.log"));
  EXPECT_THAT(ReadFile(dir.File("pgflow.log")), HasSubstr("set aside in file " + rejected));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));

  std::string out;
  ASSERT_EQ(RunPgflow({"dlq", "list", yaml}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("sink search (file " + rejected + "): 2 records"));
  EXPECT_THAT(out, HasSubstr("insert public.items dlq_items/2  400"));
  EXPECT_THAT(out, HasSubstr("update public.items dlq_items/3  400"));
  ASSERT_EQ(RunPgflow({"dlq", "show", yaml, "--id", "1"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("mapper_parsing_exception"));
  EXPECT_THAT(out, HasSubstr("twelve"));
  // Refused again: kept.
  EXPECT_NE(RunPgflow({"dlq", "replay", yaml}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("#1 (insert public.items dlq_items/2) not delivered"));
  EXPECT_THAT(out, HasSubstr("2 records not delivered: kept"));
  // The mapping is mended (a malformed note is left out of the index): both go through.
  HttpAnswer mended = SharedOpenSearch().Get(
      "/dlq_items/_mapping", "-X PUT -H 'Content-Type: application/json' -d "
                             "'{\"properties\":{\"note\":{\"type\":\"integer\","
                             "\"ignore_malformed\":true}}}'");
  ASSERT_EQ(mended.code, 200) << mended.body;
  ASSERT_EQ(RunPgflow({"dlq", "replay", yaml, "--id", "1"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("#1 (insert public.items dlq_items/2) delivered"));
  EXPECT_EQ(DocQty("dlq_items"),
            (std::map<std::string, std::string>{{"1", "10"}, {"2", "2"}, {"3", "3"}}));
  ASSERT_EQ(RunPgflow({"dlq", "list", yaml}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr(": 1 record\n"));
  EXPECT_NE(RunPgflow({"dlq", "purge", yaml}, &out), 0) << out;  // neither --id nor --all
  ASSERT_EQ(RunPgflow({"dlq", "purge", yaml, "--all"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("1 records removed"));
  ASSERT_EQ(RunPgflow({"dlq", "list", yaml}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("0 records"));
}

// Several tables in one index (`shared: true`): ids carry the table, TRUNCATE and DROP TABLE
// delete only that table's documents; an index of its own is deleted with its table
// (on_drop_table: delete). Without `shared`, two tables meeting in an index stop the pipeline.
TEST(OpenSearchSinkTest, TablesShareAnIndexAndDropTableDeletesTheirDocuments) {
  Sql sql(NewDatabase("shared_os"));
  sql.Exec("CREATE TABLE a (id int PRIMARY KEY, name text); CREATE TABLE b (id int PRIMARY KEY, qty int);"
           "INSERT INTO a VALUES (1, 'one'), (2, 'two'); INSERT INTO b VALUES (1, 10), (3, 30)");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  auto write = [&](const std::string& shared) {
    WriteFile(yaml, PipelineHead("shared_os", "[public.*]") +
                        "sinks:\n  shop:\n    opensearch: {url: \"" + SharedOpenSearch().url() +
                        "\", index: shared_shop" + shared +
                        "}\n    flush_interval: 50ms\n"
                        "  own:\n    opensearch: {url: \"" + SharedOpenSearch().url() +
                        "\", index: \"own_{table}\", on_drop_table: delete, "
                        "properties: {name: {type: keyword, ignore_above: 100}}}\n"
                        "    flush_interval: 50ms\n");
  };
  write("");
  std::string out;
  EXPECT_NE(RunPgflow({"run", yaml}, &out), 0);
  // (The snapshot copies the two tables in either order.)
  EXPECT_THAT(out, ::testing::ContainsRegex("tables public.(a and public.b|b and public.a) both go "
                                            "to index shared_shop, where their ids would collide"));
  SharedOpenSearch().Get("/shared_shop", "-X DELETE");
  SharedOpenSearch().Get("/own_a", "-X DELETE");
  SharedOpenSearch().Get("/own_b", "-X DELETE");
  Sql(SharedCluster().Url("shared_os")).Exec("SELECT pg_drop_replication_slot('pgflow_shared_os')");

  write(", shared: true, on_drop_table: delete");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  sql.Exec("INSERT INTO a VALUES (3, 'three'); UPDATE b SET qty = 11 WHERE id = 1");
  auto ids = [](const std::string& index) {
    std::vector<std::string> out;
    for (const auto& [id, doc] : Documents(index)) {
      out.push_back(id + "@" + (doc.contains("pgflow_table") ? doc["pgflow_table"].get<std::string>() : "-"));
    }
    return out;
  };
  std::vector<std::string> got;
  const std::vector<std::string> all = {"public.a/1@public.a", "public.a/2@public.a",
                                        "public.a/3@public.a", "public.b/1@public.b",
                                        "public.b/3@public.b"};
  EXPECT_TRUE(WaitFor([&] { return (got = ids("shared_shop")) == all; }, std::chrono::seconds(60)))
      << ::testing::PrintToString(got) << ReadFile(dir.File("pgflow.log"));
  EXPECT_EQ(Documents("shared_shop")["public.b/1"]["qty"], 11);
  sql.Exec("TRUNCATE a");
  EXPECT_TRUE(WaitFor([&] {
    return (got = ids("shared_shop")) ==
           std::vector<std::string>{"public.b/1@public.b", "public.b/3@public.b"};
  }, std::chrono::seconds(60))) << ::testing::PrintToString(got) << ReadFile(dir.File("pgflow.log"));
  sql.Exec("INSERT INTO a VALUES (4, 'four')");
  sql.Exec("DROP TABLE b");
  EXPECT_TRUE(WaitFor([&] {
    return (got = ids("shared_shop")) == std::vector<std::string>{"public.a/4@public.a"};
  }, std::chrono::seconds(60))) << ::testing::PrintToString(got) << ReadFile(dir.File("pgflow.log"));
  EXPECT_TRUE(WaitFor([&] { return SharedOpenSearch().Get("/own_b").code == 404; },
                      std::chrono::seconds(60)))
      << ReadFile(dir.File("pgflow.log"));
  EXPECT_EQ(SharedOpenSearch().Get("/own_a").code, 200);
  // The user's mapping of a column wins over the derived one.
  json own_props = json::parse(SharedOpenSearch().Get("/own_a/_mapping").body)["own_a"]["mappings"]["properties"];
  EXPECT_EQ(own_props["name"], json({{"type", "keyword"}, {"ignore_above", 100}}));
  EXPECT_EQ(own_props["id"]["type"], "integer");
  EXPECT_THAT(ReadFile(dir.File("pgflow.log")), HasSubstr("deleted index own_b (DROP TABLE public.b)"));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));
}

// A type change the index cannot take in place (integer to text): a new index is built from a
// backfill of the table and swapped in behind the old name, with the values as the source has
// them after the change; changes meanwhile and after land in it too.
TEST(OpenSearchSinkTest, ATypeChangeRebuildsTheIndexBehindAnAlias) {
  Sql sql(NewDatabase("retype_os"));
  sql.Exec("CREATE TABLE items (id int PRIMARY KEY, code int, name text);"
           "INSERT INTO items SELECT g, g, 'n' || g FROM generate_series(1, 50) g");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, PipelineHead("retype_os", "[public.items]") +
                      "sinks:\n  search:\n    opensearch: {url: \"" +
                      SharedOpenSearch().url() + "\", index: retype_items}\n"
                      "    flush_interval: 50ms\n");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  EXPECT_TRUE(WaitFor([&] { return Documents("retype_items").size() == 50; },
                      std::chrono::seconds(60)))
      << ReadFile(dir.File("pgflow.log"));
  sql.Exec("ALTER TABLE items ALTER COLUMN code TYPE text USING 'c' || code");
  sql.Exec("UPDATE items SET name = 'first' WHERE id = 1");  // the first row of the new shape
  // The name turns into an alias of the rebuilt index.
  std::string concrete;
  EXPECT_TRUE(WaitFor(
      [&] {
        HttpAnswer a = SharedOpenSearch().Get("/_alias/retype_items");
        json doc = json::parse(a.body, nullptr, false);
        if (a.code != 200 || !doc.is_object() || doc.size() != 1) return false;
        concrete = doc.begin().key();
        return true;
      },
      std::chrono::seconds(90)))
      << ReadFile(dir.File("pgflow.log"));
  EXPECT_THAT(concrete, ::testing::StartsWith("retype_items-r"));
  sql.Exec("INSERT INTO items VALUES (51, 'fresh', 'new')");
  std::map<std::string, json> docs;
  EXPECT_TRUE(WaitFor([&] { return (docs = Documents("retype_items")).size() == 51; },
                      std::chrono::seconds(60)))
      << docs.size() << ReadFile(dir.File("pgflow.log"));
  EXPECT_EQ(docs["2"]["code"], "c2");
  EXPECT_EQ(docs["1"]["name"], "first");
  EXPECT_EQ(docs["51"]["code"], "fresh");
  HttpAnswer mapping = SharedOpenSearch().Get("/retype_items/_mapping");
  EXPECT_EQ(json::parse(mapping.body)[concrete]["mappings"]["properties"]["code"]["type"], "text")
      << mapping.body;
  EXPECT_THAT(ReadFile(dir.File("pgflow.log")),
              HasSubstr("column code of public.items is now mapped as text, retype_items has it "
                        "as integer: building " + concrete));
  // A dropped column: rebuilt again (the alias moves on), and no document keeps the field.
  sql.Exec("ALTER TABLE items DROP COLUMN name");
  sql.Exec("UPDATE items SET code = 'again' WHERE id = 2");
  std::string second;
  EXPECT_TRUE(WaitFor(
      [&] {
        json doc = json::parse(SharedOpenSearch().Get("/_alias/retype_items").body, nullptr, false);
        if (!doc.is_object() || doc.size() != 1 || doc.begin().key() == concrete) return false;
        second = doc.begin().key();
        return true;
      },
      std::chrono::seconds(90)))
      << ReadFile(dir.File("pgflow.log"));
  EXPECT_TRUE(WaitFor(
      [&] {
        docs = Documents("retype_items");
        return docs.size() == 51 && docs["2"]["code"] == "again" &&
               std::none_of(docs.begin(), docs.end(),
                            [](const auto& d) { return d.second.contains("name"); });
      },
      std::chrono::seconds(60)))
      << docs.size() << ReadFile(dir.File("pgflow.log"));
  EXPECT_EQ(SharedOpenSearch().Get("/" + concrete).code, 404);  // the first rebuild's is gone
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));
}

// Over https (a certificate checked against `ca_file`), with an API key and gzipped bodies; a
// node whose certificate cannot be checked is refused, naming it.
TEST(OpenSearchSinkTest, HttpsWithACaFileAnApiKeyAndGzip) {
  Sql sql(NewDatabase("tls_os"));
  sql.Exec("CREATE TABLE items (id int PRIMARY KEY, qty int);"
           "INSERT INTO items SELECT g, g FROM generate_series(1, 30) g");
  FaultProxy proxy(SharedOpenSearch().url(), /*tls=*/true);
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  auto write = [&](const std::string& tls) {
    WriteFile(yaml, PipelineHead("tls_os", "[public.items]") +
                        "sinks:\n  search:\n    opensearch: {url: \"" +
                        proxy.url() + "\", index: tls_items, api_key: aWQ6a2V5, gzip: true, derive_mapping: false" + tls +
                        "}\n    flush_interval: 50ms\n");
  };
  write("");  // the self-signed certificate is not trusted
  std::string out;
  EXPECT_NE(RunPgflow({"run", yaml}, &out), 0);
  EXPECT_THAT(out, HasSubstr("sink search (opensearch): OpenSearch unreachable: " + proxy.url()));
  EXPECT_THAT(out, HasSubstr("certificate"));

  write(", ca_file: " + proxy.cert_file());
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  sql.Exec("UPDATE items SET qty = qty * 10 WHERE id <= 10");
  auto rows = [&] {
    std::map<std::string, std::string> out;
    for (const auto& r : sql.Query("SELECT id, qty FROM items")) out[r[0]] = r[1];
    return out;
  };
  std::map<std::string, std::string> got;
  EXPECT_TRUE(WaitFor([&] { return (got = DocQty("tls_items")) == rows(); },
                      std::chrono::seconds(60)))
      << got.size() << " documents\n" << ReadFile(dir.File("pgflow.log"));
  const json stats = json::parse(proxy.Stats());
  EXPECT_GT(stats["stats"]["gzipped"].get<int>(), 0);
  EXPECT_EQ(stats["stats"]["authorization"], "ApiKey aWQ6a2V5");
  // No mapping of pgflow's: the node's dynamic mapping took the numbers as longs.
  json tls_props = json::parse(SharedOpenSearch().Get("/tls_items/_mapping").body)["tls_items"]["mappings"]["properties"];
  EXPECT_EQ(tls_props["qty"]["type"], "long");
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));
}

TEST(OpenSearchSinkTest, AnUnreachableNodeIsNamed) {
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  const int port = FreeLoopbackPort();
  const std::string url = NewDatabase("unreachable_os");
  Sql(url).Exec("CREATE TABLE nothing (id int PRIMARY KEY)");
  WriteFile(yaml, "pipeline: unreachable_os\n"
                  "source: {postgres: {url: '" +
                      url +
                      "', tables: [public.nothing]}}\n"
                      "sinks: {search: {opensearch: {url: 'http://127.0.0.1:" +
                      std::to_string(port) + "'}}}\n");
  std::string out;
  EXPECT_NE(RunPgflow({"run", yaml}, &out), 0);
  EXPECT_THAT(out, HasSubstr("sink search (opensearch): OpenSearch unreachable: http://127.0.0.1:" +
                             std::to_string(port)));
}

}  // namespace
}  // namespace pgflow::testing
