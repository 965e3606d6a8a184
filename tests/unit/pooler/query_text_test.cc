// The pooler's helpers over query text and startup options, fed what clients send: the queries
// transaction pooling must notice (LISTEN, advisory locks, DEALLOCATE ALL), the bodies of the
// messages that carry them, and PGOPTIONS strings.

#include "pooler/query_text.h"

#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pooler/protocol.h"

namespace pgflow::pooler {
namespace {

using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

// The body of a Parse (what follows its five-byte header) of `query` as statement `name`.
std::string ParseBody(std::string_view name, std::string_view query) {
  std::string rest(query);
  rest.push_back('\0');
  AppendInt16(&rest, 0);  // no parameter types
  std::string message;
  AppendParse(&message, name, rest);
  return message.substr(5);
}

// The body of a simple Query.
std::string QueryBody(std::string_view sql) {
  std::string message;
  AppendQuery(&message, sql);
  return message.substr(5);
}

TEST(PoolerQueryTextTest, SetResetAndSetConfigChangeSettingsButTransactionScopedSetsDoNot) {
  for (const char* sql : {"SET search_path = app", "  set Role alice", "RESET ALL",
                          "SELECT 1; SET bytea_output = hex",
                          "SELECT SET_CONFIG('search_path', 'app', false)", "SET SCHEMA 'app'"}) {
    EXPECT_TRUE(ChangesSettings(sql)) << sql;
  }
  for (const char* sql :
       {"SELECT 1", "SET LOCAL search_path = app", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "set constraints all deferred", "SELECT settings FROM t", ""}) {
    EXPECT_FALSE(ChangesSettings(sql)) << sql;
  }
}

TEST(PoolerQueryTextTest, ListenAtTheStartOfAStatementTakesSessionState) {
  for (const char* sql : {"LISTEN orders", "listen orders;", "  \n\tListen orders",
                          "SELECT 1; LISTEN orders", "/* subscribe */ LISTEN orders"}) {
    EXPECT_TRUE(TakesSessionState(sql)) << sql;
  }
  // Not a statement's first word (a column, an argument), or another word.
  for (const char* sql :
       {"SELECT listen FROM t", "NOTIFY listen", "UNLISTEN orders", "SELECT 1", ""}) {
    EXPECT_FALSE(TakesSessionState(sql)) << sql;
  }
}

TEST(PoolerQueryTextTest, SessionAdvisoryLockCallsTakeSessionStateInAnyCase) {
  for (const char* sql : {"SELECT pg_advisory_lock(1)", "select PG_ADVISORY_LOCK(42)",
                          "SELECT Pg_Advisory_Lock (1, 2)", "SELECT pg_advisory_lock_shared(1)",
                          "SELECT pg_try_advisory_lock(1)",
                          "SELECT x FROM t WHERE pg_try_advisory_lock_shared(t.id)"}) {
    EXPECT_TRUE(TakesSessionState(sql)) << sql;
  }
  // A column of that name is no call; unlocking takes nothing.
  for (const char* sql : {"SELECT pg_advisory_lock FROM locks", "SELECT pg_advisory_unlock(1)",
                          "SELECT pg_advisory_unlock_all()"}) {
    EXPECT_FALSE(TakesSessionState(sql)) << sql;
  }
}

TEST(PoolerQueryTextTest, TransactionLevelAdvisoryLocksDoNotCount) {
  for (const char* sql :
       {"SELECT pg_advisory_xact_lock(1)", "SELECT pg_advisory_xact_lock_shared(1)",
        "SELECT pg_try_advisory_xact_lock(1)", "SELECT PG_TRY_ADVISORY_XACT_LOCK_SHARED(1)"}) {
    EXPECT_FALSE(TakesSessionState(sql)) << sql;
  }
}

TEST(PoolerQueryTextTest, LiteralsQuotedIdentifiersAndCommentsDoNotCount) {
  for (const char* sql :
       {"SELECT 'pg_advisory_lock(1)'", "SELECT 'it''s pg_advisory_lock(1)'",
        "INSERT INTO log VALUES ('LISTEN orders')", "SELECT \"PG_ADVISORY_LOCK\"(1)",
        "SELECT 1 AS \"LISTEN\"", "-- SELECT pg_advisory_lock(1)\nSELECT 1",
        "SELECT 1 /* LISTEN orders; pg_advisory_lock(1) */", "SELECT 1; -- LISTEN orders"}) {
    EXPECT_FALSE(TakesSessionState(sql)) << sql;
  }
  // What follows a literal or a comment is read again.
  for (const char* sql : {"SELECT 'x', pg_advisory_lock(1)",
                          "SELECT /* lock */ pg_advisory_lock(1)", "-- subscribe\nLISTEN orders"}) {
    EXPECT_TRUE(TakesSessionState(sql)) << sql;
  }
}

TEST(PoolerQueryTextTest, CallsInFunctionBodiesCount) {
  EXPECT_TRUE(TakesSessionState("DO $$BEGIN PERFORM pg_advisory_lock(7); END$$"));
  EXPECT_TRUE(
      TakesSessionState("CREATE FUNCTION f() RETURNS void AS $body$ SELECT "
                        "pg_try_advisory_lock(1) $body$ LANGUAGE sql"));
  EXPECT_FALSE(TakesSessionState("DO $$BEGIN PERFORM pg_advisory_xact_lock(7); END$$"));
}

TEST(PoolerQueryTextTest, ListenStartingAStatementOfAFunctionBodyCounts) {
  for (const char* sql :
       {"DO $$BEGIN LISTEN orders; END$$", "DO $$ DECLARE n int; BEGIN n := 1; LISTEN x; END $$",
        "DO $do$BEGIN IF true THEN LISTEN orders; END IF; END$do$",
        "CREATE FUNCTION f() RETURNS void AS $$ LISTEN orders $$ LANGUAGE sql"}) {
    EXPECT_TRUE(TakesSessionState(sql)) << sql;
  }
  // Not a statement of the body, or after the body has ended; a parameter is no tag.
  for (const char* sql : {"DO $$BEGIN PERFORM listen FROM t; END$$", "SELECT $$x$$ AS listen",
                          "DO $$BEGIN NULL; END$$; SELECT listen FROM t", "SELECT $1 listen",
                          "DO $$BEGIN EXECUTE 'LISTEN orders'; END$$"}) {
    EXPECT_FALSE(TakesSessionState(sql)) << sql;
  }
}

TEST(PoolerQueryTextTest, LockCallsAreSeenAsPostgreSQLReadsThem) {
  // A quoted name is the function when its case matches; a comment may stand before the
  // arguments; a schema may qualify it.
  for (const char* sql :
       {"SELECT \"pg_advisory_lock\"(1)", "SELECT pg_catalog.\"pg_advisory_lock\"(1)",
        "SELECT pg_catalog.pg_try_advisory_lock(1)", "SELECT pg_advisory_lock/* why */(1)",
        "SELECT pg_advisory_lock -- the lock\n(1)"}) {
    EXPECT_TRUE(TakesSessionState(sql)) << sql;
  }
}

TEST(PoolerQueryTextTest, DollarQuotesEndAtTheirTagWhereverItStands) {
  // END$$ closes the body (the tag is not part of the word), and what a body holds ('"/* --)
  // opens nothing outside it.
  for (const char* sql : {"DO $$BEGIN NULL; END$$; DO $$BEGIN LISTEN x; END$$",
                          "SELECT $$'$$; LISTEN x", "SELECT $$/*$$; SELECT pg_advisory_lock(1)",
                          "SELECT $a$ $$ $a$; LISTEN x", "SELECT 1; --c\rLISTEN x"}) {
    EXPECT_TRUE(TakesSessionState(sql)) << sql;
  }
  // Letters beyond ASCII are a word's (PostgreSQL's lexer reads them so).
  EXPECT_TRUE(TakesSessionState("SELECT 1 AS \xc3\xa9$$; DO $$BEGIN LISTEN x; END$$"));
  EXPECT_TRUE(TakesSessionState("DO $\xc3\xa9$BEGIN LISTEN x; END $\xc3\xa9$"));
  // A body not closed yet (a long query judged by the start that came) is read as far as it goes.
  EXPECT_TRUE(TakesSessionState("CREATE FUNCTION f() RETURNS void AS $$ LISTEN x"));
}

TEST(PoolerQueryTextTest, EscapeStringsAndNestedCommentsAreSkippedWhole) {
  // A backslash-escaped quote does not end an escape string: what follows it is read.
  EXPECT_TRUE(TakesSessionState(R"(SELECT E'\'', pg_advisory_lock(1))"));
  EXPECT_TRUE(TakesSessionState(R"(SELECT e'a\\', pg_advisory_lock(1))"));
  EXPECT_FALSE(TakesSessionState(R"(SELECT E'\' pg_advisory_lock(1) ')"));
  // In a plain literal a backslash is a character (standard_conforming_strings).
  EXPECT_TRUE(TakesSessionState(R"(SELECT 'C:\', pg_advisory_lock(1))"));
  // PostgreSQL's block comments nest.
  EXPECT_FALSE(TakesSessionState("SELECT 1 /* a /* nested */ pg_advisory_lock(1) */"));
  EXPECT_TRUE(TakesSessionState("SELECT 1 /* a /* nested */ */ , pg_advisory_lock(1)"));
}

TEST(PoolerQueryTextTest, DeallocatesAllRecognizesTheStatementsThatDropEveryStatement) {
  for (const char* sql :
       {"DEALLOCATE ALL", "deallocate all;", "  Deallocate\n\tALL ;  ", "deallocate prepare all;",
        "DEALLOCATE PREPARE ALL", "DISCARD ALL", "discard all;"}) {
    EXPECT_TRUE(DeallocatesAll(sql)) << sql;
  }
}

TEST(PoolerQueryTextTest, DeallocatesAllRefusesEverythingElse) {
  for (const char* sql :
       {"DEALLOCATE foo", "DEALLOCATE PREPARE foo", "DEALLOCATE", "DISCARD PLANS", "DISCARD TEMP",
        "DISCARD PREPARE ALL", "DEALLOCATE ALL; SELECT 1" /* not alone */,
        "SELECT 'DEALLOCATE ALL'", "DELETE FROM t", "", " ; "}) {
    EXPECT_FALSE(DeallocatesAll(sql)) << sql;
  }
}

TEST(PoolerQueryTextTest, QueryTextOfAQuery) {
  EXPECT_EQ(QueryText('Q', QueryBody("SELECT 1")), "SELECT 1");
  // Only the start of a long query has come: the text ends with the body.
  EXPECT_EQ(QueryText('Q', "SELECT 1, 2"), "SELECT 1, 2");
  EXPECT_EQ(QueryText('Q', QueryBody("")), "");
}

TEST(PoolerQueryTextTest, QueryTextOfAParseSkipsTheStatementName) {
  EXPECT_EQ(QueryText('P', ParseBody("stmt1", "SELECT $1::int")), "SELECT $1::int");
  EXPECT_EQ(QueryText('P', ParseBody("", "LISTEN orders")), "LISTEN orders");
  EXPECT_EQ(QueryText('P', std::string("s\0SELECT 1, ", 12)), "SELECT 1, ");
  // The name is no query: a Parse named after one is read by its text.
  EXPECT_FALSE(TakesSessionState(QueryText('P', ParseBody("LISTEN", "SELECT 1"))));
}

TEST(PoolerQueryTextTest, OptionsParameterTakesBothSwitchForms) {
  absl::flat_hash_map<std::string, std::string> params;
  ASSERT_TRUE(ParseOptionsParameter("-c a=1 --b=2", &params).ok());
  EXPECT_THAT(params, UnorderedElementsAre(Pair("a", "1"), Pair("b", "2")));

  params.clear();
  ASSERT_TRUE(ParseOptionsParameter("-csearch_path=app,public  \t--Work-Mem=64MB", &params).ok());
  // Names fold to lower case and dashes to underscores, as PostgreSQL's do.
  EXPECT_THAT(params,
              UnorderedElementsAre(Pair("search_path", "app,public"), Pair("work_mem", "64MB")));

  params.clear();
  ASSERT_TRUE(ParseOptionsParameter("-c options=a=b", &params).ok());
  EXPECT_THAT(params, UnorderedElementsAre(Pair("options", "a=b")));  // split at the first '='
}

TEST(PoolerQueryTextTest, OptionsParameterKeepsABackslashEscapedSpace) {
  absl::flat_hash_map<std::string, std::string> params;
  ASSERT_TRUE(ParseOptionsParameter(R"(-c application_name=my\ app -c x=\\)", &params).ok());
  EXPECT_THAT(params, UnorderedElementsAre(Pair("application_name", "my app"), Pair("x", "\\")));
}

TEST(PoolerQueryTextTest, OptionsParameterOverridesEarlierValues) {
  absl::flat_hash_map<std::string, std::string> params = {{"a", "0"}, {"keep", "1"}};
  ASSERT_TRUE(ParseOptionsParameter("-c a=1", &params).ok());
  EXPECT_THAT(params, UnorderedElementsAre(Pair("a", "1"), Pair("keep", "1")));
  ASSERT_TRUE(ParseOptionsParameter("", &params).ok());
  EXPECT_EQ(params.size(), 2u);
}

TEST(PoolerQueryTextTest, OptionsParameterRefusesOtherSwitchesNamingThem) {
  absl::flat_hash_map<std::string, std::string> params;
  absl::Status status = ParseOptionsParameter("-c a=1 -F", &params);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("unsupported startup option '-F'"));
  EXPECT_THAT(params, UnorderedElementsAre(Pair("a", "1")));  // what came before it

  status = ParseOptionsParameter("-c", &params);  // a -c with nothing after it
  EXPECT_THAT(std::string(status.message()), HasSubstr("'-c'"));

  status = ParseOptionsParameter("-c novalue", &params);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("'novalue' is not name=value"));

  EXPECT_FALSE(ParseOptionsParameter("--=1", &params).ok());  // no name
}

TEST(PoolerQueryTextTest, ServerStatementNameIsTheSameForTheSameStatementOnly) {
  const std::string rest = ParseBody("", "SELECT $1::int").substr(1);
  EXPECT_EQ(ServerStatementName(rest), ServerStatementName(rest));
  EXPECT_NE(ServerStatementName(rest), ServerStatementName(ParseBody("", "SELECT 2").substr(1)));
  // The parameter types are part of the statement.
  std::string typed = "SELECT $1";
  typed.push_back('\0');
  AppendInt16(&typed, 1);
  AppendInt32(&typed, 23);  // int4
  std::string untyped = "SELECT $1";
  untyped.push_back('\0');
  AppendInt16(&untyped, 0);
  EXPECT_NE(ServerStatementName(typed), ServerStatementName(untyped));
  // A name PostgreSQL keeps whole (NAMEDATALEN 64), the pooler's own.
  EXPECT_THAT(ServerStatementName(rest), ::testing::StartsWith("pgflow_"));
  EXPECT_LT(ServerStatementName(rest).size(), 64u);
}

TEST(PoolerQueryTextTest, RefusedStatementsFailOnTheServer) {
  std::string query = RefusedSessionState('Q', QueryBody("LISTEN orders"));
  ASSERT_FALSE(query.empty());
  EXPECT_EQ(query[0], 'Q');
  EXPECT_THAT(query, HasSubstr("ERRCODE = '0A000'"));
  EXPECT_THAT(query, HasSubstr("pool_mode: session or session_state: pin"));

  // A refused Parse is a Parse of the same statement, one that fails at parse time.
  std::string parse = RefusedSessionState('P', ParseBody("stmt1", "LISTEN orders"));
  ASSERT_FALSE(parse.empty());
  EXPECT_EQ(parse[0], 'P');
  std::optional<ParseMessage> split = SplitParse(std::string_view(parse).substr(5));
  ASSERT_TRUE(split.has_value());
  EXPECT_EQ(split->name, "stmt1");
  EXPECT_THAT(std::string(split->query), HasSubstr("::pg_catalog.int4"));
}

TEST(PoolerQueryTextTest, ParameterClasses) {
  EXPECT_EQ(Lower("DateStyle"), "datestyle");
  EXPECT_TRUE(IsReadOnlyParameter("server_version"));
  EXPECT_TRUE(IsReadOnlyParameter("is_superuser"));
  EXPECT_FALSE(IsReadOnlyParameter("application_name"));
  for (const char* name : {"user", "database", "replication", "options"}) {
    EXPECT_TRUE(IsConnectionParameter(name)) << name;
  }
  EXPECT_FALSE(IsConnectionParameter("application_name"));
}

}  // namespace
}  // namespace pgflow::pooler
