#include "tests/integration/support/etcd_cluster.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace pgflow::testing {
namespace {

constexpr const char* kEtcd = "/usr/bin/etcd";

}  // namespace

EtcdCluster::EtcdCluster(int members)
    : EtcdCluster(std::vector<std::string>(members, "127.0.0.1"), nullptr) {}

EtcdCluster::EtcdCluster(std::vector<std::string> hosts, std::function<void(int)> in_child)
    : in_child_(std::move(in_child)) {
  const int members = static_cast<int>(hosts.size());
  if (access(kEtcd, X_OK) != 0) {
    std::fprintf(stderr, "%s is missing (Debian's etcd-server: scripts/setup.sh installs it)\n",
                 kEtcd);
    std::abort();
  }
  std::vector<std::string> peers;
  for (int i = 0; i < members; ++i) {
    Member m;
    m.name = absl::StrCat("e", i + 1);
    m.host = hosts[i];
    m.client_port = FreeLoopbackPort();
    m.peer_port = FreeLoopbackPort();
    peers.push_back(absl::StrCat(m.name, "=http://", m.host, ":", m.peer_port));
    members_.push_back(m);
  }
  initial_cluster_ = absl::StrJoin(peers, ",");
  for (int i = 0; i < members; ++i) Launch(i);
  for (int i = 0; i < members; ++i) {
    if (!WaitFor([&] { return Healthy(i); }, std::chrono::seconds(30))) {
      std::fprintf(stderr, "etcd member %s did not become healthy; its log:\n%s\n",
                   members_[i].name.c_str(),
                   ReadFile(dir_.File(members_[i].name + ".log")).c_str());
      std::abort();
    }
  }
}

EtcdCluster::~EtcdCluster() {
  for (int i = 0; i < size(); ++i) Kill(i);
}

std::string EtcdCluster::url(int i) const {
  return absl::StrCat("http://", members_[i].host, ":", members_[i].client_port);
}

std::vector<std::string> EtcdCluster::urls() const {
  std::vector<std::string> out;
  for (int i = 0; i < size(); ++i) out.push_back(url(i));
  return out;
}

void EtcdCluster::Launch(int i) {
  Member& m = members_[i];
  const std::string client = url(i);
  const std::string peer = absl::StrCat("http://", m.host, ":", m.peer_port);
  const std::string data = dir_.File(m.name + ".etcd");
  const std::string log = dir_.File(m.name + ".log");
  // (A member started again joins with its data: the cluster state flag is read only once.)
  const char* state = m.started_once ? "existing" : "new";
  m.started_once = true;
  m.pid = fork();
  if (m.pid == 0) {
    if (in_child_) in_child_(i);
    FILE* out = std::freopen(log.c_str(), "a", stderr);
    (void)out;
    execl(kEtcd, kEtcd, "--name", m.name.c_str(), "--data-dir", data.c_str(),
          "--listen-client-urls", client.c_str(), "--advertise-client-urls", client.c_str(),
          "--listen-peer-urls", peer.c_str(), "--initial-advertise-peer-urls", peer.c_str(),
          "--initial-cluster", initial_cluster_.c_str(), "--initial-cluster-state", state,
          "--initial-cluster-token", "pgflow-test", "--heartbeat-interval", "100",
          "--election-timeout", "1000", "--log-level", "warn",
          // (etcd 3.4's default is off: a member back from a partition would depose the leader
          // and stall every call for an election.)
          "--pre-vote",
          // (One disk shared by every member and the PostgreSQL servers of the tests, busy
          // with their fsyncs: etcd's own would stall it for seconds. A member killed -9 loses
          // nothing without them; only a machine's crash would.)
          "--unsafe-no-fsync", nullptr);
    _exit(127);
  }
}

bool EtcdCluster::Healthy(int i) const {
  const HttpAnswer answer = Curl(url(i) + "/health", "--max-time 2");
  return answer.code == 200 && answer.body.find("\"true\"") != std::string::npos;
}

void EtcdCluster::Kill(int i) {
  Member& m = members_[i];
  if (m.pid <= 0) return;
  kill(m.pid, SIGCONT);  // (a paused one too)
  kill(m.pid, SIGKILL);
  waitpid(m.pid, nullptr, 0);
  m.pid = -1;
}

void EtcdCluster::Start(int i) {
  Launch(i);
  if (!WaitFor([&] { return Healthy(i); }, std::chrono::seconds(30))) {
    ADD_FAILURE() << "etcd member " << members_[i].name << " did not come back";
  }
}

void EtcdCluster::Pause(int i) {
  if (members_[i].pid > 0) kill(members_[i].pid, SIGSTOP);
}

void EtcdCluster::Resume(int i) {
  if (members_[i].pid > 0) kill(members_[i].pid, SIGCONT);
}

}  // namespace pgflow::testing
