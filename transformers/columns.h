#pragma once

// The `select` and `drop_columns` transforms: which columns of a table the sinks see.
//
//   - select: {table: public.users, columns: [id, name, created_at]}
//   - drop_columns: {table: public.users, columns: [ssn, notes]}
//
// `select` keeps the columns it lists and the key's (a row without its key could not be
// updated or deleted downstream), in the table's order; a column added later by the source is
// not seen unless listed, which makes `select` the safe choice for anonymised copies.
// `drop_columns` removes the columns it lists; listing a key column is an error. A listed
// column the table lacks is an error when the table is named exactly (a typo in a
// `drop_columns` would let the column through), and passed over for a schema's tables
// (`public.*`) or once the source dropped it. The shape the sinks see changes with the rows
// (transformers/reshape.h): a postgres sink creates and alters its table without them.

#include <string>
#include <vector>

#include "common/postgres/table_ref.h"
#include "engine/registry.h"

namespace pgflow {

struct ColumnsOptions : TransformOptions {
  std::vector<std::string> table;  // as written: schema.table or schema.*
  std::vector<TableRef> tables;
  std::vector<std::string> columns;
};

// Registers the `select` and `drop_columns` transform types.
void RegisterColumnsTransforms();

}  // namespace pgflow
