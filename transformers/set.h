#pragma once

// The `set` transform: adds a column, or overwrites one, with a constant or a template.
//
//   - set: {table: public.orders, columns: {region: eu, tenant: "${TENANT}",
//                                            label: "{name} ({id})", synced_at: {value: "{commit_ts}", type: timestamptz}}}
//
// Values are templates (transformers/template.h): columns of the row ({name}) and event fields
// ({schema}, {table}, {op}, {lsn}, {commit_ts}, {xid}); ${VAR} is the environment, as everywhere
// in the file. An existing column keeps its type (the value must read as it, or the pipeline
// stops naming the row); a new column is text unless `type` says otherwise, and is added to the
// shape the sinks see (transformers/reshape.h). Set on the new row and on the old one where the
// event has it; a value that reads a column the stream did not send (an unchanged TOASTed
// value) is not sent either. A key column may not be set.

#include <optional>
#include <string>
#include <vector>

#include "common/postgres/table_ref.h"
#include "engine/registry.h"
#include "transformers/reshape.h"
#include "transformers/template.h"

namespace pgflow {

struct SetColumn {
  std::string column;
  std::string value;  // as written
  std::optional<Template> parsed;
  std::optional<OutputType> type;  // of a new column; nullopt: text
  friend bool operator==(const SetColumn& a, const SetColumn& b) {
    return a.column == b.column && a.value == b.value;
  }
};

struct SetOptions : TransformOptions {
  std::vector<std::string> table;  // as written
  std::vector<TableRef> tables;
  std::vector<SetColumn> columns;
};

// Registers the `set` transform type.
void RegisterSetTransform();

}  // namespace pgflow
