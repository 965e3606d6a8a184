#pragma once

// `pgflow node`: the agent beside one PostgreSQL server of a cluster. Each round (every
// loop_wait, sooner when the leader's lease is about to end) it renews its lease, reads the
// cluster's keys from etcd and its server's state, decides (cluster/ha_decision.h), acts, and
// publishes its member key; the leader also publishes its position and, with `synchronous`,
// keeps one synchronous standby (named in `sync` before PostgreSQL waits for it).
//
// Fencing: the leader's lease was renewed at the latest when its last successful renewal was
// sent, so etcd cannot end it sooner than ttl after that. A thread of the node's own kills the
// server (its whole process group) once ttl - retry_timeout has passed since then without a
// renewal: before another node can take the key, whatever the loop is doing (an etcd call that
// hangs, a partition). A node killed with -9 takes its server with it (cluster/local_server.h).
//
// The node's API (`api`, engine/admin_server.h's server): GET /primary (200 while this node
// leads with its server a primary), /replica (200 while it is a streaming standby; ?lag=N in
// bytes or with a unit: within N of the leader's last published position), /health (200 while
// the server runs), /status (the member's JSON), /metrics.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "cluster/etcd.h"
#include "cluster/ha_decision.h"
#include "cluster/local_server.h"
#include "cluster/node_config.h"
#include "engine/admin_server.h"
#include "engine/metrics.h"
#include "engine/stop_signal.h"
#include "nlohmann/json.hpp"

namespace pgflow::cluster {

// The key `name` of `cluster` ("/pgflow/main/leader").
std::string ClusterKey(std::string_view cluster, std::string_view name);

// The cluster's state from etcd, as the nodes and `pgflow cluster status` read it.
struct ClusterRead {
  ClusterView view;
  std::optional<int64_t> leader_lease;  // the leader key's lease
  // Every live member's published JSON, by name.
  std::map<std::string, nlohmann::json> members;
  // The members `pgflow cluster reinit` asked to clone the leader afresh (keys reinit/<name>).
  std::vector<std::string> reinit;
};
absl::StatusOr<ClusterRead> ReadCluster(Etcd& etcd, const std::string& cluster);

class Node {
 public:
  explicit Node(NodeConfig config);
  ~Node();  // stops the server (fast) and gives up the lead and the lease

  // Serves the API and runs rounds until `stop` is requested.
  absl::Status Run(const StopSignal& stop);

 private:
  // One round: how long to wait before the next.
  std::chrono::milliseconds Round();
  void RenewLease();
  void Act(const Decision& decision, const ServerStatus& status, const ClusterRead& cluster);
  void Initialize();
  void TakeLead(const ServerStatus& status);
  void StartServer(const ClusterRead& cluster);
  // pg_rewind from `primary`, then start as its standby; a rewind that fails sets the data
  // directory aside, for a clone.
  void RewindAndStart(const std::string& primary);
  // Starts the server as a standby of `primary` (empty: of none yet), counting failures.
  void StartStandby(const std::string& primary);
  // `pgflow cluster reinit` of this node: its data directory set aside, to be cloned anew.
  void Reinitialize(const ClusterRead& cluster);
  // How long until the fence would fire, less a margin (the longest a drain may take).
  std::chrono::milliseconds FenceMargin() const;
  // Whether the cluster is synchronous as applied (`sync_mode`) and `sync` names this node
  // alone.
  bool SoleSynchronous(const ClusterView& view) const;
  // How long a candidate waits, its position published, for the others' before it takes the
  // lead.
  static constexpr std::chrono::milliseconds kElectionWait{250};
  // While another node leads: reads the TTL of its lease, revokes it once it has ended (see
  // the .cc), and returns how long until the next round should look again.
  std::chrono::milliseconds WatchLeaderLease(int64_t lease);
  static constexpr std::chrono::milliseconds kLastSecondPoll{100};
  static constexpr std::chrono::milliseconds kLeaseEndMargin{50};
  static constexpr int kStandbyStartAttempts = 5;
  // How long a leader handing the lead over waits for open transactions to end.
  static constexpr std::chrono::milliseconds kSwitchoverDrain{5000};
  void FollowLeader(const ServerStatus& status, const ClusterRead& cluster);
  void StepDown();
  // The leader's round: the cluster's settings written to etcd if absent, and applied.
  void FollowSettings(const ClusterRead& cluster);
  void KeepSynchronous(const ClusterRead& cluster);
  // The leader's conninfo, from its member key ("" when it has none).
  std::string LeaderConninfo(const ClusterRead& cluster) const;
  void Publish(const ServerStatus& status);
  // Kills the server and drops the lead (the fence, and a lost key).
  void Fence(const std::string& why);
  void FenceLoop();
  void Collect();  // the metrics, from the last round
  std::optional<AdminPage> Page(std::string_view path, std::string_view query);
  std::string Key(std::string_view name) const { return ClusterKey(config_.cluster, name); }

  const NodeConfig config_;
  Etcd etcd_;
  LocalServer server_;
  int64_t lease_ = 0;
  std::chrono::steady_clock::time_point renewed_;  // when the last renewal that held was sent
  bool holds_lead_ = false;
  // Since when the server this node runs has not answered.
  std::optional<std::chrono::steady_clock::time_point> unanswered_since_;
  // Since when the standby, pointed at the leader, has not streamed from it.
  std::optional<std::chrono::steady_clock::time_point> not_streaming_since_;
  // Starts as a standby that failed in a row (its data cannot follow the leader: cloned anew
  // past kStandbyStartAttempts).
  int standby_start_failures_ = 0;
  std::string last_reason_;
  std::chrono::steady_clock::time_point last_reason_at_;
  uint64_t published_position_ = 0;
  bool election_published_ = false;
  // The standby made synchronous while `sync` was empty, and the primary's position when it
  // was seen synchronous: it is named once it has flushed that far.
  std::optional<std::pair<std::string, uint64_t>> sync_floor_;
  // The leader's lease first read with under a second left: when that reading was asked for
  // and answered (WatchLeaderLease).
  struct EndingLease {
    int64_t lease = 0;
    std::chrono::steady_clock::time_point asked, got;
  };
  std::optional<EndingLease> ending_lease_;
  // Whether this node saw the leader's lease end unrenewed, having watched its last second
  // (it revoked it, or found it gone: Round): the election that follows (until a leader is
  // known) waits for no rival's position.
  bool lease_ran_out_ = false;
  // The cluster's `synchronous` last warned of as differing from the file's.
  std::optional<bool> warned_synchronous_;
  bool warned_config_ = false;  // that the cluster's `config` cannot be read

  // The fence: the steady clock's nanoseconds past which the server is killed (0: not leading).
  std::atomic<int64_t> fence_at_{0};
  std::atomic<bool> fenced_{false};  // it fired: the loop drops the lead, then disarms it
  std::atomic<bool> fence_stop_{false};
  std::thread fence_thread_;

  // What the API answers with, as of the last round.
  mutable absl::Mutex mu_;
  ServerStatus status_ ABSL_GUARDED_BY(mu_);
  bool leading_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t leader_position_ ABSL_GUARDED_BY(mu_) = 0;
  nlohmann::json member_ ABSL_GUARDED_BY(mu_);

  MetricsRegistry metrics_;
  std::unique_ptr<AdminServer> api_;
};

}  // namespace pgflow::cluster
