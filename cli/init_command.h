#pragma once

// `pgflow init pipeline.yaml [--grant-to ROLE] [--print-sql]`: what `pgflow run` would create
// in a PostgreSQL source before streaming (the pgflow schema, the DDL capture, the publication,
// the replication slot), created now; with --grant-to, and the privileges that role needs to
// run the pipeline granted; with --print-sql, those grants printed for a DBA instead, and each
// PostgreSQL target's. Exit status 0, 1 when a server refuses, 2 on a mistake in the file.

#include "cli/command.h"

namespace pgflow {

Command AddInitCommand(CLI::App& app);

}  // namespace pgflow
