// `pgflow teardown`'s part in a PostgreSQL target (TeardownTarget, postgres_sink.h).

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/postgres/pg_connection.h"
#include "schemas/pg_array_literal.h"
#include "sinks/postgres/postgres_sink.h"
#include "sinks/postgres/table_definition.h"

namespace pgflow {
namespace {

// The sink's bookkeeping in schema pgflow; anything else there is someone else's.
constexpr const char* kBookkeeping[] = {"applied", "pending_ddl", "dead_letters"};

absl::StatusOr<std::string> Scalar(PGconn* conn, const std::string& sql,
                                   const std::vector<std::string>& params = {}) {
  absl::StatusOr<PgResultPtr> res = Exec(conn, sql, params);
  if (!res.ok()) return res.status();
  return PQgetisnull(res->get(), 0, 0) ? std::string() : std::string(PQgetvalue(res->get(), 0, 0));
}

// Deletes the pipeline's rows from the bookkeeping tables that exist; returns what else they
// hold, and the pipeline's refused rows, which are kept.
absl::StatusOr<std::vector<std::string>> RemoveRows(PGconn* conn, const std::string& pipeline,
                                                    TargetTeardown* report) {
  std::vector<std::string> others;
  for (const char* table : kBookkeeping) {
    const std::string name = absl::StrCat("pgflow.", table);
    absl::StatusOr<std::string> present =
        Scalar(conn, "SELECT to_regclass($1) IS NOT NULL", {name});
    if (!present.ok()) return present.status();
    if (*present != "t") continue;
    const bool letters = std::string_view(table) == "dead_letters";
    absl::StatusOr<std::string> count = Scalar(
        conn,
        absl::StrCat(letters ? "SELECT count(*) FROM " : "WITH d AS (DELETE FROM ", name,
                     " WHERE pipeline = $1", letters ? "" : " RETURNING 1) SELECT count(*) FROM d"),
        {pipeline});
    if (!count.ok()) return count.status();
    if (letters && *count != "0") {
      report->kept.push_back(absl::StrCat(
          *count, " refused row(s) of pipeline ", pipeline, " in ", name, " of ", Describe(conn),
          " (`pgflow dlq list` shows them; `pgflow dlq purge --all`, then `pgflow teardown` "
          "again, removes them with schema pgflow)"));
    }
    absl::StatusOr<std::string> rest = Scalar(conn, absl::StrCat("SELECT count(*) FROM ", name));
    if (!rest.ok()) return rest.status();
    if (*rest != "0") others.push_back(absl::StrCat(*rest, " row(s) in ", name));
  }
  return others;
}

// Every object left in schema pgflow, as PostgreSQL describes them ("view pgflow.report,
// function pgflow.f(integer)"): what DROP SCHEMA pgflow (RESTRICT) refused to take.
absl::StatusOr<std::string> RemainingObjects(PGconn* conn) {
  return Scalar(conn,
                "SELECT string_agg(o, ', ' ORDER BY o) FROM (SELECT pg_describe_object(d.classid, "
                "d.objid, d.objsubid) AS o FROM pg_depend d WHERE d.refclassid = "
                "'pg_namespace'::regclass AND d.refobjid = 'pgflow'::regnamespace AND "
                "d.deptype = 'n') x");
}

// Runs `sql` under a savepoint: on a refusal, rolls back to it and returns the refusal as OK's
// message (empty when done); a lost connection is an error.
absl::StatusOr<std::string> Try(PGconn* conn, const std::string& sql) {
  if (absl::Status s = Exec(conn, "SAVEPOINT pgflow_teardown").status(); !s.ok()) return s;
  absl::Status done = Exec(conn, sql).status();
  if (absl::IsUnavailable(done)) return done;
  if (absl::Status s = Exec(conn, done.ok() ? "RELEASE SAVEPOINT pgflow_teardown"
                                            : "ROLLBACK TO SAVEPOINT pgflow_teardown")
                           .status();
      !s.ok()) {
    return s;
  }
  return done.ok() ? std::string() : std::string(done.message());
}

// Drops the sink's bookkeeping tables, then schema pgflow if nothing else is in it. Never
// CASCADE: what is not pgflow's (a view on a bookkeeping table, a type, an extension in the
// schema) stays, and the report says what and how to remove it.
absl::Status DropSchema(PGconn* conn, TargetTeardown* report) {
  const std::string where = Describe(conn);
  std::vector<std::string> tables;
  for (const char* table : kBookkeeping) tables.push_back(absl::StrCat("pgflow.", table));
  const std::string drop_tables =
      absl::StrCat("DROP TABLE IF EXISTS ", absl::StrJoin(tables, ", "));
  absl::StatusOr<std::string> refused = Try(conn, drop_tables);
  if (!refused.ok()) return refused.status();
  if (!refused->empty()) {
    report->kept.push_back(
        absl::StrCat("schema pgflow in ", where, " and the sink's bookkeeping tables there (",
                     *refused, "): once what depends on them is not needed, `", drop_tables,
                     "; DROP SCHEMA pgflow` as their owner removes them"));
    return absl::OkStatus();
  }
  refused = Try(conn, "DROP SCHEMA pgflow");
  if (!refused.ok()) return refused.status();
  if (refused->empty()) {
    report->removed.push_back(
        absl::StrCat("schema pgflow (the sink's applied position and pending DDL) in ", where));
    return absl::OkStatus();
  }
  report->removed.push_back(
      absl::StrCat("the sink's bookkeeping tables in schema pgflow in ", where));
  absl::StatusOr<std::string> remaining = RemainingObjects(conn);
  if (!remaining.ok()) return remaining.status();
  report->kept.push_back(absl::StrCat(
      "schema pgflow in ", where, ", which still holds what is not pgflow's",
      remaining->empty() ? absl::StrCat(" (", *refused, ")") : absl::StrCat(": ", *remaining),
      " (once none of it is needed: `DROP SCHEMA pgflow CASCADE` as its owner)"));
  return absl::OkStatus();
}

// The memberships of the target's role in the owners of the pipeline's tables: what lets it
// give them their owner and write to them (CopyRoles grants them).
absl::Status NameMemberships(PGconn* conn, const PostgresSinkOptions& options,
                             const std::vector<TableRef>& tables, TargetTeardown* report) {
  std::set<std::string> schemas;
  for (const TableRef& ref : tables) schemas.insert(MapSchema(options.schema, ref.schema));
  absl::StatusOr<PgResultPtr> res = Exec(
      conn,
      "SELECT DISTINCT r.rolname, current_user FROM pg_auth_members m JOIN pg_roles r ON r.oid = "
      "m.roleid WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND "
      "EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
      "c.relowner = r.oid AND n.nspname = ANY($1::text[])) ORDER BY 1",
      {ArrayLiteral(std::vector<std::string>(schemas.begin(), schemas.end()))});
  if (!res.ok()) return res.status();
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    const std::string role = PQgetvalue(res->get(), i, 0);
    const std::string user = PQgetvalue(res->get(), i, 1);
    report->kept.push_back(absl::StrCat(
        "role ", user, "'s membership in ", role, " in ", Describe(conn),
        " (it gives the tables their owner and writes to them): once no pipeline writes there, "
        "`REVOKE ",
        QuoteIdent(role), " FROM ", QuoteIdent(user), "` as a superuser, or drop role ", user));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TargetTeardown> TeardownTarget(const std::string& pipeline,
                                              const PostgresSinkOptions& options,
                                              const std::vector<TableRef>& tables) {
  absl::StatusOr<PgConnPtr> connected = Connect(options.url, ConnectionKind::kRegular);
  if (!connected.ok()) return connected.status();
  PGconn* conn = connected->get();
  TargetTeardown report;
  if (absl::Status s = NameMemberships(conn, options, tables, &report); !s.ok()) return s;
  absl::StatusOr<std::string> schema = Scalar(conn, "SELECT to_regnamespace('pgflow') IS NOT NULL");
  if (!schema.ok()) return schema.status();
  if (*schema != "t") return report;
  if (absl::Status s = Exec(conn, "BEGIN").status(); !s.ok()) return s;
  absl::StatusOr<std::vector<std::string>> others = RemoveRows(conn, pipeline, &report);
  if (!others.ok()) {
    Exec(conn, "ROLLBACK").IgnoreError();
    return others.status();
  }
  const std::string where = Describe(conn);
  if (others->empty()) {
    if (absl::Status s = DropSchema(conn, &report); !s.ok()) {
      Exec(conn, "ROLLBACK").IgnoreError();
      return s;
    }
  } else {
    report.removed.push_back(
        absl::StrCat("pipeline ", pipeline, "'s rows in schema pgflow in ", where));
    report.kept.push_back(absl::StrCat("schema pgflow in ", where, ", which also holds ",
                                       absl::StrJoin(*others, ", "),
                                       " (other pipelines' bookkeeping: `pgflow teardown` of the "
                                       "last of them removes it)"));
  }
  if (absl::Status s = Exec(conn, "COMMIT").status(); !s.ok()) return s;
  return report;
}

}  // namespace pgflow
