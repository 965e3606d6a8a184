#pragma once

// The one CREATE TABLE the postgres sink writes, whatever told it the table's shape: the
// source's catalog (sinks/postgres/table_definition.h), a captured schema change
// (sinks/postgres/ddl_replay.h), or the columns a change event carries. Plain functions: no
// connection, no state; names are quoted here, types and expressions are taken as written.

#include <string>
#include <vector>

namespace pgflow {

// One column, as CREATE TABLE or ALTER TABLE ... ADD COLUMN defines it.
struct ColumnDefinitionSpec {
  std::string name;       // unquoted
  std::string type;       // as format_type() prints it, or a quoted qualified name
  std::string collation;  // quoted and qualified; empty: the type's own
  // Of a STORED generated column, its expression; empty: not generated. Takes precedence over
  // `identity` and `default_expr`.
  std::string generated;
  char identity = 0;  // 'a' GENERATED ALWAYS, 'd' BY DEFAULT AS IDENTITY, 0 none
  // Of an identity column, the sequence options that follow AS IDENTITY, without their
  // parentheses ("SEQUENCE NAME s.t_id_seq INCREMENT BY 1 ..."); empty: none.
  std::string identity_options;
  std::string default_expr;  // empty: none; ignored for a generated or identity column
  bool not_null = false;
};

struct CreateTableSpec {
  std::string table;  // quoted and qualified: "schema"."name"
  bool if_not_exists = false;
  std::vector<ColumnDefinitionSpec> columns;
  // Table constraints, written out ("CONSTRAINT t_pkey PRIMARY KEY (id)"), after the columns.
  std::vector<std::string> constraints;
  // Columns of an unnamed PRIMARY KEY, unquoted, in key order; empty: none. Last.
  std::vector<std::string> primary_key;
};

// "name" type [COLLATE c] [GENERATED ALWAYS AS (e) STORED | GENERATED ... AS IDENTITY [(...)] |
// DEFAULT e] [NOT NULL]
std::string RenderColumnDefinition(const ColumnDefinitionSpec& column);

// PRIMARY KEY ("a", "b") of columns `columns` (unquoted), for CREATE TABLE and ALTER TABLE ADD.
std::string RenderPrimaryKey(const std::vector<std::string>& columns);

// CREATE TABLE [IF NOT EXISTS] table (columns, constraints, PRIMARY KEY (...)).
std::string RenderCreateTable(const CreateTableSpec& spec);

}  // namespace pgflow
