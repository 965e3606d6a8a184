#include "pooler/query_text.h"

#include <algorithm>
#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
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

// The dollar-quote tag ("$$", "$body$") starting at sql[i] (a '$'), or empty: a positional
// parameter ($1) or a '$' inside a word is none.
std::string_view DollarTag(std::string_view sql, size_t i) {
  size_t k = i + 1;
  if (k < sql.size() && (absl::ascii_isalpha(sql[k]) || sql[k] == '_')) {
    while (k < sql.size() && (absl::ascii_isalnum(sql[k]) || sql[k] == '_')) ++k;
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

// In a function body, the words after which a PL/pgSQL statement starts.
bool OpensBodyStatement(absl::string_view word) {
  for (absl::string_view keyword : {"begin", "then", "else", "loop"}) {
    if (absl::EqualsIgnoreCase(word, keyword)) return true;
  }
  return false;
}

}  // namespace

bool TakesSessionState(std::string_view sql) {
  // Most queries hold neither word: told apart by a plain scan before the tokenizer's.
  if (!MentionsSessionState(sql)) return false;
  auto ident = [](char c) { return absl::ascii_isalnum(c) || c == '_' || c == '$'; };
  bool statement_start = true;
  // The dollar-quoted bodies the scan is in, innermost last (their tags).
  absl::InlinedVector<std::string_view, 2> bodies;
  size_t i = 0;
  while (i < sql.size()) {
    const char c = sql[i];
    const char next = i + 1 < sql.size() ? sql[i + 1] : '\0';
    if (c == '\'' || c == '"') {  // a literal or a quoted identifier
      i = SkipQuoted(sql, i, false);
      statement_start = false;
    } else if (c == '-' && next == '-') {
      while (i < sql.size() && sql[i] != '\n') ++i;
    } else if (c == '/' && next == '*') {
      i = SkipBlockComment(sql, i);
    } else if (c == ';') {
      statement_start = true;
      ++i;
    } else if (absl::ascii_isspace(c) || c == '(') {
      ++i;
    } else if (std::string_view tag = c == '$' ? DollarTag(sql, i) : std::string_view();
               !tag.empty()) {
      // A function body's start or end: its statements are read as statements.
      if (!bodies.empty() && bodies.back() == tag) {
        bodies.pop_back();
        statement_start = false;
      } else {
        bodies.push_back(tag);
        statement_start = true;
      }
      i += tag.size();
    } else if (ident(c)) {
      size_t end = i;
      while (end < sql.size() && ident(sql[end])) ++end;
      absl::string_view word(sql.data() + i, end - i);
      if ((word == "E" || word == "e") && end < sql.size() && sql[end] == '\'') {
        i = SkipQuoted(sql, end, true);  // an escape string
        statement_start = false;
        continue;
      }
      if (statement_start && absl::EqualsIgnoreCase(word, "listen")) return true;
      statement_start = !bodies.empty() && OpensBodyStatement(word);
      if (absl::EqualsIgnoreCase(word, "pg_advisory_lock") ||
          absl::EqualsIgnoreCase(word, "pg_advisory_lock_shared") ||
          absl::EqualsIgnoreCase(word, "pg_try_advisory_lock") ||
          absl::EqualsIgnoreCase(word, "pg_try_advisory_lock_shared")) {
        size_t k = end;
        while (k < sql.size() && absl::ascii_isspace(sql[k])) ++k;
        if (k < sql.size() && sql[k] == '(') return true;
      }
      i = end;
    } else {
      statement_start = false;
      ++i;
    }
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
