#include "cutover/checks.h"

#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/postgres/catalog_tables.h"
#include "common/postgres/conninfo.h"
#include "engine/admin_server.h"
#include "schemas/pg_array_literal.h"
#include "sinks/postgres/table_definition.h"

namespace pgflow::cutover {
namespace {

constexpr std::chrono::milliseconds kAdminTimeout{3000};
constexpr size_t kSessionsShown = 5;

std::string Value(const PgResultPtr& res, int row, int column) {
  return PQgetvalue(res.get(), row, column);
}

// What `role` may do to each of `tables` (in order): four characters each, '1' or '0', for
// SELECT, INSERT, UPDATE and DELETE; "0000" for a table that does not exist.
absl::StatusOr<std::vector<std::string>> TablePrivileges(PGconn* conn, const std::string& role,
                                                         const std::vector<TableRef>& tables) {
  std::vector<std::string> quoted;
  for (const TableRef& t : tables) quoted.push_back(t.Quoted());
  auto res = Exec(conn,
                  "SELECT CASE WHEN to_regclass(t) IS NULL THEN '0000' ELSE "
                  "concat(has_table_privilege($1, t, 'SELECT')::int, has_table_privilege($1, t, "
                  "'INSERT')::int, has_table_privilege($1, t, 'UPDATE')::int, "
                  "has_table_privilege($1, t, 'DELETE')::int) END FROM unnest($2::text[]) WITH "
                  "ORDINALITY AS u(t, i) ORDER BY i",
                  {role, ArrayLiteral(quoted)});
  if (!res.ok()) return res.status();
  std::vector<std::string> privileges;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    privileges.push_back(PQgetvalue(res->get(), i, 0));
  }
  if (privileges.size() != tables.size()) return absl::InternalError("privileges of every table");
  return privileges;
}

// The pipeline's own view (its admin endpoint's /status): streaming, and not behind.
void CheckPipeline(const PipelinePlan& plan, const CutoverOptions& options, CheckResult* out) {
  if (plan.admin_listen.empty()) {
    out->problems.push_back(
        "the pipeline file has no admin endpoint (admin: {listen: host:port}): the cutover "
        "reads the pipeline's state there");
    return;
  }
  absl::StatusOr<HttpReply> reply = AdminGet(plan.admin_listen, "/status", kAdminTimeout);
  if (!reply.ok() || reply->status != 200) {
    out->problems.push_back(absl::StrCat(
        "the pipeline's admin endpoint at ", plan.admin_listen, " does not answer (",
        reply.ok() ? absl::StrCat("HTTP ", reply->status) : std::string(reply.status().message()),
        "): is `pgflow run` running?"));
    return;
  }
  nlohmann::json status = nlohmann::json::parse(reply->body, nullptr, false);
  if (!status.is_object()) {
    out->problems.push_back("the pipeline's /status is not JSON");
    return;
  }
  const std::string phase = status.value("phase", "");
  if (phase == "snapshot") {
    out->problems.push_back("the pipeline is still copying its snapshot: cut over once it streams");
  } else if (phase != "streaming") {
    out->problems.push_back(absl::StrCat("the pipeline is not streaming (phase ", phase,
                                         status.contains("phase_reason")
                                             ? absl::StrCat(": ", status.value("phase_reason", ""))
                                             : std::string(),
                                         ")"));
  }
  if (status.value("pipeline", "") != plan.name) {
    out->problems.push_back(absl::StrCat("the admin endpoint at ", plan.admin_listen,
                                         " serves pipeline ", status.value("pipeline", "?"),
                                         ", not ", plan.name));
    return;
  }
  for (const nlohmann::json& sink : status.value("sinks", nlohmann::json::array())) {
    if (sink.value("name", "") != plan.sink) continue;
    if (sink.value("failed", false)) {
      out->problems.push_back(absl::StrCat("sink ", plan.sink, " has failed"));
    }
    const double lag = sink.value("lag_seconds", 0.0);
    if (lag * 1000 > options.max_lag.count()) {
      out->problems.push_back(absl::StrCat("sink ", plan.sink, " is ", lag,
                                           " s behind, more than --max-lag (",
                                           options.max_lag.count(), " ms)"));
    }
    return;
  }
  out->problems.push_back(absl::StrCat("the pipeline's /status shows no sink ", plan.sink));
}

}  // namespace

absl::Status WaitConfirmed(PGconn* a, const std::string& slot, std::chrono::milliseconds timeout) {
  // (The heartbeat's position is its end, past every commit A holds now.)
  absl::StatusOr<std::string> lsn = WriteHeartbeat(a);
  if (!lsn.ok()) return lsn.status();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto confirmed = Exec(a,
                          "SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots "
                          "WHERE slot_name = $1",
                          {slot, *lsn});
    if (!confirmed.ok()) return confirmed.status();
    if (PQntuples(confirmed->get()) == 0) {
      return absl::NotFoundError(absl::StrCat("the source has no replication slot ", slot));
    }
    if (Value(*confirmed, 0, 0) == "t") return absl::OkStatus();
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("the pipeline has not confirmed the source's position ", *lsn, " within ",
                       timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

namespace {

// The followed tables as A has them, each present on B; and their sequences.
void CheckTables(const PipelinePlan& plan, Sides* sides, CheckResult* out) {
  for (const TableRef& ref : plan.source.tables) {
    absl::StatusOr<std::vector<CatalogTable>> named = TablesNamed(sides->source.get(), ref);
    if (!named.ok()) {
      out->problems.push_back(std::string(named.status().message()));
      return;
    }
    for (const CatalogTable& found : *named) {
      TableRef table{found.schema, found.name};
      if (plan.skips_keyless && found.keyless) {
        out->problems.push_back(
            absl::StrCat(table.Quoted(),
                         " has no key and keyless_tables: skip leaves it out: B lacks its rows"));
        continue;
      }
      out->tables.push_back(std::move(table));
    }
  }
  for (const TableRef& table : out->tables) {
    const TableRef on_b{plan.target_schema.empty() ? table.schema : plan.target_schema,
                        table.table};
    auto exists = Exec(sides->target.get(), "SELECT to_regclass($1) IS NOT NULL", {on_b.Quoted()});
    if (!exists.ok()) {
      out->problems.push_back(std::string(exists.status().message()));
      return;
    }
    if (Value(*exists, 0, 0) != "t") {
      out->problems.push_back(absl::StrCat(on_b.Quoted(), " (", table.Quoted(),
                                           " of the source) is missing on the target"));
    }
  }
  absl::StatusOr<std::vector<SequencePair>> sequences =
      ReadTableSequences(sides->source.get(), plan.source.tables, plan.target_schema);
  if (!sequences.ok()) {
    out->problems.push_back(std::string(sequences.status().message()));
    return;
  }
  for (const SequencePair& s : *sequences) {
    auto readable = Exec(sides->source.get(),
                         "SELECT pg_catalog.has_sequence_privilege($1, 'SELECT')", {s.source});
    if (!readable.ok() || Value(*readable, 0, 0) != "t") {
      out->problems.push_back(
          absl::StrCat("sequence ", s.source, " is not readable on the source"));
    }
    auto settable = Exec(sides->target.get(),
                         "SELECT to_regclass($1) IS NOT NULL AND has_sequence_privilege($1, "
                         "'UPDATE')",
                         {s.target});
    if (!settable.ok() || Value(*settable, 0, 0) != "t") {
      out->problems.push_back(
          absl::StrCat("sequence ", s.target, " is missing on the target, or may not be set"));
    }
  }
  out->sequences = std::move(*sequences);
}

bool Loopback(const std::string& host) {
  return host == "localhost" || host == "127.0.0.1" || host == "::1";
}
bool SameHost(const std::string& a, const std::string& b) {
  return a == b || (Loopback(a) && Loopback(b));
}

// "host:port/dbname" of a connection's server, as the pooler's SHOW DATABASES spells it.
struct Place {
  std::string host;
  std::string port;
  std::string dbname;
  std::string ToString() const { return absl::StrCat(host, ":", port, "/", dbname); }
  bool operator==(const Place& o) const {
    return SameHost(host, o.host) && port == o.port && dbname == o.dbname;
  }
};
Place PlaceOf(PGconn* conn) { return Place{PQhost(conn), PQport(conn), PQdb(conn)}; }

// The pooler's database points at A; no session-mode client holds a server; the roles of its
// clients exist on B with A's table privileges.
void CheckPooler(const PipelinePlan& plan, const CutoverOptions& options, Sides* sides,
                 CheckResult* out) {
  PoolerConsole& console = *sides->console;
  absl::StatusOr<PoolerConsole::Row> db = console.Database(options.database);
  if (!db.ok()) {
    out->problems.push_back(std::string(db.status().message()));
    return;
  }
  const Place entry{(*db)["host"], (*db)["port"], (*db)["database"]};
  const Place a = PlaceOf(sides->source.get());
  const Place b = PlaceOf(sides->target.get());
  if (entry == b) {
    out->problems.push_back(absl::StrCat("the pooler's database ", options.database,
                                         " already points at the target (", b.ToString(), ")"));
  } else if (!(entry == a)) {
    out->problems.push_back(absl::StrCat("the pooler's database ", options.database, " points at ",
                                         entry.ToString(), ", not at the pipeline's source (",
                                         a.ToString(), ")"));
  }
  if ((*db)["paused"] == "1") {
    out->notes.push_back(
        absl::StrCat("the pooler's database ", options.database, " is paused already"));
  }
  const std::string force_user = (*db)["force_user"];
  if (options.new_url.empty()) {
    out->new_url = absl::StrCat("postgres://", force_user.empty() ? "" : force_user + "@",
                                b.host.find(':') != std::string::npos ? "[" + b.host + "]" : b.host,
                                ":", b.port, "/", b.dbname);
  } else {
    out->new_url = options.new_url;
  }
  absl::StatusOr<std::vector<PoolerConsole::Row>> pools = console.Show("POOLS");
  if (!pools.ok()) {
    out->problems.push_back(std::string(pools.status().message()));
    return;
  }
  std::set<std::string> users;
  if (!force_user.empty()) users.insert(force_user);
  for (PoolerConsole::Row& pool : *pools) {
    if (pool["database"] != options.database) continue;
    users.insert(pool["user"]);
    if (pool["pool_mode"] == "session" && pool["sv_active"] != "0" && !options.wait_sessions) {
      out->problems.push_back(absl::StrCat(
          pool["sv_active"], " session-mode client(s) of ", options.database, " as ", pool["user"],
          " hold a server connection, which PAUSE waits for: end them, or "
          "--wait-sessions to wait up to --pause-timeout"));
    }
  }
  for (const std::string& user : users) {
    auto role =
        Exec(sides->target.get(), "SELECT count(*) FROM pg_roles WHERE rolname = $1", {user});
    if (!role.ok() || Value(*role, 0, 0) != "1") {
      out->problems.push_back(absl::StrCat("role ", user, ", a client of the pooler's ",
                                           options.database,
                                           ", does not exist on the target: `pgflow roles` "
                                           "copies the roles"));
      continue;
    }
    // One query a side: the table privileges the role has on each followed table.
    std::vector<TableRef> on_b;
    for (const TableRef& table : out->tables) {
      on_b.push_back({plan.target_schema.empty() ? table.schema : plan.target_schema, table.table});
    }
    absl::StatusOr<std::vector<std::string>> on_source =
        TablePrivileges(sides->source.get(), user, out->tables);
    absl::StatusOr<std::vector<std::string>> on_target =
        TablePrivileges(sides->target.get(), user, on_b);
    if (!on_source.ok() || !on_target.ok()) {
      const absl::Status& failed = on_source.ok() ? on_target.status() : on_source.status();
      out->problems.push_back(absl::StrCat("reading role ", user, "'s table privileges on the ",
                                           on_source.ok() ? "target" : "source", ": ",
                                           failed.message()));
      continue;
    }
    static constexpr const char* kPrivileges[] = {"SELECT", "INSERT", "UPDATE", "DELETE"};
    for (size_t t = 0; t < out->tables.size(); ++t) {
      std::vector<std::string> lacking;
      for (int c = 0; c < 4; ++c) {
        if ((*on_source)[t][c] == '1' && (*on_target)[t][c] != '1') {
          lacking.push_back(kPrivileges[c]);
        }
      }
      if (!lacking.empty()) {
        out->problems.push_back(absl::StrCat("role ", user, " may ", absl::StrJoin(lacking, ", "),
                                             " ", out->tables[t].Quoted(), " on the source, not ",
                                             on_b[t].Quoted(), " on the target"));
      }
    }
  }
}

// A can be fenced: the source's user may ALTER DATABASE, no prepared transaction waits, and
// no session goes around the pooler (or --terminate-others ends them).
void CheckFence(const CutoverOptions& options, Sides* sides, CheckResult* out) {
  PGconn* a = sides->source.get();
  auto may = Exec(a,
                  "SELECT r.rolsuper OR pg_has_role(current_user, d.datdba, 'MEMBER') FROM "
                  "pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = "
                  "current_database()");
  if (may.ok() && Value(*may, 0, 0) != "t") {
    out->problems.push_back(absl::StrCat(
        "the source's user ", PQuser(a), " may not ALTER DATABASE ", PQdb(a),
        " (neither its owner nor a superuser): the cutover turns the source read-only with it"));
  }
  auto prepared = Exec(a,
                       "SELECT string_agg(gid, ', ') FROM pg_prepared_xacts WHERE database = "
                       "current_database()");
  if (prepared.ok() && !PQgetisnull(prepared->get(), 0, 0)) {
    out->problems.push_back(absl::StrCat("prepared transactions wait on the source (",
                                         Value(*prepared, 0, 0),
                                         "): COMMIT PREPARED or ROLLBACK PREPARED them first"));
  }
  absl::StatusOr<std::vector<OtherSession>> others =
      OtherSessions(a, *sides->console, options.database, std::chrono::milliseconds(100));
  if (!others.ok()) {
    out->problems.push_back(std::string(others.status().message()));
    return;
  }
  if (others->empty()) return;
  std::vector<std::string> shown;
  for (size_t i = 0; i < others->size() && i < kSessionsShown; ++i) {
    shown.push_back((*others)[i].Describe());
  }
  if (others->size() > kSessionsShown) {
    shown.push_back(absl::StrCat(others->size() - kSessionsShown, " more"));
  }
  const std::string list = absl::StrJoin(shown, "; ");
  if (options.terminate_others) {
    out->notes.push_back(absl::StrCat(others->size(),
                                      " session(s) on the source bypass the pooler and will be "
                                      "ended (--terminate-others): ",
                                      list));
  } else {
    out->problems.push_back(absl::StrCat(
        others->size(),
        " session(s) on the source bypass the pooler, and could write there after the switch: ",
        list, ". End them, or --terminate-others"));
  }
}

}  // namespace

std::string OtherSession::Describe() const {
  return absl::StrCat("pid ", pid, " (", application.empty() ? "no application_name" : application,
                      ", user ", user, ", from ", client, ", ", state, writing ? ", writing" : "",
                      ")");
}

namespace {

// The backend pids of the pooler's server connections for `database`.
absl::StatusOr<std::set<std::string>> PoolerServerPids(PoolerConsole& console,
                                                       const std::string& database) {
  absl::StatusOr<std::vector<PoolerConsole::Row>> servers = console.Show("SERVERS");
  if (!servers.ok()) return servers.status();
  std::set<std::string> pids;
  for (PoolerConsole::Row& s : *servers) {
    if (s["database"] == database) pids.insert(s["remote_pid"]);
  }
  return pids;
}

// One look: the sessions of pg_stat_activity, less those SHOW SERVERS shows just after.
absl::StatusOr<std::vector<OtherSession>> LookForOthers(PGconn* source, PoolerConsole& console,
                                                        const std::string& database) {
  auto res =
      Exec(source,
           "SELECT pid, coalesce(usename, ''), application_name, coalesce(host(client_addr), "
           "'local'), coalesce(state, ''), backend_xid IS NOT NULL FROM pg_stat_activity "
           "WHERE datname = current_database() AND backend_type = 'client backend' AND pid "
           "<> pg_backend_pid() AND application_name <> 'pgflow' AND application_name NOT "
           "LIKE 'pgflow pid %' ORDER BY pid");
  if (!res.ok()) return res.status();
  absl::StatusOr<std::set<std::string>> pooler_pids = PoolerServerPids(console, database);
  if (!pooler_pids.ok()) return pooler_pids.status();
  std::vector<OtherSession> sessions;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    if (pooler_pids->contains(Value(*res, i, 0))) continue;
    sessions.push_back(OtherSession{.pid = std::atoi(PQgetvalue(res->get(), i, 0)),
                                    .user = Value(*res, i, 1),
                                    .application = Value(*res, i, 2),
                                    .client = Value(*res, i, 3),
                                    .state = Value(*res, i, 4),
                                    .writing = Value(*res, i, 5) == "t"});
  }
  return sessions;
}

}  // namespace

absl::StatusOr<std::vector<OtherSession>> OtherSessions(PGconn* source, PoolerConsole& console,
                                                        const std::string& database,
                                                        std::chrono::milliseconds between) {
  constexpr int kLooks = 3;
  std::vector<OtherSession> seen;
  for (int look = 0; look < kLooks; ++look) {
    if (look > 0) std::this_thread::sleep_for(between);
    absl::StatusOr<std::vector<OtherSession>> now = LookForOthers(source, console, database);
    if (!now.ok()) return now.status();
    if (look > 0) {
      std::erase_if(*now, [&](const OtherSession& s) {
        return std::none_of(seen.begin(), seen.end(),
                            [&](const OtherSession& o) { return o.pid == s.pid; });
      });
    }
    seen = std::move(*now);
    if (seen.empty()) break;
  }
  return seen;
}

// The stream back's slot must start inside the pause: one already on B was left by a cutover
// that did not finish, and would send A again what A wrote.
void CheckReverse(const CutoverOptions& options, Sides* sides, CheckResult* out) {
  if (!options.reverse.has_value()) return;
  auto slot =
      Exec(sides->target.get(), "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
           {options.reverse->slot});
  if (!slot.ok()) {
    out->problems.push_back(std::string(slot.status().message()));
    return;
  }
  if (PQntuples(slot->get()) == 0) return;
  out->problems.push_back(absl::StrCat(
      "the target already has the stream back's replication slot ", options.reverse->slot,
      " (left by a cutover that did not finish?): drop it (SELECT pg_drop_replication_slot('",
      options.reverse->slot, "') on the target), or --no-reverse"));
}

CheckResult RunChecks(const PipelinePlan& plan, const CutoverOptions& options, Sides* sides) {
  CheckResult out;
  CheckPipeline(plan, options, &out);
  if (sides->source == nullptr) {
    absl::StatusOr<PgConnPtr> a = ConnectToSourceCatalog(plan.source.url);
    if (!a.ok()) {
      out.problems.push_back(absl::StrCat("the source: ", a.status().message()));
    } else {
      sides->source = std::move(*a);
    }
  }
  if (sides->target == nullptr) {
    absl::StatusOr<PgConnPtr> b = Connect(plan.target_url, ConnectionKind::kRegular);
    if (!b.ok()) {
      out.problems.push_back(absl::StrCat("the target: ", b.status().message()));
    } else {
      sides->target = std::move(*b);
    }
  }
  if (!sides->console.has_value()) {
    absl::StatusOr<PoolerConsole> console = PoolerConsole::Connect(options.pooler_url);
    if (!console.ok()) {
      out.problems.push_back(std::string(console.status().message()));
    } else {
      sides->console.emplace(std::move(*console));
    }
  }
  if (sides->source == nullptr || sides->target == nullptr || !sides->console.has_value()) {
    return out;
  }
  // (When the pipeline does not stream, what B lacks would be no news.)
  if (!out.problems.empty()) {
    CheckTables(plan, sides, &out);
  } else if (absl::Status s = WaitConfirmed(sides->source.get(), plan.source.slot,
                                            options.max_lag + std::chrono::milliseconds(2000));
             s.ok()) {
    CheckTables(plan, sides, &out);
  } else {
    out.problems.push_back(std::string(s.message()));
  }
  CheckPooler(plan, options, sides, &out);
  CheckFence(options, sides, &out);
  CheckReverse(options, sides, &out);
  return out;
}

}  // namespace pgflow::cutover
