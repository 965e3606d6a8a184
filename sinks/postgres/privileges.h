#pragma once

// Who owns an object and what each role may do with it (its ACL), read from a database's
// catalog, and the statements that give an object of the target what the same object has in
// the source: `roles: copy` of the postgres sink, `pgflow roles` and `pgflow verify`.
//
// An ACL is compared as PostgreSQL applies it: a catalog's NULL ACL is the built-in default
// (acldefault: the owner may do everything, PUBLIC what the kind grants it). Role names go
// through a RoleMap: the source's bootstrap superuser is the target's, and the grants of
// pgflow's own run roles (SELECT granted by `pgflow init`, CREATE on the target) are neither
// copied nor compared.
//
// Thread-safety: plain functions and values.

#include <libpq-fe.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace pgflow {

enum class ObjectKind { kDatabase, kSchema, kTable, kSequence, kType, kDomain, kRoutine };

// "TABLE", "SEQUENCE", "ROUTINE", ...: the word GRANT and ALTER ... OWNER TO use for the kind.
const char* KindKeyword(ObjectKind kind);

struct Privileges {
  std::string owner;
  // (grantee, privilege) -> whether WITH GRANT OPTION; grantee "" is PUBLIC, privilege as
  // aclexplode() names it ("SELECT", "USAGE", "TEMPORARY", ...).
  std::map<std::pair<std::string, std::string>, bool> grants;
  // The catalog's ACL is NULL: `grants` is acldefault's, which differs between versions (17
  // gives the owner MAINTAIN). A copy leaves the target's ACL alone then, as pg_dump does.
  bool default_acl = false;

  bool operator==(const Privileges&) const = default;
};

// How the source's roles are named in the target, and which roles are pgflow's own.
struct RoleMap {
  std::string source_bootstrap;  // each side's bootstrap superuser (OID 10), e.g. "postgres"
  std::string target_bootstrap;
  // The roles pgflow runs as, on either side (and `pgflow roles --grant-to`): their grants are
  // pgflow's working privileges, neither copied nor compared. Never an object's owner's.
  std::set<std::string> run_roles;

  // The target's name of source role `role`.
  const std::string& Target(const std::string& role) const {
    return role == source_bootstrap ? target_bootstrap : role;
  }
  bool IsRunRole(const std::string& role) const { return run_roles.contains(role); }

  std::string target_user;  // current_user in the target

  // server_version_num of each side; 0 when unknown (no privilege is then left out).
  int source_version = 0;
  int target_version = 0;
};

// The server_version_num from which PostgreSQL has `privilege` (170000 for MAINTAIN), 0 for
// those every supported version has. A privilege one side's server lacks is neither granted,
// revoked nor compared.
int PrivilegeSince(const std::string& privilege);

// Whether a copy gives target object `have` the source's owner and grants (`want`, ForTarget):
// when a run role owns it (pgflow created it) or it has the source's owner already. Anyone
// else's object is left as it is, and verify says so instead of comparing it.
bool CopiesPrivilegesOf(const Privileges& want, const Privileges& have, const RoleMap& map);

// Something the role pgflow connects as may not do in the target, said so once with the
// statement a superuser runs instead.
struct NotDone {
  std::string what;       // "give table public.orders the source's owner and grants"
  std::string statement;  // what to run instead (a password is never in it)
  std::string error;      // PostgreSQL's message
};

// Runs `sql` (one or more statements, one implicit transaction) on a connection in autocommit.
// A statement the server refuses fills *refused with PostgreSQL's message alone, never the
// statement (which may hold a password's secret), and returns OK; a lost connection is
// kUnavailable.
absl::Status RunRefusable(PGconn* conn, const std::string& sql, std::string* refused);

// Reads both sides' bootstrap superuser and current_user (the run roles), plus `more_run_roles`.
// `target` may be in a transaction.
absl::StatusOr<RoleMap> ReadRoleMap(PGconn* source, PGconn* target,
                                    const std::vector<std::string>& more_run_roles = {});

// The owner and effective ACL of an object: a database or schema by name, a table or sequence
// by its quoted qualified name, a type or domain as regtype reads it, a routine as
// regprocedure does ("public.f(integer)"). nullopt when there is no such object.
absl::StatusOr<std::optional<Privileges>> ReadPrivileges(PGconn* conn, ObjectKind kind,
                                                         const std::string& name);

// `source` as the target should hold it: roles renamed through `map`, run roles' grants left
// out (but the owner's).
Privileges ForTarget(const Privileges& source, const RoleMap& map);

// `have` once `owner` owns the object: PostgreSQL hands the old owner's grants to the new one.
Privileges Reowned(Privileges have, const std::string& owner);

// The statements that turn `have` (the target's, as read) into `want` (ForTarget of the
// source's): ALTER <kind> <name> OWNER TO when the owners differ, then REVOKE and GRANT of the
// grants that differ (run roles' excepted; none when want.default_acl). `name` as it goes into
// the statement, quoted. Empty when nothing differs.
std::vector<std::string> PrivilegeStatements(ObjectKind kind, const std::string& name,
                                             const Privileges& want, const Privileges& have,
                                             const RoleMap& map);

// For an object that is not pgflow's, shared with others (a database or schema pgflow writes
// into): only the GRANTs of what `want` grants and `have` lacks, never a REVOKE nor an owner
// change, and not the grants of want's owner (what its ownership gives it). Empty when
// want.default_acl.
std::vector<std::string> AddedGrantStatements(ObjectKind kind, const std::string& name,
                                              const Privileges& want, const Privileges& have,
                                              const RoleMap& map);

// The GRANT and REVOKE statements alone, each `prefix` + "GRANT ... ON " + `on` + " TO ...":
// ("ALTER DEFAULT PRIVILEGES FOR ROLE r ", "TABLES") for default privileges.
std::vector<std::string> GrantStatements(const std::string& prefix, const std::string& on,
                                         const Privileges& want, const Privileges& have,
                                         const RoleMap& map);

// What differs between the source's and the target's privileges of one object, a phrase each
// ("owner app on the source, flow on the target", "SELECT for reader on the source only").
// Run roles' grants are not compared; with different owners, their grants are compared as if
// the target's owner were the source's.
std::vector<std::string> PrivilegeDifferences(const Privileges& want, const Privileges& have,
                                              const RoleMap& map);

}  // namespace pgflow
