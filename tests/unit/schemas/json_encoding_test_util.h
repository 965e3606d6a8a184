#pragma once

// Helpers for the tests of the JSON encoding and of the formats beside it (json_encoding_test,
// pg_*_test, base64_test, json_text_test, json_decoding_test): encoding a value and checking
// that the result is valid JSON by a parser that is not pgflow's own (nlohmann), building
// binary send formats byte by byte, and a calendar that shares no arithmetic with the code
// under test.

#include <bit>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "engine/change.h"
#include "schemas/base64.h"
#include "schemas/json_encoding.h"
#include "schemas/json_text.h"
#include "schemas/pg_datetime.h"
#include "schemas/table_schema.h"

namespace pgflow {

inline constexpr int64_t kUsPerDay = 86'400'000'000;
// Days from 1970-01-01 to 2000-01-01.
inline constexpr int64_t kPgEpochDays = 10'957;

// Encodes `value` after existing output (AppendJsonValue must append), checks the result is
// valid JSON and returns it.
inline std::string Encode(const Value& value, std::string_view type_name = "",
                          JsonOptions options = {}) {
  std::string out = "<prefix>";
  AppendJsonValue(value, type_name, options, &out);
  EXPECT_EQ(out.substr(0, 8), "<prefix>");
  out.erase(0, 8);
  EXPECT_TRUE(nlohmann::json::accept(out)) << "not valid JSON: " << out;
  return out;
}

inline std::string Text(uint32_t type_oid, std::string text, std::string_view type_name = "",
                        JsonOptions options = {}) {
  return Encode(Value::Text(type_oid, std::move(text)), type_name, options);
}

inline std::string Binary(uint32_t type_oid, std::string bytes, JsonOptions options = {}) {
  return Encode(Value{ValueKind::kBinary, type_oid, std::move(bytes)}, "", options);
}

inline JsonOptions NumericAsNumber() {
  JsonOptions options;
  options.numeric_as_number = true;
  return options;
}

inline std::string JsonString(std::string_view text) {
  std::string out;
  AppendJsonString(text, &out);
  EXPECT_TRUE(nlohmann::json::accept(out)) << "not valid JSON: " << out;
  return out;
}

inline std::string Base64(std::string_view bytes) {
  std::string out;
  AppendBase64(bytes, &out);
  return out;
}

inline std::string IsoTimestamp(int64_t unix_us) {
  std::string out;
  AppendIsoTimestamp(unix_us, &out);
  EXPECT_TRUE(nlohmann::json::accept("\"" + out + "\"")) << out;
  return out;
}

// Big-endian byte builders for binary send formats.
inline std::string Be16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }
inline std::string Be32(uint32_t v) {
  return Be16(static_cast<uint16_t>(v >> 16)) + Be16(v & 0xFFFF);
}
inline std::string Be64(uint64_t v) {
  return Be32(static_cast<uint32_t>(v >> 32)) + Be32(static_cast<uint32_t>(v));
}
inline std::string Bytes(std::initializer_list<int> bytes) {
  std::string out;
  for (int b : bytes) out.push_back(static_cast<char>(b));
  return out;
}

inline std::string Float4Bytes(float f) { return Be32(std::bit_cast<uint32_t>(f)); }
inline std::string Float8Bytes(double d) { return Be64(std::bit_cast<uint64_t>(d)); }

inline std::string NumericBytes(int16_t ndigits, int16_t weight, uint16_t sign, uint16_t dscale,
                                std::initializer_list<uint16_t> digits) {
  std::string out = Be16(ndigits) + Be16(weight) + Be16(sign) + Be16(dscale);
  for (uint16_t d : digits) out += Be16(d);
  return out;
}

// array_send's format: ndim, has-NULLs flag, element type, (length, lower bound) per
// dimension, then each element as its length (-1: NULL) and bytes.
inline std::string BinaryArray(uint32_t element_oid, const std::vector<int32_t>& dims,
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

inline std::string Int4Bytes(int32_t v) { return Be32(static_cast<uint32_t>(v)); }

// What malformed binary data becomes: its bytes in base64, as a JSON string.
inline std::string Base64String(std::string_view bytes) {
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
inline int32_t PgDays(int64_t year, int month, int day) {
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

inline int64_t PgMicros(int64_t year, int month, int day, int hour, int minute, int second,
                        int64_t micros) {
  return PgDays(year, month, day) * kUsPerDay +
         ((hour * 60 + minute) * 60 + second) * int64_t{1'000'000} + micros;
}

}  // namespace pgflow
