#include "tests/integration/support/node_cluster.h"

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <sstream>
#include <utility>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pgflow::testing {

NodeCluster::NodeCluster(NodeClusterOptions options) : options_(std::move(options)) {
  const passwd* postgres = ::getpwnam("postgres");
  if (postgres == nullptr ||
      ::chown(dir_.path().c_str(), postgres->pw_uid, postgres->pw_gid) != 0) {
    ADD_FAILURE() << "no postgres user to give " << dir_.path()
                  << " to (scripts/setup.sh installs PostgreSQL)";
  }
  ::chmod(dir_.path().c_str(), 0755);
  // On a lab's hosts, the others reach a server from their own addresses.
  const std::string hba =
      options_.lab == nullptr
          ? ""
          : absl::StrCat(", pg_hba: ['host all all ", options_.lab->bridge_address(),
                         "/24 trust', 'host replication all ", options_.lab->bridge_address(),
                         "/24 trust']");
  for (int i = 0; i < kNodes; ++i) {
    Member m;
    m.name = absl::StrCat("n", i + 1);
    m.host = options_.lab == nullptr ? "127.0.0.1" : options_.lab->address(i);
    m.pg_port = FreeLoopbackPort();
    m.api_port = FreeLoopbackPort();
    m.file = dir_.File(m.name + ".yaml");
    WriteFile(m.file,
              absl::StrCat("name: ", m.name, "\ncluster: ", options_.name, "\netcd: [",
                           absl::StrJoin(options_.etcd, ", "), "]\ndata_dir: ", dir_.File(m.name),
                           "\npostgres: {listen: '", m.host, ":", m.pg_port, "'", hba,
                           "}\napi: '", m.host, ":", m.api_port,
                           "'\nttl: 6s\nloop_wait: 1s\nretry_timeout: 2s\n",
                           "synchronous: ", options_.synchronous ? "on" : "off", "\n"));
    members_.push_back(std::move(m));
  }
}

NodeCluster::~NodeCluster() {
  for (Member& m : members_) {
    if (m.process != nullptr && m.process->Running()) {
      m.process->Signal(SIGTERM);
      if (m.process->Wait(std::chrono::seconds(30)) == -1) ADD_FAILURE() << m.name << " did not stop";
    }
  }
}

void NodeCluster::Start(int i) {
  std::optional<NetnsLab::InHost> on_its_host;
  if (options_.lab != nullptr) on_its_host.emplace(*options_.lab, i);
  members_[i].process = std::make_unique<PgflowProcess>(
      std::vector<std::string>{"node", "--config", members_[i].file}, Log(i),
      std::map<std::string, std::string>{}, "postgres");
}

void NodeCluster::Kill(int i) {
  members_[i].process->Signal(SIGKILL);
  members_[i].process->Wait(std::chrono::seconds(10));
}

std::string NodeCluster::Log(int i) const { return dir_.File(members_[i].name + ".log"); }

std::string NodeCluster::Url(int i) const {
  return absl::StrCat("postgres://postgres@", Address(i), "/postgres");
}

std::string NodeCluster::Address(int i) const {
  return absl::StrCat(members_[i].host, ":", members_[i].pg_port);
}

std::string NodeCluster::Api(int i, const std::string& page) const {
  return absl::StrCat("http://", members_[i].host, ":", members_[i].api_port, page);
}

std::vector<pid_t> NodeCluster::ServerPids(int i) const {
  const std::string pidfile = ReadFile(dir_.File(members_[i].name + "/postmaster.pid"));
  if (pidfile.empty()) return {};
  const pid_t postmaster = std::stoi(pidfile.substr(0, pidfile.find('\n')));
  std::vector<pid_t> pids = {postmaster};
  std::istringstream children(
      ReadFile(absl::StrCat("/proc/", postmaster, "/task/", postmaster, "/children")));
  for (pid_t child = 0; children >> child;) pids.push_back(child);
  return pids;
}

int NodeCluster::Primaries() const {
  int primaries = 0;
  for (int i = 0; i < kNodes; ++i) primaries += Curl(Api(i, "/primary"), "--max-time 3").code == 200;
  return primaries;
}

nlohmann::json NodeCluster::Status(int via) const {
  std::string out;
  RunPgflow({"cluster", "status", "--json", "--config", members_[via].file}, &out);
  nlohmann::json status =
      nlohmann::json::parse(out.substr(std::min(out.find('{'), out.size())), nullptr, false);
  return status.is_discarded() ? nlohmann::json() : status;
}

std::optional<std::string> NodeCluster::Leader(int via) const {
  const nlohmann::json status = Status(via);
  if (!status.is_object() || !status["leader"].is_string()) return std::nullopt;
  return status["leader"].get<std::string>();
}

bool NodeCluster::Converged(const std::string& not_this) const {
  const nlohmann::json status = Status();
  if (!status.is_object() || !status["leader"].is_string()) return false;
  if (status["leader"] == not_this) return false;
  int streaming = 0;
  int synchronous = 0;
  for (const nlohmann::json& m : status["members"]) {
    if (m["role"] == "replica" && m["streaming"] == true) ++streaming;
    if (m["role"] == "replica" && m["synchronous"] == true) ++synchronous;
  }
  return streaming == kNodes - 1 && (!options_.synchronous || synchronous == 1);
}

std::string NodeCluster::Logs() const {
  std::string out;
  for (int i = 0; i < kNodes; ++i) {
    absl::StrAppend(&out, "---- ", members_[i].name, "\n", ReadFile(Log(i)));
    const std::string server = ReadFile(dir_.File(members_[i].name + "/server.log"));
    absl::StrAppend(&out, "---- ", members_[i].name, "'s server.log, its end\n",
                    server.substr(server.size() - std::min<size_t>(server.size(), 3000)));
  }
  return out;
}

}  // namespace pgflow::testing
