#include "engine/metrics.h"

#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/run_status.h"

namespace pgflow {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, ExpositionHasHelpTypeAndEscapedLabels) {
  MetricsRegistry registry;
  registry
      .GetCounter("pgflow_events_total", "Events\nseen \\ counted",
                  {{"table", "public.\"odd\"\\name\n"}, {"op", "insert"}})
      ->Add(3);
  registry.GetGauge("pgflow_lag_seconds", "Lag", {{"sink", "pg"}})->Set(0.25);
  EXPECT_EQ(registry.Exposition(),
            "# HELP pgflow_events_total Events\\nseen \\\\ counted\n"
            "# TYPE pgflow_events_total counter\n"
            "pgflow_events_total{table=\"public.\\\"odd\\\"\\\\name\\n\",op=\"insert\"} 3\n"
            "# HELP pgflow_lag_seconds Lag\n"
            "# TYPE pgflow_lag_seconds gauge\n"
            "pgflow_lag_seconds{sink=\"pg\"} 0.25\n");
}

TEST(MetricsTest, SameNameAndLabelsIsTheSameCell) {
  MetricsRegistry registry;
  Counter* a = registry.GetCounter("c_total", "c", {{"x", "1"}});
  Counter* b = registry.GetCounter("c_total", "c", {{"x", "1"}});
  Counter* other = registry.GetCounter("c_total", "c", {{"x", "2"}});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, other);
}

TEST(MetricsTest, HistogramIsCumulativeWithInfSumAndCount) {
  MetricsRegistry registry;
  Histogram* h = registry.GetHistogram("flush_seconds", "Flush", {{"sink", "s"}}, {0.1, 1});
  h->Observe(0.05);
  h->Observe(0.1);  // on the bound: in that bucket (le is "less or equal")
  h->Observe(0.5);
  h->Observe(7);
  std::string text = registry.Exposition();
  EXPECT_THAT(text, HasSubstr("# TYPE flush_seconds histogram\n"
                              "flush_seconds_bucket{sink=\"s\",le=\"0.1\"} 2\n"
                              "flush_seconds_bucket{sink=\"s\",le=\"1\"} 3\n"
                              "flush_seconds_bucket{sink=\"s\",le=\"+Inf\"} 4\n"
                              "flush_seconds_sum{sink=\"s\"} 7.65\n"
                              "flush_seconds_count{sink=\"s\"} 4\n"));
}

TEST(MetricsTest, SampleValuesAsTheFormatWritesThem) {
  EXPECT_EQ(FormatSampleValue(0), "0");
  EXPECT_EQ(FormatSampleValue(12345678901234), "12345678901234");
  EXPECT_EQ(FormatSampleValue(-1), "-1");
  EXPECT_EQ(FormatSampleValue(0.1), "0.1");
  EXPECT_EQ(FormatSampleValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatSampleValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatSampleValue(0.0 / 0.0), "NaN");
}

TEST(MetricsTest, CollectorsSetGaugesBeforeEachExpositionUntilRemoved) {
  MetricsRegistry registry;
  int calls = 0;
  Gauge* g = registry.GetGauge("queue_bytes", "Queue", {});
  int id = registry.AddCollector([&] { g->Set(++calls); });
  EXPECT_THAT(registry.Exposition(), HasSubstr("queue_bytes 1\n"));
  EXPECT_THAT(registry.Exposition(), HasSubstr("queue_bytes 2\n"));
  registry.RemoveCollector(id);
  EXPECT_THAT(registry.Exposition(), HasSubstr("queue_bytes 2\n"));
}

TEST(MetricsTest, CountersAddUpAcrossThreadsWithoutLocks) {
  MetricsRegistry registry;
  Counter* c = registry.GetCounter("n_total", "n", {});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([c] {
      for (int i = 0; i < 100000; ++i) c->Add();
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(c->value(), 400000u);
}

TEST(RunStatusTest, ReadyOnlyWhileRunningWithHealthySinks) {
  RunStatus status("p");
  std::string reason;
  EXPECT_FALSE(status.Ready(&reason));
  EXPECT_EQ(reason, "starting");
  PipelineView view;
  view.started = true;
  view.server_wal_end = Lsn(100);
  view.streaming = true;
  view.sinks.push_back(SinkView{"pg", "postgres", 0, Lsn(100), 0.1, false, 0, ""});
  status.SetPhase(RunPhase::kRunning);
  status.Attach([&] { return view; });
  EXPECT_TRUE(status.Ready(&reason));
  view.sinks[0].failed = true;
  status.NoteError("connection refused");
  EXPECT_FALSE(status.Ready(&reason));
  EXPECT_EQ(reason, "sink pg failed: connection refused");
  EXPECT_TRUE(status.SinksBetweenAttempts().empty());  // an attempt runs
  EXPECT_EQ(status.SinkLags(), (std::vector<std::pair<std::string, double>>{{"pg", 0.1}}));
  // The attempt ends with a transaction committed 30 s ago not yet durable: between attempts
  // its lag goes on growing.
  view.sinks[0].oldest_pending_us = absl::ToUnixMicros(absl::Now() - absl::Seconds(30));
  status.Detach(view);
  std::vector<SinkView> between = status.SinksBetweenAttempts();
  ASSERT_EQ(between.size(), 1u);
  EXPECT_GE(between[0].lag_seconds, 30);
  status.SetPhase(RunPhase::kRetrying, "sink pg: connection refused");
  EXPECT_FALSE(status.Ready(&reason));
  EXPECT_EQ(reason, "retrying: sink pg: connection refused");
  nlohmann::json j = status.ToJson();
  EXPECT_EQ(j["phase"], "retrying");
  EXPECT_EQ(j["ready"], false);
  EXPECT_EQ(j["last_error"], "connection refused");
  EXPECT_GE(j["sinks"][0]["lag_seconds"].get<double>(), 30);
  ASSERT_EQ(status.SinkLags().size(), 1u);
  EXPECT_GE(status.SinkLags()[0].second, 30);  // (the console's chart, between attempts too)
}

// Ready means the sinks hold every row and take the stream: not while a copy runs, nor while a
// sink retries.
TEST(RunStatusTest, NotReadyWhileCopyingOrWhileASinkRetries) {
  RunStatus status("p");
  PipelineView view;
  view.started = true;
  view.server_wal_end = Lsn(100);
  view.sinks.push_back(SinkView{"hooks", "webhook", 0, Lsn(100), 0.1, false, 0, ""});
  view.snapshot_running = true;
  view.snapshot_tables.push_back(TableProgress{"public.t", 10, 1, 4, 1, 4});
  status.SetPhase(RunPhase::kRunning);
  status.Attach([&] { return view; });
  std::string reason;
  EXPECT_FALSE(status.Ready(&reason));
  EXPECT_EQ(reason, "copying the tables (1 of 4 chunks): the sinks do not hold every row yet");
  view.snapshot_running = false;
  view.streaming = true;
  view.backfill = "backfill 3: public.logs";
  EXPECT_FALSE(status.Ready(&reason));
  EXPECT_EQ(reason,
            "copying tables again (backfill 3: public.logs): the sinks do not hold every row of "
            "them yet");
  view.backfill.clear();
  view.sinks[0].trouble = "retrying deliveries to http://x/ (HTTP 503, attempt 4)";
  EXPECT_FALSE(status.Ready(&reason));
  EXPECT_EQ(reason, "sink hooks: retrying deliveries to http://x/ (HTTP 503, attempt 4)");
  view.sinks[0].trouble.clear();
  EXPECT_TRUE(status.Ready(&reason)) << reason;
}

TEST(RunStatusTest, ALostSlotIsNeverReady) {
  RunStatus status("p");
  status.SetPhase(RunPhase::kRunning);
  SlotState slot;
  slot.exists = true;
  slot.name = "pgflow_p";
  slot.wal_status = "lost";
  status.SetSlot(slot);
  std::string reason;
  EXPECT_FALSE(status.Ready(&reason));
  EXPECT_EQ(reason, "replication slot pgflow_p is lost");
}

}  // namespace
}  // namespace pgflow
