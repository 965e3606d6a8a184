#pragma once

// The `postgres` source's block of a pipeline file, its option table, and its factory:
//
//   source:
//     postgres:
//       url: postgres://replicator:${PGPASSWORD}@db:5432/shop
//       tables: [public.products, public.orders]   # "schema.table"; "public.*" a whole schema
//       snapshot: {mode: initial, workers: 4}

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/postgres/table_ref.h"
#include "engine/config.h"
#include "engine/registry.h"

namespace pgflow {

enum class SnapshotMode { kInitial, kNever, kOnly };

// What to do with followed tables that have no primary key (nor a replica identity index).
// PostgreSQL refuses UPDATE and DELETE on such a table once it is published, so following it
// as it is would break the application's writes.
enum class KeylessPolicy {
  kFull,  // set REPLICA IDENTITY FULL on it (at start, and when one is created or loses its key)
  kSkip,  // leave it out of the publication, the snapshot and the DDL stream
  kFail,  // refuse to start
};

// The policy as source.postgres.keyless_tables spells it.
inline const char* KeylessPolicyName(KeylessPolicy policy) {
  switch (policy) {
    case KeylessPolicy::kFull:
      return "full";
    case KeylessPolicy::kSkip:
      return "skip";
    case KeylessPolicy::kFail:
      return "fail";
  }
  return "full";
}

struct SnapshotConfig {
  SnapshotMode mode = SnapshotMode::kInitial;
  int workers = 0;                     // 0: one per core
  uint64_t chunk_bytes = 64ull << 20;  // CTID range size
};

struct PostgresSourceOptions : SourceOptions {
  std::string url;  // libpq URI or key=value conninfo, `${VAR}` expanded; checked by libpq's parser
  std::vector<TableRef> tables;
  SnapshotConfig snapshot;
  KeylessPolicy keyless_tables = KeylessPolicy::kFull;
  std::string slot;                                 // "pgflow_<pipeline>" unless given
  std::string publication;                          // "pgflow_<pipeline>" unless given
  std::chrono::milliseconds status_interval{1000};  // standby status update period
  // pg_logical_emit_message period; 0 = off. On by default: an idle pipeline on a busy
  // database is the common case.
  std::chrono::milliseconds heartbeat_interval{10000};
  // Retained WAL past which the slot monitor warns; 0: never.
  uint64_t max_retained_wal = 1ull << 30;
};

// The postgres source's options of `pipeline`, or nullptr when its source is of another type.
std::shared_ptr<const PostgresSourceOptions> PostgresSourceOf(const PipelineConfig& pipeline);

// Reads a list of table names (a string or a sequence): each parsed by ParseTableRef, none
// twice, none covered by another's "schema.*". Errors are placed at the offending item.
absl::Status ParseTableList(const ConfigNode& node, std::vector<TableRef>* tables);

// Registers the "postgres" source type with the engine's registry, and its run guard
// (sources/postgres/postgres_run_guard.h) with the runner's.
void RegisterPostgresSource();

}  // namespace pgflow
