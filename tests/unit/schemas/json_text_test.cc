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

// ---------------------------------------------------------------------------------------------
// Checking

TEST(JsonTextTest, CheckJsonSaysWhatWasExpectedWhere) {
  struct Case {
    std::string text;
    std::string error;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"", "invalid JSON at byte 0: the text ends where a value was expected"},
           {"[1,]", "invalid JSON at byte 3: expected a JSON value"},
           {"[1", "invalid JSON at byte 2: the text ends inside an object or array"},
           {"[1}", "invalid JSON at byte 2: expected ',' or ']' in an array"},
           {"{\"a\":1]", "invalid JSON at byte 6: expected ',' or '}' in an object"},
           {"{1:2}", "invalid JSON at byte 1: expected a string (an object's key)"},
           {"{\"a\" 1}", "invalid JSON at byte 5: expected ':' after an object's key"},
           {"\"abc", "invalid JSON at byte 4: unterminated string"},
           {"\"ab\\", "invalid JSON at byte 3: unterminated string"},
           {"\"\\u12\"", "invalid JSON at byte 1: expected 4 hex digits after \\u"},
           {"\"\\q\"", "invalid JSON at byte 1: unknown escape in a string"},
           {"\"a\x01\"", "invalid JSON at byte 2: unescaped control character in a string"},
           {"\"\xff\"", "invalid JSON at byte 1: a string is not valid UTF-8"},
           {"-", "invalid JSON at byte 1: expected a digit in a number"},
           {"1.e5", "invalid JSON at byte 2: expected a digit after '.' in a number"},
           {"1e", "invalid JSON at byte 2: expected a digit in a number's exponent"},
           {"1 2", "invalid JSON at byte 2: text after the value"},
           {"nul", "invalid JSON at byte 0: expected a JSON value"},
       }) {
    absl::StatusOr<JsonType> type = CheckJson(c.text);
    ASSERT_FALSE(type.ok()) << c.text;
    EXPECT_EQ(type.status().message(), c.error) << c.text;
  }
  EXPECT_EQ(*CheckJson(" {} "), JsonType::kObject);
  EXPECT_EQ(*CheckJson("[]"), JsonType::kArray);
  EXPECT_EQ(*CheckJson("\"\""), JsonType::kString);
  EXPECT_EQ(*CheckJson("-0.5e+3"), JsonType::kNumber);
  EXPECT_EQ(*CheckJson("false"), JsonType::kBool);
  EXPECT_EQ(*CheckJson("\tnull\n"), JsonType::kNull);
}

TEST(JsonTextTest, IsJsonTextSaysWhetherTheTextFitsOnOneLine) {
  struct Case {
    std::string text;
    bool one_line;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"[1,2]", true},
           {"[1, 2]", true},
           {"[1,  2]", true},
           {R"({"a": "x\ny"})", true},  // the line break is an escape inside a string
           {"[1,\n2]", false},
           {"{\"a\":\t1}", false},
           {"[1,\r2]", false},
           {" 1", false},
           {"1 ", false},
       }) {
    bool one_line = !c.one_line;
    EXPECT_TRUE(IsJsonText(c.text, &one_line)) << c.text;
    EXPECT_EQ(one_line, c.one_line) << c.text;
  }
  bool untouched = true;
  EXPECT_FALSE(IsJsonText("[1,", &untouched));
  EXPECT_TRUE(untouched);
  EXPECT_FALSE(IsJsonText("", &untouched));
  EXPECT_TRUE(untouched);
}

// The encoding's check (IsJsonText) and the reader's (CheckJson) are one validator: they
// agree on every input. Where the input avoids what RFC 8259 allows and nlohmann refuses (a
// number beyond a double's range, a lone surrogate escape) and what nlohmann allows and RFC
// 8259 does not (a leading byte-order mark), they agree with nlohmann::json::accept too.
TEST(JsonTextTest, OneValidatorAgreesWithItselfAndWithNlohmann) {
  const std::vector<std::string> tokens = {
      "{",           "}",     "[", "]",    ",",      ":",       " ",   "\n",   "\t",    "\"a\"",
      "\"\\u00e9\"", "\"é\"", "1", "0",    "-2.5",   "-",       ".",   "true", "false", "null",
      "\"",          "\\",    "x", "\x01", "\"\xff", "\"\\n\"", "tru", "01"};
  std::mt19937 rng(17);
  int valid = 0;
  for (int i = 0; i < 50'000; ++i) {
    std::string text;
    for (size_t k = rng() % 12; k > 0; --k) text += tokens[rng() % tokens.size()];
    const bool checked = CheckJson(text).ok();
    bool one_line = false;
    ASSERT_EQ(IsJsonText(text, &one_line), checked) << text;
    ASSERT_EQ(nlohmann::json::accept(text), checked) << text;
    valid += checked;
  }
  EXPECT_GT(valid, 1000);
}

TEST(JsonTextTest, IsJsonNumberFollowsTheGrammar) {
  for (const char* text : {"0", "-0", "7", "1.5", "-12.50", "1e5", "1E+100",
                           "-1.2345678901234567e-05", "0.0001", "12345678901234567890"}) {
    EXPECT_TRUE(IsJsonNumber(text)) << text;
  }
  for (const char* text : {"", "-", "+1", "01", "-01", "1.", ".5", "1e", "1e+", "NaN", "Infinity",
                           "-Infinity", " 1", "1 ", "0x1", "1,5", "1.5.1"}) {
    EXPECT_FALSE(IsJsonNumber(text)) << text;
  }
}

TEST(JsonTextTest, ScanUtf8MeasuresOneSequence) {
  struct Case {
    std::string bytes;
    size_t length;
    bool valid;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"\xc3\xa9", 2, true},           // é
           {"\xe2\x82\xac", 3, true},       // €
           {"\xf0\x9d\x84\x9e", 4, true},   // 𝄞
           {"\xf4\x8f\xbf\xbf", 4, true},   // U+10FFFF
           {"\xc3\xa9xyz", 2, true},        // only the first sequence
           {"\x80", 1, false},              // a continuation byte
           {"\xc0\xaf", 1, false},          // overlong
           {"\xe0\x80\xaf", 1, false},      // overlong
           {"\xed\xa0\x80", 1, false},      // a surrogate
           {"\xf4\x90\x80\x80", 1, false},  // above U+10FFFF
           {"\xe2\x82", 2, false},          // truncated
           {"\xe2\x82z", 2, false},         // cut short
           {"\xf0\x9d\x84", 3, false},      // truncated
       }) {
    bool valid = !c.valid;
    EXPECT_EQ(
        ScanUtf8(reinterpret_cast<const unsigned char*>(c.bytes.data()), c.bytes.size(), &valid),
        c.length)
        << c.bytes;
    EXPECT_EQ(valid, c.valid) << c.bytes;
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

TEST(JsonTextTest, AppendJsonWithoutSpacesKeepsStringsAsTheyAre) {
  std::string out = "x";
  AppendJsonWithoutSpaces("\n{ \"a\" : [1, 2],\r\n\t\"b c\": \"x  y\\n\" }\n", &out);
  EXPECT_EQ(out, "x{\"a\":[1,2],\"b c\":\"x  y\\n\"}");
  out.clear();
  AppendJsonWithoutSpaces(" \"\\\" \" ", &out);  // an escaped quote inside a string
  EXPECT_EQ(out, "\"\\\" \"");
}

}  // namespace
}  // namespace pgflow
