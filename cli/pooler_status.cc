#include "cli/pooler_status.h"

#include <algorithm>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "cli/status_command.h"
#include "common/postgres/pg_connection.h"
#include "engine/listen_address.h"

namespace pgflow {
namespace {

using pooler::PoolerConfig;

// Where the console is reached: the Unix socket when the pooler has one (no TLS is asked
// there, and it answers whatever address `listen` binds), else the listen address.
struct ConsoleAddress {
  std::string host;  // an IP address, or the Unix socket's directory
  std::string port;
  std::string Shown() const {
    if (!host.empty() && host[0] == '/') return absl::StrCat(host, "/.s.PGSQL.", port);
    return host.find(':') != std::string::npos ? absl::StrCat("[", host, "]:", port)
                                               : absl::StrCat(host, ":", port);
  }
};

absl::StatusOr<ConsoleAddress> ConsoleAddressOf(const PoolerConfig& config) {
  absl::StatusOr<ListenAddress> listen = ParseListenAddress(config.listen);
  if (!listen.ok()) return listen.status();
  if (listen->port == 0) {
    return absl::InvalidArgumentError(
        "listen names port 0 (any free port): the pooler's port cannot be known from the file");
  }
  const std::string port = std::to_string(listen->port);
  if (!config.unix_socket_dir.empty()) return ConsoleAddress{config.unix_socket_dir, port};
  return ConsoleAddress{listen->LocalHost(), port};
}

// The console user's password, when the users file holds it in plain; else empty (libpq then
// looks in PGPASSWORD and ~/.pgpass).
std::string PasswordOf(const PoolerConfig& config, const std::string& user) {
  if (config.auth.user_list == nullptr) return "";
  auto entry = config.auth.user_list->find(user);
  if (entry == config.auth.user_list->end()) return "";
  return entry->second.kind == pooler::UserSecret::Kind::kPlain ? entry->second.text : "";
}

absl::StatusOr<PgConnPtr> ConnectConsole(const ConsoleAddress& at, const std::string& user,
                                         const std::string& password) {
  std::vector<std::pair<const char*, std::string>> params = {
      {"host", at.host}, {"port", at.port},        {"dbname", "pgflow"},
      {"user", user},    {"connect_timeout", "3"}, {"application_name", "pgflow pooler status"},
  };
  if (!password.empty()) params.emplace_back("password", password);
  std::vector<const char*> keys;
  std::vector<const char*> values;
  for (const auto& [key, value] : params) {
    keys.push_back(key);
    values.push_back(value.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  PgConnPtr conn(PQconnectdbParams(keys.data(), values.data(), 0));
  if (conn == nullptr) return absl::ResourceExhaustedError("out of memory");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    // (libpq's message may run over lines: "...Connection refused\n\tIs the server running")
    std::string message =
        absl::StrReplaceAll(absl::StripTrailingAsciiWhitespace(PQerrorMessage(conn.get())),
                            {{"\n\t", " "}, {"\n", " "}});
    return absl::UnavailableError(
        absl::StrCat("the pooler's console at ", at.Shown(), " (user ", user, "): ", message));
  }
  return conn;
}

// The rows a console command answers, each by column name (a NULL as "").
using Row = std::map<std::string, std::string>;
absl::StatusOr<std::vector<Row>> Show(PGconn* conn, const std::string& command) {
  PgResultPtr result(PQexec(conn, command.c_str()));
  if (PQresultStatus(result.get()) != PGRES_TUPLES_OK) {
    return absl::UnavailableError(absl::StrCat(
        command, ": ", absl::StripTrailingAsciiWhitespace(PQresultErrorMessage(result.get()))));
  }
  std::vector<Row> rows(PQntuples(result.get()));
  for (int i = 0; i < PQntuples(result.get()); ++i) {
    for (int j = 0; j < PQnfields(result.get()); ++j) {
      rows[i][PQfname(result.get(), j)] = PQgetvalue(result.get(), i, j);
    }
  }
  return rows;
}

double Number(const Row& row, const std::string& column) {
  double value = 0;
  auto it = row.find(column);
  return it != row.end() && absl::SimpleAtod(it->second, &value) ? value : 0;
}

std::string Text(const Row& row, const std::string& column) {
  auto it = row.find(column);
  return it == row.end() ? "" : it->second;
}

// What the console shows of one database, as clients name it.
struct DatabaseStatus {
  std::string mode;
  bool paused = false;
  int clients_active = 0, clients_waiting = 0, clients_idle = 0;
  int servers_active = 0, servers_idle = 0, servers_login = 0;
  double transactions_per_second = 0;
  double queries_per_second = 0;
  double max_wait_seconds = 0;
  std::vector<std::string> server_errors;  // "user alice: 08006 ..."

  nlohmann::json ToJson(const std::string& name) const {
    return {
        {"name", name},
        {"pool_mode", mode},
        {"paused", paused},
        {"clients",
         {{"active", clients_active}, {"waiting", clients_waiting}, {"idle", clients_idle}}},
        {"servers", {{"active", servers_active}, {"idle", servers_idle}, {"login", servers_login}}},
        {"transactions_per_second", transactions_per_second},
        {"queries_per_second", queries_per_second},
        {"max_wait_seconds", max_wait_seconds},
        {"server_errors", server_errors}};
  }
};

// What the console answered, taken together.
struct ConsoleAnswers {
  std::string version;
  std::vector<Row> databases, pools, clients, stats_before, stats_after;
  double seconds = 1;  // between the two SHOW STATS
};

absl::StatusOr<ConsoleAnswers> AskConsole(PGconn* conn, std::chrono::milliseconds sample) {
  ConsoleAnswers answers;
  const std::pair<const char*, std::vector<Row>*> shows[] = {{"SHOW DATABASES", &answers.databases},
                                                             {"SHOW STATS", &answers.stats_before}};
  std::vector<Row> version;
  for (const auto& [command, rows] : shows) {
    absl::StatusOr<std::vector<Row>> answer = Show(conn, command);
    if (!answer.ok()) return answer.status();
    *rows = *std::move(answer);
  }
  const auto before = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(sample);
  const std::pair<const char*, std::vector<Row>*> after[] = {{"SHOW STATS", &answers.stats_after},
                                                             {"SHOW POOLS", &answers.pools},
                                                             {"SHOW CLIENTS", &answers.clients},
                                                             {"SHOW VERSION", &version}};
  for (const auto& [command, rows] : after) {
    absl::StatusOr<std::vector<Row>> answer = Show(conn, command);
    if (!answer.ok()) return answer.status();
    *rows = *std::move(answer);
  }
  answers.seconds = std::max(
      1e-3, std::chrono::duration<double>(std::chrono::steady_clock::now() - before).count());
  answers.version = version.empty() ? "" : Text(version[0], "version");
  return answers;
}

// Per database: the configured ones (SHOW DATABASES), and those clients named through "*".
std::map<std::string, DatabaseStatus> Summarize(const ConsoleAnswers& answers) {
  std::map<std::string, DatabaseStatus> out;
  for (const Row& row : answers.databases) {
    DatabaseStatus& db = out[Text(row, "name")];
    db.mode = Text(row, "pool_mode");
    db.paused = Text(row, "paused") == "1";
  }
  for (const Row& row : answers.pools) {
    DatabaseStatus& db = out[Text(row, "database")];
    if (db.mode.empty()) db.mode = Text(row, "pool_mode");
    db.paused = db.paused || Text(row, "paused") == "yes";
    db.servers_active += static_cast<int>(Number(row, "sv_active"));
    db.servers_idle += static_cast<int>(Number(row, "sv_idle"));
    db.servers_login += static_cast<int>(Number(row, "sv_login"));
    db.max_wait_seconds =
        std::max(db.max_wait_seconds, Number(row, "maxwait") + Number(row, "maxwait_us") / 1e6);
    if (!Text(row, "server_error").empty()) {
      db.server_errors.push_back(
          absl::StrCat("user ", Text(row, "user"), ": ", Text(row, "server_error")));
    }
  }
  for (const Row& row : answers.clients) {
    auto it = out.find(Text(row, "database"));
    if (it == out.end()) continue;  // a console session
    const std::string state = Text(row, "state");
    DatabaseStatus& db = it->second;
    if (state == "active") {
      ++db.clients_active;
    } else if (state == "waiting") {
      ++db.clients_waiting;
    } else {
      ++db.clients_idle;
    }
  }
  auto add_rates = [&](const std::vector<Row>& stats, double sign) {
    for (const Row& row : stats) {
      auto it = out.find(Text(row, "database"));
      if (it == out.end()) continue;
      it->second.transactions_per_second +=
          sign * Number(row, "total_xact_count") / answers.seconds;
      it->second.queries_per_second += sign * Number(row, "total_query_count") / answers.seconds;
    }
  };
  add_rates(answers.stats_after, 1);
  add_rates(answers.stats_before, -1);
  return out;
}

}  // namespace

PoolerHealth GatherPoolerStatus(const PoolerConfig& config, const std::string& file,
                                const PoolerStatusOptions& options) {
  PoolerHealth health;
  nlohmann::json& report = health.report;
  std::vector<std::string> problems;
  report["file"] = file;
  report["listen"] = config.listen;
  report["up"] = false;
  report["databases"] = nlohmann::json::array();
  auto unreachable = [&](std::string problem) {
    problems.push_back(std::move(problem));
    report["problems"] = problems;
    report["health"] = "unreachable";
    health.exit_status = kStatusUnreachable;
    return health;
  };
  const std::string user = !options.user.empty()         ? options.user
                           : !config.admin.users.empty() ? config.admin.users.front()
                                                         : "";
  if (user.empty()) {
    return unreachable(
        "no console user: list one in admin.users (and its password in the users file), or "
        "give --user");
  }
  absl::StatusOr<ConsoleAddress> at = ConsoleAddressOf(config);
  if (!at.ok()) return unreachable(std::string(at.status().message()));
  report["console"] = {{"address", at->Shown()}, {"user", user}};
  absl::StatusOr<PgConnPtr> conn = ConnectConsole(*at, user, PasswordOf(config, user));
  if (!conn.ok()) return unreachable(std::string(conn.status().message()));
  absl::StatusOr<ConsoleAnswers> answers = AskConsole(conn->get(), options.sample);
  if (!answers.ok()) return unreachable(std::string(answers.status().message()));
  report["up"] = true;
  report["version"] = answers->version;
  for (const auto& [name, db] : Summarize(*answers)) {
    report["databases"].push_back(db.ToJson(name));
    for (const std::string& error : db.server_errors) {
      problems.push_back(absl::StrCat("database ", name, " cannot reach its server (", error, ")"));
    }
  }
  health.exit_status = problems.empty() ? kStatusHealthy : kStatusDegraded;
  report["problems"] = problems;
  report["health"] = problems.empty() ? "healthy" : "degraded";
  return health;
}

std::string FormatPoolerStatus(const nlohmann::json& report) {
  std::string out;
  auto line = [&out](std::string_view label, const std::string& value) {
    absl::StrAppend(&out, absl::StrFormat("  %-10s %s\n", label, value));
  };
  absl::StrAppend(&out, "pooler ", report.value("listen", ""), " (", report.value("file", ""),
                  ")\n");
  line("health", report.value("health", ""));
  if (report.value("up", false)) {
    const nlohmann::json& console = report["console"];
    line("console",
         absl::StrCat("up: ", report.value("version", ""), " (", console.value("address", ""),
                      ", user ", console.value("user", ""), ")"));
  } else {
    line("console", "down");
  }
  if (!report["databases"].empty()) {
    line("databases", absl::StrFormat("%-16s %-11s %-22s %-16s %8s %8s %8s", "NAME", "MODE",
                                      "CLIENTS act/wait/idle", "SERVERS act/idle", "XACT/S",
                                      "QUERY/S", "MAXWAIT"));
  }
  for (const nlohmann::json& db : report["databases"]) {
    const nlohmann::json& clients = db["clients"];
    const nlohmann::json& servers = db["servers"];
    line("", absl::StrFormat(
                 "%-16s %-11s %-22s %-16s %8.1f %8.1f %7.1fs%s", db.value("name", ""),
                 db.value("pool_mode", ""),
                 absl::StrCat(clients.value("active", 0), "/", clients.value("waiting", 0), "/",
                              clients.value("idle", 0)),
                 absl::StrCat(servers.value("active", 0), "/", servers.value("idle", 0)),
                 db.value("transactions_per_second", 0.0), db.value("queries_per_second", 0.0),
                 db.value("max_wait_seconds", 0.0), db.value("paused", false) ? "  PAUSED" : ""));
  }
  for (const nlohmann::json& problem : report["problems"]) {
    line("problem", problem.get<std::string>());
  }
  return out;
}

}  // namespace pgflow
