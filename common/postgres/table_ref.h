#pragma once

// Names of tables as a pipeline file, `--tables` and pgflow's own state write them:
// "schema.table", "schema.*" for every table of a schema (present and future), and quoted names
// for anything else, PostgreSQL style ("My Schema"."Order"). The one parser of such names.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace pgflow {

struct TableRef {
  std::string schema;
  std::string table;  // "*" for every table of the schema

  bool is_schema() const { return table == "*"; }
  // "schema.table", unquoted: for messages and as a map key.
  std::string ToString() const { return schema + "." + table; }
  // The form ParseTableRef reads back: a name is quoted when it is not all lower-case letters,
  // digits and '_' ("My Schema"."Order", public.orders, app.*).
  std::string Quoted() const;
  // Whether this reference takes in `table` (itself, or its whole schema).
  bool Covers(const TableRef& table) const {
    return schema == table.schema && (is_schema() || this->table == table.table);
  }
  friend bool operator==(const TableRef&, const TableRef&) = default;
};

// Parses "schema.table", "schema.*" or quoted names. Unquoted names are folded to lower case,
// as PostgreSQL folds them; quoted ones keep their case ("" is a quote inside). The error
// message says what is wrong and has no position (the caller adds where the text came from).
absl::StatusOr<TableRef> ParseTableRef(std::string_view text);

// Table names as two text[] literals, schemas and names ('*' for a whole schema), for
// `unnest($1::text[], $2::text[]) AS r(nsp, rel)`.
std::pair<std::string, std::string> TableRefArrays(const std::vector<TableRef>& tables);

}  // namespace pgflow
