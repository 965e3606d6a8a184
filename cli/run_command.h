#pragma once

// `pgflow run pipeline.yaml [--progress SECONDS] [--until LSN]`: runs the pipeline until
// SIGINT/SIGTERM (engine/runner.h). Exit status 0 when stopped, 1 when the run failed, 2 on a
// mistake in the command line or the file, or a pipeline that does not fit its source.

#include "cli/command.h"

namespace pgflow {

Command AddRunCommand(CLI::App& app);

}  // namespace pgflow
