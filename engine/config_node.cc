#include "engine/config_node.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>

#include "absl/strings/ascii.h"
#include "engine/str_cat.h"
#include "yaml-cpp/depthguard.h"
#include "yaml-cpp/yaml.h"

namespace pgflow {
namespace {

constexpr size_t kMaxFileBytes = 16u << 20;
// Bound the structure walk: an alias can make a small file a huge (or cyclic) tree.
constexpr size_t kMaxNodes = 100000;
constexpr int kMaxDepth = 100;

using std::chrono::milliseconds;

std::string_view StripLeadingSpace(std::string_view text) {
  while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  return text;
}

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
std::string_view Closest(std::string_view word, std::span<const std::string_view> candidates) {
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

namespace {
thread_local ConfigErrors* active_errors = nullptr;
}  // namespace

ConfigErrors::ConfigErrors() : previous_(active_errors) { active_errors = this; }
ConfigErrors::~ConfigErrors() { active_errors = previous_; }

absl::Status ConfigErrors::Note(absl::Status error) {
  if (error.ok() || active_errors == nullptr) return error;
  ConfigErrors& e = *active_errors;
  std::string message(error.message());
  if (std::find(e.errors_.begin(), e.errors_.end(), message) != e.errors_.end()) {
    return absl::OkStatus();
  }
  if (e.errors_.size() < kMaxKept) {
    e.errors_.push_back(std::move(message));
  } else {
    ++e.dropped_;
  }
  return absl::OkStatus();
}

size_t ConfigErrors::Count() {
  return active_errors == nullptr ? 0 : active_errors->errors_.size() + active_errors->dropped_;
}

absl::Status ConfigErrors::Finish(const absl::Status& result) {
  std::vector<std::string> all;
  if (!result.ok()) all.emplace_back(result.message());
  for (const std::string& e : errors_) {
    if (std::find(all.begin(), all.end(), e) == all.end()) all.push_back(e);
  }
  if (all.empty()) return absl::OkStatus();
  std::string text = Join(all, "\n");
  if (dropped_ > 0) text += Cat("\n(and ", dropped_, " more errors)");
  return absl::InvalidArgumentError(text);
}

absl::Status ConfigNode::Error(std::string_view message) const {
  return absl::InvalidArgumentError(
      Cat(Position(), ": ", path_, path_.empty() ? "" : ": ", message));
}

bool ConfigNode::IsMap() const { return node_ != nullptr && node_->IsMap(); }
bool ConfigNode::IsSequence() const { return node_ != nullptr && node_->IsSequence(); }
bool ConfigNode::IsScalar() const { return node_ != nullptr && node_->IsScalar(); }
bool ConfigNode::IsNull() const { return node_ != nullptr && node_->IsNull(); }

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

absl::StatusOr<std::string> ConfigNode::AsPath() const {
  absl::StatusOr<std::string> text = AsString();
  if (!text.ok()) return text.status();
  return ResolveConfigPath(file_, *text);
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

std::string_view ConfigNode::KindName() const { return Kind(node_); }

// ---------------------------------------------------------------------------------------------
// Files and messages.

std::string DidYouMean(std::string_view word, std::span<const std::string_view> candidates,
                       std::string_view label) {
  std::string out = "(";
  std::string_view closest = Closest(word, candidates);
  if (!closest.empty()) out += Cat("did you mean '", closest, "'? ");
  if (candidates.empty()) {
    out += "there are none";
  } else {
    out += Cat(label, ": ", Join(candidates, ", "));
  }
  out += ")";
  return out;
}

absl::StatusOr<ConfigNode> ParseConfigDocument(std::string_view yaml_text,
                                               std::string_view file_name,
                                               std::string_view expected) {
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
      return absl::InvalidArgumentError(
          Cat(Position(file, 0, 0), ": the file is empty: expected ", expected));
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
    if (!root.IsMap()) return root.Error(Cat("expected ", expected, ", got ", root.KindName()));
    return root;
  } catch (const std::exception& e) {
    // Defensive: yaml-cpp accessors throw on misuse; nothing escapes.
    return absl::InternalError(Cat(file, ": unexpected error: ", e.what()));
  }
}

std::string ResolveConfigPath(std::string_view file, std::string_view path) {
  const std::filesystem::path named(path);
  if (path.empty() || named.is_absolute()) return std::string(path);
  return (std::filesystem::path(file).parent_path() / named).string();
}

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  auto fail = [&path](int error) {
    std::string message = Cat(path, ": cannot read the file: ", std::strerror(error));
    if (error == ENOENT) return absl::NotFoundError(message);
    if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(message);
    return absl::InvalidArgumentError(message);
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int error = errno;  // st is not filled in: read nothing of it
    ::close(fd);
    return fail(error);
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return fail(EISDIR);
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
          Cat(path, ": the file is larger than ", kMaxFileBytes >> 20, " MiB"));
    }
  }
  ::close(fd);
  return text;
}

absl::Status CheckPlainName(std::string_view name, size_t max_length, std::string_view what) {
  bool plain = !name.empty() && name.size() <= max_length &&
               std::all_of(name.begin(), name.end(), [](char c) {
                 return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
               });
  if (plain) return absl::OkStatus();
  return absl::InvalidArgumentError(Cat("invalid ", what, " '", name,
                                        "': use a-z, 0-9 and '_', at most ", max_length,
                                        " characters"));
}

std::string FormatBytes(uint64_t bytes) {
  static constexpr std::pair<std::string_view, int> kUnits[] = {
      {"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}};
  for (const auto& [unit, shift] : kUnits) {
    if (bytes != 0 && bytes % (uint64_t{1} << shift) == 0) return Cat(bytes >> shift, unit);
  }
  return Cat(bytes);
}

std::string FormatDuration(milliseconds d) {
  if (d.count() == 0) return "0";
  if (d.count() % 3600000 == 0) return Cat(d.count() / 3600000, "h");
  if (d.count() % 60000 == 0) return Cat(d.count() / 60000, "m");
  if (d.count() % 1000 == 0) return Cat(d.count() / 1000, "s");
  return Cat(d.count(), "ms");
}

}  // namespace pgflow
