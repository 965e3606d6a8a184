#pragma once

// A column value as the transforms read and write it: PostgreSQL's text form.
//
// Values come as the type's text output (the stream) or its binary send form (decoded snapshot
// rows). The filter, set, cast, lua and preview read them as text; what a transform writes back
// is text (Value::Text), which every sink accepts for every type.

#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"

#include "engine/change.h"

namespace pgflow {

// The value's text: the type's text output for a text value; for a binary one, its JSON form,
// a string unquoted (numbers, booleans and json as PostgreSQL prints them; dates and times in
// ISO 8601). nullopt for NULL and for an unchanged TOASTed value (not known).
std::optional<std::string> ValueText(const Value& value, const Column& column);

// A boolean as PostgreSQL reads one: t, true, yes, on, 1 and f, false, no, off, 0, any case.
std::optional<bool> ParseBoolText(std::string_view text);

// An instant from PostgreSQL's output ("2024-01-02 03:04:05.5+00"), ISO 8601
// ("2024-01-02T03:04:05.5+00:00", "...Z") or a date; without an offset, UTC.
std::optional<absl::Time> ParseTimeText(std::string_view text);

}  // namespace pgflow
