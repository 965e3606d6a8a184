#pragma once

// `pgflow node --config node.yaml`: the high-availability agent beside one PostgreSQL server
// (cluster/node.h). `pgflow cluster status|switchover`: the cluster as etcd holds it.

#include "cli/command.h"

namespace pgflow {

Command AddNodeCommand(CLI::App& app);
Command AddClusterCommand(CLI::App& app);

}  // namespace pgflow
