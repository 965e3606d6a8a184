#include "schemas/ddl.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace pgflow {
namespace {

using json = nlohmann::json;

// Typed field readers: a missing or null field keeps the default; a field of the wrong type
// is an error naming it.
class Reader {
 public:
  Reader(const json& object, std::string path) : object_(object), path_(std::move(path)) {}

  absl::Status String(const char* key, std::string* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return Wrong(key, "a string");
    *out = v->get<std::string>();
    return absl::OkStatus();
  }
  absl::Status Bool(const char* key, bool* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return Wrong(key, "a boolean");
    *out = v->get<bool>();
    return absl::OkStatus();
  }
  template <typename Int>
  absl::Status Integer(const char* key, Int* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    // Sequence bounds arrive as strings (bigint exceeds what JSON readers keep exactly).
    if (v->is_string()) {
      try {
        *out = static_cast<Int>(std::stoll(v->get<std::string>()));
        return absl::OkStatus();
      } catch (const std::exception&) {
        return Wrong(key, "an integer");
      }
    }
    if (!v->is_number_integer()) return Wrong(key, "an integer");
    *out = static_cast<Int>(v->get<int64_t>());
    return absl::OkStatus();
  }
  const json* Find(const char* key) const {
    auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  absl::Status Wrong(const char* key, const char* expected) const {
    return absl::InvalidArgumentError(
        absl::StrCat("DDL message: ", path_, key, " is not ", expected));
  }
  const std::string& path() const { return path_; }

 private:
  const json& object_;
  std::string path_;
};

absl::Status ParseShape(const json& object, const std::string& path, DdlTableShape* shape) {
  if (!object.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("DDL message: ", path, " is not an object"));
  }
  Reader r(object, path + ".");
  for (absl::Status s : {r.Integer("relid", &shape->relid), r.String("schema", &shape->schema),
                         r.String("name", &shape->name)}) {
    if (!s.ok()) return s;
  }
  if (const json* columns = r.Find("columns")) {
    if (!columns->is_array()) return r.Wrong("columns", "an array");
    for (size_t i = 0; i < columns->size(); ++i) {
      const json& c = (*columns)[i];
      const std::string at = absl::StrCat(path, ".columns[", i, "]");
      if (!c.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat("DDL message: ", at, " is not an object"));
      }
      Reader cr(c, at + ".");
      DdlColumn column;
      std::string identity;
      for (absl::Status s :
           {cr.Integer("attnum", &column.attnum), cr.String("name", &column.name),
            cr.String("type", &column.type), cr.String("collation", &column.collation),
            cr.Bool("not_null", &column.not_null), cr.String("default", &column.default_expr),
            cr.String("generated", &column.generated), cr.String("identity", &identity)}) {
        if (!s.ok()) return s;
      }
      if (column.name.empty() || column.type.empty() || column.attnum <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("DDL message: ", at, " lacks its attnum, name or type"));
      }
      column.identity = identity.empty() ? 0 : identity[0];
      shape->columns.push_back(std::move(column));
    }
  }
  if (const json* key = r.Find("primary_key")) {
    if (!key->is_array()) return r.Wrong("primary_key", "an array");
    for (const json& k : *key) {
      if (!k.is_string()) return r.Wrong("primary_key", "an array of strings");
      shape->primary_key.push_back(k.get<std::string>());
    }
  }
  if (const json* constraints = r.Find("constraints")) {
    if (!constraints->is_array()) return r.Wrong("constraints", "an array");
    for (size_t i = 0; i < constraints->size(); ++i) {
      const json& c = (*constraints)[i];
      const std::string at = absl::StrCat(path, ".constraints[", i, "]");
      if (!c.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat("DDL message: ", at, " is not an object"));
      }
      Reader cr(c, at + ".");
      DdlConstraint constraint;
      std::string type;
      for (absl::Status s : {cr.String("name", &constraint.name), cr.String("type", &type),
                             cr.String("definition", &constraint.definition)}) {
        if (!s.ok()) return s;
      }
      if (constraint.name.empty() || type.size() != 1 || constraint.definition.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("DDL message: ", at, " lacks its name, type or definition"));
      }
      constraint.type = type[0];
      shape->constraints.push_back(std::move(constraint));
    }
  }
  if (r.Find("keyless") != nullptr) {
    if (absl::Status s = r.Bool("keyless", &shape->keyless.emplace()); !s.ok()) return s;
  }
  if (shape->name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("DDL message: ", path, " has no name"));
  }
  return absl::OkStatus();
}

}  // namespace

const DdlColumn* DdlTableShape::FindAttnum(int attnum) const {
  for (const DdlColumn& c : columns) {
    if (c.attnum == attnum) return &c;
  }
  return nullptr;
}

const DdlColumn* DdlTableShape::FindName(std::string_view name) const {
  for (const DdlColumn& c : columns) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

absl::StatusOr<DdlCommand> ParseDdlCommand(std::string_view content) {
  json doc = json::parse(content, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError("DDL message: content is not a JSON object");
  }
  DdlCommand cmd;
  Reader r(doc, "");
  for (absl::Status s :
       {r.String("tag", &cmd.tag), r.String("object_type", &cmd.object_type),
        r.String("identity", &cmd.identity), r.String("schema", &cmd.schema),
        r.String("name", &cmd.name), r.Integer("objid", &cmd.objid),
        r.Bool("dropped", &cmd.dropped), r.String("statement", &cmd.statement),
        r.Bool("rewritten", &cmd.rewritten), r.Bool("identity_set_full", &cmd.identity_set_full),
        r.String("table_schema", &cmd.on_schema), r.String("table_name", &cmd.on_table)}) {
    if (!s.ok()) return s;
  }
  if (cmd.tag.empty() || cmd.object_type.empty()) {
    return absl::InvalidArgumentError("DDL message: tag or object_type is missing");
  }
  if (const json* table = r.Find("table")) {
    if (absl::Status s = ParseShape(*table, "table", &cmd.table.emplace()); !s.ok()) return s;
  }
  if (const json* old = r.Find("old")) {
    if (absl::Status s = ParseShape(*old, "old", &cmd.old_table.emplace()); !s.ok()) return s;
  }
  if (const json* index = r.Find("index")) {
    if (!index->is_object()) return r.Wrong("index", "an object");
    Reader ir(*index, "index.");
    for (absl::Status s :
         {ir.String("definition", &cmd.index_definition), ir.String("using", &cmd.index_using),
          ir.Bool("unique", &cmd.index_unique), ir.String("table_schema", &cmd.on_schema),
          ir.String("table_name", &cmd.on_table),
          ir.Bool("constraint", &cmd.index_backs_constraint)}) {
      if (!s.ok()) return s;
    }
  }
  if (const json* seq = r.Find("sequence")) {
    if (!seq->is_object()) return r.Wrong("sequence", "an object");
    Reader sr(*seq, "sequence.");
    for (absl::Status s :
         {sr.String("type", &cmd.sequence_type), sr.Integer("start", &cmd.sequence_start),
          sr.Integer("increment", &cmd.sequence_increment), sr.Integer("min", &cmd.sequence_min),
          sr.Integer("max", &cmd.sequence_max), sr.Bool("cycle", &cmd.sequence_cycle),
          sr.Bool("identity", &cmd.sequence_of_identity)}) {
      if (!s.ok()) return s;
    }
    if (const json* owner = sr.Find("owned_by")) {
      if (!owner->is_object()) return sr.Wrong("owned_by", "an object");
      Reader orr(*owner, "sequence.owned_by.");
      for (absl::Status s : {orr.String("schema", &cmd.sequence_owner_schema),
                             orr.String("table", &cmd.sequence_owner_table),
                             orr.String("column", &cmd.sequence_owner_column)}) {
        if (!s.ok()) return s;
      }
    }
  }
  if (cmd.IsTable() && !cmd.dropped && !cmd.table.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("DDL message: ", cmd.tag, " on table ", cmd.identity, " has no table shape"));
  }
  return cmd;
}

}  // namespace pgflow
