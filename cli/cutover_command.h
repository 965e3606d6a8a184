#pragma once

// `pgflow cutover pipeline.yaml --pooler URL --database NAME`: moves the application that
// connects through `pgflow pooler` from the pipeline's source to its PostgreSQL target
// (cutover/cutover.h). Exit status 0 once switched (or, with --dry-run, when every check
// passes), 1 when refused or abandoned (nothing changed, or everything undone), 3 when it
// could not finish or undo (the message says what to do), 2 on a mistake in the command line
// or the file.

#include "cli/command.h"

namespace pgflow {

Command AddCutoverCommand(CLI::App& app);

}  // namespace pgflow
