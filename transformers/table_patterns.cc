#include "transformers/table_patterns.h"

#include <algorithm>

#include "engine/str_cat.h"

namespace pgflow {

absl::Status ParseTablePatterns(const ConfigNode& node, std::string_view key,
                                const std::vector<std::string>& texts,
                                std::vector<TableRef>* tables) {
  for (const std::string& text : texts) {
    absl::StatusOr<TableRef> ref = ParseTableRef(text);
    if (!ref.ok()) {
      return node.Get(key)->Error(Cat("invalid table '", text, "': ", ref.status().message()));
    }
    tables->push_back(*std::move(ref));
  }
  return absl::OkStatus();
}

bool PatternsCover(const std::vector<TableRef>& patterns, const TableSchema& table) {
  const TableRef ref{table.schema, table.name};
  return std::any_of(patterns.begin(), patterns.end(),
                     [&ref](const TableRef& t) { return t.Covers(ref); });
}

}  // namespace pgflow
