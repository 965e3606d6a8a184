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

// The schemas whose objects CopySchemaObjects brings: all but PostgreSQL's own and pgflow's, as
// a condition on `n` (pg_namespace).
inline constexpr char kRestoredSchemaCondition[] =
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgflow') AND n.nspname !~ "
    "'^pg_(toast|temp)'";
// Of those, the types and domains (as `t`, pg_type) and routines (as `p`, pg_proc) that have an
// owner and grants of their own: not an array type, a table's row type, a multirange (each goes
// with its element, table or range) or a member of an extension. In the same catalog.
inline constexpr char kRestoredTypeCondition[] =
    "t.typtype IN ('b', 'c', 'd', 'e', 'r') AND (t.typtype <> 'c' OR (SELECT c.relkind FROM "
    "pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c') AND NOT EXISTS (SELECT 1 FROM "
    "pg_catalog.pg_type a WHERE a.typarray = t.oid) AND NOT EXISTS (SELECT 1 FROM "
    "pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND "
    "d.objid = t.oid AND d.deptype = 'e')";
inline constexpr char kRestoredRoutineCondition[] =
    "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = "
    "'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid AND d.deptype = 'e')";

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
