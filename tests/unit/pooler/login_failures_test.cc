#include "pooler/login_failures.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgflow::pooler {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using Clock = LoginFailureLog::Clock;
using std::chrono::milliseconds;

const FailedLogin kWrongPassword = {.address = "10.0.0.7",
                                    .user = "alice",
                                    .database = "app",
                                    .reason =
                                        "password authentication failed for user \"alice\" "
                                        "(wrong password)"};

TEST(LoginFailuresTest, ALineNamesTheClientItsUserAndDatabaseAndWhy) {
  EXPECT_EQ(DescribeFailedLogin(kWrongPassword),
            "pooler: failed login from 10.0.0.7: user \"alice\", database \"app\": password "
            "authentication failed for user \"alice\" (wrong password)");
  // A malformed startup packet has no user yet; a made-up user name cannot break the line.
  EXPECT_EQ(
      DescribeFailedLogin(
          {.address = "unix", .user = "", .database = "", .reason = "invalid startup packet"}),
      "pooler: failed login from unix: invalid startup packet");
  EXPECT_EQ(DescribeFailedLogin(
                {.address = "::1", .user = "a\nb", .database = "app", .reason = "no such"}),
            "pooler: failed login from ::1: user \"a\\x0ab\", database \"app\": no such");
}

TEST(LoginFailuresTest, ABurstIsLoggedUpToItsBudgetThenSummedUp) {
  std::vector<std::string> lines;
  LoginFailureLog log({.burst = 3, .window = std::chrono::seconds(1)},
                      [&](const std::string& line) { lines.push_back(line); });
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < 50; ++i) log.Note(kWrongPassword, start + milliseconds(i));
  EXPECT_EQ(lines.size(), 3u);
  log.SumUp(start + milliseconds(900));  // the window is not over: nothing yet
  EXPECT_EQ(lines.size(), 3u);
  log.SumUp(start + milliseconds(1100));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[3], "pooler: ... and 47 more failed logins in the last 1s");
  // A quiet window says nothing; the next failure is logged again.
  lines.clear();
  log.SumUp(start + milliseconds(2500));
  EXPECT_THAT(lines, IsEmpty());
  log.Note(kWrongPassword, start + milliseconds(2600));
  EXPECT_THAT(lines, ElementsAre(DescribeFailedLogin(kWrongPassword)));
}

TEST(LoginFailuresTest, AFailureInTheNextWindowSumsUpThePreviousOneFirst) {
  std::vector<std::string> lines;
  LoginFailureLog log({.burst = 1, .window = std::chrono::seconds(1)},
                      [&](const std::string& line) { lines.push_back(line); });
  const Clock::time_point start = Clock::now();
  log.Note(kWrongPassword, start);
  log.Note(kWrongPassword, start + milliseconds(10));
  log.Note(kWrongPassword, start + milliseconds(1000));
  EXPECT_THAT(lines, ElementsAre(DescribeFailedLogin(kWrongPassword),
                                 "pooler: ... and 1 more failed login in the last 1s",
                                 DescribeFailedLogin(kWrongPassword)));
}

}  // namespace
}  // namespace pgflow::pooler
