#pragma once

// The pipeline file as the commands load it: errors are logged, and the command exits with
// kExitConfig (cli/command.h).

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/postgres/table_ref.h"
#include "engine/config.h"
#include "sinks/postgres/postgres_sink.h"
#include "sources/postgres/postgres_source_config.h"

namespace pgflow {

// A migration's pipeline files: the one the user wrote (migrate.yaml) and the one each
// `pgflow cutover` writes beside it for the stream back (migrate.cutover-1.yaml, then -2, ...).
// The file `<stem>.current` (migrate.current), written by the cutover at the switch, names the
// one that runs now: `pgflow run`, `status` and `cutover`, given any file of the family, work
// on that one, so that a restart goes on with the stream back.
struct PipelineFile {
  std::string path;
  int generation = 0;  // 0: the user's; N: written by the Nth cutover
};
// The file of `path`'s family that runs now: `path` itself unless `<stem>.current` names
// another file of the family that exists.
PipelineFile CurrentPipelineFile(const std::string& path);
// The file the next cutover of `file` writes: <stem>.cutover-<generation + 1>.<ext>.
PipelineFile NextPipelineFile(const PipelineFile& file);
// The files of `current`'s family before it that exist (generations 0 .. current's - 1).
std::vector<PipelineFile> EarlierPipelineFiles(const PipelineFile& current);
// Makes `file` the one that runs now (writes `<stem>.current` in one rename).
absl::Status MarkCurrent(const PipelineFile& file);

// The pipeline file at `path`, or nullopt after logging why it cannot be used.
std::optional<PipelineConfig> LoadOrReport(const std::string& path);

// The pipeline file of a command that works on a PostgreSQL source (init, teardown, snapshot,
// verify, sequences, roles), with its source's options.
struct PostgresPipeline {
  PipelineConfig config;
  std::shared_ptr<const PostgresSourceOptions> source;
};
// Nullopt after logging why it cannot be used: a mistake in the file, or a source of another
// type (the message names `pgflow <command>`).
std::optional<PostgresPipeline> LoadPostgresPipeline(const std::string& path,
                                                     std::string_view command);

// --tables values ("schema.table" or "schema.*", quoted names as in the pipeline file) that the
// pipeline follows; logs and returns false on a malformed or foreign name.
bool ParseTableArgs(const std::vector<std::string>& args, const PostgresPipeline& pipeline,
                    std::vector<TableRef>* tables);

// Loads the pipeline file at `path` and prints on stdout what `command` makes of it: kExitOk.
// A mistake in the file is printed on stderr (kExitConfig); an error of `command` too, after
// the path: kExitConfig when `is_usage_error` says it is a mistake in what was asked, else
// kExitFailure.
int PrintFromPipeline(
    const std::string& path,
    const std::function<absl::StatusOr<std::string>(const PipelineConfig&)>& command,
    const std::function<bool(const absl::Status&)>& is_usage_error);

// Runs `apply` on each PostgreSQL sink of the pipeline at `path` (for `pgflow <command>`),
// stopping at the first that fails (logged). The exit status: kExitConfig when the file cannot
// be used or has no postgres sink.
int ForEachTarget(
    const std::string& path, std::string_view command,
    const std::function<absl::Status(const PipelineConfig&, const PostgresSinkOptions&)>& apply);

}  // namespace pgflow
