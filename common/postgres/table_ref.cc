#include "common/postgres/table_ref.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "engine/str_cat.h"
#include "schemas/pg_array_literal.h"

namespace pgflow {
namespace {

constexpr size_t kMaxPgName = 63;  // NAMEDATALEN - 1

// Parses one identifier at the start of `*text` (consuming it), PostgreSQL style: a quoted
// identifier keeps its case ("" is a quote), an unquoted one is folded to lower case.
absl::StatusOr<std::string> ParseIdentifier(std::string_view* text, bool* quoted) {
  std::string_view in = *text;
  std::string out;
  *quoted = !in.empty() && in[0] == '"';
  if (*quoted) {
    size_t i = 1;
    for (;;) {
      if (i >= in.size()) return absl::InvalidArgumentError("unterminated quoted name");
      if (in[i] == '"') {
        if (i + 1 < in.size() && in[i + 1] == '"') {
          out += '"';
          i += 2;
          continue;
        }
        ++i;
        break;
      }
      out += in[i++];
    }
    if (out.empty()) return absl::InvalidArgumentError("zero-length quoted name \"\"");
    *text = in.substr(i);
  } else {
    size_t i = 0;
    while (i < in.size()) {
      unsigned char c = static_cast<unsigned char>(in[i]);
      bool ok = absl::ascii_isalpha(c) || c == '_' || c >= 0x80 ||
                (i > 0 && (absl::ascii_isdigit(c) || c == '$'));
      if (!ok) break;
      out += static_cast<char>(absl::ascii_tolower(c));
      ++i;
    }
    if (i == 0) {
      if (in.empty() || in[0] == '.') return absl::InvalidArgumentError("empty name");
      return absl::InvalidArgumentError(
          Cat("unexpected character '", in.substr(0, 1),
              "'; quote names that are not letters, digits and '_': \"My-Table\""));
    }
    *text = in.substr(i);
  }
  if (out.size() > kMaxPgName) {
    return absl::InvalidArgumentError(
        Cat("name '", out, "' is longer than ", kMaxPgName, " bytes"));
  }
  return out;
}

bool NeedsQuotes(std::string_view name) {
  if (name.empty() || absl::ascii_isdigit(static_cast<unsigned char>(name[0]))) return true;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return true;
  }
  return false;
}

std::string QuoteIfNeeded(std::string_view name) {
  if (!NeedsQuotes(name)) return std::string(name);
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace

// "schema.table", "schema.*", "\"My Schema\".\"Order\"". The error message has no position.
absl::StatusOr<TableRef> ParseTableRef(std::string_view text) {
  constexpr std::string_view kForm = "expected schema.table or schema.*";
  std::string_view rest = text;
  bool quoted = false;
  if (rest == "*" || rest.starts_with("*.")) {
    return absl::InvalidArgumentError(
        Cat(kForm, "; the schema cannot be '*': list each schema as schema.*"));
  }
  absl::StatusOr<std::string> schema = ParseIdentifier(&rest, &quoted);
  if (!schema.ok()) return schema.status();
  if (rest.empty()) {
    return absl::InvalidArgumentError(Cat(kForm, "; add the schema, like public.", text));
  }
  if (rest[0] != '.') {
    return absl::InvalidArgumentError(
        Cat("unexpected character '", rest.substr(0, 1),
            "' after the schema; quote names that are not letters, digits and '_': \"My Schema\""));
  }
  rest.remove_prefix(1);
  TableRef ref;
  ref.schema = *std::move(schema);
  if (rest == "*") {
    ref.table = "*";
    return ref;
  }
  absl::StatusOr<std::string> table = ParseIdentifier(&rest, &quoted);
  if (!table.ok()) return table.status();
  if (quoted && *table == "*") {
    return absl::InvalidArgumentError("a table named \"*\" cannot be captured");
  }
  if (!rest.empty()) {
    if (rest[0] == '.') {
      return absl::InvalidArgumentError(
          Cat(kForm, ", not database.schema.table (the database is in the url)"));
    }
    return absl::InvalidArgumentError(
        Cat("unexpected character '", rest.substr(0, 1),
            "' after the table; quote names that are not letters, digits and '_': \"My-Table\""));
  }
  ref.table = *std::move(table);
  return ref;
}

std::string TableRef::Quoted() const {
  return Cat(QuoteIfNeeded(schema), ".", is_schema() ? "*" : QuoteIfNeeded(table));
}

std::pair<std::string, std::string> TableRefArrays(const std::vector<TableRef>& tables) {
  std::string schemas = "{";
  std::string names = "{";
  for (const TableRef& t : tables) {
    if (schemas.size() > 1) {
      schemas += ',';
      names += ',';
    }
    AppendArrayLiteralElement(t.schema, &schemas);
    AppendArrayLiteralElement(t.table, &names);
  }
  return {schemas + "}", names + "}"};
}

}  // namespace pgflow
