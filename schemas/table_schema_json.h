#pragma once

// A relation version (schemas/table_schema.h) as compact JSON, so that an event carried out
// of the process (the Kafka sink's `pgflow.schema` header) says how to read its values back:
//
//   {"relid":16385,"schema":"public","table":"items","identity":"d","version":2,
//    "columns":[["id",20,-1,1],["price",1700,655366,0],["mood",16390,-1,0,"public.mood"]]}
//
// Each column is [name, type OID, type modifier, 1 when part of the replica identity else 0]
// and, for a type that is not built in, its "schema.name" (a leading '_' is an array). With the
// OID and modifier, a PostgreSQL target spells the type itself (format_type); built-in OIDs are
// the same in every database. A table under REPLICA IDENTITY FULL (identity "f", every column
// marked) that has a primary key names it: "primary_key":["id"] (TableSchema::primary_key);
// readers that do not know the key ignore it.

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "schemas/table_schema.h"

namespace pgflow {

// Appends the JSON of `table`'s shape (everything SameShape compares, and the version).
void AppendTableSchemaJson(const TableSchema& table, std::string* out);

// Reads what AppendTableSchemaJson wrote. InvalidArgument naming the field that is missing or
// wrong: a replica identity other than d, n, f or i, an empty column name, an OID or modifier
// out of range, more than 1,664 columns (PostgreSQL's limit), a primary key naming a column
// the table lacks, or one twice.
absl::StatusOr<TableSchema> ParseTableSchemaJson(std::string_view json);

}  // namespace pgflow
