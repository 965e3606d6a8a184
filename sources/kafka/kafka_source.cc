#include "sources/kafka/kafka_source.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "engine/log.h"

namespace pgflow {
namespace {

using Clock = std::chrono::steady_clock;

// A batch (one transaction handed on) holds at most this many messages, or this many bytes of
// message values.
constexpr size_t kBatchMessages = 2000;
constexpr size_t kBatchBytes = 4u << 20;
// Consumer errors (brokers down and the like) are logged at most this often.
constexpr auto kErrorLogInterval = std::chrono::seconds(10);

// Ten seconds of patience per call, for rd_kafka_metadata and synchronous commits.
constexpr int kRequestTimeoutMs = 10000;
class KafkaSourceFactory : public SourceFactoryOf<KafkaSourceOptions> {
 public:
  std::string_view type() const override { return "kafka"; }
  std::string_view help() const override {
    return "pgflow's events read back from Kafka topics, as a member of a consumer group.";
  }

 protected:
  const OptionTable<KafkaSourceOptions>& table() const override { return KafkaSourceTable(); }
  SourceTraits TraitsOf(const KafkaSourceOptions&) const override {
    return SourceTraits{"kafka", SourcePositions::kSourceSequence, nullptr};
  }
  std::string DescribeOf(const KafkaSourceOptions& options) const override {
    return absl::StrCat("group ", options.group, " reading ", absl::StrJoin(options.topics, ", "));
  }
  std::unique_ptr<Source> Build(const SourceContext& context,
                                std::shared_ptr<const KafkaSourceOptions> options) const override {
    return std::make_unique<KafkaSource>(context.pipeline, std::move(options));
  }
};

// The first position of a run: above the microseconds since the epoch, and above anything
// this process used before (a pipeline restarted in-process after a lost connection).
Lsn NextRunStart() {
  static std::atomic<uint64_t> last{0};
  const uint64_t now = static_cast<uint64_t>(absl::ToUnixMicros(absl::Now()));
  uint64_t seen = last.load();
  uint64_t start;
  do {
    start = std::max(now, seen + 1);
  } while (!last.compare_exchange_weak(seen, start));
  return Lsn(start);
}

// Whether rows of `table` have no key to be applied by (see "Rows need a key" in the header).
bool IsKeyless(const TableSchema& table) {
  // FULL with a primary key came out of the decoder keyed by it (kafka_message.h).
  return table.replica_identity == 'f' || table.RowKeyColumns().empty();
}

std::string KeylessReason(const TableSchema& table) {
  const char* identity = table.replica_identity == 'f'   ? "REPLICA IDENTITY FULL"
                         : table.replica_identity == 'n' ? "REPLICA IDENTITY NOTHING"
                                                         : "REPLICA IDENTITY DEFAULT";
  return absl::StrCat("table ", table.QualifiedName(), " has no primary key (", identity,
                      "), so its rows cannot be applied by key: every replay after a restart "
                      "would insert them again, and an update could not be placed");
}

TopicPartition PartitionOf(const rd_kafka_message_t* m) {
  return TopicPartition{rd_kafka_topic_name(m->rkt), m->partition};
}

std::string Describe(const rd_kafka_topic_partition_list_t* partitions) {
  std::vector<std::string> names;
  for (int i = 0; i < partitions->cnt; ++i) {
    names.push_back(
        absl::StrCat(partitions->elems[i].topic, "[", partitions->elems[i].partition, "]"));
  }
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

}  // namespace

// librdkafka's callbacks, run inside rd_kafka_consumer_poll (or consumer_close) on the
// source's thread.
class KafkaSourceCallbacks {
 public:
  static void Rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                        rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    auto* source = static_cast<KafkaSource*>(opaque);
    source->in_rebalance_ = true;
    source->Rebalance(err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, partitions);
    source->in_rebalance_ = false;
  }
  static void Error(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
    static_cast<KafkaSource*>(opaque)->OnError(err, reason);
  }
  static void Commit(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                     rd_kafka_topic_partition_list_t* offsets, void* opaque) {
    static_cast<KafkaSource*>(opaque)->OnCommitted(err, offsets);
  }
};

KafkaSource::KafkaSource(std::string pipeline, std::shared_ptr<const KafkaSourceOptions> options)
    : pipeline_(std::move(pipeline)), options_(std::move(options)), gate_(options_->ddl_wait) {}

KafkaSource::~KafkaSource() {
  for (rd_kafka_message_t* m : polled_) rd_kafka_message_destroy(m);
  polled_.clear();
  for (auto& [partition, held] : held_) {
    for (rd_kafka_message_t* m : held.messages) rd_kafka_message_destroy(m);
  }
  held_.clear();
  if (consumer_ != nullptr) {
    closing_ = true;
    rd_kafka_consumer_close(consumer_);
    rd_kafka_destroy(consumer_);
  }
}

void KafkaSource::OnError(int err, const char* reason) {
  auto code = static_cast<rd_kafka_resp_err_t>(err);
  if (code == RD_KAFKA_RESP_ERR__FATAL) {
    char fatal[512];
    rd_kafka_fatal_error(consumer_, fatal, sizeof(fatal));
    if (fatal_.ok()) {
      fatal_ = absl::UnavailableError(
          absl::StrCat("the Kafka consumer hit a fatal error and must restart: ", fatal));
    }
    return;
  }
  auto now = Clock::now();
  if (now - last_error_log_ < kErrorLogInterval) return;
  last_error_log_ = now;
  LogWarning("kafka source %s: %s (retrying)", options_->client.brokers, reason);
}

absl::StatusOr<Lsn> KafkaSource::Prepare() {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  std::string bad;
  if (absl::Status s = SetKafkaProperties(conf, ConsumerSettings(*options_, "pgflow-" + pipeline_),
                                          options_->client, &bad);
      !s.ok()) {
    rd_kafka_conf_destroy(conf);
    return s;
  }
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_rebalance_cb(conf, &KafkaSourceCallbacks::Rebalance);
  rd_kafka_conf_set_error_cb(conf, &KafkaSourceCallbacks::Error);
  rd_kafka_conf_set_offset_commit_cb(conf, &KafkaSourceCallbacks::Commit);
  rd_kafka_conf_set_log_cb(
      conf, [](const rd_kafka_t*, int level, const char* facility, const char* message) {
        LogDebug("librdkafka %s: %s", facility, message);
      });
  char errstr[512];
  consumer_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
  if (consumer_ == nullptr) {
    rd_kafka_conf_destroy(conf);
    return absl::InvalidArgumentError(absl::StrCat("cannot create a Kafka consumer: ", errstr));
  }
  rd_kafka_poll_set_consumer(consumer_);
  const rd_kafka_metadata_t* metadata = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(consumer_, 1, nullptr, &metadata,
                                              static_cast<int>(options_->connect_timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::UnavailableError(
        absl::StrCat("no Kafka broker of ", options_->client.brokers, " (source.kafka.brokers, at ",
                     options_->client.brokers_position, ") answered within ",
                     options_->connect_timeout.count(), "ms: ", rd_kafka_err2str(err)));
  }
  for (const std::string& topic : options_->topics) {
    if (topic[0] == '^') continue;
    bool found = false;
    for (int i = 0; i < metadata->topic_cnt && !found; ++i) {
      found = metadata->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
              topic == metadata->topics[i].topic;
    }
    if (!found) {
      LogWarning(
          "kafka source: topic %s does not exist (yet): pgflow reads it once it does (a kafka "
          "sink creates its topics with their first message)",
          topic);
    }
  }
  rd_kafka_metadata_destroy(metadata);
  rd_kafka_topic_partition_list_t* subscription =
      rd_kafka_topic_partition_list_new(static_cast<int>(options_->topics.size()));
  for (const std::string& topic : options_->topics) {
    rd_kafka_topic_partition_list_add(subscription, topic.c_str(), RD_KAFKA_PARTITION_UA);
  }
  err = rd_kafka_subscribe(consumer_, subscription);
  rd_kafka_topic_partition_list_destroy(subscription);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::InvalidArgumentError(absl::StrCat("cannot subscribe to ",
                                                   absl::StrJoin(options_->topics, ", "), ": ",
                                                   rd_kafka_err2str(err)));
  }
  last_position_ = NextRunStart();
  LogInfo("kafka source: group %s reading %s from %s (offsets of new partitions: %s)",
          options_->group, absl::StrJoin(options_->topics, ", "), options_->client.brokers,
          options_->offset_reset);
  return last_position_;
}

absl::Status SetStartOffsets(const std::string& group, const std::string& offset_reset,
                             rd_kafka_topic_partition_list_t* partitions) {
  for (int i = 0; i < partitions->cnt; ++i) {
    rd_kafka_topic_partition_t& p = partitions->elems[i];
    if (p.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return absl::UnavailableError(absl::StrCat(
          "kafka source: cannot read group ", group, "'s committed offset of ", p.topic, "[",
          p.partition, "]: ", rd_kafka_err2str(p.err),
          " (the partition is not started at offset_reset's end instead: that could skip or "
          "repeat its backlog)"));
    }
    if (p.offset == RD_KAFKA_OFFSET_INVALID) {
      p.offset = offset_reset == "latest" ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
    } else if (p.offset < 0) {
      return absl::UnavailableError(
          absl::StrCat("kafka source: group ", group, "'s committed offset of ", p.topic, "[",
                       p.partition, "] is ", p.offset, ", which is no offset"));
    }
  }
  return absl::OkStatus();
}

void KafkaSource::Fail(absl::Status status) {
  if (fatal_.ok()) fatal_ = std::move(status);
}

void KafkaSource::SetPaused(const rd_kafka_topic_partition_list_t* partitions, bool paused) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions->cnt);
  for (int i = 0; i < partitions->cnt; ++i) {
    const rd_kafka_topic_partition_t& p = partitions->elems[i];
    // Partitions the schema-change gate holds stay paused.
    if (paused || !held_.contains(TopicPartition{p.topic, p.partition})) {
      rd_kafka_topic_partition_list_add(list, p.topic, p.partition);
    }
  }
  if (list->cnt > 0) {
    if (paused) {
      rd_kafka_pause_partitions(consumer_, list);
    } else {
      rd_kafka_resume_partitions(consumer_, list);
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
}

void KafkaSource::Rebalance(bool assign, rd_kafka_topic_partition_list_t* partitions) {
  cooperative_ = std::strcmp(rd_kafka_rebalance_protocol(consumer_), "COOPERATIVE") == 0;
  if (assign) {
    LogInfo("kafka source: group %s assigned %s", options_->group, Describe(partitions));
    // A rebalance follows a change of the topics' partitions: counts are read again.
    partition_counts_.clear();
    // Each partition starts at the group's committed offset, or, without one, at the end
    // offset_reset names.
    rd_kafka_topic_partition_list_t* start = rd_kafka_topic_partition_list_copy(partitions);
    rd_kafka_resp_err_t err = rd_kafka_committed(consumer_, start, kRequestTimeoutMs);
    absl::Status status = err != RD_KAFKA_RESP_ERR_NO_ERROR
                              ? absl::UnavailableError(absl::StrCat(
                                    "kafka source: cannot read group ", options_->group,
                                    "'s committed offsets: ", rd_kafka_err2str(err)))
                              : SetStartOffsets(options_->group, options_->offset_reset, start);
    if (!status.ok()) {
      // Nothing is assigned: the run ends, and the next one reads the offsets again.
      Fail(std::move(status));
      if (!cooperative_) rd_kafka_assign(consumer_, nullptr);
      rd_kafka_topic_partition_list_destroy(start);
      return;
    }
    if (cooperative_) {
      if (rd_kafka_error_t* error = rd_kafka_incremental_assign(consumer_, start)) {
        Fail(absl::UnavailableError(
            absl::StrCat("kafka source: cannot take partitions ", Describe(partitions),
                         " of group ", options_->group, ": ", rd_kafka_error_string(error))));
        rd_kafka_error_destroy(error);
      }
    } else if (rd_kafka_resp_err_t e = rd_kafka_assign(consumer_, start);
               e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      Fail(absl::UnavailableError(absl::StrCat("kafka source: cannot take partitions ",
                                               Describe(partitions), " of group ", options_->group,
                                               ": ", rd_kafka_err2str(e))));
    }
    for (int i = 0; i < start->cnt; ++i) {
      const int64_t offset = start->elems[i].offset;
      read_order_.Start(TopicPartition{start->elems[i].topic, start->elems[i].partition},
                        offset >= 0 ? std::optional<int64_t>(offset) : std::nullopt);
    }
    rd_kafka_topic_partition_list_destroy(start);
    // librdkafka keeps an application's pause of a partition across its revocation and a
    // later assignment: each new partition is set explicitly, paused while the sinks are full
    // and fetching otherwise.
    SetPaused(partitions, paused_);
    return;
  }
  Revoke(partitions, rd_kafka_assignment_lost(consumer_) != 0);
  if (cooperative_) {
    if (rd_kafka_error_t* error = rd_kafka_incremental_unassign(consumer_, partitions)) {
      Fail(absl::UnavailableError(absl::StrCat("kafka source: cannot give up partitions ",
                                               Describe(partitions), " of group ", options_->group,
                                               ": ", rd_kafka_error_string(error))));
      rd_kafka_error_destroy(error);
    }
  } else {
    rd_kafka_assign(consumer_, nullptr);
  }
}

void KafkaSource::Revoke(rd_kafka_topic_partition_list_t* partitions, bool lost) {
  std::vector<TopicPartition> revoked;
  for (int i = 0; i < partitions->cnt; ++i) {
    revoked.push_back(TopicPartition{partitions->elems[i].topic, partitions->elems[i].partition});
  }
  // Messages polled from them and not handed on: the next owner reads them.
  for (const TopicPartition& tp : revoked) {
    DropPolled(tp);
    read_order_.Forget(tp);
  }
  if (!closing_ && acks_ != nullptr && emitter_ != nullptr) {
    // What went out of these partitions must be durable before their offsets are committed
    // and another consumer takes over: else its changes and ours could reach a sink in the
    // wrong order.
    const auto deadline = Clock::now() + options_->rebalance_timeout;
    if (!lost && pending_ != nullptr) EmitPending(deadline).IgnoreError();
    Lsn through;
    for (const TopicPartition& tp : revoked) {
      if (std::optional<Lsn> p = tracker_.PendingThrough(tp); p.has_value()) {
        through = std::max(through, *p);
      }
    }
    auto stopping = [&] { return closed_ || (stop_ != nullptr && stop_->requested()); };
    while (!lost && acks_->Confirmed() < through && Clock::now() < deadline && !stopping()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    tracker_.Confirm(acks_->Confirmed());
    if (acks_->Confirmed() < through) {
      const std::string why = absl::StrCat(
          Describe(partitions),
          lost ? " were lost (the group gave them to another member: this process missed "
                 "its session or max.poll.interval.ms)"
               : absl::StrCat(" were taken away, and rebalance_timeout (",
                              options_->rebalance_timeout.count(), "ms) ran out"),
          " before every sink held what was read from them");
      if (stopping()) {
        LogWarning("kafka source: %s; the pipeline is stopping", why);
      } else {
        // Going on would let those events reach the sinks after their next owner's newer
        // ones. The run ends instead, and the next starts from the committed offsets. (What
        // the engine's queues already hold is still written while they drain.)
        Fail(absl::UnavailableError(absl::StrCat(
            "kafka source: ", why,
            ": restarting from the committed offsets, so that their next owner's changes and "
            "these do not reach the sinks out of order (raise rebalance_timeout, below "
            "max.poll.interval.ms, if the sinks need longer)")));
      }
    }
  }
  std::vector<PartitionOffset> last;
  for (const TopicPartition& tp : revoked) {
    if (std::optional<PartitionOffset> o = tracker_.Forget(tp); o.has_value()) {
      last.push_back(*o);
    }
  }
  if (!lost && !last.empty()) Commit(/*sync=*/true, &last);
  LogInfo("kafka source: group %s %s %s", options_->group, lost ? "lost" : "gave up",
          Describe(partitions));
}

void KafkaSource::DropPolled(const TopicPartition& partition) {
  auto gone = std::remove_if(polled_.begin(), polled_.end(), [&](rd_kafka_message_t* m) {
    if (m->rkt == nullptr || !(PartitionOf(m) == partition)) return false;
    rd_kafka_message_destroy(m);
    return true;
  });
  polled_.erase(gone, polled_.end());
  if (auto it = held_.find(partition); it != held_.end()) {
    for (rd_kafka_message_t* m : it->second.messages) rd_kafka_message_destroy(m);
    held_.erase(it);
  }
}

void KafkaSource::Commit(bool sync, const std::vector<PartitionOffset>* only) {
  if (acks_ != nullptr) tracker_.Confirm(acks_->Confirmed());
  std::vector<PartitionOffset> offsets = only != nullptr ? *only : tracker_.Commits();
  last_commit_ = Clock::now();
  if (offsets.empty()) return;
  rd_kafka_topic_partition_list_t* list =
      rd_kafka_topic_partition_list_new(static_cast<int>(offsets.size()));
  for (const PartitionOffset& o : offsets) {
    rd_kafka_topic_partition_list_add(list, o.partition.topic.c_str(), o.partition.partition)
        ->offset = o.offset;
  }
  // Offsets are marked committed by OnCommitted, from the brokers' answer per partition: one
  // that failed is committed again at the next commit_interval.
  rd_kafka_resp_err_t err = rd_kafka_commit(consumer_, list, sync ? 0 : 1);
  rd_kafka_topic_partition_list_destroy(list);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) LogCommitError(rd_kafka_err2str(err));
}

void KafkaSource::OnCommitted(int err, const rd_kafka_topic_partition_list_t* offsets) {
  if (offsets == nullptr) {
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
      LogCommitError(rd_kafka_err2str(static_cast<rd_kafka_resp_err_t>(err)));
    }
    return;
  }
  std::vector<PartitionOffset> done;
  for (int i = 0; i < offsets->cnt; ++i) {
    const rd_kafka_topic_partition_t& p = offsets->elems[i];
    if (p.err == RD_KAFKA_RESP_ERR_NO_ERROR && p.offset >= 0) {
      done.push_back(PartitionOffset{TopicPartition{p.topic, p.partition}, p.offset});
    } else if (p.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      LogCommitError(absl::StrCat(p.topic, "[", p.partition, "] offset ", p.offset, ": ",
                                  rd_kafka_err2str(p.err)));
    }
  }
  tracker_.MarkCommitted(done);
}

void KafkaSource::LogCommitError(std::string_view what) {
  auto now = Clock::now();
  if (now - last_commit_error_log_ < kErrorLogInterval) return;
  last_commit_error_log_ = now;
  LogWarning(
      "kafka source: committing offsets failed: %s (committed again at the next "
      "commit_interval)",
      what);
}

void KafkaSource::PausePartitions() {
  rd_kafka_topic_partition_list_t* assigned = nullptr;
  if (rd_kafka_assignment(consumer_, &assigned) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_pause_partitions(consumer_, assigned);
    rd_kafka_topic_partition_list_destroy(assigned);
  }
  paused_ = true;
}

void KafkaSource::ResumePartitions() {
  rd_kafka_topic_partition_list_t* assigned = nullptr;
  if (rd_kafka_assignment(consumer_, &assigned) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    SetPaused(assigned, false);
    rd_kafka_topic_partition_list_destroy(assigned);
  }
  paused_ = false;
}

void KafkaSource::ReleaseHeld() {
  std::vector<rd_kafka_message_t*> front;
  rd_kafka_topic_partition_list_t* resume = rd_kafka_topic_partition_list_new(0);
  const auto now = Clock::now();
  for (auto it = held_.begin(); it != held_.end();) {
    Held& held = it->second;
    if (!held.released && now - held.since < options_->ddl_wait) {
      ++it;
      continue;
    }
    if (!held.released) gate_.AcceptNextShape(held.table);
    front.insert(front.end(), held.messages.begin(), held.messages.end());
    if (!paused_) {
      rd_kafka_topic_partition_list_add(resume, it->first.topic.c_str(), it->first.partition);
    }
    held_.erase(it++);
  }
  if (resume->cnt > 0) rd_kafka_resume_partitions(consumer_, resume);
  rd_kafka_topic_partition_list_destroy(resume);
  polled_.insert(polled_.begin(), front.begin(), front.end());
}

absl::Status KafkaSource::EmitPending(Clock::time_point deadline) {
  while (pending_ != nullptr) {
    switch (emitter_->Emit(pending_, absl::Milliseconds(100))) {
      case Emitter::Result::kOk:
        pending_.reset();
        if (paused_) ResumePartitions();
        return absl::OkStatus();
      case Emitter::Result::kClosed:
        // A sink failed; the pipeline reports why.
        closed_ = true;
        return absl::CancelledError("the pipeline is closing");
      case Emitter::Result::kTimeout:
        break;
    }
    if (stop_->requested() || Clock::now() >= deadline) return absl::OkStatus();
    // Inside a rebalance (which runs within a poll) the consumer is not polled again.
    if (in_rebalance_) continue;
    // The sinks are behind: stop fetching (memory stays bounded) but keep serving the group,
    // and commit what they confirm meanwhile.
    if (!paused_) PausePartitions();
    rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer_, 0);
    if (m != nullptr) Take(m);        // fetched before the pause took effect
    if (!fatal_.ok()) return fatal_;  // a rebalance that failed the run
    if (Clock::now() - last_commit_ >= options_->commit_interval) Commit(false);
  }
  return absl::OkStatus();
}

void KafkaSource::Poll(std::chrono::milliseconds wait) {
  size_t bytes = 0;
  for (rd_kafka_message_t* m : polled_) bytes += m->len;
  while (polled_.size() < kBatchMessages && bytes < kBatchBytes) {
    rd_kafka_message_t* m =
        rd_kafka_consumer_poll(consumer_, polled_.empty() ? static_cast<int>(wait.count()) : 0);
    if (m == nullptr) return;
    bytes += m->len;
    Take(m);
  }
}

void KafkaSource::Take(rd_kafka_message_t* m) {
  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR || m->rkt == nullptr) {
    polled_.push_back(m);  // errors are handled in order by Decode
    return;
  }
  const TopicPartition tp = PartitionOf(m);
  const int64_t gap_start = read_order_.expected(tp);
  const ReadOrder::Verdict verdict = read_order_.Check(tp, m->offset);
  if (verdict == ReadOrder::Verdict::kNext) {
    polled_.push_back(m);
    return;
  }
  if ((verdict == ReadOrder::Verdict::kGap || verdict == ReadOrder::Verdict::kOwnGap) &&
      DeletedBeforeRead(tp, gap_start)) {
    rd_kafka_message_destroy(m);
    return;
  }
  if (verdict == ReadOrder::Verdict::kOwnGap) {
    LogInfo(
        "kafka source: %s[%d] has no message before offset %d since the last one read, also "
        "when read again: it has gaps of its own (a compacted topic, transaction markers), "
        "which are taken as they come from now on",
        tp.topic, tp.partition, m->offset);
    polled_.push_back(m);
    return;
  }
  const int64_t expected = read_order_.expected(tp);
  const auto now = Clock::now();
  const bool log = now - last_order_log_ >= kErrorLogInterval;
  if (verdict == ReadOrder::Verdict::kRepeat) {
    // Went out already: handing it on again would set its key back to an older value.
    ++refetched_;
    if (log) {
      last_order_log_ = now;
      LogWarning(
          "kafka source: the consumer fetched %s[%d] offset %d again (next expected: %d); "
          "dropped (%d so far)",
          tp.topic, tp.partition, m->offset, expected, refetched_);
    }
    rd_kafka_message_destroy(m);
    return;
  }
  if (log) {
    last_order_log_ = now;
    LogWarning(
        "kafka source: the consumer skipped %s[%d] from offset %d to %d; reading it "
        "again from %d",
        tp.topic, tp.partition, expected, m->offset, expected);
  }
  rd_kafka_message_destroy(m);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, tp.topic.c_str(), tp.partition)->offset = expected;
  if (rd_kafka_error_t* error = rd_kafka_seek_partitions(consumer_, list, kRequestTimeoutMs)) {
    // Reading on would skip those messages: the run ends, the next starts from the committed
    // offsets.
    Fail(absl::UnavailableError(absl::StrCat("kafka source: cannot seek ", tp.topic, "[",
                                             tp.partition, "] back to offset ", expected, ": ",
                                             rd_kafka_error_string(error))));
    rd_kafka_error_destroy(error);
  } else {
    for (int i = 0; i < list->cnt; ++i) {
      if (list->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        Fail(absl::UnavailableError(absl::StrCat("kafka source: cannot seek ", tp.topic, "[",
                                                 tp.partition, "] back to offset ", expected, ": ",
                                                 rd_kafka_err2str(list->elems[i].err))));
      }
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
}

bool KafkaSource::DeletedBeforeRead(const TopicPartition& tp, int64_t gap_start) {
  // A compacted topic's gaps lie above the partition's first offset; retention's start below
  // it: the messages were deleted before the group read them.
  int64_t low = 0;
  int64_t high = 0;
  if (gap_start < 0 ||
      rd_kafka_query_watermark_offsets(consumer_, tp.topic.c_str(), tp.partition, &low, &high,
                                       kRequestTimeoutMs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      gap_start >= low) {
    return false;
  }
  Fail(absl::DataLossError(absl::StrCat(
      "kafka source: ", tp.topic, " partition ", tp.partition, ": offsets ", gap_start, " to ",
      low - 1, " were deleted by retention before group ", options_->group,
      " read them (the partition now starts at offset ", low,
      "), so changes are missing from the sinks. Copy the tables again into the sinks, then "
      "move the group's offsets past the gap (kafka-consumer-groups --reset-offsets)")));
  return true;
}

bool KafkaSource::ApplyTruncate(const rd_kafka_message_t* m) {
  if (options_->truncate != KafkaTruncateMode::kAuto) {
    return options_->truncate == KafkaTruncateMode::kApply;
  }
  const std::string topic = rd_kafka_topic_name(m->rkt);
  auto it = partition_counts_.find(topic);
  if (it == partition_counts_.end()) {
    const rd_kafka_metadata_t* metadata = nullptr;
    int count = 0;
    if (rd_kafka_metadata(consumer_, 0, m->rkt, &metadata, kRequestTimeoutMs) ==
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (metadata->topic_cnt == 1) count = metadata->topics[0].partition_cnt;
      rd_kafka_metadata_destroy(metadata);
    }
    // Unknown (the brokers did not answer): not applied, and asked again next time.
    if (count == 0) return false;
    it = partition_counts_.emplace(topic, count).first;
  }
  return it->second == 1;
}

namespace {

// The pgflow.schema header of a message (the table description its row values are typed by).
std::optional<std::string_view> SchemaHeader(rd_kafka_message_t* m) {
  rd_kafka_headers_t* headers = nullptr;
  const void* header = nullptr;
  size_t header_size = 0;
  if (rd_kafka_message_headers(m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR &&
      rd_kafka_header_get_last(headers, "pgflow.schema", &header, &header_size) ==
          RD_KAFKA_RESP_ERR_NO_ERROR &&
      header != nullptr) {
    return std::string_view(static_cast<const char*>(header), header_size);
  }
  return std::nullopt;
}

std::string WhereFrom(const TopicPartition& origin, const rd_kafka_message_t* m) {
  return absl::StrCat("kafka topic ", origin.topic, " partition ", origin.partition, " offset ",
                      m->offset);
}

}  // namespace

absl::Status KafkaSource::MessageError(const rd_kafka_message_t* m) {
  const std::string what = absl::StrCat(
      m->rkt != nullptr ? absl::StrCat("topic ", rd_kafka_topic_name(m->rkt), ": ") : "",
      rd_kafka_message_errstr(m));
  if (m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
      m->err == RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED) {
    return absl::PermissionDeniedError(absl::StrCat("kafka source: ", what));
  }
  if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET) {
    // Where the partition starts now, to name what was lost.
    int64_t low = -1;
    int64_t high = -1;
    std::string deleted;
    if (m->rkt != nullptr &&
        rd_kafka_query_watermark_offsets(consumer_, rd_kafka_topic_name(m->rkt), m->partition, &low,
                                         &high, kRequestTimeoutMs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        low > m->offset) {
      deleted = absl::StrCat("; offsets ", m->offset, " to ", low - 1,
                             " were deleted, the partition now starts at offset ", low);
    }
    return absl::DataLossError(absl::StrCat(
        "kafka source: ", what, " (partition ", m->partition, ", offset ", m->offset,
        "): the next message group ", options_->group,
        " has to read is no longer on the topic (retention deleted it first", deleted,
        "), so changes are missing from the sinks. Copy the tables again into the sinks, "
        "then move the group's offsets past the gap (kafka-consumer-groups --reset-offsets)"));
  }
  auto now = Clock::now();
  if (now - last_error_log_ >= kErrorLogInterval) {
    last_error_log_ = now;
    LogWarning("kafka source: %s", what);
  }
  return absl::OkStatus();
}

absl::Status KafkaSource::Admit(size_t index, DecodedMessage& d, const TxnInfo& txn,
                                EventBatch* batch, bool* held) {
  rd_kafka_message_t* m = polled_[index];
  const TopicPartition origin = PartitionOf(m);
  if (!d.warning.empty()) LogWarning("%s: %s", WhereFrom(origin, m), d.warning);
  const Op op = d.change.op;
  const bool row = IsRowChange(op);
  ShapeGate::Verdict verdict = ShapeGate::Verdict::kHandOn;
  if (row && IsKeyless(*d.change.table)) {
    const std::string why = KeylessReason(*d.change.table);
    if (!options_->skip_keyless) {
      return absl::FailedPreconditionError(absl::StrCat(
          WhereFrom(origin, m), ": ", why,
          ". Add a primary key to the table in the source (events written from then on "
          "carry it), leave its topic out of source.kafka.topics, or set "
          "source.kafka.keyless: skip to pass over its rows"));
    }
    ++skipped_;
    verdict = ShapeGate::Verdict::kDrop;
    if (keyless_noted_.insert(d.change.table->QualifiedName()).second) {
      LogWarning("%s: %s; its rows are skipped (keyless: skip)", WhereFrom(origin, m), why);
    }
  } else if (row) {
    std::string note;
    verdict = gate_.Check(&d.change, &note);
    if (!note.empty()) LogWarning("%s: %s", WhereFrom(origin, m), note);
  }
  if (verdict == ShapeGate::Verdict::kHold) {
    LogInfo(
        "%s: a row of %s with a column its last shape lacks waits (at most %dms) for "
        "the DDL event that added it",
        WhereFrom(origin, m), d.change.table->QualifiedName(), options_->ddl_wait.count());
    held_[origin] = Held{d.change.table->QualifiedName(), {m}, Clock::now(), false};
    polled_[index] = nullptr;
    rd_kafka_topic_partition_list_t* one = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(one, origin.topic.c_str(), origin.partition);
    rd_kafka_pause_partitions(consumer_, one);
    rd_kafka_topic_partition_list_destroy(one);
    *held = true;
    return absl::OkStatus();
  }
  bool keep = verdict != ShapeGate::Verdict::kDrop;
  if (op == Op::kDdl) {
    for (const std::string& table : gate_.NoteDdl(d.change)) {
      for (auto& [partition, waiting] : held_) {
        if (waiting.table == table) waiting.released = true;
      }
    }
  }
  if (d.change.op == Op::kTruncate && !ApplyTruncate(m)) {
    keep = false;
    LogWarning(
        "%s: truncate of %s skipped: a truncate cannot be placed among the changes of the "
        "topic's other partitions (set source.kafka.truncate: apply to apply it anyway, or "
        "truncate the target yourself)",
        WhereFrom(origin, m), d.change.table->QualifiedName());
  }
  if (keep) {
    Event event;
    event.kind = EventKind::kChange;
    event.txn = txn;
    event.change = std::move(d.change);
    batch->bytes += event.ApproximateBytes();
    batch->events.push_back(std::move(event));
  }
  return absl::OkStatus();
}

absl::Status KafkaSource::Decode() {
  if (!held_.empty()) ReleaseHeld();
  auto batch = std::make_shared<EventBatch>();
  const Lsn position(last_position_.value + 1);
  TxnInfo txn;
  txn.commit_lsn = position;
  txn.end_lsn = position;
  txn.commit_time_us = absl::ToUnixMicros(absl::Now());
  Event begin;
  begin.kind = EventKind::kBegin;
  begin.txn = txn;
  batch->events.push_back(std::move(begin));
  size_t offsets = 0;
  absl::Status status;
  for (size_t used = 0; used < polled_.size(); ++used) {
    rd_kafka_message_t* m = polled_[used];
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) continue;
      status = MessageError(m);
      if (!status.ok()) break;
      continue;
    }
    const TopicPartition origin = PartitionOf(m);
    if (auto held = held_.find(origin); held != held_.end()) {
      // Behind a row that waits for its table's DDL: waits too, in order.
      held->second.messages.push_back(m);
      polled_[used] = nullptr;
      continue;
    }
    std::optional<std::string_view> value;
    if (m->payload != nullptr) {
      value = std::string_view(static_cast<const char*>(m->payload), m->len);
    }
    absl::StatusOr<std::optional<DecodedMessage>> decoded = decoder_.Decode(value, SchemaHeader(m));
    if (!decoded.ok()) {
      if (!options_->skip_malformed) {
        status = absl::InvalidArgumentError(
            absl::StrCat(WhereFrom(origin, m), ": ", decoded.status().message(),
                         "; the message is not a pgflow event this pipeline can read (set "
                         "source.kafka.malformed: skip to pass over such messages)"));
        break;
      }
      ++skipped_;
      LogWarning("%s: skipped (malformed: skip): %s", WhereFrom(origin, m),
                 decoded.status().message());
    } else if (decoded->has_value()) {
      bool held = false;
      status = Admit(used, **decoded, txn, batch.get(), &held);
      if (!status.ok()) break;
      if (held) continue;
    }
    tracker_.Add(position, origin, m->offset);
    ++offsets;
    ++messages_;
  }
  for (size_t i = 0; i < polled_.size(); ++i) {
    // What follows a malformed message stays unread: it is read again after a restart.
    if (polled_[i] != nullptr) rd_kafka_message_destroy(polled_[i]);
  }
  polled_.clear();
  if (offsets == 0) return status;
  if (batch->events.size() == 1) {
    // Nothing to deliver (tombstones, skipped messages): a position, so that the offsets are
    // committed once the sinks have seen it.
    batch->events.clear();
    Event marker;
    marker.kind = EventKind::kPosition;
    marker.position = position;
    batch->events.push_back(std::move(marker));
  } else {
    Event commit;
    commit.kind = EventKind::kCommit;
    commit.txn = txn;
    batch->events.push_back(std::move(commit));
  }
  batch->bytes += batch->events.size() * sizeof(Event);
  last_position_ = position;
  pending_ = std::move(batch);
  return status;
}

absl::Status KafkaSource::Stream(Emitter& emitter, Acknowledgements acks, const StopSignal& stop) {
  emitter_ = &emitter;
  acks_ = &acks.wal;
  stop_ = &stop;
  last_commit_ = Clock::now();
  absl::Status status;
  while (!stop.requested()) {
    if (!fatal_.ok()) {
      status = fatal_;
      break;
    }
    if (pending_ != nullptr) {
      absl::Status s = EmitPending(Clock::time_point::max());
      if (absl::IsCancelled(s)) break;
      continue;
    }
    if (Clock::now() - last_commit_ >= options_->commit_interval) Commit(false);
    Poll(std::chrono::milliseconds(100));
    if (!fatal_.ok()) continue;  // a rebalance failed the run: nothing more goes out
    if (absl::Status s = Decode(); !s.ok()) {
      // The changes decoded before the bad message still go out (and their offsets are
      // committed at the stop); the bad message is where the next run starts.
      if (pending_ != nullptr) EmitPending(Clock::now() + std::chrono::seconds(30)).IgnoreError();
      status = s;
      break;
    }
  }
  emitter_ = nullptr;
  return status;
}

absl::Status KafkaSource::Finish(Acknowledgements acks) {
  if (consumer_ == nullptr) return absl::OkStatus();
  acks_ = &acks.wal;
  closing_ = true;
  for (rd_kafka_message_t* m : polled_) rd_kafka_message_destroy(m);
  polled_.clear();
  for (auto& [partition, held] : held_) {
    for (rd_kafka_message_t* m : held.messages) rd_kafka_message_destroy(m);
  }
  held_.clear();
  tracker_.Confirm(acks.wal.Confirmed());
  std::vector<PartitionOffset> done = tracker_.AllDone();
  Commit(/*sync=*/true, &done);
  LogInfo("kafka source: %d messages read, %d skipped; offsets committed for %d partitions",
          messages_, skipped_, done.size());
  rd_kafka_consumer_close(consumer_);
  rd_kafka_destroy(consumer_);
  consumer_ = nullptr;
  acks_ = nullptr;
  return absl::OkStatus();
}

void RegisterKafkaSource() { RegisterSourceFactory(std::make_unique<KafkaSourceFactory>()); }

}  // namespace pgflow
