#pragma once

// Joined documents in the kv cache (`documents: [orders]`, documents/document_feed.h): a kv
// sink that names documents holds them instead of tables' rows, each document as a cached
// table of its own, named after it, one row per root:
//
//   redis-cli GET orders:42            the whole document, as JSON
//   redis-cli HGET orders:42 lines     one field: a child's array (or object) as JSON
//   curl localhost:8080/orders/42
//
// A document's row has the root's key columns first (always kept, as a table's), then each of
// the root's fields and each child, in the order the description gives them; a field's value
// is its JSON as PostgreSQL rendered it (numbers keep their digits), a child's its array or
// object. Keys are the root's key as a table's row has it ("42", "7:2026-01-01").
//
// Changes to any table a document reads note the documents they touch (both old and new join
// values); the noted documents are rendered from the source, on a connection of their own,
// when 4,096 are noted, at a chunk's end, at the snapshot's end and at each flush
// (flush_interval), and applied to the store as one batch: readers see every document of a
// render at once. Until then the cache's applied LSN (WAITLSN, min_lsn) stays behind the
// transactions noted, so read-your-writes waits for their documents. A root gone deletes its
// document; TRUNCATE of a root's table empties the document's table, of a child's renders
// every document again; a schema change to one of the tables rebuilds its queries.
//
// Thread-compatible: the sink's thread.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "documents/document_feed.h"
#include "engine/change.h"
#include "engine/config_node.h"
#include "engine/lsn.h"
#include "sinks/kv/kv_store.h"

namespace pgflow {

class KvDocuments {
 public:
  struct Setup {
    std::optional<ConfigNode> described;  // the pipeline's `documents:`
    std::vector<std::string> names;       // the sink's `documents: [...]`
    std::string source_url;
    std::string who;  // "sink cache (kv)"
    std::vector<TransformConfig> transforms;  // the pipeline's, then the sink's
    std::string pipeline;
  };
  // Opens the feed (the catalog of the source is read now) and makes each document's shape.
  static absl::StatusOr<std::unique_ptr<KvDocuments>> Open(const Setup& setup);

  // Takes one change of the stream (or a snapshot row, `in_txn` false); renders into `store`
  // when enough documents are noted.
  absl::Status OnChange(const Change& change, bool in_txn, KvStore* store);
  // The version the documents rendered next carry: the last commit seen.
  void NoteCommit(Lsn commit_lsn) { version_ = std::max(version_, commit_lsn); }
  size_t noted() const { return feed_->noted(); }
  // Renders every document noted and applies it to `store` (applied() unchanged: the caller
  // commits the transaction's end once nothing it noted waits).
  absl::Status Render(KvStore* store);

 private:
  explicit KvDocuments(std::unique_ptr<documents::DocumentFeed> feed) : feed_(std::move(feed)) {}
  // The change that puts `rendered` (or its absence) into the store.
  absl::StatusOr<Change> ChangeFor(const std::string& document,
                                   const documents::RenderedDocument& rendered);

  std::unique_ptr<documents::DocumentFeed> feed_;
  std::map<std::string, TableSchemaPtr> shapes_;  // by document name
  Lsn version_;
};

}  // namespace pgflow
