// The pipeline file's `source: {postgres: ...}` values: URLs (never echoing a password), table
// names, snapshot settings, slot and pipeline names, durations, buffer and admin settings.

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/config_testing.h"

namespace pgflow {
namespace {

using namespace config_testing;  // NOLINT(build/namespaces): the fixture and its helpers
using std::chrono::milliseconds;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// ---------------------------------------------------------------------------------------------
// Values of source.postgres.

TEST_F(ConfigTest, MalformedUrlNeverShowsThePassword) {
  auto with_url = [](std::string_view url) {
    return ErrorOf(std::string(R"(
pipeline: shop
source:
  postgres:
    url: ')") + std::string(url) +
                   R"('
    tables: [public.a]
sinks: {out: {fake: {path: x}}}
)");
  };
  std::string message = with_url("http://app:hunter2@db/shop");
  EXPECT_THAT(message, StartsWith("p.yaml:4:10: source.postgres.url: invalid connection string: "
                                  "missing \"=\" after \"...\""));
  EXPECT_THAT(message, Not(HasSubstr("hunter2")));
  // No '@' to tell the password from the host: libpq reads it as host and port, and no part
  // of what it quotes may be shown.
  for (const char* url : {"postgres://app:hunter2/shop", "http://app:hunter2/shop",
                          "postgres://app:hunter2@db:x/shop?sslmode=nope=1"}) {
    message = with_url(url);
    EXPECT_THAT(message, HasSubstr("invalid connection string")) << url;
    for (size_t i = 0; i + 4 <= std::string_view("hunter2").size(); ++i) {
      EXPECT_THAT(message, Not(HasSubstr(std::string_view("hunter2").substr(i, 4)))) << url;
    }
  }

  message = with_url("postgres://app:hun%zzter2@db/shop");
  EXPECT_THAT(message, StartsWith("p.yaml:4:10: source.postgres.url: invalid connection string: "
                                  "the password is malformed"));
  EXPECT_THAT(message, Not(HasSubstr("hun")));

  message = with_url("postgres://app:hunter2@db/shop?sslmod=require");
  EXPECT_EQ(message,
            "p.yaml:4:10: source.postgres.url: invalid connection string: invalid URI query "
            "parameter: \"sslmod\"");

  message = with_url("host=db password=hunter2 nonsense=1");
  EXPECT_EQ(message,
            "p.yaml:4:10: source.postgres.url: invalid connection string: invalid connection "
            "option \"nonsense\"");

  // A key's name inside another ("word" in "password=") is no key: not shown.
  message = with_url("host=db password=hunt word");
  EXPECT_THAT(message, HasSubstr("invalid connection string"));
  EXPECT_THAT(message, Not(HasSubstr("\"word\"")));

  message = with_url("host=db password=hunter2 dbname");
  EXPECT_THAT(message, HasSubstr("p.yaml:4:10: source.postgres.url: invalid connection string"));
  EXPECT_THAT(message, Not(HasSubstr("hunter2")));

  message = with_url("postgres://app:hunter2@db:54x2/shop");
  EXPECT_EQ(message,
            "p.yaml:4:10: source.postgres.url: invalid connection string: a port is not a "
            "number 1..65535 (in a URI, percent-encode '@', ':' and '/' in the user name and "
            "password, like %40 for '@')");

  EXPECT_EQ(with_url(""), "p.yaml:4:10: source.postgres.url: must not be empty");
}

TEST_F(ConfigTest, BadTableNames) {
  auto with_tables = [](std::string_view tables) {
    return ErrorOf(std::string(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables:
      - public.ok
      - )") + std::string(tables) +
                   R"(
sinks: {out: {fake: {path: x}}}
)");
  };
  EXPECT_EQ(with_tables("orders"),
            "p.yaml:7:9: source.postgres.tables[1]: invalid table 'orders': expected "
            "schema.table or schema.*; add the schema, like public.orders");
  EXPECT_THAT(with_tables("shop.public.orders"),
              HasSubstr("p.yaml:7:9: source.postgres.tables[1]: invalid table "
                        "'shop.public.orders': expected schema.table or schema.*, not "
                        "database.schema.table"));
  EXPECT_THAT(with_tables("public."), HasSubstr("p.yaml:7:9: source.postgres.tables[1]: invalid "
                                                "table 'public.': empty name"));
  EXPECT_THAT(with_tables("my-schema.t"),
              HasSubstr("p.yaml:7:9: source.postgres.tables[1]: invalid table 'my-schema.t': "
                        "unexpected character '-'"));
  EXPECT_THAT(with_tables("'\"Open.t'"),
              HasSubstr("p.yaml:7:9: source.postgres.tables[1]: invalid table '\"Open.t': "
                        "unterminated quoted name"));
  EXPECT_THAT(with_tables("'*.orders'"), HasSubstr("p.yaml:7:9: source.postgres.tables[1]: "
                                                   "invalid table '*.orders'"));
  EXPECT_THAT(with_tables("public.\"\""), HasSubstr("zero-length quoted name"));
  EXPECT_THAT(with_tables("public." + std::string(64, 'a')), HasSubstr("is longer than 63 bytes"));
}

TEST_F(ConfigTest, DuplicateTables) {
  // Unquoted names fold to lower case, so these are the same table.
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.orders, Public.ORDERS]
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:5:29: source.postgres.tables[1]: table public.orders is listed twice (first "
            "at p.yaml:5:14)");
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables:
      - public.*
      - audit.log
      - public.orders
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:8:9: source.postgres.tables[2]: public.orders is already covered by public.* "
            "(p.yaml:6:9); list only one of them");
  // Quoted names keep their case, so these differ.
  EXPECT_TRUE(Parse(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.orders, 'public."Orders"']
sinks: {out: {fake: {path: x}}}
)")
                  .ok());
}

TEST_F(ConfigTest, EmptyTables) {
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: []
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:5:13: source.postgres.tables: list at least one table (schema.table or "
            "schema.*)");
}

TEST_F(ConfigTest, SnapshotValues) {
  auto with_snapshot = [](std::string_view snapshot) {
    return ErrorOf(std::string(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.a]
    snapshot: )") + std::string(snapshot) +
                   R"(
sinks: {out: {fake: {path: x}}}
)");
  };
  EXPECT_EQ(with_snapshot("{mode: intial}"),
            "p.yaml:6:22: source.postgres.snapshot.mode: unknown snapshot mode 'intial' (did you "
            "mean 'initial'? expected one of: initial, never, only)");
  EXPECT_EQ(with_snapshot("{workers: 65}"),
            "p.yaml:6:25: source.postgres.snapshot.workers: must be between 0 and 64, got 65");
  EXPECT_EQ(with_snapshot("{workers: four}"),
            "p.yaml:6:25: source.postgres.snapshot.workers: expected an integer, got 'four'");
  EXPECT_EQ(with_snapshot("{workers: [4]}"),
            "p.yaml:6:25: source.postgres.snapshot.workers: expected an integer, got a sequence");
  EXPECT_EQ(with_snapshot("{chunk_size: 512KiB}"),
            "p.yaml:6:28: source.postgres.snapshot.chunk_size: must be at least 1MiB, got 524288 "
            "bytes");
  EXPECT_THAT(with_snapshot("{chunk_size: 64XB}"),
              HasSubstr("p.yaml:6:28: source.postgres.snapshot.chunk_size: expected a byte size"));
}

TEST_F(ConfigTest, SlotAndPipelineNames) {
  EXPECT_EQ(ErrorOf(R"(
pipeline: Shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:1:11: pipeline: invalid pipeline name 'Shop': use a-z, 0-9 and '_', at most "
            "48 characters");
  std::string long_name(49, 'a');
  EXPECT_THAT(
      ErrorOf("pipeline: " + long_name + std::string(kMinimal.substr(kMinimal.find('\n', 1)))),
      HasSubstr("p.yaml:1:11: pipeline: invalid pipeline name"));
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.a]
    slot: my-slot
sinks: {out: {fake: {path: x}}}
)"),
            "p.yaml:6:11: source.postgres.slot: invalid name 'my-slot': use a-z, 0-9 and '_', at "
            "most 63 characters");
}

TEST_F(ConfigTest, BadDurations) {
  auto with_source_line = [](std::string_view line) {
    return ErrorOf(std::string(R"(
pipeline: shop
source:
  postgres:
    url: postgres://db/shop
    tables: [public.a]
    )") + std::string(line) +
                   R"(
sinks: {out: {fake: {path: x}}}
)");
  };
  EXPECT_THAT(with_source_line("status_interval: 5x"),
              HasSubstr("p.yaml:6:22: source.postgres.status_interval: expected a duration"));
  EXPECT_EQ(with_source_line("status_interval: 50ms"),
            "p.yaml:6:22: source.postgres.status_interval: must be between 100ms and 30s, got "
            "50ms");
  EXPECT_EQ(with_source_line("status_interval: 2m"),
            "p.yaml:6:22: source.postgres.status_interval: must be between 100ms and 30s, got 2m");
  EXPECT_EQ(with_source_line("heartbeat_interval: 10ms"),
            "p.yaml:6:25: source.postgres.heartbeat_interval: must be 0 (off) or at least 100ms, "
            "got 10ms");
  EXPECT_THAT(with_source_line("heartbeat_interval: -1s"),
              HasSubstr("p.yaml:6:25: source.postgres.heartbeat_interval: expected a duration"));

  EXPECT_THAT(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks:
  out:
    fake: {path: x}
    flush_interval: 1.5s
)"),
              HasSubstr("p.yaml:6:21: sinks.out.flush_interval: expected a duration"));
}

TEST_F(ConfigTest, BufferAndAdmin) {
  std::string base(kMinimal.substr(1));  // 7 lines
  EXPECT_EQ(ErrorOf(base + "buffer: {queue_bytes: 100kB}\n"),
            "p.yaml:8:23: buffer.queue_bytes: must be at least 1MiB, got 102400 bytes");
  EXPECT_THAT(ErrorOf(base + "buffer: {queue_bytes: lots}\n"),
              HasSubstr("p.yaml:8:23: buffer.queue_bytes: expected a byte size"));
  EXPECT_EQ(ErrorOf(base + "admin: {listen: localhost}\n"),
            "p.yaml:8:17: admin.listen: missing port; expected host:port, like 127.0.0.1:9187 "
            "or [::1]:9187");
  EXPECT_EQ(ErrorOf(base + "admin: {listen: '127.0.0.1:70000'}\n"),
            "p.yaml:8:17: admin.listen: invalid port '70000': expected a number 0..65535");
  EXPECT_EQ(ErrorOf(base + "admin: {listen: '::1:9187'}\n"),
            "p.yaml:8:17: admin.listen: an IPv6 address must be in brackets, like [::1]:9187");
  EXPECT_EQ(ErrorOf(base + "admin: {listen: ':9187'}\n"),
            "p.yaml:8:17: admin.listen: missing host (write 0.0.0.0:<port> to listen on every "
            "interface)");
  EXPECT_EQ(ErrorOf(base + "admin: {}\n"), "p.yaml:8:8: admin: missing required key 'listen'");
  for (std::string listen : {"'[::1]:9187'", "localhost:0", "0.0.0.0:9187"}) {
    absl::StatusOr<PipelineConfig> config = Parse(base + "admin: {listen: " + listen + "}\n");
    EXPECT_TRUE(config.ok()) << listen << ": " << config.status();
  }
}

TEST_F(ConfigTest, ListenAddressesAreOnesAListenerCanBind) {
  // The kv sink's listeners and the admin endpoint share one parser: a host name that
  // `validate` took and `run` then could not bind is refused here.
  EXPECT_EQ(ErrorOf(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks: {cache: {kv: {redis: "cache.example:6380"}}}
)"),
            "p.yaml:3:29: sinks.cache.kv.redis: 'cache.example' is not an IP address (IPv6 goes "
            "in brackets): a listener binds an address, like 127.0.0.1, 0.0.0.0 or [::1], or "
            "localhost");
  EXPECT_TRUE(Parse(R"(
pipeline: shop
source: {postgres: {url: "postgres://db/shop", tables: [public.a]}}
sinks: {cache: {kv: {redis: "[::1]:6380", http: "localhost:0"}}}
)")
                  .ok());
}

}  // namespace
}  // namespace pgflow
