#include "cluster/ha_decision.h"

#include <algorithm>

#include "absl/strings/str_join.h"
#include "engine/str_cat.h"

namespace pgflow::cluster {

using State = ServerStatus::State;

const MemberView* ClusterView::Member(const std::string& name) const {
  for (const MemberView& member : members) {
    if (member.name == name) return &member;
  }
  return nullptr;
}

const char* ActionName(Action action) {
  switch (action) {
    case Action::kWait: return "wait";
    case Action::kInitialize: return "initialize";
    case Action::kClone: return "clone";
    case Action::kRenew: return "renew";
    case Action::kPromote: return "promote";
    case Action::kTakeLead: return "take the lead";
    case Action::kDemote: return "demote";
    case Action::kFollow: return "follow";
    case Action::kStart: return "start";
    case Action::kStepDown: return "step down";
  }
  return "?";
}

std::string Ineligible(const NodeConfig& config, const ClusterView& cluster,
                       const ServerStatus& server) {
  if (server.state != State::kRunning) return "its server is not running";
  if (cluster.switchover_to.has_value() && !cluster.switchover_to->empty() &&
      *cluster.switchover_to != config.name) {
    return Cat("a switchover to ", *cluster.switchover_to, " is under way");
  }
  if (!cluster.switchover_from.empty() && cluster.switchover_from == config.name) {
    return "it is handing the lead over (a switchover)";
  }
  const bool synchronous = cluster.SynchronousApplied(config.synchronous);
  const bool named_synchronous =
      std::find(cluster.synchronous.begin(), cluster.synchronous.end(), config.name) !=
      cluster.synchronous.end();
  // (The synchronous standby holds every acknowledged commit, however far behind the last
  // position published: the lag guard is not its.)
  if (!(synchronous && named_synchronous) && config.maximum_lag_on_failover != 0 &&
      cluster.last_position > server.position &&
      cluster.last_position - server.position > config.maximum_lag_on_failover) {
    return Cat("it is ", cluster.last_position - server.position,
               " bytes behind the last position the primary published "
               "(maximum_lag_on_failover: ",
               config.maximum_lag_on_failover, ")");
  }
  if (synchronous) {
    // Only the synchronous standby holds every commit the primary acknowledged; while it
    // changes, `sync` names both and the further ahead of the two must lead.
    if (cluster.synchronous.empty()) {
      return "synchronous: no standby was synchronous, so none is known to hold every "
             "acknowledged commit";
    }
    for (const std::string& name : cluster.synchronous) {
      if (name == config.name) continue;
      const MemberView* other = cluster.Member(name);
      if (other == nullptr || other->state != "running") {
        return Cat("synchronous: ", name, ", also named synchronous, is not ",
                   other == nullptr ? "here" : "running", " to compare with");
      }
    }
    if (!named_synchronous) {
      return Cat("synchronous: the synchronous standby is ",
                 absl::StrJoin(cluster.synchronous, " or "), ", not this node");
    }
  }
  // A switchover's target does not yield to a rival as far ahead; with `synchronous` the
  // rivals are the others named in `sync` (an asynchronous standby further ahead holds nothing
  // acknowledged that the synchronous one lacks, and may never lead).
  const bool targeted = cluster.switchover_to == config.name;
  for (const MemberView& other : cluster.members) {
    if (other.name == config.name || other.state != "running") continue;
    // (The leader handing the lead over may not take it back: no rival unless further ahead,
    // which a clean stop leaves none of its standbys, or none would lead.)
    if (other.name == cluster.switchover_from && other.position <= server.position) continue;
    if (synchronous && std::find(cluster.synchronous.begin(), cluster.synchronous.end(),
                                 other.name) == cluster.synchronous.end()) {
      continue;
    }
    if (other.timeline > server.timeline) {
      return Cat(other.name, " is on a later timeline (", other.timeline, " > ", server.timeline,
                 ")");
    }
    if (other.timeline == server.timeline &&
        (other.position > server.position ||
         (other.position == server.position && other.name < config.name && !targeted))) {
      return Cat(other.name, other.position > server.position
                                 ? " is further ahead"
                                 : " is as far ahead and first by name");
    }
  }
  return "";
}

Decision Decide(const NodeConfig& config, const ClusterView& cluster, const ServerStatus& server,
                bool holds_lead) {
  if (server.state == State::kEmpty) {
    if (cluster.leader.has_value() && *cluster.leader != config.name) {
      return {Action::kClone, Cat("an empty data directory: cloning ", *cluster.leader)};
    }
    if (!cluster.initialized) return {Action::kInitialize, "the cluster has no server yet"};
    return {Action::kWait,
            "an empty data directory and no leader to clone (if the data of every member is "
            "lost, `pgflow cluster remove` deletes the cluster's keys so that it starts anew)"};
  }
  if (holds_lead) {
    if (cluster.leader != config.name) {
      return {Action::kDemote, cluster.leader.has_value()
                                   ? Cat("the leader key is ", *cluster.leader, "'s now")
                                   : std::string("the leader key is gone")};
    }
    if (server.state == State::kStopped) return {Action::kStart, "the leader's server is down"};
    if (cluster.switchover_to.has_value() && *cluster.switchover_to != config.name &&
        (cluster.switchover_from.empty() || cluster.switchover_from == config.name)) {
      return {Action::kStepDown,
              Cat("a switchover to ",
                  cluster.switchover_to->empty() ? std::string("the best standby")
                                                 : *cluster.switchover_to)};
    }
    if (server.in_recovery) return {Action::kPromote, "the lead is ours, the server a standby"};
    return {Action::kRenew, ""};
  }
  if (cluster.leader.has_value()) {
    if (*cluster.leader == config.name) {
      // (The key is ours but this process did not take it: a node restarted within the ttl.
      // It is not trusted: the lease it was held by is not ours to renew.)
      return {Action::kWait,
              "the leader key names this node from before: waiting for it to expire"};
    }
    if (server.state == State::kRunning && !server.in_recovery) {
      return {Action::kDemote, Cat(*cluster.leader, " leads: this primary must not take writes")};
    }
    if (server.state == State::kStopped) {
      return {Action::kStart, Cat("as a standby of ", *cluster.leader)};
    }
    return {Action::kFollow, *cluster.leader};
  }
  const std::string why_not = Ineligible(config, cluster, server);
  if (why_not.empty()) return {Action::kTakeLead, "no leader, and this node is the best placed"};
  if (server.state == State::kStopped) return {Action::kStart, "as a standby (no leader)"};
  return {Action::kWait, Cat("no leader, and this node may not take the lead: ", why_not)};
}

}  // namespace pgflow::cluster
