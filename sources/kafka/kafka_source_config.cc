#include "sources/kafka/kafka_source_config.h"

#include <regex.h>

#include <algorithm>
#include <array>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace pgflow {
namespace {

// Properties pgflow sets itself: the group, where it starts, and when offsets are committed
// (acknowledgement rests on them).
constexpr std::array<std::string_view, 7> kReservedProperties = {
    "bootstrap.servers",   "metadata.broker.list",     "group.id",
    "enable.auto.commit",  "enable.auto.offset.store", "auto.offset.reset",
    "enable.partition.eof"};

}  // namespace

std::vector<std::pair<std::string, std::string>> ConsumerSettings(const KafkaSourceOptions& o,
                                                                  const std::string& client_id) {
  return {
      {"bootstrap.servers", o.client.brokers},
      {"client.id", client_id},
      {"group.id", o.group},
      // Offsets are committed by pgflow, and only for what every sink holds.
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      // A partition without a committed offset is assigned at offset_reset's end explicitly;
      // any other reset means messages this group never read are gone: an error, never a
      // silent skip.
      {"auto.offset.reset", "error"},
      {"enable.partition.eof", "false"},
      // New topics matching a pattern, and named topics created after start-up, are found
      // within 10 s rather than librdkafka's 5 minutes.
      {"topic.metadata.refresh.interval.ms", "10000"},
  };
}

namespace {

// librdkafka's default max.poll.interval.ms.
constexpr int64_t kDefaultMaxPollIntervalMs = 300000;

absl::Status ReadTopics(const ConfigNode& node, std::vector<std::string>* out) {
  absl::StatusOr<std::vector<std::string>> topics = node.AsStringList();
  if (!topics.ok()) return topics.status();
  if (topics->empty()) return node.Error("list at least one topic");
  std::vector<ConfigNode> items = node.IsSequence() ? node.Items() : std::vector<ConfigNode>{node};
  for (size_t i = 0; i < topics->size(); ++i) {
    const std::string& t = (*topics)[i];
    const ConfigNode& at = i < items.size() ? items[i] : node;
    if (t.empty()) return at.Error("a topic name is empty");
    if (t[0] == '^') {
      regex_t re;
      int rc = regcomp(&re, t.c_str(), REG_EXTENDED | REG_NOSUB);
      if (rc != 0) {
        char why[256];
        regerror(rc, &re, why, sizeof(why));
        return at.Error(absl::StrCat("invalid regular expression '", t, "': ", why));
      }
      regfree(&re);
    } else if (t.size() > 249 || !std::all_of(t.begin(), t.end(), [](char c) {
                 return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
               })) {
      return at.Error(absl::StrCat("invalid topic name '", t,
                                   "': Kafka allows [A-Za-z0-9._-], at most 249 characters "
                                   "(a regular expression starts with '^')"));
    }
    if (std::find(out->begin(), out->end(), t) != out->end()) {
      return at.Error(absl::StrCat("topic '", t, "' is listed twice"));
    }
    out->push_back(t);
  }
  return absl::OkStatus();
}

// The revocation waits inside the poll: a consumer that does not poll again within
// max.poll.interval.ms leaves the group, and its partitions go without their offsets.
absl::Status CheckRebalanceTimeout(const KafkaSourceOptions& o, const ConfigNode& node) {
  int64_t max_poll_ms = kDefaultMaxPollIntervalMs;
  std::optional<ConfigNode> max_poll_node;
  for (size_t i = 0; i < o.client.properties.size(); ++i) {
    const auto& [name, value] = o.client.properties[i];
    if (name != "max.poll.interval.ms") continue;
    if (!absl::SimpleAtoi(value, &max_poll_ms)) max_poll_ms = kDefaultMaxPollIntervalMs;
    if (i < o.client.property_nodes.size()) max_poll_node = o.client.property_nodes[i];
  }
  if (o.rebalance_timeout.count() < max_poll_ms) return absl::OkStatus();
  std::optional<ConfigNode> at = node.Get("rebalance_timeout");
  if (!at.has_value()) at = max_poll_node;
  return (at.has_value() ? *at : node)
      .Error(absl::StrCat("rebalance_timeout (", o.rebalance_timeout.count(),
                          "ms) must be below the consumer's max.poll.interval.ms (", max_poll_ms,
                          "ms): a rebalance waits inside the poll, and a consumer that polls no "
                          "more often leaves the group. Lower rebalance_timeout or raise "
                          "properties: {max.poll.interval.ms: ...}"));
}

const OptionTable<KafkaClientConfig>& ClientTable() {
  static const auto* table =
      MakeKafkaClientTable(kReservedProperties,
                           "brokers: the `brokers` key; the group: `group`; where it starts: "
                           "`offset_reset`; offsets are committed only once every sink holds the "
                           "events",
                           "Any librdkafka consumer property, {fetch.max.bytes: 1048576}; "
                           "group.id, offsets and auto commit are pgflow's.")
          .release();
  return *table;
}

}  // namespace

const OptionTable<KafkaSourceOptions>& KafkaSourceTable() {
  using O = KafkaSourceOptions;
  using std::chrono::milliseconds;
  static const auto* table = new OptionTable<O>(
      {
          EmbedOptions(&O::client, ClientTable()),
          CustomOption("topics", OptionType::kList, ReadTopics, &O::topics)
              .Required()
              .Help("Topics to read: names, or regular expressions starting with '^' (POSIX "
                    "extended, as librdkafka reads them), e.g. '^shop\\..*'. Include the "
                    "schema-changes topic for DDL."),
          StringOption("group", &O::group)
              .Required()
              .NonEmpty()
              .Help("Consumer group: its committed offsets are where the pipeline resumes; run "
                    "several delivery processes in one group to share the partitions."),
          ChoiceOption("offset_reset", &O::offset_reset)
              .Choices({{"earliest", "earliest"}, {"latest", "latest"}})
              .Help("Where a partition without a committed offset starts: earliest (everything "
                    "on the topic) or latest (only what is written from now on)."),
          DurationOption("commit_interval", &O::commit_interval)
              .Range(milliseconds(100), milliseconds(3600000))
              .Help("How often the offsets of messages every sink holds are committed."),
          DurationOption("connect_timeout", &O::connect_timeout)
              .Range(milliseconds(100), milliseconds(3600000))
              .Help("How long start-up waits for the brokers to answer before failing."),
          DurationOption("rebalance_timeout", &O::rebalance_timeout)
              .Range(milliseconds(1000), milliseconds(3600000))
              .Help("How long a rebalance waits for the events of the partitions it takes away "
                    "to be held by every sink; past it the run starts again from the committed "
                    "offsets. Below the consumer's max.poll.interval.ms (5m by default)."),
          ChoiceOption("truncate", &O::truncate)
              .Choices({{"auto", KafkaTruncateMode::kAuto},
                        {"apply", KafkaTruncateMode::kApply},
                        {"skip", KafkaTruncateMode::kSkip}},
                       "truncate mode")
              .Help("auto: apply a truncate read from a topic of one partition, skip it (with a "
                    "warning) from a topic of several, where it cannot be placed among the other "
                    "partitions' changes; apply; skip."),
          DurationOption("ddl_wait", &O::ddl_wait)
              .Range(milliseconds(0), milliseconds(3600000))
              .Help("How long a row with a new column waits for its table's DDL event from the "
                    "schema-changes topic before it goes on as it is; 0: it does not wait."),
          ChoiceOption("keyless", &O::skip_keyless)
              .Choices({{"stop", false}, {"skip", true}}, "keyless mode")
              .Help("Rows of a table without a primary key, which cannot be applied by key: "
                    "stop (the pipeline fails, naming the table) or skip (logged once per "
                    "table)."),
          ChoiceOption("malformed", &O::skip_malformed)
              .Choices({{"stop", false}, {"skip", true}}, "malformed mode")
              .Help("A message that is not a pgflow event: stop (the pipeline fails, naming "
                    "topic, partition and offset) or skip (logged the same way; its offset is "
                    "committed)."),
      },
      [](const O& o, const ConfigNode& node) -> absl::Status {
        if (absl::Status s = CheckRebalanceTimeout(o, node); !s.ok()) return s;
        return CheckKafkaProperties(ConsumerSettings(o, "pgflow"), o.client, node);
      });
  return *table;
}

}  // namespace pgflow
