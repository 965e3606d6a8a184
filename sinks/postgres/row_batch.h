#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "engine/change.h"
#include "sinks/postgres/target_table.h"

namespace pgflow {

// An update waiting in a batch.
struct PendingUpdate {
  Row old_row;  // finds the row (its key columns); empty: `after` holds the same key
  Row after;
};

// Consecutive row changes of one kind to one target table, not yet sent: what one multi-row
// statement (or one COPY) will carry. Plain data: RowWriter decides when a batch goes out and
// builds its statement (sinks/postgres/sql_builders.h). Not thread-safe.
class RowBatch {
 public:
  enum class Kind : uint8_t {
    kRead,    // decoded snapshot rows, as binary COPY tuples for the table's read stage
    kUpsert,  // whole new rows, inserted or replacing the row with their key
    kUpdate,  // updates that set the same columns, of rows found by key
    kDelete,  // old rows (their key values), deleted
  };

  explicit RowBatch(Kind kind) : kind_(kind) {}

  Kind kind() const { return kind_; }
  // The table the rows go to, and the source shape they came with; null until the first row.
  TargetTable* table() const { return table_; }
  const TableSchema* schema() const { return schema_; }
  // Rows held, whatever the kind.
  size_t size() const;
  bool empty() const { return size() == 0; }

  // The rows added from now on go to `table`, shaped by `schema`.
  void Use(TargetTable* table, const TableSchema* schema) {
    table_ = table;
    schema_ = schema;
  }

  // kUpsert, kDelete.
  void AddRow(Row row) { rows_.push_back(std::move(row)); }
  std::vector<Row>& rows() { return rows_; }

  // kUpdate: the rows, and the source columns every one of them sets.
  void AddUpdate(PendingUpdate update) { updates_.push_back(std::move(update)); }
  std::vector<PendingUpdate>& updates() { return updates_; }
  std::vector<size_t>& columns() { return columns_; }
  void set_columns(std::vector<size_t> columns) { columns_ = std::move(columns); }

  // kRead: appends `row` (one value per column, each null or in the form the read stage
  // expects) as one binary COPY tuple.
  void AddTuple(const Row& row);
  // The tuples, with no COPY header or trailer.
  const std::string& tuples() const { return tuples_; }

  // Keys of the rows held (TargetTable::KeyString), where a key twice would be an error or
  // would not apply in order: the batch then goes out first.
  bool HasKey(const std::string& key) const { return keys_.contains(key); }
  void AddKey(std::string key) { keys_.insert(std::move(key)); }

  // Moves everything held into the batch returned, leaving this one as Clear() does.
  RowBatch Take();
  // Empties the batch, of the same kind, for no table.
  void Clear();

 private:
  Kind kind_;
  TargetTable* table_ = nullptr;
  const TableSchema* schema_ = nullptr;
  std::vector<Row> rows_;
  std::vector<PendingUpdate> updates_;
  std::vector<size_t> columns_;
  std::string tuples_;
  uint64_t tuple_rows_ = 0;
  absl::flat_hash_set<std::string> keys_;
};

}  // namespace pgflow
