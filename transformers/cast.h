#pragma once

// The `cast` transform: a column's type as the sinks see it, and numbers scaled on the way.
//
//   - cast: {table: public.orders, columns: {total_cents: {type: numeric, scale: 0.01},
//                                             qty: integer, placed: date}}
//
// Each value is converted as PostgreSQL would cast its text (numbers rounded half away from
// zero to an integer type, a timestamp cut to its date in UTC, text checked to read as the
// type); `scale` multiplies a number first, exactly when it is a power of ten (0.01, 1000),
// else in double precision. A value that does not convert stops the pipeline naming the
// table, the column, the value and the row's key. The column's type changes in the shape the
// sinks see (transformers/reshape.h): a postgres sink creates it with the new type.
// Types: text, varchar, smallint, integer, bigint, numeric, real, double precision, boolean,
// date, timestamp, timestamptz, json, jsonb, uuid. A key column may not be cast.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/table_ref.h"
#include "engine/registry.h"
#include "transformers/reshape.h"

namespace pgflow {

struct CastColumn {
  std::string column;
  OutputType type;
  std::optional<std::string> scale;  // a decimal factor, as written
  friend bool operator==(const CastColumn& a, const CastColumn& b) {
    return a.column == b.column && a.type.oid == b.type.oid && a.scale == b.scale;
  }
};

struct CastOptions : TransformOptions {
  std::vector<std::string> table;  // as written
  std::vector<TableRef> tables;
  std::vector<CastColumn> columns;
};

// `text`, the text of a value, as type `type_oid` reads it, in PostgreSQL's output form where
// that differs ("12.50" as integer: "13"; "2026-01-02 10:00+00" as date: "2026-01-02").
// InvalidArgument saying why for a value that does not read as the type. Types outside the
// list above take any text.
absl::StatusOr<std::string> ConvertText(std::string_view text, uint32_t type_oid);

// `number` (decimal text) times `factor` (decimal text): exact for a power of ten.
absl::StatusOr<std::string> ScaleNumber(std::string_view number, std::string_view factor);

// Registers the `cast` transform type.
void RegisterCastTransform();

}  // namespace pgflow
