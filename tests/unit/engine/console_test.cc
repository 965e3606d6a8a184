// The web console's sessions, refusals and samples (engine/console.h), without a server: the
// deferred work is run in place.

#include "engine/console.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pgflow {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

ConsoleReply Ask(Console& console, const ConsoleRequest& request) {
  std::optional<ConsoleReply> reply = console.Handle(request);
  EXPECT_TRUE(reply.has_value()) << request.path;
  if (!reply) return {};
  if (reply->deferred) return reply->deferred();
  return *reply;
}

std::string HeaderOf(const ConsoleReply& reply, std::string_view name) {
  for (const auto& [key, value] : reply.headers) {
    if (key == name) return value;
  }
  return "";
}

struct Fixture {
  std::vector<std::string> acted;
  int samples = 0;
  Console console{ConsoleHooks{
      .kind = "pooler",
      .title = "test",
      .check_login = [](const std::string& u,
                        const std::string& p) { return u == "ops" && p == "pw"; },
      .state_needs_login = true,
      .state = [](const std::string& user) { return nlohmann::json{{"for", user}}; },
      .sample = [this] { return nlohmann::json{{"n", ++samples}}; },
      .act = [this](const std::string& user,
                    const nlohmann::json& request) -> absl::StatusOr<std::string> {
        acted.push_back(user + " " + request["action"].get<std::string>());
        return "done";
      },
      .sample_every = std::chrono::seconds(5),
      .history = 3}};

  ConsoleRequest Post(std::string_view path, std::string_view body) {
    return {.method = "POST", .path = path, .body = body, .host = "127.0.0.1:9188",
            .content_type = "application/json", .peer = "127.0.0.1"};
  }
};

TEST(ConsoleTest, ALoginSetsAStrictHttpOnlyCookieAndItsTokenLetsAnActionThrough) {
  Fixture f;
  ConsoleReply login =
      Ask(f.console, f.Post("/api/login", R"({"user":"ops","password":"pw"})"));
  ASSERT_EQ(login.status, 200) << login.body;
  const std::string cookie = HeaderOf(login, "Set-Cookie");
  EXPECT_THAT(cookie, StartsWith("pgflow_console_9188="));
  EXPECT_THAT(cookie, HasSubstr("HttpOnly"));
  EXPECT_THAT(cookie, HasSubstr("SameSite=Strict"));
  const std::string token = cookie.substr(0, cookie.find(';'));
  const std::string csrf = nlohmann::json::parse(login.body)["csrf"];
  EXPECT_EQ(csrf.size(), 64u);

  ConsoleRequest action = f.Post("/api/action", R"({"action":"pause"})");
  const std::string cookies = "theme=dark; " + token;  // (the request holds views)
  action.cookie = cookies;
  EXPECT_EQ(Ask(f.console, action).status, 403);  // no token
  action.csrf_token = std::string(64, '0');
  EXPECT_EQ(Ask(f.console, action).status, 403);  // a forged one
  action.csrf_token = csrf;
  action.origin = "http://evil.example";
  EXPECT_EQ(Ask(f.console, action).status, 403);  // another origin
  action.origin = "http://127.0.0.1:9188";
  action.sec_fetch_site = "cross-site";
  EXPECT_EQ(Ask(f.console, action).status, 403);
  action.sec_fetch_site = "same-origin";
  action.content_type = "text/plain";
  EXPECT_EQ(Ask(f.console, action).status, 415);  // what a form could send
  EXPECT_TRUE(f.acted.empty());
  action.content_type = "application/json; charset=utf-8";
  ConsoleReply done = Ask(f.console, action);
  EXPECT_EQ(done.status, 200) << done.body;
  EXPECT_THAT(f.acted, ::testing::ElementsAre("ops pause"));

  ConsoleRequest state{.method = "GET", .path = "/api/state", .cookie = token,
                       .host = "127.0.0.1:9188"};
  EXPECT_THAT(token, StartsWith("pgflow_console_9188="));  // one cookie per endpoint's port
  EXPECT_EQ(nlohmann::json::parse(Ask(f.console, state).body)["for"], "ops");
  ConsoleRequest history{.method = "GET", .path = "/api/history", .host = "127.0.0.1:9188"};
  EXPECT_EQ(Ask(f.console, history).status, 401);  // the pooler's samples name its databases
  history.cookie = token;
  EXPECT_EQ(Ask(f.console, history).status, 200);
  ConsoleRequest logout = f.Post("/api/logout", "{}");
  logout.cookie = token;
  logout.csrf_token = csrf;
  EXPECT_EQ(Ask(f.console, logout).status, 200);
  EXPECT_EQ(Ask(f.console, state).status, 401);
  EXPECT_EQ(Ask(f.console, action).status, 401);
}

TEST(ConsoleTest, FailedLoginsAreLimitedPerAddress) {
  Fixture f;
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Ask(f.console, f.Post("/api/login", R"({"user":"ops","password":"x"})")).status,
              401);
  }
  ConsoleReply limited =
      Ask(f.console, f.Post("/api/login", R"({"user":"ops","password":"pw"})"));
  EXPECT_EQ(limited.status, 429);
  EXPECT_FALSE(HeaderOf(limited, "Retry-After").empty());
  ConsoleRequest other = f.Post("/api/login", R"({"user":"ops","password":"pw"})");
  other.peer = "10.0.0.2";
  EXPECT_EQ(Ask(f.console, other).status, 200);
  EXPECT_EQ(Ask(f.console, f.Post("/api/login", "not json")).status, 400);
}

TEST(ConsoleTest, ServesItsFilesAndKeepsABoundedHistory) {
  Fixture f;
  ConsoleReply page = Ask(f.console, {.method = "GET", .path = "/"});
  EXPECT_THAT(page.content_type, StartsWith("text/html"));
  EXPECT_THAT(page.body, HasSubstr("/console.js"));
  EXPECT_THAT(Ask(f.console, {.method = "GET", .path = "/console.js"}).content_type,
              StartsWith("text/javascript"));
  EXPECT_FALSE(f.console.Handle({.method = "GET", .path = "/metrics"}).has_value());
  EXPECT_EQ(Ask(f.console, {.method = "GET", .path = "/api/nope"}).status, 404);
  for (int i = 0; i < 5; ++i) f.console.Sample();
  ConsoleReply login =
      Ask(f.console, f.Post("/api/login", R"({"user":"ops","password":"pw"})"));
  const std::string cookie = HeaderOf(login, "Set-Cookie");
  const std::string token = cookie.substr(0, cookie.find(';'));
  nlohmann::json history = nlohmann::json::parse(
      Ask(f.console, {.method = "GET", .path = "/api/history", .cookie = token,
                      .host = "127.0.0.1:9188"})
          .body);
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[0]["n"], 3);
  EXPECT_EQ(history[2]["n"], 5);
  EXPECT_TRUE(history[2].contains("t"));
}

}  // namespace
}  // namespace pgflow
