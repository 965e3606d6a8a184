// Transforms end to end: a real PostgreSQL, the pgflow binary, jsonl sinks. What a sink gets
// after the pipeline's transforms and its own, snapshot rows and streamed changes alike, and
// that no unmasked value reaches any output.

#include <signal.h>

#include <algorithm>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/digest.h"
#include "tests/integration/support/replication.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

TEST(TransformTest, MaskHidesEveryValueInSnapshotAndStreamAndASinkAddsItsOwn) {
  Sql admin(SharedCluster().Url());
  admin.Exec("CREATE DATABASE masked");
  Sql sql(SharedCluster().Url("masked"));
  sql.Exec(R"sql(
    CREATE TABLE customers (id int PRIMARY KEY, email text, phone varchar(20), name text,
                            age int);
    ALTER TABLE customers REPLICA IDENTITY FULL;  -- old rows in full: masked too
    CREATE TABLE notes (id int PRIMARY KEY, body text);
    INSERT INTO customers VALUES (1, 'ann.private@example.com', '+44 7700 900123', 'Ann Smith', 31),
                                 (2, 'bob.private@example.org', '+44 7700 900456', 'Bob Jones', NULL);
    INSERT INTO notes VALUES (1, 'not masked');
  )sql");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml,
            "pipeline: masked\n"
            "source:\n"
            "  postgres:\n"
            "    url: " +
                SharedCluster().Url("masked") +
                "\n"
                "    tables: [public.*]\n"
                "    status_interval: 200ms\n"
                "transforms:\n"
                "  - mask:\n"
                "      table: public.customers\n"
                "      columns: {email: email, phone: hash, name: partial, age: null}\n"
                "      salt: ${MASK_SALT}\n"
                "sinks:\n"
                "  hashed: {jsonl: {path: " +
                dir.File("hashed.jsonl") +
                "}, flush_interval: 50ms}\n"
                "  redacted:\n"
                "    jsonl: {path: " +
                dir.File("redacted.jsonl") +
                "}\n"
                "    flush_interval: 50ms\n"
                "    transforms:\n"
                "      - mask: {table: 'public.*', columns: {email: redact, body: redact}}\n");
  const std::map<std::string, std::string> env = {{"MASK_SALT", "pepper-4711"}};
  std::string out;
  ASSERT_EQ(RunPgflow({"validate", yaml}, &out, env), 0) << out;
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), env,
                                       "replication stream: streaming");
  sql.Exec("INSERT INTO customers VALUES (3, 'cy.private@example.net', '+1 555 0100', 'Cy', 40)");
  sql.Exec("UPDATE customers SET email = 'ann.new@example.com', age = 32 WHERE id = 1");
  sql.Exec("DELETE FROM customers WHERE id = 2");
  // 2 snapshot rows + 1 note + insert, update, delete.
  ASSERT_TRUE(WaitFor(
      [&] {
        return ReadJsonlWritten(dir.File("redacted.jsonl")).size() >= 6 &&
               ReadJsonlWritten(dir.File("hashed.jsonl")).size() >= 6;
      },
      std::chrono::seconds(30)))
      << ReadFile(dir.File("pgflow.log"));
  pgflow->Signal(SIGINT);
  ASSERT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));

  const std::string hashed = ReadFile(dir.File("hashed.jsonl"));
  const std::string redacted = ReadFile(dir.File("redacted.jsonl"));
  for (const char* secret : {"ann.private", "bob.private", "cy.private", "ann.new", "7700",
                             "555 0100", "Ann Smith", "Bob Jones"}) {
    EXPECT_THAT(hashed, Not(HasSubstr(secret)));
    EXPECT_THAT(redacted, Not(HasSubstr(secret)));
  }
  std::vector<json> lines = ReadJsonl(dir.File("hashed.jsonl"));
  std::map<std::string, json> by_op_and_id;
  for (const json& line : lines) {
    if (line["table"] != "customers") continue;
    const json& row = line["op"] == "delete" ? line["before"] : line["after"];
    by_op_and_id[line["op"].get<std::string>() + std::to_string(row["id"].get<int>())] = line;
  }
  const json& ann = by_op_and_id["read1"]["after"];
  auto salted = [](std::string_view value) { return LowerHex(HmacSha256("pepper-4711", {value})); };
  const std::string local_hash = salted("ann.private").substr(0, 16);
  EXPECT_EQ(ann["email"], local_hash + "@example.com");
  // varchar(20): the hex HMAC cut to what the column holds.
  EXPECT_EQ(ann["phone"], salted("+44 7700 900123").substr(0, 20));
  EXPECT_EQ(ann["name"], "A******th");
  EXPECT_TRUE(ann["age"].is_null());
  // Deterministic: the same phone hashes alike in the snapshot and the stream, in the old row
  // of the update and the new.
  const json& update = by_op_and_id["update1"];
  EXPECT_EQ(update["after"]["phone"], ann["phone"]);
  EXPECT_EQ(update["before"]["email"], local_hash + "@example.com");
  EXPECT_EQ(update["after"]["email"], salted("ann.new").substr(0, 16) + "@example.com");
  EXPECT_EQ(by_op_and_id["delete2"]["before"]["name"], "B******es");
  EXPECT_EQ(by_op_and_id["insert3"]["after"]["name"], "**");  // too short to show any of it
  // The sink's own mask comes after the pipeline's, on every table of the schema.
  for (const json& line : ReadJsonl(dir.File("redacted.jsonl"))) {
    if (line["table"] == "notes") {
      EXPECT_EQ(line["after"]["body"], "REDACTED");
    }
    if (line["table"] == "customers" && line["after"].is_object()) {
      EXPECT_EQ(line["after"]["email"], "REDACTED");
      EXPECT_NE(line["after"]["name"].get<std::string>().find('*'), std::string::npos);
    }
  }
  EXPECT_THAT(hashed, HasSubstr("not masked"));  // the first sink does not mask notes
}

TEST(TransformTest, FilterKeepsMatchingRowsAndTurnsLeavingUpdatesIntoDeletes) {
  Sql admin(SharedCluster().Url());
  admin.Exec("CREATE DATABASE filtered");
  Sql sql(SharedCluster().Url("filtered"));
  sql.Exec(R"sql(
    CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric(10,2),
                         placed timestamptz, attrs jsonb);
    ALTER TABLE orders REPLICA IDENTITY FULL;
    CREATE TABLE other (id int PRIMARY KEY);
    INSERT INTO orders VALUES
      (1, 'paid', 99.50, '2026-01-02 10:00+00', '{"color": "red"}'),
      (2, 'paid', 5.00, '2026-01-02 10:00+00', '{"color": "red"}'),
      (3, 'open', 50.00, '2026-01-02 10:00+00', '{"color": "red"}'),
      (4, 'paid', 20.00, '2025-12-31 23:59+00', '{"color": "blue"}');
    INSERT INTO other VALUES (1);
  )sql");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml,
            "pipeline: filtered\n"
            "source:\n"
            "  postgres:\n"
            "    url: " +
                SharedCluster().Url("filtered") +
                "\n"
                "    tables: [public.*]\n"
                "    status_interval: 200ms\n"
                "transforms:\n"
                "  - filter:\n"
                "      table: public.orders\n"
                "      where: \"status = 'paid' and total > 10 and placed >= '2026-01-01' "
                "and attrs->>'color' in ('red', 'green')\"\n"
                "sinks:\n"
                "  out: {jsonl: {path: " +
                dir.File("out.jsonl") + "}, flush_interval: 50ms}\n");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  sql.Exec(R"sql(INSERT INTO orders VALUES (5, 'paid', 11, now(), '{"color": "green"}'))sql");
  sql.Exec(R"sql(INSERT INTO orders VALUES (6, 'open', 11, now(), '{"color": "green"}'))sql");
  sql.Exec("UPDATE orders SET status = 'refunded' WHERE id = 1");  // leaves: a delete
  sql.Exec("UPDATE orders SET status = 'paid' WHERE id = 3");      // enters: an insert
  sql.Exec("UPDATE orders SET total = 30 WHERE id = 5");           // stays: an update
  sql.Exec("UPDATE orders SET total = 12 WHERE id = 6");           // stays out: nothing
  sql.Exec("DELETE FROM orders WHERE id = 2");                     // never in: nothing
  sql.Exec("INSERT INTO other VALUES (2)");                        // another table: passes
  auto described = [&] {
    std::vector<std::string> out;
    for (const json& line : ReadJsonlWritten(dir.File("out.jsonl"))) {
      const json& row = line["after"].is_object() ? line["after"] : line["before"];
      out.push_back(line["table"].get<std::string>() + " " + line["op"].get<std::string>() + " " +
                    std::to_string(row["id"].get<int>()));
    }
    return out;
  };
  const std::vector<std::string> expected = {
      "orders read 1",   "other read 1",    "orders insert 5", "orders delete 1",
      "orders insert 3", "orders update 5", "other insert 2"};
  std::vector<std::string> got;
  EXPECT_TRUE(WaitFor([&] { return (got = described()).size() >= expected.size(); },
                      std::chrono::seconds(30)))
      << ReadFile(dir.File("pgflow.log"));
  pgflow->Signal(SIGINT);
  ASSERT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));
  got = described();
  if (got.size() >= 2) std::sort(got.begin(), got.begin() + 2);  // the copies in either order
  EXPECT_EQ(got, expected);
}

TEST(TransformTest, MaskMistakesAreNamedBeforeAnythingRuns) {
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  auto validate = [&](const std::string& transforms, std::string* out) {
    WriteFile(yaml,
              "pipeline: bad\n"
              "source: {postgres: {url: 'postgres://db/x', tables: [public.t]}}\n"
              "transforms:\n" +
                  transforms + "sinks: {out: {jsonl: {path: out.jsonl}}}\n");
    return RunPgflow({"validate", yaml}, out, {{"PGFLOW_MASK_SALT", ""}});
  };
  std::string out;
  EXPECT_EQ(validate("  - mask: {table: public.t, columns: {email: hash}}\n", &out), 2);
  EXPECT_THAT(
      out, HasSubstr("pipeline.yaml:4:11: transforms[0].mask: hash, email, fake_name and fake_phone need a secret salt"));
  EXPECT_EQ(validate("  - mask: {table: public.t, columns: {email: scramble}}\n", &out), 2);
  EXPECT_THAT(out, HasSubstr("unknown mask rule 'scramble'"));
  EXPECT_EQ(validate("  - filterr: {table: public.t}\n", &out), 2);
  EXPECT_THAT(out, HasSubstr("unknown transform 'filterr' (expected one of: cast, drop_columns, filter,"));
  EXPECT_EQ(validate("  - filter: {table: public.t, where: \"total >\"}\n", &out), 2);
  EXPECT_THAT(out, HasSubstr("transforms[0].filter.where: invalid predicate: at character 8: "
                             "expected a column or a value, got the end"));
}

TEST(TransformTest, AMaskThatCannotApplyStopsThePipelineNamingIt) {
  Sql admin(SharedCluster().Url());
  admin.Exec("CREATE DATABASE masked_bad");
  Sql sql(SharedCluster().Url("masked_bad"));
  sql.Exec("CREATE TABLE t (id int PRIMARY KEY, n int); INSERT INTO t VALUES (1, 2)");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml,
            "pipeline: masked_bad\n"
            "source: {postgres: {url: '" +
                SharedCluster().Url("masked_bad") +
                "', tables: [public.t]}}\n"
                "transforms:\n"
                "  - mask: {table: public.t, columns: {n: redact}}\n"
                "sinks: {out: {jsonl: {path: " +
                dir.File("out.jsonl") + "}}}\n");
  std::string out;
  // Found by the checks `run` makes before it starts: refused as a configuration error.
  EXPECT_EQ(RunPgflow({"run", yaml}, &out), 2);
  EXPECT_THAT(out, HasSubstr("transforms[0] (mask): public.t.n: rule redact applies to text "
                             "columns"));
  EXPECT_EQ(ReadJsonl(dir.File("out.jsonl")).size(), 0u);  // nothing unmasked went out
}

TEST(TransformTest, AStrictMaskStopsAtAColumnAddedWithoutARuleBeforeItLeaks) {
  Sql admin(SharedCluster().Url());
  admin.Exec("CREATE DATABASE strict_mask");
  Sql sql(SharedCluster().Url("strict_mask"));
  sql.Exec("CREATE TABLE customers (id int PRIMARY KEY, email text);"
           "INSERT INTO customers VALUES (1, 'ann@example.com')");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  WriteFile(yaml, "pipeline: strict_mask\n"
                  "source:\n  postgres:\n    url: " +
                      SharedCluster().Url("strict_mask") +
                      "\n    tables: [public.customers]\n    status_interval: 200ms\n"
                      "transforms:\n"
                      "  - mask: {table: public.customers, strict: true, salt: s,\n"
                      "           columns: {id: keep, email: email}}\n"
                      "sinks:\n  out: {jsonl: {path: " +
                      dir.File("out.jsonl") + "}, flush_interval: 50ms}\n");
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  sql.Exec("INSERT INTO customers VALUES (2, 'bob@example.org')");
  // Delivered before the schema change (in one batch with it, it would wait with it).
  ASSERT_TRUE(WaitFor([&] { return ReadJsonlWritten(dir.File("out.jsonl")).size() >= 2; },
                      std::chrono::seconds(30)))
      << ReadFile(dir.File("pgflow.log"));
  sql.Exec("ALTER TABLE customers ADD COLUMN phone text");
  sql.Exec("INSERT INTO customers VALUES (3, 'cy@example.net', '+1 555 0199')");
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 1) << ReadFile(dir.File("pgflow.log"));
  EXPECT_THAT(ReadFile(dir.File("pgflow.log")),
              HasSubstr("transforms[0] (mask, strict): public.customers.phone has no rule"));
  const std::string written = ReadFile(dir.File("out.jsonl"));
  EXPECT_THAT(written, Not(HasSubstr("555 0199")));
  EXPECT_THAT(written, Not(HasSubstr("ann@")));  // her address was masked
  EXPECT_EQ(ReadJsonl(dir.File("out.jsonl")).size(), 2u);  // the copy and the first insert
}

// The rule docs/guides/transforms.md shows for `lua`, end to end.
TEST(TransformTest, TheGuidesLuaRuleDerivesATierAndDropsTestAccounts) {
  Sql admin(SharedCluster().Url());
  admin.Exec("CREATE DATABASE scripted");
  Sql sql(SharedCluster().Url("scripted"));
  sql.Exec(R"sql(
    CREATE TABLE customers (id int PRIMARY KEY, email text, lifetime_spend numeric, tier text);
    INSERT INTO customers VALUES (1, 'ann@example.com', 12000.50, NULL),
                                 (2, 'qa@test.example', 50000, NULL);
  )sql");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  const std::string guide =
      ReadFile(std::string(PGFLOW_SOURCE_DIR) + "/docs/guides/transforms.md");
  const size_t start = guide.find("  - lua:\n      table: public.customers");
  ASSERT_NE(start, std::string::npos);
  const std::string block = guide.substr(start, guide.find("```", start) - start);
  WriteFile(yaml, "pipeline: scripted\n"
                  "source:\n  postgres:\n    url: " +
                      SharedCluster().Url("scripted") +
                      "\n    tables: [public.customers]\n    status_interval: 200ms\n"
                      "transforms:\n" +
                      block + "sinks:\n  out: {jsonl: {path: " + dir.File("out.jsonl") +
                      "}, flush_interval: 50ms}\n");
  std::string out;
  ASSERT_EQ(RunPgflow({"validate", yaml}, &out), 0) << out << "\n" << ReadFile(yaml);
  auto pgflow = StartPgflowUntilLogged({"run", yaml}, dir.File("pgflow.log"), {},
                                       "replication stream: streaming");
  sql.Exec("INSERT INTO customers VALUES (3, 'cy@example.net', 1500, 'stale')");
  sql.Exec("UPDATE customers SET lifetime_spend = 20 WHERE id = 3");
  sql.Exec("INSERT INTO customers VALUES (4, 'bot@test.example', 1, NULL)");
  sql.Exec("DELETE FROM customers WHERE id = 1");
  ASSERT_TRUE(WaitFor([&] { return ReadJsonlWritten(dir.File("out.jsonl")).size() >= 4; },
                      std::chrono::seconds(30)))
      << ReadFile(dir.File("pgflow.log"));
  pgflow->Signal(SIGINT);
  ASSERT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(dir.File("pgflow.log"));
  std::vector<std::string> got;
  for (const json& line : ReadJsonl(dir.File("out.jsonl"))) {
    const json& row = line["after"].is_object() ? line["after"] : line["before"];
    got.push_back(line["op"].get<std::string>() + " " + std::to_string(row["id"].get<int>()) +
                  " " + (row["tier"].is_string() ? row["tier"].get<std::string>() : "-"));
  }
  EXPECT_EQ(got, (std::vector<std::string>{"read 1 gold", "insert 3 silver", "update 3 standard",
                                           "delete 1 -"}));
}

TEST(TransformTest, PreviewShowsRowsBeforeAndAfterAndValidateSourceChecksTheCatalog) {
  Sql admin(SharedCluster().Url());
  admin.Exec("CREATE DATABASE previewed");
  Sql sql(SharedCluster().Url("previewed"));
  sql.Exec(R"sql(
    CREATE TABLE customers (id int PRIMARY KEY, email text, ssn text, cents bigint, status text);
    INSERT INTO customers VALUES (1, 'ann@example.com', '123-45-6789', 12345, 'active'),
                                 (2, 'bob@example.org', '987-65-4321', 500, 'closed');
  )sql");
  TempDir dir;
  const std::string yaml = dir.File("pipeline.yaml");
  auto write = [&](const std::string& transforms) {
    WriteFile(yaml, "pipeline: previewed\n"
                    "source: {postgres: {url: '" +
                        SharedCluster().Url("previewed") +
                        "', tables: [public.customers]}}\n"
                        "transforms:\n" +
                        transforms + "sinks: {out: {jsonl: {path: " + dir.File("out.jsonl") +
                        "}}}\n");
  };
  write(
      "  - filter: {table: public.customers, where: \"status = 'active'\"}\n"
      "  - mask: {table: public.customers, salt: s, columns: {email: email}}\n"
      "  - drop_columns: {table: public.customers, columns: [ssn]}\n"
      "  - cast: {table: public.customers, columns: {cents: {type: numeric, scale: 0.01}}}\n"
      "  - rename: {table: public.customers, columns: {cents: amount}}\n"
      "  - set: {table: public.customers, columns: {source: '{schema}.{table}'}}\n");
  std::string out;
  ASSERT_EQ(RunPgflow({"preview", yaml, "--table", "public.customers", "--limit", "5"}, &out), 0)
      << out;
  EXPECT_THAT(out, HasSubstr("row 1 of public.customers -> read on public.customers"));
  EXPECT_THAT(out, HasSubstr("ann@example.com"));  // the source side
  EXPECT_THAT(out, HasSubstr("@example.com"));
  EXPECT_THAT(out, HasSubstr("123-45-6789      (not in the output)"));
  EXPECT_THAT(out, HasSubstr("amount (renamed or added)"));
  EXPECT_THAT(out, HasSubstr("123.45"));
  EXPECT_THAT(out, HasSubstr("source (renamed or added)"));
  EXPECT_THAT(out, HasSubstr("public.customers"));
  EXPECT_THAT(out, HasSubstr("row 2 of public.customers: filtered out"));
  EXPECT_EQ(RunPgflow({"preview", yaml, "--table", "public.nope"}, &out), 2);
  EXPECT_THAT(out, HasSubstr("table public.nope does not exist"));

  ASSERT_EQ(RunPgflow({"validate", "--source", yaml}, &out), 0) << out;
  write("  - mask: {table: public.customers, columns: {emial: redact, cents: redact}}\n");
  EXPECT_EQ(RunPgflow({"validate", yaml}, &out), 0) << out;  // offline: nothing to see
  EXPECT_EQ(RunPgflow({"validate", "--source", yaml}, &out), 2);
  EXPECT_THAT(out, HasSubstr("public.customers: transforms[0] (mask): table public.customers has "
                             "no column 'emial'"));
}

TEST(TransformTest, APostgresTargetBehindDropColumnsAndRenameFollowsTheSourcesSchemaChanges) {
  Replication r(SharedCluster(0), SharedCluster(1), "reshaped", "[public.users]",
                "{mode: initial}");
  // The sink's own transforms: the target never sees ssn, and sees the rest under new names.
  std::string yaml = ReadFile(r.yaml());
  const std::string common = ", flush_interval: 50ms}";
  ASSERT_NE(yaml.find(common), std::string::npos);
  yaml.replace(yaml.find(common), common.size(),
               ", flush_interval: 50ms, transforms: ["
               "{drop_columns: {table: public.users, columns: [ssn]}}, "
               "{rename: {table: public.users, to: crm.people, columns: {name: full_name}}}]}");
  WriteFile(r.yaml(), yaml);
  Sql source(r.source_url());
  source.Exec(R"sql(
    CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, ssn text, email text,
                        CHECK (length(ssn) > 3), CHECK (name <> ''));
    INSERT INTO users SELECT g, 'user ' || g, 'ssn-' || g, g || '@example.com'
      FROM generate_series(1, 100) g;
  )sql");
  auto pgflow = r.Start();
  ASSERT_TRUE(r.WaitStreaming(*pgflow)) << ReadFile(r.log());
  source.Exec("UPDATE users SET name = 'renamed one', ssn = 'ssn-new' WHERE id = 1");
  source.Exec("ALTER TABLE users ADD COLUMN phone text");
  source.Exec("UPDATE users SET phone = '555-0101' WHERE id = 2");
  source.Exec("ALTER TABLE users DROP COLUMN email");
  source.Exec("INSERT INTO users (id, name, ssn, phone) VALUES (101, 'new', 'ssn-101', '555')");
  source.Exec("ALTER TABLE users ADD COLUMN ssn_digest text");  // not dropped: it follows
  source.Exec("UPDATE users SET ssn_digest = 'd3' WHERE id = 3");
  source.Exec("DELETE FROM users WHERE id = 4");
  ASSERT_TRUE(r.CaughtUp(std::chrono::seconds(60))) << ReadFile(r.log());
  pgflow->Signal(SIGINT);
  ASSERT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(r.log());

  Sql target(r.target_url());
  EXPECT_EQ(target.Query("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM "
                         "information_schema.columns WHERE table_schema = 'crm' AND "
                         "table_name = 'people'"),
            (std::vector<std::vector<std::string>>{{"id,full_name,phone,ssn_digest"}}));
  EXPECT_TRUE(target.Query("SELECT table_schema FROM information_schema.tables WHERE "
                           "table_name = 'users'")
                  .empty())
      << ReadFile(r.log());
  // The primary key came with it.
  EXPECT_EQ(target.Query("SELECT count(*) FROM pg_constraint WHERE conrelid = 'crm.people'::regclass "
                         "AND contype = 'p'"),
            (std::vector<std::vector<std::string>>{{"1"}}));
  EXPECT_EQ(target.Query("SELECT count(*), count(phone), count(ssn_digest) FROM crm.people"),
            (std::vector<std::vector<std::string>>{{"100", "2", "1"}}));
  EXPECT_EQ(target.Query("SELECT full_name, phone FROM crm.people WHERE id IN (1, 2, 101) "
                         "ORDER BY id"),
            (std::vector<std::vector<std::string>>{
                {"renamed one", "<NULL>"}, {"user 2", "555-0101"}, {"new", "555"}}));
  EXPECT_THAT(ReadFile(r.log()), Not(HasSubstr("ssn-")));
}

}  // namespace
}  // namespace pgflow::testing
