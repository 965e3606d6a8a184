#include "schemas/base64.h"

#include <random>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "tests/unit/schemas/json_encoding_test_util.h"

namespace pgflow {
namespace {

TEST(AppendBase64Test, Rfc4648Vectors) {
  EXPECT_EQ(Base64(""), "");
  EXPECT_EQ(Base64("f"), "Zg==");
  EXPECT_EQ(Base64("fo"), "Zm8=");
  EXPECT_EQ(Base64("foo"), "Zm9v");
  EXPECT_EQ(Base64("foob"), "Zm9vYg==");
  EXPECT_EQ(Base64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(Base64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64(std::string("\xfb\xff\xbf", 3)), "+/+/");
  EXPECT_EQ(Base64(std::string("\0\0\0", 3)), "AAAA");
  std::string out = "x";
  AppendBase64("foo", &out);
  EXPECT_EQ(out, "xZm9v");
}

TEST(AppendBase64DecodedTest, ReadsItsCanonicalFormOnly) {
  for (const std::string& bytes : {std::string(), std::string("f"), std::string("fo"),
                                   std::string("foo"), std::string("\0\xff\x10z", 4)}) {
    std::string encoded;
    AppendBase64(bytes, &encoded);
    std::string decoded = "kept:";
    EXPECT_TRUE(AppendBase64Decoded(encoded, &decoded)) << encoded;
    EXPECT_EQ(decoded, "kept:" + bytes);
  }
  // Unpadded, non-zero unused bits, white space, other alphabets: not what AppendBase64 writes.
  for (std::string_view text : {"Zg", "Zg=", "Zh==", "Zm9v\n", " Zm9v", "Zm-v", "Z===", "===="}) {
    std::string out = "kept";
    EXPECT_FALSE(AppendBase64Decoded(text, &out)) << text;
    EXPECT_EQ(out, "kept");
  }
}

}  // namespace
}  // namespace pgflow
