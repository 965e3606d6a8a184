// Joined documents (`documents: [orders]`, documents/document_feed.h): each document an index of
// its own, written from renders of the source rather than from the changes' rows.
//
// - A change to a table a document reads notes the documents it touches; they are rendered when
//   a flush is due (or once batch_docs are noted) and written with the last commit LSN seen as
//   their external version (external_gte): a render is made after those commits, so it holds
//   them, and the last write of each document is its state at the end. A root that is gone
//   deletes its document.
// - The initial snapshot renders each document from its root's row (its children's rows pass).
// - TRUNCATE of a root's table deletes every document of its index (as for a table's own);
//   of a child's table, renders every document again. A schema change to one of the tables
//   rebuilds the document's queries from the catalog and renders every document again.
// - Indexes are created when missing, for the initial load as a table's are (fast_load:
//   refresh off and no replicas until the snapshot is in), with the fields of `properties`
//   mapped; the rest is the cluster's dynamic mapping.

#include <nlohmann/json.hpp>

#include "absl/strings/str_replace.h"
#include "common/postgres/postgres_origin.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "schemas/json_text.h"
#include "sinks/opensearch/opensearch_sink.h"

namespace pgflow {

using nlohmann::json;

absl::Status OpenSearchSink::OpenDocuments() {
  const std::string who = Cat("sink ", context_.sink, " (opensearch)");
  if (context_.source.postgres == nullptr) {
    return absl::FailedPreconditionError(
        Cat(who, ": documents are rendered from a PostgreSQL source, and this pipeline's is ",
            context_.source.type));
  }
  absl::StatusOr<std::unique_ptr<documents::DocumentFeed>> feed = documents::DocumentFeed::Open(
      context_.documents, options_->documents.names, context_.source.postgres->url, who,
      context_.transforms, context_.pipeline);
  if (!feed.ok()) return feed.status();
  feed_ = *std::move(feed);
  std::map<std::string, std::string> by_index;
  for (const documents::DocumentFeed::Document& document : feed_->documents()) {
    const TableRef& root = document.spec.root.table;
    absl::StatusOr<std::string> index = IndexFor(
        absl::StrReplaceAll(options_->index, {{"{document}", document.spec.name},
                                              {"{schema}", root.schema},
                                              {"{table}", root.table}}),
        root.schema, root.table);
    if (!index.ok()) return index.status();
    if (auto [it, fresh] = by_index.emplace(*index, document.spec.name); !fresh) {
      return absl::FailedPreconditionError(
          Cat(who, ": documents ", it->second, " and ", document.spec.name,
              " both go to index ", *index,
              ", where their ids would collide: give each its own (index: \"{document}\")"));
    }
    document_index_[document.spec.name] = *index;
    absl::StatusOr<HttpResponse> res = http_->Request("GET", Cat("/", *index, "/_mapping"));
    if (!res.ok()) return res.status();
    if (res->status == 200) {
      // Created for a load a stop or a crash cut short: finished with the snapshot, or at the
      // first change streamed.
      const json mapping = json::parse(res->body, nullptr, false);
      if (mapping.is_object() && !mapping.empty() && mapping.begin()->contains("mappings") &&
          LoadMark((*mapping.begin())["mappings"]).value_or(false)) {
        loading_.insert(*index);
      }
      continue;
    }
    // Created for the initial load (fast_load: refresh off, no replicas until it is in), with
    // `properties` mapped.
    json properties = json::object();
    for (const auto& [field, mapping] : options_->properties) {
      properties[field] = json::parse(mapping);
    }
    const json body = NewIndexBody(std::move(properties), json::object(), options_->fast_load);
    res = http_->Request("PUT", Cat("/", *index), body.dump());
    if (!res.ok()) return res.status();
    // (400 resource_already_exists: another writer made it first.)
    if (res->status / 100 != 2 && res->body.find("resource_already_exists") == std::string::npos) {
      return absl::UnavailableError(Cat(who, ": creating index ", *index, " for document ",
                                        document.spec.name, ": HTTP ", res->status, ": ",
                                        res->body.substr(0, 300)));
    }
    if (options_->fast_load) loading_.insert(*index);
    LogInfo("%s: created index %s for document %s%s", who, *index, document.spec.name,
            options_->fast_load ? ", refresh off and no replicas for the initial load" : "");
  }
  return absl::OkStatus();
}

absl::Status OpenSearchSink::OnDocumentChange(const Change& change) {
  if (in_txn() && !loading_.empty()) {
    // A change streamed: the load is over (this run's snapshot, or an earlier run's that
    // stopped before it said so), and the indexes get their refresh interval and replicas.
    if (absl::Status s = OnSnapshotDone(); !s.ok()) return s;
  }
  document_version_ = std::max(document_version_, change.txn.commit_lsn);
  if (feed_->Truncates(change)) {
    // Every document rooted in the table goes, under the TRUNCATE's version; every document
    // reading it elsewhere is rendered again. What was noted before goes first.
    if (absl::Status s = RenderDocuments(); !s.ok()) return s;
    if (absl::Status s = SendAll(); !s.ok()) return s;
    const std::string table = change.table->QualifiedName();
    for (const documents::DocumentFeed::Document* document : feed_->RootedIn(table)) {
      absl::Status s = DeleteDocuments(document_index_.at(document->spec.name), table,
                                       change.txn.commit_lsn, Cat("TRUNCATE ", table));
      if (!s.ok()) return s;
    }
    feed_->Take(change, in_txn());
    return absl::OkStatus();
  }
  feed_->Take(change, in_txn());
  return feed_->noted() >= static_cast<size_t>(options_->batch_docs) ? RenderDocuments()
                                                                     : absl::OkStatus();
}

absl::Status OpenSearchSink::RenderDocuments() {
  return feed_->Render(
      static_cast<size_t>(options_->batch_docs),
      [this](const documents::DocumentFeed::Document& document,
             documents::RenderedDocument rendered) {
        Action action;
        action.index = document_index_.at(document.spec.name);
        action.id = DocumentId(std::move(rendered.id));
        action.is_delete = !rendered.document.has_value();
        std::string& out = action.lines;
        out += action.is_delete ? "{\"delete\":{\"_index\":" : "{\"index\":{\"_index\":";
        AppendJsonString(action.index, &out);
        out += ",\"_id\":";
        AppendJsonString(action.id, &out);
        out += Cat(",\"version\":", document_version_.value,
                   ",\"version_type\":\"external_gte\"}}\n");
        if (!action.is_delete) out += *rendered.document + "\n";
        return AddDocument(std::move(action));
      });
}

absl::Status OpenSearchSink::AddDocument(Action action) {
  if (pending_.empty()) pending_document_.clear();
  const std::string slot = Cat(action.index, std::string(1, '\0'), action.id);
  auto it = pending_document_.find(slot);
  if (it != pending_document_.end() && it->second < pending_.size() &&
      pending_[it->second].index == action.index && pending_[it->second].id == action.id) {
    pending_bytes_ += action.lines.size();
    pending_bytes_ -= pending_[it->second].lines.size();
    pending_[it->second] = std::move(action);
    return absl::OkStatus();
  }
  pending_document_[slot] = pending_.size();
  const bool sends = pending_bytes_ + action.lines.size() >= options_->batch_bytes ||
                     pending_.size() + 1 >= static_cast<size_t>(options_->batch_docs);
  absl::Status s = Add(std::move(action));
  if (sends) pending_document_.clear();  // (sent)
  return s;
}

}  // namespace pgflow
