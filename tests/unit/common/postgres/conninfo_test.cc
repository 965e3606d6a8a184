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

}  // namespace
}  // namespace pgflow
