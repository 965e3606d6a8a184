#include "common/http/http_client.h"

#include <gtest/gtest.h>

namespace pgflow {
namespace {

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
