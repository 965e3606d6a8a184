#pragma once

// What each subcommand's file (cli/*_command.h) gives the `pgflow` app (cli/app.h): an
// Add<Name>Command(CLI::App& app) that declares the subcommand on `app` (AddCommand) with its
// arguments, and returns the Command that runs it.

#include <functional>
#include <string>
#include <string_view>

namespace CLI {
class App;
}  // namespace CLI

namespace pgflow {

// Exit statuses the commands share (`pgflow status` has its own, cli/status_command.h).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitConfig = 2;  // a wrong command line, or a mistake in a file

struct Command {
  CLI::App* app = nullptr;  // the subcommand; its parent app owns it
  // Runs the command with what the command line gave it, once parsing chose `app`; returns
  // the process's exit status.
  std::function<int()> run;
};

// Adds the subcommand `name` to `parent`, with its summary (one line, what `pgflow --help`
// lists) and its details (the paragraph its own --help shows below the summary,
// cli/help_format.h). `parent` owns it.
CLI::App* AddCommand(CLI::App& parent, std::string_view name, std::string_view summary,
                     std::string_view details);

// Adds the required positional argument `pipeline`, the pipeline file, read into `*path`.
void AddPipelineFile(CLI::App* command, std::string* path);

}  // namespace pgflow
