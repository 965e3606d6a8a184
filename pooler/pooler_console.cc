// The pooler's page of the web console (engine/console.h): what the console's SHOW commands
// list, as JSON, the samples of its charts, and its actions, run as the SQL console runs them
// (RunAdminCommand), in the process.

#include <libpq-fe.h>

#include <algorithm>
#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "engine/config_node.h"
#include "engine/log.h"
#include "engine/lsn.h"
#include "engine/str_cat.h"
#include "pooler/admin_console.h"
#include "pooler/auth.h"
#include "pooler/pooler.h"
#include "pooler/pooler_config.h"
#include "pooler/pooler_internal.h"
#include "pooler/protocol.h"

namespace pgflow::pooler {
namespace {

constexpr auto kActionTimeout = std::chrono::seconds(30);

// The command's tag, or its error ("22023: not an IP address"), from a console reply.
absl::StatusOr<std::string> Outcome(std::string_view messages) {
  std::string tag;
  for (size_t at = 0;;) {
    absl::StatusOr<std::optional<MessageHeader>> header =
        ReadMessageHeader(messages.substr(at), messages.size() - at);
    if (!header.ok() || !header->has_value()) break;
    const MessageHeader& h = **header;
    const std::string_view body = messages.substr(at + 5, h.body_size());
    at += h.size;
    if (h.type == 'C') tag = std::string(body.substr(0, body.find('\0')));
    if (h.type != 'E') continue;
    const ErrorFields error = ParseErrorFields(body);
    const std::string& code = error.sqlstate;
    const std::string text = Cat(error.message, " (", code, ")");
    if (code == "42601" || code == "22023" || code == "3D000" || code == "42704") {
      return absl::InvalidArgumentError(text);
    }
    return absl::FailedPreconditionError(text);
  }
  return tag;
}

// `value` as one word of a console command: a database or user name, an address.
absl::StatusOr<std::string> Word(const nlohmann::json& request, const char* key) {
  if (!request.contains(key) || !request[key].is_string()) {
    return absl::InvalidArgumentError(Cat("this action needs a ", key));
  }
  std::string value = request[key].get<std::string>();
  if (value.empty() || value.size() > 256 ||
      value.find_first_of(" \t\r\n;\"'") != std::string::npos) {
    return absl::InvalidArgumentError(Cat("not a ", key, " the console takes: \"", value, "\""));
  }
  return value;
}

// Whether `user` logs in to the pooler's own SQL console with `password`: for a pooler whose
// users are not in a file (auth_query), its login is the proof.
bool LogsInToConsole(const PoolerConfig& config, int port, const std::string& user,
                     const std::string& password) {
  const std::string host = !config.unix_socket_dir.empty() ? config.unix_socket_dir : "127.0.0.1";
  const std::string port_text = std::to_string(port);
  const char* keys[] = {"host",     "port",           "dbname",  "user",
                        "password", "connect_timeout", "sslmode", nullptr};
  const char* values[] = {host.c_str(), port_text.c_str(), "pgflow", user.c_str(),
                          password.c_str(), "5", "prefer", nullptr};
  PGconn* conn = PQconnectdbParams(keys, values, 0);
  const bool ok = PQstatus(conn) == CONNECTION_OK;
  PQfinish(conn);
  return ok;
}

}  // namespace

absl::StatusOr<std::string> Pooler::RunConsoleCommand(std::string_view sql) {
  AdminReply reply = RunAdminCommand(impl_.get(), sql);
  absl::StatusOr<std::string> outcome = Outcome(reply.messages);
  if (!outcome.ok()) return outcome.status();
  const auto deadline = std::chrono::steady_clock::now() + kActionTimeout;
  for (int polls = 0; reply.wait_until && !reply.wait_until(); ++polls) {
    if (impl_->console_interrupted.load()) {
      return absl::CancelledError(Cat(sql, ": the pooler is stopping; it stays in force"));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(
          Cat(sql, ": still waiting after ", kActionTimeout.count(),
              " s for the transactions under way to end; it stays in force"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(polls < 200 ? 1 : 50));
  }
  if (reply.after) reply.after();
  return outcome;
}

namespace {

// Applies `edit` to the pooler's file `file`, checks the result loads, writes it, and reloads
// with `reload`; puts the file back when the reload refuses it.
absl::Status EditFile(const std::string& file,
                      const std::function<absl::StatusOr<std::string>(std::string_view)>& edit,
                      const std::function<absl::Status()>& reload) {
  if (file.empty()) {
    return absl::FailedPreconditionError("the pooler was not started from a file");
  }
  absl::StatusOr<std::string> before = ReadConfigFile(file);
  if (!before.ok()) return before.status();
  absl::StatusOr<std::string> after = edit(*before);
  if (!after.ok()) return after.status();
  if (absl::StatusOr<PoolerConfig> check = ParsePoolerConfig(*after, file); !check.ok()) {
    return absl::InvalidArgumentError(
        Cat("the file would not load with that change, so it was not made: ",
            check.status().message()));
  }
  // Someone else's edit since it was read is not overwritten.
  if (absl::StatusOr<std::string> now = ReadConfigFile(file); !now.ok() || *now != *before) {
    return absl::AbortedError(Cat(file, " changed while it was being edited: nothing was done, "
                                  "try again"));
  }
  if (absl::Status s = WriteFileAtomically(file, *after); !s.ok()) return s;
  if (absl::Status s = reload(); !s.ok()) {
    absl::StatusOr<std::string> now = ReadConfigFile(file);
    absl::Status restored = now.ok() && *now == *after
                                ? WriteFileAtomically(file, *before)
                                : absl::AbortedError("it was changed again meanwhile");
    return absl::FailedPreconditionError(
        Cat("RELOAD refused the changed file (", s.message(), "); ",
            restored.ok() ? "it was put back as it was" : "and it could not be put back: ",
            restored.ok() ? "" : restored.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Pooler::AddDatabase(const NewDatabase& database) {
  const std::string file = impl_->config()->file;
  absl::Status s = EditFile(
      file, [&](std::string_view text) { return AddDatabaseToText(text, database); },
      [this] { return Reload(); });
  if (s.ok()) LogInfo("pooler: database %s added to %s", database.name, file);
  return s;
}

absl::Status Pooler::RemoveDatabase(const std::string& name) {
  const std::string file = impl_->config()->file;
  absl::Status s = EditFile(
      file, [&](std::string_view text) { return RemoveDatabaseFromText(text, name); },
      [this] { return Reload(); });
  if (s.ok()) {
    LogInfo("pooler: database %s removed from %s: its clients stay until they leave", name, file);
  }
  return s;
}

void Pooler::InterruptConsole() { impl_->console_interrupted.store(true); }

ConsoleHooks Pooler::Console() {
  ConsoleHooks hooks;
  hooks.kind = "pooler";
  hooks.title = Cat("pooler on ", impl_->config()->listen);
  hooks.state_needs_login = true;
  hooks.check_login = [this](const std::string& user, const std::string& password) {
    std::shared_ptr<const PoolerConfig> config = impl_->config();
    const std::vector<std::string>& admins = config->admin.users;
    const bool admin = std::find(admins.begin(), admins.end(), user) != admins.end();
    if (config->auth.user_list != nullptr) {
      const bool right = CheckPassword(*config->auth.user_list, user, password);
      return admin && right;
    }
    return admin && LogsInToConsole(*config, port(), user, password);
  };
  hooks.state = [this](const std::string&) {
    nlohmann::json state;
    state["databases"] = nlohmann::json::array();
    for (const DatabaseView& d : impl_->Databases()) {
      state["databases"].push_back({{"name", d.name},
                                    {"host", d.host},
                                    {"port", d.port},
                                    {"dbname", d.dbname},
                                    {"pool_size", d.pool_size},
                                    {"pool_mode", d.mode},
                                    {"max_client_conn", d.max_client_conn},
                                    {"current_connections", d.current_connections},
                                    {"paused", d.paused},
                                    {"retargeted", d.retargeted},
                                    {"max_queries_per_second", d.max_queries_per_second},
                                    {"queries_delayed", d.queries_delayed}});
    }
    state["pools"] = nlohmann::json::array();
    for (const PoolView& p : impl_->Pools()) {
      state["pools"].push_back({{"database", p.database},
                                {"user", p.user},
                                {"cl_active", p.active_clients()},
                                {"cl_waiting", p.counts.waiting},
                                {"sv_active", p.counts.active},
                                {"sv_idle", p.counts.idle},
                                {"sv_login", p.counts.connecting},
                                {"maxwait", p.counts.max_wait_s},
                                {"pool_mode", p.mode},
                                {"paused", p.paused},
                                {"xact", p.transactions},
                                {"queries", p.queries},
                                {"xact_us", p.xact_us},
                                {"errors", p.errors},
                                {"wait_us", p.wait_us}});
    }
    state["replicas"] = nlohmann::json::array();
    for (const ReplicaView& r : impl_->Replicas()) {
      state["replicas"].push_back({{"database", r.database},
                                   {"address", r.node.address},
                                   {"role", r.node.role},
                                   {"state", r.node.state},
                                   {"lag_bytes", r.node.lag_bytes},
                                   {"lag_seconds", r.node.lag_seconds},
                                   {"reads", r.node.reads}});
    }
    state["caches"] = nlohmann::json::array();
    for (const CacheView& c : impl_->Caches()) {
      state["caches"].push_back({{"database", c.database},
                                 {"hits", c.cache.hits},
                                 {"misses", c.cache.misses},
                                 {"entries", c.cache.entries},
                                 {"bytes", c.cache.bytes},
                                 {"invalidations", c.cache.invalidations}});
    }
    nlohmann::json bans = {{"users", nlohmann::json::array()},
                           {"addresses", nlohmann::json::array()},
                           {"databases", nlohmann::json::array()}};
    for (const auto& [kind, who] : impl_->Bans()) {
      bans[kind == "user" ? "users" : kind == "database" ? "databases" : "addresses"].push_back(
          who);
    }
    state["bans"] = std::move(bans);
    return state;
  };
  hooks.sample = [this] {
    std::map<std::string, std::array<uint64_t, 3>> totals;  // xact, queries, xact_us
    for (const PoolView& p : impl_->Pools()) {
      std::array<uint64_t, 3>& t = totals[p.database];
      t[0] += p.transactions;
      t[1] += p.queries;
      t[2] += p.xact_us;
    }
    nlohmann::json dbs = nlohmann::json::object();
    for (const auto& [database, t] : totals) {
      dbs[database] = {{"xact", t[0]}, {"queries", t[1]}, {"xact_us", t[2]}};
    }
    return nlohmann::json{{"dbs", std::move(dbs)}};
  };
  hooks.act = [this](const std::string&,
                     const nlohmann::json& request) -> absl::StatusOr<std::string> {
    const std::string action = request["action"].get<std::string>();
    std::string sql;
    if (action == "pause" || action == "resume") {
      absl::StatusOr<std::string> database = Word(request, "database");
      if (!database.ok()) return database.status();
      sql = Cat(action == "pause" ? "PAUSE " : "RESUME ", *database);
    } else if (action == "reload") {
      sql = "RELOAD";
    } else if (action == "add_database") {
      NewDatabase database;
      for (const char* key : {"name", "url", "pool_mode"}) {
        if (request.contains(key) && !request[key].is_string()) {
          return absl::InvalidArgumentError(Cat(key, ": a string"));
        }
      }
      database.name = request.value("name", "");
      database.url = request.value("url", "");
      database.pool_mode = request.value("pool_mode", "");
      if (request.contains("pool_size") && !request["pool_size"].is_null()) {
        if (!request["pool_size"].is_number_integer()) {
          return absl::InvalidArgumentError("pool_size: a number");
        }
        database.pool_size = request["pool_size"].get<int>();
      }
      if (absl::Status s = AddDatabase(database); !s.ok()) return s;
      return Cat("database ", database.name, " added to the file and serving");
    } else if (action == "remove_database") {
      absl::StatusOr<std::string> name = Word(request, "database");
      if (!name.ok()) return name.status();
      if (absl::Status s = RemoveDatabase(*name); !s.ok()) return s;
      return Cat("database ", *name, " removed from the file: it takes no new clients");
    } else if (action == "ban" || action == "unban") {
      const std::string kind = request.contains("user")       ? "user"
                               : request.contains("database") ? "database"
                                                              : "address";
      absl::StatusOr<std::string> who = Word(request, kind.c_str());
      if (!who.ok()) return who.status();
      sql = Cat(action == "ban" ? "BAN " : "UNBAN ", absl::AsciiStrToUpper(kind), " ", *who);
    } else {
      return absl::InvalidArgumentError(
          Cat("no such action on a pooler: ", action, " (pause, resume, reload, ban, unban)"));
    }
    absl::StatusOr<std::string> done = RunConsoleCommand(sql);
    if (!done.ok()) return done.status();
    return Cat(sql, ": done");
  };
  return hooks;
}

}  // namespace pgflow::pooler
