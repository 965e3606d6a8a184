#pragma once

// The `pgflow` command line: the app with every subcommand declared (each by its own
// cli/*_command.h), and the reference page generated from their --help.

#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "cli/command.h"

namespace pgflow {

struct CommandLine {
  CLI::App app{"", "pgflow"};
  // In the order `pgflow --help` lists them; exactly one runs, the one parsing chose.
  std::vector<Command> commands;
  // --log-level and --log-format, accepted before or after the command.
  std::string log_level = "info";
  std::string log_format = "text";
};

// A new command line: its options bind to its own members, so it stays where it is made.
std::unique_ptr<CommandLine> MakeCommandLine();

// docs/reference/cli.md's generated part: `pgflow --help`, then the --help of every subcommand
// (the nested `pgflow pooler status` after `pgflow pooler`), each under its own heading.
// `pgflow cli-reference` prints it; scripts/cli-reference.sh writes it into the page.
std::string CliReference();

}  // namespace pgflow
