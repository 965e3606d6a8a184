#pragma once

// The kafka source's options (`source: {kafka: ...}`): their table, with every key's type,
// default and help, and what pgflow sets on the consumer itself.

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "common/kafka/kafka_client_config.h"
#include "engine/options.h"
#include "engine/registry.h"

namespace pgflow {

enum class KafkaTruncateMode { kAuto, kApply, kSkip };

struct KafkaSourceOptions : SourceOptions {
  // Brokers, security settings, `properties:` (consumer properties; group.id, offsets and
  // auto commit are pgflow's).
  KafkaClientConfig client;
  // Topic names, or regular expressions (POSIX extended) when they start with '^'.
  std::vector<std::string> topics;
  std::string group;                      // consumer group (group.id)
  std::string offset_reset = "earliest";  // where a group with no committed offset starts
  std::chrono::milliseconds commit_interval{1000};
  std::chrono::milliseconds connect_timeout{10000};  // Prepare's wait for the brokers
  // How long a rebalance waits for the events of the partitions it takes away to become
  // durable before it commits their offsets and lets them go.
  std::chrono::milliseconds rebalance_timeout{60000};
  KafkaTruncateMode truncate = KafkaTruncateMode::kAuto;
  // How long a row of a new shape waits for its table's DDL event (0: it does not wait).
  std::chrono::milliseconds ddl_wait{30000};
  bool skip_malformed = false;  // `malformed: skip`
  bool skip_keyless = false;    // `keyless: skip`
};

// The option table of `source: {kafka: ...}`; its check rejects a rebalance_timeout at or above
// the consumer's max.poll.interval.ms and `properties:` that set what pgflow sets itself.
const OptionTable<KafkaSourceOptions>& KafkaSourceTable();

// pgflow's own consumer settings (brokers, client id, group, offsets committed by pgflow only,
// no automatic offset reset); a pipeline's `properties:` come after them.
std::vector<std::pair<std::string, std::string>> ConsumerSettings(const KafkaSourceOptions& o,
                                                                  const std::string& client_id);

}  // namespace pgflow
