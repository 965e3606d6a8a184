#pragma once

// What pgflow installs in the source database, and how it is removed.
//
// Everything lives in the `pgflow` schema:
//   pgflow.pipelines       one row per pipeline using this database (slot, publication)
//   pgflow.ddl_shapes      each table's shape as last described, so the next DDL message on
//                          it can carry the shape before the change beside the one after
//   pgflow.table_shape()   a table's columns (attnum, name, type, NOT NULL, default,
//                          generated, identity) and primary key, as JSON
//   pgflow.capture_ddl()   event trigger function on ddl_command_end
//   pgflow.capture_drop()  event trigger function on sql_drop
//   pgflow.capture_rewrite()  event trigger function on table_rewrite
//   pgflow.ddl_secret      the key of the MAC each description carries, readable only by the
//                          capture functions; pgflow.ddl_verify() checks a MAC
// and the event triggers `pgflow_capture_ddl`, `pgflow_capture_drop` and
// `pgflow_capture_rewrite` call them. Each
// command becomes `pg_logical_emit_message(true, 'pgflow.ddl', <json>)` in the transaction
// that ran it (schemas/ddl.h describes the message). The functions are SECURITY DEFINER with
// a fixed search_path, so any role's DDL is captured. A session opts out with
// `SET pgflow.capture_ddl = off` (its DDL is then not streamed, but shapes stay current).
//
// Event triggers need a superuser to create them. The snapshot and backfill state tables
// (pgflow.snapshots, pgflow.snapshot_chunks, pgflow.backfills) are created by snapshot.h.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/postgres/keyless.h"
#include "common/postgres/pg_connection.h"

namespace pgflow {

// Installs or updates the schema, tables, functions and event triggers (idempotent), and
// records the table shapes not recorded yet. Returns what it created, for the log: empty when
// everything was there. FailedPrecondition, naming the fix, when the role may not create
// event triggers.
absl::StatusOr<std::vector<std::string>> InstallDdlCapture(PGconn* conn);

// Records `pipeline` as a user of this database's pgflow schema, with what it follows: the
// schemas and names (`*` for a whole schema) of its tables, and its keyless_tables policy
// ("full", "skip", "fail"), which the capture applies to tables created or altered later.
struct PipelineRegistration {
  std::string pipeline;
  std::string slot;
  std::string publication;
  std::string keyless;
  std::string table_schemas;  // array literals, one element per source.postgres.tables entry
  std::string table_names;
};
absl::Status RegisterPipeline(PGconn* conn, const PipelineRegistration& registration);

// What `pgflow teardown` removed.
struct TeardownReport {
  std::vector<std::string> removed;  // "replication slot pgflow_shop", ...
  std::vector<std::string> kept;     // what stays, and why
};

// Removes the pipeline's slot (refusing while a process streams from it), its publication,
// its rows in pgflow's tables and, when no other pipeline uses this database, the event
// triggers and the pgflow schema. Idempotent: what is already gone is skipped.
absl::StatusOr<TeardownReport> Teardown(PGconn* conn, const std::string& pipeline,
                                        const std::string& slot, const std::string& publication);

}  // namespace pgflow
