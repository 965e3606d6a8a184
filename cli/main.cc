// The `pgflow` command: subcommands that wire configuration to the engine, nothing more.

#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "cli/components.h"
#include "cli/dlq_command.h"
#include "cli/pooler_command.h"
#include "cli/preview_command.h"
#include "cli/status_command.h"
#include "common/postgres/conninfo.h"
#include "common/postgres/postgres_origin.h"
#include "common/postgres/table_ref.h"
#include "engine/admin_server.h"
#include "engine/config.h"
#include "engine/log.h"
#include "engine/metrics.h"
#include "engine/pipeline.h"
#include "engine/progress.h"
#include "engine/run_status.h"
#include "engine/stop_signal.h"
#include "pooler/pooler_config.h"
#include "sinks/postgres/postgres_sink.h"
#include "sinks/postgres/verify.h"
#include "sources/postgres/backfill.h"
#include "sources/postgres/ddl_capture.h"
#include "sources/postgres/postgres_source.h"
#include "sources/postgres/postgres_source_config.h"
#include "sources/postgres/privileges.h"
#include "sources/postgres/slot_holder.h"
#include "sources/postgres/slot_monitor.h"

namespace pgflow {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitConfig = 2;
// `run` waits out an outage, doubling its wait up to 30 s; a run that lasted kHealthyRun
// starts the next outage's waits from kFirstBackoff again.
constexpr std::chrono::milliseconds kFirstBackoff(500);
constexpr std::chrono::seconds kHealthyRun(60);

// The pipeline file, or nullopt after logging why it cannot be used.
std::optional<PipelineConfig> LoadOrReport(const std::string& path) {
  absl::StatusOr<PipelineConfig> config = LoadPipelineConfig(path);
  if (!config.ok()) {
    LogError("%s", config.status().message());
    return std::nullopt;
  }
  return *std::move(config);
}

// The pipeline file of a command that works on a PostgreSQL source (init, teardown, snapshot,
// verify, sequences), with its source's options, or nullopt after logging why it cannot be used.
struct PostgresPipeline {
  PipelineConfig config;
  std::shared_ptr<const PostgresSourceOptions> source;
};
std::optional<PostgresPipeline> LoadPostgresPipeline(const std::string& path,
                                                     std::string_view command) {
  std::optional<PipelineConfig> config = LoadOrReport(path);
  if (!config.has_value()) return std::nullopt;
  std::shared_ptr<const PostgresSourceOptions> source = PostgresSourceOf(*config);
  if (source == nullptr) {
    LogError(
        "pipeline %s reads from a %s source: `pgflow %s` works on a postgres source (run it "
        "on the capture pipeline's file)",
        config->name, config->source.type, command);
    return std::nullopt;
  }
  return PostgresPipeline{*std::move(config), std::move(source)};
}

// --tables values ("schema.table" or "schema.*", quoted names as in the pipeline file) that the
// pipeline follows; logs and returns false on a malformed or foreign name.
bool ParseTableArgs(const std::vector<std::string>& args, const PostgresPipeline& pipeline,
                    std::vector<TableRef>* tables) {
  for (const std::string& arg : args) {
    absl::StatusOr<TableRef> ref = ParseTableRef(arg);
    if (!ref.ok()) {
      LogError("--tables: invalid table '%s': %s", arg, ref.status().message());
      return false;
    }
    bool covered = false;
    for (const TableRef& followed : pipeline.source->tables) {
      covered = covered || followed.Covers(*ref) || (ref->is_schema() && followed == *ref);
    }
    if (!covered) {
      LogError("--tables: %s is not among the tables pipeline %s follows", ref->Quoted(),
               pipeline.config.name);
      return false;
    }
    tables->push_back(*std::move(ref));
  }
  return true;
}

// `pgflow validate`: a pipeline file, or a pooler file (pooler::LooksLikePoolerConfig).
int Validate(const std::string& path, bool against_source) {
  absl::StatusOr<std::string> text = ReadConfigFile(path);
  if (!text.ok()) {
    std::fprintf(stderr, "%s\n", std::string(text.status().message()).c_str());
    return kExitConfig;
  }
  if (pooler::LooksLikePoolerConfig(*text)) {
    if (against_source) {
      std::fprintf(stderr, "%s: a pooler file has no source: --source checks a pipeline file\n",
                   path.c_str());
      return kExitConfig;
    }
    return ValidatePoolerFile(*text, path);
  }
  absl::StatusOr<PipelineConfig> config = ParsePipelineConfig(*text, path);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return kExitConfig;
  }
  if (against_source) {
    absl::StatusOr<std::vector<std::string>> problems = ValidateAgainstSource(*config);
    if (!problems.ok()) {
      std::fprintf(stderr, "%s: reading the source: %s\n", path.c_str(),
                   std::string(problems.status().message()).c_str());
      return kExitFailure;
    }
    for (const std::string& p : *problems) std::fprintf(stderr, "%s: %s\n", path.c_str(), p.c_str());
    if (!problems->empty()) return kExitConfig;
  }
  std::string sinks;
  for (const SinkConfig& sink : config->sinks) {
    absl::StrAppend(&sinks, sinks.empty() ? "" : ", ", sink.name, " (", sink.type, ")");
  }
  std::printf("%s: ok: pipeline %s, source %s (%s), sinks %s\n", path.c_str(), config->name.c_str(),
              config->source.type.c_str(),
              config->source.factory->Describe(*config->source.options).c_str(), sinks.c_str());
  return kExitOk;
}

int Preview(const std::string& path, const std::string& table, int limit, const std::string& sink) {
  absl::StatusOr<PipelineConfig> config = LoadPipelineConfig(path);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return kExitConfig;
  }
  absl::StatusOr<std::string> shown = PreviewTable(*config, table, limit, sink);
  if (!shown.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), std::string(shown.status().message()).c_str());
    return absl::IsInvalidArgument(shown.status()) || absl::IsNotFound(shown.status())
               ? kExitConfig
               : kExitFailure;
  }
  std::fputs(shown->c_str(), stdout);
  return kExitOk;
}

int Dlq(const std::string& path, const DlqRequest& request) {
  absl::StatusOr<PipelineConfig> config = LoadPipelineConfig(path);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return kExitConfig;
  }
  absl::StatusOr<std::string> out = RunDlq(*config, request);
  if (!out.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), std::string(out.status().message()).c_str());
    return absl::IsInvalidArgument(out.status()) ? kExitConfig : kExitFailure;
  }
  std::fputs(out->c_str(), stdout);
  return kExitOk;
}

// A pipeline runs once: another `run` of it holds its replication slot. Said before the sinks
// open their listeners (whose "address in use" would say less). A source that cannot be
// reached is left to the run to report.
absl::Status CheckNotRunning(const std::string& pipeline, const PostgresSourceOptions& source) {
  if (source.snapshot.mode == SnapshotMode::kOnly) return absl::OkStatus();
  absl::StatusOr<PgConnPtr> conn = Connect(source.url, ConnectionKind::kRegular);
  if (!conn.ok()) return absl::OkStatus();
  absl::Status free = WaitForSlotFree(conn->get(), pipeline, source.slot);
  return absl::IsFailedPrecondition(free) ? free : absl::OkStatus();
}

int Run(const std::string& path, std::chrono::milliseconds progress_interval,
        const std::string& until) {
  Lsn stop_at;
  if (!until.empty()) {
    std::optional<Lsn> lsn = Lsn::Parse(until);
    if (!lsn) {
      LogError("--until: '%s' is not a WAL position of the form X/X (e.g. 0/16B3748)", until);
      return kExitConfig;
    }
    stop_at = *lsn;
  }
  std::optional<PipelineConfig> config = LoadOrReport(path);
  if (!config) return kExitConfig;
  SetLogPipeline(config->name);
  if (stop_at.IsValid() && config->source.traits.positions != SourcePositions::kWal) {
    LogError("--until: pipeline %s reads from a %s source, whose positions are not WAL positions",
             config->name, config->source.type);
    return kExitConfig;
  }
  if (std::shared_ptr<const PostgresSourceOptions> source = PostgresSourceOf(*config)) {
    if (absl::Status s = CheckNotRunning(config->name, *source); !s.ok()) {
      LogError("%s", s.message());
      return kExitFailure;
    }
    // What `validate --source` finds would stop the run after it created its slot: said
    // first, nothing created. (A source out of reach is left to the run, which waits for it.)
    absl::StatusOr<std::vector<std::string>> problems =
        ValidateAgainstSource(*config, /*before_run=*/true);
    if (problems.ok() && !problems->empty()) {
      for (const std::string& p : *problems) LogError("%s: %s", path, p);
      LogError("pipeline %s: not started, nothing created in the source: correct the above",
               config->name);
      return kExitConfig;
    }
  }
  StopSignal stop;
  InstallStopSignalHandlers(&stop);
  // Kept across attempts: counters never go backwards, /status remembers the last error.
  MetricsRegistry metrics;
  RunStatus run_status(config->name);
  const MetricLabels labels = {{"pipeline", config->name}};
  Counter* restarts = metrics.GetCounter(
      "pgflow_pipeline_restarts_total",
      "Times the pipeline started again from the confirmed position after losing a server", labels);
  Gauge* ready =
      metrics.GetGauge("pgflow_pipeline_ready",
                       "1 while the pipeline copies or streams and every sink is healthy", labels);
  metrics.AddCollector([&run_status, ready, &metrics, name = config->name] {
    std::string reason;
    ready->Set(run_status.Ready(&reason) ? 1 : 0);
    // Between attempts (an outage), the sinks' lag goes on growing.
    SetSinkGauges(&metrics, name, run_status.SinksBetweenAttempts());
  });
  metrics.GetGauge("pgflow_build_info", "pgflow's version", {{"version", PGFLOW_VERSION}})->Set(1);
  std::unique_ptr<AdminServer> admin;
  if (!config->admin.listen.empty()) {
    admin = std::make_unique<AdminServer>(AdminServerOptions{config->admin.listen}, &metrics,
                                          &run_status);
    if (absl::Status s = admin->Start(); !s.ok()) {
      LogError("pipeline %s: %s", config->name, s.message());
      return kExitFailure;
    }
    LogInfo("pipeline %s: admin endpoint on port %d: /metrics /healthz /readyz /status",
            config->name, admin->port());
  }
  // The guard against WAL bloat, and the explanation of a slot the server invalidated.
  absl::Mutex lost_mu;
  std::string lost;  // guarded by lost_mu: why the slot can no longer be used
  std::unique_ptr<SlotMonitor> monitor;
  std::shared_ptr<const PostgresSourceOptions> postgres = PostgresSourceOf(*config);
  if (postgres != nullptr && postgres->snapshot.mode != SnapshotMode::kOnly) {
    monitor = std::make_unique<SlotMonitor>(config->name, path, postgres, &run_status, &metrics,
                                            [&](std::string message) {
                                              absl::MutexLock lock(&lost_mu);
                                              lost = std::move(message);
                                              stop.Request();
                                            });
    monitor->Start();
  }
  auto lost_slot = [&]() -> std::string {
    absl::MutexLock lock(&lost_mu);
    return lost;
  };
  auto fail = [&](const std::string& message) {
    LogError("pipeline %s: %s", config->name, message);
    run_status.SetPhase(RunPhase::kFailed, message);
    return kExitFailure;
  };
  auto backoff = kFirstBackoff;
  bool ran = false;  // some attempt got past set-up: from then on, outages are waited out
  while (true) {
    PipelineRunOptions options;
    options.name = config->name;
    options.queue_bytes = config->buffer.queue_bytes;
    options.progress_interval = progress_interval;
    options.stop_at = stop_at;
    options.metrics = &metrics;
    options.status = &run_status;
    options.transforms = BuildTransforms(config->name, config->transforms);
    options.source_reports_wal_end = config->source.traits.positions == SourcePositions::kWal;
    Pipeline pipeline(std::move(options), BuildSource(*config), BuildSinks(*config));
    const auto attempt_started = std::chrono::steady_clock::now();
    run_status.SetPhase(RunPhase::kRunning);
    absl::Status status = pipeline.Run(stop);
    if (std::string why = lost_slot(); !why.empty()) return fail(why);
    if (status.ok()) {
      run_status.SetPhase(RunPhase::kStopped);
      return kExitOk;
    }
    // After a healthy stretch an outage is a new one: its first retry comes soon again.
    if (std::chrono::steady_clock::now() - attempt_started >= kHealthyRun) backoff = kFirstBackoff;
    ran = ran || pipeline.started();
    // A running pipeline that lost a server (a sink's target, the source) starts over from
    // what every sink holds: the slot's confirmed position. A first start that fails is
    // reported at once.
    // A sink that set a refused change aside (kAborted) needs the stream again from there:
    // at once, nothing is down.
    if (absl::IsAborted(status) && ran && !stop.requested()) {
      LogWarning("pipeline %s: %s; starting again from the confirmed position", config->name,
                 status.message());
      restarts->Add();
      run_status.NoteRestart();
      continue;
    }
    if (!absl::IsUnavailable(status) || !ran || stop.requested()) {
      return fail(std::string(status.message()));
    }
    LogWarning("pipeline %s: %s; starting again from the confirmed position in %.1fs", config->name,
               status.message(), backoff.count() / 1000.0);
    restarts->Add();
    run_status.NoteRestart();
    run_status.SetPhase(RunPhase::kRetrying, std::string(status.message()));
    for (auto waited = std::chrono::milliseconds(0); waited < backoff && !stop.requested();
         waited += std::chrono::milliseconds(50)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (std::string why = lost_slot(); !why.empty()) return fail(why);
    if (stop.requested()) return kExitOk;
    backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
  }
}

// `pgflow init --print-sql`: the grants a run role needs, on the source (read from its catalog)
// and on each PostgreSQL target, for a DBA to run.
int PrintGrants(const PostgresPipeline& pipeline, const std::string& grant_to) {
  const PostgresSourceOptions& options = *pipeline.source;
  std::string role = grant_to.empty() ? ConninfoValue(options.url, "user") : grant_to;
  if (role.empty()) role = "pgflow";
  absl::StatusOr<PgConnPtr> conn = Connect(options.url, ConnectionKind::kRegular);
  if (!conn.ok()) {
    LogError("init %s: %s", pipeline.config.name, conn.status().message());
    return kExitFailure;
  }
  absl::StatusOr<std::vector<std::string>> grants = SourceGrants(conn->get(), options, role);
  if (!grants.ok()) {
    LogError("init %s: %s", pipeline.config.name, grants.status().message());
    return kExitFailure;
  }
  std::printf(
      "-- pipeline %s: what role %s needs to run it, once `pgflow init` has run as a superuser.\n"
      "-- In the source database %s, as a superuser:\n%s\n",
      pipeline.config.name.c_str(), role.c_str(), DescribeConninfo(options.url).c_str(),
      absl::StrJoin(*grants, "\n").c_str());
  for (const SinkConfig& sink : pipeline.config.sinks) {
    if (sink.type != "postgres") continue;
    const auto& target = static_cast<const PostgresSinkOptions&>(*sink.options);
    std::string target_role = ConninfoValue(target.url, "user");
    std::set<std::string> schemas;
    for (const TableRef& ref : options.tables) {
      schemas.insert(target.schema.empty() ? ref.schema : target.schema);
    }
    std::printf("\n-- Sink %s: in %s, as a superuser:\n%s\n", sink.name.c_str(),
                DescribeConninfo(target.url).c_str(),
                absl::StrJoin(TargetGrants(ConninfoValue(target.url, "dbname"),
                                           target_role.empty() ? "pgflow" : target_role, schemas),
                              "\n")
                    .c_str());
  }
  return kExitOk;
}

// `pgflow init`: what `run` would create before streaming, created now; with `grant_to`, and
// the privileges that role needs to run the pipeline granted.
int Init(const std::string& path, const std::string& grant_to, bool print_sql) {
  std::optional<PostgresPipeline> pipeline = LoadPostgresPipeline(path, "init");
  if (!pipeline) return kExitConfig;
  if (print_sql) return PrintGrants(*pipeline, grant_to);
  const PostgresSourceOptions& options = *pipeline->source;
  const std::string& name = pipeline->config.name;
  if (options.snapshot.mode == SnapshotMode::kOnly) {
    LogError(
        "pipeline %s copies once (snapshot mode only) and leaves nothing in the source: "
        "there is nothing to initialise",
        name);
    return kExitConfig;
  }
  PostgresSource source(name, path, pipeline->source);
  absl::StatusOr<Lsn> start = source.Prepare();
  if (!start.ok()) {
    LogError("init %s: %s", name, start.status().message());
    return kExitFailure;
  }
  std::printf("pipeline %s: ready in %s (publication %s, slot %s at %s)\n", name.c_str(),
              DescribeConninfo(options.url).c_str(), options.publication.c_str(),
              options.slot.c_str(), start->ToString().c_str());
  if (grant_to.empty()) return kExitOk;
  absl::StatusOr<PgConnPtr> conn = Connect(options.url, ConnectionKind::kRegular);
  absl::StatusOr<std::vector<std::string>> grants =
      conn.ok() ? SourceGrants(conn->get(), options, grant_to)
                : absl::StatusOr<std::vector<std::string>>(conn.status());
  std::string sql = "BEGIN;\n";
  if (grants.ok()) sql += absl::StrCat(absl::StrJoin(*grants, "\n"), "\nCOMMIT");
  absl::Status granted = grants.ok() ? Exec(conn->get(), sql).status() : grants.status();
  if (!granted.ok()) {
    LogError("init %s: granting role %s what the pipeline needs: %s", name, grant_to,
             granted.message());
    return kExitFailure;
  }
  std::printf(
      "pipeline %s: role %s may now run it (REPLICATION, pgflow's bookkeeping, SELECT on the "
      "followed tables and sequences, today's and later ones)\n",
      name.c_str(), grant_to.c_str());
  return kExitOk;
}

// `pgflow status`: the table (or --json) and the exit status of cli/status_command.h.
int StatusCommand(const std::string& path, bool json) {
  std::optional<PipelineConfig> config = LoadOrReport(path);
  if (!config) return kExitConfig;
  try {
    PipelineHealth health = GatherStatus(*config, path);
    if (json) {
      std::printf("%s\n", health.report.dump(2).c_str());
    } else {
      std::printf("%s", FormatStatus(health.report).c_str());
    }
    return health.exit_status;
  } catch (const nlohmann::json::exception& e) {
    // A field of another type than expected, in what a process of another version answered.
    LogError("status %s: unexpected answer from the admin endpoint %s: %s", config->name,
             config->admin.listen, e.what());
    return kStatusUnreachable;
  }
}

// The sink's bookkeeping in each PostgreSQL target, removed once the source's part is: a target
// that cannot be reached keeps it, said so.
void TeardownTargets(const PipelineConfig& config, const std::vector<TableRef>& tables,
                     std::vector<std::string>* removed, std::vector<std::string>* kept) {
  for (const SinkConfig& sink : config.sinks) {
    if (sink.type != "postgres") continue;
    const auto& target = static_cast<const PostgresSinkOptions&>(*sink.options);
    absl::StatusOr<TargetTeardown> done = TeardownTarget(config.name, target, tables);
    if (!done.ok()) {
      kept->push_back(absl::StrCat("schema pgflow in sink ", sink.name, "'s target ",
                                   DescribeConninfo(target.url), " (", done.status().message(),
                                   "): `pgflow teardown` again, or `DROP SCHEMA pgflow CASCADE` "
                                   "there"));
      continue;
    }
    removed->insert(removed->end(), done->removed.begin(), done->removed.end());
    kept->insert(kept->end(), done->kept.begin(), done->kept.end());
  }
}

// `pgflow teardown`: removes what init (or run) left in the source, then in the targets.
int TeardownCommand(const std::string& path) {
  std::optional<PostgresPipeline> pipeline = LoadPostgresPipeline(path, "teardown");
  if (!pipeline) return kExitConfig;
  const PostgresSourceOptions& options = *pipeline->source;
  const std::string& name = pipeline->config.name;
  absl::StatusOr<PgConnPtr> conn = Connect(options.url, ConnectionKind::kRegular);
  if (!conn.ok()) {
    LogError("%s", conn.status().message());
    return kExitFailure;
  }
  absl::StatusOr<TeardownReport> report =
      Teardown(conn->get(), name, options.slot, options.publication);
  if (!report.ok()) {
    LogError("teardown %s: %s", name, report.status().message());
    return kExitFailure;
  }
  std::vector<std::string> removed = report->removed;
  std::vector<std::string> kept = report->kept;
  TeardownTargets(pipeline->config, options.tables, &removed, &kept);
  for (const std::string& what : removed) std::printf("removed %s\n", what.c_str());
  for (const std::string& what : kept) std::printf("kept %s\n", what.c_str());
  if (removed.empty()) std::printf("pipeline %s: nothing to remove\n", name.c_str());
  return kExitOk;
}

// `pgflow snapshot`: asks the running pipeline to re-copy tables, then follows the request.
int Snapshot(const std::string& path, const std::vector<std::string>& tables, bool wait) {
  std::optional<PostgresPipeline> pipeline = LoadPostgresPipeline(path, "snapshot");
  if (!pipeline) return kExitConfig;
  const PipelineConfig* config = &pipeline->config;
  const std::string& url = pipeline->source->url;
  std::vector<TableRef> refs;
  if (!ParseTableArgs(tables, *pipeline, &refs)) return kExitConfig;
  absl::StatusOr<int64_t> id = RequestBackfill(url, config->name, refs);
  if (!id.ok()) {
    LogError("%s", id.status().message());
    return kExitFailure;
  }
  LogInfo("backfill %d requested for pipeline %s", *id, config->name);
  if (!wait) return kExitOk;
  absl::StatusOr<PgConnPtr> conn = Connect(url, ConnectionKind::kRegular);
  if (!conn.ok()) {
    LogError("%s", conn.status().message());
    return kExitFailure;
  }
  StopSignal stop;
  InstallStopSignalHandlers(&stop);
  auto asked = std::chrono::steady_clock::now();
  auto last_line = asked;
  bool warned = false;
  while (!stop.requested()) {
    absl::StatusOr<BackfillStatus> status = GetBackfillStatus(conn->get(), *id);
    if (!status.ok()) {
      LogError("%s", status.status().message());
      return kExitFailure;
    }
    if (!status->error.empty()) {
      LogError("backfill %d failed: %s", *id, status->error);
      return kExitFailure;
    }
    if (status->finished) {
      LogInfo("backfill %d: done, %d rows copied and held by every sink", *id, status->rows);
      return kExitOk;
    }
    auto now = std::chrono::steady_clock::now();
    if (!status->started && !warned && now - asked > std::chrono::seconds(5)) {
      LogWarning(
          "backfill %d: pipeline %s has not started it yet; it will when `pgflow run %s` "
          "reads the request from the stream",
          *id, config->name, path);
      warned = true;
    }
    if (status->started && now - last_line > std::chrono::seconds(5)) {
      LogInfo("backfill %d: %d rows copied so far", *id, status->rows);
      last_line = now;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  LogInfo("stopped waiting; backfill %d goes on in the pipeline", *id);
  return kExitOk;
}

// `pgflow verify`: compares the source with each PostgreSQL sink's target.
int VerifyCommand(const std::string& path, const std::vector<std::string>& only, int ranges,
                  int jobs) {
  std::optional<PostgresPipeline> pipeline = LoadPostgresPipeline(path, "verify");
  if (!pipeline) return kExitConfig;
  const PipelineConfig* config = &pipeline->config;
  std::vector<TableRef> tables;
  if (!ParseTableArgs(only, *pipeline, &tables)) return kExitConfig;
  if (tables.empty()) tables = pipeline->source->tables;
  // Where the table being compared stands: on a terminal a live line redrawn every second,
  // otherwise a log line every 10 seconds.
  const bool live = isatty(STDERR_FILENO) != 0;
  const auto every = live ? std::chrono::seconds(1) : std::chrono::seconds(10);
  bool all_ok = true;
  int targets = 0;
  for (const SinkConfig& sink : config->sinks) {
    if (sink.type != "postgres") continue;
    ++targets;
    const auto& target = static_cast<const PostgresSinkOptions&>(*sink.options);
    VerifyOptions options;
    options.source_url = pipeline->source->url;
    options.target_url = target.url;
    options.target_schema = target.schema;
    options.tables = tables;
    options.ranges = ranges;
    options.jobs = jobs;
    options.skip_keyless = pipeline->source->keyless_tables == KeylessPolicy::kSkip;
    options.compare_privileges = target.CopiesRoles();
    auto started = std::chrono::steady_clock::now();
    auto shown = started;
    auto progress = [&](const VerifyProgress& p) {
      const auto now = std::chrono::steady_clock::now();
      if (p.ranges_done == 0) {  // a table begins
        started = shown = now;
        return;
      }
      if (now - shown < every || p.ranges_done == p.ranges_total) return;
      shown = now;
      const double elapsed = std::chrono::duration<double>(now - started).count();
      std::string line = absl::StrFormat(
          "verify %s: %s: %d/%d ranges, %s rows, %s rows/s, ETA %s", sink.name, p.table,
          p.ranges_done, p.ranges_total, HumanCount(p.rows),
          HumanCount(static_cast<uint64_t>(p.rows / elapsed)),
          HumanDuration(elapsed / p.ranges_done * (p.ranges_total - p.ranges_done)));
      if (live) {
        DrawLive({line});
      } else {
        LogInfo("%s", line);
      }
    };
    absl::StatusOr<VerifyReport> report = Verify(
        options,
        [&](const std::string& line) {
          ClearLive();
          std::printf("%s: %s\n", sink.name.c_str(), line.c_str());
          std::fflush(stdout);
        },
        progress);
    if (!report.ok()) {
      LogError("verify %s: %s", sink.name, report.status().message());
      return kExitFailure;
    }
    for (const RangeDifference& d : report->differences) {
      std::printf("%s: %s differs where %s: source %lld rows, target %lld rows\n",
                  sink.name.c_str(), d.table.c_str(), d.range.c_str(),
                  static_cast<long long>(d.source_rows), static_cast<long long>(d.target_rows));
    }
    for (const std::string& note : report->privilege_notes) {
      std::printf("%s: note: %s\n", sink.name.c_str(), note.c_str());
    }
    if (report->privileges_compared > 0) {
      std::printf("%s: owners and grants: %s (%lld tables and sequences)\n", sink.name.c_str(),
                  report->privilege_differences.empty() ? "identical" : "DIFFERENT",
                  static_cast<long long>(report->privileges_compared));
    }
    std::printf("%s: %s\n", sink.name.c_str(), report->Summary().c_str());
    all_ok = all_ok && report->ok();
  }
  if (targets == 0) {
    LogError("pipeline %s has no postgres sink to verify", config->name);
    return kExitConfig;
  }
  return all_ok ? kExitOk : kExitFailure;
}

// Runs `apply` on each PostgreSQL sink of the pipeline at `path` (for `pgflow <command>`),
// stopping at the first that fails.
int ForEachTarget(
    const std::string& path, std::string_view command,
    const std::function<absl::Status(const PipelineConfig&, const PostgresSinkOptions&)>& apply) {
  std::optional<PostgresPipeline> pipeline = LoadPostgresPipeline(path, command);
  if (!pipeline) return kExitConfig;
  const PipelineConfig* config = &pipeline->config;
  int targets = 0;
  for (const SinkConfig& sink : config->sinks) {
    if (sink.type != "postgres") continue;
    ++targets;
    absl::Status s = apply(*config, static_cast<const PostgresSinkOptions&>(*sink.options));
    if (!s.ok()) {
      LogError("%s for sink %s: %s", command, sink.name, s.message());
      return kExitFailure;
    }
  }
  if (targets == 0) {
    LogError("pipeline %s has no postgres sink", config->name);
    return kExitConfig;
  }
  return kExitOk;
}

// `pgflow sequences`: sets every target sequence to the source's value.
int SequencesCommand(const std::string& path) {
  return ForEachTarget(path, "sequences",
                       [](const PipelineConfig& config, const PostgresSinkOptions& target) {
                         return SyncSequences(config.name, *config.source.traits.postgres, target);
                       });
}

// `pgflow roles`: the source's roles, owners and grants in each PostgreSQL target.
int RolesCommand(const std::string& path, const std::string& pipeline_role) {
  return ForEachTarget(
      path, "roles", [&](const PipelineConfig& config, const PostgresSinkOptions& target) {
        return CopyRolesCommand(*config.source.traits.postgres, target, pipeline_role);
      });
}

int Options(bool markdown) {
  std::string reference =
      OptionsReference(markdown ? ReferenceFormat::kMarkdown : ReferenceFormat::kText);
  std::fwrite(reference.data(), 1, reference.size(), stdout);
  return kExitOk;
}

}  // namespace
}  // namespace pgflow

int main(int argc, char** argv) {
  using namespace pgflow;
  // Debian's Abseil is built with deadlock detection on, which books every lock and unlock
  // of every absl::Mutex (hundreds of instructions, under a process-wide lock): a debugging aid
  // the queues and the kv store's readers should not pay for in production.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Batches of rows (a MiB or so) are allocated by one thread and freed by another, all the time.
  // glibc's defaults give each to mmap, or hand a freed arena top back to the kernel, so that
  // every batch faults its pages in anew: a quarter of pgflow's CPU in a snapshot. Memory is
  // bounded by the pipeline's queues, not by giving it back.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  RegisterComponents();

  CLI::App app{
      "pgflow: change-data-capture pipelines for PostgreSQL.\n"
      "Streams every insert, update, delete and truncate of the tables a pipeline names into "
      "its sinks, acknowledging to PostgreSQL only what every sink holds."};
  app.require_subcommand(1);
  app.fallthrough();  // --log-level and --log-format also after the command
  app.set_version_flag("--version", std::string("pgflow ") + PGFLOW_VERSION);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  std::string log_format = "text";
  app.add_option("--log-format", log_format,
                 "text (a timestamped line per event) or json (one object per line: ts, level, "
                 "pipeline, component, message)")
      ->capture_default_str();

  std::string run_path;
  int progress_seconds = 10;
  CLI::App* run = app.add_subcommand(
      "run",
      "Run a pipeline: create its publication and replication slot if missing, then stream "
      "changes into its sinks until SIGINT/SIGTERM (which drain, flush, acknowledge and exit "
      "0). After a crash it resumes from the slot's confirmed position. With a kafka source "
      "(source: {kafka: {brokers, topics, group}}) it reads pgflow's events back from Kafka "
      "as a member of the consumer group, committing offsets only for what every sink holds, "
      "and resumes from the committed offsets.");
  run->add_option("pipeline", run_path, "pipeline file (YAML)")->required();
  run->add_option("--progress", progress_seconds,
                  "seconds between progress lines in the log on stderr (0: no progress); when "
                  "stderr is a terminal (and --log-format text), a live display redrawn every "
                  "second instead, a line per table during the copy")
      ->capture_default_str();
  std::string until;
  run->add_option("--until", until,
                  "stop (drain, flush, acknowledge, exit 0) once every change up to this WAL "
                  "position (X/X, e.g. from pg_current_wal_lsn()) is held by every sink");

  std::string init_path;
  CLI::App* init = app.add_subcommand(
      "init",
      "Install what a pipeline needs in the source without streaming: the pgflow schema, the "
      "DDL capture event triggers (needs a superuser), the publication and the replication "
      "slot, from which point changes are kept for the first `run`. Idempotent; `run` does the "
      "same when something is missing.");
  init->add_option("pipeline", init_path, "pipeline file (YAML)")->required();
  std::string grant_to;
  init->add_option("--grant-to", grant_to,
                   "then grant ROLE (not a superuser) what running the pipeline needs in the "
                   "source: REPLICATION, pgflow's bookkeeping tables, SELECT on the followed "
                   "tables and sequences (docs/operations/source-database.md, \"Privileges\")");
  bool print_sql = false;
  init->add_flag("--print-sql", print_sql,
                 "print those grants (for --grant-to ROLE, else the source URL's user), and "
                 "each PostgreSQL target's, for a DBA to run; installs nothing");

  std::string teardown_path;
  CLI::App* teardown = app.add_subcommand(
      "teardown",
      "Remove what a pipeline installed in the source: its replication slot (so no WAL stays "
      "pinned), its publication and its state, the REPLICA IDENTITY FULL it set on keyless "
      "tables; the DDL capture and the pgflow schema too when no other pipeline uses them. "
      "Then each PostgreSQL target's pgflow schema (the applied position, pending DDL), unless "
      "it holds refused rows or more. Prints what it removed and, with the command that removes "
      "it, what it kept. Refuses while the pipeline runs. Idempotent.");
  teardown->add_option("pipeline", teardown_path, "pipeline file (YAML)")->required();

  std::string validate_path;
  CLI::App* validate = app.add_subcommand(
      "validate",
      "Check a pipeline file, or a pooler file (told apart by its keys: listen and databases), "
      "without touching any server: YAML syntax, unknown keys, types, required fields, URLs; "
      "for a pooler file also its users file and TLS files. Errors name file, line and "
      "column, every one at once; exit status 2 on error.");
  validate->add_option("file", validate_path, "pipeline or pooler file (YAML)")->required();
  bool validate_source = false;
  validate->add_flag("--source", validate_source,
                     "also connect to the source and run every followed table's first row "
                     "through each sink's transforms: tables and columns the transforms name must "
                     "exist, with types their rules fit");

  std::string preview_path;
  std::string preview_table;
  std::string preview_sink;
  int preview_limit = 10;
  CLI::App* preview = app.add_subcommand(
      "preview",
      "Show rows of a source table beside what the pipeline's transforms (and a sink's, with "
      "--sink) make of them, without starting the pipeline.");
  preview->add_option("pipeline", preview_path, "pipeline file (YAML)")->required();
  preview->add_option("--table", preview_table, "the source table, schema.table")->required();
  preview->add_option("--limit", preview_limit, "rows to show")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  preview->add_option("--sink", preview_sink, "add this sink's own transforms after the pipeline's");

  std::string dlq_path;
  DlqRequest dlq_request;
  CLI::App* dlq = app.add_subcommand(
      "dlq",
      "The events the sinks set aside (`dead_letter:`): list, show, replay (send them to their "
      "sink again; those delivered are removed) or purge.");
  dlq->add_option("action", dlq_request.action, "list, show, replay or purge")
      ->required()
      ->check(CLI::IsMember({"list", "show", "replay", "purge"}));
  dlq->add_option("pipeline", dlq_path, "pipeline file (YAML)")->required();
  dlq->add_option("--sink", dlq_request.sink, "only this sink's records");
  dlq->add_option("--id", dlq_request.ids, "only these records (repeatable)");
  dlq->add_flag("--all", dlq_request.all, "purge: every record of the sinks chosen");

  std::string snapshot_path;
  std::vector<std::string> snapshot_tables;
  bool no_wait = false;
  CLI::App* snapshot = app.add_subcommand(
      "snapshot",
      "Re-copy tables into the sinks of a pipeline while it keeps streaming (a backfill): the "
      "running `pgflow run` copies them in key order between watermarks in the WAL, so no "
      "copied row overwrites a later change. Waits until every sink holds the copy.");
  snapshot->add_option("pipeline", snapshot_path, "pipeline file (YAML)")->required();
  snapshot
      ->add_option("--tables", snapshot_tables,
                   "tables to copy, schema.table or schema.* (default: all the pipeline's)")
      ->delimiter(',');
  snapshot->add_flag("--no-wait", no_wait, "return once the request is recorded");

  std::string verify_path;
  std::vector<std::string> verify_tables;
  int verify_ranges = 64;
  int verify_jobs = 1;
  CLI::App* verify = app.add_subcommand(
      "verify",
      "Compare the source with every PostgreSQL sink's target, table by table: row counts and "
      "a hash of the rows over primary-key ranges; prints the ranges that differ. Exit status 0 "
      "only when everything matches. Run it once the target has caught up.");
  verify->add_option("pipeline", verify_path, "pipeline file (YAML)")->required();
  verify->add_option("--tables", verify_tables, "tables to compare (default: the pipeline's)")
      ->delimiter(',');
  verify->add_option("--ranges", verify_ranges, "key ranges per table")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  verify
      ->add_option("--jobs", verify_jobs,
                   "ranges compared at once, each over its own pair of connections")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));

  std::string sequences_path;
  CLI::App* sequences = app.add_subcommand(
      "sequences",
      "Set every sequence the pipeline's tables use (serial, identity, nextval defaults) on each "
      "PostgreSQL target to the source's current value: the step before a cutover. (The "
      "initial load does it by itself once the snapshot is in.)");
  sequences->add_option("pipeline", sequences_path, "pipeline file (YAML)")->required();

  std::string roles_path;
  std::string roles_grant_to;
  CLI::App* roles = app.add_subcommand(
      "roles",
      "Create on each PostgreSQL target the roles the pipeline's objects need (owners, "
      "grantees, their members and groups, with attributes, memberships, settings and, when the "
      "source URL names a superuser, passwords), then give the database, the schemas and every "
      "table, sequence, type and routine pgflow brought the source's owners, grants, settings "
      "and default privileges: what `roles: copy` does as the pipeline runs. Run with "
      "superusers' URLs, it does what the pipeline's role may not. Idempotent.");
  roles->add_option("pipeline", roles_path, "pipeline file (YAML)")->required();
  roles->add_option("--grant-to", roles_grant_to,
                    "the role the pipeline writes as in the targets (default: each target URL's "
                    "user): made a member of the roles that own its objects, so that it gives "
                    "what it creates their owner and keeps writing to them");

  std::string status_path;
  bool status_json = false;
  CLI::App* status = app.add_subcommand(
      "status",
      "How a pipeline stands, running or not: phase (snapshot, streaming, stopped), snapshot "
      "progress, the replication slot (active, wal_status, retained WAL, safe_wal_size), lag "
      "per sink and the last error (those two from the running process's admin endpoint). "
      "Exit status 0 healthy, 1 degraded (stopped, not ready, retained WAL past "
      "max_retained_wal), 2 source unreachable or slot lost or missing.");
  status->add_option("pipeline", status_path, "pipeline file (YAML)")->required();
  status->add_flag("--json", status_json, "print the status as one JSON object, for scripts");

  std::string pooler_path;
  CLI::App* pooler = app.add_subcommand(
      "pooler",
      "Run the PostgreSQL connection pooler: clients connect to it as to PostgreSQL and share "
      "a few server connections (session, transaction or statement pooling, prepared "
      "statements in transaction mode, waits through a server restart). SIGHUP or the "
      "console's RELOAD re-reads the file; SIGINT/SIGTERM or SHUTDOWN stop it. Paths in the "
      "file are relative to its directory.");
  pooler->add_option("--config", pooler_path, "pooler file (YAML): listen, auth, databases");
  std::string pooler_status_path;
  PoolerStatusOptions pooler_status_options;
  bool pooler_status_json = false;
  CLI::App* pooler_status = pooler->add_subcommand(
      "status",
      "How a running pooler stands, asked of its admin console (database pgflow, on its Unix "
      "socket if it has one, else on `listen`) as the first of admin.users: up or not, and per "
      "database clients (active/waiting/idle), server connections (active/idle), paused, "
      "transactions and queries a second, the longest wait, a server it cannot reach. The "
      "console user's password comes from the users file, else PGPASSWORD or ~/.pgpass. "
      "Takes about a second (rates). Exit status 0 healthy, 1 a database cannot reach its "
      "server, 2 the pooler does not answer or refuses the console.");
  pooler_status->add_option("--config", pooler_status_path, "pooler file (YAML)")->required();
  pooler_status->add_option("--user", pooler_status_options.user,
                            "the console's user (default: the first of admin.users)");
  pooler_status->add_flag("--json", pooler_status_json,
                          "print the status as one JSON object, for scripts");

  CLI::App* options = app.add_subcommand(
      "options", "Print every key a pipeline file accepts, with its type, default and meaning.");
  bool markdown = false;
  options->add_flag("--markdown", markdown,
                    "as the markdown table docs/reference/pipeline-options.md carries "
                    "(| key | type | default | meaning |)");

  if (argc == 1) {
    std::printf("%s\n", app.help().c_str());
    std::fprintf(stderr, "pgflow: name a command (pgflow run pipeline.yaml, pgflow --help)\n");
    return kExitConfig;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end with 0; a wrong command line with kExitConfig, not CLI11's own
    // codes (106 and the like).
    return app.exit(e) == 0 ? kExitOk : kExitConfig;
  }

  LogLevel level;
  if (!ParseLogLevel(log_level, &level)) {
    std::fprintf(stderr, "--log-level: unknown level '%s' (debug, info, warn, error)\n",
                 log_level.c_str());
    return 2;
  }
  SetLogLevel(level);
  LogFormat format;
  if (!ParseLogFormat(log_format, &format)) {
    std::fprintf(stderr, "--log-format: unknown format '%s' (text, json)\n", log_format.c_str());
    return 2;
  }
  SetLogFormat(format);
  if (*status) return StatusCommand(status_path, status_json);
  if (*run) return Run(run_path, std::chrono::seconds(std::max(progress_seconds, 0)), until);
  if (*validate) return Validate(validate_path, validate_source);
  if (*preview) return Preview(preview_path, preview_table, preview_limit, preview_sink);
  if (*dlq) return Dlq(dlq_path, dlq_request);
  if (*init) return Init(init_path, grant_to, print_sql);
  if (*teardown) return TeardownCommand(teardown_path);
  if (*snapshot) return Snapshot(snapshot_path, snapshot_tables, !no_wait);
  if (*verify) return VerifyCommand(verify_path, verify_tables, verify_ranges, verify_jobs);
  if (*sequences) return SequencesCommand(sequences_path);
  if (*roles) return RolesCommand(roles_path, roles_grant_to);
  if (*options) return Options(markdown);
  if (*pooler_status) {
    return PoolerStatusCommand(pooler_status_path, pooler_status_options, pooler_status_json);
  }
  if (*pooler) {
    if (pooler_path.empty()) {
      std::fprintf(stderr, "pgflow pooler: --config is required (pgflow pooler --help)\n");
      return kExitConfig;
    }
    return PoolerCommand(pooler_path);
  }
  return 0;
}
