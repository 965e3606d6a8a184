#include "cli/pipeline_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"

#include "cli/command.h"
#include "engine/log.h"

namespace pgflow {

namespace {

// migrate.cutover-2.yaml: directory "", stem "migrate", generation 2, extension ".yaml".
struct FileName {
  std::filesystem::path dir;
  std::string stem;
  int generation = 0;
  std::string extension;
};

FileName SplitName(const std::string& path) {
  const std::filesystem::path p(path);
  FileName name{.dir = p.parent_path(),
                .stem = p.stem().string(),
                .generation = 0,
                .extension = p.extension().string()};
  constexpr std::string_view kTag = ".cutover-";
  if (size_t at = name.stem.rfind(kTag); at != std::string::npos) {
    const std::string digits = name.stem.substr(at + kTag.size());
    if (!digits.empty() && digits.size() < 9 &&
        std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      name.generation = std::stoi(digits);
      name.stem.resize(at);
    }
  }
  return name;
}

std::string Join(const std::filesystem::path& dir, const std::string& file) {
  return dir.empty() ? file : (dir / file).string();
}

std::string MarkerPath(const FileName& name) { return Join(name.dir, name.stem + ".current"); }

}  // namespace

PipelineFile CurrentPipelineFile(const std::string& path) {
  const FileName name = SplitName(path);
  std::ifstream in(MarkerPath(name));
  std::string current;
  if (!in || !std::getline(in, current) || current.empty() ||
      current.find('/') != std::string::npos) {
    return {path, name.generation};
  }
  const FileName named = SplitName(current);
  const std::string named_path = Join(name.dir, current);
  if (named.stem != name.stem || !std::filesystem::exists(named_path)) {
    LogWarning("%s names %s, which is not a pipeline file beside %s: running %s itself",
               MarkerPath(name), current, path, path);
    return {path, name.generation};
  }
  return {named_path, named.generation};
}

PipelineFile NextPipelineFile(const PipelineFile& file) {
  const FileName name = SplitName(file.path);
  const int next = name.generation + 1;
  return {Join(name.dir, absl::StrCat(name.stem, ".cutover-", next, name.extension)), next};
}

std::vector<PipelineFile> EarlierPipelineFiles(const PipelineFile& current) {
  const FileName name = SplitName(current.path);
  std::vector<PipelineFile> earlier;
  for (int g = 0; g < name.generation; ++g) {
    PipelineFile file{
        Join(name.dir, g == 0 ? absl::StrCat(name.stem, name.extension)
                              : absl::StrCat(name.stem, ".cutover-", g, name.extension)),
        g};
    if (std::filesystem::exists(file.path)) earlier.push_back(std::move(file));
  }
  return earlier;
}

absl::Status MarkCurrent(const PipelineFile& file) {
  const FileName name = SplitName(file.path);
  const std::string marker = MarkerPath(name);
  const std::string temporary = marker + ".tmp";
  // Durable before it counts: written, synced, renamed, and the directory synced, so that a
  // crash leaves the old marker or the new one, whole.
  const std::string text = std::filesystem::path(file.path).filename().string() + "\n";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot write ", temporary));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                       ::fsync(fd) == 0;
  if (::close(fd) != 0 || !written || std::rename(temporary.c_str(), marker.c_str()) != 0) {
    std::remove(temporary.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", marker));
  }
  const std::string dir = name.dir.empty() ? std::string(".") : name.dir.string();
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

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
