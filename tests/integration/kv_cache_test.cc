// End to end for the kv sink: a real PostgreSQL, the real pgflow binary, and real clients
// (redis-cli, curl, memccat, and a raw socket for pipelining): rows appear, change and
// disappear as the source changes, survive a restart of pgflow, and write through.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <random>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Runs a shell command; returns its standard output.
std::string Shell(const std::string& command) {
  std::string out;
  FILE* f = popen(command.c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  pclose(f);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// A connected socket to `port` on loopback (-1 on failure).
int Open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// Sends `request` on a fresh TCP connection and reads until `expect_bytes` arrived or 5 s.
std::string Raw(int port, const std::string& request, size_t expect_bytes) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)!write(fd, request.data(), request.size());
  std::string out;
  char buf[65536];
  while (out.size() < expect_bytes) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, n);
  }
  close(fd);
  return out;
}

class KvPipeline {
 public:
  // `extra_sink_options` go inside the kv block; `sink_lines`, YAML at the sink's level (as
  // "    transforms: [...]\n"), after it; `top_lines`, YAML at the file's top level.
  KvPipeline(const std::string& name, const std::string& extra_sink_options = "",
             const std::string& sink_lines = "", const std::string& top_lines = "")
      : name_(name),
        redis_(FreeLoopbackPort()),
        memcached_(FreeLoopbackPort()),
        http_(FreeLoopbackPort()),
        admin_(FreeLoopbackPort()) {
    Sql admin(SharedCluster().Url());
    admin.Exec("CREATE DATABASE " + name);
    yaml_ = dir_.File("pipeline.yaml");
    WriteFile(yaml_, "pipeline: " + name +
                         "\n"
                         "source:\n"
                         "  postgres:\n"
                         "    url: ${SOURCE_URL}\n"
                         "    tables: [public.*, sales.*]\n"
                         "    snapshot: {mode: initial, workers: 2}\n"
                         "    status_interval: 200ms\n"
                         "sinks:\n"
                         "  cache:\n"
                         "    flush_interval: 20ms\n"
                         "    kv: {redis: 127.0.0.1:" +
                         std::to_string(redis_) + ", memcached: 127.0.0.1:" +
                         std::to_string(memcached_) + ", http: 127.0.0.1:" + std::to_string(http_) +
                         extra_sink_options + "}\n" + sink_lines + top_lines +
                         "admin: {listen: '127.0.0.1:" + std::to_string(admin_) + "'}\n");
  }
  std::string url() const { return SharedCluster().Url(name_); }
  std::string log() const { return dir_.File("pgflow.log"); }
  std::string yaml() const { return yaml_; }
  int redis() const { return redis_; }
  int http() const { return http_; }
  int memcached() const { return memcached_; }

  // Starts pgflow and waits until the cache serves.
  std::unique_ptr<PgflowProcess> Start() {
    return StartPgflowUntilLogged({"run", yaml_, "--progress", "1"}, log(), {{"SOURCE_URL", url()}},
                                  "kv cache: loaded");
  }
  size_t Count(const std::string& needle) const { return CountInFile(log(), needle); }
  std::string Cli(const std::string& args) const {
    return Shell("redis-cli -p " + std::to_string(redis_) + " " + args + " 2>&1");
  }
  // The admin endpoint's /metrics.
  std::string Metrics() const {
    return Shell("curl -s http://127.0.0.1:" + std::to_string(admin_) + "/metrics");
  }
  std::string Curl(const std::string& path) const {
    return Shell("curl -s -w ' %{http_code}' 'http://127.0.0.1:" + std::to_string(http_) + path +
                 "'");
  }

 private:
  std::string name_;
  TempDir dir_;
  std::string yaml_;
  int redis_, memcached_, http_, admin_;
};

// INFO memory: the memory section alone, with what the rows hold (`rows` of them, `big_text`
// bytes of one text among them) and the limit, as monitoring tools read them; the same figures
// are metrics.
void ExpectMemoryFigures(KvPipeline& p, int rows, int big_text) {
  const std::string memory = p.Cli("INFO memory");
  EXPECT_THAT(memory, HasSubstr("# Memory"));
  EXPECT_THAT(memory, Not(HasSubstr("# Keyspace")));
  EXPECT_THAT(memory, HasSubstr("pgflow_rows:" + std::to_string(rows)));
  EXPECT_THAT(memory, HasSubstr("maxmemory:1073741824"));
  EXPECT_THAT(memory, HasSubstr("maxmemory_human:1.00G"));
  EXPECT_THAT(memory, HasSubstr("maxmemory_policy:noeviction"));
  const size_t at = memory.find("used_memory:");
  ASSERT_NE(at, std::string::npos) << memory;
  const long used = std::stol(memory.substr(at + 12));
  EXPECT_GT(used, big_text + rows * 60) << memory;
  EXPECT_LT(used, big_text + rows * 400) << memory;
  EXPECT_THAT(memory, HasSubstr("used_memory_human:"));
  const std::string metrics = p.Metrics();
  EXPECT_THAT(metrics, HasSubstr("pgflow_kv_rows{pipeline=\"kv_clients\",sink=\"cache\"} " +
                                 std::to_string(rows)));
  EXPECT_THAT(metrics,
              HasSubstr("pgflow_kv_used_memory_bytes{pipeline=\"kv_clients\",sink=\"cache\"} " +
                        std::to_string(used)));
  EXPECT_THAT(
      metrics,
      HasSubstr("pgflow_kv_max_memory_bytes{pipeline=\"kv_clients\",sink=\"cache\"} 1073741824"));
}

TEST(KvCacheTest, ServesRowsOverRedisMemcachedAndHttpAsTheSourceChanges) {
  KvPipeline p("kv_clients");
  Sql sql(p.url());
  sql.Exec(
      "CREATE TABLE users (id int PRIMARY KEY, name text, score numeric, tags text[]);"
      "CREATE SCHEMA sales;"
      "CREATE TABLE sales.lines (order_id int, line int, item text, PRIMARY KEY (order_id, line));"
      "INSERT INTO users SELECT g, 'user' || g, g * 1.5, ARRAY['a','b'] FROM generate_series(1, "
      "200) g;"
      "INSERT INTO sales.lines VALUES (7, 1, 'pen'), (7, 2, 'ink');"
      // Stored out of line (TOAST): an UPDATE of another column does not send it again.
      "CREATE TABLE docs (id int PRIMARY KEY, body text, n int);"
      "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;"
      "INSERT INTO docs VALUES (1, repeat('y', 10000), 1);");
  auto pgflow = p.Start();

  // Redis: hashes, JSON, composite keys, PGEC keys, RESP3.
  EXPECT_EQ(p.Cli("HGET users:1 name"), "user1");
  EXPECT_EQ(p.Cli("HGET sales.lines:7:2 item"), "ink");
  EXPECT_EQ(p.Cli("GET users:2"), R"({"id":2,"name":"user2","score":"3.0","tags":["a","b"]})");
  EXPECT_EQ(p.Cli("HGET pgflow_kv_clients.users.3 name"), "user3");
  EXPECT_EQ(p.Cli("DBSIZE"), "203");
  // redis-cli -3 (HELLO 3) prints a map as "field value" lines when not on a terminal.
  EXPECT_EQ(p.Cli("-3 HGETALL users:4"), "id 4\nname user4\nscore 6.0\ntags [\"a\",\"b\"]");
  // RESP3 on the wire: HELLO 3 makes HGETALL a map.
  EXPECT_THAT(Raw(p.redis(), "HELLO 3\r\nHGETALL users:4\r\n", 200),
              HasSubstr("%4\r\n$2\r\nid\r\n$1\r\n4\r\n$4\r\nname\r\n$5\r\nuser4\r\n"));
  std::string scanned = p.Cli("--scan --pattern 'users:1*'");
  EXPECT_EQ(std::count(scanned.begin(), scanned.end(), '\n') + 1, 111)
      << scanned;  // 1, 10-19, 100-199
  EXPECT_THAT(p.Cli("HSET users:1 name x"), HasSubstr("READONLY"));
  EXPECT_THAT(p.Cli("INFO keyspace"), HasSubstr("db0:keys=203"));
  ExpectMemoryFigures(p, 203, 10000);

  // Pipelining: many commands in one write, answered in order.
  std::string batch;
  for (int i = 1; i <= 100; ++i) batch += "HGET users:" + std::to_string(i) + " id\r\n";
  std::string replies = Raw(p.redis(), batch, 100 * 7);
  EXPECT_THAT(replies, HasSubstr("$2\r\n99\r\n$3\r\n100\r\n"));
  EXPECT_EQ(std::count(replies.begin(), replies.end(), '$'), 100);

  // HTTP.
  EXPECT_EQ(p.Curl("/users/5"), R"({"id":5,"name":"user5","score":"7.5","tags":["a","b"]} 200)");
  EXPECT_EQ(p.Curl("/sales.lines/7/1"), R"({"order_id":7,"line":1,"item":"pen"} 200)");
  EXPECT_THAT(p.Curl("/users/999"), HasSubstr("\"error\":\"not found\""));
  EXPECT_THAT(p.Curl("/users/999"), HasSubstr(" 404"));
  EXPECT_THAT(p.Curl("/users?limit=2&after=10"), HasSubstr(R"({"rows":[{"id":11,)"));
  EXPECT_THAT(p.Curl("/"),
              HasSubstr(R"("name":"users","schema":"public","table":"users","rows":200)"));
  EXPECT_THAT(Shell("curl -si http://127.0.0.1:" + std::to_string(p.http()) + "/users/5"),
              HasSubstr("ETag: \""));

  // memcached.
  EXPECT_EQ(Shell("memccat --servers=127.0.0.1:" + std::to_string(p.memcached()) + " users:6"),
            R"({"id":6,"name":"user6","score":"9.0","tags":["a","b"]})");
  EXPECT_THAT(Raw(p.memcached(), "mg users:6 s v\r\n", 10), HasSubstr("VA 54 s54\r\n"));
  EXPECT_THAT(Shell("memcstat --servers=127.0.0.1:" + std::to_string(p.memcached())),
              HasSubstr("curr_items: 203"));

  // Keyspace notifications, with a real subscriber.
  TempDir tmp;
  std::string events = tmp.File("events.txt");
  Shell("(timeout 20 redis-cli -p " + std::to_string(p.redis()) +
        " PSUBSCRIBE '__keyspace@0__:users:*' > " + events + " 2>&1 &)");
  ASSERT_TRUE(WaitFor([&] { return ReadFile(events).find("psubscribe") != std::string::npos; },
                      std::chrono::seconds(10)));

  // Changes: insert, update, delete, in one transaction, become visible together.
  sql.Exec(
      "BEGIN; INSERT INTO users VALUES (500, 'new', 1, NULL); UPDATE users SET name = "
      "'changed' WHERE id = 1; DELETE FROM users WHERE id = 2; COMMIT;");
  ASSERT_TRUE(
      WaitFor([&] { return p.Cli("HGET users:500 name") == "new"; }, std::chrono::seconds(10)))
      << ReadFile(p.log());
  EXPECT_EQ(p.Cli("HGET users:1 name"), "changed");
  EXPECT_EQ(p.Cli("EXISTS users:2"), "0");
  EXPECT_THAT(p.Curl("/users/2"), HasSubstr(" 404"));
  ASSERT_TRUE(WaitFor([&] { return ReadFile(events).find("users:2\ndel") != std::string::npos; },
                      std::chrono::seconds(10)))
      << ReadFile(events);
  EXPECT_THAT(ReadFile(events), HasSubstr("__keyspace@0__:users:500\nhset"));
  // A null column: in the JSON, not in the hash.
  EXPECT_EQ(p.Cli("GET users:500"), R"({"id":500,"name":"new","score":"1","tags":null})");
  EXPECT_EQ(p.Cli("HKEYS users:500"), "id\nname\nscore");
  EXPECT_EQ(p.Cli("HVALS users:500"), "500\nnew\n1");
  EXPECT_EQ(p.Cli("HLEN users:500"), "3");
  EXPECT_EQ(p.Cli("HSTRLEN users:500 name"), "3");
  EXPECT_EQ(p.Cli("HSTRLEN users:500 tags"), "0");
  EXPECT_EQ(p.Cli("HEXISTS users:500 tags"), "0");
  // An unchanged TOAST value is kept from the cached row.
  EXPECT_EQ(p.Cli("HSTRLEN docs:1 body"), "10000");
  sql.Exec("UPDATE docs SET n = 2 WHERE id = 1");
  ASSERT_TRUE(WaitFor([&] { return p.Cli("HGET docs:1 n") == "2"; }, std::chrono::seconds(10)));
  EXPECT_EQ(p.Cli("HSTRLEN docs:1 body"), "10000");
  EXPECT_EQ(p.Cli("HKEYS docs:1"), "id\nbody\nn");

  // DDL: an added column shows in the next reads of the rows written after it.
  sql.Exec(
      "ALTER TABLE users ADD COLUMN email text; UPDATE users SET email = 'a@b.c' WHERE id = 3");
  ASSERT_TRUE(
      WaitFor([&] { return p.Cli("HGET users:3 email") == "a@b.c"; }, std::chrono::seconds(10)));
  EXPECT_THAT(p.Curl("/users/3"), HasSubstr(R"("email":"a@b.c")"));
  // A column added with a default has it in every row, written since or not: the table is read
  // again.
  sql.Exec("ALTER TABLE users ADD COLUMN tier int NOT NULL DEFAULT 7");
  ASSERT_TRUE(WaitFor([&] { return p.Cli("HGET users:1 tier") == "7"; }, std::chrono::seconds(30)))
      << ReadFile(p.log());
  EXPECT_THAT(p.Curl("/users/4"), HasSubstr(R"("tier":7)"));
  // So has a rewrite computing new values (TYPE ... USING).
  sql.Exec("ALTER TABLE users ALTER COLUMN tier TYPE text USING 'tier ' || tier");
  ASSERT_TRUE(
      WaitFor([&] { return p.Cli("HGET users:1 tier") == "tier 7"; }, std::chrono::seconds(30)))
      << ReadFile(p.log());
  EXPECT_THAT(p.Curl("/users/4"), HasSubstr(R"("tier":"tier 7")"));

  // Read-your-writes: wait for the LSN of one's own commit.
  sql.Exec("INSERT INTO users (id, name) VALUES (600, 'mine')");
  std::string lsn = sql.Scalar("SELECT pg_current_wal_lsn()");
  EXPECT_EQ(p.Cli("WAITLSN " + lsn + " 5000"), "OK");
  EXPECT_EQ(p.Cli("HGET users:600 name"), "mine");
  sql.Exec("INSERT INTO users (id, name) VALUES (601, 'mine too')");
  lsn = sql.Scalar("SELECT pg_current_wal_lsn()");
  EXPECT_THAT(p.Curl("/users/601?min_lsn=" + lsn), HasSubstr("\"mine too\""));
  EXPECT_THAT(p.Cli("WAITLSN FFFF/0 10"), HasSubstr("TIMEOUT"));
  EXPECT_THAT(p.Curl("/users/1?min_lsn=FFFF/0&timeout_ms=10"), HasSubstr(" 504"));

  // Garbage on every listener gets a protocol error (or a close), and the server goes on.
  using namespace std::string_literals;
  std::string junk = "*99999999999\r\n$-7\r\n\x01\xff\x00GET\r\n"s;
  EXPECT_THAT(Raw(p.redis(), junk, 1), HasSubstr("-ERR Protocol error"));
  EXPECT_THAT(Raw(p.http(), "GET\x00 / HTTP/9\r\n\r\n"s, 1), HasSubstr("400 Bad Request"));
  EXPECT_THAT(Raw(p.memcached(), std::string(70000, 'x'), 1), HasSubstr("CLIENT_ERROR"));
  EXPECT_THAT(Raw(p.redis(), "*1\r\n$100000000\r\n", 1), HasSubstr("-ERR Protocol error"));
  EXPECT_EQ(p.Cli("PING"), "PONG");

  // Truncate empties the table.
  sql.Exec("TRUNCATE sales.lines");
  ASSERT_TRUE(
      WaitFor([&] { return p.Cli("EXISTS sales.lines:7:1") == "0"; }, std::chrono::seconds(10)));

  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(p.log());
}

TEST(KvCacheTest, ARestartedCacheLoadsEveryRowAgainWithoutPinningWal) {
  KvPipeline p("kv_restart");
  Sql sql(p.url());
  sql.Exec(
      "CREATE SCHEMA sales; CREATE TABLE items (id int PRIMARY KEY, v text);"
      "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 1000) g;");
  auto pgflow = p.Start();
  EXPECT_EQ(p.Cli("DBSIZE"), "1000");
  sql.Exec("UPDATE items SET v = 'before' WHERE id = 1");
  ASSERT_TRUE(
      WaitFor([&] { return p.Cli("HGET items:1 v") == "before"; }, std::chrono::seconds(10)));
  pgflow->Signal(SIGTERM);
  ASSERT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(p.log());
  // The slot moved past what the cache applied: nothing pins WAL.
  std::string confirmed = sql.Scalar(
      "SELECT confirmed_flush_lsn >= (SELECT pg_current_wal_lsn() - 1000000) FROM "
      "pg_replication_slots WHERE slot_name = 'pgflow_kv_restart'");
  EXPECT_EQ(confirmed, "t");

  // While pgflow is down: rows change, appear and go.
  sql.Exec(
      "UPDATE items SET v = 'while down' WHERE id = 2; DELETE FROM items WHERE id = 3;"
      "INSERT INTO items VALUES (5000, 'new')");
  pgflow = p.Start();
  EXPECT_EQ(p.Count("copying every table again"), 1u) << ReadFile(p.log());
  EXPECT_EQ(p.Cli("HGET items:1 v"), "before");
  EXPECT_EQ(p.Cli("HGET items:2 v"), "while down");
  EXPECT_EQ(p.Cli("EXISTS items:3"), "0");
  EXPECT_EQ(p.Cli("HGET items:5000 v"), "new");
  EXPECT_EQ(p.Cli("DBSIZE"), "1000");
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

// Joined documents (sinks/kv/kv_documents.h): orders with their customer and their lines, each
// line with its product, as the cache's "orders" table.
constexpr char kOrderDocuments[] =
    "documents:\n"
    "  orders:\n"
    "    table: public.orders\n"
    "    fields: [id, status]\n"
    "    children:\n"
    "      customer: {table: public.customers, on: {id: customer_id}, one: true, fields: [name]}\n"
    "      lines:\n"
    "        table: public.order_lines\n"
    "        on: {order_id: id}\n"
    "        fields: [line, qty]\n"
    "        children:\n"
    "          product: {table: public.products, on: {sku: sku}, one: true, fields: [title]}\n";

// Every order's document, rendered here independently of pgflow (jsonb, to compare with).
constexpr char kExpectedOrders[] =
    "SELECT jsonb_build_object('id', o.id, 'status', o.status,"
    " 'customer', (SELECT jsonb_build_object('name', c.name) FROM customers c"
    "              WHERE c.id = o.customer_id),"
    " 'lines', COALESCE((SELECT jsonb_agg(jsonb_build_object('line', l.line, 'qty', l.qty,"
    "   'product', (SELECT jsonb_build_object('title', p.title) FROM products p"
    "               WHERE p.sku = l.sku)) ORDER BY l.order_id, l.line)"
    "   FROM order_lines l WHERE l.order_id = o.id), '[]'::jsonb)) AS d FROM orders o";

// The same through the transforms of kOrderTransforms.
constexpr char kOrderTransforms[] =
    "    transforms:\n"
    "      - mask: {table: public.customers, columns: {name: redact}}\n"
    "      - filter: {table: public.order_lines, where: 'qty > 1'}\n"
    "      - set: {table: public.orders, columns: {region: eu}}\n";
constexpr char kExpectedTransformedOrders[] =
    "SELECT jsonb_build_object('id', o.id, 'status', o.status, 'region', 'eu',"
    " 'customer', (SELECT jsonb_build_object('name', 'REDACTED') FROM customers c"
    "              WHERE c.id = o.customer_id),"
    " 'lines', COALESCE((SELECT jsonb_agg(jsonb_build_object('line', l.line, 'qty', l.qty,"
    "   'product', (SELECT jsonb_build_object('title', p.title) FROM products p"
    "               WHERE p.sku = l.sku)) ORDER BY l.order_id, l.line)"
    "   FROM order_lines l WHERE l.order_id = o.id AND l.qty > 1), '[]'::jsonb)) AS d"
    " FROM orders o";

// "<documents the cache holds> <held but wrong or extra> <expected but missing or wrong>",
// from one page of the cache's HTTP listing; "0 0 0" for an empty, exact cache.
std::string CompareOrders(KvPipeline& p, Sql& sql, const char* expected = kExpectedOrders) {
  std::string page = p.Curl("/orders?limit=10000");
  const size_t code = page.rfind(' ');
  if (code == std::string::npos || page.substr(code + 1) != "200") return "HTTP: " + page;
  page.resize(code);
  return sql.Scalar(
      "WITH got AS (SELECT d FROM jsonb_array_elements($page$" + page +
      "$page$::jsonb->'rows') d), expected AS (" + expected +
      ") SELECT (SELECT count(*) FROM got) || ' ' ||"
      " (SELECT count(*) FROM (SELECT d FROM got EXCEPT SELECT d FROM expected) x) || ' ' ||"
      " (SELECT count(*) FROM (SELECT d FROM expected EXCEPT SELECT d FROM got) y)");
}

// The tables of kOrderDocuments: `orders` orders of three lines each, among `customers`
// customers and `products` products.
void CreateShop(Sql& sql, int customers, int products, int orders) {
  const std::string c = std::to_string(customers);
  const std::string p = std::to_string(products);
  sql.Exec(
      "CREATE SCHEMA sales;"
      "CREATE TABLE customers (id int PRIMARY KEY, name text);"
      "CREATE TABLE products (sku text PRIMARY KEY, title text);"
      "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, status text);"
      "CREATE TABLE order_lines (order_id int, line int, sku text, qty int,"
      "                          PRIMARY KEY (order_id, line));"
      "CREATE INDEX ON order_lines (sku); CREATE INDEX ON orders (customer_id);"
      "INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, " + c + ") g;"
      "INSERT INTO products SELECT 'p' || g, 'product ' || g FROM generate_series(1, " + p +
      ") g; INSERT INTO orders SELECT g, g % " + c + " + 1, 'new' FROM generate_series(1, " +
      std::to_string(orders) + ") g;"
      "INSERT INTO order_lines SELECT o, l, 'p' || ((o + l) % " + p + " + 1), l"
      "  FROM generate_series(1, " + std::to_string(orders) + ") o, generate_series(1, 3) l;");
}

TEST(KvCacheTest, JoinedDocumentsAreServedAndFollowEveryTableTheyRead) {
  KvPipeline p("kv_documents", ", documents: [orders]", "", kOrderDocuments);
  Sql sql(p.url());
  CreateShop(sql, 20, 10, 300);
  auto pgflow = p.Start();
  EXPECT_EQ(p.Cli("DBSIZE"), "300");
  EXPECT_EQ(CompareOrders(p, sql), "300 0 0");
  // A document as JSON, a field as a hash field, a child's array as its JSON.
  EXPECT_THAT(p.Cli("GET orders:7"), HasSubstr("\"customer\":{\"name\":\"customer 8\"}"));
  EXPECT_EQ(p.Cli("HGET orders:7 status"), "new");
  EXPECT_THAT(p.Cli("HGET orders:7 lines"), HasSubstr("{\"qty\":1,\"line\":1,"));

  // Read-your-writes: once WAITLSN answers for a commit, its documents are there.
  sql.Exec("UPDATE customers SET name = 'renamed' WHERE id = 8");
  std::string lsn = sql.Scalar("SELECT pg_current_wal_lsn()");
  EXPECT_EQ(p.Cli("WAITLSN " + lsn + " 10000"), "OK");
  EXPECT_THAT(p.Cli("GET orders:7"), HasSubstr("\"customer\":{\"name\":\"renamed\"}"));
  EXPECT_THAT(p.Cli("GET orders:27"), HasSubstr("\"customer\":{\"name\":\"renamed\"}"));

  // A line moved to another order (both render again), a shared product renamed, an order
  // gone, one new with its lines in one transaction, a customer gone.
  sql.Exec("UPDATE order_lines SET order_id = 2, line = 4 WHERE order_id = 1 AND line = 1");
  sql.Exec("UPDATE products SET title = 'the fifth' WHERE sku = 'p5'");
  sql.Exec("DELETE FROM order_lines WHERE order_id = 3; DELETE FROM orders WHERE id = 3");
  sql.Exec(
      "BEGIN; INSERT INTO orders VALUES (1000, 1, 'fresh');"
      "INSERT INTO order_lines VALUES (1000, 1, 'p1', 9); COMMIT");
  sql.Exec("DELETE FROM customers WHERE id = 2; UPDATE orders SET status = 'paid' WHERE id < 50");
  ASSERT_TRUE(WaitFor([&] { return CompareOrders(p, sql) == "300 0 0"; },
                      std::chrono::seconds(20)))
      << CompareOrders(p, sql);
  EXPECT_EQ(p.Cli("EXISTS orders:3"), "0");
  EXPECT_THAT(p.Cli("GET orders:21"), HasSubstr("\"customer\":null"));

  // TRUNCATE of a child's table renders every document again; of the root's, empties them.
  sql.Exec("TRUNCATE order_lines");
  ASSERT_TRUE(WaitFor([&] { return CompareOrders(p, sql) == "300 0 0"; },
                      std::chrono::seconds(20)))
      << CompareOrders(p, sql);
  EXPECT_EQ(p.Cli("HGET orders:7 lines"), "[]");

  // A restart copies every table again, with what changed while pgflow was down.
  pgflow->Signal(SIGTERM);
  ASSERT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(p.log());
  sql.Exec(
      "INSERT INTO order_lines VALUES (7, 1, 'p2', 5); UPDATE products SET title = 'two'"
      " WHERE sku = 'p2'; DELETE FROM orders WHERE id = 8");
  pgflow = p.Start();
  EXPECT_EQ(CompareOrders(p, sql), "299 0 0");
  EXPECT_THAT(p.Cli("HGET orders:7 lines"), HasSubstr("\"title\":\"two\""));

  sql.Exec("TRUNCATE orders");
  ASSERT_TRUE(WaitFor([&] { return p.Cli("DBSIZE") == "0"; }, std::chrono::seconds(20)));
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

TEST(KvCacheTest, TransformsReachEveryLevelOfAJoinedDocument) {
  KvPipeline p("kv_document_transforms", ", documents: [orders]", kOrderTransforms,
               kOrderDocuments);
  Sql sql(p.url());
  CreateShop(sql, 5, 5, 50);
  auto pgflow = p.Start();
  EXPECT_EQ(CompareOrders(p, sql, kExpectedTransformedOrders), "50 0 0");
  EXPECT_EQ(p.Cli("HGET orders:7 region"), "eu");
  EXPECT_THAT(p.Cli("GET orders:7"), Not(HasSubstr("customer ")));

  // A line that enters the filter, one that leaves it, a renamed customer (masked still).
  sql.Exec("UPDATE order_lines SET qty = 9 WHERE order_id = 7 AND line = 1");
  sql.Exec("UPDATE order_lines SET qty = 0 WHERE order_id = 7 AND line = 3");
  sql.Exec("UPDATE customers SET name = 'someone' WHERE id = 3");
  sql.Exec("INSERT INTO orders VALUES (100, 2, 'fresh'); INSERT INTO order_lines VALUES"
           " (100, 1, 'p1', 1), (100, 2, 'p2', 2)");
  ASSERT_TRUE(WaitFor([&] { return CompareOrders(p, sql, kExpectedTransformedOrders) ==
                                   "51 0 0"; },
                      std::chrono::seconds(20)))
      << CompareOrders(p, sql, kExpectedTransformedOrders);
  EXPECT_THAT(p.Cli("HGET orders:7 lines"), HasSubstr("{\"line\":1,\"qty\":9,"));
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

// Under a stream of random transactions (join keys moved, shared rows renamed, orders made and
// deleted), every WAITLSN for the last commit finds each document as SQL renders it then, and a
// kill -9 halfway loses nothing.
TEST(KvCacheTest, JoinedDocumentsStayExactUnderContinuousWrites) {
  KvPipeline p("kv_documents_writes", ", documents: [orders]", "", kOrderDocuments);
  Sql sql(p.url());
  CreateShop(sql, 20, 10, 300);
  auto pgflow = p.Start();
  std::mt19937 rnd(51);
  auto pick = [&](int n) { return std::to_string(std::uniform_int_distribution(1, n)(rnd)); };
  int next_order = 301;
  for (int t = 0; t < 240; ++t) {
    std::string txn;  // (one transaction: Sql::Exec runs its statements in one)
    for (int k = 0; k < 3; ++k) {
      const std::string n = std::to_string(t * 3 + k);
      const std::string order = pick(next_order - 1);
      switch (rnd() % 7) {
        case 0:
          txn += "UPDATE orders SET status = 's" + n + "' WHERE id = " + order + ";";
          break;
        case 1:  // a line moved to another order, at its end
          txn += "UPDATE order_lines SET order_id = " + order + ", line = (SELECT"
                 " coalesce(max(line), 0) + 1 FROM order_lines WHERE order_id = " + order +
                 ") WHERE (order_id, line) = (SELECT order_id, line FROM order_lines WHERE"
                 " order_id = " + pick(next_order - 1) + " ORDER BY line LIMIT 1);";
          break;
        case 2:
          txn += "UPDATE customers SET name = 'c" + n + "' WHERE id = " + pick(20) + ";";
          break;
        case 3:
          txn += "UPDATE products SET title = 't" + n + "' WHERE sku = 'p" + pick(10) + "';";
          break;
        case 4: {
          const std::string id = std::to_string(next_order++);
          txn += "INSERT INTO orders VALUES (" + id + ", " + pick(20) + ", 'new');"
                 "INSERT INTO order_lines VALUES (" + id + ", 1, 'p" + pick(10) + "', 1), (" +
                 id + ", 2, 'p" + pick(10) + "', 2);";
          break;
        }
        case 5:
          txn += "DELETE FROM order_lines WHERE order_id = " + order +
                 "; DELETE FROM orders WHERE id = " + order + ";";
          break;
        default:  // the customer's join key
          txn += "UPDATE orders SET customer_id = " + pick(20) + " WHERE id = " + order + ";";
      }
    }
    sql.Exec(txn);
    if (t == 120) {
      pgflow->Signal(SIGKILL);
      pgflow->Wait(std::chrono::seconds(30));
      pgflow = p.Start();
    }
    if (t % 40 != 39) continue;
    const std::string lsn = sql.Scalar("SELECT pg_current_wal_lsn()");
    ASSERT_EQ(p.Cli("WAITLSN " + lsn + " 20000"), "OK") << "after transaction " << t;
    EXPECT_EQ(CompareOrders(p, sql), sql.Scalar("SELECT count(*) FROM orders") + " 0 0")
        << "after transaction " << t;
  }
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

TEST(KvCacheTest, WriteThroughHsetAndDelReachPostgresAndAreReadBack) {
  KvPipeline p("kv_write", ", write_through: true, password: s3cret");
  Sql sql(p.url());
  sql.Exec(
      "CREATE SCHEMA sales; CREATE TABLE accounts (id bigint PRIMARY KEY, owner text, balance "
      "numeric(12,2), "
      "active boolean);"
      "INSERT INTO accounts VALUES (1, 'ann', 10.00, true);");
  auto pgflow = p.Start();
  EXPECT_THAT(p.Cli("HGET accounts:1 owner"), HasSubstr("NOAUTH"));
  EXPECT_EQ(p.Cli("-a s3cret --no-auth-warning HGET accounts:1 owner"), "ann");
  // Written to PostgreSQL with the column types respected, and readable at once.
  EXPECT_EQ(p.Cli("-a s3cret --no-auth-warning HSET accounts:2 owner bob balance 5.5 active f"),
            "3")
      << ReadFile(p.log());
  EXPECT_EQ(
      sql.Scalar("SELECT owner || ' ' || balance || ' ' || active FROM accounts WHERE id = 2"),
      "bob 5.50 false");
  EXPECT_EQ(p.Cli("-a s3cret --no-auth-warning HGET accounts:2 balance"), "5.50");
  EXPECT_EQ(p.Cli("-a s3cret --no-auth-warning HSET accounts:1 balance 20"), "0");
  EXPECT_EQ(p.Cli("-a s3cret --no-auth-warning HGET accounts:1 balance"), "20.00");
  EXPECT_THAT(p.Cli("-a s3cret --no-auth-warning HSET accounts:1 balance notanumber"),
              HasSubstr("invalid input syntax"));
  EXPECT_THAT(p.Cli("-a s3cret --no-auth-warning HSET accounts:1 nosuch 1"),
              HasSubstr("no column 'nosuch'"));
  EXPECT_EQ(p.Cli("-a s3cret --no-auth-warning DEL accounts:1 accounts:404"), "1");
  EXPECT_EQ(sql.Scalar("SELECT count(*) FROM accounts"), "1");
  EXPECT_EQ(p.Cli("-a s3cret --no-auth-warning EXISTS accounts:1"), "0");
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

TEST(KvCacheTest, SelectedColumnsAndAMemoryLimitThatStopsThePipeline) {
  KvPipeline p("kv_limits",
               ", columns: {public.people: [name]}, max_memory: 256KiB, max_connections: 3");
  Sql sql(p.url());
  sql.Exec(
      "CREATE SCHEMA sales; CREATE TABLE people (id int PRIMARY KEY, name text, secret text);"
      "INSERT INTO people SELECT g, 'p' || g, 'hidden' FROM generate_series(1, 100) g;");
  auto pgflow = p.Start();
  EXPECT_EQ(p.Cli("HGETALL people:7"), "id\n7\nname\np7");
  EXPECT_THAT(p.Curl("/people/7"), HasSubstr(R"({"id":7,"name":"p7"} 200)"));
  EXPECT_THAT(p.Curl("/people/7"), Not(HasSubstr("hidden")));
  // Past max_connections a new client is told so and closed; the others are served.
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(Open(p.redis()));
  EXPECT_THAT(Raw(p.redis(), "PING\r\n", 1), HasSubstr("-ERR max number of clients reached"));
  (void)!write(held[0], "PING\r\n", 6);
  char pong[16] = {};
  EXPECT_GT(read(held[0], pong, sizeof(pong) - 1), 0);
  EXPECT_STREQ(pong, "+PONG\r\n");
  for (int fd : held) close(fd);

  // Past the limit the pipeline stops with a clear message instead of serving part of a table.
  sql.Exec(
      "INSERT INTO people SELECT g, repeat('x', 200), 'hidden' FROM generate_series(101, "
      "5000) g");
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 1) << ReadFile(p.log());
  EXPECT_THAT(ReadFile(p.log()), HasSubstr("memory limit (max_memory 262144 bytes)"));
  EXPECT_THAT(p.Cli("PING"), HasSubstr("Could not connect"));
}

// A filter in front of the cache: a row that stops matching leaves it, one that starts matching
// enters it, whatever the table's replica identity.
TEST(KvCacheTest, AnUpdateThatLeavesAFilterDeletesTheRowFromTheCache) {
  KvPipeline p("kv_filtered", "",
               "    transforms:\n"
               "      - filter: {table: public.orders, where: \"status = 'paid'\"}\n");
  Sql sql(p.url());
  sql.Exec(
      "CREATE SCHEMA sales; CREATE TABLE orders (id int PRIMARY KEY, status text);"
      "INSERT INTO orders VALUES (1, 'paid'), (2, 'open');");
  auto pgflow = p.Start();
  EXPECT_EQ(p.Cli("HGET orders:1 status"), "paid");
  EXPECT_EQ(p.Cli("EXISTS orders:2"), "0");
  sql.Exec("UPDATE orders SET status = 'refunded' WHERE id = 1");
  sql.Exec("UPDATE orders SET status = 'paid' WHERE id = 2");
  EXPECT_TRUE(WaitFor([&] { return p.Cli("EXISTS orders:1") == "0"; }, std::chrono::seconds(30)))
      << ReadFile(p.log());
  EXPECT_TRUE(
      WaitFor([&] { return p.Cli("HGET orders:2 status") == "paid"; }, std::chrono::seconds(30)));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(p.log());
}

// Mistakes a user makes with the kv cache, each refused with a message naming it.
TEST(KvCacheTest, AMissingSelectedColumnAndASecondRunAreRefusedClearly) {
  KvPipeline wrong("kv_wrongcol", ", columns: {public.people: [nmae]}");
  Sql sql(wrong.url());
  sql.Exec(
      "CREATE SCHEMA sales; CREATE TABLE people (id int PRIMARY KEY, name text);"
      "INSERT INTO people VALUES (1, 'a')");
  std::string out;
  // Refused before anything is created in the source (SnapshotTest checks that nothing is).
  EXPECT_EQ(RunPgflow({"run", wrong.yaml()}, &out, {{"SOURCE_URL", wrong.url()}}), 2);
  EXPECT_THAT(out, HasSubstr("sinks.cache.kv.columns (of public.people) names nmae, which the "
                             "table does not have (its columns: id, name): correct it"));
  EXPECT_THAT(out, HasSubstr("not started, nothing created in the source"));

  KvPipeline p("kv_twice");
  Sql(p.url()).Exec("CREATE SCHEMA sales; CREATE TABLE people (id int PRIMARY KEY, name text)");
  auto pgflow = p.Start();
  // (The second run is told by the slot in use: once the first streams from it.)
  ASSERT_TRUE(WaitFor(
      [&] {
        return Sql(p.url()).Scalar(
                   "SELECT count(*) FROM pg_replication_slots "
                   "WHERE slot_name = 'pgflow_kv_twice' AND active") == "1";
      },
      std::chrono::seconds(30)))
      << ReadFile(p.log());
  EXPECT_EQ(RunPgflow({"run", p.yaml()}, &out, {{"SOURCE_URL", p.url()}}), 1);
  // Named as the pgflow process it is, not as the WAL sender serving it.
  EXPECT_THAT(out, HasSubstr("pipeline kv_twice is already running: pgflow process " +
                             std::to_string(pgflow->pid()) + " on "));
  EXPECT_THAT(out, HasSubstr("streams from its replication slot pgflow_kv_twice"));
  EXPECT_THAT(out, Not(HasSubstr("Address already in use")));
  EXPECT_TRUE(pgflow->Running());
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

}  // namespace
}  // namespace pgflow::testing
