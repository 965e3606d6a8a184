#pragma once

// The statements the postgres sink writes rows with, built from what it knows of a target
// table (sinks/postgres/target_table.h). Plain functions: no connection, no state. Values
// never go into the text: a statement takes them as parameters $1, $2, ..., which the functions
// that take a StatementParams add to it in the order their placeholders number them.

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/change.h"
#include "sinks/postgres/statement_params.h"
#include "sinks/postgres/target_table.h"

namespace pgflow {

// Appends `v` to `array`, a text[] literal being built from "{", as one element: quoted, with
// `"` and `\` escaped, or NULL.
void AppendArrayElement(std::string* array, const Value& v);

// Several rows' values as one text[] literal per column (StatementParams::AddText each), for a
// batch sent through unnest(): value(r, j) is row r's value of column j. False, and `arrays` is
// not to be used, when the batch is better sent as a VALUES list: a single row, a table whose
// types do not cast from text as they read their input (TargetTable::text_casts), or a value in
// binary form (no text to put in an array).
template <typename ValueAt>
bool TextArrays(const TargetTable& table, size_t rows, size_t columns, ValueAt value,
                std::vector<std::string>* arrays) {
  if (rows < 2 || !table.text_casts) return false;
  arrays->assign(columns, "{");
  for (size_t r = 0; r < rows; ++r) {
    for (size_t j = 0; j < columns; ++j) {
      const Value& v = value(r, j);
      if (v.kind == ValueKind::kBinary) return false;
      AppendArrayElement(&(*arrays)[j], v);
    }
  }
  for (std::string& a : *arrays) a.push_back('}');
  return true;
}

// The rows of TextArrays' parameters: SELECT pgflow_u.n::type AS n, ... FROM unnest($1::text[],
// ...) AS pgflow_u (n, ...), column j being source column columns[j] named names[j].
std::string UnnestSelect(const TargetTable& table, const std::vector<size_t>& columns,
                         const std::vector<std::string>& names);

// " ON CONFLICT (key) DO UPDATE SET ..." for an upsert into `table` (DO NOTHING when every
// other column is the key or GENERATED ALWAYS); empty when plain inserts are wanted (no key, or
// the key is not built yet).
std::string ConflictClause(const TargetTable& table);

// INSERT of `rows` rows as a VALUES list, one parameter per value in row order, then
// ConflictClause.
std::string InsertSql(const TargetTable& table, size_t rows);
// The same for any number of rows, each column's values in one text[] parameter (TextArrays).
std::string UnnestInsertSql(const TargetTable& table);

// UPDATE of several keyed rows setting source columns `columns`:
//   UPDATE t AS pgflow_t SET c = pgflow_v.pgflow_c0, ... FROM <values> AS pgflow_v (...)
//   WHERE pgflow_t.k = pgflow_v.pgflow_k0 AND ...
// Each row gives its key values, then those of `columns`. With `text_arrays`, <values> is an
// UnnestSelect of one text[] parameter per column; otherwise a VALUES list of `rows` rows, one
// parameter per value in row order, each cast to its column's type.
std::string UpdateBatchSql(const TargetTable& table, const std::vector<size_t>& columns,
                           size_t rows, bool text_arrays);

// UPDATE of the one row `old_row` finds (see DeleteRowSql) to the known values of `after`
// (unchanged TOAST values and GENERATED ALWAYS columns are left alone); adds the parameters.
// Empty when there is nothing to set. DataLoss when `old_row` cannot find a row.
absl::StatusOr<std::string> UpdateRowSql(const TargetTable& table, const Row& old_row,
                                         const Row& after, StatementParams* params);

// DELETE of the one row `before` finds: by its key values, or for a table without a key, by
// every known value of the old row (the first such row, by ctid); adds the parameters.
// DataLoss when a key value is missing, or a keyless row carries no known value.
absl::StatusOr<std::string> DeleteRowSql(const TargetTable& table, const Row& before,
                                         StatementParams* params);

// Whether DeleteAnySql can delete `table`'s rows: a key of one column, not of an array type.
bool DeletesByArray(const TargetTable& table);
// DELETE ... WHERE k = ANY ($1::type[]): every row whose key is in one text[] parameter.
// REQUIRES: DeletesByArray(table).
std::string DeleteAnySql(const TargetTable& table);
// DELETE ... WHERE k IN ($1, ...), or (k1, k2) IN (($1, $2), ...): `rows` rows by their key
// values, one parameter per key value in row order. REQUIRES: `table` has a key.
std::string DeleteInSql(const TargetTable& table, size_t rows);

// TRUNCATE of `table`, with the options `change` (a kTruncate) carries.
std::string TruncateSql(const TargetTable& table, const Change& change);

// Snapshot rows of a table that held rows go through a temporary staging table (the table's
// `stage`) and are upserted from it.
// CREATE TEMP TABLE IF NOT EXISTS <stage> with the table's columns, no rows.
std::string CreateStageSql(const TargetTable& table);
// COPY <into> (<table's columns>) FROM STDIN (FORMAT binary).
std::string CopyInSql(const TargetTable& table, const std::string& into);
// Upserts the stage's rows into the table, then empties the stage.
std::string UpsertFromStageSql(const TargetTable& table);

// Decoded snapshot rows go by binary COPY into the table's `read_stage`, whose columns c0, c1,
// ... hold each value's binary form or its text (TargetTable::read_binary), and from there
// into the table.
// CREATE TEMP TABLE IF NOT EXISTS <read_stage> (c0 <type or text>, ...).
std::string CreateReadStageSql(const TargetTable& table);
// COPY <read_stage> FROM STDIN (FORMAT binary).
std::string CopyIntoReadStageSql(const TargetTable& table);
// Upserts the read stage's rows into the table (text columns cast), then empties the stage.
std::string UpsertFromReadStageSql(const TargetTable& table);

// The names of `table`'s key columns as one text[] literal.
std::string KeyColumnsArray(const TargetTable& table);

// "(id)=(5)": the key of `row` (every column of a table without a key), for messages; values
// longer than 100 characters are cut.
std::string DescribeKey(const TargetTable& table, const Row& row);

}  // namespace pgflow
