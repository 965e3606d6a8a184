#include "cli/pooler_command.h"

#include <csignal>

#include <atomic>
#include <memory>

#include "engine/admin_server.h"
#include "engine/log.h"
#include "engine/metrics.h"
#include "engine/stop_signal.h"
#include "pooler/pooler.h"

namespace pgflow {
namespace {

std::atomic<bool> reload_requested{false};

void OnHangup(int) { reload_requested.store(true); }

}  // namespace

int PoolerCommand(const std::string& config_path) {
  absl::StatusOr<pooler::PoolerConfig> config = pooler::LoadPoolerConfig(config_path);
  if (!config.ok()) {
    LogError("%s", config.status().message());
    return 2;
  }
  StopSignal stop;
  InstallStopSignalHandlers(&stop);
  struct sigaction action {};
  action.sa_handler = OnHangup;
  sigemptyset(&action.sa_mask);
  sigaction(SIGHUP, &action, nullptr);

  MetricsRegistry metrics;
  metrics.GetGauge("pgflow_build_info", "pgflow's version", {{"version", PGFLOW_VERSION}})->Set(1);
  std::unique_ptr<AdminServer> admin;
  if (!config->admin.listen.empty()) {
    admin = std::make_unique<AdminServer>(AdminServerOptions{config->admin.listen}, &metrics,
                                          nullptr);
    if (absl::Status s = admin->Start(); !s.ok()) {
      LogError("pooler: %s", s.message());
      return 1;
    }
    LogInfo("pooler: admin endpoint on port %d: /metrics /healthz", admin->port());
  }
  pooler::Pooler pooler(*std::move(config));
  if (absl::Status s = pooler.Start(&metrics); !s.ok()) {
    LogError("%s", s.message());
    return 1;
  }
  while (!stop.requested()) {
    if (pooler.WaitForShutdown(std::chrono::milliseconds(200))) break;
    if (reload_requested.exchange(false)) {
      if (absl::Status s = pooler.Reload(); !s.ok()) {
        LogError("pooler: reload failed, the running configuration stays: %s", s.message());
      }
    }
  }
  LogInfo("pooler: stopping");
  pooler.Stop();
  if (admin != nullptr) admin->Stop();
  return 0;
}

}  // namespace pgflow
