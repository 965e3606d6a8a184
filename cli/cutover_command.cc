#include "cli/cutover_command.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cli/pipeline_file.h"
#include "cli/reverse_pipeline.h"
#include "cli/verify_command.h"
#include "common/postgres/pg_connection.h"
#include "cutover/cutover.h"
#include "cutover/held_point.h"
#include "engine/log.h"
#include "engine/pipeline.h"
#include "engine/stop_signal.h"
#include "sources/postgres/snapshot.h"

namespace pgflow {
namespace {

constexpr int kExitBroken = 3;

struct CutoverArgs {
  std::string path;
  std::string sink;
  cutover::CutoverOptions options;
  std::string max_lag = "1s";
  std::string pause_timeout = "5s";
  std::string catch_up_timeout = "10s";
  bool json = false;
  bool no_reverse = false;
  bool no_verify = false;
  int hold_seconds = 60;
};

bool ReadDuration(const std::string& flag, const std::string& text,
                  std::chrono::milliseconds* out) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d <= absl::ZeroDuration()) {
    LogError("cutover: %s: '%s' is not a duration (500ms, 2s, 1m)", flag, text);
    return false;
  }
  *out = absl::ToChronoMilliseconds(d);
  return true;
}

// The pipeline's postgres sink the cutover moves to: the one named, or the only one.
const SinkConfig* TargetSink(const PipelineConfig& config, const std::string& name) {
  const SinkConfig* found = nullptr;
  int postgres = 0;
  for (const SinkConfig& sink : config.sinks) {
    if (sink.type != "postgres") continue;
    ++postgres;
    if (name.empty() || sink.name == name) found = &sink;
  }
  if (!name.empty() && found == nullptr) {
    LogError("cutover: the pipeline has no postgres sink named %s", name);
    return nullptr;
  }
  if (postgres == 0) {
    LogError("cutover: the pipeline has no postgres sink to move the application to");
    return nullptr;
  }
  if (name.empty() && postgres > 1) {
    LogError("cutover: the pipeline has %d postgres sinks: name one with --sink", postgres);
    return nullptr;
  }
  return found;
}

void PrintStep(const cutover::CutoverStep& step) {
  std::printf("%-10s %8.1f ms  %s%s\n", step.name.c_str(), absl::ToDoubleMilliseconds(step.took),
              step.ok ? "" : "FAILED: ", step.detail.c_str());
  std::fflush(stdout);
}

// The stream back's hooks (cutover/cutover.h's ReverseStream) for `reverse`, the reverse of
// `forward`'s sink `sink` into `target_url`.
cutover::ReverseStream ReverseHooks(const PipelineFile& forward, const std::string& sink,
                                    const ReversePipeline& reverse, const std::string& target_url) {
  cutover::ReverseStream hooks;
  hooks.name = reverse.name;
  hooks.file = reverse.file.path;
  hooks.slot = absl::StrCat("pgflow_", reverse.name);
  hooks.prepare = [forward, sink, reverse, target_url, slot = hooks.slot]() -> absl::Status {
    if (absl::Status s = WriteReversePipeline(forward, sink, reverse); !s.ok()) return s;
    absl::StatusOr<PipelineConfig> config = LoadPipelineConfig(reverse.file.path);
    if (!config.ok()) return config.status();
    // What `pgflow run` prepares before it streams (snapshot: never), then without the slot,
    // which the cutover makes inside the pause.
    if (absl::Status s = BuildSource(*config)->Prepare().status(); !s.ok()) return s;
    absl::StatusOr<PgConnPtr> b = Connect(target_url, ConnectionKind::kRegular);
    if (!b.ok()) return b.status();
    if (absl::Status s = Exec(b->get(), "SELECT pg_drop_replication_slot($1)", {slot}).status();
        !s.ok()) {
      return s;
    }
    return ForgetSlotMade(b->get(), reverse.name);
  };
  hooks.forget = [target_url, reverse, slot = hooks.slot] {
    absl::StatusOr<PgConnPtr> b = Connect(target_url, ConnectionKind::kRegular);
    absl::Status dropped =
        b.ok() ? Exec(b->get(),
                      "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                      "WHERE slot_name = $1",
                      {slot})
                     .status()
               : b.status();
    if (dropped.ok()) dropped = ForgetSlotMade(b->get(), reverse.name);
    if (!dropped.ok()) {
      LogWarning("cutover: the stream back's slot %s on the target is left: %s", slot,
                 dropped.message());
    }
    std::remove(reverse.file.path.c_str());
  };
  hooks.take_over = [file = reverse.file] { return MarkCurrent(file); };
  return hooks;
}

// `pgflow verify --live` as the cutover's step before the pause: what it found, or why the
// cutover must not go on (the first differences named).
// The point waits for the transactions under way on the source as the pause does for those
// through the pooler: up to `wait`.
std::function<absl::StatusOr<std::string>()> VerifyHook(const PostgresPipeline& pipeline,
                                                        const SinkConfig& sink,
                                                        std::chrono::milliseconds wait,
                                                        std::chrono::seconds longest) {
  return [options = VerifyOptionsFor(pipeline, sink, pipeline.source->tables),
          admin = pipeline.config.admin.listen, name = pipeline.config.name, wait,
          longest]() mutable -> absl::StatusOr<std::string> {
    absl::StatusOr<std::unique_ptr<cutover::HeldPoint>> point =
        cutover::HeldPoint::Take(name, options.source_url, admin, longest, wait);
    if (!point.ok()) return point.status();
    options.source_snapshot = (*point)->snapshot();
    absl::StatusOr<VerifyReport> report = Verify(options, [](const std::string&) {});
    if (!report.ok()) return report.status();
    if (absl::Status s = (*point)->StillHeld(); !s.ok()) return s;
    (*point)->Release().IgnoreError();
    const std::string as_of = absl::StrCat(" as of ", (*point)->at().ToString());
    if (report->ok()) return absl::StrCat(report->Summary(), as_of);
    std::vector<std::string> what;
    for (const RangeDifference& d : report->differences) {
      if (what.size() == 3) break;
      what.push_back(absl::StrCat(d.table, " where ", d.range));
    }
    for (const std::string& p : report->problems) {
      if (what.size() == 3) break;
      what.push_back(p);
    }
    for (const std::string& p : report->privilege_differences) {
      if (what.size() == 3) break;
      what.push_back(p);
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "the target is not the source", as_of, ": ", report->Summary(), " (",
        absl::StrJoin(what, "; "), "); `pgflow verify --live` says more, --no-verify skips it"));
  };
}

int Cutover(CutoverArgs& args) {
  if (!ReadDuration("--max-lag", args.max_lag, &args.options.max_lag) ||
      !ReadDuration("--pause-timeout", args.pause_timeout, &args.options.pause_timeout) ||
      !ReadDuration("--catch-up-timeout", args.catch_up_timeout, &args.options.catch_up_timeout)) {
    return kExitConfig;
  }
  // After a cutover, the stream back is the pipeline to cut over (back).
  const PipelineFile file = CurrentPipelineFile(args.path);
  if (file.path != args.path) LogInfo("%s was cut over: cutting over %s", args.path, file.path);
  std::optional<PostgresPipeline> pipeline = LoadPostgresPipeline(file.path, "cutover");
  if (!pipeline) return kExitConfig;
  const SinkConfig* sink = TargetSink(pipeline->config, args.sink);
  if (sink == nullptr) return kExitConfig;
  const auto& target = static_cast<const PostgresSinkOptions&>(*sink->options);
  if (!args.no_verify) {
    args.options.verify = VerifyHook(*pipeline, *sink, args.options.pause_timeout,
                                     std::chrono::seconds(args.hold_seconds));
  }
  if (!args.no_reverse) {
    absl::StatusOr<ReversePipeline> reverse =
        PlanReversePipeline(file, pipeline->config, sink->name);
    if (!reverse.ok()) {
      LogError("cutover: %s", reverse.status().message());
      return kExitConfig;
    }
    args.options.reverse = ReverseHooks(file, sink->name, *reverse, target.url);
  }
  cutover::PipelinePlan plan{
      .name = pipeline->config.name,
      .source = *pipeline->config.source.traits.postgres,
      .skips_keyless = pipeline->source->keyless_tables == KeylessPolicy::kSkip,
      .sink = sink->name,
      .target_url = target.url,
      .target_schema = target.schema,
      .admin_listen = pipeline->config.admin.listen,
  };
  // SIGINT or SIGTERM while paused undoes the cutover rather than leave the pooler paused and
  // the source read-only.
  StopSignal stop;
  InstallStopSignalHandlers(&stop);
  args.options.stop = &stop;
  cutover::CutoverReport report =
      cutover::RunCutover(plan, args.options,
                          args.json ? std::function<void(const cutover::CutoverStep&)>()
                                    : std::function<void(const cutover::CutoverStep&)>(PrintStep));
  if (args.json) {
    std::printf("%s\n", report.ToJson().dump(2).c_str());
  } else {
    for (const std::string& note : report.notes) std::printf("note: %s\n", note.c_str());
    for (const std::string& problem : report.problems) {
      std::printf("problem: %s\n", problem.c_str());
    }
    switch (report.outcome) {
      case cutover::Outcome::kChecked:
        std::printf("cutover: every check passed; nothing changed (--dry-run)\n");
        break;
      case cutover::Outcome::kRefused:
        std::printf("cutover: refused, nothing changed\n");
        break;
      case cutover::Outcome::kSwitched:
        std::printf(
            "cutover: done; clients of %s waited at most %.1f ms. The pooler keeps the new url "
            "until it restarts: put it in its file too (databases.%s.url). The source stays "
            "read-only (default_transaction_read_only)%s.\n",
            args.options.database.c_str(), absl::ToDoubleMilliseconds(report.paused),
            args.options.database.c_str(),
            report.reverse_pipeline.empty()
                ? ""
                : absl::StrCat("; pipeline ", report.reverse_pipeline,
                               " keeps it current from the target (", args.options.reverse->file,
                               "). Going back is `pgflow cutover ", args.path,
                               "` with the same options")
                      .c_str());
        break;
      case cutover::Outcome::kAbandoned:
      case cutover::Outcome::kBroken:
        std::printf("cutover: %s: %s\n", cutover::OutcomeName(report.outcome),
                    report.error.c_str());
        break;
    }
  }
  std::fflush(stdout);
  switch (report.outcome) {
    case cutover::Outcome::kChecked:
    case cutover::Outcome::kSwitched:
      return kExitOk;
    case cutover::Outcome::kRefused:
    case cutover::Outcome::kAbandoned:
      return kExitFailure;
    case cutover::Outcome::kBroken:
      return kExitBroken;
  }
  return kExitBroken;
}

}  // namespace

Command AddCutoverCommand(CLI::App& app) {
  auto args = std::make_shared<CutoverArgs>();
  CLI::App* cutover = AddCommand(
      app, "cutover", "Move the application to the target, through the pooler",
      "Move an application that connects through `pgflow pooler` from the pipeline's source "
      "to its PostgreSQL target while `pgflow run` streams: check everything first (changing "
      "nothing, every problem reported), compare the source with the target while the "
      "application writes on (`pgflow verify --live`), PAUSE the pooler's database, turn the "
      "source "
      "read-only, wait until the target has applied the source's last write, copy the "
      "sequences, point the pooler's database at the target (RETARGET) and RESUME. Clients "
      "wait, none fails. A failure before the switch undoes it all. Then the running "
      "pipeline hands over to a stream back from the target to the source, written beside "
      "the pipeline's file (migrate.yaml: migrate.cutover-1.yaml; migrate.current names the "
      "one that runs now), so that the source stays current and going back is another "
      "cutover with the same file. Exit status 0 once "
      "switched (or every check passed with --dry-run), 1 when refused or abandoned, 3 when "
      "it could neither finish nor undo.");
  AddPipelineFile(cutover, &args->path);
  cutover
      ->add_option("--pooler", args->options.pooler_url,
                   "the pooler's admin console, e.g. postgres://admin@127.0.0.1:6432/pgflow")
      ->required();
  cutover
      ->add_option("--database", args->options.database,
                   "the pooler's database the application connects to")
      ->required();
  cutover->add_option("--sink", args->sink,
                      "the postgres sink to move to (needed when the pipeline has several)");
  cutover->add_option("--target-url", args->options.new_url,
                      "what the pooler's database then points at (default: the target's host, "
                      "port and database, with the user the database's url names)");
  cutover->add_flag("--dry-run", args->options.dry_run, "run the checks only");
  cutover->add_option("--max-lag", args->max_lag, "the most the sink may lag behind to start")
      ->capture_default_str();
  cutover
      ->add_option("--pause-timeout", args->pause_timeout,
                   "abandon when a transaction stays open this long after PAUSE")
      ->capture_default_str();
  cutover
      ->add_option("--catch-up-timeout", args->catch_up_timeout,
                   "abandon when the target has not applied the source's last write by then")
      ->capture_default_str();
  cutover->add_flag("--wait-sessions", args->options.wait_sessions,
                    "let session-mode clients hold server connections (PAUSE waits for them, "
                    "up to --pause-timeout)");
  cutover->add_flag("--terminate-others", args->options.terminate_others,
                    "end the source's sessions that do not come through the pooler");
  cutover
      ->add_option("--sequence-margin", args->options.sequence_margin,
                   "add this much to every sequence copied to the target")
      ->capture_default_str();
  cutover->add_flag("--no-verify", args->no_verify,
                    "no `pgflow verify --live` before the pause (it compares the source with "
                    "the target while the pipeline holds the target at a point; a difference "
                    "refuses the cutover)");
  cutover
      ->add_option("--hold-timeout", args->hold_seconds,
                   "seconds the comparison before the pause may hold the pipeline at most; one "
                   "that takes longer refuses the cutover")
      ->capture_default_str()
      ->check(CLI::Range(1, 600));
  cutover->add_flag("--no-reverse", args->no_reverse,
                    "no stream back: the pipeline keeps running as it is, with nothing to stream");
  cutover->add_flag("--json", args->json, "print the report as JSON");
  return {cutover, [args] { return Cutover(*args); }};
}

}  // namespace pgflow
