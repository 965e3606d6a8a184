#include "cli/pooler_command.h"

#include <csignal>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/admin_server.h"
#include "engine/log.h"
#include "engine/metrics.h"
#include "engine/stop_signal.h"
#include "pooler/pooler.h"
#include "pooler/tls.h"

namespace pgflow {
namespace {

std::atomic<bool> reload_requested{false};

void OnHangup(int) { reload_requested.store(true); }

// The TLS files the pooler loads when it starts (tls.*) or connects to a server (a url's
// sslrootcert, sslcert, sslkey, sslcrl, sslcrldir), each loaded now: what fails to.
std::vector<std::string> TlsFileErrors(const pooler::PoolerConfig& config) {
  std::vector<std::string> errors;
  if (config.tls.mode != pooler::TlsMode::kDisable) {
    if (auto context = pooler::MakeServerTlsContext(config.tls); !context.ok()) {
      errors.push_back(std::string(context.status().message()));
    }
  }
  for (const auto& [name, db] : config.databases) {
    if (db.upstream.sslmode == pooler::TlsMode::kDisable) continue;
    if (auto context = pooler::MakeClientTlsContext(db.upstream); !context.ok()) {
      errors.push_back(absl::StrCat("databases.", name, ".url: ", context.status().message()));
    }
  }
  return errors;
}

}  // namespace

int ValidatePoolerFile(std::string_view yaml, const std::string& path) {
  absl::StatusOr<pooler::PoolerConfig> config = pooler::ParsePoolerConfig(yaml, path);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  std::vector<std::string> errors = TlsFileErrors(*config);
  for (const std::string& error : errors)
    std::fprintf(stderr, "%s: %s\n", path.c_str(), error.c_str());
  if (!errors.empty()) return 2;
  std::vector<std::string> names;
  for (const auto& [name, db] : config->databases) names.push_back(name);
  const size_t users = config->auth.user_list == nullptr ? 0 : config->auth.user_list->size();
  std::printf("%s: ok: pooler on %s, databases %s, %zu user%s in the users file\n", path.c_str(),
              config->listen.c_str(), absl::StrJoin(names, ", ").c_str(), users,
              users == 1 ? "" : "s");
  return 0;
}

int PoolerStatusCommand(const std::string& config_path, const PoolerStatusOptions& options,
                        bool json) {
  absl::StatusOr<pooler::PoolerConfig> config = pooler::LoadPoolerConfig(config_path);
  if (!config.ok()) {
    LogError("%s", config.status().message());
    return 2;
  }
  PoolerHealth health = GatherPoolerStatus(*config, config_path, options);
  if (json) {
    std::printf("%s\n", health.report.dump(2).c_str());
  } else {
    std::printf("%s", FormatPoolerStatus(health.report).c_str());
  }
  return health.exit_status;
}

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
