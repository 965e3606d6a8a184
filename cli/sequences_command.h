#pragma once

// `pgflow sequences pipeline.yaml`: sets every sequence the pipeline's tables use on each
// PostgreSQL target to the source's current value (the step before a cutover). Exit status 0,
// 1 when a server refuses, 2 on a mistake in the file or a pipeline without a postgres sink.

#include "cli/command.h"

namespace pgflow {

Command AddSequencesCommand(CLI::App& app);

}  // namespace pgflow
