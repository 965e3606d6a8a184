#pragma once

// Which tables PostgreSQL refuses UPDATEs and DELETEs of once they are published, and how
// pgflow recognises them: one SQL condition for the source's start, the DDL capture, the
// snapshot, backfills and `pgflow verify`.

namespace pgflow {

// A table, as `c` (pg_class), without a replica identity PostgreSQL can publish UPDATEs and
// DELETEs with: a permanent table without a primary key (nor replica identity index) and a
// replica identity other than FULL.
inline constexpr char kKeylessCondition[] =
    "c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND CASE c.relreplident "
    "WHEN 'f' THEN false WHEN 'n' THEN true "
    "WHEN 'i' THEN NOT EXISTS (SELECT 1 FROM pg_index i "
    "WHERE i.indrelid = c.oid AND i.indisreplident) "
    "ELSE NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) END";

}  // namespace pgflow
