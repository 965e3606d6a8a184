#include "cli/roles_command.h"

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "cli/pipeline_file.h"

namespace pgflow {
namespace {

struct RolesArgs {
  std::string path;
  std::string grant_to;  // the role the pipeline writes as; empty: each target URL's user
};

}  // namespace

Command AddRolesCommand(CLI::App& app) {
  auto args = std::make_shared<RolesArgs>();
  CLI::App* roles =
      AddCommand(app, "roles", "Create the roles, owners and grants the targets' objects need",
                 "Create on each PostgreSQL target the roles the pipeline's objects need (owners, "
                 "grantees, their members and groups, with attributes, memberships, settings and, "
                 "when the source URL names a superuser, passwords), then give the database, the "
                 "schemas and every table, sequence, type and routine pgflow brought the source's "
                 "owners, grants, settings and default privileges: what `roles: copy` does as the "
                 "pipeline runs. Run with superusers' URLs, it does what the pipeline's role may "
                 "not. Idempotent.");
  AddPipelineFile(roles, &args->path);
  roles->add_option("--grant-to", args->grant_to,
                    "the role the pipeline writes as in the targets (default: each target URL's "
                    "user): made a member of the roles that own its objects, so that it gives "
                    "what it creates their owner and keeps writing to them");
  return {roles, [args] {
            return ForEachTarget(
                args->path, "roles",
                [&](const PipelineConfig& config, const PostgresSinkOptions& target) {
                  return CopyRolesCommand(*config.source.traits.postgres, target, args->grant_to);
                });
          }};
}

}  // namespace pgflow
