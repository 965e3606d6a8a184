#include "common/postgres/conninfo.h"

#include <string>

#include "gtest/gtest.h"

namespace pgflow {
namespace {

TEST(ConninfoTest, MaskPasswordsHidesPasswordsAndKeyPasswordsOnly) {
  EXPECT_EQ(MaskPasswords("postgres://app:s3cret@db:5432/app?sslmode=require"),
            "postgres://app:******@db:5432/app?sslmode=require");
  EXPECT_EQ(MaskPasswords("postgres://app@db/app?sslkey=k.pem&sslpassword=open&password=pw"),
            "postgres://app@db/app?sslkey=k.pem&sslpassword=****&password=**");
  EXPECT_EQ(MaskPasswords("host=db password='a b' sslpassword=open dbname=app"),
            "host=db password='***' sslpassword=**** dbname=app");
  EXPECT_EQ(MaskPasswords("host=db dbname=password"), "host=db dbname=password");
}

TEST(ConninfoTest, WithHostPointsAUrlAtOneServerAndKeepsTheRest) {
  absl::StatusOr<std::string> moved = WithHost(
      "postgres://app:s%27cret@a:1,b:2/shop?sslmode=disable&target_session_attrs=read-write",
      "10.0.0.7", 5433);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(ConninfoValue(*moved, "host"), "10.0.0.7");
  EXPECT_EQ(ConninfoValue(*moved, "port"), "5433");
  EXPECT_EQ(ConninfoValue(*moved, "user"), "app");
  EXPECT_EQ(ConninfoValue(*moved, "password"), "s'cret");
  EXPECT_EQ(ConninfoValue(*moved, "dbname"), "shop");
  EXPECT_EQ(ConninfoValue(*moved, "target_session_attrs"), "read-write");
  EXPECT_FALSE(WithHost("postgres://a:notaport/x", "h", 1).ok());
}

}  // namespace
}  // namespace pgflow
