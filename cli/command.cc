#include "cli/command.h"

#include "CLI/CLI.hpp"

namespace pgflow {

CLI::App* AddCommand(CLI::App& parent, std::string_view name, std::string_view summary,
                     std::string_view details) {
  return parent.add_subcommand(std::string(name),
                               std::string(summary) + "\n" + std::string(details));
}

void AddPipelineFile(CLI::App* command, std::string* path) {
  command->add_option("pipeline", *path, "pipeline file (YAML)")->required();
}

}  // namespace pgflow
