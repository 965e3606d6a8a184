// The kernel's limits the pooler checks at start, against what its file asks for.

#include "pooler/kernel_limits.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace pgflow::pooler {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

PoolerConfig WithClients(int max_client_conn) {
  PoolerConfig config;
  config.max_client_conn = max_client_conn;
  DatabaseOptions app;
  app.pool_size = 20;
  app.reserve_pool = 5;
  config.databases["app"] = app;
  config.databases["reports"] = DatabaseOptions();  // pool_size 20
  return config;
}

TEST(KernelLimitsTest, CountsClientsServersAndAMargin) {
  EXPECT_EQ(DescriptorsNeeded(WithClients(19000)), 19000u + 25 + 20 + 64);
  PoolerConfig tls = WithClients(19000);
  tls.tls.cert = "server.crt";  // a TLS login borrows a socket pair: room for 1,000 at once
  EXPECT_EQ(DescriptorsNeeded(tls), 19000u + 2000 + 25 + 20 + 64);
}

TEST(KernelLimitsTest, NamesEachSettingTooLowAndHowToRaiseIt) {
  const std::vector<std::string> problems =
      KernelLimitProblems(WithClients(19000),
                          {.open_files = 1024, .open_files_hard = 4096, .somaxconn = 128});
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_THAT(problems[0], AllOf(HasSubstr("max_client_conn 19000 needs about 19109 open files"),
                                 HasSubstr("may open 1024 (hard limit 4096)"),
                                 HasSubstr("ulimit -n 19109"), HasSubstr("LimitNOFILE=19109")));
  EXPECT_THAT(problems[1], AllOf(HasSubstr("net.core.somaxconn is 128"),
                                 HasSubstr("sysctl -w net.core.somaxconn=4096")));
}

TEST(KernelLimitsTest, QuietWhenTheyAreHighEnoughOrUnknown) {
  EXPECT_THAT(KernelLimitProblems(WithClients(19000), {.open_files = 20000,
                                                       .open_files_hard = 20000,
                                                       .somaxconn = 4096}),
              IsEmpty());
  EXPECT_THAT(KernelLimitProblems(WithClients(19000), {}), IsEmpty());
  // A small pooler needs no deep accept queue.
  EXPECT_THAT(KernelLimitProblems(WithClients(100), {.open_files = 1024, .somaxconn = 128}),
              IsEmpty());
  EXPECT_THAT(KernelLimitProblems(WithClients(2000), {.open_files = 1024, .somaxconn = 4096}),
              ElementsAre(HasSubstr("needs about 2109 open files")));
}

}  // namespace
}  // namespace pgflow::pooler
