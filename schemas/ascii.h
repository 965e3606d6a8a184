#pragma once

// Character tests and digit writing that the JSON text, the JSON encoding and its inverse, and
// the PostgreSQL formats beside them share: ASCII only, no locale (std::isdigit depends on it),
// inline because they run once per byte.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

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

// Appends each byte of `bytes` as two lower-case hexadecimal digits.
inline void AppendLowerHex(std::string_view bytes, std::string* out) {
  out->reserve(out->size() + 2 * bytes.size());
  for (const char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    out->push_back(kLowerHexDigits[byte >> 4]);
    out->push_back(kLowerHexDigits[byte & 15]);
  }
}

// `bytes` as lower-case hexadecimal digits, two a byte.
inline std::string LowerHex(std::string_view bytes) {
  std::string out;
  AppendLowerHex(bytes, &out);
  return out;
}

// Appends `value` in decimal, zero-padded on the left to at least `width` digits.
inline void AppendZeroPadded(uint64_t value, int width, std::string* out) {
  char buf[24];
  char* const end = buf + sizeof(buf);
  char* p = end;
  do {
    *--p = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (end - p < width) *--p = '0';
  out->append(p, end - p);
}

}  // namespace pgflow
