#include "schemas/json_encoding.h"

#include <bit>
#include <cassert>
#include <charconv>
#include <cmath>
#include <limits>
#include <type_traits>

#include "engine/lsn.h"
#include "schemas/ascii.h"
#include "schemas/base64.h"
#include "schemas/json_text.h"
#include "schemas/pg_array_literal.h"
#include "schemas/pg_binary.h"
#include "schemas/pg_datetime.h"
#include "schemas/pg_float.h"
#include "schemas/table_schema.h"

// Everything here runs once per column of every row, so the scalar paths append straight to
// *out: no temporaries, no streams, no locale. Text forms are those of a session with
// DateStyle=ISO, IntervalStyle=iso_8601, TimeZone=UTC, extra_float_digits=3,
// bytea_output=hex. Anything that does not look the way PostgreSQL writes it is kept, as a
// JSON string of its text, rather than guessed at: the output is always valid JSON.
//
// The two switches on the type OID, AppendTextScalar and AppendBinaryScalar, are the rules;
// the formats they read and write (JSON text, base64, floats, dates and times, array literals,
// binary send formats) have files of their own beside this one.

namespace pgflow {
namespace {

// Marks "not an array type" in ArrayElementOid(). Element OID 0 means "elements are strings".
constexpr uint32_t kNotArray = std::numeric_limits<uint32_t>::max();

template <typename T>
void AppendNumber(T value, std::string* out) {
  char buf[64];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), value);
  out->append(buf, r.ptr - buf);
}

// -?(0|[1-9][0-9]*): an integer as PostgreSQL prints it, and valid as a JSON number.
bool IsJsonInteger(std::string_view s) {
  size_t i = s.empty() || s[0] != '-' ? 0 : 1;
  if (i >= s.size()) return false;
  if (s[i] == '0') return i + 1 == s.size();
  for (; i < s.size(); ++i) {
    if (!IsAsciiDigit(s[i])) return false;
  }
  return true;
}

// json and jsonb: embedded as they are. Text that is not valid JSON (which PostgreSQL never
// produces) becomes a JSON string; line breaks between tokens (json keeps its input's
// formatting) are taken out so one value stays on one line.
void AppendEmbeddedJson(std::string_view json, std::string* out) {
  bool one_line = false;
  if (!IsJsonText(json, &one_line)) {
    AppendJsonString(json, out);
  } else if (one_line) {
    out->append(json);
  } else {
    AppendJsonWithoutSpaces(json, out);
  }
}

void AppendBase64String(std::string_view bytes, std::string* out) {
  out->push_back('"');
  AppendBase64(bytes, out);
  out->push_back('"');
}

// bytea's hex text form "\x0102ff" as a base64 JSON string, decoded on the fly. Returns false,
// appending nothing, when `text` is not of that form.
bool AppendByteaHexText(std::string_view text, std::string* out) {
  if (text.size() < 2 || text[0] != '\\' || text[1] != 'x' || text.size() % 2 != 0) return false;
  const std::string_view hex = text.substr(2);
  for (char c : hex) {
    if (HexDigitValue(c) < 0) return false;
  }
  out->push_back('"');
  AppendBase64OfHex(hex, out);
  out->push_back('"');
  return true;
}

// timestamp / timestamptz text as an ISO 8601 JSON string, or the string of the text when it
// is not of PostgreSQL's usual form (infinities, BC dates).
void AppendTextTimestamp(std::string_view text, bool with_zone, std::string* out) {
  out->push_back('"');
  if (AppendIsoFromPgTimestamp(text, with_zone, out)) {
    out->push_back('"');
  } else {
    out->pop_back();
    AppendJsonString(text, out);
  }
}

// The element type of the array types whose text form is turned into a JSON array: the
// element OID, 0 for "elements are strings", kNotArray for any other type. box[] (1020) is
// not here: its delimiter is ';' and its elements contain ','; it stays one string.
uint32_t ArrayElementOid(uint32_t array_oid) {
  switch (array_oid) {
    case 1000:
      return oid::kBool;
    case 1005:
      return oid::kInt2;
    case 1007:
      return oid::kInt4;
    case 1016:
      return oid::kInt8;
    case 1028:
      return oid::kOid;
    case 1021:
      return oid::kFloat4;
    case 1022:
      return oid::kFloat8;
    case 1231:
      return oid::kNumeric;
    case 1009:
      return oid::kText;
    case 1015:
      return oid::kVarchar;
    case 1014:
      return oid::kBpchar;
    case 1002:
      return oid::kChar;
    case 1003:
      return oid::kName;
    case 2951:
      return oid::kUuid;
    case 199:
      return oid::kJson;
    case 3807:
      return oid::kJsonb;
    case 1001:
      return oid::kBytea;
    case 1182:
      return oid::kDate;
    case 1183:
      return oid::kTime;
    case 1115:
      return oid::kTimestamp;
    case 1185:
      return oid::kTimestamptz;
    case 1187:
      return oid::kInterval;
    case 1270:
      return oid::kTimetz;
    // Other common built-in arrays, of strings: xml, cidr, macaddr8, money, macaddr, inet,
    // bit, varbit, jsonpath, and the built-in range types.
    case 143:
    case 651:
    case 775:
    case 791:
    case 1040:
    case 1041:
    case 1561:
    case 1563:
    case 4073:
    case 3905:
    case 3907:
    case 3909:
    case 3911:
    case 3913:
    case 3927:
      return 0;
    default:
      return kNotArray;
  }
}

// PostgreSQL names an array type after its element type with a leading '_'.
bool IsArrayTypeName(std::string_view type_name) {
  const size_t dot = type_name.rfind('.');
  const std::string_view name =
      dot == std::string_view::npos ? type_name : type_name.substr(dot + 1);
  return !name.empty() && name[0] == '_';
}

// ---------------------------------------------------------------------------------------------
// Text values

void AppendTextScalar(uint32_t type_oid, std::string_view text, const JsonOptions& options,
                      std::string* out) {
  switch (type_oid) {
    case oid::kBool:
      if (text == "t") {
        out->append("true");
      } else if (text == "f") {
        out->append("false");
      } else {
        AppendJsonString(text, out);
      }
      return;
    case oid::kInt2:
    case oid::kInt4:
    case oid::kInt8:
    case oid::kOid:
      if (IsJsonInteger(text)) {
        out->append(text);
      } else {
        AppendJsonString(text, out);
      }
      return;
    case oid::kFloat4:
    case oid::kFloat8:
      // "NaN", "Infinity" and "-Infinity" are not JSON numbers and end up as strings.
      if (IsJsonNumber(text)) {
        out->append(text);
      } else {
        AppendJsonString(text, out);
      }
      return;
    case oid::kNumeric:
      if (options.numeric_as_number && IsJsonNumber(text)) {
        out->append(text);
      } else {
        AppendJsonString(text, out);
      }
      return;
    case oid::kJson:
    case oid::kJsonb:
      AppendEmbeddedJson(text, out);
      return;
    case oid::kBytea:
      if (!AppendByteaHexText(text, out)) AppendJsonString(text, out);
      return;
    case oid::kTimestamp:
      AppendTextTimestamp(text, /*with_zone=*/false, out);
      return;
    case oid::kTimestamptz:
      AppendTextTimestamp(text, /*with_zone=*/true, out);
      return;
    default:
      AppendJsonString(text, out);
      return;
  }
}

// The text form of an array (array_out's output) as a JSON array, each element by the rules
// of `element_oid`; the string of the text when it is not an array literal.
void AppendTextArray(std::string_view text, uint32_t element_oid, const JsonOptions& options,
                     std::string* out) {
  const bool parsed = AppendArrayLiteralAsJson(
      text,
      [element_oid, &options](std::string_view element, std::string* json) {
        AppendTextScalar(element_oid, element, options, json);
      },
      out);
  if (!parsed) AppendJsonString(text, out);
}

void AppendTextValue(uint32_t type_oid, std::string_view text, std::string_view type_name,
                     const JsonOptions& options, std::string* out) {
  const uint32_t element_oid = ArrayElementOid(type_oid);
  if (element_oid != kNotArray) {
    AppendTextArray(text, element_oid, options, out);
  } else if (!type_name.empty() && IsArrayTypeName(type_name)) {
    AppendTextArray(text, /*element_oid=*/0, options, out);
  } else {
    AppendTextScalar(type_oid, text, options, out);
  }
}

// ---------------------------------------------------------------------------------------------
// Binary values (the types' send functions: big-endian, fixed sizes)

// A float as its text rule writes float4out's or float8out's text: a JSON number, or the
// string "NaN", "Infinity" or "-Infinity".
template <typename Float>
void AppendBinaryFloat(Float f, std::string* out) {
  const bool number = std::isfinite(f);
  if (!number) out->push_back('"');
  if constexpr (std::is_same_v<Float, float>) {
    AppendFloat4Text(f, out);
  } else {
    AppendFloat8Text(f, out);
  }
  if (!number) out->push_back('"');
}

// numeric_send data as the text rule writes numeric_out's text: a JSON string, or a number
// with numeric_as_number (NaN and the infinities stay strings). Returns false, appending
// nothing, when `data` is not of that form.
bool AppendBinaryNumeric(std::string_view data, const JsonOptions& options, std::string* out) {
  const size_t start = out->size();
  if (!options.numeric_as_number) out->push_back('"');
  if (!AppendNumericText(data, out)) {
    out->resize(start);
    return false;
  }
  if (!options.numeric_as_number) {
    out->push_back('"');
  } else if (!IsAsciiDigit(out->back())) {  // "NaN", "Infinity", "-Infinity"
    out->insert(start, 1, '"');
    out->push_back('"');
  }
  return true;
}

// True for the types AppendBinaryScalar() writes exactly as the text rules write their text
// form. Not "char": charout escapes bytes that charsend sends raw.
bool IsExactBinaryScalar(uint32_t type_oid) {
  switch (type_oid) {
    case oid::kBool:
    case oid::kInt2:
    case oid::kInt4:
    case oid::kInt8:
    case oid::kOid:
    case oid::kFloat4:
    case oid::kFloat8:
    case oid::kNumeric:
    case oid::kText:
    case oid::kVarchar:
    case oid::kBpchar:
    case oid::kName:
    case oid::kJson:
    case oid::kJsonb:
    case oid::kBytea:
    case oid::kUuid:
    case oid::kDate:
    case oid::kTimestamp:
    case oid::kTimestamptz:
      return true;
    default:
      return false;
  }
}

// Appends the JSON of one value in its type's send format. Returns false, appending nothing,
// for types without a decoder here and for data not of the type's form.
bool AppendBinaryScalar(uint32_t type_oid, std::string_view data, const JsonOptions& options,
                        std::string* out) {
  const char* const p = data.data();
  const size_t size = data.size();
  switch (type_oid) {
    case oid::kBool:
      if (size != 1) return false;
      out->append(p[0] != 0 ? "true" : "false");
      return true;
    case oid::kInt2:
      if (size != 2) return false;
      AppendNumber(ReadBigEndian<int16_t>(p), out);
      return true;
    case oid::kInt4:
      if (size != 4) return false;
      AppendNumber(ReadBigEndian<int32_t>(p), out);
      return true;
    case oid::kInt8:
      if (size != 8) return false;
      AppendNumber(ReadBigEndian<int64_t>(p), out);
      return true;
    case oid::kOid:
      if (size != 4) return false;
      AppendNumber(ReadBigEndian<uint32_t>(p), out);
      return true;
    case oid::kFloat4:
      if (size != 4) return false;
      AppendBinaryFloat(std::bit_cast<float>(ReadBigEndian<uint32_t>(p)), out);
      return true;
    case oid::kFloat8:
      if (size != 8) return false;
      AppendBinaryFloat(std::bit_cast<double>(ReadBigEndian<uint64_t>(p)), out);
      return true;
    case oid::kText:
    case oid::kVarchar:
    case oid::kBpchar:
    case oid::kName:
    case oid::kChar:
      AppendJsonString(data, out);
      return true;
    case oid::kJson:
      AppendEmbeddedJson(data, out);
      return true;
    case oid::kJsonb:
      if (size < 1 || p[0] != 1) return false;
      AppendEmbeddedJson(data.substr(1), out);
      return true;
    case oid::kBytea:
      AppendBase64String(data, out);
      return true;
    case oid::kUuid:
      if (size != 16) return false;
      out->push_back('"');
      AppendUuidText(data, out);
      out->push_back('"');
      return true;
    case oid::kDate:
      if (size != 4) return false;
      out->push_back('"');
      AppendPgDate(ReadBigEndian<int32_t>(p), out);
      out->push_back('"');
      return true;
    case oid::kTimestamp:
    case oid::kTimestamptz:
      if (size != 8) return false;
      out->push_back('"');
      AppendPgTimestampAsIso(ReadBigEndian<int64_t>(p), type_oid == oid::kTimestamptz, out);
      out->push_back('"');
      return true;
    case oid::kNumeric:
      return AppendBinaryNumeric(data, options, out);
    default:
      return false;
  }
}

void AppendBinaryValue(uint32_t type_oid, std::string_view data, const JsonOptions& options,
                       std::string* out) {
  if (AppendBinaryScalar(type_oid, data, options, out)) return;
  // Arrays: as AppendTextArray writes their text form, each element by its type's rule.
  const uint32_t element_oid = ArrayElementOid(type_oid);
  if (element_oid != kNotArray && IsExactBinaryScalar(element_oid) &&
      AppendArraySendAsJson(
          data, element_oid,
          [element_oid, &options](std::string_view element, std::string* json) {
            return AppendBinaryScalar(element_oid, element, options, json);
          },
          out)) {
    return;
  }
  // Types without a decoder here, and malformed data: the bytes, in base64.
  AppendBase64String(data, out);
}

}  // namespace

void AppendJsonValue(const Value& value, std::string_view type_name, const JsonOptions& options,
                     std::string* out) {
  switch (value.kind) {
    case ValueKind::kNull:
      break;
    case ValueKind::kText:
      AppendTextValue(value.type_oid, value.data, type_name, options, out);
      return;
    case ValueKind::kBinary:
      AppendBinaryValue(value.type_oid, value.data, options, out);
      return;
    case ValueKind::kUnchangedToast:
      // A caller bug: the value is unknown. Release builds write null rather than crash.
      assert(false && "AppendJsonValue: unchanged TOAST values have no JSON form");
      break;
  }
  out->append("null");
}

bool IsJsonArrayType(uint32_t type_oid, std::string_view type_name, uint32_t* element_oid) {
  const uint32_t element = ArrayElementOid(type_oid);
  if (element != kNotArray) {
    *element_oid = element;
    return true;
  }
  if (!type_name.empty() && IsArrayTypeName(type_name)) {
    *element_oid = 0;
    return true;
  }
  return false;
}

bool CanDecodeBinary(uint32_t type_oid) {
  const uint32_t element_oid = ArrayElementOid(type_oid);
  return IsExactBinaryScalar(element_oid == kNotArray ? type_oid : element_oid);
}
size_t AppendRowObject(const TableSchema& table, const Row& row, bool keys_only,
                       const JsonOptions& options, std::string* out) {
  out->push_back('{');
  size_t written = 0;
  for (size_t i = 0; i < row.size() && i < table.columns.size(); ++i) {
    const Column& column = table.columns[i];
    const Value& value = row[i];
    if (value.is_unchanged_toast()) continue;
    if (keys_only && !column.is_key) continue;
    if (written > 0) out->push_back(',');
    ++written;
    AppendJsonString(column.name, out);
    out->push_back(':');
    AppendJsonValue(value, column.type_name, options, out);
  }
  out->push_back('}');
  return written;
}

size_t AppendRowObject(const TableSchema& table, const Row& row, const std::vector<size_t>& columns,
                       const JsonOptions& options, std::string* out) {
  out->push_back('{');
  size_t written = 0;
  for (size_t i : columns) {
    if (i >= row.size() || i >= table.columns.size() || row[i].is_unchanged_toast()) continue;
    if (written > 0) out->push_back(',');
    ++written;
    AppendJsonString(table.columns[i].name, out);
    out->push_back(':');
    AppendJsonValue(row[i], table.columns[i].type_name, options, out);
  }
  out->push_back('}');
  return written;
}

void AppendUnchangedToast(const Change& change, std::string* out) {
  if (change.table == nullptr) return;
  bool any = false;
  for (size_t i = 0; i < change.after.size() && i < change.table->columns.size(); ++i) {
    if (!change.after[i].is_unchanged_toast()) continue;
    out->append(any ? "," : ",\"unchanged_toast\":[");
    any = true;
    AppendJsonString(change.table->columns[i].name, out);
  }
  if (any) out->push_back(']');
}

void AppendJsonNulls(const Change& change, std::string* out) {
  if (change.table == nullptr) return;
  bool any = false;
  for (size_t i = 0; i < change.after.size() && i < change.table->columns.size(); ++i) {
    const Value& v = change.after[i];
    if (v.type_oid != oid::kJson && v.type_oid != oid::kJsonb) continue;
    if (v.kind != ValueKind::kText && v.kind != ValueKind::kBinary) continue;
    std::string_view json = v.data;
    // jsonb's send format starts with its version byte, 1.
    if (v.kind == ValueKind::kBinary && v.type_oid == oid::kJsonb && !json.empty()) {
      json.remove_prefix(1);
    }
    while (!json.empty() && IsJsonSpace(json.front())) json.remove_prefix(1);
    while (!json.empty() && IsJsonSpace(json.back())) json.remove_suffix(1);
    if (json != "null") continue;
    out->append(any ? "," : ",\"json_null\":[");
    any = true;
    AppendJsonString(change.table->columns[i].name, out);
  }
  if (any) out->push_back(']');
}

void AppendChangeObject(const Change& change, const JsonOptions& options, std::string* out) {
  out->append("{\"op\":\"");
  out->append(OpName(change.op));
  out->push_back('"');
  if (change.table != nullptr && change.ddl == nullptr) {
    out->append(",\"schema\":");
    AppendJsonString(change.table->schema, out);
    out->append(",\"table\":");
    AppendJsonString(change.table->name, out);
  }
  out->append(",\"lsn\":\"");
  AppendLsn(change.txn.commit_lsn, out);
  out->append("\",\"xid\":");
  out->append(std::to_string(change.txn.xid));
  out->append(",\"commit_ts\":\"");
  AppendIsoTimestamp(change.txn.commit_time_us, out);
  out->append("\",\"seq\":");
  out->append(std::to_string(change.sequence));
  if (change.part > 0) {  // one of several changes a transform made of one
    out->append(",\"part\":");
    out->append(std::to_string(change.part));
  }

  const TableSchema* table = change.table.get();
  switch (change.op) {
    case Op::kRead:
    case Op::kInsert:
    case Op::kUpdate:
    case Op::kDelete: {
      if (change.op != Op::kDelete) {
        out->append(",\"after\":");
        AppendRowObject(*table, change.after, false, options, out);
      }
      if (change.before_kind != BeforeKind::kNone) {
        out->append(",\"before\":");
        AppendRowObject(*table, change.before, change.before_kind == BeforeKind::kKey, options,
                        out);
      }
      AppendUnchangedToast(change, out);
      if (change.op != Op::kDelete) AppendJsonNulls(change, out);
      break;
    }
    case Op::kTruncate:
      out->append(",\"cascade\":");
      out->append(change.truncate_cascade ? "true" : "false");
      out->append(",\"restart_identity\":");
      out->append(change.truncate_restart_identity ? "true" : "false");
      break;
    case Op::kDdl:
      if (change.ddl != nullptr) {
        // The captured description is JSON already (written by PostgreSQL's jsonb output
        // and parsed by the source): embedded as it is.
        out->append(",\"tag\":");
        AppendJsonString(change.ddl->tag, out);
        out->append(",\"object_type\":");
        AppendJsonString(change.ddl->object_type, out);
        out->append(",\"identity\":");
        AppendJsonString(change.ddl->identity, out);
        out->append(",\"ddl\":");
        out->append(change.content);
        break;
      }
      [[fallthrough]];
    case Op::kMessage:
      out->append(",\"prefix\":");
      AppendJsonString(change.prefix, out);
      out->append(",\"transactional\":");
      out->append(change.transactional ? "true" : "false");
      out->append(",\"content\":");
      AppendJsonString(change.content, out);
      break;
  }
  out->push_back('}');
}

bool AppendKeyObject(const TableSchema& table, const Row& row, const JsonOptions& options,
                     std::string* out) {
  if (row.empty() || table.replica_identity == 'n') return false;
  const size_t mark = out->size();
  size_t written;
  if (table.replica_identity == 'f') {
    // Every column is marked as identity: the key is the primary key, if the table has one.
    const std::vector<size_t> key = table.RowKeyColumns();
    if (key.empty()) return false;
    written = AppendRowObject(table, row, key, options, out);
  } else {
    written = AppendRowObject(table, row, /*keys_only=*/true, options, out);
  }
  if (written == 0) {
    out->resize(mark);
    return false;
  }
  return true;
}

}  // namespace pgflow
