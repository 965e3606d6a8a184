#pragma once

// Templates over a change, as `set` and `route` write them: "orders-{region}", "{schema}.{table}",
// "{commit_ts}". A placeholder is an event field (schema, table, op, lsn, commit_ts, xid) or a
// column of the row; `{{` and `}}` are literal braces. A column that is NULL reads as the empty
// string; one whose value the stream did not send (an unchanged TOASTed value) makes the
// result unknown.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/change.h"

namespace pgflow {

class Template {
 public:
  // Errors name the character where the template goes wrong (an unclosed brace, an empty name).
  static absl::StatusOr<Template> Parse(std::string_view text);

  // The columns the template reads (not the event fields), for checks against a table.
  std::vector<std::string> Columns() const;
  // Whether the template reads no column: the same text for every row of a table.
  bool RowIndependent() const { return Columns().empty(); }

  // The text for `change`, reading columns from `row` (of change.table). nullopt when a column
  // it reads was not sent. FailedPrecondition when the table lacks a column it reads.
  absl::StatusOr<std::optional<std::string>> Expand(const Change& change, const Row& row) const;

  const std::string& text() const { return text_; }

 private:
  enum class Field { kLiteral, kColumn, kSchema, kTable, kOp, kLsn, kCommitTs, kXid };
  struct Part {
    Field field;
    std::string text;  // the literal, or the column's name
  };
  std::string text_;
  std::vector<Part> parts_;
};

}  // namespace pgflow
