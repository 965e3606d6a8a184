#include "tests/integration/support/replication.h"

#include <signal.h>

#include <cstdlib>

#include "gtest/gtest.h"

namespace pgflow::testing {

Replication::Replication(TestCluster& source, TestCluster& target, const std::string& name,
                         const std::string& tables, const std::string& snapshot,
                         const std::string& extra_sinks, const std::string& sink_options)
    : source_(source), target_(target), name_(name) {
  Sql(source_.Url()).Exec("CREATE DATABASE " + name);
  Sql(target_.Url()).Exec("CREATE DATABASE " + name);
  yaml_ = dir_.File("pipeline.yaml");
  WriteFile(yaml_, "pipeline: " + name + "\nsource:\n  postgres:\n    url: " + source_url() +
                       "\n    tables: " + tables + "\n    snapshot: " + snapshot +
                       "\n    status_interval: 200ms\nsinks:\n  replica: {postgres: {url: " +
                       target_url() + ", batch_rows: 100" + sink_options +
                       "}, flush_interval: 50ms}\n" + extra_sinks);
}

std::unique_ptr<PgflowProcess> Replication::Start() const {
  // PGFLOW_TEST_DEBUG=1 runs pgflow with debug logging, for chasing a failure.
  std::vector<std::string> args = {"run", yaml_, "--progress", "1"};
  if (const char* debug = std::getenv("PGFLOW_TEST_DEBUG"); debug != nullptr && *debug == '1') {
    args.insert(args.begin(), {"--log-level", "debug"});
  }
  return std::make_unique<PgflowProcess>(args, log());
}

bool Replication::LogHas(const std::string& needle) const {
  return ReadFile(log()).find(needle) != std::string::npos;
}

bool Replication::WaitStreaming(PgflowProcess& pgflow) const {
  WaitFor([&] { return LogHas("replication stream: streaming") || !pgflow.Running(); },
          std::chrono::seconds(120));
  return pgflow.Running() && LogHas("replication stream: streaming");
}

std::string Replication::Confirmed() const {
  return Sql(source_url())
      .Scalar("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgflow_" +
              name_ + "'");
}

bool Replication::ConfirmedAtLeast(const std::string& lsn) const {
  return Sql(source_url())
             .Scalar("SELECT confirmed_flush_lsn >= '" + lsn +
                     "' FROM pg_replication_slots WHERE slot_name = 'pgflow_" + name_ + "'") == "t";
}

bool Replication::CaughtUp(std::chrono::seconds timeout) const {
  std::string end = Sql(source_url()).Scalar("SELECT pg_current_wal_lsn()");
  return WaitFor([&] { return ConfirmedAtLeast(end); }, timeout);
}

void Replication::DrainAndStop(PgflowProcess& pgflow) const {
  EXPECT_TRUE(CaughtUp(std::chrono::seconds(120))) << ReadFile(log());
  pgflow.Signal(SIGTERM);
  EXPECT_EQ(pgflow.Wait(std::chrono::seconds(60)), 0) << ReadFile(log());
}

std::vector<std::vector<std::string>> Rows(const std::string& url, const std::string& table,
                                           const std::string& order) {
  Sql sql(url);
  return sql.Query("SELECT row_to_json(t)::text FROM " + table + " t ORDER BY " + order);
}

void ExpectSameRows(const Replication& r, const std::string& table, const std::string& order) {
  auto from = Rows(r.source_url(), table, order);
  auto to = Rows(r.target_url(), table, order);
  EXPECT_EQ(from.size(), to.size()) << table;
  EXPECT_TRUE(from == to) << table << ": the target differs from the source";
}

}  // namespace pgflow::testing
