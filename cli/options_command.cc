#include "cli/options_command.h"

#include <cstdio>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "engine/config.h"

namespace pgflow {

Command AddOptionsCommand(CLI::App& app) {
  auto markdown = std::make_shared<bool>(false);
  CLI::App* options =
      AddCommand(app, "options", "Print every key a pipeline file accepts",
                 "Print every key a pipeline file accepts, with its type, default and meaning.");
  options->add_flag("--markdown", *markdown,
                    "as the markdown table docs/reference/pipeline-options.md carries "
                    "(| key | type | default | meaning |)");
  return {options, [markdown] {
            std::string reference =
                OptionsReference(*markdown ? ReferenceFormat::kMarkdown : ReferenceFormat::kText);
            std::fwrite(reference.data(), 1, reference.size(), stdout);
            return kExitOk;
          }};
}

}  // namespace pgflow
