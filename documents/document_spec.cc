#include "documents/document_spec.h"

#include <algorithm>
#include <array>
#include <set>
#include <string_view>

#include "engine/str_cat.h"

namespace pgflow::documents {
namespace {

constexpr std::array<std::string_view, 3> kRootKeys = {"table", "fields", "children"};
constexpr std::array<std::string_view, 5> kChildKeys = {"table", "fields", "children", "on",
                                                        "one"};

// Notes `error` with the active collector (kept: OK), or returns it.
absl::Status Note(absl::Status error) { return ConfigErrors::Note(std::move(error)); }

absl::Status ParseNode(const ConfigNode& node, int depth, DocumentNode* out);

DocumentNode NewNode(std::string name, std::string path) {
  DocumentNode node;
  node.name = std::move(name);
  node.path = std::move(path);
  return node;
}

absl::Status ParseChildren(const ConfigNode& node, int depth, DocumentNode* parent) {
  if (!node.IsMap()) {
    return node.Error(Cat("expected a mapping of child names to children, got ",
                          node.KindName()));
  }
  if (depth + 1 > kMaxDepth) {
    return node.Error(Cat("children nest at most ", kMaxDepth, " levels deep"));
  }
  for (const auto& [name, value] : node.Entries()) {
    DocumentNode child = NewNode(name, value.path());
    if (std::find(parent->fields.begin(), parent->fields.end(), name) != parent->fields.end()) {
      if (absl::Status s = Note(node.KeyNode(name)->Error(
              Cat("'", name, "' is a field of ", parent->table.ToString(),
                  " too: a child needs a name of its own")));
          !s.ok()) {
        return s;
      }
      continue;
    }
    if (absl::Status s = ParseNode(value, depth + 1, &child); !s.ok()) {
      if (absl::Status kept = Note(s); !kept.ok()) return kept;
      continue;
    }
    parent->children.push_back(std::move(child));
  }
  return absl::OkStatus();
}

absl::Status ParseOn(const ConfigNode& node, DocumentNode* out) {
  if (!node.IsMap() || node.Entries().empty()) {
    return node.Error(Cat("expected a mapping of this table's columns to its parent's, as {",
                          "order_id: id}, got ", node.KindName()));
  }
  for (const auto& [column, parent_column] : node.Entries()) {
    absl::StatusOr<std::string> parent = parent_column.AsString();
    if (!parent.ok()) return parent.status();
    if (column.empty() || parent->empty()) return parent_column.Error("a column name is empty");
    out->on.emplace_back(column, *parent);
  }
  return absl::OkStatus();
}

absl::Status ParseNode(const ConfigNode& node, int depth, DocumentNode* out) {
  const bool root = depth == 0;
  if (!node.IsMap()) {
    return node.Error(Cat("expected a mapping with ", root ? "table, fields" : "table, on, fields",
                          ", got ", node.KindName()));
  }
  const std::span<const std::string_view> allowed =
      root ? std::span<const std::string_view>(kRootKeys)
           : std::span<const std::string_view>(kChildKeys);
  for (const auto& [key, value] : node.Entries()) {
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string message = Cat("unknown key '", key, "' ", DidYouMean(key, allowed, "expected one of"));
    if (root && key == "on") message = "the root table joins nothing: 'on' is a child's key";
    if (root && key == "one") message = "the root table is one row per document: 'one' is a child's key";
    if (absl::Status s = Note(node.KeyNode(key)->Error(message)); !s.ok()) return s;
  }
  std::optional<ConfigNode> table = node.Get("table");
  if (!table.has_value()) return node.Error("missing 'table' (schema.table)");
  absl::StatusOr<std::string> table_text = table->AsString();
  if (!table_text.ok()) return table_text.status();
  absl::StatusOr<TableRef> ref = ParseTableRef(*table_text);
  if (!ref.ok()) return table->Error(Sv(ref.status().message()));
  if (ref->is_schema()) return table->Error("a document's level is one table, not a schema");
  out->table = *ref;

  std::optional<ConfigNode> fields = node.Get("fields");
  if (!fields.has_value()) {
    return node.Error("missing 'fields': the columns this table gives the document");
  }
  absl::StatusOr<std::vector<std::string>> names = fields->AsStringList();
  if (!names.ok()) return names.status();
  std::set<std::string> seen;
  for (const std::string& name : *names) {
    if (name.empty()) return fields->Error("a field name is empty");
    if (!seen.insert(name).second) return fields->Error(Cat("'", name, "' is listed twice"));
  }
  if (names->empty()) return fields->Error("list at least one column");
  out->fields = *std::move(names);

  if (!root) {
    std::optional<ConfigNode> on = node.Get("on");
    if (!on.has_value()) {
      return node.Error(Cat("missing 'on': how ", out->table.ToString(),
                            "'s rows join their parent's, as {order_id: id}"));
    }
    if (absl::Status s = ParseOn(*on, out); !s.ok()) return s;
    if (std::optional<ConfigNode> one = node.Get("one"); one.has_value()) {
      absl::StatusOr<bool> value = one->AsBool();
      if (!value.ok()) return value.status();
      out->one = *value;
    }
  }
  if (std::optional<ConfigNode> children = node.Get("children"); children.has_value()) {
    if (absl::Status s = ParseChildren(*children, depth, out); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void CollectTables(const DocumentNode& node, std::vector<TableRef>* out) {
  if (std::find(out->begin(), out->end(), node.table) == out->end()) out->push_back(node.table);
  for (const DocumentNode& child : node.children) CollectTables(child, out);
}

}  // namespace

std::vector<TableRef> DocumentSpec::Tables() const {
  std::vector<TableRef> tables;
  CollectTables(root, &tables);
  return tables;
}

absl::StatusOr<std::map<std::string, DocumentSpec>> ParseDocuments(const ConfigNode& node) {
  if (!node.IsMap()) {
    return node.Error(Cat("expected a mapping of document names to documents, got ",
                          node.KindName()));
  }
  ConfigErrors errors;
  std::map<std::string, DocumentSpec> documents;
  for (const auto& [name, value] : node.Entries()) {
    if (absl::Status s = CheckPlainName(name, 63, "document name"); !s.ok()) {
      (void)Note(node.KeyNode(name)->Error(Sv(s.message())));
      continue;
    }
    DocumentSpec spec{.name = name, .root = NewNode("", value.path())};
    if (absl::Status s = ParseNode(value, 0, &spec.root); !s.ok()) {
      (void)Note(s);
      continue;
    }
    documents.emplace(name, std::move(spec));
  }
  if (absl::Status s = errors.Finish(); !s.ok()) return s;
  if (documents.empty()) return node.Error("describe at least one document");
  return documents;
}

}  // namespace pgflow::documents
