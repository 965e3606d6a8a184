#pragma once

// The file of `pgflow node` (node.yaml): one PostgreSQL server of a cluster, the etcd members
// that hold the cluster's keys, and the timings of its leader lease.
//
//   name: n1
//   cluster: main
//   etcd: [http://10.0.0.1:2379, http://10.0.0.2:2379, http://10.0.0.3:2379]
//   data_dir: /var/lib/postgresql/15/n1
//   postgres: {listen: 10.0.0.1:5432}
//   api: 10.0.0.1:8008
//   ttl: 30s
//   loop_wait: 10s
//   retry_timeout: 10s
//   maximum_lag_on_failover: 1MB
//   synchronous: off

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace pgflow::cluster {

struct NodePostgresOptions {
  // host:port the server listens on, as the other nodes and the poolers reach it.
  std::string listen;
  // PostgreSQL's programs (initdb, pg_ctl, pg_basebackup, pg_rewind); empty: the newest of
  // /usr/lib/postgresql/<major>/bin.
  std::string bin_dir;
  // The superuser the node connects as over the server's Unix socket or `listen` (its password,
  // if any, from ~/.pgpass), and the user replicas stream as.
  std::string user = "postgres";
  std::string replication_user = "postgres";
  // Settings written into postgresql.conf beside the ones the node manages (port,
  // listen_addresses, wal_level, hot_standby, wal_log_hints, synchronous_standby_names, ...).
  std::map<std::string, std::string> parameters;
  // The lines pg_hba.conf gets after initdb's own (local peer, loopback trust) on the node
  // that initializes the cluster (the others clone its file).
  std::vector<std::string> pg_hba = {"host replication all all scram-sha-256",
                                     "host all all all scram-sha-256"};
};

struct NodeConfig {
  std::string name;                // this node's, unique in the cluster
  std::string cluster;             // the cluster's: its keys are under /pgflow/<cluster>/
  std::vector<std::string> etcd;   // the etcd members' client urls
  std::string data_dir;            // the server's data directory (empty: cloned or made)
  NodePostgresOptions postgres;
  std::string api;                 // host:port of /primary, /replica, /health, /metrics
  // The leader key's lease: it expires `ttl` after its last renewal; the leader renews it every
  // `loop_wait`; an etcd call is retried at most `retry_timeout`. loop_wait + 2 × retry_timeout
  // must fit in ttl, so that a leader that cannot renew steps down before its lease can end.
  std::chrono::milliseconds ttl{30000};
  std::chrono::milliseconds loop_wait{10000};
  std::chrono::milliseconds retry_timeout{10000};
  // A replica further behind the last position the leader published takes no part in a
  // failover (0: none is too far).
  uint64_t maximum_lag_on_failover = 1 << 20;
  // The nodes keep one streaming standby synchronous (synchronous_standby_names, named in
  // etcd's `sync` first): no commit is acknowledged before it holds it, and only it may take
  // the lead, so no acknowledged commit is lost.
  bool synchronous = false;

  std::string file;  // where it was read from, for messages
};

absl::StatusOr<NodeConfig> ParseNodeConfig(std::string_view yaml, const std::string& file);
absl::StatusOr<NodeConfig> LoadNodeConfig(const std::string& path);

// Whether `yaml` reads as a node file (name, cluster and etcd at its top), not a pipeline's.
bool LooksLikeNodeConfig(std::string_view yaml);

// docs/reference/node-options.md's table: every key of a node file.
std::string NodeOptionsReference();

}  // namespace pgflow::cluster
