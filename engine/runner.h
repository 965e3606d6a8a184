#pragma once

// Running a pipeline until it is told to stop (`pgflow run`): one attempt after another of
// engine/pipeline.h's Pipeline, each with a new source and new sinks, under a supervisor that
// starts again from the confirmed position after an attempt lost a server (RestartPolicy). The
// metrics, the admin endpoint (/metrics /healthz /readyz /status) and the run's status live
// across the attempts, so that counters never go backwards and /status remembers the last
// error.
//
// The runner names no concrete source or sink. What a source type adds to a run (PostgreSQL's:
// refuse to start while another process holds the replication slot, then watch the slot for
// WAL retention and invalidation) reaches it as a RunGuard registered for the type.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/config.h"
#include "engine/lsn.h"
#include "engine/metrics.h"
#include "engine/run_status.h"
#include "engine/stop_signal.h"

namespace pgflow {

class AdminServer;
struct PipelineRunOptions;

// What a source type adds to a run of its pipeline besides each attempt's Source: a check
// before anything is created, and a watch over the source for the whole run. One guard serves
// one run; destroying it stops the watch.
class RunGuard {
 public:
  virtual ~RunGuard() = default;

  // Called once, before the first attempt creates anything in the source: OK, or why the
  // pipeline must not start now (FailedPrecondition naming the process that runs it already).
  // A source out of reach is OK here: the attempts report it, and wait for it.
  virtual absl::Status CheckCanStart() = 0;

  // Starts watching the source for the rest of the run, publishing what it sees to `status`
  // and `metrics` (both outlive the guard). Calls `on_lost` at most once, from a thread of its
  // own, when the source can no longer resume the pipeline, with what to tell the user: the
  // run then stops and fails with that message.
  virtual void Watch(RunStatus* status, MetricsRegistry* metrics,
                     std::function<void(std::string)> on_lost) = 0;
};

// Makes the guard of `config`, whose source is of the type it was registered for; null when
// that pipeline needs none.
using RunGuardFactory = std::function<std::unique_ptr<RunGuard>(const PipelineConfig& config)>;

// Registers `factory` for sources of `type`. Not thread-safe: register at start-up, beside the
// source's factory (engine/registry.h). The first registration of a type wins.
void RegisterRunGuard(std::string_view type, RunGuardFactory factory);

// When a run starts its pipeline again after an attempt ended in error. Pure: no clock, no I/O.
//
// A running pipeline that lost a server (Unavailable: a sink's target, the source) starts
// over from the confirmed position after a wait that doubles from kFirstWait up to kMaxWait;
// an attempt that ran for kHealthyRun makes the next outage's waits start from kFirstWait
// again. A sink that set a refused change aside (Aborted) needs the stream again from there:
// at once. Everything else fails the run, and so does any error before some attempt got past
// its set-up (Pipeline::started), or once a stop was requested.
class RestartPolicy {
 public:
  static constexpr std::chrono::milliseconds kFirstWait{500};
  static constexpr std::chrono::milliseconds kMaxWait{30000};
  static constexpr std::chrono::seconds kHealthyRun{60};

  enum class Action { kFail, kRestartNow, kRestartAfterWait };
  struct Decision {
    Action action = Action::kFail;
    std::chrono::milliseconds wait{0};  // kRestartAfterWait: how long
  };

  // What follows an attempt that ended with `status` (not OK) after running for `lasted`;
  // `started`: it got past its set-up; `stopping`: a stop was requested.
  Decision After(const absl::Status& status, std::chrono::steady_clock::duration lasted,
                 bool started, bool stopping);

 private:
  bool ran_ = false;  // some attempt got past set-up: from then on, outages are waited out
  std::chrono::milliseconds wait_ = kFirstWait;
};

struct RunnerOptions {
  // How often each attempt logs its progress (PipelineRunOptions::progress_interval).
  std::chrono::milliseconds progress_interval{10000};
  // Stop once everything up to this position is confirmed; invalid (0/0): run until stopped.
  Lsn stop_at;
  // pgflow's version, the label of the pgflow_build_info metric.
  std::string version;
  // Finds the problems of the pipeline that only its source's catalog shows (what `pgflow
  // validate --source` finds): asked by CheckBeforeStart, after the guard's check. An error
  // (the source out of reach, say) is left to the attempts. Null: nothing is looked for.
  std::function<absl::StatusOr<std::vector<std::string>>(const PipelineConfig&)> find_problems;
  // The web console (engine/console.h) on admin.listen, with what the engine does not link:
  // who may log in (admin.users; null: no one), every sink's dead letters (null: none shown),
  // and the replay of one (`pgflow dlq replay --sink S --id N`).
  std::function<bool(const std::string& user, const std::string& password)> console_login;
  std::function<absl::StatusOr<nlohmann::json>()> dead_letters;
  std::function<absl::StatusOr<std::string>(const std::string& sink, uint64_t id)> replay;
};

// Runs one pipeline: CheckBeforeStart, then Run, once each, from one thread.
class PipelineRunner {
 public:
  PipelineRunner(PipelineConfig config, RunnerOptions options);
  ~PipelineRunner();  // stops the guard's watch, then the admin endpoint

  // What must hold before the run creates anything in the source: the guard's check (an
  // error as it says, FailedPrecondition), then the problems find_problems reports, each
  // logged as "<file>: <problem>": then InvalidArgument, saying nothing was created.
  absl::Status CheckBeforeStart();

  // Starts the admin endpoint (when the pipeline has `admin.listen`) and the guard's watch,
  // then runs attempts until `stop` is requested (by SIGINT/SIGTERM, whose handlers the caller
  // installs: engine/stop_signal.h), the source has nothing more to send or stop_at is
  // reached: OK. Otherwise the error that ended the run, whose message names the pipeline (the
  // phase /status shows is then failed, with that error). The guard requests `stop` when it
  // lost the source: `stop` must outlive the runner.
  absl::Status Run(StopSignal* stop);

  // After Run returned OK: whether it ended for a handover (RunStatus::RequestHandover), and
  // `pgflow run` goes on with the pipeline that took over.
  bool handed_over() const { return handed_over_; }

 private:
  void AddRunMetrics();
  absl::Status StartAdmin();
  PipelineRunOptions AttemptOptions();
  absl::Status Supervise();
  // Waits `wait`, or less when a stop is requested.
  void WaitOrStop(std::chrono::milliseconds wait) const;
  // Why the guard said the source can no longer resume the pipeline; empty while it can.
  std::string LostSource();
  absl::Status Fail(absl::StatusCode code, absl::string_view message);

  const PipelineConfig config_;
  const RunnerOptions options_;
  StopSignal* stop_ = nullptr;  // Run's
  // Kept across attempts: counters never go backwards, /status remembers the last error.
  MetricsRegistry metrics_;
  RunStatus run_status_;
  Counter* restarts_ = nullptr;
  std::unique_ptr<AdminServer> admin_;
  bool handed_over_ = false;
  absl::Mutex lost_mu_;
  std::string lost_ ABSL_GUARDED_BY(lost_mu_);
  std::unique_ptr<RunGuard> guard_;  // last: its watch stops before what it reports to
};

}  // namespace pgflow
