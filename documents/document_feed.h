#pragma once

// The joined documents one sink writes (issue 51): the sink names them (`documents: [orders]`)
// among the pipeline's `documents:`, and the feed turns the stream's changes into rendered
// documents for it.
//
// - Open reads each document's tables from the source's catalog and builds its queries
//   (documents/document_sql.h); a schema change to one of its tables has them built again
//   before the next render (Stale).
// - Take takes every change: a row of a table a document reads notes the documents it is in.
//   Of the initial snapshot's rows, only the root table's count: the snapshot renders each
//   document from its root's row, so its children's rows would render it again for nothing.
//   The sink handles a TRUNCATE of a table a document reads itself (Truncates), as it removes
//   documents its own way.
// - Render renders what was noted, from the source, on a connection of its own, and hands out
//   each document with the document it belongs to. It first waits until every transaction
//   noted is visible to a new snapshot there: a commit reaches the replication stream before
//   the server shows it to others (a synchronous standby's round trip before, on a primary
//   that waits for one). A document is then rendered with the changes that touched it, and
//   perhaps later ones, which render it again when they arrive: written under the last
//   commit's LSN as its version, the last write of every document is its state at the end.
//
// Thread-compatible: one per sink thread.

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/postgres/pg_connection.h"
#include "documents/document_renderer.h"
#include "documents/document_spec.h"
#include "documents/document_sql.h"
#include "documents/document_transforms.h"
#include "engine/change.h"
#include "engine/config_node.h"
#include "engine/registry.h"

namespace pgflow::documents {

// A sink's `documents: [name, ...]` option: the names, and where they were written.
struct DocumentNames {
  std::vector<std::string> names;
  std::optional<ConfigNode> node;
};
// Reads the option (a CustomOption's parser): a list of distinct names.
absl::Status ReadDocumentNames(const ConfigNode& node, DocumentNames* out);
// Whether the pipeline's `documents:` (`described`, absent when the file has none) reads and
// describes every name of `names`, for a sink after `transforms` (of the types documents take:
// documents/document_transforms.h), each of their tables among `followed` (the source's
// `tables:` patterns; null: not checked). Pure: no catalog.
absl::Status CheckDocumentNames(const DocumentNames& names,
                                const std::optional<ConfigNode>& described,
                                const std::vector<TransformConfig>& transforms,
                                const std::vector<TableRef>* followed);

class DocumentFeed {
 public:
  struct Document {
    DocumentSpec spec;
    std::unique_ptr<DocumentSql> sql;  // (the renderer points at it)
    std::unique_ptr<DocumentRenderer> renderer;
    std::unique_ptr<DocumentTransforms> transforms;  // (over the feed's chain)
  };

  // Reads the descriptions of `names` and each document's tables from the catalog of the
  // source at `source_url`. `who` starts the messages ("sink search (opensearch)").
  // `transforms` (the pipeline's, then the sink's) apply to every level of the documents
  // (documents/document_transforms.h).
  static absl::StatusOr<std::unique_ptr<DocumentFeed>> Open(
      const std::optional<ConfigNode>& described, const std::vector<std::string>& names,
      const std::string& source_url, std::string who,
      const std::vector<TransformConfig>& transforms, const std::string& pipeline);

  const std::vector<Document>& documents() const { return documents_; }
  // Whether a document reads `table` ("public.orders").
  bool Reads(const std::string& table) const;

  // Takes a change of the stream (`in_txn`: within a transaction; the initial snapshot's rows
  // come outside any, a backfill's inside one). A schema change to a table a document reads
  // has the documents' queries built again once it is visible; a row of one notes the
  // documents it is in; a TRUNCATE of one, once the sink has handled it (Truncates), has every
  // document reading the table rendered again once it is visible.
  void Take(const Change& change, bool in_txn);
  // Whether `change` is a TRUNCATE of a table a document reads. The sink then renders what was
  // noted, removes the documents rooted in the table (RootedIn), and calls Take.
  bool Truncates(const Change& change) const;
  std::vector<const Document*> RootedIn(const std::string& table) const;
  size_t noted() const;

  // Renders every document noted, `batch` roots to a statement, each handed to `emit` (on the
  // calling thread; the rendering runs on another, a few batches ahead).
  using Emit = std::function<absl::Status(const Document&, RenderedDocument)>;
  absl::Status Render(size_t batch, const Emit& emit);

 private:
  // Notes a change; `snapshotting`: the initial snapshot is under way.
  void Note(const Change& change, bool snapshotting);
  // Every document of each document reading `table` is touched (a TRUNCATE of a child's
  // table).
  void NoteEveryRootReading(const std::string& table);
  // A schema change to `table`: the queries of the documents reading it are built again.
  void Stale(const std::string& table);
  // The next render waits until transaction `xid` is visible.
  void NoteTransaction(uint32_t xid) {
    if (xid != 0) xids_.insert(xid);
  }

  DocumentFeed(std::string url, std::string who) : url_(std::move(url)), who_(std::move(who)) {}
  absl::Status Connect();
  // Waits (a minute at most) until every transaction in xids_ is visible to a new snapshot.
  absl::Status AwaitVisible();
  // Builds the queries of `document` from the catalog as it is now.
  absl::Status Build(Document& document);

  const std::string url_;
  const std::string who_;
  PgConnPtr conn_;
  std::vector<Document> documents_;
  std::vector<bool> stale_;  // by document
  std::set<uint32_t> xids_;  // the transactions noted since the last render
  TransformChain chain_;     // the sink's transforms, on the rendered documents
};

}  // namespace pgflow::documents
