#pragma once

// Options declared once (Fluent Bit's config_map, Debezium's Field). A component's options are
// a struct of documented fields whose initializers are the defaults, and one table beside the
// component's code that says, per key: its type, the field it fills, its range or choices, and
// its help. The one generic parser below applies the table (unknown keys rejected with a
// suggestion, required keys, types, ranges, choices, each error at its file, line and column),
// and `pgflow options` prints the same table, as text or as the markdown of
// docs/reference/pipeline-options.md.
//
//   struct JsonlSinkOptions : SinkOptions {
//     std::string path;    // "-" is stdout
//     bool fsync = true;
//   };
//   const OptionTable<JsonlSinkOptions>& JsonlSinkOptionTable() {
//     static const auto* table = new OptionTable<JsonlSinkOptions>({
//         StringOption("path", &JsonlSinkOptions::path).Required().NonEmpty()
//             .Help("File to append to; \"-\" is stdout."),
//         BoolOption("fsync", &JsonlSinkOptions::fsync).Help("fsync before acknowledging."),
//     });
//     return *table;
//   }
//
// A default shown by `pgflow options` is read from a default-constructed struct, so it lives in
// one place, the field's initializer; a default computed at run time ("one per core") is
// described with DefaultText. Tables are immutable once built and safe to share.

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/config_node.h"
#include "engine/str_cat.h"

namespace pgflow {

enum class OptionType : uint8_t {
  kString,
  kBool,
  kInt,
  kBytes,     // 64MiB
  kDuration,  // 250ms
  kChoice,    // one of a fixed set of words
  kList,      // a list of strings (a single string is a list of one)
  kMap,       // a mapping read by the option's own parser
  kSection,   // a mapping with a table of its own
};

// "string", "bool", "int", "bytes", "duration", "choice", "list", "map", "section".
std::string_view OptionTypeName(OptionType type);

class OptionSchema;

// What `pgflow options` shows of one option; no typed parts.
struct OptionDoc {
  std::string key;
  OptionType type = OptionType::kString;
  bool required = false;
  std::string default_text;  // as written in a file; empty when there is none
  std::string help;
  std::string rule;                       // "1..64", "at least 1MiB", "0 (off) or at least 100ms"
  std::vector<std::string> choices;       // kChoice
  const OptionSchema* section = nullptr;  // kSection: its own options
};

// Whether `value` has the shape `type` asks for: a scalar, a list (or one scalar), a mapping.
// "expected a list, got a mapping" otherwise.
absl::Status CheckShape(OptionType type, const ConfigNode& value);

// The untyped face of an option table: what key checks and documentation need.
class OptionSchema {
 public:
  virtual ~OptionSchema() = default;
  virtual std::span<const OptionDoc> docs() const = 0;
  // Fails if `node` is neither a mapping nor null, on a key not declared (suggesting the
  // closest one), and on a required key missing or without a value. `ignore` is a key the
  // caller reads itself (a sink's type key beside its common options).
  absl::Status CheckKeys(const ConfigNode& node, std::string_view ignore = {}) const;
};

// One option of the options struct T, type-erased. Built by the *Option functions below.
template <typename T>
struct Option {
  OptionDoc doc;
  // Reads a present, non-null value into `out`.
  std::function<absl::Status(const ConfigNode& value, T& out)> apply;
  // Options of an embedded table (EmbedOptions): each stands for itself in the table.
  std::vector<Option<T>> embedded;
  // An embedded table's check of the whole struct.
  std::function<absl::Status(const T& options, const ConfigNode& map)> check;
};

// The options of T, in the order they are shown.
template <typename T>
class OptionTable final : public OptionSchema {
 public:
  // Runs after every option was read: rules across options ("at least one listener"). An
  // error is reported as it is; use `map`'s Get/KeyNode/Error to place it.
  using Check = std::function<absl::Status(const T& options, const ConfigNode& map)>;

  OptionTable(std::initializer_list<Option<T>> options, Check check = nullptr) {
    for (const Option<T>& option : options) Add(option);
    if (check) checks_.push_back(std::move(check));
  }

  std::span<const OptionDoc> docs() const override { return docs_; }
  using Apply = std::function<absl::Status(const ConfigNode&, T&)>;
  // For EmbedOptions: the reader of docs()[i], and the table's checks.
  const std::vector<Apply>& applies() const { return applies_; }
  const std::vector<Check>& checks() const { return checks_; }

  // Reads `node` (a mapping, or null: every default) into *out, which holds the defaults.
  // `ignore` is a key the caller reads itself.
  // Under a ConfigErrors every key's error is noted and the next key read; the checks across
  // options run only when every key read well.
  absl::Status Parse(const ConfigNode& node, T* out, std::string_view ignore = {}) const {
    const size_t errors_before = ConfigErrors::Count();
    if (absl::Status s = CheckKeys(node, ignore); !s.ok()) return s;
    if (!node.IsMap() && !node.IsNull()) return absl::OkStatus();  // noted by CheckKeys
    for (size_t i = 0; i < docs_.size(); ++i) {
      std::optional<ConfigNode> value = node.Get(docs_[i].key);
      if (!value.has_value()) continue;
      absl::Status s = CheckShape(docs_[i].type, *value);
      if (s.ok()) s = applies_[i](*value, *out);
      if (absl::Status kept = ConfigErrors::Note(s); !kept.ok()) return kept;
    }
    if (ConfigErrors::Count() > errors_before) return absl::OkStatus();
    for (const Check& check : checks_) {
      if (absl::Status s = ConfigErrors::Note(check(*out, node)); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  absl::StatusOr<T> Parse(const ConfigNode& node) const {
    T out{};
    if (absl::Status s = Parse(node, &out); !s.ok()) return s;
    return out;
  }

 private:
  void Add(const Option<T>& option) {
    if (!option.embedded.empty() || option.check) {
      for (const Option<T>& inner : option.embedded) Add(inner);
      if (option.check) checks_.push_back(option.check);
      return;
    }
    docs_.push_back(option.doc);
    applies_.push_back(option.apply);
  }

  std::vector<OptionDoc> docs_;
  std::vector<Apply> applies_;
  std::vector<Check> checks_;
};

// ---------------------------------------------------------------------------------------------
// Declaring options.

namespace options_internal {

// A way to reach a field of T: a member, or a member of a member.
template <typename T, typename V>
using Field = std::function<V&(T&)>;

std::string FormatInt(int64_t value);
// The messages of the generic checks, shared by every typed option.
std::string RangeRule(std::string_view min, std::string_view max, bool zero_off);
absl::Status OutOfRange(const ConfigNode& node, const std::string& rule, std::string_view got);
absl::Status UnknownChoice(const ConfigNode& node, std::string_view what, std::string_view text,
                           std::span<const std::string_view> names);
// PathOption's parser: ConfigNode::AsPath into *out.
absl::Status ReadPath(const ConfigNode& node, std::string* out);

}  // namespace options_internal

// The builder of one option of T holding a V. Its methods return *this for chaining; it
// converts to Option<T> at the end of the declaration.
template <typename T, typename V>
class OptionBuilder {
 public:
  using Field = options_internal::Field<T, V>;
  using Parser = std::function<absl::Status(const ConfigNode& value, V* out)>;

  OptionBuilder(std::string_view key, OptionType type, Field field, Parser parse)
      : field_(std::move(field)), parse_(std::move(parse)) {
    doc_.key = std::string(key);
    doc_.type = type;
  }

  OptionBuilder& Help(std::string_view help) {
    doc_.help = std::string(help);
    return *this;
  }
  // Must be given (and have a value). A required option shows no default.
  OptionBuilder& Required() {
    doc_.required = true;
    no_default_ = true;
    return *this;
  }
  // Describes a default computed at run time ("one per core", "pgflow_<pipeline>"), shown
  // instead of the field's initial value.
  OptionBuilder& DefaultText(std::string_view text) {
    doc_.default_text = std::string(text);
    default_text_set_ = true;
    return *this;
  }
  // Shows no default (the option is off or empty unless given).
  OptionBuilder& NoDefault() {
    no_default_ = true;
    return *this;
  }
  // A string or a list must not be empty; `hint` follows the message.
  OptionBuilder& NonEmpty(std::string_view hint = {}) {
    std::string message =
        Cat("must not be empty", hint.empty() ? "" : " (", hint, hint.empty() ? "" : ")");
    return Check([message](const V& v) {
      return v.empty() ? absl::InvalidArgumentError(message) : absl::OkStatus();
    });
  }
  // Integers, byte sizes and durations: the value must lie in [min, max].
  OptionBuilder& Range(V min, V max) {
    min_ = min;
    max_ = max;
    has_min_ = has_max_ = true;
    return *this;
  }
  OptionBuilder& AtLeast(V min) {
    min_ = min;
    has_min_ = true;
    return *this;
  }
  // Byte sizes and durations: 0 is allowed beside the range and means "off".
  OptionBuilder& ZeroMeansOff() {
    zero_off_ = true;
    return *this;
  }
  // kChoice: the words and their values; `what` names the option in errors ("unknown
  // snapshot mode 'x'"), the key by default.
  OptionBuilder& Choices(std::vector<std::pair<std::string_view, V>> choices,
                         std::string_view what = {}) {
    choices_ = std::move(choices);
    what_ = what.empty() ? doc_.key : std::string(what);
    return *this;
  }
  // kSection: the nested table, for documentation.
  OptionBuilder& Section(const OptionSchema* section) {
    doc_.section = section;
    return *this;
  }
  // A further rule on the value: a non-OK status's message is reported at the value.
  OptionBuilder& Check(std::function<absl::Status(const V&)> check) {
    checks_.push_back(std::move(check));
    return *this;
  }

  operator Option<T>() const {
    Option<T> option;
    option.doc = doc_;
    FillRuleAndDefault(&option.doc);
    option.apply = [self = *this](const ConfigNode& node, T& out) -> absl::Status {
      // Read into the field itself: a custom parser may fill a struct field by field (an
      // error fails the whole parse, so a half-read value is never used).
      V& value = self.field_(out);
      if (self.parse_) {
        if (absl::Status s = self.parse_(node, &value); !s.ok()) return s;
      } else if (absl::Status s = self.ParseBuiltIn(node, &value); !s.ok()) {
        return s;
      }
      for (const auto& check : self.checks_) {
        if (absl::Status s = check(value); !s.ok()) return node.Error(Sv(s.message()));
      }
      return absl::OkStatus();
    };
    return option;
  }

 private:
  // How a value of V is shown as a default and in ranges.
  static std::string Show(const V& v) {
    if constexpr (std::is_same_v<V, bool>) {
      return v ? "true" : "false";
    } else if constexpr (std::is_same_v<V, std::chrono::milliseconds>) {
      return FormatDuration(v);
    } else if constexpr (std::is_same_v<V, std::string>) {
      return v;
    } else if constexpr (std::is_same_v<V, std::vector<std::string>>) {
      return Join(v, ", ");
    } else if constexpr (std::is_integral_v<V>) {
      return options_internal::FormatInt(static_cast<int64_t>(v));
    } else {
      return "";
    }
  }
  std::string ShowValue(const V& v) const {
    if (doc_.type == OptionType::kBytes) {
      if constexpr (std::is_integral_v<V>) return FormatBytes(static_cast<uint64_t>(v));
    }
    if (doc_.type == OptionType::kChoice) {
      for (const auto& [name, value] : choices_) {
        if constexpr (std::equality_comparable<V>) {
          if (value == v) return std::string(name);
        }
      }
      return "";
    }
    return Show(v);
  }

  void FillRuleAndDefault(OptionDoc* doc) const {
    if (has_min_ || has_max_) {
      if constexpr (std::is_integral_v<V> || std::is_same_v<V, std::chrono::milliseconds>) {
        doc->rule = options_internal::RangeRule(has_min_ ? ShowValue(min_) : "",
                                                has_max_ ? ShowValue(max_) : "", zero_off_);
      }
    }
    for (const auto& [name, value] : choices_) doc->choices.emplace_back(name);
    if (default_text_set_ || no_default_) return;
    if constexpr (std::is_default_constructible_v<T>) {
      T defaults{};
      doc->default_text = ShowValue(field_(defaults));
      if (zero_off_ && doc->default_text == "0") doc->default_text = "0 (off)";
    }
  }

  absl::Status ParseBuiltIn(const ConfigNode& node, V* out) const {
    if (doc_.type == OptionType::kChoice) {
      absl::StatusOr<std::string> text = node.AsString();
      if (!text.ok()) return text.status();
      std::vector<std::string_view> names;
      for (const auto& [name, value] : choices_) {
        if (name == *text) {
          *out = value;
          return absl::OkStatus();
        }
        names.push_back(name);
      }
      return options_internal::UnknownChoice(node, what_, *text, names);
    }
    if constexpr (std::is_same_v<V, bool>) {
      absl::StatusOr<bool> b = node.AsBool();
      if (!b.ok()) return b.status();
      *out = *b;
    } else if constexpr (std::is_same_v<V, std::string>) {
      absl::StatusOr<std::string> s = node.AsString();
      if (!s.ok()) return s.status();
      *out = *std::move(s);
    } else if constexpr (std::is_same_v<V, std::vector<std::string>>) {
      absl::StatusOr<std::vector<std::string>> list = node.AsStringList();
      if (!list.ok()) return list.status();
      *out = *std::move(list);
    } else if constexpr (std::is_same_v<V, std::chrono::milliseconds>) {
      absl::StatusOr<std::chrono::milliseconds> d = node.AsDuration();
      if (!d.ok()) return d.status();
      if (zero_off_ && d->count() == 0) {
        *out = *d;
        return absl::OkStatus();
      }
      if ((has_min_ && *d < min_) || (has_max_ && *d > max_)) {
        return options_internal::OutOfRange(
            node,
            options_internal::RangeRule(has_min_ ? ShowValue(min_) : "",
                                        has_max_ ? ShowValue(max_) : "", zero_off_),
            FormatDuration(*d));
      }
      *out = *d;
    } else if constexpr (std::is_integral_v<V>) {
      if (doc_.type == OptionType::kBytes) {
        absl::StatusOr<uint64_t> b = node.AsBytes();
        if (!b.ok()) return b.status();
        if (!(zero_off_ && *b == 0) && ((has_min_ && *b < static_cast<uint64_t>(min_)) ||
                                        (has_max_ && *b > static_cast<uint64_t>(max_)))) {
          return options_internal::OutOfRange(
              node,
              options_internal::RangeRule(has_min_ ? ShowValue(min_) : "",
                                          has_max_ ? ShowValue(max_) : "", zero_off_),
              Cat(*b, " bytes"));
        }
        *out = static_cast<V>(*b);
      } else {
        const int64_t lo = has_min_ ? static_cast<int64_t>(min_)
                                    : static_cast<int64_t>(std::numeric_limits<V>::min());
        const int64_t hi =
            has_max_ ? static_cast<int64_t>(max_)
            : std::cmp_greater(std::numeric_limits<V>::max(), std::numeric_limits<int64_t>::max())
                ? std::numeric_limits<int64_t>::max()
                : static_cast<int64_t>(std::numeric_limits<V>::max());
        absl::StatusOr<int64_t> n = node.AsInt(lo, hi);
        if (!n.ok()) return n.status();
        *out = static_cast<V>(*n);
      }
    } else {
      return node.Error("this option has no parser");  // a declaration mistake
    }
    return absl::OkStatus();
  }

  OptionDoc doc_;
  Field field_;
  Parser parse_;
  std::vector<std::function<absl::Status(const V&)>> checks_;
  V min_{};
  V max_{};
  bool has_min_ = false;
  bool has_max_ = false;
  bool zero_off_ = false;
  bool default_text_set_ = false;
  bool no_default_ = false;
  std::vector<std::pair<std::string_view, V>> choices_;
  std::string what_;
};

namespace options_internal {

// The field at the end of a chain of members: &Options::field, or &Options::member,
// &Member::field, ...
template <typename T, typename M>
auto Chain(M T::*first) {
  return [first](T& t) -> M& { return t.*first; };
}
template <typename T, typename M, typename Next, typename... Rest>
auto Chain(M T::*first, Next next, Rest... rest) {
  return [ first, inner = Chain(next, rest...) ](T & t) -> auto& { return inner(t.*first); };
}
template <typename T, typename... Members>
using ValueAt =
    std::remove_reference_t<decltype(Chain(std::declval<Members>()...)(std::declval<T&>()))>;

template <typename T, typename... Members>
OptionBuilder<T, ValueAt<T, Members...>> Make(
    std::string_view key, OptionType type,
    typename OptionBuilder<T, ValueAt<T, Members...>>::Parser parse, Members... members) {
  return OptionBuilder<T, ValueAt<T, Members...>>(key, type, Chain(members...), std::move(parse));
}

}  // namespace options_internal

// The declarations. Each takes the key and the field, as `&Options::field` or, for a field of a
// member struct, `&Options::member, &Member::field` (and so on).
template <typename T, typename M, typename... Rest>
auto StringOption(std::string_view key, M T::*first, Rest... rest) {
  static_assert(std::is_same_v<options_internal::ValueAt<T, M T::*, Rest...>, std::string>);
  return options_internal::Make<T>(key, OptionType::kString, nullptr, first, rest...);
}
// A file or directory: a relative path is relative to the configuration file's directory
// (ConfigNode::AsPath), and the field holds it so resolved.
template <typename T, typename M, typename... Rest>
auto PathOption(std::string_view key, M T::*first, Rest... rest) {
  static_assert(std::is_same_v<options_internal::ValueAt<T, M T::*, Rest...>, std::string>);
  return options_internal::Make<T>(key, OptionType::kString, options_internal::ReadPath, first,
                                   rest...);
}
template <typename T, typename M, typename... Rest>
auto BoolOption(std::string_view key, M T::*first, Rest... rest) {
  static_assert(std::is_same_v<options_internal::ValueAt<T, M T::*, Rest...>, bool>);
  return options_internal::Make<T>(key, OptionType::kBool, nullptr, first, rest...);
}
// An integer of any width; the range defaults to the type's.
template <typename T, typename M, typename... Rest>
auto IntOption(std::string_view key, M T::*first, Rest... rest) {
  static_assert(std::is_integral_v<options_internal::ValueAt<T, M T::*, Rest...>>);
  return options_internal::Make<T>(key, OptionType::kInt, nullptr, first, rest...);
}
// A byte size (64MiB) into an unsigned integer field.
template <typename T, typename M, typename... Rest>
auto BytesOption(std::string_view key, M T::*first, Rest... rest) {
  static_assert(std::is_integral_v<options_internal::ValueAt<T, M T::*, Rest...>>);
  return options_internal::Make<T>(key, OptionType::kBytes, nullptr, first, rest...);
}
template <typename T, typename M, typename... Rest>
auto DurationOption(std::string_view key, M T::*first, Rest... rest) {
  static_assert(
      std::is_same_v<options_internal::ValueAt<T, M T::*, Rest...>, std::chrono::milliseconds>);
  return options_internal::Make<T>(key, OptionType::kDuration, nullptr, first, rest...);
}
// A list of strings (a single string is a list of one).
template <typename T, typename M, typename... Rest>
auto ListOption(std::string_view key, M T::*first, Rest... rest) {
  static_assert(
      std::is_same_v<options_internal::ValueAt<T, M T::*, Rest...>, std::vector<std::string>>);
  return options_internal::Make<T>(key, OptionType::kList, nullptr, first, rest...);
}
// One word of a fixed set into a field (an enum, usually); give the words with Choices().
template <typename T, typename M, typename... Rest>
auto ChoiceOption(std::string_view key, M T::*first, Rest... rest) {
  static_assert(std::equality_comparable<options_internal::ValueAt<T, M T::*, Rest...>>);
  return options_internal::Make<T>(key, OptionType::kChoice, nullptr, first, rest...);
}
// A value read by a parser of its own, `parse(node, &field)` with the present, non-null node
// (`type` says how it is shown): a list of table names, a mapping of properties.
template <typename Parse, typename T, typename M, typename... Rest>
auto CustomOption(std::string_view key, OptionType type, Parse parse, M T::*first, Rest... rest) {
  return options_internal::Make<T>(key, type, std::move(parse), first, rest...);
}

// A key read by a parser of its own into the options struct as a whole, for a key that fills
// several fields (brokers and where they were written). Write CustomOption<Options>(...).
template <typename T>
OptionBuilder<T, T> CustomOption(std::string_view key, OptionType type,
                                 typename OptionBuilder<T, T>::Parser parse) {
  OptionBuilder<T, T> builder(
      key, type, [](T& t) -> T& { return t; }, std::move(parse));
  builder.NoDefault();
  return builder;
}

// A nested mapping with a table of its own (`snapshot: {mode, workers}`), into a member
// struct. The table must outlive this one (tables are static).
template <typename T, typename M>
OptionBuilder<T, M> SectionOption(std::string_view key, M T::*member, const OptionTable<M>& table) {
  OptionBuilder<T, M> builder(
      key, OptionType::kSection, options_internal::Chain(member),
      [&table](const ConfigNode& node, M* out) -> absl::Status {
        if (!node.IsMap()) return node.Error(Cat("expected a mapping, got ", node.KindName()));
        return table.Parse(node, out);
      });
  builder.NoDefault().Section(&table);
  return builder;
}

// The options of a member struct's table declared at this level, as if they were this table's
// own (the Kafka client's brokers, security and properties in both Kafka components). The
// table must outlive this one (tables are static).
template <typename T, typename M>
Option<T> EmbedOptions(M T::*member, const OptionTable<M>& table) {
  Option<T> group;
  for (size_t i = 0; i < table.docs().size(); ++i) {
    Option<T> lifted;
    lifted.doc = table.docs()[i];
    lifted.apply = [member, apply = table.applies()[i]](const ConfigNode& node, T& out) {
      return apply(node, out.*member);
    };
    group.embedded.push_back(std::move(lifted));
  }
  if (!table.checks().empty()) {
    group.check = [member, &table](const T& options, const ConfigNode& map) -> absl::Status {
      for (const auto& check : table.checks()) {
        if (absl::Status s = check(options.*member, map); !s.ok()) return s;
      }
      return absl::OkStatus();
    };
  }
  return group;
}

// ---------------------------------------------------------------------------------------------
// Documentation.

// Appends `schema`'s options under `prefix` ("sinks.<name>.jsonl"), sections expanded: as
// aligned text lines for a terminal, or as markdown table rows
// (| `key` | type | default | meaning |).
void AppendOptionsText(std::string_view prefix, const OptionSchema& schema, std::string* out);
void AppendOptionsMarkdown(std::string_view prefix, const OptionSchema& schema, std::string* out);

}  // namespace pgflow
