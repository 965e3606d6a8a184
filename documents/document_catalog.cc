#include "documents/document_catalog.h"

#include <cstdlib>
#include <string>

#include "common/postgres/pg_connection.h"

namespace pgflow::documents {

absl::StatusOr<Catalog> ReadCatalog(PGconn* conn, const std::vector<TableRef>& tables) {
  auto [schemas, names] = TableRefArrays(tables);
  absl::StatusOr<PgResultPtr> result = Exec(
      conn,
      "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
      // (indkey's subscripts start at 0: the key's first column is at position 1 here.)
      "coalesce(array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1) "
      "+ 1, 0) "
      "FROM unnest($1::text[], $2::text[]) AS r(nsp, rel) "
      "JOIN pg_namespace n ON n.nspname = r.nsp "
      "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = r.rel AND c.relkind IN ('r', 'p') "
      "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
      "LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary "
      "ORDER BY 1, 2, 5, a.attnum",
      {schemas, names});
  if (!result.ok()) return result.status();
  Catalog catalog;
  PGresult* rows = result->get();
  for (int row = 0; row < PQntuples(rows); ++row) {
    const TableRef table{PQgetvalue(rows, row, 0), PQgetvalue(rows, row, 1)};
    TableColumns& columns = catalog[table.ToString()];
    const std::string column = PQgetvalue(rows, row, 2);
    columns.types[column] = PQgetvalue(rows, row, 3);
    // (Ordered by the key's position: the key's columns come in its order.)
    if (std::atoi(PQgetvalue(rows, row, 4)) > 0) columns.key.push_back(column);
  }
  return catalog;
}

}  // namespace pgflow::documents
