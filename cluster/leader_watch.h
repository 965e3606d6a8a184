#pragma once

// Follows a cluster's leader for what stands in front of its servers (`pgflow pooler`'s
// database entries with `cluster:`): a thread of its own reads the cluster's keys every
// `interval` and calls `changed` with the leader's server (its member key's address) each time
// it changes, and with nullopt and why when there is none to send to: the cluster has no
// leader, its leader does not run a primary (not promoted yet, its server restarting), or it
// is handing the lead over (a switchover: whoever follows pauses until the new leader is
// known, instead of sending transactions to a server about to stop). While
// etcd does not answer, nothing changes (the last leader stays the one followed) and a warning
// says so. The members streaming from the leader come with it (for reads on standbys), and a
// change of them is a change too. When `changed` fails (the pooler could not be pointed at the
// new leader), the watch says why and calls it again every second until it succeeds.
//
// Thread-safety: `changed` runs on the watch's thread.

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "engine/listen_address.h"

namespace pgflow::cluster {

class LeaderWatch {
 public:
  struct Topology {
    std::optional<ListenAddress> leader;  // none to send to: why_none says why
    std::string why_none;
    std::vector<ListenAddress> replicas;  // the running members streaming from it, by name
  };
  using Changed = std::function<absl::Status(const Topology&)>;

  LeaderWatch(std::string cluster, std::vector<std::string> etcd, Changed changed,
              std::chrono::milliseconds interval = std::chrono::milliseconds(50));
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
