#pragma once

// Schema changes as the source captures them (docs/development/architecture.md, "Schema changes").
//
// pgflow's event triggers in the source database (sources/postgres/ddl_capture.h) describe
// every DDL command with `pg_logical_emit_message(true, 'pgflow.ddl', <json>)`, inside the
// transaction that ran it, so the description reaches the stream exactly between the data
// changes it separates, and vanishes with a rolled-back transaction. For a table the message
// carries its shape after the command and the shape the triggers last recorded before it,
// so a sink can work out what changed (columns added, dropped, renamed, retyped; the table
// renamed) without parsing SQL. This header is that message's parsed form.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace pgflow {

// The message prefix of captured DDL.
inline constexpr std::string_view kDdlMessagePrefix = "pgflow.ddl";

// A column as the source catalog defines it.
struct DdlColumn {
  int attnum = 0;  // stable across renames; never reused after a drop
  std::string name;
  std::string type;       // format_type(atttypid, atttypmod), schema-qualified when needed
  std::string collation;  // "schema"."name" when not the type's default; empty otherwise
  bool not_null = false;
  std::string default_expr;  // pg_get_expr of the default; empty: none
  std::string generated;     // expression of a STORED generated column; empty: not generated
  char identity = 0;         // 'a' GENERATED ALWAYS, 'd' BY DEFAULT AS IDENTITY, 0 none

  friend bool operator==(const DdlColumn&, const DdlColumn&) = default;
};

// A constraint other than the primary key, as the source defines it.
struct DdlConstraint {
  std::string name;
  char type = 0;           // 'f' foreign key, 'c' check, 'u' unique, 'x' exclusion
  std::string definition;  // pg_get_constraintdef, tables schema-qualified

  friend bool operator==(const DdlConstraint&, const DdlConstraint&) = default;
};

// A table's shape: what DDL replay reproduces. Other constraints (UNIQUE, CHECK, FOREIGN KEY),
// triggers, policies and storage settings are not part of it.
struct DdlTableShape {
  uint32_t relid = 0;
  std::string schema;
  std::string name;
  std::vector<DdlColumn> columns;        // in attnum order
  std::vector<std::string> primary_key;  // column names, in key order; empty: none
  // Foreign keys, checks, unique and exclusion constraints (none in shapes recorded by older
  // versions of the capture).
  std::vector<DdlConstraint> constraints;
  // No replica identity PostgreSQL can publish UPDATEs and DELETEs with (no primary key, no
  // identity index, not FULL). Unknown in shapes recorded by older versions of the capture.
  std::optional<bool> keyless;

  bool Keyless() const { return keyless.value_or(primary_key.empty()); }
  const DdlColumn* FindAttnum(int attnum) const;
  const DdlColumn* FindName(std::string_view name) const;
};

// One captured command on one object.
struct DdlCommand {
  std::string tag;          // command tag: "ALTER TABLE", "CREATE INDEX", "DROP TABLE", ...
  std::string object_type;  // "table", "index", "sequence", "view", "function", ...
  std::string identity;     // the object's identity, e.g. "public.orders"
  std::string schema;       // schema of the object; empty for objects outside schemas
  std::string name;         // the object's own name, unqualified (tables, indexes, sequences)
  uint32_t objid = 0;       // OID of the object
  bool dropped = false;     // from a sql_drop trigger: the object no longer exists
  std::string statement;    // the query text that ran the command (may hold several statements)

  // Tables: the shape after the command, and the one recorded before it (none for a table
  // created by this command, or created before pgflow's triggers were installed). Indexes and
  // sequences: `old_table` holds their schema and name before the command.
  std::optional<DdlTableShape> table;
  std::optional<DdlTableShape> old_table;
  // The command rewrote the table (a type change, a volatile default): its rows were not
  // decoded again, so consumers may hold other values than the source now has.
  bool rewritten = false;
  // The capture set REPLICA IDENTITY FULL on this followed table, which had no key.
  bool identity_set_full = false;

  // Indexes and constraints: the table they belong to.
  std::string on_schema;
  std::string on_table;

  // Indexes: pg_get_indexdef(), and whether the index backs a constraint (a primary key's or
  // unique constraint's index: it follows its constraint).
  std::string index_definition;
  std::string index_using;  // the definition after "ON <table> USING ": method, columns, ...
  bool index_unique = false;
  bool index_backs_constraint = false;

  // Sequences: CREATE SEQUENCE options.
  std::string sequence_type;  // "bigint"
  int64_t sequence_start = 1;
  int64_t sequence_increment = 1;
  int64_t sequence_min = 1;
  int64_t sequence_max = 0;
  bool sequence_cycle = false;
  bool sequence_of_identity = false;  // an identity column's own sequence: follows its column
  // OWNED BY: the column whose table's drop drops the sequence (serial columns); empty: none.
  std::string sequence_owner_schema;
  std::string sequence_owner_table;
  std::string sequence_owner_column;

  // Whether the object is a table (partitioned or not).
  bool IsTable() const { return object_type == "table"; }
};

using DdlCommandPtr = std::shared_ptr<const DdlCommand>;

// Parses a 'pgflow.ddl' message's content. The error names the first field that is missing
// or has the wrong type.
absl::StatusOr<DdlCommand> ParseDdlCommand(std::string_view content);

}  // namespace pgflow
