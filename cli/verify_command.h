#pragma once

// `pgflow verify pipeline.yaml [--tables a,b] [--ranges N] [--jobs N] [--live]`: compares the
// source with each PostgreSQL sink's target (sinks/postgres/verify.h) and prints, per sink, the
// ranges that differ and a summary; on a terminal a live line says where the comparison stands.
// With --live, while the pipeline runs, the source is read as of a point the pipeline holds its
// targets at (cutover/held_point.h). Exit status 0 only when everything matches, 1 when
// something differs or a server fails, 2 on a mistake in the file or a pipeline without a
// postgres sink.

#include <vector>

#include "cli/command.h"
#include "cli/pipeline_file.h"
#include "sinks/postgres/verify.h"

namespace pgflow {

Command AddVerifyCommand(CLI::App& app);

// What comparing `pipeline`'s source with its postgres sink `sink` over `tables` takes.
VerifyOptions VerifyOptionsFor(const PostgresPipeline& pipeline, const SinkConfig& sink,
                               const std::vector<TableRef>& tables);

}  // namespace pgflow
