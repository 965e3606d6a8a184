#include "cli/pooler_command.h"

#include <csignal>

#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cluster/leader_watch.h"
#include "common/postgres/conninfo.h"
#include "engine/admin_server.h"
#include "engine/log.h"
#include "engine/metrics.h"
#include "engine/stop_signal.h"
#include "pooler/pooler.h"
#include "pooler/tls.h"
#include "proxy/router.h"

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

// What the leader watches last saw, per database, for the web console's cluster section.
class ClusterViews {
 public:
  void Set(const std::string& database, const std::string& cluster,
           const cluster::LeaderWatch::Topology& now) {
    nlohmann::json view = {{"database", database},
                           {"cluster", cluster},
                           {"leader", now.leader ? nlohmann::json(now.leader->ToString())
                                                 : nlohmann::json(nullptr)},
                           {"why_none", now.why_none},
                           {"replicas", nlohmann::json::array()},
                           {"since", absl::FormatTime(absl::Now(), absl::UTCTimeZone())}};
    for (const ListenAddress& replica : now.replicas) {
      view["replicas"].push_back(replica.ToString());
    }
    absl::MutexLock lock(&mu_);
    views_[database] = std::move(view);
  }
  nlohmann::json Json() {
    nlohmann::json out = nlohmann::json::array();
    absl::MutexLock lock(&mu_);
    for (const auto& [database, view] : views_) out.push_back(view);
    return out;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, nlohmann::json> views_ ABSL_GUARDED_BY(mu_);
};

// A leader watch for each database that follows a cluster: while the cluster has no leader the
// database is paused (clients wait); once one leads, it is pointed at its server and resumed.
// (A database a RELOAD adds or changes is followed from the next start.) Each change is noted
// in `views`.
std::vector<std::unique_ptr<cluster::LeaderWatch>> FollowClusters(
    pooler::Pooler& pooler, const std::map<std::string, pooler::DatabaseOptions>& databases,
    const std::shared_ptr<ClusterViews>& views) {
  std::vector<std::unique_ptr<cluster::LeaderWatch>> watches;
  for (const auto& [name, db] : databases) {
    if (db.cluster.etcd.empty()) continue;
    auto changed = [&pooler, name = name, url = db.url, cluster = db.cluster.name,
                    reads = db.cluster.replicas,
                    views](const cluster::LeaderWatch::Topology& now) {
      views->Set(name, cluster, now);
      const std::optional<ListenAddress>& leader = now.leader;
      if (!leader.has_value()) {
        LogWarning("pooler: cluster %s: %s: database %s paused until a leader is known",
                   cluster, now.why_none, name);
        pooler.Hold(name);
        return absl::OkStatus();
      }
      absl::StatusOr<std::string> moved = WithHost(url, leader->host, leader->port);
      std::vector<std::string> replicas;
      for (const ListenAddress& replica : now.replicas) {
        absl::StatusOr<std::string> at = WithHost(url, replica.host, replica.port);
        if (at.ok()) replicas.push_back(*at);
      }
      absl::Status s = !moved.ok() ? moved.status()
                       : reads     ? pooler.Retarget(name, *moved, replicas)
                                   : pooler.Retarget(name, *moved);
      if (!s.ok()) {
        return absl::Status(s.code(), absl::StrCat("database ", name, ": ", s.message()));
      }
      LogInfo("pooler: database %s follows cluster %s's leader at %s", name, cluster,
              leader->ToString());
      pooler.Release(name);
      return absl::OkStatus();
    };
    watches.push_back(std::make_unique<cluster::LeaderWatch>(db.cluster.name, db.cluster.etcd,
                                                             std::move(changed)));
  }
  return watches;
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
  const std::string admin_listen = config->admin.listen;
  auto cluster_views = std::make_shared<ClusterViews>();
  proxy::ProxyRouterFactory routers;  // (databases that list replicas)
  const std::map<std::string, pooler::DatabaseOptions> pooler_databases = config->databases;
  pooler::Pooler pooler(*std::move(config), &routers);
  if (absl::Status s = pooler.Start(&metrics); !s.ok()) {
    LogError("%s", s.message());
    return 1;
  }
  // After the pooler, so that it is stopped first: its console reads the pooler.
  std::unique_ptr<AdminServer> admin;
  if (!admin_listen.empty()) {
    AdminServerOptions admin_options{admin_listen};
    admin_options.console = pooler.Console();
    admin_options.console->state = [state = admin_options.console->state,
                                    cluster_views](const std::string& user) {
      nlohmann::json out = state(user);
      out["clusters"] = cluster_views->Json();
      return out;
    };
    admin = std::make_unique<AdminServer>(std::move(admin_options), &metrics, nullptr);
    if (absl::Status s = admin->Start(); !s.ok()) {
      LogError("pooler: %s", s.message());
      return 1;
    }
    LogInfo("pooler: admin endpoint on port %d: the web console on /, /metrics /healthz",
            admin->port());
  }
  std::vector<std::unique_ptr<cluster::LeaderWatch>> leader_watches =
      FollowClusters(pooler, pooler_databases, cluster_views);
  while (!stop.requested()) {
    if (pooler.WaitForShutdown(std::chrono::milliseconds(200))) break;
    if (reload_requested.exchange(false)) {
      if (absl::Status s = pooler.Reload(); !s.ok()) {
        LogError("pooler: reload failed, the running configuration stays: %s", s.message());
      }
    }
  }
  LogInfo("pooler: stopping");
  leader_watches.clear();
  pooler.InterruptConsole();
  if (admin != nullptr) admin->Stop();
  pooler.Stop();
  return 0;
}

namespace {

struct PoolerArgs {
  std::string path;
  std::string status_path;
  PoolerStatusOptions status_options;
  bool status_json = false;
};

// `pgflow pooler status`, declared on `pooler`.
CLI::App* AddPoolerStatus(CLI::App* pooler, PoolerArgs* args) {
  CLI::App* status = AddCommand(
      *pooler, "status", "How a running pooler stands: clients, servers, rates per database",
      "How a running pooler stands, asked of its admin console (database pgflow, on its "
      "Unix socket if it has one, else on `listen`) as the first of admin.users: up or "
      "not, and per database clients (active/waiting/idle), server connections "
      "(active/idle), paused, transactions and queries a second, the longest wait, a "
      "server it cannot reach. The console user's password comes from the users file, "
      "else PGPASSWORD or ~/.pgpass. Takes about a second (rates). Exit status 0 healthy, "
      "1 a database cannot reach its server, 2 the pooler does not answer or refuses the "
      "console.");
  status->add_option("--config", args->status_path, "pooler file (YAML)")->required();
  status->add_option("--user", args->status_options.user,
                     "the console's user (default: the first of admin.users)");
  status->add_flag("--json", args->status_json, "print the status as one JSON object, for scripts");
  return status;
}

}  // namespace

Command AddPoolerCommand(CLI::App& app) {
  auto args = std::make_shared<PoolerArgs>();
  CLI::App* pooler =
      AddCommand(app, "pooler", "Run the PostgreSQL connection pooler",
                 "Run the PostgreSQL connection pooler: clients connect to it as to PostgreSQL and "
                 "share a few server connections (session, transaction or statement pooling, "
                 "prepared statements in transaction mode, waits through a server restart). SIGHUP "
                 "or the console's RELOAD re-reads the file; SIGINT/SIGTERM or SHUTDOWN stop it. "
                 "Paths in the file are relative to its directory. With admin.listen it serves "
                 "/metrics and a web console on / for admin.users (pools, PAUSE, RESUME, bans, "
                 "databases added to or removed from the file).");
  pooler->add_option("--config", args->path, "pooler file (YAML): listen, auth, databases");
  CLI::App* status = AddPoolerStatus(pooler, args.get());
  return {pooler, [args, status] {
            if (*status) {
              return PoolerStatusCommand(args->status_path, args->status_options,
                                         args->status_json);
            }
            if (args->path.empty()) {
              std::fprintf(stderr, "pgflow pooler: --config is required (pgflow pooler --help)\n");
              return kExitConfig;
            }
            return PoolerCommand(args->path);
          }};
}

}  // namespace pgflow
