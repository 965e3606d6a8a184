#pragma once

// The `kafka` source: a pipeline that reads pgflow's events back from Kafka, as a member of a
// consumer group, and delivers them to its sinks; one capture process (a postgres source with a
// kafka sink) feeds any number of delivery processes. Its design (the ordering rule, positions,
// offsets, rebalances, retention) is in sources/kafka/README.md.
//
//   source:
//     kafka: {brokers: "k1:9092", topics: ['^shop\..*'], group: shop-replica}
//
// Each key's changes arrive in commit order, nothing more: sinks must apply changes
// idempotently by key, and must not skip a transaction by its position (SourcePositions::
// kSourceSequence). Offsets are committed only for messages every sink holds.

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "engine/registry.h"
#include "engine/source.h"
#include "sources/kafka/kafka_message.h"
#include "sources/kafka/kafka_source_config.h"
#include "sources/kafka/offset_tracker.h"
#include "sources/kafka/read_order.h"
#include "sources/kafka/shape_gate.h"

struct rd_kafka_s;
struct rd_kafka_message_s;
struct rd_kafka_topic_partition_list_s;

namespace pgflow {

class KafkaSource : public Source {
 public:
  KafkaSource(std::string pipeline, std::shared_ptr<const KafkaSourceOptions> options);
  ~KafkaSource() override;

  // Creates the consumer, checks that a broker answers within connect_timeout (Unavailable
  // naming the brokers and their place in the pipeline file otherwise), warns about named
  // topics that do not exist yet, and subscribes. Returns the position this run's sequence
  // starts after.
  absl::StatusOr<Lsn> Prepare() override;
  // Reads, decodes and hands on messages until `stop` (OK), a malformed message (InvalidArgument
  // naming it, unless skipped), a row of a table without a key (FailedPrecondition naming it,
  // unless skipped), or a fatal consumer error or a rebalance that could not keep the order
  // (Unavailable: `pgflow run` starts again from the committed offsets).
  absl::Status Stream(Emitter& emitter, Acknowledgements acks, const StopSignal& stop) override;
  // Commits, synchronously, the offsets of everything `acks` confirms; leaves the group.
  absl::Status Finish(Acknowledgements acks) override;

 private:
  // librdkafka's callbacks (kafka_source.cc), which call the members below.
  friend class KafkaSourceCallbacks;

  // A rebalance: `assign` the partitions, or take them away.
  void Rebalance(bool assign, rd_kafka_topic_partition_list_s* partitions);
  void OnError(int err, const char* reason);
  // Gives up `partitions` (a revocation, or a loss): waits until their events are durable
  // and commits; fails the run when they are not (see "Rebalances" above).
  void Revoke(rd_kafka_topic_partition_list_s* partitions, bool lost);
  // The brokers' answer to a commit: marks the partitions committed that were.
  void OnCommitted(int err, const rd_kafka_topic_partition_list_s* offsets);
  void LogCommitError(std::string_view what);
  // Ends the run with `status` (the first one kept): Stream returns it.
  void Fail(absl::Status status);
  // Pauses or resumes `partitions` (held ones stay paused).
  void SetPaused(const rd_kafka_topic_partition_list_s* partitions, bool paused);

  // Polls up to a batch of messages into polled_ (waiting up to `wait` for the first).
  void Poll(std::chrono::milliseconds wait);
  // Takes `m`, just polled, into polled_ if it is its partition's next message (see "Offsets
  // read in order" above); otherwise destroys it, and after a gap seeks the partition back.
  void Take(rd_kafka_message_s* m);
  // Turns polled_ into pending_ (one transaction) and records their offsets.
  absl::Status Decode();
  // What a polled message that carries an error means: a non-OK status ends the batch (an
  // authorisation error, messages lost to retention); any other error is logged (at most once
  // per kErrorLogInterval) and the message passed over.
  absl::Status MessageError(const rd_kafka_message_s* m);
  // Takes the decoded event of polled_[index] into `batch` (as a change of `txn`), drops it
  // (keyless: skip, a shape the gate drops, a truncate not applied) or holds its partition until
  // its table's DDL event arrives (sets *held; polled_[index] is then the held list's). A non-OK
  // status ends the batch.
  absl::Status Admit(size_t index, DecodedMessage& decoded, const TxnInfo& txn, EventBatch* batch,
                     bool* held);
  // Hands pending_ on; while the engine's queues are full, pauses the partitions and serves
  // the group. Returns when it is handed on, `stop` is requested, the pipeline closed, or
  // `deadline` passed (then pending_ is still set).
  absl::Status EmitPending(std::chrono::steady_clock::time_point deadline);
  void PausePartitions();
  void ResumePartitions();
  // Commits what the engine confirmed: asynchronously every commit_interval, or now (`sync`).
  void Commit(bool sync, const std::vector<PartitionOffset>* only = nullptr);
  // Whether a gap in `tp` from `gap_start` was left by retention (it starts below the
  // partition's first offset); then the run fails with a data-loss error naming it.
  bool DeletedBeforeRead(const TopicPartition& tp, int64_t gap_start);
  // Whether a truncate read from `topic` (handle of message `m`) is applied.
  bool ApplyTruncate(const rd_kafka_message_s* m);
  void DropPolled(const TopicPartition& partition);

  // Moves the held messages of partitions that may go on to the front of polled_.
  void ReleaseHeld();

  const std::string pipeline_;
  const std::shared_ptr<const KafkaSourceOptions> options_;
  rd_kafka_s* consumer_ = nullptr;
  bool cooperative_ = false;  // the group's rebalance protocol is COOPERATIVE
  KafkaMessageDecoder decoder_;
  OffsetTracker tracker_;

  // Set for the duration of Stream (the rebalance callback runs inside it) and Finish.
  Emitter* emitter_ = nullptr;
  const AckTracker* acks_ = nullptr;
  const StopSignal* stop_ = nullptr;
  bool closing_ = false;       // Finish is leaving the group: revocations do not wait
  bool closed_ = false;        // the engine closed the pipeline (a sink failed)
  bool in_rebalance_ = false;  // inside the rebalance callback (within a poll)

  Lsn last_position_;                        // of the last batch built
  std::vector<rd_kafka_message_s*> polled_;  // polled, not yet decoded; owned
  EventBatchPtr pending_;                    // decoded, not yet handed on to every sink
  bool paused_ = false;
  absl::Status fatal_;  // ends the run (the error callback, a failed rebalance); see Fail
  std::chrono::steady_clock::time_point last_commit_{};
  std::chrono::steady_clock::time_point last_error_log_{};
  std::chrono::steady_clock::time_point last_commit_error_log_{};
  absl::flat_hash_map<std::string, int> partition_counts_;  // by topic, for truncates

  ShapeGate gate_;  // the schema-change gate (see "Schema changes" above)
  // Partitions held back by the gate: their messages from the waiting row on, in order.
  struct Held {
    std::string table;
    std::deque<rd_kafka_message_s*> messages;  // owned
    std::chrono::steady_clock::time_point since;
    bool released = false;  // may go on (its DDL came, or ddl_wait passed)
  };
  absl::flat_hash_map<TopicPartition, Held> held_;
  ReadOrder read_order_;  // each assigned partition's next offset (sources/kafka/README.md,
                          // "Offsets read in order")
  std::chrono::steady_clock::time_point last_order_log_{};
  uint64_t refetched_ = 0;                          // messages dropped because they came again
  absl::flat_hash_set<std::string> keyless_noted_;  // tables whose rows were skipped, logged
  uint64_t messages_ = 0;
  uint64_t skipped_ = 0;
};

// Registers the "kafka" source type with the engine's factory registry.
void RegisterKafkaSource();

// Sets where each of `partitions` starts, given rd_kafka_committed's answer in it: at the
// group's committed offset, or, for a partition without one (no error, offset
// RD_KAFKA_OFFSET_INVALID), at the end `offset_reset` ("earliest" or "latest") names.
// Returns Unavailable naming the partition when one's committed offset could not be read (its
// `err`): starting it at offset_reset's end instead would skip or repeat its backlog.
absl::Status SetStartOffsets(const std::string& group, const std::string& offset_reset,
                             rd_kafka_topic_partition_list_s* partitions);

}  // namespace pgflow
