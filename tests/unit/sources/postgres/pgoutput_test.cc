#include "sources/postgres/pgoutput.h"

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgflow::pgoutput {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Builds wire bytes: big-endian integers, null-terminated strings, raw bytes.
class Bytes {
 public:
  Bytes() = default;
  explicit Bytes(char kind) { data_.push_back(kind); }

  Bytes& U8(uint8_t v) {
    data_.push_back(static_cast<char>(v));
    return *this;
  }
  Bytes& U16(uint16_t v) { return Int(v, 2); }
  Bytes& U32(uint32_t v) { return Int(v, 4); }
  Bytes& I32(int32_t v) { return Int(static_cast<uint32_t>(v), 4); }
  Bytes& U64(uint64_t v) { return Int(v, 8); }
  Bytes& I64(int64_t v) { return Int(static_cast<uint64_t>(v), 8); }
  Bytes& Str(std::string_view s) {
    data_.append(s);
    data_.push_back('\0');
    return *this;
  }
  Bytes& Raw(std::string_view s) {
    data_.append(s);
    return *this;
  }
  // TupleData column helpers.
  Bytes& Null() { return U8('n'); }
  Bytes& Toast() { return U8('u'); }
  Bytes& Text(std::string_view s) {
    U8('t').U32(static_cast<uint32_t>(s.size()));
    return Raw(s);
  }
  Bytes& Binary(std::string_view s) {
    U8('b').U32(static_cast<uint32_t>(s.size()));
    return Raw(s);
  }

  const std::string& str() const { return data_; }
  operator std::string_view() const { return data_; }

 private:
  Bytes& Int(uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) data_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  std::string data_;
};

template <typename T>
T Expect(std::string_view bytes) {
  absl::StatusOr<Message> m = DecodeMessage(bytes);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return T();
  EXPECT_TRUE(std::holds_alternative<T>(*m)) << "variant index " << m->index();
  if (!std::holds_alternative<T>(*m)) return T();
  return std::get<T>(*std::move(m));
}

// Asserts that decoding `bytes` fails with InvalidArgument and returns the message.
std::string ExpectError(std::string_view bytes) {
  absl::StatusOr<Message> m = DecodeMessage(bytes);
  EXPECT_FALSE(m.ok());
  if (m.ok()) return "";
  EXPECT_TRUE(absl::IsInvalidArgument(m.status())) << m.status();
  return std::string(m.status().message());
}

std::string ExpectFrameError(std::string_view bytes) {
  absl::StatusOr<StreamFrame> f = DecodeFrame(bytes);
  EXPECT_FALSE(f.ok());
  if (f.ok()) return "";
  EXPECT_TRUE(absl::IsInvalidArgument(f.status())) << f.status();
  return std::string(f.status().message());
}

constexpr int64_t kPgTime = 764'000'000'123'456;  // some time in 2024, PostgreSQL epoch
constexpr int64_t kUnixTime = kPgTime + kPostgresEpochOffsetUs;

// --- Fixtures: one valid message of every kind. ------------------------------------------

Bytes ValidBegin() { return Bytes('B').U64(0x0000'0001'0000'00A0).I64(kPgTime).U32(1234); }
Bytes ValidCommit() {
  return Bytes('C').U8(0).U64(0x0000'0001'0000'00A0).U64(0x0000'0001'0000'00D8).I64(kPgTime);
}
Bytes ValidOrigin() { return Bytes('O').U64(0x42).Str("node_a"); }
Bytes ValidRelation() {
  return Bytes('R')
      .U32(16385)
      .Str("public")
      .Str("orders")
      .U8('d')
      .U16(3)
      .U8(1)
      .Str("id")
      .U32(23)
      .I32(-1)
      .U8(0)
      .Str("note")
      .U32(1043)
      .I32(68)
      .U8(0)
      .Str("blob")
      .U32(17)
      .I32(-1);
}
Bytes ValidType() { return Bytes('Y').U32(90001).Str("public").Str("mood"); }
Bytes ValidInsert() {
  return Bytes('I').U32(16385).U8('N').U16(4).Text("42").Null().Toast().Binary(
      std::string("\x00\xff\x01", 3));
}
Bytes ValidUpdateWithOld() {
  return Bytes('U')
      .U32(16385)
      .U8('O')
      .U16(3)
      .Text("1")
      .Text("old")
      .Null()
      .U8('N')
      .U16(3)
      .Text("1")
      .Toast()
      .Binary("bin");
}
Bytes ValidDelete() { return Bytes('D').U32(16385).U8('K').U16(2).Text("7").Null(); }
Bytes ValidTruncate() { return Bytes('T').U32(2).U8(3).U32(16385).U32(16390); }
Bytes ValidLogical() {
  return Bytes('M').U8(1).U64(0x1234).Str("pgflow").U32(5).Raw(std::string("a\0b\0c", 5));
}

std::vector<std::string> AllValidMessages() {
  return {ValidBegin().str(),         ValidCommit().str(), ValidOrigin().str(),
          ValidRelation().str(),      ValidType().str(),   ValidInsert().str(),
          ValidUpdateWithOld().str(), ValidDelete().str(), ValidTruncate().str(),
          ValidLogical().str()};
}

// --- Valid messages. -----------------------------------------------------------------------

TEST(PgoutputDecodeTest, Begin) {
  BeginMessage b = Expect<BeginMessage>(ValidBegin());
  EXPECT_EQ(b.final_lsn, Lsn(0x0000'0001'0000'00A0));
  EXPECT_EQ(b.final_lsn.ToString(), "1/A0");
  EXPECT_EQ(b.commit_time_us, kUnixTime);
  EXPECT_EQ(b.xid, 1234u);
}

TEST(PgoutputDecodeTest, BeginTimestampConversion) {
  // PostgreSQL's epoch itself is 2000-01-01 00:00:00 UTC = 946684800 s after the Unix epoch.
  EXPECT_EQ(Expect<BeginMessage>(Bytes('B').U64(1).I64(0).U32(1)).commit_time_us,
            int64_t{946'684'800} * 1'000'000);
  // Times before 2000 are negative on the wire.
  EXPECT_EQ(
      Expect<BeginMessage>(Bytes('B').U64(1).I64(-kPostgresEpochOffsetUs).U32(1)).commit_time_us,
      0);
  // Large unsigned xid survives.
  EXPECT_EQ(Expect<BeginMessage>(Bytes('B').U64(1).I64(0).U32(0xFFFF'FFF0)).xid, 0xFFFF'FFF0u);
}

TEST(PgoutputDecodeTest, BeginTimestampOutOfRangeIsAnError) {
  std::string e = ExpectError(Bytes('B').U64(1).I64(INT64_MAX).U32(1));
  EXPECT_THAT(e, AllOf(HasSubstr("pgoutput Begin message"), HasSubstr("commit timestamp"),
                       HasSubstr("out of range"), HasSubstr("byte offset 9")));
}

TEST(PgoutputDecodeTest, Commit) {
  CommitMessage c = Expect<CommitMessage>(ValidCommit());
  EXPECT_EQ(c.flags, 0);
  EXPECT_EQ(c.commit_lsn, Lsn(0x0000'0001'0000'00A0));
  EXPECT_EQ(c.end_lsn, Lsn(0x0000'0001'0000'00D8));
  EXPECT_EQ(c.commit_time_us, kUnixTime);
}

TEST(PgoutputDecodeTest, Origin) {
  OriginMessage o = Expect<OriginMessage>(ValidOrigin());
  EXPECT_EQ(o.origin_lsn, Lsn(0x42));
  EXPECT_EQ(o.name, "node_a");
}

TEST(PgoutputDecodeTest, Relation) {
  RelationMessage r = Expect<RelationMessage>(ValidRelation());
  EXPECT_EQ(r.relation_id, 16385u);
  EXPECT_EQ(r.schema, "public");
  EXPECT_EQ(r.name, "orders");
  EXPECT_EQ(r.replica_identity, 'd');
  ASSERT_EQ(r.columns.size(), 3u);
  EXPECT_EQ(r.columns[0].flags, 1);
  EXPECT_EQ(r.columns[0].name, "id");
  EXPECT_EQ(r.columns[0].type_oid, 23u);
  EXPECT_EQ(r.columns[0].type_modifier, -1);
  EXPECT_EQ(r.columns[1].flags, 0);
  EXPECT_EQ(r.columns[1].name, "note");
  EXPECT_EQ(r.columns[1].type_oid, 1043u);
  EXPECT_EQ(r.columns[1].type_modifier, 68);
  EXPECT_EQ(r.columns[2].name, "blob");
  EXPECT_EQ(r.columns[2].type_oid, 17u);
}

TEST(PgoutputDecodeTest, RelationInPgCatalogAndWithoutColumns) {
  RelationMessage r =
      Expect<RelationMessage>(Bytes('R').U32(1259).Str("").Str("pg_class").U8('f').U16(0));
  EXPECT_EQ(r.schema, "pg_catalog");
  EXPECT_EQ(r.name, "pg_class");
  EXPECT_EQ(r.replica_identity, 'f');
  EXPECT_TRUE(r.columns.empty());
}

TEST(PgoutputDecodeTest, RelationColumnWithEmptyName) {
  // The tightest column: flags, "", OID, typmod = 10 bytes.
  RelationMessage r = Expect<RelationMessage>(
      Bytes('R').U32(1).Str("s").Str("t").U8('n').U16(1).U8(0).Str("").U32(25).I32(-1));
  ASSERT_EQ(r.columns.size(), 1u);
  EXPECT_EQ(r.columns[0].name, "");
  EXPECT_EQ(r.columns[0].type_oid, 25u);
}

TEST(PgoutputDecodeTest, Type) {
  TypeMessage t = Expect<TypeMessage>(ValidType());
  EXPECT_EQ(t.type_oid, 90001u);
  EXPECT_EQ(t.schema, "public");
  EXPECT_EQ(t.name, "mood");

  TypeMessage c = Expect<TypeMessage>(Bytes('Y').U32(3614).Str("").Str("tsvector"));
  EXPECT_EQ(c.schema, "pg_catalog");
  EXPECT_EQ(c.name, "tsvector");
}

TEST(PgoutputDecodeTest, InsertWithEveryColumnKind) {
  InsertMessage i = Expect<InsertMessage>(ValidInsert());
  EXPECT_EQ(i.relation_id, 16385u);
  ASSERT_EQ(i.new_tuple.size(), 4u);
  EXPECT_EQ(i.new_tuple[0].kind, 't');
  EXPECT_EQ(i.new_tuple[0].data, "42");
  EXPECT_EQ(i.new_tuple[1].kind, 'n');
  EXPECT_EQ(i.new_tuple[1].data, "");
  EXPECT_EQ(i.new_tuple[2].kind, 'u');
  EXPECT_EQ(i.new_tuple[2].data, "");
  EXPECT_EQ(i.new_tuple[3].kind, 'b');
  EXPECT_EQ(i.new_tuple[3].data, std::string("\x00\xff\x01", 3));
}

TEST(PgoutputDecodeTest, InsertEmptyValuesAndZeroColumns) {
  InsertMessage i = Expect<InsertMessage>(Bytes('I').U32(5).U8('N').U16(2).Text("").Binary(""));
  ASSERT_EQ(i.new_tuple.size(), 2u);
  EXPECT_EQ(i.new_tuple[0].kind, 't');
  EXPECT_EQ(i.new_tuple[0].data, "");
  EXPECT_EQ(i.new_tuple[1].kind, 'b');
  EXPECT_EQ(i.new_tuple[1].data, "");

  InsertMessage empty = Expect<InsertMessage>(Bytes('I').U32(5).U8('N').U16(0));
  EXPECT_TRUE(empty.new_tuple.empty());
}

TEST(PgoutputDecodeTest, InsertLargeValue) {
  std::string big(100'000, 'x');
  InsertMessage i = Expect<InsertMessage>(Bytes('I').U32(5).U8('N').U16(1).Text(big));
  ASSERT_EQ(i.new_tuple.size(), 1u);
  EXPECT_EQ(i.new_tuple[0].data, big);
}

TEST(PgoutputDecodeTest, UpdateWithoutOldTuple) {
  UpdateMessage u =
      Expect<UpdateMessage>(Bytes('U').U32(16385).U8('N').U16(2).Text("1").Text("new"));
  EXPECT_EQ(u.relation_id, 16385u);
  EXPECT_EQ(u.old_kind, 0);
  EXPECT_TRUE(u.old_tuple.empty());
  ASSERT_EQ(u.new_tuple.size(), 2u);
  EXPECT_EQ(u.new_tuple[1].data, "new");
}

TEST(PgoutputDecodeTest, UpdateWithOldKey) {
  UpdateMessage u = Expect<UpdateMessage>(
      Bytes('U').U32(16385).U8('K').U16(2).Text("1").Null().U8('N').U16(2).Text("2").Text("x"));
  EXPECT_EQ(u.old_kind, 'K');
  ASSERT_EQ(u.old_tuple.size(), 2u);
  EXPECT_EQ(u.old_tuple[0].kind, 't');
  EXPECT_EQ(u.old_tuple[0].data, "1");
  EXPECT_EQ(u.old_tuple[1].kind, 'n');
  ASSERT_EQ(u.new_tuple.size(), 2u);
  EXPECT_EQ(u.new_tuple[0].data, "2");
  EXPECT_EQ(u.new_tuple[1].data, "x");
}

TEST(PgoutputDecodeTest, UpdateWithOldRow) {
  UpdateMessage u = Expect<UpdateMessage>(ValidUpdateWithOld());
  EXPECT_EQ(u.old_kind, 'O');
  ASSERT_EQ(u.old_tuple.size(), 3u);
  EXPECT_EQ(u.old_tuple[1].data, "old");
  EXPECT_EQ(u.old_tuple[2].kind, 'n');
  ASSERT_EQ(u.new_tuple.size(), 3u);
  EXPECT_EQ(u.new_tuple[0].kind, 't');
  EXPECT_EQ(u.new_tuple[1].kind, 'u');
  EXPECT_EQ(u.new_tuple[2].kind, 'b');
  EXPECT_EQ(u.new_tuple[2].data, "bin");
}

TEST(PgoutputDecodeTest, DeleteWithOldKey) {
  DeleteMessage d = Expect<DeleteMessage>(ValidDelete());
  EXPECT_EQ(d.relation_id, 16385u);
  EXPECT_EQ(d.old_kind, 'K');
  ASSERT_EQ(d.old_tuple.size(), 2u);
  EXPECT_EQ(d.old_tuple[0].data, "7");
  EXPECT_EQ(d.old_tuple[1].kind, 'n');
}

TEST(PgoutputDecodeTest, DeleteWithOldRow) {
  DeleteMessage d = Expect<DeleteMessage>(Bytes('D').U32(9).U8('O').U16(2).Text("7").Binary("zz"));
  EXPECT_EQ(d.old_kind, 'O');
  ASSERT_EQ(d.old_tuple.size(), 2u);
  EXPECT_EQ(d.old_tuple[1].kind, 'b');
  EXPECT_EQ(d.old_tuple[1].data, "zz");
}

TEST(PgoutputDecodeTest, TruncateOptionBits) {
  struct Case {
    uint8_t options;
    bool cascade;
    bool restart_identity;
  };
  for (const Case& c :
       {Case{0, false, false}, Case{1, true, false}, Case{2, false, true}, Case{3, true, true}}) {
    SCOPED_TRACE(static_cast<int>(c.options));
    TruncateMessage t = Expect<TruncateMessage>(Bytes('T').U32(1).U8(c.options).U32(77));
    EXPECT_EQ(t.cascade, c.cascade);
    EXPECT_EQ(t.restart_identity, c.restart_identity);
    EXPECT_EQ(t.relation_ids, std::vector<uint32_t>{77});
  }
}

TEST(PgoutputDecodeTest, TruncateSeveralRelations) {
  TruncateMessage t = Expect<TruncateMessage>(ValidTruncate());
  EXPECT_TRUE(t.cascade);
  EXPECT_TRUE(t.restart_identity);
  EXPECT_EQ(t.relation_ids, (std::vector<uint32_t>{16385, 16390}));

  TruncateMessage none = Expect<TruncateMessage>(Bytes('T').U32(0).U8(0));
  EXPECT_TRUE(none.relation_ids.empty());
}

TEST(PgoutputDecodeTest, LogicalMessage) {
  LogicalMessage m = Expect<LogicalMessage>(ValidLogical());
  EXPECT_TRUE(m.transactional);
  EXPECT_EQ(m.lsn, Lsn(0x1234));
  EXPECT_EQ(m.prefix, "pgflow");
  EXPECT_EQ(m.content, std::string("a\0b\0c", 5));

  LogicalMessage n = Expect<LogicalMessage>(Bytes('M').U8(0).U64(1).Str("").U32(0));
  EXPECT_FALSE(n.transactional);
  EXPECT_EQ(n.prefix, "");
  EXPECT_EQ(n.content, "");
}

// --- Malformed messages. -------------------------------------------------------------------

TEST(PgoutputMalformedTest, EmptyInput) { EXPECT_THAT(ExpectError(""), HasSubstr("empty")); }

TEST(PgoutputMalformedTest, UnknownMessageKinds) {
  // Includes the streaming/two-phase kinds that protocol version 1 never sends.
  for (char kind : std::string("ZSEcAPKrbwkn\0\xff", 14)) {
    SCOPED_TRACE(static_cast<int>(static_cast<uint8_t>(kind)));
    std::string bytes = Bytes(kind).U64(0).U64(0).str();
    EXPECT_THAT(ExpectError(bytes),
                AllOf(HasSubstr("unknown message kind"), HasSubstr("byte offset 0")));
  }
  EXPECT_THAT(ExpectError("Z"), HasSubstr("'Z'"));
  EXPECT_THAT(ExpectError("\xff"), HasSubstr("0xff"));
}

TEST(PgoutputMalformedTest, EveryTruncationOfAnUpdateIsAnError) {
  const std::string full = ValidUpdateWithOld().str();
  ASSERT_TRUE(DecodeMessage(full).ok());
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    // A fresh heap copy of exactly n bytes, so ASan catches any read past the prefix.
    std::string prefix = full.substr(0, n);
    std::string e = ExpectError(prefix);
    if (n > 0) {
      EXPECT_THAT(e, AllOf(HasSubstr("pgoutput Update message"), HasSubstr("byte offset")));
    }
  }
}

TEST(PgoutputMalformedTest, EveryTruncationOfEveryMessageIsAnError) {
  for (const std::string& full : AllValidMessages()) {
    SCOPED_TRACE(full[0]);
    ASSERT_TRUE(DecodeMessage(full).ok());
    for (size_t n = 0; n < full.size(); ++n) {
      SCOPED_TRACE(n);
      std::string prefix = full.substr(0, n);
      EXPECT_FALSE(DecodeMessage(prefix).ok());
    }
  }
}

TEST(PgoutputMalformedTest, TrailingBytesAfterEveryMessageAreAnError) {
  for (const std::string& full : AllValidMessages()) {
    SCOPED_TRACE(full[0]);
    std::string e = ExpectError(full + "\x01");
    EXPECT_THAT(
        e, AllOf(HasSubstr("trailing"), HasSubstr("byte offset " + std::to_string(full.size()))));
  }
}

TEST(PgoutputMalformedTest, TruncationErrorNamesFieldAndOffset) {
  // 'U', relation OID cut after two bytes.
  EXPECT_EQ(ExpectError(Bytes('U').U16(0x4001)),
            "pgoutput Update message at byte offset 1: truncated: relation OID needs 4 bytes, 2 "
            "remain");
}

TEST(PgoutputMalformedTest, UnknownTupleColumnKind) {
  std::string e = ExpectError(Bytes('I').U32(1).U8('N').U16(2).Text("a").U8('x'));
  EXPECT_THAT(e, AllOf(HasSubstr("pgoutput Insert message"), HasSubstr("unknown column kind 'x'"),
                       HasSubstr("byte offset 14"), HasSubstr("new tuple, column 1")));
}

TEST(PgoutputMalformedTest, HugeTupleColumnCountIsRejectedBeforeAllocating) {
  std::string e = ExpectError(Bytes('I').U32(1).U8('N').U16(0x7fff).Null());
  EXPECT_THAT(e, AllOf(HasSubstr("pgoutput Insert message"), HasSubstr("column count 32767"),
                       HasSubstr("byte offset 6")));
  // Exactly as many bytes as columns, but not enough for the text values: still an error.
  EXPECT_THAT(ExpectError(Bytes('I').U32(1).U8('N').U16(3).Raw("ttt")), HasSubstr("truncated"));
}

TEST(PgoutputMalformedTest, NegativeTupleColumnCount) {
  EXPECT_THAT(ExpectError(Bytes('D').U32(1).U8('K').U16(0xffff)),
              AllOf(HasSubstr("pgoutput Delete message"), HasSubstr("-1 is negative")));
}

TEST(PgoutputMalformedTest, HugeRelationColumnCount) {
  EXPECT_THAT(ExpectError(Bytes('R').U32(1).Str("s").Str("t").U8('d').U16(0x7fff)),
              AllOf(HasSubstr("pgoutput Relation message"), HasSubstr("column count 32767")));
  // One column with fewer than the 10 bytes a column needs.
  EXPECT_THAT(ExpectError(Bytes('R').U32(1).Str("s").Str("t").U8('d').U16(1).U8(0).Str("")),
              HasSubstr("column count 1"));
  EXPECT_THAT(ExpectError(Bytes('R').U32(1).Str("s").Str("t").U8('d').U16(0x8000)),
              HasSubstr("negative"));
}

TEST(PgoutputMalformedTest, HugeTruncateRelationCount) {
  EXPECT_THAT(ExpectError(Bytes('T').U32(0x7fff'ffff).U8(0).U32(1)),
              AllOf(HasSubstr("pgoutput Truncate message"), HasSubstr("relation count"),
                    HasSubstr("byte offset 1")));
  EXPECT_THAT(ExpectError(Bytes('T').I32(-1).U8(0)), HasSubstr("negative"));
  // Count says 2, only one OID present.
  EXPECT_THAT(ExpectError(Bytes('T').U32(2).U8(0).U32(1)), HasSubstr("relation count 2"));
}

TEST(PgoutputMalformedTest, NegativeLengths) {
  EXPECT_THAT(ExpectError(Bytes('I').U32(1).U8('N').U16(1).U8('t').I32(-1)),
              AllOf(HasSubstr("negative length -1"), HasSubstr("byte offset 9")));
  EXPECT_THAT(ExpectError(Bytes('I').U32(1).U8('N').U16(1).U8('b').I32(INT32_MIN)),
              HasSubstr("negative length"));
  EXPECT_THAT(ExpectError(Bytes('M').U8(0).U64(1).Str("p").I32(-5).Raw("abcde")),
              AllOf(HasSubstr("pgoutput logical decoding Message"), HasSubstr("negative length")));
}

TEST(PgoutputMalformedTest, LengthsPastTheEnd) {
  EXPECT_THAT(ExpectError(Bytes('I').U32(1).U8('N').U16(1).U8('t').U32(100).Raw("abc")),
              AllOf(HasSubstr("length 100 runs past the end"), HasSubstr("3 bytes remain")));
  EXPECT_THAT(ExpectError(Bytes('I').U32(1).U8('N').U16(1).U8('t').U32(0x7fff'ffff)),
              HasSubstr("runs past the end"));
  EXPECT_THAT(ExpectError(Bytes('M').U8(0).U64(1).Str("p").U32(6).Raw("abcde")),
              HasSubstr("runs past the end"));
}

TEST(PgoutputMalformedTest, MissingStringTerminators) {
  EXPECT_THAT(ExpectError(Bytes('O').U64(1).Raw("no_nul")),
              AllOf(HasSubstr("pgoutput Origin message"), HasSubstr("origin name"),
                    HasSubstr("no null terminator"), HasSubstr("byte offset 9")));
  EXPECT_THAT(ExpectError(Bytes('R').U32(1).Str("public").Raw("orders")),
              AllOf(HasSubstr("relation name"), HasSubstr("no null terminator")));
  EXPECT_THAT(ExpectError(Bytes('Y').U32(1).Raw("pub")), HasSubstr("namespace"));
  EXPECT_THAT(ExpectError(Bytes('M').U8(0).U64(1).Raw("prefix")), HasSubstr("prefix"));
}

TEST(PgoutputMalformedTest, WrongTupleTags) {
  EXPECT_THAT(ExpectError(Bytes('I').U32(1).U8('K').U16(0)),
              AllOf(HasSubstr("pgoutput Insert message"), HasSubstr("unexpected tuple tag 'K'"),
                    HasSubstr("byte offset 5")));
  EXPECT_THAT(ExpectError(Bytes('U').U32(1).U8('X').U16(0)), HasSubstr("'K', 'O' or 'N'"));
  // Old key followed by another old key instead of 'N'.
  EXPECT_THAT(ExpectError(Bytes('U').U32(1).U8('K').U16(0).U8('K').U16(0)),
              AllOf(HasSubstr("unexpected tuple tag 'K'"), HasSubstr("byte offset 8")));
  // Delete carries no new tuple.
  EXPECT_THAT(ExpectError(Bytes('D').U32(1).U8('N').U16(0)), HasSubstr("'K' or 'O'"));
  EXPECT_THAT(ExpectError(Bytes('D').U32(1).U8(0).U16(0)), HasSubstr("0x00"));
}

TEST(PgoutputMalformedTest, ErrorInOldTupleNamesIt) {
  EXPECT_THAT(ExpectError(Bytes('U').U32(1).U8('O').U16(2).Null().U8('?')),
              AllOf(HasSubstr("old tuple, column 1"), HasSubstr("'?'")));
}

// --- Stream framing. -----------------------------------------------------------------------

TEST(PgoutputFrameTest, XLogData) {
  const std::string payload = ValidInsert().str();
  const std::string frame = Bytes('w').U64(0x10).U64(0x20).I64(kPgTime).Raw(payload).str();
  absl::StatusOr<StreamFrame> f = DecodeFrame(frame);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_TRUE(std::holds_alternative<XLogData>(*f));
  const XLogData& x = std::get<XLogData>(*f);
  EXPECT_EQ(x.wal_start, Lsn(0x10));
  EXPECT_EQ(x.wal_end, Lsn(0x20));
  EXPECT_EQ(x.send_time_us, kUnixTime);
  EXPECT_EQ(x.payload, payload);
  // The payload is a view into the input, not a copy.
  EXPECT_EQ(x.payload.data(), frame.data() + 25);
  EXPECT_TRUE(std::holds_alternative<InsertMessage>(*DecodeMessage(x.payload)));
}

TEST(PgoutputFrameTest, XLogDataWithEmptyPayload) {
  absl::StatusOr<StreamFrame> f = DecodeFrame(Bytes('w').U64(1).U64(2).I64(0));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(std::get<XLogData>(*f).payload.empty());
}

TEST(PgoutputFrameTest, Keepalive) {
  for (uint8_t reply : {0, 1}) {
    SCOPED_TRACE(static_cast<int>(reply));
    absl::StatusOr<StreamFrame> f =
        DecodeFrame(Bytes('k').U64(0x1'0000'0000).I64(kPgTime).U8(reply));
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_TRUE(std::holds_alternative<Keepalive>(*f));
    const Keepalive& k = std::get<Keepalive>(*f);
    EXPECT_EQ(k.wal_end, Lsn(0x1'0000'0000));
    EXPECT_EQ(k.send_time_us, kUnixTime);
    EXPECT_EQ(k.reply_requested, reply == 1);
  }
}

TEST(PgoutputFrameTest, MalformedFrames) {
  EXPECT_THAT(ExpectFrameError(""), HasSubstr("empty"));
  EXPECT_THAT(ExpectFrameError(Bytes('x').U64(0)),
              AllOf(HasSubstr("unknown frame kind 'x'"), HasSubstr("byte offset 0")));
  // A bare pgoutput message is not a frame.
  EXPECT_THAT(ExpectFrameError(ValidBegin()), HasSubstr("unknown frame kind 'B'"));

  const std::string keepalive = Bytes('k').U64(1).I64(2).U8(0).str();
  const std::string xlog = Bytes('w').U64(1).U64(2).I64(3).str();
  for (size_t n = 1; n < keepalive.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_THAT(ExpectFrameError(keepalive.substr(0, n)),
                AllOf(HasSubstr("replication keepalive frame"), HasSubstr("truncated")));
  }
  for (size_t n = 1; n < xlog.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_THAT(ExpectFrameError(xlog.substr(0, n)),
                AllOf(HasSubstr("replication XLogData frame"), HasSubstr("truncated")));
  }
  EXPECT_THAT(ExpectFrameError(keepalive + "z"),
              AllOf(HasSubstr("trailing"), HasSubstr("byte offset 18")));
  EXPECT_THAT(ExpectFrameError(Bytes('k').U64(1).I64(INT64_MAX).U8(0)), HasSubstr("out of range"));
}

// --- Standby status update. ----------------------------------------------------------------

TEST(PgoutputStandbyStatusTest, ByteLayout) {
  const Lsn lsn(0x0000'0001'2345'6789);
  const std::string got = EncodeStandbyStatus(lsn, kUnixTime, /*reply_requested=*/false);
  const std::string want = Bytes('r')
                               .U64(0x0000'0001'2345'6789)  // written
                               .U64(0x0000'0001'2345'6789)  // flushed
                               .U64(0x0000'0001'2345'6789)  // applied
                               .I64(kPgTime)                // client time, PostgreSQL epoch
                               .U8(0)
                               .str();
  EXPECT_EQ(got.size(), 34u);
  EXPECT_EQ(got, want);
  // Spot-check the raw bytes too, independent of the test helper.
  EXPECT_EQ(got[0], 'r');
  EXPECT_EQ(static_cast<uint8_t>(got[1]), 0x00);
  EXPECT_EQ(static_cast<uint8_t>(got[4]), 0x01);
  EXPECT_EQ(static_cast<uint8_t>(got[5]), 0x23);
  EXPECT_EQ(static_cast<uint8_t>(got[8]), 0x89);
}

TEST(PgoutputStandbyStatusTest, ReplyRequestedAndEpoch) {
  const std::string got = EncodeStandbyStatus(Lsn(0), kPostgresEpochOffsetUs, true);
  EXPECT_EQ(got, Bytes('r').U64(0).U64(0).U64(0).I64(0).U8(1).str());
  // Before 2000 the client time is negative on the wire.
  EXPECT_EQ(EncodeStandbyStatus(Lsn(5), 0, false),
            Bytes('r').U64(5).U64(5).U64(5).I64(-kPostgresEpochOffsetUs).U8(0).str());
  // Absurd clocks must not overflow (UBSan checks this).
  EXPECT_EQ(EncodeStandbyStatus(Lsn(5), INT64_MIN, false).size(), 34u);
}

// --- Robustness. ---------------------------------------------------------------------------

// Decodes everything and touches every byte of the result, so that a dangling or
// out-of-bounds view would be caught by ASan.
size_t Consume(const absl::StatusOr<Message>& m) {
  if (!m.ok()) return m.status().message().size();
  size_t n = 0;
  auto tuple = [&n](const TupleData& t) {
    for (const TupleColumn& c : t) {
      for (char ch : c.data) n += static_cast<uint8_t>(ch);
    }
  };
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, InsertMessage>) tuple(v.new_tuple);
        if constexpr (std::is_same_v<T, UpdateMessage>) {
          tuple(v.old_tuple);
          tuple(v.new_tuple);
        }
        if constexpr (std::is_same_v<T, DeleteMessage>) tuple(v.old_tuple);
        if constexpr (std::is_same_v<T, RelationMessage>) {
          for (const RelationColumn& c : v.columns) n += c.name.size();
        }
        if constexpr (std::is_same_v<T, LogicalMessage>) n += v.content.size();
      },
      *m);
  return n;
}

TEST(PgoutputRobustnessTest, RandomMutationsNeverCrash) {
  std::mt19937 rng(20240601);
  const std::vector<std::string> valid = AllValidMessages();
  size_t ok = 0;
  size_t failed = 0;
  size_t sink = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string bytes = valid[rng() % valid.size()];
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations; ++m) {
      switch (rng() % 5) {
        case 0:  // flip one bit
          if (bytes.size() > 1) bytes[1 + rng() % (bytes.size() - 1)] ^= 1 << (rng() % 8);
          break;
        case 1:  // overwrite a byte with anything, favouring interesting values
        {
          static constexpr uint8_t kInteresting[] = {0x00, 0x01, 0x7f, 0x80, 0xff,
                                                     'n',  'u',  't',  'b',  'N'};
          const uint8_t v =
              rng() % 2 ? static_cast<uint8_t>(rng()) : kInteresting[rng() % sizeof(kInteresting)];
          if (!bytes.empty()) bytes[rng() % bytes.size()] = static_cast<char>(v);
          break;
        }
        case 2:  // truncate
          bytes.resize(rng() % (bytes.size() + 1));
          break;
        case 3:  // append garbage
          for (int k = rng() % 8; k > 0; --k) bytes.push_back(static_cast<char>(rng()));
          break;
        case 4:  // set a 4-byte run to a large or negative length
          if (bytes.size() >= 5) {
            const size_t at = 1 + rng() % (bytes.size() - 4);
            const uint32_t v = rng() % 2 ? 0xffff'ffffu : 0x7fff'0000u + rng() % 0xffff;
            for (int k = 0; k < 4; ++k) bytes[at + k] = static_cast<char>(v >> (24 - 8 * k));
          }
          break;
      }
    }
    // Shrink-to-fit copy so that ASan sees the exact end of the buffer.
    const std::string exact(bytes.data(), bytes.size());
    absl::StatusOr<Message> m = DecodeMessage(exact);
    if (m.ok()) {
      ++ok;
    } else {
      ++failed;
      EXPECT_TRUE(absl::IsInvalidArgument(m.status()));
    }
    sink += Consume(m);

    const std::string frame = Bytes('w').U64(1).U64(2).I64(3).Raw(exact).str();
    // Named, since the payload is a view into it.
    const std::string cut = frame.substr(0, rng() % (frame.size() + 1));
    absl::StatusOr<StreamFrame> f = DecodeFrame(cut);
    if (f.ok() && std::holds_alternative<XLogData>(*f)) {
      sink += Consume(DecodeMessage(std::get<XLogData>(*f).payload));
    }
  }
  // Both outcomes happen, so the mutations exercise the decoder and not just its first byte.
  EXPECT_GT(ok, 100u);
  EXPECT_GT(failed, 100u);
  EXPECT_GT(sink, 0u);
}

TEST(PgoutputRobustnessTest, RandomBytesNeverCrash) {
  std::mt19937 rng(7);
  static constexpr char kKinds[] = "BCORYIUDTMwk";
  for (int iter = 0; iter < 20000; ++iter) {
    std::string bytes(rng() % 48, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() % 4 == 0 ? rng() % 4 : rng());
    if (!bytes.empty()) bytes[0] = kKinds[rng() % (sizeof(kKinds) - 1)];
    Consume(DecodeMessage(bytes));
    (void)DecodeFrame(bytes);
  }
}

}  // namespace
}  // namespace pgflow::pgoutput
