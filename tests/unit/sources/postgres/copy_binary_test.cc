#include "sources/postgres/copy_binary.h"

#include <cstdint>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pgflow {
namespace {

using ::testing::HasSubstr;
using namespace std::string_literals;
using Field = BinaryCopyParser::Field;
using Row = std::vector<std::optional<std::string>>;  // nullopt: NULL

const std::string kSignature("PGCOPY\n\377\r\n\0", 11);

std::string Be16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }
std::string Be32(uint32_t v) { return Be16(static_cast<uint16_t>(v >> 16)) + Be16(v & 0xFFFF); }

std::string Header(uint32_t flags = 0, const std::string& extension = "") {
  return kSignature + Be32(flags) + Be32(static_cast<uint32_t>(extension.size())) + extension;
}

std::string Tuple(const Row& row) {
  std::string out = Be16(static_cast<uint16_t>(row.size()));
  for (const std::optional<std::string>& field : row) {
    if (!field.has_value()) {
      out += Be32(0xFFFFFFFF);
    } else {
      out += Be32(static_cast<uint32_t>(field->size())) + *field;
    }
  }
  return out;
}

const std::string kTrailer = Be16(0xFFFF);

// Parses `message`, appending the rows to *rows. Also checks every field points into
// `message`, as the contract says.
absl::Status ParseInto(BinaryCopyParser& parser, std::string_view message, std::vector<Row>* rows) {
  return parser.Parse(message, [&](std::span<const Field> fields) {
    Row row;
    for (const Field& field : fields) {
      if (field.is_null) {
        EXPECT_TRUE(field.bytes.empty());
        row.push_back(std::nullopt);
      } else {
        EXPECT_GE(field.bytes.data(), message.data());
        EXPECT_LE(field.bytes.data() + field.bytes.size(), message.data() + message.size());
        row.emplace_back(field.bytes);
      }
    }
    rows->push_back(std::move(row));
  });
}

// Parses `messages` with a new parser for `columns` columns: the rows, or the first error.
absl::StatusOr<std::vector<Row>> ParseAll(size_t columns, const std::vector<std::string>& messages,
                                          bool* finished = nullptr) {
  BinaryCopyParser parser(columns);
  std::vector<Row> rows;
  for (const std::string& message : messages) {
    absl::Status status = ParseInto(parser, message, &rows);
    if (!status.ok()) return status;
  }
  if (finished != nullptr) *finished = parser.finished();
  return rows;
}

std::string MessageOf(const absl::Status& status) { return std::string(status.message()); }

TEST(BinaryCopyParserTest, WhatPostgresqlSends) {
  // COPY (SELECT 1::int4 AS a, NULL::text AS b, ''::text AS c UNION ALL SELECT -2, 'hé', 'x')
  // TO STDOUT (FORMAT binary), from PostgreSQL 15, split as it sends it: the header with the
  // first row, the second row, the trailer.
  const std::vector<std::string> messages = {
      "PGCOPY\n\xff\r\n\0"
      "\0\0\0\0\0\0\0\0"
      "\0\x03\0\0\0\x04\0\0\0\x01\xff\xff\xff\xff\0\0\0\0"s,
      "\0\x03\0\0\0\x04\xff\xff\xff\xfe\0\0\0\x03h\xc3\xa9\0\0\0\x01x"s,
      "\xff\xff"s,
  };
  bool finished = false;
  absl::StatusOr<std::vector<Row>> rows = ParseAll(3, messages, &finished);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_TRUE(finished);
  EXPECT_EQ(*rows, (std::vector<Row>{{Be32(1), std::nullopt, ""}, {Be32(0xFFFFFFFE), "hé", "x"}}));
}

TEST(BinaryCopyParserTest, HeaderAloneThenOneRowPerMessageThenTrailer) {
  BinaryCopyParser parser(2);
  std::vector<Row> rows;
  ASSERT_TRUE(ParseInto(parser, Header(), &rows).ok());
  EXPECT_TRUE(rows.empty());
  EXPECT_FALSE(parser.finished());
  ASSERT_TRUE(ParseInto(parser, Tuple({"a", "b"}), &rows).ok());
  ASSERT_TRUE(ParseInto(parser, Tuple({"c", std::nullopt}), &rows).ok());
  EXPECT_FALSE(parser.finished());
  ASSERT_TRUE(ParseInto(parser, kTrailer, &rows).ok());
  EXPECT_TRUE(parser.finished());
  EXPECT_EQ(rows, (std::vector<Row>{{"a", "b"}, {"c", std::nullopt}}));
  EXPECT_EQ(parser.stream_offset(), Header().size() + Tuple({"a", "b"}).size() +
                                        Tuple({"c", std::nullopt}).size() + kTrailer.size());
}

TEST(BinaryCopyParserTest, ManyRowsInOneMessageAndTheWholeStreamInOne) {
  std::string stream = Header();
  std::vector<Row> expected;
  for (int i = 0; i < 100; ++i) {
    expected.push_back(
        {std::to_string(i), i % 3 == 0 ? std::nullopt : std::optional<std::string>("x")});
    stream += Tuple(expected.back());
  }
  stream += kTrailer;
  bool finished = false;
  absl::StatusOr<std::vector<Row>> rows = ParseAll(2, {stream}, &finished);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_TRUE(finished);
  EXPECT_EQ(*rows, expected);
}

TEST(BinaryCopyParserTest, NoRows) {
  bool finished = false;
  absl::StatusOr<std::vector<Row>> rows = ParseAll(4, {Header() + kTrailer}, &finished);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_TRUE(rows->empty());
  EXPECT_TRUE(finished);
}

TEST(BinaryCopyParserTest, NullsAndEmptyValuesDiffer) {
  absl::StatusOr<std::vector<Row>> rows =
      ParseAll(4, {Header() + Tuple({std::nullopt, "", std::nullopt, std::string(1, '\0')})});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, (std::vector<Row>{{std::nullopt, "", std::nullopt, std::string(1, '\0')}}));
}

TEST(BinaryCopyParserTest, ZeroColumns) {
  // COPY (SELECT FROM t): tuples with no fields.
  absl::StatusOr<std::vector<Row>> rows =
      ParseAll(0, {Header() + Tuple({}) + Tuple({}) + kTrailer});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->size(), 2u);
}

TEST(BinaryCopyParserTest, LargeValue) {
  const std::string big(1 << 20, 'v');
  absl::StatusOr<std::vector<Row>> rows = ParseAll(1, {Header(), Tuple({big}), kTrailer});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, (std::vector<Row>{{big}}));
}

TEST(BinaryCopyParserTest, EmptyMessagesAreNothing) {
  absl::StatusOr<std::vector<Row>> rows =
      ParseAll(1, {"", Header(), "", Tuple({"a"}), "", kTrailer, ""});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, (std::vector<Row>{{"a"}}));
}

TEST(BinaryCopyParserTest, HeaderExtensionIsSkipped) {
  absl::StatusOr<std::vector<Row>> rows =
      ParseAll(1, {Header(0, "some extension") + Tuple({"a"}), kTrailer});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, (std::vector<Row>{{"a"}}));
}

TEST(BinaryCopyParserTest, NonCriticalFlagsAreIgnored) {
  absl::StatusOr<std::vector<Row>> rows =
      ParseAll(1, {Header(0xFFFE0000) + Tuple({"a"}) + kTrailer});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->size(), 1u);
}

TEST(BinaryCopyParserTest, OidsAreRejected) {
  absl::StatusOr<std::vector<Row>> rows = ParseAll(1, {Header(1u << 16) + Tuple({"a"})});
  ASSERT_FALSE(rows.ok());
  EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(MessageOf(rows.status()), HasSubstr("byte 11: "));
  EXPECT_THAT(MessageOf(rows.status()), HasSubstr("OIDs"));
}

TEST(BinaryCopyParserTest, UnknownCriticalFlagsAreRejected) {
  for (int bit = 0; bit < 16; ++bit) {
    absl::StatusOr<std::vector<Row>> rows = ParseAll(1, {Header(1u << bit) + Tuple({"a"})});
    ASSERT_FALSE(rows.ok()) << bit;
    EXPECT_THAT(MessageOf(rows.status()), HasSubstr("critical header flags")) << bit;
  }
}

TEST(BinaryCopyParserTest, WrongSignature) {
  for (size_t i = 0; i < kSignature.size(); ++i) {
    std::string message = Header() + Tuple({"a"});
    message[i] ^= 0x20;
    absl::StatusOr<std::vector<Row>> rows = ParseAll(1, {message});
    ASSERT_FALSE(rows.ok()) << i;
    EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(MessageOf(rows.status()), HasSubstr("byte 0: "));
    EXPECT_THAT(MessageOf(rows.status()), HasSubstr("signature"));
  }
  // Text-format COPY data, and a short message that is not a signature prefix.
  EXPECT_FALSE(ParseAll(1, {"1\tfoo\n"}).ok());
  EXPECT_THAT(MessageOf(ParseAll(1, {"PGX"}).status()), HasSubstr("signature"));
}

TEST(BinaryCopyParserTest, NegativeHeaderExtensionLength) {
  const std::string header = kSignature + Be32(0) + Be32(0xFFFFFFFF);
  absl::StatusOr<std::vector<Row>> rows = ParseAll(1, {header + Tuple({"a"})});
  ASSERT_FALSE(rows.ok());
  EXPECT_THAT(MessageOf(rows.status()), HasSubstr("negative header extension length"));
}

TEST(BinaryCopyParserTest, WrongColumnCount) {
  for (const Row& row : {Row{"a"}, Row{"a", "b", "c"}, Row{}}) {
    absl::StatusOr<std::vector<Row>> rows = ParseAll(2, {Header() + Tuple({"x", "y"}), Tuple(row)});
    ASSERT_FALSE(rows.ok());
    EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
    // The offset counts the bytes of the first message.
    const size_t offset = Header().size() + Tuple({"x", "y"}).size();
    EXPECT_THAT(MessageOf(rows.status()),
                HasSubstr("byte " + std::to_string(offset) + ": a tuple has " +
                          std::to_string(row.size()) + " fields, expected 2"));
  }
  // A negative count other than the trailer's -1.
  absl::StatusOr<std::vector<Row>> rows = ParseAll(2, {Header() + Be16(0xFFFE)});
  ASSERT_FALSE(rows.ok());
  EXPECT_THAT(MessageOf(rows.status()), HasSubstr("a tuple has -2 fields"));
}

TEST(BinaryCopyParserTest, NegativeFieldLength) {
  for (uint32_t length : {0xFFFFFFFEu, 0x80000000u}) {
    absl::StatusOr<std::vector<Row>> rows =
        ParseAll(2, {Header() + Be16(2) + Be32(1) + "a" + Be32(length) + "bbbb"});
    ASSERT_FALSE(rows.ok());
    EXPECT_THAT(MessageOf(rows.status()), HasSubstr("byte 26: field 2 has length -"));
  }
}

TEST(BinaryCopyParserTest, FieldPastTheEndOfTheMessage) {
  // The value's bytes arrive in the next message: PostgreSQL never splits a tuple.
  const std::string tuple = Tuple({"abcdef"});
  absl::StatusOr<std::vector<Row>> rows =
      ParseAll(1, {Header() + tuple.substr(0, 8), tuple.substr(8) + kTrailer});
  ASSERT_FALSE(rows.ok());
  EXPECT_THAT(MessageOf(rows.status()),
              HasSubstr("byte 21: field 1 of 6 bytes goes past the end of the message"));
  // A huge length.
  rows = ParseAll(1, {Header() + Be16(1) + Be32(0x7FFFFFFF) + "x"});
  ASSERT_FALSE(rows.ok());
  EXPECT_THAT(MessageOf(rows.status()), HasSubstr("of 2147483647 bytes goes past the end"));
}

TEST(BinaryCopyParserTest, DataAfterTheTrailer) {
  absl::StatusOr<std::vector<Row>> rows = ParseAll(1, {Header() + kTrailer + Tuple({"a"})});
  ASSERT_FALSE(rows.ok());
  EXPECT_THAT(MessageOf(rows.status()), HasSubstr("byte 21: data after the trailer"));
  rows = ParseAll(1, {Header() + kTrailer, "x"});
  ASSERT_FALSE(rows.ok());
  EXPECT_THAT(MessageOf(rows.status()), HasSubstr("byte 21: data after the trailer"));
  rows = ParseAll(1, {Header(), kTrailer, kTrailer});
  ASSERT_FALSE(rows.ok());
  EXPECT_THAT(MessageOf(rows.status()), HasSubstr("data after the trailer"));
}

TEST(BinaryCopyParserTest, RowsBeforeAnErrorAreDeliveredThenEveryCallFails) {
  BinaryCopyParser parser(1);
  std::vector<Row> rows;
  absl::Status status =
      ParseInto(parser, Header() + Tuple({"a"}) + Tuple({"b"}) + Tuple({"c", "d"}), &rows);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rows, (std::vector<Row>{{"a"}, {"b"}}));
  status = ParseInto(parser, Tuple({"e"}), &rows);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(rows.size(), 2u);
  EXPECT_FALSE(parser.finished());
}

TEST(BinaryCopyParserTest, OnRowCanStopParsingWithAStatus) {
  BinaryCopyParser parser(1);
  int calls = 0;
  absl::Status status = parser.Parse(Header() + Tuple({"a"}) + Tuple({"b"}) + Tuple({"c"}),
                                     [&](std::span<const Field> row) -> absl::Status {
                                       ++calls;
                                       if (row[0].bytes == "b")
                                         return absl::ResourceExhaustedError("enough");
                                       return absl::OkStatus();
                                     });
  EXPECT_EQ(status, absl::ResourceExhaustedError("enough"));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(parser.Parse(kTrailer, [](std::span<const Field>) {}).code(),
            absl::StatusCode::kFailedPrecondition);
}

// Each message must hold whole units (header, tuples, trailer): a message cut anywhere else is
// an error, a message cut between units is fine and delivers the tuples before the cut.
TEST(BinaryCopyParserTest, EveryTruncationInsideAUnitIsAnError) {
  const std::vector<std::string> units = {Header(0, "ext"), Tuple({"abc", std::nullopt, ""}),
                                          Tuple({"d", "efgh", std::nullopt}), kTrailer};
  std::string message;
  std::set<size_t> boundaries = {0};
  for (const std::string& unit : units) {
    message += unit;
    boundaries.insert(message.size());
  }
  for (size_t length = 0; length <= message.size(); ++length) {
    BinaryCopyParser parser(3);
    std::vector<Row> rows;
    const absl::Status status = ParseInto(parser, message.substr(0, length), &rows);
    if (boundaries.contains(length)) {
      EXPECT_TRUE(status.ok()) << length << ": " << status;
    } else {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << length;
      EXPECT_THAT(MessageOf(status), HasSubstr("binary COPY data, byte ")) << length;
    }
    size_t whole_tuples = 0;
    size_t end = units[0].size();
    for (size_t u = 1; u + 1 < units.size(); ++u) {
      end += units[u].size();
      if (end <= length) ++whole_tuples;
    }
    EXPECT_EQ(rows.size(), whole_tuples) << length;
    EXPECT_EQ(parser.finished(), length == message.size()) << length;
  }
  // The same for a tuple message after the header was parsed.
  const std::string tuple = Tuple({"abc", std::nullopt, ""});
  for (size_t length = 1; length < tuple.size(); ++length) {
    BinaryCopyParser parser(3);
    std::vector<Row> rows;
    ASSERT_TRUE(ParseInto(parser, Header(), &rows).ok());
    EXPECT_EQ(ParseInto(parser, tuple.substr(0, length), &rows).code(),
              absl::StatusCode::kInvalidArgument)
        << length;
    EXPECT_TRUE(rows.empty());
  }
}

TEST(BinaryCopyParserTest, RandomTablesRoundTripWhateverTheSplit) {
  std::mt19937 rng(20261122);
  for (int iteration = 0; iteration < 300; ++iteration) {
    const size_t columns = rng() % 6;
    std::vector<Row> expected(rng() % 20);
    std::vector<std::string> units = {Header(0, std::string(rng() % 3, 'e'))};
    for (Row& row : expected) {
      for (size_t c = 0; c < columns; ++c) {
        if (rng() % 4 == 0) {
          row.push_back(std::nullopt);
        } else {
          std::string value(rng() % 12, '\0');
          for (char& ch : value) ch = static_cast<char>(rng());
          row.push_back(value);
        }
      }
      units.push_back(Tuple(row));
    }
    units.push_back(kTrailer);
    // Group consecutive units into messages at random.
    std::vector<std::string> messages(1);
    for (const std::string& unit : units) {
      if (rng() % 3 == 0) messages.emplace_back();
      messages.back() += unit;
    }
    bool finished = false;
    absl::StatusOr<std::vector<Row>> rows = ParseAll(columns, messages, &finished);
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_EQ(*rows, expected);
    EXPECT_TRUE(finished);
  }
}

// Hostile input: random mutations of valid streams never crash, overrun (ASan) or hand out
// fields outside the message (ParseInto checks), whatever they parse to.
TEST(BinaryCopyParserTest, RandomMutationsAreHandled) {
  std::mt19937 rng(7);
  const std::vector<std::string> special = {Be32(0xFFFFFFFF), Be32(0x7FFFFFFF), Be32(0x80000000),
                                            Be16(0xFFFF),     Be16(0x8000),     Be32(0)};
  int errors = 0;
  for (int iteration = 0; iteration < 20'000; ++iteration) {
    std::vector<std::string> messages = {Header() + Tuple({"abc", std::nullopt}),
                                         Tuple({"", "defgh"}), Tuple({"i", "j"}), kTrailer};
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations; ++m) {
      std::string& message = messages[rng() % messages.size()];
      const size_t at = message.empty() ? 0 : rng() % (message.size() + 1);
      switch (rng() % 6) {
        case 0:  // flip bits of a byte
          if (at < message.size()) message[at] = static_cast<char>(message[at] ^ (1 << rng() % 8));
          break;
        case 1:  // random byte
          if (at < message.size()) message[at] = static_cast<char>(rng());
          break;
        case 2:  // insert bytes
          message.insert(at, std::string(1 + rng() % 4, static_cast<char>(rng())));
          break;
        case 3:  // delete bytes
          message.erase(at, 1 + rng() % 4);
          break;
        case 4:  // truncate
          message.resize(at);
          break;
        case 5: {  // overwrite with a length-like value
          const std::string& s = special[rng() % special.size()];
          if (at + s.size() <= message.size()) message.replace(at, s.size(), s);
          break;
        }
      }
    }
    BinaryCopyParser parser(2);
    std::vector<Row> rows;
    for (const std::string& message : messages) {
      const absl::Status status = ParseInto(parser, message, &rows);
      if (!status.ok()) {
        ++errors;
        EXPECT_TRUE(status.code() == absl::StatusCode::kInvalidArgument) << status;
        break;
      }
    }
    for (const Row& row : rows) ASSERT_EQ(row.size(), 2u);
  }
  EXPECT_GT(errors, 10'000);  // the mutations mostly break the stream
}

}  // namespace
}  // namespace pgflow
