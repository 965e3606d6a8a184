#pragma once

#include <string>
#include <string_view>

#include "cli/command.h"
#include "cli/pooler_status.h"

namespace pgflow {

// `pgflow pooler --config pooler.yaml`: runs the connection pooler until SIGINT/SIGTERM or
// the console's SHUTDOWN; SIGHUP reloads the configuration. Exit status 0, 1 on a failure to
// start, 2 on a configuration error.
int PoolerCommand(const std::string& config_path);

// `pgflow pooler status --config pooler.yaml [--json]`: the table (or JSON) of
// cli/pooler_status.h; its exit status, or 2 on a configuration error.
int PoolerStatusCommand(const std::string& config_path, const PoolerStatusOptions& options,
                        bool json);

// `pgflow validate pooler.yaml`: the pooler file (`yaml`, read from `path`), the users file and
// the TLS files it names, checked without touching a server. Prints every error (each at its
// file, line and column where it has one) and returns 2, or prints a summary and returns 0.
int ValidatePoolerFile(std::string_view yaml, const std::string& path);

// The subcommands `pgflow pooler` and `pgflow pooler status`; the Command runs whichever the
// command line chose.
Command AddPoolerCommand(CLI::App& app);

}  // namespace pgflow
