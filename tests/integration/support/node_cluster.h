#pragma once

// Three `pgflow node`s of one cluster for the tests (cluster/node.h), n1 to n3, each beside
// its own PostgreSQL server, their files and logs in a directory of their own. The nodes run
// as the postgres user (PostgreSQL refuses root). On loopback, or each on a host of a NetnsLab
// (its own network namespace), where partitions are real.

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/integration/support/netns_lab.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {

struct NodeClusterOptions {
  std::string name;               // the cluster's
  std::vector<std::string> etcd;  // the etcd members' client urls
  bool synchronous = false;
  const NetnsLab* lab = nullptr;  // node i on lab->address(i), in its namespace; null: loopback
};

class NodeCluster {
 public:
  static constexpr int kNodes = 3;

  explicit NodeCluster(NodeClusterOptions options);
  ~NodeCluster();  // SIGTERM to each node, and waits for it
  NodeCluster(const NodeCluster&) = delete;
  NodeCluster& operator=(const NodeCluster&) = delete;

  void Start(int i);
  void Kill(int i);  // SIGKILL of node i's `pgflow node` (its server follows it)

  std::string Log(int i) const;
  const std::string& host(int i) const { return members_[i].host; }
  std::string Url(int i) const;                        // node i's server, as postgres
  std::string Address(int i) const;                    // node i's server's host:port
  std::string Api(int i, const std::string& page) const;  // http://host:port<page>
  const std::string& file(int i) const { return members_[i].file; }
  // Every process of node i's server: its postmaster first (none when it has none).
  std::vector<pid_t> ServerPids(int i) const;
  // How many members' /primary answer 200.
  int Primaries() const;
  int Index(const std::string& name) const { return std::stoi(name.substr(1)) - 1; }

  // `pgflow cluster status --json` (with node `via`'s file), or null when it fails.
  nlohmann::json Status(int via = 0) const;
  std::optional<std::string> Leader(int via = 0) const;
  // Whether a leader other than `not_this` leads, every other member streams from it, and
  // with `synchronous` one of them is synchronous.
  bool Converged(const std::string& not_this = "") const;

  // The log of every node, for a failure's message.
  std::string Logs() const;

 private:
  struct Member {
    std::string name;
    std::string host;
    int pg_port = 0;
    int api_port = 0;
    std::string file;
    std::unique_ptr<PgflowProcess> process;
  };
  NodeClusterOptions options_;
  TempDir dir_;
  std::vector<Member> members_;
};

}  // namespace pgflow::testing
