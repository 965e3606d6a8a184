#include "cutover/pooler_console.h"

#include <poll.h>

#include <utility>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/postgres/conninfo.h"

namespace pgflow::cutover {
namespace {

// A plain connection (the console knows no replication, nor the session settings Connect
// sends as options).
absl::StatusOr<PgConnPtr> ConnectConsole(const std::string& url) {
  PgConnPtr conn(PQconnectdb(url.c_str()));
  if (conn == nullptr) return absl::ResourceExhaustedError("out of memory");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return absl::UnavailableError(
        absl::StrCat("the pooler's console at ", DescribeConninfo(url), ": ",
                     absl::StripTrailingAsciiWhitespace(PQerrorMessage(conn.get()))));
  }
  return conn;
}

}  // namespace

absl::StatusOr<PoolerConsole> PoolerConsole::Connect(const std::string& url) {
  absl::StatusOr<PgConnPtr> conn = ConnectConsole(url);
  if (!conn.ok()) return conn.status();
  return PoolerConsole(url, std::move(*conn));
}

absl::StatusOr<std::vector<PoolerConsole::Row>> PoolerConsole::Show(const std::string& what) {
  const std::string sql = absl::StrCat("SHOW ", what);
  PgResultPtr res(PQexec(conn_.get(), sql.c_str()));
  if (PQresultStatus(res.get()) != PGRES_TUPLES_OK) {
    return ResultError(conn_.get(), res.get(), absl::StrCat("the pooler's console: ", sql));
  }
  std::vector<Row> rows;
  for (int r = 0; r < PQntuples(res.get()); ++r) {
    Row& row = rows.emplace_back();
    for (int c = 0; c < PQnfields(res.get()); ++c) {
      row[PQfname(res.get(), c)] = PQgetvalue(res.get(), r, c);
    }
  }
  return rows;
}

absl::Status PoolerConsole::Run(const std::string& command) {
  PgResultPtr res(PQexec(conn_.get(), command.c_str()));
  if (PQresultStatus(res.get()) != PGRES_COMMAND_OK) {
    return ResultError(conn_.get(), res.get(), absl::StrCat("the pooler's console: ", command));
  }
  return absl::OkStatus();
}

absl::Status PoolerConsole::Pause(const std::string& database, std::chrono::milliseconds timeout,
                                  const std::function<bool()>& interrupted) {
  const std::string sql = absl::StrCat("PAUSE ", database);
  if (PQsendQuery(conn_.get(), sql.c_str()) == 0) {
    return ResultError(conn_.get(), nullptr, absl::StrCat("the pooler's console: ", sql));
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (PQisBusy(conn_.get()) != 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const bool stopped = interrupted && interrupted();
    if (left.count() <= 0 || stopped) {
      // The console answers PAUSE once the servers are back: drop the wait, keep a console.
      absl::StatusOr<PgConnPtr> fresh = ConnectConsole(url_);
      if (!fresh.ok()) return fresh.status();
      conn_ = std::move(*fresh);
      if (stopped) return absl::CancelledError("interrupted");
      return absl::DeadlineExceededError(absl::StrCat(
          "a server connection of ", database, " stayed in use for ", timeout.count(), " ms"));
    }
    pollfd fd{.fd = PQsocket(conn_.get()), .events = POLLIN, .revents = 0};
    poll(&fd, 1, static_cast<int>(std::min<int64_t>(left.count(), 100)));
    if (PQconsumeInput(conn_.get()) == 0) {
      return ResultError(conn_.get(), nullptr, absl::StrCat("the pooler's console: ", sql));
    }
  }
  return ReceiveResult(conn_.get(), sql).status();
}

absl::StatusOr<PoolerConsole::Row> PoolerConsole::Database(const std::string& database) {
  absl::StatusOr<std::vector<Row>> rows = Show("DATABASES");
  if (!rows.ok()) return rows.status();
  for (Row& row : *rows) {
    if (row["name"] == database) return std::move(row);
  }
  return absl::NotFoundError(
      absl::StrCat("the pooler has no database ", database, " (SHOW DATABASES)"));
}

}  // namespace pgflow::cutover
