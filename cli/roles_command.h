#pragma once

// `pgflow roles pipeline.yaml [--grant-to ROLE]`: creates on each PostgreSQL target the roles
// the pipeline's objects need and gives its objects the source's owners, grants and default
// privileges (what `roles: copy` does as the pipeline runs). Exit status 0, 1 when a server
// refuses, 2 on a mistake in the file or a pipeline without a postgres sink.

#include "cli/command.h"

namespace pgflow {

Command AddRolesCommand(CLI::App& app);

}  // namespace pgflow
