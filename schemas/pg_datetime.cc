#include "schemas/pg_datetime.h"

#include <limits>

#include "schemas/ascii.h"

namespace pgflow {
namespace {

constexpr int64_t kUsPerSecond = 1'000'000;
constexpr int64_t kUsPerDay = 86'400 * kUsPerSecond;
// Days from 1970-01-01 to 2000-01-01, the epoch of PostgreSQL's binary dates and timestamps.
constexpr int64_t kPgEpochDays = 10'957;

struct CivilDate {
  int64_t year;  // proleptic Gregorian, astronomical numbering (0 is 1 BC)
  int month;     // 1..12
  int day;       // 1..31
};

// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant, "chrono-Compatible
// Low-Level Date Algorithms", civil_from_days).
CivilDate CivilFromDays(int64_t days) {
  days += 719'468;
  const int64_t era = (days >= 0 ? days : days - 146'096) / 146'097;
  const int64_t doe = days - era * 146'097;                                      // [0, 146096]
  const int64_t yoe = (doe - doe / 1'460 + doe / 36'524 - doe / 146'096) / 365;  // [0, 399]
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                   // [0, 365]
  const int64_t mp = (5 * doy + 2) / 153;                                        // [0, 11]
  const int day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  const int month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  return CivilDate{yoe + era * 400 + (month <= 2 ? 1 : 0), month, day};
}

// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant, "chrono-Compatible
// Low-Level Date Algorithms", days_from_civil).
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146'097 + doe - 719'468;
}

// Splits microseconds into whole days (rounded toward minus infinity) and the microseconds
// into that day, without overflowing at the ends of the int64 range.
void SplitDays(int64_t us, int64_t* days, int64_t* us_of_day) {
  *days = us / kUsPerDay;
  *us_of_day = us % kUsPerDay;
  if (*us_of_day < 0) {
    *us_of_day += kUsPerDay;
    --*days;
  }
}

// "HH:MM:SS" and, when `us` is not zero, "." and the microseconds: six digits when
// `trim` is false, else without trailing zeros as PostgreSQL prints them.
void AppendTimeOfDay(int64_t us_of_day, bool trim, std::string* out) {
  const int64_t seconds = us_of_day / kUsPerSecond;
  int64_t us = us_of_day % kUsPerSecond;
  AppendZeroPadded(seconds / 3600, 2, out);
  out->push_back(':');
  AppendZeroPadded(seconds / 60 % 60, 2, out);
  out->push_back(':');
  AppendZeroPadded(seconds % 60, 2, out);
  if (us == 0) return;
  out->push_back('.');
  int width = 6;
  if (trim) {
    while (us % 10 == 0) {
      us /= 10;
      --width;
    }
  }
  AppendZeroPadded(us, width, out);
}

// A date as PostgreSQL's ISO DateStyle prints it: "2024-01-02", BC years as "0044-03-15 BC"
// (the BC suffix is left for the caller to add after the time, if any). Returns whether
// the date is BC.
bool AppendDatePart(int64_t unix_days, std::string* out) {
  const CivilDate date = CivilFromDays(unix_days);
  const bool bc = date.year <= 0;
  AppendZeroPadded(bc ? 1 - date.year : date.year, 4, out);
  out->push_back('-');
  AppendZeroPadded(date.month, 2, out);
  out->push_back('-');
  AppendZeroPadded(date.day, 2, out);
  return bc;
}

// Walks the text of a timestamp, for AppendIsoFromPgTimestamp and its inverse: each step
// returns false, leaving the position where the text stopped matching, when it does not match.
class TimestampCursor {
 public:
  explicit TimestampCursor(std::string_view s) : s_(s) {}

  size_t pos() const { return i_; }
  bool AtEnd() const { return i_ == s_.size(); }

  // `count` ASCII digits.
  bool Digits(size_t count) {
    for (size_t k = 0; k < count; ++k, ++i_) {
      if (i_ >= s_.size() || !IsAsciiDigit(s_[i_])) return false;
    }
    return true;
  }

  bool Literal(char c) {
    if (i_ >= s_.size() || s_[i_] != c) return false;
    ++i_;
    return true;
  }

  // "YYYY-MM-DD" (four or more year digits), `separator`, "HH:MM:SS" and an optional fraction
  // ("." and one or more digits). *date_end is where the date ends (at the separator).
  bool DateAndTime(char separator, size_t* date_end) {
    while (i_ < s_.size() && IsAsciiDigit(s_[i_])) ++i_;
    if (i_ < 4) return false;
    if (!Literal('-') || !Digits(2) || !Literal('-') || !Digits(2)) return false;
    *date_end = i_;
    if (!Literal(separator)) return false;
    if (!Digits(2) || !Literal(':') || !Digits(2) || !Literal(':') || !Digits(2)) return false;
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      const size_t fraction_start = i_;
      while (i_ < s_.size() && IsAsciiDigit(s_[i_])) ++i_;
      if (i_ == fraction_start) return false;
    }
    return true;
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

void AppendPgDate(int32_t pg_days, std::string* out) {
  if (pg_days == std::numeric_limits<int32_t>::min()) {
    out->append("-infinity");
  } else if (pg_days == std::numeric_limits<int32_t>::max()) {
    out->append("infinity");
  } else if (AppendDatePart(pg_days + kPgEpochDays, out)) {
    out->append(" BC");
  }
}

void AppendPgTimestampAsIso(int64_t pg_us, bool with_zone, std::string* out) {
  if (pg_us == std::numeric_limits<int64_t>::min()) {
    out->append("-infinity");
    return;
  }
  if (pg_us == std::numeric_limits<int64_t>::max()) {
    out->append("infinity");
    return;
  }
  int64_t days;
  int64_t us_of_day;
  SplitDays(pg_us, &days, &us_of_day);
  const bool bc = AppendDatePart(days + kPgEpochDays, out);
  out->push_back(bc ? ' ' : 'T');
  AppendTimeOfDay(us_of_day, /*trim=*/true, out);
  if (with_zone) out->append(bc ? "+00" : "+00:00");
  if (bc) out->append(" BC");
}

bool AppendIsoFromPgTimestamp(std::string_view s, bool with_zone, std::string* out) {
  TimestampCursor c(s);
  size_t date_end = 0;
  if (!c.DateAndTime(' ', &date_end)) return false;
  bool hour_only_offset = false;
  if (with_zone) {
    if (!c.Literal('+') && !c.Literal('-')) return false;
    if (!c.Digits(2)) return false;
    if (c.AtEnd()) {
      hour_only_offset = true;
    } else {
      if (!c.Literal(':') || !c.Digits(2)) return false;
      if (!c.AtEnd() && (!c.Literal(':') || !c.Digits(2))) return false;
    }
  }
  if (!c.AtEnd()) return false;
  out->append(s.substr(0, date_end));
  out->push_back('T');
  out->append(s.substr(date_end + 1));
  if (hour_only_offset) out->append(":00");
  return true;
}

bool AppendPgTimestampFromIso(std::string_view s, bool with_zone, std::string* out) {
  TimestampCursor c(s);
  size_t date_end = 0;
  if (!c.DateAndTime('T', &date_end)) return false;
  const size_t n = s.size();
  const size_t time_end = c.pos();
  size_t offset_end = n;
  if (with_zone) {
    if (!c.Literal('+') && !c.Literal('-')) return false;
    if (!c.Digits(2) || !c.Literal(':') || !c.Digits(2)) return false;
    if (!c.AtEnd() && (!c.Literal(':') || !c.Digits(2))) return false;
    // "+05:00" is PostgreSQL's "+05"; "+05:30" and "+00:19:32" stay as they are.
    if (n - time_end == 6 && s.substr(n - 3) == ":00") offset_end = n - 3;
  }
  if (!c.AtEnd()) return false;
  out->append(s.substr(0, date_end));
  out->push_back(' ');
  out->append(s.substr(date_end + 1, offset_end - date_end - 1));
  return true;
}

void AppendIsoTimestamp(int64_t unix_us, std::string* out) {
  int64_t days;
  int64_t us_of_day;
  SplitDays(unix_us, &days, &us_of_day);
  const CivilDate date = CivilFromDays(days);
  // ISO 8601 expanded years: astronomical numbering, '-' before years below 0.
  if (date.year < 0) out->push_back('-');
  AppendZeroPadded(date.year < 0 ? -date.year : date.year, 4, out);
  out->push_back('-');
  AppendZeroPadded(date.month, 2, out);
  out->push_back('-');
  AppendZeroPadded(date.day, 2, out);
  out->push_back('T');
  AppendTimeOfDay(us_of_day, /*trim=*/false, out);
  out->push_back('Z');
}

// The largest year, either side of year 0, whose microseconds since 1970 fit in an int64.
constexpr int64_t kMaxIsoYear = 290000;

bool ParseIsoTimestamp(std::string_view s, int64_t* unix_us) {
  size_t i = 0;
  bool negative = false;
  if (i < s.size() && s[i] == '-') {
    negative = true;
    ++i;
  }
  auto number = [&](size_t min_digits, size_t max_digits, int64_t* out) {
    size_t start = i;
    *out = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < max_digits) {
      *out = *out * 10 + (s[i++] - '0');
    }
    return i - start >= min_digits;
  };
  auto literal = [&](char c) {
    if (i >= s.size() || s[i] != c) return false;
    ++i;
    return true;
  };
  int64_t year, month, day, hour, minute, second;
  if (!number(4, 9, &year) || !literal('-') || !number(2, 2, &month) || !literal('-') ||
      !number(2, 2, &day) || !literal('T') || !number(2, 2, &hour) || !literal(':') ||
      !number(2, 2, &minute) || !literal(':') || !number(2, 2, &second)) {
    return false;
  }
  int64_t micros = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    int64_t fraction = 0;
    const size_t start = i;
    if (!number(1, 6, &fraction)) return false;
    for (size_t digits = i - start; digits < 6; ++digits) fraction *= 10;
    micros = fraction;
  }
  // Past about 290,000 years from 1970 the microseconds leave int64 (PostgreSQL's own range
  // ends at 294,276 AD, measured from 2000).
  if (!literal('Z') || i != s.size() || year > kMaxIsoYear || month < 1 || month > 12 || day < 1 ||
      day > 31 || hour > 23 || minute > 59 || second > 60) {
    return false;
  }
  const int64_t days = DaysFromCivil(negative ? -year : year, month, day);
  *unix_us = ((days * 24 + hour) * 60 + minute) * 60'000'000 + second * 1'000'000 + micros;
  return true;
}

}  // namespace pgflow
