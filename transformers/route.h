#pragma once

// The `route` transform: where a sink with several destinations sends each change.
//
//   - route: {table: public.orders, to: "orders.{region}"}
//
// `to` is a template (transformers/template.h) over the event ({schema}, {table}, {op}, ...)
// and the row's columns: the new row of inserts, updates and snapshot rows, the old one of
// deletes (under REPLICA IDENTITY DEFAULT only its key: route deletes by key columns, or set
// the table's replica identity to FULL). The kafka sink takes it as the topic; sinks with one
// destination (postgres, jsonl, kv) pass it over. A truncate goes where a template that reads
// no column sends it, else to the sink's own destination. A template that reads a value the
// stream did not send (an unchanged TOASTed value) stops the pipeline naming it.

#include <optional>
#include <string>
#include <vector>

#include "common/postgres/table_ref.h"
#include "engine/registry.h"
#include "transformers/template.h"

namespace pgflow {

struct RouteOptions : TransformOptions {
  std::vector<std::string> table;  // as written; empty: every table
  std::vector<TableRef> tables;
  std::string to;
  std::optional<Template> parsed;
};

// Registers the `route` transform type.
void RegisterRouteTransform();

}  // namespace pgflow
