#pragma once

// The `rename` transform: the names the sinks see for a table and its columns.
//
//   - rename: {table: public.users, to: crm.customers, columns: {email: email_address}}
//   - rename: {table: "legacy.*", to: "public.old_{table}"}
//
// `to` is schema.table or a bare table name (same schema), and may use {schema} and {table},
// the source's names, so that one entry renames a schema's tables. `columns` maps source
// column names to new ones. Transforms after this one, and every sink, see the new names; the
// shape changes with the rows (transformers/reshape.h), so a postgres sink creates its table
// under the new names and follows the source's schema changes there. Two columns may not end
// with one name; a column `columns` names that an exactly named table lacks is an error.

#include <string>
#include <utility>
#include <vector>

#include "common/postgres/table_ref.h"
#include "engine/registry.h"

namespace pgflow {

struct RenameOptions : TransformOptions {
  std::vector<std::string> table;  // as written
  std::vector<TableRef> tables;
  std::string to;  // empty: the table keeps its name
  std::vector<std::pair<std::string, std::string>> columns;  // from, to
};

// Registers the `rename` transform type.
void RegisterRenameTransform();

}  // namespace pgflow
