#include "engine/config.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "engine/listen_address.h"
#include "engine/str_cat.h"

namespace pgflow {
namespace {

using std::chrono::milliseconds;

constexpr size_t kMaxPipelineName = 48;
constexpr uint64_t kMiB = 1ull << 20;
constexpr std::string_view kRootShape = "a mapping with the keys pipeline, source and sinks";

bool IsSinkName(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

// The top level as written, before the source and sinks are handed to their factories.
struct PipelineFile {
  std::string name;
  std::optional<ConfigNode> source;
  std::optional<ConfigNode> transforms;
  std::optional<ConfigNode> sinks;
  std::optional<ConfigNode> documents;
  BufferConfig buffer;
  AdminConfig admin;
};

absl::Status KeepNode(const ConfigNode& node, std::optional<ConfigNode>* out) {
  *out = node;
  return absl::OkStatus();
}

const OptionTable<BufferConfig>& BufferTable() {
  static const auto* table = new OptionTable<BufferConfig>({
      BytesOption("queue_bytes", &BufferConfig::queue_bytes)
          .AtLeast(kMiB)
          .Help("Bound of each sink's queue. A full queue blocks the source, which stops "
                "reading from PostgreSQL."),
  });
  return *table;
}

const OptionTable<AdminConfig>& AdminTable() {
  static const auto* table = new OptionTable<AdminConfig>({
      StringOption("listen", &AdminConfig::listen)
          .Required()
          .Check([](const std::string& listen) { return ParseListenAddress(listen).status(); })
          .Help("host:port of the admin HTTP server for /metrics /healthz /readyz /status "
                "([::1]:9187 for IPv6; port 0 picks a free port). Serves anyone who can reach "
                "it: bind a loopback or private address."),
      StringOption("users", &AdminConfig::users)
          .Help("a users file (pgbouncer's userlist.txt: \"user\" \"password, md5 hash or "
                "SCRAM secret\" lines) of who may log in to the web console on listen and act "
                "there (replay a dead letter); relative to the pipeline file. Without it the "
                "console only shows."),
  });
  return *table;
}

const OptionTable<DdlPolicy>& DdlTable() {
  static const auto* table = new OptionTable<DdlPolicy>({
      ChoiceOption("mode", &DdlPolicy::mode)
          .Choices({{"apply", DdlMode::kApply},
                    {"events", DdlMode::kEvents},
                    {"ignore", DdlMode::kIgnore}},
                   "ddl mode")
          .Help("apply: replay schema changes where the sink can (postgres), pass them on as "
                "events elsewhere; events: pass them on as `ddl` events only; ignore: drop "
                "them."),
      ListOption("exclude", &DdlPolicy::exclude)
          .NoDefault()
          .Help("Object types whose DDL the sink never sees: table, index, sequence, view, "
                "function, type, ... (as PostgreSQL names them in event triggers)."),
  });
  return *table;
}

const OptionTable<SinkCommonConfig>& SinkCommonTable() {
  static const auto* table = new OptionTable<SinkCommonConfig>({
      DurationOption("flush_interval", &SinkCommonConfig::flush_interval)
          .Range(milliseconds(10), milliseconds(3600000))
          .Help("How often the sink is made durable and its position reported."),
      SectionOption("ddl", &SinkCommonConfig::ddl, DdlTable())
          .Help("What the sink does with schema changes: {mode, exclude}."),
      CustomOption("transforms", OptionType::kList, KeepNode, &SinkCommonConfig::transforms_node)
          .NoDefault()
          .Help("The sink's own transforms, run on its thread after the pipeline's, each "
                "{<type>: {...}}."),
      SectionOption("dead_letter", &SinkCommonConfig::dead_letter, DeadLetterTable())
          .NoDefault()
          .Help("Where events the sink refuses for good are recorded, instead of stopping the "
                "pipeline: {path} or {table, url}; `pgflow dlq` reads them."),
  });
  return *table;
}

const OptionTable<PipelineFile>& PipelineTable() {
  static const auto* table = new OptionTable<PipelineFile>({
      StringOption("pipeline", &PipelineFile::name)
          .Required()
          .Check([](const std::string& name) {
            return CheckPlainName(name, kMaxPipelineName, "pipeline name");
          })
          .Help("Pipeline name: [a-z0-9_]+, at most 48 characters. The replication slot and "
                "publication names derive from it."),
      CustomOption("source", OptionType::kMap, KeepNode, &PipelineFile::source)
          .Required()
          .Help("Where changes come from: one key naming the source type, {<type>: {...}}."),
      CustomOption("transforms", OptionType::kList, KeepNode, &PipelineFile::transforms)
          .NoDefault()
          .Help("Transforms applied to every event, in order, each {<type>: {...}}: see "
                "transforms[].<type> below. A sink may add its own after them."),
      CustomOption("sinks", OptionType::kMap, KeepNode, &PipelineFile::sinks)
          .Required()
          .Help("One or more sinks, each under a name of your choosing ([A-Za-z0-9_-]+): "
                "{<name>: {<type>: {...}, flush_interval: 200ms}}."),
      CustomOption("documents", OptionType::kMap, KeepNode, &PipelineFile::documents)
          .NoDefault()
          .Help("Search documents joined from related tables, by name: {<name>: {table, fields, "
                "children}}; a sink takes them with `documents: [<name>]` "
                "(docs/guides/documents.md)."),
      SectionOption("buffer", &PipelineFile::buffer, BufferTable()).Help("{queue_bytes}"),
      SectionOption("admin", &PipelineFile::admin, AdminTable()).Help("{listen: host:port}"),
  });
  return *table;
}

class Loader {
 public:
  explicit Loader(std::string_view file) : file_(file) {}

  absl::StatusOr<PipelineConfig> Load(const ConfigNode& root);

 private:
  absl::Status LoadSource(const ConfigNode& node, PipelineConfig* config);
  absl::Status LoadTransforms(const ConfigNode& node, std::string_view where,
                              std::vector<TransformConfig>* transforms);
  absl::Status LoadSinks(const ConfigNode& node, PipelineConfig* config);
  absl::Status LoadSink(std::string name, const ConfigNode& node, const SourceTraits& source,
                        SinkConfig* sink);

  std::string file_;
};

// Reads on past an error wherever the rest can still be read (the next key, the sinks after a
// wrong source, the next sink), noting each error (ConfigErrors) so that one run reports them
// all.
absl::StatusOr<PipelineConfig> Loader::Load(const ConfigNode& root) {
  absl::StatusOr<PipelineFile> top = PipelineTable().Parse(root);
  if (!top.ok()) return top.status();
  PipelineConfig config;
  config.file = file_;
  config.name = top->name;
  config.buffer = top->buffer;
  config.admin = top->admin;
  if (top->source.has_value()) {
    if (absl::Status s = ConfigErrors::Note(LoadSource(*top->source, &config)); !s.ok()) return s;
  }
  if (top->transforms.has_value()) {
    absl::Status s =
        ConfigErrors::Note(LoadTransforms(*top->transforms, "transforms", &config.transforms));
    if (!s.ok()) return s;
  }
  config.documents = top->documents;
  if (top->sinks.has_value()) {
    if (absl::Status s = LoadSinks(*top->sinks, &config); !s.ok()) return s;
  }
  for (const SinkConfig& sink : config.sinks) {
    if (sink.factory == nullptr || sink.options == nullptr) continue;  // (its errors are noted)
    absl::Status s = sink.factory->CheckPipeline(*sink.options, ContextFor(config, sink));
    if (absl::Status kept = ConfigErrors::Note(s); !kept.ok()) return kept;
  }
  return config;
}

absl::Status Loader::LoadSource(const ConfigNode& node, PipelineConfig* config) {
  // One key naming the source type.
  std::vector<std::string_view> names;
  for (const SourceFactory* factory : SourceFactories()) names.push_back(factory->type());
  std::sort(names.begin(), names.end());
  if (!node.IsMap()) {
    return node.Error(Cat("expected a mapping with one key naming the source type (",
                          Join(names, ", "), "), got ", node.KindName()));
  }
  std::vector<std::pair<std::string, ConfigNode>> entries = node.Entries();
  if (entries.empty()) {
    return node.Error(
        Cat("missing the source type: add one key naming it (", Join(names, ", "), ")"));
  }
  for (const auto& [type, value] : entries) {
    if (FindSourceFactory(type) == nullptr) {
      return node.KeyNode(type)->Error(
          Cat("unknown key '", type, "' ", DidYouMean(type, names, "expected one of")));
    }
  }
  if (entries.size() > 1) {
    return node.KeyNode(entries[1].first)
        ->Error(Cat("a pipeline has one source, but '", entries[0].first, "' and '",
                    entries[1].first, "' are both here: run one pipeline per source"));
  }
  const auto& [type, options_node] = entries[0];
  const SourceFactory* factory = FindSourceFactory(type);
  if (!options_node.IsMap() && !options_node.IsNull()) {
    return options_node.Error(
        Cat("expected a mapping of ", type, " options, got ", options_node.KindName()));
  }
  absl::StatusOr<std::shared_ptr<const SourceOptions>> options =
      factory->Parse(options_node, config->name);
  if (!options.ok()) return options.status();
  config->source.type = type;
  config->source.factory = factory;
  config->source.options = *std::move(options);
  config->source.traits = factory->Traits(*config->source.options);
  return absl::OkStatus();
}

absl::Status Loader::LoadTransforms(const ConfigNode& node, std::string_view where,
                                    std::vector<TransformConfig>* transforms) {
  if (!node.IsSequence()) {
    return node.Error("expected a sequence of transforms, each {<type>: {...}}");
  }
  std::vector<std::string_view> known;
  for (const TransformFactory* factory : TransformFactories()) known.push_back(factory->type());
  std::sort(known.begin(), known.end());
  size_t index = 0;
  for (const ConfigNode& item : node.Items()) {
    std::vector<std::pair<std::string, ConfigNode>> entries = item.Entries();
    if (!item.IsMap() || entries.size() != 1) {
      return item.Error("expected a mapping with one key naming the transform type");
    }
    const auto& [type, options_node] = entries[0];
    const TransformFactory* factory = FindTransformFactory(type);
    if (factory == nullptr) {
      return item.KeyNode(type)->Error(
          Cat("unknown transform '", type, "' (expected one of: ", Join(known, ", "), ")"));
    }
    if (!options_node.IsMap()) {
      return options_node.Error(
          Cat("expected a mapping of ", type, " options, got ", options_node.KindName()));
    }
    absl::StatusOr<std::shared_ptr<const TransformOptions>> options = factory->Parse(options_node);
    if (!options.ok()) return options.status();
    transforms->push_back(TransformConfig{type, Cat(where, "[", std::to_string(index), "]"),
                                          factory, *std::move(options), item});
    ++index;
  }
  return absl::OkStatus();
}

absl::Status Loader::LoadSinks(const ConfigNode& node, PipelineConfig* config) {
  std::vector<std::pair<std::string, ConfigNode>> entries = node.Entries();
  if (!node.IsMap() || entries.empty()) {
    return node.Error("define at least one sink, like {out: {jsonl: {path: out.jsonl}}}");
  }
  for (auto& [name, value] : entries) {
    absl::Status s;
    SinkConfig sink;
    if (!IsSinkName(name)) {
      s = node.KeyNode(name)->Error(
          Cat("invalid sink name '", name, "': use letters, digits, '_' and '-'"));
    } else {
      s = LoadSink(name, value, config->source.traits, &sink);
    }
    if (s.ok()) config->sinks.push_back(std::move(sink));
    if (absl::Status kept = ConfigErrors::Note(s); !kept.ok()) return kept;
  }
  return absl::OkStatus();
}

absl::Status Loader::LoadSink(std::string name, const ConfigNode& node, const SourceTraits& source,
                              SinkConfig* sink) {
  std::vector<std::string_view> registered;
  for (const SinkFactory* factory : SinkFactories()) registered.push_back(factory->type());
  std::sort(registered.begin(), registered.end());
  if (!node.IsMap()) {
    return node.Error(Cat("expected a mapping with one key naming the sink type (",
                          Join(registered, ", "), "), got ", node.KindName()));
  }
  // The key naming a registered type is the type; any other key that is no common option is
  // unknown (a misspelt option, or a misspelt type when no key names one).
  std::span<const OptionDoc> common = SinkCommonOptions().docs();
  std::vector<std::string_view> allowed(registered);
  for (const OptionDoc& doc : common) allowed.push_back(doc.key);
  const std::pair<std::string, ConfigNode>* type_entry = nullptr;
  std::vector<const std::pair<std::string, ConfigNode>*> unknown;
  std::vector<std::pair<std::string, ConfigNode>> entries = node.Entries();
  for (const auto& entry : entries) {
    if (std::any_of(common.begin(), common.end(),
                    [&entry](const OptionDoc& doc) { return doc.key == entry.first; })) {
      continue;
    }
    if (FindSinkFactory(entry.first) == nullptr) {
      unknown.push_back(&entry);
      continue;
    }
    if (type_entry != nullptr) {
      return node.KeyNode(entry.first)
          ->Error(Cat("a sink has one type, but '", type_entry->first, "' and '", entry.first,
                      "' are both here; use one sink per type"));
    }
    type_entry = &entry;
  }
  for (const auto* entry : unknown) {
    const std::string& key = entry->first;
    absl::Status s =
        type_entry == nullptr && unknown.size() == 1
            ? node.KeyNode(key)->Error(
                  Cat("unknown sink type '", key, "' ", DidYouMean(key, registered, "known types")))
            : node.KeyNode(key)->Error(
                  Cat("unknown key '", key, "' ", DidYouMean(key, allowed, "expected one of")));
    if (absl::Status kept = ConfigErrors::Note(s); !kept.ok()) return kept;
  }
  if (type_entry == nullptr) {
    if (!unknown.empty()) return absl::OkStatus();  // noted above
    return node.Error(
        Cat("missing the sink type: add one key naming it (", Join(registered, ", "), ")"));
  }
  const std::string& type = type_entry->first;
  const SinkFactory* factory = FindSinkFactory(type);
  const ConfigNode& options_node = type_entry->second;
  if (!options_node.IsMap() && !options_node.IsNull()) {
    return options_node.Error(
        Cat("expected a mapping of ", type, " options, got ", options_node.KindName()));
  }
  absl::StatusOr<std::shared_ptr<const SinkOptions>> options = factory->Parse(options_node);
  if (!options.ok()) return options.status();
  if (absl::Status s = factory->CheckSource(source); !s.ok()) {
    return node.KeyNode(type)->Error(Sv(s.message()));
  }
  if (!unknown.empty()) return absl::OkStatus();  // noted above; the common keys would be too
  if (absl::Status s = SinkCommonTable().Parse(node, &sink->common, type); !s.ok()) return s;
  if (std::optional<ConfigNode> dl_node = node.Get("dead_letter"); dl_node.has_value()) {
    const DeadLetterConfig& dl = sink->common.dead_letter;
    if (!factory->SetsAside()) {
      return dl_node->Error(Cat("the ", type, " sink sets nothing aside: what it cannot deliver "
                                "stops the pipeline (the postgres and opensearch sinks take "
                                "dead_letter)"));
    }
    if (!dl.path.empty() && !dl.table.empty()) {
      return dl_node->Error("give either `path` or `table`, not both");
    }
    if (!dl.enabled()) {
      return dl_node->Error("give `path` (a file) or `table` (a PostgreSQL table)");
    }
    if (!dl.path.empty() && !dl.url.empty()) {
      return dl_node->Error("`url` goes with `table`, not with `path`");
    }
  }
  if (sink->common.transforms_node.has_value()) {
    absl::Status s = LoadTransforms(*sink->common.transforms_node,
                                    Cat("sinks.", name, ".transforms"), &sink->common.transforms);
    if (!s.ok()) return s;
  }
  sink->name = std::move(name);
  sink->type = type;
  sink->factory = factory;
  sink->options = *std::move(options);
  return absl::OkStatus();
}

// The reference's rows of a source or sink type: `prefix` and its table.
void AppendSchema(ReferenceFormat format, std::string_view prefix, const OptionSchema& schema,
                  std::string* out) {
  if (format == ReferenceFormat::kMarkdown) {
    AppendOptionsMarkdown(prefix, schema, out);
  } else {
    AppendOptionsText(prefix, schema, out);
  }
}

// A row (or heading) for a key that stands for a choice among registered types.
void AppendTypeRow(ReferenceFormat format, std::string_view key, std::string_view help,
                   std::string* out) {
  if (format == ReferenceFormat::kMarkdown) {
    out->append(Cat("| `", key, "` | map | | ", help, " |\n"));
  } else {
    out->append(Cat(key, ": ", help, "\n\n"));
  }
}

}  // namespace

const OptionSchema& PipelineOptions() { return PipelineTable(); }
const OptionSchema& SinkCommonOptions() { return SinkCommonTable(); }

TransformChain BuildTransforms(const std::string& pipeline,
                               const std::vector<TransformConfig>& transforms) {
  std::vector<std::unique_ptr<Transform>> built;
  for (const TransformConfig& t : transforms) {
    built.push_back(t.factory->Create(TransformContext{pipeline, t.where}, t.options));
  }
  return TransformChain(std::move(built));
}

SinkContext ContextFor(const PipelineConfig& pipeline, const SinkConfig& sink) {
  SinkContext context;
  context.pipeline = pipeline.name;
  context.sink = sink.name;
  context.ddl = sink.common.ddl;
  context.dead_letter = sink.common.dead_letter;
  context.source = pipeline.source.traits;
  context.documents = pipeline.documents;
  context.transforms = pipeline.transforms;
  context.transforms.insert(context.transforms.end(), sink.common.transforms.begin(),
                            sink.common.transforms.end());
  return context;
}

std::string OptionsReference(ReferenceFormat format) {
  std::string out;
  if (format == ReferenceFormat::kMarkdown) {
    out = "| key | type | default | meaning |\n|---|---|---|---|\n";
  }
  // The top level, with the registered sources and sinks in place of `source` and `sinks`.
  for (const OptionDoc& doc : PipelineOptions().docs()) {
    if (doc.key == "source") {
      if (format == ReferenceFormat::kText) out += "source: one of the types below\n\n";
      for (const SourceFactory* factory : SourceFactories()) {
        std::string prefix = Cat("source.", factory->type());
        AppendTypeRow(format, prefix, factory->help(), &out);
        AppendSchema(format, prefix, factory->options(), &out);
      }
    } else if (doc.key == "transforms") {
      if (format == ReferenceFormat::kText) {
        out += "transforms: a list, each entry of one of the types below\n\n";
      }
      for (const TransformFactory* factory : TransformFactories()) {
        std::string prefix = Cat("transforms[].", factory->type());
        AppendTypeRow(format, prefix, factory->help(), &out);
        AppendSchema(format, prefix, factory->options(), &out);
      }
    } else if (doc.key == "sinks") {
      if (format == ReferenceFormat::kText) {
        out += "sinks.<name>: one or more, each of one of the types below\n\n";
      }
      AppendSchema(format, "sinks.<name>", SinkCommonOptions(), &out);
      for (const SinkFactory* factory : SinkFactories()) {
        std::string prefix = Cat("sinks.<name>.", factory->type());
        AppendTypeRow(format, prefix, factory->help(), &out);
        AppendSchema(format, prefix, factory->options(), &out);
      }
    } else if (doc.type == OptionType::kSection && doc.section != nullptr) {
      AppendSchema(format, doc.key, *doc.section, &out);
    } else if (format == ReferenceFormat::kMarkdown) {
      std::string type(OptionTypeName(doc.type));
      out += Cat("| `", doc.key, "` | ", type, " | ", doc.required ? "required" : "none", " | ",
                 doc.help, " |\n");
    } else {
      out += Cat(doc.key, " (", OptionTypeName(doc.type), doc.required ? ", required" : "",
                 "): ", doc.help, "\n\n");
    }
  }
  return out;
}

absl::StatusOr<PipelineConfig> ParsePipelineConfig(std::string_view yaml_text,
                                                   std::string_view file_name) {
  absl::StatusOr<ConfigNode> root = ParseConfigDocument(yaml_text, file_name, kRootShape);
  if (!root.ok()) return root.status();
  ConfigErrors errors;
  absl::StatusOr<PipelineConfig> config = Loader(file_name).Load(*root);
  if (absl::Status all = errors.Finish(config.status()); !all.ok()) return all;
  return config;
}

absl::StatusOr<PipelineConfig> LoadPipelineConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadConfigFile(path);
  if (!text.ok()) return text.status();
  return ParsePipelineConfig(*text, path);
}

}  // namespace pgflow
