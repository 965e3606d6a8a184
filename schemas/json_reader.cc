#include "schemas/json_reader.h"

#include <charconv>
#include <limits>

#include "absl/strings/str_cat.h"
#include "schemas/ascii.h"

namespace pgflow {
namespace {

// Length of the well-formed UTF-8 sequence starting with the non-ASCII byte p[0] (n bytes
// available), or 0 when it is not one.
size_t Utf8Length(const unsigned char* p, size_t n) {
  bool valid = false;
  const size_t length = ScanUtf8(p, n, &valid);
  return valid ? length : 0;
}

// Walks one JSON text, checking it as it goes. Containers are tracked on an explicit stack,
// so any depth costs one byte per level and never the call stack.
class Scanner {
 public:
  explicit Scanner(std::string_view text) : s_(text) {}

  // Skips the value starting at or after *pos (after whitespace) and the whitespace after it;
  // *start is where the value begins, *end where it ends.
  absl::Status SkipValue(size_t* pos, size_t* start, size_t* end) {
    i_ = *pos;
    SkipSpace();
    *start = i_;
    std::string stack;
    bool expect_key = false;
    while (true) {
      SkipSpace();
      if (i_ >= s_.size()) return Error("the text ends where a value was expected");
      if (expect_key) {
        if (s_[i_] != '"') return Error("expected a string (an object's key)");
        if (absl::Status st = SkipString(); !st.ok()) return st;
        SkipSpace();
        if (i_ >= s_.size() || s_[i_] != ':') return Error("expected ':' after an object's key");
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
        if (absl::Status st = SkipString(); !st.ok()) return st;
      } else if (c == '-' || IsAsciiDigit(c)) {
        if (absl::Status st = SkipNumber(); !st.ok()) return st;
      } else if (s_.substr(i_, 4) == "true" || s_.substr(i_, 4) == "null") {
        i_ += 4;
      } else if (s_.substr(i_, 5) == "false") {
        i_ += 5;
      } else {
        return Error("expected a JSON value");
      }
      // After a value: close containers, or go on to the next item.
      while (true) {
        if (stack.empty()) {
          *end = i_;
          SkipSpace();
          *pos = i_;
          return absl::OkStatus();
        }
        SkipSpace();
        if (i_ >= s_.size()) return Error("the text ends inside an object or array");
        const char close = stack.back() == '{' ? '}' : ']';
        if (s_[i_] == close) {
          ++i_;
          stack.pop_back();
          continue;
        }
        if (s_[i_] != ',') {
          return Error(stack.back() == '{' ? "expected ',' or '}' in an object"
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

  absl::Status ErrorAt(size_t pos, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid JSON at byte ", pos, ": ", std::string(what)));
  }

 private:
  void SkipSpace() {
    while (i_ < s_.size() && IsJsonSpace(s_[i_])) ++i_;
  }
  absl::Status Error(std::string_view what) const { return ErrorAt(i_, what); }

  absl::Status SkipNumber() {
    const size_t n = s_.size();
    if (s_[i_] == '-') ++i_;
    if (i_ >= n || !IsAsciiDigit(s_[i_])) return Error("expected a digit in a number");
    if (s_[i_] == '0') {
      ++i_;
    } else {
      while (i_ < n && IsAsciiDigit(s_[i_])) ++i_;
    }
    if (i_ < n && s_[i_] == '.') {
      ++i_;
      if (i_ >= n || !IsAsciiDigit(s_[i_])) return Error("expected a digit after '.' in a number");
      while (i_ < n && IsAsciiDigit(s_[i_])) ++i_;
    }
    if (i_ < n && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < n && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (i_ >= n || !IsAsciiDigit(s_[i_])) return Error("expected a digit in a number's exponent");
      while (i_ < n && IsAsciiDigit(s_[i_])) ++i_;
    }
    return absl::OkStatus();
  }

  absl::Status SkipString() {
    const auto* p = reinterpret_cast<const unsigned char*>(s_.data());
    const size_t n = s_.size();
    ++i_;  // the opening quote
    while (i_ < n) {
      const unsigned char c = p[i_];
      if (c == '"') {
        ++i_;
        return absl::OkStatus();
      }
      if (c == '\\') {
        if (i_ + 1 >= n) break;
        switch (p[i_ + 1]) {
          case '"':
          case '\\':
          case '/':
          case 'b':
          case 'f':
          case 'n':
          case 'r':
          case 't':
            i_ += 2;
            break;
          case 'u':
            for (size_t k = i_ + 2; k < i_ + 6; ++k) {
              if (k >= n || HexDigitValue(s_[k]) < 0)
                return Error("expected 4 hex digits after \\u");
            }
            i_ += 6;
            break;
          default:
            return Error("unknown escape in a string");
        }
      } else if (c < 0x20) {
        return Error("unescaped control character in a string");
      } else if (c >= 0x80) {
        const size_t len = Utf8Length(p + i_, n - i_);
        if (len == 0) return Error("a string is not valid UTF-8");
        i_ += len;
      } else {
        ++i_;
      }
    }
    return Error("unterminated string");
  }

  std::string_view s_;
  size_t i_ = 0;
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
  if (absl::Status s = scanner.SkipValue(&pos, &start, &end); !s.ok()) return s;
  if (!scanner.AtEnd(&pos)) return scanner.ErrorAt(pos, "text after the value");
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
      if (absl::Status s = scanner.SkipValue(&i, &key_start, &key_end); !s.ok()) return s;
      key = text.substr(key_start, key_end - key_start);
      ++i;  // ':'
    }
    size_t value_start = 0;
    size_t value_end = 0;
    // Scanning a member's value alone stops at the ',' or closing bracket after it.
    Scanner item_scanner(text.substr(0, end - 1));
    if (absl::Status s = item_scanner.SkipValue(&i, &value_start, &value_end); !s.ok()) return s;
    if (absl::Status s = on_item(key, text.substr(value_start, value_end - value_start)); !s.ok()) {
      return s;
    }
    skip_space();
    if (i >= end - 1) return absl::OkStatus();
    ++i;  // ','
  }
}

}  // namespace

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
  if (absl::Status s = scanner.SkipValue(&pos, &start, &end); !s.ok()) return s;
  if (!scanner.AtEnd(&pos)) return scanner.ErrorAt(pos, "text after the value");
  return JsonTypeOf(text.substr(start, end - start));
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

}  // namespace pgflow
