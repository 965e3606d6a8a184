#include "schemas/pg_float.h"

#include <bit>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "schemas/json_encoding.h"
#include "schemas/table_schema.h"
#include "tests/unit/schemas/json_encoding_test_util.h"

namespace pgflow {
namespace {

TEST(PgFloatTest, BinaryFloats) {
  auto float4 = Float4Bytes;
  auto float8 = Float8Bytes;
  EXPECT_EQ(Binary(oid::kFloat4, float4(1.5f)), "1.5");
  EXPECT_EQ(Binary(oid::kFloat4, float4(0.1f)), "0.1");
  EXPECT_EQ(Binary(oid::kFloat4, float4(-3.4028235e38f)), "-3.4028235e+38");
  EXPECT_EQ(Binary(oid::kFloat8, float8(0.1)), "0.1");
  EXPECT_EQ(Binary(oid::kFloat8, float8(-2.5e-300)), "-2.5e-300");
  EXPECT_EQ(Binary(oid::kFloat8, float8(1e100)), "1e+100");
  EXPECT_EQ(nlohmann::json::parse(Binary(oid::kFloat8, float8(1.0 / 3))).get<double>(), 1.0 / 3);
  EXPECT_EQ(Binary(oid::kFloat8, float8(std::numeric_limits<double>::quiet_NaN())), R"("NaN")");
  EXPECT_EQ(Binary(oid::kFloat8, float8(std::numeric_limits<double>::infinity())), R"("Infinity")");
  EXPECT_EQ(Binary(oid::kFloat4, float4(-std::numeric_limits<float>::infinity())),
            R"("-Infinity")");
  EXPECT_EQ(Binary(oid::kFloat4, float4(std::numeric_limits<float>::quiet_NaN())), R"("NaN")");
  EXPECT_EQ(Binary(oid::kFloat8, float4(1.5f)), R"("P8AAAA==")");  // wrong length
}

TEST(PgFloatTest, BinaryFloatsAreWrittenAsPostgresqlWritesThem) {
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

TEST(PgFloatTest, RandomBinaryFloatsReadBackExactly) {
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

TEST(PgFloatTest, TextIsFloat8outsAndFloat4outs) {
  auto float8 = [](double d) {
    std::string out = "x";
    AppendFloat8Text(d, &out);
    return out.substr(1);
  };
  auto float4 = [](float f) {
    std::string out = "x";
    AppendFloat4Text(f, &out);
    return out.substr(1);
  };
  // Not JSON: the non-finite values are PostgreSQL's words, unquoted.
  EXPECT_EQ(float8(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(float8(std::numeric_limits<double>::infinity()), "Infinity");
  EXPECT_EQ(float8(-std::numeric_limits<double>::infinity()), "-Infinity");
  EXPECT_EQ(float4(std::numeric_limits<float>::quiet_NaN()), "NaN");
  EXPECT_EQ(float4(-std::numeric_limits<float>::infinity()), "-Infinity");
  EXPECT_EQ(float8(-0.0), "-0");
  EXPECT_EQ(float8(100000000000000.0), "100000000000000");
  EXPECT_EQ(float8(1e15), "1e+15");
  EXPECT_EQ(float8(0.0001), "0.0001");
  EXPECT_EQ(float8(1e-5), "1e-05");
  EXPECT_EQ(float4(123456.0f), "123456");
  EXPECT_EQ(float4(1e6f), "1e+06");
  EXPECT_EQ(float4(-123331296.0f), "-1.23331296e+08");  // not to_chars' tie, 1.233313e+08
}

// The encoding writes a finite float's text as a JSON number and quotes the rest.
TEST(PgFloatTest, TheEncodingWritesTheText) {
  std::mt19937_64 rng(31);
  for (int i = 0; i < 5'000; ++i) {
    const uint64_t bits = rng();
    const double d = std::bit_cast<double>(bits);
    std::string text;
    AppendFloat8Text(d, &text);
    ASSERT_EQ(Binary(oid::kFloat8, Float8Bytes(d)), std::isfinite(d) ? text : "\"" + text + "\"");
    const float f = std::bit_cast<float>(static_cast<uint32_t>(bits));
    text.clear();
    AppendFloat4Text(f, &text);
    ASSERT_EQ(Binary(oid::kFloat4, Float4Bytes(f)), std::isfinite(f) ? text : "\"" + text + "\"");
  }
}

}  // namespace
}  // namespace pgflow
