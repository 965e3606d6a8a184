#include "sinks/postgres/ownership.h"

#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/postgres/pg_connection.h"
#include "engine/log.h"
#include "schemas/pg_array_literal.h"
#include "sinks/postgres/schema_objects.h"
#include "sinks/postgres/sequences.h"
#include "sinks/postgres/table_definition.h"

namespace pgflow {
namespace {

std::string Get(PGresult* res, int row, int column) {
  return PQgetisnull(res, row, column) ? std::string() : std::string(PQgetvalue(res, row, column));
}

std::string Qualified(const std::string& schema, const std::string& name) {
  return absl::StrCat(QuoteIdent(schema), ".", QuoteIdent(name));
}

// The name an object of `kind` goes by in a statement.
std::string InStatement(ObjectKind kind, const std::string& name) {
  return kind == ObjectKind::kDatabase || kind == ObjectKind::kSchema ? QuoteIdent(name) : name;
}

// The first column of every row of `sql`.
absl::StatusOr<std::vector<std::string>> Column(PGconn* conn, const std::string& sql,
                                                const std::vector<std::string>& params = {}) {
  absl::StatusOr<PgResultPtr> res = Exec(conn, sql, params);
  if (!res.ok()) return res.status();
  std::vector<std::string> out;
  for (int i = 0; i < PQntuples(res->get()); ++i) out.push_back(Get(res->get(), i, 0));
  return out;
}

// The database's own settings ("name=value"), as ALTER DATABASE ... SET made them.
absl::StatusOr<std::vector<std::string>> DatabaseSettings(PGconn* conn) {
  return Column(conn,
                "SELECT unnest(setconfig) FROM pg_catalog.pg_db_role_setting WHERE setrole = 0 "
                "AND setdatabase = (SELECT oid FROM pg_catalog.pg_database "
                "WHERE datname = current_database())");
}

// A default privilege entry: role, schema ("" for everywhere), object type (defaclobjtype).
using DefaultKey = std::tuple<std::string, std::string, std::string>;

absl::StatusOr<std::vector<DefaultKey>> DefaultKeys(PGconn* conn,
                                                    const std::vector<std::string>& roles,
                                                    const std::vector<std::string>& schemas) {
  absl::StatusOr<PgResultPtr> res = Exec(
      conn,
      "SELECT pg_catalog.pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''), "
      "d.defaclobjtype::text FROM pg_catalog.pg_default_acl d LEFT JOIN pg_catalog.pg_namespace n "
      "ON n.oid = d.defaclnamespace WHERE pg_catalog.pg_get_userbyid(d.defaclrole) = "
      "ANY($1::text[]) AND (d.defaclnamespace = 0 OR n.nspname = ANY($2::text[]))",
      {ArrayLiteral(roles), ArrayLiteral(schemas)});
  if (!res.ok()) return res.status();
  std::vector<DefaultKey> keys;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    keys.emplace_back(Get(res->get(), i, 0), Get(res->get(), i, 1), Get(res->get(), i, 2));
  }
  return keys;
}

// What objects of a type a role creates (in a schema) get: its entry of pg_default_acl, or
// what PostgreSQL grants without one.
absl::StatusOr<Privileges> ReadDefaultPrivileges(PGconn* conn, const DefaultKey& key) {
  const auto& [role, schema, type] = key;
  absl::StatusOr<PgResultPtr> res = Exec(
      conn,
      "SELECT CASE WHEN a.grantee = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(a.grantee) END, "
      "a.privilege_type, a.is_grantable FROM pg_catalog.pg_roles r CROSS JOIN LATERAL ("
      "SELECT coalesce((SELECT d.defaclacl FROM pg_catalog.pg_default_acl d "
      "LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace WHERE d.defaclrole = "
      "r.oid AND d.defaclobjtype = $3::\"char\" AND coalesce(n.nspname, '') = $2), CASE WHEN $2 = "
      "'' THEN pg_catalog.acldefault(CASE WHEN $3 = 'S' THEN 's' ELSE $3 END::\"char\", r.oid) "
      "END) AS acl) x CROSS JOIN LATERAL pg_catalog.aclexplode(x.acl) a "
      "WHERE r.rolname = $1",
      {role, schema, type});
  if (!res.ok()) return res.status();
  Privileges p;
  p.owner = role;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    p.grants[{Get(res->get(), i, 0), Get(res->get(), i, 1)}] = Get(res->get(), i, 2) == "t";
  }
  return p;
}

const char* DefaultObjects(const std::string& type) {
  if (type == "r") return "TABLES";
  if (type == "S") return "SEQUENCES";
  if (type == "f") return "FUNCTIONS";
  if (type == "T") return "TYPES";
  return "SCHEMAS";
}

}  // namespace

OwnershipCopier::OwnershipCopier(PGconn* source, PGconn* target, RoleMap map, Options options,
                                 Runner run)
    : source_(source),
      target_(target),
      map_(std::move(map)),
      options_(std::move(options)),
      run_(std::move(run)) {}

absl::Status OwnershipCopier::CopyDatabase(const std::vector<NeededRole>& roles) {
  absl::StatusOr<std::vector<std::string>> source_db = Column(source_, "SELECT current_database()");
  if (!source_db.ok()) return source_db.status();
  absl::StatusOr<std::vector<std::string>> target_db = Column(target_, "SELECT current_database()");
  if (!target_db.ok()) return target_db.status();
  const std::string& target_name = target_db->front();
  bool pgflows = false;
  if (absl::Status s = CopyObject(ObjectKind::kDatabase, absl::StrCat("database ", target_name),
                                  source_db->front(), target_name, Scope::kShared, &pgflows);
      !s.ok()) {
    return s;
  }
  // Settings apply to every new session in the database: only `pgflow roles` copies them, and
  // only into a database pgflow's role owns or that has the source's owner already.
  if (options_.copy_settings && pgflows) {
    if (absl::Status s = CopyDatabaseSettings(source_db->front(), target_name); !s.ok()) return s;
  }
  std::set<std::string> schemas;
  for (const TableRef& ref : options_.tables) schemas.insert(ref.schema);
  for (const std::string& schema : schemas) {
    const std::string& mapped = MapSchema(options_.mapped_schema, schema);
    if (absl::Status s = CopyObject(ObjectKind::kSchema, absl::StrCat("schema ", mapped), schema,
                                    mapped, Scope::kShared);
        !s.ok()) {
      return s;
    }
  }
  return CopyDefaultPrivileges(roles);
}

absl::Status OwnershipCopier::CopyTable(const std::string& schema, const std::string& name) {
  const std::string mapped = MapSchema(options_.mapped_schema, schema);
  if (absl::Status s =
          CopyObject(ObjectKind::kTable, absl::StrCat("table ", mapped, ".", name),
                     Qualified(schema, name), Qualified(mapped, name), Scope::kPgflows);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::vector<SequencePair>> sequences =
      ReadTableSequences(source_, {TableRef{schema, name}}, options_.mapped_schema);
  if (!sequences.ok()) return sequences.status();
  for (const SequencePair& pair : *sequences) {
    if (absl::Status s = CopyObject(ObjectKind::kSequence, absl::StrCat("sequence ", pair.target),
                                    pair.source, pair.target, Scope::kPgflows);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status OwnershipCopier::CopyTables() {
  auto [schemas, names] = TableRefArrays(options_.tables);
  absl::StatusOr<PgResultPtr> res =
      Exec(source_,
           "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
           "c.relnamespace JOIN unnest($1::text[], $2::text[]) AS r(nsp, rel) ON n.nspname = "
           "r.nsp AND (r.rel = '*' OR c.relname = r.rel) WHERE c.relkind IN ('r', 'p') "
           "ORDER BY 1, 2",
           {schemas, names});
  if (!res.ok()) return res.status();
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    if (absl::Status s = CopyTable(Get(res->get(), i, 0), Get(res->get(), i, 1)); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status OwnershipCopier::CopySchemaObjects() {
  struct Found {
    ObjectKind kind;
    const char* what;
    std::string sql;
  };
  const Found kinds[] = {
      {ObjectKind::kSchema, "schema ",
       absl::StrCat("SELECT n.nspname FROM pg_namespace n WHERE ", kRestoredSchemaCondition)},
      {ObjectKind::kType, "type ",
       absl::StrCat("SELECT format_type(t.oid, NULL) FROM pg_type t JOIN pg_namespace n ON n.oid "
                    "= t.typnamespace WHERE t.typtype <> 'd' AND ",
                    kRestoredSchemaCondition, " AND ", kRestoredTypeCondition)},
      {ObjectKind::kDomain, "domain ",
       absl::StrCat("SELECT format_type(t.oid, NULL) FROM pg_type t JOIN pg_namespace n ON n.oid "
                    "= t.typnamespace WHERE t.typtype = 'd' AND ",
                    kRestoredSchemaCondition, " AND ", kRestoredTypeCondition)},
      {ObjectKind::kRoutine, "routine ",
       absl::StrCat("SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON "
                    "n.oid = p.pronamespace WHERE ",
                    kRestoredSchemaCondition, " AND ", kRestoredRoutineCondition)},
  };
  for (const Found& found : kinds) {
    absl::StatusOr<std::vector<std::string>> names = Column(source_, found.sql);
    if (!names.ok()) return names.status();
    for (const std::string& name : *names) {
      if (absl::Status s =
              CopyObject(found.kind, absl::StrCat(found.what, name), name, name, Scope::kPgflows);
          !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status OwnershipCopier::CopyObject(ObjectKind kind, const std::string& what,
                                         const std::string& source_name,
                                         const std::string& target_name, Scope scope,
                                         bool* copies) {
  if (copies != nullptr) *copies = false;
  absl::StatusOr<std::optional<Privileges>> source = ReadPrivileges(source_, kind, source_name);
  if (!source.ok()) return source.status();
  absl::StatusOr<std::optional<Privileges>> target = ReadPrivileges(target_, kind, target_name);
  if (!target.ok()) return target.status();
  if (!source->has_value() || !target->has_value()) return absl::OkStatus();
  const Privileges want = ForTarget(**source, map_);
  const Privileges& have = **target;
  if (copies != nullptr) *copies = CopiesPrivilegesOf(want, have, map_);
  if (scope == Scope::kPgflows && !CopiesPrivilegesOf(want, have, map_)) {
    return absl::OkStatus();  // someone else's object in the target is left as it is
  }
  // A database or schema pgflow writes into but does not own may be shared with others: it
  // gains what the source grants, and keeps its owner and everyone's grants.
  if (scope == Scope::kShared && !map_.IsRunRole(have.owner)) {
    if (want.owner != have.owner) {
      left_.push_back(absl::StrCat(
          what, ": owned by ", have.owner, " (", want.owner,
          " in the source), not by pgflow's role, so it keeps its owner, its grants and its "
          "settings, and gains only the source's grants it lacked; to give it the source's "
          "owner once it is yours alone: ALTER ",
          KindKeyword(kind), " ", InStatement(kind, target_name), " OWNER TO ",
          QuoteIdent(want.owner)));
    }
    std::vector<std::string> added =
        AddedGrantStatements(kind, InStatement(kind, target_name), want, have, map_);
    if (added.empty()) return absl::OkStatus();
    return Run(added, what, absl::StrCat("give ", what, " the source's grants"));
  }
  std::vector<std::string> statements =
      PrivilegeStatements(kind, InStatement(kind, target_name), want, have, map_);
  if (statements.empty()) return absl::OkStatus();
  const std::string give = absl::StrCat("give ", what, " the source's owner and grants");
  // The pipeline's role gives up an object it owns only when it keeps its access through the
  // new owner; its access to other objects is its grants, which are left as they are.
  if (want.owner != (*target)->owner && (*target)->owner == options_.pipeline_role) {
    absl::StatusOr<bool> keeps = KeepsAccess(want.owner);
    if (!keeps.ok()) return keeps.status();
    if (!*keeps) {
      absl::StatusOr<bool> super = IsSuperuser(want.owner);
      if (!super.ok()) return super.status();
      // Membership in a superuser would let the pipeline's role SET ROLE to it: never offered.
      const std::string how =
          *super ? absl::StrCat("; ", want.owner,
                                " is a superuser, whose membership is never to be granted: run "
                                "this once the pipeline is done)")
                 : absl::StrCat(", or make it one first: `GRANT ", QuoteIdent(want.owner), " TO ",
                                QuoteIdent(options_.pipeline_role), "`)");
      not_done_.push_back(
          {give, absl::StrCat(absl::StrJoin(statements, ";\n"), ";"),
           absl::StrCat("role ", options_.pipeline_role, " is not a member of ", want.owner,
                        " with INHERIT and would lose its access (run this once "
                        "the pipeline is done",
                        how)});
      return absl::OkStatus();
    }
  }
  return Run(statements, what, give);
}

absl::StatusOr<bool> OwnershipCopier::KeepsAccess(const std::string& owner) {
  absl::StatusOr<PgResultPtr> res = Exec(
      target_,
      "SELECT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1), false) OR "
      "coalesce((SELECT pg_catalog.pg_has_role($1, oid, 'USAGE') FROM pg_catalog.pg_roles "
      "WHERE rolname = $2), false)",
      {options_.pipeline_role, owner});
  if (!res.ok()) return res.status();
  return Get(res->get(), 0, 0) == "t";
}

absl::StatusOr<bool> OwnershipCopier::IsSuperuser(const std::string& role) {
  absl::StatusOr<PgResultPtr> res =
      Exec(target_,
           "SELECT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1), false)",
           {role});
  if (!res.ok()) return res.status();
  return Get(res->get(), 0, 0) == "t";
}

absl::Status OwnershipCopier::CopyDatabaseSettings(const std::string& source_db,
                                                   const std::string& target_db) {
  absl::StatusOr<std::vector<std::string>> want = DatabaseSettings(source_);
  if (!want.ok()) return want.status();
  absl::StatusOr<std::vector<std::string>> have = DatabaseSettings(target_);
  if (!have.ok()) return have.status();
  const std::set<std::string> had(have->begin(), have->end());
  for (const std::string& setting : *want) {
    if (had.contains(setting)) continue;
    // The name alone in what is logged: a value may hold a secret.
    const std::string name = setting.substr(0, setting.find('='));
    const std::string prefix = absl::StrCat("ALTER DATABASE ", QuoteIdent(target_db), " ");
    std::string refused;
    if (absl::Status s = run_(SetStatement(prefix, setting), &refused); !s.ok()) return s;
    if (refused.empty()) {
      changed_.push_back(absl::StrCat("database ", target_db, " (setting ", name, ")"));
    } else {
      not_done_.push_back(
          {absl::StrCat("give database ", target_db, " the setting ", name, " of ", source_db),
           absl::StrCat(prefix, "SET ", QuoteIdent(name), " TO <its value in ", source_db,
                        ": SHOW ", name, ">;"),
           std::move(refused)});
    }
  }
  return absl::OkStatus();
}

absl::Status OwnershipCopier::CopyDefaultPrivileges(const std::vector<NeededRole>& roles) {
  std::vector<std::string> names;
  for (const NeededRole& r : roles) names.push_back(r.name);
  std::vector<std::string> schemas;
  for (const TableRef& ref : options_.tables) schemas.push_back(ref.schema);
  absl::StatusOr<std::vector<DefaultKey>> keys = DefaultKeys(source_, names, schemas);
  if (!keys.ok()) return keys.status();
  for (const DefaultKey& key : *keys) {
    const auto& [role, schema, type] = key;
    const std::string& mapped = schema.empty() ? schema : MapSchema(options_.mapped_schema, schema);
    absl::StatusOr<Privileges> want = ReadDefaultPrivileges(source_, key);
    if (!want.ok()) return want.status();
    absl::StatusOr<Privileges> have =
        ReadDefaultPrivileges(target_, {map_.Target(role), mapped, type});
    if (!have.ok()) return have.status();
    const std::string prefix =
        absl::StrCat("ALTER DEFAULT PRIVILEGES FOR ROLE ", QuoteIdent(map_.Target(role)),
                     mapped.empty() ? "" : absl::StrCat(" IN SCHEMA ", QuoteIdent(mapped)), " ");
    std::vector<std::string> statements =
        GrantStatements(prefix, DefaultObjects(type), ForTarget(*want, map_), *have, map_);
    if (statements.empty()) continue;
    const std::string object =
        absl::StrCat("default privileges of role ", role, " on ", DefaultObjects(type),
                     mapped.empty() ? "" : " in schema ", mapped);
    if (absl::Status s =
            Run(statements, object, absl::StrCat("give ", object, " as in the source"));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status OwnershipCopier::Run(const std::vector<std::string>& statements,
                                  const std::string& object, std::string what) {
  std::string refused;
  if (absl::Status s = run_(absl::StrJoin(statements, "; "), &refused); !s.ok()) return s;
  if (refused.empty()) {
    changed_.push_back(object);
  } else {
    not_done_.push_back(
        {std::move(what), absl::StrCat(absl::StrJoin(statements, ";\n"), ";"), std::move(refused)});
  }
  return absl::OkStatus();
}

void LogOwnership(std::string_view prefix, const RolesOutcome* roles, const OwnershipCopier& copier,
                  const std::string& target) {
  std::vector<NotDone> not_done;
  if (roles != nullptr) {
    for (const std::string& line : roles->Lines()) LogInfo("%s%s", prefix, line);
    if (std::string notice = roles->PasswordNotice(); !notice.empty()) {
      LogWarning("%s%s", prefix, notice);
    }
    not_done = roles->not_done;
  }
  if (!copier.changed().empty()) {
    LogInfo("%sgiven the source's owners, grants or settings: %s", prefix,
            absl::StrJoin(copier.changed(), ", "));
  }
  for (const std::string& line : copier.left()) LogInfo("%sleft as it is: %s", prefix, line);
  not_done.insert(not_done.end(), copier.not_done().begin(), copier.not_done().end());
  for (const NotDone& n : not_done) {
    LogWarning("%scould not %s: %s; as a superuser in %s, run: %s", prefix, n.what, n.error, target,
               n.statement);
  }
}

}  // namespace pgflow
