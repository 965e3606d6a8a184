#pragma once

// Failed logins in the pooler's log, without letting a client that guesses passwords flood it.
// Each failure is a line naming the client's address, user and database and why the login
// failed, up to `burst` lines in a `window`; past that, failures are only counted, and one line
// sums them up once the window is over:
//   pooler: failed login from 10.0.0.7: user "alice", database "app": password authentication
//   failed for user "alice" (wrong password)
//   pooler: ... and 57 more failed logins in the last 2s
// No line holds a password: a client's password or proof is checked, never kept or logged.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace pgflow::pooler {

struct FailedLogin {
  std::string address;   // the client's IP address, or "unix"
  std::string user;      // as the client gave it; empty before its startup packet
  std::string database;  // the same
  // What the client was told, and what it was not ("wrong password", "unknown user": both
  // answered alike, so that user names cannot be probed).
  std::string reason;
};

// The line logged for `failure`.
std::string DescribeFailedLogin(const FailedLogin& failure);

// How many lines of failed logins the log gets.
struct LoginLogLimit {
  int burst = 5;                                                         // lines per window at most
  std::chrono::steady_clock::duration window = std::chrono::seconds(1);  // a summary per window
};

// Thread-safe: the network threads note failures, one of them sums up every second.
class LoginFailureLog {
 public:
  using Clock = std::chrono::steady_clock;
  // Each line goes to `write` (a WARNING in the log when null).
  explicit LoginFailureLog(LoginLogLimit limit = {},
                           std::function<void(const std::string&)> write = nullptr);

  // A failed login: logged, or counted when this window's lines are spent.
  void Note(const FailedLogin& failure, Clock::time_point now = Clock::now());
  // Logs the summary of a window that held failures back, once it is over. Call it regularly
  // (every second), so that the count of a burst that stopped is not left unsaid.
  void SumUp(Clock::time_point now = Clock::now());

 private:
  // The summary of the window that ends at `now`, if it held failures back; then a new window.
  void EndWindowLocked(Clock::time_point now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const LoginLogLimit limit_;
  const std::function<void(const std::string&)> write_;
  absl::Mutex mu_;
  Clock::time_point window_start_ ABSL_GUARDED_BY(mu_);
  int logged_ ABSL_GUARDED_BY(mu_) = 0;          // lines written in this window
  uint64_t held_back_ ABSL_GUARDED_BY(mu_) = 0;  // failures counted, not written, in it
};

}  // namespace pgflow::pooler
