#include "common/postgres/catalog_tables.h"

#include "absl/strings/str_cat.h"
#include "common/postgres/keyless.h"
#include "common/postgres/pg_connection.h"

namespace pgflow {

absl::StatusOr<std::vector<CatalogTable>> TablesNamed(PGconn* conn, const TableRef& ref) {
  auto res =
      Exec(conn,
           absl::StrCat(
               "SELECT n.nspname, c.relname, c.oid, c.relkind = 'p', ", kKeylessCondition,
               ", c.relispartition FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON "
               "n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN "
               "('r', 'p') AND (($2 = '*' AND NOT c.relispartition) OR "
               "c.relname = $2) ORDER BY 2"),
           {ref.schema, ref.table});
  if (!res.ok()) return res.status();
  std::vector<CatalogTable> tables;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    tables.push_back(CatalogTable{.schema = PQgetvalue(res->get(), i, 0),
                                  .name = PQgetvalue(res->get(), i, 1),
                                  .oid = PQgetvalue(res->get(), i, 2),
                                  .partitioned = PQgetvalue(res->get(), i, 3)[0] == 't',
                                  .keyless = PQgetvalue(res->get(), i, 4)[0] == 't',
                                  .partition = PQgetvalue(res->get(), i, 5)[0] == 't'});
  }
  return tables;
}

}  // namespace pgflow
