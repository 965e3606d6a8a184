#pragma once

// `pgflow options [--markdown]`: every key a pipeline file accepts, with its type, default and
// meaning (engine/config.h's OptionsReference); with --markdown the table
// docs/reference/pipeline-options.md carries. Exit status 0.

#include "cli/command.h"

namespace pgflow {

Command AddOptionsCommand(CLI::App& app);

}  // namespace pgflow
