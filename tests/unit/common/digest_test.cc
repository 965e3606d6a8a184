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

}  // namespace
}  // namespace pgflow
