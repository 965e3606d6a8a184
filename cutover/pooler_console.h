#pragma once

// A client of the pooler's admin console (pooler/admin_console.h) over libpq: what `pgflow
// cutover` asks of the pooler the application connects through. Not thread-safe.

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/postgres/pg_connection.h"

namespace pgflow::cutover {

class PoolerConsole {
 public:
  // One row of a SHOW: column name to value ("" for NULL).
  using Row = std::map<std::string, std::string>;

  // Connects to the console at `url` (a libpq URL or conninfo of the pooler, database pgflow).
  static absl::StatusOr<PoolerConsole> Connect(const std::string& url);

  // SHOW `what` (POOLS, DATABASES, SERVERS, ...).
  absl::StatusOr<std::vector<Row>> Show(const std::string& what);
  // A command with no rows (RESUME app, RETARGET app '...'); errors are the console's.
  absl::Status Run(const std::string& command);
  // PAUSE `database`: returns once its server connections are all back, or DeadlineExceeded
  // after `timeout` (Cancelled once `interrupted` says so), the database still paused (the
  // connection that waited is dropped and a new one made, so RESUME can follow at once).
  absl::Status Pause(const std::string& database, std::chrono::milliseconds timeout,
                     const std::function<bool()>& interrupted);

  // The row of SHOW DATABASES for `database`, NotFound when the pooler has none.
  absl::StatusOr<Row> Database(const std::string& database);

 private:
  PoolerConsole(std::string url, PgConnPtr conn) : url_(std::move(url)), conn_(std::move(conn)) {}

  std::string url_;
  PgConnPtr conn_;
};

}  // namespace pgflow::cutover
