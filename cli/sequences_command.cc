#include "cli/sequences_command.h"

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "cli/pipeline_file.h"

namespace pgflow {

Command AddSequencesCommand(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* sequences = AddCommand(
      app, "sequences", "Set the targets' sequences to the source's values",
      "Set every sequence the pipeline's tables use (serial, identity, nextval defaults) "
      "on each PostgreSQL target to the source's current value: the step before a "
      "cutover. (The initial load does it by itself once the snapshot is in.)");
  AddPipelineFile(sequences, path.get());
  return {sequences, [path] {
            return ForEachTarget(
                *path, "sequences",
                [](const PipelineConfig& config, const PostgresSinkOptions& target) {
                  return SyncSequences(config.name, *config.source.traits.postgres, target);
                });
          }};
}

}  // namespace pgflow
