#include "sinks/postgres/sequences.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/postgres/pg_connection.h"
#include "sinks/postgres/table_definition.h"

namespace pgflow {
namespace {

std::string Get(PGresult* res, int row, int column) {
  return PQgetisnull(res, row, column) ? std::string() : std::string(PQgetvalue(res, row, column));
}

absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

}  // namespace

absl::StatusOr<std::vector<SequencePair>> ReadTableSequences(PGconn* source,
                                                             const std::vector<TableRef>& tables,
                                                             const std::string& mapped_schema) {
  std::map<std::string, SequencePair> found;
  for (const TableRef& ref : tables) {
    absl::StatusOr<PgResultPtr> res = Exec(
        source,
        "WITH t AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "  WHERE n.nspname = $1 AND ($2 = '*' OR c.relname = $2) AND c.relkind IN ('r', 'p')) "
        "SELECT n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'S' AND c.oid IN ("
        "  SELECT d.objid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND "
        "    d.refclassid = 'pg_class'::regclass AND d.refobjid IN (SELECT oid FROM t) AND "
        "    d.deptype IN ('a', 'i') "
        "  UNION SELECT d.refobjid FROM pg_depend d JOIN pg_attrdef ad ON d.classid = "
        "    'pg_attrdef'::regclass AND d.objid = ad.oid WHERE ad.adrelid IN (SELECT oid FROM t) "
        "    AND d.refclassid = 'pg_class'::regclass)",
        {ref.schema, ref.table});
    if (!res.ok()) {
      return Annotate(res.status(), absl::StrCat("finding the sequences of ", ref.ToString(),
                                                 " in the source ", Describe(source)));
    }
    for (int i = 0; i < PQntuples(res->get()); ++i) {
      PGresult* r = res->get();
      SequencePair pair;
      pair.source = Get(r, i, 2);
      pair.target = absl::StrCat(QuoteIdent(MapSchema(mapped_schema, Get(r, i, 0))), ".",
                                 QuoteIdent(Get(r, i, 1)));
      found.emplace(pair.source, std::move(pair));
    }
  }
  std::vector<SequencePair> out;
  for (auto& [name, pair] : found) out.push_back(std::move(pair));
  return out;
}

absl::StatusOr<SequenceCopyResult> CopySequenceValues(PGconn* source, PGconn* target,
                                                      const std::vector<SequencePair>& sequences) {
  SequenceCopyResult result;
  for (const SequencePair& s : sequences) {
    absl::StatusOr<PgResultPtr> value =
        Exec(source, absl::StrCat("SELECT last_value, is_called FROM ", s.source));
    if (!value.ok()) {
      return Annotate(value.status(), absl::StrCat("reading sequence ", s.source, " in the source ",
                                                   Describe(source)));
    }
    const std::string last_value = Get(value->get(), 0, 0);
    const std::string is_called = Get(value->get(), 0, 1);
    absl::StatusOr<PgResultPtr> set =
        Exec(target,
             "SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE "
             "setval(to_regclass($1), $2::bigint, $3::bool) END",
             {s.target, last_value, is_called});
    if (!set.ok()) {
      return Annotate(set.status(), absl::StrCat("setting sequence ", s.target, " in the target ",
                                                 Describe(target)));
    }
    if (PQgetisnull(set->get(), 0, 0)) {
      result.missing.push_back(s.target);
      continue;
    }
    ++result.copied;
  }
  return result;
}

absl::StatusOr<SequenceCopyResult> CopyTableSequences(PGconn* source, PGconn* target,
                                                      const std::vector<TableRef>& tables,
                                                      const std::string& mapped_schema) {
  absl::StatusOr<std::vector<SequencePair>> sequences =
      ReadTableSequences(source, tables, mapped_schema);
  if (!sequences.ok()) return sequences.status();
  return CopySequenceValues(source, target, *sequences);
}

}  // namespace pgflow
