#pragma once

// What a pipeline's transforms make of real rows, without running it.
//
// `pgflow preview pipeline.yaml --table public.customers [--limit 10] [--sink NAME]` reads the
// first rows of a source table (as the snapshot would: the type's text output) and prints
// each beside what the pipeline's transforms, and the sink's own when --sink names one, hand
// on: columns masked, set, cast, renamed, dropped or added, rows filtered out or multiplied.
//
// `pgflow validate --source pipeline.yaml` also runs every table the pipeline follows through
// every sink's chain (the pipeline's transforms, then the sink's) against the live catalog,
// with the table's first row (or a row of NULLs when it is empty), so that a transform naming a
// column the table lacks, a rule of the wrong type or a strict mask missing a column is found
// before the pipeline starts.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/command.h"
#include "engine/config.h"

namespace pgflow {

// The subcommand: prints PreviewTable's preview; exit status 0, 1 when the source cannot be
// read, 2 on a mistake in the file or --table.
Command AddPreviewCommand(CLI::App& app);

// The preview as printed: one block per source row.
absl::StatusOr<std::string> PreviewTable(const PipelineConfig& config, const std::string& table,
                                         int limit, const std::string& sink);

// The problems found (each naming the table and the sink); empty when there are none.
// An error when the source cannot be read.
// `before_run`: for `pgflow run` before it starts, where a followed schema without tables yet is
// fine (its tables are followed once created).
// `warnings`, when given, gets what may be worth changing but works (a join of `documents:`
// without an index).
absl::StatusOr<std::vector<std::string>> ValidateAgainstSource(
    const PipelineConfig& config, bool before_run = false,
    std::vector<std::string>* warnings = nullptr);

}  // namespace pgflow
