#include "schemas/pg_array_literal.h"

#include <initializer_list>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "schemas/json_encoding.h"
#include "schemas/table_schema.h"
#include "tests/unit/schemas/json_encoding_test_util.h"

namespace pgflow {
namespace {

TEST(PgArrayLiteralTest, ArraysOfIntegers) {
  EXPECT_EQ(Text(1007, "{1,2,NULL}"), "[1,2,null]");
  EXPECT_EQ(Text(1005, "{-32768,32767}"), "[-32768,32767]");
  EXPECT_EQ(Text(1016, "{9223372036854775807}"), "[9223372036854775807]");
  EXPECT_EQ(Text(1028, "{0,4294967295}"), "[0,4294967295]");
  EXPECT_EQ(Text(1007, "{1,x}"), R"([1,"x"])");  // an element is converted on its own
}

TEST(PgArrayLiteralTest, ArraysOfOtherScalars) {
  EXPECT_EQ(Text(1000, "{t,f,NULL}"), "[true,false,null]");
  EXPECT_EQ(Text(1021, "{1.5,NaN,-Infinity}"), R"([1.5,"NaN","-Infinity"])");
  EXPECT_EQ(Text(1022, "{1e+100,-0.5,Infinity}"), R"([1e+100,-0.5,"Infinity"])");
  EXPECT_EQ(Text(1231, "{12.50,NaN}"), R"(["12.50","NaN"])");
  EXPECT_EQ(Text(1231, "{12.50,NaN,NULL}", "", NumericAsNumber()), R"([12.50,"NaN",null])");
  EXPECT_EQ(Text(1009, R"({"a b","c\"d",NULL})"), R"(["a b","c\"d",null])");
  EXPECT_EQ(Text(1015, R"({x,"y,z"})"), R"(["x","y,z"])");
  EXPECT_EQ(Text(1014, R"({"ab ",cd})"), R"(["ab ","cd"])");
  EXPECT_EQ(Text(1002, R"({a,"\""})"), R"(["a","\""])");
  EXPECT_EQ(Text(1003, "{pg_class,pg_type}"), R"(["pg_class","pg_type"])");
  EXPECT_EQ(Text(2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
            R"(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"])");
  EXPECT_EQ(Text(1182, "{2024-01-02,infinity}"), R"(["2024-01-02","infinity"])");
  EXPECT_EQ(Text(1183, "{03:04:05,23:59:59.999999}"), R"(["03:04:05","23:59:59.999999"])");
  EXPECT_EQ(Text(1270, "{03:04:05+02}"), R"(["03:04:05+02"])");
  EXPECT_EQ(Text(1187, "{P1D,PT1H}"), R"(["P1D","PT1H"])");
  EXPECT_EQ(Text(1041, "{192.168.0.1,::1}"), R"(["192.168.0.1","::1"])");  // inet[]
}

TEST(PgArrayLiteralTest, ArraysOfTimestamps) {
  EXPECT_EQ(Text(1115, R"({"2024-01-02 03:04:05","2024-01-02 03:04:05.5",infinity,NULL})"),
            R"(["2024-01-02T03:04:05","2024-01-02T03:04:05.5","infinity",null])");
  EXPECT_EQ(Text(1185, R"({"2024-01-02 03:04:05+00","0044-03-15 00:00:00+00 BC"})"),
            R"(["2024-01-02T03:04:05+00:00","0044-03-15 00:00:00+00 BC"])");
}

TEST(PgArrayLiteralTest, ArraysOfJsonEmbedTheirElements) {
  EXPECT_EQ(Text(3807, R"({"{\"a\": 1}","[1, 2]",NULL,"\"s\""})"), R"([{"a": 1},[1, 2],null,"s"])");
  EXPECT_EQ(Text(199, "{\"{\\\"a\\\":\n1}\",3}"), R"([{"a":1},3])");  // newline inside
  EXPECT_EQ(Text(199, R"({"{oops"})"), R"(["{oops"])");               // not JSON: a string
}

TEST(PgArrayLiteralTest, ArraysOfBytea) {
  EXPECT_EQ(Text(1001, R"({"\\x666f6f","\\x",NULL})"), R"(["Zm9v","",null])");
}

TEST(PgArrayLiteralTest, ArrayElementsWithEscapes) {
  EXPECT_EQ(Text(1009, R"({"back\\slash","quote\"d","{braces}","comma,","  spaced  "})"),
            R"(["back\\slash","quote\"d","{braces}","comma,","  spaced  "])");
  EXPECT_EQ(Text(1009, "{\"tab\there\",\"line\nbreak\"}"), R"(["tab\there","line\nbreak"])");
  EXPECT_EQ(Text(1009, "{\"\",\"\\\\\"}"), R"(["","\\"])");
  EXPECT_EQ(Text(1009, "{é,\"ü\"}"), R"(["é","ü"])");
  EXPECT_EQ(Text(1009, "{\"bad \xff byte\"}"), "[\"bad \xEF\xBF\xBD byte\"]");
  // A long escaped element (past any small-string buffer), twice, to reuse the scratch space.
  const std::string long_text(1000, 'x');
  EXPECT_EQ(Text(1009, "{\"" + long_text + "\\\"\",\"a\\\"\"}"),
            "[\"" + long_text + "\\\"\",\"a\\\"\"]");
}

TEST(PgArrayLiteralTest, QuotedNullIsAString) {
  EXPECT_EQ(Text(1009, R"({NULL,"NULL",null,"null",NuLl})"), R"([null,"NULL",null,"null",null])");
  EXPECT_EQ(Text(1007, R"({"NULL"})"), R"(["NULL"])");
}

TEST(PgArrayLiteralTest, NestedArrays) {
  EXPECT_EQ(Text(1007, "{{1,2},{3,4}}"), "[[1,2],[3,4]]");
  EXPECT_EQ(Text(1007, "{{{1},{2}},{{3},{NULL}}}"), "[[[1],[2]],[[3],[null]]]");
  EXPECT_EQ(Text(1009, R"({{"a,b",c},{NULL,"}"}})"), R"([["a,b","c"],[null,"}"]])");
  EXPECT_EQ(Text(1007, "{{1,2,3,4,5,6}}"), "[[1,2,3,4,5,6]]");
  // PostgreSQL's limit is 6 dimensions.
  EXPECT_EQ(Text(1007, "{{{{{{1}}}}}}"), "[[[[[[1]]]]]]");
}

TEST(PgArrayLiteralTest, EmptyArray) {
  EXPECT_EQ(Text(1007, "{}"), "[]");
  EXPECT_EQ(Text(1009, "{}"), "[]");
  EXPECT_EQ(Text(16'390, "{}", "public._mood"), "[]");
}

TEST(PgArrayLiteralTest, ArrayDimensionPrefixIsDropped) {
  EXPECT_EQ(Text(1007, "[0:1]={1,2}"), "[1,2]");
  EXPECT_EQ(Text(1007, "[-2:-1]={1,2}"), "[1,2]");
  EXPECT_EQ(Text(1007, "[1:2][0:0]={{1},{2}}"), "[[1],[2]]");
  EXPECT_EQ(Text(1009, R"([2:3]={"a b",NULL})"), R"(["a b",null])");
}

TEST(PgArrayLiteralTest, ArrayWhitespaceIsTolerated) {
  EXPECT_EQ(Text(1007, " { { 1 } , {2 } } "), "[[1],[2]]");
  EXPECT_EQ(Text(1007, " { 1 , 2 ,NULL } "), "[1,2,null]");
  EXPECT_EQ(Text(1009, R"({ "a" , b c })"), R"(["a","b c"])");
}

TEST(PgArrayLiteralTest, ArraysOfNonBuiltinTypesAreArraysOfStrings) {
  EXPECT_EQ(Text(16'390, R"({happy,sad,NULL,"very happy"})", "public._mood"),
            R"(["happy","sad",null,"very happy"])");
  EXPECT_EQ(Text(16'390, "{1,2}", "_mood"), R"(["1","2"])");
  EXPECT_EQ(Text(16'391, "{{a},{b}}", "app.schema._composite"), R"([["a"],["b"]])");
  // Not an array name: the text.
  EXPECT_EQ(Text(16'392, "{happy}", "public.mood"), R"("{happy}")");
  EXPECT_EQ(Text(16'392, "{happy}", "my_schema.mood"), R"("{happy}")");
  EXPECT_EQ(Text(16'392, "{happy}"), R"("{happy}")");
  // Named like an array but not one.
  EXPECT_EQ(Text(16'393, "plain", "public._odd"), R"("plain")");
}

TEST(PgArrayLiteralTest, BoxArrayIsAString) {
  EXPECT_EQ(Text(1020, "{(1,1),(0,0);(2,2),(1,1)}"), R"("{(1,1),(0,0);(2,2),(1,1)}")");
}

TEST(PgArrayLiteralTest, MalformedArraysAreTheirText) {
  for (const std::string& text : std::initializer_list<std::string>{
           "",        "{",        "}",        "1,2",
           "{1,2",    "{1,2}x",   "{1,,2}",   "{,}",
           "{1,}",    "{,1}",     "{1}}",     "{{1}",
           "{\"abc}", "{\"abc\\", "{{1},2}",  "{1,{2}}",
           "{a\"b}",  "{a\\b}",   "{a{b}",    "[0:1]{1,2}",
           "[x]={1}", "[0:1]",    "[0:1]=",   "[0:]={1}",
           "{1} {2}", "{{}",      "{\"a\"b}", std::string(20, '{') + "1" + std::string(20, '}')}) {
    EXPECT_EQ(Text(1007, text), JsonString(text)) << text;
    EXPECT_EQ(Text(1009, text), JsonString(text)) << text;
  }
}

// ---------------------------------------------------------------------------------------------
// The functions themselves

std::string Element(std::string_view element) {
  std::string out = "x";
  AppendArrayLiteralElement(element, &out);
  return out.substr(1);
}

// An array literal of `elements` (nullopt: NULL), each written by `write`.
template <typename Write>
std::string Literal(const std::vector<std::optional<std::string>>& elements, Write write) {
  std::string literal = "{";
  for (size_t i = 0; i < elements.size(); ++i) {
    if (i > 0) literal.push_back(',');
    if (elements[i].has_value()) {
      write(*elements[i], &literal);
    } else {
      literal.append("NULL");
    }
  }
  literal.push_back('}');
  return literal;
}

// The elements of an array literal, as JSON strings (elements) and nulls.
std::string Elements(std::string_view literal) {
  std::string json;
  if (!AppendArrayLiteralAsJson(literal, AppendJsonString, &json)) return "<malformed>";
  return json;
}

TEST(PgArrayLiteralTest, ElementsAreQuotedAsArrayOutQuotesThem) {
  EXPECT_EQ(Element("abc"), "abc");
  EXPECT_EQ(Element("é"), "é");
  EXPECT_EQ(Element("NULLx"), "NULLx");
  EXPECT_EQ(Element("12.5"), "12.5");
  EXPECT_EQ(Element(""), R"("")");
  EXPECT_EQ(Element("NULL"), R"("NULL")");
  EXPECT_EQ(Element("nUlL"), R"("nUlL")");
  EXPECT_EQ(Element("a b"), R"("a b")");
  EXPECT_EQ(Element("a,b"), R"("a,b")");
  EXPECT_EQ(Element("{x}"), R"("{x}")");
  EXPECT_EQ(Element(R"(say "hi")"), R"("say \"hi\"")");
  EXPECT_EQ(Element(R"(back\slash)"), R"("back\\slash")");
  for (const char* space : {" ", "\t", "\n", "\r", "\v", "\f"}) {
    EXPECT_EQ(Element(space), std::string("\"") + space + "\"");
  }
}

// Whatever the elements, the reader gives back what the writer wrote; and it reads the same
// elements from a literal that quotes every one of them (as sinks/postgres writes its batches).
TEST(PgArrayLiteralTest, TheReaderReadsBackWhatTheWriterWrites) {
  const std::string alphabet = "ab \"\\{},NUL\tx\n\xc3\xa9";
  auto always_quoted = [](std::string_view element, std::string* out) {
    out->push_back('"');
    for (char c : element) {
      if (c == '"' || c == '\\') out->push_back('\\');
      out->push_back(c);
    }
    out->push_back('"');
  };
  std::mt19937 rng(37);
  for (int i = 0; i < 5'000; ++i) {
    std::vector<std::optional<std::string>> elements(rng() % 5);
    std::string expected = "[";
    for (size_t k = 0; k < elements.size(); ++k) {
      if (k > 0) expected.push_back(',');
      if (rng() % 6 == 0) {
        expected.append("null");
        continue;
      }
      std::string element;
      for (size_t n = rng() % 7; n > 0; --n) element.push_back(alphabet[rng() % alphabet.size()]);
      AppendJsonString(element, &expected);
      elements[k] = std::move(element);
    }
    expected.push_back(']');
    const std::string literal = Literal(elements, AppendArrayLiteralElement);
    ASSERT_EQ(Elements(literal), expected) << literal;
    ASSERT_EQ(Elements(Literal(elements, always_quoted)), expected) << literal;
  }
}

TEST(PgArrayLiteralTest, AMalformedLiteralAppendsNothing) {
  std::string out = "x";
  EXPECT_FALSE(AppendArrayLiteralAsJson("{1,{2}}", AppendJsonString, &out));
  EXPECT_FALSE(AppendArrayLiteralAsJson("{\"a\",", AppendJsonString, &out));
  EXPECT_EQ(out, "x");
}

TEST(PgArrayLiteralTest, TheCallbackMayReadALiteralItself) {
  // Quoted elements with escapes are unescaped into a per-thread buffer; a literal read from
  // inside the callback must not overwrite the element being handed out.
  std::string out;
  EXPECT_TRUE(AppendArrayLiteralAsJson(R"({"a\"b","c\\d"})",
                                       [](std::string_view element, std::string* json) {
                                         std::string inner;
                                         EXPECT_TRUE(AppendArrayLiteralAsJson(
                                             R"({"x\"y"})", AppendJsonString, &inner));
                                         EXPECT_EQ(inner, R"(["x\"y"])");
                                         AppendJsonString(element, json);
                                       },
                                       &out));
  EXPECT_EQ(out, R"(["a\"b","c\\d"])");
}

}  // namespace
}  // namespace pgflow
