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

TEST(AppendBase64OfHexTest, IsTheBase64OfTheBytesTheHexSpells) {
  EXPECT_EQ(
      [] {
        std::string out = "x";
        AppendBase64OfHex("666f6f", &out);
        return out;
      }(),
      "xZm9v");
  std::mt19937 rng(23);
  for (int i = 0; i < 2'000; ++i) {
    std::string bytes;
    std::string hex;
    for (size_t k = rng() % 20; k > 0; --k) {
      const auto byte = static_cast<unsigned char>(rng());
      bytes.push_back(static_cast<char>(byte));
      const char* digits = rng() % 2 == 0 ? "0123456789abcdef" : "0123456789ABCDEF";
      hex.push_back(digits[byte >> 4]);
      hex.push_back(digits[byte & 15]);
    }
    std::string from_hex;
    AppendBase64OfHex(hex, &from_hex);
    ASSERT_EQ(from_hex, Base64(bytes)) << hex;
  }
}

TEST(AppendBase64DecodedTest, ReadsBackWhatAppendBase64Writes) {
  std::mt19937 rng(29);
  for (int i = 0; i < 2'000; ++i) {
    std::string bytes;
    for (size_t k = rng() % 40; k > 0; --k) bytes.push_back(static_cast<char>(rng()));
    std::string decoded = "kept:";
    ASSERT_TRUE(AppendBase64Decoded(Base64(bytes), &decoded));
    ASSERT_EQ(decoded, "kept:" + bytes);
  }
}

}  // namespace
}  // namespace pgflow
