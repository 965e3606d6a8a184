#pragma once

// `pgflow pooler status --config pooler.yaml [--json]`: how a running pooler stands, asked of
// its admin console (the virtual database `pgflow`, on the pooler's Unix socket when it has
// one, else on its listen address), as the first of admin.users or --user: whether it
// answers, and per database its clients (active, waiting, idle), its server connections
// (active, idle, logging in), whether it is paused, transactions and queries a second (two
// SHOW STATS a sample apart), the longest a client has waited for a server connection, and a
// server it cannot reach.
//
// The console user's password is the users file's when it holds one in plain; else libpq's
// own sources (PGPASSWORD, ~/.pgpass).

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "pooler/pooler_config.h"

namespace pgflow {

struct PoolerStatusOptions {
  std::string user;                        // the console's user; empty: admin.users' first
  std::chrono::milliseconds sample{1000};  // between the two SHOW STATS rates come from
};

struct PoolerHealth {
  // As `pgflow status`'s (cli/status_command.h): kStatusHealthy; kStatusDegraded when a pool
  // cannot reach its server (its last attempt to open a connection failed); kStatusUnreachable
  // when the console does not answer or refuses the login.
  int exit_status = 0;
  nlohmann::json report;  // what --json prints
};

// Asks the pooler `config` describes (read from `file`) how it stands.
PoolerHealth GatherPoolerStatus(const pooler::PoolerConfig& config, const std::string& file,
                                const PoolerStatusOptions& options);

// The report as the table `pgflow pooler status` prints.
std::string FormatPoolerStatus(const nlohmann::json& report);

}  // namespace pgflow
