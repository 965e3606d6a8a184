#include "transformers/value_text.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "schemas/json_encoding.h"

namespace pgflow {

std::optional<std::string> ValueText(const Value& value, const Column& column) {
  if (value.is_null() || value.is_unchanged_toast()) return std::nullopt;
  if (value.kind == ValueKind::kText) return value.data;
  std::string json;
  AppendJsonValue(value, column.type_name, JsonOptions{}, &json);
  nlohmann::json parsed = nlohmann::json::parse(json, nullptr, false);
  if (parsed.is_string()) return parsed.get<std::string>();
  return json;
}

std::optional<bool> ParseBoolText(std::string_view text) {
  const std::string t = absl::AsciiStrToLower(std::string(text));
  if (t == "t" || t == "true" || t == "yes" || t == "on" || t == "1") return true;
  if (t == "f" || t == "false" || t == "no" || t == "off" || t == "0") return false;
  return std::nullopt;
}

std::optional<absl::Time> ParseTimeText(std::string_view input) {
  std::string text(input);
  if (text.size() >= 3) {
    // "+05" -> "+05:00": absl's %Ez wants minutes.
    const size_t sign = text.find_last_of("+-");
    if (sign != std::string::npos && sign > 10 && text.size() - sign == 3) text += ":00";
  }
  absl::Time t;
  for (const char* format :
       {"%Y-%m-%d %H:%M:%E*S%Ez", "%Y-%m-%dT%H:%M:%E*S%Ez", "%Y-%m-%dT%H:%M:%E*SZ",
        "%Y-%m-%d %H:%M:%E*S", "%Y-%m-%dT%H:%M:%E*S", "%Y-%m-%d"}) {
    std::string error;
    if (absl::ParseTime(format, text, absl::UTCTimeZone(), &t, &error)) return t;
  }
  return std::nullopt;
}

}  // namespace pgflow
