#include "transformers/reshape.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "common/postgres/pg_connection.h"
#include "common/postgres/table_ref.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "transformers/table_patterns.h"

namespace pgflow {
namespace {

using nlohmann::json;

// Table versions remembered before starting over (a few per table: one per schema change).
constexpr size_t kMaxVersions = 4096;
// attnum of the first column a transform adds, in rewritten DDL shapes: above any real one
// (PostgreSQL allows 1600 columns), so that planning DDL never takes it for a source column.
constexpr int kAddedAttnum = 30000;

bool IdentStart(char c) { return absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IdentChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$';
}

// Calls `on_ident(begin, end, name)` for every identifier of `text` (outside string literals),
// with its name as PostgreSQL reads it (bare ones folded to lower case).
template <typename F>
void ForEachIdentifier(std::string_view text, F on_ident) {
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '\'') {  // a string literal: '' is a quote inside it
      for (++i; i < text.size(); ++i) {
        if (text[i] == '\'' && (i + 1 >= text.size() || text[i + 1] != '\'')) break;
        if (text[i] == '\'') ++i;
      }
      ++i;
    } else if (c == '"') {
      std::string name;
      size_t j = i + 1;
      for (; j < text.size(); ++j) {
        if (text[j] == '"') {
          if (j + 1 < text.size() && text[j + 1] == '"') {
            name.push_back('"');
            ++j;
            continue;
          }
          break;
        }
        name.push_back(text[j]);
      }
      on_ident(i, std::min(j + 1, text.size()), name);
      i = j + 1;
    } else if (IdentStart(c) && (i == 0 || !IdentChar(text[i - 1]))) {
      size_t j = i;
      while (j < text.size() && IdentChar(text[j])) ++j;
      on_ident(i, j, absl::AsciiStrToLower(std::string(text.substr(i, j - i))));
      i = j;
    } else {
      ++i;
    }
  }
}

// The string at `key` of object `o`, or "" (absent, null, another type): the capture writes
// NULL for what it could not describe.
std::string Str(const json& o, const char* key) {
  if (!o.is_object()) return "";
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : "";
}

// A constraint's definition rewritten for the table's new columns; nullopt when it names a
// dropped one. A foreign key's referenced columns (after REFERENCES) are another table's and
// stay as they are.
std::optional<std::string> RewriteConstraint(const std::string& definition,
                                             const ReshapingTransform::ColumnFate& fate) {
  size_t split = definition.size();
  if (definition.rfind("FOREIGN KEY", 0) == 0) {
    if (size_t r = definition.find(" REFERENCES "); r != std::string::npos) split = r;
  }
  std::string local;
  if (!RewriteIdentifiers(std::string_view(definition).substr(0, split), fate, &local)) {
    return std::nullopt;
  }
  return local + definition.substr(split);
}

}  // namespace

bool RewriteIdentifiers(std::string_view text, const ReshapingTransform::ColumnFate& fate,
                        std::string* out) {
  out->clear();
  size_t copied = 0;
  bool dropped = false;
  ForEachIdentifier(text, [&](size_t begin, size_t end, const std::string& ident) {
    auto it = fate.find(ident);
    if (it == fate.end()) return;
    if (!it->second) {
      dropped = true;
      return;
    }
    if (*it->second == ident) return;
    out->append(text.substr(copied, begin - copied));
    out->append(QuoteIdent(*it->second));
    copied = end;
  });
  out->append(text.substr(copied));
  return !dropped;
}

std::optional<OutputType> ParseOutputType(std::string_view name) {
  static const auto* types = new std::vector<std::pair<std::vector<std::string_view>, OutputType>>{
      {{"text"}, {oid::kText, "text"}},
      {{"varchar", "character varying"}, {oid::kVarchar, "character varying"}},
      {{"integer", "int", "int4"}, {oid::kInt4, "integer"}},
      {{"bigint", "int8"}, {oid::kInt8, "bigint"}},
      {{"smallint", "int2"}, {oid::kInt2, "smallint"}},
      {{"numeric", "decimal"}, {oid::kNumeric, "numeric"}},
      {{"double precision", "float8", "double"}, {oid::kFloat8, "double precision"}},
      {{"real", "float4"}, {oid::kFloat4, "real"}},
      {{"boolean", "bool"}, {oid::kBool, "boolean"}},
      {{"date"}, {oid::kDate, "date"}},
      {{"timestamp", "timestamp without time zone"}, {oid::kTimestamp, "timestamp without time zone"}},
      {{"timestamptz", "timestamp with time zone"}, {oid::kTimestamptz, "timestamp with time zone"}},
      {{"jsonb"}, {oid::kJsonb, "jsonb"}},
      {{"json"}, {oid::kJson, "json"}},
      {{"uuid"}, {oid::kUuid, "uuid"}},
  };
  const std::string lower = absl::AsciiStrToLower(std::string(name));
  for (const auto& [names, type] : *types) {
    for (std::string_view n : names) {
      if (n == lower) return type;
    }
  }
  return std::nullopt;
}

absl::StatusOr<const ReshapingTransform::Version*> ReshapingTransform::VersionFor(
    const TableSchemaPtr& table) {
  auto it = versions_.find(table.get());
  if (it != versions_.end()) return &it->second;
  if (versions_.size() >= kMaxVersions) versions_.clear();
  Version version{table, table, {}, false, true};
  if (Covers(table->schema, table->name)) {
    version.covered = true;
    std::vector<ShapeColumn> columns;
    const std::vector<size_t> key = table->RowKeyColumns();
    for (size_t i = 0; i < table->columns.size(); ++i) {
      const Column& c = table->columns[i];
      columns.push_back(ShapeColumn{c.name, c.type_oid, "",
                                    std::find(key.begin(), key.end(), i) != key.end()});
    }
    absl::StatusOr<ShapeMap> map = Plan(table->schema, table->name, columns, false);
    if (!map.ok()) return map.status();
    version.map = *std::move(map);
    bool identity = version.map.schema == table->schema && version.map.name == table->name &&
                    version.map.columns.size() == table->columns.size();
    for (size_t i = 0; identity && i < version.map.columns.size(); ++i) {
      const ShapeMap::Out& o = version.map.columns[i];
      identity = o.from == static_cast<int>(i) && o.name == table->columns[i].name && !o.type;
    }
    version.identity = identity;
    if (!identity) {
      auto out = std::make_shared<TableSchema>(*table);
      out->schema = version.map.schema;
      out->name = version.map.name;
      out->columns.clear();
      for (const ShapeMap::Out& o : version.map.columns) {
        Column c = o.from >= 0 ? table->columns[static_cast<size_t>(o.from)] : Column{};
        c.name = o.name;
        if (o.type) {
          c.type_oid = o.type->oid;
          c.type_modifier = -1;
          c.type_name.clear();
        }
        out->columns.push_back(std::move(c));
      }
      out->primary_key.clear();
      for (const std::string& k : table->primary_key) {
        for (const ShapeMap::Out& o : version.map.columns) {
          if (o.from >= 0 && table->columns[static_cast<size_t>(o.from)].name == k) {
            out->primary_key.push_back(o.name);
          }
        }
      }
      out->reshaped = true;
      version.output = std::move(out);
    }
  }
  return &versions_.emplace(table.get(), std::move(version)).first->second;
}

bool ReshapingTransform::Covers(const std::string& schema, const std::string& name) const {
  return PatternsCover(tables_, schema, name);
}

bool ReshapingTransform::NamesExactly(const std::string& schema, const std::string& name) const {
  const TableRef ref{schema, name};
  return std::any_of(tables_.begin(), tables_.end(),
                     [&ref](const TableRef& t) { return !t.is_schema() && t.Covers(ref); });
}

ShapeMap ReshapingTransform::Unchanged(const std::string& schema, const std::string& name,
                                       const std::vector<ShapeColumn>& columns) {
  ShapeMap map{schema, name, {}};
  for (size_t i = 0; i < columns.size(); ++i) {
    map.columns.push_back(ShapeMap::Out{columns[i].name, static_cast<int>(i), std::nullopt});
  }
  return map;
}

absl::Status ReshapingTransform::NoSuchColumn(std::string_view type, const std::string& schema,
                                              const std::string& name,
                                              const std::string& column) const {
  return absl::FailedPreconditionError(Cat(context_.where, " (", type, "): table ", schema, ".",
                                           name, " has no column '", column, "'"));
}

TableSchemaPtr ReshapingTransform::OutputTable(const TableSchemaPtr& table) {
  absl::StatusOr<const Version*> version = VersionFor(table);
  return version.ok() ? (*version)->output : table;
}

absl::StatusOr<bool> ReshapingTransform::Apply(Change* change) {
  if (change->op == Op::kDdl && change->ddl != nullptr) return RewriteDdl(change);
  if (change->table == nullptr) return true;
  absl::StatusOr<const Version*> found = VersionFor(change->table);
  if (!found.ok()) return found.status();
  const Version& version = **found;
  if (!version.covered) return true;
  if (!version.identity) {
    const size_t width = version.input->columns.size();
    for (Row* row : {&change->after, &change->before}) {
      if (row->size() != width) continue;  // no such image
      Row out;
      out.reserve(version.map.columns.size());
      for (const ShapeMap::Out& o : version.map.columns) {
        out.push_back(o.from >= 0 ? std::move((*row)[static_cast<size_t>(o.from)])
                                  : Value::Null(o.type->oid));
      }
      *row = std::move(out);
    }
    change->table = version.output;
  }
  if (absl::Status s = Fill(version, change); !s.ok()) return s;
  return true;
}

absl::StatusOr<bool> ReshapingTransform::RewriteDdl(Change* change) {
  if (absl::Status s = CheckStillCovered(tables_, *change, context_.where); !s.ok()) return s;
  json doc = json::parse(change->content, nullptr, false);
  if (!doc.is_object()) return true;  // not the capture's JSON: nothing of ours to rewrite
  try {
    return RewriteDdlDocument(change, doc);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        Cat(context_.where, ": rewriting a schema change: unexpected content: ", e.what()));
  }
}

std::optional<ReshapingTransform::ColumnFate> ReshapingTransform::NewestFate(
    const std::string& schema, const std::string& name) const {
  if (auto it = ddl_fates_.find(Cat(schema, ".", name)); it != ddl_fates_.end()) {
    return it->second;
  }
  const Version* newest = nullptr;
  for (const auto& [ptr, v] : versions_) {
    if (v.input->schema == schema && v.input->name == name &&
        (newest == nullptr || v.input->version > newest->input->version)) {
      newest = &v;
    }
  }
  if (newest == nullptr) return std::nullopt;
  ColumnFate fate;
  for (const Column& c : newest->input->columns) fate[c.name] = std::nullopt;
  for (const ShapeMap::Out& o : newest->map.columns) {
    if (o.from >= 0) fate[newest->input->columns[static_cast<size_t>(o.from)].name] = o.name;
  }
  return fate;
}

absl::StatusOr<bool> ReshapingTransform::RewriteDdlDocument(Change* change, json& doc) {
  bool changed = false;
  const bool on_table = Str(doc, "object_type") == "table";
  for (const char* key : {"old", "table"}) {
    auto shape = doc.find(key);
    // "old" of an index or a sequence holds its own former name, not a table's shape.
    if (!on_table || shape == doc.end() || !shape->is_object()) continue;
    const std::string schema = Str(*shape, "schema");
    const std::string name = Str(*shape, "name");
    if (!Covers(schema, name)) continue;
    json& in_columns = (*shape)["columns"];
    std::vector<std::string> key_names;
    if (auto k = shape->find("primary_key"); k != shape->end() && k->is_array()) {
      for (const json& n : *k) {
        if (n.is_string()) key_names.push_back(n.get<std::string>());
      }
    }
    std::vector<ShapeColumn> columns;
    if (in_columns.is_array()) {
      for (const json& c : in_columns) {
        ShapeColumn sc;
        sc.name = Str(c, "name");
        sc.type_sql = Str(c, "type");
        sc.is_key = std::find(key_names.begin(), key_names.end(), sc.name) != key_names.end();
        columns.push_back(std::move(sc));
      }
    }
    absl::StatusOr<ShapeMap> map = Plan(schema, name, columns, true);
    if (!map.ok()) return map.status();
    ColumnFate fate;  // every input column: dropped unless the map takes it
    for (const ShapeColumn& c : columns) fate[c.name] = std::nullopt;
    json out_columns = json::array();
    int added = 0;
    for (const ShapeMap::Out& o : map->columns) {
      json c;
      if (o.from >= 0) {
        c = in_columns[static_cast<size_t>(o.from)];
        fate[columns[static_cast<size_t>(o.from)].name] = o.name;
      } else {
        c = json{{"attnum", kAddedAttnum + added++}, {"not_null", false}};
      }
      c["name"] = o.name;
      if (o.type) {  // retyped or added: the source's default and generation do not carry over
        c["type"] = o.type->sql;
        c["default"] = "";
        c["generated"] = "";
        c["identity"] = "";
        c["collation"] = "";
      }
      out_columns.push_back(std::move(c));
    }
    (*shape)["columns"] = std::move(out_columns);
    auto rename = [&fate](const std::string& n) -> std::optional<std::string> {
      auto it = fate.find(n);
      return it == fate.end() ? std::optional<std::string>(n) : it->second;
    };
    if (auto k = shape->find("primary_key"); k != shape->end() && k->is_array()) {
      json out = json::array();
      for (const json& n : *k) {
        if (!n.is_string()) continue;
        if (std::optional<std::string> to = rename(n.get<std::string>())) out.push_back(*to);
      }
      *k = std::move(out);
    }
    if (auto cs = shape->find("constraints"); cs != shape->end() && cs->is_array()) {
      json out = json::array();
      for (json& c : *cs) {
        std::optional<std::string> definition = RewriteConstraint(Str(c, "definition"), fate);
        if (!definition) continue;  // on a column the sinks do not see
        c["definition"] = *definition;
        out.push_back(std::move(c));
      }
      *cs = std::move(out);
    }
    (*shape)["schema"] = map->schema;
    (*shape)["name"] = map->name;
    // The newest shape's columns, for the indexes created on the table next.
    if (std::string_view(key) == "table") ddl_fates_[Cat(schema, ".", name)] = fate;
    changed = true;
  }

  // The command's own names: a table's, or the table an index or sequence belongs to.
  auto rename_table = [&](json& object, const char* schema_key, const char* name_key) {
    if (!object.is_object() || !object.contains(schema_key) || !object.contains(name_key)) return;
    const std::string schema = Str(object, schema_key);
    const std::string name = Str(object, name_key);
    if (!Covers(schema, name)) return;
    std::pair<std::string, std::string> to = OutputName(schema, name);
    object[schema_key] = to.first;
    object[name_key] = to.second;
    changed = true;
  };
  if (on_table && Covers(Str(doc, "schema"), Str(doc, "name"))) {
    rename_table(doc, "schema", "name");
    doc["identity"] = TableRef{Str(doc, "schema"), Str(doc, "name")}.Quoted();
  }
  const std::string on_schema = Str(doc, "table_schema");
  const std::string on_table_name = Str(doc, "table_name");
  if (auto index = doc.find("index"); index != doc.end() && index->is_object()) {
    const std::string schema = index->contains("table_schema") ? Str(*index, "table_schema") : on_schema;
    const std::string name = index->contains("table_name") ? Str(*index, "table_name") : on_table_name;
    if (Covers(schema, name)) {
      // An index's columns: the newest shape this transform saw of the table (a schema
      // change's, else a row's) tells which it keeps and under which names.
      if (std::optional<ColumnFate> fate = NewestFate(schema, name)) {
        std::string using_text;
        std::string definition;
        if (!RewriteIdentifiers(Str(*index, "using"), *fate, &using_text)) {
          LogInfo("%s: index %s is on a column of %s.%s the sinks do not see: not replayed",
                  context_.where, Str(doc, "identity"), schema, name);
          return false;
        }
        RewriteIdentifiers(Str(*index, "definition"), *fate, &definition);
        (*index)["using"] = using_text;
        (*index)["definition"] = definition;
      }
      rename_table(*index, "table_schema", "table_name");
      changed = true;
    }
  }
  rename_table(doc, "table_schema", "table_name");
  if (auto seq = doc.find("sequence"); seq != doc.end() && seq->is_object()) {
    if (auto owner = seq->find("owned_by"); owner != seq->end()) {
      rename_table(*owner, "schema", "table");
    }
  }
  if (!changed) return true;

  std::string content = doc.dump();
  absl::StatusOr<DdlCommand> cmd = ParseDdlCommand(content);
  if (!cmd.ok()) {
    return absl::InternalError(
        Cat(context_.where, ": rewriting a schema change: ", cmd.status().message()));
  }
  change->content = std::move(content);
  change->ddl = std::make_shared<const DdlCommand>(*std::move(cmd));
  if (change->table != nullptr) {
    absl::StatusOr<const Version*> v = VersionFor(change->table);
    if (!v.ok()) return v.status();
    change->table = (*v)->output;
  }
  return true;
}

}  // namespace pgflow
