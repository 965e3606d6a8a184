#include "sinks/kafka/kafka_sink.h"

#include <librdkafka/rdkafka.h>

#include <array>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/kafka/kafka_client_config.h"
#include "engine/log.h"
#include "schemas/table_schema_json.h"

namespace pgflow {
namespace {

constexpr uint64_t kKiB = 1024;
// Delivery reports are served every this many messages while producing.
constexpr uint64_t kPollEvery = 64;
// Logged at most this often while waiting for brokers.
constexpr auto kWaitLogInterval = std::chrono::seconds(10);

std::string AsString(std::string_view s) { return std::string(s); }

// Properties pgflow sets itself and does not let `properties:` change: acknowledgement rests
// on them.
constexpr std::array<std::string_view, 6> kReservedProperties = {"acks",
                                                                 "request.required.acks",
                                                                 "enable.idempotence",
                                                                 "bootstrap.servers",
                                                                 "metadata.broker.list",
                                                                 "enable.gapless.guarantee"};

// A topic pattern may use only `allowed` placeholders.
std::function<absl::Status(const std::string&)> TopicPattern(
    std::initializer_list<std::string_view> allowed) {
  std::vector<std::string_view> names(allowed);
  return [names](const std::string& pattern) -> absl::Status {
    if (pattern.empty()) return absl::InvalidArgumentError("topic is empty");
    for (size_t open = pattern.find('{'); open != std::string::npos;
         open = pattern.find('{', open + 1)) {
      size_t close = pattern.find('}', open);
      if (close == std::string::npos) return absl::InvalidArgumentError("unclosed '{' in topic");
      std::string_view name(pattern.data() + open, close - open + 1);
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        std::string list;
        for (std::string_view a : names)
          absl::StrAppend(&list, list.empty() ? "" : ", ", AsString(a));
        return absl::InvalidArgumentError(
            absl::StrCat("unknown placeholder ", AsString(name), " in topic (known: ", list, ")"));
      }
    }
    return absl::OkStatus();
  };
}

// pgflow's own producer settings; `properties:` come after them.
std::vector<std::pair<std::string, std::string>> ProducerSettings(const KafkaSinkOptions& o,
                                                                  const std::string& client_id) {
  return {
      {"bootstrap.servers", o.client.brokers},
      {"client.id", client_id},
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"partitioner", "murmur2_random"},  // as the Java client: same key, same partition
      // A change waits at most 5 ms (librdkafka's default) for others to share its request.
      // With 1 ms a backlog went out in many small requests: in runs side by side on one
      // backlog, pgflow used about 18% more CPU and the broker about 30% more. Quiet latency
      // moves by a millisecond or two, below the broker's own tail.
      {"linger.ms", "5"},
      {"message.timeout.ms", std::to_string(o.delivery_timeout.count())},
      {"queue.buffering.max.messages", std::to_string(o.queue_messages)},
      {"queue.buffering.max.kbytes", std::to_string(std::max<uint64_t>(o.queue_bytes / kKiB, 1))},
  };
}

const OptionTable<KafkaClientConfig>& ClientTable() {
  static const auto* table =
      MakeKafkaClientTable(kReservedProperties,
                           "brokers: the `brokers` key; acks=all and idempotence: "
                           "acknowledgement depends on them",
                           "Any librdkafka producer property, {compression.type: lz4, linger.ms: "
                           "20} (pgflow sets linger.ms 5); acks and enable.idempotence are "
                           "fixed by pgflow.")
          .release();
  return *table;
}

absl::Status ReadTopicConfig(const ConfigNode& node,
                             std::vector<std::pair<std::string, std::string>>* config) {
  for (auto& [name, value] : node.Entries()) {
    absl::StatusOr<std::string> text = value.AsString();
    if (!text.ok() || !value.IsScalar()) {
      return value.Error(Cat("expected the value of topic setting ", name));
    }
    config->emplace_back(name, *text);
  }
  return absl::OkStatus();
}

const OptionTable<KafkaSinkOptions>& KafkaSinkTable() {
  using O = KafkaSinkOptions;
  static const auto* table = new OptionTable<O>(
      {
          EmbedOptions(&O::client, ClientTable()),
          StringOption("topic", &O::topic)
              .Check(TopicPattern({"{pipeline}", "{schema}", "{table}"}))
              .Help("Topic of each table's changes; {pipeline}, {schema} and {table} are "
                    "replaced (a fixed name puts every table on one topic)."),
          StringOption("schema_changes_topic", &O::schema_changes_topic)
              .Check(TopicPattern({"{pipeline}"}))
              .Help("Topic of DDL events; {pipeline} is replaced."),
          StringOption("messages_topic", &O::messages_topic)
              .Check(TopicPattern({"{pipeline}"}))
              .Help("Topic of logical decoding messages (pg_logical_emit_message); {pipeline} "
                    "is replaced."),
          ChoiceOption("format", &O::record, &KafkaRecordOptions::format)
              .Choices({{"debezium", KafkaFormat::kDebezium}, {"compact", KafkaFormat::kCompact}})
              .Help("Message value: debezium (before/after/op/source/ts_ms envelope) or compact "
                    "(pgflow's jsonl object)."),
          BoolOption("tombstones", &O::tombstones)
              .Help("After each delete, a message with the same key and a null value (for "
                    "compacted topics)."),
          BoolOption("create_topics", &O::create_topics)
              .Help("Create missing topics; when false a missing topic stops the pipeline with "
                    "an error."),
          IntOption("partitions", &O::partitions)
              .Range(1, 10000)
              .Help("Partitions of the topics pgflow creates."),
          CustomOption("topic_config", OptionType::kMap, ReadTopicConfig, &O::topic_config)
              .NoDefault()
              .Help("Settings of the table topics pgflow creates, as the brokers name them: "
                    "{cleanup.policy: compact} keeps each row's last message (tombstones "
                    "remove deleted rows); the schema changes' and messages' topics keep "
                    "every event."),
          IntOption("replication_factor", &O::replication_factor)
              .Range(-1, 1000)
              .Check([](const int& n) {
                return n == 0 ? absl::InvalidArgumentError(
                                    "must be -1 (the brokers' default) or at least 1")
                              : absl::OkStatus();
              })
              .Help("Replication factor of the topics pgflow creates; -1: the brokers' "
                    "default."),
          IntOption("queue_messages", &O::queue_messages)
              .Range(1, 10000000)
              .Help("Bound of the producer's queue in messages (queue.buffering.max.messages); "
                    "when full pgflow waits."),
          BytesOption("queue_bytes", &O::queue_bytes)
              .Range(1ull << 20, 2047ull << 30)
              .Help("Bound of the producer's queue in bytes (queue.buffering.max.kbytes)."),
          DurationOption("delivery_timeout", &O::delivery_timeout)
              .Range(std::chrono::milliseconds(0), std::chrono::hours(596))
              .DefaultText("0 (retry forever)")
              .Help("Give up on a message not delivered after this long (message.timeout.ms) "
                    "and restart from the last acknowledgement; 0: keep retrying while brokers "
                    "are down."),
          DurationOption("connect_timeout", &O::connect_timeout)
              .AtLeast(std::chrono::milliseconds(100))
              .Help("How long start-up, and the creation of a missing topic, wait for the "
                    "brokers to answer before failing."),
          BoolOption("numeric_as_number", &O::record, &KafkaRecordOptions::json,
                     &JsonOptions::numeric_as_number)
              .Help("Write numeric columns as JSON numbers instead of strings."),
      },
      [](const O& o, const ConfigNode& node) {
        return CheckKafkaProperties(ProducerSettings(o, "pgflow"), o.client, node);
      });
  return *table;
}

class KafkaSinkFactory : public SinkFactoryOf<KafkaSinkOptions> {
 public:
  std::string_view type() const override { return "kafka"; }
  std::string_view help() const override {
    return "Every change to Kafka topics through an idempotent producer (acks=all).";
  }

 protected:
  const OptionTable<KafkaSinkOptions>& table() const override { return KafkaSinkTable(); }
  std::unique_ptr<Sink> Build(const SinkContext& context,
                              std::shared_ptr<const KafkaSinkOptions> options) const override {
    return std::make_unique<KafkaSink>(context.pipeline, std::move(options));
  }
};

bool IsRetriable(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__FATAL:
      return true;
    default:
      return false;
  }
}

}  // namespace

KafkaSink::KafkaSink(std::string pipeline, std::shared_ptr<const KafkaSinkOptions> options)
    : pipeline_(std::move(pipeline)), options_(std::move(options)) {
  record_options_ = options_->record;
  record_options_.pipeline = pipeline_;
}

KafkaSink::~KafkaSink() { Close().IgnoreError(); }

void KafkaSink::OnDelivery(rd_kafka_s* rk, const rd_kafka_message_s* message, void* opaque) {
  auto* self = static_cast<KafkaSink*>(opaque);
  uint64_t id = reinterpret_cast<uintptr_t>(message->_private);
  if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    self->tracker_.Delivered(id);
    return;
  }
  if (!self->delivery_error_.ok()) return;
  std::string topic = rd_kafka_topic_name(message->rkt);
  std::string what =
      absl::StrCat("delivery to topic ", topic, " failed: ", rd_kafka_err2str(message->err));
  if (message->err == RD_KAFKA_RESP_ERR__FATAL) {
    char reason[512];
    rd_kafka_fatal_error(rk, reason, sizeof(reason));
    absl::StrAppend(&what, " (", reason, ")");
  }
  self->delivery_error_ =
      IsRetriable(message->err) ? absl::UnavailableError(what) : absl::InternalError(what);
}

void KafkaSink::OnError(rd_kafka_s* rk, int err, const char* reason, void* opaque) {
  auto* self = static_cast<KafkaSink*>(opaque);
  auto code = static_cast<rd_kafka_resp_err_t>(err);
  if (code == RD_KAFKA_RESP_ERR__FATAL) {
    char fatal[512];
    rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
    if (self->delivery_error_.ok()) {
      self->delivery_error_ = absl::UnavailableError(
          absl::StrCat("the Kafka producer hit a fatal error and must restart: ", fatal));
    }
    return;
  }
  auto now = std::chrono::steady_clock::now();
  if (now - self->last_error_log_ < kWaitLogInterval) return;
  self->last_error_log_ = now;
  LogWarning("kafka %s: %s (retrying; %d messages waiting for delivery)",
             self->options_->client.brokers, reason, self->tracker_.Outstanding());
}

absl::Status KafkaSink::Open() {
  std::string bad;
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (absl::Status s = SetKafkaProperties(conf, ProducerSettings(*options_, "pgflow-" + pipeline_),
                                          options_->client, &bad);
      !s.ok()) {
    rd_kafka_conf_destroy(conf);
    return s;
  }
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_dr_msg_cb(conf, &KafkaSink::OnDelivery);
  rd_kafka_conf_set_error_cb(conf, &KafkaSink::OnError);
  // librdkafka's own log lines go to pgflow's log (debug level): what matters of them also
  // comes through the error callback, rate-limited.
  rd_kafka_conf_set_log_cb(
      conf, [](const rd_kafka_t*, int level, const char* facility, const char* message) {
        LogDebug("librdkafka %s: %s", facility, message);
      });
  char errstr[512];
  producer_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (producer_ == nullptr) {
    rd_kafka_conf_destroy(conf);
    return absl::InvalidArgumentError(absl::StrCat("cannot create a Kafka producer: ", errstr));
  }
  // The cluster must answer now: a wrong address is a set-up error, reported at once.
  const rd_kafka_metadata_t* metadata = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(producer_, 1, nullptr, &metadata,
                                              static_cast<int>(options_->connect_timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::UnavailableError(
        absl::StrCat("no Kafka broker of ", options_->client.brokers, " (brokers, at ",
                     options_->client.brokers_position, ") answered within ",
                     options_->connect_timeout.count(), "ms: ", rd_kafka_err2str(err)));
  }
  for (int i = 0; i < metadata->topic_cnt; ++i) {
    if (metadata->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      existing_topics_.insert(metadata->topics[i].topic);
    }
  }
  rd_kafka_metadata_destroy(metadata);
  return absl::OkStatus();
}

absl::Status KafkaSink::EnsureTopicExists(const std::string& name, bool table_topic) {
  if (existing_topics_.contains(name)) return absl::OkStatus();
  // Refresh: another process may have created it since.
  const rd_kafka_metadata_t* metadata = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(producer_, 1, nullptr, &metadata,
                                              static_cast<int>(options_->connect_timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::UnavailableError(
        absl::StrCat("cannot read the Kafka cluster's topics: ", rd_kafka_err2str(err)));
  }
  for (int i = 0; i < metadata->topic_cnt; ++i) {
    if (metadata->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      existing_topics_.insert(metadata->topics[i].topic);
    }
  }
  rd_kafka_metadata_destroy(metadata);
  if (existing_topics_.contains(name)) return absl::OkStatus();
  if (!options_->create_topics) {
    return absl::FailedPreconditionError(
        absl::StrCat("Kafka topic ", name,
                     " does not exist and create_topics is false: create it, or set "
                     "create_topics: true"));
  }
  char errstr[512];
  rd_kafka_NewTopic_t* topic = rd_kafka_NewTopic_new(
      name.c_str(), options_->partitions, options_->replication_factor, errstr, sizeof(errstr));
  if (topic == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create topic ", name, ": ", errstr));
  }
  if (table_topic) {
    for (const auto& [setting, value] : options_->topic_config) {
      if (rd_kafka_NewTopic_set_config(topic, setting.c_str(), value.c_str()) !=
          RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_NewTopic_destroy(topic);
        return absl::InvalidArgumentError(
            absl::StrCat("cannot create topic ", name, ": topic_config ", setting));
      }
    }
  }
  rd_kafka_queue_t* queue = rd_kafka_queue_new(producer_);
  rd_kafka_AdminOptions_t* admin =
      rd_kafka_AdminOptions_new(producer_, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  // The brokers get connect_timeout to answer, as at start-up.
  const int timeout_ms = static_cast<int>(options_->connect_timeout.count());
  rd_kafka_AdminOptions_set_operation_timeout(admin, timeout_ms, errstr, sizeof(errstr));
  rd_kafka_AdminOptions_set_request_timeout(admin, timeout_ms, errstr, sizeof(errstr));
  rd_kafka_CreateTopics(producer_, &topic, 1, admin, queue);
  rd_kafka_event_t* event = rd_kafka_queue_poll(queue, timeout_ms + 5000);
  absl::Status status;
  if (event == nullptr) {
    status = absl::UnavailableError(absl::StrCat("creating Kafka topic ", name, " timed out"));
  } else if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    status = absl::UnavailableError(
        absl::StrCat("cannot create Kafka topic ", name, ": ", rd_kafka_event_error_string(event)));
  } else {
    size_t count = 0;
    const rd_kafka_topic_result_t** results =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &count);
    for (size_t i = 0; i < count; ++i) {
      rd_kafka_resp_err_t e = rd_kafka_topic_result_error(results[i]);
      if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) continue;
      const char* why = rd_kafka_topic_result_error_string(results[i]);
      status = absl::FailedPreconditionError(
          absl::StrCat("cannot create Kafka topic ", name, " (", options_->partitions,
                       " partitions, replication factor ", options_->replication_factor,
                       "): ", why != nullptr ? why : rd_kafka_err2str(e)));
    }
  }
  if (event != nullptr) rd_kafka_event_destroy(event);
  rd_kafka_AdminOptions_destroy(admin);
  rd_kafka_queue_destroy(queue);
  rd_kafka_NewTopic_destroy(topic);
  if (status.ok()) {
    LogInfo("kafka: created topic %s (%d partitions)", name, options_->partitions);
    existing_topics_.insert(name);
  }
  return status;
}

absl::StatusOr<rd_kafka_topic_s*> KafkaSink::Topic(const std::string& name, bool table_topic) {
  if (auto it = topics_.find(name); it != topics_.end()) return it->second;
  if (absl::Status s = EnsureTopicExists(name, table_topic); !s.ok()) return s;
  rd_kafka_topic_t* topic = rd_kafka_topic_new(producer_, name.c_str(), nullptr);
  if (topic == nullptr) {
    return absl::InternalError(absl::StrCat("cannot open Kafka topic ", name, ": ",
                                            rd_kafka_err2str(rd_kafka_last_error())));
  }
  topics_.emplace(name, topic);
  return topic;
}

absl::StatusOr<rd_kafka_topic_s*> KafkaSink::TopicFor(const Change& change) {
  schema_header_ = nullptr;
  if (change.op == Op::kDdl) {
    return Topic(ExpandTopic(options_->schema_changes_topic, pipeline_, "", ""), false);
  }
  if (change.table == nullptr) {
    return Topic(ExpandTopic(options_->messages_topic, pipeline_, "", ""), false);
  }
  auto it = table_topics_.find(change.table.get());
  if (it == table_topics_.end()) {
    auto header = std::make_shared<std::string>();
    AppendTableSchemaJson(*change.table, header.get());
    it = table_topics_.emplace(change.table.get(), TopicEntry{change.table, nullptr, header}).first;
  }
  schema_header_ = it->second.schema_header.get();
  // A topic the `route` transform chose.
  if (!change.destination.empty()) return Topic(change.destination, true);
  if (it->second.topic == nullptr) {
    absl::StatusOr<rd_kafka_topic_s*> topic =
        Topic(ExpandTopic(options_->topic, pipeline_, change.table->schema, change.table->name),
              true);
    if (!topic.ok()) return topic.status();
    it->second.topic = *topic;
  }
  return it->second.topic;
}

absl::Status KafkaSink::WaitForRoom() {
  // Resuming at the first delivery report would trade one wake-up per report with the
  // producer's threads; wait instead until a quarter of the queue is free, serving reports in
  // bulk every millisecond.
  const uint64_t low_water = options_->queue_messages - options_->queue_messages / 4;
  const uint64_t max_window = 4 * options_->queue_messages;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (absl::Status s = Poll(0); !s.ok()) return s;
  } while ((static_cast<uint64_t>(rd_kafka_outq_len(producer_)) > low_water ||
            tracker_.Window() >= max_window) &&
           std::chrono::steady_clock::now() < give_up);
  return absl::OkStatus();
}

absl::Status KafkaSink::Poll(int timeout_ms) {
  rd_kafka_poll(producer_, timeout_ms);
  since_poll_ = 0;
  return delivery_error_;
}

absl::Status KafkaSink::Produce(rd_kafka_topic_s* topic, const std::string* key,
                                const std::string* value, const Change& change,
                                std::string_view id_suffix) {
  event_id_.clear();
  AppendEventId(change, &event_id_);
  event_id_.append(id_suffix);
  lsn_text_.clear();
  AppendLsn(change.txn.commit_lsn, &lsn_text_);
  // The window of numbered messages is bounded too: a message stuck on one partition must
  // not let reports of the others pile up without limit.
  const uint64_t max_window = 4 * options_->queue_messages;
  auto waited_since = std::chrono::steady_clock::now();
  auto last_log = waited_since;
  auto note_wait = [&](const char* why) {
    auto now = std::chrono::steady_clock::now();
    if (now - last_log < kWaitLogInterval) return;
    last_log = now;
    LogWarning("kafka %s: %s for %ds (%d messages waiting for delivery); backing off",
               options_->client.brokers, why,
               std::chrono::duration_cast<std::chrono::seconds>(now - waited_since).count(),
               tracker_.Outstanding());
  };
  while (tracker_.Window() >= max_window) {
    if (absl::Status s = WaitForRoom(); !s.ok()) return s;
    note_wait("delivery reports are behind");
  }
  while (true) {
    rd_kafka_headers_t* headers = rd_kafka_headers_new(3);
    rd_kafka_header_add(headers, "pgflow.lsn", -1, lsn_text_.data(),
                        static_cast<ssize_t>(lsn_text_.size()));
    rd_kafka_header_add(headers, "pgflow.event_id", -1, event_id_.data(),
                        static_cast<ssize_t>(event_id_.size()));
    if (value != nullptr && schema_header_ != nullptr) {
      rd_kafka_header_add(headers, "pgflow.schema", -1, schema_header_->data(),
                          static_cast<ssize_t>(schema_header_->size()));
    }
    const uint64_t id = tracker_.Peek();
    const void* key_data = key != nullptr ? key->data() : nullptr;
    const size_t key_size = key != nullptr ? key->size() : 0;
    void* value_data = value != nullptr ? const_cast<char*>(value->data()) : nullptr;
    const size_t value_size = value != nullptr ? value->size() : 0;
    rd_kafka_resp_err_t err = rd_kafka_producev(
        producer_, RD_KAFKA_V_RKT(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(key_data, key_size), RD_KAFKA_V_VALUE(value_data, value_size),
        RD_KAFKA_V_HEADERS(headers),
        RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<uintptr_t>(id))), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      tracker_.Produced();
      break;
    }
    rd_kafka_headers_destroy(headers);
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      std::string what = absl::StrCat("cannot produce to topic ", rd_kafka_topic_name(topic), " (",
                                      value != nullptr ? value->size() : 0, " bytes, event ",
                                      event_id_, "): ", rd_kafka_err2str(err));
      if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
        absl::StrAppend(&what,
                        "; raise properties: {message.max.bytes: ...} here and the "
                        "topic's max.message.bytes on the brokers");
      }
      return IsRetriable(err) ? absl::UnavailableError(what) : absl::InternalError(what);
    }
    // The producer's queue is full: the brokers are slow or down. Wait for deliveries.
    if (absl::Status s = WaitForRoom(); !s.ok()) return s;
    note_wait("the producer queue is full");
  }
  if (++since_poll_ >= kPollEvery) return Poll(0);
  return delivery_error_;
}

absl::Status KafkaSink::MaybePoll() {
  return ++since_poll_ >= kPollEvery ? Poll(0) : delivery_error_;
}

absl::Status KafkaSink::OnCommit(const TxnInfo& txn) {
  tracker_.MarkPosition(txn.end_lsn);
  return MaybePoll();
}

absl::Status KafkaSink::OnPosition(Lsn position) {
  tracker_.MarkPosition(position);
  return MaybePoll();
}

absl::Status KafkaSink::OnChunkDone(uint64_t chunk, const TableSchemaPtr&) {
  tracker_.MarkChunk(chunk);
  return MaybePoll();
}

absl::Status KafkaSink::OnChange(const Change& change, bool) {
  absl::StatusOr<rd_kafka_topic_s*> topic = TopicFor(change);
  if (!topic.ok()) return topic.status();
  if (change.op == Op::kUpdate) {
    old_key_.clear();
    key_.clear();
    if (AppendKafkaOldKey(change, record_options_.json, &old_key_) &&
        AppendKafkaKey(change, record_options_.json, &key_) && old_key_ != key_) {
      // The row's key changed: a delete under the old key, then a create under the new one.
      Change gone = change;
      gone.op = Op::kDelete;
      gone.after.clear();
      if (absl::Status s = ProduceChange(*topic, gone, ":old-key"); !s.ok()) return s;
      Change moved = change;
      moved.op = Op::kInsert;
      moved.before.clear();
      moved.before_kind = BeforeKind::kNone;
      return ProduceChange(*topic, moved);
    }
  }
  return ProduceChange(*topic, change);
}

absl::Status KafkaSink::ProduceChange(rd_kafka_topic_s* topic, const Change& change,
                                      std::string_view id_suffix) {
  key_.clear();
  bool has_key = AppendKafkaKey(change, record_options_.json, &key_);
  value_.clear();
  int64_t now_ms = absl::ToUnixMillis(absl::Now());
  if (change.op == Op::kDdl) {
    AppendSchemaChangeValue(change, record_options_, now_ms, &value_);
    key_ = pipeline_;
    has_key = true;
  } else {
    AppendKafkaValue(change, record_options_, now_ms, &value_);
  }
  if (absl::Status s = Produce(topic, has_key ? &key_ : nullptr, &value_, change, id_suffix);
      !s.ok()) {
    return s;
  }
  if (change.op == Op::kDelete && options_->tombstones && has_key) {
    return Produce(topic, &key_, nullptr, change, id_suffix);
  }
  return absl::OkStatus();
}

absl::Status KafkaSink::Flush() {
  if (producer_ == nullptr) return absl::FailedPreconditionError("kafka sink is not open");
  return Poll(0);
}

absl::Status KafkaSink::Close() {
  if (producer_ == nullptr) return absl::OkStatus();
  // Whatever is still queued was not acknowledged; it is produced again after a restart.
  if (rd_kafka_flush(producer_, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    // Brokers down: drop what is left rather than wait for it (it was not acknowledged).
    rd_kafka_purge(producer_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(producer_, 0);
  }
  for (auto& [name, topic] : topics_) rd_kafka_topic_destroy(topic);
  topics_.clear();
  table_topics_.clear();
  rd_kafka_destroy(producer_);
  producer_ = nullptr;
  return absl::OkStatus();
}

void RegisterKafkaSink() { RegisterSinkFactory(std::make_unique<KafkaSinkFactory>()); }

}  // namespace pgflow
