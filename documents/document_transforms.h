#pragma once

// A sink's transforms (the pipeline's, then its own) on the documents it writes: a `mask`,
// `filter` or `set` that names a table applies to that table's rows at every level of every
// document, as it applies to the table's change events:
//
// - mask and set rewrite the row's values; a field they change is written as pgflow writes
//   that type in JSON (schemas/json_encoding.h, numerics as numbers, as to_jsonb has them),
//   the others stay as PostgreSQL rendered them; a column `set` adds joins the row's fields.
// - filter drops the row: a root's document is deleted (or never written), a child leaves its
//   array, a `one` child becomes null.
//
// The transforms see each row whole, as a change event of its table has it (every column,
// with its type), however few of its columns the document takes: the render puts the row's
// to_jsonb beside the object of every table a transform touches (DocumentSql::Make, `whole`).
// A row reaches them as a snapshot row does (op `read`); a filter that takes some operations
// only (`op`) is refused (CheckTransformTypes): it would leave rendered rows out, and drop
// changes by which documents are found.
//
// A document's rows are found by its join columns and its root's key, read from the change
// events the sink receives, after the transforms: a transform that changes one of those columns
// would have the wrong documents rendered, and is refused (Make), naming the column. Other
// transform types (rename, columns, cast, route, lua) reshape or multiply events and are
// refused for a sink with documents (CheckTypes).
//
// Thread-compatible.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "documents/document_spec.h"
#include "documents/document_sql.h"
#include "engine/registry.h"
#include "engine/transform.h"

namespace pgflow::documents {

// Whether every transform of `transforms` is of a type documents take (mask, filter, set);
// the error names the first that is not, with `node` (the sink's `documents:`) for the place.
absl::Status CheckTransformTypes(const std::vector<TransformConfig>& transforms,
                                 const ConfigNode& node);

class DocumentTransforms {
 public:
  // The transforms of `chain` (which must outlive this) on `spec`'s levels, with the types of
  // `catalog`. Refuses a transform that changes a join column or the root's key.
  static absl::StatusOr<DocumentTransforms> Make(const DocumentSpec& spec, const Catalog& catalog,
                                                 TransformChain* chain);

  // The tables whose rows are rendered whole (every table a transform touches).
  const std::set<std::string>& whole() const { return whole_; }
  bool empty() const { return whole_.empty(); }

  // `document` (as the render made it, with whole() rows) with the transforms applied at every
  // level; nullopt when they drop the root's row.
  absl::StatusOr<std::optional<std::string>> Apply(std::string_view document) const;

 private:
  DocumentTransforms(DocumentSpec spec, TransformChain* chain)
      : spec_(std::move(spec)), chain_(chain) {}
  // Appends the transformed object of `node`'s row, `value` as rendered; *kept false (and
  // nothing appended) when a filter drops it.
  absl::Status Level(const DocumentNode& node, std::string_view value, bool* kept,
                     std::string* out) const;

  DocumentSpec spec_;
  TransformChain* chain_;
  std::set<std::string> whole_;
  std::map<std::string, TableSchemaPtr> schemas_;  // by table, the ones in whole_
};

}  // namespace pgflow::documents
