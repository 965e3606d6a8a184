#include "sinks/kv/http_session.h"

#include <algorithm>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "schemas/ascii.h"
#include "schemas/json_text.h"
#include "sinks/kv/session_util.h"

namespace pgflow {

namespace {

using kv_session::Absl;
using kv_session::Compact;
using kv_session::ParseInt;

const char* StatusText(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Payload Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Error";
  }
}

bool PercentDecode(std::string_view in, bool plus_is_space, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = HexDigitValue(in[i + 1]);
      int lo = HexDigitValue(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out->push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out->push_back(' ');
    } else {
      out->push_back(c);
    }
  }
  return true;
}

std::string ErrorBody(std::string_view error) {
  std::string body = "{\"error\":";
  AppendJsonString(error, &body);
  body.push_back('}');
  return body;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return absl::EqualsIgnoreCase(Absl(a), Absl(b));
}

}  // namespace

void AppendHttpResponse(int status, std::string_view body, bool keep_alive,
                        std::string_view extra_headers, bool head, std::string* out) {
  absl::StrAppend(out, "HTTP/1.1 ", status, " ", StatusText(status), "\r\n");
  if (status != 304) {
    absl::StrAppend(out, "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n");
  }
  if (!keep_alive) out->append("Connection: close\r\n");
  out->append(extra_headers);
  out->append("\r\n");
  if (!head && status != 304) out->append(body);
}

SessionStep HttpSession::Feed(std::string_view data, std::string* out) {
  in_.append(data);
  return Run(out);
}

SessionStep HttpSession::Run(std::string* out) {
  more_ = false;
  const size_t max_head = std::min<size_t>(service_->config().max_request_bytes, 16 * 1024);
  SessionStep step;
  auto fail = [&](int status, std::string_view message) {
    AppendHttpResponse(status, ErrorBody(message), false, "", false, out);
    step.kind = SessionStep::kClose;
    return step;
  };
  while (in_pos_ < in_.size()) {
    size_t end = in_.find("\r\n\r\n", in_pos_);
    if (end == std::string::npos) {
      if (in_.size() - in_pos_ > max_head) return fail(431, "request head too large");
      break;
    }
    if (end - in_pos_ > max_head) return fail(431, "request head too large");
    std::string_view head(in_.data() + in_pos_, end - in_pos_);
    in_pos_ = end + 4;
    service_->commands.Add(1);

    size_t line_end = head.find("\r\n");
    std::string_view line = head.substr(0, line_end);
    size_t sp1 = line.find(' ');
    size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp1 == std::string_view::npos || sp2 == std::string_view::npos || sp1 == 0) {
      return fail(400, "malformed request line");
    }
    Request request;
    request.method = std::string(line.substr(0, sp1));
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = line.substr(sp2 + 1);
    if (version != "HTTP/1.1" && version != "HTTP/1.0")
      return fail(400, "unsupported HTTP version");
    if (target.empty() || target[0] != '/') return fail(400, "the target must be a path");
    request.keep_alive = version == "HTTP/1.1";
    size_t q = target.find('?');
    request.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) request.query = std::string(target.substr(q + 1));
    size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t eol = head.find("\r\n", pos);
      if (eol == std::string_view::npos) eol = head.size();
      std::string_view h = head.substr(pos, eol - pos);
      pos = eol + 2;
      size_t colon = h.find(':');
      if (colon == std::string_view::npos || colon == 0) return fail(400, "malformed header");
      std::string_view name = h.substr(0, colon);
      std::string_view value = h.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
        value.remove_prefix(1);
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
        value.remove_suffix(1);
      if (EqualsIgnoreCase(name, "content-length")) {
        if (value != "0") return fail(413, "request bodies are not accepted");
      } else if (EqualsIgnoreCase(name, "transfer-encoding")) {
        return fail(501, "request bodies are not accepted");
      } else if (EqualsIgnoreCase(name, "connection")) {
        if (EqualsIgnoreCase(value, "close")) request.keep_alive = false;
        if (EqualsIgnoreCase(value, "keep-alive")) request.keep_alive = true;
      } else if (EqualsIgnoreCase(name, "authorization")) {
        request.authorization = std::string(value);
      } else if (EqualsIgnoreCase(name, "if-none-match")) {
        request.if_none_match = std::string(value);
      }
    }
    step = Answer(request, out);
    if (step.kind == SessionStep::kWait) {
      waiting_ = std::move(request);
      break;
    }
    if (step.kind == SessionStep::kClose) break;
    if (out->size() > service_->config().max_output_bytes) {
      more_ = in_pos_ < in_.size();  // let the writer drain, then go on
      break;
    }
  }
  Compact(&in_, &in_pos_);
  return step;
}

SessionStep HttpSession::Resume(bool reached, std::string* out) {
  if (!reached) {
    SessionStep step;
    std::string body = ErrorBody(
        absl::StrCat("timed out waiting for the cache to apply the LSN asked for (min_lsn); "
                     "applied: ",
                     service_->store().applied().ToString()));
    AppendHttpResponse(504, body, waiting_.keep_alive, "", waiting_.method == "HEAD", out);
    if (!waiting_.keep_alive) {
      step.kind = SessionStep::kClose;
      return step;
    }
  } else {
    waiting_.query.clear();  // the wait is over: answer without min_lsn
    SessionStep step = Answer(waiting_, out);
    if (step.kind != SessionStep::kContinue) return step;
  }
  return Run(out);
}

SessionStep HttpSession::Answer(const Request& request, std::string* out) {
  SessionStep step;
  const bool head = request.method == "HEAD";
  const bool keep = request.keep_alive;
  if (!keep) step.kind = SessionStep::kClose;
  auto reply = [&](int status, std::string_view body, std::string_view headers = "") {
    AppendHttpResponse(status, body, keep, headers, head, out);
    return step;
  };
  if (request.method != "GET" && !head) {
    return reply(405, ErrorBody("only GET and HEAD: the cache is read-only"),
                 "Allow: GET, HEAD\r\n");
  }
  const std::string& token = service_->config().http_token;
  if (!token.empty() && request.authorization != absl::StrCat("Bearer ", token)) {
    return reply(401, ErrorBody("a bearer token is required"), "WWW-Authenticate: Bearer\r\n");
  }
  KvStore& store = service_->store();
  // Query parameters.
  int64_t limit = 100;
  std::string after;
  std::optional<Lsn> min_lsn;
  int64_t timeout_ms = 5000;
  std::string_view query = request.query;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = pair.find('=');
    std::string name, value;
    if (!PercentDecode(pair.substr(0, eq), true, &name) ||
        !PercentDecode(eq == std::string_view::npos ? "" : pair.substr(eq + 1), true, &value)) {
      return reply(400, ErrorBody("malformed percent-encoding in the query"));
    }
    if (name == "limit") {
      if (!ParseInt(value, &limit) || limit < 1 || limit > 10000) {
        return reply(400, ErrorBody("limit must be between 1 and 10000"));
      }
    } else if (name == "after") {
      after = value;
    } else if (name == "min_lsn") {
      min_lsn = Lsn::Parse(value);
      if (!min_lsn) return reply(400, ErrorBody("min_lsn must be an LSN of the form X/X"));
    } else if (name == "timeout_ms") {
      if (!ParseInt(value, &timeout_ms) || timeout_ms < 0) {
        return reply(400, ErrorBody("timeout_ms must be a number of milliseconds"));
      }
    } else {
      return reply(400, ErrorBody(absl::StrCat("unknown query parameter '", name,
                                               "' (known: limit, after, min_lsn, timeout_ms)")));
    }
  }
  // Path segments.
  std::vector<std::string> segments;
  std::string_view path = request.path;
  size_t start = 1;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string segment;
    if (!PercentDecode(path.substr(start, slash - start), false, &segment)) {
      return reply(400, ErrorBody("malformed percent-encoding in the path"));
    }
    if (!segment.empty() || slash < path.size()) segments.push_back(std::move(segment));
    start = slash + 1;
  }
  if (!store.ready()) {
    return reply(503, ErrorBody("loading the tables into the cache"), "Retry-After: 1\r\n");
  }
  if (min_lsn && store.applied() < *min_lsn) {
    step.kind = SessionStep::kWait;
    step.lsn = *min_lsn;
    step.timeout = std::min(std::chrono::milliseconds(timeout_ms), service_->config().max_wait);
    return step;
  }
  if (segments.empty()) {
    std::string body = "{\"tables\":[";
    bool first = true;
    for (const auto& table : store.Tables()) {
      if (!first) body.push_back(',');
      first = false;
      body.append("{\"name\":");
      AppendJsonString(table->key_name(), &body);
      body.append(",\"schema\":");
      AppendJsonString(table->schema(), &body);
      body.append(",\"table\":");
      AppendJsonString(table->name(), &body);
      absl::StrAppend(&body, ",\"rows\":", table->rows(), "}");
    }
    absl::StrAppend(&body, "],\"rows\":", store.TotalRows(), ",\"applied_lsn\":\"",
                    store.applied().ToString(),
                    "\",\"ready\":true,\"memory_bytes\":", store.MemoryBytes(),
                    ",\"max_memory\":", store.max_memory(), "}");
    return reply(200, body);
  }
  const KvTable* table = store.FindTable(segments[0], &tables_);
  if (table == nullptr) {
    return reply(404, ErrorBody(absl::StrCat("no table '", segments[0], "' in the cache")));
  }
  if (segments.size() == 1) {
    bool more = false;
    std::vector<KvRowPtr> rows = table->Page(after, static_cast<size_t>(limit), &more);
    std::string body = "{\"rows\":[";
    for (size_t i = 0; i < rows.size(); ++i) {
      if (i > 0) body.push_back(',');
      rows[i]->AppendJson(&body);
    }
    body.append("],\"next\":");
    if (more && !rows.empty()) {
      AppendJsonString(rows.back()->key(), &body);
    } else {
      body.append("null");
    }
    body.push_back('}');
    return reply(200, body);
  }
  std::string key;
  for (size_t i = 1; i < segments.size(); ++i) {
    if (i > 1) key.push_back(':');
    key += segments[i];
  }
  KvRowPtr row = table->Get(key);
  if (row == nullptr) {
    std::string body = "{\"error\":\"not found\",\"table\":";
    AppendJsonString(table->key_name(), &body);
    body.append(",\"key\":");
    AppendJsonString(key, &body);
    body.push_back('}');
    return reply(404, body);
  }
  std::string etag = absl::StrCat("\"", row->lsn().ToString(), "\"");
  std::string headers = absl::StrCat("ETag: ", etag, "\r\n");
  if (!request.if_none_match.empty() && request.if_none_match == etag) {
    return reply(304, "", headers);
  }
  body_.clear();
  row->AppendJson(&body_);
  return reply(200, body_, headers);
}

}  // namespace pgflow
