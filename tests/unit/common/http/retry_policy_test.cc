#include "common/http/retry_policy.h"

#include <gtest/gtest.h>

#include <chrono>

namespace pgflow {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kCurlOk = 0;
constexpr int kCurlCouldNotConnect = 7;  // CURLE_COULDNT_CONNECT
constexpr int kCurlTimedOut = 28;        // CURLE_OPERATION_TIMEDOUT

TEST(ClassifyTest, A2xxIsAccepted) {
  for (long status : {200L, 201L, 202L, 204L, 299L}) {
    EXPECT_EQ(Classify(status, kCurlOk), HttpDisposition::kAccepted) << status;
  }
}

TEST(ClassifyTest, NoAnswerIsTheEndpointStrugglingWhateverTheStatus) {
  EXPECT_EQ(Classify(0, kCurlCouldNotConnect), HttpDisposition::kRetryEndpoint);
  EXPECT_EQ(Classify(0, kCurlTimedOut), HttpDisposition::kRetryEndpoint);
  // (a status read before the transfer failed does not count)
  EXPECT_EQ(Classify(200, kCurlTimedOut), HttpDisposition::kRetryEndpoint);
}

TEST(ClassifyTest, PushBackAndGatewayTroubleAreTheEndpoints) {
  for (long status : {429L, 502L, 503L, 504L}) {
    EXPECT_EQ(Classify(status, kCurlOk), HttpDisposition::kRetryEndpoint) << status;
  }
}

TEST(ClassifyTest, ATimeoutAndOtherServerErrorsAreTheRequests) {
  for (long status : {408L, 500L, 501L, 505L, 507L, 599L}) {
    EXPECT_EQ(Classify(status, kCurlOk), HttpDisposition::kRetryRequest) << status;
    EXPECT_TRUE(IsRetry(Classify(status, kCurlOk))) << status;
  }
}

TEST(ClassifyTest, GoneIsItsOwn) { EXPECT_EQ(Classify(410, kCurlOk), HttpDisposition::kGone); }

TEST(ClassifyTest, RedirectsAndOtherClientErrorsAreRefusals) {
  for (long status : {100L, 301L, 302L, 304L, 400L, 401L, 403L, 404L, 409L, 413L, 422L}) {
    EXPECT_EQ(Classify(status, kCurlOk), HttpDisposition::kRefused) << status;
    EXPECT_FALSE(IsRetry(Classify(status, kCurlOk))) << status;
  }
}

TEST(BackoffTest, TheCeilingDoublesUpToTheLongest) {
  const Backoff backoff(milliseconds(100), milliseconds(10000));
  EXPECT_EQ(backoff.Ceiling(1), milliseconds(100));
  EXPECT_EQ(backoff.Ceiling(2), milliseconds(200));
  EXPECT_EQ(backoff.Ceiling(3), milliseconds(400));
  EXPECT_EQ(backoff.Ceiling(7), milliseconds(6400));
  EXPECT_EQ(backoff.Ceiling(8), milliseconds(10000));
  EXPECT_EQ(backoff.Ceiling(1000000), milliseconds(10000));  // no overflow
  EXPECT_EQ(backoff.Ceiling(0), milliseconds(100));
}

TEST(BackoffTest, TheWaitIsBetweenHalfTheCeilingAndAllOfIt) {
  const Backoff backoff(milliseconds(100), milliseconds(60000));
  for (int attempt = 1; attempt <= 12; ++attempt) {
    const milliseconds ceiling = backoff.Ceiling(attempt);
    milliseconds shortest = ceiling;
    milliseconds longest(0);
    for (int i = 0; i < 200; ++i) {
      const milliseconds wait = backoff.Next(attempt);
      ASSERT_GE(wait, ceiling / 2) << attempt;
      ASSERT_LE(wait, ceiling) << attempt;
      shortest = std::min(shortest, wait);
      longest = std::max(longest, wait);
    }
    EXPECT_LT(shortest, longest) << "no jitter at attempt " << attempt;
  }
}

TEST(BackoffTest, RetryAfterReplacesTheComputedWait) {
  const Backoff backoff(milliseconds(100), milliseconds(1000));
  EXPECT_EQ(backoff.Next(1, seconds(30)), seconds(30));  // beyond the longest too
  EXPECT_EQ(backoff.Next(20, seconds(2)), seconds(2));
  EXPECT_LE(backoff.Next(1, seconds(0)), milliseconds(100));
}

TEST(ParseRetryAfterTest, ReadsSecondsWhateverTheNamesCase) {
  EXPECT_EQ(ParseRetryAfter("Retry-After: 120\r\n"), 120);
  EXPECT_EQ(ParseRetryAfter("retry-after: 3\r\n"), 3);  // HTTP/2 sends names in lower case
  EXPECT_EQ(ParseRetryAfter("RETRY-AFTER:7"), 7);
}

TEST(ParseRetryAfterTest, IsBoundedToADay) {
  EXPECT_EQ(ParseRetryAfter("Retry-After: 86401\r\n"), 86400);
  EXPECT_EQ(ParseRetryAfter("Retry-After: 99999999999999999999999\r\n"), 86400);
  EXPECT_EQ(ParseRetryAfter("Retry-After: -5\r\n"), 0);
}

TEST(ParseRetryAfterTest, AnHttpDateReadsAsZero) {
  EXPECT_EQ(ParseRetryAfter("Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n"), 0);
}

TEST(ParseRetryAfterTest, OtherHeadersAreNotIt) {
  EXPECT_EQ(ParseRetryAfter("Content-Type: application/json\r\n"), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("Retry-After:"), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("HTTP/1.1 429 Too Many Requests\r\n"), std::nullopt);
  EXPECT_EQ(ParseRetryAfter(""), std::nullopt);
}

TEST(ReadRetryAfterHeaderTest, StoresTheSecondsAndLeavesThemOnOtherHeaders) {
  int seconds = 0;
  char retry[] = "Retry-After: 30\r\n";
  EXPECT_EQ(ReadRetryAfterHeader(retry, 1, sizeof(retry) - 1, &seconds), sizeof(retry) - 1);
  EXPECT_EQ(seconds, 30);
  char other[] = "Server: test\r\n";
  EXPECT_EQ(ReadRetryAfterHeader(other, 1, sizeof(other) - 1, &seconds), sizeof(other) - 1);
  EXPECT_EQ(seconds, 30);
}

}  // namespace
}  // namespace pgflow
