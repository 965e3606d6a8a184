#include "engine/lsn.h"

#include "gtest/gtest.h"

namespace pgflow {
namespace {

TEST(LsnTest, PrintsAndParsesPostgresForm) {
  EXPECT_EQ(Lsn(0).ToString(), "0/0");
  EXPECT_EQ(Lsn(0x16B3748).ToString(), "0/16B3748");
  EXPECT_EQ(Lsn(0x1234567890ABCDEFull).ToString(), "12345678/90ABCDEF");
  EXPECT_EQ(Lsn::Parse("12345678/90abcdef"), Lsn(0x1234567890ABCDEFull));
  EXPECT_EQ(Lsn::Parse("0/0"), Lsn(0));
  for (const char* bad : {"", "/", "1/", "/1", "x/1", "1/1/1", "123456789/0", "1 /2"}) {
    EXPECT_FALSE(Lsn::Parse(bad).has_value()) << bad;
  }
  EXPECT_LT(Lsn(1), Lsn(2));
}

}  // namespace
}  // namespace pgflow
