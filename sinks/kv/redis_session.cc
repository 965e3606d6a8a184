#include "sinks/kv/redis_session.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <span>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sinks/kv/resp.h"
#include "sinks/kv/session_util.h"

namespace pgflow {
namespace {

using kv_session::Absl;
using kv_session::Compact;
using kv_session::ParseInt;

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = absl::ascii_toupper(static_cast<unsigned char>(c));
  return out;
}

// A command name upper-cased into `buf`; names longer than any command give "" (unknown).
constexpr size_t kMaxCommandName = 16;
std::string_view UpperCommand(std::string_view name, char (&buf)[kMaxCommandName]) {
  if (name.size() > kMaxCommandName) return {};
  for (size_t i = 0; i < name.size(); ++i) {
    buf[i] = absl::ascii_toupper(static_cast<unsigned char>(name[i]));
  }
  return std::string_view(buf, name.size());
}

constexpr std::string_view kReadOnly =
    "READONLY pgflow's kv cache is read-only: write to PostgreSQL (with write_through: true, "
    "HSET and DEL write there)";

bool IsWriteCommand(std::string_view cmd) {
  static const absl::flat_hash_set<absl::string_view> kWrites = {
      "SET",      "SETEX",   "PSETEX",      "SETNX",     "MSET",    "MSETNX",   "DEL",
      "UNLINK",   "HSET",    "HMSET",       "HSETNX",    "HDEL",    "HINCRBY",  "HINCRBYFLOAT",
      "EXPIRE",   "PEXPIRE", "EXPIREAT",    "PEXPIREAT", "PERSIST", "INCR",     "DECR",
      "INCRBY",   "DECRBY",  "INCRBYFLOAT", "APPEND",    "RENAME",  "RENAMENX", "FLUSHDB",
      "FLUSHALL", "LPUSH",   "RPUSH",       "LPOP",      "RPOP",    "SADD",     "SREM",
      "ZADD",     "ZREM",    "GETDEL",      "GETSET",    "GETEX",   "SETRANGE", "COPY",
      "MOVE",     "RESTORE", "SWAPDB",      "PUBLISH"};
  return kWrites.contains(Absl(cmd));
}

}  // namespace

// The reads, which RedisSession::Read answers by their id.
enum class RedisCommand {
  kNone,  // not a read
  kGet,
  kMget,
  kHget,
  kHmget,
  kHgetall,
  kHexists,
  kHlen,
  kHkeys,
  kHvals,
  kHstrlen,
  kExists,
  kType,
  kTtl,
  kPttl,
  kDbsize,
  kScan,
  kKeys,
};

// One command of the table: what COMMAND shows of it, when it may run, and what runs it.
struct RedisSession::Command {
  enum Access : uint8_t {
    kAfterAuth = 0,
    kAnyTime = 1,     // before AUTH and in subscribed mode too (AUTH, HELLO, QUIT)
    kSubscribed = 2,  // also in RESP2's subscribed mode
    kRead = 4,        // a read of the tables: LOADING until they are in; `read` names it
    kWrite = 8,       // READONLY unless write_through
    kUnlisted = 16,   // not shown by COMMAND (a synonym)
  };
  const char* name;  // lower case, as COMMAND shows it
  int arity;         // Redis's: exactly `arity` words, or at least -arity when negative
  const char* flag;
  int first_key, last_key, step;
  uint8_t access;
  RedisCommand read;  // kRead: the read (RedisSession::Read answers it)
  // Otherwise: runs the command, once its arity is checked; may ask to close, wait or write.
  SessionStep (*run)(RedisSession& session, const Args& args, std::string* out);
};

namespace {

void AppendArityError(std::string_view cmd, std::string* out) {
  resp::AppendError(absl::StrCat("ERR wrong number of arguments for '",
                                 absl::AsciiStrToLower(Absl(cmd)), "' command"),
                    out);
}

bool ArityFits(int arity, size_t n) {
  return arity >= 0 ? n == static_cast<size_t>(arity) : n >= static_cast<size_t>(-arity);
}

// COMMAND's reply for one command: name, arity, flags, first key, last key, key step.
void AppendCommandInfo(const RedisSession::Command& c, std::string* out) {
  resp::AppendArrayHeader(6, out);
  resp::AppendBulk(c.name, out);
  resp::AppendInteger(c.arity, out);
  resp::AppendArrayHeader(1, out);
  resp::AppendSimple(c.flag, out);
  resp::AppendInteger(c.first_key, out);
  resp::AppendInteger(c.last_key, out);
  resp::AppendInteger(c.step, out);
}

}  // namespace

template <SessionStep (RedisSession::*handler)(const RedisSession::Args&, std::string*)>
SessionStep RedisSession::Call(RedisSession& session, const Args& args, std::string* out) {
  return (session.*handler)(args, out);
}

std::span<const RedisSession::Command> RedisSession::Commands() {
  using C = Command;
  using R = RedisSession;
  using Q = RedisCommand;
  static const Command kTable[] = {
      {"ping", -1, "fast", 0, 0, 0, C::kSubscribed, Q::kNone, Call<&R::Ping>},
      {"echo", 2, "fast", 0, 0, 0, C::kAfterAuth, Q::kNone,
       [](R&, const Args& args, std::string* out) {
         resp::AppendBulk(args[1], out);
         return SessionStep{};
       }},
      {"hello", -1, "fast", 0, 0, 0, C::kAnyTime, Q::kNone, Call<&R::Hello>},
      {"auth", -2, "fast", 0, 0, 0, C::kAnyTime, Q::kNone, Call<&R::Auth>},
      {"command", -1, "loading", 0, 0, 0, C::kAfterAuth, Q::kNone, Call<&R::DescribeCommands>},
      {"info", -1, "loading", 0, 0, 0, C::kAfterAuth, Q::kNone,
       [](R& s, const Args& args, std::string* out) {
         s.Info(args, out);
         return SessionStep{};
       }},
      {"select", 2, "fast", 0, 0, 0, C::kAfterAuth, Q::kNone, Call<&R::Select>},
      {"dbsize", 1, "readonly", 0, 0, 0, C::kRead, Q::kDbsize, nullptr},
      {"exists", -2, "readonly", 1, -1, 1, C::kRead, Q::kExists, nullptr},
      {"type", 2, "readonly", 1, 1, 1, C::kRead, Q::kType, nullptr},
      {"get", 2, "readonly", 1, 1, 1, C::kRead, Q::kGet, nullptr},
      {"mget", -2, "readonly", 1, -1, 1, C::kRead, Q::kMget, nullptr},
      {"hget", 3, "readonly", 1, 1, 1, C::kRead, Q::kHget, nullptr},
      {"hmget", -3, "readonly", 1, 1, 1, C::kRead, Q::kHmget, nullptr},
      {"hgetall", 2, "readonly", 1, 1, 1, C::kRead, Q::kHgetall, nullptr},
      {"hexists", 3, "readonly", 1, 1, 1, C::kRead, Q::kHexists, nullptr},
      {"hlen", 2, "readonly", 1, 1, 1, C::kRead, Q::kHlen, nullptr},
      {"hkeys", 2, "readonly", 1, 1, 1, C::kRead, Q::kHkeys, nullptr},
      {"hvals", 2, "readonly", 1, 1, 1, C::kRead, Q::kHvals, nullptr},
      {"hstrlen", 3, "readonly", 1, 1, 1, C::kRead, Q::kHstrlen, nullptr},
      {"scan", -2, "readonly", 0, 0, 0, C::kRead, Q::kScan, nullptr},
      {"keys", 2, "readonly", 0, 0, 0, C::kRead, Q::kKeys, nullptr},
      {"ttl", 2, "readonly", 1, 1, 1, C::kRead, Q::kTtl, nullptr},
      {"pttl", 2, "readonly", 1, 1, 1, C::kRead, Q::kPttl, nullptr},
      {"quit", -1, "fast", 0, 0, 0, C::kAnyTime, Q::kNone,
       [](R&, const Args&, std::string* out) {
         resp::AppendSimple("OK", out);
         SessionStep step;
         step.kind = SessionStep::kClose;
         return step;
       }},
      {"subscribe", -2, "pubsub", 0, 0, 0, C::kSubscribed, Q::kNone,
       [](R& s, const Args& args, std::string* out) {
         s.Subscribe(false, args, out);
         return SessionStep{};
       }},
      {"psubscribe", -2, "pubsub", 0, 0, 0, C::kSubscribed, Q::kNone,
       [](R& s, const Args& args, std::string* out) {
         s.Subscribe(true, args, out);
         return SessionStep{};
       }},
      {"unsubscribe", -1, "pubsub", 0, 0, 0, C::kSubscribed, Q::kNone,
       [](R& s, const Args& args, std::string* out) {
         s.Unsubscribe(false, args, out);
         return SessionStep{};
       }},
      {"punsubscribe", -1, "pubsub", 0, 0, 0, C::kSubscribed, Q::kNone,
       [](R& s, const Args& args, std::string* out) {
         s.Unsubscribe(true, args, out);
         return SessionStep{};
       }},
      {"waitlsn", 3, "readonly", 0, 0, 0, C::kAfterAuth, Q::kNone, Call<&R::WaitLsn>},
      {"client", -2, "admin", 0, 0, 0, C::kAfterAuth, Q::kNone, Call<&R::Client>},
      {"reset", 1, "fast", 0, 0, 0, C::kSubscribed, Q::kNone,
       [](R& s, const Args&, std::string* out) {
         s.resp3_ = false;
         s.channels_.clear();
         s.patterns_.clear();
         resp::AppendSimple("RESET", out);
         return SessionStep{};
       }},
      {"hset", -4, "write", 1, 1, 1, C::kWrite, Q::kNone, Call<&R::WriteHash>},
      {"del", -2, "write", 1, -1, 1, C::kWrite, Q::kNone, Call<&R::DeleteKeys>},
      {"hmset", -4, "write", 1, 1, 1, C::kWrite | C::kUnlisted, Q::kNone, Call<&R::WriteHash>},
      {"unlink", -2, "write", 1, -1, 1, C::kWrite | C::kUnlisted, Q::kNone, Call<&R::DeleteKeys>},
  };
  return kTable;
}

const RedisSession::Command* RedisSession::FindCommand(std::string_view upper) {
  static const auto* const kByName = [] {
    auto* by_name = new absl::flat_hash_map<std::string, const Command*>();
    for (const Command& c : Commands()) (*by_name)[Upper(c.name)] = &c;
    return by_name;
  }();
  auto it = kByName->find(Absl(upper));
  return it == kByName->end() ? nullptr : it->second;
}

SessionStep RedisSession::Feed(std::string_view data, std::string* out) {
  in_.append(data);
  return Run(out);
}

SessionStep RedisSession::Run(std::string* out) {
  more_ = false;
  resp::ParseLimits limits;
  limits.max_request_bytes = service_->config().max_request_bytes;
  std::vector<std::string_view>& args = args_;
  SessionStep step;
  while (in_pos_ < in_.size()) {
    size_t consumed = 0;
    std::string error;
    resp::ParseStatus status =
        resp::ParseCommand(std::string_view(in_).substr(in_pos_), limits, &args, &consumed, &error);
    if (status == resp::ParseStatus::kIncomplete) break;
    if (status == resp::ParseStatus::kError) {
      resp::AppendError(absl::StrCat("ERR Protocol error: ", error), out);
      step.kind = SessionStep::kClose;
      return step;
    }
    in_pos_ += consumed;
    if (args.empty()) continue;
    // The views point into in_, which stays put until Compact below.
    step = Execute(args, out);
    if (step.kind != SessionStep::kContinue) break;
    if (out->size() > service_->config().max_output_bytes) {
      more_ = in_pos_ < in_.size();  // let the writer drain, then go on
      break;
    }
  }
  Compact(&in_, &in_pos_);
  return step;
}

SessionStep RedisSession::FinishWrite(WriteResult result, std::string* out) {
  if (!result.lsn.ok()) {
    resp::AppendError(absl::StrCat("ERR ", result.lsn.status().message()), out);
    return Run(out);
  }
  pending_reply_ = write_reply_ == '+' ? "+OK\r\n" : absl::StrCat(":", result.count, "\r\n");
  SessionStep step;
  step.kind = SessionStep::kWait;
  step.lsn = *result.lsn;
  step.timeout = service_->config().max_wait;
  return step;
}

SessionStep RedisSession::Resume(bool reached, std::string* out) {
  if (!pending_reply_.empty()) {
    // A write-through command: written to PostgreSQL, waiting for it to come back.
    if (reached) {
      out->append(pending_reply_);
    } else {
      resp::AppendError(absl::StrCat("ERR written to PostgreSQL, but not yet back in the cache "
                                     "(applied: ",
                                     service_->store().applied().ToString(), ")"),
                        out);
    }
    pending_reply_.clear();
  } else if (reached) {
    resp::AppendSimple("OK", out);
  } else {
    resp::AppendError(
        absl::StrCat("TIMEOUT the cache has applied ", service_->store().applied().ToString(),
                     ", not yet the LSN asked for"),
        out);
  }
  return Run(out);
}

void RedisSession::AppendHash(const KvRow& row, std::string* out) const {
  resp::AppendMapHeader(row.field_count(), resp3_, out);
  row.AppendRespFields(out);
}

SessionStep RedisSession::Execute(const Args& args, std::string* out) {
  service_->commands.Add(1);
  char upper[kMaxCommandName];
  const std::string_view cmd = UpperCommand(args[0], upper);
  const Command* command = FindCommand(cmd);
  const uint8_t access =
      command != nullptr ? command->access : static_cast<uint8_t>(Command::kAfterAuth);
  if ((access & Command::kAnyTime) == 0) {
    if (!service_->config().password.empty() && !authed_) {
      resp::AppendError("NOAUTH Authentication required.", out);
      return {};
    }
    if (subscribed() && !resp3_ && (access & Command::kSubscribed) == 0) {
      resp::AppendError(absl::StrCat("ERR Can't execute '", absl::AsciiStrToLower(Absl(args[0])),
                                     "': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT / RESET "
                                     "are allowed in this context"),
                        out);
      return {};
    }
  }
  if (command == nullptr) {
    if (IsWriteCommand(cmd)) {
      resp::AppendError(kReadOnly, out);
    } else {
      std::string first;
      for (size_t i = 1; i < args.size() && i < 4; ++i) {
        absl::StrAppend(&first, "'", Absl(args[i]), "' ");
      }
      resp::AppendError(absl::StrCat("ERR unknown command '", Absl(args[0]),
                                     "', with args beginning with: ", first),
                        out);
    }
    return {};
  }
  if ((access & Command::kRead) != 0 && !service_->store().ready()) {
    resp::AppendError("LOADING pgflow is loading the tables into the cache", out);
    return {};
  }
  if ((access & Command::kWrite) != 0 && service_->write_through() == nullptr) {
    resp::AppendError(kReadOnly, out);
    return {};
  }
  if (!ArityFits(command->arity, args.size())) {
    AppendArityError(args[0], out);
    return {};
  }
  if ((access & Command::kRead) != 0) {
    Read(command->read, args, out);
    return {};
  }
  return command->run(*this, args, out);
}

bool RedisSession::CheckPassword(std::string_view password, std::string* out) {
  if (password != service_->config().password) {
    resp::AppendError("WRONGPASS invalid username-password pair or user is disabled.", out);
    return false;
  }
  authed_ = true;
  return true;
}

// AUTH [user] password
SessionStep RedisSession::Auth(const Args& args, std::string* out) {
  const size_t n = args.size();
  if (n > 3) {
    AppendArityError(args[0], out);
  } else if (service_->config().password.empty()) {
    resp::AppendError(
        "ERR AUTH <password> called without any password configured for the default user", out);
  } else if (CheckPassword(args[n - 1], out)) {
    resp::AppendSimple("OK", out);
  }
  return {};
}

// HELLO [protover [AUTH user password] [SETNAME name]]
SessionStep RedisSession::Hello(const Args& args, std::string* out) {
  const size_t n = args.size();
  const KvServiceConfig& config = service_->config();
  std::string_view password;
  bool has_password = false;
  int proto = resp3_ ? 3 : 2;
  size_t i = 1;
  if (n > 1) {
    int64_t v = 0;
    if (!ParseInt(args[1], &v) || (v != 2 && v != 3)) {
      resp::AppendError("NOPROTO unsupported protocol version", out);
      return {};
    }
    proto = static_cast<int>(v);
    i = 2;
  }
  for (; i < n; ++i) {
    std::string opt = Upper(args[i]);
    if (opt == "AUTH" && i + 2 < n) {
      password = args[i + 2];
      has_password = true;
      i += 2;
    } else if (opt == "SETNAME" && i + 1 < n) {
      ++i;
    } else {
      resp::AppendError(absl::StrCat("ERR Syntax error in HELLO option '", Absl(args[i]), "'"),
                        out);
      return {};
    }
  }
  // (A password given when none is configured is ignored.)
  if (has_password && !config.password.empty() && !CheckPassword(password, out)) return {};
  if (!config.password.empty() && !authed_) {
    resp::AppendError(
        "NOAUTH HELLO must be called with the client already authenticated, "
        "otherwise the HELLO <proto> AUTH <user> <pass> option can be used",
        out);
    return {};
  }
  resp3_ = proto == 3;
  resp::AppendMapHeader(7, resp3_, out);
  resp::AppendBulk("server", out);
  resp::AppendBulk("redis", out);
  resp::AppendBulk("version", out);
  resp::AppendBulk("7.0.0", out);
  resp::AppendBulk("proto", out);
  resp::AppendInteger(proto, out);
  resp::AppendBulk("id", out);
  resp::AppendInteger(static_cast<int64_t>(service_->total_connections.load()), out);
  resp::AppendBulk("mode", out);
  resp::AppendBulk("standalone", out);
  resp::AppendBulk("role", out);
  resp::AppendBulk("master", out);
  resp::AppendBulk("modules", out);
  resp::AppendArrayHeader(0, out);
  return {};
}

SessionStep RedisSession::Ping(const Args& args, std::string* out) {
  const size_t n = args.size();
  if (n > 2) {
    AppendArityError(args[0], out);
  } else if (subscribed() && !resp3_) {
    resp::AppendArrayHeader(2, out);
    resp::AppendBulk("pong", out);
    resp::AppendBulk(n == 2 ? args[1] : "", out);
  } else if (n == 2) {
    resp::AppendBulk(args[1], out);
  } else {
    resp::AppendSimple("PONG", out);
  }
  return {};
}

SessionStep RedisSession::Select(const Args& args, std::string* out) {
  int64_t db = -1;
  if (!ParseInt(args[1], &db)) {
    resp::AppendError("ERR value is not an integer or out of range", out);
  } else if (db != 0) {
    resp::AppendError("ERR DB index is out of range", out);
  } else {
    resp::AppendSimple("OK", out);
  }
  return {};
}

// COMMAND [COUNT | DOCS | INFO name ...]: the listed commands of the table.
SessionStep RedisSession::DescribeCommands(const Args& args, std::string* out) {
  const size_t n = args.size();
  std::vector<const Command*> listed;
  for (const Command& c : Commands()) {
    if ((c.access & Command::kUnlisted) == 0) listed.push_back(&c);
  }
  const std::string sub = n > 1 ? Upper(args[1]) : "";
  if (sub == "COUNT") {
    resp::AppendInteger(static_cast<int64_t>(listed.size()), out);
  } else if (sub == "DOCS") {
    resp::AppendMapHeader(0, resp3_, out);
  } else if (sub.empty()) {
    resp::AppendArrayHeader(listed.size(), out);
    for (const Command* c : listed) AppendCommandInfo(*c, out);
  } else if (sub == "INFO") {
    resp::AppendArrayHeader(n - 2, out);
    for (size_t i = 2; i < n; ++i) {
      const std::string name = absl::AsciiStrToLower(Absl(args[i]));
      auto found = std::find_if(listed.begin(), listed.end(),
                                [&](const Command* c) { return name == c->name; });
      if (found == listed.end()) {
        resp::AppendNull(resp3_, out);
      } else {
        AppendCommandInfo(**found, out);
      }
    }
  } else {
    resp::AppendError(absl::StrCat("ERR unknown subcommand '", Absl(args[1]), "'"), out);
  }
  return {};
}

SessionStep RedisSession::Client(const Args& args, std::string* out) {
  const std::string sub = Upper(args[1]);
  if (sub == "SETNAME" || sub == "SETINFO" || sub == "NO-EVICT" || sub == "NO-TOUCH") {
    resp::AppendSimple("OK", out);
  } else if (sub == "GETNAME") {
    resp::AppendNull(resp3_, out);
  } else if (sub == "ID") {
    resp::AppendInteger(static_cast<int64_t>(service_->total_connections.load()), out);
  } else {
    resp::AppendError(absl::StrCat("ERR unknown subcommand '", Absl(args[1]), "'"), out);
  }
  return {};
}

// WAITLSN lsn timeout_ms: OK once the cache has applied `lsn`, TIMEOUT after `timeout_ms`.
SessionStep RedisSession::WaitLsn(const Args& args, std::string* out) {
  std::optional<Lsn> lsn = Lsn::Parse(args[1]);
  int64_t timeout_ms = 0;
  if (!lsn) {
    resp::AppendError(
        "ERR WAITLSN: the LSN must be of the form X/X, as pg_current_wal_lsn() prints it", out);
    return {};
  }
  if (!ParseInt(args[2], &timeout_ms) || timeout_ms < 0) {
    resp::AppendError("ERR WAITLSN: the timeout must be a number of milliseconds", out);
    return {};
  }
  if (service_->store().applied() >= *lsn) {
    resp::AppendSimple("OK", out);
    return {};
  }
  SessionStep step;
  step.kind = SessionStep::kWait;
  step.lsn = *lsn;
  step.timeout = std::min(std::chrono::milliseconds(timeout_ms), service_->config().max_wait);
  return step;
}

// HSET / HMSET key field value [field value ...], with write_through.
SessionStep RedisSession::WriteHash(const Args& args, std::string* out) {
  const size_t n = args.size();
  if (n % 2 != 0) {
    AppendArityError(args[0], out);
    return {};
  }
  std::vector<std::pair<std::string, std::string>> values;
  for (size_t i = 2; i + 1 < n; i += 2) values.emplace_back(args[i], args[i + 1]);
  // Run by the connection off its network thread (a round trip to PostgreSQL), then answered
  // once the change is back in the cache, so the next read sees it.
  SessionStep step;
  step.kind = SessionStep::kWrite;
  step.write = [writer = service_->write_through(), key = std::string(args[1]),
                values = std::move(values)] {
    WriteResult r;
    r.lsn = writer->Upsert(key, values, &r.count);
    return r;
  };
  write_reply_ = absl::EqualsIgnoreCase(Absl(args[0]), "HSET") ? ':' : '+';
  return step;
}

// DEL / UNLINK key [key ...], with write_through.
SessionStep RedisSession::DeleteKeys(const Args& args, std::string*) {
  SessionStep step;
  step.kind = SessionStep::kWrite;
  step.write = [writer = service_->write_through(),
                keys = std::vector<std::string>(args.begin() + 1, args.end())] {
    WriteResult r;
    r.lsn = writer->Delete(keys, &r.count);
    return r;
  };
  write_reply_ = ':';
  return step;
}

void RedisSession::Read(RedisCommand id, const std::vector<std::string_view>& args,
                        std::string* out) {
  KvStore& store = service_->store();
  const std::string_view pub = service_->config().publication;
  const size_t n = args.size();
  // (Execute checked the arity.)
  switch (id) {
    case RedisCommand::kHget:
    case RedisCommand::kHexists:
    case RedisCommand::kHstrlen: {
      KvRowPtr row = store.Lookup(args[1], pub, &tables_);
      if (id == RedisCommand::kHget) {
        if (!row || !row->AppendFieldBulk(args[2], out)) resp::AppendNull(resp3_, out);
        return;
      }
      std::optional<KvColumn> c = row ? row->Find(args[2]) : std::nullopt;
      if (id == RedisCommand::kHexists) {
        resp::AppendInteger(c.has_value(), out);
      } else {
        resp::AppendInteger(c ? static_cast<int64_t>(c->text.size()) : 0, out);
      }
      return;
    }
    case RedisCommand::kGet: {
      KvRowPtr row = store.Lookup(args[1], pub, &tables_);
      if (row) {
        row->AppendRespJson(out);
      } else {
        resp::AppendNull(resp3_, out);
      }
      return;
    }
    case RedisCommand::kHgetall:
    case RedisCommand::kHlen:
    case RedisCommand::kHkeys:
    case RedisCommand::kHvals: {
      KvRowPtr row = store.Lookup(args[1], pub, &tables_);
      if (id == RedisCommand::kHlen) {
        resp::AppendInteger(row ? static_cast<int64_t>(row->field_count()) : 0, out);
      } else if (id == RedisCommand::kHgetall) {
        if (row) {
          AppendHash(*row, out);
        } else {
          resp::AppendMapHeader(0, resp3_, out);
        }
      } else {
        resp::AppendArrayHeader(row ? row->field_count() : 0, out);
        if (row) {
          row->ForEachColumn([&](const KvColumn& c) {
            if (!c.null) resp::AppendBulk(id == RedisCommand::kHkeys ? c.name : c.text, out);
          });
        }
      }
      return;
    }
    case RedisCommand::kMget: {
      store.LookupMany(std::span(args).subspan(1), pub, &tables_, &rows_);
      resp::AppendArrayHeader(rows_.size(), out);
      for (const KvRowPtr& row : rows_) {
        if (row) {
          row->AppendRespJson(out);
        } else {
          resp::AppendNull(resp3_, out);
        }
      }
      rows_.clear();
      return;
    }
    case RedisCommand::kHmget: {
      KvRowPtr row = store.Lookup(args[1], pub, &tables_);
      resp::AppendArrayHeader(n - 2, out);
      for (size_t i = 2; i < n; ++i) {
        if (!row || !row->AppendFieldBulk(args[i], out)) resp::AppendNull(resp3_, out);
      }
      return;
    }
    case RedisCommand::kExists: {
      store.LookupMany(std::span(args).subspan(1), pub, &tables_, &rows_);
      int64_t count = 0;
      for (const KvRowPtr& row : rows_) count += row != nullptr;
      rows_.clear();
      resp::AppendInteger(count, out);
      return;
    }
    case RedisCommand::kType:
      resp::AppendSimple(store.Lookup(args[1], pub, &tables_) ? "hash" : "none", out);
      return;
    case RedisCommand::kTtl:
    case RedisCommand::kPttl:
      resp::AppendInteger(store.Lookup(args[1], pub, &tables_) ? -1 : -2, out);
      return;
    case RedisCommand::kDbsize:
      resp::AppendInteger(static_cast<int64_t>(store.TotalRows()), out);
      return;
    case RedisCommand::kScan:
      Scan(args, out);
      return;
    case RedisCommand::kKeys:
      Keys(args[1], out);
      return;
    default:
      return;  // not a read: Execute answers it
  }
}

void RedisSession::Subscribe(bool pattern, const std::vector<std::string_view>& args,
                             std::string* out) {
  auto& set = pattern ? patterns_ : channels_;
  for (size_t i = 1; i < args.size(); ++i) {
    set.insert(std::string(args[i]));
    resp::AppendPushHeader(3, resp3_, out);
    resp::AppendBulk(pattern ? "psubscribe" : "subscribe", out);
    resp::AppendBulk(args[i], out);
    resp::AppendInteger(static_cast<int64_t>(channels_.size() + patterns_.size()), out);
  }
}

void RedisSession::Unsubscribe(bool pattern, const std::vector<std::string_view>& args,
                               std::string* out) {
  auto& set = pattern ? patterns_ : channels_;
  const char* kind = pattern ? "punsubscribe" : "unsubscribe";
  std::vector<std::string> names;
  if (args.size() > 1) {
    for (size_t i = 1; i < args.size(); ++i) names.emplace_back(args[i]);
  } else {
    names.assign(set.begin(), set.end());
  }
  if (names.empty()) {
    resp::AppendPushHeader(3, resp3_, out);
    resp::AppendBulk(kind, out);
    resp::AppendNull(resp3_, out);
    resp::AppendInteger(static_cast<int64_t>(channels_.size() + patterns_.size()), out);
    return;
  }
  for (const std::string& name : names) {
    set.erase(name);
    resp::AppendPushHeader(3, resp3_, out);
    resp::AppendBulk(kind, out);
    resp::AppendBulk(name, out);
    resp::AppendInteger(static_cast<int64_t>(channels_.size() + patterns_.size()), out);
  }
}

void RedisSession::Deliver(const std::vector<KeyEvent>& events, std::string* out) const {
  std::string channel;
  auto send = [&](const std::string& ch, std::string_view payload) {
    if (channels_.contains(ch)) {
      resp::AppendPushHeader(3, resp3_, out);
      resp::AppendBulk("message", out);
      resp::AppendBulk(ch, out);
      resp::AppendBulk(payload, out);
    }
    for (const std::string& p : patterns_) {
      if (!resp::GlobMatch(p, ch)) continue;
      resp::AppendPushHeader(4, resp3_, out);
      resp::AppendBulk("pmessage", out);
      resp::AppendBulk(p, out);
      resp::AppendBulk(ch, out);
      resp::AppendBulk(payload, out);
    }
  };
  for (const KeyEvent& e : events) {
    const char* what = e.deleted ? "del" : "hset";
    channel = absl::StrCat("__keyspace@0__:", e.key);
    send(channel, what);
    channel = absl::StrCat("__keyevent@0__:", what);
    send(channel, e.key);
  }
}

void RedisSession::Scan(const std::vector<std::string_view>& args, std::string* out) {
  KvStore& store = service_->store();
  std::string_view match;
  int64_t count = 10;
  bool other_type = false;
  for (size_t i = 2; i < args.size(); i += 2) {
    std::string opt = Upper(args[i]);
    if (i + 1 >= args.size()) {
      resp::AppendError("ERR syntax error", out);
      return;
    }
    if (opt == "MATCH") {
      match = args[i + 1];
    } else if (opt == "COUNT") {
      if (!ParseInt(args[i + 1], &count) || count < 1) {
        resp::AppendError("ERR value is not an integer or out of range", out);
        return;
      }
      count = std::min<int64_t>(count, 100000);
    } else if (opt == "TYPE") {
      other_type = absl::AsciiStrToLower(Absl(args[i + 1])) != "hash";
    } else {
      resp::AppendError("ERR syntax error", out);
      return;
    }
  }
  int64_t cursor_id = 0;
  if (args.size() < 2 || !ParseInt(args[1], &cursor_id) || cursor_id < 0) {
    resp::AppendError("ERR invalid cursor", out);
    return;
  }
  KvService::CursorState state;
  if (cursor_id != 0 && !service_->LoadCursor(static_cast<uint64_t>(cursor_id), &state)) {
    resp::AppendError("ERR invalid cursor (unknown, or forgotten: start again from 0)", out);
    return;
  }
  std::vector<std::shared_ptr<const KvTable>> tables = store.Tables();
  size_t t = 0;
  while (t < tables.size() && tables[t]->key_name() < state.table) ++t;
  if (t < tables.size() && tables[t]->key_name() != state.table) state.sort_key.clear();
  std::vector<std::string> keys;
  size_t budget = static_cast<size_t>(count);
  uint64_t next_cursor = 0;
  while (t < tables.size()) {
    std::string next;
    std::vector<KvRowPtr> rows = tables[t]->ScanFrom(state.sort_key, budget, &next);
    budget -= std::min(budget, rows.size());
    for (const KvRowPtr& row : rows) {
      std::string key = absl::StrCat(tables[t]->key_name(), ":", Absl(row->key()));
      if (!other_type && (match.empty() || resp::GlobMatch(match, key))) {
        keys.push_back(std::move(key));
      }
    }
    if (next.empty()) {
      ++t;
      state.sort_key.clear();
    } else {
      state.sort_key = std::move(next);
    }
    if (budget == 0) {
      if (t < tables.size()) {
        next_cursor = service_->SaveCursor({tables[t]->key_name(), state.sort_key});
      }
      break;
    }
  }
  resp::AppendArrayHeader(2, out);
  resp::AppendBulk(std::to_string(next_cursor), out);
  resp::AppendArrayHeader(keys.size(), out);
  for (const std::string& key : keys) resp::AppendBulk(key, out);
}

void RedisSession::Keys(std::string_view pattern, std::string* out) {
  std::vector<std::string> keys;
  size_t bytes = 0;
  const size_t limit = service_->config().max_output_bytes;
  for (const auto& table : service_->store().Tables()) {
    std::string from;
    do {
      std::string next;
      for (const KvRowPtr& row : table->ScanFrom(from, 1024, &next)) {
        std::string key = absl::StrCat(table->key_name(), ":", Absl(row->key()));
        if (!resp::GlobMatch(pattern, key)) continue;
        bytes += key.size() + 16;
        keys.push_back(std::move(key));
        if (bytes > limit) {
          resp::AppendError("ERR KEYS: the reply would exceed max_output_bytes; use SCAN", out);
          return;
        }
      }
      from = std::move(next);
    } while (!from.empty());
  }
  resp::AppendArrayHeader(keys.size(), out);
  for (const std::string& key : keys) resp::AppendBulk(key, out);
}

namespace {

// Redis's form of a byte count for humans: "812B", "1.50K", "87.70M", "2.00G".
std::string HumanBytes(uint64_t n) {
  const char* units[] = {"B", "K", "M", "G", "T", "P"};
  if (n < 1024) return absl::StrCat(n, "B");
  double v = static_cast<double>(n);
  size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(units)) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f%s", v, units[unit]);
  return buf;
}

// The process's resident memory in bytes (0 when /proc cannot tell).
uint64_t ResidentBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0, resident = 0;
  const int got = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return got == 2 ? resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
}

}  // namespace

void RedisSession::Info(const std::vector<std::string_view>& args, std::string* out) {
  KvStore& store = service_->store();
  // INFO [section ...]: none, "default", "all" and "everything" mean every section.
  auto wanted = [&](std::string_view section) {
    if (args.size() < 2) return true;
    for (size_t i = 1; i < args.size(); ++i) {
      const std::string arg = absl::AsciiStrToLower(Absl(args[i]));
      if (arg == section || arg == "default" || arg == "all" || arg == "everything") return true;
    }
    return false;
  };
  std::string text;
  auto section = [&](std::string_view name, std::string_view title, const std::string& body) {
    if (!wanted(name)) return;
    if (!text.empty()) text.append("\r\n");
    absl::StrAppend(&text, "# ", Absl(title), "\r\n", body);
  };
  auto uptime = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                                 service_->started);
  section("server", "Server",
          absl::StrCat("redis_version:7.0.0\r\npgflow_version:", service_->config().version,
                       "\r\nredis_mode:standalone\r\nprocess_id:", getpid(),
                       "\r\nuptime_in_seconds:", uptime.count(), "\r\n"));
  section("clients", "Clients",
          absl::StrCat("connected_clients:", service_->connections.load(), "\r\n"));
  if (wanted("memory")) {
    // used_memory is what the rows and their indexes hold (what max_memory limits); the
    // process's resident memory also holds its code, buffers and the allocator's slack.
    const uint64_t used = store.MemoryBytes();
    const uint64_t rss = ResidentBytes();
    const uint64_t max = store.max_memory();
    char ratio[32];
    std::snprintf(ratio, sizeof(ratio), "%.2f",
                  used == 0 ? 0.0 : static_cast<double>(rss) / static_cast<double>(used));
    section("memory", "Memory",
            absl::StrCat("used_memory:", used, "\r\nused_memory_human:", HumanBytes(used),
                         "\r\nused_memory_rss:", rss, "\r\nused_memory_rss_human:",
                         HumanBytes(rss), "\r\nmaxmemory:", max,
                         "\r\nmaxmemory_human:", HumanBytes(max),
                         "\r\nmaxmemory_policy:noeviction\r\nmem_fragmentation_ratio:", ratio,
                         "\r\npgflow_rows:", store.TotalRows(), "\r\n"));
  }
  section("persistence", "Persistence", absl::StrCat("loading:", store.ready() ? 0 : 1, "\r\n"));
  section("stats", "Stats",
          absl::StrCat("total_connections_received:", service_->total_connections.load(),
                       "\r\ntotal_commands_processed:", service_->commands.Load(), "\r\n"));
  section("replication", "Replication",
          absl::StrCat("role:master\r\npgflow_applied_lsn:", store.applied().ToString(), "\r\n"));
  section("keyspace", "Keyspace",
          absl::StrCat("db0:keys=", store.TotalRows(), ",expires=0,avg_ttl=0\r\n"));
  resp::AppendBulk(text, out);
}

}  // namespace pgflow
