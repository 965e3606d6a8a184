#pragma once

// What the kernel lets one pooler process hold, against what its file asks for: checked at
// start (and logged, naming each setting and how to raise it) so that a pooler configured for
// tens of thousands of clients does not find out at the 1,025th. docs/guides/pooler.md, "Many
// clients".

#include <cstdint>
#include <string>
#include <vector>

#include "pooler/pooler_config.h"

namespace pgflow::pooler {

struct KernelLimits {
  uint64_t open_files = 0;      // RLIMIT_NOFILE's soft limit (after raising it to the hard one)
  uint64_t open_files_hard = 0;
  // net.core.somaxconn: a listener's backlog at most (0: unknown). (Not tcp_max_syn_backlog:
  // past it, SYN cookies take over, on by default.)
  int somaxconn = 0;
};

// Descriptors the pooler may need at once for `config`: a client each (max_client_conn; three
// each when it takes TLS clients, all counted as TLS ones), the
// server connections of every pool (pool_size and reserve_pool per database; a database
// without a user of its own counts once), its listeners and a margin.
uint64_t DescriptorsNeeded(const PoolerConfig& config);

// What is too low for `config`, one sentence each naming the setting, its value, what it
// should be and how to raise it; empty when nothing is.
std::vector<std::string> KernelLimitProblems(const PoolerConfig& config,
                                             const KernelLimits& limits);

// Whether net.ipv4.tcp_migrate_req is on: a listener that closes hands the connections queued
// on it to another listener of its SO_REUSEPORT group instead of resetting them (a fleet's
// rolling replacement drops no connection). True when unknown.
bool MigratesQueuedConnections();

// This process's and this machine's limits, raising the soft RLIMIT_NOFILE to the hard one
// when it is below what `config` needs.
KernelLimits ReadKernelLimits(const PoolerConfig& config);

}  // namespace pgflow::pooler
