#pragma once

// The row predicate of the `filter` transform, written like a SQL WHERE clause:
//
//   status = 'paid' and total > 10
//   region in ('eu', 'uk') or not (amount between 1 and 5)
//   email like '%@example.com' and deleted_at is null
//   attrs->>'color' = 'red' and old.status <> status and changed(total)
//
// Columns name the new row (`status`) or the old one (`old.status`); `col->'a'->>'b'` reads a
// json/jsonb column's path. Values compare by the column's PostgreSQL type: numbers (int2/4/8,
// float4/8, numeric, oid) as numbers, timestamps and dates as instants, booleans as booleans,
// everything else as text. NULL follows SQL: a comparison with NULL is unknown, and a row is
// kept only when the predicate is true.
//
// Parse checks the syntax only (no catalog: `pgflow validate` needs no database); a column the
// table lacks is an error when the predicate is first evaluated on that table's rows.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/change.h"

namespace pgflow {

class FilterExpression {
 public:
  struct Node;
  // Parses `text`; the error says what is wrong and at which character.
  static absl::StatusOr<std::shared_ptr<const FilterExpression>> Parse(std::string_view text);

  // A row, as the predicate sees it: the table, the new row and the old one (either may be
  // empty: an insert has no old row, a delete no new one; an old row may be the key only).
  struct Rows {
    const TableSchema* table = nullptr;
    const Row* after = nullptr;
    const Row* before = nullptr;
    BeforeKind before_kind = BeforeKind::kNone;
  };
  // Whether the predicate holds for `rows` (unknown counts as false). An error names a column
  // the table lacks.
  absl::StatusOr<bool> Matches(const Rows& rows) const;

  // The columns the predicate reads, `old.` ones included, without the prefix.
  const std::vector<std::string>& columns() const { return columns_; }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
  std::shared_ptr<const Node> root_;
  std::vector<std::string> columns_;
};

}  // namespace pgflow
