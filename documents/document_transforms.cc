#include "documents/document_transforms.h"

#include <algorithm>
#include <vector>

#include "engine/str_cat.h"
#include "schemas/json_decoding.h"
#include "schemas/json_encoding.h"
#include "schemas/json_text.h"
#include "transformers/filter.h"

namespace pgflow::documents {

namespace {

// The transform types that keep one event one event of the same table and columns' names.
constexpr std::string_view kTaken[] = {"mask", "filter", "set"};

// Every node of the tree under `node`, itself first.
void Walk(const DocumentNode& node, std::vector<const DocumentNode*>* out) {
  out->push_back(&node);
  for (const DocumentNode& child : node.children) Walk(child, out);
}

// The columns of `node`'s table by which a change of one of its rows finds its documents: the
// columns it joins its parent on, those its children join, and for the root its key.
std::vector<std::string> FindingColumns(const DocumentNode& node, const TableColumns& table,
                                        bool root) {
  std::vector<std::string> columns;
  if (root) columns = table.key;
  for (const auto& [mine, theirs] : node.on) columns.push_back(mine);
  for (const DocumentNode& child : node.children) {
    for (const auto& [mine, theirs] : child.on) columns.push_back(theirs);
  }
  return columns;
}

}  // namespace

absl::Status CheckTransformTypes(const std::vector<TransformConfig>& transforms,
                                 const ConfigNode& documents) {
  for (const TransformConfig& transform : transforms) {
    // (Placed at the transform, and said of the sink's documents.)
    const ConfigNode& node = transform.node.has_value() ? *transform.node : documents;
    const std::string what = transform.node.has_value() ? "" : transform.where + ": ";
    if (const auto* filter = dynamic_cast<const FilterOptions*>(transform.options.get());
        filter != nullptr && !filter->selection.op.empty()) {
      // (It would drop some of the changes that find documents, and every rendered row, which
      // reaches it as a snapshot row does.)
      return node.Error(Cat(what, "a filter with `op`, which ", documents.path(),
                            " does not take: documents take filters on rows only (rendered "
                            "rows are no operation, and it would drop changes by which "
                            "documents are found)"));
    }
    if (std::find(std::begin(kTaken), std::end(kTaken), transform.type) != std::end(kTaken)) {
      continue;
    }
    return node.Error(Cat(
        what, "a ", transform.type, " transform, which ", documents.path(), " does not take: "
        "documents take mask, filter and set only (their rows are rendered from the source, "
        "each level as its table's rows; a transform that renames, drops, routes or "
        "multiplies events has no place there)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DocumentTransforms> DocumentTransforms::Make(const DocumentSpec& spec,
                                                            const Catalog& catalog,
                                                            TransformChain* chain) {
  DocumentTransforms out(spec, chain);
  std::vector<const DocumentNode*> nodes;
  Walk(out.spec_.root, &nodes);
  for (const DocumentNode* node : nodes) {
    const std::string name = node->table.ToString();
    auto found = catalog.find(name);
    if (found == catalog.end()) continue;  // (DocumentSql::Make names what is missing)
    auto schema = std::make_shared<TableSchema>();
    schema->schema = node->table.schema;
    schema->name = node->table.table;
    schema->columns = found->second.columns;
    for (const std::string& column : FindingColumns(*node, found->second, node == nodes[0])) {
      if (chain->Changes(*schema, column)) {
        return absl::FailedPreconditionError(
            Cat(node->path, ": a transform changes ", name, ".", column,
                ", by which the documents a change of it is in are found: leave that column "
                "to the transforms of another sink, or mask it in a field of its own"));
      }
    }
    if (chain->Touches(*schema)) {
      out.whole_.insert(name);
      out.schemas_.emplace(name, std::move(schema));
    }
  }
  return out;
}

absl::StatusOr<std::optional<std::string>> DocumentTransforms::Apply(
    std::string_view document) const {
  std::string out;
  out.reserve(document.size());
  bool kept = true;
  if (absl::Status s = Level(spec_.root, document, &kept, &out); !s.ok()) return s;
  if (!kept) return std::nullopt;
  return out;
}

absl::Status DocumentTransforms::Level(const DocumentNode& node, std::string_view value,
                                       bool* kept, std::string* out) const {
  *kept = true;
  std::string_view object = value;
  std::vector<JsonMember> members;
  std::string fields;  // the fields' "name":value pairs, comma-separated
  auto add = [&](std::string_view name, std::string_view json) {
    if (!fields.empty()) fields.push_back(',');
    AppendJsonString(name, &fields);
    fields.push_back(':');
    fields.append(json);
  };
  auto whole = schemas_.find(node.table.ToString());
  if (whole == schemas_.end()) {
    if (absl::Status s = ReadJsonObject(object, &members); !s.ok()) return s;
    for (const std::string& field : node.fields) {
      const JsonMember* member = FindJsonMember(members, field);
      add(field, member != nullptr ? member->value : "null");
    }
  } else {
    // [the document's object, the whole row]: the row through the transforms.
    std::vector<std::string_view> pair;
    if (absl::Status s = ReadJsonArray(value, &pair); !s.ok()) return s;
    if (pair.size() != 2) {
      return absl::InternalError(Cat(node.path, ": a render without its row (", value, ")"));
    }
    object = pair[0];
    if (absl::Status s = ReadJsonObject(object, &members); !s.ok()) return s;
    std::vector<JsonMember> row;
    if (absl::Status s = ReadJsonObject(pair[1], &row); !s.ok()) return s;
    const TableSchemaPtr& schema = whole->second;
    Change change;
    change.op = Op::kRead;
    change.table = schema;
    for (const Column& column : schema->columns) {
      const JsonMember* member = FindJsonMember(row, column.name);
      absl::StatusOr<Value> v =
          member == nullptr ? Value::Null(column.type_oid)
                            : ValueFromJson(member->value, column.type_oid, column.type_name);
      // A value to_jsonb writes in a form pgflow's JSON does not read back (an hstore, a
      // composite, a geometry as objects) reaches the transforms as one the stream did not
      // send: unknown to them, and kept as rendered; unless one would change it (a mask
      // would leave it as it is).
      if (!v.ok() && chain_->Changes(*schema, column.name)) {
        return absl::FailedPreconditionError(
            Cat(node.path, ": a transform changes ", schema->QualifiedName(), ".", column.name,
                ", whose value as PostgreSQL renders it in JSON pgflow cannot read back (",
                v.status().message(), ")"));
      }
      change.after.push_back(v.ok() ? *std::move(v) : Value::UnchangedToast(column.type_oid));
    }
    const Row input = change.after;
    absl::StatusOr<bool> passed = chain_->ApplyOne(&change);
    if (!passed.ok()) return passed.status();
    if (!*passed) {
      *kept = false;
      return absl::OkStatus();
    }
    const TableSchema& output = *change.table;
    auto index_of = [](const TableSchema& table, std::string_view name) {
      size_t i = 0;
      while (i < table.columns.size() && table.columns[i].name != name) ++i;
      return i;
    };
    std::string json;
    auto add_value = [&](size_t at) {
      const Value& v = change.after[at];
      json.clear();
      if (v.is_null() || v.is_unchanged_toast()) {
        json = "null";
      } else {
        AppendJsonValue(v, output.columns[at].type_name, JsonOptions{.numeric_as_number = true},
                        &json);
      }
      add(output.columns[at].name, json);
    };
    for (const std::string& field : node.fields) {
      const size_t at = index_of(output, field);
      if (at >= change.after.size()) continue;  // (no transform taken drops a column)
      const size_t was = index_of(*schema, field);
      const JsonMember* member = FindJsonMember(members, field);
      if (was < input.size() && input[was] == change.after[at] && member != nullptr) {
        add(field, member->value);  // unchanged: as PostgreSQL rendered it
      } else {
        add_value(at);
      }
    }
    // Columns a `set` added.
    for (size_t at = 0; at < output.columns.size() && at < change.after.size(); ++at) {
      const std::string& name = output.columns[at].name;
      if (index_of(*schema, name) < schema->columns.size()) continue;
      for (const DocumentNode& child : node.children) {
        if (child.name == name) {
          return absl::FailedPreconditionError(
              Cat(node.path, ": a set transform adds column ", name,
                  " to ", schema->QualifiedName(), ", where the document has a child of that "
                  "name: rename one of them"));
        }
      }
      add_value(at);
    }
  }
  out->push_back('{');
  out->append(fields);
  bool first_member = fields.empty();
  for (const DocumentNode& child : node.children) {
    const JsonMember* member = FindJsonMember(members, child.name);
    if (!first_member) out->push_back(',');
    first_member = false;
    AppendJsonString(child.name, out);
    out->push_back(':');
    if (member == nullptr || JsonTypeOf(member->value) == JsonType::kNull) {
      out->append(child.one ? "null" : "[]");
      continue;
    }
    if (child.one) {
      bool child_kept = true;
      std::string rendered;
      if (absl::Status s = Level(child, member->value, &child_kept, &rendered); !s.ok()) return s;
      out->append(child_kept ? rendered : "null");
      continue;
    }
    std::vector<std::string_view> items;
    if (absl::Status s = ReadJsonArray(member->value, &items); !s.ok()) return s;
    out->push_back('[');
    bool first = true;
    for (std::string_view item : items) {
      bool child_kept = true;
      std::string rendered;
      if (absl::Status s = Level(child, item, &child_kept, &rendered); !s.ok()) return s;
      if (!child_kept) continue;
      if (!first) out->push_back(',');
      first = false;
      out->append(rendered);
    }
    out->push_back(']');
  }
  out->push_back('}');
  return absl::OkStatus();
}

}  // namespace pgflow::documents
