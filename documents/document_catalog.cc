#include "documents/document_catalog.h"

#include <cstdlib>
#include <string>

#include <algorithm>
#include <map>
#include <set>

#include "common/postgres/pg_connection.h"
#include "engine/str_cat.h"

namespace pgflow::documents {

absl::StatusOr<Catalog> ReadCatalog(PGconn* conn, const std::vector<TableRef>& tables) {
  auto [schemas, names] = TableRefArrays(tables);
  absl::StatusOr<PgResultPtr> result = Exec(
      conn,
      "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
      // (indkey's subscripts start at 0: the key's first column is at position 1 here.)
      "coalesce(array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1) "
      "+ 1, 0), a.attnum, a.atttypid, a.atttypmod, "
      // (Types not built in are named, as the stream's Type messages name them.)
      "CASE WHEN a.atttypid >= 16384 THEN tn.nspname || '.' || t.typname ELSE '' END "
      "FROM unnest($1::text[], $2::text[]) AS r(nsp, rel) "
      "JOIN pg_namespace n ON n.nspname = r.nsp "
      "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = r.rel AND c.relkind IN ('r', 'p') "
      "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
      "JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace "
      "LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary "
      "ORDER BY 1, 2, 5, a.attnum",
      {schemas, names});
  if (!result.ok()) return result.status();
  Catalog catalog;
  std::map<std::string, std::vector<std::pair<int, Column>>> by_attnum;
  PGresult* rows = result->get();
  for (int row = 0; row < PQntuples(rows); ++row) {
    const TableRef table{PQgetvalue(rows, row, 0), PQgetvalue(rows, row, 1)};
    TableColumns& columns = catalog[table.ToString()];
    const std::string column = PQgetvalue(rows, row, 2);
    columns.types[column] = PQgetvalue(rows, row, 3);
    // (Ordered by the key's position: the key's columns come in its order.)
    const bool is_key = std::atoi(PQgetvalue(rows, row, 4)) > 0;
    if (is_key) columns.key.push_back(column);
    by_attnum[table.ToString()].emplace_back(
        std::atoi(PQgetvalue(rows, row, 5)),
        Column{column, static_cast<uint32_t>(std::strtoul(PQgetvalue(rows, row, 6), nullptr, 10)),
               std::atoi(PQgetvalue(rows, row, 7)), is_key, PQgetvalue(rows, row, 8)});
  }
  for (auto& [table, columns] : by_attnum) {
    std::sort(columns.begin(), columns.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [attnum, column] : columns) catalog[table].columns.push_back(std::move(column));
  }
  return catalog;
}

namespace {

// The leading columns of each valid index of `table` (an expression ends the list).
absl::StatusOr<std::vector<std::vector<std::string>>> IndexColumns(PGconn* conn,
                                                                   const TableRef& table) {
  absl::StatusOr<PgResultPtr> result = Exec(
      conn,
      "SELECT i.indexrelid, a.attname FROM pg_index i "
      "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
      "CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position) "
      "LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
      "WHERE n.nspname = $1 AND c.relname = $2 AND i.indisvalid AND i.indpred IS NULL "
      "ORDER BY 1, k.position",
      {table.schema, table.table});
  if (!result.ok()) return result.status();
  std::vector<std::vector<std::string>> indexes;
  std::string current;
  bool ended = false;
  for (int row = 0; row < PQntuples(result->get()); ++row) {
    const std::string index = PQgetvalue(result->get(), row, 0);
    if (index != current) {
      indexes.emplace_back();
      current = index;
      ended = false;
    }
    if (PQgetisnull(result->get(), row, 1) != 0) ended = true;  // an expression
    if (!ended) indexes.back().push_back(PQgetvalue(result->get(), row, 1));
  }
  return indexes;
}

// Whether an index of `indexes` leads with exactly `columns` (in any order).
bool Served(const std::vector<std::vector<std::string>>& indexes,
            std::vector<std::string> columns) {
  std::sort(columns.begin(), columns.end());
  for (const std::vector<std::string>& index : indexes) {
    if (index.size() < columns.size()) continue;
    std::vector<std::string> leading(index.begin(), index.begin() + columns.size());
    std::sort(leading.begin(), leading.end());
    if (leading == columns) return true;
  }
  return false;
}

// Whether `table` sends whole old rows (REPLICA IDENTITY FULL).
absl::StatusOr<bool> SendsOldRows(PGconn* conn, const TableRef& table) {
  absl::StatusOr<PgResultPtr> result =
      Exec(conn,
           "SELECT c.relreplident = 'f' FROM pg_class c JOIN pg_namespace n ON n.oid = "
           "c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
           {table.schema, table.table});
  if (!result.ok()) return result.status();
  return PQntuples(result->get()) > 0 && PQgetvalue(result->get(), 0, 0)[0] == 't';
}

// A problem for each child joined on columns outside its key whose table does not send whole
// old rows: an update moving a row from one document to another would leave the first stale
// (the change carries no old values, or only the old key).
absl::Status OldRowsNeeded(PGconn* conn, const DocumentNode& node, const Catalog& catalog,
                           std::vector<std::string>* problems) {
  for (const DocumentNode& child : node.children) {
    const TableColumns& columns = catalog.at(child.table.ToString());
    std::string outside;
    for (const auto& [column, unused] : child.on) {
      if (std::find(columns.key.begin(), columns.key.end(), column) == columns.key.end()) {
        outside += Cat(outside.empty() ? "" : ", ", QuoteIdent(column));
      }
    }
    if (!outside.empty()) {
      absl::StatusOr<bool> full = SendsOldRows(conn, child.table);
      if (!full.ok()) return full.status();
      if (!*full) {
        problems->push_back(Cat(
            child.path, ": ", child.table.ToString(), " joins on (", outside,
            "), outside its key, and sends no whole old rows: a row moved from one document to "
            "another would leave the first stale; ALTER TABLE ", child.table.Quoted(),
            " REPLICA IDENTITY FULL"));
      }
    }
    if (absl::Status s = OldRowsNeeded(conn, child, catalog, problems); !s.ok()) return s;
  }
  return absl::OkStatus();
}

class Checker {
 public:
  Checker(PGconn* conn, std::vector<std::string>* warnings) : conn_(conn), warnings_(warnings) {}

  // The joins below `node`, both ways.
  absl::Status Joins(const DocumentNode& node) {
    for (const DocumentNode& child : node.children) {
      std::vector<std::string> mine, theirs;
      for (const auto& [column, parent_column] : child.on) {
        mine.push_back(column);
        theirs.push_back(parent_column);
      }
      if (absl::Status s = Need(child.path, child.table, mine, "a render finds the join's rows");
          !s.ok()) {
        return s;
      }
      absl::Status s =
          Need(child.path, node.table, theirs,
               Cat("a changed row of ", child.table.ToString(), " finds its documents"));
      if (!s.ok()) return s;
      s = Joins(child);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Need(const std::string& path, const TableRef& table,
                    const std::vector<std::string>& columns, const std::string& why) {
    auto known = indexes_.find(table.ToString());
    if (known == indexes_.end()) {
      absl::StatusOr<std::vector<std::vector<std::string>>> read = IndexColumns(conn_, table);
      if (!read.ok()) return read.status();
      known = indexes_.emplace(table.ToString(), *std::move(read)).first;
    }
    if (Served(known->second, columns)) return absl::OkStatus();
    std::string list;
    for (const std::string& column : columns) {
      list += Cat(list.empty() ? "" : ", ", QuoteIdent(column));
    }
    const std::string make = Cat("CREATE INDEX ON ", table.Quoted(), " (", list, ")");
    if (!suggested_.insert(make).second) return absl::OkStatus();
    warnings_->push_back(Cat(path, ": no index of ", table.ToString(), " leads with (", list,
                             "), by which ", why, ": each such look reads the whole table; ",
                             make));
    return absl::OkStatus();
  }

  PGconn* conn_;
  std::vector<std::string>* warnings_;
  std::map<std::string, std::vector<std::vector<std::string>>> indexes_;
  std::set<std::string> suggested_;
};

}  // namespace

absl::Status CheckDocuments(PGconn* conn, const std::map<std::string, DocumentSpec>& specs,
                            const std::vector<TableRef>& followed,
                            std::vector<std::string>* problems,
                            std::vector<std::string>* warnings) {
  Checker checker(conn, warnings);
  for (const auto& [name, spec] : specs) {
    const std::vector<TableRef> tables = spec.Tables();
    for (const TableRef& table : tables) {
      const bool is_followed =
          std::any_of(followed.begin(), followed.end(), [&](const TableRef& t) {
            return t.schema == table.schema && t.table == table.table;
          });
      if (!is_followed) {
        problems->push_back(Cat("documents.", name, ": ", table.ToString(),
                                " is not among the tables the source follows: add it to "
                                "source.postgres.tables (its changes change the documents)"));
      }
    }
    absl::StatusOr<Catalog> catalog = ReadCatalog(conn, tables);
    if (!catalog.ok()) return catalog.status();
    absl::StatusOr<DocumentSql> sql = DocumentSql::Make(spec, *catalog);
    if (!sql.ok()) {
      problems->push_back(std::string(sql.status().message()));
      continue;
    }
    if (absl::Status s = OldRowsNeeded(conn, spec.root, *catalog, problems); !s.ok()) return s;
    if (absl::Status s = checker.Joins(spec.root); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace pgflow::documents
