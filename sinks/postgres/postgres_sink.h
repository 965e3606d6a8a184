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
// Streaming: consecutive source transactions are applied in one target transaction, under
// `session_replication_role = replica` (no target triggers, no foreign key checks), committed
// at each flush (every flush_interval), before snapshot rows, or after 5,000 transactions or
// 50,000 changes, together with the end LSN of the last of them in `pgflow.applied` (created
// in the target). After a restart, transactions whose commit LSN is below that position are
// skipped: each source transaction is applied exactly once. That holds only for WAL positions
// (PipelineConfig::positions kWal). A pipeline whose source acknowledges positions of its own
// (the kafka source, kSourceSequence: events from several partitions arrive out of commit
// order, so no stored position can say what was applied) records and skips nothing: every
// change is applied, which converges because upserts and deletes by key are idempotent and
// each key's changes arrive in commit order. The statements of a source
// transaction that joins a group are held back until its kCommit (up to 20,000 rows), so one
// cut off mid-way (kRollback) is dropped before anything of it was sent; a larger one goes out
// under a SAVEPOINT taken at its start and is undone back to it. Upserts and deletes are sent
// in libpq's pipeline mode, their results read before anything that needs one.
//
// Folding: the changes of a keyed table whose key is its only uniqueness rule in the target
// are folded into their net effect per row (sinks/postgres/net_changes.h) across the whole
// group, and sent at its commit as multi-row statements: the group's deletes, then its
// updates (rows with an unchanged TOAST value: only the known columns are set), then its
// upserts (`INSERT ... ON CONFLICT DO UPDATE` of whole rows). A row inserted, updated and
// deleted in one group costs the target one row of one statement. An update whose row is
// missing from the target is upserted when every value is known, as row-at-a-time apply
// would. The source transaction in progress is folded apart from the group and joins it at
// its kCommit, so one cut off (kRollback) is dropped without a SAVEPOINT; one larger than
// 20,000 changes goes out in parts under a savepoint taken at its first part.
//
// Tables with another unique index or an exclusion constraint (checked in the target, again
// after the deferred indexes are built and after replayed DDL), and tables without a key, are
// applied in stream order instead, since folding could pass through a state such an index
// forbids: inserts in multi-row upserts, deletes in one `DELETE ... WHERE key IN (...)`,
// updates one row at a time (a keyless table's rows are matched on every old value, one at a
// time). Values travel as statement parameters, never as SQL text.
//
// Tables missing from the target are created the first time they are seen (`create_tables`).
// Without a PostgreSQL source (the kafka source), from the shape the events carry: columns
// with their types and the primary key, nothing else. With one, from the SOURCE's definition
// (sinks/postgres/table_definition.h): column types, collations, NOT NULL, defaults, identity
// and generated (STORED) columns, and the sequences the defaults use (same name, mapped schema,
// OWNED BY as on the source). The primary key, the secondary indexes and the other constraints
// (UNIQUE, CHECK, FOREIGN KEY, EXCLUDE) are recorded in `pgflow.pending_ddl` in the target,
// committed with the table, and built once the load is over, the key first, as pg_restore
// does: at EventKind::kSnapshotDone (or, after a crash in between, when the stream starts),
// each in its own transaction; one that fails is logged and stays pending. Until its key is
// built, an empty table takes plain inserts; one found holding rows while its key is pending is
// the rest of an interrupted load, whose rows copied twice are removed (the newest copy kept)
// and whose key is built before anything is upserted. At kSnapshotDone the sequences of the
// pipeline's tables are also set to the source's values. A table created while streaming gets
// its key, indexes and constraints at once. An existing table must have every source column.
//
// Initial load over several connections: the raw snapshot rows of a table that was empty go
// to `load_workers` connections of their own (sinks/postgres/parallel_copy.h), each committing
// at every chunk end; chunks are then reported durable through DurableChunkThrough().
// Decoded snapshot rows (another sink needs them decoded) go by binary COPY into a temporary
// table and from there into the table in one INSERT ... SELECT.
//
// Schema changes (Op::kDdl, under the sink's `ddl.mode: apply`) are replayed in the target
// transaction at their place in the stream, planned from the table's shape before and after
// (sinks/postgres/ddl_replay.h); what cannot be replayed safely stops the pipeline.
//
// Errors: an unreachable target is kUnavailable; a statement the target refuses is an error
// naming the table, the row's key and PostgreSQL's message. Either stops the pipeline, and
// nothing past the last target commit is acknowledged. With `dead_letter`, a refused change of
// the stream (SQLSTATE class 22 or 23) is kAborted instead: the target transaction rolled back,
// and the pipeline, started again from the acknowledged position, applies the source
// transactions through the one that failed a change at a time, each under a savepoint,
// recording those the target refuses in pgflow.dead_letters (README, "Refused rows").

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/postgres/postgres_origin.h"
#include "engine/registry.h"

namespace pgflow {

struct PostgresSinkOptions : SinkOptions {
  std::string url;            // libpq URL or conninfo of the target database
  std::string schema;         // target schema for every table; empty: the source table's schema
  int64_t batch_rows = 1000;  // rows per multi-row INSERT (also bounded by 65535 parameters)
  bool create_tables = true;  // create missing target tables from the source's shape
  // A change the target refuses (SQLSTATE class 22, a value it rejects, or 23, a constraint)
  // is recorded in pgflow.dead_letters and skipped instead of stopping the pipeline.
  bool dead_letter = false;
  // Connections that copy the initial snapshot into tables that were empty, at once.
  int64_t load_workers = 2;
  // Set for the sink's session when the target's is lower: building a key or an index after
  // the load sorts in this much memory.
  std::string maintenance_work_mem = "256MB";
};

// Registers the "postgres" sink type with the engine's factory registry.
void RegisterPostgresSink();

// `pgflow sequences pipeline.yaml`: sets every sequence that the pipeline's tables own (serial
// and identity columns) or use in a column default to the source's current value (last_value,
// is_called), in the target of `options`, under the same schema mapping; run it just before
// switching writes over to the target, since the stream carries rows, not sequence advances.
// Connects to origin.url and options.url. NotFound, after setting the others, when
// some of those sequences are missing from the target; other errors name the sequence.
absl::Status SyncSequences(std::string_view pipeline, const PostgresOrigin& origin,
                           const PostgresSinkOptions& options);

}  // namespace pgflow
