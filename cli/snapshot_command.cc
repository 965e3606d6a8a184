#include "cli/snapshot_command.h"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "cli/pipeline_file.h"
#include "common/postgres/pg_connection.h"
#include "engine/log.h"
#include "engine/stop_signal.h"
#include "sources/postgres/backfill.h"

namespace pgflow {
namespace {

struct SnapshotArgs {
  std::string path;
  std::vector<std::string> tables;
  bool no_wait = false;
};

// Follows backfill `id` of `pipeline` until every sink holds the copy, it fails, or SIGINT.
int FollowBackfill(const PostgresPipeline& pipeline, const std::string& path, int64_t id) {
  absl::StatusOr<PgConnPtr> conn = Connect(pipeline.source->url, ConnectionKind::kRegular);
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
    absl::StatusOr<BackfillStatus> status = GetBackfillStatus(conn->get(), id);
    if (!status.ok()) {
      LogError("%s", status.status().message());
      return kExitFailure;
    }
    if (!status->error.empty()) {
      LogError("backfill %d failed: %s", id, status->error);
      return kExitFailure;
    }
    if (status->finished) {
      LogInfo("backfill %d: done, %d rows copied and held by every sink", id, status->rows);
      return kExitOk;
    }
    auto now = std::chrono::steady_clock::now();
    if (!status->started && !warned && now - asked > std::chrono::seconds(5)) {
      LogWarning(
          "backfill %d: pipeline %s has not started it yet; it will when `pgflow run %s` "
          "reads the request from the stream",
          id, pipeline.config.name, path);
      warned = true;
    }
    if (status->started && now - last_line > std::chrono::seconds(5)) {
      LogInfo("backfill %d: %d rows copied so far", id, status->rows);
      last_line = now;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  LogInfo("stopped waiting; backfill %d goes on in the pipeline", id);
  return kExitOk;
}

int Snapshot(const SnapshotArgs& args) {
  std::optional<PostgresPipeline> pipeline = LoadPostgresPipeline(args.path, "snapshot");
  if (!pipeline) return kExitConfig;
  std::vector<TableRef> refs;
  if (!ParseTableArgs(args.tables, *pipeline, &refs)) return kExitConfig;
  absl::StatusOr<int64_t> id = RequestBackfill(pipeline->source->url, pipeline->config.name, refs);
  if (!id.ok()) {
    LogError("%s", id.status().message());
    return kExitFailure;
  }
  LogInfo("backfill %d requested for pipeline %s", *id, pipeline->config.name);
  if (args.no_wait) return kExitOk;
  return FollowBackfill(*pipeline, args.path, *id);
}

}  // namespace

Command AddSnapshotCommand(CLI::App& app) {
  auto args = std::make_shared<SnapshotArgs>();
  CLI::App* snapshot = AddCommand(
      app, "snapshot", "Copy tables into the sinks again while the pipeline streams",
      "Re-copy tables into the sinks of a pipeline while it keeps streaming (a backfill): "
      "the running `pgflow run` copies them in key order between watermarks in the WAL, "
      "so no copied row overwrites a later change. Waits until every sink holds the copy.");
  AddPipelineFile(snapshot, &args->path);
  snapshot
      ->add_option("--tables", args->tables,
                   "tables to copy, schema.table or schema.* (default: all the pipeline's)")
      ->delimiter(',');
  snapshot->add_flag("--no-wait", args->no_wait, "return once the request is recorded");
  return {snapshot, [args] { return Snapshot(*args); }};
}

}  // namespace pgflow
