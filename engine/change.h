#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/lsn.h"
#include "schemas/ddl.h"
#include "schemas/table_schema.h"

namespace pgflow {

// How a column's value arrived. pgoutput sends unchanged TOASTed values as 'u' with no data:
// such a value is unknown to pgflow and must never be written out as if it were a value.
enum class ValueKind : uint8_t { kNull, kText, kBinary, kUnchangedToast };

// One column value in PostgreSQL's own representation: the type's text output (kText) or
// its binary send format (kBinary), with the type OID that tells how to read it.
// Conversion to JSON lives in one place: schemas/json_encoding.h.
struct Value {
  ValueKind kind = ValueKind::kNull;
  uint32_t type_oid = 0;
  std::string data;

  static Value Null(uint32_t type_oid) { return Value{ValueKind::kNull, type_oid, {}}; }
  static Value Text(uint32_t type_oid, std::string text) {
    return Value{ValueKind::kText, type_oid, std::move(text)};
  }
  static Value UnchangedToast(uint32_t type_oid) {
    return Value{ValueKind::kUnchangedToast, type_oid, {}};
  }
  bool is_null() const { return kind == ValueKind::kNull; }
  bool is_unchanged_toast() const { return kind == ValueKind::kUnchangedToast; }
  friend bool operator==(const Value&, const Value&) = default;
};

// A row: one Value per column of the TableSchema it belongs to, in column order.
using Row = std::vector<Value>;

enum class Op : uint8_t { kRead, kInsert, kUpdate, kDelete, kTruncate, kDdl, kMessage };

// "read", "insert", ...: the names the jsonl format and the logs use.
const char* OpName(Op op);

// Whether `op` is about one row (read, insert, update, delete), not a table or the stream
// (truncate, ddl, message).
inline bool IsRowChange(Op op) {
  return op == Op::kRead || op == Op::kInsert || op == Op::kUpdate || op == Op::kDelete;
}

// The transaction a change belongs to. All of it is known from pgoutput's Begin message
// except end_lsn, which the Commit message brings.
struct TxnInfo {
  uint32_t xid = 0;
  // LSN of the commit record: the `lsn` every change of the transaction carries.
  Lsn commit_lsn;
  // End of the commit record: the position acknowledged to PostgreSQL once the whole
  // transaction is durable (acknowledging commit_lsn itself would replay it on restart).
  Lsn end_lsn;
  // Commit time, microseconds since the Unix epoch.
  int64_t commit_time_us = 0;
};

// What `before` holds for an update or delete.
enum class BeforeKind : uint8_t {
  kNone,  // nothing known (an update that did not change the key, under REPLICA IDENTITY DEFAULT)
  kKey,   // the old key: only key columns are meaningful, the rest are null
  kFull,  // the whole old row (REPLICA IDENTITY FULL)
};

// One typed change event.
struct Change {
  Op op = Op::kInsert;
  // The relation version this change was decoded with; null for kMessage.
  TableSchemaPtr table;
  // kRead, kInsert, kUpdate: the new row.
  Row after;
  // kUpdate, kDelete: the old key or old row, as before_kind says.
  Row before;
  BeforeKind before_kind = BeforeKind::kNone;

  // kTruncate.
  bool truncate_cascade = false;
  bool truncate_restart_identity = false;

  // kMessage and kDdl: pg_logical_emit_message's prefix and content.
  std::string prefix;
  std::string content;
  bool transactional = true;
  // kDdl: the parsed content (schemas/ddl.h). `table` is then the relation's version before
  // the command, when the stream described it already (null otherwise).
  DdlCommandPtr ddl;

  // Where a sink with several destinations (a Kafka topic, an OpenSearch index, a webhook
  // route) sends this change, as the `route` transform computed it; empty: the sink's own.
  std::string destination;

  TxnInfo txn;
  // WAL position of the change's own record.
  Lsn lsn;
  // Ordinal of the change within its transaction, from 0. (txn.commit_lsn, sequence, part) is
  // the change's event id, stable across replays.
  uint64_t sequence = 0;
  // 0 for a change as the source made it; for the further changes a transform made of one
  // (lua returning several), 1, 2, ... (nested: the parent's part × 1000 + n), so that each
  // keeps an event id of its own.
  uint64_t part = 0;
};

// What flows through the pipeline: changes framed by their transactions, and position
// markers. Events are delivered to every sink in exactly the order the source produced them.
enum class EventKind : uint8_t {
  kBegin,         // txn: a transaction starts
  kChange,        // change
  kCommit,        // txn (end_lsn set): the transaction is complete
  kRollback,      // txn: the transaction was cut off (connection lost); it will be sent again
  kPosition,      // position: nothing before it is pending, so it may be acknowledged once
                  // every earlier event is durable (keepalives on a quiet stream)
  kChunkDone,     // chunk: every snapshot row of one chunk has been sent (the chunk's `read`
                  // changes all come before it); tracked apart from WAL positions
  kSnapshotDone,  // every chunk of the initial snapshot is durable in every sink; streaming
                  // starts next (a PostgreSQL target builds indexes, sets sequences)
  kRawRows,       // change.table, change.content, rows: snapshot rows as PostgreSQL's binary
                  // COPY tuples, untouched (no header or trailer), every column in table order;
                  // sent in place of `read` changes when every sink accepts them
};

struct Event {
  EventKind kind = EventKind::kChange;
  TxnInfo txn;
  Change change;
  Lsn position;
  // kChunkDone: the chunk's ordinal, 1, 2, 3... in the order chunks finish.
  uint64_t chunk = 0;
  // kRawRows: how many tuples change.content holds.
  uint64_t rows = 0;

  // The position acknowledged when this event and all before it are durable, if any.
  Lsn AckPosition() const {
    if (kind == EventKind::kCommit) return txn.end_lsn;
    if (kind == EventKind::kPosition) return position;
    return Lsn();
  }
  // Approximate memory held, for byte-sized queues.
  size_t ApproximateBytes() const;
};

// A run of consecutive events, shared read-only by every sink it is fanned out to.
struct EventBatch {
  std::vector<Event> events;
  size_t bytes = 0;
};
using EventBatchPtr = std::shared_ptr<const EventBatch>;

}  // namespace pgflow
