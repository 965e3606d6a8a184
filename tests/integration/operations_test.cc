// Operating pgflow, as an operator would: the admin endpoint scraped with curl while changes
// stream (every counter checked against what was written, the whole exposition read by a
// strict parser), /readyz following a PostgreSQL target that goes down and comes back,
// `pgflow status` running and stopped, a slot the server invalidated, the retained-WAL
// warning, the endpoint's bounds, and no secret from the pipeline file anywhere.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/integration/support/prometheus_text.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

// One pipeline in a database of its own on SharedCluster(cluster), into a jsonl file and
// optionally more sinks, with the admin endpoint on a free port.
class Ops {
 public:
  Ops(const std::string& name, int cluster = 0, const std::string& source_password = "",
      const std::string& extra_sinks = "", const std::string& extra_source = "")
      : name_(name), cluster_(cluster), port_(FreeLoopbackPort()) {
    Sql admin(SharedCluster(cluster_).Url());
    admin.Exec("CREATE DATABASE " + name);
    std::string url = "postgres://postgres" +
                      (source_password.empty() ? "" : ":" + source_password) +
                      "@127.0.0.1:" + std::to_string(SharedCluster(cluster_).port()) + "/" + name;
    yaml_ = dir_.File("pipeline.yaml");
    WriteFile(yaml_, "pipeline: " + name +
                         "\n"
                         "source:\n"
                         "  postgres:\n"
                         "    url: " +
                         url +
                         "\n"
                         "    tables: [public.*]\n"
                         "    snapshot: {mode: never}\n"
                         "    status_interval: 200ms\n" +
                         extra_source +
                         "sinks:\n"
                         "  out: {jsonl: {path: " +
                         output() + "}, flush_interval: 50ms}\n" + extra_sinks +
                         "admin: {listen: '127.0.0.1:" + std::to_string(port_) + "'}\n");
  }
  std::string url() const { return SharedCluster(cluster_).Url(name_); }
  std::string output() const { return dir_.File("out.jsonl"); }
  std::string log() const { return dir_.File("pgflow.log"); }
  const std::string& yaml() const { return yaml_; }
  std::string admin(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  const TempDir& dir() const { return dir_; }

  std::unique_ptr<PgflowProcess> Start() {
    auto p =
        StartPgflowUntilLogged({"run", yaml_, "--log-format", "json"}, log(), {}, "streaming from");
    EXPECT_TRUE(
        WaitFor([&] { return Curl(admin("/readyz")).code == 200; }, std::chrono::seconds(30)))
        << ReadFile(log());
    return p;
  }

  // The exposition, parsed strictly (a parse error fails the test), and by Prometheus's own
  // parser when it was built.
  std::vector<PromFamily> Scrape() const {
    HttpAnswer answer = Curl(admin("/metrics"));
    EXPECT_EQ(answer.code, 200);
#ifdef PROMCHECK_BINARY
    std::string file = dir_.File("metrics.txt");
    WriteFile(file, answer.body);
    std::string command = std::string(PROMCHECK_BINARY) + " < " + file + " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    std::string verdict;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) verdict.append(buf, n);
    EXPECT_EQ(pclose(pipe), 0) << "Prometheus's parser: " << verdict << "\n" << answer.body;
#endif
    absl::StatusOr<std::vector<PromFamily>> families = ParsePrometheusText(answer.body);
    EXPECT_TRUE(families.ok()) << families.status() << "\n" << answer.body;
    return families.ok() ? *families : std::vector<PromFamily>{};
  }

 private:
  std::string name_;
  int cluster_;
  int port_;
  TempDir dir_;
  std::string yaml_;
};

double Value(const std::vector<PromFamily>& families, const std::string& name,
             const std::map<std::string, std::string>& labels) {
  return FindSample(families, name, labels).value_or(-1);
}

TEST(OperationsTest, MetricsCountWhatWasWrittenPerTableAndOperation) {
  Ops p("metrics_count");
  Sql sql(p.url());
  sql.Exec(
      "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text)");
  auto pgflow = p.Start();
  sql.Exec("INSERT INTO a SELECT g, 'x' FROM generate_series(1, 30) g");
  sql.Exec("UPDATE a SET v = 'y' WHERE id <= 10");
  sql.Exec("DELETE FROM a WHERE id > 25");
  sql.Exec("INSERT INTO b SELECT g, 'x' FROM generate_series(1, 7) g");
  sql.Exec("TRUNCATE b");
  auto sink = [](const std::string& table, const std::string& op) {
    return std::map<std::string, std::string>{
        {"pipeline", "metrics_count"}, {"sink", "out"}, {"table", table}, {"op", op}};
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        return Value(p.Scrape(), "pgflow_sink_events_total", sink("public.b", "truncate")) == 1;
      },
      std::chrono::seconds(30)))
      << ReadFile(p.log());
  std::vector<PromFamily> first = p.Scrape();
  const std::vector<std::tuple<std::string, std::string, double>> expected = {
      {"public.a", "insert", 30},
      {"public.a", "update", 10},
      {"public.a", "delete", 5},
      {"public.b", "insert", 7},
      {"public.b", "truncate", 1}};
  for (const auto& [table, op, n] : expected) {
    EXPECT_EQ(Value(first, "pgflow_sink_events_total", sink(table, op)), n) << table << " " << op;
    std::map<std::string, std::string> source = sink(table, op);
    source.erase("sink");
    EXPECT_EQ(Value(first, "pgflow_source_events_total", source), n) << table << " " << op;
    EXPECT_GT(Value(first, "pgflow_sink_bytes_total", sink(table, op)), 0);
  }
  EXPECT_GE(Value(first, "pgflow_source_transactions_total", {{"pipeline", "metrics_count"}}), 5);
  EXPECT_EQ(Value(first, "pgflow_pipeline_ready", {{"pipeline", "metrics_count"}}), 1);
  EXPECT_EQ(
      Value(first, "pgflow_sink_failures_total", {{"pipeline", "metrics_count"}, {"sink", "out"}}),
      0);
  // Every family the issue names is there, with HELP and TYPE.
  std::set<std::string> names;
  for (const PromFamily& f : first) {
    names.insert(f.name);
    EXPECT_FALSE(f.help.empty()) << f.name;
  }
  for (const char* family :
       {"pgflow_source_events_total", "pgflow_source_bytes_total", "pgflow_sink_events_total",
        "pgflow_sink_bytes_total", "pgflow_sink_flush_seconds", "pgflow_sink_batch_events",
        "pgflow_sink_failures_total", "pgflow_sink_queue_bytes", "pgflow_sink_lag_seconds",
        "pgflow_sink_ddl_events_total", "pgflow_source_wal_end_lsn", "pgflow_confirmed_lsn",
        "pgflow_unconfirmed_wal_bytes", "pgflow_pipeline_restarts_total",
        "pgflow_slot_retained_wal_bytes", "pgflow_slot_active", "pgflow_slot_wal_status",
        "pgflow_slot_safe_wal_size_bytes"}) {
    EXPECT_TRUE(names.count(family)) << family;
  }
  // A DDL event is counted as such.
  sql.Exec("ALTER TABLE a ADD COLUMN w int");
  EXPECT_TRUE(WaitFor(
      [&] {
        return Value(p.Scrape(), "pgflow_sink_ddl_events_total",
                     {{"pipeline", "metrics_count"}, {"sink", "out"}}) >= 1;
      },
      std::chrono::seconds(30)));
  // Counters never go backwards.
  std::vector<PromFamily> second = p.Scrape();
  for (const PromFamily& f : first) {
    if (f.type != "counter") continue;
    for (const PromSample& s : f.samples) {
      EXPECT_GE(Value(second, s.name, s.labels), s.value) << s.name;
    }
  }
  // The other pages.
  HttpAnswer health = Curl(p.admin("/healthz"));
  EXPECT_EQ(health.code, 200);
  EXPECT_EQ(health.body, "ok\n");
  // The slot as the monitor last read it (every 2 s).
  json s;
  EXPECT_TRUE(WaitFor(
      [&] {
        HttpAnswer status = Curl(p.admin("/status"));
        s = json::parse(status.body, nullptr, false);
        return status.code == 200 && s["slot"].is_object() && s["slot"].value("active", false);
      },
      std::chrono::seconds(10)))
      << s.dump();
  EXPECT_EQ(s["phase"], "streaming");
  EXPECT_EQ(s["ready"], true);
  EXPECT_EQ(s["sinks"][0]["name"], "out");
  EXPECT_EQ(s["sinks"][0]["type"], "jsonl");
  EXPECT_EQ(s["slot"]["name"], "pgflow_metrics_count");
  EXPECT_EQ(s["slot"]["active"], true);
  EXPECT_EQ(Curl(p.admin("/nope")).code, 404);
  EXPECT_EQ(Curl(p.admin("/metrics"), "-X POST").code, 405);
  EXPECT_EQ(Curl(p.admin("/metrics"), "-I").code, 200);

  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(p.log());
  // --log-format json: every line is an object with the fields log shippers index.
  std::ifstream log(p.log());
  std::string line;
  int lines = 0;
  while (std::getline(log, line)) {
    json j = json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    EXPECT_TRUE(j.contains("ts") && j.contains("level") && j.contains("message")) << line;
    EXPECT_EQ(j["pipeline"], "metrics_count") << line;
    ++lines;
  }
  EXPECT_GT(lines, 3);
}

TEST(OperationsTest, ReadyzFollowsATargetThatGoesDownAndNoSecretLeaks) {
  const std::string source_secret = "src-Secret-4711";
  const std::string target_secret = "tgt-Secret-0815";
  Sql target_admin(SharedCluster(1).Url());
  target_admin.Exec("CREATE DATABASE ready_target");
  const std::string target_url = "postgres://postgres:" + target_secret +
                                 "@127.0.0.1:" + std::to_string(SharedCluster(1).port()) +
                                 "/ready_target";
  Ops p("ready_secret", 0, source_secret,
        "  pg: {postgres: {url: '" + target_url + "'}, flush_interval: 50ms}\n");
  Sql sql(p.url());
  sql.Exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
  auto pgflow = p.Start();

  std::string out;
  EXPECT_EQ(RunPgflow({"status", p.yaml()}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("phase        streaming"));
  EXPECT_THAT(out, HasSubstr("pg "));

  SharedCluster(1).Pause();
  sql.Exec("INSERT INTO t VALUES (1, 'written while the target is down')");
  HttpAnswer down;
  EXPECT_TRUE(WaitFor([&] { return (down = Curl(p.admin("/readyz"))).code == 503; },
                      std::chrono::seconds(30)))
      << ReadFile(p.log());
  EXPECT_THAT(down.body, HasSubstr("not ready"));
  EXPECT_EQ(RunPgflow({"status", p.yaml()}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("not ready"));
  json status = json::parse(Curl(p.admin("/status")).body);
  EXPECT_FALSE(status["last_error"].is_null());
  // The lag goes on growing while the target is down, between the pipeline's attempts too.
  EXPECT_TRUE(WaitFor(
      [&] {
        return Value(p.Scrape(), "pgflow_sink_lag_seconds",
                     {{"pipeline", "ready_secret"}, {"sink", "pg"}}) >= 1.5;
      },
      std::chrono::seconds(30)))
      << Curl(p.admin("/metrics")).body << Curl(p.admin("/status")).body << ReadFile(p.log());
  std::string metrics_down = Curl(p.admin("/metrics")).body;
  EXPECT_THAT(metrics_down, HasSubstr("pgflow_pipeline_ready{pipeline=\"ready_secret\"} 0"));

  SharedCluster(1).Resume();
  EXPECT_TRUE(
      WaitFor([&] { return Curl(p.admin("/readyz")).code == 200; }, std::chrono::seconds(60)))
      << ReadFile(p.log());
  Sql target(SharedCluster(1).Url("ready_target"));
  EXPECT_TRUE(WaitFor([&] { return target.PollScalar("SELECT count(*) FROM t") == "1"; },
                      std::chrono::seconds(30)))
      << ReadFile(p.log());
  std::string metrics = Curl(p.admin("/metrics")).body;
  EXPECT_THAT(metrics, HasSubstr("pgflow_pipeline_restarts_total{pipeline=\"ready_secret\"} "));
  EXPECT_THAT(metrics,
              Not(HasSubstr("pgflow_pipeline_restarts_total{pipeline=\"ready_secret\"} 0")));

  // Secrets appear nowhere: logs, /status, /metrics, `pgflow status`, errors.
  std::string everything =
      ReadFile(p.log()) + Curl(p.admin("/status")).body + metrics + metrics_down + down.body;
  std::string status_out, status_json;
  RunPgflow({"status", p.yaml()}, &status_out);
  RunPgflow({"status", p.yaml(), "--json"}, &status_json);
  everything += status_out + status_json;
  pgflow->Signal(SIGTERM);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0) << ReadFile(p.log());
  EXPECT_EQ(RunPgflow({"status", p.yaml()}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("phase        stopped"));
  everything += out + ReadFile(p.log());
  // A start that fails on an unreachable source says so without the password.
  std::string unreachable = p.dir().File("unreachable.yaml");
  WriteFile(unreachable,
            "pipeline: unreachable\n"
            "source: {postgres: {url: 'postgres://postgres:" +
                source_secret + "@127.0.0.1:" + std::to_string(FreeLoopbackPort()) +
                "/x', tables: [public.t]}}\n"
                "sinks: {pg: {postgres: {url: '" +
                target_url + "'}}}\n");
  EXPECT_NE(RunPgflow({"run", unreachable}, &out), 0);
  everything += out;
  EXPECT_EQ(RunPgflow({"status", unreachable}, &out), 2) << out;
  EXPECT_THAT(out, HasSubstr("source unreachable"));
  everything += out;
  EXPECT_THAT(everything, Not(HasSubstr(source_secret)));
  EXPECT_THAT(everything, Not(HasSubstr(target_secret)));
}

TEST(OperationsTest, ALostSlotIsExplainedByRunAndStatus) {
  Ops p("lost_slot", 2);
  Sql sql(p.url());
  sql.Exec(
      "CREATE TABLE t (id int PRIMARY KEY); CREATE SCHEMA other; CREATE TABLE other.unpublished "
      "(id int, pad text)");
  std::string out;
  ASSERT_EQ(RunPgflow({"init", p.yaml()}, &out), 0) << out;
  // The server keeps at most 1 MB of WAL for slots; the slot falls behind by far more.
  sql.Exec("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'");
  sql.Exec("SELECT pg_reload_conf()");
  sql.Exec("ALTER TABLE other.unpublished SET (autovacuum_enabled = off)");
  for (int i = 0; i < 4; ++i) {
    sql.Exec(
        "INSERT INTO other.unpublished SELECT g, repeat('x', 200) FROM generate_series(1, 20000) "
        "g");
    sql.Exec("SELECT pg_switch_wal()");
  }
  EXPECT_TRUE(WaitFor(
      [&] {
        sql.Exec("CHECKPOINT");
        return sql.Scalar(
                   "SELECT wal_status FROM pg_replication_slots WHERE slot_name = "
                   "'pgflow_lost_slot'") == "lost";
      },
      std::chrono::seconds(30)));
  sql.Exec("ALTER SYSTEM RESET max_slot_wal_keep_size");
  sql.Exec("SELECT pg_reload_conf()");

  EXPECT_EQ(RunPgflow({"status", p.yaml()}, &out), 2) << out;
  EXPECT_THAT(out, HasSubstr("was invalidated by the server"));
  EXPECT_THAT(out, HasSubstr("`pgflow teardown " + p.yaml() + "`"));
  EXPECT_EQ(RunPgflow({"run", p.yaml()}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("replication slot pgflow_lost_slot of pipeline lost_slot was "
                             "invalidated by the server"));
  EXPECT_THAT(out, HasSubstr("the changes after "));
  EXPECT_THAT(out, HasSubstr("`pgflow run " + p.yaml() + "`, which creates a new slot"));
  // The way out works: teardown, then run copies the table again under a new slot.
  sql.Exec("INSERT INTO t VALUES (1), (2)");
  ASSERT_EQ(RunPgflow({"teardown", p.yaml()}, &out), 0) << out;
  WriteFile(p.yaml(), [&] {
    std::string text = ReadFile(p.yaml());
    size_t at = text.find("snapshot: {mode: never}");
    return text.replace(at, 23, "snapshot: {mode: initial}");
  }());
  auto pgflow = p.Start();
  EXPECT_TRUE(WaitFor([&] { return ReadJsonlWritten(p.output()).size() == 2; }, std::chrono::seconds(30)))
      << ReadFile(p.log());
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

TEST(OperationsTest, RetainedWalPastTheLimitWarnsAndDegradesStatus) {
  Ops p("retained", 0, "", "", "    max_retained_wal: 1MiB\n");
  Sql sql(p.url());
  sql.Exec(
      "CREATE TABLE t (id int PRIMARY KEY); CREATE SCHEMA other; CREATE TABLE other.unpublished "
      "(id int, pad text)");
  std::string out;
  ASSERT_EQ(RunPgflow({"init", p.yaml()}, &out), 0) << out;
  sql.Exec(
      "INSERT INTO other.unpublished SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g");
  EXPECT_EQ(RunPgflow({"status", p.yaml()}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("more than max_retained_wal (1.0 MB)"));
  // A run that starts behind says so in its log before it catches up.
  auto pgflow =
      StartPgflowUntilLogged({"run", p.yaml()}, p.log(), {}, "more than max_retained_wal");
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

TEST(OperationsTest, AdminEndpointIsBoundedAndThePipelineGoesOn) {
  Ops p("bounded");
  Sql sql(p.url());
  sql.Exec("CREATE TABLE t (id int PRIMARY KEY)");
  auto pgflow = p.Start();
  const int port = std::stoi(p.admin("").substr(p.admin("").rfind(':') + 1));
  auto connect_raw = [port] {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  };
  // A hostile request: garbage, and headers past the limit.
  int bad = connect_raw();
  std::string garbage = "NOT HTTP AT ALL\r\n\r\n";
  ASSERT_EQ(write(bad, garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
  char reply[256] = {};
  ASSERT_GT(read(bad, reply, sizeof(reply) - 1), 0);
  EXPECT_THAT(std::string(reply), HasSubstr("400 Bad Request"));
  close(bad);
  EXPECT_EQ(Curl(p.admin("/healthz"), "-H 'X-Big: " + std::string(10000, 'a') + "'").code, 400);
  // 64 clients that connect and say nothing hold every slot: the next is refused with 503,
  // and changes still stream meanwhile.
  std::vector<int> idle;
  for (int i = 0; i < 64; ++i) idle.push_back(connect_raw());
  // The server takes the 64 in its own time: until it has, the next may still be served.
  HttpAnswer refused;
  EXPECT_TRUE(WaitFor(
      [&] {
        refused = Curl(p.admin("/healthz"));
        return refused.code == 503;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(refused.code, 503);
  EXPECT_THAT(refused.body, HasSubstr("too many connections"));
  sql.Exec("INSERT INTO t VALUES (1)");
  EXPECT_TRUE(WaitFor([&] { return ReadJsonlWritten(p.output()).size() == 1; }, std::chrono::seconds(30)));
  for (int fd : idle) close(fd);
  EXPECT_TRUE(
      WaitFor([&] { return Curl(p.admin("/healthz")).code == 200; }, std::chrono::seconds(10)));
  pgflow->Signal(SIGINT);
  EXPECT_EQ(pgflow->Wait(std::chrono::seconds(30)), 0);
}

}  // namespace
}  // namespace pgflow::testing
