#include "transformers/cast.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "engine/str_cat.h"
#include "transformers/table_patterns.h"
#include "transformers/value_text.h"

namespace pgflow {
namespace {

// [+-]digits[.digits][e[+-]digits], or [+-].digits: numeric's input syntax.
bool IsDecimal(std::string_view t) {
  size_t i = 0;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
  size_t digits = 0;
  while (i < t.size() && absl::ascii_isdigit(static_cast<unsigned char>(t[i]))) ++i, ++digits;
  if (i < t.size() && t[i] == '.') {
    ++i;
    while (i < t.size() && absl::ascii_isdigit(static_cast<unsigned char>(t[i]))) ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    size_t exp = 0;
    while (i < t.size() && absl::ascii_isdigit(static_cast<unsigned char>(t[i]))) ++i, ++exp;
    if (exp == 0) return false;
  }
  return i == t.size();
}

// The power of ten `factor` is (0.01 -> -2, 1000 -> 3), if it is one.
std::optional<int> PowerOfTen(std::string_view factor) {
  std::string f(factor);
  if (f.empty() || f[0] == '-' || f[0] == '+') return std::nullopt;
  size_t dot = f.find('.');
  std::string digits = dot == std::string::npos ? f : f.substr(0, dot) + f.substr(dot + 1);
  const int point = dot == std::string::npos ? static_cast<int>(f.size()) : static_cast<int>(dot);
  size_t first = digits.find_first_not_of('0');
  if (first == std::string::npos || digits[first] != '1') return std::nullopt;
  if (digits.find_first_not_of('0', first + 1) != std::string::npos) return std::nullopt;
  return point - static_cast<int>(first) - 1;
}

// Decimal text (no exponent) with its point moved `shift` places right.
std::string ShiftPoint(std::string_view number, int shift) {
  std::string sign;
  if (!number.empty() && (number[0] == '-' || number[0] == '+')) {
    if (number[0] == '-') sign = "-";
    number.remove_prefix(1);
  }
  size_t dot = number.find('.');
  std::string digits = dot == std::string_view::npos
                           ? std::string(number)
                           : Cat(number.substr(0, dot), number.substr(dot + 1));
  int point = dot == std::string_view::npos ? static_cast<int>(number.size())
                                            : static_cast<int>(dot);
  point += shift;
  if (point <= 0) {
    digits = std::string(static_cast<size_t>(-point) + 1, '0') + digits;
    point = 1;
  }
  if (point > static_cast<int>(digits.size())) {
    digits.append(static_cast<size_t>(point) - digits.size(), '0');
  }
  std::string whole = digits.substr(0, static_cast<size_t>(point));
  std::string fraction = digits.substr(static_cast<size_t>(point));
  size_t nz = whole.find_first_not_of('0');
  whole = nz == std::string::npos ? "0" : whole.substr(nz);
  std::string out = sign + whole;
  if (!fraction.empty()) out += "." + fraction;
  if (out == "-0" || (sign == "-" && out.find_first_not_of("-0.") == std::string::npos)) {
    out = out.substr(1);
  }
  return out;
}

// Rounds decimal text half away from zero to an integer, as numeric -> int does.
std::optional<std::string> RoundDecimal(std::string_view text) {
  if (text.find_first_of("eE") != std::string_view::npos) {
    long double v = std::strtold(std::string(text).c_str(), nullptr);
    // Beyond int64 (llroundl would wrap to its minimum).
    if (!std::isfinite(v) || v >= 9223372036854775807.0L || v < -9223372036854775808.0L) {
      return std::nullopt;
    }
    return std::to_string(std::llroundl(v));
  }
  std::string sign;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    if (text[0] == '-') sign = "-";
    text.remove_prefix(1);
  }
  size_t dot = text.find('.');
  std::string whole(text.substr(0, dot));
  if (whole.empty()) whole = "0";
  if (dot != std::string_view::npos && dot + 1 < text.size() && text[dot + 1] >= '5') {
    int i = static_cast<int>(whole.size()) - 1;
    for (; i >= 0 && whole[static_cast<size_t>(i)] == '9'; --i) whole[static_cast<size_t>(i)] = '0';
    if (i < 0) {
      whole.insert(whole.begin(), '1');
    } else {
      ++whole[static_cast<size_t>(i)];
    }
  }
  size_t nz = whole.find_first_not_of('0');
  whole = nz == std::string::npos ? "0" : whole.substr(nz);
  return whole == "0" ? whole : sign + whole;
}

absl::Status ReadColumns(const ConfigNode& node, std::vector<CastColumn>* columns) {
  if (!node.IsMap() || node.Entries().empty()) {
    return node.Error("expected a mapping of column: type, or column: {type, scale}");
  }
  for (auto& [column, value] : node.Entries()) {
    CastColumn cast{column, {}, std::nullopt};
    std::string type;
    if (value.IsMap()) {
      for (auto& [key, v] : value.Entries()) {
        absl::StatusOr<std::string> text = v.AsString();
        if (!text.ok()) return text.status();
        if (key == "type") {
          type = *text;
        } else if (key == "scale") {
          if (!IsDecimal(*text)) return v.Error("expected a number, such as 0.01 or 1000");
          cast.scale = *text;
        } else {
          return v.Error(Cat("unknown key '", key, "' (expected type, scale)"));
        }
      }
      if (type.empty()) return value.Error("expected `type`");
    } else {
      absl::StatusOr<std::string> text = value.AsString();
      if (!text.ok()) return text.status();
      type = *text;
    }
    std::optional<OutputType> parsed = ParseOutputType(type);
    if (!parsed) {
      return value.Error(Cat("unknown type '", type,
                             "' (expected text, varchar, smallint, integer, bigint, numeric, real, "
                             "double precision, boolean, date, timestamp, timestamptz, json, "
                             "jsonb or uuid)"));
    }
    cast.type = *parsed;
    columns->push_back(std::move(cast));
  }
  return absl::OkStatus();
}

class CastTransform : public ReshapingTransform {
 public:
  CastTransform(TransformContext context, std::shared_ptr<const CastOptions> options)
      : ReshapingTransform(std::move(context), options->tables), options_(std::move(options)) {}

 protected:
  absl::StatusOr<ShapeMap> Plan(const std::string& schema, const std::string& name,
                                const std::vector<ShapeColumn>& columns,
                                bool from_ddl) const override {
    ShapeMap map = Unchanged(schema, name, columns);
    for (const CastColumn& cast : options_->columns) {
      size_t i = 0;
      while (i < columns.size() && columns[i].name != cast.column) ++i;
      if (i == columns.size()) {
        if (!from_ddl && NamesExactly(schema, name)) {
          return NoSuchColumn("cast", schema, name, cast.column);
        }
        continue;
      }
      if (columns[i].is_key) {
        return absl::FailedPreconditionError(
            Cat(context().where, " (cast): ", schema, ".", name, ".", cast.column,
                " is part of the key; a key keeps its type"));
      }
      map.columns[i].type = cast.type;
    }
    return map;
  }

  absl::Status Fill(const Version& version, Change* change) override {
    const TableSchema& table = *version.output;
    for (const CastColumn& cast : options_->columns) {
      size_t i = 0;
      while (i < table.columns.size() && table.columns[i].name != cast.column) ++i;
      if (i == table.columns.size()) continue;
      for (Row* row : {&change->after, &change->before}) {
        if (row->size() != table.columns.size()) continue;
        Value& value = (*row)[i];
        std::optional<std::string> text = ValueText(value, version.input->columns[i]);
        if (!text) {  // NULL, or not sent: the same under the new type
          value.type_oid = cast.type.oid;
          continue;
        }
        absl::StatusOr<std::string> converted =
            cast.scale ? ScaleNumber(*text, *cast.scale) : absl::StatusOr<std::string>(*text);
        if (converted.ok()) converted = ConvertText(*converted, cast.type.oid);
        if (!converted.ok()) {
          std::string key;
          for (size_t k : table.RowKeyColumns()) {
            std::optional<std::string> v = ValueText((*row)[k], table.columns[k]);
            key += Cat(key.empty() ? "" : ", ", table.columns[k].name, "=", v.value_or("NULL"));
          }
          return absl::FailedPreconditionError(
              Cat(context().where, " (cast): ", table.QualifiedName(), ".", cast.column, " of the ",
                  OpName(change->op), " at ", change->txn.commit_lsn.ToString(),
                  key.empty() ? "" : Cat(" (", key, ")"), ": ", converted.status().message()));
        }
        value = Value::Text(cast.type.oid, *std::move(converted));
      }
    }
    return absl::OkStatus();
  }

 private:
  const std::shared_ptr<const CastOptions> options_;
};

class CastFactory : public TransformFactoryOf<CastOptions> {
 public:
  std::string_view type() const override { return "cast"; }
  std::string_view help() const override {
    return "Changes the type of columns as the sinks see them, scaling numbers on the way: "
           "{table: public.orders, columns: {total_cents: {type: numeric, scale: 0.01}}}.";
  }

 protected:
  const OptionTable<CastOptions>& table() const override {
    static const auto* table = new OptionTable<CastOptions>({
        ListOption("table", &CastOptions::table)
            .Required()
            .Help("The tables: schema.table or schema.* (every table of the schema), one or a "
                  "list."),
        CustomOption("columns", OptionType::kMap, ReadColumns, &CastOptions::columns)
            .Required()
            .Help("column: type, or column: {type, scale}. Types: text, varchar, smallint, "
                  "integer, bigint, numeric, real, double precision, boolean, date, timestamp, "
                  "timestamptz, json, jsonb, uuid. scale multiplies a number first (0.01: "
                  "cents to units)."),
    });
    return *table;
  }

  absl::Status Check(const ConfigNode& node, CastOptions* options) const override {
    return ParseTablePatterns(node, "table", options->table, &options->tables);
  }

  std::unique_ptr<Transform> Build(const TransformContext& context,
                                   std::shared_ptr<const CastOptions> options) const override {
    return std::make_unique<CastTransform>(context, std::move(options));
  }
};

}  // namespace

absl::StatusOr<std::string> ScaleNumber(std::string_view number, std::string_view factor) {
  const std::string text(absl::StripAsciiWhitespace(std::string(number)));
  if (!IsDecimal(text)) return absl::InvalidArgumentError(Cat("'", text, "' is not a number"));
  if (std::optional<int> shift = PowerOfTen(factor);
      shift && text.find_first_of("eE") == std::string::npos) {
    return ShiftPoint(text, *shift);
  }
  const long double v = std::strtold(text.c_str(), nullptr) *
                        std::strtold(std::string(factor).c_str(), nullptr);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.18Lg", v);
  return std::string(buf);
}

absl::StatusOr<std::string> ConvertText(std::string_view input, uint32_t type_oid) {
  const std::string text(input);
  auto invalid = [&](const char* what) {
    return absl::InvalidArgumentError(Cat("'", text, "' is not ", what));
  };
  switch (type_oid) {
    case oid::kInt2:
    case oid::kInt4:
    case oid::kInt8: {
      const std::string trimmed(absl::StripAsciiWhitespace(text));
      if (!IsDecimal(trimmed)) return invalid("an integer");
      std::optional<std::string> rounded = RoundDecimal(trimmed);
      int64_t v = 0;
      if (!rounded || !absl::SimpleAtoi(*rounded, &v)) return invalid("an integer in range");
      const int64_t limit = type_oid == oid::kInt2   ? 32767
                            : type_oid == oid::kInt4 ? 2147483647
                                                     : INT64_MAX;
      if (v > limit || v < -limit - 1) {
        return invalid(type_oid == oid::kInt2 ? "a smallint (out of range)"
                                              : "an integer (out of range)");
      }
      return std::to_string(v);
    }
    case oid::kNumeric: {
      const std::string trimmed(absl::StripAsciiWhitespace(text));
      const std::string lower = absl::AsciiStrToLower(trimmed);
      if (lower == "nan" || lower == "infinity" || lower == "-infinity") return trimmed;
      if (!IsDecimal(trimmed)) return invalid("a number");
      return trimmed;
    }
    case oid::kFloat4:
    case oid::kFloat8: {
      const std::string trimmed(absl::StripAsciiWhitespace(text));
      const std::string lower = absl::AsciiStrToLower(trimmed);
      if (lower == "nan" || lower == "infinity" || lower == "-infinity") return trimmed;
      if (!IsDecimal(trimmed)) return invalid("a number");
      return trimmed;
    }
    case oid::kBool: {
      std::optional<bool> b = ParseBoolText(std::string(absl::StripAsciiWhitespace(text)));
      if (!b) return invalid("a boolean (true, false, t, f, yes, no, on, off, 1, 0)");
      return std::string(*b ? "t" : "f");
    }
    case oid::kDate: {
      if (text == "infinity" || text == "-infinity") return text;
      std::optional<absl::Time> t = ParseTimeText(text);
      if (!t) return invalid("a date");
      return absl::FormatTime("%Y-%m-%d", *t, absl::UTCTimeZone());
    }
    case oid::kTimestamp:
    case oid::kTimestamptz: {
      if (text == "infinity" || text == "-infinity") return text;
      std::optional<absl::Time> t = ParseTimeText(text);
      if (!t) return invalid("a timestamp");
      return absl::FormatTime(type_oid == oid::kTimestamp ? "%Y-%m-%d %H:%M:%E*S"
                                                          : "%Y-%m-%d %H:%M:%E*S+00",
                              *t, absl::UTCTimeZone());
    }
    case oid::kJson:
    case oid::kJsonb:
      if (!nlohmann::json::accept(text)) return invalid("JSON");
      return text;
    case oid::kUuid: {
      std::string hex;
      for (char c : text) {
        if (c == '-' || c == '{' || c == '}') continue;
        if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return invalid("a uuid");
        hex.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
      }
      if (hex.size() != 32) return invalid("a uuid");
      return Cat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                 hex.substr(16, 4), "-", hex.substr(20));
    }
    default:
      return text;
  }
}

void RegisterCastTransform() { RegisterTransformFactory(std::make_unique<CastFactory>()); }

}  // namespace pgflow
