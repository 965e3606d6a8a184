#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/change.h"
#include "sinks/postgres/net_changes.h"
#include "sinks/postgres/parallel_copy.h"

namespace pgflow {

// What the postgres sink knows of one source table in the target: plain data, filled in by
// TargetTables (sinks/postgres/target_tables.h) from the target's catalog and read by the
// statement builders (sinks/postgres/sql_builders.h). Not thread-safe; owned by the sink's
// TargetTables, shared with the net changes staged for it, which may outlive an entry
// replaced there.
struct TargetTable : std::enable_shared_from_this<TargetTable> {
  TableSchemaPtr schema;    // the source shape last checked against the target
  std::string name;         // target "schema.table", unquoted, for messages
  std::string quoted;       // target "schema"."table"
  std::string column_list;  // "a", "b", ... in source column order
  std::vector<size_t> key;  // source columns of the primary key; empty: no key
  std::string stage;        // temporary staging table for snapshot rows, once needed
  // Columns holding arrays of non-built-in types, with the target's OID of their element
  // type: binary COPY data names the element type by OID, which differs between databases.
  std::vector<std::pair<size_t, uint32_t>> array_elements;
  std::optional<bool> fast_copy;  // snapshot rows COPY straight in (the table was empty)
  // Decoded snapshot rows are copied into this temporary table (created when first needed),
  // then inserted: per column, whether it holds the value's binary form (a column the snapshot
  // reads in binary, CanDecodeBinary) or its text (cast on insert).
  std::string read_stage;
  std::vector<bool> read_binary;
  // What the parallel loaders need of it, once they copy into it.
  std::shared_ptr<const ParallelCopy::Table> load;
  // The table was empty and its primary key is not built yet (it comes after the load): rows
  // are inserted without ON CONFLICT, which needs the key's index.
  bool plain_inserts = false;
  // Per source column: the target's is GENERATED ALWAYS AS IDENTITY, which an UPDATE (or an
  // upsert's DO UPDATE) may not set; inserts override it.
  std::vector<bool> always_identity;
  // Per source column: the target column's type, as format_type() spells it with no type
  // modifier (typmod -1: "bpchar", not "character", which means character(1)), to cast the
  // values of batched statements (text elements of unnest(), parameters of a VALUES list); the
  // column's own modifier applies on assignment.
  std::vector<std::string> types;
  // A value's text cast to each of those types is what the type's input function makes of it,
  // so batches may carry values as text[] elements: not so for the reg* OID alias types, whose
  // casts from text refuse what regclassin and the like accept (an OID number, "-").
  bool text_casts = true;
  // The key is the target table's only uniqueness rule (no other unique index, no exclusion
  // constraint): its changes may be folded into net changes (sinks/postgres/net_changes.h).
  // Unknown until checked, and again after indexes were built or DDL replayed.
  std::optional<bool> foldable;

  // Whether an UPDATE may set source column `i`.
  bool Settable(size_t i) const { return i >= always_identity.size() || !always_identity[i]; }

  // The key values of `row` as one string, to recognize the same key; none without a key or
  // with a key value missing (null, or an unchanged TOAST value).
  std::optional<std::string> KeyString(const Row& row) const {
    if (key.empty()) return std::nullopt;
    return NetChanges::KeyOf(key, row);
  }
};

}  // namespace pgflow
