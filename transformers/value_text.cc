#include "transformers/value_text.h"

#include <nlohmann/json.hpp>

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

}  // namespace pgflow
