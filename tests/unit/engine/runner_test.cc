// The run of a pipeline (engine/runner.h): when it starts again after an attempt failed, and
// what a source type's RunGuard decides, with a scripted source and a sink that holds
// everything.

#include "engine/runner.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "engine/pipeline.h"
#include "gtest/gtest.h"

namespace pgflow {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Action = RestartPolicy::Action;

TEST(RestartPolicyTest, ALostServerIsWaitedOutWithDoublingWaits) {
  RestartPolicy policy;
  const absl::Status lost = absl::UnavailableError("lost");
  std::vector<int64_t> waits;
  for (int i = 0; i < 9; ++i) {
    RestartPolicy::Decision next = policy.After(lost, seconds(1), /*started=*/true, false);
    ASSERT_EQ(next.action, Action::kRestartAfterWait);
    waits.push_back(next.wait.count());
  }
  EXPECT_EQ(waits, (std::vector<int64_t>{500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000}));
  // A healthy stretch: the next outage starts from the first wait again.
  EXPECT_EQ(policy.After(lost, seconds(60), true, false).wait, milliseconds(500));
  EXPECT_EQ(policy.After(lost, seconds(59), true, false).wait, milliseconds(1000));
}

TEST(RestartPolicyTest, ASetAsideChangeRestartsAtOnceWithoutGrowingTheWait) {
  RestartPolicy policy;
  EXPECT_EQ(policy.After(absl::AbortedError("set aside"), seconds(1), true, false).action,
            Action::kRestartNow);
  EXPECT_EQ(policy.After(absl::UnavailableError("lost"), seconds(1), true, false).wait,
            milliseconds(500));
}

TEST(RestartPolicyTest, AFirstStartThatFailsIsReportedAtOnce) {
  RestartPolicy policy;
  EXPECT_EQ(policy.After(absl::UnavailableError("down"), seconds(1), false, false).action,
            Action::kFail);
  EXPECT_EQ(policy.After(absl::AbortedError("refused"), seconds(1), false, false).action,
            Action::kFail);
  // Once an attempt got past its set-up, a later set-up failure is waited out too.
  EXPECT_EQ(policy.After(absl::UnavailableError("lost"), seconds(1), true, false).action,
            Action::kRestartAfterWait);
  EXPECT_EQ(policy.After(absl::UnavailableError("down"), seconds(1), false, false).action,
            Action::kRestartAfterWait);
}

TEST(RestartPolicyTest, OtherErrorsAndAStopEndTheRun) {
  RestartPolicy policy;
  EXPECT_EQ(policy.After(absl::InvalidArgumentError("bad"), seconds(1), true, false).action,
            Action::kFail);
  EXPECT_EQ(policy.After(absl::InternalError("bug"), seconds(1), true, false).action,
            Action::kFail);
  EXPECT_EQ(policy.After(absl::UnavailableError("lost"), seconds(1), true, true).action,
            Action::kFail);
  EXPECT_EQ(policy.After(absl::AbortedError("set aside"), seconds(1), true, true).action,
            Action::kFail);
}

// What the scripted source's attempts return from Stream, in order; once past the script, it
// waits for the stop (or returns OK when `finish` is set).
struct Script {
  absl::Mutex mu;
  std::vector<absl::Status> attempts ABSL_GUARDED_BY(mu);
  int next ABSL_GUARDED_BY(mu) = 0;
  bool finish ABSL_GUARDED_BY(mu) = true;
  std::atomic<bool> streaming{false};
};
Script& TheScript() {
  static auto* script = new Script();
  return *script;
}

class ScriptedSource : public Source {
 public:
  absl::StatusOr<Lsn> Prepare() override { return Lsn(100); }
  absl::Status Stream(Emitter&, Acknowledgements, const StopSignal& stop) override {
    Script& script = TheScript();
    {
      absl::MutexLock lock(&script.mu);
      if (script.next < static_cast<int>(script.attempts.size())) {
        return script.attempts[script.next++];
      }
      if (script.finish) return absl::OkStatus();
    }
    script.streaming = true;
    while (!stop.requested()) std::this_thread::sleep_for(milliseconds(1));
    return absl::OkStatus();
  }
  absl::Status Finish(Acknowledgements) override { return absl::OkStatus(); }
};

struct NoOptions : SourceOptions, SinkOptions {};

class ScriptedSourceFactory : public SourceFactoryOf<NoOptions> {
 public:
  std::string_view type() const override { return "runner_test"; }
  std::string_view help() const override { return "a scripted source"; }

 protected:
  const OptionTable<NoOptions>& table() const override {
    static const auto* table =
        new OptionTable<NoOptions>(std::initializer_list<Option<NoOptions>>{});
    return *table;
  }
  SourceTraits TraitsOf(const NoOptions&) const override {
    SourceTraits traits;
    traits.type = "runner_test";
    return traits;
  }
  std::string DescribeOf(const NoOptions&) const override { return ""; }
  std::unique_ptr<Source> Build(const SourceContext&,
                                std::shared_ptr<const NoOptions>) const override {
    return std::make_unique<ScriptedSource>();
  }
};

class HoldingSink : public Sink {
 public:
  absl::Status Open() override { return absl::OkStatus(); }
  absl::Status Write(const Event&) override { return absl::OkStatus(); }
  absl::Status Flush() override { return absl::OkStatus(); }
  absl::Status Close() override { return absl::OkStatus(); }
};

class HoldingSinkFactory : public SinkFactoryOf<NoOptions> {
 public:
  std::string_view type() const override { return "runner_test"; }
  std::string_view help() const override { return "a sink that holds everything"; }

 protected:
  const OptionTable<NoOptions>& table() const override {
    static const auto* table =
        new OptionTable<NoOptions>(std::initializer_list<Option<NoOptions>>{});
    return *table;
  }
  std::unique_ptr<Sink> Build(const SinkContext&, std::shared_ptr<const NoOptions>) const override {
    return std::make_unique<HoldingSink>();
  }
};

// What the guard of the last run was asked, and what it answers.
struct GuardLog {
  absl::Status can_start;
  int checks = 0;
  MetricsRegistry* metrics = nullptr;
  std::function<void(std::string)> on_lost;
};
GuardLog& TheGuard() {
  static auto* log = new GuardLog();
  return *log;
}

class ScriptedGuard : public RunGuard {
 public:
  absl::Status CheckCanStart() override {
    ++TheGuard().checks;
    return TheGuard().can_start;
  }
  void Watch(RunStatus*, MetricsRegistry* metrics,
             std::function<void(std::string)> on_lost) override {
    TheGuard().metrics = metrics;
    TheGuard().on_lost = std::move(on_lost);
  }
};

PipelineConfig ScriptedPipeline(std::vector<absl::Status> attempts, bool finish) {
  static const ScriptedSourceFactory* source = [] {
    RegisterRunGuard("runner_test", [](const PipelineConfig&) -> std::unique_ptr<RunGuard> {
      return std::make_unique<ScriptedGuard>();
    });
    return new ScriptedSourceFactory();
  }();
  static const HoldingSinkFactory* sink = new HoldingSinkFactory();
  {
    Script& script = TheScript();
    absl::MutexLock lock(&script.mu);
    script.attempts = std::move(attempts);
    script.next = 0;
    script.finish = finish;
    script.streaming = false;
  }
  TheGuard() = GuardLog{};
  PipelineConfig config;
  config.file = "runner_test.yaml";
  config.name = "runner_test";
  config.source.type = "runner_test";
  config.source.factory = source;
  config.source.options = std::make_shared<NoOptions>();
  config.source.traits = source->Traits(*config.source.options);
  SinkConfig out;
  out.name = "out";
  out.type = "runner_test";
  out.factory = sink;
  out.options = std::make_shared<NoOptions>();
  config.sinks.push_back(std::move(out));
  return config;
}

double Restarts(MetricsRegistry* metrics) {
  return metrics->GetCounter("pgflow_pipeline_restarts_total", "", {{"pipeline", "runner_test"}})
      ->value();
}

TEST(PipelineRunnerTest, StartsAgainAfterALostServerOrASetAsideChange) {
  RunnerOptions options;
  options.progress_interval = milliseconds(0);
  StopSignal stop;
  PipelineRunner runner(
      ScriptedPipeline({absl::AbortedError("set aside"), absl::UnavailableError("lost")},
                       /*finish=*/true),
      std::move(options));
  ASSERT_TRUE(runner.CheckBeforeStart().ok());
  EXPECT_EQ(TheGuard().checks, 1);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_TRUE(runner.Run(&stop).ok());
  // The set-aside change at once, the lost server after the first wait.
  EXPECT_GE(std::chrono::steady_clock::now() - started, RestartPolicy::kFirstWait);
  ASSERT_NE(TheGuard().metrics, nullptr);
  EXPECT_EQ(Restarts(TheGuard().metrics), 2);
}

TEST(PipelineRunnerTest, OtherErrorsEndTheRunNamingThePipeline) {
  StopSignal stop;
  PipelineRunner runner(ScriptedPipeline({absl::InternalError("broken")}, true), {});
  absl::Status status = runner.Run(&stop);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(status.message(), "pipeline runner_test: broken");
}

TEST(PipelineRunnerTest, TheGuardRefusesTheStart) {
  StopSignal stop;
  PipelineRunner runner(ScriptedPipeline({}, true), {});
  TheGuard().can_start = absl::FailedPreconditionError("held by pgflow process 42");
  EXPECT_EQ(runner.CheckBeforeStart(), TheGuard().can_start);
}

TEST(PipelineRunnerTest, ProblemsFoundBeforeTheStartAreAConfigurationError) {
  RunnerOptions options;
  int asked = 0;
  options.find_problems =
      [&](const PipelineConfig& config) -> absl::StatusOr<std::vector<std::string>> {
    ++asked;
    return std::vector<std::string>{"table public.a does not exist"};
  };
  StopSignal stop;
  PipelineRunner runner(ScriptedPipeline({}, true), std::move(options));
  absl::Status status = runner.CheckBeforeStart();
  EXPECT_EQ(asked, 1);
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_EQ(status.message(),
            "pipeline runner_test: not started, nothing created in the source: correct the above");
}

TEST(PipelineRunnerTest, ASourceOutOfReachIsLeftToTheRun) {
  RunnerOptions options;
  options.find_problems = [](const PipelineConfig&) -> absl::StatusOr<std::vector<std::string>> {
    return absl::UnavailableError("cannot connect");
  };
  StopSignal stop;
  PipelineRunner runner(ScriptedPipeline({}, true), std::move(options));
  EXPECT_TRUE(runner.CheckBeforeStart().ok());
}

TEST(PipelineRunnerTest, ASourceTheGuardLostEndsTheRunWithItsMessage) {
  RunnerOptions options;
  options.progress_interval = milliseconds(0);
  StopSignal stop;
  PipelineRunner runner(ScriptedPipeline({}, /*finish=*/false), std::move(options));
  std::thread lose([] {
    while (!TheScript().streaming) std::this_thread::sleep_for(milliseconds(1));
    TheGuard().on_lost("slot invalidated: copy the tables again");
  });
  absl::Status status = runner.Run(&stop);
  lose.join();
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
  EXPECT_EQ(status.message(), "pipeline runner_test: slot invalidated: copy the tables again");
}

}  // namespace
}  // namespace pgflow
