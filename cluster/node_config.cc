#include "cluster/node_config.h"

#include <utility>

#include "cluster/etcd.h"
#include "engine/config.h"
#include "engine/config_node.h"
#include "engine/listen_address.h"
#include "engine/options.h"
#include "engine/str_cat.h"

namespace pgflow::cluster {
namespace {

using std::chrono::milliseconds;

absl::Status ReadParameters(const ConfigNode& node, std::map<std::string, std::string>* out) {
  if (!node.IsMap()) return node.Error("must be a mapping of setting: value");
  for (const auto& [name, value] : node.Entries()) {
    absl::StatusOr<std::string> text = value.AsString();
    if (!text.ok()) return text.status();
    (*out)[name] = *text;
  }
  return absl::OkStatus();
}

const OptionTable<NodePostgresOptions>& PostgresTable() {
  static const auto* table = new OptionTable<NodePostgresOptions>({
      StringOption("listen", &NodePostgresOptions::listen)
          .Required()
          .Check(CheckListenAddress)
          .Help("host:port the server listens on, as the other nodes and the poolers reach it."),
      PathOption("bin_dir", &NodePostgresOptions::bin_dir)
          .DefaultText("the newest /usr/lib/postgresql/<major>/bin")
          .Help("Where PostgreSQL's programs are (initdb, pg_ctl, pg_basebackup, pg_rewind)."),
      StringOption("user", &NodePostgresOptions::user)
          .NonEmpty()
          .Help("The superuser the node connects as (a password from ~/.pgpass)."),
      StringOption("replication_user", &NodePostgresOptions::replication_user)
          .NonEmpty()
          .Help("The user replicas stream as (REPLICATION; a password from ~/.pgpass)."),
      CustomOption("parameters", OptionType::kMap, ReadParameters,
                   &NodePostgresOptions::parameters)
          .NoDefault()
          .Help("postgresql.conf settings beside the ones the node manages (port, "
                "listen_addresses, wal_level (logical), hot_standby, wal_log_hints, "
                "synchronous_standby_names, primary_conninfo)."),
      ListOption("pg_hba", &NodePostgresOptions::pg_hba)
          .DefaultText("[host replication all all scram-sha-256, host all all all "
                       "scram-sha-256]")
          .Help("pg_hba.conf's lines after initdb's own (peer on the Unix socket, trust on "
                "loopback), written by the node that initializes the cluster; the others "
                "clone its file. The default asks the other machines for passwords "
                "(~/.pgpass)."),
  });
  return *table;
}

const OptionTable<NodeConfig>& NodeTable() {
  static const auto* table = new OptionTable<NodeConfig>({
      StringOption("name", &NodeConfig::name)
          .Required()
          .NonEmpty()
          .Help("This node's name, unique in the cluster."),
      StringOption("cluster", &NodeConfig::cluster)
          .Required()
          .NonEmpty()
          .Help("The cluster's name: its keys are under /pgflow/<cluster>/ in etcd."),
      ListOption("etcd", &NodeConfig::etcd)
          .Required()
          .NonEmpty()
          .Check(CheckEtcdUrls)
          .Help("The etcd members' client urls; each call goes to the next when one cannot "
                "be reached."),
      PathOption("data_dir", &NodeConfig::data_dir)
          .Required()
          .Help("The server's data directory. Empty or missing: the node clones the primary "
                "(pg_basebackup), or makes the cluster's first server (initdb) when there is "
                "none yet."),
      SectionOption("postgres", &NodeConfig::postgres, PostgresTable())
          .Required()
          .Help("{listen, bin_dir, user, replication_user, parameters}: the server."),
      StringOption("api", &NodeConfig::api)
          .Required()
          .Check(CheckListenAddress)
          .Help("host:port of the node's HTTP endpoints: /primary, /replica?lag=, /health, "
                "/metrics, for load balancers and `pgflow cluster`."),
      DurationOption("ttl", &NodeConfig::ttl)
          .Range(milliseconds(2000), milliseconds(3600000))
          .Help("The leader key's lease: without a renewal it ends this long after the last."),
      DurationOption("loop_wait", &NodeConfig::loop_wait)
          .Range(milliseconds(100), milliseconds(600000))
          .Help("Between two rounds of the node's loop (the leader renews its lease at each)."),
      DurationOption("retry_timeout", &NodeConfig::retry_timeout)
          .Range(milliseconds(100), milliseconds(600000))
          .Help("An etcd or PostgreSQL call is given up after this long."),
      BytesOption("maximum_lag_on_failover", &NodeConfig::maximum_lag_on_failover)
          .Help("A replica further behind the leader's last published position does not take "
                "its place (0: no limit)."),
      BoolOption("synchronous", &NodeConfig::synchronous)
          .Help("The nodes keep one streaming standby synchronous (synchronous_standby_names, "
                "named in etcd first): no commit is acknowledged before it holds it, and only "
                "it may take the lead, so a failover loses none. The cluster's first leader "
                "writes it to etcd, which every node follows from then on (`pgflow cluster set "
                "synchronous on|off` changes it)."),
  });
  return *table;
}

}  // namespace

bool LooksLikeNodeConfig(std::string_view yaml) {
  absl::StatusOr<ConfigNode> root = ParseConfigDocument(yaml, "", "a mapping");
  if (!root.ok() || !root->IsMap()) return false;
  return root->KeyNode("cluster").has_value() && root->KeyNode("etcd").has_value() &&
         !root->KeyNode("pipeline").has_value();
}

std::string NodeOptionsReference() {
  std::string out = "| key | type | default | meaning |\n|---|---|---|---|\n";
  AppendOptionsMarkdown("", NodeTable(), &out);
  return out;
}

absl::StatusOr<NodeConfig> ParseNodeConfig(std::string_view yaml, const std::string& file) {
  absl::StatusOr<ConfigNode> root = ParseConfigDocument(
      yaml, file, "a mapping with the keys name, cluster, etcd, data_dir, postgres and api");
  if (!root.ok()) return root.status();
  NodeConfig config;
  if (absl::Status s = NodeTable().Parse(*root, &config); !s.ok()) return s;
  if (config.loop_wait + 2 * config.retry_timeout > config.ttl) {
    return absl::InvalidArgumentError(
        Cat(file, ": loop_wait (", config.loop_wait.count(), " ms) + 2 × retry_timeout (",
            config.retry_timeout.count(), " ms) must not exceed ttl (", config.ttl.count(),
            " ms): a leader that cannot renew its lease must step down before it ends"));
  }
  config.file = file;
  return config;
}

absl::StatusOr<NodeConfig> LoadNodeConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadConfigFile(path);
  if (!text.ok()) return text.status();
  return ParseNodeConfig(*text, path);
}

}  // namespace pgflow::cluster
