#pragma once

// Replaying captured DDL (schemas/ddl.h) on a PostgreSQL target.
//
// Not the source's statement text (why: sinks/postgres/README.md, "Schema changes"): PlanDdl
// compares the shape a table had before the command with the one after, both carried by the
// message, and issues the statements that take the target from one to the other:
// RENAME TO / SET SCHEMA, RENAME COLUMN, DROP COLUMN, ADD COLUMN (with its default, generation
// or identity, and NOT NULL), ALTER COLUMN TYPE ... USING col::type, SET/DROP NOT NULL,
// SET/DROP DEFAULT, and the primary key. A table the target lacks is created from the shape.
// Indexes are created from pg_get_indexdef's method and columns on the mapped table; sequences
// from their options. Each statement checks the target's state first (the table exists under
// its old name, the column is still there), so that a target table created from a newer shape
// than the stream's, during the initial load, is not changed twice.
//
// Anything else (views, functions, types, ...) cannot be replayed safely and is refused with
// the statement and the way out; constraints other than the primary key, triggers, policies,
// comments and grants are passed over: they do not change the rows pgflow writes.

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "schemas/ddl.h"

namespace pgflow {

// What DDL planning needs to know of a target table.
struct TargetTableState {
  std::vector<std::string> columns;      // names, in any order
  std::string primary_key_constraint;    // its name; empty: no primary key
  std::vector<std::string> primary_key;  // its columns, in key order
  std::vector<std::string> constraints;  // names of its other constraints

  bool HasColumn(std::string_view name) const;
};

// Looks tables up in the target.
class TargetLookup {
 public:
  virtual ~TargetLookup() = default;
  // nullopt when the table does not exist.
  virtual absl::StatusOr<std::optional<TargetTableState>> Table(const std::string& schema,
                                                                const std::string& name) = 0;
};

// A constraint to add (a foreign key, check, unique or exclusion constraint): on its own, so
// that one the target refuses (a referenced table it lacks, rows that break it) is reported
// with the way to add it, and the stream goes on.
struct ConstraintReplay {
  std::string table;                    // target table, quoted
  std::string name;                     // the constraint's
  std::vector<std::string> statements;  // ADD CONSTRAINT ... [NOT VALID], then VALIDATE
};

struct DdlPlan {
  std::vector<std::string> statements;        // to run in order, in the target transaction
  std::vector<ConstraintReplay> constraints;  // after the statements, each on its own
  // Constraints not replayed, each with why and the statement that adds it (for a WARN).
  std::vector<std::string> constraints_passed_over;
  // Source tables ("schema.table", unquoted) whose target definition changed: the sink
  // forgets what it knew of them.
  std::vector<std::string> changed_tables;
  // Set when the command needs nothing on the target, and why (for the log).
  std::string passed_over;
};

struct DdlReplayOptions {
  // Maps every source schema to this target schema; empty keeps the source's.
  std::string target_schema;
  // The sink's `ddl` options in the pipeline file ("sinks.replica.ddl"), for messages.
  std::string config_path = "ddl";
  // Foreign keys, checks, unique and exclusion constraints of tables are replayed (`ddl.exclude`
  // without "table constraint").
  bool constraints = true;
};

// Plans the replay of `cmd`. FailedPrecondition, naming the command and what to do, for
// commands that cannot be replayed safely.
absl::StatusOr<DdlPlan> PlanDdl(const DdlCommand& cmd, const DdlReplayOptions& options,
                                TargetLookup& target);

// "name type [GENERATED ...] [DEFAULT ...] [NOT NULL]" for CREATE TABLE and ADD COLUMN.
std::string ColumnDefinition(const DdlColumn& column);

}  // namespace pgflow
