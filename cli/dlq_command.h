#pragma once

// `pgflow dlq list|show|replay|purge pipeline.yaml [--sink NAME] [--id N]...`: the events the
// pipeline's sinks set aside (engine/dead_letter.h).
//
//   list    one line per record: id, sink, when, position, table, operation, key, code, reason
//   show    each record whole, as indented JSON (the event, its table version, the reason)
//   replay  sends each record's event to its sink again (built from the pipeline file, as the
//           pipeline would, but applying by key: a PostgreSQL target upserts or deletes the
//           row, an OpenSearch index takes it under its original version, so a newer document
//           is left alone); a record whose event is now accepted is removed, one not delivered
//           (refused again, or the sink unreachable) stays, with the new reason printed, and the command fails
//   purge   removes records (those named by --id, or with --all every one of the sinks chosen)
//
// Records are chosen by --sink (every sink with `dead_letter:` when absent) and --id.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include "absl/status/statusor.h"
#include "cli/command.h"
#include "engine/config.h"

namespace pgflow {

struct DlqRequest {
  std::string action;  // list, show, replay, purge
  std::string sink;    // empty: every sink with a dead-letter path
  std::vector<uint64_t> ids;  // empty: every record
  bool all = false;    // purge: required when no id is given
};

// Every record of the pipeline's sinks, oldest first per sink, as the JSON objects `show`
// prints (the web console's list); an empty array when no sink has `dead_letter:`.
absl::StatusOr<nlohmann::json> DeadLettersJson(const PipelineConfig& config);

// What the command prints on success; an error names the sink, the record and the reason.
absl::StatusOr<std::string> RunDlq(const PipelineConfig& config, const DlqRequest& request);

// The subcommand: prints what RunDlq returns; exit status 0, 1 when a record was not delivered
// or a store failed, 2 on a mistake in the file or the request.
Command AddDlqCommand(CLI::App& app);

}  // namespace pgflow
