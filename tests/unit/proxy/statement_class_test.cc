#include "proxy/statement_class.h"

#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace pgflow::proxy {
namespace {

using Kind = StatementClass::Kind;

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kRead:
      return "read";
    case Kind::kBeginReadOnly:
      return "begin read only";
    case Kind::kBegin:
      return "begin";
    case Kind::kWrite:
      return "write";
    case Kind::kUnknown:
      return "unknown";
  }
  return "?";
}

TEST(StatementClassTest, TellsReadsFromWhatOnlyThePrimaryCanRun) {
  const std::vector<std::pair<std::string, Kind>> cases = {
      {"SELECT 1", Kind::kRead},
      {"select * from items where id = 1", Kind::kRead},
      {"WITH t AS (SELECT * FROM items) SELECT * FROM t", Kind::kRead},
      {"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) "
       "SELECT sum(n) FROM r",
       Kind::kRead},
      {"SHOW search_path", Kind::kRead},
      {"EXPLAIN SELECT * FROM items", Kind::kRead},
      {"EXPLAIN ANALYZE SELECT 1", Kind::kRead},
      {"VALUES (1), (2)", Kind::kRead},
      {"TABLE items", Kind::kRead},
      {"COPY (SELECT 1) TO STDOUT", Kind::kRead},
      {"COPY items TO STDOUT", Kind::kRead},
      {"SELECT 'DELETE FROM items'", Kind::kRead},
      {"SELECT $$INSERT INTO x$$", Kind::kRead},
      {"-- a comment\nSELECT 1", Kind::kRead},
      {"", Kind::kRead},
      {"SET TRANSACTION READ ONLY", Kind::kRead},
      {"SET LOCAL statement_timeout = 5", Kind::kRead},
      {"SELECT 1; SELECT 2", Kind::kRead},
      {"BEGIN READ ONLY", Kind::kBeginReadOnly},
      {"START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", Kind::kBeginReadOnly},
      {"BEGIN READ ONLY; SELECT 1; COMMIT", Kind::kBeginReadOnly},
      {"BEGIN", Kind::kBegin},
      {"BEGIN READ WRITE", Kind::kWrite},
      {"START TRANSACTION READ WRITE", Kind::kWrite},
      {"SET TRANSACTION READ WRITE", Kind::kWrite},
      {"EXPLAIN ANALYZE CREATE TABLE made AS SELECT 1", Kind::kWrite},
      {"EXPLAIN ANALYZE EXECUTE p", Kind::kWrite},
      {"EXPLAIN SELECT * FROM items FOR UPDATE", Kind::kWrite},
      {"START TRANSACTION", Kind::kBegin},
      {"BEGIN; SELECT 1; COMMIT", Kind::kBegin},
      {"INSERT INTO events (msg) VALUES ('x')", Kind::kWrite},
      {"UPDATE items SET name = name", Kind::kWrite},
      {"DELETE FROM items", Kind::kWrite},
      {"MERGE INTO items i USING prices p ON p.id = i.id WHEN MATCHED THEN DO NOTHING",
       Kind::kWrite},
      {"WITH d AS (DELETE FROM events RETURNING *) SELECT count(*) FROM d", Kind::kWrite},
      {"SELECT * FROM items FOR UPDATE", Kind::kWrite},
      {"SELECT * FROM items FOR KEY SHARE SKIP LOCKED", Kind::kWrite},
      {"SELECT * FROM (SELECT * FROM items FOR SHARE) s", Kind::kWrite},
      {"SELECT * INTO copy FROM items", Kind::kWrite},
      {"CREATE TABLE x (a int)", Kind::kWrite},
      {"CREATE TEMP TABLE x (a int)", Kind::kWrite},
      {"TRUNCATE items", Kind::kWrite},
      {"VACUUM items", Kind::kWrite},
      {"LISTEN ch", Kind::kWrite},
      {"NOTIFY ch", Kind::kWrite},
      {"SET search_path = app", Kind::kWrite},
      {"RESET ALL", Kind::kWrite},
      {"PREPARE p AS SELECT 1", Kind::kWrite},
      {"DO $$ BEGIN PERFORM 1; END $$", Kind::kWrite},
      {"CALL app.proc()", Kind::kWrite},
      {"COPY items FROM STDIN", Kind::kWrite},
      {"COPY items TO '/tmp/items'", Kind::kWrite},
      {"EXPLAIN ANALYZE INSERT INTO events VALUES (1)", Kind::kWrite},
      {"SELECT 1; INSERT INTO events VALUES (1)", Kind::kWrite},
      {"BEGIN READ ONLY; INSERT INTO events VALUES (1); COMMIT", Kind::kWrite},
      {"PREPARE TRANSACTION 'x'", Kind::kWrite},
      {"SELEC 1", Kind::kUnknown},
  };
  for (const auto& [sql, kind] : cases) {
    EXPECT_STREQ(KindName(ClassifySql(sql).kind), KindName(kind)) << sql;
  }
}

TEST(StatementClassTest, NamesTheFunctionsCalledAndTheTablesRead) {
  StatementClass statement = ClassifySql(
      "SELECT lower(i.name), app.price_of(i.id), \"Quoted\"(1) FROM items i "
      "JOIN app.prices p ON p.id = i.id WHERE i.id = (SELECT max(id) FROM other)");
  EXPECT_EQ(statement.kind, Kind::kRead);
  EXPECT_EQ(statement.functions,
            (std::vector<std::string>{"lower", "app.price_of", "Quoted", "max"}));
  EXPECT_EQ(statement.tables, (std::vector<std::string>{"items", "app.prices", "other"}));
  EXPECT_EQ(ClassifySql("SELECT nextval('s')").functions, std::vector<std::string>{"nextval"});
}

TEST(StatementClassTest, TakesTheClientsOwnPosition) {
  StatementClass statement = ClassifySql("SET pgflow.min_lsn = '16/B374D848'");
  EXPECT_EQ(statement.kind, Kind::kRead);
  EXPECT_EQ(statement.min_lsn, "16/B374D848");
  EXPECT_EQ(ClassifySql("SET pgflow.min_lsn TO DEFAULT").min_lsn, "");
  EXPECT_FALSE(ClassifySql("SET search_path = x").min_lsn.has_value());
}

TEST(StatementClassTest, SaysWhyTheParserCouldNotReadIt) {
  StatementClass statement = ClassifySql("SELECT (");
  EXPECT_EQ(statement.kind, Kind::kUnknown);
  EXPECT_NE(statement.error.find("syntax error"), std::string::npos) << statement.error;
}

TEST(StatementClassTest, KeysLeaveOutLiteralValuesOnly) {
  EXPECT_EQ(
      LiteralFreeKey("SELECT * FROM t WHERE a = 1 AND b = 'x''y' AND c = E'\\'' AND d = 1.5e-3"),
      "SELECT * FROM t WHERE a = ? AND b = '?' AND c = '?' AND d = ?");
  EXPECT_EQ(LiteralFreeKey("SELECT  t1.a2 /* note */ FROM t1 -- end\n WHERE x=$1"),
            "SELECT t1.a2 FROM t1 WHERE x=$1");
  EXPECT_EQ(LiteralFreeKey("SELECT \"a 'b\" , $tag$ 1 'x' $tag$"),
            "SELECT \"a 'b\" , $tag$ 1 'x' $tag$");
  // Texts differing in what the parser reads keep different keys.
  EXPECT_NE(LiteralFreeKey("SELECT 1 FROM t"), LiteralFreeKey("SELECT 1 FROM t FOR UPDATE"));
  EXPECT_NE(LiteralFreeKey("COPY t TO STDOUT"), LiteralFreeKey("COPY t TO '/tmp/t'"));
  EXPECT_EQ(LiteralFreeKey("SELECT 12, 'a', x'1F', b'01'"),
            LiteralFreeKey("SELECT 3, 'bc', x'2', b'1'"));
}

}  // namespace
}  // namespace pgflow::proxy
