#pragma once

// The documents a stream's changes touch (issue 51): each changed row of a table a document
// reads finds the documents it is in, by its values before and after the change (a line moved
// from one order to another is in both, a customer in every order naming it), and Render
// renders them all from the source, a batch of roots a statement (DocumentSql::render), so that
// no document mixes two states of the database.
//
// A row's old values count when the change carries them: a delete's or an update's old key,
// or the whole old row under REPLICA IDENTITY FULL. A child whose join columns are not in its
// key needs REPLICA IDENTITY FULL for the documents a row leaves to be found (CheckDocuments,
// documents/document_catalog.h, refuses it without).
//
// Thread-compatible: one per sink thread.

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include "absl/status/statusor.h"
#include "documents/document_sql.h"
#include "engine/change.h"

namespace pgflow::documents {

// JSON texts as PostgreSQL wrote them (numbers keep every digit).
struct RenderedDocument {
  std::string key;                      // the root's key columns, as their types read them
  std::optional<std::string> document;  // nullopt: the root is gone (delete its document)
  std::string id;                       // the key as the document's id (DocumentSql::render)
};

class DocumentRenderer {
 public:
  explicit DocumentRenderer(const DocumentSql* sql) : sql_(sql) {}

  // Notes a row change (read, insert, update, delete); changes of tables the document does not
  // read, and other operations, are passed over. Returns whether it was taken: a row change
  // of a table the document reads (whether or not the row joins any document).
  bool Note(const Change& change);
  // Every document, and those noted (a TRUNCATE of a child's table touches them all; a root
  // noted and gone since is still to be deleted).
  void NoteEveryRoot() { every_root_ = true; }
  // The roots noted directly (a root's own row changed), handed to another renderer of the
  // same document (its queries rebuilt after a schema change): whatever else was noted, every
  // root renders there anyway, but a root gone is only found here.
  std::set<std::string> TakeRoots() { return std::exchange(roots_, {}); }
  void NoteRoots(std::set<std::string> roots) { roots_.merge(roots); }
  bool empty() const { return roots_.empty() && lookups_.empty() && !every_root_; }
  // How many roots and lookup values are noted (a bound on what waits for Render).
  size_t noted() const { return roots_.size() + looked_up_; }

  // Renders every document noted on `conn` (the source) and forgets them: first the roots the
  // noted rows find through queries, then each root once, `batch` to a statement, each handed
  // to `emit` (whose error stops the rendering). Every root, after NoteEveryRoot, is read
  // through a cursor `batch` at a time (in a transaction of its own on `conn`). What was noted
  // is forgotten whether or not the render succeeds: after an error the caller goes back to
  // changes it has not acknowledged, and notes them again.
  using Emit = std::function<absl::Status(RenderedDocument)>;
  absl::Status Render(PGconn* conn, size_t batch, const Emit& emit);
  // The same, into a vector.
  absl::StatusOr<std::vector<RenderedDocument>> Render(PGconn* conn, size_t batch = 1000);

 private:
  void NoteRow(const TableSchema& table, const Row& row,
               const std::vector<DocumentSql::Place>& places);

  const DocumentSql* sql_;
  std::set<std::string> roots_;  // JSON objects of a root's key columns
  // By place: JSON objects of the values its roots query matches.
  std::map<const DocumentSql::Place*, std::set<std::string>> lookups_;
  size_t looked_up_ = 0;  // values in lookups_
  bool every_root_ = false;
};

}  // namespace pgflow::documents
