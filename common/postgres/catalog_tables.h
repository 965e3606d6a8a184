#pragma once

// The tables a `schema.table` or `schema.*` names, as a PostgreSQL catalog has them: for
// `pgflow verify`, the cutover's checks and backfills, which read the followed tables alike.

#include <string>
#include <vector>

#include <libpq-fe.h>

#include "absl/status/statusor.h"
#include "common/postgres/table_ref.h"

namespace pgflow {

struct CatalogTable {
  std::string schema;
  std::string name;
  std::string oid;
  bool partitioned = false;  // relkind 'p'
  bool keyless = false;      // kKeylessCondition (common/postgres/keyless.h)
  bool partition = false;    // a partition of another table (named by itself)
};

// The ordinary and partitioned tables `ref` names, by name: for `schema.*` every one of the
// schema but partitions (their parent stands for them); a partition named by itself is taken.
// Empty when none exists.
absl::StatusOr<std::vector<CatalogTable>> TablesNamed(PGconn* conn, const TableRef& ref);

}  // namespace pgflow
