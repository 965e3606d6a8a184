#include "schemas/json_decoding.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "schemas/ascii.h"
#include "schemas/base64.h"
#include "schemas/json_encoding.h"
#include "schemas/json_text.h"
#include "schemas/pg_array_literal.h"
#include "schemas/pg_datetime.h"
#include "schemas/table_schema.h"

namespace pgflow {
namespace {

// PostgreSQL's MAXDIM.
constexpr int kMaxArrayDims = 6;

// Base64 (as AppendBase64Decoded reads it) as bytea's hex text "\x...". Returns false,
// appending nothing, when `text` is not of that form.
bool AppendByteaFromBase64(std::string_view text, std::string* out) {
  std::string bytes;
  if (!AppendBase64Decoded(text, &bytes)) return false;
  out->append("\\x");
  AppendLowerHex(bytes, out);
  return true;
}

std::string TypeLabel(uint32_t type_oid, std::string_view type_name) {
  return type_name.empty() ? absl::StrCat("type OID ", type_oid)
                           : absl::StrCat("type ", std::string(type_name));
}

absl::Status Expected(std::string_view what, JsonType got, uint32_t type_oid,
                      std::string_view type_name) {
  return absl::InvalidArgumentError(absl::StrCat("expected ", std::string(what), " for ",
                                                 TypeLabel(type_oid, type_name), ", got ",
                                                 JsonTypeName(got)));
}

// Appends the text of a non-null scalar of type `type_oid` written as `json`.
absl::Status AppendScalarText(std::string_view json, uint32_t type_oid, std::string_view type_name,
                              std::string* out) {
  const JsonType type = JsonTypeOf(json);
  switch (type_oid) {
    case oid::kJson:
    case oid::kJsonb:
      out->append(json);
      return absl::OkStatus();
    case oid::kBool:
      if (type == JsonType::kBool) {
        out->push_back(json[0] == 't' ? 't' : 'f');
        return absl::OkStatus();
      }
      if (type != JsonType::kString) return Expected("true, false or a string", type, type_oid, "");
      return ReadJsonString(json, out);
    case oid::kInt2:
    case oid::kInt4:
    case oid::kInt8:
    case oid::kOid:
    case oid::kFloat4:
    case oid::kFloat8:
    case oid::kNumeric:
      if (type == JsonType::kNumber) {
        out->append(json);
        return absl::OkStatus();
      }
      if (type != JsonType::kString) return Expected("a number or a string", type, type_oid, "");
      return ReadJsonString(json, out);
    default:
      break;
  }
  if (type == JsonType::kNumber || type == JsonType::kBool) {
    out->append(json);
    return absl::OkStatus();
  }
  if (type != JsonType::kString) return Expected("a string", type, type_oid, type_name);
  if (type_oid != oid::kBytea && type_oid != oid::kTimestamp && type_oid != oid::kTimestamptz) {
    return ReadJsonString(json, out);
  }
  std::string content;
  if (absl::Status s = ReadJsonString(json, &content); !s.ok()) return s;
  const bool converted = type_oid == oid::kBytea ? AppendByteaFromBase64(content, out)
                                                 : AppendPgTimestampFromIso(
                                                       content, type_oid == oid::kTimestamptz, out);
  // What the encoding kept as text (not PostgreSQL's usual form) comes back as it was.
  if (!converted) out->append(content);
  return absl::OkStatus();
}

// Appends the array literal for the JSON array `json` whose elements are of `element_oid`.
absl::Status AppendArrayLiteral(std::string_view json, uint32_t element_oid, int depth,
                                std::string* out) {
  if (depth > kMaxArrayDims) {
    return absl::InvalidArgumentError(
        absl::StrCat("arrays nested more than ", kMaxArrayDims, " deep"));
  }
  std::vector<std::string_view> items;
  if (absl::Status s = ReadJsonArray(json, &items); !s.ok()) return s;
  out->push_back('{');
  std::string element;
  bool nested = false;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out->push_back(',');
    const std::string_view item = items[i];
    const JsonType type = JsonTypeOf(item);
    // json and jsonb elements may be arrays themselves; a level holds sub-arrays or
    // elements, never both (as array_in requires), and the first item decides.
    const bool is_sub_array =
        type == JsonType::kArray &&
        (i == 0 ? element_oid != oid::kJson && element_oid != oid::kJsonb : nested);
    if (i == 0) nested = is_sub_array;
    if (is_sub_array) {
      if (absl::Status s = AppendArrayLiteral(item, element_oid, depth + 1, out); !s.ok()) {
        return s;
      }
      continue;
    }
    if (nested) {
      return absl::InvalidArgumentError("an array mixes sub-arrays and elements at one level");
    }
    if (type == JsonType::kNull) {
      out->append("NULL");
      continue;
    }
    element.clear();
    // Elements of arrays of non-built-in types (element 0) are strings of their text.
    if (absl::Status s =
            AppendScalarText(item, element_oid == 0 ? oid::kText : element_oid, "", &element);
        !s.ok()) {
      return s;
    }
    AppendArrayLiteralElement(element, out);
  }
  out->push_back('}');
  return absl::OkStatus();
}

absl::Status NulError() {
  return absl::InvalidArgumentError("a string holds \\u0000, which no PostgreSQL text value can");
}

}  // namespace

absl::StatusOr<Value> ValueFromJson(std::string_view json, uint32_t type_oid,
                                    std::string_view type_name) {
  absl::StatusOr<JsonType> type = CheckJson(json);
  if (!type.ok()) return type.status();
  // Surrounding white space, which a checked text may have, is no part of the value.
  while (!json.empty() && IsJsonSpace(json.front())) json.remove_prefix(1);
  while (!json.empty() && IsJsonSpace(json.back())) json.remove_suffix(1);
  if (*type == JsonType::kNull) return Value::Null(type_oid);
  std::string text;
  uint32_t element_oid = 0;
  if (IsJsonArrayType(type_oid, type_name, &element_oid)) {
    if (*type == JsonType::kString) {
      // Text the encoding could not read as an array (box[]-like forms) was kept as it was.
      if (absl::Status s = ReadJsonString(json, &text); !s.ok()) return s;
    } else if (*type != JsonType::kArray) {
      return Expected("an array or a string", *type, type_oid, type_name);
    } else if (absl::Status s = AppendArrayLiteral(json, element_oid, 1, &text); !s.ok()) {
      return s;
    }
    if (text.find('\0') != std::string::npos) return NulError();
    return Value::Text(type_oid, std::move(text));
  }
  if (absl::Status s = AppendScalarText(json, type_oid, type_name, &text); !s.ok()) return s;
  if (text.find('\0') != std::string::npos) return NulError();
  return Value::Text(type_oid, std::move(text));
}

}  // namespace pgflow
