// docs/reference/pipeline-options.md's table of every key a pipeline file accepts is what
// `pgflow options --markdown` prints: generated from the option tables, never written by hand,
// and kept equal here.

#include <fstream>
#include <sstream>
#include <string>

#include "cli/components.h"
#include "engine/config.h"
#include "gtest/gtest.h"

namespace pgflow {
namespace {

constexpr std::string_view kPage = "docs/reference/pipeline-options.md";
constexpr std::string_view kBegin = "<!-- pgflow options --markdown: begin -->\n";
constexpr std::string_view kEnd = "<!-- pgflow options --markdown: end -->";

TEST(OptionsReferenceTest, TheKeyTableIsPgflowOptionsMarkdown) {
  RegisterComponents();
  std::ifstream in(std::string(PGFLOW_SOURCE_DIR) + "/" + std::string(kPage));
  ASSERT_TRUE(in.good()) << kPage;
  std::stringstream text;
  text << in.rdbuf();
  const std::string page = text.str();
  size_t begin = page.find(kBegin);
  size_t end = page.find(kEnd);
  ASSERT_NE(begin, std::string::npos) << kPage << " lacks " << kBegin;
  ASSERT_NE(end, std::string::npos) << kPage << " lacks " << kEnd;
  begin += kBegin.size();
  ASSERT_LE(begin, end);
  EXPECT_EQ(page.substr(begin, end - begin), OptionsReference(ReferenceFormat::kMarkdown))
      << kPage << "'s key table is out of date: run scripts/options-reference.sh";
}

}  // namespace
}  // namespace pgflow
