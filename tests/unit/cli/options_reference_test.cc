// docs/reference/pipeline-options.md's table of every key a pipeline file accepts is what
// `pgflow options --markdown` prints: generated from the option tables, never written by hand,
// and kept equal here.

#include <string>

#include "cli/components.h"
#include "engine/config.h"
#include "gtest/gtest.h"
#include "tests/unit/cli/generated_section.h"

namespace pgflow {
namespace {

constexpr std::string_view kPage = "docs/reference/pipeline-options.md";

TEST(OptionsReferenceTest, TheKeyTableIsPgflowOptionsMarkdown) {
  RegisterComponents();
  absl::StatusOr<std::string> table =
      GeneratedSection(std::string(kPage), "pgflow options --markdown");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(*table, OptionsReference(ReferenceFormat::kMarkdown))
      << kPage << "'s key table is out of date: run scripts/options-reference.sh";
}

}  // namespace
}  // namespace pgflow
