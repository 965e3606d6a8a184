// CopyOutReader against a real server: the same messages as libpq's blocking read, a stream
// shorter than the low-water mark ends without waiting for more, and the socket wakes at every
// byte again afterwards (a blocking query after it would otherwise wait forever).

#include <sys/socket.h>

#include <string>
#include <vector>

#include "common/postgres/pg_connection.h"
#include "gtest/gtest.h"
#include "tests/integration/support/test_support.h"

namespace pgflow {
namespace {

using testing::SharedCluster;
using testing::Sql;

PgConnPtr Open() {
  absl::StatusOr<PgConnPtr> conn = Connect(SharedCluster().Url(), ConnectionKind::kRegular);
  EXPECT_TRUE(conn.ok()) << conn.status();
  return conn.ok() ? std::move(*conn) : nullptr;
}

int LowWater(PGconn* conn) {
  int value = 0;
  socklen_t size = sizeof(value);
  getsockopt(PQsocket(conn), SOL_SOCKET, SO_RCVLOWAT, &value, &size);
  return value;
}

void StartCopy(PGconn* conn, const std::string& query) {
  PgResultPtr res(PQexec(conn, ("COPY (" + query + ") TO STDOUT").c_str()));
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_COPY_OUT) << PQerrorMessage(conn);
}

// Every message of the COPY started on `conn`, read by `next` until the end.
template <typename Next>
std::vector<std::string> Drain(PGconn* conn, Next next) {
  std::vector<std::string> messages;
  while (true) {
    char* buf = nullptr;
    const int n = next(&buf);
    if (n == -1) break;
    EXPECT_GT(n, 0) << PQerrorMessage(conn);
    if (n <= 0) break;
    messages.emplace_back(buf, static_cast<size_t>(n));
    PQfreemem(buf);
  }
  PgResultPtr end(PQgetResult(conn));
  EXPECT_EQ(PQresultStatus(end.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn);
  while (PGresult* extra = PQgetResult(conn)) PQclear(extra);
  return messages;
}

// Rows of every size from a few bytes to 20 KB, more than the low-water mark in all.
constexpr char kRows[] =
    "SELECT g, repeat(md5(g::text), (g * 7919) % 600) FROM generate_series(1, 20000) g";

TEST(CopyOutReaderTest, ReadsTheSameMessagesAsABlockingRead) {
  PgConnPtr conn = Open();
  ASSERT_NE(conn, nullptr);
  StartCopy(conn.get(), kRows);
  const std::vector<std::string> blocking =
      Drain(conn.get(), [&](char** buf) { return PQgetCopyData(conn.get(), buf, 0); });
  ASSERT_EQ(blocking.size(), 20000u);

  StartCopy(conn.get(), kRows);
  std::vector<std::string> batched;
  {
    CopyOutReader reader(conn.get());
    EXPECT_EQ(LowWater(conn.get()), 256 << 10);
    batched = Drain(conn.get(), [&](char** buf) { return reader.Next(buf); });
  }
  EXPECT_EQ(batched, blocking);
  EXPECT_EQ(LowWater(conn.get()), 1);
  // A blocking query waits for a reply of a few bytes: it returns.
  absl::StatusOr<PgResultPtr> after = Exec(conn.get(), "SELECT 1");
  EXPECT_TRUE(after.ok()) << after.status();
}

TEST(CopyOutReaderTest, AStreamShorterThanTheLowWaterMarkEnds) {
  PgConnPtr conn = Open();
  ASSERT_NE(conn, nullptr);
  StartCopy(conn.get(), "SELECT 'one row'");
  CopyOutReader reader(conn.get());
  char* buf = nullptr;
  ASSERT_EQ(reader.Next(&buf), 8);
  EXPECT_EQ(std::string(buf, 8), "one row\n");
  PQfreemem(buf);
  EXPECT_EQ(reader.Next(&buf), -1);
  reader.Release();
  EXPECT_EQ(LowWater(conn.get()), 1);
  PgResultPtr end(PQgetResult(conn.get()));
  EXPECT_EQ(PQresultStatus(end.get()), PGRES_COMMAND_OK);
  while (PGresult* extra = PQgetResult(conn.get())) PQclear(extra);
}

TEST(CopyOutReaderTest, AnErrorMidStreamIsReported) {
  PgConnPtr conn = Open();
  ASSERT_NE(conn, nullptr);
  // Fails after some rows were sent: division by zero at g = 5000.
  StartCopy(conn.get(), "SELECT g, 1 / (5000 - g) FROM generate_series(1, 10000) g");
  CopyOutReader reader(conn.get());
  int rows = 0;
  char* buf = nullptr;
  int n;
  while ((n = reader.Next(&buf)) > 0) {
    ++rows;
    PQfreemem(buf);
  }
  EXPECT_EQ(n, -1);       // the COPY ended; its result says how
  EXPECT_EQ(rows, 4999);  // every row before the failing one
  reader.Release();
  PgResultPtr end(PQgetResult(conn.get()));
  EXPECT_EQ(PQresultStatus(end.get()), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(end.get(), PG_DIAG_SQLSTATE), "22012");
  while (PGresult* extra = PQgetResult(conn.get())) PQclear(extra);
}

}  // namespace
}  // namespace pgflow
