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
#include <string_view>
#include <vector>

#include "common/postgres/table_ref.h"
#include "engine/registry.h"
#include "transformers/filter_expression.h"

namespace pgflow {

// Which events a component takes (the filter transform, a webhook route): their tables,
// operations and row predicate, as written under the keys `table`, `op` and `where` and as
// Compile reads them. What a component does with the events it does not take, and which row a
// predicate is asked about, is the component's own.
struct EventSelection {
  std::vector<std::string> table;  // as written; empty: every table
  std::vector<TableRef> tables;
  std::vector<std::string> op;  // as written; empty: every operation
  std::vector<Op> ops;
  std::string where;
  std::shared_ptr<const FilterExpression> expression;  // null without `where`

  // Reads table, op and where, written in the mapping `node`, into tables, ops and expression;
  // an error names the value and is placed at its key.
  absl::Status Compile(const ConfigNode& node);
  // Whether `op` is one of ops (every operation when `op` was not given).
  bool TakesOp(Op op) const;
  // Whether `table` is one of tables (every table when `table` was not given).
  bool TakesTable(const TableSchema& table) const;

  // Compares what was written.
  friend bool operator==(const EventSelection& a, const EventSelection& b) {
    return a.table == b.table && a.op == b.op && a.where == b.where;
  }
};

// The keys `table`, `op` and `where` of the EventSelection `member` of T, for T's option table,
// each with T's own help (what the tables, operations and predicate do there).
template <typename T>
Option<T> EventSelectionOptions(EventSelection T::*member, std::string_view table_help,
                                std::string_view op_help, std::string_view where_help) {
  Option<T> keys;
  keys.embedded = {
      ListOption("table", member, &EventSelection::table)
          .DefaultText("every table")
          .Help(table_help),
      ListOption("op", member, &EventSelection::op).DefaultText("every operation").Help(op_help),
      StringOption("where", member, &EventSelection::where).NoDefault().Help(where_help),
  };
  return keys;
}

struct FilterOptions : TransformOptions {
  EventSelection selection;
};

// Parses the operation names `texts` (insert, update, delete, read, truncate, ddl, message),
// written under `node`'s key `key`, into *ops; an error names the unknown one.
absl::Status ParseOps(const ConfigNode& node, std::string_view key,
                      const std::vector<std::string>& texts, std::vector<Op>* ops);

// Registers the `filter` transform type.
void RegisterFilterTransform();

}  // namespace pgflow
