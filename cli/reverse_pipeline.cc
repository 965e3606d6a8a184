#include "cli/reverse_pipeline.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include <yaml-cpp/yaml.h>
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "sinks/postgres/postgres_sink.h"

namespace pgflow {
namespace {

constexpr size_t kMaxPipelineName = 48;

// migrate_cutover_1 -> migrate: the name the generations share.
std::string BaseName(const std::string& name) {
  constexpr std::string_view kTag = "_cutover_";
  const size_t at = name.rfind(kTag);
  if (at == std::string::npos || at + kTag.size() == name.size()) return name;
  for (size_t i = at + kTag.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return name;
  }
  return name.substr(0, at);
}

}  // namespace

absl::StatusOr<ReversePipeline> PlanReversePipeline(const PipelineFile& forward_file,
                                                    const PipelineConfig& forward,
                                                    const std::string& sink) {
  ReversePipeline reverse;
  reverse.file = NextPipelineFile(forward_file);
  reverse.name = absl::StrCat(BaseName(forward.name), "_cutover_", reverse.file.generation);
  if (reverse.name.size() > kMaxPipelineName) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no stream back: its pipeline name ", reverse.name, " would be longer than ",
        kMaxPipelineName, " characters (shorten the pipeline's name, or --no-reverse)"));
  }
  if (!forward.transforms.empty()) {
    return absl::FailedPreconditionError(
        "no stream back: the pipeline transforms what it streams, which cannot be undone on the "
        "way back (--no-reverse)");
  }
  for (const SinkConfig& s : forward.sinks) {
    if (s.name != sink) {
      reverse.left_out.push_back(s.name);
      continue;
    }
    if (!s.common.transforms.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("no stream back: sink ", sink,
                       " transforms what it writes, which cannot be undone "
                       "on the way back (--no-reverse)"));
    }
    if (!static_cast<const PostgresSinkOptions&>(*s.options).schema.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("no stream back: sink ", sink, " writes into another schema (schema: ",
                       static_cast<const PostgresSinkOptions&>(*s.options).schema,
                       "), which the way back cannot name (--no-reverse)"));
    }
  }
  return reverse;
}

absl::Status WriteReversePipeline(const PipelineFile& forward_file, const std::string& sink,
                                  const ReversePipeline& reverse) {
  YAML::Node file;
  try {
    file = YAML::LoadFile(forward_file.path);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(forward_file.path, ": ", e.what()));
  }
  const YAML::Node forward_source = file["source"]["postgres"];
  const YAML::Node forward_sink = file["sinks"][sink];
  if (!forward_source.IsMap() || !forward_sink.IsMap() || !forward_sink["postgres"].IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(
        forward_file.path, ": no source.postgres or sinks.", sink, ".postgres to reverse"));
  }
  // Copies the urls as written (a ${VAR} stays one).
  const YAML::Node source_url = YAML::Clone(forward_source["url"]);
  const YAML::Node target_url = YAML::Clone(forward_sink["postgres"]["url"]);

  YAML::Node source = YAML::Clone(forward_source);
  source["url"] = target_url;
  source.remove("slot");
  source.remove("publication");
  YAML::Node snapshot;
  snapshot["mode"] = "never";
  source["snapshot"] = snapshot;

  YAML::Node postgres;
  postgres["url"] = source_url;
  postgres["create_tables"] = false;
  postgres["roles"] = "skip";
  if (forward_sink["postgres"]["batch_rows"]) {
    postgres["batch_rows"] = YAML::Clone(forward_sink["postgres"]["batch_rows"]);
  }
  YAML::Node back;
  back["postgres"] = postgres;
  for (const char* key : {"flush_interval", "ddl"}) {
    if (forward_sink[key]) back[key] = YAML::Clone(forward_sink[key]);
  }

  YAML::Node out;
  out["pipeline"] = reverse.name;
  YAML::Node source_map;
  source_map["postgres"] = source;
  out["source"] = source_map;
  YAML::Node sinks;
  sinks[sink] = back;
  out["sinks"] = sinks;
  for (const char* key : {"buffer", "admin"}) {
    if (file[key]) out[key] = YAML::Clone(file[key]);
  }
  YAML::Emitter emitter;
  emitter << out;
  if (!emitter.good()) {
    return absl::InternalError(
        absl::StrCat("writing ", reverse.file.path, ": ", emitter.GetLastError()));
  }
  const std::string text = absl::StrCat(
      "# Written by `pgflow cutover` at ",
      absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()),
      ": the stream back from the\n# target of ", forward_file.path,
      " to its source, which keeps the source current after the\n# switch. `pgflow run ",
      forward_file.path, "` runs this file now (see the .current file beside it).\n",
      reverse.left_out.empty()
          ? std::string()
          : absl::StrCat("# Left out: sinks ", absl::StrJoin(reverse.left_out, ", "),
                         " (only the postgres sink streams back).\n"),
      emitter.c_str(), "\n");
  const std::string temporary = reverse.file.path + ".tmp";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot write ", temporary));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const bool closed = ::close(fd) == 0;
  if (!written || !closed || std::rename(temporary.c_str(), reverse.file.path.c_str()) != 0) {
    std::remove(temporary.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", reverse.file.path));
  }
  return absl::OkStatus();
}

}  // namespace pgflow
