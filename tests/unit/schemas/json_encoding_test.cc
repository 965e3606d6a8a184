#include "schemas/json_encoding.h"

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "schemas/table_schema.h"
#include "tests/unit/schemas/json_encoding_test_util.h"

namespace pgflow {
namespace {

// ---------------------------------------------------------------------------------------------
// Nulls and scalars in text form

TEST(JsonEncodingTest, NullIsNullWhateverTheType) {
  for (uint32_t type_oid : {oid::kBool, oid::kInt4, oid::kText, oid::kJsonb, oid::kNumeric,
                            uint32_t{1007}, uint32_t{16'385}}) {
    EXPECT_EQ(Encode(Value::Null(type_oid)), "null");
  }
}

TEST(JsonEncodingDeathTest, UnchangedToastIsACallerBug) {
  std::string out;
  EXPECT_DEBUG_DEATH(AppendJsonValue(Value::UnchangedToast(oid::kText), "", JsonOptions{}, &out),
                     "TOAST");
}

TEST(JsonEncodingTest, Bool) {
  EXPECT_EQ(Text(oid::kBool, "t"), "true");
  EXPECT_EQ(Text(oid::kBool, "f"), "false");
  EXPECT_EQ(Text(oid::kBool, "yes"), R"("yes")");
  EXPECT_EQ(Text(oid::kBool, ""), R"("")");
}

TEST(JsonEncodingTest, IntegersAreNumbers) {
  EXPECT_EQ(Text(oid::kInt2, "-32768"), "-32768");
  EXPECT_EQ(Text(oid::kInt4, "0"), "0");
  EXPECT_EQ(Text(oid::kInt4, "42"), "42");
  EXPECT_EQ(Text(oid::kInt8, "9223372036854775807"), "9223372036854775807");
  EXPECT_EQ(Text(oid::kInt8, "-9223372036854775808"), "-9223372036854775808");
  EXPECT_EQ(Text(oid::kOid, "4294967295"), "4294967295");
  EXPECT_EQ(nlohmann::json::parse(Text(oid::kInt8, "-9223372036854775808")).get<int64_t>(),
            std::numeric_limits<int64_t>::min());
}

TEST(JsonEncodingTest, IntegerTextThatIsNotAnIntegerIsAString) {
  for (const char* text : {"", "-", "12a", "1.5", "+1", " 1", "1 ", "007", "-0x1", "1e3"}) {
    EXPECT_EQ(Text(oid::kInt4, text), JsonString(text)) << text;
  }
}

TEST(JsonEncodingTest, FloatsAreNumbersExceptNonFinite) {
  EXPECT_EQ(Text(oid::kFloat8, "1.5"), "1.5");
  EXPECT_EQ(Text(oid::kFloat8, "-0"), "-0");
  EXPECT_EQ(Text(oid::kFloat8, "1e+100"), "1e+100");
  EXPECT_EQ(Text(oid::kFloat8, "1.2345678901234567e-05"), "1.2345678901234567e-05");
  EXPECT_EQ(Text(oid::kFloat4, "3.4028235e+38"), "3.4028235e+38");
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(Text(oid::kFloat8, "0.1")).get<double>(), 0.1);
  EXPECT_EQ(Text(oid::kFloat8, "NaN"), R"("NaN")");
  EXPECT_EQ(Text(oid::kFloat8, "Infinity"), R"("Infinity")");
  EXPECT_EQ(Text(oid::kFloat4, "-Infinity"), R"("-Infinity")");
  EXPECT_EQ(Text(oid::kFloat4, "1."), R"("1.")");
  EXPECT_EQ(Text(oid::kFloat4, ".5"), R"(".5")");
}

TEST(JsonEncodingTest, NumericIsAStringUnlessAskedOtherwise) {
  EXPECT_EQ(Text(oid::kNumeric, "12.50"), R"("12.50")");
  EXPECT_EQ(Text(oid::kNumeric, "-0.001"), R"("-0.001")");
  EXPECT_EQ(Text(oid::kNumeric, "NaN"), R"("NaN")");
  EXPECT_EQ(Text(oid::kNumeric, "12.50", "", NumericAsNumber()), "12.50");
  EXPECT_EQ(Text(oid::kNumeric, "-12345678901234567890.123", "", NumericAsNumber()),
            "-12345678901234567890.123");
  EXPECT_EQ(Text(oid::kNumeric, "NaN", "", NumericAsNumber()), R"("NaN")");
  EXPECT_EQ(Text(oid::kNumeric, "Infinity", "", NumericAsNumber()), R"("Infinity")");
  EXPECT_EQ(Text(oid::kNumeric, "-Infinity", "", NumericAsNumber()), R"("-Infinity")");
}

TEST(JsonEncodingTest, JsonAndJsonbAreEmbedded) {
  const std::string jsonb = R"({"a": 1, "b": [true, null, "x\"y"], "c": {"d": -1.5e3}})";
  EXPECT_EQ(Text(oid::kJsonb, jsonb), jsonb);
  EXPECT_EQ(Text(oid::kJson, jsonb), jsonb);
  EXPECT_EQ(Text(oid::kJson, "[]"), "[]");
  EXPECT_EQ(Text(oid::kJson, "{}"), "{}");
  EXPECT_EQ(Text(oid::kJsonb, "42"), "42");
  EXPECT_EQ(Text(oid::kJsonb, R"("é\u00e9")"), R"("é\u00e9")");
  EXPECT_EQ(Text(oid::kJsonb, "null"), "null");
  EXPECT_EQ(nlohmann::json::parse(Text(oid::kJsonb, jsonb)), nlohmann::json::parse(jsonb));
}

TEST(JsonEncodingTest, JsonKeepsOneValueOnOneLine) {
  // json keeps its input's formatting; line breaks between tokens are taken out, those
  // inside strings are escapes already.
  const std::string pretty = "\n{\n\t\"a\" : \"x\\ny z\",\r\n  \"b\": [1,\n 2]\n}\n";
  const std::string out = Text(oid::kJson, pretty);
  EXPECT_EQ(out, R"({"a":"x\ny z","b":[1,2]})");
  EXPECT_EQ(out.find('\n'), std::string::npos);
  EXPECT_EQ(Text(oid::kJson, " 1 "), "1");
}

TEST(JsonEncodingTest, InvalidJsonBecomesAString) {
  for (std::string text :
       {"",        " ",     "{",         "[1,]",     "{\"a\":}",  "{\"a\" 1}", "{a:1}", "tru",
        "nul",     "\"abc", "\"a\x01\"", "\"\\q\"",  "\"\\u12\"", "01",        "1.",    "-",
        "[1] [2]", "[1}",   "{\"a\":1]", "\"\xff\"", "NaN",       "'a'"}) {
    EXPECT_EQ(Text(oid::kJsonb, text), JsonString(text)) << text;
  }
}

TEST(JsonEncodingTest, DeeplyNestedJsonDoesNotExhaustTheStack) {
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  EXPECT_EQ(Text(oid::kJson, deep), deep);
  const std::string unbalanced = std::string(100'000, '[') + std::string(99'999, ']');
  EXPECT_EQ(Text(oid::kJson, unbalanced), JsonString(unbalanced));
}

TEST(JsonEncodingTest, ByteaHexBecomesBase64) {
  EXPECT_EQ(Text(oid::kBytea, "\\x"), R"("")");
  EXPECT_EQ(Text(oid::kBytea, "\\x66"), R"("Zg==")");
  EXPECT_EQ(Text(oid::kBytea, "\\x666f"), R"("Zm8=")");
  EXPECT_EQ(Text(oid::kBytea, "\\x666f6f"), R"("Zm9v")");
  EXPECT_EQ(Text(oid::kBytea, "\\x666f6f626172"), R"("Zm9vYmFy")");
  EXPECT_EQ(Text(oid::kBytea, "\\x00ff10FE"), R"("AP8Q/g==")");
}

TEST(JsonEncodingTest, MalformedByteaIsItsText) {
  for (const char* text : {"", "\\", "x00", "\\x0", "\\x0g", "\\X00", "abc\\000", "\\x00 "}) {
    EXPECT_EQ(Text(oid::kBytea, text), JsonString(text)) << text;
  }
}

TEST(JsonEncodingTest, OtherTypesAreStringsOfTheirText) {
  EXPECT_EQ(Text(oid::kDate, "2024-01-02"), R"("2024-01-02")");
  EXPECT_EQ(Text(oid::kTime, "03:04:05.5"), R"("03:04:05.5")");
  EXPECT_EQ(Text(oid::kTimetz, "03:04:05+02"), R"("03:04:05+02")");
  EXPECT_EQ(Text(oid::kInterval, "P1Y2M3DT4H5M6S"), R"("P1Y2M3DT4H5M6S")");
  EXPECT_EQ(Text(oid::kUuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            R"("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")");
  EXPECT_EQ(Text(oid::kText, "say \"hi\"\n"), R"("say \"hi\"\n")");
  EXPECT_EQ(Text(oid::kVarchar, "naïve"), R"("naïve")");
  EXPECT_EQ(Text(oid::kBpchar, "ab  "), R"("ab  ")");
  EXPECT_EQ(Text(oid::kName, "pg_class"), R"("pg_class")");
  EXPECT_EQ(Text(oid::kChar, "r"), R"("r")");
  EXPECT_EQ(Text(16'385, "happy", "public.mood"), R"("happy")");  // an enum
  EXPECT_EQ(Text(869, "192.168.0.1/24"), R"("192.168.0.1/24")");  // inet
  EXPECT_EQ(Text(oid::kText, "{1,2}"), R"("{1,2}")");             // looks like an array
}

// ---------------------------------------------------------------------------------------------
// Binary send format

TEST(JsonEncodingTest, BinaryBool) {
  EXPECT_EQ(Binary(oid::kBool, Bytes({1})), "true");
  EXPECT_EQ(Binary(oid::kBool, Bytes({0})), "false");
  EXPECT_EQ(Binary(oid::kBool, Bytes({0, 1})), R"("AAE=")");  // wrong length: base64
  EXPECT_EQ(Binary(oid::kBool, ""), R"("")");
}

TEST(JsonEncodingTest, BinaryIntegers) {
  EXPECT_EQ(Binary(oid::kInt2, Be16(0xFFFE)), "-2");
  EXPECT_EQ(Binary(oid::kInt2, Be16(0x7FFF)), "32767");
  EXPECT_EQ(Binary(oid::kInt4, Be32(0x80000000)), "-2147483648");
  EXPECT_EQ(Binary(oid::kInt4, Be32(123456789)), "123456789");
  EXPECT_EQ(Binary(oid::kInt8, Be64(0x7FFFFFFFFFFFFFFF)), "9223372036854775807");
  EXPECT_EQ(Binary(oid::kInt8, Be64(0x8000000000000000)), "-9223372036854775808");
  EXPECT_EQ(Binary(oid::kInt8, Be64(0x0102030405060708)), "72623859790382856");
  EXPECT_EQ(Binary(oid::kOid, Be32(0xFFFFFFFF)), "4294967295");
  // Wrong lengths: base64.
  EXPECT_EQ(Binary(oid::kInt2, Bytes({1})), R"("AQ==")");
  EXPECT_EQ(Binary(oid::kInt4, Be16(1)), R"("AAE=")");
  EXPECT_EQ(Binary(oid::kInt8, Be32(1)), R"("AAAAAQ==")");
  EXPECT_EQ(Binary(oid::kOid, Be64(1)), R"("AAAAAAAAAAE=")");
}

TEST(JsonEncodingTest, BinaryTextTypes) {
  for (uint32_t type_oid : {oid::kText, oid::kVarchar, oid::kBpchar, oid::kName}) {
    EXPECT_EQ(Binary(type_oid, "a \"b\"\n\xc3\xa9"), "\"a \\\"b\\\"\\n\xc3\xa9\"");
    EXPECT_EQ(Binary(type_oid, "bad\xff"), "\"bad\xEF\xBF\xBD\"");
    EXPECT_EQ(Binary(type_oid, ""), R"("")");
  }
  EXPECT_EQ(Binary(oid::kChar, "r"), R"("r")");
}

TEST(JsonEncodingTest, BinaryJsonAndJsonb) {
  EXPECT_EQ(Binary(oid::kJson, R"({"a": [1, 2]})"), R"({"a": [1, 2]})");
  EXPECT_EQ(Binary(oid::kJson, "not json"), R"("not json")");
  EXPECT_EQ(Binary(oid::kJsonb, "\x01{\"a\": 1}"), R"({"a": 1})");
  EXPECT_EQ(Binary(oid::kJsonb, "\x01[1,\n2]"), "[1,2]");
  EXPECT_EQ(Binary(oid::kJsonb, "\x02{}"), R"("Ant9")");  // unknown version: base64
  EXPECT_EQ(Binary(oid::kJsonb, ""), R"("")");
  EXPECT_EQ(Binary(oid::kJsonb, "\x01"), R"("")");  // version only: no JSON, so a string
}

TEST(JsonEncodingTest, BinaryBytea) {
  EXPECT_EQ(Binary(oid::kBytea, ""), R"("")");
  EXPECT_EQ(Binary(oid::kBytea, "f"), R"("Zg==")");
  EXPECT_EQ(Binary(oid::kBytea, "fo"), R"("Zm8=")");
  EXPECT_EQ(Binary(oid::kBytea, "foo"), R"("Zm9v")");
  EXPECT_EQ(Binary(oid::kBytea, std::string("\0\xff\x10", 3)), R"("AP8Q")");
  // The same bytes through the text form.
  EXPECT_EQ(Binary(oid::kBytea, std::string("\0\xff\x10\xfe", 4)),
            Text(oid::kBytea, "\\x00ff10fe"));
}

TEST(JsonEncodingTest, OtherBinaryTypesAreBase64) {
  EXPECT_EQ(Binary(oid::kTime, Be64(1)), R"("AAAAAAAAAAE=")");
  EXPECT_EQ(Binary(oid::kInterval, std::string(16, '\0')), R"("AAAAAAAAAAAAAAAAAAAAAA==")");
  EXPECT_EQ(Binary(1007, "xyz"), R"("eHl6")");
  EXPECT_EQ(Binary(16'385, "happy"), R"("aGFwcHk=")");
}

TEST(JsonEncodingTest, BinaryArraysOfTypesWithoutADecoderAreBase64) {
  using E = std::vector<std::optional<std::string>>;
  struct Case {
    uint32_t array_oid;
    uint32_t element_oid;
  };
  for (const Case& c :
       {Case{1187, oid::kInterval}, Case{1183, oid::kTime}, Case{1270, oid::kTimetz},
        Case{1002, oid::kChar}, Case{1041, 869}, Case{1020, 603}, Case{16'390, 16'385}}) {
    const std::string bytes = BinaryArray(c.element_oid, {1}, E{std::string(8, '\1')});
    EXPECT_EQ(Binary(c.array_oid, bytes), Base64String(bytes)) << c.array_oid;
    EXPECT_FALSE(CanDecodeBinary(c.array_oid)) << c.array_oid;
  }
}

TEST(JsonEncodingTest, CanDecodeBinary) {
  for (uint32_t type_oid :
       {oid::kBool, oid::kInt2, oid::kInt4, oid::kInt8, oid::kOid, oid::kFloat4, oid::kFloat8,
        oid::kNumeric, oid::kText, oid::kVarchar, oid::kBpchar, oid::kName, oid::kJson, oid::kJsonb,
        oid::kBytea, oid::kUuid, oid::kDate, oid::kTimestamp, oid::kTimestamptz,
        // Their arrays.
        1000u, 1005u, 1007u, 1016u, 1028u, 1021u, 1022u, 1231u, 1009u, 1015u, 1014u, 1003u, 199u,
        3807u, 1001u, 2951u, 1182u, 1115u, 1185u}) {
    EXPECT_TRUE(CanDecodeBinary(type_oid)) << type_oid;
  }
  for (uint32_t type_oid : {oid::kInterval,
                            oid::kTime,
                            oid::kTimetz,
                            oid::kChar,  // no exact binary decoder
                            1187u,
                            1183u,
                            1270u,
                            1002u,  // their arrays
                            0u,
                            705u /* unknown */,
                            790u /* money */,
                            869u /* inet */,
                            603u /* box */,
                            142u /* xml */,
                            1560u /* bit */,
                            3904u /* int4range */,
                            4089u /* regnamespace */,
                            1020u /* box[] */,
                            143u /* xml[] */,
                            1041u /* inet[] */,
                            3905u /* int4range[] */,
                            16'385u /* a user type: enum, domain... */,
                            4'294'967'295u}) {
    EXPECT_FALSE(CanDecodeBinary(type_oid)) << type_oid;
  }
}

// ---------------------------------------------------------------------------------------------
// Whatever comes in, valid JSON comes out.

TEST(JsonEncodingTest, RandomTextOfEveryTypeGivesValidJson) {
  const std::vector<uint32_t> type_oids = {oid::kBool,
                                           oid::kInt2,
                                           oid::kInt4,
                                           oid::kInt8,
                                           oid::kOid,
                                           oid::kFloat4,
                                           oid::kFloat8,
                                           oid::kNumeric,
                                           oid::kJson,
                                           oid::kJsonb,
                                           oid::kBytea,
                                           oid::kTimestamp,
                                           oid::kTimestamptz,
                                           oid::kText,
                                           oid::kDate,
                                           1000,
                                           1005,
                                           1007,
                                           1016,
                                           1021,
                                           1022,
                                           1231,
                                           1009,
                                           1001,
                                           1115,
                                           1185,
                                           199,
                                           3807,
                                           1020,
                                           16'390};
  const std::string alphabet = "{}[],:=\"\\ NULL01-9.e+xT\n\x01\xff\xc3\xa9tf";
  std::mt19937 rng(7);
  JsonOptions as_number;
  as_number.numeric_as_number = true;
  for (int i = 0; i < 30'000; ++i) {
    std::string text;
    const size_t length = rng() % 24;
    for (size_t k = 0; k < length; ++k) text.push_back(alphabet[rng() % alphabet.size()]);
    const uint32_t type_oid = type_oids[rng() % type_oids.size()];
    Text(type_oid, text, "public._mood", i % 2 == 0 ? JsonOptions{} : as_number);
  }
}

TEST(JsonEncodingTest, RandomBinaryOfEveryTypeGivesValidJson) {
  const std::vector<uint32_t> type_oids = {
      oid::kBool,        oid::kInt2,   oid::kInt4,    oid::kInt8, oid::kOid,
      oid::kFloat4,      oid::kFloat8, oid::kNumeric, oid::kJson, oid::kJsonb,
      oid::kBytea,       oid::kText,   oid::kUuid,    oid::kDate, oid::kTimestamp,
      oid::kTimestamptz, oid::kChar,   oid::kTime,    1007};
  std::mt19937 rng(11);
  for (int i = 0; i < 30'000; ++i) {
    const uint32_t type_oid = type_oids[rng() % type_oids.size()];
    std::string bytes;
    const size_t length = rng() % 20;
    for (size_t k = 0; k < length; ++k) bytes.push_back(static_cast<char>(rng()));
    if (type_oid == oid::kNumeric && length >= 8) {
      // Mostly well-formed headers, so the digit printing is exercised.
      const int16_t ndigits = static_cast<int16_t>((length - 8) / 2);
      bytes = NumericBytes(ndigits, static_cast<int16_t>(rng() % 20) - 10, (rng() % 2) * 0x4000,
                           static_cast<uint16_t>(rng() % 30), {});
      for (int16_t k = 0; k < ndigits; ++k) bytes += Be16(static_cast<uint16_t>(rng() % 10000));
    }
    Binary(type_oid, bytes);
  }
}

}  // namespace
}  // namespace pgflow
