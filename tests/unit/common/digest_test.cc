#include "common/digest.h"

#include <gtest/gtest.h>

namespace pgflow {
namespace {

// FIPS 180-2's and RFC 1321's test vectors.
TEST(HexDigestTest, DigestsAsLowerCaseHex) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HexDigest(EVP_md5(), "abc"), "900150983cd24fb0d6963f7d28e17f72");
}

// RFC 4231's test vectors: a short key, a key of one block or less, a key longer than a block
// (digested first); the same data given in parts makes the same MAC.
TEST(HmacSha256Test, MatchesRfc4231) {
  EXPECT_EQ(LowerHex(HmacSha256(std::string(20, '\x0b'), {"Hi There"})),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(LowerHex(HmacSha256("Jefe", {"what do ya want for nothing?"})),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(LowerHex(HmacSha256("Jefe", {"what do ya ", "", "want for nothing?"})),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(LowerHex(HmacSha256(std::string(131, '\xaa'),
                           {"Test Using Larger Than Block-Size Key - Hash Key First"})),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  EXPECT_EQ(HmacSha256("", {}).size(), 32u);
}

// One key for many values: the same MACs as the function's, however many are taken.
TEST(HmacSha256Test, AKeyServesManyValues) {
  HmacSha256Key jefe("Jefe");
  ASSERT_TRUE(jefe.ok());
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(LowerHex(jefe.Mac("what do ya want for nothing?")),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  }
  HmacSha256Key long_key(std::string(131, '\xaa'));
  EXPECT_EQ(LowerHex(long_key.Mac("Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  EXPECT_EQ(long_key.Mac("x"), HmacSha256(std::string(131, '\xaa'), {"x"}));
}

}  // namespace
}  // namespace pgflow
