#pragma once

// `pgflow teardown pipeline.yaml`: removes what `init` (or `run`) left in a PostgreSQL source,
// then each PostgreSQL target's bookkeeping, and prints what it removed and what it kept.
// Exit status 0, 1 when the source cannot be reached or refuses, 2 on a mistake in the file.

#include "cli/command.h"

namespace pgflow {

Command AddTeardownCommand(CLI::App& app);

}  // namespace pgflow
