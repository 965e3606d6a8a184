#pragma once

// How the snapshot, a backfill and `pgflow preview` read a published table's rows.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/pg_connection.h"
#include "engine/change.h"
#include "schemas/table_schema.h"

namespace pgflow {

// How to read one published table: its schema as pgoutput describes it (columns in order,
// generated columns left out, key flags from its replica identity) and the SELECT list that
// yields each column in binary where pgflow decodes the binary form exactly, else as the text
// of the type's output function.
struct TableReader {
  TableSchemaPtr schema;
  std::string select_list;
  std::string raw_select_list;     // every column as it is, for raw COPY to a PostgreSQL target
  std::vector<ValueKind> kinds;    // per column: kBinary or kText
  std::vector<std::string> types;  // per column: format_type(), for casts
  std::vector<int> primary_key;    // column indices of the primary key, in key order
  bool raw = false;                // its rows go on as raw COPY data (EventKind::kRawRows)
  bool raw_capable = true;         // every column has a binary send function
};

// Describes table schema.name as the transaction on `conn` sees it.
absl::StatusOr<TableReader> DescribeTable(PGconn* conn, const std::string& schema,
                                          const std::string& name);

}  // namespace pgflow
