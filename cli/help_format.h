#pragma once

// How `pgflow` prints --help: `pgflow --help` lists each subcommand on one line (its summary),
// as git and kubectl do, and `pgflow <command> --help` shows the summary, then the paragraph
// that says what the command does, then its arguments. Text is wrapped at kHelpWidth columns.
// A subcommand's description is its summary, a line break, then the paragraph (AddCommand,
// cli/command.h).

#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/string_view.h"

namespace pgflow {

inline constexpr size_t kHelpWidth = 80;

// `text` broken into lines of at most `width` columns at spaces (a longer word stays whole);
// its own line breaks are kept.
std::string WrapText(absl::string_view text, size_t width);

// The formatter of the `pgflow` app; subcommands added after it is set inherit it.
class HelpFormatter : public CLI::Formatter {
 public:
  // The app's description: its first line, then the rest wrapped, each followed by a blank line.
  std::string make_description(const CLI::App* app) const override;
  // A line per subcommand: its name and the first line of its description.
  std::string make_subcommand(const CLI::App* sub) const override;
  // An option's description, wrapped to the columns right of the option's name.
  std::string make_option_desc(const CLI::Option* opt) const override;
};

}  // namespace pgflow
