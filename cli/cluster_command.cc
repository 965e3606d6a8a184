#include "cli/cluster_command.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cluster/etcd.h"
#include "cluster/node.h"
#include "cluster/node_config.h"
#include "engine/log.h"
#include "engine/stop_signal.h"
#include "engine/str_cat.h"

namespace pgflow {
namespace {

using cluster::ClusterRead;
using nlohmann::json;

struct ClusterArgs {
  std::string config;                // a node's file: its etcd and cluster
  std::vector<std::string> etcd;     // or these two
  std::string name;
  bool json = false;
  std::string to;                    // switchover
  std::string member;                // reinit
  std::string setting, value;        // set
};

int RunNode(const std::string& path) {
  if (::geteuid() == 0) {
    LogError("pgflow node runs PostgreSQL, which refuses to run as root: run it as the user "
             "that owns the data directory (runuser -u postgres -- pgflow node --config %s)",
             path);
    return kExitConfig;
  }
  absl::StatusOr<cluster::NodeConfig> config = cluster::LoadNodeConfig(path);
  if (!config.ok()) {
    LogError("%s", config.status().message());
    return kExitConfig;
  }
  StopSignal stop;
  InstallStopSignalHandlers(&stop);
  cluster::Node node(*std::move(config));
  if (absl::Status s = node.Run(stop); !s.ok()) {
    LogError("node: %s", s.message());
    return kExitFailure;
  }
  return kExitOk;
}

// The cluster --config (or --etcd and --cluster) names, read from etcd.
struct Opened {
  std::string name;
  std::unique_ptr<cluster::Etcd> etcd;
  ClusterRead read;
};

// The cluster, or the exit status to end with (the error said).
std::variant<Opened, int> Open(const ClusterArgs& args) {
  Opened opened;
  std::vector<std::string> endpoints;
  if (!args.config.empty()) {
    absl::StatusOr<cluster::NodeConfig> config = cluster::LoadNodeConfig(args.config);
    if (!config.ok()) {
      LogError("%s", config.status().message());
      return kExitConfig;
    }
    endpoints = config->etcd;
    opened.name = config->cluster;
  } else if (args.etcd.empty() || args.name.empty()) {
    LogError("pgflow cluster: give --config NODE.yaml, or --etcd URL and --cluster NAME");
    return kExitConfig;
  } else {
    endpoints = args.etcd;
    opened.name = args.name;
  }
  opened.etcd = std::make_unique<cluster::Etcd>(endpoints, std::chrono::seconds(3));
  absl::StatusOr<ClusterRead> read = cluster::ReadCluster(*opened.etcd, opened.name);
  if (!read.ok()) {
    LogError("%s", read.status().message());
    return kExitFailure;
  }
  opened.read = *std::move(read);
  return opened;
}

// Runs `command` on the cluster `args` name: the exit status.
int OnCluster(const ClusterArgs& args, int (*command)(const ClusterArgs&, Opened&)) {
  std::variant<Opened, int> opened = Open(args);
  if (const int* exit_status = std::get_if<int>(&opened)) return *exit_status;
  return command(args, std::get<Opened>(opened));
}

json StatusJson(const ClusterRead& read) {
  json members = json::array();
  uint64_t leader_position = read.view.last_position;
  if (read.view.leader.has_value()) {
    if (const cluster::MemberView* leader = read.view.Member(*read.view.leader)) {
      leader_position = std::max(leader_position, leader->position);
    }
  }
  for (const cluster::MemberView& member : read.view.members) {
    const json& published = read.members.at(member.name);
    const bool leads = read.view.leader == member.name;
    members.push_back({
        {"name", member.name},
        {"role", leads ? "primary" : member.role},
        {"state", member.state},
        {"url", published.value("address", "")},
        {"api", published.value("api", "")},
        {"timeline", member.timeline},
        {"lag_bytes", leads || member.position >= leader_position
                          ? 0
                          : leader_position - member.position},
        {"streaming", published.value("streaming", false)},
        {"synchronous", std::find(read.view.synchronous.begin(), read.view.synchronous.end(),
                                  member.name) != read.view.synchronous.end()},
    });
  }
  return {{"leader", read.view.leader.has_value() ? json(*read.view.leader) : json(nullptr)},
          {"synchronous", read.view.synchronous_mode.has_value()
                              ? json(*read.view.synchronous_mode)
                              : json(nullptr)},
          {"members", members}};
}

int Status(const ClusterArgs& args, Opened& cluster) {
  const std::string& name = cluster.name;
  const ClusterRead* read = &cluster.read;
  const json status = StatusJson(*read);
  if (args.json) {
    std::printf("%s\n", status.dump(2).c_str());
  } else {
    std::printf("cluster %s, leader %s, synchronous %s%s\n", name.c_str(),
                read->view.leader.has_value() ? read->view.leader->c_str() : "(none)",
                !read->view.synchronous_mode.has_value() ? "(not set yet)"
                : *read->view.synchronous_mode          ? "on"
                                                        : "off",
                read->view.synchronous_applied.has_value() &&
                        read->view.synchronous_mode.has_value() &&
                        *read->view.synchronous_applied != *read->view.synchronous_mode
                    ? " (being applied)"
                    : "");
    std::printf("%-12s %-8s %-8s %-22s %8s %12s %-9s %s\n", "MEMBER", "ROLE", "STATE",
                "ADDRESS", "TIMELINE", "LAG (BYTES)", "STREAMING", "SYNC");
    for (const json& m : status["members"]) {
      const bool primary = m["role"] == "primary";
      std::printf("%-12s %-8s %-8s %-22s %8d %12llu %-9s %s\n",
                  m["name"].get<std::string>().c_str(), m["role"].get<std::string>().c_str(),
                  m["state"].get<std::string>().c_str(), m["url"].get<std::string>().c_str(),
                  m["timeline"].get<int>(),
                  static_cast<unsigned long long>(m["lag_bytes"].get<uint64_t>()),
                  primary ? "-" : (m["streaming"].get<bool>() ? "yes" : "no"),
                  primary ? "-" : (m["synchronous"].get<bool>() ? "yes" : "no"));
    }
  }
  return read->view.leader.has_value() ? kExitOk : kExitFailure;
}

int Switchover(const ClusterArgs& args, Opened& cluster) {
  const std::string& name = cluster.name;
  cluster::Etcd& etcd = *cluster.etcd;
  const ClusterRead* read = &cluster.read;
  if (!read->view.leader.has_value()) {
    LogError("cluster %s has no leader to switch over from", name);
    return kExitFailure;
  }
  const std::string from = *read->view.leader;
  if (!args.to.empty()) {
    const cluster::MemberView* target = read->view.Member(args.to);
    if (target == nullptr || args.to == from || target->state != "running") {
      LogError("--to %s: not a running standby of cluster %s", args.to, name);
      return kExitConfig;
    }
    const std::vector<std::string>& sync = read->view.synchronous;
    if (!sync.empty() && std::find(sync.begin(), sync.end(), args.to) == sync.end()) {
      LogError("--to %s: cluster %s is synchronous and %s is not its synchronous standby (%s "
               "is): only that one holds every acknowledged commit",
               args.to, name, args.to, absl::StrJoin(sync, " or "));
      return kExitConfig;
    }
  }
  // The request ends by itself if nobody acts on it (a lease of a minute).
  absl::StatusOr<int64_t> lease = etcd.Grant(60);
  if (!lease.ok()) {
    LogError("%s", lease.status().message());
    return kExitFailure;
  }
  const json request = {{"from", from}, {"to", args.to}};
  if (absl::Status s = etcd.Put(cluster::ClusterKey(name, "switchover"), request.dump(), *lease);
      !s.ok()) {
    LogError("%s", s.message());
    return kExitFailure;
  }
  std::printf("switchover of cluster %s from %s asked; waiting for the new leader\n",
              name.c_str(), from.c_str());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    absl::StatusOr<ClusterRead> now = cluster::ReadCluster(etcd, name);
    if (now.ok() && now->view.leader.has_value() && *now->view.leader != from) {
      std::printf("%s leads cluster %s\n", now->view.leader->c_str(), name.c_str());
      return kExitOk;
    }
  }
  LogError("no new leader within 60 s (see the nodes' logs)");
  return kExitFailure;
}

// Whether `member` of `read` runs as a standby streaming from the leader.
bool Streams(const ClusterRead& read, const std::string& member) {
  auto it = read.members.find(member);
  return it != read.members.end() && it->second.value("role", "") == "replica" &&
         it->second.value("state", "") == "running" && it->second.value("streaming", false);
}

int Reinit(const ClusterArgs& args, Opened& cluster) {
  const std::string& name = cluster.name;
  cluster::Etcd& etcd = *cluster.etcd;
  const ClusterRead* read = &cluster.read;
  if (read->view.Member(args.member) == nullptr) {
    LogError("%s is no live member of cluster %s (`pgflow cluster status` lists them)",
             args.member, name);
    return kExitConfig;
  }
  if (read->view.leader == args.member) {
    LogError("%s leads cluster %s: `pgflow cluster switchover` first, then reinit it",
             args.member, name);
    return kExitConfig;
  }
  if (!read->view.leader.has_value()) {
    LogError("cluster %s has no leader to clone", name);
    return kExitFailure;
  }
  // The request ends by itself if the node does not act on it (a lease of a minute).
  absl::StatusOr<int64_t> lease = etcd.Grant(60);
  if (!lease.ok()) {
    LogError("%s", lease.status().message());
    return kExitFailure;
  }
  const std::string key = cluster::ClusterKey(name, Cat("reinit/", args.member));
  if (absl::Status s = etcd.Put(key, *read->view.leader, *lease); !s.ok()) {
    LogError("%s", s.message());
    return kExitFailure;
  }
  std::printf("reinit of %s asked: its data directory is set aside and %s cloned; waiting\n",
              args.member.c_str(), read->view.leader->c_str());
  // Taken up once the node has deleted the key (having published its member key without a
  // server); done once it streams again. A node that refused streams on: its log says why.
  using std::chrono::steady_clock;
  const auto deadline = steady_clock::now() + std::chrono::minutes(30);
  std::optional<steady_clock::time_point> taken_up;
  bool went_down = false;
  while (steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    absl::StatusOr<ClusterRead> now = cluster::ReadCluster(etcd, name);
    if (!now.ok()) continue;
    if (!taken_up.has_value()) {
      absl::StatusOr<std::optional<cluster::EtcdKeyValue>> request = etcd.Get(key);
      if (!request.ok() || request->has_value()) continue;
      taken_up = steady_clock::now();
    }
    if (!went_down) {
      went_down = !Streams(*now, args.member);
      if (!went_down && steady_clock::now() - *taken_up > std::chrono::seconds(10)) {
        LogError("%s went on streaming: its node did not reinit it (see its log)", args.member);
        return kExitFailure;
      }
      continue;
    }
    if (Streams(*now, args.member)) {
      std::printf("%s streams from %s again\n", args.member.c_str(),
                  now->view.leader.value_or("the leader").c_str());
      return kExitOk;
    }
  }
  LogError(taken_up.has_value() ? "%s did not stream again within 30 minutes (see its node's log)"
                                : "%s did not take the reinit up (is its node running?)",
           args.member);
  return kExitFailure;
}

int Set(const ClusterArgs& args, Opened& cluster) {
  const std::string& name = cluster.name;
  cluster::Etcd& etcd = *cluster.etcd;
  if (args.setting != "synchronous") {
    LogError("pgflow cluster set: '%s' is no cluster setting (synchronous)", args.setting);
    return kExitConfig;
  }
  const std::string value = absl::AsciiStrToLower(args.value);
  bool on;
  if (value == "on" || value == "true") {
    on = true;
  } else if (value == "off" || value == "false") {
    on = false;
  } else {
    LogError("pgflow cluster set synchronous: '%s' is neither on nor off", args.value);
    return kExitConfig;
  }
  if (!cluster.read.view.initialized) {
    LogError("cluster %s has never been initialized (no node of it ever ran): is the name "
             "right?", name);
    return kExitConfig;
  }
  // The other settings kept (unreadable ones replaced): written only over what was read, so a
  // node's first write of it or another `cluster set` meanwhile is read again, not lost.
  const std::string key = cluster::ClusterKey(name, "config");
  absl::StatusOr<bool> written = false;
  for (int attempt = 0; attempt < 10 && written.ok() && !*written; ++attempt) {
    absl::StatusOr<std::optional<cluster::EtcdKeyValue>> old = etcd.Get(key);
    if (!old.ok()) {
      written = old.status();
      break;
    }
    json config = json::object();
    if (old->has_value()) {
      config = json::parse((*old)->value, nullptr, /*allow_exceptions=*/false);
      if (!config.is_object()) config = json::object();
    }
    config["synchronous"] = on;
    written = old->has_value() ? etcd.Replace(key, (*old)->value, config.dump(), 0)
                               : etcd.Create(key, config.dump(), 0);
  }
  if (!written.ok() || !*written) {
    LogError("%s", written.ok() ? "the cluster's settings kept changing under the write: try again"
                                : std::string(written.status().message()));
    return kExitFailure;
  }
  std::printf("cluster %s: synchronous %s; waiting for the leader to apply it\n", name.c_str(),
              on ? "on" : "off");
  // Applied once the leader says so (`sync_mode`): on once a standby is named synchronous,
  // which takes it a few rounds; off once the primary acknowledges alone.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (std::chrono::steady_clock::now() < deadline) {
    absl::StatusOr<ClusterRead> now = cluster::ReadCluster(etcd, name);
    if (now.ok() && now->view.synchronous_applied == on) {
      if (on) {
        std::printf("commits wait for %s, the synchronous standby\n",
                    absl::StrJoin(now->view.synchronous, " and ").c_str());
      } else {
        std::printf("commits are acknowledged by the primary alone\n");
      }
      return kExitOk;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  LogError(on ? "no standby became synchronous within 90 s: does one stream from the leader "
                "(`pgflow cluster status`)? The setting stays; the leader applies it once one "
                "does"
              : "the leader did not apply it within 90 s (is one leading?); the setting stays");
  return kExitFailure;
}

int Remove(const ClusterArgs& args, Opened& cluster) {
  const std::string& name = cluster.name;
  cluster::Etcd& etcd = *cluster.etcd;
  const ClusterRead* read = &cluster.read;
  if (read->view.leader.has_value() || !read->view.members.empty()) {
    LogError("cluster %s still has live members (%s leads): stop every node first", name,
             read->view.leader.value_or("nobody"));
    return kExitFailure;
  }
  absl::StatusOr<int64_t> deleted = etcd.DeletePrefix(cluster::ClusterKey(name, ""));
  if (!deleted.ok()) {
    LogError("%s", deleted.status().message());
    return kExitFailure;
  }
  std::printf("cluster %s: %lld keys deleted; its next node initializes it anew\n", name.c_str(),
              static_cast<long long>(*deleted));
  return kExitOk;
}

}  // namespace

Command AddNodeCommand(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* node = AddCommand(
      app, "node", "Run the high-availability agent beside one PostgreSQL server",
      "The agent beside one PostgreSQL server of a cluster kept on etcd: the node holding the "
      "cluster's leader key (an etcd lease, renewed every loop_wait, ending after ttl) runs "
      "its server as the primary, the others as its streaming standbys; when "
      "the leader's lease ends the best placed standby takes it and is promoted. Initializes "
      "the cluster (initdb) or clones the leader (pg_basebackup) into an empty data directory; "
      "rewinds an old primary (pg_rewind). Serves /primary, /replica?lag=, /health, /status "
      "and /metrics on `api`. Runs as the user owning the data directory, not root; SIGINT or "
      "SIGTERM stops the server and gives the lead up.");
  node->add_option("--config", *path, "node file (YAML)")->required();
  return {node, [path] { return RunNode(*path); }};
}

Command AddClusterCommand(CLI::App& app) {
  auto args = std::make_shared<ClusterArgs>();
  CLI::App* cluster = AddCommand(
      app, "cluster", "A high-availability cluster: members, settings, switchovers",
      "A cluster of `pgflow node`s as etcd holds it: give any node's file (--config), or the "
      "etcd endpoints (--etcd) and the cluster's name (--cluster).");
  cluster->require_subcommand(1);
  auto add_target = [&](CLI::App* command) {
    command->add_option("--config", args->config, "a node's file (YAML): its etcd and cluster");
    command->add_option("--etcd", args->etcd, "etcd client urls (http://127.0.0.1:2379)")
        ->delimiter(',');
    command->add_option("--cluster", args->name, "the cluster's name");
  };
  CLI::App* status = AddCommand(
      *cluster, "status", "The members: role, state, timeline, lag, leader",
      "Each live member's role, state, address, timeline and lag behind the leader, like "
      "`patronictl list`. Exit status 0 when the cluster has a leader, 1 when it has none or "
      "etcd does not answer.");
  add_target(status);
  status->add_flag("--json", args->json,
                   "print {\"leader\", \"synchronous\", \"members\": [{\"name\", \"role\", "
                   "\"state\", \"url\", \"api\", \"timeline\", \"lag_bytes\", \"streaming\", "
                   "\"synchronous\"}]}");
  CLI::App* switchover = AddCommand(
      *cluster, "switchover", "Move the primary to another member on purpose",
      "The leader stops its server cleanly (every WAL record reaches the standbys), gives the "
      "lead up, and the target (--to, or the best placed standby) takes it and is promoted; "
      "the others follow it. Waits at most 60 s for the new leader.");
  add_target(switchover);
  switchover->add_option("--to", args->to, "the member to lead (default: the best placed)");
  CLI::App* remove = AddCommand(
      *cluster, "remove", "Delete a stopped cluster's keys from etcd",
      "Deletes every key of the cluster (its leader, members, `initialize`, positions), so that "
      "the next node started initializes a new cluster: for a cluster whose data is lost. "
      "Refused while any member is live.");
  add_target(remove);
  CLI::App* reinit = AddCommand(
      *cluster, "reinit", "Clone the leader afresh into a standby's data directory",
      "The member's node stops its server, moves its data directory aside (not deleted: "
      "<data_dir>.<time>) and clones the leader into a new one (pg_basebackup), then streams "
      "from it: for a standby whose data cannot follow the leader. Refused for the leader. "
      "Waits until the member streams again.");
  add_target(reinit);
  reinit->add_option("member", args->member, "the member to reinitialize")->required();
  CLI::App* set = AddCommand(
      *cluster, "set", "Change a cluster-wide setting (synchronous on|off)",
      "Writes the setting to etcd, where every node reads it (a node's file gives it only until "
      "the cluster's first leader has written it there): `synchronous on`, each commit waits "
      "for a standby, which alone may then lead (no acknowledged commit lost); `off`, the "
      "primary acknowledges alone. Waits until the leader has applied it.");
  add_target(set);
  set->add_option("setting", args->setting, "synchronous")->required();
  set->add_option("value", args->value, "on or off")->required();
  return {cluster, [args, status, switchover, reinit, remove, set] {
            if (*status) return OnCluster(*args, Status);
            if (*set) return OnCluster(*args, Set);
            if (*switchover) return OnCluster(*args, Switchover);
            if (*reinit) return OnCluster(*args, Reinit);
            if (*remove) return OnCluster(*args, Remove);
            return kExitConfig;
          }};
}

}  // namespace pgflow
