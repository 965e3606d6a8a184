#pragma once

// The one place where a PostgreSQL value becomes JSON (DESIGN.md, "Change events"):
// integers and booleans as JSON numbers and booleans, json/jsonb embedded, arrays as arrays,
// timestamps ISO 8601, bytea base64, numeric as a string unless asked otherwise, anything
// else as a JSON string of its text form.

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/change.h"

namespace pgflow {

struct JsonOptions {
  // Write numeric as a JSON number instead of a string (loses precision in most readers).
  bool numeric_as_number = false;
};

// Appends `value` to *out as one JSON value. `type_name` is the column's Column::type_name
// (used to recognise arrays of non-built-in types, e.g. "public._mood"); may be empty.
// REQUIRES: !value.is_unchanged_toast(); such values are listed, never encoded.
void AppendJsonValue(const Value& value, std::string_view type_name, const JsonOptions& options,
                     std::string* out);

// Appends `text` as a quoted JSON string, escaping as RFC 8259 requires. Bytes that are not
// valid UTF-8 are replaced by U+FFFD so the output is always valid JSON.
void AppendJsonString(std::string_view text, std::string* out);

// Appends the standard base64 (RFC 4648, with padding) of `bytes`.
void AppendBase64(std::string_view bytes, std::string* out);

// Appends a UTC instant, microseconds since the Unix epoch, as ISO 8601
// "2026-11-22T10:43:00.123456Z" (fraction omitted when zero).
void AppendIsoTimestamp(int64_t unix_us, std::string* out);

}  // namespace pgflow
