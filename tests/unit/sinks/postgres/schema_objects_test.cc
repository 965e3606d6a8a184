#include "sinks/postgres/schema_objects.h"

#include "gtest/gtest.h"

namespace pgflow {
namespace {

TEST(SchemaObjectsTest, KeepsWhatTablesDependOnAndLeavesTablesToTheSink) {
  // Lines as `pg_restore --list` prints them.
  EXPECT_TRUE(IsSchemaObjectEntry("876; 1247 16447 TYPE public comp postgres"));
  EXPECT_TRUE(IsSchemaObjectEntry("869; 1247 16437 DOMAIN public con postgres"));
  EXPECT_TRUE(IsSchemaObjectEntry("225; 1255 16458 FUNCTION public f1() postgres"));
  EXPECT_TRUE(IsSchemaObjectEntry("2; 3079 16385 EXTENSION - citext "));
  EXPECT_TRUE(IsSchemaObjectEntry("3; 3456 16500 COLLATION public bytewise postgres"));
  EXPECT_TRUE(IsSchemaObjectEntry("4; 2616 16501 OPERATOR CLASS public my_ops postgres"));
  EXPECT_TRUE(IsSchemaObjectEntry("5; 3602 16502 TEXT SEARCH CONFIGURATION public cfg postgres"));
  EXPECT_FALSE(IsSchemaObjectEntry("221; 1259 16459 TABLE public dt postgres"));
  EXPECT_FALSE(IsSchemaObjectEntry("222; 1259 16460 SEQUENCE public dt_id_seq postgres"));
  EXPECT_FALSE(IsSchemaObjectEntry("223; 1259 16461 VIEW public v postgres"));
  EXPECT_FALSE(IsSchemaObjectEntry("3400; 0 0 COMMENT - EXTENSION citext "));
  EXPECT_FALSE(IsSchemaObjectEntry(";  Archive created at 2026-11-23 22:00:00 UTC"));
  EXPECT_FALSE(IsSchemaObjectEntry(""));
  EXPECT_FALSE(IsSchemaObjectEntry("garbage"));
}

}  // namespace
}  // namespace pgflow
