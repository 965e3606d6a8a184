#pragma once

// librdkafka's mock Kafka cluster in a process of its own (tests/integration/tools/
// kafka_mock_cluster.cc), driven over its stdin, for the tests that need a Kafka cluster.

#include <sys/types.h>

#include <cstdio>
#include <string>

namespace pgflow::testing {

class MockKafka {
 public:
  // Starts the cluster with `brokers` brokers; fails the current test if it does not start.
  explicit MockKafka(int brokers = 3);
  ~MockKafka();  // the cluster exits with its input
  MockKafka(const MockKafka&) = delete;
  MockKafka& operator=(const MockKafka&) = delete;

  // "127.0.0.1:port,..."
  const std::string& bootstrap() const { return bootstrap_; }

  // Sends one command ("down 1", "topic t 3"); fails the test unless it answers "ok".
  void Command(const std::string& command);

 private:
  std::string ReadLine();

  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
  std::string bootstrap_;
};

}  // namespace pgflow::testing
