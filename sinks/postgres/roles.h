#pragma once

// The roles a pipeline's objects need, created in a PostgreSQL target as `pg_dumpall
// --roles-only` would write them (`roles: copy` of the postgres sink, `pgflow roles`). Which:
//  - the owners of the followed tables, of their sequences and schemas, of the database and of
//    the types and routines the sink restores (schema_objects.h); the roles granted privileges
//    on those, given default privileges there or settings in the database;
//  - the roles that are members of those (the login roles of a group that owns the tables), and
//    the groups all of these are members of;
//  never the bootstrap superuser, PostgreSQL's predefined roles (pg_*), nor, but as owners, the
//  roles pgflow runs as (RoleMap).
// A role the target lacks is created with the source's attributes (LOGIN, INHERIT, CREATEDB,
// CREATEROLE, CONNECTION LIMIT, VALID UNTIL; SUPERUSER, REPLICATION and BYPASSRLS only when the
// target role is a superuser), its password (the SCRAM secret or md5 hash, when the source role
// may read pg_authid: a superuser) and its settings (ALTER ROLE ... SET, everywhere and in the
// database). A role the target has is left as it is but for what it lacks: its memberships
// among these roles (and in predefined roles), with their INHERIT and SET options when both
// sides are 16 or later. An existing role's password is never touched, but for a role pgflow
// created without it (the source's passwords were unreadable: its comment says so), given it
// when both sides may read pg_authid.
//
// Thread-safety: plain functions.

#include <libpq-fe.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/table_ref.h"
#include "sinks/postgres/privileges.h"

namespace pgflow {

struct NeededRole {
  std::string name;    // the source's
  bool owner = false;  // owns one of the objects
};

// The roles `tables` ("schema.*" allowed) need, in name order. `source`: a connection from
// ConnectToSourceCatalog.
absl::StatusOr<std::vector<NeededRole>> ReadNeededRoles(PGconn* source,
                                                        const std::vector<TableRef>& tables,
                                                        const RoleMap& map);

struct RolesOutcome {
  std::vector<std::string> created;
  std::vector<std::string> existing;          // left as they were
  std::vector<std::string> without_password;  // LOGIN roles created without their password
  std::vector<std::string> given_password;    // existing roles given the password they lacked
  std::vector<std::string> granted;           // memberships added: "app TO flow"
  std::vector<NotDone> not_done;
  std::string source_user;  // who read the source (named when passwords could not be read)

  // What was done, for the log, one line each.
  std::vector<std::string> Lines() const;
  // The roles created without their password, and the ways to set it; empty when none were.
  std::string PasswordNotice() const;
};

// Creates the roles the target lacks (`target` in autocommit), then makes `pipeline_role`, the
// role the pipeline writes as in the target, a member of each owner when it is not a superuser:
// it may then give the objects it creates their owner and still write to them. What the target
// role may not do goes into not_done; only a lost connection is an error.
absl::StatusOr<RolesOutcome> CopyRoles(PGconn* source, PGconn* target,
                                       const std::vector<NeededRole>& roles, const RoleMap& map,
                                       const std::string& pipeline_role);

// A role as the source's pg_roles (and pg_authid) describe it.
struct SourceRole {
  std::string name;
  bool superuser = false;
  bool inherit = true;
  bool createrole = false;
  bool createdb = false;
  bool login = false;
  bool replication = false;
  bool bypassrls = false;
  int connection_limit = -1;
  std::string valid_until;              // ISO 8601 or "infinity"; empty: none
  std::optional<std::string> password;  // rolpassword, when the source role may read it
};

// CREATE ROLE with the attributes of `role`, without its password. Without
// `superuser_attributes` (the target role is not a superuser), SUPERUSER, REPLICATION and
// BYPASSRLS are left out and named in *withheld. Pure; exposed for tests.
std::string CreateRoleStatement(const SourceRole& role, bool superuser_attributes,
                                std::vector<std::string>* withheld);

// The options of a membership: ADMIN; INHERIT and SET when the source is 16 or later (per
// membership there; before, INHERIT was the member's attribute and SET did not exist).
struct MembershipOptions {
  bool admin = false;
  std::optional<bool> inherit;
  std::optional<bool> set;
};

// GRANT `role` TO `member` with `options` as a server of `target_version`
// (server_version_num; 0 when unknown) takes them: `WITH ADMIN OPTION, INHERIT FALSE, SET TRUE`
// on 16 and later, and ADMIN OPTION alone before (where INHERIT and SET cannot be said). Pure;
// exposed for tests.
std::string GrantRoleStatement(const std::string& role, const std::string& member,
                               const MembershipOptions& options, int target_version);

// `prefix` ("ALTER ROLE "app" ", "ALTER DATABASE "shop" ") + "SET name TO value" for one
// element of pg_db_role_setting.setconfig ("name=value"): a list-valued setting (search_path,
// temp_tablespaces, *_preload_libraries) as one literal per element, as pg_dump writes it. Pure;
// exposed for tests.
std::string SetStatement(std::string_view prefix, std::string_view setting);

}  // namespace pgflow
