#include "schemas/json_encoding.h"

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "schemas/table_schema.h"

namespace pgflow {
namespace {

using nlohmann::json;

constexpr int64_t kUsPerDay = 86'400'000'000;
// Days from 1970-01-01 to 2000-01-01.
constexpr int64_t kPgEpochDays = 10'957;

// Encodes `value` after existing output (AppendJsonValue must append), checks the result is
// valid JSON and returns it.
std::string Encode(const Value& value, std::string_view type_name = "", JsonOptions options = {}) {
  std::string out = "<prefix>";
  AppendJsonValue(value, type_name, options, &out);
  EXPECT_EQ(out.substr(0, 8), "<prefix>");
  out.erase(0, 8);
  EXPECT_TRUE(json::accept(out)) << "not valid JSON: " << out;
  return out;
}

std::string Text(uint32_t type_oid, std::string text, std::string_view type_name = "",
                 JsonOptions options = {}) {
  return Encode(Value::Text(type_oid, std::move(text)), type_name, options);
}

std::string Binary(uint32_t type_oid, std::string bytes, JsonOptions options = {}) {
  return Encode(Value{ValueKind::kBinary, type_oid, std::move(bytes)}, "", options);
}

JsonOptions NumericAsNumber() {
  JsonOptions options;
  options.numeric_as_number = true;
  return options;
}

std::string JsonString(std::string_view text) {
  std::string out;
  AppendJsonString(text, &out);
  EXPECT_TRUE(json::accept(out)) << "not valid JSON: " << out;
  return out;
}

std::string Base64(std::string_view bytes) {
  std::string out;
  AppendBase64(bytes, &out);
  return out;
}

std::string IsoTimestamp(int64_t unix_us) {
  std::string out;
  AppendIsoTimestamp(unix_us, &out);
  EXPECT_TRUE(json::accept("\"" + out + "\"")) << out;
  return out;
}

// Big-endian byte builders for binary send formats.
std::string Be16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }
std::string Be32(uint32_t v) { return Be16(static_cast<uint16_t>(v >> 16)) + Be16(v & 0xFFFF); }
std::string Be64(uint64_t v) {
  return Be32(static_cast<uint32_t>(v >> 32)) + Be32(static_cast<uint32_t>(v));
}
std::string Bytes(std::initializer_list<int> bytes) {
  std::string out;
  for (int b : bytes) out.push_back(static_cast<char>(b));
  return out;
}

std::string NumericBytes(int16_t ndigits, int16_t weight, uint16_t sign, uint16_t dscale,
                         std::initializer_list<uint16_t> digits) {
  std::string out = Be16(ndigits) + Be16(weight) + Be16(sign) + Be16(dscale);
  for (uint16_t d : digits) out += Be16(d);
  return out;
}

// A proleptic Gregorian calendar that walks one day at a time: a reference that shares no
// arithmetic with the code under test.
struct NaiveDate {
  int64_t year = 2000;
  int month = 1;
  int day = 1;

  static bool IsLeap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }
  int DaysInMonth() const {
    static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return month == 2 && IsLeap(year) ? 29 : kDays[month - 1];
  }
  void Next() {
    if (++day > DaysInMonth()) {
      day = 1;
      if (++month > 12) {
        month = 1;
        ++year;
      }
    }
  }
  void Previous() {
    if (--day < 1) {
      if (--month < 1) {
        month = 12;
        --year;
      }
      day = DaysInMonth();
    }
  }
  // As PostgreSQL's ISO DateStyle prints it.
  std::string PgText() const {
    if (year <= 0) return absl::StrFormat("%04d-%02d-%02d BC", 1 - year, month, day);
    return absl::StrFormat("%04d-%02d-%02d", year, month, day);
  }
};

// Days since 2000-01-01 of a date, by walking: for the few fixed dates the tests need.
int32_t PgDays(int64_t year, int month, int day) {
  NaiveDate d;
  int32_t days = 0;
  auto before = [&] { return std::tie(d.year, d.month, d.day) < std::tie(year, month, day); };
  while (before()) {
    d.Next();
    ++days;
  }
  while (std::tie(d.year, d.month, d.day) > std::tie(year, month, day)) {
    d.Previous();
    --days;
  }
  return days;
}

int64_t PgMicros(int64_t year, int month, int day, int hour, int minute, int second,
                 int64_t micros) {
  return PgDays(year, month, day) * kUsPerDay +
         ((hour * 60 + minute) * 60 + second) * int64_t{1'000'000} + micros;
}

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
  EXPECT_EQ(json::parse(Text(oid::kInt8, "-9223372036854775808")).get<int64_t>(),
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
  EXPECT_DOUBLE_EQ(json::parse(Text(oid::kFloat8, "0.1")).get<double>(), 0.1);
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
  EXPECT_EQ(json::parse(Text(oid::kJsonb, jsonb)), json::parse(jsonb));
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

TEST(JsonEncodingTest, TimestampsBecomeIso8601) {
  EXPECT_EQ(Text(oid::kTimestamp, "2024-01-02 03:04:05.123456"), R"("2024-01-02T03:04:05.123456")");
  EXPECT_EQ(Text(oid::kTimestamp, "2024-01-02 03:04:05"), R"("2024-01-02T03:04:05")");
  EXPECT_EQ(Text(oid::kTimestamp, "1969-12-31 23:59:59.5"), R"("1969-12-31T23:59:59.5")");
  EXPECT_EQ(Text(oid::kTimestamp, "12345-01-01 00:00:00"), R"("12345-01-01T00:00:00")");
  EXPECT_EQ(Text(oid::kTimestamptz, "2024-01-02 03:04:05.123+00"),
            R"("2024-01-02T03:04:05.123+00:00")");
  EXPECT_EQ(Text(oid::kTimestamptz, "2024-01-02 03:04:05+05:30"), R"("2024-01-02T03:04:05+05:30")");
  EXPECT_EQ(Text(oid::kTimestamptz, "2024-01-02 03:04:05-03"), R"("2024-01-02T03:04:05-03:00")");
  EXPECT_EQ(Text(oid::kTimestamptz, "1890-01-01 00:00:00+00:19:32"),
            R"("1890-01-01T00:00:00+00:19:32")");
}

TEST(JsonEncodingTest, TimestampsThatAreNotIsoStayAsTheyAre) {
  for (const char* text : {"infinity", "-infinity", "0044-03-15 00:00:00 BC"}) {
    EXPECT_EQ(Text(oid::kTimestamp, text), JsonString(text)) << text;
  }
  for (const char* text : {"infinity", "-infinity", "0044-03-15 00:00:00+00 BC"}) {
    EXPECT_EQ(Text(oid::kTimestamptz, text), JsonString(text)) << text;
  }
  // Not PostgreSQL's form: kept rather than guessed at.
  for (const char* text : {"", "2024-01-02", "2024-01-02T03:04:05", "024-01-02 03:04:05",
                           "2024-1-02 03:04:05", "2024-01-02 03:04", "2024-01-02 03:04:05.",
                           "2024-01-02 03:04:05+00", "2024-01-02 03:04:05 "}) {
    EXPECT_EQ(Text(oid::kTimestamp, text), JsonString(text)) << text;
  }
  for (const char* text : {"2024-01-02 03:04:05", "2024-01-02 03:04:05+0",
                           "2024-01-02 03:04:05+00:", "2024-01-02 03:04:05+00:3",
                           "2024-01-02 03:04:05+00:30:", "2024-01-02 03:04:05 +00",
                           "2024-01-02 03:04:05+00:00:00:00", "2024-01-02 03:04:05Z"}) {
    EXPECT_EQ(Text(oid::kTimestamptz, text), JsonString(text)) << text;
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
// Arrays in text form

TEST(JsonEncodingTest, ArraysOfIntegers) {
  EXPECT_EQ(Text(1007, "{1,2,NULL}"), "[1,2,null]");
  EXPECT_EQ(Text(1005, "{-32768,32767}"), "[-32768,32767]");
  EXPECT_EQ(Text(1016, "{9223372036854775807}"), "[9223372036854775807]");
  EXPECT_EQ(Text(1028, "{0,4294967295}"), "[0,4294967295]");
  EXPECT_EQ(Text(1007, "{1,x}"), R"([1,"x"])");  // an element is converted on its own
}

TEST(JsonEncodingTest, ArraysOfOtherScalars) {
  EXPECT_EQ(Text(1000, "{t,f,NULL}"), "[true,false,null]");
  EXPECT_EQ(Text(1021, "{1.5,NaN,-Infinity}"), R"([1.5,"NaN","-Infinity"])");
  EXPECT_EQ(Text(1022, "{1e+100,-0.5,Infinity}"), R"([1e+100,-0.5,"Infinity"])");
  EXPECT_EQ(Text(1231, "{12.50,NaN}"), R"(["12.50","NaN"])");
  EXPECT_EQ(Text(1231, "{12.50,NaN,NULL}", "", NumericAsNumber()), R"([12.50,"NaN",null])");
  EXPECT_EQ(Text(1009, R"({"a b","c\"d",NULL})"), R"(["a b","c\"d",null])");
  EXPECT_EQ(Text(1015, R"({x,"y,z"})"), R"(["x","y,z"])");
  EXPECT_EQ(Text(1014, R"({"ab ",cd})"), R"(["ab ","cd"])");
  EXPECT_EQ(Text(1002, R"({a,"\""})"), R"(["a","\""])");
  EXPECT_EQ(Text(1003, "{pg_class,pg_type}"), R"(["pg_class","pg_type"])");
  EXPECT_EQ(Text(2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
            R"(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"])");
  EXPECT_EQ(Text(1182, "{2024-01-02,infinity}"), R"(["2024-01-02","infinity"])");
  EXPECT_EQ(Text(1183, "{03:04:05,23:59:59.999999}"), R"(["03:04:05","23:59:59.999999"])");
  EXPECT_EQ(Text(1270, "{03:04:05+02}"), R"(["03:04:05+02"])");
  EXPECT_EQ(Text(1187, "{P1D,PT1H}"), R"(["P1D","PT1H"])");
  EXPECT_EQ(Text(1041, "{192.168.0.1,::1}"), R"(["192.168.0.1","::1"])");  // inet[]
}

TEST(JsonEncodingTest, ArraysOfTimestamps) {
  EXPECT_EQ(Text(1115, R"({"2024-01-02 03:04:05","2024-01-02 03:04:05.5",infinity,NULL})"),
            R"(["2024-01-02T03:04:05","2024-01-02T03:04:05.5","infinity",null])");
  EXPECT_EQ(Text(1185, R"({"2024-01-02 03:04:05+00","0044-03-15 00:00:00+00 BC"})"),
            R"(["2024-01-02T03:04:05+00:00","0044-03-15 00:00:00+00 BC"])");
}

TEST(JsonEncodingTest, ArraysOfJsonEmbedTheirElements) {
  EXPECT_EQ(Text(3807, R"({"{\"a\": 1}","[1, 2]",NULL,"\"s\""})"), R"([{"a": 1},[1, 2],null,"s"])");
  EXPECT_EQ(Text(199, "{\"{\\\"a\\\":\n1}\",3}"), R"([{"a":1},3])");  // newline inside
  EXPECT_EQ(Text(199, R"({"{oops"})"), R"(["{oops"])");               // not JSON: a string
}

TEST(JsonEncodingTest, ArraysOfBytea) {
  EXPECT_EQ(Text(1001, R"({"\\x666f6f","\\x",NULL})"), R"(["Zm9v","",null])");
}

TEST(JsonEncodingTest, ArrayElementsWithEscapes) {
  EXPECT_EQ(Text(1009, R"({"back\\slash","quote\"d","{braces}","comma,","  spaced  "})"),
            R"(["back\\slash","quote\"d","{braces}","comma,","  spaced  "])");
  EXPECT_EQ(Text(1009, "{\"tab\there\",\"line\nbreak\"}"), R"(["tab\there","line\nbreak"])");
  EXPECT_EQ(Text(1009, "{\"\",\"\\\\\"}"), R"(["","\\"])");
  EXPECT_EQ(Text(1009, "{é,\"ü\"}"), R"(["é","ü"])");
  EXPECT_EQ(Text(1009, "{\"bad \xff byte\"}"), "[\"bad \xEF\xBF\xBD byte\"]");
  // A long escaped element (past any small-string buffer), twice, to reuse the scratch space.
  const std::string long_text(1000, 'x');
  EXPECT_EQ(Text(1009, "{\"" + long_text + "\\\"\",\"a\\\"\"}"),
            "[\"" + long_text + "\\\"\",\"a\\\"\"]");
}

TEST(JsonEncodingTest, QuotedNullIsAString) {
  EXPECT_EQ(Text(1009, R"({NULL,"NULL",null,"null",NuLl})"), R"([null,"NULL",null,"null",null])");
  EXPECT_EQ(Text(1007, R"({"NULL"})"), R"(["NULL"])");
}

TEST(JsonEncodingTest, NestedArrays) {
  EXPECT_EQ(Text(1007, "{{1,2},{3,4}}"), "[[1,2],[3,4]]");
  EXPECT_EQ(Text(1007, "{{{1},{2}},{{3},{NULL}}}"), "[[[1],[2]],[[3],[null]]]");
  EXPECT_EQ(Text(1009, R"({{"a,b",c},{NULL,"}"}})"), R"([["a,b","c"],[null,"}"]])");
  EXPECT_EQ(Text(1007, "{{1,2,3,4,5,6}}"), "[[1,2,3,4,5,6]]");
  // PostgreSQL's limit is 6 dimensions.
  EXPECT_EQ(Text(1007, "{{{{{{1}}}}}}"), "[[[[[[1]]]]]]");
}

TEST(JsonEncodingTest, EmptyArray) {
  EXPECT_EQ(Text(1007, "{}"), "[]");
  EXPECT_EQ(Text(1009, "{}"), "[]");
  EXPECT_EQ(Text(16'390, "{}", "public._mood"), "[]");
}

TEST(JsonEncodingTest, ArrayDimensionPrefixIsDropped) {
  EXPECT_EQ(Text(1007, "[0:1]={1,2}"), "[1,2]");
  EXPECT_EQ(Text(1007, "[-2:-1]={1,2}"), "[1,2]");
  EXPECT_EQ(Text(1007, "[1:2][0:0]={{1},{2}}"), "[[1],[2]]");
  EXPECT_EQ(Text(1009, R"([2:3]={"a b",NULL})"), R"(["a b",null])");
}

TEST(JsonEncodingTest, ArrayWhitespaceIsTolerated) {
  EXPECT_EQ(Text(1007, " { { 1 } , {2 } } "), "[[1],[2]]");
  EXPECT_EQ(Text(1007, " { 1 , 2 ,NULL } "), "[1,2,null]");
  EXPECT_EQ(Text(1009, R"({ "a" , b c })"), R"(["a","b c"])");
}

TEST(JsonEncodingTest, ArraysOfNonBuiltinTypesAreArraysOfStrings) {
  EXPECT_EQ(Text(16'390, R"({happy,sad,NULL,"very happy"})", "public._mood"),
            R"(["happy","sad",null,"very happy"])");
  EXPECT_EQ(Text(16'390, "{1,2}", "_mood"), R"(["1","2"])");
  EXPECT_EQ(Text(16'391, "{{a},{b}}", "app.schema._composite"), R"([["a"],["b"]])");
  // Not an array name: the text.
  EXPECT_EQ(Text(16'392, "{happy}", "public.mood"), R"("{happy}")");
  EXPECT_EQ(Text(16'392, "{happy}", "my_schema.mood"), R"("{happy}")");
  EXPECT_EQ(Text(16'392, "{happy}"), R"("{happy}")");
  // Named like an array but not one.
  EXPECT_EQ(Text(16'393, "plain", "public._odd"), R"("plain")");
}

TEST(JsonEncodingTest, BoxArrayIsAString) {
  EXPECT_EQ(Text(1020, "{(1,1),(0,0);(2,2),(1,1)}"), R"("{(1,1),(0,0);(2,2),(1,1)}")");
}

TEST(JsonEncodingTest, MalformedArraysAreTheirText) {
  for (const std::string& text : std::initializer_list<std::string>{
           "",        "{",        "}",        "1,2",
           "{1,2",    "{1,2}x",   "{1,,2}",   "{,}",
           "{1,}",    "{,1}",     "{1}}",     "{{1}",
           "{\"abc}", "{\"abc\\", "{{1},2}",  "{1,{2}}",
           "{a\"b}",  "{a\\b}",   "{a{b}",    "[0:1]{1,2}",
           "[x]={1}", "[0:1]",    "[0:1]=",   "[0:]={1}",
           "{1} {2}", "{{}",      "{\"a\"b}", std::string(20, '{') + "1" + std::string(20, '}')}) {
    EXPECT_EQ(Text(1007, text), JsonString(text)) << text;
    EXPECT_EQ(Text(1009, text), JsonString(text)) << text;
  }
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

TEST(JsonEncodingTest, BinaryFloats) {
  auto float4 = [](float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    return Be32(bits);
  };
  auto float8 = [](double d) {
    uint64_t bits;
    std::memcpy(&bits, &d, 8);
    return Be64(bits);
  };
  EXPECT_EQ(Binary(oid::kFloat4, float4(1.5f)), "1.5");
  EXPECT_EQ(Binary(oid::kFloat4, float4(0.1f)), "0.1");
  EXPECT_EQ(Binary(oid::kFloat4, float4(-3.4028235e38f)), "-3.4028235e+38");
  EXPECT_EQ(Binary(oid::kFloat8, float8(0.1)), "0.1");
  EXPECT_EQ(Binary(oid::kFloat8, float8(-2.5e-300)), "-2.5e-300");
  EXPECT_EQ(Binary(oid::kFloat8, float8(1e100)), "1e+100");
  EXPECT_EQ(json::parse(Binary(oid::kFloat8, float8(1.0 / 3))).get<double>(), 1.0 / 3);
  EXPECT_EQ(Binary(oid::kFloat8, float8(std::numeric_limits<double>::quiet_NaN())), R"("NaN")");
  EXPECT_EQ(Binary(oid::kFloat8, float8(std::numeric_limits<double>::infinity())), R"("Infinity")");
  EXPECT_EQ(Binary(oid::kFloat4, float4(-std::numeric_limits<float>::infinity())),
            R"("-Infinity")");
  EXPECT_EQ(Binary(oid::kFloat4, float4(std::numeric_limits<float>::quiet_NaN())), R"("NaN")");
  EXPECT_EQ(Binary(oid::kFloat8, float4(1.5f)), R"("P8AAAA==")");  // wrong length
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

TEST(JsonEncodingTest, BinaryUuid) {
  EXPECT_EQ(Binary(oid::kUuid, Bytes({0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d,
                                      0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11})),
            R"("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")");
  EXPECT_EQ(Binary(oid::kUuid, std::string(16, '\0')), R"("00000000-0000-0000-0000-000000000000")");
  EXPECT_EQ(Binary(oid::kUuid, std::string(15, '\xff')), R"("////////////////////")");
}

TEST(JsonEncodingTest, BinaryDate) {
  EXPECT_EQ(Binary(oid::kDate, Be32(0)), R"("2000-01-01")");
  EXPECT_EQ(Binary(oid::kDate, Be32(static_cast<uint32_t>(-kPgEpochDays))), R"("1970-01-01")");
  EXPECT_EQ(Binary(oid::kDate, Be32(8766)), R"("2024-01-01")");
  EXPECT_EQ(Binary(oid::kDate, Be32(PgDays(2024, 2, 29))), R"("2024-02-29")");
  EXPECT_EQ(Binary(oid::kDate, Be32(static_cast<uint32_t>(PgDays(-43, 3, 15)))),
            R"("0044-03-15 BC")");
  EXPECT_EQ(Binary(oid::kDate, Be32(static_cast<uint32_t>(PgDays(0, 12, 31)))),
            R"("0001-12-31 BC")");
  EXPECT_EQ(Binary(oid::kDate, Be32(static_cast<uint32_t>(PgDays(1, 1, 1)))), R"("0001-01-01")");
  EXPECT_EQ(Binary(oid::kDate, Be32(0x7FFFFFFF)), R"("infinity")");
  EXPECT_EQ(Binary(oid::kDate, Be32(0x80000000)), R"("-infinity")");
  EXPECT_EQ(Binary(oid::kDate, Be32(0x7FFFFFFE)).substr(0, 1), "\"");  // absurd but no crash
  EXPECT_EQ(Binary(oid::kDate, Be16(0)), R"("AAA=")");
}

TEST(JsonEncodingTest, BinaryDateAgreesWithACalendarOverThousandsOfYears) {
  NaiveDate date;
  for (int32_t days = 0; days <= 1'000'000; ++days, date.Next()) {
    if (days % 37 != 0 && date.day != 1) continue;
    ASSERT_EQ(Binary(oid::kDate, Be32(days)), "\"" + date.PgText() + "\"") << days;
  }
  date = NaiveDate();
  for (int32_t days = 0; days >= -1'000'000; --days, date.Previous()) {
    if (days % 37 != 0 && date.day != 1) continue;
    ASSERT_EQ(Binary(oid::kDate, Be32(static_cast<uint32_t>(days))), "\"" + date.PgText() + "\"")
        << days;
  }
}

TEST(JsonEncodingTest, BinaryTimestamp) {
  auto timestamp = [](int64_t pg_us) {
    return Binary(oid::kTimestamp, Be64(static_cast<uint64_t>(pg_us)));
  };
  EXPECT_EQ(timestamp(0), R"("2000-01-01T00:00:00")");
  EXPECT_EQ(timestamp(123'456), R"("2000-01-01T00:00:00.123456")");
  EXPECT_EQ(timestamp(120'000), R"("2000-01-01T00:00:00.12")");
  EXPECT_EQ(timestamp(1), R"("2000-01-01T00:00:00.000001")");
  EXPECT_EQ(timestamp(-1), R"("1999-12-31T23:59:59.999999")");
  EXPECT_EQ(timestamp(PgMicros(1969, 7, 20, 20, 17, 40, 0)), R"("1969-07-20T20:17:40")");
  EXPECT_EQ(timestamp(PgMicros(2038, 1, 19, 3, 14, 8, 500'000)), R"("2038-01-19T03:14:08.5")");
  EXPECT_EQ(timestamp(PgMicros(9999, 12, 31, 23, 59, 59, 999'999)),
            R"("9999-12-31T23:59:59.999999")");
  EXPECT_EQ(timestamp(PgMicros(-43, 3, 15, 12, 0, 0, 0)), R"("0044-03-15 12:00:00 BC")");
  EXPECT_EQ(timestamp(std::numeric_limits<int64_t>::max()), R"("infinity")");
  EXPECT_EQ(timestamp(std::numeric_limits<int64_t>::min()), R"("-infinity")");
  // Beyond PostgreSQL's range: nonsense in, but no crash or invalid JSON out.
  timestamp(std::numeric_limits<int64_t>::max() - 1);
  timestamp(std::numeric_limits<int64_t>::min() + 1);
  EXPECT_EQ(Binary(oid::kTimestamp, Be32(0)), R"("AAAAAA==")");
}

TEST(JsonEncodingTest, BinaryTimestamptz) {
  auto timestamptz = [](int64_t pg_us) {
    return Binary(oid::kTimestamptz, Be64(static_cast<uint64_t>(pg_us)));
  };
  EXPECT_EQ(timestamptz(0), R"("2000-01-01T00:00:00+00:00")");
  EXPECT_EQ(timestamptz(PgMicros(2024, 1, 2, 3, 4, 5, 123'000)),
            R"("2024-01-02T03:04:05.123+00:00")");
  EXPECT_EQ(timestamptz(PgMicros(1900, 3, 1, 0, 0, 0, 0)), R"("1900-03-01T00:00:00+00:00")");
  EXPECT_EQ(timestamptz(PgMicros(-43, 3, 15, 0, 0, 0, 0)), R"("0044-03-15 00:00:00+00 BC")");
  EXPECT_EQ(timestamptz(std::numeric_limits<int64_t>::max()), R"("infinity")");
  EXPECT_EQ(timestamptz(std::numeric_limits<int64_t>::min()), R"("-infinity")");
}

TEST(JsonEncodingTest, BinaryAndTextFormsOfATimestampGiveTheSameJson) {
  struct Case {
    int64_t pg_us;
    const char* text;  // PostgreSQL's text output, TimeZone=UTC
  };
  for (const Case& c : std::initializer_list<Case>{
           {PgMicros(2024, 1, 2, 3, 4, 5, 123'456), "2024-01-02 03:04:05.123456"},
           {PgMicros(2024, 1, 2, 3, 4, 5, 100'000), "2024-01-02 03:04:05.1"},
           {PgMicros(1970, 1, 1, 0, 0, 0, 0), "1970-01-01 00:00:00"},
           {PgMicros(1, 1, 1, 0, 0, 0, 0), "0001-01-01 00:00:00"},
           {PgMicros(0, 12, 31, 23, 59, 59, 0), "0001-12-31 23:59:59 BC"},
           {PgMicros(10000, 1, 1, 0, 0, 0, 0), "10000-01-01 00:00:00"},
           {std::numeric_limits<int64_t>::max(), "infinity"},
       }) {
    EXPECT_EQ(Binary(oid::kTimestamp, Be64(static_cast<uint64_t>(c.pg_us))),
              Text(oid::kTimestamp, c.text))
        << c.text;
  }
  EXPECT_EQ(Binary(oid::kTimestamptz, Be64(PgMicros(2024, 1, 2, 3, 4, 5, 123'000))),
            Text(oid::kTimestamptz, "2024-01-02 03:04:05.123+00"));
  EXPECT_EQ(Binary(oid::kTimestamptz, Be64(static_cast<uint64_t>(PgMicros(-99, 1, 1, 0, 0, 0, 0)))),
            Text(oid::kTimestamptz, "0100-01-01 00:00:00+00 BC"));
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

TEST(JsonEncodingTest, BinaryNumeric) {
  auto numeric = [](std::string bytes, JsonOptions options = {}) {
    return Binary(oid::kNumeric, std::move(bytes), options);
  };
  EXPECT_EQ(numeric(NumericBytes(3, 1, 0, 3, {1, 2345, 6780})), R"("12345.678")");
  EXPECT_EQ(numeric(NumericBytes(3, 1, 0x4000, 3, {1, 2345, 6780})), R"("-12345.678")");
  EXPECT_EQ(numeric(NumericBytes(3, 1, 0, 3, {1, 2345, 6780}), NumericAsNumber()), "12345.678");
  EXPECT_EQ(numeric(NumericBytes(0, 0, 0, 0, {})), R"("0")");
  EXPECT_EQ(numeric(NumericBytes(0, 0, 0, 2, {})), R"("0.00")");
  EXPECT_EQ(numeric(NumericBytes(2, 0, 0x4000, 1, {1, 5000})), R"("-1.5")");
  EXPECT_EQ(numeric(NumericBytes(2, 0, 0, 2, {12, 5000})), R"("12.50")");
  EXPECT_EQ(numeric(NumericBytes(1, -1, 0, 4, {1})), R"("0.0001")");
  EXPECT_EQ(numeric(NumericBytes(1, -2, 0, 8, {1234})), R"("0.00001234")");
  EXPECT_EQ(numeric(NumericBytes(1, 1, 0, 0, {1})), R"("10000")");
  EXPECT_EQ(numeric(NumericBytes(1, 5, 0, 0, {1})), R"("100000000000000000000")");
  EXPECT_EQ(numeric(NumericBytes(2, 1, 0, 0, {9999, 9999})), R"("99999999")");
  EXPECT_EQ(numeric(NumericBytes(2, 1, 0, 6, {1, 1})), R"("10001.000000")");
  EXPECT_EQ(numeric(NumericBytes(1, 0, 0, 0, {7}), NumericAsNumber()), "7");
  EXPECT_EQ(numeric(NumericBytes(0, 0, 0xC000, 0, {})), R"("NaN")");
  EXPECT_EQ(numeric(NumericBytes(0, 0, 0xD000, 0, {})), R"("Infinity")");
  EXPECT_EQ(numeric(NumericBytes(0, 0, 0xF000, 0, {}), NumericAsNumber()), R"("-Infinity")");
  // A long value: 1000 integer groups of 1234, then a fractional group.
  std::string big = Be16(1001) + Be16(999) + Be16(0) + Be16(4);
  std::string expected = "\"";
  for (int i = 0; i < 1000; ++i) {
    big += Be16(1234);
    expected += "1234";
  }
  big += Be16(1);
  EXPECT_EQ(numeric(big), expected + ".0001\"");
}

TEST(JsonEncodingTest, MalformedBinaryNumericIsBase64) {
  for (const std::string& bytes : {
           std::string(),
           Be16(0) + Be16(0) + Be16(0),                      // short header
           NumericBytes(2, 0, 0, 0, {1}),                    // fewer digits than ndigits
           NumericBytes(1, 0, 0, 0, {1, 2}),                 // more
           NumericBytes(-1, 0, 0, 0, {}),                    // negative ndigits
           NumericBytes(1, 0, 0, 0, {10000}),                // digit out of range
           NumericBytes(1, 0, 0x1234, 0, {1}),               // unknown sign
           NumericBytes(1, 0, 0, 0x4000, {1}),               // dscale out of range
           NumericBytes(1, 0, 0xC000, 0, {1}).substr(0, 9),  // odd length
       }) {
    std::string expected;
    AppendJsonString(Base64(bytes), &expected);
    EXPECT_EQ(Binary(oid::kNumeric, bytes), expected);
  }
}

TEST(JsonEncodingTest, OtherBinaryTypesAreBase64) {
  EXPECT_EQ(Binary(oid::kTime, Be64(1)), R"("AAAAAAAAAAE=")");
  EXPECT_EQ(Binary(oid::kInterval, std::string(16, '\0')), R"("AAAAAAAAAAAAAAAAAAAAAA==")");
  EXPECT_EQ(Binary(1007, "xyz"), R"("eHl6")");
  EXPECT_EQ(Binary(16'385, "happy"), R"("aGFwcHk=")");
}

// ---------------------------------------------------------------------------------------------
// AppendJsonString, AppendBase64, AppendIsoTimestamp

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
    EXPECT_EQ(json::parse(JsonString(text)).get<std::string>(), text);
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
      EXPECT_EQ(json::parse(JsonString(text)).get<std::string>(), text);
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
    ASSERT_EQ(json::parse(JsonString(valid)).get<std::string>(), valid);
    // Random mixes of complete and broken UTF-8 sequences.
    std::string mixed;
    for (size_t k = 0; k < length; ++k) mixed.push_back(alphabet[rng() % alphabet.size()]);
    JsonString(mixed);
  }
}

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

TEST(AppendIsoTimestampTest, Instants) {
  constexpr int64_t kSecond = 1'000'000;
  EXPECT_EQ(IsoTimestamp(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(IsoTimestamp(1), "1970-01-01T00:00:00.000001Z");
  EXPECT_EQ(IsoTimestamp(500'000), "1970-01-01T00:00:00.500000Z");
  EXPECT_EQ(IsoTimestamp(-1), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(IsoTimestamp(-kSecond), "1969-12-31T23:59:59Z");
  EXPECT_EQ(IsoTimestamp(1'795'344'180 * kSecond + 123'456), "2026-11-22T10:43:00.123456Z");
  EXPECT_EQ(IsoTimestamp(951'782'400 * kSecond), "2000-02-29T00:00:00Z");
  EXPECT_EQ(IsoTimestamp(2'147'483'647 * kSecond), "2038-01-19T03:14:07Z");
  EXPECT_EQ(IsoTimestamp(2'147'483'648 * kSecond), "2038-01-19T03:14:08Z");
  EXPECT_EQ(IsoTimestamp(4'102'444'800 * kSecond), "2100-01-01T00:00:00Z");
  EXPECT_EQ(IsoTimestamp(-2'203'891'200 * kSecond), "1900-03-01T00:00:00Z");
  EXPECT_EQ(IsoTimestamp(-14'182'940 * kSecond), "1969-07-20T20:17:40Z");
  EXPECT_EQ(IsoTimestamp(-62'135'596'800 * kSecond), "0001-01-01T00:00:00Z");
  EXPECT_EQ(IsoTimestamp(-62'135'596'801 * kSecond), "0000-12-31T23:59:59Z");
  EXPECT_EQ(IsoTimestamp(253'402'300'799 * kSecond), "9999-12-31T23:59:59Z");
  EXPECT_EQ(IsoTimestamp(253'402'300'800 * kSecond), "10000-01-01T00:00:00Z");
  EXPECT_EQ(IsoTimestamp(-62'198'755'200 * kSecond), "-0001-01-01T00:00:00Z");
  // The ends of the range: no overflow, something well-formed.
  EXPECT_EQ(IsoTimestamp(std::numeric_limits<int64_t>::max()), "294247-01-10T04:00:54.775807Z");
  EXPECT_EQ(IsoTimestamp(std::numeric_limits<int64_t>::min()), "-290308-12-21T19:59:05.224192Z");
  std::string out = "x";
  AppendIsoTimestamp(0, &out);
  EXPECT_EQ(out, "x1970-01-01T00:00:00Z");
}

TEST(AppendIsoTimestampTest, AgreesWithACalendarOverThousandsOfYears) {
  NaiveDate date;
  for (int64_t days = 0; days <= 1'000'000; ++days, date.Next()) {
    if (days % 41 != 0 && date.day != 1) continue;
    const int64_t us = (days + kPgEpochDays) * kUsPerDay + days % 86'400 * 1'000'000;
    const int64_t s = days % 86'400;
    ASSERT_EQ(IsoTimestamp(us),
              absl::StrFormat("%04d-%02d-%02dT%02d:%02d:%02dZ", date.year, date.month, date.day,
                              s / 3600, s / 60 % 60, s % 60));
  }
  date = NaiveDate();
  for (int64_t days = 0; days >= -1'000'000; --days, date.Previous()) {
    if (days % 41 != 0 && date.day != 1) continue;
    const int64_t us = (days + kPgEpochDays) * kUsPerDay;
    const std::string year =
        date.year < 0 ? absl::StrFormat("-%04d", -date.year) : absl::StrFormat("%04d", date.year);
    ASSERT_EQ(IsoTimestamp(us),
              absl::StrFormat("%s-%02d-%02dT00:00:00Z", year, date.month, date.day));
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
