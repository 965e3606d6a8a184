#include "tests/integration/support/prometheus_text.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <set>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/str_cat.h"
#include "schemas/json_text.h"

namespace pgflow::testing {
namespace {

using Labels = std::map<std::string, std::string>;

// Debian's Abseil has an absl::string_view of its own, which its functions require.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

template <typename... Pieces>
absl::Status LineError(int line, const Pieces&... pieces) {
  return absl::InvalidArgumentError(Cat("line ", line, ": ", pieces...));
}

// Text from the input, quoted for a message with anything unprintable escaped.
std::string Quote(std::string_view text) {
  return Cat("\"", absl::CHexEscape(AbslView(text)), "\"");
}

// The backslash escape `\c` as written, for a message (with c itself escaped if unprintable).
std::string Escape(char c) {
  return absl::ascii_isgraph(c) ? Cat('\\', c) : Cat('\\', absl::CHexEscape(std::string(1, c)));
}

// A value for a message, as absl::StrCat writes doubles (six significant digits).
std::string Num(double value) { return absl::StrCat(value); }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return absl::EqualsIgnoreCase(AbslView(a), AbslView(b));
}

bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsMetricNameChar(char c) { return absl::ascii_isalnum(c) || c == '_' || c == ':'; }
bool IsLabelNameChar(char c) { return absl::ascii_isalnum(c) || c == '_'; }

bool IsMetricName(std::string_view name) {
  if (name.empty() || absl::ascii_isdigit(name[0])) return false;
  for (char c : name) {
    if (!IsMetricNameChar(c)) return false;
  }
  return true;
}

bool IsUtf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    bool valid = false;
    i += ScanUtf8(p + i, text.size() - i, &valid);
    if (!valid) return false;
  }
  return true;
}

// `{a="x",b="y"}` with the values escaped again, or nothing for no labels: for messages.
std::string FormatLabels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (const auto& [name, value] : labels) {
    if (out.size() > 1) out += ',';
    out += Cat(name, "=", Quote(value));
  }
  out += '}';
  return out;
}

// Go's strconv.ParseFloat less hexadecimal forms and underscores, which expfmt refuses before
// calling it: an optional sign, digits with at most one '.', an optional exponent; "Inf" or
// "Infinity" in any case with an optional sign; "NaN" in any case without one. A finite number
// too large for a double is an error (Go's ErrRange); one too small becomes zero, as in Go.
std::optional<double> ParseGoFloat(std::string_view text) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (EqualsIgnoreCase(text, "nan")) return std::numeric_limits<double>::quiet_NaN();
  std::string_view s = text;
  const bool negative = s.starts_with('-');
  if (negative || s.starts_with('+')) s.remove_prefix(1);
  if (EqualsIgnoreCase(s, "inf") || EqualsIgnoreCase(s, "infinity")) {
    return negative ? -kInf : kInf;
  }

  // The syntax is checked here because std::from_chars would also take "nan(...)" and an
  // "inf" after a sign it has not seen. Counting where the first significant digit sits tells an
  // overflow from an underflow below, when from_chars reports only that the value is out of range.
  size_t i = 0;
  bool point = false;
  bool significant = false;
  int64_t digits = 0;
  int64_t integer_digits = 0;     // before the point, from the first significant one
  int64_t zeros_after_point = 0;  // between the point and the first significant digit
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '.' && !point) {
      point = true;
      continue;
    }
    if (!absl::ascii_isdigit(c)) break;
    ++digits;
    if (c != '0') significant = true;
    if (!point && significant) ++integer_digits;
    if (point && !significant) ++zeros_after_point;
  }
  if (digits == 0) return std::nullopt;
  int64_t exponent = 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    const bool exponent_negative = i < s.size() && s[i] == '-';
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    const size_t start = i;
    for (; i < s.size() && absl::ascii_isdigit(s[i]); ++i) {
      // Saturates: past a billion only the sign of the magnitude below matters.
      exponent = std::min<int64_t>(exponent * 10 + (s[i] - '0'), 1'000'000'000);
    }
    if (i == start) return std::nullopt;
    if (exponent_negative) exponent = -exponent;
  }
  if (i != s.size()) return std::nullopt;

  double value = 0;
  const auto [end, error] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (error == std::errc::result_out_of_range) {
    const int64_t magnitude =
        (integer_digits > 0 ? integer_digits - 1 : -(zeros_after_point + 1)) + exponent;
    if (magnitude > 0) return std::nullopt;
    value = 0;
  } else if (error != std::errc() || end != s.data() + s.size() || std::isinf(value)) {
    // (A finite decimal that came back infinite overflowed without saying so.)
    return std::nullopt;
  }
  return negative ? -value : value;
}

// One line's text (without its '\n') and a position in it.
class Cursor {
 public:
  explicit Cursor(std::string_view text) : text_(text) {}

  bool AtEnd() const { return pos_ == text_.size(); }
  // True when the next character is `c`.
  bool At(char c) const { return !AtEnd() && text_[pos_] == c; }
  void Advance() { ++pos_; }

  // Returns whether there were any blanks to skip.
  bool SkipBlanks() {
    const size_t start = pos_;
    while (!AtEnd() && IsBlank(text_[pos_])) ++pos_;
    return pos_ > start;
  }

  template <typename Pred>
  std::string_view TakeWhile(Pred pred) {
    const size_t start = pos_;
    while (!AtEnd() && pred(text_[pos_])) ++pos_;
    return text_.substr(start, pos_ - start);
  }

  // Up to the next blank or the end of the line.
  std::string_view Token() {
    return TakeWhile([](char c) { return !IsBlank(c); });
  }

  std::string_view Rest() {
    const std::string_view rest = text_.substr(pos_);
    pos_ = text_.size();
    return rest;
  }

  // What follows, for messages (without moving).
  std::string_view Remaining() const { return text_.substr(pos_); }

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

// Reads a label value from after its opening quote through its closing one, undoing the only
// escapes the format has: \\ \" \n.
absl::StatusOr<std::string> ReadLabelValue(Cursor& in) {
  std::string value;
  while (!in.AtEnd()) {
    const char c = in.Remaining()[0];
    in.Advance();
    if (c == '"') return value;
    if (c != '\\') {
      value += c;
      continue;
    }
    if (in.AtEnd()) break;
    const char escaped = in.Remaining()[0];
    in.Advance();
    switch (escaped) {
      case '\\':
        value += '\\';
        break;
      case '"':
        value += '"';
        break;
      case 'n':
        value += '\n';
        break;
      default:
        return absl::InvalidArgumentError(
            Cat("invalid escape ", Escape(escaped),
                " in its value (only \\\\, \\\" and \\n are allowed)"));
    }
  }
  return absl::InvalidArgumentError("its value has no closing quote");
}

// HELP text escapes only \\ and \n (a quote needs none there).
absl::StatusOr<std::string> UnescapeHelp(std::string_view text) {
  std::string help;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      help += text[i];
      continue;
    }
    if (++i == text.size()) return absl::InvalidArgumentError("ends in a lone backslash");
    if (text[i] == '\\') {
      help += '\\';
    } else if (text[i] == 'n') {
      help += '\n';
    } else {
      return absl::InvalidArgumentError(
          Cat("has the invalid escape ", Escape(text[i]), " (only \\\\ and \\n are allowed)"));
    }
  }
  return help;
}

// Reads the label set of `metric` from after its '{' through its '}'. A trailing comma is
// allowed, as the format's grammar has it.
absl::Status ReadLabels(int line, std::string_view metric, Cursor& in, Labels* labels) {
  while (true) {
    in.SkipBlanks();
    if (in.AtEnd()) return LineError(line, "the labels of ", metric, " have no closing '}'");
    if (in.At('}')) {
      in.Advance();
      return absl::OkStatus();
    }
    const std::string_view label = in.TakeWhile(IsLabelNameChar);
    if (label.empty()) {
      return LineError(line, "expected a label name in the labels of ", metric, ", found ",
                       Quote(in.Remaining()));
    }
    if (absl::ascii_isdigit(label[0])) {
      return LineError(line, "invalid label name ", Quote(label), " on ", metric);
    }
    // Prometheus keeps names starting with __ for itself (__name__ and relabelling).
    if (label.starts_with("__")) {
      return LineError(line, "label name ", label, " on ", metric,
                       " starts with __, which Prometheus reserves");
    }
    in.SkipBlanks();
    if (!in.At('=')) return LineError(line, "expected '=' after label ", label, " on ", metric);
    in.Advance();
    in.SkipBlanks();
    if (!in.At('"')) {
      return LineError(line, "the value of label ", label, " on ", metric,
                       " must be in double quotes");
    }
    in.Advance();
    absl::StatusOr<std::string> value = ReadLabelValue(in);
    if (!value.ok()) {
      return LineError(line, "label ", label, " on ", metric, ": ", value.status().message());
    }
    if (!IsUtf8(*value)) {
      return LineError(line, "the value of label ", label, " on ", metric, " is not valid UTF-8");
    }
    if (!labels->emplace(label, *std::move(value)).second) {
      return LineError(line, "label ", label, " appears twice on ", metric);
    }
    in.SkipBlanks();
    if (in.At(',')) {
      in.Advance();
      continue;
    }
    if (!in.At('}')) {
      return LineError(line, "expected ',' or '}' after label ", label, " on ", metric);
    }
  }
}

// Where one series of a histogram or summary stands: the samples sharing a label set once le
// (or quantile) is left out.
struct Series {
  int first_line = 0;
  // The bound of the last bucket (histogram) or the last quantile (summary) and how it was
  // written, and the last bucket's count.
  std::optional<double> last_bound;
  std::string last_bound_text;
  double last_count = 0;
  std::optional<double> inf_count;  // the le="+Inf" bucket
  int inf_line = 0;
  std::optional<double> count;  // name_count
  int count_line = 0;
};

// What is checked across the lines of the family being read.
struct FamilyState {
  int help_line = 0;                                 // 0 until a HELP is read
  int type_line = 0;                                 // 0 until a TYPE is read
  std::set<std::pair<std::string, Labels>> samples;  // to refuse a duplicate
  std::map<Labels, Series> series;                   // histograms and summaries only
};

// Reads one text; make one per call of ParsePrometheusText.
class Parser {
 public:
  absl::StatusOr<std::vector<PromFamily>> Parse(std::string_view text);

 private:
  absl::Status Comment(int line, Cursor in);
  absl::Status Sample(int line, std::string_view text);

  // Ends the current family and begins `name`, an untyped family until a TYPE says otherwise.
  absl::Status StartFamily(int line, std::string_view name);
  // Makes `sample_name` the current family's, so that no later family may use it.
  absl::Status Claim(int line, const std::string& sample_name);
  // The type's rules for a sample of the current family, before it is added.
  absl::Status CheckSample(int line, const PromSample& sample);
  absl::Status CheckHistogramSample(int line, const PromSample& sample);
  absl::Status CheckSummarySample(int line, const PromSample& sample);
  // The series of the current family with labels `others`, begun on `line` if new.
  Series& SeriesOf(const Labels& others, int line);
  // What can only be checked once a family is complete: each histogram series' +Inf bucket
  // and its agreement with _count.
  absl::Status FinishFamily();

  std::vector<PromFamily> families_;
  std::vector<int> first_lines_;  // of each family in families_
  FamilyState state_;             // of families_.back()
  // Every sample name a family has (its own name, and a histogram's or summary's suffixed
  // names once typed), to the family's index: a name met again after its family ended means
  // the family was split.
  std::map<std::string, size_t, std::less<>> owners_;
};

absl::StatusOr<std::vector<PromFamily>> Parser::Parse(std::string_view text) {
  int line = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    ++line;
    const size_t newline = text.find('\n', pos);
    if (newline == std::string_view::npos) {
      return LineError(line, "the last line has no '\\n' (the text must end with a newline)");
    }
    const std::string_view content = text.substr(pos, newline - pos);
    pos = newline + 1;
    Cursor in(content);
    in.SkipBlanks();
    if (in.AtEnd()) continue;
    absl::Status status = in.At('#') ? Comment(line, in) : Sample(line, content);
    if (!status.ok()) return status;
  }
  if (absl::Status status = FinishFamily(); !status.ok()) return status;
  return std::move(families_);
}

absl::Status Parser::Comment(int line, Cursor in) {
  in.Advance();  // '#'
  in.SkipBlanks();
  const std::string_view keyword = in.Token();
  if (keyword != "HELP" && keyword != "TYPE") return absl::OkStatus();  // a plain comment
  in.SkipBlanks();
  const std::string_view name = in.Token();
  if (name.empty()) return LineError(line, keyword, " with no metric name");
  if (!IsMetricName(name)) {
    return LineError(line, "invalid metric name ", Quote(name), " in ", keyword);
  }
  in.SkipBlanks();
  if (families_.empty() || families_.back().name != name) {
    if (absl::Status status = StartFamily(line, name); !status.ok()) return status;
  }
  PromFamily& family = families_.back();

  if (keyword == "HELP") {
    if (state_.help_line != 0) {
      return LineError(line, "second HELP for ", name, " (the first is on line ", state_.help_line,
                       ")");
    }
    if (!family.samples.empty()) return LineError(line, "HELP for ", name, " after its samples");
    absl::StatusOr<std::string> help = UnescapeHelp(in.Rest());
    if (!help.ok()) return LineError(line, "the HELP text of ", name, " ", help.status().message());
    if (!IsUtf8(*help)) return LineError(line, "the HELP text of ", name, " is not valid UTF-8");
    family.help = *std::move(help);
    state_.help_line = line;
    return absl::OkStatus();
  }

  const std::string_view type = in.Token();
  in.SkipBlanks();
  if (type.empty()) return LineError(line, "TYPE ", name, " with no type");
  if (!in.AtEnd()) {
    return LineError(line, "unexpected ", Quote(in.Remaining()), " after TYPE ", name, " ", type);
  }
  if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" &&
      type != "untyped") {
    return LineError(line, "unknown type ", Quote(type), " for ", name,
                     " (expected counter, gauge, histogram, summary or untyped)");
  }
  if (state_.type_line != 0) {
    return LineError(line, "second TYPE for ", name, " (the first is on line ", state_.type_line,
                     ")");
  }
  if (!family.samples.empty()) return LineError(line, "TYPE for ", name, " after its samples");
  family.type = std::string(type);
  state_.type_line = line;
  const std::string base(name);
  if (type == "histogram") {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      if (absl::Status status = Claim(line, base + suffix); !status.ok()) return status;
    }
  } else if (type == "summary") {
    for (const char* suffix : {"_sum", "_count"}) {
      if (absl::Status status = Claim(line, base + suffix); !status.ok()) return status;
    }
  }
  return absl::OkStatus();
}

absl::Status Parser::Sample(int line, std::string_view text) {
  Cursor in(text);
  in.SkipBlanks();
  PromSample sample;
  const std::string_view name = in.TakeWhile(IsMetricNameChar);
  if (!IsMetricName(name)) {
    return LineError(line, "expected a sample starting with a metric name, found ", Quote(text));
  }
  sample.name = std::string(name);
  bool separated = in.SkipBlanks();
  if (in.At('{')) {
    in.Advance();
    if (absl::Status status = ReadLabels(line, name, in, &sample.labels); !status.ok()) {
      return status;
    }
    separated = in.SkipBlanks();
  }
  if (in.AtEnd()) return LineError(line, "sample ", name, " has no value");
  if (!separated) {
    return LineError(line, "expected a blank before the value of ", name, ", found ",
                     Quote(in.Remaining()));
  }
  const std::string_view value = in.Token();
  std::optional<double> parsed = ParseGoFloat(value);
  if (!parsed) return LineError(line, "invalid value ", Quote(value), " for ", name);
  sample.value = *parsed;
  in.SkipBlanks();
  if (!in.AtEnd()) {
    // Milliseconds since the epoch, as Go's strconv.ParseInt(s, 10, 64) reads them.
    const std::string_view timestamp = in.Token();
    int64_t ms = 0;
    if (!absl::SimpleAtoi(AbslView(timestamp), &ms)) {
      return LineError(line, "invalid timestamp ", Quote(timestamp), " for ", name,
                       " (expected an integer of milliseconds)");
    }
    in.SkipBlanks();
    if (!in.AtEnd()) {
      return LineError(line, "unexpected ", Quote(in.Remaining()), " after the timestamp of ",
                       name);
    }
  }

  auto owner = owners_.find(sample.name);
  if (owner == owners_.end()) {
    if (absl::Status status = StartFamily(line, name); !status.ok()) return status;
  } else if (owner->second != families_.size() - 1) {
    return LineError(line, "family ", families_[owner->second].name,
                     " appears twice (it began on line ", first_lines_[owner->second],
                     " and another family came between)");
  }
  if (absl::Status status = CheckSample(line, sample); !status.ok()) return status;
  families_.back().samples.push_back(std::move(sample));
  return absl::OkStatus();
}

absl::Status Parser::StartFamily(int line, std::string_view name) {
  if (absl::Status status = FinishFamily(); !status.ok()) return status;
  if (auto owner = owners_.find(name); owner != owners_.end()) {
    const PromFamily& earlier = families_[owner->second];
    if (earlier.name == name) {
      return LineError(line, "family ", name, " appears twice (it began on line ",
                       first_lines_[owner->second], " and another family came between)");
    }
    return LineError(line, "family ", name, " has the name of a sample of ", earlier.type, " ",
                     earlier.name, " (line ", first_lines_[owner->second], ")");
  }
  PromFamily& family = families_.emplace_back();
  family.name = std::string(name);
  family.type = "untyped";
  first_lines_.push_back(line);
  state_ = FamilyState{};
  owners_.emplace(name, families_.size() - 1);
  return absl::OkStatus();
}

absl::Status Parser::Claim(int line, const std::string& sample_name) {
  const size_t current = families_.size() - 1;
  auto [owner, inserted] = owners_.emplace(sample_name, current);
  if (!inserted && owner->second != current) {
    const PromFamily& family = families_.back();
    return LineError(line, family.type, " ", family.name, " has samples named ", sample_name,
                     ", already used by family ", families_[owner->second].name, " (line ",
                     first_lines_[owner->second], ")");
  }
  return absl::OkStatus();
}

absl::Status Parser::CheckSample(int line, const PromSample& sample) {
  if (!state_.samples.emplace(sample.name, sample.labels).second) {
    return LineError(line, "duplicate sample ", sample.name, FormatLabels(sample.labels));
  }
  const std::string& type = families_.back().type;
  // A counter only goes up from zero; NaN (nothing known yet) is allowed.
  if (type == "counter" && sample.value < 0) {
    return LineError(line, "counter ", sample.name, FormatLabels(sample.labels), " is negative (",
                     Num(sample.value), ")");
  }
  if (type == "histogram") return CheckHistogramSample(line, sample);
  if (type == "summary") return CheckSummarySample(line, sample);
  return absl::OkStatus();
}

absl::Status Parser::CheckHistogramSample(int line, const PromSample& sample) {
  const std::string& base = families_.back().name;
  Labels others = sample.labels;
  auto le = others.find("le");
  if (sample.name != base + "_bucket") {
    if (sample.name == base) {
      return LineError(line, "histogram ", base, " has a sample named ", base, " (expected ", base,
                       "_bucket, ", base, "_sum or ", base, "_count)");
    }
    if (le != others.end()) {
      return LineError(line, sample.name, " has an le label (only ", base, "_bucket may)");
    }
    if (sample.name == base + "_count") {
      Series& series = SeriesOf(others, line);
      series.count = sample.value;
      series.count_line = line;
    } else {
      SeriesOf(others, line);
    }
    return absl::OkStatus();
  }

  if (le == others.end()) return LineError(line, sample.name, " has no le label");
  const std::string bound_text = le->second;
  const std::optional<double> bound = ParseGoFloat(bound_text);
  if (!bound || std::isnan(*bound)) {
    return LineError(line, "le=", Quote(bound_text), " of ", sample.name, " is not a number");
  }
  others.erase(le);
  Series& series = SeriesOf(others, line);
  const std::string where = Cat(base, FormatLabels(others));
  if (series.last_bound) {
    // The format requires increasing le, which also makes the +Inf bucket the last one.
    if (!(*bound > *series.last_bound)) {
      return LineError(line, "bucket le=", Quote(bound_text), " of ", where,
                       " follows le=", Quote(series.last_bound_text),
                       ": buckets must be in increasing le order");
    }
    // Bucket counts are cumulative: each includes every bucket below it.
    if (!(sample.value >= series.last_count)) {
      return LineError(line, "bucket le=", Quote(bound_text), " of ", where, " counts ",
                       Num(sample.value), ", less than the ", Num(series.last_count),
                       " of le=", Quote(series.last_bound_text),
                       " before it (bucket counts are cumulative)");
    }
  }
  series.last_bound = bound;
  series.last_bound_text = bound_text;
  series.last_count = sample.value;
  if (std::isinf(*bound) && *bound > 0) {
    series.inf_count = sample.value;
    series.inf_line = line;
  }
  return absl::OkStatus();
}

absl::Status Parser::CheckSummarySample(int line, const PromSample& sample) {
  const std::string& base = families_.back().name;
  Labels others = sample.labels;
  auto quantile = others.find("quantile");
  if (sample.name != base) {
    if (quantile != others.end()) {
      return LineError(line, sample.name, " has a quantile label (only ", base, " may)");
    }
    return absl::OkStatus();
  }
  if (quantile == others.end()) {
    return LineError(line, "summary sample ", base, FormatLabels(others), " has no quantile label");
  }
  const std::string text = quantile->second;
  const std::optional<double> phi = ParseGoFloat(text);
  if (!phi || !(*phi >= 0 && *phi <= 1)) {
    return LineError(line, "quantile=", Quote(text), " of ", base, " is not a number from 0 to 1");
  }
  others.erase(quantile);
  Series& series = SeriesOf(others, line);
  if (series.last_bound && !(*phi > *series.last_bound)) {
    return LineError(line, "quantile=", Quote(text), " of ", base, FormatLabels(others),
                     " follows quantile=", Quote(series.last_bound_text),
                     ": quantiles must be in increasing order");
  }
  series.last_bound = phi;
  series.last_bound_text = text;
  return absl::OkStatus();
}

Series& Parser::SeriesOf(const Labels& others, int line) {
  auto [it, inserted] = state_.series.try_emplace(others);
  if (inserted) it->second.first_line = line;
  return it->second;
}

absl::Status Parser::FinishFamily() {
  if (families_.empty() || families_.back().type != "histogram") return absl::OkStatus();
  const std::string& base = families_.back().name;
  for (const auto& [labels, series] : state_.series) {
    const std::string where = Cat(base, FormatLabels(labels));
    if (!series.inf_count) {
      return LineError(series.first_line, "histogram ", where, " has no le=\"+Inf\" bucket");
    }
    if (!series.count) {
      return LineError(series.first_line, "histogram ", where, " has no ", base, "_count");
    }
    if (!(*series.inf_count == *series.count)) {
      return LineError(std::max(series.inf_line, series.count_line), "histogram ", where,
                       ": its le=\"+Inf\" bucket (line ", series.inf_line, ") counts ",
                       Num(*series.inf_count), " but ", base, "_count (line ", series.count_line,
                       ") is ", Num(*series.count), "; they must be equal");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<PromFamily>> ParsePrometheusText(std::string_view text) {
  return Parser().Parse(text);
}

std::optional<double> FindSample(const std::vector<PromFamily>& families, const std::string& name,
                                 const std::map<std::string, std::string>& labels) {
  for (const PromFamily& family : families) {
    for (const PromSample& sample : family.samples) {
      if (sample.name == name && sample.labels == labels) return sample.value;
    }
  }
  return std::nullopt;
}

}  // namespace pgflow::testing
