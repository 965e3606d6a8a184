#pragma once

// The web console on the admin endpoint (engine/admin_server.h): a page, a script and a style
// built into the binary (engine/console_assets.h) that draw what the module serving them
// describes as JSON, and the login and actions behind them.
//
//   GET  /                 the page (the same for `pgflow run` and `pgflow pooler`: it asks
//   GET  /console.js, /console.css   /api/session which of the two it draws)
//   GET  /api/session      {kind, title, login, user, csrf}: who is logged in, and the token
//                          their actions must carry
//   POST /api/login        {user, password}: sets the session cookie
//   POST /api/logout
//   GET  /api/state        what the page draws (ConsoleHooks::state)
//   GET  /api/history      the samples of the last hour for the charts (ConsoleHooks::sample,
//                          taken every `sample_every` whether or not anyone looks: one small
//                          JSON object each, at most `history` of them)
//   POST /api/action       {action, ...}: ConsoleHooks::act, logged with the user and address
//
// Security: an action needs a login (ConsoleHooks::check_login: the pooler's console users, the
// pipeline's admin.users file). The session is a random 256-bit token in a cookie that is
// HttpOnly and SameSite=Strict, named after the endpoint's port (browsers share cookies between
// the ports of a host); it lasts while used (30 minutes idle, 12 hours at most).
// Every POST must be JSON (so no HTML form can send one), must not come from another site
// (Origin must be this endpoint's own, Sec-Fetch-Site same-origin when the browser sends it),
// and all but the login must carry the session's CSRF token in X-CSRF-Token. Failed logins are
// limited per address (5 a minute). Every answer carries a Content-Security-Policy that allows
// only the endpoint's own script and style, and nosniff.
//
// Thread-safety: Handle and Sample are called from the admin server's thread; the work a reply
// defers (ConsoleReply::deferred) runs on its worker thread.

#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace pgflow {

// What a module puts on the console.
struct ConsoleHooks {
  std::string kind;   // "pipeline" or "pooler": which page the script draws
  std::string title;  // "pipeline orders", "pooler"
  // Whether `user` with `password` may log in (and act). Called on the worker thread. Null: no
  // one can log in, and the console only shows what needs no login.
  std::function<bool(const std::string& user, const std::string& password)> check_login;
  // Whether /api/state needs a login (the pooler's does: it names users and addresses).
  bool state_needs_login = false;
  // What the page draws; `user` is empty when no one is logged in. Called on the worker thread.
  std::function<nlohmann::json(const std::string& user)> state;
  // One sample for the charts (an object; "t" is added). Called on the admin server's thread
  // every `sample_every`: keep it to reading counters.
  std::function<nlohmann::json()> sample;
  // Runs the action `request` ({"action": name, ...}) for `user`: what to tell them, or an
  // error (its message shown). Called on the worker thread.
  std::function<absl::StatusOr<std::string>(const std::string& user,
                                            const nlohmann::json& request)>
      act;
  std::chrono::seconds sample_every{5};
  size_t history = 720;  // an hour of samples every 5 s
};

struct ConsoleRequest {
  std::string_view method;  // "GET", "POST", ...
  std::string_view path;
  std::string_view body;
  std::string_view cookie;          // the Cookie header
  std::string_view origin;          // the Origin header
  std::string_view host;            // the Host header
  std::string_view sec_fetch_site;  // the Sec-Fetch-Site header
  std::string_view csrf_token;      // the X-CSRF-Token header
  std::string_view content_type;
  std::string peer;  // the client's address
};

struct ConsoleReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Work to run off the server's thread (a login's password check, a state that reads a
  // database, an action); its reply is sent instead.
  std::function<ConsoleReply()> deferred;
};

class Console {
 public:
  explicit Console(ConsoleHooks hooks);

  // The console's answer to `request`, or nullopt when the path is not the console's.
  std::optional<ConsoleReply> Handle(const ConsoleRequest& request);
  // Takes a sample for the charts (ConsoleHooks::sample).
  void Sample();
  std::chrono::seconds sample_every() const { return hooks_.sample_every; }

  // The headers every answer of the admin endpoint carries (the CSP and its friends).
  static const std::vector<std::pair<std::string, std::string>>& SecurityHeaders();

 private:
  struct Session {
    std::string user;
    std::string csrf;
    std::chrono::steady_clock::time_point created;
    std::chrono::steady_clock::time_point last_used;
  };

  ConsoleReply SessionInfo(const ConsoleRequest& request);
  ConsoleReply Login(const ConsoleRequest& request);
  ConsoleReply Logout(const ConsoleRequest& request);
  ConsoleReply State(const ConsoleRequest& request);
  ConsoleReply History();
  ConsoleReply Action(const ConsoleRequest& request);
  // The refusal of a POST sent from another site or not as JSON, if it is one.
  std::optional<ConsoleReply> CrossSiteRefusal(const ConsoleRequest& request) const;
  // The user of the request's session (refreshing it), or empty.
  std::string SessionUser(const ConsoleRequest& request, std::string* csrf = nullptr);
  // Whether `peer` failed too many logins lately; the seconds until it may try again.
  int LoginBlockedFor(const std::string& peer);
  void NoteFailedLogin(const std::string& peer);
  void ForgetFailedLogin(const std::string& peer);  // the last one noted: the login succeeded

  const ConsoleHooks hooks_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);  // by token
  absl::flat_hash_map<std::string, std::deque<std::chrono::steady_clock::time_point>>
      failed_logins_ ABSL_GUARDED_BY(mu_);  // by address
  std::deque<nlohmann::json> samples_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pgflow
