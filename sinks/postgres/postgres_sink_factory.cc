#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "engine/config.h"
#include "engine/log.h"
#include "engine/pg_connection.h"
#include "engine/sink.h"
#include "sinks/postgres/postgres_sink.h"
#include "sinks/postgres/postgres_sink_impl.h"
#include "sinks/postgres/sequences.h"
#include "sinks/postgres/table_definition.h"

namespace pgflow {
namespace {

constexpr OptionSpec kOptions[] = {
    {"url", "string", true, "", "PostgreSQL URL or conninfo of the target database"},
    {"schema", "string", false, "",
     "target schema for every table (default: the source table's own schema)"},
    {"batch_rows", "int", false, "1000", "rows per multi-row INSERT statement"},
    {"create_tables", "bool", false, "true",
     "create a table missing from the target from the source's columns and primary key"},
    {"dead_letter", "bool", false, "false",
     "record a streamed change the target refuses (a constraint, a value it rejects) in "
     "pgflow.dead_letters and go on, instead of stopping"},
    {"load_workers", "int", false, "2",
     "connections that copy the initial snapshot into the target at once (into tables that "
     "were empty), then build its indexes at once"},
    {"maintenance_work_mem", "string", false, "256MB",
     "memory for building the keys and indexes after the load (raised to this for the sink's "
     "session, never lowered)"},
};

class PostgresSinkFactory : public SinkFactory {
 public:
  std::string_view type() const override { return "postgres"; }
  std::span<const OptionSpec> options() const override { return kOptions; }

  absl::StatusOr<std::shared_ptr<const SinkOptions>> Parse(const ConfigNode& node) const override {
    if (!node.IsMap()) return node.Error("expected a mapping like {url: postgres://host/db}");
    if (absl::Status s = node.CheckKeys(kOptions); !s.ok()) return s;
    auto options = std::make_shared<PostgresSinkOptions>();
    std::optional<ConfigNode> url = node.Get("url");
    if (!url) return node.Error("url is required");
    absl::StatusOr<std::string> u = url->AsString();
    if (!u.ok()) return u.status();
    if (u->empty()) return url->Error("url is empty");
    char* err = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(u->c_str(), &err);
    if (parsed == nullptr) {
      std::string message = err != nullptr ? err : "out of memory";
      PQfreemem(err);
      return url->Error(
          absl::StrCat("invalid PostgreSQL URL: ", absl::StripTrailingAsciiWhitespace(message)));
    }
    PQconninfoFree(parsed);
    options->url = *u;
    if (auto v = node.Get("schema")) {
      absl::StatusOr<std::string> s = v->AsString();
      if (!s.ok()) return s.status();
      if (s->empty()) return v->Error("schema is empty (leave it out to keep the source's)");
      options->schema = *s;
    }
    if (auto v = node.Get("batch_rows")) {
      absl::StatusOr<int64_t> n = v->AsInt(1, 65535);
      if (!n.ok()) return n.status();
      options->batch_rows = *n;
    }
    if (auto v = node.Get("create_tables")) {
      absl::StatusOr<bool> b = v->AsBool();
      if (!b.ok()) return b.status();
      options->create_tables = *b;
    }
    if (auto v = node.Get("dead_letter")) {
      absl::StatusOr<bool> b = v->AsBool();
      if (!b.ok()) return b.status();
      options->dead_letter = *b;
    }
    if (auto v = node.Get("load_workers")) {
      absl::StatusOr<int64_t> n = v->AsInt(1, 64);
      if (!n.ok()) return n.status();
      options->load_workers = *n;
    }
    if (auto v = node.Get("maintenance_work_mem")) {
      absl::StatusOr<std::string> m = v->AsString();
      if (!m.ok()) return m.status();
      if (m->empty()) return v->Error("maintenance_work_mem is empty (leave it out for 256MB)");
      options->maintenance_work_mem = *m;
    }
    return options;
  }

  std::unique_ptr<Sink> Build(const PipelineConfig& pipeline,
                              const SinkConfig& sink) const override {
    return std::make_unique<PostgresSink>(
        sink.name, pipeline, std::static_pointer_cast<const PostgresSinkOptions>(sink.options),
        sink.ddl.mode);
  }
};

}  // namespace

void RegisterPostgresSink() { RegisterSinkFactory(std::make_unique<PostgresSinkFactory>()); }

absl::Status SyncSequences(const PipelineConfig& pipeline, const PostgresSinkOptions& options) {
  absl::StatusOr<PgConnPtr> source = ConnectToSourceCatalog(pipeline.source.url);
  if (!source.ok()) return source.status();
  absl::StatusOr<PgConnPtr> target = Connect(options.url, ConnectionKind::kRegular);
  if (!target.ok()) {
    return absl::Status(target.status().code(),
                        absl::StrCat("postgres target: ", target.status().message()));
  }
  absl::StatusOr<std::vector<SequencePair>> sequences =
      ReadTableSequences(source->get(), pipeline.source.tables, options.schema);
  if (!sequences.ok()) return sequences.status();
  absl::StatusOr<SequenceCopyResult> copied =
      CopySequenceValues(source->get(), target->get(), *sequences);
  if (!copied.ok()) return copied.status();
  LogInfo("%d sequences of pipeline %s set in %s to the source's values", copied->copied,
          pipeline.name, Describe(target->get()));
  if (!copied->missing.empty()) {
    return absl::NotFoundError(
        absl::StrCat("postgres target ", Describe(target->get()), ": ", copied->missing.size(),
                     " sequences of the source do not exist in the target (the others were set): ",
                     absl::StrJoin(copied->missing, ", ")));
  }
  return absl::OkStatus();
}

}  // namespace pgflow
