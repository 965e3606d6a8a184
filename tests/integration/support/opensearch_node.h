#pragma once

// A real OpenSearch node for the tests (scripts/ostmp.sh: the minimal distribution from Maven
// Central, on free loopback ports), started when constructed and removed when destroyed.

#include <string>

#include "tests/integration/support/test_support.h"

namespace pgflow::testing {

class OpenSearchNode {
 public:
  // Starts the node and waits for green health; aborts the test binary with why on failure.
  OpenSearchNode();
  ~OpenSearchNode();
  OpenSearchNode(const OpenSearchNode&) = delete;
  OpenSearchNode& operator=(const OpenSearchNode&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // curl on `path` ("/items/_count"), with curl `args` ("-X POST -d ...").
  HttpAnswer Get(const std::string& path, const std::string& args = "") const;

 private:
  std::string dir_;
  int port_ = 0;
};

// The node the tests of one binary share.
OpenSearchNode& SharedOpenSearch();

// tests/integration/tools/http_fault_proxy.py in front of `upstream`, for outages on command:
// Fault("status=503&count=-1"), Fault("items=3&count=2"), Fault("clear=1").
class FaultProxy {
 public:
  // With `tls`, the proxy speaks https with a self-signed certificate for 127.0.0.1
  // (cert_file(): the CA a client must trust).
  explicit FaultProxy(const std::string& upstream, bool tls = false);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  std::string url() const {
    return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
  }
  std::string cert_file() const { return dir_.File("cert.pem"); }
  void Fault(const std::string& query) const;
  // What was injected so far: {"fault": ..., "stats": {"injected", "items_failed", ...}}.
  std::string Stats() const;

 private:
  TempDir dir_;
  bool tls_ = false;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace pgflow::testing
