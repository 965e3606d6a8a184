#include "tests/integration/support/kafka_mock.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include <cstdlib>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {

MockKafka::MockKafka(int brokers) {
  int in[2];
  int out[2];
  // Close-on-exec: other children (pgflow, PostgreSQL) must not hold the cluster's stdin.
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) std::abort();
  const std::string count = std::to_string(brokers);
  pid_ = fork();
  if (pid_ == 0) {
    dup2(in[0], STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    close(in[1]);
    close(out[0]);
    execl(KAFKA_MOCK_CLUSTER_BINARY, "kafka_mock_cluster", count.c_str(), nullptr);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  to_ = fdopen(in[1], "w");
  from_ = fdopen(out[0], "r");
  std::string line = ReadLine();
  if (line.rfind("bootstrap ", 0) != 0) {
    ADD_FAILURE() << "kafka_mock_cluster said: " << line;
    return;
  }
  bootstrap_ = line.substr(10);
}

MockKafka::~MockKafka() {
  if (to_ != nullptr) fclose(to_);  // end of input: the cluster exits
  if (from_ != nullptr) fclose(from_);
  kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
}

void MockKafka::Command(const std::string& command) {
  std::fprintf(to_, "%s\n", command.c_str());
  std::fflush(to_);
  std::string answer = ReadLine();
  EXPECT_EQ(answer, "ok") << command;
}

void MockKafka::CreateTopic(const std::string& topic, int partitions,
                            const std::map<std::string, std::string>& config) {
  EXPECT_TRUE(config.empty()) << "the mock cluster takes no topic settings";
  Command("topic " + topic + " " + std::to_string(partitions));
}

std::string MockKafka::ReadLine() {
  char buf[4096];
  if (std::fgets(buf, sizeof(buf), from_) == nullptr) return "";
  std::string line(buf);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  return line;
}

namespace {

// A quiet consumer client of `group`, with `extra` properties.
rd_kafka_t* NewConsumer(const std::string& bootstrap, const std::string& group,
                        const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  char errstr[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), errstr, sizeof(errstr));
  rd_kafka_conf_set(conf, "group.id", group.c_str(), errstr, sizeof(errstr));
  rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
  for (const auto& [k, v] : extra) {
    rd_kafka_conf_set(conf, k.c_str(), v.c_str(), errstr, sizeof(errstr));
  }
  return rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
}

}  // namespace

GroupMember::GroupMember(const std::string& bootstrap, const std::string& group,
                         const std::string& topic)
    : topic_(topic) {
  rk_ = NewConsumer(bootstrap, group,
                    {{"enable.auto.commit", "false"},
                     {"session.timeout.ms", "6000"},
                     {"heartbeat.interval.ms", "500"}});
  rd_kafka_poll_set_consumer(rk_);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, topic.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(rk_, topics);
  rd_kafka_topic_partition_list_destroy(topics);
}

GroupMember::~GroupMember() {
  rd_kafka_consumer_close(rk_);
  rd_kafka_destroy(rk_);
}

bool GroupMember::WaitForAssignment(std::chrono::milliseconds timeout) {
  return WaitFor(
      [&] {
        Poll();
        rd_kafka_topic_partition_list_t* assigned = nullptr;
        rd_kafka_assignment(rk_, &assigned);
        const bool ready = assigned != nullptr && assigned->cnt > 0;
        if (assigned != nullptr) rd_kafka_topic_partition_list_destroy(assigned);
        return ready;
      },
      timeout);
}

void GroupMember::Poll() {
  if (rd_kafka_message_t* m = rd_kafka_consumer_poll(rk_, 20)) rd_kafka_message_destroy(m);
}

std::optional<GroupOffsets> QueryGroupOffsets(const std::string& bootstrap,
                                              const std::string& group, const std::string& topic,
                                              int partitions) {
  rd_kafka_t* rk = NewConsumer(bootstrap, group);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) rd_kafka_topic_partition_list_add(list, topic.c_str(), p);
  GroupOffsets out;
  bool answered = rd_kafka_committed(rk, list, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR;
  for (int p = 0; answered && p < partitions; ++p) {
    out.committed.push_back(list->elems[p].offset);
    int64_t low = 0;
    int64_t high = 0;
    answered = rd_kafka_query_watermark_offsets(rk, topic.c_str(), p, &low, &high, 10000) ==
               RD_KAFKA_RESP_ERR_NO_ERROR;
    out.high.push_back(high);
    out.low.push_back(low);
  }
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_destroy(rk);
  if (!answered) return std::nullopt;
  return out;
}

void GroupMember::Commit(int partition, int64_t offset) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic_.c_str(), partition)->offset = offset;
  EXPECT_EQ(rd_kafka_commit(rk_, list, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(list);
}

}  // namespace pgflow::testing
