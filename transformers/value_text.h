#pragma once

// A column value as the transforms read and write it: PostgreSQL's text form.
//
// Values come as the type's text output (the stream) or its binary send form (decoded snapshot
// rows). The filter, set, cast, lua and preview read them as text; what a transform writes back
// is text (Value::Text), which every sink accepts for every type.

#include <optional>
#include <string>

#include "engine/change.h"

namespace pgflow {

// The value's text: the type's text output for a text value; for a binary one, its JSON form,
// a string unquoted (numbers, booleans and json as PostgreSQL prints them; dates and times in
// ISO 8601). nullopt for NULL and for an unchanged TOASTed value (not known).
std::optional<std::string> ValueText(const Value& value, const Column& column);

}  // namespace pgflow
