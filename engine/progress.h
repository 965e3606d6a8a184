#pragma once

#include <cstdint>
#include <string>

namespace pgflow {

// How far the copy of one table has come, for progress display.
struct TableProgress {
  std::string name;  // "schema.table"
  uint64_t rows = 0;
  uint64_t bytes_done = 0;   // heap bytes of the chunks copied
  uint64_t bytes_total = 0;  // heap bytes planned
  uint32_t chunks_done = 0;
  uint32_t chunks_total = 0;
};

// Figures as progress lines print them.
std::string HumanBytes(double bytes);       // 1536 -> "1.5 kB"
std::string HumanCount(uint64_t n);         // 1234567 -> "1,234,567"
std::string HumanDuration(double seconds);  // 42 -> "42s", 150 -> "2m30s", 5400 -> "1h30m"

}  // namespace pgflow
