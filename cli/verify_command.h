#pragma once

// `pgflow verify pipeline.yaml [--tables a,b] [--ranges N] [--jobs N]`: compares the source
// with each PostgreSQL sink's target (sinks/postgres/verify.h) and prints, per sink, the ranges
// that differ and a summary; on a terminal a live line says where the comparison stands. Exit
// status 0 only when everything matches, 1 when something differs or a server fails, 2 on a
// mistake in the file or a pipeline without a postgres sink.

#include "cli/command.h"

namespace pgflow {

Command AddVerifyCommand(CLI::App& app);

}  // namespace pgflow
