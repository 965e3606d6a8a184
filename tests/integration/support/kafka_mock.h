#pragma once

// librdkafka's mock Kafka cluster in a process of its own (tests/integration/tools/
// kafka_mock_cluster.cc), driven over its stdin, for the tests that need what only it can do:
// errors injected on a given request, a broker's answers slowed, leaders moved. The other
// tests run against a real broker (kafka_broker.h).

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "tests/integration/support/kafka_broker.h"

struct rd_kafka_s;

namespace pgflow::testing {

class MockKafka : public KafkaCluster {
 public:
  // Starts the cluster with `brokers` brokers; fails the current test if it does not start.
  explicit MockKafka(int brokers = 3);
  ~MockKafka();  // the cluster exits with its input
  MockKafka(const MockKafka&) = delete;
  MockKafka& operator=(const MockKafka&) = delete;

  // "127.0.0.1:port,..."
  const std::string& bootstrap() const override { return bootstrap_; }
  // The mock cannot be sent CreateTopics (librdkafka 2.0.2): made by a command; `config` is
  // not supported.
  void CreateTopic(const std::string& topic, int partitions,
                   const std::map<std::string, std::string>& config = {}) override;

  // Sends one command ("down 1", "topic t 3"); fails the test unless it answers "ok".
  void Command(const std::string& command);

 private:
  std::string ReadLine();

  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
  std::string bootstrap_;
};

// What the brokers hold for `group` on partitions 0..partitions-1 of `topic`.
struct GroupOffsets {
  std::vector<int64_t> committed;  // -1001 (RD_KAFKA_OFFSET_INVALID): none
  std::vector<int64_t> high;       // high watermarks
  std::vector<int64_t> low;        // low watermarks: the first offset each partition still holds
};
// Asks the brokers, as a consumer of `group` that joins nothing; nullopt when they did not
// answer within 10 s (a test polling through a rebalance may ask again).
std::optional<GroupOffsets> QueryGroupOffsets(const std::string& bootstrap,
                                              const std::string& group, const std::string& topic,
                                              int partitions);

// A plain member of a consumer group, subscribed to `topic`: it reads and commits nothing of
// its own accord. (librdkafka's mock cluster takes offset commits from members only.)
class GroupMember {
 public:
  GroupMember(const std::string& bootstrap, const std::string& group, const std::string& topic);
  ~GroupMember();  // leaves the group
  GroupMember(const GroupMember&) = delete;
  GroupMember& operator=(const GroupMember&) = delete;

  // Polls until the group gave this member a partition.
  bool WaitForAssignment(std::chrono::milliseconds timeout);
  // Serves the group once (heartbeats, rebalances); messages are dropped.
  void Poll();
  // Commits `offset` for `partition` of the topic; fails the test unless the brokers took it.
  void Commit(int partition, int64_t offset);

 private:
  rd_kafka_s* rk_;
  std::string topic_;
};

}  // namespace pgflow::testing
