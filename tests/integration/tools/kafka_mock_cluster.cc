// kafka_mock_cluster: a Kafka cluster for tests, in a process of its own so that pgflow and
// kcat can talk to it as to any cluster. It is librdkafka's mock cluster (rdkafka_mock.h): a
// real Kafka protocol listener on loopback, with brokers 1..N, topics held in memory.
//
//   kafka_mock_cluster [brokers=3]
//
// Prints "bootstrap <host:port,...>" on stdout, then reads commands from stdin, one per line,
// answering each with "ok" or "error <why>":
//   down <broker id>          the broker closes its connections and refuses new ones
//   up <broker id>            it serves again
//   topic <name> <partitions> creates a topic (replication factor 1)
//   rtt <broker id> <ms>      adds a round-trip delay to the broker's answers
//   leader <topic> <partition> <broker id>
//                             moves the partition's leadership to the broker
//   errors <api key> <error code>...
//                             the next requests of that API (any client's) fail with those
//                             errors, one each, in order (e.g. "errors 8 12": the next
//                             OffsetCommit gets OFFSET_METADATA_TOO_LARGE for every partition)
// Exits at end of input (or "quit"), taking the cluster with it.

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  int brokers = argc > 1 ? std::atoi(argv[1]) : 3;
  if (brokers < 1 || brokers > 16) {
    std::fprintf(stderr, "usage: kafka_mock_cluster [brokers 1..16]\n");
    return 2;
  }
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
  rd_kafka_t* host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (host == nullptr) {
    std::fprintf(stderr, "kafka_mock_cluster: %s\n", errstr);
    return 1;
  }
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(host, brokers);
  if (cluster == nullptr) {
    std::fprintf(stderr, "kafka_mock_cluster: cannot start the mock cluster\n");
    return 1;
  }
  std::printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(cluster));
  std::fflush(stdout);

  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string command;
    in >> command;
    if (command.empty()) continue;
    if (command == "quit") break;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (command == "down" || command == "up") {
      int id = 0;
      if (!(in >> id)) {
        std::printf("error usage: %s <broker id>\n", command.c_str());
        std::fflush(stdout);
        continue;
      }
      err = command == "down" ? rd_kafka_mock_broker_set_down(cluster, id)
                              : rd_kafka_mock_broker_set_up(cluster, id);
    } else if (command == "topic") {
      std::string name;
      int partitions = 0;
      if (!(in >> name >> partitions)) {
        std::printf("error usage: topic <name> <partitions>\n");
        std::fflush(stdout);
        continue;
      }
      err = rd_kafka_mock_topic_create(cluster, name.c_str(), partitions, 1);
    } else if (command == "leader") {
      std::string topic;
      int partition = 0;
      int id = 0;
      if (!(in >> topic >> partition >> id)) {
        std::printf("error usage: leader <topic> <partition> <broker id>\n");
        std::fflush(stdout);
        continue;
      }
      err = rd_kafka_mock_partition_set_leader(cluster, topic.c_str(), partition, id);
    } else if (command == "rtt") {
      int id = 0;
      int ms = 0;
      if (!(in >> id >> ms)) {
        std::printf("error usage: rtt <broker id> <ms>\n");
        std::fflush(stdout);
        continue;
      }
      err = rd_kafka_mock_broker_set_rtt(cluster, id, ms);
    } else if (command == "errors") {
      int api_key = 0;
      std::vector<rd_kafka_resp_err_t> errors;
      int code = 0;
      if (in >> api_key) {
        while (in >> code) errors.push_back(static_cast<rd_kafka_resp_err_t>(code));
      }
      if (errors.empty()) {
        std::printf("error usage: errors <api key> <error code>...\n");
        std::fflush(stdout);
        continue;
      }
      rd_kafka_mock_push_request_errors_array(cluster, static_cast<int16_t>(api_key), errors.size(),
                                              errors.data());
    } else {
      std::printf("error unknown command %s\n", command.c_str());
      std::fflush(stdout);
      continue;
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::printf("ok\n");
    } else {
      std::printf("error %s\n", rd_kafka_err2str(err));
    }
    std::fflush(stdout);
  }
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(host);
  return 0;
}
