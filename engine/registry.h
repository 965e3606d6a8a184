#pragma once

// Sources and sinks are registered by type name, so that the pipeline loader and the runtime
// never name a concrete one (Envoy's factory registry). A factory declares its option table
// (engine/options.h), parses its block of the pipeline file without touching the network, and
// builds the component from its parsed options and a narrow context: the pipeline's name, what
// the source's positions are, and, for sinks that need it, where the PostgreSQL source is.
//
// A component derives from SourceFactoryOf<Options> or SinkFactoryOf<Options>, which parse
// with the table and hand Build the typed options:
//
//   class JsonlSinkFactory : public SinkFactoryOf<JsonlSinkOptions> {
//     std::string_view type() const override { return "jsonl"; }
//     const OptionTable<JsonlSinkOptions>& table() const override { ... }
//     std::unique_ptr<Sink> Build(const SinkContext& context,
//                                 std::shared_ptr<const JsonlSinkOptions> options) const override;
//   };
//   void RegisterJsonlSink() { RegisterSinkFactory(std::make_unique<JsonlSinkFactory>()); }
//
// Registration is not thread-safe: register everything at start-up, before loading pipelines.
// Factories live until the process exits; the first registration of a type wins.

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/config_node.h"
#include "engine/dead_letter.h"
#include "engine/options.h"
#include "engine/sink.h"
#include "engine/source.h"
#include "engine/transform.h"

namespace pgflow {

// The PostgreSQL database a pipeline captures (common/postgres/postgres_origin.h). The engine
// carries it from the source to the sinks that ask for it and never looks inside.
struct PostgresOrigin;

// Options a source's factory parsed from its block; each source type has its own subclass.
struct SourceOptions {
  virtual ~SourceOptions() = default;
};

// Options a sink's factory parsed from its block; each sink type has its own subclass.
struct SinkOptions {
  virtual ~SinkOptions() = default;
};

// What the sinks of a pipeline may know of its source.
struct SourceTraits {
  std::string type;  // "postgres", "kafka"
  SourcePositions positions = SourcePositions::kWal;
  // Set when the source is a PostgreSQL database: for sinks that read its catalog (a
  // PostgreSQL target creating tables from the source's definitions) or write to it (the kv
  // cache's write-through).
  std::shared_ptr<const PostgresOrigin> postgres;
};

// What a source is built with besides its options.
struct SourceContext {
  std::string pipeline;  // the pipeline's name
  std::string file;      // the pipeline file, for messages that name a command to run
};

class TransformFactory;
struct TransformOptions;
// One entry of a `transforms:` list (the pipeline's, or a sink's).
struct TransformConfig {
  std::string type;   // "mask", ...
  std::string where;  // "transforms[0]", "sinks.out.transforms[1]": for messages
  const TransformFactory* factory = nullptr;
  std::shared_ptr<const TransformOptions> options;  // what factory->Parse returned
  std::optional<ConfigNode> node;                   // where it is written, for messages
};

// What a sink is built with besides its options.
struct SinkContext {
  std::string pipeline;  // the pipeline's name
  std::string sink;      // the sink's name under `sinks:`
  DdlPolicy ddl;         // which schema changes reach it
  SourceTraits source;
  DeadLetterConfig dead_letter;  // where it sets aside what it refuses for good, if anywhere
  // The pipeline's `documents:` as written (documents/document_spec.h reads it), for the sinks
  // that render them; the engine never looks inside.
  std::optional<ConfigNode> documents;
  // The transforms that run before the sink: the pipeline's, then its own (each run of the
  // pipeline builds them anew: engine/config.h, BuildTransforms).
  std::vector<TransformConfig> transforms;
};

// Opens the dead-letter store of a sink (`context.dead_letter`): null when none is configured.
// A `table` without `url` lives in the source's database.
absl::StatusOr<std::unique_ptr<DeadLetterStore>> OpenDeadLetters(const SinkContext& context);

class SinkFactory;
struct SinkOptions;
// The database a dead-letter `table` without `url` lives in, for a sink of `factory` with
// `options` following `source`: the sink's own (SinkFactory::DeadLetterDatabase), else the
// source's (empty when the source is not PostgreSQL).
std::string DeadLetterFallbackUrl(const SinkFactory& factory, const SinkOptions& options,
                                  const SourceTraits& source);

class SourceFactory {
 public:
  virtual ~SourceFactory() = default;
  virtual std::string_view type() const = 0;
  // One line for `pgflow options`: what the source reads.
  virtual std::string_view help() const = 0;
  virtual const OptionSchema& options() const = 0;
  // Pure: no network, no files. `node` is the mapping under the type key (or null); names that
  // derive from the pipeline's name (slot, publication) are filled in from `pipeline`.
  virtual absl::StatusOr<std::shared_ptr<const SourceOptions>> Parse(
      const ConfigNode& node, std::string_view pipeline) const = 0;
  virtual SourceTraits Traits(const SourceOptions& options) const = 0;
  // What `pgflow validate` says the source reads ("tables public.a, public.b").
  virtual std::string Describe(const SourceOptions& options) const = 0;
  // `options` is what Parse returned.
  virtual std::unique_ptr<Source> Create(const SourceContext& context,
                                         std::shared_ptr<const SourceOptions> options) const = 0;
};

class SinkFactory {
 public:
  virtual ~SinkFactory() = default;
  virtual std::string_view type() const = 0;
  // One line for `pgflow options`: what the sink does.
  virtual std::string_view help() const = 0;
  virtual const OptionSchema& options() const = 0;
  // Pure: no network, no files. `node` is the mapping under the type key, or null when the
  // user wrote no options (`blackhole:`).
  virtual absl::StatusOr<std::shared_ptr<const SinkOptions>> Parse(
      const ConfigNode& node) const = 0;
  // Whether the sink can follow `source`: OK, or why not (the loader places the message at the
  // sink's type key). Pure, like Parse.
  virtual absl::Status CheckSource(const SourceTraits& source) const { return absl::OkStatus(); }
  // Whether `options` fit the rest of the pipeline (the documents they name are described
  // under `documents:`, say), once every sink is read. Pure, like Parse.
  virtual absl::Status CheckPipeline(const SinkOptions& options,
                                     const SinkContext& context) const {
    return absl::OkStatus();
  }
  // Whether `options` fit `table` as the source describes it (after the transforms): the
  // columns they name exist, say. An error names the option. Read from the source's catalog
  // by `pgflow validate --source`, and by `pgflow run` before it creates anything there.
  virtual absl::Status CheckTable(const SinkOptions& options, const TableSchema& table) const {
    return absl::OkStatus();
  }
  // Whether the sink sets aside what it refuses for good when `dead_letter:` is configured
  // (engine/dead_letter.h); the loader refuses `dead_letter:` for the others.
  virtual bool SetsAside() const { return false; }
  // The database of a dead-letter `table` written without `url`, when the sink keeps it
  // somewhere of its own (a postgres sink: its target, in the data's transaction); empty: the
  // source's database.
  virtual std::string DeadLetterDatabase(const SinkOptions& options) const { return ""; }
  // `options` is what Parse returned. Does no I/O: Sink::Open does.
  virtual std::unique_ptr<Sink> Create(const SinkContext& context,
                                       std::shared_ptr<const SinkOptions> options) const = 0;
};

// The base of a source type's factory: parses with its option table and hands Build the
// typed options.
template <typename Options>
class SourceFactoryOf : public SourceFactory {
 public:
  const OptionSchema& options() const final { return table(); }
  absl::StatusOr<std::shared_ptr<const SourceOptions>> Parse(
      const ConfigNode& node, std::string_view pipeline) const final {
    auto options = std::make_shared<Options>();
    if (absl::Status s = table().Parse(node, options.get()); !s.ok()) return s;
    Complete(pipeline, options.get());
    return options;
  }
  SourceTraits Traits(const SourceOptions& options) const final {
    return TraitsOf(static_cast<const Options&>(options));
  }
  std::string Describe(const SourceOptions& options) const final {
    return DescribeOf(static_cast<const Options&>(options));
  }
  std::unique_ptr<Source> Create(const SourceContext& context,
                                 std::shared_ptr<const SourceOptions> options) const final {
    return Build(context, std::static_pointer_cast<const Options>(std::move(options)));
  }

 protected:
  virtual const OptionTable<Options>& table() const = 0;
  // Fills in defaults that derive from the pipeline's name.
  virtual void Complete(std::string_view pipeline, Options* options) const {}
  virtual SourceTraits TraitsOf(const Options& options) const = 0;
  virtual std::string DescribeOf(const Options& options) const = 0;
  virtual std::unique_ptr<Source> Build(const SourceContext& context,
                                        std::shared_ptr<const Options> options) const = 0;
};

// The base of a sink type's factory: parses with its option table, then Check, and hands
// Build the typed options.
template <typename Options>
class SinkFactoryOf : public SinkFactory {
 public:
  const OptionSchema& options() const final { return table(); }
  absl::StatusOr<std::shared_ptr<const SinkOptions>> Parse(const ConfigNode& node) const final {
    auto options = std::make_shared<Options>();
    if (absl::Status s = table().Parse(node, options.get()); !s.ok()) return s;
    if (absl::Status s = Check(node, options.get()); !s.ok()) return s;
    return options;
  }
  std::unique_ptr<Sink> Create(const SinkContext& context,
                               std::shared_ptr<const SinkOptions> options) const final {
    return Build(context, std::static_pointer_cast<const Options>(std::move(options)));
  }
  absl::Status CheckTable(const SinkOptions& options, const TableSchema& table) const final {
    return CheckTableOf(static_cast<const Options&>(options), table);
  }

 protected:
  virtual const OptionTable<Options>& table() const = 0;
  // Rules across options, after the table parsed the block (an error names the block).
  virtual absl::Status Check(const ConfigNode& node, Options* options) const {
    return absl::OkStatus();
  }
  virtual absl::Status CheckTableOf(const Options& options, const TableSchema& table) const {
    return absl::OkStatus();
  }
  virtual std::unique_ptr<Sink> Build(const SinkContext& context,
                                      std::shared_ptr<const Options> options) const = 0;
};

// Options a transform's factory parsed from its entry; each transform type has its own.
struct TransformOptions {
  virtual ~TransformOptions() = default;
};

// What a transform is built with besides its options.
struct TransformContext {
  std::string pipeline;  // the pipeline's name
  std::string where;     // "transforms[0]" or "sinks.out.transforms[1]", for messages
};

class TransformFactory {
 public:
  virtual ~TransformFactory() = default;
  virtual std::string_view type() const = 0;
  // One line for `pgflow options`.
  virtual std::string_view help() const = 0;
  virtual const OptionSchema& options() const = 0;
  // Parses the transform's block; no network, no files beyond what the options name.
  virtual absl::StatusOr<std::shared_ptr<const TransformOptions>> Parse(
      const ConfigNode& node) const = 0;
  virtual std::unique_ptr<Transform> Create(
      const TransformContext& context, std::shared_ptr<const TransformOptions> options) const = 0;
};

// The base of a transform type's factory, as SinkFactoryOf is a sink's. Check runs after the
// table parsed the block, for rules across options (an error names the block).
template <typename Options>
class TransformFactoryOf : public TransformFactory {
 public:
  const OptionSchema& options() const final { return table(); }
  absl::StatusOr<std::shared_ptr<const TransformOptions>> Parse(
      const ConfigNode& node) const final {
    auto options = std::make_shared<Options>();
    if (absl::Status s = table().Parse(node, options.get()); !s.ok()) return s;
    if (absl::Status s = Check(node, options.get()); !s.ok()) return s;
    return options;
  }
  std::unique_ptr<Transform> Create(const TransformContext& context,
                                    std::shared_ptr<const TransformOptions> options) const final {
    return Build(context, std::static_pointer_cast<const Options>(std::move(options)));
  }

 protected:
  virtual const OptionTable<Options>& table() const = 0;
  virtual absl::Status Check(const ConfigNode& node, Options* options) const {
    return absl::OkStatus();
  }
  virtual std::unique_ptr<Transform> Build(const TransformContext& context,
                                           std::shared_ptr<const Options> options) const = 0;
};

void RegisterTransformFactory(std::unique_ptr<TransformFactory> factory);
// nullptr when no factory of that type is registered.
const TransformFactory* FindTransformFactory(std::string_view type);
// In registration order.
std::vector<const TransformFactory*> TransformFactories();

void RegisterSourceFactory(std::unique_ptr<SourceFactory> factory);
// nullptr when no factory of that type is registered.
const SourceFactory* FindSourceFactory(std::string_view type);
// In registration order.
std::vector<const SourceFactory*> SourceFactories();

void RegisterSinkFactory(std::unique_ptr<SinkFactory> factory);
// nullptr when no factory of that type is registered.
const SinkFactory* FindSinkFactory(std::string_view type);
// In registration order.
std::vector<const SinkFactory*> SinkFactories();

}  // namespace pgflow
