#pragma once

// What DocumentSql needs of the source's catalog, read from it: each table's columns with
// their types, and its primary key.

#include <map>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include "absl/status/statusor.h"
#include "common/postgres/table_ref.h"
#include "documents/document_sql.h"

namespace pgflow::documents {

// The tables of `tables` that exist (ordinary or partitioned tables); one missing is absent
// from the result, for DocumentSql::Make to name.
absl::StatusOr<Catalog> ReadCatalog(PGconn* conn, const std::vector<TableRef>& tables);

// What `pgflow validate --source` and `pgflow run` (before it starts) say of the documents in
// `specs` against the source: a problem for each table or column missing and each table the
// source does not follow (`followed`: its tables, patterns expanded); a warning for each join
// no index serves, naming the index to make. A join needs one both ways: a child's rows are
// found by its `on` columns when a document is rendered, and a parent's rows by theirs when a
// changed child row looks for its documents.
absl::Status CheckDocuments(PGconn* conn, const std::map<std::string, DocumentSpec>& specs,
                            const std::vector<TableRef>& followed,
                            std::vector<std::string>* problems,
                            std::vector<std::string>* warnings);

}  // namespace pgflow::documents
