#pragma once

// Search documents joined from related tables (issue 51): a pipeline file's top-level
// `documents:` describes each document as a root table with the fields it takes, and children
// joined to it, each a table with its fields and children of its own:
//
//   documents:
//     orders:
//       table: public.orders
//       fields: [id, placed_at, status]
//       children:
//         customer: {table: public.customers, on: {id: customer_id}, one: true, fields: [name]}
//         lines:    {table: public.order_lines, on: {order_id: id}, fields: [sku, qty],
//                    children: {product: {table: public.products, on: {id: sku}, one: true,
//                                         fields: [title]}}}
//
// A child's `on` pairs each of its own columns with a column of its parent's table (the
// customer's `id` equals the order's `customer_id`); `one: true` makes it an object (null when
// no row joins), else an array of every row that joins, in the order of its table's key. The
// document's id is its root row's key. Column names are written as the database has them (no
// case folding). This file reads and checks the description alone; the catalog is
// DocumentSql's to check (documents/document_sql.h).

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/table_ref.h"
#include "engine/config_node.h"

namespace pgflow::documents {

// How deep children may nest (a bound on the queries a change costs).
inline constexpr int kMaxDepth = 8;

// One level of a document: a table, the fields it contributes, and its children.
struct DocumentNode {
  std::string name;  // the field it fills in its parent's object ("" for the root)
  TableRef table;
  std::vector<std::string> fields;
  // Its rows join its parent's: each pair (its column, the parent's column) equal.
  std::vector<std::pair<std::string, std::string>> on;
  bool one = false;  // at most one row: an object or null (else an array)
  std::vector<DocumentNode> children;
  // Where it was described, "documents.orders.children.lines", for messages.
  std::string path;
};

struct DocumentSpec {
  std::string name;
  DocumentNode root;

  // Every table the document reads, each once, in the order they appear.
  std::vector<TableRef> Tables() const;
};

// Reads the `documents:` mapping. Errors name the file, line and path ("documents.orders.
// children.lines.on: ..."), and every problem found is reported, not only the first.
absl::StatusOr<std::map<std::string, DocumentSpec>> ParseDocuments(const ConfigNode& node);

}  // namespace pgflow::documents
