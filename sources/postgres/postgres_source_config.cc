#include "sources/postgres/postgres_source_config.h"

#include "common/postgres/conninfo.h"
#include "common/postgres/postgres_origin.h"
#include "engine/str_cat.h"
#include "sources/postgres/postgres_run_guard.h"
#include "sources/postgres/postgres_source.h"

namespace pgflow {
namespace {

using std::chrono::milliseconds;

constexpr size_t kMaxPgName = 63;  // NAMEDATALEN - 1

absl::Status CheckPgName(const std::string& name) {
  return CheckPlainName(name, kMaxPgName, "name");
}

const OptionTable<SnapshotConfig>& SnapshotTable() {
  static const auto* table = new OptionTable<SnapshotConfig>({
      ChoiceOption("mode", &SnapshotConfig::mode)
          .Choices({{"initial", SnapshotMode::kInitial},
                    {"never", SnapshotMode::kNever},
                    {"only", SnapshotMode::kOnly}},
                   "snapshot mode")
          .Help("initial: copy the tables, then stream; never: stream only; only: copy, then "
                "exit."),
      IntOption("workers", &SnapshotConfig::workers)
          .Range(0, 64)
          .DefaultText("0 (one per core)")
          .Help("Parallel copy connections."),
      BytesOption("chunk_size", &SnapshotConfig::chunk_bytes)
          .AtLeast(1ull << 20)
          .Help("Heap bytes per CTID range at most (ranges shrink toward a table's end, down to "
                "4MiB)."),
  });
  return *table;
}

const OptionTable<PostgresSourceOptions>& PostgresSourceTable() {
  static const auto* table = new OptionTable<PostgresSourceOptions>({
      StringOption("url", &PostgresSourceOptions::url)
          .Required()
          .NonEmpty()
          .Check(CheckConninfo)
          .Help("libpq URI (postgres://user:pw@host:5432/db?sslmode=require) or key=value "
                "conninfo."),
      CustomOption("tables", OptionType::kList, ParseTableList, &PostgresSourceOptions::tables)
          .Required()
          .Help("schema.table, or schema.* for every table of a schema, present and future; "
                "quote mixed case: '\"My Schema\".\"Order\"'."),
      SectionOption("snapshot", &PostgresSourceOptions::snapshot, SnapshotTable())
          .Help("Initial copy of the tables: {mode, workers, chunk_size}."),
      ChoiceOption("keyless_tables", &PostgresSourceOptions::keyless_tables)
          .Choices({{"full", KeylessPolicy::kFull},
                    {"skip", KeylessPolicy::kSkip},
                    {"fail", KeylessPolicy::kFail}},
                   "keyless_tables policy")
          .Help("Followed tables without a primary key. full: set REPLICA IDENTITY FULL on them "
                "(at start, and in the transaction that creates one or drops its key), so that "
                "the application's UPDATEs and DELETEs keep working and stream whole rows; "
                "skip: leave them out of the publication, the copy and the stream (a table "
                "joins when it gains a key, and is copied then; one that loses its key leaves); "
                "fail: refuse to start while one is followed."),
      StringOption("slot", &PostgresSourceOptions::slot)
          .Check(CheckPgName)
          .DefaultText("pgflow_<pipeline>")
          .Help("Logical replication slot: [a-z0-9_]+, at most 63 characters."),
      StringOption("publication", &PostgresSourceOptions::publication)
          .Check(CheckPgName)
          .DefaultText("pgflow_<pipeline>")
          .Help("Publication: [a-z0-9_]+, at most 63 characters."),
      DurationOption("status_interval", &PostgresSourceOptions::status_interval)
          .Range(milliseconds(100), milliseconds(30000))
          .Help("How often the confirmed position is sent to the server; well under its "
                "wal_sender_timeout (60s by default)."),
      DurationOption("heartbeat_interval", &PostgresSourceOptions::heartbeat_interval)
          .AtLeast(milliseconds(100))
          .ZeroMeansOff()
          .Help("Writes pg_logical_emit_message(false, 'pgflow.heartbeat', '') this often, so "
                "that the slot of a pipeline whose tables are idle moves with the rest of the "
                "database (0 turns it off)."),
      BytesOption("max_retained_wal", &PostgresSourceOptions::max_retained_wal)
          .ZeroMeansOff()
          .Help("Warns (a log line every 5 minutes, the metric "
                "pgflow_slot_retained_wal_over_limit) while the slot makes the server keep more "
                "WAL than this. The server's own cap is max_slot_wal_keep_size: past it the slot "
                "is invalidated and the pipeline must copy its tables again; keep this well "
                "below it (0 turns the warning off)."),
  });
  return *table;
}

class PostgresSourceFactory : public SourceFactoryOf<PostgresSourceOptions> {
 public:
  std::string_view type() const override { return "postgres"; }
  std::string_view help() const override {
    return "A PostgreSQL database, by logical replication (pgoutput): its tables copied, then "
           "every change streamed.";
  }

 protected:
  const OptionTable<PostgresSourceOptions>& table() const override { return PostgresSourceTable(); }
  void Complete(std::string_view pipeline, PostgresSourceOptions* options) const override {
    if (options->slot.empty()) options->slot = Cat("pgflow_", pipeline);
    if (options->publication.empty()) options->publication = Cat("pgflow_", pipeline);
  }
  SourceTraits TraitsOf(const PostgresSourceOptions& options) const override {
    auto origin = std::make_shared<PostgresOrigin>();
    origin->url = options.url;
    origin->tables = options.tables;
    origin->publication = options.publication;
    origin->slot = options.slot;
    return SourceTraits{"postgres", SourcePositions::kWal, std::move(origin)};
  }
  std::string DescribeOf(const PostgresSourceOptions& options) const override {
    std::string tables;
    for (const TableRef& t : options.tables) {
      tables += Cat(tables.empty() ? "" : ", ", t.Quoted());
    }
    return Cat("tables ", tables);
  }
  std::unique_ptr<Source> Build(
      const SourceContext& context,
      std::shared_ptr<const PostgresSourceOptions> options) const override {
    return std::make_unique<PostgresSource>(context.pipeline, context.file, std::move(options));
  }
};

}  // namespace

absl::Status ParseTableList(const ConfigNode& node, std::vector<TableRef>* tables) {
  std::vector<ConfigNode> items;
  if (node.IsScalar()) {
    items.push_back(node);
  } else if (node.IsSequence()) {
    items = node.Items();
    if (items.empty()) return node.Error("list at least one table (schema.table or schema.*)");
  } else {
    return node.Error(Cat("expected a list of tables, got ", node.KindName()));
  }
  std::vector<std::pair<TableRef, ConfigNode>> seen;
  for (const ConfigNode& item : items) {
    absl::StatusOr<std::string> text = item.AsString();
    if (!text.ok()) return text.status();
    absl::StatusOr<TableRef> ref = ParseTableRef(*text);
    if (!ref.ok()) {
      return item.Error(Cat("invalid table '", *text, "': ", ref.status().message()));
    }
    for (const auto& [other, other_node] : seen) {
      std::string at = other_node.Position();
      if (other == *ref) {
        return item.Error(Cat("table ", ref->ToString(), " is listed twice (first at ", at, ")"));
      }
      if (other.schema == ref->schema && (other.is_schema() || ref->is_schema())) {
        const TableRef& wide = other.is_schema() ? other : *ref;
        const TableRef& narrow = other.is_schema() ? *ref : other;
        return item.Error(Cat(narrow.ToString(), " is already covered by ", wide.ToString(), " (",
                              at, "); list only one of them"));
      }
    }
    seen.emplace_back(*ref, item);
    tables->push_back(*std::move(ref));
  }
  return absl::OkStatus();
}

std::shared_ptr<const PostgresSourceOptions> PostgresSourceOf(const PipelineConfig& pipeline) {
  if (pipeline.source.type != "postgres") return nullptr;
  return std::static_pointer_cast<const PostgresSourceOptions>(pipeline.source.options);
}

void RegisterPostgresSource() {
  RegisterSourceFactory(std::make_unique<PostgresSourceFactory>());
  RegisterPostgresRunGuard();
}

}  // namespace pgflow
