#pragma once

// The `table:` key every transform that names tables shares: schema.table or schema.* (every
// table of the schema, present and future), one or a list.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/postgres/table_ref.h"
#include "engine/config_node.h"
#include "engine/change.h"
#include "schemas/table_schema.h"

namespace pgflow {

// Parses `texts`, written under `node`'s key `key`, into *tables; an error names the entry.
absl::Status ParseTablePatterns(const ConfigNode& node, std::string_view key,
                                const std::vector<std::string>& texts,
                                std::vector<TableRef>* tables);

// Whether one of `patterns` takes in table `schema`.`name`.
bool PatternsCover(const std::vector<TableRef>& patterns, const std::string& schema,
                   const std::string& name);
inline bool PatternsCover(const std::vector<TableRef>& patterns, const TableSchema& table) {
  return PatternsCover(patterns, table.schema, table.name);
}

// A transform follows tables by name, the stream by OID: a captured schema change that renames
// or moves a table the patterns take in to a name they do not would let its rows pass the
// transform unseen (a mask among them). For such a change, an error naming `where` (the
// transform, "transforms[0] (mask)"), both names and the way out; OK for anything else. Fails
// closed: the pipeline stops before any row under the new name goes out.
absl::Status CheckStillCovered(const std::vector<TableRef>& patterns, const Change& change,
                               std::string_view where);

}  // namespace pgflow
