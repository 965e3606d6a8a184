#include "sinks/kv/resp.h"

#include <charconv>

namespace pgflow::resp {
namespace {

// Reads "<digits>\r\n" at input[pos...]; returns false when incomplete (with *complete false)
// or malformed.
[[gnu::noinline]] bool ReadLengthSlow(std::string_view input, size_t* pos, int64_t* value,
                                      bool* complete) {
  size_t cr = input.find('\r', *pos);
  if (cr == std::string_view::npos || cr + 1 >= input.size()) {
    *complete = false;
    // A length line longer than 20 digits is malformed, however it continues.
    return input.size() - *pos <= 21;
  }
  *complete = true;
  if (input[cr + 1] != '\n') return false;
  const char* begin = input.data() + *pos;
  const char* end = input.data() + cr;
  if (begin == end || end - begin > 20) return false;
  auto [ptr, ec] = std::from_chars(begin, end, *value);
  if (ec != std::errc() || ptr != end) return false;
  *pos = cr + 2;
  return true;
}

// ReadLength for the common case, a complete line of at most 18 digits (no overflow possible):
// one pass over the bytes instead of a search for '\r' and a from_chars. Anything else goes to
// ReadLengthSlow, which has the last word on what is incomplete or malformed.
inline bool ReadLength(std::string_view input, size_t* pos, int64_t* value, bool* complete) {
  const char* const begin = input.data() + *pos;
  const char* const end = input.data() + input.size();
  const char* p = begin;
  const bool negative = p < end && *p == '-';
  if (negative) ++p;
  const char* const digits = p;
  int64_t v = 0;
  while (p < end && p - digits < 18 && static_cast<unsigned char>(*p - '0') < 10) {
    v = v * 10 + (*p - '0');
    ++p;
  }
  if (p > digits && end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
    *complete = true;
    *value = negative ? -v : v;
    *pos = static_cast<size_t>(p + 2 - input.data());
    return true;
  }
  return ReadLengthSlow(input, pos, value, complete);
}

ParseStatus ParseInline(std::string_view input, const ParseLimits& limits,
                        std::vector<std::string_view>* args, size_t* consumed, std::string* error) {
  size_t nl = input.find('\n');
  if (nl == std::string_view::npos) {
    if (input.size() > limits.max_request_bytes) {
      *error = "too big inline request";
      return ParseStatus::kError;
    }
    return ParseStatus::kIncomplete;
  }
  if (nl + 1 > limits.max_request_bytes) {
    *error = "too big inline request";
    return ParseStatus::kError;
  }
  std::string_view line = input.substr(0, nl);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) {
      if (args->size() >= limits.max_args) {
        *error = "too many arguments";
        return ParseStatus::kError;
      }
      args->push_back(line.substr(start, i - start));
    }
  }
  *consumed = nl + 1;
  return ParseStatus::kComplete;
}

}  // namespace

ParseStatus ParseCommand(std::string_view input, const ParseLimits& limits,
                         std::vector<std::string_view>* args, size_t* consumed,
                         std::string* error) {
  args->clear();
  if (input.empty()) return ParseStatus::kIncomplete;
  if (input[0] != '*') return ParseInline(input, limits, args, consumed, error);
  size_t pos = 1;
  int64_t count = 0;
  bool complete = true;
  if (!ReadLength(input, &pos, &count, &complete)) {
    *error = "invalid multibulk length";
    return ParseStatus::kError;
  }
  if (!complete) return ParseStatus::kIncomplete;
  if (count < 0 || static_cast<uint64_t>(count) > limits.max_args) {
    *error = count < 0 ? "invalid multibulk length" : "too many arguments";
    return ParseStatus::kError;
  }
  for (int64_t i = 0; i < count; ++i) {
    if (pos >= input.size()) return ParseStatus::kIncomplete;
    if (input[pos] != '$') {
      *error = std::string("expected '$', got '") +
               (input[pos] >= 32 && input[pos] < 127 ? input[pos] : '?') + "'";
      return ParseStatus::kError;
    }
    ++pos;
    int64_t len = 0;
    if (!ReadLength(input, &pos, &len, &complete)) {
      *error = "invalid bulk length";
      return ParseStatus::kError;
    }
    if (!complete) return ParseStatus::kIncomplete;
    // Refused before waiting for (or buffering) the bytes announced.
    if (len < 0 || static_cast<uint64_t>(len) > limits.max_request_bytes ||
        pos + static_cast<size_t>(len) + 2 > limits.max_request_bytes) {
      *error = "invalid bulk length (request larger than max_request_bytes)";
      return ParseStatus::kError;
    }
    if (input.size() < pos + static_cast<size_t>(len) + 2) return ParseStatus::kIncomplete;
    if (input[pos + len] != '\r' || input[pos + len + 1] != '\n') {
      *error = "bulk string not terminated by CRLF";
      return ParseStatus::kError;
    }
    args->emplace_back(input.data() + pos, static_cast<size_t>(len));
    pos += static_cast<size_t>(len) + 2;
  }
  *consumed = pos;
  return ParseStatus::kComplete;
}

void AppendSimple(std::string_view s, std::string* out) {
  out->push_back('+');
  out->append(s);
  out->append("\r\n");
}

void AppendError(std::string_view s, std::string* out) {
  out->push_back('-');
  for (char c : s) out->push_back(c == '\r' || c == '\n' ? ' ' : c);
  out->append("\r\n");
}

void AppendInteger(int64_t n, std::string* out) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), n);
  out->push_back(':');
  out->append(buf, end);
  out->append("\r\n");
}

namespace {
void AppendLine(char type, size_t n, std::string* out) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), n);
  out->push_back(type);
  out->append(buf, end);
  out->append("\r\n");
}
}  // namespace

void AppendBulkHeader(size_t n, std::string* out) { AppendLine('$', n, out); }

void AppendBulk(std::string_view s, std::string* out) {
  AppendBulkHeader(s.size(), out);
  out->append(s);
  out->append("\r\n");
}

void AppendNull(bool resp3, std::string* out) { out->append(resp3 ? "_\r\n" : "$-1\r\n"); }

void AppendArrayHeader(size_t n, std::string* out) { AppendLine('*', n, out); }

void AppendMapHeader(size_t pairs, bool resp3, std::string* out) {
  if (resp3) {
    AppendLine('%', pairs, out);
  } else {
    AppendLine('*', pairs * 2, out);
  }
}

void AppendPushHeader(size_t n, bool resp3, std::string* out) {
  AppendLine(resp3 ? '>' : '*', n, out);
}

bool GlobMatch(std::string_view pattern, std::string_view text) {
  // Iterative matching with one backtrack point for the last '*' seen: linear in practice,
  // O(|pattern| * |text|) at worst, never exponential.
  size_t p = 0, t = 0;
  size_t star_p = std::string_view::npos, star_t = 0;
  auto match_class = [&](size_t* pp, char c) -> bool {
    // pattern[*pp] == '['; on return *pp is past the closing ']' (or at the end).
    size_t i = *pp + 1;
    bool negate = i < pattern.size() && pattern[i] == '^';
    if (negate) ++i;
    bool matched = false;
    while (i < pattern.size() && pattern[i] != ']') {
      if (pattern[i] == '\\' && i + 1 < pattern.size()) {
        ++i;
        matched = matched || pattern[i] == c;
        ++i;
      } else if (i + 2 < pattern.size() && pattern[i + 1] == '-' && pattern[i + 2] != ']') {
        char lo = pattern[i], hi = pattern[i + 2];
        if (lo > hi) std::swap(lo, hi);
        matched = matched || (c >= lo && c <= hi);
        i += 3;
      } else {
        matched = matched || pattern[i] == c;
        ++i;
      }
    }
    *pp = i < pattern.size() ? i + 1 : i;
    return negate ? !matched : matched;
  };
  while (t < text.size()) {
    if (p < pattern.size()) {
      char pc = pattern[p];
      if (pc == '*') {
        while (p < pattern.size() && pattern[p] == '*') ++p;
        if (p == pattern.size()) return true;
        star_p = p;
        star_t = t;
        continue;
      }
      if (pc == '?') {
        ++p;
        ++t;
        continue;
      }
      if (pc == '[') {
        size_t next = p;
        if (match_class(&next, text[t])) {
          p = next;
          ++t;
          continue;
        }
      } else {
        if (pc == '\\' && p + 1 < pattern.size()) {
          if (pattern[p + 1] == text[t]) {
            p += 2;
            ++t;
            continue;
          }
        } else if (pc == text[t]) {
          ++p;
          ++t;
          continue;
        }
      }
    }
    if (star_p == std::string_view::npos) return false;
    p = star_p;
    t = ++star_t;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace pgflow::resp
