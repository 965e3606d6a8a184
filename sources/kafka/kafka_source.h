#pragma once

// The `kafka` source: a pipeline that reads pgflow's events back from Kafka, as a member of a
// consumer group, and delivers them to its sinks. One capture process (a postgres source with
// a kafka sink) feeds any number of delivery processes, on any machines.
//
//   source:
//     kafka:
//       brokers: "k1:9092,k2:9092"
//       topics: [shop.public.orders, shop.public.items, shop.schema_changes]  # or '^shop\..*'
//       group: shop-replica
//
// What comes in. Every message the kafka sink wrote (sinks/kafka/kafka_record.h) becomes the
// typed change it was made from (kafka_message.h): its `pgflow.schema` header gives the
// columns' types, schemas/json_decoding.h turns the JSON values back into PostgreSQL's text
// form. Snapshot rows (op r) are `read` changes, which sinks upsert; DDL events from the
// schema-changes topic are `ddl` changes (a postgres sink replays them under its
// `ddl.mode: apply`); logical decoding messages are `message` changes; tombstones are
// skipped.
//
// THE ORDERING RULE. Kafka keeps order within a partition only, and the kafka sink sends
// every change of a row to one partition: its key is the row's primary key (an update that
// changes the key is a delete of the old key and a create of the new one). So each key's
// changes arrive in commit order, and nothing more: changes of different keys, of different
// tables, of one source transaction, interleave as the partitions are read. The target is
// therefore not transactionally consistent while it catches up, but a sink that applies each
// change idempotently by key (upserts and deletes, as the postgres and kv sinks do) converges
// to the source's rows once every message is read, whatever the interleaving and however
// often a message is read again: the last change of a key decides its row.
// Consequences:
//   - Positions. This source acknowledges positions of its own (SourcePositions::
//     kSourceSequence), not the producer's LSNs: each batch of messages it hands on is one
//     transaction whose end position is the next number of a counter that starts, in each run,
//     above the microseconds since the Unix epoch and above anything this process used. A
//     sink that stores applied positions to skip replays (the postgres sink's pgflow.applied)
//     must not: an event that comes again after a restart, or an earlier commit LSN read after
//     a later one from another partition, is not "already applied". The postgres sink reads
//     PipelineConfig::positions and skips nothing.
//   - Truncate is not keyed: it cannot be placed among the other partitions' changes. With
//     `truncate: auto` (the default) it is applied when its topic has one partition (then the
//     whole table is in commit order) and skipped with a warning otherwise; `apply` and `skip`
//     force either.
//   - Schema changes travel on their own topic (one partition, in commit order) and are
//     applied when read, not between the rows they separate. Every row carries its table's
//     shape and its place (commit LSN, sequence), so the source puts them back in order where
//     it matters (shape_gate.h): a row with a column (name and type) that the last shape
//     handed on for its table lacks waits, its partition paused, until a DDL event describing
//     that table arrives (at most `ddl_wait`; then it goes on as it is, and a PostgreSQL
//     target without the column refuses it with its error); a row placed before the DDL that
//     set the last shape (its own transaction's DDL included) loses the columns that DDL
//     dropped; a row placed before its table's DROP TABLE is not applied, and one placed
//     before a rename goes to the new name. A column renamed is a column dropped and another
//     added: a row of the old shape read after the rename does not set the renamed column.
//   - A row moved to a new key whose TOASTed columns were unchanged reaches the topic without
//     their values; it is applied as an update of the new key and logged.
//   - Rows need a key. A table under REPLICA IDENTITY FULL that has a primary key is keyed by
//     it (the kafka sink partitions its messages by it and names it in the pgflow.schema
//     header; the source hands its rows on keyed by it, kafka_message.h). A table without a
//     primary key (NOTHING, DEFAULT without one, FULL without one) has no key to apply its
//     rows idempotently by: every replay would insert them again. Its rows stop the pipeline
//     with an error naming the table (FailedPrecondition), or, with `keyless: skip`, are
//     skipped and logged once per table.
//
// Acknowledgement and offsets. Offsets are committed to the group only for messages every
// sink holds: each message is recorded with the position of the batch it went out in
// (offset_tracker.h); when the engine confirms a position, each partition's offset after its
// last message at or below it is committed (every commit_interval, asynchronously; and
// synchronously at a clean stop and before a partition is given up in a rebalance). An offset
// counts as committed once the brokers said so for its partition: one whose commit failed is
// committed again at the next interval. After kill -9 the group re-reads from the committed
// offsets: at-least-once, and harmless under the rule above. A partition whose committed
// offset cannot be read when it is assigned ends the run (Unavailable; the next run asks
// again): it is never started at offset_reset's end instead.
//
// Rebalances. Before a partition is given up, the events read from it must be held by every
// sink: else its next owner's changes could reach a sink before these older ones. The
// revocation waits for that (at most rebalance_timeout, which must stay below the consumer's
// max.poll.interval.ms: the wait runs inside the poll). When the wait runs out, or the
// partition was lost (the group gave it away without a revocation, as after a missed session),
// and events of it are not durable yet, the run ends with Unavailable and `pgflow run` starts
// again from the committed offsets, rather than go on delivering them. Residual risk: what the
// engine's queues (buffer.queue_bytes) already hold of those events is still written by the
// sinks while they drain, possibly after the next owner wrote newer changes of the same keys,
// which then stay overwritten until those keys change again. A clean stop, or a sink failure,
// ends the wait early.
//
// Offsets read in order. The source checks what librdkafka hands it against each partition's
// next offset (the committed one at assignment, then the last message's plus one): a message
// below it (fetched again, as librdkafka 2.0 can do around pause, resume and seek) is dropped,
// since it went out already and handing it on again would set its key back to an older
// value; a message above it (messages missing in between) is dropped and the partition
// sought back to the missing offset. If the same gap shows again after that seek, it is the
// topic's own (a compacted topic, transaction markers) and reading goes on, taking the
// partition's later gaps as they come (a compacted topic has many). Either is logged.
//
// Memory stays bounded: when the engine's queues are full the source pauses every assigned
// partition (librdkafka drops what it prefetched and fetches it again on resume) and keeps
// serving the group (heartbeats, rebalances) until there is room.
//
// Retention: a partition whose next message to read was deleted from the topic before this
// group read it (the consumer fell behind the topic's retention) stops the pipeline with an
// error (DataLoss) rather than skipping ahead: the sinks miss those changes.
// `offset_reset` only says where a partition without any committed offset starts.
//
// Malformed messages (not pgflow's JSON, no pgflow.schema header, a value that cannot be of
// its column's type) stop the pipeline with an error naming the topic, partition and offset;
// with `malformed: skip` they are logged the same way and skipped (their offsets committed).

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
#include "common/kafka/kafka_client_config.h"
#include "engine/config.h"
#include "engine/source.h"
#include "sources/kafka/kafka_message.h"
#include "sources/kafka/offset_tracker.h"
#include "sources/kafka/read_order.h"
#include "sources/kafka/shape_gate.h"

struct rd_kafka_s;
struct rd_kafka_message_s;
struct rd_kafka_topic_partition_list_s;

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
  // Hands pending_ on; while the engine's queues are full, pauses the partitions and serves
  // the group. Returns when it is handed on, `stop` is requested, the pipeline closed, or
  // `deadline` passed (then pending_ is still set).
  absl::Status EmitPending(std::chrono::steady_clock::time_point deadline);
  void PausePartitions();
  void ResumePartitions();
  // Commits what the engine confirmed: asynchronously every commit_interval, or now (`sync`).
  void Commit(bool sync, const std::vector<PartitionOffset>* only = nullptr);
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
  ReadOrder read_order_;  // each assigned partition's next offset (see "Offsets read in order")
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
