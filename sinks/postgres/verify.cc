#include "sinks/postgres/verify.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/pg_connection.h"

namespace pgflow {
namespace {

struct KeyColumn {
  std::string name;  // quoted
  std::string type;  // format_type, for literals
};

struct Table {
  std::string schema;
  std::string name;
  std::vector<std::string> columns;  // quoted, in order
  std::vector<KeyColumn> key;
};

absl::StatusOr<std::vector<Table>> ResolveTables(PGconn* source,
                                                 const std::vector<TableRef>& refs) {
  std::vector<Table> tables;
  for (const TableRef& ref : refs) {
    auto res = Exec(source,
                    "SELECT n.nspname, c.relname, c.oid FROM pg_class c JOIN pg_namespace n ON "
                    "n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND "
                    "NOT c.relispartition AND ($2 = '*' OR c.relname = $2) ORDER BY 2",
                    {ref.schema, ref.table});
    if (!res.ok()) return res.status();
    for (int i = 0; i < PQntuples(res->get()); ++i) {
      Table t;
      t.schema = PQgetvalue(res->get(), i, 0);
      t.name = PQgetvalue(res->get(), i, 1);
      std::string oid = PQgetvalue(res->get(), i, 2);
      auto cols = Exec(source,
                       "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
                       "array_position((SELECT x.indkey FROM pg_index x WHERE x.indrelid = "
                       "a.attrelid AND x.indisprimary)::int2[], a.attnum) "
                       "FROM pg_attribute a WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT "
                       "a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
                       {oid});
      if (!cols.ok()) return cols.status();
      std::vector<std::pair<int, KeyColumn>> key;
      for (int r = 0; r < PQntuples(cols->get()); ++r) {
        std::string name = QuoteIdent(PQgetvalue(cols->get(), r, 0));
        t.columns.push_back(name);
        if (!PQgetisnull(cols->get(), r, 2)) {
          key.push_back({std::stoi(PQgetvalue(cols->get(), r, 2)),
                         KeyColumn{name, PQgetvalue(cols->get(), r, 1)}});
        }
      }
      std::sort(key.begin(), key.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      for (auto& [position, column] : key) t.key.push_back(std::move(column));
      tables.push_back(std::move(t));
    }
  }
  return tables;
}

std::string KeyTuple(const Table& t) {
  std::vector<std::string> names;
  for (const KeyColumn& k : t.key) names.push_back(k.name);
  return absl::StrCat("(", absl::StrJoin(names, ", "), ")");
}

// (lit::type, ...) for one boundary, values as the source printed them.
std::string Literal(const Table& t, const std::vector<std::string>& values) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < values.size(); ++i) {
    parts.push_back(absl::StrCat(QuoteLiteral(values[i]), "::", t.key[i].type));
  }
  return absl::StrCat("(", absl::StrJoin(parts, ", "), ")");
}

struct RangeResult {
  int64_t rows = 0;
  std::string hash;
};

absl::StatusOr<RangeResult> HashRange(PGconn* conn, const std::string& qualified, const Table& t,
                                      const std::string& where) {
  std::vector<std::string> order;
  for (const KeyColumn& k : t.key) order.push_back(k.name);
  std::string sql = absl::StrCat("SELECT count(*), coalesce(md5(string_agg(md5(ROW(",
                                 absl::StrJoin(t.columns, ", "), ")::text), '' ORDER BY ",
                                 absl::StrJoin(order, ", "), ")), '') FROM ", qualified,
                                 where.empty() ? "" : " WHERE ", where);
  auto res = Exec(conn, sql);
  if (!res.ok()) return res.status();
  return RangeResult{std::stoll(PQgetvalue(res->get(), 0, 0)), PQgetvalue(res->get(), 0, 1)};
}

}  // namespace

absl::StatusOr<VerifyReport> Verify(const VerifyOptions& options,
                                    const std::function<void(const std::string&)>& progress) {
  absl::StatusOr<PgConnPtr> source = Connect(options.source_url, ConnectionKind::kRegular);
  if (!source.ok()) return source.status();
  absl::StatusOr<PgConnPtr> target = Connect(options.target_url, ConnectionKind::kRegular);
  if (!target.ok()) return target.status();
  absl::StatusOr<std::vector<Table>> tables = ResolveTables(source->get(), options.tables);
  if (!tables.ok()) return tables.status();

  VerifyReport report;
  for (const Table& t : *tables) {
    ++report.tables;
    const std::string name = absl::StrCat(t.schema, ".", t.name);
    const std::string schema = options.target_schema.empty() ? t.schema : options.target_schema;
    const std::string source_table = absl::StrCat(QuoteIdent(t.schema), ".", QuoteIdent(t.name));
    const std::string target_table = absl::StrCat(QuoteIdent(schema), ".", QuoteIdent(t.name));
    if (t.key.empty()) {
      report.problems.push_back(absl::StrCat(name, " has no primary key: not compared"));
      progress(report.problems.back());
      continue;
    }
    auto exists = Exec(target->get(), "SELECT to_regclass($1) IS NOT NULL", {target_table});
    if (!exists.ok()) return exists.status();
    if (PQgetvalue(exists->get(), 0, 0)[0] != 't') {
      report.problems.push_back(
          absl::StrCat(name, " is missing on the target (", schema, ".", t.name, ")"));
      progress(report.problems.back());
      continue;
    }
    // Upper bounds of `ranges` key ranges of about equal row counts, from the source.
    std::vector<std::string> key_text;
    std::vector<std::string> key_desc;
    for (const KeyColumn& k : t.key) {
      key_text.push_back(absl::StrCat("format('%s', ", k.name, ")"));
      key_desc.push_back(absl::StrCat(k.name, " DESC"));
    }
    auto bounds = Exec(
        source->get(),
        absl::StrCat("SELECT DISTINCT ON (b) ", absl::StrJoin(key_text, ", "), " FROM (SELECT *, ",
                     "ntile(", options.ranges, ") OVER (ORDER BY ", KeyTuple(t), ") AS b FROM ",
                     source_table, ") s ORDER BY b, ", absl::StrJoin(key_desc, ", ")));
    if (!bounds.ok()) return bounds.status();
    std::vector<std::string> wheres;
    std::string lower;
    const int n = PQntuples(bounds->get());
    for (int i = 0; i < n; ++i) {
      std::vector<std::string> values;
      for (size_t k = 0; k < t.key.size(); ++k) values.push_back(PQgetvalue(bounds->get(), i, k));
      std::string upper = Literal(t, values);
      std::vector<std::string> parts;
      if (!lower.empty()) parts.push_back(absl::StrCat(KeyTuple(t), " > ", lower));
      // The last range stays open above: rows only the target has past the end are counted.
      if (i + 1 < n) parts.push_back(absl::StrCat(KeyTuple(t), " <= ", upper));
      wheres.push_back(absl::StrJoin(parts, " AND "));
      lower = upper;
    }
    if (wheres.empty()) wheres.push_back("");  // an empty source table: the whole target
    int64_t rows = 0;
    size_t differing = 0;
    for (const std::string& where : wheres) {
      absl::StatusOr<RangeResult> a = HashRange(source->get(), source_table, t, where);
      if (!a.ok()) return a.status();
      absl::StatusOr<RangeResult> b = HashRange(target->get(), target_table, t, where);
      if (!b.ok()) return b.status();
      rows += a->rows;
      if (a->rows != b->rows || a->hash != b->hash) {
        ++differing;
        report.differences.push_back(
            RangeDifference{name, where.empty() ? "all rows" : where, a->rows, b->rows});
      }
    }
    report.rows += rows;
    progress(differing == 0
                 ? absl::StrCat(name, ": ", rows, " rows in ", wheres.size(), " ranges: identical")
                 : absl::StrCat(name, ": ", differing, " of ", wheres.size(), " ranges differ"));
  }
  return report;
}

}  // namespace pgflow
