#pragma once

// The `postgres` sink: applies the stream to another PostgreSQL database, the target of a
// zero-downtime migration.
//
//   sinks:
//     replica: {postgres: {url: postgres://app@newdb:5432/shop, schema: shop, batch_rows: 1000}}
//
// Initial load: snapshot rows arrive as raw binary COPY tuples (EventKind::kRawRows) and go
// into the target with `COPY ... FROM STDIN (FORMAT binary)`, undecoded. A table that already
// holds rows when its first snapshot rows arrive (a resumed snapshot, a backfill into a
// running pipeline) is loaded through a temporary staging table and upserted instead, so a
// chunk copied twice converges rather than failing on its primary key. Decoded `read` rows
// (when another sink of the pipeline needs them) are upserted in multi-row statements.
//
// Streaming: each source transaction is applied in one target transaction, under
// `session_replication_role = replica` (no target triggers, no foreign key checks), and
// commits together with the pipeline's applied position in `pgflow.applied` (created in the
// target). After a restart, transactions whose commit LSN is below that position are skipped:
// each source transaction is applied exactly once. Inserts are upserts by primary key,
// updates set only the columns whose values were sent (never an unchanged TOAST value),
// deletes go by the old key; a table with REPLICA IDENTITY FULL and no key has one matching
// row updated or deleted at a time. Values travel as statement parameters, never as SQL text.
//
// Tables are created in the target the first time they are seen (`create_tables`), typed by
// the target's own format_type(); an existing table must have every source column.
//
// Errors: an unreachable target is kUnavailable; a statement the target refuses is an error
// naming the table, the row's key and PostgreSQL's message. Either stops the pipeline, and
// nothing past the last target commit is acknowledged.

#include <cstdint>
#include <string>

#include "engine/config.h"

namespace pgflow {

struct PostgresSinkOptions : SinkOptions {
  std::string url;            // libpq URL or conninfo of the target database
  std::string schema;         // target schema for every table; empty: the source table's schema
  int64_t batch_rows = 1000;  // rows per multi-row INSERT (also bounded by 65535 parameters)
  bool create_tables = true;  // create missing target tables from the source's shape
};

// Registers the "postgres" sink type with the engine's factory registry.
void RegisterPostgresSink();

}  // namespace pgflow
