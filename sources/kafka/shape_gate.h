#pragma once

// The kafka source's schema-change gate: puts the DDL events of the schema-changes topic back
// in their place among the rows of the tables' topics, table by table. Pure: no librdkafka.
//
// Rows and DDL events are read from different topics, so either may come first. Every row
// carries its table's shape (its pgflow.schema header) and its place in the source's commit
// order, (commit LSN, sequence): the same pair the DDL event carries. The gate keeps, per
// table ("schema.table"), the last shape handed on and the place of the event that set it,
// and decides about each row:
//   - a row with a column (name and type) the last shape lacks waits (kHold) for a DDL event
//     describing its table, unless `ddl_wait` is 0 or already ran out for the table (then it
//     goes on as it is, and its shape becomes the last one);
//   - a row placed before the DDL event that set the last shape is narrowed to that shape: it
//     loses the columns the DDL dropped, so a target that replayed the DDL takes it. Rows of
//     the DDL's own transaction count by their sequence: an UPDATE before an ALTER TABLE ...
//     DROP COLUMN in one transaction is narrowed too;
//   - a row placed before a DROP TABLE of its table is dropped (kDrop), so that a sink that
//     creates missing tables does not bring the table back;
//   - a row placed before a rename (ALTER TABLE ... RENAME TO, SET SCHEMA) of its table goes
//     to the table's new name (and is then narrowed as above), where a target that replayed
//     the rename has its rows.
// Tables are told apart by name only: a table dropped and created again under its name is
// another table from the DROP's place on.
//
// Rewritten table versions are cached per (table version, last shape), so that the rows of one
// version share one TableSchema (sinks batch by it) and nothing is allocated per row.
//
// Not thread-safe: the source's thread owns it.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/change.h"

namespace pgflow {

class ShapeGate {
 public:
  enum class Verdict {
    kHandOn,  // goes on now (possibly narrowed or renamed, see above)
    kHold,    // waits for its table's DDL event (see NoteDdl and AcceptNextShape)
    kDrop,    // written before its table was dropped: goes nowhere
  };

  // `ddl_wait`: how long the caller lets a held row wait (0: rows never wait); for messages.
  explicit ShapeGate(std::chrono::milliseconds ddl_wait) : ddl_wait_(ddl_wait) {}

  // Decides about row change `change` (read, insert, update, delete) and may rewrite its table
  // and rows (see above). When the decision is worth a line in the log (a row dropped or
  // moved to a new name, the first time for a table's DROP or rename; a new shape accepted
  // without its DDL event), *note is set to it (several, separated by "; "), else cleared.
  // REQUIRES: change->table is set, change->after (and change->before, if any) have one value
  // per column of it.
  Verdict Check(Change* change, std::string* note);

  // Records DDL event `change` (op kDdl, its ddl set). Returns the tables ("schema.table")
  // whose held rows may now be checked again: those the DDL describes, renames or drops.
  std::vector<std::string> NoteDdl(const Change& change);

  // The rows of `table` waited ddl_wait for a DDL event that did not come: its next row of a
  // new shape goes on as it is.
  void AcceptNextShape(const std::string& table);

 private:
  // A place in the source's commit order: (commit LSN, sequence in the transaction).
  using Order = std::pair<uint64_t, uint64_t>;
  static Order OrderOf(const Change& change) {
    return {change.txn.commit_lsn.value, change.sequence};
  }

  // A table version rewritten (narrowed or renamed), kept per source version.
  struct Rewrite {
    TableSchemaPtr from;       // kept alive, so that its address is not reused
    TableSchemaPtr to;         // the rewritten version
    std::vector<size_t> kept;  // columns of `from` that `to` has, in order
  };
  using RewriteCache = absl::flat_hash_map<const TableSchema*, Rewrite>;

  struct Shape {
    // Columns (name, type OID; 0 when a DDL event named it, whose types are text).
    std::vector<std::pair<std::string, uint32_t>> columns;
    Order order{0, 0};         // of the event that set it
    bool from_ddl = false;     // set by a DDL event (else by a row)
    bool accept_next = false;  // ddl_wait ran out: the next new shape goes on as it is
    RewriteCache narrowed;     // rows narrowed to this shape
  };
  // A DROP TABLE or rename of a table, at `order`.
  struct Move {
    Order order;
    bool dropped = false;
    std::string to_schema;  // the new name, after a rename
    std::string to_name;
    bool noted = false;    // logged once
    RewriteCache renamed;  // rows moved to the new name
  };

  // Sets `shape` from `table` (a row's shape) at `order`.
  static void Remember(const TableSchema& table, Order order, Shape* shape);
  // Replaces change->table by `rewrite`'s version, keeping only its columns' values.
  static void Apply(const Rewrite& rewrite, Change* change);

  const std::chrono::milliseconds ddl_wait_;
  absl::flat_hash_map<std::string, Shape> shapes_;
  // Per table name, its drops and renames in commit order (the last few).
  absl::flat_hash_map<std::string, std::vector<Move>> moves_;
};

}  // namespace pgflow
