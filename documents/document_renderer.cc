#include "documents/document_renderer.h"

#include <utility>

#include "common/postgres/pg_connection.h"
#include "nlohmann/json.hpp"
#include "schemas/json_encoding.h"

namespace pgflow::documents {
namespace {

using json = nlohmann::json;

// `objects` as a JSON array, `batch` at a time from `from`.
std::string ArrayOf(const std::vector<std::string>& objects, size_t from, size_t batch) {
  std::string out = "[";
  for (size_t i = from; i < objects.size() && i < from + batch; ++i) {
    if (i > from) out += ",";
    out += objects[i];
  }
  return out + "]";
}

}  // namespace

void DocumentRenderer::Note(const Change& change) {
  if (!IsRowChange(change.op) || change.table == nullptr) return;
  const std::vector<DocumentSql::Place>& places =
      sql_->PlacesOf(change.table->QualifiedName());
  if (places.empty()) return;
  if (change.op != Op::kDelete) NoteRow(*change.table, change.after, places);
  if (change.before_kind != BeforeKind::kNone) NoteRow(*change.table, change.before, places);
}

void DocumentRenderer::NoteRow(const TableSchema& table, const Row& row,
                               const std::vector<DocumentSql::Place>& places) {
  const JsonOptions options;
  for (const DocumentSql::Place& place : places) {
    std::string object = "{";
    bool joins = true;
    for (const auto& [column, name] : place.match) {
      size_t i = 0;
      while (i < table.columns.size() && table.columns[i].name != column) ++i;
      // A null joins nothing; a value the change does not carry (an old key's other columns,
      // an unchanged TOASTed value) finds nothing here.
      if (i >= row.size() || row[i].is_null() || row[i].is_unchanged_toast()) {
        joins = false;
        break;
      }
      if (object.size() > 1) object += ",";
      object += json(name).dump() + ":";
      AppendJsonValue(row[i], table.columns[i].type_name, options, &object);
    }
    if (!joins) continue;
    object += "}";
    if (place.roots.empty()) {
      roots_.insert(std::move(object));
    } else {
      lookups_[&place].insert(std::move(object));
    }
  }
}

absl::StatusOr<std::vector<RenderedDocument>> DocumentRenderer::Render(PGconn* conn,
                                                                       size_t batch) {
  for (auto& [place, values] : lookups_) {
    const std::vector<std::string> asked(values.begin(), values.end());
    for (size_t from = 0; from < asked.size(); from += batch) {
      absl::StatusOr<PgResultPtr> found = Exec(conn, place->roots, {ArrayOf(asked, from, batch)});
      if (!found.ok()) return found.status();
      for (int r = 0; r < PQntuples(found->get()); ++r) {
        roots_.insert(PQgetvalue(found->get(), r, 0));
      }
    }
  }
  lookups_.clear();
  // (A key found by a query and the same noted from a row may be written apart, "7" and 7:
  // the render reads both as the type does, and each root is kept once.)
  const std::vector<std::string> asked(roots_.begin(), roots_.end());
  roots_.clear();
  std::map<std::string, RenderedDocument> rendered;
  for (size_t from = 0; from < asked.size(); from += batch) {
    absl::StatusOr<PgResultPtr> result = Exec(conn, sql_->render(), {ArrayOf(asked, from, batch)});
    if (!result.ok()) return result.status();
    PGresult* rows = result->get();
    for (int r = 0; r < PQntuples(rows); ++r) {
      RenderedDocument document;
      document.key = PQgetvalue(rows, r, 0);
      if (PQgetisnull(rows, r, 1) == 0) document.document = PQgetvalue(rows, r, 1);
      std::string key = document.key;  // (jsonb's text: one form for one value)
      rendered.insert_or_assign(std::move(key), std::move(document));
    }
  }
  std::vector<RenderedDocument> out;
  out.reserve(rendered.size());
  for (auto& [key, document] : rendered) out.push_back(std::move(document));
  return out;
}

}  // namespace pgflow::documents
