#include "cli/validate_command.h"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/pooler_command.h"
#include "cli/preview_command.h"
#include "cluster/node_config.h"
#include "engine/config.h"
#include "pooler/pooler_config.h"

namespace pgflow {
namespace {

struct ValidateArgs {
  std::string path;
  bool against_source = false;
};

// The problems `validate --source` finds, printed: kExitOk when there are none.
int ValidateAgainstSourceOf(const PipelineConfig& config, const std::string& path) {
  std::vector<std::string> warnings;
  absl::StatusOr<std::vector<std::string>> problems =
      ValidateAgainstSource(config, /*before_run=*/false, &warnings);
  if (!problems.ok()) {
    std::fprintf(stderr, "%s: reading the source: %s\n", path.c_str(),
                 std::string(problems.status().message()).c_str());
    return kExitFailure;
  }
  for (const std::string& p : *problems) std::fprintf(stderr, "%s: %s\n", path.c_str(), p.c_str());
  for (const std::string& w : warnings) {
    std::fprintf(stderr, "%s: warning: %s\n", path.c_str(), w.c_str());
  }
  return problems->empty() ? kExitOk : kExitConfig;
}

int Validate(const ValidateArgs& args) {
  const std::string& path = args.path;
  absl::StatusOr<std::string> text = ReadConfigFile(path);
  if (!text.ok()) {
    std::fprintf(stderr, "%s\n", std::string(text.status().message()).c_str());
    return kExitConfig;
  }
  if (pooler::LooksLikePoolerConfig(*text)) {
    if (args.against_source) {
      std::fprintf(stderr, "%s: a pooler file has no source: --source checks a pipeline file\n",
                   path.c_str());
      return kExitConfig;
    }
    return ValidatePoolerFile(*text, path);
  }
  if (cluster::LooksLikeNodeConfig(*text)) {
    absl::StatusOr<cluster::NodeConfig> node = cluster::ParseNodeConfig(*text, path);
    if (!node.ok()) {
      std::fprintf(stderr, "%s\n", std::string(node.status().message()).c_str());
      return kExitConfig;
    }
    std::printf("%s: ok: node %s of cluster %s, etcd %s, server on %s\n", path.c_str(),
                node->name.c_str(), node->cluster.c_str(), absl::StrJoin(node->etcd, ",").c_str(),
                node->postgres.listen.c_str());
    return kExitOk;
  }
  absl::StatusOr<PipelineConfig> config = ParsePipelineConfig(*text, path);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return kExitConfig;
  }
  if (args.against_source) {
    if (int status = ValidateAgainstSourceOf(*config, path); status != kExitOk) return status;
  }
  std::string sinks;
  for (const SinkConfig& sink : config->sinks) {
    absl::StrAppend(&sinks, sinks.empty() ? "" : ", ", sink.name, " (", sink.type, ")");
  }
  std::printf("%s: ok: pipeline %s, source %s (%s), sinks %s\n", path.c_str(), config->name.c_str(),
              config->source.type.c_str(),
              config->source.factory->Describe(*config->source.options).c_str(), sinks.c_str());
  return kExitOk;
}

}  // namespace

Command AddValidateCommand(CLI::App& app) {
  auto args = std::make_shared<ValidateArgs>();
  CLI::App* validate = AddCommand(
      app, "validate", "Check a pipeline, pooler or node file without touching any server",
      "Check a pipeline file, a pooler file or a node file (told apart by their keys: listen "
      "and databases, cluster and etcd), without touching any server: YAML syntax, unknown "
      "keys, types, required fields, URLs; for a pooler file also its users file and TLS "
      "files. Errors name file, line and column, every one at once; exit status 2 on error.");
  validate->add_option("file", args->path, "pipeline, pooler or node file (YAML)")->required();
  validate->add_flag("--source", args->against_source,
                     "also connect to the source and run every followed table's first row "
                     "through each sink's transforms: tables and columns the transforms name "
                     "must exist, with types their rules fit");
  return {validate, [args] { return Validate(*args); }};
}

}  // namespace pgflow
