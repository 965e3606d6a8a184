#include "pooler/admin_console.h"

#include <algorithm>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/lsn.h"
#include "engine/str_cat.h"
#include "pooler/protocol.h"

namespace pgflow::pooler {
namespace {

using Row = std::vector<std::optional<std::string>>;

std::string Num(int64_t v) { return std::to_string(v); }
std::string Num(uint64_t v) { return std::to_string(v); }
std::string Num(int v) { return std::to_string(v); }

void Table(std::string* out, const std::vector<std::string>& columns, const std::vector<Row>& rows,
           std::string_view tag) {
  AppendRowDescription(out, columns);
  for (const Row& row : rows) AppendDataRow(out, row);
  AppendCommandComplete(out, Cat(tag, " ", rows.size()));
}

std::string TimeText(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S %Z", t, absl::UTCTimeZone());
}

AdminReply Error(std::string_view sqlstate, std::string_view message) {
  AdminReply reply;
  AppendError(&reply.messages, "ERROR", sqlstate, message);
  return reply;
}

std::string_view DrainName(ShutdownMode mode) {
  return mode == ShutdownMode::kWaitForServers ? "SHUTDOWN WAIT_FOR_SERVERS"
                                               : "SHUTDOWN WAIT_FOR_CLIENTS";
}

AdminReply Done(std::string_view tag) {
  AdminReply reply;
  AppendCommandComplete(&reply.messages, tag);
  return reply;
}

AdminReply Show(AdminTarget* target, std::string_view what) {
  AdminReply reply;
  std::string* out = &reply.messages;
  if (what == "pools") {
    std::vector<Row> rows;
    for (const PoolView& p : target->Pools()) {
      rows.push_back(
          {p.database, p.user, Num(p.active_clients()), Num(p.counts.waiting),
           Num(p.counts.active), Num(p.counts.idle), "0", "0", Num(p.counts.connecting),
           Num(static_cast<int64_t>(p.counts.max_wait_s)),
           Num(static_cast<int64_t>(
               (p.counts.max_wait_s - static_cast<int64_t>(p.counts.max_wait_s)) * 1e6)),
           p.mode, p.paused ? "yes" : "no",
           p.server_error.empty() ? std::nullopt : std::optional<std::string>(p.server_error)});
    }
    Table(out,
          {"database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used",
           "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode", "paused", "server_error"},
          rows, "SHOW");
  } else if (what == "clients") {
    std::vector<Row> rows;
    for (const ClientView& c : target->Clients()) {
      rows.push_back({"C", c.user, c.database, c.state, c.address, Num(c.port),
                      TimeText(c.connected), Num(c.id)});
    }
    Table(out, {"type", "user", "database", "state", "addr", "port", "connect_time", "id"}, rows,
          "SHOW");
  } else if (what == "servers") {
    std::vector<Row> rows;
    for (const PoolView& p : target->Pools()) {
      for (const Pool::ServerRow& s : p.servers) {
        std::string address = s.remote;
        std::string port;
        if (size_t colon = address.rfind(':'); colon != std::string::npos) {
          port = address.substr(colon + 1);
          address.resize(colon);
        }
        rows.push_back({"S", p.user, p.database, s.state, address, port,
                        Num(static_cast<int64_t>(s.age_s)), Num(s.id), Num(s.pid)});
      }
    }
    Table(out,
          {"type", "user", "database", "state", "addr", "port", "connected_seconds", "id",
           "remote_pid"},
          rows, "SHOW");
  } else if (what == "stats") {
    std::vector<Row> rows;
    for (const PoolView& p : target->Pools()) {
      rows.push_back({p.database, p.user, Num(p.transactions), Num(p.queries),
                      Num(p.bytes_received), Num(p.bytes_sent), Num(p.xact_us), Num(p.wait_us),
                      Num(p.waits), Num(p.errors),
                      Num(p.server_logins), Num(p.server_login_failures)});
    }
    Table(out,
          {"database", "user", "total_xact_count", "total_query_count", "total_received",
           "total_sent", "total_xact_time", "total_wait_time", "total_waits", "total_errors",
           "total_server_logins", "total_server_login_failures"},
          rows, "SHOW");
  } else if (what == "databases") {
    std::vector<Row> rows;
    for (const DatabaseView& d : target->Databases()) {
      rows.push_back(
          {d.name, d.host, Num(d.port), d.dbname,
           d.force_user.empty() ? std::nullopt : std::optional<std::string>(d.force_user),
           Num(d.pool_size), Num(d.min_pool_size), Num(d.reserve_pool), d.mode,
           Num(d.max_client_conn), Num(d.current_connections), d.paused ? "1" : "0",
           d.retargeted ? "1" : "0", Num(d.clients), Num(d.max_queries_per_second),
           Num(d.queries_delayed)});
    }
    Table(out,
          {"name", "host", "port", "database", "force_user", "pool_size", "min_pool_size",
           "reserve_pool", "pool_mode", "max_client_conn", "current_connections", "paused",
           "retargeted", "clients", "max_queries_per_second", "queries_delayed"},
          rows, "SHOW");
  } else if (what == "replicas") {
    std::vector<Row> rows;
    for (const ReplicaView& r : target->Replicas()) {
      rows.push_back(
          {r.database, Num(r.node.node), r.node.role, r.node.address, r.node.state,
           r.node.position != 0 ? std::optional<std::string>(Lsn(r.node.position).ToString())
                                : std::nullopt,
           Num(r.node.lag_bytes), absl::StrFormat("%.1f", r.node.lag_seconds), Num(r.node.reads)});
    }
    Table(out,
          {"database", "node", "role", "address", "state", "position", "lag_bytes", "lag_seconds",
           "reads"},
          rows, "SHOW");
  } else if (what == "cache") {
    std::vector<Row> rows;
    for (const CacheView& c : target->Caches()) {
      const QueryCache::View& v = c.cache;
      rows.push_back({c.database, v.ready ? "ready" : "off", Num(v.hits), Num(v.misses),
                      Num(v.entries), Num(v.bytes), Num(v.max_memory), Num(v.stores),
                      Num(v.stale_stores), Num(v.invalidations), Num(v.evictions), Num(v.fences),
                      v.position != 0 ? std::optional<std::string>(Lsn(v.position).ToString())
                                      : std::nullopt});
    }
    Table(out,
          {"database", "state", "hits", "misses", "entries", "bytes", "max_memory", "stores",
           "stale_stores", "invalidations", "evictions", "fences", "position"},
          rows, "SHOW");
  } else if (what == "config") {
    std::vector<Row> rows;
    for (const auto& [key, value] : target->ConfigRows()) rows.push_back({key, value});
    Table(out, {"key", "value"}, rows, "SHOW");
  } else if (what == "mem") {
    std::vector<Row> rows;
    for (const auto& [item, value] : target->Memory()) rows.push_back({item, value});
    Table(out, {"item", "value"}, rows, "SHOW");
  } else if (what == "bans") {
    std::vector<Row> rows;
    for (const auto& [kind, who] : target->Bans()) rows.push_back({kind, who});
    Table(out, {"kind", "who"}, rows, "SHOW");
  } else if (what == "version") {
    Table(out, {"version"}, {{std::string("pgflow pooler ") + PGFLOW_POOLER_VERSION}}, "SHOW");
  } else {
    return Error("42601", Cat("unknown SHOW ", what,
                              ": try POOLS, CLIENTS, SERVERS, STATS, DATABASES, REPLICAS, CACHE, "
                              "BANS, MEM, CONFIG, VERSION"));
  }
  return reply;
}

// RETARGET's arguments from the command as typed: a database name and a quoted url, whose
// case is kept and where '' stands for one quote, as in SQL.
struct RetargetArgs {
  std::string database;
  std::string url;
};
std::optional<RetargetArgs> ParseRetarget(std::string_view sql, std::string* error) {
  absl::string_view rest =
      absl::StripLeadingAsciiWhitespace(absl::string_view(sql.data(), sql.size()));
  rest.remove_prefix(std::min<size_t>(rest.size(), 8));  // "retarget"
  rest = absl::StripLeadingAsciiWhitespace(rest);
  const size_t name_end = rest.find_first_of(" \t\n'");
  RetargetArgs args;
  args.database = absl::AsciiStrToLower(rest.substr(0, name_end));
  rest = name_end == absl::string_view::npos ? absl::string_view() : rest.substr(name_end);
  rest = absl::StripLeadingAsciiWhitespace(rest);
  if (args.database.empty() || rest.empty() || rest[0] != '\'') {
    *error = "RETARGET needs a database and a quoted url: RETARGET app 'postgres://host:5432/app'";
    return std::nullopt;
  }
  size_t i = 1;
  for (;; ++i) {
    if (i >= rest.size()) {
      *error = "RETARGET's url has no closing quote";
      return std::nullopt;
    }
    if (rest[i] != '\'') {
      args.url += rest[i];
    } else if (i + 1 < rest.size() && rest[i + 1] == '\'') {
      args.url += '\'';
      ++i;
    } else {
      break;
    }
  }
  absl::string_view tail = absl::StripAsciiWhitespace(rest.substr(i + 1));
  while (!tail.empty() && tail.back() == ';') {
    tail.remove_suffix(1);
    tail = absl::StripTrailingAsciiWhitespace(tail);
  }
  if (!tail.empty()) {
    *error = Cat("too many words for retarget: ", std::string(tail));
    return std::nullopt;
  }
  return args;
}

// Whether `database`'s pools (every pool for "") have no server connection in use.
bool Quiet(AdminTarget* target, const std::string& database) {
  for (const PoolView& p : target->Pools()) {
    if (!database.empty() && p.database != database) continue;
    if (p.counts.active > 0 || p.counts.connecting > 0) return false;
  }
  return true;
}

// BAN USER name | BAN ADDRESS ip, and UNBAN: the name as written (a user name keeps its case;
// double quotes around it are dropped).
AdminReply BanCommand(AdminTarget* target, std::string_view sql, const std::string& command) {
  std::vector<std::string> words = absl::StrSplit(
      absl::StripAsciiWhitespace(absl::string_view(sql.data(), sql.size())),
      absl::ByAnyChar(" \t\n"), absl::SkipEmpty());
  while (!words.empty() && !words.back().empty() && words.back().back() == ';') {
    words.back().pop_back();
    if (words.back().empty()) words.pop_back();
  }
  const std::string verb = absl::AsciiStrToUpper(command);
  const std::string usage =
      Cat(verb, " USER name | ", verb, " ADDRESS ip | ", verb, " DATABASE name");
  if (words.size() != 3) return Error("42601", usage);
  const std::string kind = absl::AsciiStrToLower(words[1]);
  if (kind != "user" && kind != "address" && kind != "database") return Error("42601", usage);
  std::string who = words[2];
  if (who.size() >= 2 && who.front() == '"' && who.back() == '"') {
    who = who.substr(1, who.size() - 2);
  }
  absl::Status s = command == "ban" ? target->Ban(kind, who) : target->Unban(kind, who);
  if (!s.ok()) return Error(absl::IsNotFound(s) ? "42704" : "22023", std::string(s.message()));
  return Done(verb);
}

}  // namespace

AdminReply RunAdminCommand(AdminTarget* target, std::string_view sql) {
  std::string text =
      absl::AsciiStrToLower(absl::StripAsciiWhitespace(absl::string_view(sql.data(), sql.size())));
  while (!text.empty() && (text.back() == ';' || absl::ascii_isspace(text.back()))) text.pop_back();
  std::vector<std::string> words =
      absl::StrSplit(text, absl::ByAnyChar(" \t\n"), absl::SkipEmpty());
  if (words.empty()) {
    AdminReply reply;
    AppendMessage(&reply.messages, 'I', {});  // EmptyQueryResponse
    return reply;
  }
  const std::string& command = words[0];
  if (command == "retarget") {
    std::string error;
    std::optional<RetargetArgs> args = ParseRetarget(sql, &error);
    if (!args) return Error("42601", error);
    if (absl::Status s = target->Retarget(args->database, args->url); !s.ok()) {
      if (absl::IsNotFound(s)) return Error("3D000", std::string(s.message()));
      return Error("F0000", Cat("RETARGET failed, the database stays where it was: ",
                                std::string(s.message())));
    }
    return Done("RETARGET");
  }
  if (command == "ban" || command == "unban") return BanCommand(target, sql, command);
  std::string arg = words.size() > 1 ? words[1] : "";
  if (words.size() > 2) return Error("42601", Cat("too many words for ", command));
  auto check_db = [&]() -> std::optional<AdminReply> {
    if (!arg.empty() && !target->HasDatabase(arg)) {
      return Error("3D000", Cat("no such database: ", arg));
    }
    return std::nullopt;
  };
  if (command == "show") {
    if (arg.empty()) return Error("42601", "SHOW what? POOLS, CLIENTS, SERVERS, STATS, ...");
    return Show(target, arg);
  }
  // Under a SHUTDOWN WAIT_FOR_*, pausing or resuming would stall or undo what it waits for.
  if (command == "pause" || command == "resume" || command == "suspend") {
    if (const ShutdownMode draining = target->Draining(); draining != ShutdownMode::kNow) {
      return Error("55000",
                   Cat(DrainName(draining), " is under way: ", absl::AsciiStrToUpper(command),
                       " is refused (SHUTDOWN stops the pooler at once)"));
    }
  }
  if (command == "pause") {
    if (auto e = check_db()) return *e;
    target->Pause(arg);
    AdminReply reply = Done("PAUSE");
    reply.wait_until = [target, arg] { return Quiet(target, arg); };
    return reply;
  }
  if (command == "resume") {
    if (auto e = check_db()) return *e;
    target->Resume(arg);
    return Done("RESUME");
  }
  if (command == "suspend") {
    if (!arg.empty()) return Error("42601", "SUSPEND takes no database");
    target->Suspend();
    AdminReply reply = Done("SUSPEND");
    reply.wait_until = [target] { return Quiet(target, ""); };
    return reply;
  }
  if (command == "reconnect") {
    if (auto e = check_db()) return *e;
    target->Reconnect(arg);
    return Done("RECONNECT");
  }
  if (command == "wait_close") {
    if (auto e = check_db()) return *e;
    AdminReply reply = Done("WAIT_CLOSE");
    reply.wait_until = [target, arg] {
      for (const PoolView& p : target->Pools()) {
        if ((arg.empty() || p.database == arg) && p.counts.stale > 0) return false;
      }
      return true;
    };
    return reply;
  }
  if (command == "kill") {
    if (arg.empty()) return Error("42601", "KILL needs a database");
    if (auto e = check_db()) return *e;
    target->Kill(arg);
    return Done("KILL");
  }
  if (command == "reload") {
    if (absl::Status s = target->Reload(); !s.ok()) {
      return Error("F0000", Cat("RELOAD failed, the running configuration stays: ", s.message()));
    }
    return Done("RELOAD");
  }
  if (command == "shutdown") {
    ShutdownMode mode = ShutdownMode::kNow;
    if (arg == "wait_for_servers") {
      mode = ShutdownMode::kWaitForServers;
    } else if (arg == "wait_for_clients") {
      mode = ShutdownMode::kWaitForClients;
    } else if (!arg.empty()) {
      return Error("42601", Cat("unknown SHUTDOWN mode '", arg,
                                "': none (at once), WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS"));
    }
    const ShutdownMode draining = target->Draining();
    if (mode != ShutdownMode::kNow && draining != ShutdownMode::kNow && draining != mode) {
      return Error("55000", Cat(DrainName(draining),
                                " is under way: SHUTDOWN (alone) stops the pooler at once"));
    }
    AdminReply reply = Done("SHUTDOWN");
    reply.after = [target, mode] { target->Shutdown(mode); };
    return reply;
  }
  return Error("42601", Cat("unknown command '", command,
                            "': SHOW, PAUSE, RESUME, SUSPEND, RECONNECT, WAIT_CLOSE, KILL, RELOAD, "
                            "RETARGET, SHUTDOWN"));
}

}  // namespace pgflow::pooler
