#include "tests/integration/support/webhook_receiver.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include <gtest/gtest.h>

namespace pgflow::testing {

WebhookReceiver::WebhookReceiver(std::string secret, int port)
    : secret_(std::move(secret)), port_(port) {
  Start();
}

WebhookReceiver::~WebhookReceiver() { Kill(); }

void WebhookReceiver::Start() {
  const std::string port_file = dir_.File("port");
  std::remove(port_file.c_str());
  const std::string listen = "127.0.0.1:" + std::to_string(port_);
  const std::string log = dir_.File("requests.jsonl");
  pid_ = fork();
  if (pid_ == 0) {
    execl(WEBHOOK_RECEIVER_BINARY, WEBHOOK_RECEIVER_BINARY, "-listen", listen.c_str(),
          "-port-file", port_file.c_str(), "-secret", secret_.c_str(), "-log", log.c_str(),
          nullptr);
    _exit(127);
  }
  int bound = 0;
  WaitFor(
      [&] {
        bound = std::atoi(ReadFile(port_file).c_str());
        return bound != 0;
      },
      std::chrono::seconds(5));
  if (bound == 0) ADD_FAILURE() << "the webhook receiver did not start (" WEBHOOK_RECEIVER_BINARY ")";
  port_ = bound;
}

void WebhookReceiver::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void WebhookReceiver::Control(const nlohmann::json& rule) const {
  HttpAnswer a = Curl(url("/_control"), "-X POST -d '" + rule.dump() + "'");
  if (a.code != 200) ADD_FAILURE() << "the webhook receiver refused the rule " << rule.dump();
}

void WebhookReceiver::WaitUntilRuleUsed() const {
  nlohmann::json rule;
  const bool used = WaitFor(
      [&] {
        rule = nlohmann::json::parse(Curl(url("/_control")).body, nullptr, false);
        return rule.is_object() && rule.value("count", -1) == 0;
      },
      std::chrono::seconds(60));
  if (!used) ADD_FAILURE() << "the receiver's rule was not used up: " << rule.dump();
}

std::vector<nlohmann::json> WebhookReceiver::Requests() const {
  return ReadJsonlWritten(dir_.File("requests.jsonl"));  // (the receiver may be writing)
}

std::vector<nlohmann::json> WebhookReceiver::Accepted() const {
  std::vector<nlohmann::json> out;
  for (const nlohmann::json& request : Requests()) {
    const int answered = request.value("answered", 0);
    if (answered / 100 != 2) continue;
    nlohmann::json body = nlohmann::json::parse(request.value("body", ""), nullptr, false);
    std::vector<nlohmann::json> events;
    if (body.is_array()) {
      for (nlohmann::json& e : body) events.push_back(std::move(e));
    } else {
      events.push_back(std::move(body));
    }
    for (nlohmann::json& e : events) {
      out.push_back({{"webhook_id", request.value("id", "")},
                     {"path", request.value("path", "")},
                     {"event", std::move(e)}});
    }
  }
  return out;
}

}  // namespace pgflow::testing
