#pragma once

// `pgflow verify`: proves a PostgreSQL target holds the same rows as the source.
//
// Each table's key space is cut into ranges on the source (ntile over the primary key, the last
// range open-ended so rows the target has beyond the source's last key are seen too); for each
// range, both sides count the rows and hash them in key order (md5 of the concatenated md5s of
// each row's text). Only the ranges that differ are reported. Run it when the target has
// caught up (writes paused, or after `pgflow run --until <lsn>`): rows still in flight show up
// as differences.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/config.h"

namespace pgflow {

struct VerifyOptions {
  std::string source_url;
  std::string target_url;
  std::vector<TableRef> tables;  // "schema.*" allowed
  std::string target_schema;     // empty: the source's schema name
  int ranges = 64;               // key ranges per table
};

struct RangeDifference {
  std::string table;
  std::string range;  // e.g. "(id) > (1000) AND (id) <= (2000)"
  int64_t source_rows = 0;
  int64_t target_rows = 0;
};

struct VerifyReport {
  int64_t tables = 0;
  int64_t rows = 0;  // on the source
  std::vector<RangeDifference> differences;
  std::vector<std::string> problems;  // tables missing on the target, without a key, ...
  bool ok() const { return differences.empty() && problems.empty(); }
};

// Compares every table; `progress` is told one line per table as it finishes.
absl::StatusOr<VerifyReport> Verify(const VerifyOptions& options,
                                    const std::function<void(const std::string&)>& progress);

}  // namespace pgflow
