#include "engine/options.h"

#include <algorithm>

namespace pgflow {

std::string_view OptionTypeName(OptionType type) {
  switch (type) {
    case OptionType::kString:
      return "string";
    case OptionType::kBool:
      return "bool";
    case OptionType::kInt:
      return "int";
    case OptionType::kBytes:
      return "bytes";
    case OptionType::kDuration:
      return "duration";
    case OptionType::kChoice:
      return "choice";
    case OptionType::kList:
      return "list";
    case OptionType::kMap:
      return "map";
    case OptionType::kSection:
      return "section";
  }
  return "value";
}

absl::Status CheckShape(OptionType type, const ConfigNode& value) {
  switch (type) {
    case OptionType::kString:
    case OptionType::kChoice:
      if (value.IsScalar()) return absl::OkStatus();
      return value.Error(Cat("expected a string, got ", value.KindName()));
    case OptionType::kBool:
      if (value.IsScalar()) return absl::OkStatus();
      return value.Error(Cat("expected true or false, got ", value.KindName()));
    case OptionType::kInt:
      if (value.IsScalar()) return absl::OkStatus();
      return value.Error(Cat("expected an integer, got ", value.KindName()));
    case OptionType::kBytes:
      if (value.IsScalar()) return absl::OkStatus();
      return value.Error(Cat("expected a byte size like 64MiB, got ", value.KindName()));
    case OptionType::kDuration:
      if (value.IsScalar()) return absl::OkStatus();
      return value.Error(
          Cat("expected a duration like 250ms, 5s, 2m or 1h, got ", value.KindName()));
    case OptionType::kList:
      if (value.IsScalar() || value.IsSequence()) return absl::OkStatus();
      return value.Error(Cat("expected a list, got ", value.KindName()));
    case OptionType::kMap:
    case OptionType::kSection:
      if (value.IsMap()) return absl::OkStatus();
      return value.Error(Cat("expected a mapping, got ", value.KindName()));
  }
  return absl::OkStatus();
}

absl::Status OptionSchema::CheckKeys(const ConfigNode& node, std::string_view ignore) const {
  if (!node.IsMap() && !node.IsNull()) {
    return ConfigErrors::Note(node.Error(Cat("expected a mapping, got ", node.KindName())));
  }
  std::span<const OptionDoc> specs = docs();
  std::vector<std::string_view> known;
  for (const OptionDoc& spec : specs) known.push_back(spec.key);
  std::vector<std::pair<std::string, ConfigNode>> entries = node.Entries();
  bool unknown = false;
  for (const auto& [key, value] : entries) {
    if (key != ignore && std::find(known.begin(), known.end(), key) == known.end()) {
      unknown = true;
      absl::Status s = ConfigErrors::Note(node.KeyNode(key)->Error(
          Cat("unknown key '", key, "' ", DidYouMean(key, known, "expected one of"))));
      if (!s.ok()) return s;
    }
  }
  for (const OptionDoc& spec : specs) {
    // A required key missing beside an unknown one is most likely that one, misspelt: said once.
    if (!spec.required || unknown) continue;
    auto entry = std::find_if(entries.begin(), entries.end(),
                              [&spec](const auto& e) { return e.first == spec.key; });
    absl::Status s;
    if (entry == entries.end()) {
      s = node.Error(Cat("missing required key '", spec.key, "'"));
    } else if (entry->second.IsNull()) {
      s = node.KeyNode(spec.key)->Error(Cat("required key '", spec.key, "' has no value"));
    }
    if (absl::Status kept = ConfigErrors::Note(s); !kept.ok()) return kept;
  }
  return absl::OkStatus();
}

namespace options_internal {

std::string FormatInt(int64_t value) { return Cat(value); }

std::string RangeRule(std::string_view min, std::string_view max, bool zero_off) {
  std::string rule = zero_off ? "0 (off) or " : "";
  if (!min.empty() && !max.empty()) return Cat(rule, "between ", min, " and ", max);
  if (!min.empty()) return Cat(rule, "at least ", min);
  return Cat(rule, "at most ", max);
}

absl::Status OutOfRange(const ConfigNode& node, const std::string& rule, std::string_view got) {
  return node.Error(Cat("must be ", rule, ", got ", got));
}

absl::Status UnknownChoice(const ConfigNode& node, std::string_view what, std::string_view text,
                           std::span<const std::string_view> names) {
  return node.Error(
      Cat("unknown ", what, " '", text, "' ", DidYouMean(text, names, "expected one of")));
}

absl::Status ReadPath(const ConfigNode& node, std::string* out) {
  absl::StatusOr<std::string> path = node.AsPath();
  if (!path.ok()) return path.status();
  *out = *std::move(path);
  return absl::OkStatus();
}

}  // namespace options_internal

namespace {

std::string JoinKey(std::string_view prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : Cat(prefix, ".", key);
}

// The type as shown: the words of a choice, the name of the others.
std::string TypeText(const OptionDoc& doc, std::string_view separator) {
  if (doc.type == OptionType::kChoice && !doc.choices.empty()) {
    return Join(doc.choices, separator);
  }
  return std::string(OptionTypeName(doc.type));
}

// The help, with the range after it.
std::string Meaning(const OptionDoc& doc) {
  std::string meaning = doc.help;
  if (!doc.rule.empty()) {
    while (!meaning.empty() && (meaning.back() == '.' || meaning.back() == ' ')) {
      meaning.pop_back();
    }
    meaning += Cat(meaning.empty() ? "" : "; ", doc.rule, ".");
  }
  return meaning;
}

}  // namespace

void AppendOptionsText(std::string_view prefix, const OptionSchema& schema, std::string* out) {
  out->append(prefix);
  out->push_back('\n');
  for (const OptionDoc& doc : schema.docs()) {
    if (doc.type == OptionType::kSection) continue;
    std::string meta = TypeText(doc, "|");
    if (doc.required) meta += ", required";
    if (!doc.default_text.empty()) meta += Cat(", default ", doc.default_text);
    std::string key = doc.key;
    key.resize(std::max<size_t>(key.size(), 20), ' ');
    meta.resize(std::max<size_t>(meta.size(), 28), ' ');
    out->append(Cat("  ", key, " ", meta, " ", Meaning(doc), "\n"));
  }
  out->push_back('\n');
  for (const OptionDoc& doc : schema.docs()) {
    if (doc.type == OptionType::kSection && doc.section != nullptr) {
      AppendOptionsText(JoinKey(prefix, doc.key), *doc.section, out);
    }
  }
}

void AppendOptionsMarkdown(std::string_view prefix, const OptionSchema& schema, std::string* out) {
  for (const OptionDoc& doc : schema.docs()) {
    std::string key = JoinKey(prefix, doc.key);
    if (doc.type == OptionType::kSection && doc.section != nullptr) {
      AppendOptionsMarkdown(key, *doc.section, out);
      continue;
    }
    std::string type = doc.type == OptionType::kChoice && !doc.choices.empty()
                           ? Cat("`", Join(doc.choices, "` \\| `"), "`")
                           : std::string(OptionTypeName(doc.type));
    std::string default_text = doc.required               ? "required"
                               : doc.default_text.empty() ? "none"
                                                          : Cat("`", doc.default_text, "`");
    std::string meaning;
    for (char c : Meaning(doc)) {
      if (c == '|') meaning += '\\';  // a bare pipe would end the cell
      meaning += c;
    }
    out->append(Cat("| `", key, "` | ", type, " | ", default_text, " | ", meaning, " |\n"));
  }
}

}  // namespace pgflow
