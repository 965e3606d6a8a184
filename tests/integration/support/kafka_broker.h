#pragma once

// Kafka clusters for the tests. KafkaBroker is the real thing: a single-node Apache Kafka
// broker in KRaft mode (scripts/kafkatmp.sh: the broker from Maven Central, on the installed
// Java) on free loopback ports, removed by the destructor. MockKafka (kafka_mock.h) remains for
// the tests that need errors injected at will, which a real broker cannot be told to answer.
// Both are a KafkaCluster, so a test's helpers take either.

#include <map>
#include <string>

namespace pgflow::testing {

class KafkaCluster {
 public:
  virtual ~KafkaCluster() = default;
  // "127.0.0.1:port,..."
  virtual const std::string& bootstrap() const = 0;
  // Creates `topic` with `partitions` partitions and the topic settings `config`
  // ({"cleanup.policy", "compact"}); fails the current test otherwise.
  virtual void CreateTopic(const std::string& topic, int partitions,
                           const std::map<std::string, std::string>& config = {}) = 0;
};

class KafkaBroker : public KafkaCluster {
 public:
  // Starts the broker, with `extra_config` (broker settings, one per line) added to its file;
  // fails the current test if it does not answer within a minute.
  explicit KafkaBroker(const std::string& extra_config = "");
  ~KafkaBroker() override;  // stops it and deletes its data
  KafkaBroker(const KafkaBroker&) = delete;
  KafkaBroker& operator=(const KafkaBroker&) = delete;

  const std::string& bootstrap() const override { return bootstrap_; }
  void CreateTopic(const std::string& topic, int partitions,
                   const std::map<std::string, std::string>& config = {}) override;

  // kill -9 of the broker (its data kept), and its start again on the same port and data.
  void Kill();
  void Resume();

 private:
  std::string dir_;
  std::string bootstrap_;
};

// Creates `topic` on the cluster at `bootstrap` with librdkafka's admin API; fails the test on
// an error other than "already exists".
void CreateKafkaTopic(const std::string& bootstrap, const std::string& topic, int partitions,
                      const std::map<std::string, std::string>& config);

// The value of the topic setting `name` of `topic` ("" when the broker did not say).
std::string TopicConfig(const std::string& bootstrap, const std::string& topic,
                        const std::string& name);

// How many partitions `topic` has (0 when the broker does not know it).
int TopicPartitions(const std::string& bootstrap, const std::string& topic);

}  // namespace pgflow::testing
