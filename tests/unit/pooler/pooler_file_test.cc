// The console's edits of the pooler's file: a database added or removed, everything else left
// as written.

#include "pooler/pooler_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <cstdlib>

#include "pooler/pooler_config.h"

namespace pgflow::pooler {
namespace {

using ::testing::HasSubstr;

constexpr char kFile[] = R"(# the pooler of the shop
listen: 127.0.0.1:6432
databases:
    # the application's
    app:
      url: postgres://app@10.0.0.1/app   # primary
      pool_size: 20

    reports: {url: "postgres://r@10.0.0.2/reports"}
# after the databases
hold_timeout: 30s
)";

TEST(PoolerFileTest, AddsAtTheEndOfTheSectionWithItsIndentation) {
  absl::StatusOr<std::string> out = AddDatabaseToText(
      kFile, {"tenant_7", "postgres://t7:p\"w@10.0.0.3/t7", "session", 5});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, R"(# the pooler of the shop
listen: 127.0.0.1:6432
databases:
    # the application's
    app:
      url: postgres://app@10.0.0.1/app   # primary
      pool_size: 20

    reports: {url: "postgres://r@10.0.0.2/reports"}
    tenant_7: {url: "postgres://t7:p\"w@10.0.0.3/t7", pool_mode: session, pool_size: 5}
# after the databases
hold_timeout: 30s
)");
  absl::StatusOr<PoolerConfig> config =
      ParsePoolerConfig("auth: {method: trust}\n" + *out, "pooler.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->databases.count("tenant_7"), 1u);
  EXPECT_EQ(config->databases.at("tenant_7").url, "postgres://t7:p\"w@10.0.0.3/t7");
  EXPECT_EQ(config->databases.at("app").url, "postgres://app@10.0.0.1/app");
}

TEST(PoolerFileTest, RemovesTheEntryAndTheLinesUnderItOnly) {
  absl::StatusOr<std::string> out = RemoveDatabaseFromText(kFile, "app");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, R"(# the pooler of the shop
listen: 127.0.0.1:6432
databases:
    # the application's

    reports: {url: "postgres://r@10.0.0.2/reports"}
# after the databases
hold_timeout: 30s
)");
  absl::StatusOr<std::string> last = RemoveDatabaseFromText(*out, "reports");
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_THAT(*last, HasSubstr("databases:\n    # the application's\n\n# after"));
}

TEST(PoolerFileTest, RefusesWhatItCannotDoAndSaysWhy) {
  EXPECT_TRUE(absl::IsAlreadyExists(
      AddDatabaseToText(kFile, {"reports", "postgres://h/r", "", 0}).status()));
  EXPECT_TRUE(absl::IsNotFound(RemoveDatabaseFromText(kFile, "nope").status()));
  // Not a key of `databases:`, though the word is in the file.
  EXPECT_TRUE(absl::IsNotFound(RemoveDatabaseFromText(kFile, "url").status()));
  for (const NewDatabase& bad : std::vector<NewDatabase>{{"", "postgres://h/x", "", 0},
                                                         {"a b", "postgres://h/x", "", 0},
                                                         {"x: y", "postgres://h/x", "", 0},
                                                         {"pgflow", "postgres://h/x", "", 0},
                                                         {"x", "", "", 0},
                                                         {"x", "postgres://h/x\nlisten: 0", "", 0},
                                                         {"x", "postgres://h/x", "batch", 0},
                                                         {"x", "postgres://h/x", "", -1}}) {
    EXPECT_TRUE(absl::IsInvalidArgument(AddDatabaseToText(kFile, bad).status())) << bad.name;
  }
  absl::Status flow =
      AddDatabaseToText("listen: 127.0.0.1:6432\ndatabases: {app: {url: postgres://h/app}}\n",
                        {"x", "postgres://h/x", "", 0})
          .status();
  EXPECT_THAT(flow.message(), HasSubstr("line 2: databases: is written on one line"));
}

TEST(PoolerFileTest, KeepsCrlfLineEndsAndReadsKeysSpacedBeforeTheColon) {
  const std::string crlf = "listen: 127.0.0.1:6432\r\ndatabases :  # all\r\n  app : {url: x}\r\n";
  absl::StatusOr<std::string> added = AddDatabaseToText(crlf, {"b", "postgres://h/b", "", 0});
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(*added,
            "listen: 127.0.0.1:6432\r\ndatabases :  # all\r\n  app : {url: x}\r\n"
            "  b: {url: \"postgres://h/b\"}\r\n");
  absl::StatusOr<std::string> removed = RemoveDatabaseFromText(crlf, "app");
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, "listen: 127.0.0.1:6432\r\ndatabases :  # all\r\n");
}

// The loader expands ${NAME} in every string: an added url is written so that it reads back
// as typed, and never reads the pooler's environment.
TEST(PoolerFileTest, AUrlReadsBackAsTypedDollarsIncluded) {
  setenv("PGFLOW_FILE_TEST_SECRET", "leaked", 1);
  absl::StatusOr<std::string> out = AddDatabaseToText(
      "listen: 127.0.0.1:6432\nauth: {method: trust}\n",
      {"x", "postgres://u:pa$$${PGFLOW_FILE_TEST_SECRET}@h/x", "", 0});
  ASSERT_TRUE(out.ok()) << out.status();
  absl::StatusOr<PoolerConfig> config = ParsePoolerConfig(*out, "pooler.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->databases.at("x").url, "postgres://u:pa$$${PGFLOW_FILE_TEST_SECRET}@h/x");
}

TEST(PoolerFileTest, AFileWithoutDatabasesGetsTheSection) {
  absl::StatusOr<std::string> out =
      AddDatabaseToText("listen: 127.0.0.1:6432\n", {"app", "postgres://h/app", "", 0});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "listen: 127.0.0.1:6432\ndatabases:\n  app: {url: \"postgres://h/app\"}\n");
}

TEST(PoolerFileTest, WritesAtomicallyKeepingThePermissions) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "pgflow-file-test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "pooler.yaml").string();
  { std::ofstream(path) << "old\n"; }
  std::filesystem::permissions(path, std::filesystem::perms::owner_read |
                                         std::filesystem::perms::owner_write);
  ASSERT_TRUE(WriteFileAtomically(path, "new\n").ok());
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  EXPECT_EQ(text.str(), "new\n");
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_FALSE(std::filesystem::exists(path + ".pgflow-new"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pgflow::pooler
