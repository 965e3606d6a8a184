#include "schemas/json_text.h"

#include <charconv>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "schemas/ascii.h"

namespace pgflow {
namespace {

// Skips the JSON number starting at s[*i] (RFC 8259 grammar). Returns nullptr when there is
// one; otherwise what was expected, with *i where it was not found.
const char* SkipNumber(std::string_view s, size_t* i) {
  const size_t n = s.size();
  size_t j = *i;
  const char* error = nullptr;
  if (j < n && s[j] == '-') ++j;
  if (j >= n || !IsAsciiDigit(s[j])) {
    error = "expected a digit in a number";
  } else {
    if (s[j] == '0') {
      ++j;
    } else {
      while (j < n && IsAsciiDigit(s[j])) ++j;
    }
    if (j < n && s[j] == '.') {
      ++j;
      if (j >= n || !IsAsciiDigit(s[j])) {
        error = "expected a digit after '.' in a number";
      } else {
        while (j < n && IsAsciiDigit(s[j])) ++j;
      }
    }
    if (error == nullptr && j < n && (s[j] == 'e' || s[j] == 'E')) {
      ++j;
      if (j < n && (s[j] == '+' || s[j] == '-')) ++j;
      if (j >= n || !IsAsciiDigit(s[j])) {
        error = "expected a digit in a number's exponent";
      } else {
        while (j < n && IsAsciiDigit(s[j])) ++j;
      }
    }
  }
  *i = j;
  return error;
}

// Skips the JSON string whose opening quote is s[*i]: escapes must be valid, control
// characters escaped and the bytes valid UTF-8. Returns nullptr when it is one; otherwise what
// is wrong, with *i where.
const char* SkipString(std::string_view s, size_t* i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t j = *i + 1;  // after the opening quote
  while (j < n) {
    const unsigned char c = p[j];
    if (c == '"') {
      *i = j + 1;
      return nullptr;
    }
    if (c == '\\') {
      if (j + 1 >= n) break;
      switch (p[j + 1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          j += 2;
          break;
        case 'u':
          for (size_t k = j + 2; k < j + 6; ++k) {
            if (k >= n || HexDigitValue(s[k]) < 0) {
              *i = j;
              return "expected 4 hex digits after \\u";
            }
          }
          j += 6;
          break;
        default:
          *i = j;
          return "unknown escape in a string";
      }
    } else if (c < 0x20) {
      *i = j;
      return "unescaped control character in a string";
    } else if (c >= 0x80) {
      bool valid = false;
      const size_t length = ScanUtf8(p + j, n - j, &valid);
      if (!valid) {
        *i = j;
        return "a string is not valid UTF-8";
      }
      j += length;
    } else {
      ++j;
    }
  }
  *i = j;
  return "unterminated string";
}

// Walks one JSON text, checking it as it goes. Containers are tracked on an explicit stack,
// so any depth costs one byte per level and never the call stack. A failed walk keeps where
// and what went wrong, and Error() makes a status of it only when asked: the encoding checks
// every json value it writes and wants a yes or no, not a message.
class Scanner {
 public:
  explicit Scanner(std::string_view text) : s_(text) {}

  // Skips the value starting at or after *pos (after whitespace) and the whitespace after it;
  // *start is where the value begins, *end where it ends. False on an error (see Error()).
  bool SkipValue(size_t* pos, size_t* start, size_t* end) {
    i_ = *pos;
    SkipSpace();
    *start = i_;
    std::string stack;  // '{' or '[' per open container
    bool expect_key = false;
    while (true) {
      SkipSpace();
      if (i_ >= s_.size()) return Fail("the text ends where a value was expected");
      if (expect_key) {
        if (s_[i_] != '"') return Fail("expected a string (an object's key)");
        if (!Check(SkipString(s_, &i_))) return false;
        SkipSpace();
        if (i_ >= s_.size() || s_[i_] != ':') return Fail("expected ':' after an object's key");
        ++i_;
        expect_key = false;
        continue;
      }
      const char c = s_[i_];
      if (c == '{' || c == '[') {
        stack.push_back(c);
        ++i_;
        SkipSpace();
        const char close = c == '{' ? '}' : ']';
        if (i_ < s_.size() && s_[i_] == close) {
          ++i_;
          stack.pop_back();
        } else {
          expect_key = c == '{';
          continue;
        }
      } else if (c == '"') {
        if (!Check(SkipString(s_, &i_))) return false;
      } else if (c == '-' || IsAsciiDigit(c)) {
        if (!Check(SkipNumber(s_, &i_))) return false;
      } else if (s_.substr(i_, 4) == "true" || s_.substr(i_, 4) == "null") {
        i_ += 4;
      } else if (s_.substr(i_, 5) == "false") {
        i_ += 5;
      } else {
        return Fail("expected a JSON value");
      }
      // After a value: close containers, or go on to the next item.
      while (true) {
        if (stack.empty()) {
          *end = i_;
          SkipSpace();
          *pos = i_;
          return true;
        }
        SkipSpace();
        if (i_ >= s_.size()) return Fail("the text ends inside an object or array");
        const char close = stack.back() == '{' ? '}' : ']';
        if (s_[i_] == close) {
          ++i_;
          stack.pop_back();
          continue;
        }
        if (s_[i_] != ',') {
          return Fail(stack.back() == '{' ? "expected ',' or '}' in an object"
                                          : "expected ',' or ']' in an array");
        }
        ++i_;
        expect_key = stack.back() == '{';
        break;
      }
    }
  }

  // Skips whitespace from *pos; true when the text ends there.
  bool AtEnd(size_t* pos) {
    i_ = *pos;
    SkipSpace();
    *pos = i_;
    return i_ >= s_.size();
  }

  // Records an error at byte `pos`; returns false.
  bool FailAt(size_t pos, const char* what) {
    error_at_ = pos;
    error_ = what;
    return false;
  }

  // The error of the last call that returned false.
  absl::Status Error() const {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid JSON at byte ", error_at_, ": ", error_));
  }

  // Whether all the white space skipped so far was spaces (no tab, line feed or return).
  bool only_spaces() const { return only_spaces_; }

 private:
  void SkipSpace() {
    while (i_ < s_.size() && IsJsonSpace(s_[i_])) {
      if (s_[i_] != ' ') only_spaces_ = false;
      ++i_;
    }
  }
  bool Fail(const char* what) { return FailAt(i_, what); }
  // For the result of SkipNumber or SkipString, which leave i_ at an error.
  bool Check(const char* error) { return error == nullptr || Fail(error); }

  std::string_view s_;
  size_t i_ = 0;
  bool only_spaces_ = true;
  size_t error_at_ = 0;
  const char* error_ = "";
};

void AppendUtf8(uint32_t code_point, std::string* out) {
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

uint32_t Hex4(std::string_view s, size_t at) {
  uint32_t v = 0;
  for (size_t k = at; k < at + 4; ++k) v = (v << 4) | static_cast<uint32_t>(HexDigitValue(s[k]));
  return v;
}

// Reads the items of the container `text` (which must start with `open`), checking it whole.
template <typename OnItem>
absl::Status ReadContainer(std::string_view text, char open, OnItem on_item) {
  Scanner scanner(text);
  size_t pos = 0;
  size_t start = 0;
  size_t end = 0;
  if (!scanner.SkipValue(&pos, &start, &end)) return scanner.Error();
  if (!scanner.AtEnd(&pos)) {
    scanner.FailAt(pos, "text after the value");
    return scanner.Error();
  }
  if (text[start] != open) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", open == '{' ? "an object" : "an array", ", got ",
                     JsonTypeName(JsonTypeOf(text.substr(start, end - start)))));
  }
  // The text is valid: walk the top level only.
  size_t i = start + 1;
  auto skip_space = [&] {
    while (i < end && IsJsonSpace(text[i])) ++i;
  };
  skip_space();
  if (text[i] == (open == '{' ? '}' : ']')) return absl::OkStatus();
  while (true) {
    skip_space();
    std::string_view key;
    if (open == '{') {
      size_t key_start = i;
      size_t key_end = 0;
      if (!scanner.SkipValue(&i, &key_start, &key_end)) return scanner.Error();
      key = text.substr(key_start, key_end - key_start);
      ++i;  // ':'
    }
    size_t value_start = 0;
    size_t value_end = 0;
    // Scanning a member's value alone stops at the ',' or closing bracket after it.
    Scanner item_scanner(text.substr(0, end - 1));
    if (!item_scanner.SkipValue(&i, &value_start, &value_end)) return item_scanner.Error();
    if (absl::Status s = on_item(key, text.substr(value_start, value_end - value_start)); !s.ok()) {
      return s;
    }
    skip_space();
    if (i >= end - 1) return absl::OkStatus();
    ++i;  // ','
  }
}

// True for the bytes AppendJsonString copies as they are: printable ASCII except '"', '\\'.
constexpr bool IsPlainJsonByte(unsigned char c) {
  return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

// True when none of the 8 bytes of `w` needs a closer look (all are IsPlainJsonByte).
bool AllPlain(uint64_t w) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  const uint64_t below_space = (w - kOnes * 0x20) & ~w;  // high bit set for bytes < 0x20
  const uint64_t q = w ^ (kOnes * '"');
  const uint64_t quote = (q - kOnes) & ~q;
  const uint64_t b = w ^ (kOnes * '\\');
  const uint64_t backslash = (b - kOnes) & ~b;
  return ((below_space | quote | backslash | w) & kHigh) == 0;
}

}  // namespace

size_t ScanUtf8(const unsigned char* p, size_t n, bool* valid) {
  const unsigned char c = p[0];
  size_t continuation;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    continuation = 1;
  } else if (c == 0xE0) {
    continuation = 2;
    lo = 0xA0;
  } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
    continuation = 2;
  } else if (c == 0xED) {
    continuation = 2;
    hi = 0x9F;
  } else if (c == 0xF0) {
    continuation = 3;
    lo = 0x90;
  } else if (c >= 0xF1 && c <= 0xF3) {
    continuation = 3;
  } else if (c == 0xF4) {
    continuation = 3;
    hi = 0x8F;
  } else {
    *valid = false;
    return 1;
  }
  for (size_t i = 1; i <= continuation; ++i) {
    if (i >= n || p[i] < lo || p[i] > hi) {
      *valid = false;
      return i;
    }
    lo = 0x80;
    hi = 0xBF;
  }
  *valid = true;
  return continuation + 1;
}

const char* JsonTypeName(JsonType type) {
  switch (type) {
    case JsonType::kNull:
      return "null";
    case JsonType::kBool:
      return "a boolean";
    case JsonType::kNumber:
      return "a number";
    case JsonType::kString:
      return "a string";
    case JsonType::kArray:
      return "an array";
    case JsonType::kObject:
      return "an object";
  }
  return "?";
}

absl::StatusOr<JsonType> CheckJson(std::string_view text) {
  Scanner scanner(text);
  size_t pos = 0;
  size_t start = 0;
  size_t end = 0;
  if (!scanner.SkipValue(&pos, &start, &end)) return scanner.Error();
  if (!scanner.AtEnd(&pos)) {
    scanner.FailAt(pos, "text after the value");
    return scanner.Error();
  }
  return JsonTypeOf(text.substr(start, end - start));
}

bool IsJsonText(std::string_view text, bool* one_line) {
  Scanner scanner(text);
  size_t pos = 0;
  size_t start = 0;
  size_t end = 0;
  if (!scanner.SkipValue(&pos, &start, &end) || !scanner.AtEnd(&pos)) return false;
  *one_line = scanner.only_spaces() && start == 0 && end == text.size();
  return true;
}

bool IsJsonNumber(std::string_view text) {
  size_t i = 0;
  return SkipNumber(text, &i) == nullptr && i == text.size();
}

JsonType JsonTypeOf(std::string_view value) {
  if (value.empty()) return JsonType::kNull;
  switch (value[0]) {
    case '{':
      return JsonType::kObject;
    case '[':
      return JsonType::kArray;
    case '"':
      return JsonType::kString;
    case 't':
    case 'f':
      return JsonType::kBool;
    case 'n':
      return JsonType::kNull;
    default:
      return JsonType::kNumber;
  }
}

absl::Status ReadJsonObject(std::string_view text, std::vector<JsonMember>* members) {
  members->clear();
  return ReadContainer(text, '{', [&](std::string_view key, std::string_view value) {
    JsonMember member;
    if (absl::Status s = ReadJsonString(key, &member.key); !s.ok()) return s;
    member.value = value;
    members->push_back(std::move(member));
    return absl::OkStatus();
  });
}

absl::Status ReadJsonArray(std::string_view text, std::vector<std::string_view>* items) {
  items->clear();
  return ReadContainer(text, '[', [&](std::string_view, std::string_view value) {
    items->push_back(value);
    return absl::OkStatus();
  });
}

absl::Status ReadJsonString(std::string_view text, std::string* out) {
  if (text.size() < 2 || text.front() != '"' || text.back() != '"') {
    return absl::InvalidArgumentError("expected a JSON string");
  }
  const std::string_view s = text.substr(1, text.size() - 2);
  size_t run = 0;
  for (size_t i = 0; i < s.size();) {
    if (s[i] != '\\') {
      ++i;
      continue;
    }
    out->append(s.substr(run, i - run));
    const char e = s[i + 1];
    i += 2;
    switch (e) {
      case 'b':
        out->push_back('\b');
        break;
      case 'f':
        out->push_back('\f');
        break;
      case 'n':
        out->push_back('\n');
        break;
      case 'r':
        out->push_back('\r');
        break;
      case 't':
        out->push_back('\t');
        break;
      case 'u': {
        uint32_t code = Hex4(s, i);
        i += 4;
        if (code >= 0xD800 && code <= 0xDBFF) {
          if (i + 6 > s.size() || s[i] != '\\' || s[i + 1] != 'u') {
            return absl::InvalidArgumentError("a string holds a lone surrogate escape");
          }
          const uint32_t low = Hex4(s, i + 2);
          if (low < 0xDC00 || low > 0xDFFF) {
            return absl::InvalidArgumentError("a string holds a lone surrogate escape");
          }
          code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          i += 6;
        } else if (code >= 0xDC00 && code <= 0xDFFF) {
          return absl::InvalidArgumentError("a string holds a lone surrogate escape");
        }
        AppendUtf8(code, out);
        break;
      }
      default:  // '"', '\\', '/'
        out->push_back(e);
        break;
    }
    run = i;
  }
  out->append(s.substr(run));
  return absl::OkStatus();
}

const JsonMember* FindJsonMember(const std::vector<JsonMember>& members, std::string_view key) {
  for (const JsonMember& m : members) {
    if (m.key == key) return &m;
  }
  return nullptr;
}

absl::StatusOr<int64_t> ReadJsonInt64(std::string_view value) {
  int64_t out = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (value.empty() || ec != std::errc() || ptr != value.data() + value.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected an integer, got ", std::string(value.substr(0, 40))));
  }
  return out;
}

void AppendJsonString(std::string_view text, std::string* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  out->push_back('"');
  size_t run = 0;  // start of the bytes not yet appended, all of them copied as they are
  size_t i = 0;
  while (i < n) {
    // Plain ASCII eight bytes at a time, then one at a time.
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (AllPlain(w)) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    if (IsPlainJsonByte(c)) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      bool valid;
      const size_t len = ScanUtf8(p + i, n - i, &valid);
      if (valid) {
        i += len;
        continue;
      }
      out->append(text.substr(run, i - run));
      out->append("\xEF\xBF\xBD");
      i += len;
      run = i;
      continue;
    }
    out->append(text.substr(run, i - run));
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default: {
        const char escape[] = {
            '\\', 'u', '0', '0', kLowerHexDigits[c >> 4], kLowerHexDigits[c & 15]};
        out->append(escape, sizeof(escape));
        break;
      }
    }
    ++i;
    run = i;
  }
  out->append(text.substr(run, n - run));
  out->push_back('"');
}

void AppendJsonWithoutSpaces(std::string_view json, std::string* out) {
  size_t i = 0;
  const size_t n = json.size();
  while (i < n) {
    if (IsJsonSpace(json[i])) {
      ++i;
    } else if (json[i] == '"') {
      size_t end = i;
      SkipString(json, &end);  // checked by the caller
      out->append(json.substr(i, end - i));
      i = end;
    } else {
      const size_t start = i;
      while (i < n && !IsJsonSpace(json[i]) && json[i] != '"') ++i;
      out->append(json.substr(start, i - start));
    }
  }
}

}  // namespace pgflow
