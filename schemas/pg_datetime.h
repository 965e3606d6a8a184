#pragma once

// Dates and timestamps as text: PostgreSQL's forms (DateStyle=ISO, TimeZone=UTC) and ISO 8601,
// from the binary values of the send formats and from one text form to the other. Intervals,
// times and timetz have no rule of their own: their text is kept as it is.
//
// The binary values are those of the send formats: a date is int32 days since 2000-01-01, a
// timestamp int64 microseconds since 2000-01-01 00:00 (UTC for timestamptz), with the extreme
// values standing for -infinity and infinity. Dates are proleptic Gregorian; PostgreSQL
// numbers years BC from 1 ("0044-03-15 BC"), ISO 8601 astronomically (year 0 is 1 BC).
//
// The writers append to *out (never clear it), and one that returns false appends nothing.
// Thread-safety: plain functions of their arguments; any thread may call any of them.

#include <cstdint>
#include <string>
#include <string_view>

namespace pgflow {

// Appends date_out's text of the date `pg_days`: "2024-01-02", "0044-03-15 BC", "infinity",
// "-infinity".
void AppendPgDate(int32_t pg_days, std::string* out);

// Appends the timestamp (timestamptz when `with_zone`) `pg_us` as pgflow's JSON writes
// timestamps: what AppendIsoFromPgTimestamp makes of timestamp_out's text where it accepts it
// ("2024-01-02T03:04:05.5", "2024-01-02T03:04:05.5+00:00"), timestamp_out's text where it does
// not ("0044-03-15 12:00:00 BC", "0044-03-15 12:00:00+00 BC", "infinity", "-infinity"). The
// binary and the text form of a value so give the same text. Values beyond PostgreSQL's range
// give well-formed nonsense, never undefined behaviour.
void AppendPgTimestampAsIso(int64_t pg_us, bool with_zone, std::string* out);

// Rewrites timestamp_out's text "2024-01-02 03:04:05.123456[+00[:00[:00]]]" (with an offset
// when `with_zone`, without otherwise) as ISO 8601: 'T' between date and time, and an offset
// "+HH:MM[:SS]" ("+05" becomes "+05:00"). Returns false for anything else: "infinity",
// "-infinity", BC dates, and any text not of that exact form.
bool AppendIsoFromPgTimestamp(std::string_view pg_text, bool with_zone, std::string* out);

// The inverse of AppendIsoFromPgTimestamp: "2024-01-02T03:04:05.5+00:00" becomes
// "2024-01-02 03:04:05.5+00" (an offset in whole hours is written as PostgreSQL writes it;
// "+05:30" and "+00:19:32" stay as they are). Returns false for anything not of that form.
bool AppendPgTimestampFromIso(std::string_view iso, bool with_zone, std::string* out);

// Appends the UTC instant `unix_us`, microseconds since 1970-01-01 00:00, as ISO 8601:
// "2026-11-22T10:43:00.123456Z", the fraction always six digits and omitted when zero, year 0
// as "0000" and years before it as "-0001", years after 9999 with more digits. Defined for
// every int64 value.
void AppendIsoTimestamp(int64_t unix_us, std::string* out);

// Reads AppendIsoTimestamp's form back into *unix_us: "2026-11-22T10:43:00.123456Z", with four
// to nine year digits after an optional '-', and no fraction or one of one to six digits.
// Returns false, leaving *unix_us alone, for anything else, and for a month, day (1 to 31,
// whatever the month), hour, minute or second (up to 60) out of range, and for a year beyond
// +-290,000, whose microseconds since 1970 would not fit in an int64.
bool ParseIsoTimestamp(std::string_view text, int64_t* unix_us);

}  // namespace pgflow
