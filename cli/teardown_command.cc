#include "cli/teardown_command.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "cli/pipeline_file.h"
#include "common/postgres/conninfo.h"
#include "common/postgres/pg_connection.h"
#include "engine/log.h"
#include "sources/postgres/ddl_capture.h"

namespace pgflow {
namespace {

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

int TeardownPipeline(const std::string& path) {
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

}  // namespace

Command AddTeardownCommand(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* teardown = AddCommand(
      app, "teardown", "Remove what a pipeline installed in the source and its targets",
      "Remove what a pipeline installed in the source: its replication slot (so no WAL "
      "stays pinned), its publication and its state, the REPLICA IDENTITY FULL it set on "
      "keyless tables; the DDL capture and the pgflow schema too when no other pipeline "
      "uses them. Then each PostgreSQL target's pgflow schema (the applied position, "
      "pending DDL), unless it holds refused rows or more. Prints what it removed and, "
      "with the command that removes it, what it kept. Refuses while the pipeline runs. "
      "Idempotent.");
  AddPipelineFile(teardown, path.get());
  return {teardown, [path] { return TeardownPipeline(*path); }};
}

}  // namespace pgflow
