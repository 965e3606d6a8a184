#pragma once

// The `filter` transform: keeps the events of the tables it names whose operation and row
// match (`- filter: {table: public.orders, where: "status = 'paid' and total > 10"}`); the
// other tables' events pass untouched.
//
// - `op` keeps only those operations (insert, update, delete, read for snapshot rows,
//   truncate, ddl); all by default.
// - `where` (transformers/filter_expression.h) is evaluated on the new row of inserts,
//   snapshot rows and updates, and on the old row of deletes (a delete whose old row is the key
//   only, under REPLICA IDENTITY DEFAULT, is kept: a keyed sink drops what it may not hold).
// - An update that moves a row out of the filter becomes a delete (the row's key), and one that
//   moves a row in becomes an insert, so that a filtered index or cache never keeps a row that
//   no longer matches. Whether the old row matched is known under REPLICA IDENTITY FULL; without
//   it, an update that matches stays an update (an upsert for keyed sinks).
// - Truncates and schema changes of the tables pass unless `op` leaves them out.

#include <memory>
#include <string>
#include <vector>

#include "common/postgres/table_ref.h"
#include "engine/registry.h"
#include "transformers/filter_expression.h"

namespace pgflow {

struct FilterOptions : TransformOptions {
  std::vector<std::string> table;  // as written; empty: every table
  std::vector<TableRef> tables;
  std::vector<std::string> op;  // as written; empty: every operation
  std::vector<Op> ops;
  std::string where;
  std::shared_ptr<const FilterExpression> expression;  // null without `where`
};

// Parses the operation names `texts` (insert, update, delete, read, truncate, ddl, message),
// written under `node`'s key `key`, into *ops; an error names the unknown one.
absl::Status ParseOps(const ConfigNode& node, std::string_view key,
                      const std::vector<std::string>& texts, std::vector<Op>* ops);

// Registers the `filter` transform type.
void RegisterFilterTransform();

}  // namespace pgflow
