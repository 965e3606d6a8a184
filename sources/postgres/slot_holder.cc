#include "sources/postgres/slot_holder.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"

namespace pgflow {
namespace {

std::string ThisHost() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

// The pgflow process a WAL sender serves, from its application_name; nullopt when it serves
// no pgflow, or is gone.
std::optional<PgflowProcessName> PgflowBehind(PGconn* conn, const std::string& server_pid,
                                              bool* gone) {
  auto res =
      Exec(conn, "SELECT application_name FROM pg_stat_activity WHERE pid = $1::int", {server_pid});
  *gone = res.ok() && PQntuples(res->get()) == 0;
  if (!res.ok() || *gone) return std::nullopt;
  return ParseReplicationApplicationName(PQgetvalue(res->get(), 0, 0));
}

}  // namespace

std::string DescribeSlotHolder(PGconn* conn, const std::string& server_pid) {
  auto res = Exec(conn,
                  "SELECT application_name, coalesce(host(client_addr), 'local'), "
                  "to_char(backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') FROM pg_stat_activity "
                  "WHERE pid = $1::int",
                  {server_pid});
  if (!res.ok() || PQntuples(res->get()) != 1) return absl::StrCat("server process ", server_pid);
  const std::string application = PQgetvalue(res->get(), 0, 0);
  const std::string since = PQgetvalue(res->get(), 0, 2);
  if (std::optional<PgflowProcessName> pgflow = ParseReplicationApplicationName(application)) {
    return absl::StrCat("pgflow process ", pgflow->pid, " on ", pgflow->host, " (since ", since,
                        "; its WAL sender is server process ", server_pid, ")");
  }
  return absl::StrCat("server process ", server_pid, " for application '", application, "' from ",
                      PQgetvalue(res->get(), 0, 1), " (since ", since, ")");
}

absl::Status WaitForSlotFree(PGconn* conn, const std::string& pipeline, const std::string& slot) {
  const std::string host = ThisHost();
  for (int waited_ms = 0;; waited_ms += 200) {
    auto res = Exec(conn,
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND "
                    "active_pid IS NOT NULL",
                    {slot});
    if (!res.ok()) return res.status();
    if (PQntuples(res->get()) == 0) return absl::OkStatus();
    const std::string server_pid = PQgetvalue(res->get(), 0, 0);
    bool gone = false;
    std::optional<PgflowProcessName> pgflow = PgflowBehind(conn, server_pid, &gone);
    const bool ours = pgflow.has_value() && pgflow->host == host;
    const bool alive = ours && (pgflow->pid == getpid() ||
                                ::kill(static_cast<pid_t>(pgflow->pid), 0) == 0 || errno != ESRCH);
    if (!gone && ours && alive && pgflow->pid != getpid()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "pipeline ", pipeline, " is already running: ", DescribeSlotHolder(conn, server_pid),
          " streams from its replication slot ", slot,
          " (stop that pgflow first, or give this pipeline another name)"));
    }
    if (!gone && !pgflow.has_value()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "replication slot ", slot, " is in use by ", DescribeSlotHolder(conn, server_pid),
          ", which is no pgflow: stop it, or give pipeline ", pipeline,
          " another slot (source.postgres.slot)"));
    }
    if (waited_ms >= 10000) {
      return absl::FailedPreconditionError(absl::StrCat(
          "pipeline ", pipeline, " seems to be running elsewhere: ",
          DescribeSlotHolder(conn, server_pid), " still holds its replication slot ", slot,
          " after 10 s (stop that pgflow first, or give this pipeline another name)"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace pgflow
