#pragma once

// What DocumentSql needs of the source's catalog, read from it: each table's columns with
// their types, and its primary key.

#include <vector>

#include <libpq-fe.h>

#include "absl/status/statusor.h"
#include "common/postgres/table_ref.h"
#include "documents/document_sql.h"

namespace pgflow::documents {

// The tables of `tables` that exist (ordinary or partitioned tables); one missing is absent
// from the result, for DocumentSql::Make to name.
absl::StatusOr<Catalog> ReadCatalog(PGconn* conn, const std::vector<TableRef>& tables);

}  // namespace pgflow::documents
