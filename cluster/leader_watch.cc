#include "cluster/leader_watch.h"

#include <utility>

#include "cluster/etcd.h"
#include "cluster/node.h"
#include "engine/log.h"
#include "engine/str_cat.h"

namespace pgflow::cluster {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

LeaderWatch::LeaderWatch(std::string cluster, std::vector<std::string> etcd, Changed changed,
                         milliseconds interval)
    : cluster_(std::move(cluster)),
      etcd_(std::move(etcd)),
      changed_(std::move(changed)),
      interval_(interval),
      thread_([this] { Run(); }) {}

LeaderWatch::~LeaderWatch() {
  stop_.store(true);
  thread_.join();
}

void LeaderWatch::Run() {
  Etcd etcd(etcd_, milliseconds(2000));
  bool known = false;  // whether `followed` was ever told
  Topology followed;
  steady_clock::time_point warned;
  steady_clock::time_point retry_at;  // after a failed change
  std::string failure;                // the last one, said once
  while (!stop_.load()) {
    absl::StatusOr<ClusterRead> read = ReadCluster(etcd, cluster_);
    if (!read.ok()) {
      if (steady_clock::now() - warned > std::chrono::seconds(30)) {
        LogWarning("cluster %s: %s (following %s meanwhile)", cluster_, read.status().message(),
                   followed.leader.has_value() ? followed.leader->ToString()
                                               : std::string("no leader"));
        warned = steady_clock::now();
      }
    } else {
      Topology now;
      std::optional<ListenAddress>& leader = now.leader;
      std::string& why_none = now.why_none;
      why_none = "no leader";
      if (read->view.leader.has_value() && read->view.switchover_from == *read->view.leader) {
        why_none = Cat("a switchover from ", *read->view.leader, " is under way");
      } else if (read->view.leader.has_value()) {
        auto member = read->members.find(*read->view.leader);
        if (member != read->members.end() && member->second.value("role", "") != "primary") {
          // (Just elected and not promoted yet, or its server restarting: writes would fail.)
          why_none = Cat("its leader ", *read->view.leader, " does not run a primary yet");
        } else if (member != read->members.end()) {
          absl::StatusOr<ListenAddress> address =
              ParseListenAddress(member->second.value("address", ""));
          if (address.ok()) leader = *address;
        }
        // (A leader whose member key is not there yet: no leader yet.)
      }
      if (leader.has_value()) {
        for (const auto& [name, member] : read->members) {  // (by name: a std::map)
          if (name == *read->view.leader || member.value("role", "") != "replica" ||
              member.value("state", "") != "running" || !member.value("streaming", false)) {
            continue;
          }
          absl::StatusOr<ListenAddress> address =
              ParseListenAddress(member.value("address", ""));
          if (address.ok()) now.replicas.push_back(*address);
        }
      }
      const bool differs =
          !known || now.leader != followed.leader || now.replicas != followed.replicas;
      if (differs && steady_clock::now() >= retry_at) {
        if (absl::Status s = changed_(now); s.ok()) {
          known = true;
          followed = now;
          failure.clear();
        } else {
          // Tried again each second (a reload may mend it, a transient failure end).
          retry_at = steady_clock::now() + std::chrono::seconds(1);
          if (failure != s.message()) {
            failure = std::string(s.message());
            LogError("cluster %s: following %s: %s (tried again every second)", cluster_,
                     now.leader.has_value() ? now.leader->ToString() : now.why_none, failure);
          }
        }
      }
    }
    const auto next = steady_clock::now() + interval_;
    while (!stop_.load() && steady_clock::now() < next) {
      std::this_thread::sleep_for(std::min<steady_clock::duration>(milliseconds(20),
                                                                   next - steady_clock::now()));
    }
  }
}

}  // namespace pgflow::cluster
