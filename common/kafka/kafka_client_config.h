#pragma once

// What the Kafka sink (sinks/kafka/) and the Kafka source (sources/kafka/) share of their
// configuration: the bootstrap brokers, the `security:` block under YAML-friendly names, and
// librdkafka properties passed through under `properties:`. Parsing is pure (no network);
// librdkafka itself checks property names and values, and its complaint is placed at the
// property's line and column.

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/config_node.h"
#include "engine/options.h"

struct rd_kafka_conf_s;

namespace pgflow {

struct KafkaClientConfig {
  std::string brokers;           // bootstrap.servers: "host:port,host:port"
  std::string brokers_position;  // "file:line:col" of `brokers`, for errors at run time
  // librdkafka properties, in order: the security settings, then `properties:`.
  std::vector<std::pair<std::string, std::string>> properties;
  // The node each of `properties` came from, for errors librdkafka finds.
  std::vector<ConfigNode> property_nodes;
};

// The table of `brokers` (required: a list, or a comma-separated string), `security:` (protocol,
// sasl_mechanism, sasl_username, ... for librdkafka's security.protocol, sasl.mechanism,
// sasl.username, ...) and `properties:` (librdkafka properties as they are), for a component
// to embed in its own (EmbedOptions). A key under `properties:` listed in `reserved` is an error
// whose message ends with `reserved_why`; `properties_help` documents `properties:`. The table
// keeps the spans and views: pass static data.
std::unique_ptr<OptionTable<KafkaClientConfig>> MakeKafkaClientTable(
    std::span<const std::string_view> reserved, std::string_view reserved_why,
    std::string_view properties_help);

// Sets `settings` (pgflow's own), then `config.properties`, on `conf`. On failure returns
// librdkafka's message and stores the offending property's name in *bad_property.
absl::Status SetKafkaProperties(rd_kafka_conf_s* conf,
                                const std::vector<std::pair<std::string, std::string>>& settings,
                                const KafkaClientConfig& config, std::string* bad_property);

// Checks, without any network, that librdkafka accepts `settings` and config.properties;
// an error is placed at the property's node (or at `node` for one of pgflow's settings).
absl::Status CheckKafkaProperties(const std::vector<std::pair<std::string, std::string>>& settings,
                                  const KafkaClientConfig& config, const ConfigNode& node);

}  // namespace pgflow
