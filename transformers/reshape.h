#pragma once

// What the transforms that change a table's shape share (select, drop_columns, rename, set
// when it adds a column, cast): the shape the sinks see changes with the rows.
//
// A reshaping transform says, by names, what one table becomes (ShapeMap: its output name and
// its output columns, each taken from an input column or added). ReshapingTransform then does
// the rest, the same way for each of them:
//   - rows: `after` and `before` are rebuilt in the output's column order (values moved, never
//     copied; an added column starts NULL and the transform's Fill sets it);
//   - schemas: one output TableSchema per input version (OutputSchemas), marked `reshaped`, so
//     that the postgres sink creates the target table from this shape and not from the source's
//     catalog;
//   - schema changes: a captured DDL event on the table is rewritten (its content and its
//     parsed form) as if the source had the output's shape, so that a target follows ADD/DROP
//     COLUMN on the source through the reshaping: an added column a `select` does not keep
//     stays out, a renamed column is renamed. Constraints that name a column the output drops
//     or renames are left out of the shape; an index on a dropped column is not replayed. The
//     statement text (`statement`) stays the source's, for the record.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/postgres/table_ref.h"
#include "engine/registry.h"
#include "engine/transform.h"

namespace pgflow {

// A type a transform may give a column (cast, set): its OID for the rows and its SQL name for
// the target's DDL.
struct OutputType {
  uint32_t oid = 0;
  std::string sql;  // "numeric", "bigint", ...
};

// Parses a type name (text, varchar, integer/int4, bigint/int8, smallint/int2, numeric,
// double precision/float8, real/float4, boolean/bool, date, timestamp, timestamptz, jsonb,
// json, uuid) into its OutputType; nullopt for any other.
std::optional<OutputType> ParseOutputType(std::string_view name);

// One input column, as a shape names it.
struct ShapeColumn {
  std::string name;
  uint32_t type_oid = 0;  // 0 when only the SQL type is known (a DDL shape)
  std::string type_sql;   // empty when only the OID is known (a row's schema)
  bool is_key = false;
};

// What a table becomes.
struct ShapeMap {
  struct Out {
    std::string name;
    int from = -1;  // input column index; -1: added by the transform
    // The output type of an added or retyped column; nullopt: the input column's.
    std::optional<OutputType> type;
  };
  std::string schema;  // output table name
  std::string name;
  std::vector<Out> columns;  // in output order
};

// A transform that may change the shape of the tables it covers.
class ReshapingTransform : public Transform {
 public:
  // What becomes of each input column of a table, by name: its output name, or nullopt when
  // the output drops it.
  using ColumnFate = absl::flat_hash_map<std::string, std::optional<std::string>>;

  // `tables`: the patterns of the transform's `table:` option.
  ReshapingTransform(TransformContext context, std::vector<TableRef> tables)
      : context_(std::move(context)), tables_(std::move(tables)) {}

  absl::StatusOr<bool> Apply(Change* change) final;
  bool Touches(const TableSchema& table) const final { return Covers(table.schema, table.name); }
  // The output schema, or `table` when it cannot be made (Apply reports why with the rows).
  TableSchemaPtr OutputTable(const TableSchemaPtr& table) final;

 protected:
  struct Version {
    TableSchemaPtr input;
    TableSchemaPtr output;  // input itself when the map changes nothing
    ShapeMap map;
    bool covered = false;   // the transform takes the table in
    bool identity = false;  // no column moved, added, renamed or retyped; the name unchanged
  };

  // Whether the transform takes in the table (its input name): one of `tables` covers it.
  bool Covers(const std::string& schema, const std::string& name) const;
  // Whether a pattern names the table itself (not only its schema's tables): a column the
  // options name must then exist.
  bool NamesExactly(const std::string& schema, const std::string& name) const;
  // The map that keeps every column as it is, to change from there.
  static ShapeMap Unchanged(const std::string& schema, const std::string& name,
                            const std::vector<ShapeColumn>& columns);
  // "transforms[0] (type): table schema.name has no column 'column'".
  absl::Status NoSuchColumn(std::string_view type, const std::string& schema,
                            const std::string& name, const std::string& column) const;
  // The output of a covered table with input columns `columns`. Errors name the table and say
  // what to change (a key column dropped, a named column missing). `from_ddl`: the columns are
  // a captured schema change's (a column the options name may have just been dropped).
  virtual absl::StatusOr<ShapeMap> Plan(const std::string& schema, const std::string& name,
                                        const std::vector<ShapeColumn>& columns,
                                        bool from_ddl) const = 0;
  // The output name of a covered table (for the schema changes and the indexes of a table whose
  // columns are not at hand); Plan must name the table the same way.
  virtual std::pair<std::string, std::string> OutputName(const std::string& schema,
                                                         const std::string& name) const {
    return {schema, name};
  }
  // After `change`'s rows were rebuilt in the output's shape (change->table is the output):
  // sets the values of added or retyped columns. `input` is the version's input schema.
  virtual absl::Status Fill(const Version& version, Change* change) {
    (void)version;
    (void)change;
    return absl::OkStatus();
  }

  const TransformContext& context() const { return context_; }

 private:
  absl::StatusOr<const Version*> VersionFor(const TableSchemaPtr& table);
  absl::StatusOr<bool> RewriteDdl(Change* change);
  absl::StatusOr<bool> RewriteDdlDocument(Change* change, nlohmann::json& doc);
  // What becomes of each column of table schema.name in the newest shape this transform saw of
  // it (a schema change's, else a row's): its output name, or nullopt when dropped. Nullopt
  // when it saw none.
  std::optional<ColumnFate> NewestFate(const std::string& schema, const std::string& name) const;

  const TransformContext context_;
  const std::vector<TableRef> tables_;
  absl::flat_hash_map<const TableSchema*, Version> versions_;
  // Input "schema.table" -> the columns of its newest shape a schema change described.
  absl::flat_hash_map<std::string, ColumnFate> ddl_fates_;
};

// `text` (SQL: an index's columns, a constraint's definition) with its identifiers, bare or
// quoted, renamed as `fate` says (quoted), in one pass so that swapping two names works; string
// literals are left alone. False when it names an identifier `fate` drops.
bool RewriteIdentifiers(std::string_view text, const ReshapingTransform::ColumnFate& fate,
                        std::string* out);

}  // namespace pgflow
