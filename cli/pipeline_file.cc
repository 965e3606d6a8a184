#include "cli/pipeline_file.h"

#include <cstdio>
#include <utility>

#include "cli/command.h"
#include "engine/log.h"

namespace pgflow {

std::optional<PipelineConfig> LoadOrReport(const std::string& path) {
  absl::StatusOr<PipelineConfig> config = LoadPipelineConfig(path);
  if (!config.ok()) {
    LogError("%s", config.status().message());
    return std::nullopt;
  }
  return *std::move(config);
}

std::optional<PostgresPipeline> LoadPostgresPipeline(const std::string& path,
                                                     std::string_view command) {
  std::optional<PipelineConfig> config = LoadOrReport(path);
  if (!config.has_value()) return std::nullopt;
  std::shared_ptr<const PostgresSourceOptions> source = PostgresSourceOf(*config);
  if (source == nullptr) {
    LogError(
        "pipeline %s reads from a %s source: `pgflow %s` works on a postgres source (run it "
        "on the capture pipeline's file)",
        config->name, config->source.type, command);
    return std::nullopt;
  }
  return PostgresPipeline{*std::move(config), std::move(source)};
}

bool ParseTableArgs(const std::vector<std::string>& args, const PostgresPipeline& pipeline,
                    std::vector<TableRef>* tables) {
  for (const std::string& arg : args) {
    absl::StatusOr<TableRef> ref = ParseTableRef(arg);
    if (!ref.ok()) {
      LogError("--tables: invalid table '%s': %s", arg, ref.status().message());
      return false;
    }
    bool covered = false;
    for (const TableRef& followed : pipeline.source->tables) {
      covered = covered || followed.Covers(*ref) || (ref->is_schema() && followed == *ref);
    }
    if (!covered) {
      LogError("--tables: %s is not among the tables pipeline %s follows", ref->Quoted(),
               pipeline.config.name);
      return false;
    }
    tables->push_back(*std::move(ref));
  }
  return true;
}

int PrintFromPipeline(
    const std::string& path,
    const std::function<absl::StatusOr<std::string>(const PipelineConfig&)>& command,
    const std::function<bool(const absl::Status&)>& is_usage_error) {
  absl::StatusOr<PipelineConfig> config = LoadPipelineConfig(path);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return kExitConfig;
  }
  absl::StatusOr<std::string> out = command(*config);
  if (!out.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), std::string(out.status().message()).c_str());
    return is_usage_error(out.status()) ? kExitConfig : kExitFailure;
  }
  std::fputs(out->c_str(), stdout);
  return kExitOk;
}

int ForEachTarget(
    const std::string& path, std::string_view command,
    const std::function<absl::Status(const PipelineConfig&, const PostgresSinkOptions&)>& apply) {
  std::optional<PostgresPipeline> pipeline = LoadPostgresPipeline(path, command);
  if (!pipeline) return kExitConfig;
  const PipelineConfig* config = &pipeline->config;
  int targets = 0;
  for (const SinkConfig& sink : config->sinks) {
    if (sink.type != "postgres") continue;
    ++targets;
    absl::Status s = apply(*config, static_cast<const PostgresSinkOptions&>(*sink.options));
    if (!s.ok()) {
      LogError("%s for sink %s: %s", command, sink.name, s.message());
      return kExitFailure;
    }
  }
  if (targets == 0) {
    LogError("pipeline %s has no postgres sink", config->name);
    return kExitConfig;
  }
  return kExitOk;
}

}  // namespace pgflow
