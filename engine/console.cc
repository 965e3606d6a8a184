#include "engine/console.h"

#include <sys/random.h>

#include <algorithm>
#include <cctype>
#include <ctime>

#include "engine/console_assets.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "schemas/ascii.h"

namespace pgflow {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kIdle = std::chrono::minutes(30);
constexpr auto kLongest = std::chrono::hours(12);
constexpr size_t kMaxSessions = 64;
constexpr size_t kFailedLoginsPerMinute = 5;
constexpr size_t kMaxWatchedAddresses = 4096;

ConsoleReply Json(int status, const nlohmann::json& body) {
  ConsoleReply reply;
  reply.status = status;
  reply.body = body.dump();
  reply.headers.emplace_back("Cache-Control", "no-store");
  return reply;
}

ConsoleReply Refuse(int status, std::string message) {
  return Json(status, {{"error", std::move(message)}});
}

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    const ssize_t n = getrandom(raw.data() + got, bytes - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  return LowerHex(raw);
}

// Equal, in a time that does not depend on where they differ.
bool SameSecret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string_view CookieValue(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const size_t end = std::min(header.find(';'), header.size());
    std::string_view part = header.substr(0, end);
    header.remove_prefix(std::min(end + 1, header.size()));
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.size() > name.size() && part.starts_with(name) && part[name.size()] == '=') {
      return part.substr(name.size() + 1);
    }
  }
  return {};
}

bool StartsWithNoCase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
  }
  return true;
}

std::string_view ContentTypeOf(std::string_view path) {
  if (path.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (path.ends_with(".css")) return "text/css; charset=utf-8";
  if (path.ends_with(".svg")) return "image/svg+xml";
  return "text/html; charset=utf-8";
}

// `request` as the log shows it: a url (which may hold a password, in more than one place)
// and any password left out.
std::string Redacted(nlohmann::json request) {
  for (auto& [key, value] : request.items()) {
    if (key == "password" || key == "url") value = "(not logged)";
  }
  return request.dump();
}

// `text` for a log line: control characters (a forged line's newline) escaped.
std::string Printable(std::string_view text) {
  std::string out;
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += "\\x";
      AppendLowerHex(std::string_view(&c, 1), &out);
    } else {
      out += c;
    }
  }
  return out;
}

// The session cookie's name: one per port, as browsers keep cookies by host alone, so that
// two endpoints of one machine (a pipeline's and a pooler's) do not take each other's.
std::string CookieName(std::string_view host) {
  const size_t colon = host.rfind(':');
  std::string_view port = colon == std::string_view::npos ? "" : host.substr(colon + 1);
  if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos) {
    return "pgflow_console";
  }
  return Cat("pgflow_console_", port);
}

}  // namespace

Console::Console(ConsoleHooks hooks) : hooks_(std::move(hooks)) {}

const std::vector<std::pair<std::string, std::string>>& Console::SecurityHeaders() {
  static const std::vector<std::pair<std::string, std::string>> headers = {
      {"Content-Security-Policy",
       "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"},
      {"X-Content-Type-Options", "nosniff"},
      {"X-Frame-Options", "DENY"},
      {"Referrer-Policy", "no-referrer"},
  };
  return headers;
}

std::optional<ConsoleReply> Console::Handle(const ConsoleRequest& request) {
  const bool get = request.method == "GET" || request.method == "HEAD";
  const bool post = request.method == "POST";
  if (get) {
    std::string_view path = request.path == "/" ? "/index.html" : request.path;
    for (const ConsoleAsset& asset : ConsoleAssets()) {
      if (asset.path != path) continue;
      ConsoleReply reply;
      reply.content_type = std::string(ContentTypeOf(path));
      reply.body = std::string(asset.bytes);
      reply.headers.emplace_back("Cache-Control", "no-cache");
      return reply;
    }
  }
  if (!request.path.starts_with("/api/")) return std::nullopt;
  if (request.path == "/api/session" && get) return SessionInfo(request);
  if (request.path == "/api/state" && get) return State(request);
  if (request.path == "/api/history" && get) {
    if (hooks_.state_needs_login && SessionUser(request).empty()) {
      return Refuse(401, "log in to see this console");
    }
    return History();
  }
  if (post && (request.path == "/api/login" || request.path == "/api/logout" ||
               request.path == "/api/action")) {
    if (std::optional<ConsoleReply> refusal = CrossSiteRefusal(request)) return refusal;
    if (request.path == "/api/login") return Login(request);
    if (request.path == "/api/logout") return Logout(request);
    return Action(request);
  }
  return Refuse(404, Cat("no such console call: ", request.method, " ", request.path));
}

std::optional<ConsoleReply> Console::CrossSiteRefusal(const ConsoleRequest& request) const {
  // An HTML form can POST across sites without asking, but only as a form: a JSON body can
  // only come from a script, which browsers keep to its own origin unless CORS lets it out
  // (this endpoint never does).
  if (!StartsWithNoCase(request.content_type, "application/json")) {
    return Refuse(415, "the console's POSTs are JSON (Content-Type: application/json)");
  }
  if (!request.sec_fetch_site.empty() && request.sec_fetch_site != "same-origin") {
    return Refuse(403, Cat("refused: sent from another site (Sec-Fetch-Site: ",
                                    request.sec_fetch_site, ")"));
  }
  if (!request.origin.empty() && request.origin != Cat("http://", request.host) &&
      request.origin != Cat("https://", request.host)) {
    return Refuse(403, Cat("refused: sent from another origin (", request.origin,
                                    ", this endpoint is ", request.host, ")"));
  }
  return std::nullopt;
}

std::string Console::SessionUser(const ConsoleRequest& request, std::string* csrf) {
  const std::string token(CookieValue(request.cookie, CookieName(request.host)));
  if (token.empty()) return "";
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end()) return "";
  const Clock::time_point now = Clock::now();
  if (now - it->second.last_used > kIdle || now - it->second.created > kLongest) {
    sessions_.erase(it);
    return "";
  }
  it->second.last_used = now;
  if (csrf != nullptr) *csrf = it->second.csrf;
  return it->second.user;
}

ConsoleReply Console::SessionInfo(const ConsoleRequest& request) {
  std::string csrf;
  const std::string user = SessionUser(request, &csrf);
  return Json(200, {{"kind", hooks_.kind},
                    {"title", hooks_.title},
                    {"login", hooks_.check_login != nullptr},
                    {"state_needs_login", hooks_.state_needs_login},
                    {"user", user.empty() ? nlohmann::json(nullptr) : nlohmann::json(user)},
                    {"csrf", csrf.empty() ? nlohmann::json(nullptr) : nlohmann::json(csrf)}});
}

int Console::LoginBlockedFor(const std::string& peer) {
  absl::MutexLock lock(&mu_);
  auto it = failed_logins_.find(peer);
  if (it == failed_logins_.end()) return 0;
  const Clock::time_point now = Clock::now();
  while (!it->second.empty() && now - it->second.front() > std::chrono::minutes(1)) {
    it->second.pop_front();
  }
  if (it->second.size() < kFailedLoginsPerMinute) return 0;
  const auto wait = std::chrono::minutes(1) - (now - it->second.front());
  return static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(wait).count()) + 1;
}

void Console::NoteFailedLogin(const std::string& peer) {
  absl::MutexLock lock(&mu_);
  if (failed_logins_.size() >= kMaxWatchedAddresses && !failed_logins_.contains(peer)) {
    // The address whose last attempt is the oldest is forgotten.
    auto oldest = failed_logins_.begin();
    for (auto it = failed_logins_.begin(); it != failed_logins_.end(); ++it) {
      if (it->second.empty() ||
          (!oldest->second.empty() && it->second.back() < oldest->second.back())) {
        oldest = it;
      }
    }
    failed_logins_.erase(oldest);
  }
  std::deque<Clock::time_point>& times = failed_logins_[peer];
  times.push_back(Clock::now());
  while (times.size() > kFailedLoginsPerMinute) times.pop_front();
}

void Console::ForgetFailedLogin(const std::string& peer) {
  absl::MutexLock lock(&mu_);
  auto it = failed_logins_.find(peer);
  if (it == failed_logins_.end() || it->second.empty()) return;
  it->second.pop_back();
  if (it->second.empty()) failed_logins_.erase(it);
}

ConsoleReply Console::Login(const ConsoleRequest& request) {
  if (hooks_.check_login == nullptr) {
    return Refuse(403, "no one can log in to this console: it has no admin users configured");
  }
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, false);
  if (!body.is_object() || !body.contains("user") || !body["user"].is_string() ||
      !body.contains("password") || !body["password"].is_string()) {
    return Refuse(400, "a login is {\"user\": ..., \"password\": ...}");
  }
  if (const int wait = LoginBlockedFor(request.peer); wait > 0) {
    ConsoleReply reply = Refuse(
        429, Cat("too many failed logins from ", request.peer, ": try again in ", wait,
                          " s"));
    reply.headers.emplace_back("Retry-After", std::to_string(wait));
    return reply;
  }
  // Counted as failed until it succeeds: attempts queued behind one another all count.
  NoteFailedLogin(request.peer);
  ConsoleReply pending;
  pending.deferred = [this, user = body["user"].get<std::string>(),
                      password = body["password"].get<std::string>(), peer = request.peer,
                      cookie = CookieName(request.host)] {
    if (!hooks_.check_login(user, password)) {
      LogWarning("console: failed login from %s as \"%s\"", peer, Printable(user));
      return Refuse(401, "wrong user name or password");
    }
    ForgetFailedLogin(peer);
    const std::string token = RandomHex(32);
    const std::string csrf = RandomHex(32);
    {
      absl::MutexLock lock(&mu_);
      if (sessions_.size() >= kMaxSessions) {  // the one used longest ago goes
        auto oldest = sessions_.begin();
        for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
          if (it->second.last_used < oldest->second.last_used) oldest = it;
        }
        sessions_.erase(oldest);
      }
      const Clock::time_point now = Clock::now();
      sessions_[token] = Session{user, csrf, now, now};
    }
    LogInfo("console: %s logged in from %s", user, peer);
    ConsoleReply reply = Json(200, {{"user", user}, {"csrf", csrf}});
    reply.headers.emplace_back(
        "Set-Cookie",
        Cat(cookie, "=", token, "; Path=/; HttpOnly; SameSite=Strict; Max-Age=",
            std::chrono::duration_cast<std::chrono::seconds>(kLongest).count()));
    return reply;
  };
  return pending;
}

ConsoleReply Console::Logout(const ConsoleRequest& request) {
  std::string csrf;
  const std::string user = SessionUser(request, &csrf);
  if (user.empty() || !SameSecret(csrf, request.csrf_token)) {
    return Refuse(403, "not logged in, or without the session's X-CSRF-Token");
  }
  {
    absl::MutexLock lock(&mu_);
    sessions_.erase(std::string(CookieValue(request.cookie, CookieName(request.host))));
  }
  LogInfo("console: %s logged out from %s", user, request.peer);
  ConsoleReply reply = Json(200, {{"user", nullptr}});
  reply.headers.emplace_back("Set-Cookie", Cat(CookieName(request.host),
                                                "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"));
  return reply;
}

ConsoleReply Console::State(const ConsoleRequest& request) {
  std::string user = SessionUser(request);
  if (hooks_.state_needs_login && user.empty()) return Refuse(401, "log in to see this console");
  ConsoleReply pending;
  pending.deferred = [this, user = std::move(user)] {
    return Json(200, hooks_.state ? hooks_.state(user) : nlohmann::json::object());
  };
  return pending;
}

ConsoleReply Console::History() {
  std::string body = "[";
  {
    absl::MutexLock lock(&mu_);
    for (const nlohmann::json& sample : samples_) {
      if (body.size() > 1) body += ',';
      body += sample.dump();
    }
  }
  body += ']';
  ConsoleReply reply = Json(200, nullptr);
  reply.body = std::move(body);
  return reply;
}

void Console::Sample() {
  if (!hooks_.sample) return;
  nlohmann::json sample = hooks_.sample();
  sample["t"] = static_cast<int64_t>(std::time(nullptr));
  absl::MutexLock lock(&mu_);
  samples_.push_back(std::move(sample));
  while (samples_.size() > hooks_.history) samples_.pop_front();
}

ConsoleReply Console::Action(const ConsoleRequest& request) {
  std::string csrf;
  std::string user = SessionUser(request, &csrf);
  if (user.empty()) return Refuse(401, "log in first: actions need the admin credentials");
  if (request.csrf_token.empty() || !SameSecret(csrf, request.csrf_token)) {
    LogWarning("console: action refused for %s from %s: a missing or forged CSRF token", user,
               request.peer);
    return Refuse(403, "refused: the X-CSRF-Token is not this session's");
  }
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, false);
  if (!body.is_object() || !body.contains("action") || !body["action"].is_string()) {
    return Refuse(400, "an action is {\"action\": name, ...}");
  }
  if (hooks_.act == nullptr) return Refuse(404, "this console takes no actions");
  ConsoleReply pending;
  pending.deferred = [this, user = std::move(user), body = std::move(body), peer = request.peer] {
    const std::string what = Redacted(body);
    absl::StatusOr<std::string> done = hooks_.act(user, body);
    if (!done.ok()) {
      LogWarning("console: %s from %s: %s failed: %s", user, peer, what, done.status().message());
      return Refuse(absl::IsInvalidArgument(done.status()) || absl::IsNotFound(done.status())
                        ? 400
                        : 409,
                    std::string(done.status().message()));
    }
    LogInfo("console: %s from %s: %s: %s", user, peer, what, *done);
    return Json(200, {{"message", *done}});
  };
  return pending;
}

}  // namespace pgflow
