// The strict Prometheus text-format reader the /metrics tests rely on: it must read a good
// exposition exactly (values, unescaped label values and help) and refuse each kind of
// malformed one with the line at fault. A unit test: no server needed.

#include "tests/integration/support/prometheus_text.h"

#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "engine/str_cat.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Expects `text` to be refused with a message that starts "line <line>: " and contains `what`.
void ExpectRejected(std::string_view text, int line, std::string_view what) {
  SCOPED_TRACE(text);
  absl::StatusOr<std::vector<PromFamily>> parsed = ParsePrometheusText(text);
  ASSERT_FALSE(parsed.ok()) << "accepted";
  const std::string message(parsed.status().message());
  EXPECT_THAT(message, StartsWith(Cat("line ", line, ": ")));
  EXPECT_THAT(message, HasSubstr(what));
}

// The value of the only sample of a one-line exposition `name value`.
std::optional<double> ValueOf(std::string_view value) {
  absl::StatusOr<std::vector<PromFamily>> parsed = ParsePrometheusText(Cat("a ", value, "\n"));
  if (!parsed.ok()) return std::nullopt;
  return FindSample(*parsed, "a", {});
}

constexpr std::string_view kGood = R"(# A comment that is neither HELP nor TYPE.
# HELP pgflow_events_total Change events read.\nBy table; a backslash \\ and a "quote".
# TYPE pgflow_events_total counter
pgflow_events_total{table="public.orders"} 42
pgflow_events_total{stage="read",table="we\"ird\\name\nx"} 7 1700000000000
pgflow_events_total { table = "spaced" , } 0

# HELP pgflow_lag_seconds Replication lag.
# TYPE pgflow_lag_seconds gauge
pgflow_lag_seconds 0.25
pgflow_lag_seconds{slot="nan"} NaN
pgflow_lag_seconds{slot="up"} +Inf
pgflow_lag_seconds{slot="down"} -Inf
pgflow_lag_seconds{slot="small"} -1.5e-3
# HELP pgflow_batch_seconds Time to write a batch.
# TYPE pgflow_batch_seconds histogram
pgflow_batch_seconds_bucket{sink="a",le="0.1"} 1
pgflow_batch_seconds_bucket{sink="a",le="1"} 3
pgflow_batch_seconds_bucket{sink="a",le="+Inf"} 4
pgflow_batch_seconds_sum{sink="a"} 2.5
pgflow_batch_seconds_count{sink="a"} 4
pgflow_batch_seconds_bucket{sink="b",le="0.1"} 0
pgflow_batch_seconds_bucket{sink="b",le="1"} 0
pgflow_batch_seconds_bucket{sink="b",le="+Inf"} 0
pgflow_batch_seconds_sum{sink="b"} 0
pgflow_batch_seconds_count{sink="b"} 0
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.01
rpc_seconds{quantile="0.99"} 0.2
rpc_seconds_sum 1.5
rpc_seconds_count 30
# HELP declared_only Declared, with nothing to show yet.
# TYPE declared_only counter
process_start_time_seconds 1.7e9
)";

TEST(PrometheusTextTest, ReadsAGoodExposition) {
  absl::StatusOr<std::vector<PromFamily>> parsed = ParsePrometheusText(kGood);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const std::vector<PromFamily>& families = *parsed;
  ASSERT_EQ(families.size(), 6);

  EXPECT_EQ(families[0].name, "pgflow_events_total");
  EXPECT_EQ(families[0].type, "counter");
  EXPECT_EQ(families[0].help, "Change events read.\nBy table; a backslash \\ and a \"quote\".");
  ASSERT_EQ(families[0].samples.size(), 3);
  EXPECT_EQ(families[0].samples[1].labels.at("table"), "we\"ird\\name\nx");
  EXPECT_EQ(FindSample(families, "pgflow_events_total", {{"table", "public.orders"}}), 42);
  EXPECT_EQ(FindSample(families, "pgflow_events_total",
                       {{"stage", "read"}, {"table", "we\"ird\\name\nx"}}),
            7);
  EXPECT_EQ(FindSample(families, "pgflow_events_total", {{"table", "spaced"}}), 0);
  // Every label must match: a subset or superset finds nothing.
  EXPECT_EQ(FindSample(families, "pgflow_events_total", {{"stage", "read"}}), std::nullopt);
  EXPECT_EQ(FindSample(families, "pgflow_events_total", {}), std::nullopt);

  EXPECT_EQ(families[1].type, "gauge");
  EXPECT_EQ(families[1].help, "Replication lag.");
  EXPECT_EQ(FindSample(families, "pgflow_lag_seconds", {}), 0.25);
  EXPECT_TRUE(std::isnan(*FindSample(families, "pgflow_lag_seconds", {{"slot", "nan"}})));
  EXPECT_EQ(FindSample(families, "pgflow_lag_seconds", {{"slot", "up"}}),
            std::numeric_limits<double>::infinity());
  EXPECT_EQ(FindSample(families, "pgflow_lag_seconds", {{"slot", "down"}}),
            -std::numeric_limits<double>::infinity());
  EXPECT_EQ(FindSample(families, "pgflow_lag_seconds", {{"slot", "small"}}), -1.5e-3);

  EXPECT_EQ(families[2].name, "pgflow_batch_seconds");
  EXPECT_EQ(families[2].type, "histogram");
  EXPECT_EQ(families[2].samples.size(), 10);
  EXPECT_EQ(families[2].samples[0].name, "pgflow_batch_seconds_bucket");
  EXPECT_EQ(FindSample(families, "pgflow_batch_seconds_bucket", {{"sink", "a"}, {"le", "1"}}), 3);
  EXPECT_EQ(FindSample(families, "pgflow_batch_seconds_bucket", {{"sink", "a"}, {"le", "+Inf"}}),
            4);
  EXPECT_EQ(FindSample(families, "pgflow_batch_seconds_sum", {{"sink", "a"}}), 2.5);
  EXPECT_EQ(FindSample(families, "pgflow_batch_seconds_count", {{"sink", "b"}}), 0);

  EXPECT_EQ(families[3].type, "summary");
  EXPECT_EQ(FindSample(families, "rpc_seconds", {{"quantile", "0.99"}}), 0.2);
  EXPECT_EQ(FindSample(families, "rpc_seconds_count", {}), 30);

  // A family may be declared with no samples; a sample with no TYPE of its own is untyped.
  EXPECT_EQ(families[4].name, "declared_only");
  EXPECT_EQ(families[4].type, "counter");
  EXPECT_TRUE(families[4].samples.empty());
  EXPECT_EQ(families[5].name, "process_start_time_seconds");
  EXPECT_EQ(families[5].type, "untyped");
  EXPECT_EQ(families[5].help, "");
  EXPECT_EQ(FindSample(families, "process_start_time_seconds", {}), 1.7e9);
}

TEST(PrometheusTextTest, EmptyTextHasNoFamilies) {
  absl::StatusOr<std::vector<PromFamily>> parsed = ParsePrometheusText("");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->empty());
  parsed = ParsePrometheusText("\n# just a comment\n\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->empty());
}

TEST(PrometheusTextTest, ReadsValuesAsGoParseFloatDoes) {
  EXPECT_EQ(ValueOf("1"), 1);
  EXPECT_EQ(ValueOf("-0.5"), -0.5);
  EXPECT_EQ(ValueOf("+2.5E+3"), 2500);
  EXPECT_EQ(ValueOf(".5"), 0.5);
  EXPECT_EQ(ValueOf("5."), 5);
  EXPECT_EQ(ValueOf("007"), 7);
  EXPECT_EQ(ValueOf("1e-400"), 0);  // underflow is zero in Go, not an error
  EXPECT_EQ(ValueOf("-Infinity"), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(ValueOf("inf"), std::numeric_limits<double>::infinity());
  ASSERT_TRUE(ValueOf("nan").has_value());
  EXPECT_TRUE(std::isnan(*ValueOf("nan")));
  EXPECT_EQ(ValueOf("1 -5"), 1);  // with a (negative) timestamp
}

TEST(PrometheusTextTest, RefusesTextWithoutAFinalNewline) {
  ExpectRejected("a 1\nb 2", 2, "must end with a newline");
  ExpectRejected("# TYPE a gauge", 1, "must end with a newline");
}

TEST(PrometheusTextTest, RefusesBadHelpAndType) {
  ExpectRejected("# HELP a tab\\there\n", 1, "invalid escape \\t");
  ExpectRejected("# HELP a quote\\\"\n", 1, "invalid escape \\\"");
  ExpectRejected("# HELP a trailing\\\n", 1, "lone backslash");
  ExpectRejected("# HELP a one\n# HELP a two\n", 2, "second HELP for a (the first is on line 1)");
  ExpectRejected("# TYPE a gauge\n# TYPE a gauge\n", 2, "second TYPE for a");
  ExpectRejected("a 1\n# HELP a late\n", 2, "HELP for a after its samples");
  ExpectRejected("# HELP a help\na 1\n# TYPE a counter\n", 3, "TYPE for a after its samples");
  ExpectRejected("# TYPE a timer\n", 1, "unknown type \"timer\"");
  ExpectRejected("# TYPE a Counter\n", 1, "unknown type \"Counter\"");
  ExpectRejected("# TYPE a\n", 1, "TYPE a with no type");
  ExpectRejected("# TYPE a counter extra\n", 1, "unexpected \"extra\"");
  ExpectRejected("# HELP\n", 1, "HELP with no metric name");
  ExpectRejected("# TYPE 9a counter\n", 1, "invalid metric name \"9a\"");
}

TEST(PrometheusTextTest, RefusesBadNames) {
  ExpectRejected("a 1\n1abc 1\n", 2, "expected a sample starting with a metric name");
  ExpectRejected("{a=\"b\"} 1\n", 1, "expected a sample starting with a metric name");
  ExpectRejected("a-b 1\n", 1, "expected a blank before the value of a");
  ExpectRejected("a{1x=\"y\"} 1\n", 1, "invalid label name \"1x\"");
  ExpectRejected("a{b-c=\"y\"} 1\n", 1, "expected '=' after label b");
  ExpectRejected("a{__name__=\"y\"} 1\n", 1, "starts with __");
  ExpectRejected("a{,} 1\n", 1, "expected a label name");
}

TEST(PrometheusTextTest, RefusesBadLabelValues) {
  ExpectRejected("a{b=1} 1\n", 1, "must be in double quotes");
  ExpectRejected("a{b='1'} 1\n", 1, "must be in double quotes");
  ExpectRejected("a{b=\"\\t\"} 1\n", 1, "invalid escape \\t");
  ExpectRejected("a{b=\"x} 1\n", 1, "no closing quote");
  ExpectRejected("a{b=\"x\" 1\n", 1, "expected ',' or '}' after label b");
  ExpectRejected("a{b=\"x\",\n", 1, "have no closing '}'");
  ExpectRejected("a{b=\"\xff\"} 1\n", 1, "not valid UTF-8");
  ExpectRejected("a{b=\"1\",c=\"2\",b=\"3\"} 1\n", 1, "label b appears twice on a");
}

TEST(PrometheusTextTest, RefusesBadValuesAndTimestamps) {
  ExpectRejected("a\n", 1, "sample a has no value");
  ExpectRejected("a{b=\"c\"}\n", 1, "sample a has no value");
  ExpectRejected("a{b=\"c\"}1\n", 1, "expected a blank before the value");
  for (std::string_view bad : {"1x", "0x10", "0x1p-2", "1_000", "+NaN", "-nan", "1e400", "-1e400",
                               "inf1", ".", "1e", "1..2", "--1", "true"}) {
    ExpectRejected(Cat("b 2\na ", bad, "\n"), 2, Cat("invalid value \"", bad));
  }
  ExpectRejected("a 1 1.5\n", 1, "invalid timestamp \"1.5\"");
  ExpectRejected("a 1 99999999999999999999\n", 1, "invalid timestamp");
  ExpectRejected("a 1 123 x\n", 1, "unexpected \"x\" after the timestamp of a");
}

TEST(PrometheusTextTest, RefusesASplitFamily) {
  ExpectRejected("a 1\nb 1\na{x=\"y\"} 2\n", 3, "family a appears twice");
  ExpectRejected("# TYPE a counter\na 1\nb 1\n# HELP a again\n", 4,
                 "family a appears twice (it began on line 1");
  ExpectRejected("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nother 1\nh_sum 3\n", 5,
                 "family h appears twice");
  // A family named like another family's samples would be read as part of it.
  ExpectRejected("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 0\nh_count 0\n# TYPE h_count gauge\n",
                 4, "has the name of a sample of histogram h");
  ExpectRejected("h_count 1\n# TYPE h histogram\n", 2, "already used by family h_count");
}

TEST(PrometheusTextTest, RefusesSamplesThatDoNotFitTheirFamily) {
  ExpectRejected("# TYPE h histogram\nh 1\n", 2, "histogram h has a sample named h");
  ExpectRejected("# TYPE s summary\ns 1\n", 2, "summary sample s has no quantile label");
  ExpectRejected("# TYPE s summary\ns{quantile=\"1.5\"} 1\n", 2, "not a number from 0 to 1");
  ExpectRejected("# TYPE s summary\ns{quantile=\"0.9\"} 1\ns{quantile=\"0.5\"} 1\n", 3,
                 "quantiles must be in increasing order");
  ExpectRejected("# TYPE s summary\ns_sum{quantile=\"0.5\"} 1\n", 2, "has a quantile label");
}

TEST(PrometheusTextTest, RefusesBadHistograms) {
  ExpectRejected("# TYPE h histogram\nh_bucket 1\n", 2, "h_bucket has no le label");
  ExpectRejected("# TYPE h histogram\nh_bucket{le=\"big\"} 1\n", 2, "le=\"big\"");
  ExpectRejected("# TYPE h histogram\nh_sum{le=\"1\"} 1\n", 2, "h_sum has an le label");
  // Counts are cumulative, so they never go down as le goes up.
  ExpectRejected(
      "# TYPE h histogram\n"
      "h_bucket{le=\"1\"} 5\n"
      "h_bucket{le=\"2\"} 4\n"
      "h_bucket{le=\"+Inf\"} 5\n"
      "h_count 5\n",
      3, "less than the 5 of le=\"1\"");
  // ... for the same other labels: another series starts again from its own counts.
  ExpectRejected(
      "# TYPE h histogram\n"
      "h_bucket{x=\"a\",le=\"1\"} 5\n"
      "h_bucket{x=\"b\",le=\"1\"} 1\n"
      "h_bucket{x=\"b\",le=\"2\"} 0\n",
      4, "h{x=\"b\"} counts 0, less than the 1");
  ExpectRejected(
      "# TYPE h histogram\n"
      "h_bucket{le=\"2\"} 1\n"
      "h_bucket{le=\"1\"} 1\n",
      3, "buckets must be in increasing le order");
  ExpectRejected(
      "# TYPE h histogram\n"
      "h_bucket{le=\"1\"} 1\n"
      "h_bucket{le=\"2\"} 2\n"
      "h_count 2\n"
      "next 1\n",
      2, "histogram h has no le=\"+Inf\" bucket");
  ExpectRejected(
      "# TYPE h histogram\n"
      "h_bucket{x=\"a\",le=\"+Inf\"} 2\n"
      "h_count{x=\"a\"} 2\n"
      "h_sum{x=\"b\"} 2\n",
      4, "histogram h{x=\"b\"} has no le=\"+Inf\" bucket");
  ExpectRejected(
      "# TYPE h histogram\n"
      "h_bucket{le=\"1\"} 1\n"
      "h_bucket{le=\"+Inf\"} 2\n",
      2, "histogram h has no h_count");
  ExpectRejected(
      "# TYPE h histogram\n"
      "h_bucket{le=\"1\"} 1\n"
      "h_bucket{le=\"+Inf\"} 2\n"
      "h_sum 1\n"
      "h_count 3\n",
      5, "le=\"+Inf\" bucket (line 3) counts 2 but h_count (line 5) is 3");
}

TEST(PrometheusTextTest, RefusesANegativeCounter) {
  ExpectRejected("# TYPE c counter\nc{x=\"y\"} 1\nc{x=\"z\"} -1\n", 3,
                 "counter c{x=\"z\"} is negative");
  ExpectRejected("# TYPE c counter\nc -Inf\n", 2, "is negative");
  // Gauges and untyped samples may go below zero.
  EXPECT_TRUE(ParsePrometheusText("# TYPE g gauge\ng -1\nu -1\n").ok());
}

TEST(PrometheusTextTest, RefusesADuplicateSample) {
  ExpectRejected("a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n", 2,
                 "duplicate sample a{x=\"1\",y=\"2\"}");
  ExpectRejected("a 1\na 1\n", 2, "duplicate sample a");
}

}  // namespace
}  // namespace pgflow::testing
