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

bool PatternsCover(const std::vector<TableRef>& patterns, const std::string& schema,
                   const std::string& name) {
  const TableRef ref{schema, name};
  return std::any_of(patterns.begin(), patterns.end(),
                     [&ref](const TableRef& t) { return t.Covers(ref); });
}

absl::Status CheckStillCovered(const std::vector<TableRef>& patterns, const Change& change,
                               std::string_view where) {
  if (change.op != Op::kDdl || change.ddl == nullptr || !change.ddl->IsTable() ||
      !change.ddl->old_table || !change.ddl->table) {
    return absl::OkStatus();
  }
  auto covered = [&patterns](const DdlTableShape& shape) {
    return PatternsCover(patterns, shape.schema, shape.name);
  };
  const DdlTableShape& before = *change.ddl->old_table;
  const DdlTableShape& after = *change.ddl->table;
  if (!covered(before) || covered(after)) return absl::OkStatus();
  return absl::FailedPreconditionError(
      Cat(where, ": table ", before.schema, ".", before.name, " was renamed to ", after.schema, ".",
          after.name, ", which this transform's `table` does not name, so its rows would pass "
          "unchanged: add ", after.schema, ".", after.name, " to `table` and restart"));
}

}  // namespace pgflow
