// docs/reference/cli.md's generated part, the --help of pgflow and of every subcommand, is what
// `pgflow cli-reference` prints: generated from the subcommands' declarations, never written by
// hand, and kept equal here. And `pgflow --help` lists each subcommand on one line.

#include "cli/app.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "cli/help_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/cli/generated_section.h"

namespace pgflow {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr std::string_view kPage = "docs/reference/cli.md";

TEST(CliReferenceTest, ThePageIsPgflowCliReference) {
  absl::StatusOr<std::string> reference =
      GeneratedSection(std::string(kPage), "pgflow cli-reference");
  ASSERT_TRUE(reference.ok()) << reference.status();
  EXPECT_EQ(*reference, CliReference()) << kPage << " is out of date: run scripts/cli-reference.sh";
}

TEST(CliReferenceTest, EveryCommandHasItsSection) {
  const std::string reference = CliReference();
  for (const char* command :
       {"pgflow", "pgflow run", "pgflow init", "pgflow teardown", "pgflow validate",
        "pgflow preview", "pgflow dlq", "pgflow snapshot", "pgflow verify", "pgflow sequences",
        "pgflow roles", "pgflow cutover", "pgflow status", "pgflow pooler", "pgflow pooler status",
        "pgflow options"}) {
    EXPECT_THAT(reference, HasSubstr("\n## `" + std::string(command) + "`\n")) << command;
  }
  EXPECT_THAT(reference, Not(HasSubstr("cli-reference")));
}

TEST(CliReferenceTest, PgflowHelpListsEachCommandOnOneLine) {
  std::unique_ptr<CommandLine> line = MakeCommandLine();
  const std::string help = line->app.help();
  const std::vector<std::string> lines = absl::StrSplit(help, '\n');
  EXPECT_LE(lines.size(), 40u) << help;
  for (const std::string& l : lines) EXPECT_LE(l.size(), kHelpWidth) << l;
  for (const Command& command : line->commands) {
    const std::string name = command.app->get_name();
    if (command.app->get_group().empty()) {  // hidden
      EXPECT_THAT(help, Not(HasSubstr(name)));
      continue;
    }
    size_t lines_naming = 0;
    for (const std::string& l : lines) lines_naming += l.rfind("  " + name + " ", 0) == 0;
    EXPECT_EQ(lines_naming, 1u) << name << " in\n" << help;
    // The paragraph is in the command's own --help, not in pgflow's.
    const std::string own = command.app->help("pgflow");
    const std::string paragraph =
        command.app->get_description().substr(command.app->get_description().find('\n') + 1);
    EXPECT_THAT(help, Not(HasSubstr(paragraph.substr(0, 60)))) << name;
    EXPECT_THAT(own, HasSubstr("Usage: pgflow " + name)) << own;
  }
}

TEST(CliReferenceTest, WrapTextBreaksAtSpacesAndKeepsLineBreaks) {
  EXPECT_EQ(WrapText("aaa bbb ccc", 7), "aaa bbb\nccc");
  EXPECT_EQ(WrapText("aaa\nbbb ccc", 20), "aaa\nbbb ccc");
  EXPECT_EQ(WrapText("averyveryverylongword x", 5), "averyveryverylongword\nx");
  EXPECT_EQ(WrapText("", 5), "");
}

}  // namespace
}  // namespace pgflow
