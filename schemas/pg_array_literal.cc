#include "schemas/pg_array_literal.h"

#include "schemas/ascii.h"

namespace pgflow {
namespace {

// PostgreSQL's MAXDIM is 6; a little slack, still a hard bound on the recursion.
constexpr int kMaxArrayDepth = 16;

bool IsArraySpace(char c) {
  // PostgreSQL's array_in skips what scanner_isspace() accepts.
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// "NULL" in any case: the null element when unquoted.
bool IsNullElement(std::string_view s) {
  return s.size() == 4 && (s[0] | 0x20) == 'n' && (s[1] | 0x20) == 'u' && (s[2] | 0x20) == 'l' &&
         (s[3] | 0x20) == 'l';
}

// Whether array_out would quote `element`.
bool NeedsQuotes(std::string_view element) {
  if (element.empty() || IsNullElement(element)) return true;
  for (char c : element) {
    if (c == '"' || c == '\\' || c == '{' || c == '}' || c == ',' || IsArraySpace(c)) return true;
  }
  return false;
}

// Parses an array literal and writes it as a JSON array.
class ArrayLiteralParser {
 public:
  ArrayLiteralParser(std::string_view text,
                     absl::FunctionRef<void(std::string_view, std::string*)> append_element,
                     std::string* scratch, std::string* out)
      : s_(text), append_element_(append_element), scratch_(scratch), out_(out) {}

  // Appends the JSON array. Returns false on malformed text, leaving partial output in *out.
  bool Parse() {
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == '[' && !SkipDimensions()) return false;
    if (!ParseLevel(1)) return false;
    SkipSpace();
    return pos_ == s_.size();
  }

 private:
  void SkipSpace() {
    while (pos_ < s_.size() && IsArraySpace(s_[pos_])) ++pos_;
  }

  // An optional sign and digits.
  bool SkipInteger() {
    if (pos_ < s_.size() && (s_[pos_] == '-' || s_[pos_] == '+')) ++pos_;
    const size_t start = pos_;
    while (pos_ < s_.size() && IsAsciiDigit(s_[pos_])) ++pos_;
    return pos_ > start;
  }

  // "[lower:upper]" (or "[upper]") once per dimension, then '='. Bounds carry no data for
  // JSON and are dropped.
  bool SkipDimensions() {
    while (pos_ < s_.size() && s_[pos_] == '[') {
      ++pos_;
      if (!SkipInteger()) return false;
      if (pos_ < s_.size() && s_[pos_] == ':') {
        ++pos_;
        if (!SkipInteger()) return false;
      }
      if (pos_ >= s_.size() || s_[pos_] != ']') return false;
      ++pos_;
    }
    SkipSpace();
    if (pos_ >= s_.size() || s_[pos_] != '=') return false;
    ++pos_;
    SkipSpace();
    return true;
  }

  // Parses "{...}" at pos_. Every item of one level must be of one kind: sub-arrays or
  // elements.
  bool ParseLevel(int depth) {
    if (depth > kMaxArrayDepth || pos_ >= s_.size() || s_[pos_] != '{') return false;
    ++pos_;
    out_->push_back('[');
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      out_->push_back(']');
      return true;
    }
    enum class Items { kUnknown, kArrays, kElements } items = Items::kUnknown;
    for (bool first = true;; first = false) {
      SkipSpace();
      if (pos_ >= s_.size()) return false;
      if (!first) out_->push_back(',');
      const Items kind = s_[pos_] == '{' ? Items::kArrays : Items::kElements;
      if (items != Items::kUnknown && items != kind) return false;
      items = kind;
      if (kind == Items::kArrays) {
        if (!ParseLevel(depth + 1)) return false;
      } else if (!ParseElement()) {
        return false;
      }
      SkipSpace();
      if (pos_ >= s_.size()) return false;
      if (s_[pos_] == '}') {
        ++pos_;
        out_->push_back(']');
        return true;
      }
      if (s_[pos_] != ',') return false;
      ++pos_;
    }
  }

  bool ParseElement() {
    if (s_[pos_] == '"') return ParseQuotedElement();
    // Unquoted: up to the next delimiter or brace, trailing spaces trimmed. array_out quotes
    // anything holding quotes, backslashes, braces, delimiters or spaces at either end.
    const size_t start = pos_;
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c == ',' || c == '}') break;
      if (c == '{' || c == '"' || c == '\\') return false;
      ++pos_;
    }
    size_t end = pos_;
    while (end > start && IsArraySpace(s_[end - 1])) --end;
    if (end == start) return false;
    const std::string_view element = s_.substr(start, end - start);
    if (IsNullElement(element)) {
      out_->append("null");
    } else {
      append_element_(element, out_);
    }
    return true;
  }

  // "...", with '\' escaping the next byte. A quoted "NULL" is the string NULL.
  bool ParseQuotedElement() {
    ++pos_;
    const size_t start = pos_;
    bool escaped = false;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      if (s_[pos_] == '\\') {
        escaped = true;
        ++pos_;
        if (pos_ >= s_.size()) return false;
      }
      ++pos_;
    }
    if (pos_ >= s_.size()) return false;
    std::string_view element = s_.substr(start, pos_ - start);
    ++pos_;  // the closing quote
    if (escaped) {
      scratch_->clear();
      for (size_t i = 0; i < element.size(); ++i) {
        if (element[i] == '\\') ++i;
        scratch_->push_back(element[i]);
      }
      element = *scratch_;
    }
    append_element_(element, out_);
    return true;
  }

  const std::string_view s_;
  const absl::FunctionRef<void(std::string_view, std::string*)> append_element_;
  std::string* const scratch_;
  std::string* const out_;
  size_t pos_ = 0;
};

}  // namespace

void AppendArrayLiteralElement(std::string_view element, std::string* out) {
  if (!NeedsQuotes(element)) {
    out->append(element);
    return;
  }
  out->push_back('"');
  for (char c : element) {
    if (c == '"' || c == '\\') out->push_back('\\');
    out->push_back(c);
  }
  out->push_back('"');
}

std::string ArrayLiteral(const std::vector<std::string>& elements) {
  std::string out = "{";
  for (const std::string& element : elements) {
    if (out.size() > 1) out += ',';
    AppendArrayLiteralElement(element, &out);
  }
  return out + "}";
}

bool AppendArrayLiteralAsJson(
    std::string_view text,
    absl::FunctionRef<void(std::string_view element, std::string* out)> append_element,
    std::string* out) {
  // Holds unescaped quoted elements; kept per thread so that arrays of json or of strings with
  // quotes do not allocate on every row. A call from inside `append_element` gets its own.
  thread_local std::string thread_scratch;
  thread_local bool thread_scratch_in_use = false;
  std::string own_scratch;
  const bool nested = thread_scratch_in_use;
  thread_scratch_in_use = true;
  const size_t start = out->size();
  ArrayLiteralParser parser(text, append_element, nested ? &own_scratch : &thread_scratch, out);
  const bool parsed = parser.Parse();
  thread_scratch_in_use = nested;
  if (!parsed) out->resize(start);
  return parsed;
}

}  // namespace pgflow
