#include "documents/document_renderer.h"

#include <utility>

#include "common/postgres/pg_connection.h"
#include "engine/str_cat.h"
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

bool DocumentRenderer::Note(const Change& change) {
  if (!IsRowChange(change.op) || change.table == nullptr) return false;
  const std::vector<DocumentSql::Place>& places =
      sql_->PlacesOf(change.table->QualifiedName());
  if (places.empty()) return false;
  if (change.op != Op::kDelete) NoteRow(*change.table, change.after, places);
  if (change.before_kind != BeforeKind::kNone) NoteRow(*change.table, change.before, places);
  return true;
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
      looked_up_ += lookups_[&place].insert(std::move(object)).second ? 1 : 0;
    }
  }
}

absl::Status DocumentRenderer::Render(PGconn* conn, size_t batch, const Emit& emit) {
  // Each batch of roots rendered by one statement; a root asked twice in a batch is handed out
  // once. (A key found by a query and the same noted from a row may be written apart, "7" and
  // 7: the render reads both as the type does.)
  auto render = [&](const std::string& roots) -> absl::Status {
    absl::StatusOr<PgResultPtr> result = Exec(conn, sql_->render(), {roots});
    if (!result.ok()) return result.status();
    PGresult* rows = result->get();
    std::set<std::string> seen;
    for (int r = 0; r < PQntuples(rows); ++r) {
      RenderedDocument document;
      document.key = PQgetvalue(rows, r, 0);  // (jsonb's text: one form for one value)
      if (!seen.insert(document.key).second) continue;
      if (PQgetisnull(rows, r, 1) == 0) document.document = PQgetvalue(rows, r, 1);
      document.id = PQgetvalue(rows, r, 2);
      if (absl::Status s = emit(std::move(document)); !s.ok()) return s;
    }
    return absl::OkStatus();
  };
  // Roots a query finds (every root, or those a lookup finds) are read through a cursor,
  // `batch` at a time, and rendered as they come: a row shared by a million documents never
  // has their keys in memory at once.
  auto through_cursor = [&](const std::string& query,
                            const std::vector<std::string>& params) -> absl::Status {
    absl::Status status = Exec(conn, "BEGIN").status();
    if (status.ok()) {
      status = Exec(conn, "DECLARE pgflow_roots NO SCROLL CURSOR FOR " + query, params).status();
    }
    while (status.ok()) {
      absl::StatusOr<PgResultPtr> page = Exec(conn, Cat("FETCH ", batch, " FROM pgflow_roots"));
      if (!page.ok()) {
        status = page.status();
        break;
      }
      const int n = PQntuples(page->get());
      if (n == 0) break;
      std::string roots = "[";
      for (int r = 0; r < n; ++r) {
        if (r > 0) roots += ",";
        roots += PQgetvalue(page->get(), r, 0);
      }
      status = render(roots + "]");
    }
    if (!status.ok()) {
      Exec(conn, "ROLLBACK").IgnoreError();
      return status;
    }
    return Exec(conn, "COMMIT").status();
  };
  auto lookups = std::move(lookups_);
  lookups_.clear();
  looked_up_ = 0;
  const std::vector<std::string> asked(roots_.begin(), roots_.end());
  roots_.clear();
  if (std::exchange(every_root_, false)) {
    // Every root there is (the lookups find some of them); the roots noted, after, for those
    // gone since.
    if (absl::Status s = through_cursor(sql_->every_root(), {}); !s.ok()) return s;
  } else {
    for (auto& [place, values] : lookups) {
      const std::vector<std::string> looked(values.begin(), values.end());
      for (size_t from = 0; from < looked.size(); from += batch) {
        absl::Status s = through_cursor(place->roots, {ArrayOf(looked, from, batch)});
        if (!s.ok()) return s;
      }
    }
  }
  for (size_t from = 0; from < asked.size(); from += batch) {
    if (absl::Status s = render(ArrayOf(asked, from, batch)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RenderedDocument>> DocumentRenderer::Render(PGconn* conn,
                                                                       size_t batch) {
  std::map<std::string, RenderedDocument> rendered;
  absl::Status status = Render(conn, batch, [&](RenderedDocument document) {
    std::string key = document.key;
    rendered.insert_or_assign(std::move(key), std::move(document));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  std::vector<RenderedDocument> out;
  out.reserve(rendered.size());
  for (auto& [key, document] : rendered) out.push_back(std::move(document));
  return out;
}

}  // namespace pgflow::documents
