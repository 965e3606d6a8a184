#include "transformers/reshape.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "common/postgres/pg_connection.h"
#include "common/postgres/table_ref.h"
#include "engine/log.h"
#include "engine/str_cat.h"

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

}  // namespace

bool MentionsIdentifier(std::string_view text, std::string_view name) {
  bool found = false;
  ForEachIdentifier(text, [&](size_t, size_t, const std::string& ident) {
    found = found || ident == name;
  });
  return found;
}

std::string ReplaceIdentifier(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  size_t copied = 0;
  ForEachIdentifier(text, [&](size_t begin, size_t end, const std::string& ident) {
    if (ident != from) return;
    out.append(text.substr(copied, begin - copied));
    out.append(QuoteIdent(to));
    copied = end;
  });
  out.append(text.substr(copied));
  return out;
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
  const TableRef ref{schema, name};
  return std::any_of(tables_.begin(), tables_.end(),
                     [&ref](const TableRef& t) { return t.Covers(ref); });
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
  json doc = json::parse(change->content, nullptr, false);
  if (!doc.is_object()) return true;  // not the capture's JSON: nothing of ours to rewrite
  bool changed = false;
  for (const char* key : {"old", "table"}) {
    auto shape = doc.find(key);
    if (shape == doc.end() || !shape->is_object()) continue;
    const std::string schema = shape->value("schema", "");
    const std::string name = shape->value("name", "");
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
        sc.name = c.value("name", "");
        sc.type_sql = c.value("type", "");
        sc.is_key = std::find(key_names.begin(), key_names.end(), sc.name) != key_names.end();
        columns.push_back(std::move(sc));
      }
    }
    absl::StatusOr<ShapeMap> map = Plan(schema, name, columns, true);
    if (!map.ok()) return map.status();
    std::vector<std::pair<std::string, std::optional<std::string>>> renames;
    for (const ShapeColumn& c : columns) renames.emplace_back(c.name, std::nullopt);
    json out_columns = json::array();
    int added = 0;
    for (const ShapeMap::Out& o : map->columns) {
      json c;
      if (o.from >= 0) {
        c = in_columns[static_cast<size_t>(o.from)];
        renames[static_cast<size_t>(o.from)].second = o.name;
      } else {
        c = json{{"attnum", kAddedAttnum + added++}, {"not_null", false}};
      }
      c["name"] = o.name;
      if (o.type) {  // retyped or added: the source's default and generation do not carry over
        c["type"] = o.type->sql;
        c["default"] = "";
        c["generated"] = "";
        c["identity"] = "";
      }
      out_columns.push_back(std::move(c));
    }
    (*shape)["columns"] = std::move(out_columns);
    auto rename = [&renames](const std::string& n) -> std::optional<std::string> {
      for (const auto& [from, to] : renames) {
        if (from == n) return to;
      }
      return n;
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
        std::string definition = c.value("definition", "");
        bool keep = true;
        for (const auto& [from, to] : renames) {
          if (!MentionsIdentifier(definition, from)) continue;
          if (!to) keep = false;
          if (to && *to != from) definition = ReplaceIdentifier(definition, from, *to);
        }
        if (!keep) continue;
        c["definition"] = definition;
        out.push_back(std::move(c));
      }
      *cs = std::move(out);
    }
    (*shape)["schema"] = map->schema;
    (*shape)["name"] = map->name;
    changed = true;
  }

  // The command's own names: a table's, or the table an index or sequence belongs to.
  auto rename_table = [&](json& object, const char* schema_key, const char* name_key) {
    if (!object.is_object() || !object.contains(schema_key) || !object.contains(name_key)) return;
    const std::string schema = object.value(schema_key, "");
    const std::string name = object.value(name_key, "");
    if (!Covers(schema, name)) return;
    std::pair<std::string, std::string> to = OutputName(schema, name);
    object[schema_key] = to.first;
    object[name_key] = to.second;
    changed = true;
  };
  const std::string object_type = doc.value("object_type", "");
  if (object_type == "table" && Covers(doc.value("schema", ""), doc.value("name", ""))) {
    rename_table(doc, "schema", "name");
    doc["identity"] = TableRef{doc.value("schema", ""), doc.value("name", "")}.Quoted();
  }
  const std::string on_schema = doc.value("table_schema", "");
  const std::string on_table = doc.value("table_name", "");
  if (auto index = doc.find("index"); index != doc.end() && index->is_object() &&
                                      Covers(index->value("table_schema", on_schema),
                                             index->value("table_name", on_table))) {
    // An index's columns: the table's newest shape this transform saw tells which it keeps.
    const std::string schema = index->value("table_schema", on_schema);
    const std::string name = index->value("table_name", on_table);
    const Version* newest = nullptr;
    for (const auto& [ptr, v] : versions_) {
      if (v.input->schema == schema && v.input->name == name &&
          (newest == nullptr || v.input->version > newest->input->version)) {
        newest = &v;
      }
    }
    if (newest != nullptr) {
      for (const Column& c : newest->input->columns) {
        std::optional<std::string> to;
        for (const ShapeMap::Out& o : newest->map.columns) {
          if (o.from >= 0 && newest->input->columns[static_cast<size_t>(o.from)].name == c.name) {
            to = o.name;
          }
        }
        const std::string using_text = index->value("using", "");
        if (!MentionsIdentifier(using_text, c.name)) continue;
        if (!to) {
          LogInfo("%s: index %s is on column %s of %s.%s, which the sinks do not see: not "
                  "replayed",
                  context_.where, doc.value("identity", ""), c.name, schema, name);
          return false;
        }
        if (*to != c.name) {
          (*index)["using"] = ReplaceIdentifier(using_text, c.name, *to);
          (*index)["definition"] = ReplaceIdentifier(index->value("definition", ""), c.name, *to);
        }
      }
    }
    rename_table(*index, "table_schema", "table_name");
    changed = true;
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
