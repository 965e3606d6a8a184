#pragma once

// PostgreSQL's array literals, the text form of arrays that array_out writes and array_in
// reads: '{1,2,NULL}', '{{a,"b c"},{"say \"hi\"",NULL}}', '[0:1]={x,y}'. Elements are separated
// by ',' (the delimiter of every built-in type but box, whose ';' is not handled here). An
// element is quoted when it must be, with '"' and '\' escaped by a backslash inside the quotes;
// an unquoted NULL, in any case, is the null element.
//
// Thread-safety: plain functions of their arguments; any thread may call any of them.

#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"

namespace pgflow {

// Appends `element` as one (non-null) element of an array literal, quoted as array_out quotes
// it: when it is empty, is "NULL" in any case, or holds a quote, a backslash, a brace, a comma
// or white space. array_in reads what is appended back as exactly `element`, whatever its
// bytes. The caller writes the braces, the ',' between elements, and NULL for a null element.
void AppendArrayLiteralElement(std::string_view element, std::string* out);

// The array literal of `elements`, none of them null: {a,"b c"}, for a text[] parameter.
std::string ArrayLiteral(const std::vector<std::string>& elements);

// Reads the array literal `text` and appends it as a JSON array: one JSON array per level of
// braces, `null` for each NULL element, and every other element, quotes removed and escapes
// resolved, as `append_element` appends it (the view is valid during the call only). White
// space around elements and braces is skipped and dimension decorations ("[0:1]=") dropped.
// Returns false, leaving *out as it was, when `text` is not such a literal: unbalanced braces
// or quotes, a level that mixes sub-arrays and elements, an empty unquoted element, nesting
// deeper than 16 levels, anything after the closing brace.
bool AppendArrayLiteralAsJson(
    std::string_view text,
    absl::FunctionRef<void(std::string_view element, std::string* out)> append_element,
    std::string* out);

}  // namespace pgflow
