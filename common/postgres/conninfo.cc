#include "common/postgres/conninfo.h"

#include <libpq-fe.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <memory>
#include <optional>

#include "absl/strings/ascii.h"
#include "engine/str_cat.h"

namespace pgflow {
namespace {

std::string_view StripTrailingSpace(std::string_view text) {
  while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

std::optional<uint64_t> ParsePort(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Whether `conninfo` has `key` as a key: "key=" or "key =" at its start or after a space, '?'
// or '&' (a URI's parameters).
bool SetsKey(std::string_view conninfo, std::string_view key) {
  for (size_t at = conninfo.find(key); at != std::string_view::npos;
       at = conninfo.find(key, at + 1)) {
    const bool starts = at == 0 || conninfo[at - 1] == ' ' || conninfo[at - 1] == '?' ||
                        conninfo[at - 1] == '&' || conninfo[at - 1] == '\t';
    size_t after = at + key.size();
    while (after < conninfo.size() && conninfo[after] == ' ') ++after;
    if (starts && after < conninfo.size() && conninfo[after] == '=') return true;
  }
  return false;
}

// libpq's parse errors quote parts of the string, which may be (part of) a password: a quoted
// fragment stays only when it is punctuation or a key the string itself sets ("key=").
std::string ScrubQuotedFragments(std::string_view message, std::string_view conninfo) {
  std::string out;
  size_t i = 0;
  while (i < message.size()) {
    size_t open = message.find('"', i);
    size_t close = open == std::string_view::npos ? open : message.find('"', open + 1);
    if (close == std::string_view::npos) {
      out.append(message.substr(i));
      break;
    }
    std::string_view fragment = message.substr(open + 1, close - open - 1);
    const bool is_key =
        !fragment.empty() &&
        std::all_of(fragment.begin(), fragment.end(),
                    [](char c) {
                      return absl::ascii_islower(static_cast<unsigned char>(c)) || c == '_';
                    }) &&
        SetsKey(conninfo, fragment);
    out.append(message.substr(i, open + 1 - i));
    out.append(fragment.size() <= 1 || is_key ? std::string(fragment) : std::string("..."));
    out.push_back('"');
    i = close + 1;
  }
  return out;
}

// The options libpq reads from `conninfo`; null when it cannot parse it.
using ConninfoOptions = std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)>;
ConninfoOptions ParseOptions(const std::string& conninfo) {
  char* message = nullptr;
  ConninfoOptions options(PQconninfoParse(conninfo.c_str(), &message), &PQconninfoFree);
  if (message != nullptr) PQfreemem(message);
  return options;
}

// The value `options` give `keyword`; empty when none.
std::string ValueOf(const PQconninfoOption* options, std::string_view keyword) {
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val != nullptr && keyword == o->keyword) return o->val;
  }
  return "";
}

}  // namespace

namespace {

// keyword='value', quoted as libpq reads it, after `*out` (space-separated).
void AppendPair(std::string_view keyword, std::string_view value, std::string* out) {
  std::string quoted;
  for (char c : value) {
    if (c == '\\' || c == '\'') quoted.push_back('\\');
    quoted.push_back(c);
  }
  *out += Cat(out->empty() ? "" : " ", keyword, "='", quoted, "'");
}

}  // namespace

absl::StatusOr<ConninfoForTool> WithoutPassword(const std::string& conninfo) {
  if (absl::Status s = CheckConninfo(conninfo); !s.ok()) return s;
  ConninfoOptions options = ParseOptions(conninfo);
  if (options == nullptr) return absl::InvalidArgumentError("invalid connection string");
  ConninfoForTool out;
  for (PQconninfoOption* o = options.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    if (std::strcmp(o->keyword, "password") == 0) {
      out.password = o->val;
      continue;
    }
    AppendPair(o->keyword, o->val, &out.conninfo);
  }
  return out;
}

absl::StatusOr<std::string> WithHost(const std::string& conninfo, std::string_view host,
                                     int port) {
  if (absl::Status s = CheckConninfo(conninfo); !s.ok()) return s;
  ConninfoOptions options = ParseOptions(conninfo);
  if (options == nullptr) return absl::InvalidArgumentError("invalid connection string");
  std::string out;
  AppendPair("host", host, &out);
  AppendPair("port", std::to_string(port), &out);
  for (PQconninfoOption* o = options.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const std::string_view keyword = o->keyword;
    if (keyword == "host" || keyword == "hostaddr" || keyword == "port") continue;
    AppendPair(keyword, o->val, &out);
  }
  return out;
}

std::string ConninfoValue(const std::string& conninfo, std::string_view keyword) {
  ConninfoOptions options = ParseOptions(conninfo);
  return options == nullptr ? "" : ValueOf(options.get(), keyword);
}

std::string DescribeConninfo(const std::string& conninfo) {
  ConninfoOptions options = ParseOptions(conninfo);
  if (options == nullptr) return "(an invalid connection string)";
  const std::string user = ValueOf(options.get(), "user");
  std::string host = ValueOf(options.get(), "host");
  if (host.empty()) host = ValueOf(options.get(), "hostaddr");
  const std::string port = ValueOf(options.get(), "port");
  const std::string dbname = ValueOf(options.get(), "dbname");
  return Cat(user.empty() ? "" : Cat(user, "@"), host.empty() ? "localhost" : host,
             port.empty() ? "" : Cat(":", port), dbname.empty() ? "" : Cat("/", dbname));
}

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
        if (out.compare(p, 12, "sslpassword=") == 0) mask(p + 12, amp);
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
    const std::string_view key = std::string_view(out).substr(key_begin, i - key_begin);
    bool is_password = key == "password" || key == "sslpassword";
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
    return absl::InvalidArgumentError(
        Cat("invalid connection string: ", ScrubQuotedFragments(masked_error, conninfo)));
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
      std::optional<uint64_t> number = ParsePort(port);
      if (!number.has_value() || *number == 0 || *number > 65535) {
        // Not quoted: in a URI whose password holds a raw '@' or '/', what libpq reads as
        // the port is part of the password.
        status = absl::InvalidArgumentError(
            "invalid connection string: a port is not a number 1..65535 (in a URI, "
            "percent-encode '@', ':' and '/' in the user name and password, like %40 for '@')");
        break;
      }
    }
  }
  PQconninfoFree(options);
  return status;
}

}  // namespace pgflow
