// The pooler's protocol functions over byte strings: framing, the startup packet, the
// messages it splits and rewrites, and what it builds; fuzzed with random and truncated input.

#include "pooler/protocol.h"

#include <random>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"

namespace pgflow::pooler {
namespace {

std::string Startup(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out;
  AppendStartup(&out, params);
  return out;
}

TEST(PoolerProtocolTest, StartupPacketRoundTrips) {
  std::string packet = Startup({{"user", "alice"}, {"database", "app"}, {"application_name", "x"}});
  absl::StatusOr<size_t> length = StartupPacketLength(packet.substr(0, 4));
  ASSERT_TRUE(length.ok());
  EXPECT_EQ(*length, packet.size());
  absl::StatusOr<StartupPacket> parsed = ParseStartupPacket(packet);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->kind, StartupPacket::Kind::kStartup);
  EXPECT_EQ(parsed->Get("user"), "alice");
  EXPECT_EQ(parsed->Get("database"), "app");
  EXPECT_EQ(parsed->Get("application_name"), "x");
  EXPECT_EQ(parsed->Get("missing"), "");
}

TEST(PoolerProtocolTest, SpecialRequestsAreRecognized) {
  std::string ssl;
  AppendInt32(&ssl, 8);
  AppendInt32(&ssl, kSslRequestCode);
  EXPECT_EQ(ParseStartupPacket(ssl)->kind, StartupPacket::Kind::kSslRequest);
  std::string cancel;
  AppendCancelRequest(&cancel, 1234, -5678);
  absl::StatusOr<StartupPacket> parsed = ParseStartupPacket(cancel);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->kind, StartupPacket::Kind::kCancel);
  EXPECT_EQ(parsed->cancel_pid, 1234);
  EXPECT_EQ(parsed->cancel_key, -5678);
}

TEST(PoolerProtocolTest, BadStartupPacketsAreRefusedWithTheReason) {
  std::string word;
  AppendInt32(&word, 3);
  EXPECT_NE(StartupPacketLength(word).status().message().find("invalid startup packet length 3"),
            std::string::npos);
  word.clear();
  AppendInt32(&word, 10001);
  EXPECT_FALSE(StartupPacketLength(word).ok());
  std::string v2;
  AppendInt32(&v2, 8);
  AppendInt32(&v2, 2 << 16);
  EXPECT_NE(ParseStartupPacket(v2).status().message().find("unsupported frontend protocol 2.0"),
            std::string::npos);
  std::string no_user = Startup({{"database", "app"}});
  EXPECT_NE(ParseStartupPacket(no_user).status().message().find("no PostgreSQL user name"),
            std::string::npos);
  std::string unterminated = Startup({{"user", "a"}});
  unterminated.pop_back();
  unterminated.pop_back();
  EXPECT_FALSE(ParseStartupPacket(unterminated).ok());
}

TEST(PoolerProtocolTest, MessageHeadersAreBounded) {
  std::string q;
  AppendQuery(&q, "SELECT 1");
  absl::StatusOr<std::optional<MessageHeader>> header = ReadMessageHeader(q, 1 << 20);
  ASSERT_TRUE(header.ok() && header->has_value());
  EXPECT_EQ((*header)->type, 'Q');
  EXPECT_EQ((*header)->size, q.size());
  EXPECT_FALSE(ReadMessageHeader(q.substr(0, 4), 1 << 20)->has_value());  // not yet
  EXPECT_FALSE(ReadMessageHeader(q, 8).ok());                              // too large
  std::string bad = "Q";
  AppendInt32(&bad, 3);
  EXPECT_FALSE(ReadMessageHeader(bad, 1 << 20).ok());
}

TEST(PoolerProtocolTest, NamedStatementsAreSplitAndRebuilt) {
  std::string parse;
  std::string rest = std::string("SELECT $1") + '\0';
  AppendInt16(&rest, 1);
  AppendInt32(&rest, 23);
  AppendParse(&parse, "s1", rest);
  std::optional<ParseMessage> p = SplitParse(std::string_view(parse).substr(5));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->name, "s1");
  EXPECT_EQ(p->query, "SELECT $1");
  EXPECT_EQ(p->rest, rest);

  std::string bind;
  AppendBind(&bind, "", "s1", std::string("\0\0\0\0\0\0", 6));
  std::optional<BindMessage> b = SplitBind(std::string_view(bind).substr(5));
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->portal, "");
  EXPECT_EQ(b->statement, "s1");
  std::string rebuilt;
  AppendBind(&rebuilt, b->portal, "pgflow_x", b->rest);
  std::optional<BindMessage> again = SplitBind(std::string_view(rebuilt).substr(5));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->statement, "pgflow_x");
  EXPECT_EQ(again->rest, b->rest);

  std::string describe;
  AppendTarget(&describe, 'D', 'S', "s1");
  std::optional<TargetMessage> d = SplitTarget(std::string_view(describe).substr(5));
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->kind, 'S');
  EXPECT_EQ(d->name, "s1");
  EXPECT_FALSE(SplitTarget(std::string("X") + "s1" + '\0').has_value());
  EXPECT_FALSE(SplitParse("no terminator").has_value());
}

TEST(PoolerProtocolTest, ErrorsAndRowsAreBuiltAsPostgresSendsThem) {
  std::string error;
  AppendError(&error, "FATAL", "53300", "too many clients");
  ASSERT_EQ(error[0], 'E');
  ErrorFields fields = ParseErrorFields(std::string_view(error).substr(5));
  EXPECT_EQ(fields.severity, "FATAL");
  EXPECT_EQ(fields.sqlstate, "53300");
  EXPECT_EQ(fields.message, "too many clients");
  std::string row;
  AppendDataRow(&row, {std::string("a"), std::nullopt});
  BodyReader reader(std::string_view(row).substr(5));
  EXPECT_EQ(reader.Int16(), 2);
  EXPECT_EQ(reader.Int32(), 1);
  EXPECT_EQ(reader.Bytes(1), "a");
  EXPECT_EQ(reader.Int32(), -1);
  EXPECT_TRUE(reader.done());
  EXPECT_EQ(QuoteLiteral("it's"), "'it''s'");
  EXPECT_EQ(QuoteIdentifier("Date\"Style"), "\"Date\"\"Style\"");
}

// A RowDescription body as PostgreSQL sends it: (name, table oid, column, type oid, modifier).
std::string RowDescription(const std::vector<std::tuple<std::string, int32_t, int16_t, int32_t,
                                                        int32_t>>& fields) {
  std::string out;
  auto int16 = [&](int16_t v) {
    out.push_back(static_cast<char>(v >> 8));
    out.push_back(static_cast<char>(v));
  };
  auto int32 = [&](int32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
  };
  int16(static_cast<int16_t>(fields.size()));
  for (const auto& [name, table, column, type, modifier] : fields) {
    out += name;
    out.push_back('\0');
    int32(table);
    int16(column);
    int32(type);
    int16(4);
    int32(modifier);
    int16(0);
  }
  return out;
}

TEST(PoolerProtocolTest, StatementShapesDifferAsPostgresRevalidationDoes) {
  const std::string params = std::string("\0\1\0\0\0\x17", 6);  // one int4 parameter
  const std::string two = RowDescription({{"id", 16384, 1, 23, -1}, {"d", 16384, 2, 23, -1}});
  const std::optional<uint64_t> shape = StatementShape(params, two);
  ASSERT_TRUE(shape.has_value());
  EXPECT_NE(*shape, 0u);
  // The same columns from a table dropped and created again: the same rows.
  EXPECT_EQ(StatementShape(params, RowDescription({{"id", 16500, 1, 23, -1}, {"d", 16500, 2, 23, -1}})),
            shape);
  // A column added, a type changed, a column renamed, a modifier, a parameter's type: another.
  EXPECT_NE(StatementShape(params, RowDescription({{"id", 16384, 1, 23, -1},
                                                   {"d", 16384, 2, 23, -1},
                                                   {"b", 16384, 3, 25, -1}})),
            shape);
  EXPECT_NE(StatementShape(params, RowDescription({{"id", 16384, 1, 23, -1}, {"d", 16384, 2, 20, -1}})),
            shape);
  EXPECT_NE(StatementShape(params, RowDescription({{"id", 16384, 1, 23, -1}, {"e", 16384, 2, 23, -1}})),
            shape);
  EXPECT_NE(StatementShape(params, RowDescription({{"id", 16384, 1, 23, -1}, {"d", 16384, 2, 23, 8}})),
            shape);
  EXPECT_NE(StatementShape(std::string("\0\1\0\0\0\x14", 6), two), shape);
  // NoData (no rows) is a shape of its own; a truncated RowDescription is none.
  EXPECT_NE(StatementShape(params, ""), shape);
  EXPECT_EQ(StatementShape(params, two.substr(0, two.size() - 3)), std::nullopt);
}

TEST(PoolerProtocolTest, TheCachedPlanErrorIsPostgresOwn) {
  std::string error;
  AppendCachedPlanChanged(&error);
  ASSERT_EQ(error[0], 'E');
  ErrorFields fields = ParseErrorFields(std::string_view(error).substr(5));
  EXPECT_EQ(fields.severity, "ERROR");
  EXPECT_EQ(fields.sqlstate, "0A000");
  EXPECT_EQ(fields.message, "cached plan must not change result type");
  // The routine, by which the JDBC driver knows to prepare the statement again.
  EXPECT_NE(error.find(std::string("RRevalidateCachedQuery\0", 23)), std::string::npos);
}

// Random and truncated input never crashes a parser or reads out of bounds.
TEST(PoolerProtocolTest, FuzzedInputNeverCrashes) {
  std::mt19937 rng(7);
  std::vector<std::string> seeds = {Startup({{"user", "u"}, {"database", "d"}})};
  std::string m;
  AppendParse(&m, "s", std::string("SELECT 1") + '\0' + std::string(2, '\0'));
  seeds.push_back(m.substr(5));
  m.clear();
  AppendBind(&m, "p", "s", std::string(6, '\0'));
  seeds.push_back(m.substr(5));
  m.clear();
  AppendError(&m, "ERROR", "42601", "x");
  seeds.push_back(m.substr(5));
  for (int i = 0; i < 20000; ++i) {
    std::string input = seeds[i % seeds.size()];
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !input.empty(); ++e) {
      switch (rng() % 3) {
        case 0:
          input[rng() % input.size()] = static_cast<char>(rng());
          break;
        case 1:
          input.resize(rng() % input.size());
          break;
        default:
          input.insert(rng() % (input.size() + 1), 1, static_cast<char>(rng()));
      }
    }
    if (input.size() >= 8) (void)ParseStartupPacket(input);
    (void)SplitParse(input);
    (void)SplitBind(input);
    (void)SplitTarget(input);
    (void)StatementShape(input, input);
    (void)ParseErrorFields(input);
    (void)ReadMessageHeader(input, 1 << 20);
  }
}

}  // namespace
}  // namespace pgflow::pooler
