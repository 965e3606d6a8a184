#include "pooler/query_text.h"

#include <algorithm>
#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/digest.h"
#include "engine/str_cat.h"
#include "pooler/protocol.h"

namespace pgflow::pooler {
namespace {

// Whether `text` holds "listen" or "advisory_lock", in any case: one pass, each candidate
// dropped at its first differing letter (it runs on every query in transaction mode).
bool MentionsSessionState(std::string_view text) {
  static constexpr std::string_view kListen = "listen", kLock = "advisory_lock";
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = absl::ascii_tolower(text[i]);
    const std::string_view word = c == 'l' ? kListen : c == 'a' ? kLock : std::string_view();
    if (word.empty() || text.size() - i < word.size()) continue;
    size_t k = 1;
    while (k < word.size() && absl::ascii_tolower(text[i + k]) == word[k]) ++k;
    if (k == word.size()) return true;
  }
  return false;
}

}  // namespace

std::string Lower(std::string_view s) {
  return absl::AsciiStrToLower(absl::string_view(s.data(), s.size()));
}

std::string ServerStatementName(std::string_view parse_rest) {
  return Cat("pgflow_", Sha256Hex(parse_rest).substr(0, 24));
}

namespace {

// Characters of PostgreSQL's identifiers (bytes from 0x80 up are letters to its lexer).
bool IdentStart(char c) {
  return absl::ascii_isalpha(c) || c == '_' || static_cast<unsigned char>(c) >= 0x80;
}
bool IdentChar(char c) { return IdentStart(c) || absl::ascii_isdigit(c) || c == '$'; }

// The dollar-quote tag ("$$", "$body$") starting at sql[i] (a '$'), or empty: a positional
// parameter ($1) is none.
std::string_view DollarTag(std::string_view sql, size_t i) {
  size_t k = i + 1;
  if (k < sql.size() && IdentStart(sql[k])) {
    while (k < sql.size() && (IdentStart(sql[k]) || absl::ascii_isdigit(sql[k]))) ++k;
  }
  if (k < sql.size() && sql[k] == '$') return sql.substr(i, k + 1 - i);
  return {};
}

// The end of the literal or quoted identifier opening with the quote at sql[i] (one past its
// closing quote, or the end of `sql`): a doubled quote stands for itself, and in an escape
// string (E'...', `backslashes`) a backslash escapes the next character.
size_t SkipQuoted(std::string_view sql, size_t i, bool backslashes) {
  const char quote = sql[i];
  for (++i; i < sql.size(); ++i) {
    if (backslashes && sql[i] == '\\') {
      ++i;
    } else if (sql[i] == quote) {
      if (i + 1 < sql.size() && sql[i + 1] == quote) {
        ++i;
      } else {
        return i + 1;
      }
    }
  }
  return sql.size();
}

// The end of the block comment opening at sql[i] ("/*"): PostgreSQL's nest.
size_t SkipBlockComment(std::string_view sql, size_t i) {
  int depth = 0;
  while (i + 1 < sql.size()) {
    if (sql[i] == '/' && sql[i + 1] == '*') {
      ++depth;
      i += 2;
    } else if (sql[i] == '*' && sql[i + 1] == '/') {
      i += 2;
      if (--depth == 0) return i;
    } else {
      ++i;
    }
  }
  return sql.size();
}

// The end of the comment starting at sql[i], or i when none does.
size_t SkipComment(std::string_view sql, size_t i) {
  if (i + 1 >= sql.size()) return i;
  if (sql[i] == '-' && sql[i + 1] == '-') {
    while (i < sql.size() && sql[i] != '\n' && sql[i] != '\r') ++i;
  } else if (sql[i] == '/' && sql[i + 1] == '*') {
    i = SkipBlockComment(sql, i);
  }
  return i;
}

// Whether what follows sql[i] (spaces and comments skipped) opens a call's arguments.
bool CallFollows(std::string_view sql, size_t i) {
  while (i < sql.size()) {
    if (absl::ascii_isspace(sql[i])) {
      ++i;
    } else if (size_t end = SkipComment(sql, i); end != i) {
      i = end;
    } else {
      return sql[i] == '(';
    }
  }
  return false;
}

// Whether `name` is a session-level advisory lock function: any case unquoted, lower case
// quoted.
bool IsSessionLock(std::string_view name, bool quoted) {
  for (std::string_view function : {"pg_advisory_lock", "pg_advisory_lock_shared",
                                    "pg_try_advisory_lock", "pg_try_advisory_lock_shared"}) {
    if (quoted ? name == function
               : absl::EqualsIgnoreCase(absl::string_view(name.data(), name.size()),
                                        absl::string_view(function.data(), function.size()))) {
      return true;
    }
  }
  return false;
}

// In a function body, the words after which a PL/pgSQL statement starts.
bool OpensBodyStatement(absl::string_view word) {
  for (absl::string_view keyword : {"begin", "then", "else", "loop"}) {
    if (absl::EqualsIgnoreCase(word, keyword)) return true;
  }
  return false;
}

// TakesSessionState over `sql`, the whole text (`body` false) or a dollar-quoted body in it.
bool ScanForSessionState(std::string_view sql, bool body) {
  bool statement_start = true;
  size_t i = 0;
  while (i < sql.size()) {
    const char c = sql[i];
    if (size_t end = SkipComment(sql, i); end != i) {
      i = end;
    } else if (c == '\'') {  // a literal
      i = SkipQuoted(sql, i, false);
      statement_start = false;
    } else if (c == '"') {  // a quoted identifier: a function's name, perhaps
      const size_t end = SkipQuoted(sql, i, false);
      if (end - i >= 2 && sql[end - 1] == '"' &&
          IsSessionLock(sql.substr(i + 1, end - i - 2), true) && CallFollows(sql, end)) {
        return true;
      }
      i = end;
      statement_start = false;
    } else if (c == ';') {
      statement_start = true;
      ++i;
    } else if (absl::ascii_isspace(c) || c == '(') {
      ++i;
    } else if (std::string_view tag = c == '$' ? DollarTag(sql, i) : std::string_view();
               !tag.empty()) {
      // A function body (or a dollar-quoted string): it ends at its tag, wherever that stands,
      // and its statements are read as statements.
      const size_t open = i + tag.size();
      const size_t close = sql.find(tag, open);
      const std::string_view inside =
          sql.substr(open, close == std::string_view::npos ? std::string_view::npos : close - open);
      if (ScanForSessionState(inside, true)) return true;
      i = close == std::string_view::npos ? sql.size() : close + tag.size();
      statement_start = false;
    } else if (IdentChar(c)) {
      size_t end = i;
      while (end < sql.size() && IdentChar(sql[end])) ++end;
      const std::string_view word = sql.substr(i, end - i);
      if ((word == "E" || word == "e") && end < sql.size() && sql[end] == '\'') {
        i = SkipQuoted(sql, end, true);  // an escape string
        statement_start = false;
        continue;
      }
      if (statement_start &&
          absl::EqualsIgnoreCase(absl::string_view(word.data(), word.size()), "listen")) {
        return true;
      }
      statement_start = body && OpensBodyStatement(absl::string_view(word.data(), word.size()));
      if (IsSessionLock(word, false) && CallFollows(sql, end)) return true;
      i = end;
    } else {
      statement_start = false;
      ++i;
    }
  }
  return false;
}

}  // namespace

bool TakesSessionState(std::string_view sql) {
  // Most queries hold neither word: told apart by a plain scan before the tokenizer's.
  return MentionsSessionState(sql) && ScanForSessionState(sql, false);
}

bool ChangesSettings(std::string_view sql) {
  static constexpr std::string_view kSetConfig = "set_config";
  if (std::search(sql.begin(), sql.end(), kSetConfig.begin(), kSetConfig.end(),
                  [](char a, char b) { return absl::ascii_tolower(a) == b; }) != sql.end()) {
    return true;
  }
  // The statements' first words.
  for (size_t start = 0; start < sql.size();) {
    start = sql.find_first_not_of(" \t\r\n;", start);
    if (start == std::string_view::npos) break;
    size_t end = sql.find_first_of(" \t\r\n;", start);
    if (end == std::string_view::npos) end = sql.size();
    const std::string word = Lower(sql.substr(start, end - start));
    if (word == "reset") return true;
    if (word == "set") {
      const size_t next = sql.find_first_not_of(" \t\r\n", end);
      const std::string second =
          next == std::string_view::npos ? std::string() : Lower(sql.substr(next, 11));
      if (!second.starts_with("local") && !second.starts_with("transaction") &&
          !second.starts_with("constraints")) {
        return true;
      }
    }
    const size_t semicolon = sql.find(';', end);  // (the next statement, roughly)
    if (semicolon == std::string_view::npos) break;
    start = semicolon + 1;
  }
  return false;
}

bool DeallocatesAll(std::string_view sql) {
  const size_t start = sql.find_first_not_of(" \t\r\n;");
  if (start == std::string_view::npos || (sql[start] != 'd' && sql[start] != 'D')) return false;
  std::array<absl::string_view, 3> words;
  size_t count = 0;
  for (absl::string_view word : absl::StrSplit(absl::string_view(sql.data(), sql.size()),
                                               absl::ByAnyChar(" \t\r\n;"), absl::SkipEmpty())) {
    if (count == words.size()) return false;
    words[count++] = word;
  }
  auto is = [&](size_t i, absl::string_view expected) {
    return absl::EqualsIgnoreCase(words[i], expected);
  };
  if (count == 2) return (is(0, "deallocate") || is(0, "discard")) && is(1, "all");
  return count == 3 && is(0, "deallocate") && is(1, "prepare") && is(2, "all");
}

std::string_view QueryText(char type, std::string_view body) {
  if (type == 'P') body.remove_prefix(std::min(body.size(), body.find('\0') + 1));
  return body.substr(0, body.find('\0'));
}

std::string FailingQuery(std::string_view sqlstate, std::string_view reason) {
  std::string out;
  AppendQuery(&out, Cat("DO $pgflow$BEGIN RAISE EXCEPTION USING ERRCODE = ", QuoteLiteral(sqlstate),
                        ", MESSAGE = ", QuoteLiteral(reason), "; END$pgflow$"));
  return out;
}

std::string FailingParse(std::string_view name, std::string_view reason) {
  std::string rest = Cat("SELECT ", QuoteLiteral(reason), "::pg_catalog.int4");
  rest.push_back('\0');
  AppendInt16(&rest, 0);
  std::string out;
  AppendParse(&out, name, rest);
  return out;
}

std::string RefusedSessionState(char type, std::string_view body) {
  constexpr std::string_view kReason =
      "pgflow pooler: LISTEN and session-level advisory locks are refused in transaction "
      "pooling (they would stay with a server connection other clients then use); use "
      "pool_mode: session or session_state: pin for this database";
  if (type == 'Q') return FailingQuery("0A000", kReason);
  return FailingParse(body.substr(0, body.find('\0')), kReason);
}

absl::Status ParseOptionsParameter(std::string_view options,
                                   absl::flat_hash_map<std::string, std::string>* params) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < options.size(); ++i) {
    char c = options[i];
    if (c == '\\' && i + 1 < options.size()) {
      word.push_back(options[++i]);
      in_word = true;
    } else if (absl::ascii_isspace(c)) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word.push_back(c);
      in_word = true;
    }
  }
  if (in_word) words.push_back(std::move(word));
  for (size_t i = 0; i < words.size(); ++i) {
    std::string setting;
    if (words[i] == "-c" && i + 1 < words.size()) {
      setting = words[++i];
    } else if (words[i].rfind("-c", 0) == 0 && words[i].size() > 2) {
      setting = words[i].substr(2);
    } else if (words[i].rfind("--", 0) == 0) {
      setting = words[i].substr(2);
    } else {
      return absl::InvalidArgumentError(Cat("unsupported startup option '", words[i],
                                            "': the pooler passes on -c name=value "
                                            "and --name=value only"));
    }
    size_t eq = setting.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(Cat("startup option '", setting, "' is not name=value"));
    }
    std::string name = Lower(setting.substr(0, eq));
    std::replace(name.begin(), name.end(), '-', '_');
    (*params)[name] = setting.substr(eq + 1);
  }
  return absl::OkStatus();
}

bool IsReadOnlyParameter(std::string_view name) {
  return name == "server_version" || name == "server_encoding" || name == "is_superuser" ||
         name == "session_authorization" || name == "integer_datetimes" ||
         name == "in_hot_standby" || name == "scram_iterations";
}

bool IsConnectionParameter(std::string_view name) {
  return name == "user" || name == "database" || name == "replication" || name == "options";
}

}  // namespace pgflow::pooler
