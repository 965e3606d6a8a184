#include "cluster/node_config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgflow::cluster {
namespace {

using ::testing::HasSubstr;

constexpr const char* kNode =
    "name: n1\n"
    "cluster: main\n"
    "etcd: [http://127.0.0.1:2379, http://127.0.0.1:2479]\n"
    "data_dir: /var/lib/pgflow/n1\n"
    "postgres: {listen: 127.0.0.1:5432,\n"
    "           parameters: {shared_buffers: 256MB, max_connections: 200}}\n"
    "api: 127.0.0.1:8008\n";

TEST(NodeConfigTest, ReadsANodeWithPatronisDefaults) {
  absl::StatusOr<NodeConfig> config = ParseNodeConfig(kNode, "node.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->name, "n1");
  EXPECT_EQ(config->cluster, "main");
  EXPECT_EQ(config->etcd.size(), 2u);
  EXPECT_EQ(config->postgres.listen, "127.0.0.1:5432");
  EXPECT_EQ(config->postgres.user, "postgres");
  EXPECT_EQ(config->postgres.parameters.at("shared_buffers"), "256MB");
  EXPECT_EQ(config->postgres.parameters.at("max_connections"), "200");
  EXPECT_EQ(config->ttl.count(), 30000);
  EXPECT_EQ(config->loop_wait.count(), 10000);
  EXPECT_EQ(config->retry_timeout.count(), 10000);
  EXPECT_EQ(config->maximum_lag_on_failover, 1u << 20);
  EXPECT_FALSE(config->synchronous);
}

TEST(NodeConfigTest, ALeaseThatCouldEndBeforeItsLeaderStepsDownIsRefused) {
  absl::StatusOr<NodeConfig> config =
      ParseNodeConfig(std::string(kNode) + "ttl: 10s\nloop_wait: 5s\nretry_timeout: 5s\n",
                      "node.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("must not exceed ttl"));
  EXPECT_THAT(config.status().message(), HasSubstr("node.yaml"));
  EXPECT_TRUE(
      ParseNodeConfig(std::string(kNode) + "ttl: 10s\nloop_wait: 2s\nretry_timeout: 4s\n", "n")
          .ok());
}

TEST(NodeConfigTest, MistakesAreNamedAtTheirPlace) {
  absl::StatusOr<NodeConfig> unknown =
      ParseNodeConfig(std::string(kNode) + "tll: 10s\n", "node.yaml");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.status().message(), HasSubstr("tll"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("ttl"));  // (the suggestion)

  absl::StatusOr<NodeConfig> endpoint = ParseNodeConfig(
      "name: n1\ncluster: main\netcd: [127.0.0.1:2379]\ndata_dir: /d\n"
      "postgres: {listen: 127.0.0.1:5432}\napi: 127.0.0.1:8008\n",
      "node.yaml");
  ASSERT_FALSE(endpoint.ok());
  EXPECT_THAT(endpoint.status().message(), HasSubstr("no etcd client url"));

  absl::StatusOr<NodeConfig> missing = ParseNodeConfig("name: n1\ncluster: main\n", "node.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("etcd"));
}

}  // namespace
}  // namespace pgflow::cluster
