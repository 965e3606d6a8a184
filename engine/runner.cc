#include "engine/runner.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "engine/admin_server.h"
#include "engine/log.h"
#include "engine/pipeline.h"

namespace pgflow {
namespace {

absl::flat_hash_map<std::string, RunGuardFactory>& RunGuards() {
  static auto* guards = new absl::flat_hash_map<std::string, RunGuardFactory>();
  return *guards;
}

}  // namespace

void RegisterRunGuard(std::string_view type, RunGuardFactory factory) {
  RunGuards().try_emplace(std::string(type), std::move(factory));
}

RestartPolicy::Decision RestartPolicy::After(const absl::Status& status,
                                             std::chrono::steady_clock::duration lasted,
                                             bool started, bool stopping) {
  // After a healthy stretch an outage is a new one: its first retry comes soon again.
  if (lasted >= kHealthyRun) wait_ = kFirstWait;
  ran_ = ran_ || started;
  // A first start that fails is reported at once.
  if (absl::IsAborted(status) && ran_ && !stopping) return {Action::kRestartNow};
  if (!absl::IsUnavailable(status) || !ran_ || stopping) return {Action::kFail};
  Decision decision{Action::kRestartAfterWait, wait_};
  wait_ = std::min(wait_ * 2, kMaxWait);
  return decision;
}

PipelineRunner::PipelineRunner(PipelineConfig config, RunnerOptions options)
    : config_(std::move(config)), options_(std::move(options)), run_status_(config_.name) {
  auto factory = RunGuards().find(config_.source.type);
  if (factory != RunGuards().end()) guard_ = factory->second(config_);
}

PipelineRunner::~PipelineRunner() = default;

absl::Status PipelineRunner::CheckBeforeStart() {
  if (guard_ != nullptr) {
    if (absl::Status s = guard_->CheckCanStart(); !s.ok()) return s;
  }
  if (!options_.find_problems) return absl::OkStatus();
  // What would stop the run after it created its slot: said first, nothing created. (A
  // source out of reach is left to the run, which waits for it.)
  absl::StatusOr<std::vector<std::string>> problems = options_.find_problems(config_);
  if (!problems.ok() || problems->empty()) return absl::OkStatus();
  for (const std::string& p : *problems) LogError("%s: %s", config_.file, p);
  return absl::InvalidArgumentError(
      absl::StrCat("pipeline ", config_.name,
                   ": not started, nothing created in the source: correct the above"));
}

absl::Status PipelineRunner::Run(StopSignal* stop) {
  stop_ = stop;
  AddRunMetrics();
  if (absl::Status s = StartAdmin(); !s.ok()) return s;
  if (guard_ != nullptr) {
    guard_->Watch(&run_status_, &metrics_, [this](std::string message) {
      absl::MutexLock lock(&lost_mu_);
      lost_ = std::move(message);
      stop_->Request();
    });
  }
  return Supervise();
}

void PipelineRunner::AddRunMetrics() {
  const MetricLabels labels = {{"pipeline", config_.name}};
  restarts_ = metrics_.GetCounter(
      "pgflow_pipeline_restarts_total",
      "Times the pipeline started again from the confirmed position after losing a server", labels);
  Gauge* ready =
      metrics_.GetGauge("pgflow_pipeline_ready",
                        "1 while the pipeline copies or streams and every sink is healthy", labels);
  metrics_.AddCollector([this, ready] {
    std::string reason;
    ready->Set(run_status_.Ready(&reason) ? 1 : 0);
    // Between attempts (an outage), the sinks' lag goes on growing.
    SetSinkGauges(&metrics_, config_.name, run_status_.SinksBetweenAttempts());
  });
  metrics_.GetGauge("pgflow_build_info", "pgflow's version", {{"version", options_.version}})
      ->Set(1);
}

absl::Status PipelineRunner::StartAdmin() {
  if (config_.admin.listen.empty()) return absl::OkStatus();
  AdminServerOptions admin{config_.admin.listen};
  admin.console = ConsoleHooks();
  ConsoleHooks& console = *admin.console;
  console.kind = "pipeline";
  console.title = absl::StrCat("pipeline ", config_.name);
  console.check_login = options_.console_login;
  console.state = [this](const std::string& user) {
    nlohmann::json state = {{"status", run_status_.ToJson()}};
    state["dead_letters"] = nullptr;
    if (user.empty()) return state;
    if (!options_.dead_letters) {
      state["dead_letters"] = nlohmann::json::array();
    } else if (absl::StatusOr<nlohmann::json> letters = options_.dead_letters(); letters.ok()) {
      // The newest kShown, and how many there are.
      constexpr size_t kShown = 200;
      state["dead_letters_total"] = letters->size();
      if (letters->size() > kShown) {
        letters->erase(letters->begin(), letters->end() - static_cast<std::ptrdiff_t>(kShown));
      }
      state["dead_letters"] = *std::move(letters);
    } else {
      state["dead_letter_error"] = absl::StrCat("the dead letters cannot be read: ",
                                                letters.status().message());
    }
    return state;
  };
  console.sample = [this] {
    nlohmann::json sinks = nlohmann::json::object();
    for (const auto& [name, lag] : run_status_.SinkLags()) sinks[name] = lag;
    return nlohmann::json{{"sinks", std::move(sinks)}};
  };
  console.act = [this](const std::string&,
                       const nlohmann::json& request) -> absl::StatusOr<std::string> {
    const std::string action = request["action"].get<std::string>();
    if (action != "replay") {
      return absl::InvalidArgumentError(
          absl::StrCat("no such action on a pipeline: ", action, " (only replay)"));
    }
    if (!request.contains("sink") || !request["sink"].is_string() || !request.contains("id") ||
        !request["id"].is_number_unsigned()) {
      return absl::InvalidArgumentError("replay takes {sink: name, id: number}");
    }
    if (!options_.replay) return absl::FailedPreconditionError("this run cannot replay");
    return options_.replay(request["sink"].get<std::string>(), request["id"].get<uint64_t>());
  };
  admin_ = std::make_unique<AdminServer>(std::move(admin), &metrics_, &run_status_);
  if (absl::Status s = admin_->Start(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("pipeline ", config_.name, ": ", s.message()));
  }
  LogInfo("pipeline %s: admin endpoint on port %d: /metrics /healthz /readyz /status", config_.name,
          admin_->port());
  return absl::OkStatus();
}

PipelineRunOptions PipelineRunner::AttemptOptions() {
  PipelineRunOptions options;
  options.name = config_.name;
  options.queue_bytes = config_.buffer.queue_bytes;
  options.progress_interval = options_.progress_interval;
  options.stop_at = options_.stop_at;
  options.metrics = &metrics_;
  options.status = &run_status_;
  options.transforms = BuildTransforms(config_.name, config_.transforms);
  options.source_reports_wal_end = config_.source.traits.positions == SourcePositions::kWal;
  return options;
}

absl::Status PipelineRunner::Supervise() {
  RestartPolicy policy;
  while (true) {
    Pipeline pipeline(AttemptOptions(), BuildSource(config_), BuildSinks(config_));
    const auto attempt_started = std::chrono::steady_clock::now();
    run_status_.SetPhase(RunPhase::kRunning);
    absl::Status status = pipeline.Run(*stop_);
    if (std::string why = LostSource(); !why.empty()) {
      return Fail(absl::StatusCode::kFailedPrecondition, why);
    }
    if (status.ok()) {
      handed_over_ = run_status_.HandoverAt().IsValid() && !stop_->requested();
      run_status_.SetPhase(RunPhase::kStopped, handed_over_ ? "handed over" : "");
      return absl::OkStatus();
    }
    const RestartPolicy::Decision next =
        policy.After(status, std::chrono::steady_clock::now() - attempt_started, pipeline.started(),
                     stop_->requested());
    if (next.action == RestartPolicy::Action::kFail) return Fail(status.code(), status.message());
    // A running pipeline that lost a server (a sink's target, the source), or whose sink set a
    // refused change aside, starts over from what every sink holds: the confirmed position.
    if (next.action == RestartPolicy::Action::kRestartNow) {
      LogWarning("pipeline %s: %s; starting again from the confirmed position", config_.name,
                 status.message());
      restarts_->Add();
      run_status_.NoteRestart();
      continue;
    }
    LogWarning("pipeline %s: %s; starting again from the confirmed position in %.1fs", config_.name,
               status.message(), next.wait.count() / 1000.0);
    restarts_->Add();
    run_status_.NoteRestart();
    run_status_.SetPhase(RunPhase::kRetrying, std::string(status.message()));
    WaitOrStop(next.wait);
    if (std::string why = LostSource(); !why.empty()) {
      return Fail(absl::StatusCode::kFailedPrecondition, why);
    }
    if (stop_->requested()) return absl::OkStatus();
  }
}

void PipelineRunner::WaitOrStop(std::chrono::milliseconds wait) const {
  constexpr std::chrono::milliseconds kTick(50);
  for (auto waited = std::chrono::milliseconds(0); waited < wait && !stop_->requested();
       waited += kTick) {
    std::this_thread::sleep_for(kTick);
  }
}

std::string PipelineRunner::LostSource() {
  absl::MutexLock lock(&lost_mu_);
  return lost_;
}

absl::Status PipelineRunner::Fail(absl::StatusCode code, absl::string_view message) {
  run_status_.SetPhase(RunPhase::kFailed, std::string(message));
  return absl::Status(code == absl::StatusCode::kOk ? absl::StatusCode::kUnknown : code,
                      absl::StrCat("pipeline ", config_.name, ": ", message));
}

}  // namespace pgflow
