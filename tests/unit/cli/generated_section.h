#pragma once

// The part of a docs page a script generates: what lies between `<!-- NAME: begin -->` and
// `<!-- NAME: end -->` (scripts/splice-generated.py writes it).

#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace pgflow {

// `page` is relative to the source tree. An error names what is missing.
inline absl::StatusOr<std::string> GeneratedSection(const std::string& page,
                                                    const std::string& name) {
  std::ifstream in(absl::StrCat(PGFLOW_SOURCE_DIR, "/", page));
  if (!in.good()) return absl::NotFoundError(absl::StrCat(page, " cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  const std::string content = text.str();
  const std::string begin_marker = absl::StrCat("<!-- ", name, ": begin -->\n");
  const std::string end_marker = absl::StrCat("<!-- ", name, ": end -->");
  size_t begin = content.find(begin_marker);
  const size_t end = content.find(end_marker);
  if (begin == std::string::npos || end == std::string::npos) {
    return absl::NotFoundError(absl::StrCat(page, " lacks ", begin_marker, " or ", end_marker));
  }
  begin += begin_marker.size();
  if (begin > end) return absl::NotFoundError(absl::StrCat(page, ": the markers are reversed"));
  return content.substr(begin, end - begin);
}

}  // namespace pgflow
