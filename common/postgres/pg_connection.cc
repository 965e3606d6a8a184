#include "common/postgres/pg_connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/postgres/conninfo.h"
#include "engine/log.h"

namespace pgflow {
namespace {

// Every session pgflow opens, replication ones too (the walsender accepts these): the text
// formats it parses, literals as QuoteLiteral writes them (a backslash is a character), and no
// timeout or read-only default that a database's or role's settings (ALTER DATABASE ... SET,
// which `pgflow roles` copies from the source) would otherwise impose on an initial load or a
// long apply. The URL's own `options` come after these and win.
constexpr const char* kSessionOptions =
    "-c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c TimeZone=UTC -c extra_float_digits=3 "
    "-c bytea_output=hex -c standard_conforming_strings=on -c statement_timeout=0 "
    "-c lock_timeout=0 -c idle_in_transaction_session_timeout=0 "
    "-c default_transaction_read_only=off";

bool IsConnectionClass(absl::string_view sqlstate) {
  return absl::StartsWith(sqlstate, "08") || sqlstate == "57P01" || sqlstate == "57P02" ||
         sqlstate == "57P03" || sqlstate == "53300" || sqlstate == "55006";
}

}  // namespace

namespace {

// `text` between `quote`s, with every `quote` inside doubled: SQL's rule for both identifiers
// and string literals (a backslash is a character in a literal: every session of Connect has
// standard_conforming_strings on).
std::string Quote(std::string_view text, char quote) {
  std::string out(1, quote);
  for (char c : text) {
    if (c == quote) out += quote;
    out += c;
  }
  out += quote;
  return out;
}

}  // namespace

std::string ReplicationApplicationName() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  // (application_name keeps 63 bytes: a long host name is cut, which only weakens the check.)
  return absl::StrCat("pgflow pid ", getpid(), " on ", host);
}

std::optional<PgflowProcessName> ParseReplicationApplicationName(std::string_view name) {
  constexpr std::string_view kPrefix = "pgflow pid ";
  if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  name.remove_prefix(kPrefix.size());
  const size_t on = name.find(" on ");
  if (on == std::string_view::npos) return std::nullopt;
  PgflowProcessName parsed;
  if (!absl::SimpleAtoi(absl::string_view(name.data(), on), &parsed.pid) || parsed.pid <= 0) {
    return std::nullopt;
  }
  parsed.host = std::string(name.substr(on + 4));
  return parsed;
}

std::string QuoteIdent(std::string_view name) { return Quote(name, '"'); }

std::string QuoteLiteral(std::string_view text) {
  if (text.find('\\') == std::string_view::npos) return Quote(text, '\'');
  // An escape string (E'...', backslashes doubled) means the same under any
  // standard_conforming_strings, also in a session Connect did not open (a statement shown to
  // run in psql).
  std::string doubled;
  for (char c : text) {
    if (c == '\\') doubled += c;
    doubled += c;
  }
  return "E" + Quote(doubled, '\'');
}

std::string Describe(PGconn* conn) {
  const char* host = PQhost(conn);
  std::string h = host == nullptr ? "" : host;
  if (absl::StartsWith(h, "/")) h = "socket " + h;
  return absl::StrCat(h, ":", PQport(conn) ? PQport(conn) : "", "/", PQdb(conn) ? PQdb(conn) : "");
}

absl::StatusOr<PgConnPtr> Connect(const std::string& url, ConnectionKind kind) {
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(url.c_str(), &err);
  if (parsed == nullptr) {
    PQfreemem(err);  // may quote part of the password: CheckConninfo says it without
    absl::Status invalid = CheckConninfo(url);
    return invalid.ok() ? absl::InvalidArgumentError("invalid PostgreSQL connection string")
                        : invalid;
  }
  std::vector<std::string> keys;
  std::vector<std::string> values;
  std::string options = kSessionOptions;
  bool has_application_name = false;
  for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    if (std::strcmp(o->keyword, "options") == 0) {
      options = absl::StrCat(options, " ", o->val);
      continue;
    }
    if (std::strcmp(o->keyword, "replication") == 0) continue;
    if (std::strcmp(o->keyword, "application_name") == 0) has_application_name = true;
    keys.emplace_back(o->keyword);
    values.emplace_back(o->val);
  }
  PQconninfoFree(parsed);
  // Notice a dead server or network within about a minute instead of the kernel's ~15, unless
  // the URL says otherwise.
  for (auto [key, value] : {std::pair{"connect_timeout", "10"},
                            {"keepalives", "1"},
                            {"keepalives_idle", "30"},
                            {"keepalives_interval", "10"},
                            {"keepalives_count", "3"}}) {
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      keys.emplace_back(key);
      values.emplace_back(value);
    }
  }
  keys.emplace_back("options");
  values.push_back(options);
  if (!has_application_name) {
    // A replication connection says which process holds the slot, so that another pgflow of
    // the same pipeline can say who runs it (PostgresSource::EnsureSlot).
    keys.emplace_back("application_name");
    values.emplace_back(kind == ConnectionKind::kReplication ? ReplicationApplicationName()
                                                             : std::string("pgflow"));
  }
  if (kind == ConnectionKind::kReplication) {
    keys.emplace_back("replication");
    values.emplace_back("database");
  }
  std::vector<const char*> k;
  std::vector<const char*> v;
  for (size_t i = 0; i < keys.size(); ++i) {
    k.push_back(keys[i].c_str());
    v.push_back(values[i].c_str());
  }
  k.push_back(nullptr);
  v.push_back(nullptr);
  PgConnPtr conn(PQconnectdbParams(k.data(), v.data(), 0));
  if (conn == nullptr)
    return absl::ResourceExhaustedError("out of memory connecting to PostgreSQL");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    std::string message(absl::StripTrailingAsciiWhitespace(PQerrorMessage(conn.get())));
    return absl::UnavailableError(
        absl::StrCat("cannot connect to PostgreSQL at ", Describe(conn.get()), ": ", message));
  }
  // Server notices ("schema already exists, skipping") are not the user's business: they go
  // to the debug log instead of libpq's default, stderr.
  PQsetNoticeProcessor(
      conn.get(),
      [](void*, const char* message) {
        LogDebug("server notice: %s", absl::StripTrailingAsciiWhitespace(message));
      },
      nullptr);
  return conn;
}

constexpr absl::string_view kSqlStatePayload = "pgflow.dev/sqlstate";

absl::Status ResultError(PGconn* conn, const PGresult* res, absl::string_view context) {
  std::string message;
  std::string sqlstate;
  if (res != nullptr) {
    const char* m = PQresultErrorMessage(res);
    message = m ? m : "";
    const char* s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    sqlstate = s ? s : "";
  }
  if (message.empty()) message = PQerrorMessage(conn);
  message = std::string(absl::StripTrailingAsciiWhitespace(message));
  if (message.empty()) message = "unknown error";
  std::string text = absl::StrCat(context, ": ", message);
  if (!sqlstate.empty()) absl::StrAppend(&text, " (SQLSTATE ", sqlstate, ")");
  if (sqlstate == "42501") {  // insufficient_privilege
    const char* user = PQuser(conn);
    absl::StrAppend(&text, ". Role ", user != nullptr ? user : "?", " on ", Describe(conn),
                    " lacks a privilege pgflow needs: docs/operations/source-database.md, "
                    "\"Privileges\", lists them; on a source, `pgflow init --grant-to ROLE` (run "
                    "as a superuser) grants them");
  }
  absl::Status status = PQstatus(conn) != CONNECTION_OK || IsConnectionClass(sqlstate)
                            ? absl::UnavailableError(text)
                            : absl::FailedPreconditionError(text);
  if (!sqlstate.empty()) status.SetPayload(kSqlStatePayload, absl::Cord(sqlstate));
  return status;
}

std::string SqlState(const absl::Status& status) {
  auto sqlstate = status.GetPayload(kSqlStatePayload);
  return sqlstate.has_value() ? std::string(*sqlstate) : std::string();
}

absl::StatusOr<std::string> WriteHeartbeat(PGconn* conn) {
  absl::StatusOr<PgResultPtr> res =
      Exec(conn, "SELECT pg_logical_emit_message(false, $1, '')::text", {kHeartbeatPrefix});
  if (!res.ok()) return res.status();
  return std::string(PQgetvalue(res->get(), 0, 0));
}

namespace {

// `res` when it is PGRES_COMMAND_OK or PGRES_TUPLES_OK, else the error, naming the query.
absl::StatusOr<PgResultPtr> Checked(PGconn* conn, PgResultPtr res, const std::string& sql) {
  ExecStatusType status = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    // The statement's start on one line, to place the error.
    std::string start;
    for (char c : sql.substr(0, 160)) {
      const bool space = c == ' ' || c == '\n' || c == '\t';
      if (space && (start.empty() || start.back() == ' ')) continue;
      start.push_back(space ? ' ' : c);
      if (start.size() >= 60) break;
    }
    return ResultError(conn, res.get(),
                       absl::StrCat("query failed [", start, start.size() >= 60 ? "...]" : "]"));
  }
  return res;
}

}  // namespace

absl::StatusOr<PgResultPtr> Exec(PGconn* conn, const std::string& sql,
                                 const std::vector<std::string>& params) {
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  // Without parameters, the simple protocol: it also runs several statements at once.
  PgResultPtr res(params.empty() ? PQexec(conn, sql.c_str())
                                 : PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()),
                                                nullptr, values.data(), nullptr, nullptr, 0));
  return Checked(conn, std::move(res), sql);
}

absl::StatusOr<PgResultPtr> ReceiveResult(PGconn* conn, const std::string& sql) {
  PgResultPtr first;
  while (PGresult* res = PQgetResult(conn)) {
    if (first == nullptr) {
      first.reset(res);
    } else {
      PQclear(res);
    }
  }
  return Checked(conn, std::move(first), sql);
}

CopyOutReader::CopyOutReader(PGconn* conn, int low_water, int max_wait_ms)
    : conn_(conn), fd_(PQsocket(conn)), max_wait_ms_(max_wait_ms) {
  lowered_ = ::setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &low_water, sizeof(low_water)) == 0;
}

void CopyOutReader::Release() {
  if (!lowered_) return;
  const int one = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
  lowered_ = false;
}

int CopyOutReader::Next(char** buf) {
  while (true) {
    const int n = PQgetCopyData(conn_, buf, /*async=*/1);
    if (n != 0) {
      dry_ = false;
      return n;
    }
    // libpq reads at most its buffer's worth (16 KiB) at a time: read again before waiting,
    // or the reader would wake for every 16 KiB of the backlog below the low-water mark.
    if (dry_) {
      pollfd pfd = {fd_, POLLIN, 0};
      ::poll(&pfd, 1, max_wait_ms_);
    }
    if (PQconsumeInput(conn_) == 0) return -2;
    dry_ = true;
  }
}

}  // namespace pgflow
