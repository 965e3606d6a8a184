#pragma once

// `pgflow validate [--source] file.yaml`: a pipeline file, or a pooler file (told apart by its
// keys, pooler::LooksLikePoolerConfig), checked without touching any server; with --source, a
// pipeline's transforms and sinks also checked against its source's tables
// (cli/preview_command.h). Prints every error and exits 2, or a summary and exits 0; 1 when
// the source cannot be read.

#include "cli/command.h"

namespace pgflow {

Command AddValidateCommand(CLI::App& app);

}  // namespace pgflow
