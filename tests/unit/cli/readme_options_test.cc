// README.md's table of every key a pipeline file accepts is what `pgflow options --markdown`
// prints: generated from the option tables, never written by hand, and kept equal here.

#include <fstream>
#include <sstream>
#include <string>

#include "cli/components.h"
#include "engine/config.h"
#include "gtest/gtest.h"

namespace pgflow {
namespace {

constexpr std::string_view kBegin = "<!-- pgflow options --markdown: begin -->\n";
constexpr std::string_view kEnd = "<!-- pgflow options --markdown: end -->";

TEST(ReadmeOptionsTest, TheKeyTableIsPgflowOptionsMarkdown) {
  RegisterComponents();
  std::ifstream in(std::string(PGFLOW_SOURCE_DIR) + "/README.md");
  ASSERT_TRUE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  const std::string readme = text.str();
  size_t begin = readme.find(kBegin);
  size_t end = readme.find(kEnd);
  ASSERT_NE(begin, std::string::npos) << "README.md lacks " << kBegin;
  ASSERT_NE(end, std::string::npos) << "README.md lacks " << kEnd;
  begin += kBegin.size();
  ASSERT_LE(begin, end);
  EXPECT_EQ(readme.substr(begin, end - begin), OptionsReference(ReferenceFormat::kMarkdown))
      << "README.md's key table is out of date: run scripts/readme-options.sh";
}

}  // namespace
}  // namespace pgflow
