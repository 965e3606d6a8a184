#pragma once

// The pipeline file: its top-level keys, the sinks' common keys, and the loader that hands each
// source and sink block to the factory registered for its type (engine/registry.h). Pure: no
// network and no file access beyond reading the file itself (`pgflow validate` rests on this).
//
// Every error names the file, line and column it is about, and the dotted path of the key:
//   shop.yaml:7:5: sinks.out.jsonl: unknown key 'pth' (did you mean 'path'? ...)
// Keys that docs/development/architecture.md ("Configuration") lists as the contract are never
// renamed.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/config_node.h"
#include "engine/options.h"
#include "engine/registry.h"
#include "engine/sink.h"

namespace pgflow {

// The chain of `transforms` (as loaded), built anew for each run of the pipeline.
TransformChain BuildTransforms(const std::string& pipeline,
                               const std::vector<TransformConfig>& transforms);

struct SourceConfig {
  std::string type;  // the key under `source:`, a registered source type
  const SourceFactory* factory = nullptr;
  std::shared_ptr<const SourceOptions> options;  // what factory->Parse returned
  SourceTraits traits;                           // factory->Traits(*options)
};

// `buffer:`.
struct BufferConfig {
  uint64_t queue_bytes = 64ull << 20;  // bound of each sink's queue
};

// `admin:`.
struct AdminConfig {
  std::string listen;  // host:port; empty = off
  // A pgbouncer-style users file (`"user" "password, md5 hash or SCRAM secret"` lines) of who
  // may log in to the web console and act (replay a dead letter); relative paths are the
  // pipeline file's directory's. Empty: the console only shows.
  std::string users;
};

// The keys beside a sink's type key.
struct SinkCommonConfig {
  // The sink's own transforms, run after the pipeline's (`transforms:` beside its type), and
  // their entries as written, which the loader turns into them.
  std::vector<TransformConfig> transforms;
  std::optional<ConfigNode> transforms_node;
  std::chrono::milliseconds flush_interval{200};  // how often the engine calls Flush
  DdlPolicy ddl;
  DeadLetterConfig dead_letter;  // not enabled(): a refused event stops the pipeline
};

struct SinkConfig {
  std::string name;  // the user's key under `sinks:`
  std::string type;  // "jsonl", ...
  const SinkFactory* factory = nullptr;
  SinkCommonConfig common;
  std::shared_ptr<const SinkOptions> options;  // what factory->Parse returned
};

struct PipelineConfig {
  std::string file;
  std::string name;  // [a-z0-9_]+, at most 48 characters (slot names are limited to 63)
  SourceConfig source;
  std::vector<TransformConfig> transforms;
  std::vector<SinkConfig> sinks;
  std::optional<ConfigNode> documents;  // `documents:` as written, for the sinks that take them
  BufferConfig buffer;
  AdminConfig admin;
};

// What a sink of `pipeline` is built with besides its options.
SinkContext ContextFor(const PipelineConfig& pipeline, const SinkConfig& sink);

// The tables of the file's own sections, for `pgflow options`.
const OptionSchema& PipelineOptions();    // the top level
const OptionSchema& SinkCommonOptions();  // beside the type key of every sink

// Every key a pipeline file accepts, with the registered sources and sinks: aligned text for a
// terminal, or the markdown table docs/reference/pipeline-options.md carries (| key | type |
// default | meaning |).
enum class ReferenceFormat { kText, kMarkdown };
std::string OptionsReference(ReferenceFormat format);

// `yaml_text` is the whole pipeline file; `file_name` is only used in messages. A mistake in
// the file is an InvalidArgument status whose message starts with "<file_name>:<line>:<col>: ".
absl::StatusOr<PipelineConfig> ParsePipelineConfig(std::string_view yaml_text,
                                                   std::string_view file_name);
// Reads `path` (a regular file or a pipe, at most 16 MiB) and parses it. A file that cannot be
// read is NotFound / PermissionDenied / InvalidArgument naming the path.
absl::StatusOr<PipelineConfig> LoadPipelineConfig(const std::string& path);

}  // namespace pgflow
