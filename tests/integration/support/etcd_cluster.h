#pragma once

// Real etcd members for the tests (Debian's etcd-server, /usr/bin/etcd, v3 API), each on free
// loopback ports for its clients and its peers, in a directory removed with it; started when
// constructed, killed when destroyed. A member can be killed and started again (its data kept)
// or stopped and continued, for the faults of the cluster's tests. They do not fsync (the
// machine's one disk is shared with the tests' PostgreSQL servers).

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "tests/integration/support/test_support.h"

namespace pgflow::testing {

class EtcdCluster {
 public:
  // `members` members forming one cluster; waits until every one answers /health (aborts the
  // test binary with why when one does not within 30 s).
  explicit EtcdCluster(int members = 1);
  // Member i on hosts[i] (an address of this machine) instead of loopback, `in_child(i)`
  // called in its process before etcd starts (to enter a network namespace: NetnsLab::Enter).
  EtcdCluster(std::vector<std::string> hosts, std::function<void(int)> in_child);
  ~EtcdCluster();
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  int size() const { return static_cast<int>(members_.size()); }
  // Member i's client url ("http://127.0.0.1:P").
  std::string url(int i) const;
  // Every member's client url.
  std::vector<std::string> urls() const;

  void Kill(int i);   // SIGKILL; its data stays
  void Start(int i);  // (again, after Kill) and waits for its health
  void Pause(int i);  // SIGSTOP
  void Resume(int i); // SIGCONT

 private:
  struct Member {
    std::string name;
    std::string host = "127.0.0.1";
    int client_port = 0;
    int peer_port = 0;
    pid_t pid = -1;
    bool started_once = false;
  };
  void Launch(int i);
  bool Healthy(int i) const;

  TempDir dir_;
  std::function<void(int)> in_child_;
  std::string initial_cluster_;  // e1=http://127.0.0.1:P,...
  std::vector<Member> members_;
};

}  // namespace pgflow::testing
