#pragma once

// Statements run over several connections to the target at once: the index builds that follow
// an initial load, as `pg_restore --jobs` runs them (why: sinks/postgres/README.md, "Tables").

#include <libpq-fe.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace pgflow {

struct ParallelStatement {
  std::string sql;      // a simple query: several statements in one string run as one transaction
  std::string context;  // what it does, for its error: "building on public.t: CREATE INDEX ..."
};

// Runs each of `statements` once, over up to `connections` connections of its own to `url`, one
// statement per connection at a time, taken in the order given. `setup` runs first on each new
// connection. Returns each statement's outcome, in the order given: an error names the target
// and the statement's context, with the server's message and SQLSTATE. A connection that cannot
// be made or set up takes nothing; the statements no connection took get its error
// (kUnavailable when the target cannot be reached).
std::vector<absl::Status> RunInParallel(const std::string& url,
                                        const std::vector<ParallelStatement>& statements,
                                        int connections,
                                        const std::function<absl::Status(PGconn*)>& setup);

}  // namespace pgflow
