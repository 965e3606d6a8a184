#include "schemas/pg_float.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace pgflow {
namespace {

// A finite float as decimal digits: value = digits × 10^(exponent - ndigits + 1).
struct FloatDecimal {
  bool negative = false;
  char digits[24];  // no trailing zeros (but "0" for zero)
  int ndigits = 0;
  int exponent = 0;      // of the first digit
  uint64_t integer = 0;  // the digits as an integer
};

// Reads std::to_chars' scientific form "-d.ddde-XX" (at most 17 digits).
FloatDecimal ParseScientific(const char* p, const char* end) {
  FloatDecimal d;
  d.negative = *p == '-';
  if (d.negative) ++p;
  d.digits[d.ndigits++] = *p;
  d.integer = static_cast<uint64_t>(*p++ - '0');
  if (*p == '.') {
    for (++p; *p != 'e' && d.ndigits < static_cast<int>(sizeof(d.digits)); ++p) {
      d.digits[d.ndigits++] = *p;
      d.integer = d.integer * 10 + static_cast<uint64_t>(*p - '0');
    }
  }
  while (d.ndigits > 1 && d.digits[d.ndigits - 1] == '0') {
    --d.ndigits;
    d.integer /= 10;
  }
  while (p < end && *p != 'e') ++p;
  ++p;  // 'e'
  const bool negative_exponent = p < end && *p == '-';
  for (++p; p < end; ++p) d.exponent = d.exponent * 10 + (*p - '0');
  if (negative_exponent) d.exponent = -d.exponent;
  return d;
}

// Whether decimal × 10^k == odd × 2^e2, exactly (`odd` odd, `decimal` > 0).
bool DecimalEqualsDyadic(uint64_t decimal, int k, uint64_t odd, int e2) {
  const int twos = std::countr_zero(decimal);
  decimal >>= twos;
  int fives = 0;
  while (decimal % 5 == 0) {
    decimal /= 5;
    ++fives;
  }
  int odd_fives = 0;
  while (odd % 5 == 0) {
    odd /= 5;
    ++odd_fives;
  }
  return decimal == odd && twos + k == e2 && fives + k == odd_fives;
}

// Whether `d` lies exactly halfway between nonzero `f` and one of its neighbours, where
// round-to-nearest-even reads it back as `f` only because of the tie.
template <typename Float>
bool IsHalfwayToNeighbour(Float f, const FloatDecimal& d) {
  constexpr int kMantissaBits = std::numeric_limits<Float>::digits - 1;  // 23, 52
  constexpr int kBias = std::numeric_limits<Float>::max_exponent - 1;    // 127, 1023
  using Bits = std::conditional_t<sizeof(Float) == 4, uint32_t, uint64_t>;
  const auto bits = std::bit_cast<Bits>(f);
  const uint64_t fraction = bits & ((Bits{1} << kMantissaBits) - 1);
  const int biased =
      static_cast<int>((bits >> kMantissaBits) & ((1u << (sizeof(Float) == 4 ? 8 : 11)) - 1));
  // |f| = m × 2^e.
  const uint64_t m = biased == 0 ? fraction : fraction | (uint64_t{1} << kMantissaBits);
  const int e = (biased == 0 ? 1 : biased) - kBias - kMantissaBits;
  const uint64_t decimal = d.integer;
  if (decimal == 0) return false;
  const int k = d.exponent - d.ndigits + 1;
  // Equal powers of two on both sides or not equal: the common case ends here.
  const int twos = std::countr_zero(decimal) + k;
  if (twos != e - 1 && twos != e - 2) return false;
  // Above: (2m + 1) × 2^(e - 1). Below: the same distance, except at a power of two (not
  // subnormal), where the neighbour below is half as far.
  if (DecimalEqualsDyadic(decimal, k, 2 * m + 1, e - 1)) return true;
  if (fraction == 0 && biased > 1) return DecimalEqualsDyadic(decimal, k, 4 * m - 1, e - 2);
  return DecimalEqualsDyadic(decimal, k, 2 * m - 1, e - 1);
}

// float4 / float8 as float4out / float8out write them when extra_float_digits > 0 (PostgreSQL
// 12 and later, src/common/{f2s,d2s}.c): Ryu's shortest digits that read back exactly, found
// in the open interval of values that round to `f` (PostgreSQL excludes its ends, where
// reading back depends on ties being broken to even), in fixed notation when the decimal
// exponent is in [-4, 6) for float4 or [-4, 15) for float8, else as "1.5e+20".
template <typename Float>
void AppendFloat(Float f, std::string* out) {
  if (std::isnan(f)) {
    out->append("NaN");
    return;
  }
  if (std::isinf(f)) {
    out->append(f > 0 ? "Infinity" : "-Infinity");
    return;
  }
  constexpr bool kIsFloat4 = std::is_same_v<Float, float>;
  constexpr int kMaxDigits = std::numeric_limits<Float>::max_digits10;  // 9, 17
  constexpr int kFixedBelow = kIsFloat4 ? 6 : 15;
  char buf[64];
  std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), f, std::chars_format::scientific);
  FloatDecimal d = ParseScientific(buf, r.ptr);
  // std::to_chars accepts the interval's ends, PostgreSQL does not: the float4 123331296 is
  // 1.233313e+08 for one (a tie, broken to even) and 1.23331296e+08 for the other.
  if (f != 0 && IsHalfwayToNeighbour(f, d)) {
    // The shortest inside: the closest number of p digits is inside if any is.
    for (int p = d.ndigits + 1; p <= kMaxDigits; ++p) {
      r = std::to_chars(buf, buf + sizeof(buf), f, std::chars_format::scientific, p - 1);
      Float back;
      std::from_chars(buf, r.ptr, back, std::chars_format::scientific);
      const FloatDecimal candidate = ParseScientific(buf, r.ptr);
      if (back == f && !IsHalfwayToNeighbour(f, candidate)) {
        d = candidate;
        break;
      }
    }
  }
  // At most "-0.0000" + 17 digits, or "-d." + 16 digits + "e-308", or 17 digits + zeros.
  char text[40];
  char* w = text;
  if (d.negative) *w++ = '-';
  if (d.exponent < -4 || d.exponent >= kFixedBelow) {
    *w++ = d.digits[0];
    if (d.ndigits > 1) {
      *w++ = '.';
      w = std::copy(d.digits + 1, d.digits + d.ndigits, w);
    }
    *w++ = 'e';
    *w++ = d.exponent < 0 ? '-' : '+';
    const int exponent = d.exponent < 0 ? -d.exponent : d.exponent;
    if (exponent >= 100) *w++ = static_cast<char>('0' + exponent / 100);
    *w++ = static_cast<char>('0' + exponent / 10 % 10);
    *w++ = static_cast<char>('0' + exponent % 10);
  } else if (d.exponent < 0) {
    *w++ = '0';
    *w++ = '.';
    w = std::fill_n(w, -d.exponent - 1, '0');
    w = std::copy(d.digits, d.digits + d.ndigits, w);
  } else if (d.ndigits <= d.exponent + 1) {
    w = std::copy(d.digits, d.digits + d.ndigits, w);
    w = std::fill_n(w, d.exponent + 1 - d.ndigits, '0');
  } else {
    w = std::copy(d.digits, d.digits + d.exponent + 1, w);
    *w++ = '.';
    w = std::copy(d.digits + d.exponent + 1, d.digits + d.ndigits, w);
  }
  out->append(text, w - text);
}

}  // namespace

void AppendFloat4Text(float f, std::string* out) { AppendFloat(f, out); }

void AppendFloat8Text(double d, std::string* out) { AppendFloat(d, out); }

}  // namespace pgflow
