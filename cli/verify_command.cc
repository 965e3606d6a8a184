#include "cli/verify_command.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "cli/pipeline_file.h"
#include "cutover/held_point.h"
#include "engine/log.h"
#include "engine/progress.h"
#include "sinks/postgres/verify.h"

namespace pgflow {
namespace {

struct VerifyArgs {
  std::string path;
  std::vector<std::string> tables;
  int ranges = 64;
  int jobs = 1;
  bool live = false;
  int hold_seconds = 60;
};

// Where the table being compared stands: on a terminal a live line redrawn every second,
// otherwise a log line every 10 seconds.
class VerifyProgressLine {
 public:
  explicit VerifyProgressLine(std::string sink) : sink_(std::move(sink)) {}

  void Note(const VerifyProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (p.ranges_done == 0) {  // a table begins
      started_ = shown_ = now;
      return;
    }
    if (now - shown_ < every_ || p.ranges_done == p.ranges_total) return;
    shown_ = now;
    const double elapsed = std::chrono::duration<double>(now - started_).count();
    std::string line = absl::StrFormat(
        "verify %s: %s: %d/%d ranges, %s rows, %s rows/s, ETA %s", sink_, p.table, p.ranges_done,
        p.ranges_total, HumanCount(p.rows), HumanCount(static_cast<uint64_t>(p.rows / elapsed)),
        HumanDuration(elapsed / p.ranges_done * (p.ranges_total - p.ranges_done)));
    if (live_) {
      DrawLive({line});
    } else {
      LogInfo("%s", line);
    }
  }

 private:
  const std::string sink_;
  const bool live_ = isatty(STDERR_FILENO) != 0;
  const std::chrono::seconds every_ = live_ ? std::chrono::seconds(1) : std::chrono::seconds(10);
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point shown_ = started_;
};

void PrintReport(const std::string& sink, const VerifyReport& report) {
  for (const RangeDifference& d : report.differences) {
    std::printf("%s: %s differs where %s: source %lld rows, target %lld rows\n", sink.c_str(),
                d.table.c_str(), d.range.c_str(), static_cast<long long>(d.source_rows),
                static_cast<long long>(d.target_rows));
  }
  for (const std::string& note : report.privilege_notes) {
    std::printf("%s: note: %s\n", sink.c_str(), note.c_str());
  }
  if (report.privileges_compared > 0) {
    std::printf("%s: owners and grants: %s (%lld tables and sequences)\n", sink.c_str(),
                report.privilege_differences.empty() ? "identical" : "DIFFERENT",
                static_cast<long long>(report.privileges_compared));
  }
  std::printf("%s: %s\n", sink.c_str(), report.Summary().c_str());
}

// Compares the source with one PostgreSQL sink's target: its report, or an error (logged).
absl::StatusOr<VerifyReport> VerifySink(const PostgresPipeline& pipeline, const SinkConfig& sink,
                                        const std::vector<TableRef>& tables, const VerifyArgs& args,
                                        const std::string& snapshot) {
  VerifyOptions options = VerifyOptionsFor(pipeline, sink, tables);
  options.ranges = args.ranges;
  options.jobs = args.jobs;
  options.source_snapshot = snapshot;
  VerifyProgressLine progress(sink.name);
  return Verify(
      options,
      [&](const std::string& line) {
        ClearLive();
        std::printf("%s: %s\n", sink.name.c_str(), line.c_str());
        std::fflush(stdout);
      },
      [&](const VerifyProgress& p) { progress.Note(p); });
}

int VerifyPipeline(const VerifyArgs& args) {
  std::optional<PostgresPipeline> pipeline = LoadPostgresPipeline(args.path, "verify");
  if (!pipeline) return kExitConfig;
  std::vector<TableRef> tables;
  if (!ParseTableArgs(args.tables, *pipeline, &tables)) return kExitConfig;
  if (tables.empty()) tables = pipeline->source->tables;
  int targets = 0;
  for (const SinkConfig& sink : pipeline->config.sinks) targets += sink.type == "postgres";
  if (targets == 0) {
    LogError("pipeline %s has no postgres sink to verify", pipeline->config.name);
    return kExitConfig;
  }
  // --live: the source as of a point the running pipeline holds its targets at.
  std::unique_ptr<cutover::HeldPoint> point;
  if (args.live) {
    if (pipeline->config.admin.listen.empty()) {
      LogError(
          "verify --live: pipeline %s has no admin endpoint (admin: {listen: host:port}) to be "
          "held through",
          pipeline->config.name);
      return kExitConfig;
    }
    absl::StatusOr<std::unique_ptr<cutover::HeldPoint>> taken = cutover::HeldPoint::Take(
        pipeline->config.name, pipeline->source->url, pipeline->config.admin.listen,
        std::chrono::seconds(args.hold_seconds), std::chrono::seconds(30));
    if (!taken.ok()) {
      LogError("verify --live %s: %s", pipeline->config.name, taken.status().message());
      return kExitFailure;
    }
    point = *std::move(taken);
    std::printf(
        "live: the source as of %s, the pipeline held there (after %lld ms, %d attempt%s)\n",
        point->at().ToString().c_str(), static_cast<long long>(point->took().count()),
        point->attempts(), point->attempts() == 1 ? "" : "s");
    std::fflush(stdout);
  }
  bool all_ok = true;
  for (const SinkConfig& sink : pipeline->config.sinks) {
    if (sink.type != "postgres") continue;
    absl::StatusOr<VerifyReport> report =
        VerifySink(*pipeline, sink, tables, args, point ? point->snapshot() : std::string());
    if (!report.ok()) {
      LogError("verify %s: %s", sink.name, report.status().message());
      return kExitFailure;
    }
    PrintReport(sink.name, *report);
    all_ok = all_ok && report->ok();
  }
  if (point != nullptr) {
    // A comparison that outlasted the hold compared a moving target: it proves nothing.
    if (absl::Status s = point->StillHeld(); !s.ok()) {
      LogError("verify --live %s: %s (--hold-timeout longer)", pipeline->config.name, s.message());
      return kExitFailure;
    }
    if (absl::Status s = point->Release(); !s.ok()) {
      LogWarning("verify --live %s: %s", pipeline->config.name, s.message());
    }
  }
  return all_ok ? kExitOk : kExitFailure;
}

}  // namespace

VerifyOptions VerifyOptionsFor(const PostgresPipeline& pipeline, const SinkConfig& sink,
                               const std::vector<TableRef>& tables) {
  const auto& target = static_cast<const PostgresSinkOptions&>(*sink.options);
  VerifyOptions options;
  options.source_url = pipeline.source->url;
  options.target_url = target.url;
  options.target_schema = target.schema;
  options.tables = tables;
  options.skip_keyless = pipeline.source->keyless_tables == KeylessPolicy::kSkip;
  options.compare_privileges = target.CopiesRoles();
  return options;
}

Command AddVerifyCommand(CLI::App& app) {
  auto args = std::make_shared<VerifyArgs>();
  CLI::App* verify = AddCommand(
      app, "verify", "Compare the source with each PostgreSQL target, range by range",
      "Compare the source with every PostgreSQL sink's target, table by table: row counts "
      "and a hash of the rows over primary-key ranges; prints the ranges that differ. Exit "
      "status 0 only when everything matches. Run it once the target has caught up, or with "
      "--live while the pipeline runs and the application writes: the source is then read as "
      "of a point (an exported snapshot) the pipeline holds its targets at until the "
      "comparison ends (its admin endpoint's POST /hold and /release).");
  AddPipelineFile(verify, &args->path);
  verify->add_option("--tables", args->tables, "tables to compare (default: the pipeline's)")
      ->delimiter(',');
  verify->add_option("--ranges", args->ranges, "key ranges per table")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  verify
      ->add_option("--jobs", args->jobs,
                   "ranges compared at once, each over its own pair of connections")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  verify->add_flag("--live", args->live,
                   "compare while the pipeline runs (it needs an admin endpoint): the targets "
                   "are held at the point the source is read as of");
  verify
      ->add_option("--hold-timeout", args->hold_seconds,
                   "seconds the pipeline may be held at most (--live); a comparison that takes "
                   "longer fails")
      ->capture_default_str()
      ->check(CLI::Range(1, 600));
  return {verify, [args] { return VerifyPipeline(*args); }};
}

}  // namespace pgflow
