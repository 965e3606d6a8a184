#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgflow {

// A position in PostgreSQL's write-ahead log. Printed and parsed in PostgreSQL's own
// "X/X" form (upper 32 bits, "/", lower 32 bits, both hexadecimal).
struct Lsn {
  uint64_t value = 0;

  constexpr Lsn() = default;
  constexpr explicit Lsn(uint64_t v) : value(v) {}

  constexpr bool IsValid() const { return value != 0; }
  std::string ToString() const;
  // Returns nullopt when `text` is not of the "X/X" form.
  static std::optional<Lsn> Parse(std::string_view text);

  friend constexpr auto operator<=>(Lsn a, Lsn b) = default;
};

// Appends lsn.ToString() to *out without allocating a temporary.
void AppendLsn(Lsn lsn, std::string* out);

}  // namespace pgflow
