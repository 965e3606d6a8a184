// `Verify` against a real server: a source and a target database, the ranges it reports and
// the differences it finds, whether the key ranges come from every key or from a sample.

#include "sinks/postgres/verify.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/support/test_support.h"

namespace pgflow {
namespace {

using ::pgflow::testing::SharedCluster;
using ::pgflow::testing::Sql;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Databases {
  std::string source;
  std::string target;
};

// Two databases on the test's server holding the same `setup`.
Databases Create(const std::string& name, const std::string& setup) {
  Databases d{SharedCluster().Url(name + "_source"), SharedCluster().Url(name + "_target")};
  for (const char* side : {"_source", "_target"}) {
    Sql(SharedCluster().Url()).Exec("CREATE DATABASE " + name + side);
  }
  Sql(d.source).Exec(setup);
  Sql(d.target).Exec(setup);
  return d;
}

struct Outcome {
  VerifyReport report;
  std::vector<std::string> lines;
  std::vector<VerifyProgress> progress;
};

Outcome VerifyTables(const Databases& d, const std::vector<TableRef>& tables, int jobs = 1,
                     bool skip_keyless = false) {
  Outcome run;
  VerifyOptions options;
  options.source_url = d.source;
  options.target_url = d.target;
  options.tables = tables;
  options.jobs = jobs;
  options.skip_keyless = skip_keyless;
  absl::StatusOr<VerifyReport> report = Verify(
      options, [&](const std::string& line) { run.lines.push_back(line); },
      [&](const VerifyProgress& p) { run.progress.push_back(p); });
  EXPECT_TRUE(report.ok()) << report.status();
  if (report.ok()) run.report = std::move(*report);
  return run;
}

// Whether the range a difference names holds `key` on the target.
bool RangeHolds(const Databases& d, const std::string& table, const RangeDifference& r,
                const std::string& key) {
  return Sql(d.target).Scalar("SELECT count(*) FROM " + table + " WHERE " + r.range + " AND " +
                              key) == "1";
}

// 30,000 rows of about 1 kB: about 4,600 pages, more than twice the 2,000 pages the bounds of a
// large table are sampled from.
constexpr const char* kWide =
    "CREATE TABLE wide (id int PRIMARY KEY, body text);"
    "INSERT INTO wide SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 30000) g;"
    "ANALYZE wide;";

TEST(VerifyTest, ALargeTableIsCutAlongASampleAndEachDifferenceIsInTheRangeReported) {
  Databases d = Create("wide", kWide);
  ASSERT_GT(std::stoi(Sql(d.source).Scalar("SELECT pg_relation_size('wide') / 8192")), 4000);
  Outcome same = VerifyTables(d, {{"public", "wide"}});
  EXPECT_TRUE(same.report.ok());
  EXPECT_EQ(same.report.rows, 30000);
  ASSERT_EQ(same.lines.size(), 1u);
  EXPECT_EQ(same.lines[0], "public.wide: 30000 rows in 64 ranges: identical");
  // Progress starts at nought, grows one range at a time and ends with every row.
  ASSERT_EQ(same.progress.size(), 65u);
  for (size_t i = 0; i < same.progress.size(); ++i) {
    EXPECT_EQ(same.progress[i].table, "public.wide");
    EXPECT_EQ(same.progress[i].ranges_done, static_cast<int>(i));
    EXPECT_EQ(same.progress[i].ranges_total, 64);
  }
  EXPECT_EQ(same.progress.back().rows, 30000);

  // A changed row, a missing row, and a row the target has past the source's last key.
  Sql(d.target).Exec(
      "UPDATE wide SET body = body || '.' WHERE id = 12345; DELETE FROM wide WHERE id = 20000;"
      "INSERT INTO wide VALUES (40000, 'extra')");
  for (int jobs : {1, 4}) {
    Outcome run = VerifyTables(d, {{"public", "wide"}}, jobs);
    EXPECT_FALSE(run.report.ok());
    ASSERT_EQ(run.report.differences.size(), 3u) << "jobs " << jobs;
    const auto& changed = run.report.differences[0];
    const auto& missing = run.report.differences[1];
    const auto& extra = run.report.differences[2];
    EXPECT_EQ(changed.source_rows, changed.target_rows);
    EXPECT_TRUE(RangeHolds(d, "wide", changed, "id = 12345")) << changed.range;
    EXPECT_EQ(missing.source_rows, missing.target_rows + 1);
    EXPECT_EQ(Sql(d.source).Scalar("SELECT count(*) FROM wide WHERE " + missing.range +
                                   " AND id = 20000"),
              "1")
        << missing.range;
    EXPECT_EQ(extra.source_rows + 1, extra.target_rows);
    EXPECT_TRUE(RangeHolds(d, "wide", extra, "id = 40000")) << extra.range;
    EXPECT_THAT(extra.range, ::testing::Not(HasSubstr("<=")));  // the last range: open above
    EXPECT_EQ(run.lines.back(), "public.wide: 3 of 64 ranges differ");
  }
}

TEST(VerifyTest, CompositeKeysPartitionsEmptyKeylessAndUnorderedKeys) {
  Databases d = Create("kinds",
                       "CREATE TABLE pairs (a int, b text, v jsonb, PRIMARY KEY (b, a));"
                       "INSERT INTO pairs SELECT g % 7, 'k' || (g / 7), jsonb_build_object('n', g) "
                       "FROM generate_series(1, 1000) g;"
                       "CREATE TABLE empty (id int PRIMARY KEY); CREATE TABLE keyless (x int);"
                       "INSERT INTO keyless VALUES (1), (1), (2), (NULL);"
                       "CREATE TABLE parts (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);"
                       "CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (500);"
                       "CREATE TABLE parts_high PARTITION OF parts FOR VALUES FROM (500) TO (1000);"
                       "INSERT INTO parts SELECT g, g::text FROM generate_series(0, 999) g;");
  Sql(d.source).Exec("CREATE TABLE only_source (id int PRIMARY KEY)");
  Outcome same = VerifyTables(d, {{"public", "*"}});
  EXPECT_EQ(same.report.differences.size(), 0u);
  EXPECT_THAT(same.lines,
              ::testing::ElementsAre(
                  "public.empty: 0 rows in 1 ranges: identical",
                  "public.keyless: 4 rows compared as a whole (no primary key): identical",
                  "public.only_source is missing on the target (public.only_source)",
                  "public.pairs: 1000 rows in 64 ranges: identical",
                  "public.parts: 1000 rows in 64 ranges: identical"));
  EXPECT_FALSE(same.report.ok());  // one table could not be compared: it is not there

  // Keyless: one duplicate fewer, or a value changed, is a difference.
  Sql(d.target).Exec(
      "DELETE FROM keyless WHERE ctid = (SELECT min(ctid) FROM keyless "
      "WHERE x = 1)");
  Outcome keyless = VerifyTables(d, {{"public", "keyless"}});
  ASSERT_EQ(keyless.report.differences.size(), 1u);
  EXPECT_EQ(keyless.report.differences[0].range, "all rows");
  EXPECT_EQ(keyless.report.differences[0].source_rows, 4);
  EXPECT_EQ(keyless.report.differences[0].target_rows, 3);
  EXPECT_EQ(keyless.lines.back(), "public.keyless: differs compared as a whole (no primary key)");
  // A table that does not exist proves nothing: an error beside the others, not "identical".
  Outcome typo = VerifyTables(d, {{"public", "nosuch"}, {"public", "empty"}});
  EXPECT_FALSE(typo.report.ok());
  EXPECT_THAT(typo.lines, ::testing::ElementsAre("public.nosuch does not exist in the source",
                                                 "public.empty: 0 rows in 1 ranges: identical"));
  EXPECT_EQ(typo.report.Summary(),
            "DIFFERENT: 1 identical, 0 different, 1 not compared (of 2 tables; 0 rows compared)");

  // A pipeline with keyless_tables: skip does not replicate it: not compared, and said so.
  Outcome skipped = VerifyTables(d, {{"public", "keyless"}, {"public", "empty"}}, 1, true);
  EXPECT_TRUE(skipped.report.ok());
  EXPECT_THAT(skipped.lines,
              ::testing::ElementsAre("1 table(s) without a primary key not compared: the pipeline "
                                     "does not replicate them (keyless_tables: skip): "
                                     "public.keyless",
                                     "public.empty: 0 rows in 1 ranges: identical"));
  Sql(d.target).Exec("INSERT INTO keyless VALUES (1)");
  EXPECT_TRUE(VerifyTables(d, {{"public", "keyless"}}).report.ok());
  Sql(d.target).Exec("UPDATE keyless SET x = 3 WHERE x = 2");
  EXPECT_EQ(VerifyTables(d, {{"public", "keyless"}}).report.differences.size(), 1u);

  // The same text in jsonb is the same row; another value is not.
  Sql(d.target).Exec("UPDATE pairs SET v = '{\"n\": 500}' WHERE a = 500 % 7 AND b = 'k71'");
  Sql(d.target).Exec("INSERT INTO empty VALUES (1); UPDATE parts SET v = 'x' WHERE id = 700");
  Outcome changed = VerifyTables(d, {{"public", "pairs"}, {"public", "empty"}});
  ASSERT_EQ(changed.report.differences.size(), 1u);
  EXPECT_EQ(changed.report.differences[0].table, "public.empty");
  // A partitioned table is compared as one, its partitions together.
  Outcome parts = VerifyTables(d, {{"public", "parts"}});
  ASSERT_EQ(parts.report.differences.size(), 1u);
  EXPECT_TRUE(RangeHolds(d, "parts", parts.report.differences[0], "id = 700"))
      << parts.report.differences[0].range;
  Sql(d.target).Exec("UPDATE pairs SET v = '{\"n\": 5000}' WHERE a = 500 % 7 AND b = 'k71'");
  changed = VerifyTables(d, {{"public", "pairs"}, {"public", "empty"}});
  ASSERT_EQ(changed.report.differences.size(), 2u);
  EXPECT_TRUE(RangeHolds(d, "pairs", changed.report.differences[0], "a = 3 AND b = 'k71'"))
      << changed.report.differences[0].range;
  EXPECT_EQ(changed.report.differences[1].table, "public.empty");
  EXPECT_EQ(changed.report.differences[1].range, "all rows");
  EXPECT_EQ(changed.report.differences[1].target_rows, 1);
}

TEST(VerifyTest, ATableThatCannotBeComparedIsReportedBesideTheOthers) {
  Databases d = Create("lacking",
                       "CREATE TABLE t (id int PRIMARY KEY, note text);"
                       "INSERT INTO t VALUES (1, 'a'), (2, 'b');"
                       "CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u VALUES (1);");
  Sql(d.target).Exec("ALTER TABLE t DROP COLUMN note");
  VerifyOptions options;
  options.source_url = d.source;
  options.target_url = d.target;
  options.tables = {{"public", "t"}, {"public", "u"}};
  std::vector<std::string> lines;
  absl::StatusOr<VerifyReport> report =
      Verify(options, [&](const std::string& line) { lines.push_back(line); });
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->ok());
  ASSERT_EQ(report->problems.size(), 1u);
  EXPECT_THAT(report->problems[0], HasSubstr("public.t: could not be compared: "));
  EXPECT_THAT(report->problems[0], HasSubstr("column \"note\" does not exist"));
  // The next table is still compared.
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1], "public.u: 1 rows in 1 ranges: identical");
}

// Owners and grants are compared by object, a table's sequences with it; the rows being the
// same does not make the tables identical. A table the copy leaves as it is (owned in the target
// by neither pgflow's role nor the source's owner) is a note, not a difference.
TEST(VerifyTest, AnOwnerOrGrantThatDiffersIsReportedByObject) {
  Sql(SharedCluster().Url()).Exec("CREATE ROLE verify_reader NOLOGIN");
  Databases d = Create("granted",
                       "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t DEFAULT VALUES;"
                       "GRANT SELECT ON t TO verify_reader; CREATE TABLE u (id int PRIMARY KEY);"
                       "CREATE TABLE w (id int PRIMARY KEY);");
  Sql(d.source).Exec("ALTER TABLE u OWNER TO verify_reader");
  Sql(d.target).Exec(
      "REVOKE SELECT ON t FROM verify_reader; GRANT USAGE ON t_id_seq TO verify_reader "
      "WITH GRANT OPTION; ALTER TABLE w OWNER TO verify_reader");
  Outcome run = VerifyTables(d, {{"public", "t"}, {"public", "u"}, {"public", "w"}});
  EXPECT_FALSE(run.report.ok());
  EXPECT_EQ(run.report.privileges_compared, 3);
  EXPECT_THAT(run.report.privilege_differences,
              ElementsAre("\"public\".\"t\": SELECT for verify_reader on the source only",
                          "\"public\".\"t_id_seq\": USAGE for verify_reader on the target only",
                          "\"public\".\"u\": owner verify_reader on the source, postgres on the "
                          "target"));
  EXPECT_THAT(run.report.privilege_notes,
              ElementsAre(HasSubstr("\"public\".\"w\": owned by verify_reader in the target, "
                                    "postgres in the source: owner and grants not compared")));
  EXPECT_THAT(run.report.Summary(),
              HasSubstr("(of 3 tables; 1 rows compared), 3 owner or grant differences"));
}

}  // namespace
}  // namespace pgflow
