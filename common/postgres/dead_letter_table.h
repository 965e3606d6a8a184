#pragma once

// The dead-letter records (engine/dead_letter.h) in a PostgreSQL table:
//
//   CREATE TABLE pgflow.dead_letters (id bigserial PRIMARY KEY, pipeline text, sink text,
//     event_id text, lsn pg_lsn, source_table text, operation text, key text, reason text,
//     code text, destination text, change json, schema json, recorded_at timestamptz,
//     UNIQUE (pipeline, sink, event_id, source_table, key))
//
// The store connects to a database of its own (`dead_letter: {table, url}`, or the source's);
// a postgres sink whose records live in its target writes them with the same statement in its
// target transaction (sinks/postgres), so that a refused row and its record commit together.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/pg_connection.h"
#include "common/postgres/table_ref.h"
#include "engine/dead_letter.h"

namespace pgflow {

// Creates the schema and the table when missing; FailedPrecondition, saying what to do, when
// a table of that name lacks the record's columns.
absl::Status EnsureDeadLetterTable(PGconn* conn, const TableRef& table);
// Inserts one record from DeadLetterInsertParams, leaving one already there alone; returns
// the id of the one inserted (no row when it was there).
std::string DeadLetterInsertSql(const TableRef& table);
std::vector<std::string> DeadLetterInsertParams(const DeadLetter& letter);

// Registers the table store with the engine (RegisterTableDeadLetterStore).
void RegisterPostgresDeadLetterStore();

}  // namespace pgflow
