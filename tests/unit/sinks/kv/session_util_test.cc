#include "sinks/kv/session_util.h"

#include <cstdint>
#include <limits>
#include <string>

#include <gtest/gtest.h>

namespace pgflow::kv_session {
namespace {

TEST(SessionUtilTest, ParseIntTakesWholeDecimalIntegersOnly) {
  int64_t n = 0;
  EXPECT_TRUE(ParseInt("0", &n));
  EXPECT_EQ(n, 0);
  EXPECT_TRUE(ParseInt("-42", &n));
  EXPECT_EQ(n, -42);
  EXPECT_TRUE(ParseInt("9223372036854775807", &n));
  EXPECT_EQ(n, std::numeric_limits<int64_t>::max());
  EXPECT_TRUE(ParseInt("-9223372036854775808", &n));
  EXPECT_EQ(n, std::numeric_limits<int64_t>::min());
  for (const char* text : {"", "-", "+1", " 1", "1 ", "1x", "0x10", "1.0", "9223372036854775808"}) {
    EXPECT_FALSE(ParseInt(text, &n)) << text;
  }
}

TEST(SessionUtilTest, CompactDropsWhatWasConsumed) {
  std::string in = "GET a\r\nGET b\r\n";
  size_t pos = 7;
  Compact(&in, &pos);
  EXPECT_EQ(in, "GET b\r\n");
  EXPECT_EQ(pos, 0u);
  Compact(&in, &pos);  // nothing consumed: nothing dropped
  EXPECT_EQ(in, "GET b\r\n");
  pos = in.size();
  Compact(&in, &pos);
  EXPECT_EQ(in, "");
  EXPECT_EQ(pos, 0u);
}

}  // namespace
}  // namespace pgflow::kv_session
