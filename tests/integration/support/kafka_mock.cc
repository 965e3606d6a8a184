#include "tests/integration/support/kafka_mock.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "gtest/gtest.h"

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

std::string MockKafka::ReadLine() {
  char buf[4096];
  if (std::fgets(buf, sizeof(buf), from_) == nullptr) return "";
  std::string line(buf);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  return line;
}

}  // namespace pgflow::testing
