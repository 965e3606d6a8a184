#include "engine/config.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <concepts>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "yaml-cpp/depthguard.h"
#include "yaml-cpp/yaml.h"

namespace pgflow {
namespace {

constexpr size_t kMaxFileBytes = 16u << 20;
// Bound the structure walk: an alias can make a small file a huge (or cyclic) tree.
constexpr size_t kMaxNodes = 100000;
constexpr int kMaxDepth = 100;
constexpr size_t kMaxPipelineName = 48;
constexpr size_t kMaxPgName = 63;  // NAMEDATALEN - 1
constexpr uint64_t kMiB = 1ull << 20;

using std::chrono::milliseconds;

// This tree's abseil (Debian) has its own absl::string_view, which absl::StrCat and
// absl::StrJoin require; these take std::string_view and absl::string_view alike.
inline void AppendPiece(std::string* out, std::string_view piece) { out->append(piece); }
inline void AppendPiece(std::string* out, const std::string& piece) { out->append(piece); }
inline void AppendPiece(std::string* out, const char* piece) { out->append(piece); }
inline void AppendPiece(std::string* out, absl::string_view piece) {
  out->append(piece.data(), piece.size());
}
template <typename T>
requires std::integral<T>
void AppendPiece(std::string* out, T number) { out->append(std::to_string(number)); }

template <typename... Pieces>
std::string Cat(const Pieces&... pieces) {
  std::string out;
  (AppendPiece(&out, pieces), ...);
  return out;
}

std::string Join(const std::vector<std::string_view>& pieces, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (i > 0) out.append(separator);
    out.append(pieces[i]);
  }
  return out;
}

std::string_view StripLeadingSpace(std::string_view text) {
  while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  return text;
}

std::string_view StripTrailingSpace(std::string_view text) {
  while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Option tables.

constexpr OptionSpec kPipelineOptions[] = {
    {"pipeline", "string", true, "",
     "Pipeline name: [a-z0-9_]+, at most 48 characters. The replication slot and publication "
     "names derive from it."},
    {"source", "map", true, "",
     "Where changes come from, one of: {postgres: {...}} (a PostgreSQL database) or "
     "{kafka: {...}} (pgflow's events read back from Kafka)."},
    {"transforms", "list", false, "",
     "Transforms applied to every event, in order, each {<type>: {...}} (none exist yet)."},
    {"sinks", "map", true, "",
     "One or more sinks, each under a name of your choosing ([A-Za-z0-9_-]+): "
     "{<name>: {<type>: {...}, flush_interval: 200ms}}."},
    {"buffer", "map", false, "", "{queue_bytes: 64MiB}: bound of each sink's queue."},
    {"admin", "map", false, "",
     "{listen: host:port}: HTTP endpoint for /metrics /healthz /readyz /status (not available "
     "in this build yet)."},
};

constexpr OptionSpec kPostgresSourceSpec = {"postgres", "map", false, "",
                                            "PostgreSQL logical replication source."};

constexpr OptionSpec kPostgresSourceOptions[] = {
    {"url", "string", true, "",
     "libpq connection URI (postgres://user:password@host:5432/db) or key=value conninfo."},
    {"tables", "list", true, "",
     "Tables to capture: schema.table, or schema.* for every table of a schema (present and "
     "future). Quote names with upper-case or special characters: \"My Schema\".\"Order\"."},
    {"snapshot", "map", false, "", "Initial copy of the tables: {mode, workers, chunk_size}."},
    {"slot", "string", false, "pgflow_<pipeline>",
     "Logical replication slot: [a-z0-9_]+, at most 63 characters."},
    {"publication", "string", false, "pgflow_<pipeline>",
     "Publication: [a-z0-9_]+, at most 63 characters."},
    {"status_interval", "duration", false, "1s",
     "How often a standby status update is sent to the server (100ms..30s; it must stay "
     "well under the server's wal_sender_timeout, 60s by default)."},
    {"heartbeat_interval", "duration", false, "0",
     "How often a heartbeat message is written to the WAL so that the slot of an idle pipeline "
     "advances; 0 = off, else at least 100ms."},
};

constexpr OptionSpec kSnapshotOptions[] = {
    {"mode", "string", false, "initial",
     "initial: copy the tables, then stream; never: stream only; only: copy, then stop."},
    {"workers", "int", false, "0", "Parallel copy workers, 0..64; 0 = one per core."},
    {"chunk_size", "bytes", false, "64MiB",
     "Largest CTID range copied as one unit (ranges shrink toward a table's end, down to "
     "4MiB); at least 1MiB."},
};

constexpr OptionSpec kBufferOptions[] = {
    {"queue_bytes", "bytes", false, "64MiB",
     "Bound of each sink's queue; at least 1MiB. A full queue blocks the source."},
};

constexpr OptionSpec kAdminOptions[] = {
    {"listen", "string", true, "",
     "host:port of the admin HTTP server ([::1]:9187 for IPv6; port 0 picks a free port)."},
};

constexpr OptionSpec kSinkCommonOptions[] = {
    {"flush_interval", "duration", false, "200ms", "How often the sink is flushed (10ms..1h)."},
    {"ddl", "map", false, "", "What the sink does with schema changes: {mode, exclude}."},
};

constexpr OptionSpec kDdlOptions[] = {
    {"mode", "string", false, "apply",
     "apply: replay DDL where the sink can (postgres), pass it on as events elsewhere; "
     "events: pass it on as `ddl` events only; ignore: drop it."},
    {"exclude", "list", false, "",
     "Object types whose DDL the sink never sees: table, index, sequence, view, function, "
     "type, ... (as PostgreSQL names them in event triggers)."},
};

// ---------------------------------------------------------------------------------------------
// Small helpers.

std::string JoinPath(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return Cat(parent, ".", key);
}

std::string Position(std::string_view file, int line, int column) {
  return Cat(file, ":", std::max(line, 0) + 1, ":", std::max(column, 0) + 1);
}

std::string Position(std::string_view file, const YAML::Mark& mark) {
  return Position(file, mark.line, mark.column);
}

// What a node is, for "expected X, got Y".
std::string_view Kind(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Scalar:
      return "a string";
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

std::string_view Kind(const std::shared_ptr<const YAML::Node>& node) {
  return node == nullptr ? "nothing" : Kind(*node);
}

// What a value of an OptionSpec type looks like, for "expected X".
std::string_view Expected(std::string_view type) {
  if (type == "string") return "a string";
  if (type == "bool") return "true or false";
  if (type == "int") return "an integer";
  if (type == "bytes") return "a byte size like 64MiB";
  if (type == "duration") return "a duration like 250ms, 5s, 2m or 1h";
  if (type == "list") return "a list";
  if (type == "map") return "a mapping";
  return "a value";
}

// Whether a non-null value has the shape an OptionSpec type asks for.
bool ShapeFits(std::string_view type, const YAML::Node& node) {
  if (type == "string" || type == "bool" || type == "int" || type == "bytes" ||
      type == "duration") {
    return node.IsScalar();
  }
  if (type == "list") return node.IsScalar() || node.IsSequence();
  if (type == "map") return node.IsMap();
  return true;
}

// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// The candidate closest to `word` within an edit distance of 2, or "".
std::string_view Closest(std::string_view word, const std::vector<std::string_view>& candidates) {
  std::string_view best;
  size_t best_distance = 3;
  for (std::string_view candidate : candidates) {
    size_t distance = EditDistance(word, candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

// "(did you mean 'path'? expected one of: path, fsync)"
std::string UnknownSuffix(std::string_view word, const std::vector<std::string_view>& candidates,
                          std::string_view list_label) {
  std::string out = "(";
  std::string_view closest = Closest(word, candidates);
  if (!closest.empty()) out += Cat("did you mean '", closest, "'? ");
  if (candidates.empty()) {
    out += "there are none";
  } else {
    out += Cat(list_label, ": ", Join(candidates, ", "));
  }
  out += ")";
  return out;
}

// Replaces `${VAR}` and `${VAR:-default}` from the environment and `$$` with `$`. A `$` not
// followed by `{` or `$` is kept. On error returns the message (without position).
absl::StatusOr<std::string> ExpandEnv(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    char c = text[i];
    if (c != '$' || i + 1 == text.size()) {
      out += c;
      ++i;
      continue;
    }
    if (text[i + 1] == '$') {
      out += '$';
      i += 2;
      continue;
    }
    if (text[i + 1] != '{') {
      out += c;
      ++i;
      continue;
    }
    size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(
          "unterminated '${' (write ${NAME} for a variable, $$ for a literal '$')");
    }
    std::string_view inner = text.substr(i + 2, close - i - 2);
    std::string_view name = inner;
    std::optional<std::string_view> fallback;
    if (size_t sep = inner.find(":-"); sep != std::string_view::npos) {
      name = inner.substr(0, sep);
      fallback = inner.substr(sep + 2);
    }
    bool valid = !name.empty() && !absl::ascii_isdigit(static_cast<unsigned char>(name[0]));
    for (char n : name)
      valid = valid && (absl::ascii_isalnum(static_cast<unsigned char>(n)) || n == '_');
    if (!valid) {
      return absl::InvalidArgumentError(
          Cat("invalid variable reference '${", inner,
              "}': a name is letters, digits and '_' (write $$ for a literal '$')"));
    }
    std::string name_str(name);
    const char* value = std::getenv(name_str.c_str());
    if (value != nullptr && (*value != '\0' || !fallback.has_value())) {
      out += value;
    } else if (fallback.has_value()) {
      out += *fallback;
    } else {
      return absl::InvalidArgumentError(Cat("environment variable ", name, " is not set (write ${",
                                            name, ":-default} to give a default)"));
    }
    i = close + 1;
  }
  return out;
}

// Parses an unsigned decimal; no sign, no spaces.
std::optional<uint64_t> ParseUnsigned(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Splits "64MiB" / "64 MiB" into digits and unit.
std::pair<std::string_view, std::string_view> SplitNumberUnit(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[digits]))) {
    ++digits;
  }
  std::string_view unit = StripLeadingSpace(text.substr(digits));
  return {text.substr(0, digits), unit};
}

bool IsPgName(std::string_view name, size_t max_length) {
  if (name.empty() || name.size() > max_length) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

bool IsSinkName(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

// Parses one identifier at the start of `*text` (consuming it), PostgreSQL style: a quoted
// identifier keeps its case ("" is a quote), an unquoted one is folded to lower case.
absl::StatusOr<std::string> ParseIdentifier(std::string_view* text, bool* quoted) {
  std::string_view in = *text;
  std::string out;
  *quoted = !in.empty() && in[0] == '"';
  if (*quoted) {
    size_t i = 1;
    for (;;) {
      if (i >= in.size()) return absl::InvalidArgumentError("unterminated quoted name");
      if (in[i] == '"') {
        if (i + 1 < in.size() && in[i + 1] == '"') {
          out += '"';
          i += 2;
          continue;
        }
        ++i;
        break;
      }
      out += in[i++];
    }
    if (out.empty()) return absl::InvalidArgumentError("zero-length quoted name \"\"");
    *text = in.substr(i);
  } else {
    size_t i = 0;
    while (i < in.size()) {
      unsigned char c = static_cast<unsigned char>(in[i]);
      bool ok = absl::ascii_isalpha(c) || c == '_' || c >= 0x80 ||
                (i > 0 && (absl::ascii_isdigit(c) || c == '$'));
      if (!ok) break;
      out += static_cast<char>(absl::ascii_tolower(c));
      ++i;
    }
    if (i == 0) {
      if (in.empty() || in[0] == '.') return absl::InvalidArgumentError("empty name");
      return absl::InvalidArgumentError(
          Cat("unexpected character '", in.substr(0, 1),
              "'; quote names that are not letters, digits and '_': \"My-Table\""));
    }
    *text = in.substr(i);
  }
  if (out.size() > kMaxPgName) {
    return absl::InvalidArgumentError(
        Cat("name '", out, "' is longer than ", kMaxPgName, " bytes"));
  }
  return out;
}

// "schema.table", "schema.*", "\"My Schema\".\"Order\"". The error message has no position.
absl::StatusOr<TableRef> ParseTableRef(std::string_view text) {
  constexpr std::string_view kForm = "expected schema.table or schema.*";
  std::string_view rest = text;
  bool quoted = false;
  if (rest == "*" || rest.starts_with("*.")) {
    return absl::InvalidArgumentError(
        Cat(kForm, "; the schema cannot be '*': list each schema as schema.*"));
  }
  absl::StatusOr<std::string> schema = ParseIdentifier(&rest, &quoted);
  if (!schema.ok()) return schema.status();
  if (rest.empty()) {
    return absl::InvalidArgumentError(Cat(kForm, "; add the schema, like public.", text));
  }
  if (rest[0] != '.') {
    return absl::InvalidArgumentError(
        Cat("unexpected character '", rest.substr(0, 1),
            "' after the schema; quote names that are not letters, digits and '_': \"My Schema\""));
  }
  rest.remove_prefix(1);
  TableRef ref;
  ref.schema = *std::move(schema);
  if (rest == "*") {
    ref.table = "*";
    return ref;
  }
  absl::StatusOr<std::string> table = ParseIdentifier(&rest, &quoted);
  if (!table.ok()) return table.status();
  if (quoted && *table == "*") {
    return absl::InvalidArgumentError("a table named \"*\" cannot be captured");
  }
  if (!rest.empty()) {
    if (rest[0] == '.') {
      return absl::InvalidArgumentError(
          Cat(kForm, ", not database.schema.table (the database is in the url)"));
    }
    return absl::InvalidArgumentError(
        Cat("unexpected character '", rest.substr(0, 1),
            "' after the table; quote names that are not letters, digits and '_': \"My-Table\""));
  }
  ref.table = *std::move(table);
  return ref;
}

// A copy of a connection string with every password replaced by '*' (same length), so that
// libpq's error messages, which quote parts of the string, can be shown.
std::string MaskPasswords(std::string_view conninfo) {
  std::string out(conninfo);
  auto mask = [&out](size_t begin, size_t end) {
    for (size_t i = begin; i < end && i < out.size(); ++i) out[i] = '*';
  };
  size_t scheme_end = out.find("://");
  bool is_uri = scheme_end != std::string::npos && scheme_end > 0 &&
                std::all_of(out.begin(), out.begin() + scheme_end, [](char c) {
                  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '+' ||
                         c == '-' || c == '.';
                });
  if (is_uri) {
    size_t start = scheme_end + 3;
    size_t query = out.find('?', start);
    size_t authority_end = query == std::string::npos ? out.size() : query;
    // Generous on purpose: up to the last '@', so a password with a raw '@' or '/' is masked.
    size_t at = out.rfind('@', authority_end == 0 ? 0 : authority_end - 1);
    if (at != std::string::npos && at >= start) {
      size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) mask(colon + 1, at);
    }
    if (query != std::string::npos) {
      size_t p = query + 1;
      while (p < out.size()) {
        size_t amp = out.find('&', p);
        if (amp == std::string::npos) amp = out.size();
        if (out.compare(p, 9, "password=") == 0) mask(p + 9, amp);
        p = amp + 1;
      }
    }
    return out;
  }
  // key = value pairs; values may be 'quoted' with backslash escapes.
  size_t i = 0;
  auto skip_space = [&] {
    while (i < out.size() && absl::ascii_isspace(static_cast<unsigned char>(out[i]))) ++i;
  };
  while (i < out.size()) {
    skip_space();
    size_t key_begin = i;
    while (i < out.size() && out[i] != '=' &&
           !absl::ascii_isspace(static_cast<unsigned char>(out[i]))) {
      ++i;
    }
    bool is_password = std::string_view(out).substr(key_begin, i - key_begin) == "password";
    skip_space();
    if (i >= out.size() || out[i] != '=') break;
    ++i;
    skip_space();
    size_t value_begin = i;
    if (i < out.size() && out[i] == '\'') {
      ++i;
      value_begin = i;
      while (i < out.size() && out[i] != '\'') i += (out[i] == '\\') ? 2 : 1;
      if (is_password) mask(value_begin, i);
      ++i;
    } else {
      while (i < out.size() && !absl::ascii_isspace(static_cast<unsigned char>(out[i]))) {
        i += (out[i] == '\\') ? 2 : 1;
      }
      if (is_password) mask(value_begin, i);
    }
  }
  return out;
}

// Checks a connection string with libpq's own parser. The message never contains a password.
absl::Status CheckConninfo(const std::string& conninfo) {
  auto parse = [](const std::string& text, std::string* error) -> PQconninfoOption* {
    char* message = nullptr;
    PQconninfoOption* options = PQconninfoParse(text.c_str(), &message);
    if (message != nullptr) {
      *error = std::string(StripTrailingSpace(message));
      PQfreemem(message);
    }
    return options;
  };
  std::string error;
  PQconninfoOption* options = parse(conninfo, &error);
  if (options == nullptr) {
    std::string masked_error;
    PQconninfoOption* masked = parse(MaskPasswords(conninfo), &masked_error);
    if (masked != nullptr) {
      PQconninfoFree(masked);
      return absl::InvalidArgumentError(
          "invalid connection string: the password is malformed (percent-encode special "
          "characters in a URI, like %40 for '@')");
    }
    if (masked_error.empty()) masked_error = "libpq cannot parse it";
    return absl::InvalidArgumentError(Cat("invalid connection string: ", masked_error));
  }
  absl::Status status;
  for (PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (option->val == nullptr || std::strcmp(option->keyword, "port") != 0) continue;
    std::string_view ports = option->val;
    while (!ports.empty()) {
      size_t comma = std::min(ports.find(','), ports.size());
      std::string_view port = ports.substr(0, comma);
      ports.remove_prefix(std::min(comma + 1, ports.size()));
      if (port.empty()) continue;
      std::optional<uint64_t> number = ParseUnsigned(port);
      if (!number.has_value() || *number == 0 || *number > 65535) {
        status = absl::InvalidArgumentError(
            Cat("invalid connection string: port '", port, "' is not a number 1..65535"));
        break;
      }
    }
  }
  PQconninfoFree(options);
  return status;
}

// host:port, [v6]:port. Port 0 asks for a free port.
absl::Status CheckListenAddress(std::string_view address) {
  constexpr std::string_view kForm = "expected host:port, like 127.0.0.1:9187 or [::1]:9187";
  std::string_view host;
  std::string_view port;
  if (address.starts_with("[")) {
    size_t close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return absl::InvalidArgumentError(Cat(kForm));
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
    if (host.empty() || !std::all_of(host.begin(), host.end(), [](char c) {
          return absl::ascii_isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.' ||
                 c == '%' || absl::ascii_isalnum(static_cast<unsigned char>(c));
        })) {
      return absl::InvalidArgumentError(Cat("invalid IPv6 address; ", kForm));
    }
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string_view::npos) {
      return absl::InvalidArgumentError(Cat("missing port; ", kForm));
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.empty()) {
      return absl::InvalidArgumentError(
          "missing host (write 0.0.0.0:<port> to listen on every interface)");
    }
    if (host.find(':') != std::string_view::npos) {
      return absl::InvalidArgumentError("an IPv6 address must be in brackets, like [::1]:9187");
    }
    if (!std::all_of(host.begin(), host.end(), [](char c) {
          return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' ||
                 c == '_';
        })) {
      return absl::InvalidArgumentError(Cat("invalid host '", host, "'; ", kForm));
    }
  }
  std::optional<uint64_t> number = ParseUnsigned(port);
  if (!number.has_value() || *number > 65535) {
    return absl::InvalidArgumentError(Cat("invalid port '", port, "': expected a number 0..65535"));
  }
  return absl::OkStatus();
}

// Rejects what yaml-cpp accepts but a pipeline file must not have: duplicate keys (yaml-cpp
// keeps both), keys that are not scalars, and trees made huge or cyclic by aliases.
absl::Status CheckStructure(const YAML::Node& node, std::string_view file, const std::string& path,
                            int depth, size_t* visited) {
  if (depth > kMaxDepth) {
    return absl::InvalidArgumentError(Cat(Position(file, node.Mark()),
                                          ": values are nested more than ", kMaxDepth,
                                          " levels deep (is an alias recursive?)"));
  }
  if (++*visited > kMaxNodes) {
    return absl::InvalidArgumentError(
        Cat(Position(file, node.Mark()), ": the file has more than ", kMaxNodes,
            " values (counting each use of an alias; is an alias recursive?)"));
  }
  if (node.IsSequence()) {
    size_t index = 0;
    for (const YAML::Node& item : node) {
      absl::Status status =
          CheckStructure(item, file, Cat(path, "[", index++, "]"), depth + 1, visited);
      if (!status.ok()) return status;
    }
  } else if (node.IsMap()) {
    std::vector<std::pair<std::string, YAML::Mark>> seen;
    for (const auto& entry : node) {
      const YAML::Node& key = entry.first;
      std::string prefix =
          Cat(Position(file, key.Mark()), ": ", path.empty() ? "" : Cat(path, ": "));
      if (!key.IsScalar()) {
        return absl::InvalidArgumentError(Cat(prefix, "a key must be a string, got ", Kind(key)));
      }
      for (const auto& [name, mark] : seen) {
        if (name == key.Scalar()) {
          return absl::InvalidArgumentError(
              Cat(prefix, "duplicate key '", name, "' (first at ", Position(file, mark), ")"));
        }
      }
      seen.emplace_back(key.Scalar(), key.Mark());
      absl::Status status =
          CheckStructure(entry.second, file, JoinPath(path, key.Scalar()), depth + 1, visited);
      if (!status.ok()) return status;
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// The loader proper.

class Loader {
 public:
  explicit Loader(std::string_view file) : file_(file) {}

  absl::StatusOr<PipelineConfig> Load(const ConfigNode& root);

 private:
  absl::Status LoadSource(const ConfigNode& node, PipelineConfig* config);
  absl::Status LoadTables(const ConfigNode& node, std::vector<TableRef>* tables);
  absl::Status LoadSnapshot(const ConfigNode& node, SnapshotConfig* snapshot);
  absl::Status LoadDdlPolicy(const ConfigNode& node, DdlPolicy* policy);
  absl::Status LoadTransforms(const ConfigNode& node, std::vector<TransformConfig>* transforms);
  absl::Status LoadSinks(const ConfigNode& node, std::vector<SinkConfig>* sinks);
  absl::Status LoadSink(std::string name, const ConfigNode& node, SinkConfig* sink);

  std::string file_;
  std::string source_type_;  // once LoadSource read it
};

// Reads an optional duration in [min, max] (max 0: unbounded); 0 is allowed when `zero_ok`.
absl::Status ReadDuration(const ConfigNode& map, std::string_view key, milliseconds min,
                          milliseconds max, bool zero_ok, milliseconds* out) {
  std::optional<ConfigNode> node = map.Get(key);
  if (!node.has_value()) return absl::OkStatus();
  absl::StatusOr<milliseconds> value = node->AsDuration();
  if (!value.ok()) return value.status();
  if (zero_ok && value->count() == 0) {
    *out = *value;
    return absl::OkStatus();
  }
  auto text = [](milliseconds d) {
    if (d.count() % 3600000 == 0) return Cat(d.count() / 3600000, "h");
    if (d.count() % 60000 == 0) return Cat(d.count() / 60000, "m");
    if (d.count() % 1000 == 0) return Cat(d.count() / 1000, "s");
    return Cat(d.count(), "ms");
  };
  if (*value < min || (max.count() > 0 && *value > max)) {
    std::string range = max.count() > 0 ? Cat("between ", text(min), " and ", text(max))
                                        : Cat("at least ", text(min));
    return node->Error(
        Cat("must be ", zero_ok ? "0 (off) or " : "", range, ", got ", text(*value)));
  }
  *out = *value;
  return absl::OkStatus();
}

// Reads an optional string that must be one of `choices`, each paired with its value.
template <typename Enum>
absl::Status ReadChoice(const ConfigNode& map, std::string_view key, std::string_view what,
                        std::initializer_list<std::pair<std::string_view, Enum>> choices,
                        Enum* out) {
  std::optional<ConfigNode> node = map.Get(key);
  if (!node.has_value()) return absl::OkStatus();
  absl::StatusOr<std::string> text = node->AsString();
  if (!text.ok()) return text.status();
  std::vector<std::string_view> names;
  for (const auto& [name, value] : choices) {
    if (name == *text) {
      *out = value;
      return absl::OkStatus();
    }
    names.push_back(name);
  }
  return node->Error(
      Cat("unknown ", what, " '", *text, "' ", UnknownSuffix(*text, names, "expected one of")));
}

absl::Status ReadBytes(const ConfigNode& map, std::string_view key, uint64_t min, uint64_t* out) {
  std::optional<ConfigNode> node = map.Get(key);
  if (!node.has_value()) return absl::OkStatus();
  absl::StatusOr<uint64_t> value = node->AsBytes();
  if (!value.ok()) return value.status();
  if (*value < min) {
    return node->Error(Cat("must be at least ", min / kMiB, "MiB, got ", *value, " bytes"));
  }
  *out = *value;
  return absl::OkStatus();
}

absl::Status ReadPgName(const ConfigNode& map, std::string_view key, std::string* out) {
  std::optional<ConfigNode> node = map.Get(key);
  if (!node.has_value()) return absl::OkStatus();
  absl::StatusOr<std::string> value = node->AsString();
  if (!value.ok()) return value.status();
  if (!IsPgName(*value, kMaxPgName)) {
    return node->Error(Cat("invalid name '", *value, "': use a-z, 0-9 and '_', at most ",
                           kMaxPgName, " characters"));
  }
  *out = *std::move(value);
  return absl::OkStatus();
}

absl::StatusOr<PipelineConfig> Loader::Load(const ConfigNode& root) {
  if (!root.IsMap()) {
    return root.Error(Cat("expected a mapping with the keys pipeline, source and sinks, got ",
                          root.IsSequence() ? "a sequence"
                          : root.IsNull()   ? "null"
                                            : "a string"));
  }
  if (absl::Status status = root.CheckKeys(PipelineOptions()); !status.ok()) return status;

  PipelineConfig config;
  config.file = file_;

  ConfigNode name_node = *root.Get("pipeline");
  absl::StatusOr<std::string> name = name_node.AsString();
  if (!name.ok()) return name.status();
  if (!IsPgName(*name, kMaxPipelineName)) {
    return name_node.Error(Cat("invalid pipeline name '", *name,
                               "': use a-z, 0-9 and '_', at most ", kMaxPipelineName,
                               " characters"));
  }
  config.name = *std::move(name);

  if (absl::Status status = LoadSource(*root.Get("source"), &config); !status.ok()) {
    return status;
  }
  source_type_ = config.source_type;
  if (std::optional<ConfigNode> transforms = root.Get("transforms"); transforms.has_value()) {
    if (absl::Status status = LoadTransforms(*transforms, &config.transforms); !status.ok()) {
      return status;
    }
  }
  if (absl::Status status = LoadSinks(*root.Get("sinks"), &config.sinks); !status.ok()) {
    return status;
  }
  if (std::optional<ConfigNode> buffer = root.Get("buffer"); buffer.has_value()) {
    if (absl::Status status = buffer->CheckKeys(BufferOptions()); !status.ok()) return status;
    if (absl::Status status = ReadBytes(*buffer, "queue_bytes", kMiB, &config.queue_bytes);
        !status.ok()) {
      return status;
    }
  }
  if (std::optional<ConfigNode> admin = root.Get("admin"); admin.has_value()) {
    if (absl::Status status = admin->CheckKeys(AdminOptions()); !status.ok()) return status;
    ConfigNode listen_node = *admin->Get("listen");
    absl::StatusOr<std::string> listen = listen_node.AsString();
    if (!listen.ok()) return listen.status();
    if (absl::Status status = CheckListenAddress(*listen); !status.ok()) {
      return listen_node.Error(Cat(status.message()));
    }
    config.admin_listen = *std::move(listen);
    // Checked above so that a wrong address is reported first; the server itself is not built.
    return admin->Error(
        "the admin endpoint (/metrics /healthz /readyz /status) is not available in this build "
        "of pgflow yet; remove the `admin` key");
  }
  return config;
}

absl::Status Loader::LoadSource(const ConfigNode& node, PipelineConfig* config) {
  // One key naming the source type: postgres, built in, or a registered one.
  std::vector<OptionSpec> types = {kPostgresSourceSpec};
  for (const SourceFactory* factory : SourceFactories()) {
    types.push_back(OptionSpec{factory->type(), "map", false, "", ""});
  }
  std::sort(types.begin(), types.end(),
            [](const OptionSpec& a, const OptionSpec& b) { return a.key < b.key; });
  std::vector<std::string_view> names;
  for (const OptionSpec& spec : types) names.push_back(spec.key);
  if (absl::Status status = node.CheckKeys(types); !status.ok()) return status;
  std::vector<std::pair<std::string, ConfigNode>> entries = node.Entries();
  if (entries.empty()) {
    return node.Error(
        Cat("missing the source type: add one key naming it (", Join(names, ", "), ")"));
  }
  if (entries.size() > 1) {
    return node.KeyNode(entries[1].first)
        ->Error(Cat("a pipeline has one source, but '", entries[0].first, "' and '",
                    entries[1].first, "' are both here: run one pipeline per source"));
  }
  if (const SourceFactory* factory = FindSourceFactory(entries[0].first); factory != nullptr) {
    const ConfigNode& options_node = entries[0].second;
    if (!options_node.IsMap() && !options_node.IsNull()) {
      return options_node.Error(Cat("expected a mapping of ", factory->type(), " options, got ",
                                    options_node.IsSequence() ? "a sequence" : "a string"));
    }
    absl::StatusOr<std::shared_ptr<const SourceOptions>> options = factory->Parse(options_node);
    if (!options.ok()) return options.status();
    config->source_type = std::string(factory->type());
    config->source_options = *std::move(options);
    config->positions = factory->positions();
    return absl::OkStatus();
  }
  if (!node.Get("postgres").has_value()) {
    return node.KeyNode("postgres")->Error("required key 'postgres' has no value");
  }
  ConfigNode pg = *node.Get("postgres");
  if (absl::Status status = pg.CheckKeys(PostgresSourceOptions()); !status.ok()) return status;
  PostgresSourceConfig& source = config->source;

  ConfigNode url_node = *pg.Get("url");
  absl::StatusOr<std::string> url = url_node.AsString();
  if (!url.ok()) return url.status();
  if (url->empty()) return url_node.Error("must not be empty");
  if (absl::Status status = CheckConninfo(*url); !status.ok()) {
    return url_node.Error(Cat(status.message()));
  }
  source.url = *std::move(url);

  if (absl::Status status = LoadTables(*pg.Get("tables"), &source.tables); !status.ok()) {
    return status;
  }
  if (std::optional<ConfigNode> snapshot = pg.Get("snapshot"); snapshot.has_value()) {
    if (absl::Status status = LoadSnapshot(*snapshot, &source.snapshot); !status.ok()) {
      return status;
    }
  }
  source.slot = source.publication = "pgflow_" + config->name;
  if (absl::Status status = ReadPgName(pg, "slot", &source.slot); !status.ok()) return status;
  if (absl::Status status = ReadPgName(pg, "publication", &source.publication); !status.ok()) {
    return status;
  }
  if (absl::Status status = ReadDuration(pg, "status_interval", milliseconds(100),
                                         milliseconds(30000), false, &source.status_interval);
      !status.ok()) {
    return status;
  }
  return ReadDuration(pg, "heartbeat_interval", milliseconds(100), milliseconds(0), true,
                      &source.heartbeat_interval);
}

absl::Status Loader::LoadTables(const ConfigNode& node, std::vector<TableRef>* tables) {
  std::vector<ConfigNode> items;
  if (node.IsScalar()) {
    items.push_back(node);
  } else {
    items = node.Items();
    if (items.empty()) return node.Error("list at least one table (schema.table or schema.*)");
  }
  std::vector<std::pair<TableRef, ConfigNode>> seen;
  for (const ConfigNode& item : items) {
    absl::StatusOr<std::string> text = item.AsString();
    if (!text.ok()) return text.status();
    absl::StatusOr<TableRef> ref = ParseTableRef(*text);
    if (!ref.ok()) {
      return item.Error(Cat("invalid table '", *text, "': ", ref.status().message()));
    }
    for (const auto& [other, other_node] : seen) {
      std::string at = other_node.Position();
      if (other == *ref) {
        return item.Error(Cat("table ", ref->ToString(), " is listed twice (first at ", at, ")"));
      }
      if (other.schema == ref->schema && (other.table == "*" || ref->table == "*")) {
        const TableRef& wide = other.table == "*" ? other : *ref;
        const TableRef& narrow = other.table == "*" ? *ref : other;
        return item.Error(Cat(narrow.ToString(), " is already covered by ", wide.ToString(), " (",
                              at, "); list only one of them"));
      }
    }
    seen.emplace_back(*ref, item);
    tables->push_back(*std::move(ref));
  }
  return absl::OkStatus();
}

absl::Status Loader::LoadSnapshot(const ConfigNode& node, SnapshotConfig* snapshot) {
  if (absl::Status status = node.CheckKeys(SnapshotOptions()); !status.ok()) return status;
  if (absl::Status status = ReadChoice(node, "mode", "snapshot mode",
                                       {{"initial", SnapshotMode::kInitial},
                                        {"never", SnapshotMode::kNever},
                                        {"only", SnapshotMode::kOnly}},
                                       &snapshot->mode);
      !status.ok()) {
    return status;
  }
  if (std::optional<ConfigNode> workers = node.Get("workers"); workers.has_value()) {
    absl::StatusOr<int64_t> value = workers->AsInt(0, 64);
    if (!value.ok()) return value.status();
    snapshot->workers = static_cast<int>(*value);
  }
  return ReadBytes(node, "chunk_size", kMiB, &snapshot->chunk_bytes);
}

absl::Status Loader::LoadTransforms(const ConfigNode& node,
                                    std::vector<TransformConfig>* transforms) {
  if (!node.IsSequence()) {
    return node.Error("expected a sequence of transforms, each {<type>: {...}}");
  }
  for (const ConfigNode& item : node.Items()) {
    std::vector<std::pair<std::string, ConfigNode>> entries = item.Entries();
    if (!item.IsMap() || entries.size() != 1) {
      return item.Error("expected a mapping with one key naming the transform type");
    }
    ConfigNode key = *item.KeyNode(entries[0].first);
    return key.Error(
        Cat("unknown transform '", entries[0].first, "' (pgflow has no transforms yet)"));
  }
  return absl::OkStatus();
}

absl::Status Loader::LoadSinks(const ConfigNode& node, std::vector<SinkConfig>* sinks) {
  std::vector<std::pair<std::string, ConfigNode>> entries = node.Entries();
  if (entries.empty()) {
    return node.Error("define at least one sink, like {out: {jsonl: {path: out.jsonl}}}");
  }
  for (auto& [name, value] : entries) {
    if (!IsSinkName(name)) {
      return node.KeyNode(name)->Error(
          Cat("invalid sink name '", name, "': use letters, digits, '_' and '-'"));
    }
    SinkConfig sink;
    if (absl::Status status = LoadSink(name, value, &sink); !status.ok()) return status;
    sinks->push_back(std::move(sink));
  }
  return absl::OkStatus();
}

absl::Status Loader::LoadSink(std::string name, const ConfigNode& node, SinkConfig* sink) {
  std::vector<std::string_view> registered;
  for (const SinkFactory* factory : SinkFactories()) registered.push_back(factory->type());
  std::sort(registered.begin(), registered.end());
  if (!node.IsMap()) {
    return node.Error(Cat("expected a mapping with one key naming the sink type (",
                          Join(registered, ", "), "), got ",
                          node.IsNull()       ? "null"
                          : node.IsSequence() ? "a sequence"
                                              : "a string"));
  }
  std::vector<std::pair<std::string, ConfigNode>> entries = node.Entries();
  const std::pair<std::string, ConfigNode>* type_entry = nullptr;
  for (const auto& entry : entries) {
    bool common = std::any_of(std::begin(kSinkCommonOptions), std::end(kSinkCommonOptions),
                              [&entry](const OptionSpec& spec) { return spec.key == entry.first; });
    if (common) continue;
    if (type_entry != nullptr) {
      return node.KeyNode(entry.first)
          ->Error(Cat("a sink has one type, but '", type_entry->first, "' and '", entry.first,
                      "' are both here; use one sink per type"));
    }
    type_entry = &entry;
  }
  if (type_entry == nullptr) {
    return node.Error(
        Cat("missing the sink type: add one key naming it (", Join(registered, ", "), ")"));
  }
  const std::string& type = type_entry->first;
  const SinkFactory* factory = FindSinkFactory(type);
  if (factory == nullptr) {
    return node.KeyNode(type)->Error(
        Cat("unknown sink type '", type, "' ", UnknownSuffix(type, registered, "known types")));
  }
  const ConfigNode& options_node = type_entry->second;
  if (!options_node.IsMap() && !options_node.IsNull()) {
    return options_node.Error(Cat("expected a mapping of ", type, " options, got ",
                                  options_node.IsSequence() ? "a sequence" : "a string"));
  }
  absl::StatusOr<std::shared_ptr<const SinkOptions>> options = factory->Parse(options_node);
  if (!options.ok()) return options.status();
  if (absl::Status status = factory->CheckSource(source_type_); !status.ok()) {
    return node.KeyNode(type)->Error(Cat(status.message()));
  }

  sink->name = std::move(name);
  sink->type = type;
  sink->options = *std::move(options);
  if (std::optional<ConfigNode> ddl = node.Get("ddl"); ddl.has_value()) {
    if (absl::Status status = LoadDdlPolicy(*ddl, &sink->ddl); !status.ok()) return status;
  }
  return ReadDuration(node, "flush_interval", milliseconds(10), milliseconds(3600000), false,
                      &sink->flush_interval);
}

absl::Status Loader::LoadDdlPolicy(const ConfigNode& node, DdlPolicy* policy) {
  if (absl::Status status = node.CheckKeys(DdlOptions()); !status.ok()) return status;
  if (absl::Status status = ReadChoice(
          node, "mode", "ddl mode",
          {{"apply", DdlMode::kApply}, {"events", DdlMode::kEvents}, {"ignore", DdlMode::kIgnore}},
          &policy->mode);
      !status.ok()) {
    return status;
  }
  if (std::optional<ConfigNode> exclude = node.Get("exclude"); exclude.has_value()) {
    absl::StatusOr<std::vector<std::string>> types = exclude->AsStringList();
    if (!types.ok()) return types.status();
    policy->exclude = *std::move(types);
  }
  return absl::OkStatus();
}

std::vector<std::unique_ptr<SinkFactory>>& Registry() {
  static auto* registry = new std::vector<std::unique_ptr<SinkFactory>>();
  return *registry;
}

std::vector<std::unique_ptr<SourceFactory>>& SourceRegistry() {
  static auto* registry = new std::vector<std::unique_ptr<SourceFactory>>();
  return *registry;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ConfigNode.

ConfigNode::ConfigNode(std::shared_ptr<const YAML::Node> node, std::string file, std::string path)
    : node_(std::move(node)), file_(std::move(file)), path_(std::move(path)) {}

std::string ConfigNode::Position() const {
  int line = line_;
  int column = column_;
  if (line < 0 && node_ != nullptr && node_->IsDefined()) {
    YAML::Mark mark = node_->Mark();
    line = mark.line;
    column = mark.column;
  }
  return pgflow::Position(file_, line, column);
}

absl::Status ConfigNode::Error(std::string_view message) const {
  return absl::InvalidArgumentError(
      Cat(Position(), ": ", path_, path_.empty() ? "" : ": ", message));
}

bool ConfigNode::IsMap() const { return node_ != nullptr && node_->IsMap(); }
bool ConfigNode::IsSequence() const { return node_ != nullptr && node_->IsSequence(); }
bool ConfigNode::IsScalar() const { return node_ != nullptr && node_->IsScalar(); }
bool ConfigNode::IsNull() const { return node_ != nullptr && node_->IsNull(); }

absl::Status ConfigNode::CheckKeys(std::span<const OptionSpec> specs) const {
  if (!IsMap() && !IsNull()) {
    return Error(Cat("expected a mapping, got ", Kind(node_)));
  }
  std::vector<std::string_view> known;
  for (const OptionSpec& spec : specs) known.push_back(spec.key);
  std::vector<std::pair<std::string, ConfigNode>> entries = Entries();
  for (const auto& [key, value] : entries) {
    auto spec = std::find_if(specs.begin(), specs.end(),
                             [&key](const OptionSpec& s) { return s.key == key; });
    if (spec == specs.end()) {
      return KeyNode(key)->Error(
          Cat("unknown key '", key, "' ", UnknownSuffix(key, known, "expected one of")));
    }
    if (!value.IsNull() && !ShapeFits(spec->type, *value.node_)) {
      return value.Error(Cat("expected ", Expected(spec->type), ", got ", Kind(*value.node_)));
    }
  }
  for (const OptionSpec& spec : specs) {
    if (!spec.required) continue;
    auto entry = std::find_if(entries.begin(), entries.end(),
                              [&spec](const auto& e) { return e.first == spec.key; });
    if (entry == entries.end()) {
      return Error(Cat("missing required key '", spec.key, "'"));
    }
    if (entry->second.IsNull()) {
      return KeyNode(spec.key)->Error(Cat("required key '", spec.key, "' has no value"));
    }
  }
  return absl::OkStatus();
}

std::optional<ConfigNode> ConfigNode::Get(std::string_view key) const {
  if (!IsMap()) return std::nullopt;
  for (const auto& entry : *node_) {
    if (entry.first.IsScalar() && entry.first.Scalar() == key) {
      if (entry.second.IsNull()) return std::nullopt;
      return ConfigNode(std::make_shared<const YAML::Node>(entry.second), file_,
                        JoinPath(path_, key));
    }
  }
  return std::nullopt;
}

std::optional<ConfigNode> ConfigNode::KeyNode(std::string_view key) const {
  if (!IsMap()) return std::nullopt;
  for (const auto& entry : *node_) {
    if (entry.first.IsScalar() && entry.first.Scalar() == key) {
      return ConfigNode(std::make_shared<const YAML::Node>(entry.first), file_, path_);
    }
  }
  return std::nullopt;
}

std::vector<std::pair<std::string, ConfigNode>> ConfigNode::Entries() const {
  std::vector<std::pair<std::string, ConfigNode>> out;
  if (!IsMap()) return out;
  for (const auto& entry : *node_) {
    std::string key = entry.first.Scalar();
    ConfigNode value(std::make_shared<const YAML::Node>(entry.second), file_, JoinPath(path_, key));
    if (entry.second.IsNull()) {
      YAML::Mark mark = entry.first.Mark();
      value.line_ = mark.line;
      value.column_ = mark.column;
    }
    out.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

std::vector<ConfigNode> ConfigNode::Items() const {
  std::vector<ConfigNode> out;
  if (!IsSequence()) return out;
  size_t index = 0;
  for (const auto& item : *node_) {
    out.emplace_back(std::make_shared<const YAML::Node>(item), file_,
                     Cat(path_, "[", index++, "]"));
  }
  return out;
}

absl::StatusOr<std::string> ConfigNode::AsString() const {
  if (!IsScalar()) {
    return Error(Cat("expected a string, got ", Kind(node_)));
  }
  absl::StatusOr<std::string> expanded = ExpandEnv(node_->Scalar());
  if (!expanded.ok()) return Error(Cat(expanded.status().message()));
  return expanded;
}

absl::StatusOr<bool> ConfigNode::AsBool() const {
  if (!IsScalar()) return Error(Cat("expected true or false, got ", Kind(node_)));
  absl::StatusOr<std::string> text = AsString();
  if (!text.ok()) return text.status();
  std::string lower = absl::AsciiStrToLower(*text);
  if (lower == "true" || lower == "yes" || lower == "on") return true;
  if (lower == "false" || lower == "no" || lower == "off") return false;
  return Error(Cat("expected true or false, got '", *text, "'"));
}

absl::StatusOr<int64_t> ConfigNode::AsInt(int64_t min, int64_t max) const {
  if (!IsScalar()) return Error(Cat("expected an integer, got ", Kind(node_)));
  absl::StatusOr<std::string> text = AsString();
  if (!text.ok()) return text.status();
  int64_t value = 0;
  const char* begin = text->data();
  const char* end = begin + text->size();
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (text->empty() || ptr != end || ec == std::errc::invalid_argument) {
    return Error(Cat("expected an integer, got '", *text, "'"));
  }
  if (ec == std::errc::result_out_of_range || value < min || value > max) {
    return Error(Cat("must be between ", min, " and ", max, ", got ", *text));
  }
  return value;
}

absl::StatusOr<uint64_t> ConfigNode::AsBytes() const {
  constexpr std::string_view kExpected =
      "expected a byte size: an integer with an optional unit B, kB, KiB, MB, MiB, GB, GiB, TB "
      "or TiB (like 64MiB)";
  if (!IsScalar()) return Error(Cat(kExpected, ", got ", Kind(node_)));
  absl::StatusOr<std::string> text = AsString();
  if (!text.ok()) return text.status();
  auto [digits, unit] = SplitNumberUnit(*text);
  std::optional<uint64_t> number = ParseUnsigned(digits);
  static constexpr std::pair<std::string_view, int> kUnits[] = {
      {"", 0},     {"B", 0},   {"kB", 10},  {"KB", 10}, {"KiB", 10}, {"MB", 20},
      {"MiB", 20}, {"GB", 30}, {"GiB", 30}, {"TB", 40}, {"TiB", 40},
  };
  auto found = std::find_if(std::begin(kUnits), std::end(kUnits),
                            [&unit](const auto& u) { return u.first == unit; });
  if (digits.empty() || found == std::end(kUnits) || (!number.has_value() && digits.size() < 20)) {
    return Error(Cat(kExpected, ", got '", *text, "'"));
  }
  if (!number.has_value() || *number > (std::numeric_limits<uint64_t>::max() >> found->second)) {
    return Error(Cat("byte size '", *text, "' is too large"));
  }
  return *number << found->second;
}

absl::StatusOr<milliseconds> ConfigNode::AsDuration() const {
  constexpr std::string_view kExpected =
      "expected a duration: an integer with a unit ms, s, m or h (like 250ms or 5s; no unit "
      "means seconds)";
  if (!IsScalar()) return Error(Cat(kExpected, ", got ", Kind(node_)));
  absl::StatusOr<std::string> text = AsString();
  if (!text.ok()) return text.status();
  auto [digits, unit] = SplitNumberUnit(*text);
  std::optional<uint64_t> number = ParseUnsigned(digits);
  static constexpr std::pair<std::string_view, int64_t> kUnits[] = {
      {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
  };
  auto found = std::find_if(std::begin(kUnits), std::end(kUnits),
                            [&unit](const auto& u) { return u.first == unit; });
  if (digits.empty() || found == std::end(kUnits) || (!number.has_value() && digits.size() < 20)) {
    return Error(Cat(kExpected, ", got '", *text, "'"));
  }
  constexpr uint64_t kMaxMs = std::numeric_limits<int64_t>::max();
  if (!number.has_value() || *number > kMaxMs / static_cast<uint64_t>(found->second)) {
    return Error(Cat("duration '", *text, "' is too large"));
  }
  return milliseconds(static_cast<int64_t>(*number) * found->second);
}

absl::StatusOr<std::vector<std::string>> ConfigNode::AsStringList() const {
  std::vector<std::string> out;
  if (IsScalar()) {
    absl::StatusOr<std::string> value = AsString();
    if (!value.ok()) return value.status();
    out.push_back(*std::move(value));
    return out;
  }
  if (!IsSequence()) {
    return Error(Cat("expected a string or a list of strings, got ", Kind(node_)));
  }
  for (const ConfigNode& item : Items()) {
    absl::StatusOr<std::string> value = item.AsString();
    if (!value.ok()) return value.status();
    out.push_back(*std::move(value));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Registry and tables.

void RegisterSinkFactory(std::unique_ptr<SinkFactory> factory) {
  if (factory == nullptr || FindSinkFactory(factory->type()) != nullptr) return;
  Registry().push_back(std::move(factory));
}

const SinkFactory* FindSinkFactory(std::string_view type) {
  for (const auto& factory : Registry()) {
    if (factory->type() == type) return factory.get();
  }
  return nullptr;
}

std::vector<const SinkFactory*> SinkFactories() {
  std::vector<const SinkFactory*> out;
  for (const auto& factory : Registry()) out.push_back(factory.get());
  return out;
}

void RegisterSourceFactory(std::unique_ptr<SourceFactory> factory) {
  if (factory == nullptr || factory->type() == "postgres" ||
      FindSourceFactory(factory->type()) != nullptr) {
    return;
  }
  SourceRegistry().push_back(std::move(factory));
}

const SourceFactory* FindSourceFactory(std::string_view type) {
  for (const auto& factory : SourceRegistry()) {
    if (factory->type() == type) return factory.get();
  }
  return nullptr;
}

std::vector<const SourceFactory*> SourceFactories() {
  std::vector<const SourceFactory*> out;
  for (const auto& factory : SourceRegistry()) out.push_back(factory.get());
  return out;
}

std::span<const OptionSpec> PipelineOptions() { return kPipelineOptions; }
std::span<const OptionSpec> PostgresSourceOptions() { return kPostgresSourceOptions; }
std::span<const OptionSpec> SnapshotOptions() { return kSnapshotOptions; }
std::span<const OptionSpec> BufferOptions() { return kBufferOptions; }
std::span<const OptionSpec> AdminOptions() { return kAdminOptions; }
std::span<const OptionSpec> SinkCommonOptions() { return kSinkCommonOptions; }
std::span<const OptionSpec> DdlOptions() { return kDdlOptions; }

bool DdlPolicy::Passes(std::string_view object_type) const {
  if (mode == DdlMode::kIgnore) return false;
  return std::find(exclude.begin(), exclude.end(), object_type) == exclude.end();
}

// ---------------------------------------------------------------------------------------------
// Entry points.

absl::StatusOr<PipelineConfig> ParsePipelineConfig(std::string_view yaml_text,
                                                   std::string_view file_name) {
  std::string file(file_name);
  try {
    std::vector<YAML::Node> documents;
    try {
      documents = YAML::LoadAll(std::string(yaml_text));
    } catch (const YAML::DeepRecursion& e) {
      return absl::InvalidArgumentError(
          Cat(Position(file, e.mark), ": the document is nested too deeply"));
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(Cat(Position(file, e.mark), ": ", e.msg));
    }
    if (documents.empty() || documents[0].IsNull()) {
      return absl::InvalidArgumentError(Cat(Position(file, 0, 0),
                                            ": the file is empty: expected a mapping with the keys "
                                            "pipeline, source and sinks"));
    }
    if (documents.size() > 1) {
      return absl::InvalidArgumentError(Cat(Position(file, documents[1].Mark()),
                                            ": expected one YAML document, found ",
                                            documents.size(), " (remove the '---' separators)"));
    }
    size_t visited = 0;
    if (absl::Status status = CheckStructure(documents[0], file, "", 0, &visited); !status.ok()) {
      return status;
    }
    ConfigNode root(std::make_shared<const YAML::Node>(documents[0]), file, "");
    return Loader(file).Load(root);
  } catch (const std::exception& e) {
    // Defensive: yaml-cpp accessors throw on misuse, a factory may throw; nothing escapes.
    return absl::InternalError(Cat(file, ": unexpected error: ", e.what()));
  }
}

absl::StatusOr<PipelineConfig> LoadPipelineConfig(const std::string& path) {
  auto fail = [&path](int error) {
    std::string message = Cat(path, ": cannot read the pipeline file: ", std::strerror(error));
    if (error == ENOENT) return absl::NotFoundError(message);
    if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(message);
    return absl::InvalidArgumentError(message);
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno);
  struct stat st;
  if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    int error = S_ISDIR(st.st_mode) ? EISDIR : errno;
    ::close(fd);
    return fail(error);
  }
  std::string text;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;
      ::close(fd);
      return fail(error);
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kMaxFileBytes) {
      ::close(fd);
      return absl::InvalidArgumentError(
          Cat(path, ": the pipeline file is larger than ", kMaxFileBytes >> 20, " MiB"));
    }
  }
  ::close(fd);
  return ParsePipelineConfig(text, path);
}

}  // namespace pgflow
