#include "schemas/json_text.h"

#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/unit/schemas/json_encoding_test_util.h"

namespace pgflow {
namespace {

TEST(AppendJsonStringTest, EscapesWhatJsonRequires) {
  EXPECT_EQ(JsonString(""), R"("")");
  EXPECT_EQ(JsonString("plain text"), R"("plain text")");
  EXPECT_EQ(JsonString("\"quoted\" and \\back\\"), R"("\"quoted\" and \\back\\")");
  EXPECT_EQ(JsonString("\n\r\t\b\f"), R"("\n\r\t\b\f")");
  EXPECT_EQ(JsonString(std::string("\0\x01\x1f", 3)), R"("\u0000\u0001\u001f")");
  EXPECT_EQ(JsonString("\x7f/<>"), "\"\x7f/<>\"");
}

TEST(AppendJsonStringTest, AppendsToExistingOutput) {
  std::string out = "x";
  AppendJsonString("a\"b", &out);
  EXPECT_EQ(out, R"(x"a\"b")");
}

TEST(AppendJsonStringTest, ValidUtf8PassesThrough) {
  for (const char* text : {"é", "€", "日本語", "𝄞", "\xf4\x8f\xbf\xbf", "\xee\x80\x80",
                           "mixed é € 𝄞 text with a long enough run to use word scans"}) {
    EXPECT_EQ(JsonString(text), std::string("\"") + text + "\"") << text;
    EXPECT_EQ(nlohmann::json::parse(JsonString(text)).get<std::string>(), text);
  }
}

TEST(AppendJsonStringTest, InvalidUtf8IsReplaced) {
  const std::string fffd = "\xEF\xBF\xBD";
  struct Case {
    std::string in;
    std::string out;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"\x80", fffd},  // lone continuation byte
           {"a\xbf"
            "b",
            "a" + fffd + "b"},                               // continuation between ASCII
           {"\xc0\xaf", fffd + fffd},                        // overlong '/'
           {"\xc1\xbf", fffd + fffd},                        // overlong
           {"\xe0\x80\xaf", fffd + fffd + fffd},             // overlong, 3 bytes
           {"\xed\xa0\x80", fffd + fffd + fffd},             // UTF-16 surrogate
           {"\xf0\x80\x80\xaf", fffd + fffd + fffd + fffd},  // overlong, 4 bytes
           {"\xf4\x90\x80\x80", fffd + fffd + fffd + fffd},  // above U+10FFFF
           {"\xf5\x80", fffd + fffd},                        // never valid lead bytes
           {"\xff", fffd},
           {"\xe2\x82", fffd},                               // truncated at the end
           {"\xe2\x82z", fffd + "z"},                        // truncated before ASCII
           {"\xf0\x9d\x84", fffd},                           // truncated 4-byte sequence
           {"\xe2\x82\xe2\x82\xac", fffd + "\xe2\x82\xac"},  // truncated, then a valid euro
           {"ok\xff\"", "ok" + fffd + "\\\""},
       }) {
    const std::string out = JsonString(c.in);
    EXPECT_EQ(out, "\"" + c.out + "\"") << out;
  }
}

TEST(AppendJsonStringTest, RoundTripsEveryPositionOfSpecialBytes) {
  // Special bytes at every offset of runs long enough for the 8-byte scan.
  for (const std::string& special : std::initializer_list<std::string>{
           "\"", "\\", "\n", std::string(1, '\0'), "\x1f", "é", "€"}) {
    for (size_t at = 0; at < 20; ++at) {
      std::string text(20, 'a');
      text.insert(at, special);
      EXPECT_EQ(nlohmann::json::parse(JsonString(text)).get<std::string>(), text);
    }
  }
}

TEST(AppendJsonStringTest, RandomInputIsAlwaysValidJson) {
  std::mt19937 rng(42);
  const std::string alphabet = std::string("ab\"\\\n\t\x01\x7f", 8) + "\xc3\xa9\xe2\x82\xac\xf0";
  for (int i = 0; i < 20'000; ++i) {
    const size_t length = rng() % 40;
    std::string random_bytes;
    std::string valid;
    for (size_t k = 0; k < length; ++k) {
      random_bytes.push_back(static_cast<char>(rng()));
      valid.push_back(alphabet[rng() % 8]);  // ASCII part of the alphabet: valid UTF-8
    }
    JsonString(random_bytes);  // checks validity
    ASSERT_EQ(nlohmann::json::parse(JsonString(valid)).get<std::string>(), valid);
    // Random mixes of complete and broken UTF-8 sequences.
    std::string mixed;
    for (size_t k = 0; k < length; ++k) mixed.push_back(alphabet[rng() % alphabet.size()]);
    JsonString(mixed);
  }
}

TEST(JsonTextTest, ObjectsAndArraysAreReadAsViews) {
  std::vector<JsonMember> members;
  ASSERT_TRUE(
      ReadJsonObject(R"( {"a" : 1.50 , "b":{"c":[1, 2]},"\u00e9":"x", "n":null} )", &members).ok());
  ASSERT_EQ(members.size(), 4u);
  EXPECT_EQ(members[0].key, "a");
  EXPECT_EQ(members[0].value, "1.50");
  EXPECT_EQ(members[1].value, R"({"c":[1, 2]})");
  EXPECT_EQ(members[2].key, "é");
  EXPECT_EQ(members[3].value, "null");
  EXPECT_EQ(JsonTypeOf(members[1].value), JsonType::kObject);
  std::vector<std::string_view> items;
  ASSERT_TRUE(ReadJsonArray("[ ]", &items).ok());
  EXPECT_TRUE(items.empty());
  ASSERT_TRUE(ReadJsonArray(R"([1,"two" ,[3]])", &items).ok());
  EXPECT_EQ(items, (std::vector<std::string_view>{"1", R"("two")", "[3]"}));
  EXPECT_FALSE(ReadJsonObject("[1]", &members).ok());
  EXPECT_FALSE(ReadJsonArray("{}", &items).ok());
  EXPECT_FALSE(ReadJsonObject("{\"a\":1} x", &members).ok());
}

TEST(JsonTextTest, DeepNestingCostsNoStack) {
  const std::string deep = std::string(200'000, '[') + std::string(200'000, ']');
  EXPECT_TRUE(CheckJson(deep).ok());
  EXPECT_FALSE(CheckJson(deep + "]").ok());
}

TEST(JsonTextTest, Integers) {
  EXPECT_EQ(*ReadJsonInt64("-9223372036854775808"), std::numeric_limits<int64_t>::min());
  EXPECT_FALSE(ReadJsonInt64("9223372036854775808").ok());
  EXPECT_FALSE(ReadJsonInt64("1.0").ok());
  EXPECT_FALSE(ReadJsonInt64("").ok());
}

}  // namespace
}  // namespace pgflow
