#include "sinks/opensearch/opensearch_sink.h"

#include <algorithm>
#include <cstdio>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/hash/hash.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/digest.h"
#include "common/postgres/postgres_origin.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "schemas/json_text.h"
#include "sources/postgres/backfill.h"

namespace pgflow {
namespace {

using nlohmann::json;

// A document id longer than this is hashed (OpenSearch refuses ids over 512 bytes).
constexpr size_t kMaxIdBytes = 512;
// In an index several tables share: the field naming each document's table.
constexpr char kTableField[] = "pgflow_table";
// The backoff between rounds of a flush that are pushed back (without a Retry-After).
constexpr std::chrono::milliseconds kFirstRetry(100);
constexpr std::chrono::milliseconds kLongestRetry(10000);

// The mapping of a column, from its type: what OpenSearch would not guess right on its own.
json FieldMapping(const Column& column, const std::string& json_type) {
  uint32_t oid_of = column.type_oid;
  uint32_t element = 0;
  if (IsJsonArrayType(column.type_oid, column.type_name, &element) && element != 0) {
    oid_of = element;  // an array maps as its elements
  }
  switch (oid_of) {
    case oid::kInt2:
    case oid::kInt4:
      return {{"type", "integer"}};
    case oid::kInt8:
    case oid::kOid:
      return {{"type", "long"}};
    case oid::kFloat4:
      return {{"type", "float"}};
    case oid::kFloat8:
    case oid::kNumeric:
      return {{"type", "double"}};
    case oid::kBool:
      return {{"type", "boolean"}};
    case oid::kDate:
    case oid::kTimestamp:
    case oid::kTimestamptz:
      return {{"type", "date"}, {"format", "strict_date_optional_time||epoch_millis"}};
    case oid::kText:
    case oid::kVarchar:
    case oid::kBpchar:
    case oid::kName:
      return {{"type", "text"},
              {"fields", {{"keyword", {{"type", "keyword"}, {"ignore_above", 256}}}}}};
    case oid::kJson:
    case oid::kJsonb:
      if (json_type == "object") return {{"type", "object"}, {"enabled", false}};
      return {{"type", json_type}};
    case oid::kBytea:
      return {{"type", "binary"}};
    default:
      return {{"type", "keyword"}, {"ignore_above", 1024}};  // uuid, enums, intervals, ...
  }
}

// A YAML value as JSON: mappings and sequences as they are; a scalar as true/false, a number,
// or a string.
json YamlToJson(const ConfigNode& node) {
  if (node.IsMap()) {
    json out = json::object();
    for (auto& [key, value] : node.Entries()) out[key] = YamlToJson(value);
    return out;
  }
  if (node.IsSequence()) {
    json out = json::array();
    for (const ConfigNode& item : node.Items()) out.push_back(YamlToJson(item));
    return out;
  }
  if (node.IsNull()) return nullptr;
  std::string text = node.AsString().value_or("");
  if (text == "true" || text == "false") return text == "true";
  json number = json::parse(text, nullptr, false);
  return number.is_number() ? number : json(text);
}

absl::Status ReadProperties(const ConfigNode& node,
                            absl::flat_hash_map<std::string, std::string>* properties) {
  if (!node.IsMap()) return node.Error("expected a mapping of column: {type: ..., ...}");
  for (auto& [column, mapping] : node.Entries()) {
    if (!mapping.IsMap() || !mapping.Get("type").has_value()) {
      return mapping.Error(Cat("expected the mapping of column ", column,
                               ", an object with a type: {type: keyword}"));
    }
    (*properties)[column] = YamlToJson(mapping).dump();
  }
  return absl::OkStatus();
}

const OptionTable<HttpEndpointOptions>& HttpEndpointTable() {
  static const auto* table = MakeHttpEndpointTable(OpenSearchSinkOptions{}.http, "node").release();
  return *table;
}

const OptionTable<OpenSearchSinkOptions>& OpenSearchTable() {
  using O = OpenSearchSinkOptions;
  static const auto* table = new OptionTable<O>({
      ListOption("url", &O::url)
          .Required()
          .Help("The node, or several (tried in turn): http://host:9200."),
      StringOption("username", &O::username).Help("Basic authentication's user (write ${VAR})."),
      StringOption("password", &O::password).Help("Basic authentication's password (${VAR})."),
      StringOption("api_key", &O::api_key)
          .Help("Sent as `Authorization: ApiKey <api_key>` (the base64 of id:key), instead of "
                "basic authentication."),
      EmbedOptions(&O::http, HttpEndpointTable()),
      StringOption("refresh_interval", &O::refresh_interval)
          .Help("The refresh interval of the indexes pgflow creates: how soon a document is "
                "searchable (\"1s\", \"500ms\")."),
      IntOption("replicas", &O::replicas)
          .Range(-1, 100)
          .DefaultText("the cluster's")
          .Help("Replicas of the indexes pgflow creates; -1: the cluster's default."),
      BoolOption("fast_load", &O::fast_load)
          .Help("Create the indexes of the initial snapshot with refresh off and no replicas, "
                "and set refresh_interval and replicas once the snapshot is in."),
      CustomOption("properties", OptionType::kMap, ReadProperties, &O::properties)
          .NoDefault()
          .Help("column: its mapping, over the one pgflow derives from the type, e.g. "
                "{sku: {type: keyword}, price: {type: scaled_float, scaling_factor: 100}}."),
      BoolOption("derive_mapping", &O::derive_mapping)
          .Help("Create indexes with a mapping from the column types (and extend it with new "
                "columns); false: the cluster's index templates or dynamic mapping decide."),
      BoolOption("shared", &O::shared)
          .Help("Several tables in one index (an index name without {table}): each document "
                "carries pgflow_table and its _id starts with \"schema.table/\"."),
      ChoiceOption("on_drop_table", &O::on_drop_table)
          .Choices({{"keep", O::OnDrop::kKeep}, {"delete", O::OnDrop::kDelete}}, "on_drop_table")
          .Help("DROP TABLE of a followed table: keep its documents, or delete them (its own "
                "index, or its documents in an index tables share)."),
      StringOption("index", &O::index)
          .Help("The index of each table: a name, or a template over {schema} and {table} "
                "(lower-cased); a route transform's destination takes precedence."),
      BytesOption("batch_bytes", &O::batch_bytes)
          .AtLeast(1024)
          .Help("A _bulk request is sent once this much is buffered."),
      IntOption("batch_docs", &O::batch_docs)
          .AtLeast(1)
          .Help("A _bulk request is sent once this many documents are buffered."),
      IntOption("connections", &O::connections)
          .Range(1, 64)
          .Help("_bulk requests sent at once, each over a connection of its own; documents are "
                "spread over them by id."),
      DurationOption("retry_for", &O::retry_for)
          .Help("How long items refused for a while (429, 5xx, the node down) are sent again "
                "before the pipeline restarts from its last acknowledgement."),
  });
  return *table;
}

class OpenSearchSinkFactory : public SinkFactoryOf<OpenSearchSinkOptions> {
 public:
  std::string_view type() const override { return "opensearch"; }
  bool SetsAside() const override { return true; }
  std::string_view help() const override {
    return "Each table as an OpenSearch (or Elasticsearch) index of documents, ordered by "
           "external versions.";
  }

 protected:
  const OptionTable<OpenSearchSinkOptions>& table() const override { return OpenSearchTable(); }
  std::unique_ptr<Sink> Build(const SinkContext& context,
                              std::shared_ptr<const OpenSearchSinkOptions> options) const override {
    return std::make_unique<OpenSearchSink>(context, std::move(options));
  }
};

}  // namespace

OpenSearchSink::OpenSearchSink(SinkContext context,
                               std::shared_ptr<const OpenSearchSinkOptions> options)
    : TransactionalSink(context.source.positions),
      context_(std::move(context)),
      options_(std::move(options)),
      shared_(options_->shared) {}

absl::Status OpenSearchSink::Open() {
  if (!options_->api_key.empty() && !options_->username.empty()) {
    return absl::InvalidArgumentError(Cat("sinks.", context_.sink,
                                          ".opensearch: give `username` or `api_key`, not both"));
  }
  http_ = std::make_unique<HttpClient>(HttpClientOptions{
      .urls = options_->url,
      .username = options_->username,
      .password = options_->password,
      .api_key = options_->api_key,
      .endpoint = options_->http,
  });
  absl::StatusOr<HttpResponse> root = http_->Request("GET", "/");
  if (!root.ok()) {
    return absl::UnavailableError(Cat("sink ", context_.sink, " (opensearch): ", root.status().message()));
  }
  if (root->status == 401 || root->status == 403) {
    return absl::PermissionDeniedError(Cat("sink ", context_.sink, " (opensearch): ", http_->node(),
                                           " refused the credentials (HTTP ", root->status, ")"));
  }
  json info = json::parse(root->body, nullptr, false);
  std::string version = "?";
  std::string distribution = "elasticsearch";
  if (info.is_object() && info.contains("version") && info["version"].is_object()) {
    version = info["version"].value("number", "?");
    distribution = info["version"].value("distribution", "elasticsearch");
  }
  int major = 0, minor = 0;
  std::sscanf(version.c_str(), "%d.%d", &major, &minor);
  if (distribution == "opensearch") {
    json_type_ = major > 2 || (major == 2 && minor >= 7) ? "flat_object" : "object";
  } else {
    json_type_ = major > 7 || (major == 7 && minor >= 3) ? "flattened" : "object";
  }
  LogInfo("sink %s (opensearch): %s answers, %s %s (json columns map as %s)", context_.sink,
          http_->node(), distribution, version, json_type_);
  absl::StatusOr<std::unique_ptr<DeadLetterStore>> dead_letters = OpenDeadLetters(context_);
  if (!dead_letters.ok()) return dead_letters.status();
  dead_letters_ = *std::move(dead_letters);
  // Rebuilds a stop or a crash cut short go on (and their changes go to the new index).
  return FindRebuilds();
}

json OpenSearchSink::Mapping(const Column& column) const {
  if (auto it = options_->properties.find(column.name); it != options_->properties.end()) {
    return json::parse(it->second);
  }
  return FieldMapping(column, json_type_);
}

absl::StatusOr<std::string> OpenSearchSink::IndexFor(const std::string& destination,
                                                     const std::string& schema,
                                                     const std::string& table) {
  std::string index = !destination.empty()
                          ? destination
                          : absl::StrReplaceAll(options_->index, {{"{schema}", schema},
                                                                  {"{table}", table}});
  index = absl::AsciiStrToLower(index);
  if (index.empty() || index[0] == '_' || index[0] == '-' || index[0] == '+' ||
      index.find_first_of(" \"*\\<|,>/?#:") != std::string::npos) {
    return absl::InvalidArgumentError(Cat("sink ", context_.sink, " (opensearch): '", index,
                                          "' is not a valid index name (for ", schema, ".", table,
                                          ")"));
  }
  return index;
}

std::string OpenSearchSink::AfterLoadSettings() const {
  json settings = {{"refresh_interval", options_->refresh_interval}};
  // null puts the cluster's default back.
  settings["number_of_replicas"] = options_->replicas >= 0 ? json(options_->replicas) : json(nullptr);
  return json{{"index", settings}}.dump();
}

absl::Status OpenSearchSink::FinishLoad(const std::string& index) {
  absl::StatusOr<HttpResponse> res =
      http_->Request("PUT", Cat("/", index, "/_settings"), AfterLoadSettings());
  if (res.ok() && res->status / 100 == 2) {
    res = http_->Request("PUT", Cat("/", index, "/_mapping"),
                         R"({"_meta":{"pgflow":{"loading":false}}})");
  }
  if (!res.ok()) return res.status();
  if (res->status / 100 != 2) {
    return absl::UnavailableError(Cat("sink ", context_.sink, " (opensearch): setting ", index,
                                      "'s refresh interval and replicas after the load: HTTP ",
                                      res->status, ": ", res->body.substr(0, 300)));
  }
  loading_.erase(index);
  LogInfo("sink %s (opensearch): %s loaded: refresh_interval %s, replicas %s", context_.sink,
          index, options_->refresh_interval,
          options_->replicas >= 0 ? std::to_string(options_->replicas) : "the cluster's default");
  return absl::OkStatus();
}

absl::Status OpenSearchSink::OnSnapshotDone() {
  if (loading_.empty()) return absl::OkStatus();
  // What was loaded is sent first: refreshing the index is what makes it searchable.
  if (absl::Status s = SendAll(); !s.ok()) return s;
  std::vector<std::string> indexes(loading_.begin(), loading_.end());
  for (const std::string& index : indexes) {
    if (absl::Status s = FinishLoad(index); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status OpenSearchSink::LoadOrCreate(const std::string& index, const TableSchemaPtr& table,
                                          bool loading, const std::string& meta) {
  auto known = mapped_.find(index);
  if (known == mapped_.end()) {
    // First sight of the index in this run: what it maps already, if it exists.
    absl::StatusOr<HttpResponse> res = http_->Request("GET", Cat("/", index, "/_mapping"));
    if (!res.ok()) return res.status();
    IndexState state;
    if (res->status == 200) {
      json doc = json::parse(res->body, nullptr, false);
      if (doc.is_object()) {
        for (auto& [name, entry] : doc.items()) {
          if (!entry.is_object() || !entry.contains("mappings")) continue;
          const json& mappings = entry["mappings"];
          const json& props = mappings.value("properties", json::object());
          for (auto& [field, mapping] : props.items()) {
            state.fields[field] = mapping.is_object() ? mapping.value("type", "") : "";
          }
          const json meta_doc = mappings.value("_meta", json::object());
          if (meta_doc.contains("pgflow") && meta_doc["pgflow"].is_object()) {
            state.owned = true;
            // Created for a load that a crash or a stop cut short: loading still, if this run
            // copies the table again; else its settings are put right now.
            if (meta_doc["pgflow"].value("loading", false)) {
              loading_.insert(index);
              if (!loading) {
                if (absl::Status s = FinishLoad(index); !s.ok()) return s;
              }
            }
          }
        }
      }
    } else if (res->status == 404) {
      json properties = json::object();
      if (options_->derive_mapping) {
        for (const Column& c : table->columns) properties[c.name] = Mapping(c);
      }
      if (shared_) properties[kTableField] = {{"type", "keyword"}};
      const bool fast = loading && options_->fast_load;
      json pgflow_meta = meta.empty() ? json::object() : json::parse(meta);
      pgflow_meta["loading"] = fast;
      json body = {{"mappings", {{"properties", properties}, {"_meta", {{"pgflow", pgflow_meta}}}}}};
      if (fast) {
        body["settings"] = {{"index", {{"refresh_interval", "-1"}, {"number_of_replicas", 0}}}};
      } else {
        body["settings"] = json::parse(AfterLoadSettings());
        if (options_->replicas < 0) body["settings"]["index"].erase("number_of_replicas");
      }
      absl::StatusOr<HttpResponse> created = http_->Request("PUT", Cat("/", index), body.dump());
      if (!created.ok()) return created.status();
      if (created->status / 100 != 2 &&
          created->body.find("resource_already_exists_exception") == std::string::npos) {
        return absl::FailedPreconditionError(Cat("sink ", context_.sink, " (opensearch): creating index ",
                                                 index, ": HTTP ", created->status, ": ",
                                                 created->body.substr(0, 500)));
      }
      if (fast) loading_.insert(index);
      LogInfo("sink %s (opensearch): created index %s with a mapping of %d fields%s", context_.sink,
              index, table->columns.size(),
              fast ? ", refresh off and no replicas for the initial load" : "");
      for (auto& [field, mapping] : properties.items()) state.fields[field] = mapping.value("type", "");
      state.owned = true;
    } else {
      return absl::UnavailableError(Cat("sink ", context_.sink, " (opensearch): reading the mapping of ",
                                        index, ": HTTP ", res->status));
    }
    known = mapped_.emplace(index, std::move(state)).first;
  }
  // Columns the index does not map yet (added since): mapped before their first document.
  json added = json::object();
  for (const Column& c : table->columns) {
    if (!options_->derive_mapping) break;  // the cluster's templates or dynamic mapping decide
    if (!known->second.fields.contains(c.name)) added[c.name] = Mapping(c);
  }
  if (shared_ && !known->second.fields.contains(kTableField)) {
    added[kTableField] = {{"type", "keyword"}};  // (TRUNCATE finds a table's documents by it)
  }
  if (!added.empty()) {
    json body = {{"properties", added}};
    absl::StatusOr<HttpResponse> res = http_->Request("PUT", Cat("/", index, "/_mapping"), body.dump());
    if (!res.ok()) return res.status();
    if (res->status / 100 != 2) {
      return absl::FailedPreconditionError(Cat("sink ", context_.sink, " (opensearch): extending the mapping of ",
                                               index, ": HTTP ", res->status, ": ",
                                               res->body.substr(0, 500)));
    }
    for (auto& [field, mapping] : added.items()) known->second.fields[field] = mapping.value("type", "");
    LogInfo("sink %s (opensearch): mapped %d new field(s) of %s in %s", context_.sink, added.size(),
            table->QualifiedName(), index);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> OpenSearchSink::EnsureMapping(const std::string& index,
                                                          const TableSchemaPtr& table,
                                                          bool loading, Lsn lsn) {
  if (auto r = rebuilds_.find(index); r != rebuilds_.end()) {
    // Being rebuilt: the table's documents go to the index being built.
    if (absl::Status s = LoadOrCreate(r->second.target, table, false, ""); !s.ok()) return s;
    return r->second.target;
  }
  const std::string key = Cat(index, "\n", reinterpret_cast<uintptr_t>(table.get()));
  if (checked_.contains(key)) return index;
  if (absl::Status s = LoadOrCreate(index, table, loading, ""); !s.ok()) return s;
  const IndexState& state = mapped_[index];
  // A column whose type the index maps otherwise, beyond what it coerces; or a field of a
  // column the table no longer has (dropped, or renamed), which the documents not written
  // since would keep.
  std::string why;
  for (const Column& c : table->columns) {
    auto field = state.fields.find(c.name);
    if (field == state.fields.end() || field->second.empty() || !options_->derive_mapping) continue;
    const std::string wanted = Mapping(c).value("type", "");
    if (wanted == field->second) continue;
    why = Cat("column ", c.name, " of ", table->QualifiedName(), " is now mapped as ", wanted,
              ", ", index, " has it as ", field->second);
    break;
  }
  if (why.empty() && state.owned && !shared_) {
    for (const auto& [field, type] : state.fields) {
      const bool column = std::any_of(table->columns.begin(), table->columns.end(),
                                      [&](const Column& c) { return c.name == field; });
      if (!column) {
        why = Cat(index, " maps ", field, ", which ", table->QualifiedName(), " no longer has");
        break;
      }
    }
  }
  if (!why.empty()) {
    if (state.owned && !shared_ && context_.source.postgres != nullptr &&
        context_.source.positions == SourcePositions::kWal) {
      return StartRebuild(index, table, why, lsn);
    }
    LogWarning("sink %s (opensearch): %s; left as it is (only an index pgflow made for one "
               "table of a PostgreSQL source is rebuilt): documents it cannot take are refused",
               context_.sink, why);
  }
  checked_.emplace(key, table);
  return index;
}

absl::StatusOr<std::string> OpenSearchSink::StartRebuild(const std::string& index,
                                                         const TableSchemaPtr& table,
                                                         const std::string& why, Lsn lsn) {
  // What is buffered belongs to the index as it was.
  if (absl::Status s = SendAll(); !s.ok()) return s;
  const std::string target = absl::AsciiStrToLower(absl::StrCat(index, "-r", absl::Hex(lsn.value)));
  // The index first, marked with no backfill yet: a crash before the request is recorded in
  // its _meta asks again after the restart (RequestRebuildBackfill), never twice.
  const std::string meta = json{{"rebuilding", index},
                                {"backfill", 0},
                                {"schema", table->schema},
                                {"table", table->name}}
                               .dump();
  if (absl::Status s = LoadOrCreate(target, table, false, meta); !s.ok()) return s;
  absl::StatusOr<int64_t> backfill = RequestRebuildBackfill(index, target, table->schema, table->name);
  if (!backfill.ok()) {
    return absl::Status(backfill.status().code(), Cat("sink ", context_.sink, " (opensearch): ",
                                                      why, "; ", backfill.status().message()));
  }
  rebuilds_[index] = Rebuild{target, *backfill};
  LogInfo("sink %s (opensearch): %s: building %s from a copy of the table (backfill %d); it "
          "takes the name %s once complete",
          context_.sink, why, target, *backfill, index);
  return target;
}

absl::StatusOr<int64_t> OpenSearchSink::RequestRebuildBackfill(const std::string& index,
                                                               const std::string& target,
                                                               const std::string& schema,
                                                               const std::string& table) {
  absl::StatusOr<int64_t> backfill =
      RequestBackfill(context_.source.postgres->url, context_.pipeline, {TableRef{schema, table}});
  if (!backfill.ok()) {
    return absl::Status(backfill.status().code(),
                        Cat("asking the source for a copy of ", schema, ".", table,
                            " to rebuild ", index, ": ", backfill.status().message()));
  }
  const std::string meta =
      json{{"_meta",
            {{"pgflow",
              {{"loading", false}, {"rebuilding", index}, {"backfill", *backfill},
               {"schema", schema}, {"table", table}}}}}}
          .dump();
  absl::StatusOr<HttpResponse> res = http_->Request("PUT", Cat("/", target, "/_mapping"), meta);
  if (!res.ok()) return res.status();
  if (res->status / 100 != 2) {
    return absl::UnavailableError(Cat("recording backfill ", *backfill, " in ", target,
                                      "'s mapping: HTTP ", res->status));
  }
  return backfill;
}

absl::Status OpenSearchSink::FindRebuilds() {
  if (context_.source.postgres == nullptr || shared_) return absl::OkStatus();
  absl::StatusOr<HttpResponse> res =
      http_->Request("GET", "/*-r*/_mapping?ignore_unavailable=true&allow_no_indices=true");
  if (!res.ok()) return res.status();
  json doc = res->status == 200 ? json::parse(res->body, nullptr, false) : json();
  if (!doc.is_object()) return absl::OkStatus();
  for (auto& [target, entry] : doc.items()) {
    if (!entry.is_object()) continue;
    const json meta = entry.value("mappings", json::object()).value("_meta", json::object());
    const json pgflow = meta.value("pgflow", json::object());
    const std::string index = pgflow.is_object() ? pgflow.value("rebuilding", "") : "";
    if (index.empty()) continue;
    int64_t backfill = pgflow.value("backfill", int64_t{0});
    if (backfill == 0) {
      // Cut short before its backfill was asked for: asked now.
      absl::StatusOr<int64_t> asked = RequestRebuildBackfill(
          index, target, pgflow.value("schema", ""), pgflow.value("table", ""));
      if (!asked.ok()) {
        return absl::Status(asked.status().code(),
                            Cat("sink ", context_.sink, " (opensearch): ", asked.status().message(),
                                " (or delete index ", target, " to start the rebuild over)"));
      }
      backfill = *asked;
    }
    rebuilds_[index] = Rebuild{target, backfill};
    LogInfo("sink %s (opensearch): %s is still being rebuilt into %s (backfill %d)",
            context_.sink, index, target, backfill);
  }
  return absl::OkStatus();
}

absl::Status OpenSearchSink::CheckRebuilds() {
  const auto now = std::chrono::steady_clock::now();
  if (rebuilds_.empty() || now - rebuilds_checked_ < std::chrono::seconds(1)) {
    return absl::OkStatus();
  }
  rebuilds_checked_ = now;
  if (source_conn_ == nullptr || PQstatus(source_conn_.get()) != CONNECTION_OK) {
    absl::StatusOr<PgConnPtr> conn = Connect(context_.source.postgres->url, ConnectionKind::kRegular);
    if (!conn.ok()) return absl::OkStatus();  // the next look, when the source answers
    source_conn_ = *std::move(conn);
  }
  std::vector<std::string> done;
  for (const auto& [index, rebuild] : rebuilds_) {
    absl::StatusOr<BackfillStatus> status = GetBackfillStatus(source_conn_.get(), rebuild.backfill);
    if (!status.ok()) {
      if (absl::IsNotFound(status.status())) {
        return absl::FailedPreconditionError(
            Cat("sink ", context_.sink, " (opensearch): rebuilding ", index, " into ",
                rebuild.target, ": backfill ", rebuild.backfill,
                " is gone from the source; delete index ", rebuild.target,
                " to start the rebuild over"));
      }
      source_conn_.reset();
      return absl::OkStatus();
    }
    if (!status->error.empty()) {
      return absl::FailedPreconditionError(Cat("sink ", context_.sink, " (opensearch): rebuilding ",
                                               index, " into ", rebuild.target, ": backfill ",
                                               rebuild.backfill, " failed: ", status->error,
                                               "; delete index ", rebuild.target,
                                               " to start the rebuild over"));
    }
    if (status->finished) done.push_back(index);
  }
  for (const std::string& index : done) {
    if (absl::Status s = Swap(index); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void OpenSearchSink::ForgetIndex(const std::string& index) {
  mapped_.erase(index);
  loading_.erase(index);
  const std::string prefix = Cat(index, "\n");
  absl::erase_if(checked_, [&](const auto& entry) { return absl::StartsWith(entry.first, prefix); });
}

absl::Status OpenSearchSink::Swap(const std::string& index) {
  const Rebuild rebuild = rebuilds_[index];
  auto failed = [&](const char* what, const absl::StatusOr<HttpResponse>& res) {
    return res.ok() ? absl::UnavailableError(Cat("sink ", context_.sink, " (opensearch): ", what,
                                                 " ", index, " to ", rebuild.target, ": HTTP ",
                                                 res->status, ": ", res->body.substr(0, 300)))
                    : res.status();
  };
  // `index` is the first index (a name of its own) or, after an earlier rebuild, an alias.
  json actions = json::array({{{"add", {{"index", rebuild.target}, {"alias", index}}}}});
  absl::StatusOr<HttpResponse> res = http_->Request("GET", Cat("/_alias/", index));
  if (!res.ok()) return res.status();
  if (res->status == 200) {
    json doc = json::parse(res->body, nullptr, false);
    if (doc.is_object()) {
      for (auto& [concrete, unused] : doc.items()) {
        if (concrete != rebuild.target) actions.push_back({{"remove_index", {{"index", concrete}}}});
      }
    }
  } else {
    actions.push_back({{"remove_index", {{"index", index}}}});
  }
  res = http_->Request("POST", "/_aliases", json{{"actions", actions}}.dump());
  if (!res.ok() || res->status / 100 != 2) return failed("swapping", res);
  res = http_->Request("PUT", Cat("/", rebuild.target, "/_mapping"),
                       R"({"_meta":{"pgflow":{"loading":false,"rebuilding":""}}})");
  if (!res.ok() || res->status / 100 != 2) return failed("marking", res);
  rebuilds_.erase(index);
  ForgetIndex(index);
  LogInfo("sink %s (opensearch): %s rebuilt: the name now points at %s, the old index is removed",
          context_.sink, index, rebuild.target);
  return absl::OkStatus();
}

absl::StatusOr<OpenSearchSink::Action> OpenSearchSink::MakeAction(const Change& change) {
  const TableSchema& table = *change.table;
  const std::vector<size_t> key = table.RowKeyColumns();
  if (key.empty()) {
    return absl::FailedPreconditionError(
        Cat("sink ", context_.sink, " (opensearch): table ", table.QualifiedName(),
            " has no key, and a document needs an id: give it a primary key (or leave it out of "
            "this sink with a filter transform)"));
  }
  absl::StatusOr<std::string> index = IndexFor(change);
  if (!index.ok()) return index.status();
  if (!shared_) {
    // (By relation: a table renamed keeps its index.)
    const std::string name = table.QualifiedName();
    auto [it, first] = index_table_.emplace(*index, std::make_pair(table.relation_id, name));
    if (!first && it->second.first != table.relation_id) {
      return absl::FailedPreconditionError(
          Cat("sink ", context_.sink, " (opensearch): tables ", it->second.second, " and ", name,
              " both go to index ", *index, ", where their ids would collide: give each its own "
              "index (\"{schema}.{table}\"), or set `shared: true`"));
    }
  }
  absl::StatusOr<std::string> target =
      EnsureMapping(*index, change.table, change.op == Op::kRead && !in_txn(), change.txn.commit_lsn);
  if (!target.ok()) return target.status();

  const bool is_delete = change.op == Op::kDelete;
  const Row& row = is_delete ? change.before : change.after;
  Action action;
  action.index = *target;
  action.is_delete = is_delete;
  // The id: one key column's text, or several as a JSON array.
  std::string id;
  if (key.size() == 1) {
    scratch_.clear();
    AppendJsonValue(row[key[0]], table.columns[key[0]].type_name, JsonOptions{}, &scratch_);
    json v = json::parse(scratch_, nullptr, false);
    id = v.is_string() ? v.get<std::string>() : scratch_;
  } else {
    id = "[";
    for (size_t i = 0; i < key.size(); ++i) {
      if (i > 0) id += ",";
      AppendJsonValue(row[key[i]], table.columns[key[i]].type_name, JsonOptions{}, &id);
    }
    id += "]";
  }
  if (shared_) id = Cat(table.QualifiedName(), "/", id);
  if (id.size() > kMaxIdBytes) id = "sha256:" + Sha256Hex(id);
  action.id = id;

  bool partial = false;
  for (const Value& v : change.after) partial = partial || v.is_unchanged_toast();
  // While the index is rebuilt, the document may not be in the new index yet (the backfill
  // copies it later, or leaves it to the stream): a partial update there would find nothing.
  // The unchanged values are read from the old index instead, and the whole row written.
  std::string merged;
  if (partial && !is_delete && *target != *index) {
    absl::StatusOr<HttpResponse> old = http_->Request(
        "GET", Cat("/", *index, "/_doc/", absl::StrReplaceAll(id, {{"%", "%25"}, {"/", "%2F"},
                                                                   {"?", "%3F"}, {"#", "%23"},
                                                                   {" ", "%20"}})));
    if (!old.ok()) return old.status();
    json found = json::parse(old->body, nullptr, false);
    if (old->status == 200 && found.is_object() && found.value("found", false)) {
      scratch_.clear();
      AppendRowObject(table, change.after, false, JsonOptions{}, &scratch_);
      json doc = json::parse(scratch_, nullptr, false);
      const json& source = found["_source"];
      for (size_t i = 0; i < table.columns.size(); ++i) {
        const std::string& name = table.columns[i].name;
        if (change.after[i].is_unchanged_toast() && source.contains(name)) doc[name] = source[name];
      }
      merged = doc.dump();
      partial = false;
    }
  }
  std::string& out = action.lines;
  out += is_delete ? "{\"delete\":{" : partial ? "{\"update\":{" : "{\"index\":{";
  out += "\"_index\":";
  AppendJsonString(*target, &out);
  out += ",\"_id\":";
  AppendJsonString(id, &out);
  if (!partial) {
    // external_gte: a transaction that truncates the table and writes it again writes under
    // the version its TRUNCATE deleted with (the same commit LSN).
    out += Cat(",\"version\":", change.txn.commit_lsn.value, ",\"version_type\":\"external_gte\"");
  }
  out += "}}\n";
  if (!is_delete) {
    if (partial) out += "{\"doc\":";
    if (merged.empty()) {
      AppendRowObject(table, change.after, false, JsonOptions{}, &out);
    } else {
      out += merged;
    }
    if (shared_) {
      out.pop_back();  // the row object's '}'
      out += Cat(out.back() == '{' ? "\"" : ",\"", kTableField, "\":");
      AppendJsonString(table.QualifiedName(), &out);
      out += "}";
    }
    if (partial) out += "}";
    out += "\n";
  }
  return action;
}

absl::Status OpenSearchSink::OnBegin(const TxnInfo&) {
  txn_.clear();
  txn_slot_.clear();
  return absl::OkStatus();
}

absl::Status OpenSearchSink::OnChange(const Change& change, bool in_txn) {
  if (change.op == Op::kDdl && change.ddl != nullptr && change.ddl->object_type == "table" &&
      change.ddl->dropped && change.ddl->tag == "DROP TABLE") {
    return DropTable(change);
  }
  if (change.table == nullptr || change.op == Op::kDdl || change.op == Op::kMessage) {
    return absl::OkStatus();  // schema changes reach the mapping with the first new row
  }
  if (change.op == Op::kTruncate) return Truncate(change);
  absl::StatusOr<Action> action = MakeAction(change);
  if (!action.ok()) return action.status();
  if (dead_letters_ != nullptr) action->change = std::make_shared<const Change>(change);
  if (!in_txn) return Add(*std::move(action));
  // The last change of the transaction to a document is the one that counts: versions must
  // rise strictly per document, and every change of one transaction has its commit LSN.
  const std::string slot = Cat(action->index, std::string(1, '\0'), action->id);
  auto [it, inserted] = txn_slot_.emplace(slot, txn_.size());
  if (inserted) {
    txn_.push_back(*std::move(action));
  } else {
    txn_[it->second] = *std::move(action);
  }
  return absl::OkStatus();
}

absl::Status OpenSearchSink::OnCommit(const TxnInfo&) {
  for (Action& a : txn_) {
    if (absl::Status s = Add(std::move(a)); !s.ok()) return s;
  }
  txn_.clear();
  txn_slot_.clear();
  return absl::OkStatus();
}

absl::Status OpenSearchSink::OnRollback() {
  txn_.clear();
  txn_slot_.clear();
  return absl::OkStatus();
}

absl::Status OpenSearchSink::Add(Action action) {
  pending_bytes_ += action.lines.size();
  pending_.push_back(std::move(action));
  if (pending_bytes_ >= options_->batch_bytes ||
      pending_.size() >= static_cast<size_t>(options_->batch_docs)) {
    return SendAll();
  }
  return absl::OkStatus();
}

absl::Status OpenSearchSink::Truncate(const Change& change) {
  // What the transaction wrote before the TRUNCATE goes first, then the index is emptied.
  if (absl::Status s = OnCommit(change.txn); !s.ok()) return s;
  if (absl::Status s = SendAll(); !s.ok()) return s;
  absl::StatusOr<std::string> index = IndexFor(change);
  if (!index.ok()) return index.status();
  // (While the index is rebuilt, the one being built: the other goes at the swap.)
  auto rebuild = rebuilds_.find(*index);
  return DeleteDocuments(rebuild != rebuilds_.end() ? rebuild->second.target : *index,
                         change.table->QualifiedName(), change.txn.commit_lsn,
                         Cat("TRUNCATE ", change.table->QualifiedName()));
}

absl::Status OpenSearchSink::DropTable(const Change& change) {
  const DdlCommand& ddl = *change.ddl;
  const std::string table = Cat(ddl.schema, ".", ddl.name);
  absl::StatusOr<std::string> index = IndexFor(change.destination, ddl.schema, ddl.name);
  if (!index.ok()) return index.status();
  if (options_->on_drop_table == OpenSearchSinkOptions::OnDrop::kKeep) {
    LogInfo("sink %s (opensearch): table %s dropped; its documents in %s are kept "
            "(on_drop_table: keep)", context_.sink, table, *index);
    index_table_.erase(*index);  // a table created again under the name writes there too
    return absl::OkStatus();
  }
  if (absl::Status s = OnCommit(change.txn); !s.ok()) return s;
  if (absl::Status s = SendAll(); !s.ok()) return s;
  if (shared_) return DeleteDocuments(*index, table, change.txn.commit_lsn, Cat("DROP TABLE ", table));
  // The name may be an alias (after a rebuild): its indexes are deleted, and one being built.
  std::vector<std::string> concrete;
  absl::StatusOr<HttpResponse> res = http_->Request("GET", Cat("/_alias/", *index));
  if (!res.ok()) return res.status();
  json aliased = res->status == 200 ? json::parse(res->body, nullptr, false) : json();
  if (aliased.is_object() && !aliased.empty()) {
    for (auto& [name, unused] : aliased.items()) concrete.push_back(name);
  } else {
    concrete.push_back(*index);
  }
  if (auto r = rebuilds_.find(*index); r != rebuilds_.end()) {
    concrete.push_back(r->second.target);
    rebuilds_.erase(r);
  }
  for (const std::string& name : concrete) {
    res = http_->Request("DELETE", Cat("/", name));
    if (!res.ok()) return res.status();
    if (res->status / 100 != 2 && res->status != 404) {
      return absl::UnavailableError(Cat("sink ", context_.sink, " (opensearch): deleting index ",
                                        name, " after DROP TABLE ", table, ": HTTP ", res->status,
                                        ": ", res->body.substr(0, 300)));
    }
    ForgetIndex(name);
  }
  // Created again (a table of that name again) from scratch.
  ForgetIndex(*index);
  index_table_.erase(*index);
  LogInfo("sink %s (opensearch): deleted index %s (DROP TABLE %s)", context_.sink, *index, table);
  return absl::OkStatus();
}

absl::Status OpenSearchSink::DeleteDocuments(const std::string& index,
                                             const std::string& table, Lsn version,
                                             const std::string& why) {
  // Every document of the table is deleted under `version`: read by a scroll and deleted in
  // bulk (_delete_by_query is a module some distributions lack, and would not carry the
  // version). In an index tables share, only the table's.
  auto failed = [&](const char* what, const absl::StatusOr<HttpResponse>& res) {
    return res.ok() ? absl::UnavailableError(Cat("sink ", context_.sink, " (opensearch): ", what,
                                                 " ", index, " after ", why, ": HTTP ",
                                                 res->status, ": ", res->body.substr(0, 300)))
                    : res.status();
  };
  absl::StatusOr<HttpResponse> res = http_->Request("POST", Cat("/", index, "/_refresh"));
  if (res.ok() && res->status == 404) return absl::OkStatus();  // no index: nothing to empty
  if (!res.ok() || res->status / 100 != 2) return failed("refreshing", res);
  json query = {{"size", 1000}, {"_source", false}, {"sort", {"_doc"}}};
  if (shared_) query["query"] = {{"term", {{kTableField, table}}}};
  res = http_->Request("POST", Cat("/", index, "/_search?scroll=1m"), query.dump());
  uint64_t deleted = 0;
  std::string scroll_id;
  while (true) {
    if (!res.ok() || res->status / 100 != 2) return failed("reading", res);
    json page = json::parse(res->body, nullptr, false);
    if (!page.is_object() || !page.contains("hits")) return failed("reading", res);
    scroll_id = page.value("_scroll_id", "");
    const json& hits = page["hits"]["hits"];
    if (!hits.is_array() || hits.empty()) break;
    for (const json& hit : hits) {
      Action action;
      action.index = index;
      action.id = hit.value("_id", "");
      action.is_delete = true;
      action.lines = "{\"delete\":{\"_index\":";
      AppendJsonString(action.index, &action.lines);
      action.lines += ",\"_id\":";
      AppendJsonString(action.id, &action.lines);
      action.lines += Cat(",\"version\":", version.value, ",\"version_type\":\"external_gte\"}}\n");
      pending_bytes_ += action.lines.size();
      pending_.push_back(std::move(action));
      ++deleted;
    }
    if (absl::Status s = SendAll(); !s.ok()) return s;
    res = http_->Request("POST", "/_search/scroll",
                         json{{"scroll", "1m"}, {"scroll_id", scroll_id}}.dump());
  }
  if (!scroll_id.empty()) {
    http_->Request("DELETE", "/_search/scroll", json{{"scroll_id", scroll_id}}.dump()).IgnoreError();
  }
  LogInfo("sink %s (opensearch): deleted the %d documents of %s in %s (%s)", context_.sink,
          deleted, table, index, why);
  return absl::OkStatus();
}

absl::Status OpenSearchSink::Judge(const absl::StatusOr<HttpResponse>& res,
                                   std::vector<Action>& sent, std::vector<Action>* again,
                                   std::string* reason, int* wait_seconds) {
  if (!res.ok()) {
    *reason = std::string(res.status().message());
    for (Action& a : sent) again->push_back(std::move(a));
    return absl::OkStatus();
  }
  const HttpDisposition disposition = Classify(res->status, /*curl_code=*/0);
  if (IsRetry(disposition)) {
    *reason = Cat("HTTP ", res->status);
    *wait_seconds = std::max(*wait_seconds, res->retry_after_seconds);
    for (Action& a : sent) again->push_back(std::move(a));
    return absl::OkStatus();
  }
  if (disposition != HttpDisposition::kAccepted) {
    return absl::FailedPreconditionError(Cat("sink ", context_.sink,
                                             " (opensearch): _bulk refused: HTTP ", res->status,
                                             ": ", res->body.substr(0, 500)));
  }
  // A 2xx answer may still carry item failures ("errors": true): each item has its status.
  // The flag comes first in the answer: read without parsing the rest when it is false.
  if (size_t at = res->body.find("\"errors\""); at != std::string::npos && at < 200) {
    at += 8;
    while (at < res->body.size() && (res->body[at] == ' ' || res->body[at] == ':')) ++at;
    if (res->body.compare(at, 5, "false") == 0) return absl::OkStatus();
  }
  json doc = json::parse(res->body, nullptr, false);
  if (!doc.is_object() || !doc.contains("items") || !doc["items"].is_array() ||
      doc["items"].size() != sent.size()) {
    return absl::InternalError(Cat("sink ", context_.sink,
                                   " (opensearch): a _bulk response without one item per action: ",
                                   res->body.substr(0, 300)));
  }
  const json& items = doc["items"];
  for (size_t i = 0; i < sent.size(); ++i) {
    const json& item = items[i].begin().value();
    const int status = item.value("status", 0);
    if (status / 100 == 2 || status == 409 || (status == 404 && sent[i].is_delete)) continue;
    const std::string error = item.contains("error") ? item["error"].dump() : "";
    // Pushed back, or blocked for a while (a write block, the disk's flood stage): again later.
    if (IsRetry(Classify(status, /*curl_code=*/0)) ||
        error.find("cluster_block_exception") != std::string::npos) {
      *reason = Cat("HTTP ", status, " ", error.substr(0, 200));
      again->push_back(std::move(sent[i]));
      continue;
    }
    const std::string refusal = Cat("document ", sent[i].id, " of index ", sent[i].index,
                                    " refused (HTTP ", status, "): ", error.substr(0, 500));
    // Only a 400 is the document's own fault (a value its mapping cannot take): set aside
    // with `dead_letter:`. Anything else (401, 403, 413, ...) is the sink's setup: it stops.
    if (status != 400 || dead_letters_ == nullptr || sent[i].change == nullptr) {
      return absl::FailedPreconditionError(Cat("sink ", context_.sink, " (opensearch): ", refusal));
    }
    DeadLetter letter = MakeDeadLetter(context_.pipeline, context_.sink, *sent[i].change,
                                       Cat(sent[i].index, "/", sent[i].id), refusal,
                                       std::to_string(status));
    if (absl::Status s = dead_letters_->Record(letter); !s.ok()) {
      return absl::Status(s.code(), Cat("sink ", context_.sink, " (opensearch): ", refusal,
                                        "; and it could not be set aside: ", s.message()));
    }
    ++dead_lettered_;
    LogWarning("sink %s (opensearch): set aside in %s as #%d: %s", context_.sink,
               dead_letters_->Describe(), letter.id, refusal);
  }
  return absl::OkStatus();
}

absl::Status OpenSearchSink::SendAll() {
  std::vector<Action> todo = std::move(pending_);
  pending_.clear();
  pending_bytes_ = 0;
  const auto give_up = std::chrono::steady_clock::now() + options_->retry_for;
  const Backoff backoff(kFirstRetry, kLongestRetry);
  int round = 0;
  while (!todo.empty()) {
    // Lanes, one request each, sent at once: a document is always in the same lane, so its
    // writes keep their order (its versions would restore it anyway).
    const size_t connections = static_cast<size_t>(options_->connections);
    if (lanes_ == 0) lanes_ = connections;
    const size_t n = std::min(lanes_, todo.size());
    std::vector<std::vector<Action>> lanes(n);
    for (Action& a : todo) {
      const size_t lane = absl::HashOf(a.index, a.id) % n;
      lanes[lane].push_back(std::move(a));
    }
    lanes.erase(std::remove_if(lanes.begin(), lanes.end(),
                               [](const std::vector<Action>& l) { return l.empty(); }),
                lanes.end());
    std::vector<std::string> bodies;
    for (const std::vector<Action>& lane : lanes) {
      std::string body;
      for (const Action& a : lane) body += a.lines;
      bodies.push_back(std::move(body));
    }
    std::vector<absl::StatusOr<HttpResponse>> results =
        http_->PostMany("/_bulk", bodies, "application/x-ndjson");
    std::vector<Action> again;
    std::string reason;
    int wait_seconds = 0;
    for (size_t k = 0; k < lanes.size(); ++k) {
      if (absl::Status s = Judge(results[k], lanes[k], &again, &reason, &wait_seconds); !s.ok()) {
        return s;
      }
    }
    todo = std::move(again);
    if (todo.empty()) {
      lanes_ = std::min(lanes_ + 1, connections);  // taken in full: a little more at once
      break;
    }
    // Pushed back: fewer requests at once until the node takes them again.
    if (lanes_ > 1) {
      lanes_ = std::max<size_t>(1, lanes_ / 2);
      LogInfo("sink %s (opensearch): pushed back, %d request(s) at once for now", context_.sink,
              lanes_);
    }
    if (std::chrono::steady_clock::now() >= give_up) {
      return absl::UnavailableError(Cat("sink ", context_.sink, " (opensearch): ", todo.size(),
                                        " document(s) still refused after ",
                                        options_->retry_for.count() / 1000, "s: ", reason));
    }
    const std::chrono::milliseconds wait = backoff.Next(++round, std::chrono::seconds(wait_seconds));
    LogWarning("sink %s (opensearch): %d document(s) to send again in %dms: %s", context_.sink,
               todo.size(), wait.count(), reason);
    std::this_thread::sleep_for(wait);
  }
  return absl::OkStatus();
}

absl::Status OpenSearchSink::Flush() {
  if (absl::Status s = SendAll(); !s.ok()) return s;
  return CheckRebuilds();
}

absl::Status OpenSearchSink::Close() {
  if (http_ == nullptr) return absl::OkStatus();
  absl::Status s = SendAll();
  http_.reset();
  return s;
}

void RegisterOpenSearchSink() { RegisterSinkFactory(std::make_unique<OpenSearchSinkFactory>()); }

}  // namespace pgflow
