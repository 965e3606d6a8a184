#pragma once

// `pgflow verify`: proves a PostgreSQL target holds the same rows as the source, comparing
// each table range by range (key ranges of about equal row counts, each counted and hashed on
// both sides at once: sinks/postgres/README.md, "pgflow verify"); only the ranges that differ
// are reported. Run it when the target has caught up (writes paused, or after
// `pgflow run --until <lsn>`): rows still in flight show up as differences.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/table_ref.h"

namespace pgflow {

struct VerifyOptions {
  std::string source_url;
  std::string target_url;
  std::vector<TableRef> tables;  // "schema.*" allowed
  std::string target_schema;     // empty: the source's schema name
  int ranges = 64;               // key ranges per table
  int jobs = 1;                  // ranges compared at once, each over a pair of connections
  bool skip_keyless = false;     // keyless_tables: skip: tables without a key are not replicated
  // Also compare each table's and its sequences' owner and grants (roles: copy), the grants of
  // pgflow's run roles excepted (sinks/postgres/privileges.h).
  bool compare_privileges = true;
  // An exported snapshot of the source (`pgflow verify --live`, cutover/held_point.h): the
  // source is read as of it, on every connection; empty: as of each query.
  std::string source_snapshot;
};

struct RangeDifference {
  std::string table;
  std::string range;  // e.g. "(id) > (1000) AND (id) <= (2000)"
  int64_t source_rows = 0;
  int64_t target_rows = 0;
};

struct VerifyReport {
  int64_t tables = 0;     // named or found, compared or not
  int64_t identical = 0;  // tables compared and found identical
  int64_t different = 0;  // tables compared and found different
  int64_t rows = 0;       // on the source
  std::vector<RangeDifference> differences;
  // Tables not compared, each with its reason: missing on the target, or in the source (a
  // table named that does not exist), or a comparison that failed.
  std::vector<std::string> problems;
  std::vector<std::string> skipped;  // tables the pipeline does not replicate (no key, skip)
  int64_t privileges_compared = 0;   // tables and sequences whose owner and grants were compared
  // Each difference of owner or grants: "public.orders: owner app on the source, flow on the
  // target".
  std::vector<std::string> privilege_differences;
  // Objects whose owner and grants were not compared because the copy leaves them as they are
  // (CopiesPrivilegesOf: neither a run role nor the source's owner owns them in the target), each
  // "public.orders: owned by postgres in the target, app in the source: not compared". Notes,
  // not differences: ok() does not look at them.
  std::vector<std::string> privilege_notes;
  int64_t not_compared() const { return static_cast<int64_t>(problems.size()); }
  // Every table was compared, and is identical: the only outcome that proves anything.
  bool ok() const {
    return differences.empty() && problems.empty() && privilege_differences.empty();
  }
  // "identical (3 tables, 1200 rows)", or "DIFFERENT: 1 identical, 1 different, 1 not compared
  // (of 3 tables; 1200 rows compared), 2 owner or grant differences".
  std::string Summary() const;
};

// How far the comparison of one table has come; told after every range.
struct VerifyProgress {
  std::string table;  // "schema.table"
  int ranges_done = 0;
  int ranges_total = 0;
  int64_t rows = 0;  // source rows compared so far
};

// Compares every table. `finished` is told one line per table as it finishes, `progress`
// (may be empty) where the current table stands, from the thread that compared the range.
absl::StatusOr<VerifyReport> Verify(
    const VerifyOptions& options, const std::function<void(const std::string&)>& finished,
    const std::function<void(const VerifyProgress&)>& progress = {});

}  // namespace pgflow
