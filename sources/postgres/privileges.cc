#include "sources/postgres/privileges.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pgflow {
namespace {

// One value per row of `sql`'s first column.
absl::StatusOr<std::vector<std::string>> FirstColumn(PGconn* conn, const std::string& sql,
                                                     const std::vector<std::string>& params) {
  absl::StatusOr<PgResultPtr> res = Exec(conn, sql, params);
  if (!res.ok()) return res.status();
  std::vector<std::string> values;
  for (int i = 0; i < PQntuples(res->get()); ++i) values.push_back(PQgetvalue(res->get(), i, 0));
  return values;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> SourceGrants(PGconn* conn,
                                                      const PostgresSourceOptions& source,
                                                      const std::string& role) {
  const std::string r = QuoteIdent(role);
  const char* db = PQdb(conn);
  std::vector<std::string> sql = {
      "-- Streaming from the replication slot.",
      absl::StrCat("ALTER ROLE ", r, " REPLICATION;"),
      absl::StrCat("GRANT CONNECT ON DATABASE ", QuoteIdent(db != nullptr ? db : ""), " TO ", r,
                   ";"),
      "-- The pipeline's bookkeeping in schema pgflow (created by `pgflow init`).",
      absl::StrCat("GRANT USAGE ON SCHEMA pgflow TO ", r, ";"),
      absl::StrCat("GRANT SELECT, INSERT, UPDATE, DELETE ON pgflow.snapshots, "
                   "pgflow.snapshot_chunks, pgflow.backfills TO ",
                   r, ";"),
      absl::StrCat("GRANT SELECT, DELETE ON pgflow.pipelines TO ", r, ";"),
      absl::StrCat("GRANT USAGE ON SEQUENCE pgflow.backfills_id_seq TO ", r, ";"),
  };
  std::set<std::string> schemas;
  for (const TableRef& ref : source.tables) schemas.insert(ref.schema);
  for (const std::string& schema : schemas) {
    const std::string s = QuoteIdent(schema);
    const bool whole = std::any_of(source.tables.begin(), source.tables.end(), [&](const auto& t) {
      return t.schema == schema && t.table == "*";
    });
    sql.push_back(absl::StrCat("-- Reading schema ", schema,
                               whole ? ": its tables and sequences, today's and later ones."
                                     : ": the tables the pipeline names, and their sequences."));
    sql.push_back(absl::StrCat("GRANT USAGE ON SCHEMA ", s, " TO ", r, ";"));
    if (whole) {
      sql.push_back(absl::StrCat("GRANT SELECT ON ALL TABLES IN SCHEMA ", s, " TO ", r, ";"));
      sql.push_back(absl::StrCat("GRANT SELECT ON ALL SEQUENCES IN SCHEMA ", s, " TO ", r, ";"));
      // Default privileges apply to what a given role creates: the schema's owner and every
      // role that owns a table or sequence there now.
      absl::StatusOr<std::vector<std::string>> creators = FirstColumn(
          conn,
          "SELECT DISTINCT pg_get_userbyid(owner) FROM ("
          "  SELECT n.nspowner AS owner FROM pg_namespace n WHERE n.nspname = $1"
          "  UNION SELECT c.relowner FROM pg_class c JOIN pg_namespace n"
          "    ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'S')"
          ") o WHERE pg_get_userbyid(owner) NOT LIKE 'pg\\_%' ORDER BY 1",
          {schema});
      if (!creators.ok()) return creators.status();
      for (const std::string& creator : *creators) {
        sql.push_back(absl::StrCat("ALTER DEFAULT PRIVILEGES FOR ROLE ", QuoteIdent(creator),
                                   " IN SCHEMA ", s, " GRANT SELECT ON TABLES TO ", r, ";"));
        sql.push_back(absl::StrCat("ALTER DEFAULT PRIVILEGES FOR ROLE ", QuoteIdent(creator),
                                   " IN SCHEMA ", s, " GRANT SELECT ON SEQUENCES TO ", r, ";"));
      }
      continue;
    }
    for (const TableRef& ref : source.tables) {
      if (ref.schema != schema) continue;
      // The table and its partitions and inheritance children (the copy reads each of them).
      absl::StatusOr<std::vector<std::string>> members = FirstColumn(
          conn,
          "WITH RECURSIVE tree(relid) AS (SELECT to_regclass($1)::oid"
          "  UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid) "
          "SELECT format('%I.%I', n.nspname, c.relname) FROM tree t"
          " JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
          "ORDER BY 1",
          {ref.Quoted()});
      if (!members.ok()) return members.status();
      if (members->empty()) members->push_back(ref.Quoted());
      for (const std::string& member : *members) {
        sql.push_back(absl::StrCat("GRANT SELECT ON ", member, " TO ", r, ";"));
      }
      // The sequences its columns own (serial, identity), for `pgflow sequences`.
      absl::StatusOr<std::vector<std::string>> sequences = FirstColumn(
          conn,
          "SELECT DISTINCT d.objid::regclass::text FROM pg_depend d JOIN pg_class s"
          "  ON s.oid = d.objid AND s.relkind = 'S'"
          " WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass"
          "   AND d.refobjid = to_regclass($1) AND d.deptype IN ('a', 'i') ORDER BY 1",
          {ref.Quoted()});
      if (!sequences.ok()) return sequences.status();
      for (const std::string& seq : *sequences) {
        sql.push_back(absl::StrCat("GRANT SELECT ON SEQUENCE ", seq, " TO ", r, ";"));
      }
    }
  }
  return sql;
}

std::vector<std::string> TargetGrants(const std::string& database, const std::string& role,
                                      const std::set<std::string>& schemas) {
  const std::string r = QuoteIdent(role);
  std::vector<std::string> sql = {
      absl::StrCat("-- In the target database ", database,
                   ": schemas and tables created there (pgflow's own schema among them)."),
      absl::StrCat("GRANT CREATE, CONNECT ON DATABASE ", QuoteIdent(database), " TO ", r, ";"),
      "-- Schemas that exist there already (public does): tables created in them.",
  };
  for (const std::string& schema : schemas) {
    sql.push_back(absl::StrCat("GRANT CREATE ON SCHEMA ", QuoteIdent(schema), " TO ", r, ";"));
  }
  sql.push_back(
      "-- Rows written as a replica's: without firing the target's triggers and foreign key "
      "checks (PostgreSQL 15 and later; before, the role must be a superuser).");
  sql.push_back(absl::StrCat("GRANT SET ON PARAMETER session_replication_role TO ", r, ";"));
  return sql;
}

}  // namespace pgflow
