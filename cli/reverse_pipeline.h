#pragma once

// The stream back of a cutover: once the application writes to the migration's target (B), a
// pipeline from B to the old source (A) keeps A current, so that going back is a second
// cutover. Its file is written beside the forward one (cli/pipeline_file.h: migrate.yaml's
// first is migrate.cutover-1.yaml) from the forward file as written, `${VAR}`s and all:
//
//   pipeline  <name>_cutover_<N> (the base name without an earlier `_cutover_<N>`)
//   source    postgres: the forward source's keys, with the target's url, the default slot and
//             publication of the new name, and `snapshot: {mode: never}` (A holds the rows)
//   sinks     the forward postgres sink's name: {postgres: {url: A, create_tables: false,
//             roles: skip}} and its flush_interval; the other sinks are left out
//   the rest  admin, buffer: as they were
//
// A pipeline that renames on the way (transforms, a sink schema) has no exact way back.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/pipeline_file.h"

namespace pgflow {

struct ReversePipeline {
  PipelineFile file;
  std::string name;                   // its pipeline name
  std::vector<std::string> left_out;  // the forward sinks the stream back does not feed
};

// What the stream back of `forward` (loaded from `forward_file`) through its postgres sink
// `sink` would be, without writing it: FailedPrecondition naming why there can be none.
absl::StatusOr<ReversePipeline> PlanReversePipeline(const PipelineFile& forward_file,
                                                    const PipelineConfig& forward,
                                                    const std::string& sink);

// Writes the file `reverse.file` (mode 0600: it may hold passwords, as the forward file does).
absl::Status WriteReversePipeline(const PipelineFile& forward_file, const std::string& sink,
                                  const ReversePipeline& reverse);

}  // namespace pgflow
