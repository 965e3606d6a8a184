#pragma once

// The objects a table's definition may need before it can be created in an empty target:
// types (enums, composite, range), domains, functions (of defaults and checks), collations,
// extensions, operators, casts, text search configurations. PostgreSQL's own tools bring them:
// `pg_dump --schema-only --section=pre-data` of the source (less schema pgflow), restored by
// `pg_restore --use-list` with every table, sequence, view and comment left out of the list,
// since the sink creates the tables it follows itself (sinks/postgres/table_definition.h).
//
// Thread-safety: a plain function; any thread may call it.

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace pgflow {

// Restores the source's schema objects into the target. Objects the target already has are
// left as they are. Returns how many could not be restored: the statements are logged, not
// returned (a function taking a table's row type needs the table: a second pass once the
// tables exist brings it); a missing program or an unreadable source is an error.
absl::StatusOr<size_t> CopySchemaObjects(const std::string& source_url,
                                         const std::string& target_url,
                                         std::string_view sink_name, bool second_pass = false);

// Whether a line of `pg_restore --list` names an object CopySchemaObjects restores. Pure;
// exposed for tests.
bool IsSchemaObjectEntry(std::string_view toc_line);

}  // namespace pgflow
