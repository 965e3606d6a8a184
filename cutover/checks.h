#pragma once

// The cutover's first step: everything it relies on, checked without changing anything, every
// problem found reported at once. The connections it opens stay for the later steps.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/pg_connection.h"
#include "common/postgres/table_ref.h"
#include "cutover/cutover.h"
#include "cutover/pooler_console.h"
#include "sinks/postgres/sequences.h"

namespace pgflow::cutover {

// The connections the steps share: A (a catalog connection), B, and the pooler's console.
struct Sides {
  PgConnPtr source;
  PgConnPtr target;
  std::optional<PoolerConsole> console;
};

struct CheckResult {
  std::vector<std::string> problems;
  std::vector<std::string> notes;
  std::vector<TableRef> tables;         // the followed tables as A has them now
  std::vector<SequencePair> sequences;  // theirs, A's name and B's
  std::string new_url;                  // what RETARGET will point the database at
};

// Connects what `sides` lacks and checks.
CheckResult RunChecks(const PipelinePlan& plan, const CutoverOptions& options, Sides* sides);

// Waits until the pipeline's `slot` has confirmed A's WAL position as of now (what A holds now
// has reached B): DeadlineExceeded when it does not within `timeout`.
absl::Status WaitConfirmed(PGconn* a, const std::string& slot, std::chrono::milliseconds timeout);

// A session on A's database that does not come through the pooler's `database` (nor is one of
// pgflow's own): a client the fence must reckon with.
struct OtherSession {
  int pid = 0;
  std::string user;
  std::string application;
  std::string client;    // address, or "local"
  std::string state;     // pg_stat_activity.state
  bool writing = false;  // holds a transaction id
  std::string Describe() const;
};
// Every session on A's database but those of pgflow and the pooler's server connections for
// `database`. (A session seen once may be a server connection the pooler was opening: only those
// seen in three looks, `between` apart, are returned.)
absl::StatusOr<std::vector<OtherSession>> OtherSessions(PGconn* source, PoolerConsole& console,
                                                        const std::string& database,
                                                        std::chrono::milliseconds between);

}  // namespace pgflow::cutover
