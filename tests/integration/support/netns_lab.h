#pragma once

// Machines for the cluster's fault tests on one machine: network namespaces (`ip netns`), each
// joined to a bridge in the tests' own namespace by a veth link, with addresses of a private
// /24 that only these links carry. A partition is real: a host's link set down, and its
// processes reach nobody and nobody reaches them (the kernel drops the packets, as a cut
// cable would). Made when constructed, removed when destroyed (and left over ones of a killed
// run are removed by the next, by name).
//
// A process runs on host i when forked by a thread inside its namespace (InHost), or when it
// calls Enter(i) itself after fork; the file system, users and clock are the machine's own.

#include <string>
#include <vector>

namespace pgflow::testing {

class NetnsLab {
 public:
  // `hosts` namespaces; aborts the test binary with why when `ip` cannot make them.
  explicit NetnsLab(int hosts);
  ~NetnsLab();
  NetnsLab(const NetnsLab&) = delete;
  NetnsLab& operator=(const NetnsLab&) = delete;

  int size() const { return static_cast<int>(hosts_.size()); }
  // Host i's address, and the tests' own on the bridge.
  const std::string& address(int i) const { return hosts_[i].address; }
  const std::string& bridge_address() const { return bridge_address_; }

  void Cut(int i);   // host i's link down: it and the others no longer reach each other
  void Heal(int i);  // up again

  // Moves the calling thread into host i's namespace (a forked child, a client thread).
  void Enter(int i) const;

  // The calling thread on host i while it lives (what it forks runs there too).
  class InHost {
   public:
    InHost(const NetnsLab& lab, int i);
    ~InHost();
    InHost(const InHost&) = delete;
    InHost& operator=(const InHost&) = delete;

   private:
    int home_ = -1;  // the thread's namespace before
  };

 private:
  struct Host {
    std::string netns;    // its name under /var/run/netns
    std::string link;     // the veth end in the tests' namespace, on the bridge
    std::string address;  // 10.213.<subnet>.<11 + i>
  };
  std::string bridge_;
  std::string bridge_address_;
  std::vector<Host> hosts_;
};

}  // namespace pgflow::testing
