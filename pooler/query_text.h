#pragma once

// The pooler's pure helpers over what clients send: the text of their queries (what the relay
// must notice of it in transaction pooling, and what it sends the server instead of a query it
// refuses), the names of their prepared statements, and the settings of their startup packets.
// No I/O; each function reads only its arguments.

#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace pgflow::pooler {

// `s` in ASCII lower case: setting names compare case-insensitively (Debian's abseil takes its
// own string_view).
std::string Lower(std::string_view s);

// The pooler's name for a statement a client prepared: the same for the same query and
// parameter types, whichever client prepared it, so that a server connection prepares each
// once.
std::string ServerStatementName(std::string_view parse_rest);

// --- what a query does -------------------------------------------------------------------

// Whether `sql` (a query's text, or its start) takes state that outlives its transaction and
// which transaction pooling would lose: a statement starting with LISTEN, or a call of a
// session-level advisory lock (pg_advisory_lock, pg_try_advisory_lock and their _shared forms,
// by name in any case, quoted in lower case, schema-qualified or not; the _xact_ ones end with
// the transaction). The text is read as PostgreSQL's lexer reads it: string literals (escape
// strings, E'...', with their backslash escapes), quoted identifiers and comments (nested) are
// skipped, and a dollar-quoted body ends at its tag wherever it stands. In a body ($$...$$, a
// function's or a DO block's) a call counts, and so does a LISTEN that starts one of its
// statements (after BEGIN, THEN, ELSE, LOOP or ';'). Not seen: a query built in a string
// (EXECUTE 'LISTEN x'), a name in Unicode escapes (U&"..."), and a backslash escaping a quote
// in a plain literal under standard_conforming_strings off (the default is on).
bool TakesSessionState(std::string_view sql);

// Whether `sql` may change a session's setting: a SET or RESET (but SET LOCAL, SET
// TRANSACTION, SET CONSTRAINTS: they end with the transaction), or a call of set_config.
// (Conservative: a statement that only mentions set_config, or a SET in a later statement of a
// string, counts too when seen.)
bool ChangesSettings(std::string_view sql);

// Whether a query's text is DEALLOCATE [PREPARE] ALL or DISCARD ALL (alone, case and spaces
// as SQL allows, a trailing semicolon). Runs on every query in transaction pooling: it
// allocates nothing, and most queries are told apart by their first letter.
bool DeallocatesAll(std::string_view sql);

// The SQL text of a query ('Q') or a Parse ('P'), given the message's body: a Parse's
// statement name is skipped, and the text ends at its terminating zero (or with the body, when
// only the start of a long query has come).
std::string_view QueryText(char type, std::string_view body);

// --- refused queries ---------------------------------------------------------------------

// What the server is sent instead of a query the pooler refuses: a statement that fails with
// `sqlstate` and `reason`, so that the server's transaction state stays exact (an error inside
// a transaction block aborts it).
std::string FailingQuery(std::string_view sqlstate, std::string_view reason);

// What the server is sent instead of a Parse (of statement `name`) the pooler refuses: one that
// fails at parse time, whatever parameters its Bind would bring, by a cast whose error (SQLSTATE
// 22P02, invalid text representation: a Parse cannot raise a chosen one) quotes `reason`.
std::string FailingParse(std::string_view name, std::string_view reason);

// The failing statement for one that takes session state under session_state: refuse
// (`body` the original message's, for a Parse's statement name).
std::string RefusedSessionState(char type, std::string_view body);

// --- startup parameters ------------------------------------------------------------------

// Adds the settings of a startup packet's `options` (what PGOPTIONS holds: "-c a=1 --b=2",
// backslash escaping a space) to `params`; other switches are refused, naming them (an
// InvalidArgument error; the settings before the refused word are added).
absl::Status ParseOptionsParameter(std::string_view options,
                                   absl::flat_hash_map<std::string, std::string>* params);

// Parameters PostgreSQL reports that no SET can change.
bool IsReadOnlyParameter(std::string_view name);

// Startup parameters that are not settings to pass on.
bool IsConnectionParameter(std::string_view name);

}  // namespace pgflow::pooler
