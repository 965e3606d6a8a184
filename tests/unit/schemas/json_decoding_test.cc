#include "schemas/json_decoding.h"

#include <bit>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "schemas/base64.h"
#include "schemas/json_encoding.h"
#include "schemas/json_text.h"
#include "schemas/table_schema.h"
#include "tests/unit/schemas/json_encoding_test_util.h"

namespace pgflow {
namespace {

// What the decoder gives back for a JSON text, as text ("<NULL>" for SQL NULL, "<error: ...>"
// when it refuses).
std::string Decode(std::string_view json, uint32_t type_oid, std::string_view type_name = "") {
  absl::StatusOr<Value> value = ValueFromJson(json, type_oid, type_name);
  if (!value.ok()) return "<error: " + std::string(value.status().message()) + ">";
  EXPECT_EQ(value->type_oid, type_oid);
  if (value->is_null()) return "<NULL>";
  EXPECT_EQ(value->kind, ValueKind::kText);
  return value->data;
}

// Encodes a text value as the Kafka sink does, then decodes it.
std::string RoundTrip(uint32_t type_oid, const std::string& text, std::string_view type_name = "",
                      JsonOptions options = {}) {
  std::string json;
  AppendJsonValue(Value::Text(type_oid, text), type_name, options, &json);
  return Decode(json, type_oid, type_name);
}

std::string RoundTripBinary(uint32_t type_oid, const std::string& bytes) {
  std::string json;
  AppendJsonValue(Value{ValueKind::kBinary, type_oid, bytes}, "", JsonOptions{}, &json);
  return Decode(json, type_oid);
}

// Every text form json_encoding_test encodes, PostgreSQL's canonical output for its type,
// comes back exactly.
struct Case {
  uint32_t type_oid;
  std::string text;
  std::string type_name = "";
};

TEST(JsonDecodingTest, CanonicalTextRoundTripsExactly) {
  const std::vector<Case> cases = {
      {oid::kBool, "t"},
      {oid::kBool, "f"},
      {oid::kInt2, "-32768"},
      {oid::kInt4, "0"},
      {oid::kInt4, "42"},
      {oid::kInt8, "9223372036854775807"},
      {oid::kInt8, "-9223372036854775808"},
      {oid::kOid, "4294967295"},
      {oid::kFloat8, "1.5"},
      {oid::kFloat8, "-0"},
      {oid::kFloat8, "1e+100"},
      {oid::kFloat8, "1.2345678901234567e-05"},
      {oid::kFloat4, "3.4028235e+38"},
      {oid::kFloat8, "NaN"},
      {oid::kFloat8, "Infinity"},
      {oid::kFloat4, "-Infinity"},
      {oid::kNumeric, "12.50"},
      {oid::kNumeric, "-0.001"},
      {oid::kNumeric, "NaN"},
      {oid::kNumeric, "-12345678901234567890.123"},
      {oid::kJsonb, R"({"a": 1, "b": [true, null, "x\"y"], "c": {"d": -1.5e3}})"},
      {oid::kJson, R"({"a": 1, "b": [true, null, "x\"y"], "c": {"d": -1.5e3}})"},
      {oid::kJson, "[]"},
      {oid::kJsonb, "42"},
      {oid::kJsonb, R"("é\u00e9")"},
      {oid::kJsonb, R"({"price": 1.50, "big": 123456789012345678901234567890})"},
      {oid::kBytea, "\\x"},
      {oid::kBytea, "\\x66"},
      {oid::kBytea, "\\x666f"},
      {oid::kBytea, "\\x666f6f"},
      {oid::kBytea, "\\x666f6f626172"},
      {oid::kBytea, "\\x00ff10fe"},
      {oid::kTimestamp, "2024-01-02 03:04:05.123456"},
      {oid::kTimestamp, "2024-01-02 03:04:05"},
      {oid::kTimestamp, "1969-12-31 23:59:59.5"},
      {oid::kTimestamp, "12345-01-01 00:00:00"},
      {oid::kTimestamptz, "2024-01-02 03:04:05.123+00"},
      {oid::kTimestamptz, "2024-01-02 03:04:05+05:30"},
      {oid::kTimestamptz, "2024-01-02 03:04:05-03"},
      {oid::kTimestamptz, "1890-01-01 00:00:00+00:19:32"},
      {oid::kTimestamp, "infinity"},
      {oid::kTimestamp, "-infinity"},
      {oid::kTimestamp, "0044-03-15 00:00:00 BC"},
      {oid::kTimestamptz, "0044-03-15 00:00:00+00 BC"},
      {oid::kDate, "2024-01-02"},
      {oid::kTime, "03:04:05.5"},
      {oid::kTimetz, "03:04:05+02"},
      {oid::kInterval, "P1Y2M3DT4H5M6S"},
      {oid::kUuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
      {oid::kText, "say \"hi\"\n"},
      {oid::kText, ""},
      {oid::kText, "tab\there, back\\slash, unicode é ü 😀"},
      {oid::kVarchar, "naïve"},
      {oid::kBpchar, "ab  "},
      {oid::kName, "pg_class"},
      {oid::kChar, "r"},
      {16'385, "happy", "public.mood"},
      {869, "192.168.0.1/24"},
      {oid::kText, "{1,2}"},
      // Arrays.
      {1007, "{1,2,NULL}"},
      {1005, "{-32768,32767}"},
      {1016, "{9223372036854775807}"},
      {1028, "{0,4294967295}"},
      {1000, "{t,f,NULL}"},
      {1021, "{1.5,NaN,-Infinity}"},
      {1022, "{1e+100,-0.5,Infinity}"},
      {1231, "{12.50,NaN}"},
      {1009, R"({"a b","c\"d",NULL})"},
      {1015, R"({x,"y,z"})"},
      {1014, R"({"ab ",cd})"},
      {1002, R"({a,"\""})"},
      {1003, "{pg_class,pg_type}"},
      {2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"},
      {1182, "{2024-01-02,infinity}"},
      {1183, "{03:04:05,23:59:59.999999}"},
      {1270, "{03:04:05+02}"},
      {1187, "{P1D,PT1H}"},
      {1041, "{192.168.0.1,::1}"},
      {1115, R"({"2024-01-02 03:04:05","2024-01-02 03:04:05.5",infinity,NULL})"},
      {1185, R"({"2024-01-02 03:04:05+00","0044-03-15 00:00:00+00 BC"})"},
      {3807, R"({"{\"a\": 1}","[1, 2]",NULL,"\"s\""})"},
      {1001, R"({"\\x666f6f","\\x",NULL})"},
      {1009, R"({"back\\slash","quote\"d","{braces}","comma,","  spaced  "})"},
      {1009, "{\"tab\there\",\"line\nbreak\"}"},
      {1009, "{\"\",\"\\\\\"}"},
      {1009, "{é,ü}"},
      {1009, R"({NULL,"NULL","null",x})"},
      {1007, R"({"NULL"})"},
      {1007, "{{1,2},{3,4}}"},
      {1007, "{{{1},{2}},{{3},{NULL}}}"},
      {1009, R"({{"a,b",c},{NULL,"}"}})"},
      {1007, "{{{{{{1}}}}}}"},
      {1007, "{}"},
      {1009, "{}"},
      {16'390, "{}", "public._mood"},
      {16'390, R"({happy,sad,NULL,"very happy"})", "public._mood"},
      {16'391, "{{a},{b}}", "app.schema._composite"},
      {16'392, "{happy}", "public.mood"},
      {1020, "{(1,1),(0,0);(2,2),(1,1)}"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(RoundTrip(c.type_oid, c.text, c.type_name), c.text)
        << "type " << c.type_oid << " " << c.type_name;
  }
}

TEST(JsonDecodingTest, NullIsNullWhateverTheType) {
  for (uint32_t type_oid : {oid::kBool, oid::kInt4, oid::kText, oid::kJsonb, oid::kNumeric,
                            uint32_t{1007}, uint32_t{16'385}}) {
    EXPECT_EQ(Decode("null", type_oid), "<NULL>");
    EXPECT_EQ(Decode(" null ", type_oid), "<NULL>");
  }
  // A jsonb value that is JSON's null is not SQL NULL, but the encoding writes both as null.
  EXPECT_EQ(RoundTrip(oid::kJsonb, "null"), "<NULL>");
}

TEST(JsonDecodingTest, TextThatWasNotPostgresqlsFormComesBackAsItWas) {
  // The encoding keeps such text as a string; the decoder hands the string back.
  for (const char* text : {"yes", ""}) EXPECT_EQ(RoundTrip(oid::kBool, text), text);
  for (const char* text : {"-", "12a", "1.5", "+1", " 1", "007", "1e3"}) {
    EXPECT_EQ(RoundTrip(oid::kInt4, text), text);
  }
  for (const char* text : {"1.", ".5"}) EXPECT_EQ(RoundTrip(oid::kFloat4, text), text);
  for (const char* text : {"\\", "x00", "\\x0", "\\x0g", "\\X00", "abc\\000", "\\x00 "}) {
    EXPECT_EQ(RoundTrip(oid::kBytea, text), text) << text;
  }
  for (const char* text : {"", "2024-01-02", "2024-01-02 03:04", "2024-01-02 03:04:05+00"}) {
    EXPECT_EQ(RoundTrip(oid::kTimestamp, text), text) << text;
  }
  for (const char* text : {"2024-01-02 03:04:05", "2024-01-02 03:04:05Z"}) {
    EXPECT_EQ(RoundTrip(oid::kTimestamptz, text), text) << text;
  }
  for (const char* text : {"{1,2", "{1,,2}", "{a\"b}", "[0:1]{1,2}"}) {
    EXPECT_EQ(RoundTrip(1007, text), text) << text;
  }
}

TEST(JsonDecodingTest, WhatTheEncodingLosesStaysLost) {
  // Non-canonical spellings come back in PostgreSQL's canonical form.
  EXPECT_EQ(RoundTrip(oid::kBytea, "\\x00FF"), "\\x00ff");
  EXPECT_EQ(RoundTrip(1007, " { 1 , 2 ,NULL } "), "{1,2,NULL}");
  EXPECT_EQ(RoundTrip(1009, R"({NULL,"NULL",null,"null",NuLl})"),
            R"({NULL,"NULL",NULL,"null",NULL})");
  // Lower bounds.
  EXPECT_EQ(RoundTrip(1007, "[0:1]={1,2}"), "{1,2}");
  // Text PostgreSQL never writes that reads like what the encoding writes is taken for it (both
  // spellings are the same value to PostgreSQL's input functions).
  EXPECT_EQ(RoundTrip(oid::kBytea, ""), "\\x");
  EXPECT_EQ(RoundTrip(oid::kTimestamp, "2024-01-02T03:04:05"), "2024-01-02 03:04:05");
  // json keeps its input's formatting; the encoding takes line breaks out.
  EXPECT_EQ(RoundTrip(oid::kJson, "{\n  \"a\": 1\n}"), R"({"a":1})");
}

TEST(JsonDecodingTest, NumericAsNumberComesBackWithItsDigits) {
  for (const char* text : {"12.50", "-12345678901234567890.123", "0.000000000000000000001", "NaN",
                           "Infinity", "-Infinity"}) {
    EXPECT_EQ(RoundTrip(oid::kNumeric, text, "", NumericAsNumber()), text);
  }
  EXPECT_EQ(RoundTrip(1231, "{12.50,NaN,NULL}", "", NumericAsNumber()), "{12.50,NaN,NULL}");
}

TEST(JsonDecodingTest, BinaryValuesComeBackAsTheirText) {
  EXPECT_EQ(RoundTripBinary(oid::kBool, std::string(1, '\1')), "t");
  EXPECT_EQ(RoundTripBinary(oid::kInt4, Be32(0x80000000)), "-2147483648");
  EXPECT_EQ(RoundTripBinary(oid::kInt8, Be64(0x7FFFFFFFFFFFFFFF)), "9223372036854775807");
  EXPECT_EQ(RoundTripBinary(oid::kFloat8, Be64(std::bit_cast<uint64_t>(0.1))), "0.1");
  EXPECT_EQ(RoundTripBinary(oid::kFloat4, Be32(std::bit_cast<uint32_t>(-3.4028235e38f))),
            "-3.4028235e+38");
  EXPECT_EQ(RoundTripBinary(oid::kText, "plain"), "plain");
  EXPECT_EQ(RoundTripBinary(oid::kJsonb, "\1{\"a\": 1}"), R"({"a": 1})");
  EXPECT_EQ(RoundTripBinary(oid::kBytea, "foo"), "\\x666f6f");
  EXPECT_EQ(RoundTripBinary(oid::kUuid, std::string("\xa0\xee\xbc\x99\x9c\x0b\x4e\xf8\xbb\x6d"
                                                    "\x6b\xb9\xbd\x38\x0a\x11",
                                                    16)),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  // 2000-01-02 (day 1 after the epoch), and 1.5 s after midnight 2000-01-01 UTC.
  EXPECT_EQ(RoundTripBinary(oid::kDate, Be32(1)), "2000-01-02");
  EXPECT_EQ(RoundTripBinary(oid::kTimestamptz, Be64(1'500'000)), "2000-01-01 00:00:01.5+00");
  EXPECT_EQ(RoundTripBinary(oid::kTimestamp, Be64(0)), "2000-01-01 00:00:00");
  // numeric 12.50: ndigits 2, weight 0, sign +, dscale 2, digits 12 5000.
  EXPECT_EQ(
      RoundTripBinary(oid::kNumeric, Be16(2) + Be16(0) + Be16(0) + Be16(2) + Be16(12) + Be16(5000)),
      "12.50");
  // int4[] {1,NULL}.
  EXPECT_EQ(RoundTripBinary(1007, Be32(1) + Be32(1) + Be32(oid::kInt4) + Be32(2) + Be32(1) +
                                      Be32(4) + Be32(1) + Be32(0xFFFFFFFF)),
            "{1,NULL}");
}

TEST(JsonDecodingTest, EscapesInStringsAreResolved) {
  EXPECT_EQ(Decode(R"("a\u00e9\ud83d\ude00\n\/")", oid::kText), "aé😀\n/");
  EXPECT_EQ(Decode(R"(["\u0041",null])", 1009), "{A,NULL}");
  EXPECT_EQ(Decode(R"("\u0000")", oid::kText),
            "<error: a string holds \\u0000, which no PostgreSQL text value can>");
  EXPECT_EQ(Decode(R"("\ud83d")", oid::kText), "<error: a string holds a lone surrogate escape>");
}

TEST(JsonDecodingTest, ValuesOfTheWrongShapeAreRefused) {
  EXPECT_EQ(Decode("{}", oid::kInt4),
            "<error: expected a number or a string for type OID 23, got an object>");
  EXPECT_EQ(Decode("1", oid::kBool),
            "<error: expected true, false or a string for type OID 16, got a number>");
  EXPECT_EQ(Decode("[1]", oid::kText), "<error: expected a string for type OID 25, got an array>");
  EXPECT_EQ(Decode("[1]", 16'385, "public.mood"),
            "<error: expected a string for type public.mood, got an array>");
  EXPECT_EQ(Decode("1", 1007),
            "<error: expected an array or a string for type OID 1007, got a number>");
  EXPECT_EQ(Decode("[[[[[[[1]]]]]]]", 1007), "<error: arrays nested more than 6 deep>");
  EXPECT_EQ(Decode("[[1],2]", 1007),
            "<error: an array mixes sub-arrays and elements at one level>");
  EXPECT_EQ(Decode("[{}]", 1007),
            "<error: expected a number or a string for type OID 23, got an object>");
  // Numbers and booleans for other scalar types are their text.
  EXPECT_EQ(Decode("12", oid::kText), "12");
  EXPECT_EQ(Decode("true", oid::kText), "true");
}

TEST(JsonDecodingTest, MalformedJsonIsRefusedWithItsPlace) {
  for (const char* text : {"", " ", "{", "[1,]", "{\"a\":}", "tru", "01", "1.", "\"abc",
                           "\"a\x01\"", "\"\\q\"", "\"\xff\"", "[1] [2]", "NaN"}) {
    absl::StatusOr<Value> v = ValueFromJson(text, oid::kJsonb, "");
    EXPECT_FALSE(v.ok()) << text;
    if (!v.ok()) {
      EXPECT_NE(v.status().message().find("invalid JSON at byte"), std::string::npos);
    }
  }
}

TEST(JsonDecodingTest, RandomTextArraysRoundTrip) {
  // Arrays of random strings: whatever the bytes (ASCII here), array_out's quoting survives.
  std::mt19937_64 rng(7);
  const std::string alphabet = "ab \"\\{},NUL\tx";
  for (int round = 0; round < 2000; ++round) {
    std::vector<std::string> elements(rng() % 5);
    std::string json = "[";
    for (size_t i = 0; i < elements.size(); ++i) {
      for (size_t k = rng() % 6; k > 0; --k)
        elements[i].push_back(alphabet[rng() % alphabet.size()]);
      if (i > 0) json += ",";
      AppendJsonString(elements[i], &json);
    }
    json += "]";
    const std::string literal = Decode(json, 1009);
    std::string back;
    AppendJsonValue(Value::Text(1009, literal), "", JsonOptions{}, &back);
    EXPECT_EQ(back, json) << literal;
  }
}

TEST(JsonDecodingTest, DeepNestingCostsNoStack) {
  const std::string deep = std::string(200'000, '[') + std::string(200'000, ']');
  EXPECT_EQ(Decode(deep, oid::kJsonb), deep);
}

}  // namespace
}  // namespace pgflow
