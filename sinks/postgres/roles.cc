#include "sinks/postgres/roles.h"

#include <map>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/postgres/pg_connection.h"
#include "engine/str_cat.h"
#include "schemas/pg_array_literal.h"
#include "sinks/postgres/schema_objects.h"

namespace pgflow {
namespace {

// $1, $2: the followed tables (TableRefArrays); $3: the run roles. Rows: role, owns an object.
std::string NeededRolesSql() {
  return absl::StrCat(
      "WITH RECURSIVE followed(relid) AS ("
      "  SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
      "  JOIN unnest($1::text[], $2::text[]) AS r(nsp, rel)"
      "    ON n.nspname = r.nsp AND (r.rel = '*' OR c.relname = r.rel)"
      "  WHERE c.relkind IN ('r', 'p')"
      "  UNION SELECT i.inhrelid FROM pg_inherits i JOIN followed f ON i.inhparent = f.relid),"
      // Sequences the tables own (serial, identity) or call in a default.
      " sequences(relid) AS ("
      "  SELECT d.objid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
      "    AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')"
      "    AND d.refobjid IN (SELECT relid FROM followed)"
      "  UNION SELECT d.refobjid FROM pg_depend d JOIN pg_attrdef ad"
      "    ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid"
      "  WHERE ad.adrelid IN (SELECT relid FROM followed) AND d.refclassid = 'pg_class'::regclass),"
      " objects(owner, acl) AS ("
      "  SELECT relowner, relacl FROM pg_class WHERE oid IN (SELECT relid FROM followed)"
      "    OR (relkind = 'S' AND oid IN (SELECT relid FROM sequences))"
      "  UNION ALL SELECT nspowner, nspacl FROM pg_namespace WHERE nspname = ANY($1::text[])"
      "  UNION ALL SELECT datdba, datacl FROM pg_database WHERE datname = current_database()"
      "  UNION ALL SELECT t.typowner, t.typacl FROM pg_type t JOIN pg_namespace n"
      "    ON n.oid = t.typnamespace WHERE ",
      kRestoredSchemaCondition, " AND ", kRestoredTypeCondition,
      "  UNION ALL SELECT p.proowner, p.proacl FROM pg_proc p JOIN pg_namespace n"
      "    ON n.oid = p.pronamespace WHERE ",
      kRestoredSchemaCondition, " AND ", kRestoredRoutineCondition,
      "),"
      " defaults(role, acl) AS ("
      "  SELECT d.defaclrole, d.defaclacl FROM pg_default_acl d"
      "  LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace"
      "  WHERE n.nspname = ANY($1::text[])"
      "    OR (d.defaclnamespace = 0 AND d.defaclrole IN (SELECT owner FROM objects))),"
      " granted(oid) AS ("
      "  SELECT a.grantee FROM objects o, aclexplode(o.acl) a"
      "  UNION SELECT role FROM defaults"
      "  UNION SELECT a.grantee FROM defaults d, aclexplode(d.acl) a"
      "  UNION SELECT setrole FROM pg_db_role_setting WHERE setdatabase = "
      "    (SELECT oid FROM pg_database WHERE datname = current_database())),"
      // Run roles come in as owners only, and are no way into members or groups.
      " members(oid) AS ("
      "  SELECT owner FROM objects"
      "  UNION SELECT oid FROM granted WHERE pg_get_userbyid(oid) <> ALL($3::text[])"
      "  UNION SELECT m.member FROM pg_auth_members m JOIN members s ON m.roleid = s.oid"
      "    WHERE pg_get_userbyid(m.member) <> ALL($3::text[])),"
      " groups(oid) AS ("
      "  SELECT oid FROM members"
      "  UNION SELECT m.roleid FROM pg_auth_members m JOIN groups g ON m.member = g.oid)"
      " SELECT r.rolname, r.oid IN (SELECT owner FROM objects) FROM pg_roles r"
      " WHERE r.oid IN (SELECT oid FROM groups) AND r.oid >= 16384 AND r.rolname !~ '^pg_'"
      " ORDER BY 1");
}

std::string Get(PGresult* res, int row, int column) {
  return PQgetisnull(res, row, column) ? std::string() : std::string(PQgetvalue(res, row, column));
}
bool True(PGresult* res, int row, int column) { return Get(res, row, column) == "t"; }

std::vector<std::string> Names(const std::vector<NeededRole>& roles, const RoleMap& map) {
  std::vector<std::string> names;
  for (const NeededRole& r : roles) names.push_back(map.Target(r.name));
  return names;
}

absl::StatusOr<std::map<std::string, SourceRole>> ReadSourceRoles(
    PGconn* source, const std::vector<std::string>& names) {
  absl::StatusOr<PgResultPtr> res =
      Exec(source,
           "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
           "rolreplication, rolbypassrls, rolconnlimit, to_json(rolvaliduntil) #>> '{}' "
           "FROM pg_roles WHERE rolname = ANY($1::text[])",
           {ArrayLiteral(names)});
  if (!res.ok()) return res.status();
  std::map<std::string, SourceRole> roles;
  PGresult* r = res->get();
  for (int i = 0; i < PQntuples(r); ++i) {
    SourceRole role{Get(r, i, 0),  True(r, i, 1), True(r, i, 2),
                    True(r, i, 3), True(r, i, 4), True(r, i, 5),
                    True(r, i, 6), True(r, i, 7), std::stoi(Get(r, i, 8)),
                    Get(r, i, 9),  std::nullopt};
    roles.emplace(role.name, std::move(role));
  }
  return roles;
}

// Role -> rolpassword, of the roles that have one; nullopt when this role may not read them.
absl::StatusOr<std::optional<std::map<std::string, std::string>>> ReadPasswords(
    PGconn* conn, const std::vector<std::string>& names, bool with_null) {
  // Asked first, so that a role without the right leaves no error in the server's log.
  absl::StatusOr<PgResultPtr> may =
      Exec(conn, "SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')", {});
  if (!may.ok()) return may.status();
  if (Get(may->get(), 0, 0) != "t") return std::nullopt;
  absl::StatusOr<PgResultPtr> res =
      Exec(conn,
           "SELECT rolname, coalesce(rolpassword, '') FROM pg_catalog.pg_authid "
           "WHERE rolname = ANY($1::text[]) AND (rolpassword IS NOT NULL OR $2::bool)",
           {ArrayLiteral(names), with_null ? "true" : "false"});
  if (!res.ok()) {
    if (SqlState(res.status()) == "42501") return std::nullopt;
    return res.status();
  }
  std::map<std::string, std::string> passwords;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    passwords[Get(res->get(), i, 0)] = Get(res->get(), i, 1);
  }
  return std::optional(std::move(passwords));
}

// Role -> its settings ("name=value"), everywhere (first) and in the connection's database.
absl::StatusOr<std::map<std::string, std::vector<std::pair<bool, std::string>>>> ReadRoleSettings(
    PGconn* source, const std::vector<std::string>& names) {
  absl::StatusOr<PgResultPtr> res = Exec(
      source,
      "SELECT r.rolname, s.setdatabase <> 0, c.setting FROM pg_db_role_setting s "
      "JOIN pg_roles r ON r.oid = s.setrole CROSS JOIN LATERAL unnest(s.setconfig) AS c(setting) "
      "WHERE r.rolname = ANY($1::text[]) AND s.setdatabase IN "
      "(0, (SELECT oid FROM pg_database WHERE datname = current_database())) ORDER BY 1, 2",
      {ArrayLiteral(names)});
  if (!res.ok()) return res.status();
  std::map<std::string, std::vector<std::pair<bool, std::string>>> settings;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    settings[Get(res->get(), i, 0)].emplace_back(True(res->get(), i, 1), Get(res->get(), i, 2));
  }
  return settings;
}

// (role, member) -> its options, of the members `names` list, in roles `names` lists or
// predefined ones (all of them, with `any_role`). INHERIT and SET from a server of `version`
// 16 or later, which has them per membership.
using Memberships = std::map<std::pair<std::string, std::string>, MembershipOptions>;
absl::StatusOr<Memberships> ReadMemberships(PGconn* conn, const std::vector<std::string>& names,
                                            bool any_role, int version) {
  const bool options = version >= 160000;
  absl::StatusOr<PgResultPtr> res =
      Exec(conn,
           absl::StrCat("SELECT g.rolname, m.rolname, bool_or(a.admin_option), ",
                        options ? "bool_or(a.inherit_option), bool_or(a.set_option)"
                                : "NULL::bool, NULL::bool",
                        " FROM pg_auth_members a "
                        "JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member "
                        "WHERE m.rolname = ANY($1::text[]) AND ($2::bool OR g.rolname = "
                        "ANY($1::text[]) OR (g.oid < 16384 AND g.rolname ~ '^pg_')) GROUP BY 1, 2"),
           {ArrayLiteral(names), any_role ? "true" : "false"});
  if (!res.ok()) return res.status();
  Memberships out;
  PGresult* r = res->get();
  for (int i = 0; i < PQntuples(r); ++i) {
    MembershipOptions& o = out[{Get(r, i, 0), Get(r, i, 1)}];
    o.admin = True(r, i, 2);
    if (!PQgetisnull(r, i, 3)) o.inherit = True(r, i, 3);
    if (!PQgetisnull(r, i, 4)) o.set = True(r, i, 4);
  }
  return out;
}

// What a role pgflow creates without its password says in its comment: `pgflow roles`, later
// run as a superuser, gives such a role its password, and no other role that lacks one.
constexpr const char* kWithoutPasswordComment =
    "created by pgflow without its password: `pgflow roles` run as a superuser copies it";

// The steps of CopyRoles over one pair of connections.
class RoleCopy {
 public:
  RoleCopy(PGconn* source, PGconn* target, const RoleMap& map)
      : source_(source), target_(target), map_(map) {}

  absl::Status Run(const std::vector<NeededRole>& roles, const std::string& pipeline_role) {
    names_ = Names(roles, map_);
    if (absl::Status s = ReadTarget(); !s.ok()) return s;
    absl::StatusOr<std::map<std::string, SourceRole>> source_roles =
        ReadSourceRoles(source_, names_);
    if (!source_roles.ok()) return source_roles.status();
    absl::StatusOr<std::optional<std::map<std::string, std::string>>> passwords =
        ReadPasswords(source_, names_, /*with_null=*/false);
    if (!passwords.ok()) return passwords.status();
    absl::StatusOr<std::map<std::string, std::vector<std::pair<bool, std::string>>>> settings =
        ReadRoleSettings(source_, names_);
    if (!settings.ok()) return settings.status();
    for (auto& [name, role] : *source_roles) {
      if (name == map_.target_bootstrap) continue;
      if (passwords->has_value() && (*passwords)->contains(name))
        role.password = (**passwords)[name];
      absl::Status s = existing_.contains(name)
                           ? CompletePassword(role)
                           : Create(role, (*settings)[name], !passwords->has_value());
      if (!s.ok()) return s;
    }
    if (absl::Status s = CopyMemberships(); !s.ok()) return s;
    return JoinOwners(roles, pipeline_role);
  }

  RolesOutcome& outcome() { return outcome_; }

 private:
  absl::Status Try(const std::string& sql, std::string what, std::string shown = "") {
    std::string refused;
    if (absl::Status s = RunRefusable(target_, sql, &refused); !s.ok()) return s;
    if (!refused.empty()) {
      outcome_.not_done.push_back(
          {std::move(what), shown.empty() ? sql : std::move(shown), std::move(refused)});
      last_refused_ = true;
      return absl::OkStatus();
    }
    last_refused_ = false;
    return absl::OkStatus();
  }

  absl::Status ReadTarget() {
    absl::StatusOr<PgResultPtr> res = Exec(
        target_, "SELECT rolsuper, current_database() FROM pg_roles WHERE rolname = current_user");
    if (!res.ok()) return res.status();
    superuser_ = True(res->get(), 0, 0);
    database_ = Get(res->get(), 0, 1);
    res = Exec(target_, "SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])",
               {ArrayLiteral(names_)});
    if (!res.ok()) return res.status();
    for (int i = 0; i < PQntuples(res->get()); ++i) existing_.insert(Get(res->get(), i, 0));
    return absl::OkStatus();
  }

  absl::Status Create(const SourceRole& role,
                      const std::vector<std::pair<bool, std::string>>& settings,
                      bool passwords_unreadable) {
    std::vector<std::string> withheld;
    const std::string create = CreateRoleStatement(role, superuser_, &withheld);
    if (absl::Status s = Try(create, absl::StrCat("create role ", role.name)); !s.ok()) return s;
    if (last_refused_) return absl::OkStatus();
    outcome_.created.push_back(role.name);
    const std::string quoted = QuoteIdent(role.name);
    if (!withheld.empty()) {
      outcome_.not_done.push_back(
          {absl::StrCat("give role ", role.name, " ", absl::StrJoin(withheld, ", ")),
           absl::StrCat("ALTER ROLE ", quoted, " ", absl::StrJoin(withheld, " ")),
           "only a superuser may grant these attributes"});
    }
    if (role.password.has_value()) {
      if (absl::Status s = SetPassword(role); !s.ok()) return s;
    } else if (role.login && passwords_unreadable) {
      outcome_.without_password.push_back(role.name);
      // The mark that lets `pgflow roles` give it its password later; without it (refused),
      // the notice's ALTER ROLE is the way.
      std::string refused;
      if (absl::Status s = RunRefusable(target_,
                                        absl::StrCat("COMMENT ON ROLE ", quoted, " IS ",
                                                     QuoteLiteral(kWithoutPasswordComment)),
                                        &refused);
          !s.ok()) {
        return s;
      }
    }
    for (const auto& [in_database, setting] : settings) {
      const std::string prefix = in_database ? absl::StrCat("ALTER ROLE ", quoted, " IN DATABASE ",
                                                            QuoteIdent(database_), " ")
                                             : absl::StrCat("ALTER ROLE ", quoted, " ");
      // The name alone in the log: a value may hold a secret.
      const std::string name = setting.substr(0, setting.find('='));
      if (absl::Status s = Try(SetStatement(prefix, setting),
                               absl::StrCat("give role ", role.name, " its setting ", name),
                               absl::StrCat(prefix, "SET ", QuoteIdent(name),
                                            " TO <its value in the source>"));
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status SetPassword(const SourceRole& role) {
    const std::string quoted = QuoteIdent(role.name);
    return Try(absl::StrCat("ALTER ROLE ", quoted, " PASSWORD ", QuoteLiteral(*role.password)),
               absl::StrCat("set the password of role ", role.name),
               absl::StrCat("ALTER ROLE ", quoted, " PASSWORD '...'"));
  }

  // An existing role is left as it is, but one pgflow created without its password (it says so
  // in its comment), which is given it when both sides may read them: a role without one may
  // be so on purpose.
  absl::Status CompletePassword(const SourceRole& role) {
    outcome_.existing.push_back(role.name);
    if (!role.password.has_value()) return absl::OkStatus();
    absl::StatusOr<PgResultPtr> mark =
        Exec(target_,
             "SELECT shobj_description(oid, 'pg_authid') IS NOT DISTINCT FROM $2 FROM pg_roles "
             "WHERE rolname = $1",
             {role.name, kWithoutPasswordComment});
    if (!mark.ok()) return mark.status();
    if (PQntuples(mark->get()) == 0 || !True(mark->get(), 0, 0)) return absl::OkStatus();
    if (!target_passwords_read_) {
      target_passwords_read_ = true;
      absl::StatusOr<std::optional<std::map<std::string, std::string>>> read =
          ReadPasswords(target_, names_, /*with_null=*/true);
      if (!read.ok()) return read.status();
      target_passwords_ = *std::move(read);
    }
    if (!target_passwords_.has_value()) return absl::OkStatus();
    auto it = target_passwords_->find(role.name);
    if (it == target_passwords_->end() || !it->second.empty()) return absl::OkStatus();
    if (absl::Status s = SetPassword(role); !s.ok()) return s;
    if (last_refused_) return absl::OkStatus();
    outcome_.given_password.push_back(role.name);
    std::string refused;  // the mark has done its work
    return RunRefusable(
        target_, absl::StrCat("COMMENT ON ROLE ", QuoteIdent(role.name), " IS NULL"), &refused);
  }

  absl::Status CopyMemberships() {
    absl::StatusOr<Memberships> want = ReadMemberships(source_, names_, false, map_.source_version);
    if (!want.ok()) return want.status();
    absl::StatusOr<Memberships> have = ReadMemberships(target_, names_, true, 0);
    if (!have.ok()) return have.status();
    // (An existing membership keeps its INHERIT and SET: it is the target's.)
    for (const auto& [pair, options] : *want) {
      const std::string& role = map_.Target(pair.first);
      const std::string& member = map_.Target(pair.second);
      auto had = have->find({role, member});
      if (had != have->end() && (had->second.admin || !options.admin)) continue;
      if (absl::Status s = Grant(role, member, options); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::Status Grant(const std::string& role, const std::string& member,
                     const MembershipOptions& options) {
    if (absl::Status s = Try(GrantRoleStatement(role, member, options, map_.target_version),
                             absl::StrCat("make role ", member, " a member of ", role));
        !s.ok()) {
      return s;
    }
    if (!last_refused_) outcome_.granted.push_back(absl::StrCat(role, " TO ", member));
    return absl::OkStatus();
  }

  // The pipeline's role gives what it creates to their owners and keeps writing to them
  // through its membership (with INHERIT) in each owner.
  absl::Status JoinOwners(const std::vector<NeededRole>& roles, const std::string& pipeline_role) {
    absl::StatusOr<PgResultPtr> super =
        Exec(target_, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", {pipeline_role});
    if (!super.ok()) return super.status();
    if (PQntuples(super->get()) == 0 || True(super->get(), 0, 0)) return absl::OkStatus();
    for (const NeededRole& r : roles) {
      const std::string& owner = map_.Target(r.name);
      if (!r.owner || owner == pipeline_role) continue;
      absl::StatusOr<PgResultPtr> member = Exec(
          target_,
          "SELECT NOT rolsuper AND NOT (pg_has_role($1, oid, 'USAGE') AND pg_has_role($1, oid, "
          "'MEMBER')) FROM pg_roles WHERE rolname = $2",
          {pipeline_role, owner});
      if (!member.ok()) return member.status();
      if (PQntuples(member->get()) == 0 || !True(member->get(), 0, 0)) continue;
      // INHERIT for its access, SET to give objects to the owner (16 and later: per membership).
      if (absl::Status s = Grant(owner, pipeline_role, {false, true, true}); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  PGconn* source_;
  PGconn* target_;
  const RoleMap& map_;
  std::vector<std::string> names_;  // the target's names of the roles needed
  std::set<std::string> existing_;  // of those, the target's
  bool superuser_ = false;          // the target role
  std::string database_;            // the target's
  bool target_passwords_read_ = false;
  std::optional<std::map<std::string, std::string>> target_passwords_;
  bool last_refused_ = false;
  RolesOutcome outcome_;
};

// Elements of a list-valued setting as written in setconfig: `"$user", public`. White space
// outside quotes separates nothing: an unquoted element cannot hold it.
std::vector<std::string> SplitSettingList(std::string_view value) {
  std::vector<std::string> out;
  std::string current;
  bool quoted = false;
  for (size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (quoted && c == '"' && i + 1 < value.size() && value[i + 1] == '"') {
      current += '"';
      ++i;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (quoted || (c != ',' && !absl::ascii_isspace(static_cast<unsigned char>(c)))) {
      current += c;
    } else if (c == ',') {
      out.push_back(std::move(current));
      current.clear();
    }
  }
  out.push_back(std::move(current));
  return out;
}

bool IsListSetting(std::string_view name) {
  static const std::set<std::string_view> kLists = {
      "local_preload_libraries",  "search_path",      "session_preload_libraries",
      "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"};
  std::string lower(name);
  for (char& c : lower) c = absl::ascii_tolower(static_cast<unsigned char>(c));
  return kLists.contains(lower);
}

}  // namespace

absl::StatusOr<std::vector<NeededRole>> ReadNeededRoles(PGconn* source,
                                                        const std::vector<TableRef>& tables,
                                                        const RoleMap& map) {
  auto [schemas, names] = TableRefArrays(tables);
  std::vector<std::string> run_roles(map.run_roles.begin(), map.run_roles.end());
  absl::StatusOr<PgResultPtr> res =
      Exec(source, NeededRolesSql(), {schemas, names, ArrayLiteral(run_roles)});
  if (!res.ok()) {
    return absl::Status(res.status().code(),
                        absl::StrCat("finding the roles the followed tables need in the source ",
                                     Describe(source), ": ", res.status().message()));
  }
  std::vector<NeededRole> roles;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    roles.push_back({Get(res->get(), i, 0), True(res->get(), i, 1)});
  }
  return roles;
}

absl::StatusOr<RolesOutcome> CopyRoles(PGconn* source, PGconn* target,
                                       const std::vector<NeededRole>& roles, const RoleMap& map,
                                       const std::string& pipeline_role) {
  RoleCopy copy(source, target, map);
  if (absl::Status s = copy.Run(roles, pipeline_role); !s.ok()) return s;
  RolesOutcome outcome = std::move(copy.outcome());
  absl::StatusOr<PgResultPtr> user = Exec(source, "SELECT current_user");
  if (!user.ok()) return user.status();
  outcome.source_user = PQgetvalue(user->get(), 0, 0);
  return outcome;
}

std::string CreateRoleStatement(const SourceRole& role, bool superuser_attributes,
                                std::vector<std::string>* withheld) {
  std::string sql = absl::StrCat("CREATE ROLE ", QuoteIdent(role.name), " WITH");
  auto flag = [&](bool on, const char* yes, const char* no) {
    absl::StrAppend(&sql, " ", on ? yes : no);
  };
  flag(role.login, "LOGIN", "NOLOGIN");
  flag(role.inherit, "INHERIT", "NOINHERIT");
  flag(role.createdb, "CREATEDB", "NOCREATEDB");
  flag(role.createrole, "CREATEROLE", "NOCREATEROLE");
  for (auto [on, word] : {std::pair{role.superuser, "SUPERUSER"},
                          {role.replication, "REPLICATION"},
                          {role.bypassrls, "BYPASSRLS"}}) {
    if (!on) continue;
    if (superuser_attributes) {
      absl::StrAppend(&sql, " ", word);
    } else {
      withheld->push_back(word);
    }
  }
  if (role.connection_limit >= 0)
    absl::StrAppend(&sql, " CONNECTION LIMIT ", role.connection_limit);
  if (!role.valid_until.empty()) {
    absl::StrAppend(&sql, " VALID UNTIL ", QuoteLiteral(role.valid_until));
  }
  return sql;
}

std::string SetStatement(std::string_view prefix, std::string_view setting) {
  const size_t eq = setting.find('=');
  const std::string_view name = setting.substr(0, eq);
  const std::string_view value = eq == std::string_view::npos ? "" : setting.substr(eq + 1);
  std::string values;
  if (IsListSetting(name)) {
    std::vector<std::string> quoted;
    for (const std::string& element : SplitSettingList(value)) {
      quoted.push_back(QuoteLiteral(element));
    }
    values = absl::StrJoin(quoted, ", ");
  } else {
    values = QuoteLiteral(value);
  }
  return Cat(prefix, "SET ", QuoteIdent(name), " TO ", values);
}

std::string GrantRoleStatement(const std::string& role, const std::string& member,
                               const MembershipOptions& options, int target_version) {
  std::vector<std::string> with;
  if (options.admin) with.push_back("ADMIN OPTION");
  if (target_version >= 160000) {
    if (options.inherit.has_value()) {
      with.push_back(*options.inherit ? "INHERIT TRUE" : "INHERIT FALSE");
    }
    if (options.set.has_value()) with.push_back(*options.set ? "SET TRUE" : "SET FALSE");
  }
  return absl::StrCat("GRANT ", QuoteIdent(role), " TO ", QuoteIdent(member),
                      with.empty() ? "" : " WITH ", absl::StrJoin(with, ", "));
}

std::vector<std::string> RolesOutcome::Lines() const {
  std::vector<std::string> lines;
  auto line = [&](const std::vector<std::string>& names, const char* what) {
    if (!names.empty()) lines.push_back(absl::StrCat(what, absl::StrJoin(names, ", ")));
  };
  line(created, "roles created: ");
  line(existing, "roles already there, left as they were: ");
  line(given_password, "roles given the password they lacked: ");
  line(granted, "role memberships granted: ");
  return lines;
}

std::string RolesOutcome::PasswordNotice() const {
  if (without_password.empty()) return "";
  std::vector<std::string> statements;
  for (const std::string& name : without_password) {
    statements.push_back(absl::StrCat("ALTER ROLE ", QuoteIdent(name), " PASSWORD '...';"));
  }
  return absl::StrCat(
      "roles created without their password, which only a superuser may read in the source "
      "(pg_authid) and role ",
      source_user, " is not one: ", absl::StrJoin(without_password, ", "),
      ". Run `pgflow roles` on the pipeline file with a superuser's URL for the source (and the "
      "target), which copies their SCRAM secrets, or set each in the target: ",
      absl::StrJoin(statements, " "));
}

}  // namespace pgflow
