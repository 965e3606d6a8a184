#pragma once

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/postgres/pg_connection.h"
#include "engine/change.h"
#include "sinks/postgres/ddl_replay.h"
#include "sinks/postgres/postgres_sink.h"
#include "sinks/postgres/privileges.h"
#include "sinks/postgres/roles.h"
#include "sinks/postgres/target_session.h"
#include "sinks/postgres/target_table.h"

namespace pgflow {

// The postgres sink's tables in the target: what it knows of each (TargetTable), and what it
// does to them other than writing rows. A table missing from the target is created when first
// seen, from the source's catalog (sinks/postgres/table_definition.h) or, without a PostgreSQL
// source or for a table a transform reshaped, from the shape events carry (its columns and
// key). Its key, secondary indexes and constraints are recorded
// in pgflow.pending_ddl, committed with the table, and built once the initial load is over
// (BuildPending), the key first; a table created while streaming gets them at once.
//
// Statements go through the sink's TargetSession, inside its open transaction if any, but for
// the index builds after the load, which run side by side over connections of their own
// (sinks/postgres/parallel_statements.h); catalog reads of the source go over a connection of
// its own, opened when first needed.
// Errors name the target and the table. Not thread-safe: the sink's thread only.
class TargetTables {
 public:
  // `session` outlives this. `pipeline`: the pipeline's name, which keys pgflow.pending_ddl.
  // `origin`: the PostgreSQL source, whose catalog is read; null for another source.
  TargetTables(TargetSession& session, std::string sink_name, std::string pipeline,
               std::shared_ptr<const PostgresOrigin> origin,
               std::shared_ptr<const PostgresSinkOptions> options);
  TargetTables(const TargetTables&) = delete;
  TargetTables& operator=(const TargetTables&) = delete;

  // The table of `schema` when it was last checked with the same shape (then `schema` becomes
  // its shape); null when it must be Load()ed.
  TargetTable* Find(const TableSchemaPtr& schema);
  // Whether the table of `schema` is known, under any shape.
  bool Known(const TableSchema& schema) const { return tables_.contains(schema.QualifiedName()); }
  // Reads the table of `schema` from the target's catalog, first creating it when it is missing
  // (and the sink's create_tables allows), and replaces what was known of it; the pointer stays
  // valid until the table is replaced or forgotten. FailedPrecondition when the table is
  // missing and may not be created, or lacks a source column. REQUIRES: nothing in flight.
  absl::StatusOr<TargetTable*> Load(const TableSchemaPtr& schema);
  // Forgets source table "schema.table" (its target definition changed).
  void Forget(const std::string& source_table) { tables_.erase(source_table); }
  // Forgets every table (a transaction that may have created some rolled back).
  void Clear() { tables_.clear(); }
  // Every table's foldability is checked again: an index or constraint may have come or gone.
  void RecheckFoldable();

  // Before the first snapshot rows of `table` in this run: sets fast_copy (is it empty?) and
  // plain_inserts. A table holding rows while its key is still pending is the rest of an
  // interrupted load: its key is built first, so that the chunks that come again (those the
  // source had not recorded as done) are upserted over their first copy.
  absl::Status PrepareSnapshotLoad(TargetTable* table);
  // Whether the key is `table`'s only unique index or exclusion constraint in the target, read
  // from its catalog; stored in table->foldable. REQUIRES: `table` has a key.
  absl::StatusOr<bool> ReadFoldable(TargetTable* table);

  // Whether the initial load is over (FinishLoad, or the stream started).
  bool load_finished() const { return load_finished_; }
  // The initial load is over: builds everything pending (BuildPending); from now on a table
  // created gets its keys, indexes and constraints at once.
  absl::Status FinishLoad();
  // Runs every statement of pgflow.pending_ddl not yet done for this pipeline. One that fails
  // is logged and left pending (tried again after the next snapshot or restart); only a lost
  // connection is an error. Inside an open target transaction each runs under a savepoint;
  // outside one, the index builds run load_workers at a time over connections of their own.
  absl::Status BuildPending();

  // roles: copy. Gives the target table of source table schema.name (and its sequences) the
  // source's owner and grants, in the session's transaction if one is open; what the target
  // role may not do is logged with the statement for a superuser. Only a lost connection is an
  // error.
  absl::Status GiveSourceOwner(const std::string& schema, const std::string& name);

  // The connection for catalog reads of the source, opened when first needed.
  absl::StatusOr<PGconn*> SourceConnection();
  void CloseSource() { source_conn_.reset(); }

 private:
  // Builds the pending statements of target table `name` (unquoted) that come first (its
  // primary key), or with `name` empty every pending statement.
  absl::Status BuildPendingKey(const std::string& name);
  // Creates the table from the source's definition, recording its secondary indexes and
  // constraints in pgflow.pending_ddl; falls back to CreateFromShape when the source no longer
  // has the table.
  absl::Status CreateFromSource(const TableSchema& schema, const std::string& target_schema,
                                const std::string& quoted, const std::string& name);
  // Before the first table this run creates: the roles (roles: copy), the source's types,
  // domains and functions, then the database's, schemas' and those objects' owners and grants.
  absl::Status BringSchemaObjects();
  // The passes of CopyRoles.
  enum class RolesPass {
    kRoles,            // the roles, before the schema objects are restored
    kOwnersAndGrants,  // the database's, schemas' and schema objects' owners and grants
    kLateObjects,      // the schema objects' owners and grants alone, for the objects
                       // restored once the tables existed
  };
  // The roles, or the owners and grants of everything but the tables, over a target connection
  // of its own.
  absl::Status CopyRoles(RolesPass pass);
  // Creates the table from the shape pgoutput describes: columns and primary key.
  absl::Status CreateFromShape(const TableSchema& schema, const std::string& target_schema,
                               const std::string& quoted);

  TargetSession& session_;
  const std::string sink_name_;
  const std::string pipeline_;
  const std::string source_url_;  // the origin's, or empty
  const bool source_is_postgres_;
  const std::vector<TableRef> origin_tables_;  // the origin's, or none
  const std::shared_ptr<const PostgresSinkOptions> options_;
  bool load_finished_ = false;
  bool schema_objects_copied_ = false;  // CopySchemaObjects ran (before the first table created)
  bool schema_objects_owed_ = false;    // some failed then: a second pass after the load
  PgConnPtr source_conn_;
  std::optional<RoleMap> role_map_;       // roles: copy, read when first needed
  std::vector<NeededRole> needed_roles_;  // found before the first table
  // Source "schema.table" -> what is known of it. Shared with the net changes staged for a
  // table, which may outlive an entry replaced here.
  absl::flat_hash_map<std::string, std::shared_ptr<TargetTable>> tables_;
};

// The target's tables as DDL planning (sinks/postgres/ddl_replay.h) sees them, read over `conn`
// (the sink's, inside its open transaction).
class TargetCatalogLookup : public TargetLookup {
 public:
  explicit TargetCatalogLookup(PGconn* conn) : conn_(conn) {}

  absl::StatusOr<std::optional<TargetTableState>> Table(const std::string& schema,
                                                        const std::string& name) override;

 private:
  PGconn* conn_;
};

}  // namespace pgflow
