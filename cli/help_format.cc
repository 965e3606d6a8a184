#include "cli/help_format.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace pgflow {
namespace {

// The column the subcommands' summaries start at in a list of subcommands.
constexpr int kSubcommandColumn = 14;

std::string WrapLine(absl::string_view line, size_t width) {
  std::string out;
  size_t column = 0;
  for (absl::string_view word : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
    if (column > 0 && column + 1 + word.size() > width) {
      out += '\n';
      column = 0;
    } else if (column > 0) {
      out += ' ';
      ++column;
    }
    absl::StrAppend(&out, word);
    column += word.size();
  }
  return out;
}

}  // namespace

std::string WrapText(absl::string_view text, size_t width) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n')) lines.push_back(WrapLine(line, width));
  return absl::StrJoin(lines, "\n");
}

std::string HelpFormatter::make_description(const CLI::App* app) const {
  const std::string& description = app->get_description();
  if (description.empty()) return "";
  const size_t end = description.find('\n');
  std::string out = absl::StrCat(WrapText(description.substr(0, end), kHelpWidth), "\n\n");
  if (end != std::string::npos) {
    absl::StrAppend(&out, WrapText(description.substr(end + 1), kHelpWidth), "\n\n");
  }
  return out;
}

std::string HelpFormatter::make_subcommand(const CLI::App* sub) const {
  const std::string& description = sub->get_description();
  return absl::StrFormat("  %-*s%s\n", kSubcommandColumn - 2, sub->get_name(),
                         description.substr(0, description.find('\n')));
}

std::string HelpFormatter::make_option_desc(const CLI::Option* opt) const {
  return WrapText(opt->get_description(), kHelpWidth - column_width_);
}

}  // namespace pgflow
