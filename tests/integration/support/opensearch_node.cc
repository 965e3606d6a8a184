#include "tests/integration/support/opensearch_node.h"

#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

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

}  // namespace pgflow::testing
