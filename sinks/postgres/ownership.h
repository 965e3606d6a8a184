#pragma once

// The owners, grants, default privileges and settings of the source given to what a pipeline
// brings into a PostgreSQL target (`roles: copy` of the postgres sink, `pgflow roles`):
//  - the database: its owner and grants (CONNECT, CREATE, TEMPORARY), and with
//    Options::copy_settings (`pgflow roles` alone) its settings (ALTER DATABASE ... SET; the
//    target's other settings are kept);
//  - each schema of the followed tables (under the sink's `schema` mapping): owner and grants.
//    A database or schema a run role does not own in the target (one pgflow writes into, shared
//    with others) only gains the grants it lacks: no REVOKE, no new owner, and what is left is
//    said in left(); settings only when it has the source's owner already;
//  - the default privileges (ALTER DEFAULT PRIVILEGES) of the roles the objects need, in those
//    schemas and everywhere;
//  - the tables, their sequences, and the types, domains and routines the sink restores
//    (schema_objects.h): owner and grants, but only of those a run role owns (pgflow created
//    them) or that have the source's owner already (CopiesPrivilegesOf). Someone else's object
//    is left as it is.
// An object whose ACL is NULL in the source (the built-in default) keeps the target's ACL, as
// pg_dump does, and a privilege one server lacks (MAINTAIN before 17) is never granted or
// revoked.
// The role the pipeline writes as gives up an object it owns only when it keeps its access (a
// member of the new owner with INHERIT, which CopyRoles arranges); otherwise, as whatever the
// target role may not do, it goes into not_done with the statement a superuser runs.
//
// Not thread-safe: one thread uses a copier and its connections.

#include <libpq-fe.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "common/postgres/table_ref.h"
#include "sinks/postgres/privileges.h"
#include "sinks/postgres/roles.h"

namespace pgflow {

class OwnershipCopier {
 public:
  // Runs statements on the target as one unit, all or nothing: a refusal fills *refused (OK is
  // returned), a lost connection is kUnavailable. RunRefusable for a connection in autocommit.
  using Runner = std::function<absl::Status(const std::string& sql, std::string* refused)>;

  struct Options {
    std::vector<TableRef> tables;  // the pipeline's, "schema.*" allowed
    std::string mapped_schema;     // the sink's `schema`; empty keeps the source's
    std::string pipeline_role;     // the role the pipeline writes as in the target
    // Also the database's settings (ALTER DATABASE ... SET): `pgflow roles` alone, run by an
    // operator, never a sink: they would apply to everyone's new sessions in the middle of a
    // load (pgflow's own sessions are immune to the timeouts and read-only default, see
    // kSessionOptions, but not to everything a setting may change).
    bool copy_settings = false;
  };

  // `source`: a ConnectToSourceCatalog connection; both outlive this.
  OwnershipCopier(PGconn* source, PGconn* target, RoleMap map, Options options, Runner run);

  // The database, its schemas and the default privileges of `roles` (ReadNeededRoles).
  absl::Status CopyDatabase(const std::vector<NeededRole>& roles);
  // Source table schema.name's target table and its sequences.
  absl::Status CopyTable(const std::string& schema, const std::string& name);
  // Every table of the pipeline the target has, and their sequences.
  absl::Status CopyTables();
  // The types, domains and routines CopySchemaObjects brings.
  absl::Status CopySchemaObjects();

  // Objects given the source's owner or grants ("table public.orders").
  const std::vector<std::string>& changed() const { return changed_; }
  const std::vector<NotDone>& not_done() const { return not_done_; }
  // Databases and schemas left as they are but for the grants they lacked, with why and what
  // would give them the rest ("database shop: owned by postgres, not by pgflow's role ...").
  const std::vector<std::string>& left() const { return left_; }

 private:
  // kPgflows: an object pgflow restores (a table, ...): given the source's owner and grants
  // when CopiesPrivilegesOf, else left as it is. kShared: a database or schema: the same when a
  // run role owns it in the target, else only the grants it lacks are added.
  enum class Scope { kPgflows, kShared };
  // Gives target object `target_name` the privileges source object `source_name` has, as
  // `scope` allows; *copies (when not null): CopiesPrivilegesOf, a run role owns it in the
  // target or the source's owner does.
  absl::Status CopyObject(ObjectKind kind, const std::string& what, const std::string& source_name,
                          const std::string& target_name, Scope scope, bool* copies = nullptr);
  // Whether the pipeline's role keeps its access to what `owner` owns.
  absl::StatusOr<bool> KeepsAccess(const std::string& owner);
  // Whether `role` is a superuser in the target (false when there is no such role).
  absl::StatusOr<bool> IsSuperuser(const std::string& role);
  absl::Status CopyDatabaseSettings(const std::string& source_db, const std::string& target_db);
  absl::Status CopyDefaultPrivileges(const std::vector<NeededRole>& roles);
  // Runs `statements` for `object` ("table public.orders"); a refusal is not_done as `what`.
  absl::Status Run(const std::vector<std::string>& statements, const std::string& object,
                   std::string what);

  PGconn* source_;
  PGconn* target_;
  const RoleMap map_;
  const Options options_;
  const Runner run_;
  std::vector<std::string> changed_;
  std::vector<NotDone> not_done_;
  std::vector<std::string> left_;
};

// Logs what CopyRoles (when `roles` is not null) and `copier` did, each line after `prefix`
// ("sink replica (postgres): "), and warns of what they could not do, each with the statement
// to run as a superuser in `target` (a description).
void LogOwnership(std::string_view prefix, const RolesOutcome* roles, const OwnershipCopier& copier,
                  const std::string& target);

}  // namespace pgflow
