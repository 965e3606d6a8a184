#include "cli/init_command.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/pipeline_file.h"
#include "common/postgres/conninfo.h"
#include "common/postgres/pg_connection.h"
#include "engine/log.h"
#include "engine/pipeline.h"
#include "sources/postgres/privileges.h"

namespace pgflow {
namespace {

struct InitArgs {
  std::string path;
  std::string grant_to;
  bool print_sql = false;
};

// `pgflow init --print-sql`: the grants a run role needs, on the source (read from its catalog)
// and on each PostgreSQL target, for a DBA to run.
int PrintGrants(const PostgresPipeline& pipeline, const std::string& grant_to) {
  const PostgresSourceOptions& options = *pipeline.source;
  std::string role = grant_to.empty() ? ConninfoValue(options.url, "user") : grant_to;
  if (role.empty()) role = "pgflow";
  absl::StatusOr<PgConnPtr> conn = Connect(options.url, ConnectionKind::kRegular);
  if (!conn.ok()) {
    LogError("init %s: %s", pipeline.config.name, conn.status().message());
    return kExitFailure;
  }
  absl::StatusOr<std::vector<std::string>> grants = SourceGrants(conn->get(), options, role);
  if (!grants.ok()) {
    LogError("init %s: %s", pipeline.config.name, grants.status().message());
    return kExitFailure;
  }
  std::printf(
      "-- pipeline %s: what role %s needs to run it, once `pgflow init` has run as a superuser.\n"
      "-- In the source database %s, as a superuser:\n%s\n",
      pipeline.config.name.c_str(), role.c_str(), DescribeConninfo(options.url).c_str(),
      absl::StrJoin(*grants, "\n").c_str());
  for (const SinkConfig& sink : pipeline.config.sinks) {
    if (sink.type != "postgres") continue;
    const auto& target = static_cast<const PostgresSinkOptions&>(*sink.options);
    std::string target_role = ConninfoValue(target.url, "user");
    std::set<std::string> schemas;
    for (const TableRef& ref : options.tables) {
      schemas.insert(target.schema.empty() ? ref.schema : target.schema);
    }
    std::printf("\n-- Sink %s: in %s, as a superuser:\n%s\n", sink.name.c_str(),
                DescribeConninfo(target.url).c_str(),
                absl::StrJoin(TargetGrants(ConninfoValue(target.url, "dbname"),
                                           target_role.empty() ? "pgflow" : target_role, schemas),
                              "\n")
                    .c_str());
  }
  return kExitOk;
}

// Grants `role` what running the pipeline needs in its source, in one transaction.
int GrantRunRole(const PostgresPipeline& pipeline, const std::string& role) {
  const PostgresSourceOptions& options = *pipeline.source;
  const std::string& name = pipeline.config.name;
  absl::StatusOr<PgConnPtr> conn = Connect(options.url, ConnectionKind::kRegular);
  absl::StatusOr<std::vector<std::string>> grants =
      conn.ok() ? SourceGrants(conn->get(), options, role)
                : absl::StatusOr<std::vector<std::string>>(conn.status());
  std::string sql = "BEGIN;\n";
  if (grants.ok()) sql += absl::StrCat(absl::StrJoin(*grants, "\n"), "\nCOMMIT");
  absl::Status granted = grants.ok() ? Exec(conn->get(), sql).status() : grants.status();
  if (!granted.ok()) {
    LogError("init %s: granting role %s what the pipeline needs: %s", name, role,
             granted.message());
    return kExitFailure;
  }
  std::printf(
      "pipeline %s: role %s may now run it (REPLICATION, pgflow's bookkeeping, SELECT on the "
      "followed tables and sequences, today's and later ones)\n",
      name.c_str(), role.c_str());
  return kExitOk;
}

int Init(const InitArgs& args) {
  std::optional<PostgresPipeline> pipeline = LoadPostgresPipeline(args.path, "init");
  if (!pipeline) return kExitConfig;
  if (args.print_sql) return PrintGrants(*pipeline, args.grant_to);
  const PostgresSourceOptions& options = *pipeline->source;
  const std::string& name = pipeline->config.name;
  if (options.snapshot.mode == SnapshotMode::kOnly) {
    LogError(
        "pipeline %s copies once (snapshot mode only) and leaves nothing in the source: "
        "there is nothing to initialise",
        name);
    return kExitConfig;
  }
  // What `run` prepares before it streams.
  std::unique_ptr<Source> source = BuildSource(pipeline->config);
  absl::StatusOr<Lsn> start = source->Prepare();
  if (!start.ok()) {
    LogError("init %s: %s", name, start.status().message());
    return kExitFailure;
  }
  std::printf("pipeline %s: ready in %s (publication %s, slot %s at %s)\n", name.c_str(),
              DescribeConninfo(options.url).c_str(), options.publication.c_str(),
              options.slot.c_str(), start->ToString().c_str());
  if (args.grant_to.empty()) return kExitOk;
  return GrantRunRole(*pipeline, args.grant_to);
}

}  // namespace

Command AddInitCommand(CLI::App& app) {
  auto args = std::make_shared<InitArgs>();
  CLI::App* init = AddCommand(
      app, "init", "Install what a pipeline needs in the source, without streaming",
      "Install what a pipeline needs in the source without streaming: the pgflow schema, "
      "the DDL capture event triggers (needs a superuser), the publication and the "
      "replication slot, from which point changes are kept for the first `run`. "
      "Idempotent; `run` does the same when something is missing.");
  AddPipelineFile(init, &args->path);
  init->add_option("--grant-to", args->grant_to,
                   "then grant ROLE (not a superuser) what running the pipeline needs in the "
                   "source: REPLICATION, pgflow's bookkeeping tables, SELECT on the followed "
                   "tables and sequences (docs/operations/source-database.md, \"Privileges\")");
  init->add_flag("--print-sql", args->print_sql,
                 "print those grants (for --grant-to ROLE, else the source URL's user), and "
                 "each PostgreSQL target's, for a DBA to run; installs nothing");
  return {init, [args] { return Init(*args); }};
}

}  // namespace pgflow
