#pragma once

// The `kafka` sink: publishes every change, snapshot rows included, to Kafka topics through
// librdkafka's idempotent producer (enable.idempotence, acks=all).
//
//   sinks:
//     events: {kafka: {brokers: "127.0.0.1:9092", topic: "{pipeline}.{schema}.{table}"}}
//
// Messages (see kafka_record.h): key = the row's primary key as JSON, value = a Debezium
// envelope (or pgflow's compact object), headers `pgflow.lsn` (commit LSN, X/X),
// `pgflow.event_id` ("<commit lsn>:<seq>") and, on every change of a table, `pgflow.schema`:
// the table's shape (schemas/table_schema_json.h: column names, type OIDs and modifiers,
// key columns), which the JSON values alone do not say and a consumer rebuilding typed rows
// needs (sources/kafka/). It is written once per relation version and copied onto each
// message (about 25 bytes per column). A delete may be followed by a tombstone (same key,
// null value) for compacted topics. DDL events go to `schema_changes_topic`, logical decoding
// messages to `messages_topic`. A change the `route` transform sent elsewhere goes to its topic.
//
// Acknowledgement: producing is asynchronous. Every produced message is numbered; every
// acknowledgeable position (a commit) and snapshot chunk is a mark after the messages before
// it. DurableThrough() and DurableChunkThrough() report the last mark all of whose messages
// have a successful delivery report, however the partitions' reports interleave: the slot is
// never acknowledged past a change Kafka does not hold.
//
// At-least-once: after a crash, or a lost source connection (a transaction cut off and sent
// again), changes after the last acknowledgement are produced again, with the same event id.
// Consumers that need exactly-once processing deduplicate on `pgflow.event_id`.
//
// Brokers down: librdkafka retries without a time limit (delivery_timeout 0) and its queue is
// bounded (queue_messages, queue_bytes); when it is full Write waits, polling delivery reports,
// which back-pressures the pipeline. A delivery that fails for good stops the pipeline with
// the error; nothing after the last durable mark is acknowledged.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "common/kafka/kafka_client_config.h"
#include "engine/delivery_tracker.h"
#include "engine/registry.h"
#include "engine/transactional_sink.h"
#include "sinks/kafka/kafka_record.h"

struct rd_kafka_s;
struct rd_kafka_topic_s;
struct rd_kafka_message_s;

namespace pgflow {

struct KafkaSinkOptions : SinkOptions {
  // Brokers, security settings and `properties:` (acks and enable.idempotence are pgflow's).
  KafkaClientConfig client;
  std::string topic = "{pipeline}.{schema}.{table}";
  std::string schema_changes_topic = "{pipeline}.schema_changes";
  std::string messages_topic = "{pipeline}.messages";
  KafkaRecordOptions record;                      // format, JSON options (pipeline set at Build)
  bool tombstones = true;                         // a null-valued message after each delete
  bool create_topics = true;                      // create missing topics (else fail)
  int partitions = 3;                             // of topics pgflow creates
  int replication_factor = -1;                    // of topics pgflow creates; -1 broker default
  // Topic settings of the table topics pgflow creates ({cleanup.policy: compact}).
  std::vector<std::pair<std::string, std::string>> topic_config;
  uint64_t queue_messages = 100000;               // queue.buffering.max.messages
  uint64_t queue_bytes = 64ull << 20;             // queue.buffering.max.kbytes * 1024
  std::chrono::milliseconds delivery_timeout{0};  // message.timeout.ms; 0 = retry forever
  // Open's wait for the cluster's metadata, and a topic creation's.
  std::chrono::milliseconds connect_timeout{10000};
};

class KafkaSink : public TransactionalSink {
 public:
  KafkaSink(std::string pipeline, std::shared_ptr<const KafkaSinkOptions> options);
  ~KafkaSink() override;

  // Creates the producer and fetches the cluster's metadata; Unavailable naming the brokers
  // and their place in the pipeline file when none answers within connect_timeout.
  absl::Status Open() override;
  // Serves delivery reports; returns the first failed delivery, if any. Does not wait.
  absl::Status Flush() override;
  std::optional<Lsn> DurableThrough() const override { return tracker_.DurablePosition(); }
  uint64_t DurableChunkThrough() const override { return tracker_.DurableChunk(); }
  // Waits briefly for outstanding deliveries (the engine has already waited for the durable
  // position), then destroys the producer.
  absl::Status Close() override;

 protected:
  absl::Status OnChange(const Change& change, bool in_txn) override;
  absl::Status OnCommit(const TxnInfo& txn) override;
  // What was produced of a cut-off transaction stays on the topic and is produced again, with
  // the same event ids, when the transaction comes again.
  absl::Status OnRollback() override { return absl::OkStatus(); }
  absl::Status OnPosition(Lsn position) override;
  absl::Status OnChunkDone(uint64_t chunk, const TableSchemaPtr& table) override;

 private:
  // Serves delivery reports every kPollEvery events; the first failed delivery, if any.
  absl::Status MaybePoll();

  struct TopicEntry {
    std::shared_ptr<const TableSchema> table;  // keeps the cache key's address in use
    rd_kafka_topic_s* topic = nullptr;
    // The table's shape (schemas/table_schema_json.h), at an address that stays put.
    std::shared_ptr<const std::string> schema_header;
  };
  static void OnDelivery(rd_kafka_s* rk, const rd_kafka_message_s* message, void* opaque);
  static void OnError(rd_kafka_s* rk, int err, const char* reason, void* opaque);

  // The topic handle for `name`, creating the topic on the cluster if it is missing.
  // The topic `name`, created when missing (`table_topic`: a table's, which gets topic_config).
  absl::StatusOr<rd_kafka_topic_s*> Topic(const std::string& name, bool table_topic);
  absl::Status EnsureTopicExists(const std::string& name, bool table_topic);
  // The topic of `change`; sets schema_header_ to its table's `pgflow.schema` header (null for
  // changes without a table).
  absl::StatusOr<rd_kafka_topic_s*> TopicFor(const Change& change);
  // Produces one message, waiting (polling) while librdkafka's queue is full.
  // `id_suffix` is appended to the change's event id (":old-key"). A message with a value
  // carries schema_header_, if any.
  absl::Status Produce(rd_kafka_topic_s* topic, const std::string* key, const std::string* value,
                       const Change& change, std::string_view id_suffix = {});
  // Publishes one row change (value, then a tombstone after a delete when asked).
  absl::Status ProduceChange(rd_kafka_topic_s* topic, const Change& change,
                             std::string_view id_suffix = {});
  absl::Status Poll(int timeout_ms);
  // Waits (serving delivery reports) until the producer's queue has room again, or 100 ms.
  absl::Status WaitForRoom();

  const std::string pipeline_;
  std::shared_ptr<const KafkaSinkOptions> options_;
  KafkaRecordOptions record_options_;
  rd_kafka_s* producer_ = nullptr;
  DeliveryTracker tracker_;
  absl::Status delivery_error_;                                 // first failed delivery report
  absl::flat_hash_map<std::string, rd_kafka_topic_s*> topics_;  // by topic name
  absl::flat_hash_map<const TableSchema*, TopicEntry> table_topics_;
  absl::flat_hash_set<std::string> existing_topics_;  // from the last metadata fetch
  uint64_t since_poll_ = 0;
  std::chrono::steady_clock::time_point last_error_log_{};
  std::string key_;
  std::string old_key_;
  std::string value_;
  std::string event_id_;
  std::string lsn_text_;
  const std::string* schema_header_ = nullptr;  // of the change being produced
};

// Registers the "kafka" sink type with the engine's factory registry.
void RegisterKafkaSink();

}  // namespace pgflow
