#include "engine/progress.h"

#include "gtest/gtest.h"

namespace pgflow {
namespace {

TEST(ProgressTest, DurationsAreTruncatedToWholeUnits) {
  EXPECT_EQ(HumanDuration(0), "0s");
  EXPECT_EQ(HumanDuration(59.9), "59s");
  EXPECT_EQ(HumanDuration(90), "1m30s");
  EXPECT_EQ(HumanDuration(150), "2m30s");
  EXPECT_EQ(HumanDuration(3599.5), "59m59s");
  EXPECT_EQ(HumanDuration(5400), "1h30m");
  EXPECT_EQ(HumanDuration(-3), "0s");
}

TEST(ProgressTest, CountsAndBytes) {
  EXPECT_EQ(HumanCount(0), "0");
  EXPECT_EQ(HumanCount(999), "999");
  EXPECT_EQ(HumanCount(1234567), "1,234,567");
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 kB");
  EXPECT_EQ(HumanBytes(422.0 * 1024 * 1024), "422.0 MB");
}

}  // namespace
}  // namespace pgflow
