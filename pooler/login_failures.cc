#include "pooler/login_failures.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/log.h"
#include "engine/str_cat.h"

namespace pgflow::pooler {
namespace {

// `text` with its control characters (a newline in a user name a client made up) as \xNN, so
// that a line of the log stays one line.
std::string OneLine(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += absl::StrFormat("\\x%02x", byte);
    } else {
      out += c;
    }
  }
  return out;
}

void LogAsWarning(const std::string& line) { LogWarning("%s", line); }

}  // namespace

std::string DescribeFailedLogin(const FailedLogin& failure) {
  std::string who = failure.user.empty() && failure.database.empty()
                        ? ""
                        : Cat(": user \"", failure.user, "\", database \"", failure.database, "\"");
  return OneLine(Cat("pooler: failed login from ", failure.address, who, ": ", failure.reason));
}

LoginFailureLog::LoginFailureLog(LoginLogLimit limit, std::function<void(const std::string&)> write)
    : limit_(limit), write_(write != nullptr ? std::move(write) : LogAsWarning) {}

void LoginFailureLog::Note(const FailedLogin& failure, Clock::time_point now) {
  std::string line;
  {
    absl::MutexLock lock(&mu_);
    if (now - window_start_ >= limit_.window) EndWindowLocked(now);
    if (logged_ >= limit_.burst) {
      ++held_back_;
      return;
    }
    ++logged_;
    line = DescribeFailedLogin(failure);
  }
  write_(line);
}

void LoginFailureLog::SumUp(Clock::time_point now) {
  absl::MutexLock lock(&mu_);
  if (now - window_start_ >= limit_.window) EndWindowLocked(now);
}

void LoginFailureLog::EndWindowLocked(Clock::time_point now) {
  if (held_back_ > 0) {
    const int64_t seconds =
        std::max<int64_t>(1, std::chrono::round<std::chrono::seconds>(now - window_start_).count());
    write_(Cat("pooler: ... and ", held_back_, " more failed login", held_back_ == 1 ? "" : "s",
               " in the last ", seconds, "s"));
  }
  window_start_ = now;
  logged_ = 0;
  held_back_ = 0;
}

}  // namespace pgflow::pooler
