#pragma once

// What the postgres sink reads from the SOURCE's catalogs to recreate a table in the target:
// columns (types, collations, NOT NULL, defaults, identity and generated columns), the primary
// key and the sequences the table uses, then the secondary indexes and constraints that are
// built only once the table is loaded. (The sequences' values: sinks/postgres/sequences.h.)
//
// Schema mapping: every qualified name generated for the target (the table, its sequences,
// the tables its foreign keys reference) goes to the sink's `schema` option when set, else
// keeps the source's schema. Names inside user-written expressions (a function a default or a
// CHECK calls, a user type) keep the source's schema: those objects must exist in the target.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/postgres/pg_connection.h"
#include "common/postgres/table_ref.h"

namespace pgflow {

// The target schema of an object of source schema `source_schema`: `mapped_schema` (the sink's
// `schema` option) unless it is empty.
inline const std::string& MapSchema(const std::string& mapped_schema,
                                    const std::string& source_schema) {
  return mapped_schema.empty() ? source_schema : mapped_schema;
}

// A statement to run once the table is loaded.
struct DeferredStatement {
  // -1: the primary key (first, and early when a resumed load needs it to upsert);
  // 0: indexes, UNIQUE, CHECK, EXCLUDE; 1: foreign keys (after every phase 0).
  int phase = 0;
  std::string statement;
  // A primary key or UNIQUE constraint comes as two statements: CREATE UNIQUE INDEX, which may
  // run beside the table's other index builds (each takes a SHARE lock), then
  // ALTER TABLE ... ADD CONSTRAINT ... USING INDEX, a catalog change, marked `attaches`.
  bool attaches = false;
};

// Whether `statement` builds an index: CREATE [UNIQUE] INDEX, which several connections may run
// on one table at once. What else is deferred (ALTER TABLE ... ADD CONSTRAINT) locks the table
// out and runs alone.
bool BuildsIndex(absl::string_view statement);

struct TableDefinition {
  std::vector<std::string> schemas;  // target schemas the statements below need
  // CREATE SEQUENCE IF NOT EXISTS ..., CREATE TABLE ..., ALTER SEQUENCE ... OWNED BY ...:
  // run together, in order, when the table is created.
  std::vector<std::string> create;
  // The primary key, secondary indexes and constraints other than NOT NULL: built after the
  // load, as pg_restore does (building an index once is much cheaper than maintaining it row by
  // row). A UNIQUE constraint or index that is the replica identity stays in `create`, and so
  // does the primary key of a table whose replica identity is not DEFAULT (the sink's key is
  // then not the primary key, and only the primary key keeps a chunk copied twice out).
  std::vector<DeferredStatement> deferred;
};

// Connects to the source for catalog reads. The session's search_path is pg_catalog alone, so
// that format_type, pg_get_expr, pg_get_indexdef and pg_get_constraintdef qualify every name
// outside pg_catalog and the definitions read do not depend on the target's search_path.
absl::StatusOr<PgConnPtr> ConnectToSourceCatalog(const std::string& url);

// Reads the definition of source table `schema`.`name` (a plain or partitioned table; a
// partitioned one is recreated as a plain table) from `source`, a connection from
// ConnectToSourceCatalog. NotFound when the source has no such table.
absl::StatusOr<TableDefinition> ReadTableDefinition(PGconn* source, const std::string& schema,
                                                    const std::string& name,
                                                    const std::string& mapped_schema);

}  // namespace pgflow
