#pragma once

// The SQL of a joined document (documents/document_spec.h), checked against the source's
// catalog: the query that renders the documents of given roots, and, for each place a table
// fills in a document, how a changed row of it finds the documents it is in.
//
// Rendering is one statement, so a document never mixes two states of the database: the
// root's fields, each child an object (`one`) or an array ordered by its table's key, built by
// PostgreSQL's jsonb functions (a value is as to_jsonb writes it: numbers as numbers, times as
// ISO 8601 text, json as json).

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "documents/document_spec.h"
#include "schemas/table_schema.h"

namespace pgflow::documents {

// What the catalog says of one table.
struct TableColumns {
  std::vector<std::string> key;                // its primary key's columns, in order
  std::map<std::string, std::string> types;    // every column, to its type (format_type)
  // Every column in the table's order, as change events describe it (OIDs, non-built-in
  // types' names, the key marked): what transforms see of a row rendered into a document.
  std::vector<Column> columns;
};
// By TableRef::ToString() ("public.orders").
using Catalog = std::map<std::string, TableColumns>;

class DocumentSql {
 public:
  // Checks the document against the catalog (every table there, every field and join column
  // a column of its table, the root and every array child with a primary key) and builds its
  // queries. The errors name the document's path and what is missing.
  // The rows of the tables in `whole` (those transforms touch) are rendered whole beside their
  // object: [object, to_jsonb(row)] (documents/document_transforms.h reads them).
  static absl::StatusOr<DocumentSql> Make(const DocumentSpec& spec, const Catalog& catalog,
                                          const std::set<std::string>& whole = {});

  // Renders the documents of the roots in $1, a JSON array of objects holding each root's key
  // columns ({"id": "7"}: values as text or JSON numbers). A row for each with every key
  // column: `key` (jsonb: the key's columns as an object, as their types read them),
  // `document` (jsonb; null when the root does not exist) and `id` (text: one key column's
  // JSON value, a string's without its quotes; several as a JSON array).
  const std::string& render() const { return render_; }
  // Every root's key (as render() reads it back, a column `key`), in the order of the key.
  const std::string& every_root() const { return every_root_; }
  const std::vector<std::string>& root_key() const { return root_key_; }
  // Their types, as format_type names them ("integer", "text").
  const std::vector<std::string>& root_key_types() const { return root_key_types_; }

  // A place where a table's rows fill a document, and how a row of it finds the documents.
  struct Place {
    std::string path;  // the node's path in the file ("documents.orders.children.lines")
    // The row's columns that select the documents, each with the name it has in the roots
    // query's $1 objects (the root's key column for a direct place).
    std::vector<std::pair<std::string, std::string>> match;
    // Empty when the matched values are the root's key themselves (the root table, or a child
    // joined on the root's whole key): {name: value} is then the key. Else a query: $1 a JSON
    // array of objects {name: value}; rows: `key` (jsonb), each root once.
    std::string roots;
  };
  // Every place `table` has in the document (a table may fill several).
  const std::vector<Place>& PlacesOf(const std::string& table) const;

 private:
  std::string render_;
  std::string every_root_;
  std::vector<std::string> root_key_;
  std::vector<std::string> root_key_types_;
  std::map<std::string, std::vector<Place>> places_;
};

}  // namespace pgflow::documents
