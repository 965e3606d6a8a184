#include "common/kafka/kafka_client_config.h"

#include <librdkafka/rdkafka.h>

#include <array>

#include "absl/strings/str_cat.h"

namespace pgflow {
namespace {

std::string AsString(absl::string_view s) { return std::string(s.data(), s.size()); }
std::string AsString(std::string_view s) { return std::string(s); }

// Security settings, each a librdkafka property under a YAML-friendly name.
constexpr std::array<std::pair<std::string_view, std::string_view>, 9> kSecurityKeys = {{
    {"protocol", "security.protocol"},
    {"sasl_mechanism", "sasl.mechanism"},
    {"sasl_username", "sasl.username"},
    {"sasl_password", "sasl.password"},
    {"ssl_ca_location", "ssl.ca.location"},
    {"ssl_certificate_location", "ssl.certificate.location"},
    {"ssl_key_location", "ssl.key.location"},
    {"ssl_key_password", "ssl.key.password"},
    {"ssl_endpoint_identification_algorithm", "ssl.endpoint.identification.algorithm"},
}};

constexpr OptionSpec kSecurityOptions[] = {
    {"protocol", "string", false, "plaintext",
     "security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl."},
    {"sasl_mechanism", "string", false, "", "sasl.mechanism: PLAIN, SCRAM-SHA-256, ..."},
    {"sasl_username", "string", false, "", "sasl.username"},
    {"sasl_password", "string", false, "", "sasl.password (use ${VAR})"},
    {"ssl_ca_location", "string", false, "", "ssl.ca.location"},
    {"ssl_certificate_location", "string", false, "", "ssl.certificate.location"},
    {"ssl_key_location", "string", false, "", "ssl.key.location"},
    {"ssl_key_password", "string", false, "", "ssl.key.password"},
    {"ssl_endpoint_identification_algorithm", "string", false, "https",
     "ssl.endpoint.identification.algorithm: https or none."},
};

}  // namespace

std::span<const OptionSpec> KafkaSecurityOptions() { return kSecurityOptions; }

absl::Status ReadKafkaClientConfig(const ConfigNode& node,
                                   std::span<const std::string_view> reserved,
                                   std::string_view reserved_why, KafkaClientConfig* out) {
  std::optional<ConfigNode> brokers_node = node.Get("brokers");
  if (!brokers_node.has_value()) return node.Error("missing required key 'brokers'");
  absl::StatusOr<std::vector<std::string>> brokers = brokers_node->AsStringList();
  if (!brokers.ok()) return brokers.status();
  for (const std::string& b : *brokers) {
    if (b.empty()) return brokers_node->Error("a broker address is empty");
    absl::StrAppend(&out->brokers, out->brokers.empty() ? "" : ",", b);
  }
  if (out->brokers.empty()) return brokers_node->Error("list at least one broker, host:port");
  out->brokers_position = brokers_node->Position();

  if (auto security = node.Get("security")) {
    if (absl::Status s = security->CheckKeys(kSecurityOptions); !s.ok()) return s;
    for (const auto& [key, value] : security->Entries()) {
      absl::StatusOr<std::string> text = value.AsString();
      if (!text.ok()) return text.status();
      for (const auto& [name, property] : kSecurityKeys) {
        if (name == key) out->properties.emplace_back(AsString(property), *text);
      }
      out->property_nodes.push_back(value);
    }
  }
  if (auto properties = node.Get("properties")) {
    if (!properties->IsMap()) {
      return properties->Error("expected a mapping of librdkafka properties");
    }
    for (const auto& [key, value] : properties->Entries()) {
      for (std::string_view r : reserved) {
        if (key == r) {
          return properties->KeyNode(key)->Error(
              absl::StrCat("'", key, "' is set by pgflow (", AsString(reserved_why), ")"));
        }
      }
      if (value.IsNull()) return value.Error("expected a value");
      absl::StatusOr<std::string> text = value.AsString();
      if (!text.ok()) return text.status();
      out->properties.emplace_back(key, *text);
      out->property_nodes.push_back(value);
    }
  }
  return absl::OkStatus();
}

absl::Status SetKafkaProperties(rd_kafka_conf_s* conf,
                                const std::vector<std::pair<std::string, std::string>>& settings,
                                const KafkaClientConfig& config, std::string* bad_property) {
  char errstr[512];
  for (const auto* list : {&settings, &config.properties}) {
    for (const auto& [name, value] : *list) {
      if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof(errstr)) !=
          RD_KAFKA_CONF_OK) {
        *bad_property = name;
        return absl::InvalidArgumentError(errstr);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckKafkaProperties(const std::vector<std::pair<std::string, std::string>>& settings,
                                  const KafkaClientConfig& config, const ConfigNode& node) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  std::string bad;
  absl::Status status = SetKafkaProperties(conf, settings, config, &bad);
  rd_kafka_conf_destroy(conf);
  if (status.ok()) return status;
  for (size_t i = 0; i < config.properties.size(); ++i) {
    if (config.properties[i].first == bad) {
      return config.property_nodes[i].Error(AsString(status.message()));
    }
  }
  return node.Error(AsString(status.message()));
}

}  // namespace pgflow
