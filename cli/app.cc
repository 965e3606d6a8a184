#include "cli/app.h"

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "cli/cluster_command.h"
#include "cli/cutover_command.h"
#include "cli/dlq_command.h"
#include "cli/help_format.h"
#include "cli/init_command.h"
#include "cli/options_command.h"
#include "cli/pooler_command.h"
#include "cli/preview_command.h"
#include "cli/roles_command.h"
#include "cli/run_command.h"
#include "cli/sequences_command.h"
#include "cli/snapshot_command.h"
#include "cli/status_command.h"
#include "cli/teardown_command.h"
#include "cli/validate_command.h"
#include "cli/verify_command.h"

namespace pgflow {
namespace {

// The subcommands in the order `pgflow --help` lists them.
constexpr Command (*kCommands[])(CLI::App&) = {
    AddRunCommand,       AddInitCommand,    AddTeardownCommand, AddValidateCommand,
    AddPreviewCommand,   AddDlqCommand,     AddSnapshotCommand, AddVerifyCommand,
    AddSequencesCommand, AddRolesCommand,   AddCutoverCommand,  AddStatusCommand,
    AddPoolerCommand,    AddNodeCommand,    AddClusterCommand,  AddOptionsCommand,
};

// `pgflow cli-reference`, left out of `pgflow --help` (no group): for
// scripts/cli-reference.sh.
Command AddCliReferenceCommand(CLI::App& app) {
  CLI::App* reference = app.add_subcommand(
      "cli-reference", "Print docs/reference/cli.md's generated part (scripts/cli-reference.sh)");
  reference->group("");
  return {reference, [] {
            std::string text = CliReference();
            std::fwrite(text.data(), 1, text.size(), stdout);
            return kExitOk;
          }};
}

// The section of `command` (named `name`, as typed) and of its own subcommands.
void AppendReference(const CLI::App& command, const std::string& name, std::string* out) {
  // help() adds the command's own name to what it is given.
  const size_t space = name.rfind(' ');
  std::string help = command.help(space == std::string::npos ? "" : name.substr(0, space));
  absl::StrAppend(out, "\n## `", name, "`\n\n```text\n", absl::StripTrailingAsciiWhitespace(help),
                  "\n```\n");
  for (const CLI::App* sub : command.get_subcommands({})) {
    if (sub->get_group().empty()) continue;  // hidden
    AppendReference(*sub, absl::StrCat(name, " ", sub->get_name()), out);
  }
}

}  // namespace

std::unique_ptr<CommandLine> MakeCommandLine() {
  auto line = std::make_unique<CommandLine>();
  CLI::App& app = line->app;
  app.formatter(std::make_shared<HelpFormatter>());
  app.description(
      "pgflow: change-data-capture pipelines for PostgreSQL.\n"
      "Streams every insert, update, delete and truncate of the tables a pipeline names into "
      "its sinks, acknowledging to PostgreSQL only what every sink holds.");
  app.require_subcommand(1);
  app.fallthrough();  // --log-level and --log-format also after the command
  app.set_version_flag("--version", std::string("pgflow ") + PGFLOW_VERSION);
  app.add_option("--log-level", line->log_level, "debug, info, warn or error")
      ->capture_default_str();
  app.add_option("--log-format", line->log_format,
                 "text (a timestamped line per event) or json (one object per line: ts, level, "
                 "pipeline, component, message)")
      ->capture_default_str();
  for (Command (*add)(CLI::App&) : kCommands) line->commands.push_back(add(app));
  line->commands.push_back(AddCliReferenceCommand(app));
  // After the subcommands, which would inherit it.
  app.footer("`pgflow <command> --help` says what a command does and lists its arguments.");
  return line;
}

std::string CliReference() {
  std::unique_ptr<CommandLine> line = MakeCommandLine();
  std::string out;
  AppendReference(line->app, "pgflow", &out);
  return out;
}

}  // namespace pgflow
