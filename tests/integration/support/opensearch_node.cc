#include "tests/integration/support/opensearch_node.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include <gtest/gtest.h>

namespace pgflow::testing {

OpenSearchNode::OpenSearchNode() {
  char tmpl[] = "/tmp/pgflow-test-os.XXXXXX";
  char* d = mkdtemp(tmpl);
  if (d == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  dir_ = d;
  const std::string cmd = std::string(PGFLOW_SOURCE_DIR) + "/scripts/ostmp.sh start " + dir_;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[64] = {};
  if (p == nullptr || std::fgets(buf, sizeof(buf), p) == nullptr || pclose(p) != 0) {
    std::fprintf(stderr, "could not start a test OpenSearch node (%s)\n", cmd.c_str());
    std::abort();
  }
  port_ = std::atoi(buf);
}

OpenSearchNode::~OpenSearchNode() {
  const std::string cmd = std::string(PGFLOW_SOURCE_DIR) + "/scripts/ostmp.sh stop " + dir_;
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not stop %s\n", dir_.c_str());
}

HttpAnswer OpenSearchNode::Get(const std::string& path, const std::string& args) const {
  return Curl(url() + path, args);
}

OpenSearchNode& SharedOpenSearch() {
  static std::unique_ptr<OpenSearchNode> node = std::make_unique<OpenSearchNode>();
  return *node;
}

FaultProxy::FaultProxy(const std::string& upstream, bool tls) : tls_(tls) {
  const std::string script =
      std::string(PGFLOW_SOURCE_DIR) + "/tests/integration/tools/http_fault_proxy.py";
  const std::string port_file = dir_.File("port");
  const std::string key_file = dir_.File("key.pem");
  if (tls_ && std::system(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "
                           "/CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout '" +
                           key_file + "' -out '" + cert_file() + "' 2>/dev/null")
                              .c_str()) != 0) {
    ADD_FAILURE() << "openssl could not make a certificate";
  }
  const std::string cert = cert_file();
  pid_ = fork();
  if (pid_ == 0) {
    if (tls_) {
      execlp("python3", "python3", script.c_str(), upstream.c_str(), port_file.c_str(),
             cert.c_str(), key_file.c_str(), nullptr);
    } else {
      execlp("python3", "python3", script.c_str(), upstream.c_str(), port_file.c_str(), nullptr);
    }
    _exit(127);
  }
  WaitFor(
      [&] {
        port_ = std::atoi(ReadFile(port_file).c_str());
        return port_ != 0;
      },
      std::chrono::seconds(5));
  if (port_ == 0) ADD_FAILURE() << "the fault proxy did not start (" << script << ")";
}

FaultProxy::~FaultProxy() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void FaultProxy::Fault(const std::string& query) const {
  HttpAnswer a = Curl(url() + "/_fault?" + query, tls_ ? "-k -X POST" : "-X POST");
  if (a.code != 200) ADD_FAILURE() << "the fault proxy refused " << query;
}

std::string FaultProxy::Stats() const { return Curl(url() + "/_fault", tls_ ? "-k" : "").body; }

}  // namespace pgflow::testing
