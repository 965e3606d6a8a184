#pragma once

// What a node does at each round of its loop, as a pure function of what it read from etcd and
// from its own server, so that every rule is tested without servers. The loop (cluster/node.h)
// carries the action out, then publishes its member key.
//
// Keys, under /pgflow/<cluster>/:
//   leader             the leader's name; held by the leader's lease (ttl), renewed every
//                      loop_wait
//   members/<name>     each node's JSON (role, state, conninfo, api, timeline, position), held
//                      by its lease
//   initialize         the cluster's system identifier, created once by the node that runs initdb
//   position           the last WAL position the leader published (maximum_lag_on_failover)
//   sync               with `synchronous`: the standby (comma-separated while it changes) that
//                      may hold commits the primary acknowledged
//   switchover         {"from": leader, "to": member or ""}, from `pgflow cluster switchover`
//
// The rules:
// - An empty data directory: under a leader, clone it; in a cluster not initialized, initialize
//   it (etcd's create-if-absent on `initialize` decides which node); otherwise wait.
// - The leader: renews; a key found held by another demotes at once; a stopped server is
//   started again as the primary; a server in recovery is promoted; a switchover steps down.
// - A follower: follows the leader; a server running as a primary under another node's lead is
//   stopped at once (fencing) and rewound; a stopped one is started as a standby.
// - Nobody leads: a running node may take the key only if it is within
//   maximum_lag_on_failover of the last position the leader published, no live member is on a
//   later timeline or further ahead (then first by name), and with `synchronous` it is the
//   synchronous standby (every one named in `sync` alive). etcd's create-if-absent decides
//   between racers. A node that may not says why, in a log line every round: never a silent
//   leaderless cluster.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cluster/node_config.h"

namespace pgflow::cluster {

// What the node's own server is now (cluster/local_server.h reads it).
struct ServerStatus {
  enum class State { kEmpty, kStopped, kRunning };
  State state = State::kEmpty;
  bool in_recovery = false;
  bool streaming = false;  // a standby's WAL receiver streams from a primary
  uint32_t timeline = 0;
  // A primary's WAL insert position; a standby's highest of received and replayed.
  uint64_t position = 0;
  uint64_t system_id = 0;
};

struct MemberView {
  std::string name;
  std::string role;   // "primary", "replica"
  std::string state;  // "running", "stopped", "empty"
  uint32_t timeline = 0;
  uint64_t position = 0;
};

struct ClusterView {
  std::optional<std::string> leader;  // the key's holder, if any
  bool initialized = false;           // `initialize` exists
  uint64_t last_position = 0;         // the leader's last published position
  std::vector<MemberView> members;    // live ones (their leases hold)
  std::vector<std::string> synchronous;  // `sync`
  // `config`'s synchronous: the cluster's setting, which every node follows (none before the
  // first leader wrote it from its file; `pgflow cluster set synchronous` changes it).
  std::optional<bool> synchronous_mode;
  // Why `config` exists and synchronous_mode is still unset ("" when it is set, or absent).
  std::string config_problem;
  // `sync_mode`: the mode the leader has applied ("on" once a standby is named synchronous,
  // "off" once the primary acknowledges alone), which elections follow; while a change is
  // being applied it is the one before.
  std::optional<bool> synchronous_applied;
  std::optional<std::string> switchover_to;  // "" for the best placed standby
  std::string switchover_from;               // the leader asked to hand the lead over

  const MemberView* Member(const std::string& name) const;
  // Whether the cluster is to be synchronous (`config`), or is as applied (`sync_mode`, the
  // one elections follow): `file_setting`, a node's own file, until etcd says.
  bool SynchronousAsked(bool file_setting) const {
    return synchronous_mode.value_or(file_setting);
  }
  bool SynchronousApplied(bool file_setting) const {
    return synchronous_applied.value_or(SynchronousAsked(file_setting));
  }
};

enum class Action {
  kWait,        // nothing to do this round (the reason says why)
  kInitialize,  // create `initialize`, initdb, start, then take the lead
  kClone,       // pg_basebackup from the leader, start as its standby
  kRenew,       // keep the lead
  kPromote,     // the lead is ours, the server is a standby: promote it
  kTakeLead,    // create `leader`, then promote
  kDemote,      // stop immediately (fencing), then rewind and follow
  kFollow,      // a standby of the leader (primary_conninfo)
  kStart,       // start the stopped server: the primary when the node leads, else a standby
                // (a stopped old primary started as one would take writes without the key)
  kStepDown,    // switchover: stop cleanly, give the key up
};

const char* ActionName(Action action);

struct Decision {
  Action action = Action::kWait;
  std::string reason;  // for the log: why this, or why nothing
};

Decision Decide(const NodeConfig& config, const ClusterView& cluster, const ServerStatus& server,
                bool holds_lead);

// Why this node may not take the lead now (empty: it may).
std::string Ineligible(const NodeConfig& config, const ClusterView& cluster,
                       const ServerStatus& server);

}  // namespace pgflow::cluster
