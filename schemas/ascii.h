#pragma once

// Character tests the JSON reader, the JSON encoding and its inverse share: ASCII only, no
// locale (std::isdigit depends on it), inline because they run once per byte; and the one
// UTF-8 scanner they share.

#include <cstddef>

namespace pgflow {

// Looks at the sequence starting with the non-ASCII byte p[0] (n >= 1 bytes available).
// Returns its length and sets *valid when it is a well-formed UTF-8 sequence (Unicode table
// 3-7: no overlong forms, no surrogates, nothing above U+10FFFF). Otherwise sets *valid to
// false and returns the length of the maximal ill-formed subpart, which is replaced by one
// U+FFFD (Unicode's recommended practice). Defined in json_encoding.cc.
size_t ScanUtf8(const unsigned char* p, size_t n, bool* valid);

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

}  // namespace pgflow
