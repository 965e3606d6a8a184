#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pgflow {

// PostgreSQL type OIDs pgflow treats specially. Everything else is carried as text.
namespace oid {
inline constexpr uint32_t kBool = 16;
inline constexpr uint32_t kBytea = 17;
inline constexpr uint32_t kChar = 18;
inline constexpr uint32_t kName = 19;
inline constexpr uint32_t kInt8 = 20;
inline constexpr uint32_t kInt2 = 21;
inline constexpr uint32_t kInt4 = 23;
inline constexpr uint32_t kText = 25;
inline constexpr uint32_t kOid = 26;
inline constexpr uint32_t kJson = 114;
inline constexpr uint32_t kFloat4 = 700;
inline constexpr uint32_t kFloat8 = 701;
inline constexpr uint32_t kBpchar = 1042;
inline constexpr uint32_t kVarchar = 1043;
inline constexpr uint32_t kDate = 1082;
inline constexpr uint32_t kTime = 1083;
inline constexpr uint32_t kTimestamp = 1114;
inline constexpr uint32_t kTimestamptz = 1184;
inline constexpr uint32_t kInterval = 1186;
inline constexpr uint32_t kTimetz = 1266;
inline constexpr uint32_t kNumeric = 1700;
inline constexpr uint32_t kUuid = 2950;
inline constexpr uint32_t kJsonb = 3802;
}  // namespace oid

// One column of a relation, as pgoutput's Relation message describes it.
struct Column {
  std::string name;
  uint32_t type_oid = 0;
  int32_t type_modifier = -1;
  // Part of the replica identity (the primary key, or every column under REPLICA IDENTITY FULL).
  bool is_key = false;
  // For types that are not built in (enums, domains, their arrays): "schema.name" from the
  // Type message, else empty. A name starting with '_' is PostgreSQL's array naming.
  std::string type_name;

  friend bool operator==(const Column&, const Column&) = default;
};

// One immutable version of a relation's shape. Every change event points at the version it
// was decoded with; a new Relation message with a different shape makes a new version and
// leaves earlier events untouched.
struct TableSchema {
  uint32_t relation_id = 0;
  std::string schema;
  std::string name;
  // pgoutput's replica identity setting: 'd' default (primary key), 'n' nothing, 'f' full,
  // 'i' index.
  char replica_identity = 'd';
  std::vector<Column> columns;
  // Under REPLICA IDENTITY FULL, which marks every column as part of the identity: the names
  // of the primary key's columns, in key order, when the source knows them; empty for a table
  // without a primary key. Empty under the other settings, where the identity columns are
  // the key.
  std::vector<std::string> primary_key;
  // 1 for the first shape seen of this relation, then +1 each time it changes.
  uint32_t version = 1;
  // A transform dropped, added, renamed or retyped columns, or renamed the table
  // (transformers/reshape.h): the source's catalog does not describe this shape, the columns do.
  bool reshaped = false;

  // "schema.name", unquoted.
  std::string QualifiedName() const { return schema + "." + name; }
  bool SameShape(const TableSchema& other) const {
    return relation_id == other.relation_id && schema == other.schema && name == other.name &&
           replica_identity == other.replica_identity && columns == other.columns &&
           primary_key == other.primary_key;
  }
  // The columns that identify a row, in table order: the replica identity's (the primary key,
  // or the index of REPLICA IDENTITY INDEX), or under FULL those of `primary_key`. Empty when
  // rows have no key: NOTHING, DEFAULT without a primary key, FULL without a known one.
  std::vector<size_t> RowKeyColumns() const {
    std::vector<size_t> key;
    if (replica_identity == 'n') return key;
    for (size_t i = 0; i < columns.size(); ++i) {
      bool in_key = columns[i].is_key;
      if (replica_identity == 'f') {
        in_key = false;
        for (const std::string& k : primary_key) in_key = in_key || k == columns[i].name;
      }
      if (in_key) key.push_back(i);
    }
    return key;
  }
};

using TableSchemaPtr = std::shared_ptr<const TableSchema>;

}  // namespace pgflow
