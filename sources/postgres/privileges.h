#pragma once

// Least privilege on the source: what a role that is not a superuser needs to run a pipeline
// (`run`, `snapshot`, `sequences`, `verify`, and `teardown` of its own slot and rows) once a
// superuser's `pgflow init` has installed the DDL capture, the publication and the slot.
// `pgflow init --grant-to ROLE` runs these statements; `--print-sql` prints them for a DBA.
//
//   - REPLICATION, to stream from the slot (and create it again if it was dropped);
//   - USAGE on the pgflow schema and read/write on the pipeline's bookkeeping there
//     (snapshots, snapshot_chunks, backfills, its row in pipelines);
//   - USAGE on each followed schema, SELECT on its tables and sequences, and the same on
//     tables and sequences created later (default privileges of the roles that create them
//     there: the schema's owner and the owners of its tables today).
//
// Creating or changing the publication, REPLICA IDENTITY FULL on keyless tables and the event
// triggers stay a superuser's (or the tables' owner's): `init` does them.

#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/pg_connection.h"
#include "sources/postgres/postgres_source_config.h"

namespace pgflow {

// The statements granting `role` what running the pipeline needs, each ending with ';', with
// a comment line before each group. Reads the catalog (schemas, table owners, sequences).
absl::StatusOr<std::vector<std::string>> SourceGrants(PGconn* conn,
                                                      const PostgresSourceOptions& source,
                                                      const std::string& role);

// What a target role needs, as statements for a DBA to run there (not run by pgflow): the
// tables go to `schemas` (created there when missing, else CREATE on them is needed).
std::vector<std::string> TargetGrants(const std::string& database, const std::string& role,
                                      const std::set<std::string>& schemas);

}  // namespace pgflow
