#pragma once

// The `postgres` sink: applies the stream to another PostgreSQL database, the target of a
// zero-downtime migration.
//
//   sinks:
//     replica: {postgres: {url: postgres://app@newdb:5432/shop, schema: shop, batch_rows: 1000}}
//
// It creates the tables missing from the target (from the source's definition; their keys,
// indexes and constraints once the initial load is over), copies the initial snapshot, then
// applies the source transactions in order, several per target transaction, and replays DDL
// under `ddl.mode: apply`. With WAL positions each source transaction is applied exactly once
// (the applied position is kept in pgflow.applied in the target); otherwise every change is
// applied as an idempotent upsert or delete by key. Nothing past the last target commit is
// acknowledged.
//
// Errors: an unreachable target is kUnavailable; a statement the target refuses is an error
// naming the table, the row's key and PostgreSQL's message. Either stops the pipeline. With
// `dead_letter`, a refused streamed change (SQLSTATE class 22 or 23) is kAborted instead, and
// the run that follows sets it aside in pgflow.dead_letters (docs/guides/postgres-sink.md, "Refused
// rows").
//
// How it works, and which file does what: sinks/postgres/README.md.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/postgres/postgres_origin.h"
#include "engine/registry.h"

namespace pgflow {

// `roles`: whether the sink brings the source's roles, owners and grants (sinks/postgres/
// ownership.h). kDefault: copy when the sink creates the target's tables (create_tables, a
// migration into an empty server), skip when they are someone else's.
enum class RolesPolicy { kDefault, kCopy, kSkip };

struct PostgresSinkOptions : SinkOptions {
  std::string url;            // libpq URL or conninfo of the target database
  std::string schema;         // target schema for every table; empty: the source table's schema
  int64_t batch_rows = 1000;  // rows per multi-row INSERT (also bounded by 65535 parameters)
  bool create_tables = true;  // create missing target tables from the source's shape
  // Connections that copy the initial snapshot into tables that were empty, at once.
  int64_t load_workers = 2;
  // Set for the sink's session when the target's is lower: building a key or an index after
  // the load sorts in this much memory.
  std::string maintenance_work_mem = "256MB";
  RolesPolicy roles = RolesPolicy::kDefault;

  // Whether `roles` copies, once its default is resolved.
  bool CopiesRoles() const {
    return roles == RolesPolicy::kCopy || (roles == RolesPolicy::kDefault && create_tables);
  }
};

// `pgflow roles pipeline.yaml`: what `roles: copy` does before the sink creates anything (the
// roles the pipeline's objects need, the database's and schemas' owners, grants, settings and
// default privileges), then the owners and grants of every table, sequence, type and routine
// pgflow brought, whatever `roles` says. Run with superusers' URLs it copies the passwords too
// and can do what the pipeline's role may not. `pipeline_role`: the role the pipeline writes as
// in the target (empty: the target URL's user), which keeps its access. Prints what it did and
// could not do; errors are the connections' and catalogs'.
absl::Status CopyRolesCommand(const PostgresOrigin& origin, const PostgresSinkOptions& options,
                              const std::string& pipeline_role);

// What `pgflow teardown` removed from a target, and what it kept, each with why and the
// statement or command that removes it.
struct TargetTeardown {
  std::vector<std::string> removed;
  std::vector<std::string> kept;
};

// `pgflow teardown`'s part in the target of `options`: removes the pipeline's rows from the
// sink's bookkeeping (pgflow.applied, pgflow.pending_ddl) and then schema pgflow, unless it
// holds more: the pipeline's refused rows (pgflow.dead_letters), other pipelines' rows, objects
// that are not the sink's (the target is another pipeline's source). Names what it keeps,
// and the target role's memberships in the owners of the pipeline's `tables` (CopyRoles grants
// them, and only a superuser may revoke them). Connects to options.url; errors are the
// connection's and the statements'.
absl::StatusOr<TargetTeardown> TeardownTarget(const std::string& pipeline,
                                              const PostgresSinkOptions& options,
                                              const std::vector<TableRef>& tables);

// Registers the "postgres" sink type with the engine's factory registry.
void RegisterPostgresSink();

// `pgflow sequences pipeline.yaml`: sets every sequence that the pipeline's tables own (serial
// and identity columns) or use in a column default to the source's current value (last_value,
// is_called), in the target of `options`, under the same schema mapping; run it just before
// switching writes over to the target, since the stream carries rows, not sequence advances.
// Connects to origin.url and options.url. NotFound, after setting the others, when
// some of those sequences are missing from the target; other errors name the sequence.
absl::Status SyncSequences(std::string_view pipeline, const PostgresOrigin& origin,
                           const PostgresSinkOptions& options);

}  // namespace pgflow
