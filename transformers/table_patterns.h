#pragma once

// The `table:` key every transform that names tables shares: schema.table or schema.* (every
// table of the schema, present and future), one or a list.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/postgres/table_ref.h"
#include "engine/config_node.h"
#include "schemas/table_schema.h"

namespace pgflow {

// Parses `texts`, written under `node`'s key `key`, into *tables; an error names the entry.
absl::Status ParseTablePatterns(const ConfigNode& node, std::string_view key,
                                const std::vector<std::string>& texts,
                                std::vector<TableRef>* tables);

// Whether one of `patterns` takes in `table`.
bool PatternsCover(const std::vector<TableRef>& patterns, const TableSchema& table);

}  // namespace pgflow
