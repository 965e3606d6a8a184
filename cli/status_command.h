#pragma once

// `pgflow status pipeline.yaml [--json]`: how a pipeline stands, whether or not it runs. Reads
// the source's catalog (the replication slot, the recorded snapshot progress) and, when the
// pipeline has an admin endpoint that answers, the running process's /status (phase, lag per
// sink, last error).

#include <string>

#include <nlohmann/json.hpp>
#include "absl/status/statusor.h"

#include "cli/command.h"
#include "engine/config.h"

namespace pgflow {

// Exit statuses of `pgflow status`.
inline constexpr int kStatusHealthy = 0;
inline constexpr int kStatusDegraded = 1;     // stopped, not ready, behind past max_retained_wal
inline constexpr int kStatusUnreachable = 2;  // source unreachable, slot lost or missing

struct PipelineHealth {
  int exit_status = kStatusHealthy;
  nlohmann::json report;  // what --json prints
};

// Gathers the status of `config` (loaded from `file`).
PipelineHealth GatherStatus(const PipelineConfig& config, const std::string& file);

// The report as the table `pgflow status` prints.
std::string FormatStatus(const nlohmann::json& report);

// The subcommand: prints the table (or --json) and exits with the status above.
Command AddStatusCommand(CLI::App& app);

}  // namespace pgflow
