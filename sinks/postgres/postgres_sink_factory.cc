#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/postgres/conninfo.h"
#include "common/postgres/pg_connection.h"
#include "engine/log.h"
#include "engine/sink.h"
#include "sinks/postgres/ownership.h"
#include "sinks/postgres/postgres_sink.h"
#include "sinks/postgres/postgres_sink_impl.h"
#include "sinks/postgres/roles.h"
#include "sinks/postgres/sequences.h"
#include "sinks/postgres/table_definition.h"

namespace pgflow {
namespace {

const OptionTable<PostgresSinkOptions>& PostgresSinkTable() {
  using O = PostgresSinkOptions;
  static const auto* table = new OptionTable<O>({
      StringOption("url", &O::url)
          .Required()
          .NonEmpty()
          .Check(CheckConninfo)
          .Help("The target database: libpq URL or conninfo."),
      StringOption("schema", &O::schema)
          .NonEmpty("leave it out to keep the source's")
          .DefaultText("the source's")
          .Help("Target schema for every table."),
      IntOption("batch_rows", &O::batch_rows)
          .Range(1, 65535)
          .Help("Rows per multi-row statement (also bounded by 65,535 parameters)."),
      BoolOption("create_tables", &O::create_tables)
          .Help("Create a table missing from the target from the source's definition."),
      IntOption("load_workers", &O::load_workers)
          .Range(1, 64)
          .Help("Connections that copy the initial snapshot into tables that were empty, at "
                "once, and then build its indexes, at once."),
      StringOption("maintenance_work_mem", &O::maintenance_work_mem)
          .NonEmpty("leave it out for 256MB")
          .Help("Memory for building keys and indexes after the load (raised to this for the "
                "sink's session, never lowered)."),
      ChoiceOption("roles", &O::roles)
          .Choices({{"copy", RolesPolicy::kCopy}, {"skip", RolesPolicy::kSkip}}, "roles policy")
          .DefaultText("copy (skip with create_tables: false)")
          .Help("copy: before the first table, create the roles the followed objects need "
                "(owners, grantees, their members and groups; attributes, memberships, "
                "settings, and passwords when the source role is a superuser; existing roles "
                "are left as they are), give the database and schemas the source's owners, "
                "grants, settings and default privileges, and each table, sequence, type and "
                "routine pgflow creates the source's owner and grants; what the target role may "
                "not do is logged with the statement for a superuser (`pgflow roles` does it "
                "all again). skip: none of it; `pgflow verify` then compares rows only."),
  });
  return *table;
}

class PostgresSinkFactory : public SinkFactoryOf<PostgresSinkOptions> {
 public:
  std::string_view type() const override { return "postgres"; }
  bool SetsAside() const override { return true; }
  std::string DeadLetterDatabase(const SinkOptions& options) const override {
    return static_cast<const PostgresSinkOptions&>(options).url;
  }
  std::string_view help() const override {
    return "Applies the stream to another PostgreSQL database (a migration's target).";
  }

 protected:
  const OptionTable<PostgresSinkOptions>& table() const override { return PostgresSinkTable(); }
  std::unique_ptr<Sink> Build(const SinkContext& context,
                              std::shared_ptr<const PostgresSinkOptions> options) const override {
    return std::make_unique<PostgresSink>(context, std::move(options));
  }
};

}  // namespace

void RegisterPostgresSink() { RegisterSinkFactory(std::make_unique<PostgresSinkFactory>()); }

namespace {

// A command's connections: the source's catalog and the target.
struct SourceAndTarget {
  PgConnPtr source;
  PgConnPtr target;
};

absl::StatusOr<SourceAndTarget> ConnectBoth(const PostgresOrigin& origin,
                                            const PostgresSinkOptions& options) {
  absl::StatusOr<PgConnPtr> source = ConnectToSourceCatalog(origin.url);
  if (!source.ok()) return source.status();
  absl::StatusOr<PgConnPtr> target = Connect(options.url, ConnectionKind::kRegular);
  if (!target.ok()) {
    return absl::Status(target.status().code(),
                        absl::StrCat("postgres target: ", target.status().message()));
  }
  return SourceAndTarget{*std::move(source), *std::move(target)};
}

}  // namespace

absl::Status SyncSequences(std::string_view pipeline, const PostgresOrigin& origin,
                           const PostgresSinkOptions& options) {
  absl::StatusOr<SourceAndTarget> connected = ConnectBoth(origin, options);
  if (!connected.ok()) return connected.status();
  PGconn* source = connected->source.get();
  PGconn* target = connected->target.get();
  absl::StatusOr<std::vector<SequencePair>> sequences =
      ReadTableSequences(source, origin.tables, options.schema);
  if (!sequences.ok()) return sequences.status();
  absl::StatusOr<SequenceCopyResult> copied = CopySequenceValues(source, target, *sequences);
  if (!copied.ok()) return copied.status();
  LogInfo("%d sequences of pipeline %s set in %s to the source's values", copied->copied,
          std::string(pipeline), Describe(target));
  if (!copied->missing.empty()) {
    return absl::NotFoundError(
        absl::StrCat("postgres target ", Describe(target), ": ", copied->missing.size(),
                     " sequences of the source do not exist in the target (the others were set): ",
                     absl::StrJoin(copied->missing, ", ")));
  }
  return absl::OkStatus();
}

absl::Status CopyRolesCommand(const PostgresOrigin& origin, const PostgresSinkOptions& options,
                              const std::string& pipeline_role) {
  absl::StatusOr<SourceAndTarget> connected = ConnectBoth(origin, options);
  if (!connected.ok()) return connected.status();
  PGconn* source = connected->source.get();
  PGconn* conn = connected->target.get();
  std::vector<std::string> more_run_roles;
  if (!pipeline_role.empty()) more_run_roles.push_back(pipeline_role);
  absl::StatusOr<RoleMap> map = ReadRoleMap(source, conn, more_run_roles);
  if (!map.ok()) return map.status();
  const std::string role = pipeline_role.empty() ? map->target_user : pipeline_role;
  absl::StatusOr<std::vector<NeededRole>> roles = ReadNeededRoles(source, origin.tables, *map);
  if (!roles.ok()) return roles.status();
  absl::StatusOr<RolesOutcome> outcome = CopyRoles(source, conn, *roles, *map, role);
  if (!outcome.ok()) return outcome.status();
  // An operator runs this: it alone copies the database's settings (OwnershipCopier::Options).
  OwnershipCopier copier(source, conn, *map,
                         {origin.tables, options.schema, role, /*copy_settings=*/true},
                         [conn](const std::string& sql, std::string* refused) {
                           return RunRefusable(conn, sql, refused);
                         });
  // The schemas first: a new owner needs CREATE on its object's schema.
  if (absl::Status s = copier.CopyDatabase(*roles); !s.ok()) return s;
  for (auto step : {&OwnershipCopier::CopySchemaObjects, &OwnershipCopier::CopyTables}) {
    if (absl::Status s = (copier.*step)(); !s.ok()) return s;
  }
  LogOwnership(absl::StrCat("roles: ", Describe(conn), ": "), &*outcome, copier, Describe(conn));
  return absl::OkStatus();
}

}  // namespace pgflow
