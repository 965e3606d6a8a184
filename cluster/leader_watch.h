#pragma once

// Follows a cluster's leader for what stands in front of its servers (`pgflow pooler`'s
// database entries with `cluster:`): a thread of its own reads the cluster's keys every
// `interval` and calls `changed` with the leader's server (its member key's address) each time
// it changes, and with nullopt and why when there is none to send to: the cluster has no
// leader, its leader does not run a primary (not promoted yet, its server restarting), or it
// is handing the lead over (a switchover: whoever follows pauses until the new leader is
// known, instead of sending transactions to a server about to stop). While
// etcd does not answer, nothing changes (the last leader stays the one followed) and a warning
// says so.
//
// Thread-safety: `changed` runs on the watch's thread.

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/listen_address.h"

namespace pgflow::cluster {

class LeaderWatch {
 public:
  using Changed = std::function<void(const std::optional<ListenAddress>& leader,
                                     const std::string& why_none)>;

  LeaderWatch(std::string cluster, std::vector<std::string> etcd, Changed changed,
              std::chrono::milliseconds interval = std::chrono::milliseconds(200));
  ~LeaderWatch();  // stops and joins the thread
  LeaderWatch(const LeaderWatch&) = delete;
  LeaderWatch& operator=(const LeaderWatch&) = delete;

 private:
  void Run();

  const std::string cluster_;
  const std::vector<std::string> etcd_;
  const Changed changed_;
  const std::chrono::milliseconds interval_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace pgflow::cluster
