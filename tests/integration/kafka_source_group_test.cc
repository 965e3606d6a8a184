// The kafka source as a member of a consumer group, in-process against a real broker (and the
// mock cluster where an error must be injected): what a rebalance, a failed commit or a slow
// sink does to what it hands on and commits. The
// source runs its Stream on a thread of its own into a recording emitter whose acknowledgement
// the test controls; another member of the group is a plain librdkafka consumer. Messages are
// written as the kafka sink writes them (sinks/kafka/kafka_record.h).

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "schemas/table_schema_json.h"
#include "sinks/kafka/kafka_record.h"
#include "sources/kafka/kafka_source.h"
#include "tests/integration/support/kafka_mock.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// The Kafka protocol's API key of OffsetCommit.
constexpr int kOffsetCommitApiKey = 8;

TableSchemaPtr Items(bool extra = false) {
  auto t = std::make_shared<TableSchema>();
  t->relation_id = 16400;
  t->schema = "public";
  t->name = "items";
  t->columns = {{"id", oid::kInt8, -1, true, ""}, {"name", oid::kText, -1, false, ""}};
  if (extra) t->columns.push_back({"extra", oid::kInt4, -1, false, ""});
  return t;
}

// Writes row changes to a topic as the kafka sink does.
class Writer {
 public:
  explicit Writer(const std::string& bootstrap) {
    char errstr[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
    producer_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  }
  ~Writer() { rd_kafka_destroy(producer_); }

  // An insert of row `id` of `table` into `partition` of `topic`, at commit LSN `lsn`.
  void Insert(const std::string& topic, int partition, TableSchemaPtr table, int64_t id,
              uint64_t lsn) {
    Change c;
    c.op = Op::kInsert;
    c.txn.commit_lsn = Lsn(lsn);
    c.txn.end_lsn = Lsn(lsn);
    for (const Column& col : table->columns) {
      c.after.push_back(Value::Text(col.type_oid, col.name == "name" ? "n" : std::to_string(id)));
    }
    c.table = std::move(table);
    std::string key;
    AppendKafkaKey(c, JsonOptions{}, &key);
    std::string value;
    AppendKafkaValue(c, KafkaRecordOptions{KafkaFormat::kDebezium, JsonOptions{}, "test"}, 0,
                     &value);
    std::string header;
    AppendTableSchemaJson(*c.table, &header);
    rd_kafka_headers_t* headers = rd_kafka_headers_new(1);
    rd_kafka_header_add(headers, "pgflow.schema", -1, header.data(),
                        static_cast<ssize_t>(header.size()));
    ASSERT_EQ(rd_kafka_producev(
                  producer_, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(partition),
                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key.data(), key.size()),
                  RD_KAFKA_V_VALUE(value.data(), value.size()), RD_KAFKA_V_HEADERS(headers),
                  RD_KAFKA_V_END),
              RD_KAFKA_RESP_ERR_NO_ERROR);
    ASSERT_EQ(rd_kafka_flush(producer_, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  }

 private:
  rd_kafka_t* producer_;
};

// Records what the source hands on; acknowledges it at once, or when told.
class RecordingEmitter : public Emitter {
 public:
  RecordingEmitter(AckTracker* acks, bool auto_ack) : acks_(acks), auto_ack_(auto_ack) {}

  Result Emit(const EventBatchPtr& batch, absl::Duration) override {
    absl::MutexLock lock(&mu_);
    for (const Event& e : batch->events) {
      if (e.kind == EventKind::kChange && e.change.table != nullptr) {
        rows_.push_back(e.change.table->QualifiedName() + ":" + e.change.after[0].data + ":" +
                        std::to_string(e.change.table->columns.size()));
      }
      if (Lsn p = e.AckPosition(); p.IsValid()) last_ = p;
    }
    if (auto_ack_) acks_->Report(0, last_);
    return Result::kOk;
  }

  // Every sink holds everything handed on so far.
  void ConfirmAll() {
    absl::MutexLock lock(&mu_);
    acks_->Report(0, last_);
  }
  // Rows handed on, "schema.table:id:columns".
  std::vector<std::string> rows() {
    absl::MutexLock lock(&mu_);
    return rows_;
  }
  size_t Count(const std::string& row) {
    std::vector<std::string> all = rows();
    return std::count(all.begin(), all.end(), row);
  }

 private:
  AckTracker* const acks_;
  const bool auto_ack_;
  absl::Mutex mu_;
  std::vector<std::string> rows_ ABSL_GUARDED_BY(mu_);
  Lsn last_ ABSL_GUARDED_BY(mu_);
};

// A KafkaSource streaming on a thread of its own.
class RunningSource {
 public:
  RunningSource(std::shared_ptr<KafkaSourceOptions> options, bool auto_ack)
      : source_("test", options) {
    absl::StatusOr<Lsn> start = source_.Prepare();
    EXPECT_TRUE(start.ok()) << start.status();
    acks_ = std::make_unique<AckTracker>(1, start.value_or(Lsn()));
    emitter_ = std::make_unique<RecordingEmitter>(acks_.get(), auto_ack);
    thread_ = std::thread([this] {
      absl::Status s = source_.Stream(*emitter_, Acknowledgements{*acks_, chunks_}, stop_);
      absl::MutexLock lock(&mu_);
      status_ = s;
      done_ = true;
    });
  }
  ~RunningSource() { Stop(); }

  RecordingEmitter& emitter() { return *emitter_; }
  // Whether Stream returned; its status in *status.
  bool Returned(absl::Status* status = nullptr) {
    absl::MutexLock lock(&mu_);
    if (done_ && status != nullptr) *status = status_;
    return done_;
  }
  void Stop() {
    if (!thread_.joinable()) return;
    stop_.Request();
    thread_.join();
    source_.Finish(Acknowledgements{*acks_, chunks_}).IgnoreError();
  }

 private:
  KafkaSource source_;
  std::unique_ptr<AckTracker> acks_;
  ChunkTracker chunks_{1};
  std::unique_ptr<RecordingEmitter> emitter_;
  StopSignal stop_;
  std::thread thread_;
  absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

// The group's committed offset of `partition` of `topic` (-1001: none; -2: no answer).
int64_t Committed(const std::string& bootstrap, const std::string& group, const std::string& topic,
                  int partition) {
  std::optional<GroupOffsets> offsets = QueryGroupOffsets(bootstrap, group, topic, partition + 1);
  return offsets ? offsets->committed[partition] : -2;
}

std::shared_ptr<KafkaSourceOptions> Options(const KafkaCluster& kafka, const std::string& group,
                                            const std::string& topic) {
  auto o = std::make_shared<KafkaSourceOptions>();
  o->client.brokers = kafka.bootstrap();
  o->client.properties = {{"session.timeout.ms", "6000"}, {"heartbeat.interval.ms", "500"}};
  o->topics = {topic};
  o->group = group;
  o->commit_interval = milliseconds(200);
  return o;
}

TEST(KafkaSourceGroupTest, APartitionHeldForItsDdlIsReadAgainAfterARebalance) {
  KafkaBroker kafka;
  const std::string topic = "held.public.items";
  kafka.CreateTopic(topic, 2);
  Writer writer(kafka.bootstrap());
  auto options = Options(kafka, "held", topic);
  // Long enough for the rebalance to take the partitions while their rows are held.
  options->ddl_wait = seconds(10);
  RunningSource source(options, /*auto_ack=*/true);
  for (int p = 0; p < 2; ++p) writer.Insert(topic, p, Items(), 10 + p, 100);
  ASSERT_TRUE(WaitFor([&] { return source.emitter().rows().size() == 2; }, seconds(60)));
  ASSERT_TRUE(WaitFor(
      [&] {
        return Committed(kafka.bootstrap(), "held", topic, 0) == 1 &&
               Committed(kafka.bootstrap(), "held", topic, 1) == 1;
      },
      seconds(30)));
  // A column no DDL event announced: each partition is paused, its row held (up to ddl_wait),
  // when the group rebalances and takes the partitions away, then gives one back.
  for (int p = 0; p < 2; ++p) writer.Insert(topic, p, Items(/*extra=*/true), 20 + p, 200);
  GroupMember other(kafka.bootstrap(), "held", topic);
  ASSERT_TRUE(other.WaitForAssignment(seconds(60)));
  // The partition this process kept is read again: its held row goes on once ddl_wait ran out.
  EXPECT_TRUE(WaitFor(
      [&] {
        other.Poll();
        return source.emitter().Count("public.items:20:3") +
                   source.emitter().Count("public.items:21:3") >
               0;
      },
      seconds(40)))
      << "a partition held for a DDL event stayed paused after the rebalance";
}

TEST(KafkaSourceGroupTest, ARebalanceThatCannotWaitForTheSinksRestartsTheRun) {
  KafkaBroker kafka;
  const std::string topic = "slow.public.items";
  kafka.CreateTopic(topic, 2);
  Writer writer(kafka.bootstrap());
  auto options = Options(kafka, "slow", topic);
  options->rebalance_timeout = seconds(1);
  RunningSource source(options, /*auto_ack=*/false);  // the sinks never confirm
  for (int p = 0; p < 2; ++p) writer.Insert(topic, p, Items(), 10 + p, 100);
  ASSERT_TRUE(WaitFor([&] { return source.emitter().rows().size() == 2; }, seconds(60)));
  GroupMember other(kafka.bootstrap(), "slow", topic);
  absl::Status status;
  EXPECT_TRUE(WaitFor(
      [&] {
        other.Poll();
        return source.Returned(&status);
      },
      seconds(60)))
      << "the run went on after giving up partitions whose events no sink held";
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_NE(status.message().find("rebalance_timeout (1000ms) ran out before every sink held"),
            std::string::npos)
      << status;
  // Nothing unconfirmed was committed.
  EXPECT_EQ(Committed(kafka.bootstrap(), "slow", topic, 0), RD_KAFKA_OFFSET_INVALID);
}

TEST(KafkaSourceGroupTest, AFailedCommitOfAQuietPartitionIsCommittedAgain) {
  // The mock cluster: the broker must fail one OffsetCommit, which only it can be told to do.
  MockKafka kafka(1);
  const std::string topic = "quiet.public.items";
  kafka.Command("topic " + topic + " 1");
  Writer writer(kafka.bootstrap());
  RunningSource source(Options(kafka, "quiet", topic), /*auto_ack=*/false);
  writer.Insert(topic, 0, Items(), 1, 100);
  ASSERT_TRUE(WaitFor([&] { return source.emitter().rows().size() == 1; }, seconds(60)));
  // The next commit fails for the partition (OFFSET_METADATA_TOO_LARGE, not retried by
  // librdkafka); nothing more is written to it.
  kafka.Command("errors " + std::to_string(kOffsetCommitApiKey) + " " +
                std::to_string(RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE));
  source.emitter().ConfirmAll();
  EXPECT_TRUE(
      WaitFor([&] { return Committed(kafka.bootstrap(), "quiet", topic, 0) == 1; }, seconds(20)))
      << "the offset whose commit failed was never committed again";
}

}  // namespace
}  // namespace pgflow::testing
