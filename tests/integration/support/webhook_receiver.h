#pragma once

// The webhook test receiver (tests/integration/tools/webhook_receiver, a test server written
// for these tests: it stands in for a user's endpoint) as a child process on a loopback port:
// it checks Standard Webhooks signatures with its own code, records every request in a JSON
// lines log, and fails, stalls, answers 429 with Retry-After or 410 when told to.

#include <sys/types.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/integration/support/test_support.h"

namespace pgflow::testing {

class WebhookReceiver {
 public:
  // Checks signatures against `secret` (several: space-separated). `port` 0: a free one.
  explicit WebhookReceiver(std::string secret, int port = 0);
  ~WebhookReceiver();
  WebhookReceiver(const WebhookReceiver&) = delete;
  WebhookReceiver& operator=(const WebhookReceiver&) = delete;

  std::string url(const std::string& path = "/hook") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int port() const { return port_; }

  // Stops it at once (connections refused until Start) and starts it again on the same port,
  // appending to the same log.
  void Kill();
  void Start();
  // Sets the fault rule ({"status": 500, "count": 3, "match": "...", "retry_after": 2,
  // "stall_ms": 0}); {} goes back to answering 200.
  void Control(const nlohmann::json& rule) const;
  // Waits (up to a minute) until the rule's count is used up; fails the test otherwise.
  void WaitUntilRuleUsed() const;
  // Every request received so far, as logged: {"id", "timestamp", "signature", "valid",
  // "answered", "gzip", "headers", "path", "body"}.
  std::vector<nlohmann::json> Requests() const;
  // The events of the requests answered 2xx, in the order received: {"webhook_id",
  // "path", "event"} per event, the event being the body's object (or each of its array).
  std::vector<nlohmann::json> Accepted() const;

 private:
  TempDir dir_;
  std::string secret_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace pgflow::testing
