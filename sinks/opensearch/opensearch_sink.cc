#include "sinks/opensearch/opensearch_sink.h"

// The sink itself: its options, opening, the changes of a transaction folded per document,
// TRUNCATE and DROP TABLE. Mappings are in opensearch_mapping.cc, rebuilds behind the alias in
// opensearch_rebuild.cc, the _bulk actions and their sending in opensearch_bulk.cc.

#include <cstdio>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_replace.h"
#include "common/postgres/postgres_origin.h"
#include "engine/log.h"
#include "engine/str_cat.h"

namespace pgflow {
namespace {

using nlohmann::json;

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
      CustomOption("documents", OptionType::kList, documents::ReadDocumentNames, &O::documents)
          .NoDefault()
          .Help("Joined documents to index instead of tables' rows, by their names under the "
                "pipeline's `documents:`; each goes to the index `index` names, with "
                "{document}, and {schema} and {table} of its root table."),
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
  absl::Status CheckPipeline(const SinkOptions& options,
                             const SinkContext& context) const override {
    const auto& mine = static_cast<const OpenSearchSinkOptions&>(options);
    if (!mine.documents.names.empty() && mine.shared) {
      return mine.documents.node->Error(
          "documents take an index each: `shared: true` (several tables in one index) does not "
          "apply to them");
    }
    return documents::CheckDocumentNames(
        mine.documents, context.documents, context.transforms,
        context.source.postgres != nullptr ? &context.source.postgres->tables : nullptr);
  }
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
  if (!options_->documents.names.empty()) return OpenDocuments();
  // Rebuilds a stop or a crash cut short go on (and their changes go to the new index).
  return FindRebuilds();
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

absl::Status OpenSearchSink::OnBegin(const TxnInfo& txn) {
  // (A flush may come within the transaction: what it renders holds what came before.)
  if (feed_ != nullptr) document_version_ = std::max(document_version_, txn.commit_lsn);
  txn_.clear();
  txn_slot_.clear();
  return absl::OkStatus();
}

absl::Status OpenSearchSink::OnChange(const Change& change, bool in_txn) {
  if (feed_ != nullptr) return OnDocumentChange(change);
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

absl::Status OpenSearchSink::OnCommit(const TxnInfo& txn) {
  if (feed_ != nullptr) {
    document_version_ = std::max(document_version_, txn.commit_lsn);
    return feed_->noted() >= static_cast<size_t>(options_->batch_docs) ? RenderDocuments()
                                                                       : absl::OkStatus();
  }
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

absl::Status OpenSearchSink::Flush() {
  if (feed_ != nullptr) {
    if (absl::Status s = RenderDocuments(); !s.ok()) return s;
    return SendAll();
  }
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
