// The gateway's listener and its HTTP side: POST /sql (pooler/gateway.h says how it works).

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <algorithm>
#include <charconv>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/postgres/conninfo.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "pooler/gateway.h"
#include "pooler/gateway_client.h"
#include "pooler/gateway_websocket.h"
#include "pooler/protocol.h"
#include "pooler/tls.h"

namespace pgflow::pooler {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using asio_support::Timer;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kHeaderLimit = 16 * 1024;
constexpr size_t kChunk = 64 * 1024;  // a streamed answer is written in pieces of about this

// --- JSON ------------------------------------------------------------------------------------

// Appends `text` as a JSON string. PostgreSQL sends UTF-8 (the gateway's sessions ask for it),
// so only quotes, backslashes and control characters need escaping.
void AppendJsonString(std::string* out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t run = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out->append(text.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        out->append("\\u00");
        out->push_back(kHex[c >> 4]);
        out->push_back(kHex[c & 15]);
    }
  }
  out->append(text.data() + run, text.size() - run);
  out->push_back('"');
}

// The error as the driver reads it (the names node-postgres gives PostgreSQL's fields).
std::string ErrorJson(const PgError& error) {
  static constexpr std::pair<char, const char*> kNames[] = {
      {'M', "message"}, {'C', "code"},   {'D', "detail"}, {'H', "hint"},
      {'P', "position"}, {'p', "internalPosition"}, {'q', "internalQuery"},
      {'W', "where"},   {'s', "schema"}, {'t', "table"},  {'c', "column"},
      {'d', "dataType"}, {'n', "constraint"}, {'F', "file"}, {'L', "line"}, {'R', "routine"}};
  std::string out = "{\"severity\":";
  std::string_view severity = error.Get('V');
  AppendJsonString(&out, severity.empty() ? error.Get('S') : severity);
  for (const auto& [code, name] : kNames) {
    std::string_view value = error.Get(code);
    if (value.empty() && code != 'M') continue;
    out += Cat(",\"", name, "\":");
    AppendJsonString(&out, value);
  }
  out += "}";
  return out;
}

// --- The request -----------------------------------------------------------------------------

struct Statement {
  std::string sql;
  std::vector<std::optional<std::string>> params;
  bool shown = true;  // false: the BEGIN and COMMIT around a batch
};

struct SqlRequest {
  std::vector<Statement> statements;
  bool batch = false;
  bool array_mode = false;
};

std::string_view Header(const GatewayRequest& request, std::string_view name) {
  auto it = request.find(beast::string_view(name.data(), name.size()));
  if (it == request.end()) return {};
  return std::string_view(it->value().data(), it->value().size());
}

// A parameter as its text: strings as they are, other JSON values as JSON (the driver sends
// arrays as PostgreSQL array literals, bytea as \x..., and JSON for objects).
std::optional<std::string> ParamText(const json& value) {
  if (value.is_null()) return std::nullopt;
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

absl::StatusOr<Statement> ReadStatement(const json& item) {
  if (!item.is_object() || !item.contains("query") || !item["query"].is_string()) {
    return absl::InvalidArgumentError("each query must be an object with a string \"query\"");
  }
  Statement statement{.sql = item["query"].get<std::string>(), .params = {}};
  if (auto params = item.find("params"); params != item.end() && !params->is_null()) {
    if (!params->is_array()) return absl::InvalidArgumentError("\"params\" must be an array");
    for (const json& value : *params) statement.params.push_back(ParamText(value));
  }
  if (statement.params.size() > 65535) {
    return absl::InvalidArgumentError("a query takes 65535 parameters at most");
  }
  return statement;
}

absl::StatusOr<std::string> BatchBegin(const GatewayRequest& request) {
  std::string begin = "BEGIN";
  std::string_view level = Header(request, "Neon-Batch-Isolation-Level");
  if (!level.empty()) {
    static constexpr std::pair<std::string_view, std::string_view> kLevels[] = {
        {"ReadUncommitted", "READ UNCOMMITTED"}, {"ReadCommitted", "READ COMMITTED"},
        {"RepeatableRead", "REPEATABLE READ"}, {"Serializable", "SERIALIZABLE"}};
    auto it = std::find_if(std::begin(kLevels), std::end(kLevels),
                           [&](const auto& l) { return l.first == level; });
    if (it == std::end(kLevels)) {
      return absl::InvalidArgumentError(
          Cat("Neon-Batch-Isolation-Level: ", level,
              " is none of ReadUncommitted, ReadCommitted, RepeatableRead, Serializable"));
    }
    begin += Cat(" ISOLATION LEVEL ", it->second);
  }
  if (Header(request, "Neon-Batch-Read-Only") == "true") begin += " READ ONLY";
  if (Header(request, "Neon-Batch-Deferrable") == "true") begin += " DEFERRABLE";
  return begin;
}

absl::StatusOr<SqlRequest> ReadSqlRequest(const GatewayRequest& request) {
  json body = json::parse(request.body(), nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) {
    return absl::InvalidArgumentError("the body must be a JSON object: {query, params} or "
                                      "{queries: [...]}");
  }
  SqlRequest out;
  out.array_mode = Header(request, "Neon-Array-Mode") == "true";
  if (auto queries = body.find("queries"); queries != body.end()) {
    if (!queries->is_array()) return absl::InvalidArgumentError("\"queries\" must be an array");
    absl::StatusOr<std::string> begin = BatchBegin(request);
    if (!begin.ok()) return begin.status();
    out.batch = true;
    out.statements.push_back({.sql = *begin, .params = {}, .shown = false});
    for (const json& item : *queries) {
      absl::StatusOr<Statement> statement = ReadStatement(item);
      if (!statement.ok()) return statement.status();
      out.statements.push_back(*std::move(statement));
    }
    out.statements.push_back({.sql = "COMMIT", .params = {}, .shown = false});
    return out;
  }
  absl::StatusOr<Statement> statement = ReadStatement(body);
  if (!statement.ok()) return statement.status();
  out.statements.push_back(*std::move(statement));
  return out;
}

// The login a Neon-Connection-String asks for (a libpq URL or key=value string): its user,
// password and database (a database of the pooler), and application_name.
absl::StatusOr<GatewayLogin> ReadLogin(std::string_view connection_string) {
  if (connection_string.empty()) {
    return absl::InvalidArgumentError("the Neon-Connection-String header is missing");
  }
  const std::string conninfo(connection_string);
  if (absl::Status s = CheckConninfo(conninfo); !s.ok()) {
    return absl::InvalidArgumentError(Cat("Neon-Connection-String: ", s.message()));
  }
  GatewayLogin login;
  const std::string user = ConninfoValue(conninfo, "user");
  if (user.empty()) return absl::InvalidArgumentError("Neon-Connection-String names no user");
  std::string database = ConninfoValue(conninfo, "dbname");
  login.parameters = {{"user", user}, {"database", database.empty() ? user : database},
                      {"client_encoding", "UTF8"}};
  if (std::string name = ConninfoValue(conninfo, "application_name"); !name.empty()) {
    login.parameters.emplace_back("application_name", name);
  }
  login.password = ConninfoValue(conninfo, "password");
  return login;
}

void AppendExtendedQuery(std::string* out, const Statement& statement) {
  std::string rest = statement.sql;
  rest.push_back('\0');
  AppendInt16(&rest, 0);  // no parameter types: the server infers them
  AppendParse(out, "", rest);
  rest.clear();
  AppendInt16(&rest, 0);  // every parameter in text
  AppendInt16(&rest, static_cast<int16_t>(statement.params.size()));
  for (const std::optional<std::string>& param : statement.params) {
    if (!param.has_value()) {
      AppendInt32(&rest, -1);
      continue;
    }
    AppendInt32(&rest, static_cast<int32_t>(param->size()));
    rest += *param;
  }
  AppendInt16(&rest, 0);  // every column in text
  AppendBind(out, "", "", rest);
  if (statement.shown) AppendTarget(out, 'D', 'P', "");
  AppendMessage(out, 'E', std::string_view("\0\0\0\0\0", 5));
}

// --- Answers ---------------------------------------------------------------------------------

std::string_view Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
  }
}

constexpr std::string_view kCors =
    "Access-Control-Allow-Origin: *\r\n"
    "Access-Control-Allow-Methods: POST, OPTIONS\r\n"
    "Access-Control-Allow-Headers: Authorization, Content-Type, Neon-Connection-String, "
    "Neon-Raw-Text-Output, Neon-Array-Mode, Neon-Pool-Opt-In, Neon-Batch-Isolation-Level, "
    "Neon-Batch-Read-Only, Neon-Batch-Deferrable\r\n";

// A response's head; `length` nullopt: chunked.
std::string Head(int status, bool keep_alive, std::optional<size_t> length,
                 std::string_view type = "application/json") {
  std::string out = Cat("HTTP/1.1 ", status, " ", Reason(status), "\r\nServer: pgflow\r\n", kCors);
  if (!type.empty()) out += Cat("Content-Type: ", type, "\r\n");
  out += length.has_value() ? Cat("Content-Length: ", *length, "\r\n")
                            : std::string("Transfer-Encoding: chunked\r\n");
  if (!keep_alive) out += "Connection: close\r\n";
  out += "\r\n";
  return out;
}

void AppendChunk(std::string* out, std::string_view data) {
  char size[16];
  auto [end, ec] = std::to_chars(size, size + sizeof size, data.size(), 16);
  out->append(size, end);
  out->append("\r\n");
  out->append(data);
  out->append("\r\n");
}

// The command and row count node-postgres reads from a CommandComplete tag ("INSERT 0 3":
// INSERT, 3; "CREATE TABLE": CREATE, null).
void AppendCommand(std::string* out, std::string_view tag) {
  size_t word = 0;
  while (word < tag.size() && std::isalpha(static_cast<unsigned char>(tag[word]))) ++word;
  out->append("\"command\":");
  AppendJsonString(out, tag.substr(0, word));
  std::string_view count;
  if (size_t space = tag.rfind(' '); space != std::string_view::npos && space >= word) {
    count = tag.substr(space + 1);
    if (count.empty() || !std::all_of(count.begin(), count.end(),
                                      [](char c) { return c >= '0' && c <= '9'; })) {
      count = {};
    }
  }
  out->append(",\"rowCount\":");
  out->append(count.empty() ? std::string_view("null") : count);
}

// --- A connection ----------------------------------------------------------------------------

template <class Stream>
struct Connection {
  Gateway* gateway;
  NetThread* thread;
  Stream stream;
  Tunnel tunnel;
  beast::flat_buffer buffer;
  std::unique_ptr<GatewayClient> client;  // logged in with `logged_in_as`
  std::string logged_in_as;
};

template <class Stream>
GatewayTcpStream& Lowest(Stream& stream) {
  return beast::get_lowest_layer(stream);
}

template <class Stream>
Task<bool> WriteAll(Connection<Stream>* c, std::string_view bytes) {
  Lowest(c->stream).expires_after(c->gateway->impl()->config()->http.idle_timeout);
  boost::system::error_code ec;
  co_await asio::async_write(c->stream, asio::buffer(bytes.data(), bytes.size()),
                             asio::redirect_error(kUseTask, ec));
  co_return !ec;
}

}  // namespace

void SendCancel(Pooler::Impl* impl, NetThread* thread, const Tunnel& tunnel, int32_t pid,
                int32_t key) {
  absl::StatusOr<Socket> socket = impl->OpenTunnel(thread, tunnel);
  if (!socket.ok()) return;
  std::string packet;
  AppendCancelRequest(&packet, pid, key);
  boost::system::error_code ec;
  socket->write_some(asio::buffer(packet), ec);  // 16 bytes into an empty socketpair
}

namespace {

// The answer to one /sql request, built as the session's messages come and streamed once
// longer than Gateway::kStreamAfter.
template <class Stream>
class Answer {
 public:
  Answer(Connection<Stream>* c, const SqlRequest& request, uint64_t limit)
      : c_(c), request_(request), limit_(limit) {}

  // Runs the request's statements; false when the connection must close (the answer was cut,
  // or the session is gone). *status gets the HTTP status sent.
  Task<bool> Run(bool keep_alive, int* status);

 private:
  Task<bool> Flush(bool last);
  void StartResult(std::string_view description);
  void AppendRow(std::string_view row);

  Connection<Stream>* c_;
  const SqlRequest& request_;
  const uint64_t limit_;
  std::string body_;
  bool streaming_ = false;
  uint64_t total_ = 0;
  std::vector<std::string> names_;  // the current result's column names, as JSON strings
  size_t rows_in_result_ = 0;
};

template <class Stream>
void Answer<Stream>::StartResult(std::string_view description) {
  names_.clear();
  rows_in_result_ = 0;
  body_ += "{\"fields\":[";
  BodyReader reader(description);
  const int count = reader.Int16().value_or(0);
  for (int i = 0; i < count; ++i) {
    std::string name;
    AppendJsonString(&name, reader.CString().value_or(""));
    const int32_t table = reader.Int32().value_or(0);
    const int16_t column = reader.Int16().value_or(0);
    const int32_t type = reader.Int32().value_or(0);
    const int16_t size = reader.Int16().value_or(0);
    const int32_t modifier = reader.Int32().value_or(0);
    reader.Int16();
    if (i > 0) body_ += ",";
    body_ += Cat("{\"name\":", name, ",\"tableID\":", table, ",\"columnID\":", column,
                 ",\"dataTypeID\":", type, ",\"dataTypeSize\":", size,
                 ",\"dataTypeModifier\":", modifier, ",\"format\":\"text\"}");
    names_.push_back(std::move(name));
  }
  body_ += "],\"rows\":[";
}

template <class Stream>
void Answer<Stream>::AppendRow(std::string_view row) {
  if (rows_in_result_++ > 0) body_.push_back(',');
  body_.push_back(request_.array_mode ? '[' : '{');
  const char* p = row.data();
  const char* end = p + row.size();
  if (row.size() < 2) return;
  const int count = ReadInt16(p);
  p += 2;
  for (int i = 0; i < count && p + 4 <= end; ++i) {
    if (i > 0) body_.push_back(',');
    if (!request_.array_mode && static_cast<size_t>(i) < names_.size()) {
      body_ += names_[i];
      body_.push_back(':');
    }
    const int32_t length = ReadInt32(p);
    p += 4;
    if (length < 0 || p + length > end) {
      body_ += "null";
      continue;
    }
    AppendJsonString(&body_, std::string_view(p, static_cast<size_t>(length)));
    p += length;
  }
  body_.push_back(request_.array_mode ? ']' : '}');
}

template <class Stream>
Task<bool> Answer<Stream>::Flush(bool last) {
  std::string out;
  if (!streaming_) {
    out = Head(200, true, std::nullopt);
    streaming_ = true;
  }
  if (!body_.empty()) AppendChunk(&out, body_);
  if (last) out += "0\r\n\r\n";
  body_.clear();
  co_return co_await WriteAll(c_, out);
}

template <class Stream>
Task<bool> Answer<Stream>::Run(bool keep_alive, int* status) {
  GatewayClient& client = *c_->client;
  std::string out;
  for (const Statement& statement : request_.statements) AppendExtendedQuery(&out, statement);
  AppendMessage(&out, 'S', "");
  // statement_timeout: the session's query is cancelled as a wire client's would be.
  const std::chrono::milliseconds timeout = c_->gateway->impl()->config()->http.statement_timeout;
  auto finished = std::make_shared<bool>(false);
  Timer timer(c_->thread->context.get_executor());
  if (timeout.count() > 0) {
    timer.expires_after(timeout);
    timer.async_wait([impl = c_->gateway->impl(), thread = c_->thread, tunnel = c_->tunnel,
                      pid = client.backend_pid(), key = client.backend_key(),
                      finished](const boost::system::error_code& ec) {
      if (!ec && !*finished) SendCancel(impl, thread, tunnel, pid, key);
    });
  }
  struct Done {
    std::shared_ptr<bool> finished;
    Timer* timer;
    ~Done() {
      *finished = true;
      timer->cancel();
    }
  } done{finished, &timer};

  if (!co_await client.Write(out)) {
    *status = 400;
    const std::string error = ErrorJson(PgError::Make("08006", "the pooler's session closed"));
    co_await WriteAll(c_, Head(400, false, error.size()) + error);
    co_return false;
  }
  if (request_.batch) body_ = "{\"results\":[";
  std::optional<PgError> error;
  size_t shown_results = 0;
  size_t statement = 0;  // the statement whose answer comes
  char transaction = 'I';
  while (true) {
    absl::StatusOr<BackendMessage> message = co_await client.Next();
    if (!message.ok()) {
      // (A session that sent its FATAL first keeps it as the error.)
      if (!error.has_value()) {
        error = PgError::Make("08006",
                              Cat("the pooler's session ended: ", message.status().message()));
      }
      break;
    }
    const std::string_view body = message->body;
    if (message->type == 'Z') {
      transaction = body.empty() ? 'I' : body[0];
      break;
    }
    if (error.has_value()) continue;  // (the rest is skipped by the server until Sync)
    switch (message->type) {
      case 'T':
        StartResult(body);
        break;
      case 'n':
        StartResult(std::string_view("\0\0", 2));
        break;
      case 'D':
        AppendRow(body);
        break;
      case 'C':
      case 'I': {
        const bool shown = statement < request_.statements.size() &&
                           request_.statements[statement].shown;
        ++statement;
        if (!shown) break;
        body_ += "],";
        AppendCommand(&body_, message->type == 'C' ? body.substr(0, body.find('\0')) : "");
        body_ += request_.array_mode ? ",\"rowAsArray\":true}" : ",\"rowAsArray\":false}";
        if (request_.batch && ++shown_results < request_.statements.size() - 2) body_ += ",";
        break;
      }
      case 'E':
        error = PgError::Parse(body);
        break;
      case 'G':
      case 'W': {
        // COPY ... FROM STDIN: nothing comes over HTTP to feed it. In copy-in the server
        // ignores the Sync sent, so the copy is failed and another Sync follows.
        std::string reason = "COPY FROM STDIN is not available over HTTP";
        reason.push_back('\0');
        std::string fail;
        AppendMessage(&fail, 'f', reason);
        AppendMessage(&fail, 'S', "");
        const bool written = co_await client.Write(fail);
        if (!written) error = PgError::Make("08006", "the pooler's session closed");
        break;
      }
      default:
        break;  // ParseComplete, BindComplete, notices, ParameterStatus, notifications
    }
    total_ += message->body.size();
    if (limit_ > 0 && total_ + body_.size() > limit_) {
      if (streaming_) co_return false;  // cut: the client sees the connection end
      error = PgError::Make("54000", Cat("the answer is larger than http.max_response_size (",
                                         limit_, " bytes)"));
      break;
    }
    if (body_.size() >= (streaming_ ? kChunk : Gateway::kStreamAfter)) {
      if (!co_await Flush(false)) co_return false;
    }
  }
  const bool session_lost = error.has_value() && (error->Get('C') == "08006" ||
                                                   error->Get('V') == "FATAL" ||
                                                   error->Get('C') == "54000");
  if (!session_lost && transaction != 'I') {
    // A batch that failed inside its transaction: rolled back before the login is reused
    // (the timer stopped first, so that it cancels nothing of it); a login that is not idle
    // after it is dropped.
    *finished = true;
    timer.cancel();
    std::string rollback;
    AppendQuery(&rollback, "ROLLBACK");
    bool clean = co_await client.Write(rollback);
    while (clean) {
      absl::StatusOr<BackendMessage> message = co_await client.Next();
      if (!message.ok()) clean = false;
      if (message.ok() && message->type == 'Z') {
        clean = message->body == "I";
        break;
      }
    }
    if (!clean) c_->client.reset();
  }
  if (session_lost) c_->client.reset();
  if (error.has_value()) {
    *status = 400;
    if (streaming_) co_return false;
    const std::string json = ErrorJson(*error);
    const bool keep = keep_alive && error->Get('C') != "54000";
    co_return co_await WriteAll(c_, Head(400, keep, json.size()) + json) && keep;
  }
  if (request_.batch) body_ += "]}";
  *status = 200;
  if (streaming_) co_return co_await Flush(true) && keep_alive;
  co_return co_await WriteAll(c_, Head(200, keep_alive, body_.size()) + body_) && keep_alive;
}

template <class Stream>
Task<bool> Reply(Connection<Stream>* c, int status, std::string_view message, bool keep_alive) {
  const std::string body = ErrorJson(PgError::Make(status == 503 ? "53300" : "08P01", message));
  co_return co_await WriteAll(c, Head(status, keep_alive, body.size()) + body) && keep_alive;
}

// One POST /sql: the login its connection string asks for (kept from the last request when the
// same), then the statements.
template <class Stream>
Task<bool> ServeSql(Connection<Stream>* c, const GatewayRequest& request, int* status) {
  const bool keep_alive = request.keep_alive();
  absl::StatusOr<SqlRequest> sql = ReadSqlRequest(request);
  std::string_view connection_string = Header(request, "Neon-Connection-String");
  // (Read only for a new login: the connection string is parsed by libpq.)
  const bool same_login = c->client != nullptr && c->logged_in_as == connection_string;
  absl::StatusOr<GatewayLogin> login =
      same_login ? absl::StatusOr<GatewayLogin>(GatewayLogin{}) : ReadLogin(connection_string);
  // (No range-for over temporaries around a co_await: g++ 12 destroys them twice.)
  const absl::Status wrong = !sql.ok() ? sql.status() : login.status();
  if (!wrong.ok()) {
    *status = 400;
    co_return co_await Reply(c, 400, std::string(wrong.message()), keep_alive);
  }
  if (!same_login) {
    c->client.reset();
    absl::StatusOr<Socket> socket = c->gateway->impl()->OpenTunnel(c->thread, c->tunnel);
    if (!socket.ok()) {
      *status = 503;
      co_return co_await Reply(c, 503, std::string(socket.status().message()), false);
    }
    auto client = std::make_unique<GatewayClient>(*std::move(socket));
    if (std::optional<PgError> refused = co_await client->Login(*login, nullptr)) {
      *status = 400;
      const std::string json = ErrorJson(*refused);
      co_return co_await WriteAll(c, Head(400, keep_alive, json.size()) + json) && keep_alive;
    }
    c->client = std::move(client);
    c->logged_in_as = std::string(connection_string);
  }
  Answer<Stream> answer(c, *sql, c->gateway->impl()->config()->http.max_response_size);
  co_return co_await answer.Run(keep_alive, status);
}

// After an answer to a request that was not read whole (too large, malformed): the sending
// side is shut, and what the client still sends is read and dropped for a while (at most
// kLingerBytes, for at most a second), so that closing does not reset the connection before
// the client has read the answer.
constexpr size_t kLingerBytes = 64ull << 20;

template <class Stream>
Task<void> Linger(Connection<Stream>* c) {
  boost::system::error_code ec;
  Lowest(c->stream).socket().shutdown(tcp::socket::shutdown_send, ec);
  Lowest(c->stream).expires_after(std::chrono::seconds(1));
  std::string sink(kChunk, '\0');
  size_t dropped = 0;
  while (!ec && dropped < kLingerBytes) {
    dropped += co_await Lowest(c->stream).async_read_some(asio::buffer(sink),
                                                          asio::redirect_error(kUseTask, ec));
  }
}

// (Coroutines here take their connection by pointer: see Session::Run.)
template <class Stream>
Task<void> Serve(Connection<Stream>* connection) {
  std::unique_ptr<Connection<Stream>> c(connection);
  struct Count {
    std::atomic<int>* n;
    ~Count() { n->fetch_sub(1); }
  } counted{&c->gateway->connections};  // counted in by Accept
  while (true) {
    std::shared_ptr<const PoolerConfig> config = c->gateway->impl()->config();
    http::request_parser<http::string_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(config->http.max_request_size);
    Lowest(c->stream).expires_after(config->http.idle_timeout);
    boost::system::error_code ec;
    co_await http::async_read(c->stream, c->buffer, parser, asio::redirect_error(kUseTask, ec));
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::eof ||
        ec == asio::error::connection_reset) {
      co_return;
    }
    const Clock::time_point start = Clock::now();
    int status = 400;
    if (ec) {
      status = ec == http::error::body_limit ? 413 : 400;
      // (Named, not a conditional of temporaries around a co_await: g++ 12 destroys those
      // twice.)
      std::string message = Cat("a malformed HTTP request: ", ec.message());
      if (status == 413) {
        message = Cat("the request is larger than http.max_request_size (",
                      config->http.max_request_size, " bytes)");
      }
      co_await Reply(c.get(), status, message, false);
      c->gateway->CountRequest(status, Clock::now() - start);
      co_await Linger(c.get());
      co_return;
    }
    const GatewayRequest& request = parser.get();
    if (beast::websocket::is_upgrade(request)) {
      c->gateway->CountWebSocket();
      Lowest(c->stream).expires_never();
      co_await BridgeWebSocket(c->gateway, c->thread, &c->stream, &request, &c->buffer,
                               c->tunnel);
      co_return;
    }
    std::string_view target(request.target().data(), request.target().size());
    target = target.substr(0, target.find('?'));
    bool keep = request.keep_alive();
    if (target != "/sql") {
      status = 404;
      keep = co_await Reply(c.get(), 404, Cat("no such path: ", target, " (POST /sql)"), keep);
    } else if (request.method() == http::verb::options) {
      status = 204;
      keep = co_await WriteAll(c.get(), Head(204, keep, 0, "")) && keep;
    } else if (request.method() != http::verb::post) {
      status = 405;
      keep = co_await Reply(c.get(), 405, "/sql takes POST", keep);
    } else {
      keep = co_await ServeSql(c.get(), request, &status);
    }
    c->gateway->CountRequest(status, Clock::now() - start);
    if (!keep) {
      Lowest(c->stream).socket().shutdown(tcp::socket::shutdown_send, ec);
      co_return;
    }
  }
}

Task<void> HandshakeThenServe(Connection<GatewayTlsStream>* connection) {
  std::unique_ptr<Connection<GatewayTlsStream>> c(connection);
  Lowest(c->stream).expires_after(c->gateway->impl()->config()->client_login_timeout);
  boost::system::error_code ec;
  co_await c->stream.async_handshake(asio::ssl::stream_base::server,
                                     asio::redirect_error(kUseTask, ec));
  if (ec) {
    c->gateway->connections.fetch_sub(1);
    co_return;
  }
  // (The sessions it opens decide on it, as on a wire client's: tls.mode, auth.method cert.)
  c->tunnel.certificate_user = VerifiedCommonName(c->stream.native_handle());
  co_await Serve(c.release());
}

}  // namespace

void ServeGatewayConnection(Gateway* gateway, NetThread* thread, Socket socket,
                            std::shared_ptr<asio::ssl::context> tls) {
  boost::system::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  Tunnel tunnel{.peer = socket.remote_endpoint(ec), .tls = tls != nullptr, .certificate_user = {}};
  if (tls == nullptr) {
    auto* c = new Connection<GatewayTcpStream>{
        gateway, thread, GatewayTcpStream(std::move(socket)), tunnel, {}, nullptr, {}};
    asio::co_spawn(thread->context, Serve(c), asio::detached);
    return;
  }
  auto* c = new Connection<GatewayTlsStream>{
      gateway, thread, GatewayTlsStream(GatewayTcpStream(std::move(socket)), *tls), tunnel, {},
      nullptr, {}};
  asio::co_spawn(thread->context, HandshakeThenServe(c), asio::detached);
}

absl::Status Gateway::Listen(const HttpOptions& http, const std::vector<NetThread*>& threads) {
  if (http.listen.empty()) return absl::OkStatus();
  if (!http.tls.cert.empty()) {
    TlsOptions options = http.tls;
    options.mode = TlsMode::kRequire;
    absl::StatusOr<std::shared_ptr<asio::ssl::context>> context = MakeServerTlsContext(options);
    if (!context.ok()) {  // (its message names tls.cert, tls.ca...: these are http's)
      return absl::Status(context.status().code(), Cat("http.", context.status().message()));
    }
    tls_ = *std::move(context);
  }
  absl::StatusOr<tcp::endpoint> endpoint = asio_support::ParseEndpoint(http.listen);
  if (!endpoint.ok()) return endpoint.status();
  for (NetThread* thread : threads) {
    auto listener = std::make_unique<Listener>();
    listener->thread = thread;
    listener->acceptor.emplace(thread->context.get_executor());
    tcp::endpoint at = *endpoint;
    if (port_ != 0) at.port(static_cast<unsigned short>(port_));
    boost::system::error_code ec = ListenShared(&*listener->acceptor, at);
    if (ec) {
      return absl::UnavailableError(
          Cat("pooler: cannot listen on ", http.listen, " (http.listen): ", ec.message()));
    }
    if (port_ == 0) port_ = listener->acceptor->local_endpoint(ec).port();
    listeners_.push_back(std::move(listener));
  }
  if (metrics_ != nullptr) {
    latency_ = metrics_->GetHistogram(
        "pgflow_pooler_http_request_seconds",
        "Time from a SQL-over-HTTP request read to its answer written.", {},
        {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  }
  LogInfo("pooler: SQL over HTTP%s and WebSocket on %s (port %d)", tls_ ? "S" : "", http.listen,
          port_);
  return absl::OkStatus();
}

void Gateway::Start() {
  for (auto& listener : listeners_) {
    asio::co_spawn(listener->thread->context, Accept(listener.get()), asio::detached);
  }
}

void Gateway::Close() {
  for (auto& listener : listeners_) {
    boost::system::error_code ec;
    if (listener->acceptor) listener->acceptor->close(ec);
  }
  listeners_.clear();
}

PGFLOW_ASIO_COROUTINE_BEGIN
Task<void> Gateway::Accept(Listener* listener) {
  while (true) {
    boost::system::error_code ec;
    Socket socket(listener->thread->context.get_executor());
    co_await listener->acceptor->async_accept(socket, asio::redirect_error(kUseTask, ec));
    if (ec == asio::error::operation_aborted || !listener->acceptor->is_open()) co_return;
    if (ec) {
      LogWarning("pooler: accepting an HTTP client failed: %s", ec.message());
      co_await PauseAfterFailedAccept(listener->thread);
      continue;
    }
    if (connections.load() >= impl_->config()->http.max_connections) {
      // Refused at once: one non-blocking write of the answer, then closed.
      const std::string body = ErrorJson(PgError::Make(
          "53300", "too many HTTP and WebSocket connections (http.max_connections)"));
      const std::string refusal = Head(503, false, body.size()) + body;
      socket.non_blocking(true, ec);
      if (tls_ == nullptr) socket.write_some(asio::buffer(refusal), ec);
      socket.close(ec);
      CountRequest(503, {});
      continue;
    }
    connections.fetch_add(1);
    ServeGatewayConnection(this, listener->thread, std::move(socket), tls_);
  }
}
PGFLOW_ASIO_COROUTINE_END

void Gateway::CountRequest(int status, std::chrono::steady_clock::duration took) {
  if (metrics_ == nullptr) return;
  Counter* counter = nullptr;
  {
    std::lock_guard<std::mutex> lock(counters_mu_);
    for (const auto& [code, c] : counters_) {
      if (code == status) counter = c;
    }
    if (counter == nullptr) {
      counter = metrics_->GetCounter("pgflow_pooler_http_requests_total",
                                     "SQL-over-HTTP requests answered, by HTTP status.",
                                     {{"status", std::to_string(status)}});
      counters_.emplace_back(status, counter);
    }
  }
  counter->Add(1);
  if (latency_ != nullptr) latency_->Observe(std::chrono::duration<double>(took).count());
}

void Gateway::CountWebSocket() {
  if (metrics_ == nullptr) return;
  metrics_
      ->GetCounter("pgflow_pooler_websocket_connections_total",
                   "WebSocket connections upgraded (the PostgreSQL protocol over WebSocket).", {})
      ->Add(1);
}

}  // namespace pgflow::pooler
