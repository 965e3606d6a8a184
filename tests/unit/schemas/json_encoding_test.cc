#include "schemas/json_encoding.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "schemas/base64.h"
#include "schemas/json_text.h"
#include "schemas/pg_datetime.h"
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

std::string Float4Bytes(float f) { return Be32(std::bit_cast<uint32_t>(f)); }
std::string Float8Bytes(double d) { return Be64(std::bit_cast<uint64_t>(d)); }

std::string NumericBytes(int16_t ndigits, int16_t weight, uint16_t sign, uint16_t dscale,
                         std::initializer_list<uint16_t> digits) {
  std::string out = Be16(ndigits) + Be16(weight) + Be16(sign) + Be16(dscale);
  for (uint16_t d : digits) out += Be16(d);
  return out;
}

// array_send's format: ndim, has-NULLs flag, element type, (length, lower bound) per
// dimension, then each element as its length (-1: NULL) and bytes.
std::string BinaryArray(uint32_t element_oid, const std::vector<int32_t>& dims,
                        const std::vector<std::optional<std::string>>& elements,
                        int32_t lower_bound = 1) {
  bool has_nulls = false;
  for (const auto& element : elements) has_nulls |= !element.has_value();
  std::string out =
      Be32(static_cast<uint32_t>(dims.size())) + Be32(has_nulls ? 1 : 0) + Be32(element_oid);
  for (int32_t dim : dims) {
    out += Be32(static_cast<uint32_t>(dim)) + Be32(static_cast<uint32_t>(lower_bound));
  }
  for (const auto& element : elements) {
    out += element.has_value() ? Be32(static_cast<uint32_t>(element->size())) + *element
                               : Be32(0xFFFFFFFF);
  }
  return out;
}

std::string Int4Bytes(int32_t v) { return Be32(static_cast<uint32_t>(v)); }

// What malformed binary data becomes: its bytes in base64, as a JSON string.
std::string Base64String(std::string_view bytes) {
  std::string out = "\"";
  AppendBase64(bytes, &out);
  return out + "\"";
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
  auto float4 = Float4Bytes;
  auto float8 = Float8Bytes;
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

TEST(JsonEncodingTest, BinaryFloatsAreWrittenAsPostgresqlWritesThem) {
  // float4out / float8out of PostgreSQL 15 (extra_float_digits=3): fixed notation for decimal
  // exponents in [-4, 6) (float4) or [-4, 15) (float8), and the shortest digits strictly
  // inside the rounding interval, which is not always what std::to_chars picks.
  for (const char* text :
       {"1.5", "0.0001", "1e-05", "1.5e-05", "100000000000000", "1e+15", "1.2345678901234568e+20",
        "1.2345678901234568e+17", "1e+22", "-0", "0", "123.456", "-2.3913735216263928e+16",
        "5e-324", "2.2250738585072014e-308", "1.7976931348623157e+308"}) {
    EXPECT_EQ(Binary(oid::kFloat8, Float8Bytes(std::strtod(text, nullptr))), text);
    EXPECT_EQ(Text(oid::kFloat8, text), text);
  }
  for (const char* text :
       {"1.5", "0.1", "123456", "1e+06", "1.234567e+06", "1.2345678e+07", "0.0001", "1e-05",
        "1.2345679e+20", "-1.23331296e+08", "7.7418784e+07", "3.4140282e+08", "4.0092232e+07",
        "-4.1862241e+09", "-3.8501122e+10", "1e-45", "3.4028235e+38", "-0"}) {
    EXPECT_EQ(Binary(oid::kFloat4, Float4Bytes(std::strtof(text, nullptr))), text);
  }
}

TEST(JsonEncodingTest, RandomBinaryFloatsReadBackExactly) {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 50'000; ++i) {
    const uint64_t bits = rng();
    const double d = std::bit_cast<double>(bits);
    const float f = std::bit_cast<float>(static_cast<uint32_t>(bits));
    if (std::isfinite(d)) {
      const std::string json = Binary(oid::kFloat8, Float8Bytes(d));
      ASSERT_EQ(std::strtod(json.c_str(), nullptr), d) << json;
      ASSERT_LE(json.size(), 24u) << json;
    }
    if (std::isfinite(f)) {
      const std::string json = Binary(oid::kFloat4, Float4Bytes(f));
      ASSERT_EQ(std::strtof(json.c_str(), nullptr), f) << json;
      ASSERT_LE(json.size(), 15u) << json;
    }
  }
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
// Arrays in binary form: the same JSON as their text form

struct ArrayCase {
  uint32_t array_oid;
  std::string text;    // as array_out writes it
  std::string binary;  // as array_send writes it
  std::string json;
};

TEST(JsonEncodingTest, BinaryArraysGiveTheSameJsonAsTheirText) {
  using E = std::vector<std::optional<std::string>>;
  const std::optional<std::string> null;
  const std::vector<ArrayCase> cases = {
      {1007, "{1,-2,NULL}", BinaryArray(oid::kInt4, {3}, E{Int4Bytes(1), Int4Bytes(-2), null}),
       "[1,-2,null]"},
      {1016, "{9223372036854775807,-1}",
       BinaryArray(oid::kInt8, {2}, E{Be64(0x7FFFFFFFFFFFFFFF), Be64(~uint64_t{0})}),
       "[9223372036854775807,-1]"},
      {1005, "{-32768,7}", BinaryArray(oid::kInt2, {2}, E{Be16(0x8000), Be16(7)}), "[-32768,7]"},
      {1028, "{4294967295}", BinaryArray(oid::kOid, {1}, E{Be32(0xFFFFFFFF)}), "[4294967295]"},
      {1009, R"({abc,"a \"b\" \\c","NULL","",NULL,é,"{x},"})",
       BinaryArray(oid::kText, {7}, E{"abc", R"(a "b" \c)", "NULL", "", null, "é", "{x},"}),
       R"(["abc","a \"b\" \\c","NULL","",null,"é","{x},"])"},
      {1015, R"({x,"y z"})", BinaryArray(oid::kVarchar, {2}, E{"x", "y z"}), R"(["x","y z"])"},
      {1014, R"({"ab  "})", BinaryArray(oid::kBpchar, {1}, E{"ab  "}), R"(["ab  "])"},
      {1003, "{pg_class}", BinaryArray(oid::kName, {1}, E{"pg_class"}), R"(["pg_class"])"},
      {1231, "{1.50,NaN,-0.001,NULL}",
       BinaryArray(oid::kNumeric, {4},
                   E{NumericBytes(2, 0, 0, 2, {1, 5000}), NumericBytes(0, 0, 0xC000, 0, {}),
                     NumericBytes(1, -1, 0x4000, 3, {10}), null}),
       R"(["1.50","NaN","-0.001",null])"},
      {1000, "{t,f,NULL}", BinaryArray(oid::kBool, {3}, E{Bytes({1}), Bytes({0}), null}),
       "[true,false,null]"},
      {1022, "{1.5,1e+20,0.0001,NaN,-Infinity,-0,-2.3913735216263928e+16}",
       BinaryArray(oid::kFloat8, {7},
                   E{Float8Bytes(1.5), Float8Bytes(1e20), Float8Bytes(0.0001),
                     Float8Bytes(std::numeric_limits<double>::quiet_NaN()),
                     Float8Bytes(-std::numeric_limits<double>::infinity()), Float8Bytes(-0.0),
                     Float8Bytes(-2.3913735216263928e16)}),
       R"([1.5,1e+20,0.0001,"NaN","-Infinity",-0,-2.3913735216263928e+16])"},
      {1021, "{-1.23331296e+08,0.1,1e+06,123456}",
       BinaryArray(oid::kFloat4, {4},
                   E{Float4Bytes(-1.23331296e8f), Float4Bytes(0.1f), Float4Bytes(1e6f),
                     Float4Bytes(123456.0f)}),
       "[-1.23331296e+08,0.1,1e+06,123456]"},
      {2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}",
       BinaryArray(oid::kUuid, {2},
                   E{Bytes({0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9,
                            0xbd, 0x38, 0x0a, 0x11}),
                     null}),
       R"(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",null])"},
      {1185, R"({"2024-01-02 03:04:05.123+00",infinity,"0044-03-15 00:00:00+00 BC"})",
       BinaryArray(oid::kTimestamptz, {3},
                   E{Be64(PgMicros(2024, 1, 2, 3, 4, 5, 123'000)),
                     Be64(std::numeric_limits<int64_t>::max()),
                     Be64(static_cast<uint64_t>(PgMicros(-43, 3, 15, 0, 0, 0, 0)))}),
       R"(["2024-01-02T03:04:05.123+00:00","infinity","0044-03-15 00:00:00+00 BC"])"},
      {1115, R"({"2024-01-02 03:04:05.5",-infinity})",
       BinaryArray(oid::kTimestamp, {2},
                   E{Be64(PgMicros(2024, 1, 2, 3, 4, 5, 500'000)),
                     Be64(static_cast<uint64_t>(std::numeric_limits<int64_t>::min()))}),
       R"(["2024-01-02T03:04:05.5","-infinity"])"},
      {3807, R"({"{\"a\": 1}","[1, 2]",NULL})",
       BinaryArray(oid::kJsonb, {3}, E{"\x01{\"a\": 1}", "\x01[1, 2]", null}),
       R"([{"a": 1},[1, 2],null])"},
      {199, R"({"{\"a\":1}","\"s\""})", BinaryArray(oid::kJson, {2}, E{R"({"a":1})", R"("s")"}),
       R"([{"a":1},"s"])"},
      {1182, R"({2024-01-02,infinity,"0044-03-15 BC"})",
       BinaryArray(oid::kDate, {3},
                   E{Be32(PgDays(2024, 1, 2)), Be32(0x7FFFFFFF),
                     Be32(static_cast<uint32_t>(PgDays(-43, 3, 15)))}),
       R"(["2024-01-02","infinity","0044-03-15 BC"])"},
      {1001, R"({"\\x00ff","\\x",NULL})",
       BinaryArray(oid::kBytea, {3}, E{std::string("\0\xff", 2), "", null}), R"(["AP8=","",null])"},
      // Several dimensions: nested arrays.
      {1007, "{{1,2,3},{4,NULL,6}}",
       BinaryArray(oid::kInt4, {2, 3},
                   E{Int4Bytes(1), Int4Bytes(2), Int4Bytes(3), Int4Bytes(4), null, Int4Bytes(6)}),
       "[[1,2,3],[4,null,6]]"},
      {1007, "{{{1},{2}},{{3},{4}}}",
       BinaryArray(oid::kInt4, {2, 2, 1},
                   E{Int4Bytes(1), Int4Bytes(2), Int4Bytes(3), Int4Bytes(4)}),
       "[[[1],[2]],[[3],[4]]]"},
      {1009, R"({{{a,b}},{{c,d}},{{e,f}}})",
       BinaryArray(oid::kText, {3, 1, 2}, E{"a", "b", "c", "d", "e", "f"}),
       R"([[["a","b"]],[["c","d"]],[["e","f"]]])"},
      {1007, "{{{{{{5}}}}}}", BinaryArray(oid::kInt4, {1, 1, 1, 1, 1, 1}, E{Int4Bytes(5)}),
       "[[[[[[5]]]]]]"},
      // Empty arrays have no dimensions.
      {1007, "{}", BinaryArray(oid::kInt4, {}, E{}), "[]"},
      {1009, "{}", BinaryArray(oid::kText, {}, E{}), "[]"},
      // Lower bounds other than 1 are dropped.
      {1007, "[0:1]={7,8}", BinaryArray(oid::kInt4, {2}, E{Int4Bytes(7), Int4Bytes(8)}, 0),
       "[7,8]"},
      {1009, "[-3:-2][5:5]={{a},{b}}", BinaryArray(oid::kText, {2, 1}, E{"a", "b"}, -3),
       R"([["a"],["b"]])"},
  };
  for (const ArrayCase& c : cases) {
    EXPECT_EQ(Binary(c.array_oid, c.binary), c.json) << c.text;
    EXPECT_EQ(Text(c.array_oid, c.text), c.json) << c.text;
    EXPECT_TRUE(CanDecodeBinary(c.array_oid)) << c.array_oid;
  }
  // numeric_as_number applies to the elements.
  const std::string numerics =
      BinaryArray(oid::kNumeric, {3},
                  E{NumericBytes(2, 0, 0, 2, {1, 5000}), NumericBytes(0, 0, 0xC000, 0, {}), null});
  EXPECT_EQ(Binary(1231, numerics, NumericAsNumber()), R"([1.50,"NaN",null])");
  EXPECT_EQ(Text(1231, "{1.50,NaN,NULL}", "", NumericAsNumber()), R"([1.50,"NaN",null])");
}

TEST(JsonEncodingTest, RandomArraysGiveTheSameJsonInBothForms) {
  std::mt19937 rng(5);
  for (int i = 0; i < 3'000; ++i) {
    std::vector<int32_t> dims(1 + rng() % 4);
    size_t count = 1;
    for (int32_t& dim : dims) {
      dim = 1 + static_cast<int32_t>(rng() % 3);
      count *= static_cast<size_t>(dim);
    }
    const bool strings = rng() % 2 == 0;
    std::vector<std::optional<std::string>> elements;
    std::vector<std::string> texts;  // each element's text in the array's text form
    for (size_t k = 0; k < count; ++k) {
      if (rng() % 5 == 0) {
        elements.push_back(std::nullopt);
        texts.push_back("NULL");
      } else if (strings) {
        std::string value;
        for (size_t n = rng() % 6; n > 0; --n) value.push_back("ab \"\\,{}\n\xc3\xa9"[rng() % 11]);
        std::string quoted = "\"";
        for (char ch : value) {
          if (ch == '"' || ch == '\\') quoted.push_back('\\');
          quoted.push_back(ch);
        }
        elements.push_back(value);
        texts.push_back(quoted + "\"");
      } else {
        const auto v = static_cast<int32_t>(rng());
        elements.push_back(Int4Bytes(v));
        texts.push_back(std::to_string(v));
      }
    }
    // The text form, nested as the dimensions say.
    std::string text;
    std::vector<int32_t> index(dims.size(), 0);
    text.append(dims.size(), '{');
    for (size_t k = 0; k < count; ++k) {
      text += texts[k];
      size_t closed = 0;
      for (size_t d = dims.size(); d-- > 0 && ++index[d] == dims[d];) {
        index[d] = 0;
        ++closed;
      }
      text.append(closed, '}');
      if (k + 1 < count) text += "," + std::string(closed, '{');
    }
    const uint32_t array_oid = strings ? 1009 : 1007;
    const std::string binary =
        BinaryArray(strings ? oid::kText : oid::kInt4, dims, elements, i % 3);
    ASSERT_EQ(Binary(array_oid, binary), Text(array_oid, text)) << text;
  }
}

TEST(JsonEncodingTest, MalformedBinaryArraysAreBase64) {
  using E = std::vector<std::optional<std::string>>;
  const std::string valid =
      BinaryArray(oid::kInt4, {2, 2}, E{Int4Bytes(1), Int4Bytes(2), Int4Bytes(3), std::nullopt});
  ASSERT_EQ(Binary(1007, valid), "[[1,2],[3,null]]");
  // Every cut.
  for (size_t length = 0; length < valid.size(); ++length) {
    EXPECT_EQ(Binary(1007, valid.substr(0, length)), Base64String(valid.substr(0, length)))
        << length;
  }
  auto with_int32_at = [&](size_t at, uint32_t v) {
    std::string bytes = valid;
    bytes.replace(at, 4, Be32(v));
    return bytes;
  };
  const std::string kHugeDims = Be32(2) + Be32(0) + Be32(oid::kInt4) + Be32(0x7FFFFFFF) + Be32(1) +
                                Be32(0x7FFFFFFF) + Be32(1) + Int4Bytes(4) + Int4Bytes(1);
  std::string six_huge_dims = Be32(6) + Be32(0) + Be32(oid::kInt4);
  for (int d = 0; d < 6; ++d) six_huge_dims += Be32(0x7FFFFFFF) + Be32(1);
  std::string ten_dims = Be32(10) + Be32(0) + Be32(oid::kInt4);
  for (int d = 0; d < 10; ++d) ten_dims += Be32(1) + Be32(1);
  for (const std::string& bytes : std::initializer_list<std::string>{
           valid + "x",                             // trailing bytes
           BinaryArray(oid::kInt4, {}, E{}) + "x",  // after an empty array too
           with_int32_at(0, 0xFFFFFFFF),            // ndim -1
           with_int32_at(0, 3),                     // ndim 3, but the data of 2
           with_int32_at(4, 2),                     // flags other than 0 and 1
           with_int32_at(8, oid::kInt8),            // another element type
           with_int32_at(12, 0xFFFFFFFF),           // negative dimension
           with_int32_at(12, 3),                    // more elements than there are
           with_int32_at(12, 1),                    // fewer
           with_int32_at(28, 0xFFFFFFFE),           // element length -2
           with_int32_at(28, 5),                    // element length overlapping the next
           with_int32_at(28, 0x7FFFFFFF),           // element length past the end
           with_int32_at(28, 3),                    // an int4 of 3 bytes: the whole array fails
           kHugeDims,                               // 2^62 elements in a few bytes
           six_huge_dims,                           // a product past 2^64
           ten_dims + Int4Bytes(4) + Int4Bytes(1),  // more dimensions than MAXDIM
       }) {
    EXPECT_EQ(Binary(1007, bytes), Base64String(bytes));
  }
  // A dimension of length 0 makes an empty array, whatever the others say (array_recv).
  EXPECT_EQ(Binary(1007, BinaryArray(oid::kInt4, {3, 0}, E{})), "[]");
  EXPECT_EQ(Binary(1007, BinaryArray(oid::kInt4, {0x7FFFFFFF, 0}, E{})), "[]");
}

// Hostile input: mutated arrays never crash or overrun (ASan), and always give valid JSON
// (Binary() checks): the decoded array or base64.
TEST(JsonEncodingTest, RandomMutationsOfBinaryArraysGiveValidJson) {
  using E = std::vector<std::optional<std::string>>;
  const std::vector<std::pair<uint32_t, std::string>> arrays = {
      {1007,
       BinaryArray(oid::kInt4, {2, 2}, E{Int4Bytes(1), Int4Bytes(2), std::nullopt, Int4Bytes(4)})},
      {1009, BinaryArray(oid::kText, {3}, E{"a\"b", "", std::nullopt})},
      {3807, BinaryArray(oid::kJsonb, {1, 2}, E{"\x01{\"a\": [1]}", "\x01null"})},
      {1231, BinaryArray(oid::kNumeric, {1}, E{NumericBytes(2, 0, 0, 2, {1, 5000})})},
      {1185, BinaryArray(oid::kTimestamptz, {1}, E{Be64(0)})},
  };
  const std::vector<std::string> special = {Be32(0xFFFFFFFF), Be32(0x7FFFFFFF), Be32(0), Be32(6),
                                            Be32(7)};
  std::mt19937 rng(13);
  int decoded = 0;
  for (int i = 0; i < 20'000; ++i) {
    const auto& [array_oid, valid] = arrays[rng() % arrays.size()];
    std::string bytes = valid;
    for (int m = 1 + static_cast<int>(rng() % 3); m > 0; --m) {
      const size_t at = rng() % (bytes.size() + 1);
      switch (rng() % 4) {
        case 0:
          if (at < bytes.size()) bytes[at] = static_cast<char>(rng());
          break;
        case 1:
          bytes.insert(at, 1, static_cast<char>(rng()));
          break;
        case 2:
          bytes.erase(at, 1 + rng() % 4);
          break;
        case 3: {
          const std::string& s = special[rng() % special.size()];
          if (at + 4 <= bytes.size()) bytes.replace(at, 4, s);
          break;
        }
      }
    }
    const std::string json = Binary(array_oid, bytes);
    if (json[0] == '[') ++decoded;
  }
  EXPECT_GT(decoded, 100);  // some mutations keep the array well-formed
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
