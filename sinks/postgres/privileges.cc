#include "sinks/postgres/privileges.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/postgres/pg_connection.h"

namespace pgflow {
namespace {

// Each kind's catalog row as (owner oid, acl, acldefault's kind letter), found by $1.
const char* CatalogRow(ObjectKind kind) {
  switch (kind) {
    case ObjectKind::kDatabase:
      return "SELECT datdba, datacl, 'd'::\"char\" FROM pg_catalog.pg_database WHERE datname = $1";
    case ObjectKind::kSchema:
      return "SELECT nspowner, nspacl, 'n'::\"char\" FROM pg_catalog.pg_namespace "
             "WHERE nspname = $1";
    case ObjectKind::kTable:
    case ObjectKind::kSequence:
      return "SELECT relowner, relacl, CASE WHEN relkind = 'S' THEN 's' ELSE 'r' END::\"char\" "
             "FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass($1)";
    case ObjectKind::kType:
    case ObjectKind::kDomain:
      return "SELECT typowner, typacl, 'T'::\"char\" FROM pg_catalog.pg_type "
             "WHERE oid = pg_catalog.to_regtype($1)";
    case ObjectKind::kRoutine:
      return "SELECT proowner, proacl, 'f'::\"char\" FROM pg_catalog.pg_proc "
             "WHERE oid = pg_catalog.to_regprocedure($1)";
  }
  return "";
}

std::string Grantee(const std::string& role) { return role.empty() ? "PUBLIC" : QuoteIdent(role); }
std::string GranteeName(const std::string& role) { return role.empty() ? "PUBLIC" : role; }

// The grants compared and copied: run roles' left out, but the owner's, and the privileges
// one side's server does not have (MAINTAIN from a 16 to a 17: acldefault gives it there).
Privileges Compared(Privileges p, const RoleMap& map) {
  const int both = map.source_version == 0   ? map.target_version
                   : map.target_version == 0 ? map.source_version
                                             : std::min(map.source_version, map.target_version);
  std::erase_if(p.grants, [&](const auto& grant) {
    const std::string& grantee = grant.first.first;
    if (both != 0 && PrivilegeSince(grant.first.second) > both) return true;
    return grantee != p.owner && map.IsRunRole(grantee);
  });
  return p;
}

// Privileges of one grantee, in aclexplode's order, comma-separated.
using ByGrantee = std::map<std::string, std::vector<std::string>>;

void AddTo(ByGrantee& group, const std::pair<std::string, std::string>& grant) {
  group[grant.first].push_back(grant.second);
}

}  // namespace

int PrivilegeSince(const std::string& privilege) { return privilege == "MAINTAIN" ? 170000 : 0; }

bool CopiesPrivilegesOf(const Privileges& want, const Privileges& have, const RoleMap& map) {
  return map.IsRunRole(have.owner) || have.owner == want.owner;
}

const char* KindKeyword(ObjectKind kind) {
  switch (kind) {
    case ObjectKind::kDatabase:
      return "DATABASE";
    case ObjectKind::kSchema:
      return "SCHEMA";
    case ObjectKind::kTable:
      return "TABLE";
    case ObjectKind::kSequence:
      return "SEQUENCE";
    case ObjectKind::kType:
      return "TYPE";
    case ObjectKind::kDomain:
      return "DOMAIN";
    case ObjectKind::kRoutine:
      return "ROUTINE";
  }
  return "";
}

absl::Status RunRefusable(PGconn* conn, const std::string& sql, std::string* refused) {
  PgResultPtr res(PQexec(conn, sql.c_str()));
  const ExecStatusType status = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return absl::OkStatus();
  if (PQstatus(conn) != CONNECTION_OK) {
    return absl::UnavailableError(absl::StrCat("lost the connection to ", Describe(conn)));
  }
  const char* message = res ? PQresultErrorField(res.get(), PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  *refused = message != nullptr ? message : "refused";
  return absl::OkStatus();
}

absl::StatusOr<RoleMap> ReadRoleMap(PGconn* source, PGconn* target,
                                    const std::vector<std::string>& more_run_roles) {
  constexpr const char* kSql =
      "SELECT (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10), current_user, "
      "current_setting('server_version_num')::int";
  absl::StatusOr<PgResultPtr> s = Exec(source, kSql);
  if (!s.ok()) return s.status();
  absl::StatusOr<PgResultPtr> t = Exec(target, kSql);
  if (!t.ok()) return t.status();
  RoleMap map;
  map.source_bootstrap = PQgetvalue(s->get(), 0, 0);
  map.target_bootstrap = PQgetvalue(t->get(), 0, 0);
  map.target_user = PQgetvalue(t->get(), 0, 1);
  map.run_roles = {PQgetvalue(s->get(), 0, 1), map.target_user};
  map.source_version = std::atoi(PQgetvalue(s->get(), 0, 2));
  map.target_version = std::atoi(PQgetvalue(t->get(), 0, 2));
  map.run_roles.insert(more_run_roles.begin(), more_run_roles.end());
  return map;
}

absl::StatusOr<std::optional<Privileges>> ReadPrivileges(PGconn* conn, ObjectKind kind,
                                                         const std::string& name) {
  absl::StatusOr<PgResultPtr> res = Exec(
      conn,
      absl::StrCat("SELECT pg_catalog.pg_get_userbyid(o.owner), CASE WHEN a.grantee = 0 THEN '' "
                   "ELSE pg_catalog.pg_get_userbyid(a.grantee) END, a.privilege_type, "
                   "a.is_grantable, o.acl IS NULL FROM (",
                   CatalogRow(kind),
                   ") AS o(owner, acl, kind) LEFT JOIN LATERAL pg_catalog.aclexplode("
                   "coalesce(o.acl, pg_catalog.acldefault(o.kind, o.owner))) a ON true"),
      {name});
  // A routine whose argument type is missing (a table's row type, before the table) is missing
  // too: to_regprocedure finds no routine, and then fails on the type before PostgreSQL 16.
  // (Outside a transaction only: inside one, the error would leave it aborted.)
  if (!res.ok() && kind == ObjectKind::kRoutine && SqlState(res.status()) == "42704" &&
      PQtransactionStatus(conn) == PQTRANS_IDLE) {
    return std::optional<Privileges>();
  }
  if (!res.ok()) return res.status();
  PGresult* r = res->get();
  if (PQntuples(r) == 0) return std::optional<Privileges>();
  Privileges p;
  p.owner = PQgetvalue(r, 0, 0);
  p.default_acl = PQgetvalue(r, 0, 4)[0] == 't';
  for (int i = 0; i < PQntuples(r); ++i) {
    if (PQgetisnull(r, i, 2)) continue;  // an empty ACL: nothing granted, not even to the owner
    p.grants[{PQgetvalue(r, i, 1), PQgetvalue(r, i, 2)}] = PQgetvalue(r, i, 3)[0] == 't';
  }
  return std::optional<Privileges>(std::move(p));
}

Privileges ForTarget(const Privileges& source, const RoleMap& map) {
  Privileges p;
  p.owner = map.Target(source.owner);
  p.default_acl = source.default_acl;
  for (const auto& [grant, grantable] : source.grants) {
    p.grants[{map.Target(grant.first), grant.second}] = grantable;
  }
  return Compared(std::move(p), map);
}

Privileges Reowned(Privileges have, const std::string& owner) {
  Privileges p;
  p.owner = owner;
  for (const auto& [grant, grantable] : have.grants) {
    const std::string& grantee = grant.first == have.owner ? owner : grant.first;
    bool& merged = p.grants[{grantee, grant.second}];
    merged = merged || grantable;
  }
  return p;
}

std::vector<std::string> GrantStatements(const std::string& prefix, const std::string& on,
                                         const Privileges& want, const Privileges& have,
                                         const RoleMap& map) {
  const Privileges w = Compared(want, map);
  const Privileges h = Compared(have, map);
  ByGrantee revoke, revoke_option, grant, grant_option;
  for (const auto& [key, grantable] : h.grants) {
    auto wanted = w.grants.find(key);
    if (wanted == w.grants.end()) {
      AddTo(revoke, key);
    } else if (grantable && !wanted->second) {
      AddTo(revoke_option, key);
    }
  }
  for (const auto& [key, grantable] : w.grants) {
    auto had = h.grants.find(key);
    if (had == h.grants.end() || (grantable && !had->second)) {
      AddTo(grantable ? grant_option : grant, key);
    }
  }
  std::vector<std::string> out;
  auto render = [&](const ByGrantee& group, const char* verb, const char* word,
                    const char* suffix) {
    for (const auto& [grantee, privileges] : group) {
      out.push_back(absl::StrCat(prefix, verb, absl::StrJoin(privileges, ", "), " ON ", on, word,
                                 Grantee(grantee), suffix));
    }
  };
  render(revoke, "REVOKE ", " FROM ", "");
  render(revoke_option, "REVOKE GRANT OPTION FOR ", " FROM ", "");
  render(grant, "GRANT ", " TO ", "");
  render(grant_option, "GRANT ", " TO ", " WITH GRANT OPTION");
  return out;
}

std::vector<std::string> PrivilegeStatements(ObjectKind kind, const std::string& name,
                                             const Privileges& want, const Privileges& have,
                                             const RoleMap& map) {
  std::vector<std::string> out;
  Privileges now = have;
  if (want.owner != have.owner) {
    out.push_back(
        absl::StrCat("ALTER ", KindKeyword(kind), " ", name, " OWNER TO ", QuoteIdent(want.owner)));
    now = Reowned(std::move(now), want.owner);
  }
  if (want.default_acl) return out;  // the target's ACL is left alone, as pg_dump does
  for (std::string& s :
       GrantStatements("", absl::StrCat(KindKeyword(kind), " ", name), want, now, map)) {
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::string> AddedGrantStatements(ObjectKind kind, const std::string& name,
                                              const Privileges& want, const Privileges& have,
                                              const RoleMap& map) {
  if (want.default_acl) return {};
  Privileges added = want;
  std::erase_if(added.grants, [&](const auto& grant) {
    const auto& [key, grantable] = grant;
    if (key.first == want.owner) return true;
    auto had = have.grants.find(key);
    return had != have.grants.end() && (had->second || !grantable);
  });
  // What the target has besides is kept: `have`'s grants stay wanted.
  for (const auto& [key, grantable] : have.grants) added.grants.emplace(key, grantable);
  added.owner = have.owner;
  return GrantStatements("", absl::StrCat(KindKeyword(kind), " ", name), added, have, map);
}

std::vector<std::string> PrivilegeDifferences(const Privileges& want, const Privileges& have,
                                              const RoleMap& map) {
  std::vector<std::string> out;
  if (want.owner != have.owner) {
    out.push_back(
        absl::StrCat("owner ", want.owner, " on the source, ", have.owner, " on the target"));
  }
  const Privileges w = Compared(want, map);
  const Privileges h = Compared(Reowned(have, want.owner), map);
  ByGrantee source_only, target_only, source_option, target_option;
  for (const auto& [key, grantable] : w.grants) {
    auto other = h.grants.find(key);
    if (other == h.grants.end()) {
      AddTo(source_only, key);
    } else if (grantable != other->second) {
      AddTo(grantable ? source_option : target_option, key);
    }
  }
  for (const auto& [key, grantable] : h.grants) {
    if (!w.grants.contains(key)) AddTo(target_only, key);
  }
  auto render = [&](const ByGrantee& group, const char* what) {
    for (const auto& [grantee, privileges] : group) {
      out.push_back(
          absl::StrCat(absl::StrJoin(privileges, ", "), " for ", GranteeName(grantee), what));
    }
  };
  render(source_only, " on the source only");
  render(target_only, " on the target only");
  render(source_option, " WITH GRANT OPTION on the source only");
  render(target_option, " WITH GRANT OPTION on the target only");
  return out;
}

}  // namespace pgflow
