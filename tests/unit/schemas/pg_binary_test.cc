#include "schemas/pg_binary.h"

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "schemas/json_encoding.h"
#include "schemas/json_text.h"
#include "schemas/table_schema.h"
#include "tests/unit/schemas/json_encoding_test_util.h"

namespace pgflow {
namespace {

TEST(PgBinaryTest, BinaryUuid) {
  EXPECT_EQ(Binary(oid::kUuid, Bytes({0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d,
                                      0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11})),
            R"("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")");
  EXPECT_EQ(Binary(oid::kUuid, std::string(16, '\0')), R"("00000000-0000-0000-0000-000000000000")");
  EXPECT_EQ(Binary(oid::kUuid, std::string(15, '\xff')), R"("////////////////////")");
}

TEST(PgBinaryTest, BinaryNumeric) {
  auto numeric = [](std::string bytes, JsonOptions options = {}) {
    return Binary(oid::kNumeric, std::move(bytes), options);
  };
  EXPECT_EQ(numeric(NumericBytes(3, 1, 0, 3, {1, 2345, 6780})), R"("12345.678")");
  EXPECT_EQ(numeric(NumericBytes(3, 1, 0x4000, 3, {1, 2345, 6780})), R"("-12345.678")");
  EXPECT_EQ(numeric(NumericBytes(3, 1, 0, 3, {1, 2345, 6780}), NumericAsNumber()), "12345.678");
  EXPECT_EQ(numeric(NumericBytes(0, 0, 0, 0, {})), R"("0")");
  EXPECT_EQ(numeric(NumericBytes(0, 0, 0, 2, {})), R"("0.00")");
  EXPECT_EQ(numeric(NumericBytes(2, 0, 0x4000, 1, {1, 5000})), R"("-1.5")");
  EXPECT_EQ(numeric(NumericBytes(2, 0, 0, 2, {12, 5000})), R"("12.50")");
  EXPECT_EQ(numeric(NumericBytes(1, -1, 0, 4, {1})), R"("0.0001")");
  EXPECT_EQ(numeric(NumericBytes(1, -2, 0, 8, {1234})), R"("0.00001234")");
  EXPECT_EQ(numeric(NumericBytes(1, 1, 0, 0, {1})), R"("10000")");
  EXPECT_EQ(numeric(NumericBytes(1, 5, 0, 0, {1})), R"("100000000000000000000")");
  EXPECT_EQ(numeric(NumericBytes(2, 1, 0, 0, {9999, 9999})), R"("99999999")");
  EXPECT_EQ(numeric(NumericBytes(2, 1, 0, 6, {1, 1})), R"("10001.000000")");
  EXPECT_EQ(numeric(NumericBytes(1, 0, 0, 0, {7}), NumericAsNumber()), "7");
  EXPECT_EQ(numeric(NumericBytes(0, 0, 0xC000, 0, {})), R"("NaN")");
  EXPECT_EQ(numeric(NumericBytes(0, 0, 0xD000, 0, {})), R"("Infinity")");
  EXPECT_EQ(numeric(NumericBytes(0, 0, 0xF000, 0, {}), NumericAsNumber()), R"("-Infinity")");
  // A long value: 1000 integer groups of 1234, then a fractional group.
  std::string big = Be16(1001) + Be16(999) + Be16(0) + Be16(4);
  std::string expected = "\"";
  for (int i = 0; i < 1000; ++i) {
    big += Be16(1234);
    expected += "1234";
  }
  big += Be16(1);
  EXPECT_EQ(numeric(big), expected + ".0001\"");
}

TEST(PgBinaryTest, MalformedBinaryNumericIsBase64) {
  for (const std::string& bytes : {
           std::string(),
           Be16(0) + Be16(0) + Be16(0),                      // short header
           NumericBytes(2, 0, 0, 0, {1}),                    // fewer digits than ndigits
           NumericBytes(1, 0, 0, 0, {1, 2}),                 // more
           NumericBytes(-1, 0, 0, 0, {}),                    // negative ndigits
           NumericBytes(1, 0, 0, 0, {10000}),                // digit out of range
           NumericBytes(1, 0, 0x1234, 0, {1}),               // unknown sign
           NumericBytes(1, 0, 0, 0x4000, {1}),               // dscale out of range
           NumericBytes(1, 0, 0xC000, 0, {1}).substr(0, 9),  // odd length
       }) {
    std::string expected;
    AppendJsonString(Base64(bytes), &expected);
    EXPECT_EQ(Binary(oid::kNumeric, bytes), expected);
  }
}

struct ArrayCase {
  uint32_t array_oid;
  std::string text;    // as array_out writes it
  std::string binary;  // as array_send writes it
  std::string json;
};

TEST(PgBinaryTest, BinaryArraysGiveTheSameJsonAsTheirText) {
  using E = std::vector<std::optional<std::string>>;
  const std::optional<std::string> null;
  const std::vector<ArrayCase> cases = {
      {1007, "{1,-2,NULL}", BinaryArray(oid::kInt4, {3}, E{Int4Bytes(1), Int4Bytes(-2), null}),
       "[1,-2,null]"},
      {1016, "{9223372036854775807,-1}",
       BinaryArray(oid::kInt8, {2}, E{Be64(0x7FFFFFFFFFFFFFFF), Be64(~uint64_t{0})}),
       "[9223372036854775807,-1]"},
      {1005, "{-32768,7}", BinaryArray(oid::kInt2, {2}, E{Be16(0x8000), Be16(7)}), "[-32768,7]"},
      {1028, "{4294967295}", BinaryArray(oid::kOid, {1}, E{Be32(0xFFFFFFFF)}), "[4294967295]"},
      {1009, R"({abc,"a \"b\" \\c","NULL","",NULL,é,"{x},"})",
       BinaryArray(oid::kText, {7}, E{"abc", R"(a "b" \c)", "NULL", "", null, "é", "{x},"}),
       R"(["abc","a \"b\" \\c","NULL","",null,"é","{x},"])"},
      {1015, R"({x,"y z"})", BinaryArray(oid::kVarchar, {2}, E{"x", "y z"}), R"(["x","y z"])"},
      {1014, R"({"ab  "})", BinaryArray(oid::kBpchar, {1}, E{"ab  "}), R"(["ab  "])"},
      {1003, "{pg_class}", BinaryArray(oid::kName, {1}, E{"pg_class"}), R"(["pg_class"])"},
      {1231, "{1.50,NaN,-0.001,NULL}",
       BinaryArray(oid::kNumeric, {4},
                   E{NumericBytes(2, 0, 0, 2, {1, 5000}), NumericBytes(0, 0, 0xC000, 0, {}),
                     NumericBytes(1, -1, 0x4000, 3, {10}), null}),
       R"(["1.50","NaN","-0.001",null])"},
      {1000, "{t,f,NULL}", BinaryArray(oid::kBool, {3}, E{Bytes({1}), Bytes({0}), null}),
       "[true,false,null]"},
      {1022, "{1.5,1e+20,0.0001,NaN,-Infinity,-0,-2.3913735216263928e+16}",
       BinaryArray(oid::kFloat8, {7},
                   E{Float8Bytes(1.5), Float8Bytes(1e20), Float8Bytes(0.0001),
                     Float8Bytes(std::numeric_limits<double>::quiet_NaN()),
                     Float8Bytes(-std::numeric_limits<double>::infinity()), Float8Bytes(-0.0),
                     Float8Bytes(-2.3913735216263928e16)}),
       R"([1.5,1e+20,0.0001,"NaN","-Infinity",-0,-2.3913735216263928e+16])"},
      {1021, "{-1.23331296e+08,0.1,1e+06,123456}",
       BinaryArray(oid::kFloat4, {4},
                   E{Float4Bytes(-1.23331296e8f), Float4Bytes(0.1f), Float4Bytes(1e6f),
                     Float4Bytes(123456.0f)}),
       "[-1.23331296e+08,0.1,1e+06,123456]"},
      {2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}",
       BinaryArray(oid::kUuid, {2},
                   E{Bytes({0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9,
                            0xbd, 0x38, 0x0a, 0x11}),
                     null}),
       R"(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",null])"},
      {1185, R"({"2024-01-02 03:04:05.123+00",infinity,"0044-03-15 00:00:00+00 BC"})",
       BinaryArray(oid::kTimestamptz, {3},
                   E{Be64(PgMicros(2024, 1, 2, 3, 4, 5, 123'000)),
                     Be64(std::numeric_limits<int64_t>::max()),
                     Be64(static_cast<uint64_t>(PgMicros(-43, 3, 15, 0, 0, 0, 0)))}),
       R"(["2024-01-02T03:04:05.123+00:00","infinity","0044-03-15 00:00:00+00 BC"])"},
      {1115, R"({"2024-01-02 03:04:05.5",-infinity})",
       BinaryArray(oid::kTimestamp, {2},
                   E{Be64(PgMicros(2024, 1, 2, 3, 4, 5, 500'000)),
                     Be64(static_cast<uint64_t>(std::numeric_limits<int64_t>::min()))}),
       R"(["2024-01-02T03:04:05.5","-infinity"])"},
      {3807, R"({"{\"a\": 1}","[1, 2]",NULL})",
       BinaryArray(oid::kJsonb, {3}, E{"\x01{\"a\": 1}", "\x01[1, 2]", null}),
       R"([{"a": 1},[1, 2],null])"},
      {199, R"({"{\"a\":1}","\"s\""})", BinaryArray(oid::kJson, {2}, E{R"({"a":1})", R"("s")"}),
       R"([{"a":1},"s"])"},
      {1182, R"({2024-01-02,infinity,"0044-03-15 BC"})",
       BinaryArray(oid::kDate, {3},
                   E{Be32(PgDays(2024, 1, 2)), Be32(0x7FFFFFFF),
                     Be32(static_cast<uint32_t>(PgDays(-43, 3, 15)))}),
       R"(["2024-01-02","infinity","0044-03-15 BC"])"},
      {1001, R"({"\\x00ff","\\x",NULL})",
       BinaryArray(oid::kBytea, {3}, E{std::string("\0\xff", 2), "", null}), R"(["AP8=","",null])"},
      // Several dimensions: nested arrays.
      {1007, "{{1,2,3},{4,NULL,6}}",
       BinaryArray(oid::kInt4, {2, 3},
                   E{Int4Bytes(1), Int4Bytes(2), Int4Bytes(3), Int4Bytes(4), null, Int4Bytes(6)}),
       "[[1,2,3],[4,null,6]]"},
      {1007, "{{{1},{2}},{{3},{4}}}",
       BinaryArray(oid::kInt4, {2, 2, 1},
                   E{Int4Bytes(1), Int4Bytes(2), Int4Bytes(3), Int4Bytes(4)}),
       "[[[1],[2]],[[3],[4]]]"},
      {1009, R"({{{a,b}},{{c,d}},{{e,f}}})",
       BinaryArray(oid::kText, {3, 1, 2}, E{"a", "b", "c", "d", "e", "f"}),
       R"([[["a","b"]],[["c","d"]],[["e","f"]]])"},
      {1007, "{{{{{{5}}}}}}", BinaryArray(oid::kInt4, {1, 1, 1, 1, 1, 1}, E{Int4Bytes(5)}),
       "[[[[[[5]]]]]]"},
      // Empty arrays have no dimensions.
      {1007, "{}", BinaryArray(oid::kInt4, {}, E{}), "[]"},
      {1009, "{}", BinaryArray(oid::kText, {}, E{}), "[]"},
      // Lower bounds other than 1 are dropped.
      {1007, "[0:1]={7,8}", BinaryArray(oid::kInt4, {2}, E{Int4Bytes(7), Int4Bytes(8)}, 0),
       "[7,8]"},
      {1009, "[-3:-2][5:5]={{a},{b}}", BinaryArray(oid::kText, {2, 1}, E{"a", "b"}, -3),
       R"([["a"],["b"]])"},
  };
  for (const ArrayCase& c : cases) {
    EXPECT_EQ(Binary(c.array_oid, c.binary), c.json) << c.text;
    EXPECT_EQ(Text(c.array_oid, c.text), c.json) << c.text;
    EXPECT_TRUE(CanDecodeBinary(c.array_oid)) << c.array_oid;
  }
  // numeric_as_number applies to the elements.
  const std::string numerics =
      BinaryArray(oid::kNumeric, {3},
                  E{NumericBytes(2, 0, 0, 2, {1, 5000}), NumericBytes(0, 0, 0xC000, 0, {}), null});
  EXPECT_EQ(Binary(1231, numerics, NumericAsNumber()), R"([1.50,"NaN",null])");
  EXPECT_EQ(Text(1231, "{1.50,NaN,NULL}", "", NumericAsNumber()), R"([1.50,"NaN",null])");
}

TEST(PgBinaryTest, RandomArraysGiveTheSameJsonInBothForms) {
  std::mt19937 rng(5);
  for (int i = 0; i < 3'000; ++i) {
    std::vector<int32_t> dims(1 + rng() % 4);
    size_t count = 1;
    for (int32_t& dim : dims) {
      dim = 1 + static_cast<int32_t>(rng() % 3);
      count *= static_cast<size_t>(dim);
    }
    const bool strings = rng() % 2 == 0;
    std::vector<std::optional<std::string>> elements;
    std::vector<std::string> texts;  // each element's text in the array's text form
    for (size_t k = 0; k < count; ++k) {
      if (rng() % 5 == 0) {
        elements.push_back(std::nullopt);
        texts.push_back("NULL");
      } else if (strings) {
        std::string value;
        for (size_t n = rng() % 6; n > 0; --n) value.push_back("ab \"\\,{}\n\xc3\xa9"[rng() % 11]);
        std::string quoted = "\"";
        for (char ch : value) {
          if (ch == '"' || ch == '\\') quoted.push_back('\\');
          quoted.push_back(ch);
        }
        elements.push_back(value);
        texts.push_back(quoted + "\"");
      } else {
        const auto v = static_cast<int32_t>(rng());
        elements.push_back(Int4Bytes(v));
        texts.push_back(std::to_string(v));
      }
    }
    // The text form, nested as the dimensions say.
    std::string text;
    std::vector<int32_t> index(dims.size(), 0);
    text.append(dims.size(), '{');
    for (size_t k = 0; k < count; ++k) {
      text += texts[k];
      size_t closed = 0;
      for (size_t d = dims.size(); d-- > 0 && ++index[d] == dims[d];) {
        index[d] = 0;
        ++closed;
      }
      text.append(closed, '}');
      if (k + 1 < count) text += "," + std::string(closed, '{');
    }
    const uint32_t array_oid = strings ? 1009 : 1007;
    const std::string binary =
        BinaryArray(strings ? oid::kText : oid::kInt4, dims, elements, i % 3);
    ASSERT_EQ(Binary(array_oid, binary), Text(array_oid, text)) << text;
  }
}

TEST(PgBinaryTest, MalformedBinaryArraysAreBase64) {
  using E = std::vector<std::optional<std::string>>;
  const std::string valid =
      BinaryArray(oid::kInt4, {2, 2}, E{Int4Bytes(1), Int4Bytes(2), Int4Bytes(3), std::nullopt});
  ASSERT_EQ(Binary(1007, valid), "[[1,2],[3,null]]");
  // Every cut.
  for (size_t length = 0; length < valid.size(); ++length) {
    EXPECT_EQ(Binary(1007, valid.substr(0, length)), Base64String(valid.substr(0, length)))
        << length;
  }
  auto with_int32_at = [&](size_t at, uint32_t v) {
    std::string bytes = valid;
    bytes.replace(at, 4, Be32(v));
    return bytes;
  };
  const std::string kHugeDims = Be32(2) + Be32(0) + Be32(oid::kInt4) + Be32(0x7FFFFFFF) + Be32(1) +
                                Be32(0x7FFFFFFF) + Be32(1) + Int4Bytes(4) + Int4Bytes(1);
  std::string six_huge_dims = Be32(6) + Be32(0) + Be32(oid::kInt4);
  for (int d = 0; d < 6; ++d) six_huge_dims += Be32(0x7FFFFFFF) + Be32(1);
  std::string ten_dims = Be32(10) + Be32(0) + Be32(oid::kInt4);
  for (int d = 0; d < 10; ++d) ten_dims += Be32(1) + Be32(1);
  for (const std::string& bytes : std::initializer_list<std::string>{
           valid + "x",                             // trailing bytes
           BinaryArray(oid::kInt4, {}, E{}) + "x",  // after an empty array too
           with_int32_at(0, 0xFFFFFFFF),            // ndim -1
           with_int32_at(0, 3),                     // ndim 3, but the data of 2
           with_int32_at(4, 2),                     // flags other than 0 and 1
           with_int32_at(8, oid::kInt8),            // another element type
           with_int32_at(12, 0xFFFFFFFF),           // negative dimension
           with_int32_at(12, 3),                    // more elements than there are
           with_int32_at(12, 1),                    // fewer
           with_int32_at(28, 0xFFFFFFFE),           // element length -2
           with_int32_at(28, 5),                    // element length overlapping the next
           with_int32_at(28, 0x7FFFFFFF),           // element length past the end
           with_int32_at(28, 3),                    // an int4 of 3 bytes: the whole array fails
           kHugeDims,                               // 2^62 elements in a few bytes
           six_huge_dims,                           // a product past 2^64
           ten_dims + Int4Bytes(4) + Int4Bytes(1),  // more dimensions than MAXDIM
       }) {
    EXPECT_EQ(Binary(1007, bytes), Base64String(bytes));
  }
  // A dimension of length 0 makes an empty array, whatever the others say (array_recv).
  EXPECT_EQ(Binary(1007, BinaryArray(oid::kInt4, {3, 0}, E{})), "[]");
  EXPECT_EQ(Binary(1007, BinaryArray(oid::kInt4, {0x7FFFFFFF, 0}, E{})), "[]");
}

// Hostile input: mutated arrays never crash or overrun (ASan), and always give valid JSON
// (Binary() checks): the decoded array or base64.
TEST(PgBinaryTest, RandomMutationsOfBinaryArraysGiveValidJson) {
  using E = std::vector<std::optional<std::string>>;
  const std::vector<std::pair<uint32_t, std::string>> arrays = {
      {1007,
       BinaryArray(oid::kInt4, {2, 2}, E{Int4Bytes(1), Int4Bytes(2), std::nullopt, Int4Bytes(4)})},
      {1009, BinaryArray(oid::kText, {3}, E{"a\"b", "", std::nullopt})},
      {3807, BinaryArray(oid::kJsonb, {1, 2}, E{"\x01{\"a\": [1]}", "\x01null"})},
      {1231, BinaryArray(oid::kNumeric, {1}, E{NumericBytes(2, 0, 0, 2, {1, 5000})})},
      {1185, BinaryArray(oid::kTimestamptz, {1}, E{Be64(0)})},
  };
  const std::vector<std::string> special = {Be32(0xFFFFFFFF), Be32(0x7FFFFFFF), Be32(0), Be32(6),
                                            Be32(7)};
  std::mt19937 rng(13);
  int decoded = 0;
  for (int i = 0; i < 20'000; ++i) {
    const auto& [array_oid, valid] = arrays[rng() % arrays.size()];
    std::string bytes = valid;
    for (int m = 1 + static_cast<int>(rng() % 3); m > 0; --m) {
      const size_t at = rng() % (bytes.size() + 1);
      switch (rng() % 4) {
        case 0:
          if (at < bytes.size()) bytes[at] = static_cast<char>(rng());
          break;
        case 1:
          bytes.insert(at, 1, static_cast<char>(rng()));
          break;
        case 2:
          bytes.erase(at, 1 + rng() % 4);
          break;
        case 3: {
          const std::string& s = special[rng() % special.size()];
          if (at + 4 <= bytes.size()) bytes.replace(at, 4, s);
          break;
        }
      }
    }
    const std::string json = Binary(array_oid, bytes);
    if (json[0] == '[') ++decoded;
  }
  EXPECT_GT(decoded, 100);  // some mutations keep the array well-formed
}

// ---------------------------------------------------------------------------------------------
// The functions themselves

TEST(PgBinaryTest, ReadBigEndian) {
  EXPECT_EQ(ReadBigEndian<int16_t>(Be16(0xFFFE).data()), -2);
  EXPECT_EQ(ReadBigEndian<uint16_t>(Be16(0xFFFE).data()), 0xFFFE);
  EXPECT_EQ(ReadBigEndian<int32_t>(Be32(0x80000000).data()), std::numeric_limits<int32_t>::min());
  EXPECT_EQ(ReadBigEndian<uint32_t>(Be32(0x01020304).data()), 0x01020304u);
  EXPECT_EQ(ReadBigEndian<int64_t>(Be64(0x0102030405060708).data()), 0x0102030405060708);
}

TEST(PgBinaryTest, AppendNumericTextWritesNumericOut) {
  auto text = [](const std::string& bytes) {
    std::string out = "x";
    if (!AppendNumericText(bytes, &out)) return out == "x" ? std::string("<malformed>") : out;
    return out.substr(1);
  };
  EXPECT_EQ(text(NumericBytes(3, 1, 0x4000, 3, {1, 2345, 6780})), "-12345.678");
  EXPECT_EQ(text(NumericBytes(0, 0, 0, 2, {})), "0.00");
  EXPECT_EQ(text(NumericBytes(0, 0, 0xC000, 0, {})), "NaN");
  EXPECT_EQ(text(NumericBytes(0, 0, 0xD000, 0, {})), "Infinity");
  EXPECT_EQ(text(NumericBytes(0, 0, 0xF000, 0, {})), "-Infinity");
  EXPECT_EQ(text(NumericBytes(1, 0, 0, 0, {10000})), "<malformed>");
  EXPECT_EQ(text(NumericBytes(2, 0, 0, 0, {1})), "<malformed>");
  EXPECT_EQ(text(""), "<malformed>");
}

TEST(PgBinaryTest, AppendUuidText) {
  std::string out = "x";
  EXPECT_TRUE(AppendUuidText(Bytes({0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d,
                                    0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}),
                             &out));
  EXPECT_EQ(out, "xa0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  EXPECT_FALSE(AppendUuidText(std::string(15, '\0'), &out));
  EXPECT_FALSE(AppendUuidText(std::string(17, '\0'), &out));
  EXPECT_EQ(out, "xa0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
}

TEST(PgBinaryTest, AppendArraySendAsJsonHandsEachElementToItsCaller) {
  using E = std::vector<std::optional<std::string>>;
  // Elements written as their sizes, to see what the walk hands out.
  auto sizes = [](std::string_view element, std::string* out) {
    out->append(std::to_string(element.size()));
    return true;
  };
  std::string out = "x";
  EXPECT_TRUE(AppendArraySendAsJson(
      BinaryArray(oid::kText, {2, 2}, E{"a", "", std::nullopt, "abc"}), oid::kText, sizes, &out));
  EXPECT_EQ(out, "x[[1,0],[null,3]]");
  // A refused element, or another element type: nothing appended.
  auto refuse_empty = [](std::string_view element, std::string* out) {
    if (element.empty()) return false;
    out->append("1");
    return true;
  };
  EXPECT_FALSE(AppendArraySendAsJson(BinaryArray(oid::kText, {2}, E{"a", ""}), oid::kText,
                                     refuse_empty, &out));
  EXPECT_FALSE(
      AppendArraySendAsJson(BinaryArray(oid::kText, {1}, E{"a"}), oid::kVarchar, sizes, &out));
  EXPECT_EQ(out, "x[[1,0],[null,3]]");
}

}  // namespace
}  // namespace pgflow
