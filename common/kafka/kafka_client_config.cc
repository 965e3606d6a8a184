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

// The documented face of `security:`: its keys and their defaults (librdkafka's).
struct KafkaSecurity {
  std::string protocol = "plaintext";
  std::string sasl_mechanism;
  std::string sasl_username;
  std::string sasl_password;
  std::string ssl_ca_location;
  std::string ssl_certificate_location;
  std::string ssl_key_location;
  std::string ssl_key_password;
  std::string ssl_endpoint_identification_algorithm = "https";
};

const OptionTable<KafkaSecurity>& SecurityTable() {
  static const auto* table = new OptionTable<KafkaSecurity>({
      StringOption("protocol", &KafkaSecurity::protocol)
          .Help("security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl."),
      StringOption("sasl_mechanism", &KafkaSecurity::sasl_mechanism)
          .Help("sasl.mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ..."),
      StringOption("sasl_username", &KafkaSecurity::sasl_username).Help("sasl.username."),
      StringOption("sasl_password", &KafkaSecurity::sasl_password)
          .Help("sasl.password (write ${VAR})."),
      StringOption("ssl_ca_location", &KafkaSecurity::ssl_ca_location).Help("ssl.ca.location."),
      StringOption("ssl_certificate_location", &KafkaSecurity::ssl_certificate_location)
          .Help("ssl.certificate.location."),
      StringOption("ssl_key_location", &KafkaSecurity::ssl_key_location).Help("ssl.key.location."),
      StringOption("ssl_key_password", &KafkaSecurity::ssl_key_password).Help("ssl.key.password."),
      StringOption("ssl_endpoint_identification_algorithm",
                   &KafkaSecurity::ssl_endpoint_identification_algorithm)
          .Help("ssl.endpoint.identification.algorithm: https or none."),
  });
  return *table;
}

absl::Status ReadBrokers(const ConfigNode& node, KafkaClientConfig* out) {
  absl::StatusOr<std::vector<std::string>> brokers = node.AsStringList();
  if (!brokers.ok()) return brokers.status();
  out->brokers.clear();
  for (const std::string& b : *brokers) {
    if (b.empty()) return node.Error("a broker address is empty");
    absl::StrAppend(&out->brokers, out->brokers.empty() ? "" : ",", b);
  }
  if (out->brokers.empty()) return node.Error("list at least one broker, host:port");
  out->brokers_position = node.Position();
  return absl::OkStatus();
}

absl::Status ReadSecurity(const ConfigNode& node, KafkaClientConfig* out) {
  if (absl::Status s = SecurityTable().CheckKeys(node); !s.ok()) return s;
  for (const auto& [key, value] : node.Entries()) {
    if (value.IsNull()) continue;
    absl::StatusOr<std::string> text = value.AsString();
    if (!text.ok()) return text.status();
    for (const auto& [name, property] : kSecurityKeys) {
      if (name == key) out->properties.emplace_back(AsString(property), *text);
    }
    out->property_nodes.push_back(value);
  }
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<OptionTable<KafkaClientConfig>> MakeKafkaClientTable(
    std::span<const std::string_view> reserved, std::string_view reserved_why,
    std::string_view properties_help) {
  auto read_properties = [reserved, reserved_why](const ConfigNode& node,
                                                  KafkaClientConfig* out) -> absl::Status {
    if (!node.IsMap()) return node.Error("expected a mapping of librdkafka properties");
    for (const auto& [key, value] : node.Entries()) {
      for (std::string_view r : reserved) {
        if (key == r) {
          return node.KeyNode(key)->Error(
              absl::StrCat("'", key, "' is set by pgflow (", AsString(reserved_why), ")"));
        }
      }
      if (value.IsNull()) return value.Error("expected a value");
      absl::StatusOr<std::string> text = value.AsString();
      if (!text.ok()) return text.status();
      out->properties.emplace_back(key, *text);
      out->property_nodes.push_back(value);
    }
    return absl::OkStatus();
  };
  return std::make_unique<OptionTable<KafkaClientConfig>>(
      std::initializer_list<Option<KafkaClientConfig>>{
          CustomOption<KafkaClientConfig>("brokers", OptionType::kList, ReadBrokers)
              .Required()
              .Help("Bootstrap brokers, host:port: a list, or a comma-separated string."),
          CustomOption<KafkaClientConfig>("security", OptionType::kSection, ReadSecurity)
              .Section(&SecurityTable())
              .Help("Passed to librdkafka as security.protocol, sasl.mechanism, ..."),
          CustomOption<KafkaClientConfig>("properties", OptionType::kMap, read_properties)
              .Help(properties_help),
      });
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
