#include "schemas/table_schema_json.h"

#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "schemas/json_text.h"

namespace pgflow {
namespace {

// MaxTupleAttributeNumber.
constexpr size_t kMaxColumns = 1664;

// (Debian's abseil has an absl::string_view of its own, which Status::message() returns.)
absl::Status FieldError(std::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("table description: ", std::string(field), ": ", problem));
}

absl::StatusOr<std::string> StringField(const std::vector<JsonMember>& members,
                                        std::string_view key) {
  const JsonMember* m = FindJsonMember(members, key);
  if (m == nullptr) return FieldError(key, "missing");
  if (JsonTypeOf(m->value) != JsonType::kString) return FieldError(key, "expected a string");
  std::string out;
  if (absl::Status s = ReadJsonString(m->value, &out); !s.ok()) return FieldError(key, s.message());
  return out;
}

absl::StatusOr<int64_t> IntField(std::string_view value, std::string_view field, int64_t min,
                                 int64_t max) {
  absl::StatusOr<int64_t> n = ReadJsonInt64(value);
  if (!n.ok()) return FieldError(field, n.status().message());
  if (*n < min || *n > max) {
    return FieldError(field, absl::StrCat("out of range [", min, ", ", max, "]: ", *n));
  }
  return *n;
}

}  // namespace

void AppendTableSchemaJson(const TableSchema& table, std::string* out) {
  out->append("{\"relid\":");
  out->append(std::to_string(table.relation_id));
  out->append(",\"schema\":");
  AppendJsonString(table.schema, out);
  out->append(",\"table\":");
  AppendJsonString(table.name, out);
  out->append(",\"identity\":\"");
  out->push_back(table.replica_identity);
  out->append("\",\"version\":");
  out->append(std::to_string(table.version));
  out->append(",\"columns\":[");
  for (size_t i = 0; i < table.columns.size(); ++i) {
    const Column& c = table.columns[i];
    if (i > 0) out->push_back(',');
    out->push_back('[');
    AppendJsonString(c.name, out);
    out->push_back(',');
    out->append(std::to_string(c.type_oid));
    out->push_back(',');
    out->append(std::to_string(c.type_modifier));
    out->append(c.is_key ? ",1" : ",0");
    if (!c.type_name.empty()) {
      out->push_back(',');
      AppendJsonString(c.type_name, out);
    }
    out->push_back(']');
  }
  out->push_back(']');
  if (!table.primary_key.empty()) {
    out->append(",\"primary_key\":[");
    for (size_t i = 0; i < table.primary_key.size(); ++i) {
      if (i > 0) out->push_back(',');
      AppendJsonString(table.primary_key[i], out);
    }
    out->push_back(']');
  }
  out->push_back('}');
}

absl::StatusOr<TableSchema> ParseTableSchemaJson(std::string_view json) {
  std::vector<JsonMember> members;
  if (absl::Status s = ReadJsonObject(json, &members); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("table description: ", s.message()));
  }
  TableSchema table;
  const JsonMember* relid = FindJsonMember(members, "relid");
  if (relid == nullptr) return FieldError("relid", "missing");
  absl::StatusOr<int64_t> n =
      IntField(relid->value, "relid", 0, std::numeric_limits<uint32_t>::max());
  if (!n.ok()) return n.status();
  table.relation_id = static_cast<uint32_t>(*n);
  absl::StatusOr<std::string> schema = StringField(members, "schema");
  if (!schema.ok()) return schema.status();
  absl::StatusOr<std::string> name = StringField(members, "table");
  if (!name.ok()) return name.status();
  if (schema->empty() || name->empty()) return FieldError("schema/table", "empty name");
  table.schema = *std::move(schema);
  table.name = *std::move(name);
  absl::StatusOr<std::string> identity = StringField(members, "identity");
  if (!identity.ok()) return identity.status();
  if (identity->size() != 1 || std::string_view("dnfi").find((*identity)[0]) == std::string::npos) {
    return FieldError("identity", absl::StrCat("expected d, n, f or i, got '", *identity, "'"));
  }
  table.replica_identity = (*identity)[0];
  if (const JsonMember* version = FindJsonMember(members, "version"); version != nullptr) {
    n = IntField(version->value, "version", 1, std::numeric_limits<uint32_t>::max());
    if (!n.ok()) return n.status();
    table.version = static_cast<uint32_t>(*n);
  }
  const JsonMember* columns = FindJsonMember(members, "columns");
  if (columns == nullptr) return FieldError("columns", "missing");
  if (JsonTypeOf(columns->value) != JsonType::kArray) {
    return FieldError("columns", "expected an array");
  }
  std::vector<std::string_view> items;
  if (absl::Status s = ReadJsonArray(columns->value, &items); !s.ok()) {
    return FieldError("columns", s.message());
  }
  if (items.size() > kMaxColumns) {
    return FieldError("columns",
                      absl::StrCat(items.size(), " columns, more than PostgreSQL's ", kMaxColumns));
  }
  std::vector<std::string_view> fields;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string where = absl::StrCat("columns[", i, "]");
    if (JsonTypeOf(items[i]) != JsonType::kArray) return FieldError(where, "expected an array");
    if (absl::Status s = ReadJsonArray(items[i], &fields); !s.ok()) {
      return FieldError(where, s.message());
    }
    if (fields.size() != 4 && fields.size() != 5) {
      return FieldError(where, "expected [name, type OID, type modifier, key] and a type name");
    }
    Column column;
    if (JsonTypeOf(fields[0]) != JsonType::kString) {
      return FieldError(where, "the name is not a string");
    }
    if (absl::Status s = ReadJsonString(fields[0], &column.name); !s.ok()) {
      return FieldError(where, s.message());
    }
    if (column.name.empty()) return FieldError(where, "empty column name");
    n = IntField(fields[1], where + " type OID", 1, std::numeric_limits<uint32_t>::max());
    if (!n.ok()) return n.status();
    column.type_oid = static_cast<uint32_t>(*n);
    n = IntField(fields[2], where + " type modifier", std::numeric_limits<int32_t>::min(),
                 std::numeric_limits<int32_t>::max());
    if (!n.ok()) return n.status();
    column.type_modifier = static_cast<int32_t>(*n);
    n = IntField(fields[3], where + " key", 0, 1);
    if (!n.ok()) return n.status();
    column.is_key = *n == 1;
    if (fields.size() == 5) {
      if (JsonTypeOf(fields[4]) != JsonType::kString) {
        return FieldError(where, "the type name is not a string");
      }
      if (absl::Status s = ReadJsonString(fields[4], &column.type_name); !s.ok()) {
        return FieldError(where, s.message());
      }
    }
    table.columns.push_back(std::move(column));
  }
  if (const JsonMember* key = FindJsonMember(members, "primary_key"); key != nullptr) {
    if (JsonTypeOf(key->value) != JsonType::kArray) {
      return FieldError("primary_key", "expected an array");
    }
    if (absl::Status s = ReadJsonArray(key->value, &items); !s.ok()) {
      return FieldError("primary_key", s.message());
    }
    for (std::string_view item : items) {
      std::string name;
      if (JsonTypeOf(item) != JsonType::kString) {
        return FieldError("primary_key", "expected an array of column names");
      }
      if (absl::Status s = ReadJsonString(item, &name); !s.ok()) {
        return FieldError("primary_key", s.message());
      }
      bool known = false;
      for (const Column& c : table.columns) known = known || c.name == name;
      if (!known) return FieldError("primary_key", absl::StrCat("no column \"", name, "\""));
      for (const std::string& k : table.primary_key) {
        if (k == name) return FieldError("primary_key", absl::StrCat("\"", name, "\" twice"));
      }
      table.primary_key.push_back(std::move(name));
    }
  }
  return table;
}

}  // namespace pgflow
