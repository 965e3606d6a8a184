#include "proxy/statement_class.h"

#include <pg_query.h>

#include <algorithm>
#include <string>
#include <string_view>

#include "absl/strings/ascii.h"
#include "nlohmann/json.hpp"

namespace pgflow::proxy {
namespace {

using Json = nlohmann::json;
using Kind = StatementClass::Kind;

// The parse tree's nodes that make a statement one only the primary can run, wherever they
// stand (a data-modifying CTE, a sub-select's FOR SHARE, SELECT ... INTO).
bool IsWritingNode(std::string_view key) {
  return key == "InsertStmt" || key == "UpdateStmt" || key == "DeleteStmt" || key == "MergeStmt" ||
         key == "intoClause" || key == "lockingClause";
}

// "schema.name" of a list of String nodes (a function's or a type's name).
std::string DottedName(const Json& names) {
  std::string out;
  if (!names.is_array()) return out;
  for (const Json& part : names) {
    auto string = part.find("String");
    if (string == part.end()) continue;
    auto value = string->find("sval");
    if (value == string->end() || !value->is_string()) continue;
    if (!out.empty()) out += '.';
    out += value->get<std::string>();
  }
  return out;
}

struct Walk {
  StatementClass* out;
  bool writes = false;

  void Visit(const Json& node) {
    if (node.is_array()) {
      for (const Json& item : node) Visit(item);
      return;
    }
    if (!node.is_object()) return;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string& key = it.key();
      if (IsWritingNode(key) && !it.value().is_null() && !it.value().empty()) writes = true;
      if (key == "FuncCall") {
        std::string name = DottedName(it.value().value("funcname", Json::array()));
        if (!name.empty()) out->functions.push_back(std::move(name));
      } else if (key == "RangeVar") {
        const Json& range = it.value();
        std::string name = range.value("schemaname", std::string());
        if (!name.empty()) name += '.';
        name += range.value("relname", std::string());
        out->tables.push_back(std::move(name));
      }
      Visit(it.value());
    }
  }
};

// The integer of an A_Const holding one (zero is printed as an empty object by the parser's
// JSON output, which leaves zero fields out).
int ConstInt(const Json& arg) {
  auto constant = arg.find("A_Const");
  if (constant == arg.end()) return 0;
  auto ival = constant->find("ival");
  if (ival == constant->end()) return 0;
  return ival->value("ival", 0);
}

std::optional<std::string> ConstString(const Json& arg) {
  auto constant = arg.find("A_Const");
  if (constant == arg.end()) return std::nullopt;
  auto sval = constant->find("sval");
  if (sval == constant->end()) return std::nullopt;
  return sval->value("sval", std::string());
}

// What a list of DefElem options says of transaction_read_only: 1 READ ONLY, 0 READ WRITE,
// -1 nothing.
int ReadOnlyOption(const Json& options) {
  if (!options.is_array()) return -1;
  int read_only = -1;
  for (const Json& option : options) {
    auto def = option.find("DefElem");
    if (def == option.end() || def->value("defname", std::string()) != "transaction_read_only") {
      continue;
    }
    auto arg = def->find("arg");
    read_only = arg != def->end() && ConstInt(*arg) == 1 ? 1 : 0;
  }
  return read_only;
}

// One statement of the tree: its kind, before what its nodes hold is looked at.
Kind StatementKind(const std::string& type, const Json& body, StatementClass* out) {
  if (type == "SelectStmt" || type == "VariableShowStmt") return Kind::kRead;
  if (type == "ExplainStmt") {
    // What it explains decides (EXPLAIN ANALYZE runs it; a plain EXPLAIN of a write is the
    // primary's too).
    auto query = body.find("query");
    if (query == body.end() || !query->is_object() || query->empty()) return Kind::kWrite;
    return StatementKind(query->begin().key(), query->begin().value(), out);
  }
  if (type == "CopyStmt") {
    // COPY ... TO STDOUT reads; COPY FROM, and a server-side file or program, are the primary's.
    const bool from = body.value("is_from", false);
    return from || body.contains("filename") ? Kind::kWrite : Kind::kRead;
  }
  if (type == "TransactionStmt") {
    const std::string kind = body.value("kind", std::string());
    if (kind == "TRANS_STMT_BEGIN" || kind == "TRANS_STMT_START") {
      switch (ReadOnlyOption(body.value("options", Json::array()))) {
        case 1:
          return Kind::kBeginReadOnly;
        case 0:
          return Kind::kWrite;  // (READ WRITE said aloud: even in a read-only session)
        default:
          return Kind::kBegin;
      }
    }
    // COMMIT, ROLLBACK, SAVEPOINT ... alone begin nothing; PREPARE TRANSACTION and the
    // commit or rollback of a prepared one write.
    if (kind == "TRANS_STMT_PREPARE" || kind == "TRANS_STMT_COMMIT_PREPARED" ||
        kind == "TRANS_STMT_ROLLBACK_PREPARED") {
      return Kind::kWrite;
    }
    return Kind::kRead;
  }
  if (type == "VariableSetStmt") {
    const std::string name = body.value("name", std::string());
    if (name == "pgflow.min_lsn") {
      const Json args = body.value("args", Json::array());
      if (args.is_array() && !args.empty()) out->min_lsn = ConstString(args[0]);
      if (!out->min_lsn) out->min_lsn = std::string();  // (RESET, DEFAULT: none)
      return Kind::kRead;
    }
    // SET TRANSACTION and SET LOCAL last until the transaction's end; outside one they do
    // nothing (SET TRANSACTION READ WRITE: the primary's). Other SETs change the session: the
    // primary's.
    if (name == "TRANSACTION" && ReadOnlyOption(body.value("args", Json::array())) == 0) {
      return Kind::kWrite;
    }
    if (name == "TRANSACTION" || body.value("is_local", false)) return Kind::kRead;
    return Kind::kWrite;
  }
  return Kind::kWrite;
}

}  // namespace

StatementClass ClassifySql(std::string_view sql) {
  StatementClass out;
  const std::string text(sql);  // (NUL-terminated for the parser)
  PgQueryParseResult result = pg_query_parse(text.c_str());
  if (result.error != nullptr) {
    out.kind = Kind::kUnknown;
    out.error = result.error->message != nullptr ? result.error->message : "unreadable";
    pg_query_free_parse_result(result);
    return out;
  }
  Json tree = Json::parse(result.parse_tree, nullptr, /*allow_exceptions=*/false);
  pg_query_free_parse_result(result);
  if (tree.is_discarded()) {
    out.kind = Kind::kUnknown;
    out.error = "the parser's tree could not be read";
    return out;
  }
  Kind kind = Kind::kRead;
  // A plain BEGIN among the statements makes the whole a transaction that may write; a write
  // anywhere, a write.
  auto combine = [&](Kind next) {
    if (next == Kind::kWrite || kind == Kind::kWrite) {
      kind = Kind::kWrite;
    } else if (next == Kind::kBegin || kind == Kind::kBegin) {
      kind = Kind::kBegin;
    } else if (next == Kind::kBeginReadOnly || kind == Kind::kBeginReadOnly) {
      kind = Kind::kBeginReadOnly;
    }
  };
  for (const Json& entry : tree.value("stmts", Json::array())) {
    auto stmt = entry.find("stmt");
    if (stmt == entry.end() || !stmt->is_object() || stmt->empty()) continue;
    const std::string& type = stmt->begin().key();
    const Json& body = stmt->begin().value();
    Kind statement = StatementKind(type, body, &out);
    Walk walk{&out};
    walk.Visit(body);
    if (walk.writes) statement = Kind::kWrite;
    combine(statement);
  }
  out.kind = kind;
  return out;
}

namespace {

// absl's byte classes are the C locale's, without a call into libc for each byte (the key is
// made for every simple query).
bool IsSpace(char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); }
bool IsDigit(char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); }
bool IsAlnum(char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)); }
// A byte of a name as PostgreSQL's lexer reads it.
bool IsIdentChar(char c) {
  return IsAlnum(c) || c == '_' || c == '$' || static_cast<unsigned char>(c) >= 0x80;
}

}  // namespace

std::string LiteralFreeKey(std::string_view sql) {
  std::string key;
  key.reserve(sql.size());
  const size_t n = sql.size();
  auto space = [&] {
    if (!key.empty() && key.back() != ' ') key += ' ';
  };
  size_t i = 0;
  while (i < n) {
    const char c = sql[i];
    if (c == '-' && i + 1 < n && sql[i + 1] == '-') {  // a line comment
      while (i < n && sql[i] != '\n') ++i;
      space();
      continue;
    }
    if (c == '/' && i + 1 < n && sql[i + 1] == '*') {  // a block comment, nested
      int depth = 0;
      while (i < n) {
        if (sql[i] == '/' && i + 1 < n && sql[i + 1] == '*') {
          ++depth;
          i += 2;
        } else if (sql[i] == '*' && i + 1 < n && sql[i + 1] == '/') {
          i += 2;
          if (--depth == 0) break;
        } else {
          ++i;
        }
      }
      space();
      continue;
    }
    if (IsSpace(c)) {
      space();
      ++i;
      continue;
    }
    const bool prefixed = (c == 'E' || c == 'e' || c == 'B' || c == 'b' || c == 'X' || c == 'x' ||
                           c == 'N' || c == 'n') &&
                          i + 1 < n && sql[i + 1] == '\'' &&
                          (key.empty() || !IsIdentChar(key.back()));
    if (c == '\'' || prefixed) {  // a string: its value goes
      const bool backslashes = prefixed && (c == 'E' || c == 'e');
      if (prefixed) ++i;
      ++i;
      while (i < n) {
        if (backslashes && sql[i] == '\\' && i + 1 < n) {
          i += 2;
        } else if (sql[i] == '\'') {
          if (i + 1 < n && sql[i + 1] == '\'') {
            i += 2;
          } else {
            ++i;
            break;
          }
        } else {
          ++i;
        }
      }
      key += "'?'";
      continue;
    }
    if (c == '"') {  // a quoted identifier: kept
      const size_t start = i++;
      while (i < n) {
        if (sql[i] == '"') {
          if (i + 1 < n && sql[i + 1] == '"') {
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        ++i;
      }
      key.append(sql, start, i - start);
      continue;
    }
    if (c == '$' && (key.empty() || !IsIdentChar(key.back()))) {
      // $1 (a parameter) or a dollar-quoted string: $tag$ ... $tag$, kept whole (a body is code).
      // (A tag's characters as PostgreSQL's lexer takes them: letters, digits, '_', and any
      // byte of a multibyte character.)
      size_t j = i + 1;
      while (j < n && IsIdentChar(sql[j]) && sql[j] != '$') ++j;
      if (j < n && sql[j] == '$' && !(j > i + 1 && IsDigit(sql[i + 1]))) {
        const std::string_view tag = sql.substr(i, j - i + 1);
        const size_t end = sql.find(tag, j + 1);
        const size_t stop = end == std::string_view::npos ? n : end + tag.size();
        key.append(sql, i, stop - i);
        i = stop;
        continue;
      }
      key.append(sql, i, j - i);
      i = j;
      continue;
    }
    if ((IsDigit(c) || (c == '.' && i + 1 < n && IsDigit(sql[i + 1]))) &&
        (key.empty() || !IsIdentChar(key.back()))) {
      // A number (with a fraction, an exponent, 0x...): its value goes.
      while (i < n && (IsAlnum(sql[i]) || sql[i] == '.' || sql[i] == '_' ||
                       ((sql[i] == '+' || sql[i] == '-') &&
                        (sql[i - 1] == 'e' || sql[i - 1] == 'E')))) {
        ++i;
      }
      key += '?';
      continue;
    }
    if (IsIdentChar(c)) {  // a word (a keyword or a name, its digits and all): kept whole
      size_t j = i + 1;
      while (j < n && IsIdentChar(sql[j])) ++j;
      key.append(sql.data() + i, j - i);
      i = j;
      continue;
    }
    key += c;
    ++i;
  }
  while (!key.empty() && key.back() == ' ') key.pop_back();
  return key;
}

}  // namespace pgflow::proxy
