#include "schemas/pg_datetime.h"

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "schemas/json_encoding.h"
#include "schemas/table_schema.h"
#include "tests/unit/schemas/json_encoding_test_util.h"

namespace pgflow {
namespace {

TEST(PgDatetimeTest, TimestampsBecomeIso8601) {
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

TEST(PgDatetimeTest, TimestampsThatAreNotIsoStayAsTheyAre) {
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

TEST(PgDatetimeTest, BinaryDate) {
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

TEST(PgDatetimeTest, BinaryDateAgreesWithACalendarOverThousandsOfYears) {
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

TEST(PgDatetimeTest, BinaryTimestamp) {
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

TEST(PgDatetimeTest, BinaryTimestamptz) {
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

TEST(PgDatetimeTest, BinaryAndTextFormsOfATimestampGiveTheSameJson) {
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
// The functions themselves: text, without JSON's quotes

std::string PgDate(int32_t pg_days) {
  std::string out = "x";
  AppendPgDate(pg_days, &out);
  return out.substr(1);
}

std::string PgTimestampAsIso(int64_t pg_us, bool with_zone) {
  std::string out = "x";
  AppendPgTimestampAsIso(pg_us, with_zone, &out);
  return out.substr(1);
}

// The converted text, or "<declined>" (and then nothing may have been appended).
std::string IsoFromPg(std::string_view text, bool with_zone) {
  std::string out = "x";
  if (!AppendIsoFromPgTimestamp(text, with_zone, &out)) return out == "x" ? "<declined>" : "<?>";
  return out.substr(1);
}

std::string PgFromIso(std::string_view text, bool with_zone) {
  std::string out = "x";
  if (!AppendPgTimestampFromIso(text, with_zone, &out)) return out == "x" ? "<declined>" : "<?>";
  return out.substr(1);
}

TEST(PgDatetimeTest, AppendPgDateWritesDateOut) {
  EXPECT_EQ(PgDate(0), "2000-01-01");
  EXPECT_EQ(PgDate(PgDays(2024, 2, 29)), "2024-02-29");
  EXPECT_EQ(PgDate(PgDays(-43, 3, 15)), "0044-03-15 BC");
  EXPECT_EQ(PgDate(std::numeric_limits<int32_t>::max()), "infinity");
  EXPECT_EQ(PgDate(std::numeric_limits<int32_t>::min()), "-infinity");
}

TEST(PgDatetimeTest, AppendPgTimestampAsIso) {
  EXPECT_EQ(PgTimestampAsIso(0, false), "2000-01-01T00:00:00");
  EXPECT_EQ(PgTimestampAsIso(0, true), "2000-01-01T00:00:00+00:00");
  EXPECT_EQ(PgTimestampAsIso(PgMicros(2024, 1, 2, 3, 4, 5, 120'000), true),
            "2024-01-02T03:04:05.12+00:00");
  EXPECT_EQ(PgTimestampAsIso(PgMicros(-43, 3, 15, 12, 0, 0, 0), false), "0044-03-15 12:00:00 BC");
  EXPECT_EQ(PgTimestampAsIso(PgMicros(-43, 3, 15, 12, 0, 0, 0), true), "0044-03-15 12:00:00+00 BC");
  EXPECT_EQ(PgTimestampAsIso(std::numeric_limits<int64_t>::max(), true), "infinity");
  EXPECT_EQ(PgTimestampAsIso(std::numeric_limits<int64_t>::min(), false), "-infinity");
}

TEST(PgDatetimeTest, IsoAndPostgresqlTimestampTextConvertBothWays) {
  struct Case {
    const char* pg;
    const char* iso;
    bool with_zone;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"2024-01-02 03:04:05", "2024-01-02T03:04:05", false},
           {"2024-01-02 03:04:05.123456", "2024-01-02T03:04:05.123456", false},
           {"12345-01-01 00:00:00", "12345-01-01T00:00:00", false},
           {"2024-01-02 03:04:05.5+00", "2024-01-02T03:04:05.5+00:00", true},
           {"2024-01-02 03:04:05-03", "2024-01-02T03:04:05-03:00", true},
           {"2024-01-02 03:04:05+05:30", "2024-01-02T03:04:05+05:30", true},
           {"1890-01-01 00:00:00+00:19:32", "1890-01-01T00:00:00+00:19:32", true},
       }) {
    EXPECT_EQ(IsoFromPg(c.pg, c.with_zone), c.iso) << c.pg;
    EXPECT_EQ(PgFromIso(c.iso, c.with_zone), c.pg) << c.iso;
  }
  for (const char* pg : {"infinity", "-infinity", "0044-03-15 00:00:00 BC", "2024-01-02T03:04:05",
                         "2024-01-02 03:04:05+00", "2024-01-02 03:04", ""}) {
    EXPECT_EQ(IsoFromPg(pg, false), "<declined>") << pg;
  }
  for (const char* iso : {"infinity", "2024-01-02 03:04:05", "2024-01-02T03:04:05+00",
                          "2024-01-02T03:04:05Z", "2024-01-02T03:04:05.", ""}) {
    EXPECT_EQ(PgFromIso(iso, true), "<declined>") << iso;
  }
  EXPECT_EQ(PgFromIso("2024-01-02T03:04:05+00:00", false), "<declined>");
}

TEST(ParseIsoTimestampTest, ReadsBackWhatAppendIsoTimestampWrites) {
  std::mt19937_64 rng(41);
  // From 3000 BC to AD 9999, and around the epoch.
  const int64_t low = -156'839'184'000 * int64_t{1'000'000};
  const int64_t high = 253'402'300'799 * int64_t{1'000'000};
  for (int i = 0; i < 20'000; ++i) {
    int64_t us = low + static_cast<int64_t>(rng() % static_cast<uint64_t>(high - low));
    if (i % 4 == 0) us -= us % 1'000'000;  // whole seconds: no fraction written
    if (i % 8 == 1) us = static_cast<int64_t>(rng() % 4'000'000) - 2'000'000;
    const std::string text = IsoTimestamp(us);
    int64_t back = 0;
    ASSERT_TRUE(ParseIsoTimestamp(text, &back)) << text;
    ASSERT_EQ(back, us) << text;
  }
}

TEST(ParseIsoTimestampTest, RefusesOtherForms) {
  int64_t us = 7;
  EXPECT_TRUE(ParseIsoTimestamp("2026-11-22T11:06:17.8Z", &us));
  EXPECT_EQ(us, (1'795'345'577 * int64_t{1'000'000}) + 800'000);
  EXPECT_TRUE(ParseIsoTimestamp("2016-12-31T23:59:60Z", &us));  // a leap second, as written
  us = 7;
  for (const char* text :
       {"", "2026-11-22", "2026-11-22T11:06:17", "2026-11-22 11:06:17Z",
        "2026-11-22T11:06:17+00:00", "2026-11-22T11:06:17.Z", "2026-11-22T11:06:17.1234567Z",
        "226-11-22T11:06:17Z", "2026-13-22T11:06:17Z", "2026-00-22T11:06:17Z",
        "2026-11-32T11:06:17Z", "2026-11-22T24:06:17Z", "2026-11-22T11:60:17Z",
        "2026-11-22T11:06:61Z", "2026-11-22T11:06:17Zx", "+2026-11-22T11:06:17Z",
        // Beyond int64's microseconds (a hostile message; PostgreSQL never writes these).
        "999999999-12-31T23:59:59Z", "-999999999-01-01T00:00:00Z", "290001-01-01T00:00:00Z"}) {
    EXPECT_FALSE(ParseIsoTimestamp(text, &us)) << text;
  }
  EXPECT_EQ(us, 7);
  // The widest years it takes stay in range.
  EXPECT_TRUE(ParseIsoTimestamp("290000-12-31T23:59:59.999999Z", &us));
  EXPECT_GT(us, 0);
  EXPECT_TRUE(ParseIsoTimestamp("-290000-01-01T00:00:00Z", &us));
  EXPECT_LT(us, 0);
}

}  // namespace
}  // namespace pgflow
