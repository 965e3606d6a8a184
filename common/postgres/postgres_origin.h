#pragma once

// The PostgreSQL database a pipeline captures, as the sinks built beside a PostgreSQL source
// see it (engine/registry.h, SourceTraits::postgres): a PostgreSQL target reads the source's
// catalog to create tables from their definitions and to copy sequences; the kv cache writes
// through to it.

#include <string>
#include <vector>

#include "common/postgres/table_ref.h"

namespace pgflow {

struct PostgresOrigin {
  std::string url;               // libpq URI or conninfo, with its password
  std::vector<TableRef> tables;  // what the pipeline follows ("schema.*" included)
  std::string publication;
  std::string slot;
};

}  // namespace pgflow
