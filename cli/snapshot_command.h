#pragma once

// `pgflow snapshot pipeline.yaml [--tables a,b] [--no-wait]`: asks the running pipeline to copy
// tables into its sinks again (a backfill, sources/postgres/backfill.h), then follows the
// request until every sink holds the copy. Exit status 0 when done (or, with --no-wait,
// recorded), 1 when the backfill fails, 2 on a mistake in the file or --tables.

#include "cli/command.h"

namespace pgflow {

Command AddSnapshotCommand(CLI::App& app);

}  // namespace pgflow
