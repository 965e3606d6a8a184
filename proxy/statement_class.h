#pragma once

// What a client's SQL does, read by PostgreSQL's own parser (Debian's libpg-query-dev, the
// grammar of PostgreSQL 15): whether it only reads, begins a transaction (read-only or not),
// which functions it calls and which tables it names. The routing proxy (proxy/router.h)
// decides from it where a statement runs; no catalog is read here (a function's volatility is
// the router's to look up).
//
// Thread-safety: every function may be called from any thread at once (libpg_query keeps its
// memory per thread).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgflow::proxy {

struct StatementClass {
  enum class Kind : uint8_t {
    kRead,           // every statement only reads (or does nothing: SHOW, an empty query, ...)
    kBeginReadOnly,  // reads, and begins a read-only transaction (BEGIN READ ONLY, START
                     // TRANSACTION ... READ ONLY)
    kBegin,          // reads, and begins a transaction that may write (a plain BEGIN)
    kWrite,          // a statement writes or takes state only the primary can hold: DML, DDL,
                     // SELECT ... FOR UPDATE/SHARE or INTO, a data-modifying CTE, COPY FROM,
                     // LISTEN, PREPARE, a SET of a setting, a DO block, CALL, ...
    kUnknown,        // the parser could not read it (`error` says why): the primary's to judge
  };
  Kind kind = Kind::kRead;
  // The functions it calls, as written ("name" or "schema.name", the parser's case folding
  // applied): the router looks up their volatility.
  std::vector<std::string> functions;
  // The relations it names ("name" or "schema.name"), for the query cache.
  std::vector<std::string> tables;
  // SET pgflow.min_lsn = '...': the value of the last such statement (the client's own
  // read-your-writes position, which no server holds).
  std::optional<std::string> min_lsn;
  std::string error;  // kUnknown: the parser's message

  bool only_reads() const { return kind == Kind::kRead || kind == Kind::kBeginReadOnly; }
};

// Reads `sql` (one query's text: one statement or several separated by ';').
StatementClass ClassifySql(std::string_view sql);

// `sql` with the values of its literals left out (strings, escape strings, numbers, bit
// strings), comments dropped and runs of white space made one space, read as PostgreSQL's
// lexer reads it: two texts with the same key differ only in literal values, and so classify
// the same (except for the value a SET pgflow.min_lsn gives, which the caller takes from the
// text itself). Quoted identifiers and dollar-quoted bodies are kept whole. A statement
// cache's key: no parser, one pass, no allocation past the result.
std::string LiteralFreeKey(std::string_view sql);

}  // namespace pgflow::proxy
