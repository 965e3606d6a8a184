#pragma once

// Character tests that the JSON text, the JSON encoding and its inverse, and
// the PostgreSQL formats beside them share: ASCII only, no locale (std::isdigit depends on it),
// inline because they run once per byte.

#include <cstddef>

namespace pgflow {

inline bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }

// JSON's white space (RFC 8259): space, tab, line feed, carriage return.
inline bool IsJsonSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// The value of hexadecimal digit `c` (either case); -1 when `c` is not one.
inline int HexDigitValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The hexadecimal digits, lower case, by value.
inline constexpr char kLowerHexDigits[] = "0123456789abcdef";

}  // namespace pgflow
