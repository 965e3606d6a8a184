// The mapping of each index: derived from the column types, created with the index or
// extended before a new column's first document, and the settings of an index loaded fast.

#include "sinks/opensearch/opensearch_sink.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "engine/log.h"
#include "engine/str_cat.h"

namespace pgflow {

namespace {

using nlohmann::json;

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

}  // namespace

json OpenSearchSink::Mapping(const Column& column) const {
  if (auto it = options_->properties.find(column.name); it != options_->properties.end()) {
    return json::parse(it->second);
  }
  return FieldMapping(column, json_type_);
}

std::string OpenSearchSink::AfterLoadSettings() const {
  json settings = {{"refresh_interval", options_->refresh_interval}};
  // null puts the cluster's default back.
  settings["number_of_replicas"] =
      options_->replicas >= 0 ? json(options_->replicas) : json(nullptr);
  return json{{"index", settings}}.dump();
}

json OpenSearchSink::NewIndexBody(json properties, json pgflow, bool fast) const {
  pgflow["loading"] = fast;
  json body = {{"mappings", {{"properties", std::move(properties)},
                             {"_meta", {{"pgflow", std::move(pgflow)}}}}}};
  if (fast) {
    body["settings"] = {{"index", {{"refresh_interval", "-1"}, {"number_of_replicas", 0}}}};
  } else {
    body["settings"] = json::parse(AfterLoadSettings());
    if (options_->replicas < 0) body["settings"]["index"].erase("number_of_replicas");
  }
  return body;
}

std::optional<bool> OpenSearchSink::LoadMark(const json& mappings) {
  const json meta = mappings.is_object() ? mappings.value("_meta", json::object()) : json();
  if (!meta.contains("pgflow") || !meta["pgflow"].is_object()) return std::nullopt;
  return meta["pgflow"].value("loading", false);
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
  LogInfo("sink %s (opensearch): %s loaded: refresh_interval %s, replicas %s", context_.sink, index,
          options_->refresh_interval,
          options_->replicas >= 0 ? std::to_string(options_->replicas) : "the cluster's default");
  return absl::OkStatus();
}

absl::Status OpenSearchSink::OnSnapshotDone() {
  if (loading_.empty()) return absl::OkStatus();
  if (feed_ != nullptr) {
    if (absl::Status s = RenderDocuments(); !s.ok()) return s;
  }
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
          if (const std::optional<bool> load = LoadMark(mappings); load.has_value()) {
            state.owned = true;
            // Created for a load that a crash or a stop cut short: loading still, if this run
            // copies the table again; else its settings are put right now.
            if (*load) {
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
      const json body =
          NewIndexBody(properties, meta.empty() ? json::object() : json::parse(meta), fast);
      absl::StatusOr<HttpResponse> created = http_->Request("PUT", Cat("/", index), body.dump());
      if (!created.ok()) return created.status();
      if (created->status / 100 != 2 &&
          created->body.find("resource_already_exists_exception") == std::string::npos) {
        return absl::FailedPreconditionError(
            Cat("sink ", context_.sink, " (opensearch): creating index ", index, ": HTTP ",
                created->status, ": ", created->body.substr(0, 500)));
      }
      if (fast) loading_.insert(index);
      LogInfo("sink %s (opensearch): created index %s with a mapping of %d fields%s", context_.sink,
              index, table->columns.size(),
              fast ? ", refresh off and no replicas for the initial load" : "");
      for (auto& [field, mapping] : properties.items())
        state.fields[field] = mapping.value("type", "");
      state.owned = true;
    } else {
      return absl::UnavailableError(Cat("sink ", context_.sink,
                                        " (opensearch): reading the mapping of ", index, ": HTTP ",
                                        res->status));
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
    absl::StatusOr<HttpResponse> res =
        http_->Request("PUT", Cat("/", index, "/_mapping"), body.dump());
    if (!res.ok()) return res.status();
    if (res->status / 100 != 2) {
      return absl::FailedPreconditionError(
          Cat("sink ", context_.sink, " (opensearch): extending the mapping of ", index, ": HTTP ",
              res->status, ": ", res->body.substr(0, 500)));
    }
    for (auto& [field, mapping] : added.items())
      known->second.fields[field] = mapping.value("type", "");
    LogInfo("sink %s (opensearch): mapped %d new field(s) of %s in %s", context_.sink, added.size(),
            table->QualifiedName(), index);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> OpenSearchSink::EnsureMapping(const std::string& index,
                                                          const TableSchemaPtr& table, bool loading,
                                                          Lsn lsn) {
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
    why = Cat("column ", c.name, " of ", table->QualifiedName(), " is now mapped as ", wanted, ", ",
              index, " has it as ", field->second);
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
    LogWarning(
        "sink %s (opensearch): %s; left as it is (only an index pgflow made for one "
        "table of a PostgreSQL source is rebuilt): documents it cannot take are refused",
        context_.sink, why);
  }
  checked_.emplace(key, table);
  return index;
}

void OpenSearchSink::ForgetIndex(const std::string& index) {
  mapped_.erase(index);
  loading_.erase(index);
  const std::string prefix = Cat(index, "\n");
  absl::erase_if(checked_,
                 [&](const auto& entry) { return absl::StartsWith(entry.first, prefix); });
}

}  // namespace pgflow
