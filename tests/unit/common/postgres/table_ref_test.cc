#include "common/postgres/table_ref.h"

#include <string>

#include "gtest/gtest.h"

namespace pgflow {
namespace {

TEST(TableRefTest, UnquotedNamesFoldQuotedOnesKeepTheirCase) {
  EXPECT_EQ(*ParseTableRef("Public.Orders"), (TableRef{"public", "orders"}));
  EXPECT_EQ(*ParseTableRef("\"My Schema\".\"Order\""), (TableRef{"My Schema", "Order"}));
  EXPECT_EQ(*ParseTableRef("app.*"), (TableRef{"app", "*"}));
  EXPECT_EQ(*ParseTableRef("s.\"a\"\"b\""), (TableRef{"s", "a\"b"}));
  EXPECT_FALSE(ParseTableRef("orders").ok());
  EXPECT_FALSE(ParseTableRef("db.s.t").ok());
  EXPECT_FALSE(ParseTableRef("s.\"\"").ok());
}

TEST(TableRefTest, QuotedIsReadBackAsTheSameReference) {
  for (const TableRef& ref :
       {TableRef{"public", "orders"}, TableRef{"My Schema", "Order"}, TableRef{"s", "a\"b"},
        TableRef{"s", "a.b,c"}, TableRef{"app", "*"}, TableRef{"x", "1abc"}}) {
    absl::StatusOr<TableRef> back = ParseTableRef(ref.Quoted());
    ASSERT_TRUE(back.ok()) << ref.Quoted() << ": " << back.status();
    EXPECT_EQ(*back, ref) << ref.Quoted();
  }
  EXPECT_EQ((TableRef{"public", "orders"}).Quoted(), "public.orders");
  EXPECT_EQ((TableRef{"My Schema", "Order"}).Quoted(), "\"My Schema\".\"Order\"");
}

TEST(TableRefTest, ASchemaReferenceCoversItsTables) {
  EXPECT_TRUE((TableRef{"app", "*"}).Covers({"app", "t"}));
  EXPECT_TRUE((TableRef{"app", "t"}).Covers({"app", "t"}));
  EXPECT_FALSE((TableRef{"app", "t"}).Covers({"app", "u"}));
  EXPECT_FALSE((TableRef{"app", "*"}).Covers({"other", "t"}));
}

}  // namespace
}  // namespace pgflow
