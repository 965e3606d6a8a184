#pragma once

// The pipeline file: loading, `${VAR}` expansion and validation, with no network and no
// file access beyond reading the file itself (`pgflow validate` rests on this).
//
// Every error names the file, line and column it is about, and the dotted path of the key:
//   shop.yaml:7:5: sinks.out.jsonl: unknown key 'pth' (expected one of: path, fsync, ...)
// Keys that DESIGN.md "Configuration" fixes are a contract: they are never renamed.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace YAML {
class Node;
}

namespace pgflow {

// One option of a component, Fluent Bit style: the table drives both validation (unknown
// keys are rejected) and the reference that `pgflow options` prints.
struct OptionSpec {
  std::string_view key;
  std::string_view type;  // "string", "bool", "int", "bytes", "duration", "list", "map"
  bool required = false;
  std::string_view default_value;  // as the user would write it; "" when none
  std::string_view help;
};

// A node of the pipeline file with its position, for typed reads with good errors.
// Scalars read as strings have `${VAR}` replaced from the environment; an unset variable is
// an error at the place it is used.
class ConfigNode {
 public:
  ConfigNode(std::shared_ptr<const YAML::Node> node, std::string file, std::string path);

  const std::string& path() const { return path_; }
  // "<file>:<line>:<column>", 1-based.
  std::string Position() const;
  // "<file>:<line>:<column>: <path>: <message>" as an InvalidArgument status.
  absl::Status Error(std::string_view message) const;

  bool IsMap() const;
  bool IsSequence() const;
  bool IsScalar() const;
  bool IsNull() const;

  // The mapping accessors below treat a null node (`jsonl:` with nothing after it) as an
  // empty mapping.
  //
  // Fails if this node is not a mapping (or null), on any key not in `specs` (suggesting the
  // closest known key), on a missing required key, and on a value whose shape does not fit
  // its spec's type (a sequence where a "string" is expected, a scalar for a "map", ...).
  absl::Status CheckKeys(std::span<const OptionSpec> specs) const;
  // The value under `key`, if present and not null; nullopt for anything but a mapping.
  std::optional<ConfigNode> Get(std::string_view key) const;
  // The key node itself (not its value), for errors about the key: it has the key's position
  // and this mapping's path. nullopt if absent or if this is not a mapping.
  std::optional<ConfigNode> KeyNode(std::string_view key) const;
  // The keys of a mapping in file order, each with its value (which may be null); empty for
  // anything but a mapping.
  std::vector<std::pair<std::string, ConfigNode>> Entries() const;
  // The items of a sequence; empty for anything but a sequence.
  std::vector<ConfigNode> Items() const;

  absl::StatusOr<std::string> AsString() const;
  absl::StatusOr<bool> AsBool() const;
  absl::StatusOr<int64_t> AsInt(int64_t min, int64_t max) const;
  // 1048576, "64MiB", "64MB" (=MiB), "1GiB", "512KiB", "512kB".
  absl::StatusOr<uint64_t> AsBytes() const;
  // "250ms", "5s", "2m", "1h"; a bare integer is seconds.
  absl::StatusOr<std::chrono::milliseconds> AsDuration() const;
  // A string or a list of strings.
  absl::StatusOr<std::vector<std::string>> AsStringList() const;

 private:
  std::shared_ptr<const YAML::Node> node_;
  std::string file_;
  std::string path_;
  // 0-based position to report instead of the node's own mark, set for null values: yaml-cpp
  // places an empty value's mark at the next token, so errors point at its key instead.
  int line_ = -1;
  int column_ = -1;
};

enum class SnapshotMode { kInitial, kNever, kOnly };

struct SnapshotConfig {
  SnapshotMode mode = SnapshotMode::kInitial;
  int workers = 0;                     // 0: one per core
  uint64_t chunk_bytes = 64ull << 20;  // CTID range size
};

// "schema.table", or "schema.*" for every table of a schema (present and future).
struct TableRef {
  std::string schema;
  std::string table;  // "*" for the whole schema
  std::string ToString() const { return schema + "." + table; }
  friend bool operator==(const TableRef&, const TableRef&) = default;
};

struct PostgresSourceConfig {
  std::string url;  // libpq URI or key=value conninfo, `${VAR}` expanded; checked by libpq's parser
  std::vector<TableRef> tables;
  SnapshotConfig snapshot;
  std::string slot;                                 // default "pgflow_<pipeline>"
  std::string publication;                          // default "pgflow_<pipeline>"
  std::chrono::milliseconds status_interval{1000};  // standby status update period
  std::chrono::milliseconds heartbeat_interval{0};  // 0 = off; pg_logical_emit_message period
};

// Options a source's factory parsed from its block (source types other than postgres, whose
// options are PostgresSourceConfig); each source type defines its own subclass.
struct SourceOptions {
  virtual ~SourceOptions() = default;
};

// What the positions a source acknowledges (Event::AckPosition) are.
enum class SourcePositions {
  // PostgreSQL WAL positions: the same for a transaction in every run, so a sink may store the
  // last one it applied and skip what comes again at or below it after a restart.
  kWal,
  // The source's own sequence, increasing within a run (and, by construction, from one run of
  // the process to the next) but unrelated to the order of the changes' commit LSNs: a sink
  // must not skip a transaction because its position is at or below one it stored. It relies
  // on applying changes idempotently (upserts and deletes by key) instead.
  kSourceSequence,
};

// Options a sink's factory parsed from its block; each sink type defines its own subclass.
struct SinkOptions {
  virtual ~SinkOptions() = default;
};

// What a sink does with schema changes (`ddl: {mode: ..., exclude: [...]}` beside its type).
enum class DdlMode {
  kApply,   // sinks that can replay DDL (postgres) do; the others pass it on as events
  kEvents,  // pass it on as `ddl` events only: a PostgreSQL target is left as it is
  kIgnore,  // drop it: the sink never sees a `ddl` event
};

struct DdlPolicy {
  DdlMode mode = DdlMode::kApply;
  // Object types ("index", "sequence", "function", ...) whose DDL the sink never sees.
  std::vector<std::string> exclude;

  // Whether a `ddl` event on an object of `object_type` reaches the sink at all.
  bool Passes(std::string_view object_type) const;
};

struct SinkConfig {
  std::string name;                               // the user's key under `sinks:`
  std::string type;                               // "jsonl", ...
  std::chrono::milliseconds flush_interval{200};  // how often the engine calls Flush
  DdlPolicy ddl;
  std::shared_ptr<const SinkOptions> options;
};

struct TransformConfig {
  std::string type;      // "mask", ...
  std::string position;  // "file:line:col" for errors found later
  std::shared_ptr<const ConfigNode> node;
};

struct PipelineConfig {
  std::string file;
  std::string name;  // [a-z0-9_]+, at most 48 characters (slot names are limited to 63)
  // The key under `source:`: "postgres" (options in `source`) or a registered SourceFactory's
  // type (options in `source_options`).
  std::string source_type = "postgres";
  PostgresSourceConfig source;  // source_type "postgres" only
  std::shared_ptr<const SourceOptions> source_options;
  SourcePositions positions = SourcePositions::kWal;
  std::vector<TransformConfig> transforms;
  std::vector<SinkConfig> sinks;
  uint64_t queue_bytes = 64ull << 20;  // `buffer: {queue_bytes: 64MiB}`: bound of each sink queue
  std::string admin_listen;            // `admin: {listen: host:port}`; empty = off
};

class Sink;
class Source;

// Parses and builds one source type other than the built-in postgres one (whose options are
// part of PipelineConfig itself), registered by name like the sinks.
class SourceFactory {
 public:
  virtual ~SourceFactory() = default;
  virtual std::string_view type() const = 0;
  virtual std::span<const OptionSpec> options() const = 0;
  // What the positions this source acknowledges are; sinks read it from PipelineConfig.
  virtual SourcePositions positions() const = 0;
  // Pure: no network, no files. `node` is the mapping under the type key (or null).
  virtual absl::StatusOr<std::shared_ptr<const SourceOptions>> Parse(
      const ConfigNode& node) const = 0;
  virtual std::unique_ptr<Source> Build(const PipelineConfig& pipeline) const = 0;
};

// Not thread-safe: register at start-up, like sinks; the first registration of a type wins.
void RegisterSourceFactory(std::unique_ptr<SourceFactory> factory);
// nullptr when no factory of that type is registered ("postgres" never is).
const SourceFactory* FindSourceFactory(std::string_view type);
// In registration order.
std::vector<const SourceFactory*> SourceFactories();

// Parses and builds one sink type. Registered by name so the engine never names a concrete
// sink (Envoy's factory registry).
class SinkFactory {
 public:
  virtual ~SinkFactory() = default;
  virtual std::string_view type() const = 0;
  virtual std::span<const OptionSpec> options() const = 0;
  // Pure: no network, no files. `node` is the mapping under the type key, or null when the
  // user wrote no options (`stdout:`), which CheckKeys and Get treat as an empty mapping.
  virtual absl::StatusOr<std::shared_ptr<const SinkOptions>> Parse(
      const ConfigNode& node) const = 0;
  // Whether the sink can follow a source of type `source_type` ("postgres", or a registered
  // source type): OK, or why not (the loader places the message at the sink's type key).
  // Pure, like Parse.
  virtual absl::Status CheckSource(std::string_view source_type) const { return absl::OkStatus(); }
  virtual std::unique_ptr<Sink> Build(const PipelineConfig& pipeline,
                                      const SinkConfig& sink) const = 0;
};

// Not thread-safe: register everything at start-up, before loading pipelines. Factories live
// until the process exits. A factory whose type is already registered is discarded (the first
// registration wins).
void RegisterSinkFactory(std::unique_ptr<SinkFactory> factory);
// nullptr when no factory of that type is registered.
const SinkFactory* FindSinkFactory(std::string_view type);
// In registration order.
std::vector<const SinkFactory*> SinkFactories();

// Option tables of the pipeline file's own sections, for `pgflow options`.
std::span<const OptionSpec> PipelineOptions();
std::span<const OptionSpec> PostgresSourceOptions();
std::span<const OptionSpec> SnapshotOptions();
std::span<const OptionSpec> BufferOptions();      // `buffer:`
std::span<const OptionSpec> AdminOptions();       // `admin:`
std::span<const OptionSpec> SinkCommonOptions();  // beside the type key of every sink
std::span<const OptionSpec> DdlOptions();         // `sinks.<name>.ddl`

// `yaml_text` is the whole pipeline file; `file_name` is only used in messages. A mistake in
// the file is an InvalidArgument status whose message starts with "<file_name>:<line>:<col>: ".
absl::StatusOr<PipelineConfig> ParsePipelineConfig(std::string_view yaml_text,
                                                   std::string_view file_name);
// Reads `path` (a regular file or a pipe, at most 16 MiB) and parses it. A file that cannot be
// read is NotFound / PermissionDenied / InvalidArgument naming the path.
absl::StatusOr<PipelineConfig> LoadPipelineConfig(const std::string& path);

}  // namespace pgflow
