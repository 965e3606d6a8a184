#include "tests/integration/support/kafka_broker.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>

#include "gtest/gtest.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

// Runs scripts/kafkatmp.sh with `args`; its standard output, trimmed, or "" when it failed.
std::string KafkaTmp(const std::string& args, const std::string& env = "") {
  const std::string command = env + " " + std::string(PGFLOW_SOURCE_DIR) + "/scripts/kafkatmp.sh " +
                              args + " 2>>'" + std::string(args.substr(args.find(' ') + 1)) +
                              ".err'";
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  char buf[256];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  if (pclose(p) != 0) return "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::string Quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace

KafkaBroker::KafkaBroker(const std::string& extra_config) {
  char tmpl[] = "/tmp/pgflow-kafka.XXXXXX";
  const char* made = mkdtemp(tmpl);
  if (made == nullptr) std::abort();
  dir_ = std::string(made) + "/broker";
  bootstrap_ = KafkaTmp("start " + dir_, "KAFKA_EXTRA_CONFIG=" + Quoted(extra_config));
  if (bootstrap_.empty()) {
    ADD_FAILURE() << "the Kafka broker did not start: " << ReadFile(dir_ + ".err");
  }
}

KafkaBroker::~KafkaBroker() {
  KafkaTmp("stop " + dir_);
  const std::string parent = dir_.substr(0, dir_.rfind('/'));
  std::system(("rm -rf '" + parent + "'").c_str());
}

void KafkaBroker::Kill() { KafkaTmp("kill " + dir_); }

void KafkaBroker::Resume() {
  if (KafkaTmp("resume " + dir_).empty()) {
    ADD_FAILURE() << "the Kafka broker did not start again: " << ReadFile(dir_ + ".err");
  }
}

void KafkaBroker::CreateTopic(const std::string& topic, int partitions,
                              const std::map<std::string, std::string>& config) {
  CreateKafkaTopic(bootstrap_, topic, partitions, config);
}

namespace {

rd_kafka_t* NewAdminClient(const std::string& bootstrap) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), errstr, sizeof(errstr));
  rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (rk == nullptr) ADD_FAILURE() << errstr;
  return rk;
}

}  // namespace

std::string TopicConfig(const std::string& bootstrap, const std::string& topic,
                        const std::string& name) {
  rd_kafka_t* rk = NewAdminClient(bootstrap);
  if (rk == nullptr) return "";
  rd_kafka_ConfigResource_t* resource =
      rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str());
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_DescribeConfigs(rk, &resource, 1, nullptr, queue);
  rd_kafka_event_t* event = rd_kafka_queue_poll(queue, 30000);
  std::string value;
  if (event != nullptr && rd_kafka_event_error(event) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    size_t n = 0;
    const rd_kafka_ConfigResource_t** resources = rd_kafka_DescribeConfigs_result_resources(
        rd_kafka_event_DescribeConfigs_result(event), &n);
    for (size_t i = 0; i < n; ++i) {
      size_t count = 0;
      const rd_kafka_ConfigEntry_t** entries = rd_kafka_ConfigResource_configs(resources[i], &count);
      for (size_t j = 0; j < count; ++j) {
        if (name == rd_kafka_ConfigEntry_name(entries[j]) &&
            rd_kafka_ConfigEntry_value(entries[j]) != nullptr) {
          value = rd_kafka_ConfigEntry_value(entries[j]);
        }
      }
    }
  }
  if (event != nullptr) rd_kafka_event_destroy(event);
  rd_kafka_queue_destroy(queue);
  rd_kafka_ConfigResource_destroy(resource);
  rd_kafka_destroy(rk);
  return value;
}

int TopicPartitions(const std::string& bootstrap, const std::string& topic) {
  rd_kafka_t* rk = NewAdminClient(bootstrap);
  if (rk == nullptr) return 0;
  rd_kafka_topic_t* t = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* metadata = nullptr;
  int partitions = 0;
  if (rd_kafka_metadata(rk, 0, t, &metadata, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (metadata->topic_cnt == 1 && metadata->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      partitions = metadata->topics[0].partition_cnt;
    }
    rd_kafka_metadata_destroy(metadata);
  }
  rd_kafka_topic_destroy(t);
  rd_kafka_destroy(rk);
  return partitions;
}

void CreateKafkaTopic(const std::string& bootstrap, const std::string& topic, int partitions,
                      const std::map<std::string, std::string>& config) {
  char errstr[512];
  rd_kafka_t* rk = NewAdminClient(bootstrap);
  if (rk == nullptr) return;
  rd_kafka_NewTopic_t* new_topic =
      rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, errstr, sizeof(errstr));
  for (const auto& [name, value] : config) {
    rd_kafka_NewTopic_set_config(new_topic, name.c_str(), value.c_str());
  }
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t* options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_operation_timeout(options, 10000, errstr, sizeof(errstr));
  rd_kafka_CreateTopics(rk, &new_topic, 1, options, queue);
  rd_kafka_event_t* event = rd_kafka_queue_poll(queue, 30000);
  if (event == nullptr) {
    ADD_FAILURE() << "no answer to creating topic " << topic;
  } else if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    ADD_FAILURE() << "creating topic " << topic << ": " << rd_kafka_event_error_string(event);
  } else {
    size_t n = 0;
    const rd_kafka_topic_result_t** results =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &n);
    for (size_t i = 0; i < n; ++i) {
      const rd_kafka_resp_err_t err = rd_kafka_topic_result_error(results[i]);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        ADD_FAILURE() << "creating topic " << topic << ": "
                      << rd_kafka_topic_result_error_string(results[i]);
      }
    }
  }
  if (event != nullptr) rd_kafka_event_destroy(event);
  rd_kafka_AdminOptions_destroy(options);
  rd_kafka_queue_destroy(queue);
  rd_kafka_NewTopic_destroy(new_topic);
  rd_kafka_destroy(rk);
}

}  // namespace pgflow::testing
