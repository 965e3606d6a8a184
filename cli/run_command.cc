#include "cli/run_command.h"

#include <algorithm>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "cli/dlq_command.h"
#include "cli/pipeline_file.h"
#include "cli/preview_command.h"
#include "engine/config_node.h"
#include "engine/log.h"
#include "engine/runner.h"
#include "engine/stop_signal.h"
#include "pooler/auth.h"

namespace pgflow {
namespace {

struct RunArgs {
  std::string path;
  int progress_seconds = 10;
  std::string until;
};

// The web console's login (admin.users, read once now: a mistake in it stops the run before it
// starts), and its dead letters and replay, with `pgflow dlq`'s functions.
absl::Status AddConsole(const PipelineConfig& config, RunnerOptions* options) {
  if (config.admin.listen.empty()) return absl::OkStatus();
  if (!config.admin.users.empty()) {
    std::filesystem::path path(config.admin.users);
    if (path.is_relative()) path = std::filesystem::path(config.file).parent_path() / path;
    absl::StatusOr<std::string> text = ReadConfigFile(path.string());
    if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat(
        config.file, ": admin.users: ", text.status().message()));
    absl::StatusOr<pooler::UserList> users = pooler::ParseUserList(*text, path.string());
    if (!users.ok()) return absl::InvalidArgumentError(absl::StrCat(
        config.file, ": admin.users: ", users.status().message()));
    auto list = std::make_shared<const pooler::UserList>(*std::move(users));
    options->console_login = [list](const std::string& user, const std::string& password) {
      return pooler::CheckPassword(*list, user, password);
    };
  }
  auto shared = std::make_shared<const PipelineConfig>(config);
  options->dead_letters = [shared] { return DeadLettersJson(*shared); };
  options->replay = [shared](const std::string& sink,
                             uint64_t id) -> absl::StatusOr<std::string> {
    absl::StatusOr<std::string> out = RunDlq(*shared, {"replay", sink, {id}, false});
    if (!out.ok()) return out.status();
    return absl::StrCat("dead letter ", id, " of sink ", sink, " replayed: ",
                        absl::StripAsciiWhitespace(*out));
  };
  return absl::OkStatus();
}

// Runs the pipeline file `path` until it stops; *handed_over: it ended for a cutover's
// handover, and the file that took over is to run next.
int RunFile(const std::string& path, Lsn stop_at, const RunArgs& args, StopSignal* stop,
            bool* handed_over) {
  *handed_over = false;
  std::optional<PipelineConfig> config = LoadOrReport(path);
  if (!config) return kExitConfig;
  SetLogPipeline(config->name);
  if (stop_at.IsValid() && config->source.traits.positions != SourcePositions::kWal) {
    LogError("--until: pipeline %s reads from a %s source, whose positions are not WAL positions",
             config->name, config->source.type);
    return kExitConfig;
  }
  RunnerOptions options;
  options.progress_interval = std::chrono::seconds(std::max(args.progress_seconds, 0));
  options.stop_at = stop_at;
  options.version = PGFLOW_VERSION;
  options.find_problems = [](const PipelineConfig& pipeline) {
    std::vector<std::string> warnings;
    auto problems = ValidateAgainstSource(pipeline, /*before_run=*/true, &warnings);
    for (const std::string& warning : warnings) LogWarning("%s", warning);
    return problems;
  };
  if (absl::Status s = AddConsole(*config, &options); !s.ok()) {
    LogError("%s", s.message());
    return kExitConfig;
  }
  PipelineRunner runner(*std::move(config), std::move(options));
  if (absl::Status s = runner.CheckBeforeStart(); !s.ok()) {
    LogError("%s", s.message());
    return absl::IsInvalidArgument(s) ? kExitConfig : kExitFailure;
  }
  if (absl::Status s = runner.Run(stop); !s.ok()) {
    LogError("%s", s.message());
    return kExitFailure;
  }
  *handed_over = runner.handed_over();
  return kExitOk;
}

int Run(const RunArgs& args) {
  Lsn stop_at;
  if (!args.until.empty()) {
    std::optional<Lsn> lsn = Lsn::Parse(args.until);
    if (!lsn) {
      LogError("--until: '%s' is not a WAL position of the form X/X (e.g. 0/16B3748)", args.until);
      return kExitConfig;
    }
    stop_at = *lsn;
  }
  // (The runner's guard may request `stop`, which therefore outlives it.)
  StopSignal stop;
  InstallStopSignalHandlers(&stop);
  std::string previous;
  while (true) {
    // After a cutover, the file of the stream back runs in place of the one named.
    const PipelineFile current = CurrentPipelineFile(args.path);
    if (current.path == previous) {
      LogError("%s handed over, but no other pipeline file took over (%s names it still)", previous,
               current.path);
      return kExitFailure;
    }
    if (current.path != args.path) {
      LogInfo("%s was cut over: running %s, which took over", args.path, current.path);
    }
    bool handed_over = false;
    const int status = RunFile(current.path, stop_at, args, &stop, &handed_over);
    if (status != kExitOk || !handed_over) return status;
    previous = current.path;
    // --until names a position of the first pipeline's source: the stream back reads another.
    stop_at = Lsn();
  }
}

}  // namespace

Command AddRunCommand(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* run = AddCommand(
      app, "run", "Run a pipeline: copy its tables, then stream their changes",
      "Run a pipeline: create its publication and replication slot if missing, then stream "
      "changes into its sinks until SIGINT/SIGTERM (which drain, flush, acknowledge and "
      "exit 0). After a crash it resumes from the slot's confirmed position. With a kafka "
      "source (source: {kafka: {brokers, topics, group}}) it reads pgflow's events back "
      "from Kafka as a member of the consumer group, committing offsets only for what "
      "every sink holds, and resumes from the committed offsets. After `pgflow cutover`, "
      "the process goes on with the stream back it handed over to, and the file "
      "<stem>.current beside the pipeline file names it, so that a later `run` of the same "
      "file runs the stream back. With admin.listen it serves /metrics, /status and a web "
      "console on / (progress, lag, dead letters and their replay for admin.users).");
  AddPipelineFile(run, &args->path);
  run->add_option("--progress", args->progress_seconds,
                  "seconds between progress lines in the log on stderr (0: no progress); when "
                  "stderr is a terminal (and --log-format text), a live display redrawn every "
                  "second instead, a line per table during the copy")
      ->capture_default_str();
  run->add_option("--until", args->until,
                  "stop (drain, flush, acknowledge, exit 0) once every change up to this WAL "
                  "position (X/X, e.g. from pg_current_wal_lsn()) is held by every sink");
  return {run, [args] { return Run(*args); }};
}

}  // namespace pgflow
