#pragma once

#include <string>

namespace pgflow {

// `pgflow pooler --config pooler.yaml`: runs the connection pooler until SIGINT/SIGTERM or
// the console's SHUTDOWN; SIGHUP reloads the configuration. Exit status 0, 1 on a failure to
// start, 2 on a configuration error.
int PoolerCommand(const std::string& config_path);

}  // namespace pgflow
