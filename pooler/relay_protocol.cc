// The relay's protocol logic (pooler/relay_protocol.h). Every function the relay runs per
// message is here, in one source, for the compiler to see them together.

#include "pooler/relay_protocol.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "pooler/pooler_internal.h"
#include "pooler/protocol.h"
#include "pooler/query_text.h"

namespace pgflow::pooler {
namespace {

// A server message the relay must read whole (ReadyForQuery, ParameterStatus, errors...) is
// at most this large; the rest streams through in pieces.
constexpr size_t kMaxInspectedServerMessage = 1 << 20;

}  // namespace

const SettingsMap& ClientSettings::Empty() {
  static const SettingsMap* const empty = new SettingsMap();
  return *empty;
}

SettingsMap& ClientSettings::MutableParams() {
  if (params_ == nullptr) {
    params_ = std::make_shared<SettingsMap>();
  } else if (params_.use_count() > 1) {
    params_ = std::make_shared<SettingsMap>(*params_);
  } else {
    // Held here alone: no other thread can take a reference to it (the pool's copy counts),
    // and the fence orders the reads of clients that held it before their release.
    std::atomic_thread_fence(std::memory_order_acquire);
  }
  return *params_;
}

void RelayProtocol::Start(Pool* pool, const ClientInfo* client) {
  pool_ = pool;
  client_ = client;
  mode_ = pool->settings().mode;
}

const std::string& RelayProtocol::database() const { return client_->database; }

void RelayProtocol::Detach(RelayState* relay) {
  if (!captured_) capture_.reset();
  capture_pass_ = false;
  if (relay != nullptr) {
    relay->described_parameters.clear();
    relay->sbuf.clear();
    relay->server_pass = 0;
    relay->to_server.clear();  // (empty unless the connection is closed)
    relay->server_sent = 0;
  }
  // (A transaction that may have written was under way: whether and when it committed is not
  // known.)
  if (routing_ != nullptr && wrote_) routing_->Committed(kPositionUnknown);
  if (relay != nullptr) relay->expect.clear();
  server_ = nullptr;
  copy_in_ = false;
  describing_ = 0;
  shape_wait_ = skipping_ = server_fatal_relayed_ = false;
  node_ = kPrimaryNode;
  unit_open_ = wrote_ = holding_ = false;
}

RouteChoice RelayProtocol::Route(const RelayState& r, size_t position) {
  if (routing_ == nullptr) return {};
  return routing_->Choose(UnitAt(r, position));
}

RouteUnit RelayProtocol::UnitAt(const RelayState& r, size_t position) const {
  RouteUnit unit;
  if (auto it = settings_.params().find("default_transaction_read_only");
      it != settings_.params().end()) {
    unit.read_only_session = it->second == "on" || it->second == "true" || it->second == "1";
  }
  const std::string_view buffer = std::string_view(r.cbuf).substr(position);
  // The statements the unit prepares itself, by name (Binds of them are judged by their Parse).
  std::vector<std::string_view> parsed_names;
  size_t pos = 0;
  for (bool ended = false; !ended;) {
    absl::StatusOr<std::optional<MessageHeader>> header =
        ReadMessageHeader(buffer.substr(pos), size_t{1} << 31);
    if (!header.ok() || !header->has_value() || buffer.size() - pos < (*header)->size) {
      unit.whole = false;  // (the rest has not come: the primary's)
      break;
    }
    const MessageHeader h = **header;
    const std::string_view body = buffer.substr(pos + 5, h.body_size());
    switch (h.type) {
      case 'Q':
        if (pos == 0) {
          unit.statements.push_back(QueryText('Q', body));
        } else {
          unit.whole = false;  // (a simple query after unsynced messages)
        }
        ended = true;
        break;
      case 'P': {
        const std::string_view name = body.substr(0, body.find('\0'));
        parsed_names.push_back(name);
        unit.statements.push_back(QueryText('P', body));
        break;
      }
      case 'B': {
        const size_t portal_end = body.find('\0');
        const std::string_view rest =
            portal_end == std::string_view::npos ? std::string_view() : body.substr(portal_end + 1);
        const std::string_view name = rest.substr(0, rest.find('\0'));
        if (std::find(parsed_names.begin(), parsed_names.end(), name) != parsed_names.end()) break;
        const Statement* statement = name.empty() ? nullptr : Prepared(name);
        if (statement == nullptr) {
          unit.whole = false;  // (prepared in an earlier unit and not known here)
          ended = true;
          break;
        }
        const std::string_view text = statement->parse_rest;
        unit.statements.push_back(text.substr(0, text.find('\0')));
        break;
      }
      case 'D':
      case 'E':
      case 'C':
      case 'H':
        break;
      case 'S':
        ended = true;
        break;
      default:  // FunctionCall, COPY data, ...: the primary's
        unit.whole = false;
        ended = true;
        break;
    }
    pos += h.size;
  }
  return unit;
}

bool RelayProtocol::Refuse(RelayState& r, size_t* position, std::string_view message) {
  const std::string_view buffer = std::string_view(r.cbuf).substr(*position);
  absl::StatusOr<std::optional<MessageHeader>> header = ReadMessageHeader(buffer, size_t{1} << 31);
  if (!header.ok() || !header->has_value() || (*header)->type != 'Q' ||
      buffer.size() < (*header)->size) {
    return false;
  }
  AppendError(&r.to_client, "ERROR", "22023", message);
  AppendReadyForQuery(&r.to_client, txn_status_);
  *position += (*header)->size;
  return true;
}

std::optional<RelayProtocol::CacheableUnit> RelayProtocol::CacheableAt(const RelayState& r,
                                                                       size_t position) const {
  if (txn_status_ != 'I' || unsynced_ > 0) return std::nullopt;
  const std::string_view buffer = std::string_view(r.cbuf).substr(position);
  CacheableUnit unit;
  // The extended protocol's messages, in the one order accepted: P? B D? E S.
  enum class Next : uint8_t { kParseOrBind, kBind, kDescribeOrExecute, kSync };
  Next next = Next::kParseOrBind;
  bool parsed = false;
  size_t bind_end = 0;  // where the messages after the Bind start
  for (size_t pos = 0;;) {
    absl::StatusOr<std::optional<MessageHeader>> header =
        ReadMessageHeader(buffer.substr(pos), size_t{1} << 31);
    if (!header.ok() || !header->has_value() || buffer.size() - pos < (*header)->size ||
        (*header)->size < 5) {
      return std::nullopt;  // (not whole yet: it runs)
    }
    const MessageHeader h = **header;
    const std::string_view body = buffer.substr(pos + 5, h.body_size());
    pos += h.size;
    auto cstring = [](std::string_view* in) {  // the next NUL-terminated string of *in
      const size_t end = in->find('\0');
      if (end == std::string_view::npos) return std::optional<std::string_view>();
      std::string_view out = in->substr(0, end);
      in->remove_prefix(end + 1);
      return std::optional<std::string_view>(out);
    };
    std::string_view rest = body;
    switch (h.type) {
      case 'Q':
        if (pos != h.size || body.empty()) return std::nullopt;
        unit.text = body.substr(0, body.size() - 1);
        unit.key = Cat("Q", body);
        unit.size = h.size;
        return unit;
      case 'P': {
        std::optional<std::string_view> name = cstring(&rest);
        if (next != Next::kParseOrBind || !name || !name->empty()) return std::nullopt;
        std::optional<std::string_view> text = cstring(&rest);
        if (!text) return std::nullopt;
        unit.text = *text;
        unit.key = Cat("P", body.substr(1));  // (its text and parameter types)
        parsed = true;
        next = Next::kBind;
        break;
      }
      case 'B': {
        std::optional<std::string_view> portal = cstring(&rest);
        std::optional<std::string_view> statement = cstring(&rest);
        if ((next != Next::kParseOrBind && next != Next::kBind) || !portal || !statement ||
            !portal->empty() || parsed != statement->empty()) {
          return std::nullopt;
        }
        if (!parsed) {  // (a statement the client prepared in an earlier unit)
          const Statement* prepared = Prepared(*statement);
          if (prepared == nullptr) return std::nullopt;
          const std::string_view parse_rest = prepared->parse_rest;
          unit.text = parse_rest.substr(0, parse_rest.find('\0'));
          unit.key = Cat("N", parse_rest);
        }
        unit.key.append(std::string_view("\0B", 2)).append(rest);
        bind_end = pos;
        next = Next::kDescribeOrExecute;
        break;
      }
      case 'D':
        // Of the unnamed portal, or of the unnamed statement this unit parsed.
        if (next != Next::kDescribeOrExecute || body.size() != 2 || body[1] != '\0' ||
            (body[0] != 'P' && !(body[0] == 'S' && parsed))) {
          return std::nullopt;
        }
        break;
      case 'E':
        // All the rows of the unnamed portal.
        if (next != Next::kDescribeOrExecute || body != std::string_view("\0\0\0\0\0", 5)) {
          return std::nullopt;
        }
        next = Next::kSync;
        break;
      case 'S':
        if (next != Next::kSync) return std::nullopt;
        unit.key.append(buffer.substr(bind_end, pos - bind_end));
        unit.size = pos;
        return unit;
      default:
        return std::nullopt;
    }
  }
}

void RelayProtocol::ServeCached(RelayState& r, size_t* position, size_t size,
                                std::string_view answer) {
  r.to_client.append(answer);
  AppendReadyForQuery(&r.to_client, 'I');
  *position += size;
}

bool RelayProtocol::CaptureMessage(char type, size_t size, std::string_view ready_body) {
  if (capture_ == nullptr || captured_) return false;
  switch (type) {
    case 'T':
    case 'D':
    case 'C':
    case 'I':
    case '1':
    case '2':
    case 't':
    case 'n':
      if (capture_->answer.size() + size <= capture_->limit) return true;
      break;
    case 'Z':
      if (ready_body == "I") {
        captured_ = true;
        return false;
      }
      break;
    default:
      break;
  }
  capture_.reset();  // (a notice, an error, COPY, too large: not kept)
  return false;
}

RelayProtocol::ClientStep RelayProtocol::RouteNextUnit(const RelayState& r, size_t position) {
  if (unsynced_ > 0 || copy_in_) return ClientStep::kMore;  // (inside a unit)
  if (node_ == kPrimaryNode && !r.expect.empty()) {
    // A client pipelining on the primary: it runs whatever comes; a unit not placed may write.
    unit_open_ = true;
    wrote_ = wants_positions();
    return ClientStep::kMore;
  }
  if (!r.expect.empty()) {
    holding_ = true;  // (until the server has answered: OnServerMessage)
    return ClientStep::kHold;
  }
  if (txn_status_ == 'I' && !pinned_ && Releasable(&r))
    return ClientStep::kDetach;  // (placed again)
  // Inside a transaction, or pinned: it goes on where it runs (a replica's is read-only).
  unit_open_ = true;
  wrote_ = wrote_ || (node_ == kPrimaryNode && wants_positions());
  return ClientStep::kMore;
}

bool RelayProtocol::Releasable(const RelayState* relay) const {
  const bool settled = relay == nullptr || (relay->expect.empty() && relay->client_pass == 0 &&
                                            relay->server_pass == 0);
  return mode_ != PoolMode::kSession && !pinned_ && settled && unsynced_ == 0 &&
         (relay == nullptr || relay->to_server.empty()) && txn_status_ == 'I';
}

void RelayProtocol::AddSettingsSync(std::string* out) {
  std::string& sql = *out;
  for (const auto& [name, value] : settings_.params()) {
    auto theirs = server_->params.find(name);
    if (theirs != server_->params.end() && theirs->second == value) continue;
    sql += Cat("SET ", QuoteIdentifier(name), " = ", QuoteLiteral(value), ";");
    server_->params[name] = value;
  }
  if (settings_.defaults != nullptr) {
    for (auto it = server_->params.begin(); it != server_->params.end();) {
      const std::string& name = it->first;
      if (settings_.params().contains(name) || IsReadOnlyParameter(name)) {
        ++it;
        continue;
      }
      auto standard = settings_.defaults->find(name);
      if (standard == settings_.defaults->end()) {
        // A setting another client's startup gave (not reported by PostgreSQL): undone.
        sql += Cat("RESET ", QuoteIdentifier(name), ";");
        server_->params.erase(it++);
        continue;
      }
      if (standard->second != it->second) {
        sql += Cat("SET ", QuoteIdentifier(name), " = ", QuoteLiteral(standard->second), ";");
        it->second = standard->second;
      }
      ++it;
    }
  }
  server_->settings_stamp = settings_.stamp;
}

void RelayProtocol::Rewrite(RelayState& r, char type, std::string_view message,
                            const PoolerConfig& config) {
  std::string_view body = message.substr(5);
  switch (type) {
    case 'P': {
      std::optional<ParseMessage> parse = SplitParse(body);
      if (!parse.has_value() || parse->name.empty()) {
        r.expect.push_back({Expect::kParse, {}});
        break;
      }
      if (!statements().contains(std::string(parse->name)) &&
          statements().size() >= config.max_client_prepared_statements) {
        // Refused (its unnamed stand-in fails), as a server at a limit would.
        r.to_server.append(FailingParse(
            "", Cat("pgflow pooler: this client has ", statements().size(),
                    " prepared statements, max_client_prepared_statements: close some (the "
                    "protocol's Close) before preparing more")));
        r.expect.push_back({Expect::kParse, {}});
        return;
      }
      std::string server_name = ServerStatementName(parse->rest);
      const uint64_t parsed =
          PrepareOnServer(r, server_name, parse->rest, Expect::kParse, config, parse->name);
      statements()[std::string(parse->name)] = {std::move(server_name), std::string(parse->rest),
                                                parsed, /*shape=*/0};
      return;
    }
    case 'B': {
      std::optional<BindMessage> bind = SplitBind(body);
      if (!bind.has_value() || bind->statement.empty()) break;
      const Statement* statement = Prepared(bind->statement);
      if (statement == nullptr) break;
      AppendBind(&r.to_server, bind->portal, statement->server_name, bind->rest);
      return;
    }
    case 'D': {
      std::optional<TargetMessage> target = SplitTarget(body);
      if (!target.has_value() || target->kind != 'S' || target->name.empty()) break;
      const Statement* statement = Prepared(target->name);
      if (statement == nullptr) break;
      AppendTarget(&r.to_server, 'D', 'S', statement->server_name);
      return;
    }
    case 'C': {
      std::optional<TargetMessage> target = SplitTarget(body);
      r.expect.push_back({Expect::kClose, {}});
      if (!target.has_value() || target->kind != 'S' || target->name.empty()) break;
      if (statements_ != nullptr) statements_->erase(std::string(target->name));
      // The server's statement may serve other clients: it stays. Closing a name that
      // does not exist answers CloseComplete, which the client expects.
      AppendTarget(&r.to_server, 'C', 'S', "pgflow_closed");
      return;
    }
    default:
      break;
  }
  r.to_server.append(message);
}

const RelayProtocol::Statement* RelayProtocol::Prepared(std::string_view name) const {
  if (statements_ == nullptr) return nullptr;
  auto it = statements_->find(std::string(name));
  return it == statements_->end() ? nullptr : &it->second;
}

RelayProtocol::StatementUse RelayProtocol::ResolveStatement(RelayState& r, std::string_view name,
                                                            const PoolerConfig& config) {
  const Statement* statement = Prepared(name);
  if (statement == nullptr || skipping_) return StatementUse::kReady;
  auto copy = server_->prepared.find(statement->server_name);
  if (copy == server_->prepared.end()) {
    PrepareOnServer(r, statement->server_name, statement->parse_rest, Expect::kParseSwallow, config,
                    {});
    return StatementUse::kWait;
  }
  const PreparedCopy& prepared = copy->second;
  if (prepared.stamp == statement->parsed) return StatementUse::kReady;  // the client's own
  if (prepared.shape == 0) {
    // Prepared earlier in this batch, its Describe not yet answered.
    return describing_ > 0 ? StatementUse::kWait : StatementUse::kReady;
  }
  if (statement->shape == 0 || prepared.shape == statement->shape) return StatementUse::kReady;
  if (prepared.stamp < statement->parsed) {
    // Prepared before the client's Parse, on a table's shape from before a change the client
    // has seen: replaced (the client's Parse must never fail 0A000, as it cannot directly).
    PrepareOnServer(r, statement->server_name, statement->parse_rest, Expect::kParseSwallow, config,
                    {});
    return StatementUse::kWait;
  }
  // Prepared after the client's Parse, and of another shape: the client's statement would
  // fail its revalidation directly, so it fails here (never run with a shape the client does
  // not expect: a driver reading binary results by the old types would misread them).
  return StatementUse::kStale;
}

uint64_t RelayProtocol::PrepareOnServer(RelayState& r, const std::string& name,
                                        std::string_view rest, Expect expected,
                                        const PoolerConfig& config,
                                        std::string_view client_statement) {
  if (server_->prepared.size() >= config.max_prepared_statements) {
    for (const auto& [old, copy] : server_->prepared) {
      AppendTarget(&r.to_server, 'C', 'S', old);
      r.expect.push_back({Expect::kCloseSwallow, {}});
    }
    server_->prepared.clear();
  }
  AppendTarget(&r.to_server, 'C', 'S', name);
  r.expect.push_back({Expect::kCloseSwallow, {}});
  AppendParse(&r.to_server, name, rest);
  r.expect.push_back({expected, name});
  AppendTarget(&r.to_server, 'D', 'S', name);
  r.expect.push_back({Expect::kDescribeSwallow, name, 0, std::string(client_statement)});
  ++describing_;
  const uint64_t stamp = pool_->NextPrepareStamp();
  server_->prepared[name] = PreparedCopy{.stamp = stamp, .shape = 0};
  return stamp;
}

void RelayProtocol::LearnShape(RelayState& r, char type, std::string_view body) {
  if (type == 't') {
    r.described_parameters.assign(body);
    return;
  }
  ExpectQueue& expect = r.expect;
  const Expectation answered = std::move(expect.front());
  expect.pop_front();
  --describing_;
  const uint64_t shape =
      StatementShape(r.described_parameters, type == 'T' ? body : std::string_view()).value_or(0);
  r.described_parameters.clear();
  auto copy = server_->prepared.find(answered.statement);
  if (copy != server_->prepared.end()) {
    copy->second.shape = shape;
    if (!answered.client_statement.empty() && statements_ != nullptr) {
      auto mine = statements_->find(answered.client_statement);
      if (mine != statements_->end() && mine->second.parsed == copy->second.stamp) {
        mine->second.shape = shape;
      }
    }
  }
  if (shape_wait_) {
    shape_wait_ = false;
    parsed_ = false;  // (the waiting message is relayed now)
  }
}

RelayProtocol::ClientStep RelayProtocol::ProcessClientBuffer(RelayState& relay,
                                                             const PoolerConfig& config,
                                                             size_t* position,
                                                             std::string* fatal_message) {
  need_ = 0;
  const ClientStep step = RelayClientMessages(relay, config, position, fatal_message);
  if (step == ClientStep::kMore) parsed_ = true;
  if (step == ClientStep::kWait) shape_wait_ = true;  // (LearnShape or DropUntilSync ends it)
  return step;
}

RelayProtocol::ClientStep RelayProtocol::RelayClientMessages(RelayState& r,
                                                             const PoolerConfig& config,
                                                             size_t* position,
                                                             std::string* fatal_message) {
  size_t& pos = *position;
  while (pos < r.cbuf.size()) {
    if (r.client_pass > 0) {
      size_t n = std::min(r.client_pass, r.cbuf.size() - pos);
      if (!client_drop_) r.to_server.append(r.cbuf, pos, n);
      pos += n;
      r.client_pass -= n;
      continue;
    }
    absl::StatusOr<std::optional<MessageHeader>> header =
        ReadMessageHeader(std::string_view(r.cbuf).substr(pos), config.max_message_size);
    if (!header.ok()) {
      if (server_ == nullptr) *fatal_message = std::string(Sv(header.status().message()));
      return ClientStep::kFatal;
    }
    if (!header->has_value()) return ClientStep::kMore;
    const MessageHeader h = **header;
    if (h.type == 'X') return ClientStep::kLeave;  // Terminate
    if (drop_until_sync_) {
      // The rest of a query cancelled while it waited for a server connection
      // (CancelWaiting): dropped up to its end, which gets the ReadyForQuery its error needs.
      const size_t n = std::min(h.size, r.cbuf.size() - pos);
      pos += n;
      r.client_pass = h.size - n;
      client_drop_ = true;
      if (h.type == 'Q' || h.type == 'S' || h.type == 'F') {
        AppendReadyForQuery(&r.to_client, 'I');
        drop_until_sync_ = false;
      }
      continue;
    }
    if (server_ == nullptr) return ClientStep::kAttach;  // (the routing seam: see the header)
    if (!txn_timed_) {  // the first message of a transaction: SHOW STATS's total_xact_time
      txn_began_ = std::chrono::steady_clock::now();
      txn_timed_ = true;
    }
    if (routing_ != nullptr && !unit_open_) {
      const ClientStep step = RouteNextUnit(r, pos);
      if (step != ClientStep::kMore) return step;
    }
    bool rewrite = mode_ != PoolMode::kSession &&
                   (h.type == 'P' || h.type == 'B' || h.type == 'D' || h.type == 'C');
    if (rewrite && r.cbuf.size() - pos < h.size) {
      need_ = h.size;  // read whole (Rewrite), however large (max_message_size)
      return ClientStep::kMore;
    }
    // The query text, or the start of it that has come (a Parse is whole here: it is
    // rewritten).
    const std::string_view text =
        mode_ != PoolMode::kSession && (h.type == 'Q' || h.type == 'P')
            ? QueryText(h.type, std::string_view(r.cbuf).substr(pos + 5, h.size - 5))
            : std::string_view();
    if (!text.empty() && r.cbuf.size() - pos >= h.size && DeallocatesAll(text)) {
      // The client's DEALLOCATE ALL or DISCARD ALL: its statements named before it are
      // gone (the connection's list is cleared by the answer's tag, however sent).
      statements_.reset();
    }
    if (rewrite && (h.type == 'B' || h.type == 'D') && statements_ != nullptr &&
        !statements_->empty()) {
      const StatementUse use =
          ResolveNamed(r, h.type, std::string_view(r.cbuf).substr(pos + 5, h.size - 5), config);
      if (use == StatementUse::kWait) return ClientStep::kWait;
      if (use == StatementUse::kStale) {
        pos += h.size;
        if (r.to_server.size() >= kFlushAt) return ClientStep::kFlush;
        continue;
      }
    }
    if (routing_ != nullptr && !changed_settings_ && !text.empty()) {
      changed_settings_ = ChangesSettings(text);
    }
    std::string refused;  // the message sent instead of one refused
    if (!pinned_ && !text.empty() && TakesSessionState(text)) {
      // (A query larger than what came so far is judged by its start and, if refused, its
      // rest dropped.)
      refused = PinOrRefuse(h.type, std::string_view(r.cbuf).substr(pos + 5));
    }
    Expecting(r, h.type, rewrite);
    if (!refused.empty() && h.type == 'Q') {
      // The server runs a statement that fails as the refused one should: its
      // transaction state stays the server's own.
      r.to_server.append(refused);
      size_t n = std::min(h.size, r.cbuf.size() - pos);
      pos += n;
      r.client_pass = h.size - n;
      client_drop_ = r.client_pass > 0;
    } else if (rewrite) {
      Rewrite(r, h.type,
              refused.empty() ? std::string_view(r.cbuf).substr(pos, h.size)
                              : std::string_view(refused),
              config);
      pos += h.size;
    } else {
      size_t n = std::min(h.size, r.cbuf.size() - pos);
      r.to_server.append(r.cbuf, pos, n);
      pos += n;
      r.client_pass = h.size - n;
      client_drop_ = false;
    }
    if (r.to_server.size() >= kFlushAt) return ClientStep::kFlush;
  }
  return ClientStep::kMore;
}

RelayProtocol::StatementUse RelayProtocol::ResolveNamed(RelayState& r, char type,
                                                        std::string_view body,
                                                        const PoolerConfig& config) {
  std::optional<std::string_view> name;
  if (type == 'B') {
    if (std::optional<BindMessage> bind = SplitBind(body)) name = bind->statement;
  } else if (std::optional<TargetMessage> target = SplitTarget(body);
             target.has_value() && target->kind == 'S') {
    name = target->name;
  }
  if (!name.has_value() || name->empty()) return StatementUse::kReady;
  const StatementUse use = ResolveStatement(r, *name, config);
  if (use == StatementUse::kWait) {
    // (The server answers an unsynced Describe only when asked to send what it holds.)
    AppendMessage(&r.to_server, 'H', {});
  } else if (use == StatementUse::kStale) {
    // A statement fails on the server in its place, so that the server skips the rest up
    // to the Sync (and aborts a transaction) as for PostgreSQL's own error, which the
    // client is told instead. The Close before it is answered only if nothing earlier in
    // the batch failed: the error after it is then this one.
    AppendTarget(&r.to_server, 'C', 'S', "pgflow_closed");
    r.expect.push_back({Expect::kCloseSwallow, {}});
    r.to_server.append(FailingParse("", "pgflow pooler: a statement changed shape"));
    r.expect.push_back({Expect::kErrorReplace, {}});
    ++unsynced_;
  }
  return use;
}

std::string RelayProtocol::PinOrRefuse(char type, std::string_view from_body) {
  if (pool_->settings().session_state != SessionStatePolicy::kPin) {
    return RefusedSessionState(type, from_body);
  }
  pinned_ = true;
  LogInfo(
      "pooler: client %d (%s@%s) keeps its server connection: it took session "
      "state (LISTEN or an advisory lock)",
      client_->id, client_->user, client_->database);
  return {};
}

void RelayProtocol::Expecting(RelayState& r, char type, bool rewrite) {
  switch (type) {
    case 'Q':
    case 'S':
    case 'F':
      // PostgreSQL ignores a Sync that arrives while it copies in.
      if (copy_in_ && type == 'S') break;
      if (type == 'S') skipping_ = false;
      r.expect.push_back({Expect::kSync, {}, type});
      unsynced_ = 0;
      unit_open_ = false;
      break;
    case 'c':
    case 'f':
      copy_in_ = false;  // CopyDone, CopyFail
      break;
    case 'P':
      if (!rewrite) r.expect.push_back({Expect::kParse, {}});
      ++unsynced_;
      break;
    case 'C':
      if (!rewrite) r.expect.push_back({Expect::kClose, {}});
      ++unsynced_;
      break;
    case 'H':
      if (!copy_in_) ++unsynced_;  // ignored during copy-in, as Sync
      break;
    case 'B':
    case 'D':
    case 'E':
      ++unsynced_;
      break;
    default:
      break;
  }
}

void RelayProtocol::DropUntilSync(RelayState& r) {
  ExpectQueue& expect = r.expect;
  while (!expect.empty() && expect.front().kind != Expect::kSync &&
         expect.front().kind != Expect::kSyncSwallow) {
    const Expectation& dropped = expect.front();
    if (!dropped.statement.empty() &&
        (dropped.kind == Expect::kParse || dropped.kind == Expect::kParseSwallow)) {
      server_->prepared.erase(dropped.statement);
    }
    if (dropped.kind == Expect::kDescribeSwallow) {
      --describing_;
      if (shape_wait_) {
        // The waiting message comes before the client's next Sync: the server skips it.
        shape_wait_ = false;
        skipping_ = true;
        parsed_ = false;
      }
    }
    expect.pop_front();
  }
}

bool RelayProtocol::Answered(RelayState& r, Expect pass, Expect swallow, bool swallowing) {
  ExpectQueue& expect = r.expect;
  if (!expect.empty() && (expect.front().kind == pass || expect.front().kind == swallow)) {
    const bool forward = expect.front().kind == pass;
    expect.pop_front();
    return forward;
  }
  return !swallowing;
}

bool RelayProtocol::OnServerMessage(RelayState& r, char type, std::string_view body) {
  const bool swallowing = !r.expect.empty() && r.expect.front().kind == Expect::kSyncSwallow;
  switch (type) {
    case 'Z': {
      DropUntilSync(r);
      bool forward = true;
      if (!r.expect.empty()) {
        forward = r.expect.front().kind == Expect::kSync;
        r.expect.pop_front();
      }
      txn_status_ = body.empty() ? 'I' : body[0];
      if (forward) {
        pool_->stats().queries.fetch_add(1, std::memory_order_relaxed);
        if (txn_status_ == 'I') {
          pool_->stats().transactions.fetch_add(1, std::memory_order_relaxed);
          if (txn_timed_) {
            txn_timed_ = false;
            pool_->stats().xact_us.fetch_add(
                std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - txn_began_)
                    .count(),
                std::memory_order_relaxed);
          }
        }
        if (mode_ == PoolMode::kStatement && txn_status_ != 'I') statement_violation_ = true;
        if (wrote_ && txn_status_ == 'I' && node_ == kPrimaryNode) {
          // The transaction ended: any position of the primary read from now on is past its
          // commit. (A pipelining client's later units may write too: wrote_ stays until
          // nothing is under way.)
          routing_->Wrote();
          wrote_ = !(r.expect.empty() && unsynced_ == 0 && r.client_pass == 0 && !copy_in_ &&
                     r.to_server.empty());
        }
      }
      if (holding_ && r.expect.empty()) {
        holding_ = false;  // (the unit that waited goes on)
        parsed_ = false;
      }
      return forward;
    }
    case '1':  // ParseComplete
      return Answered(r, Expect::kParse, Expect::kParseSwallow, swallowing);
    case '3':  // CloseComplete
      return Answered(r, Expect::kClose, Expect::kCloseSwallow, swallowing);
    case 'E':
      if (swallowing) {
        ErrorFields error = ParseErrorFields(body);
        LogWarning("pooler: database %s: setting a client's parameters failed: %s", database(),
                   error.message);
        return false;
      }
      pool_->stats().errors.fetch_add(1, std::memory_order_relaxed);  // the tenant's errors
      if (std::optional<bool> relayed = OnServerFatal(r, body)) return *relayed;
      if (!r.expect.empty() && r.expect.front().kind == Expect::kErrorReplace) {
        r.expect.pop_front();
        AppendCachedPlanChanged(&r.to_client);
        DropUntilSync(r);
        return false;
      }
      DropUntilSync(r);
      return true;
    case 't':  // ParameterDescription
    case 'T':  // RowDescription
    case 'n':  // NoData
      if (!r.expect.empty() && r.expect.front().kind == Expect::kDescribeSwallow) {
        LearnShape(r, type, body);
        return false;
      }
      return !swallowing;
    case 'C':
      // CommandComplete (inspected in transaction and statement modes).
      OnCommandComplete(body);
      return !swallowing;
    case 'G':
      // CopyInResponse. In the extended protocol the client's Sync after Execute arrives
      // during the copy and is ignored: the ReadyForQuery comes for the Sync after CopyDone.
      copy_in_ = true;
      if (!r.expect.empty() && r.expect.front().kind == Expect::kSync &&
          r.expect.front().origin == 'S') {
        r.expect.pop_front();
        unit_open_ = true;  // (the unit ends at the Sync after CopyDone)
      }
      return !swallowing;
    case 'S':
      OnParameterStatus(body, swallowing);
      return !swallowing;
    default:
      return !swallowing;
  }
}

std::optional<bool> RelayProtocol::OnServerFatal(RelayState& r, std::string_view body) {
  ErrorFields error = ParseErrorFields(body);
  if (error.severity != "FATAL" && error.severity != "PANIC") return std::nullopt;
  // The server is ending the connection. When it stops, crashes or fails over (SQLSTATE class
  // 57, operator intervention: 57P01 for a shutdown or its postmaster's death, 57P02 for a crash
  // of another process) under a client that can go on, the error is the pooler's to replace:
  // the connection's end tells the client that its statement's outcome is unknown, as an
  // ERROR it can go on after (Session::ServerLost). Otherwise the client sees the server's
  // FATAL, and its connection ends there.
  DropUntilSync(r);
  if (error.sqlstate.starts_with("57") && SurvivesLoss(r)) {
    LogDebug("pooler: database %s: the server ends a client's connection (%s: %s); the client "
             "goes on on another",
             database(), error.sqlstate, error.message);
    return false;
  }
  server_fatal_relayed_ = true;
  return true;
}

void RelayProtocol::OnCommandComplete(std::string_view body) {
  // DEALLOCATE ALL or DISCARD ALL, however the client sent it, dropped every statement on the
  // connection, other clients' too (they are prepared again on demand: each Parse goes after
  // a Close of its name, so forgetting too much is safe); DISCARD ALL also reset the
  // settings, to the values every client is shown at login (ParameterStatus messages follow
  // for the reported ones).
  std::string_view tag = body.substr(0, body.find('\0'));
  if (tag == "DEALLOCATE ALL" || tag == "DISCARD ALL") server_->prepared.clear();
  if (tag == "DISCARD ALL") {
    server_->ForgetSettings();
    if (settings_.defaults != nullptr) {
      server_->params.insert(settings_.defaults->begin(), settings_.defaults->end());
    }
  }
}

void RelayProtocol::OnParameterStatus(std::string_view body, bool swallowing) {
  BodyReader reader(body);
  std::optional<std::string_view> name = reader.CString();
  std::optional<std::string_view> value = reader.CString();
  if (!name.has_value() || !value.has_value()) return;
  std::string key = Lower(*name);
  auto [known, added] = server_->params.try_emplace(key);
  if (added || known->second != *value) {
    known->second = std::string(*value);
    server_->settings_stamp = 0;
  }
  if (!swallowing || settings_.params().contains(key)) {
    auto mine = settings_.params().find(key);
    if (mine == settings_.params().end() || mine->second != *value) {
      settings_.MutableParams()[key] = std::string(*value);
      settings_.stamp = pool_->SettingsStamp(settings_.params(), settings_.defaults.get());
    }
  }
}

bool RelayProtocol::Inspected(char type) const {
  return type == 'Z' || type == '1' || type == '3' || type == 'E' || type == 'S' || type == 'G' ||
         (type == 'C' && mode_ != PoolMode::kSession) ||
         (describing_ > 0 && (type == 't' || type == 'T' || type == 'n'));
}

RelayProtocol::ServerStep RelayProtocol::ProcessServerBuffer(RelayState& r,
                                                             std::string* fatal_message) {
  std::string& sbuf = r.sbuf;
  size_t pos = 0;
  bool protocol_failure = false;
  while (pos < sbuf.size() && r.to_client.size() < kFlushAt) {
    if (r.server_pass > 0) {
      size_t k = std::min(r.server_pass, sbuf.size() - pos);
      if (!server_pass_swallow_) r.to_client.append(sbuf, pos, k);
      if (capture_pass_ && capture_ != nullptr) capture_->answer.append(sbuf, pos, k);
      pos += k;
      r.server_pass -= k;
      continue;
    }
    absl::StatusOr<std::optional<MessageHeader>> header =
        ReadMessageHeader(std::string_view(sbuf).substr(pos), size_t{1} << 31);
    if (!header.ok()) {
      LogWarning("pooler: database %s: server sent a malformed message: %s", database(),
                 header.status().message());
      protocol_failure = true;
      break;
    }
    if (!header->has_value()) break;
    const MessageHeader h = **header;
    const bool swallowing = !r.expect.empty() && r.expect.front().kind == Expect::kSyncSwallow;
    bool large_error = h.type == 'E' && !swallowing && h.size > kMaxInspectedServerMessage;
    if (large_error) DropUntilSync(r);  // read in pieces; only its type matters here
    if (!Inspected(h.type) || large_error) {
      size_t k = std::min(h.size, sbuf.size() - pos);
      if (!swallowing) r.to_client.append(sbuf, pos, k);
      capture_pass_ = !swallowing && capture_ != nullptr && CaptureMessage(h.type, h.size, {});
      if (capture_pass_) capture_->answer.append(sbuf, pos, k);
      r.server_pass = h.size - k;
      server_pass_swallow_ = swallowing;
      pos += k;
    } else {
      if (h.size > kMaxInspectedServerMessage) {
        LogWarning("pooler: database %s: a server message of type '%c' is %d bytes", database(),
                   h.type, h.size);
        protocol_failure = true;
        break;
      }
      if (sbuf.size() - pos < h.size) break;
      const std::string_view body = std::string_view(sbuf).substr(pos + 5, h.body_size());
      if (OnServerMessage(r, h.type, body)) {
        r.to_client.append(sbuf, pos, h.size);
        if (capture_ != nullptr && !swallowing && CaptureMessage(h.type, h.size, body)) {
          capture_->answer.append(sbuf, pos, h.size);
        }
      }
      pos += h.size;
    }
  }
  sbuf.erase(0, pos);
  if (protocol_failure) {
    // The answer cannot be relayed whole: the client is told and closed, the connection too.
    *fatal_message = "the pooler could not relay the server's answer (see its log)";
    return ServerStep::kFatal;
  }
  if (statement_violation_) {
    *fatal_message = "transaction blocks are not allowed in statement pooling mode";
    return ServerStep::kFatal;
  }
  return pos > 0 ? ServerStep::kProgress : ServerStep::kNone;
}

}  // namespace pgflow::pooler
