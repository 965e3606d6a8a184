#pragma once

// JSON text (RFC 8259) and the UTF-8 it is made of: the one place that checks JSON, reads it
// and writes its strings. Everything else that handles JSON as text (the encoding, its inverse,
// the Kafka source and sink, the kv cache) goes through these functions.
//
// Reading hands out the values of objects and arrays as views into the text, never as parsed
// numbers. Values are taken back exactly as they were written: a float's digits, a numeric's
// scale, the spacing of an embedded jsonb value. (nlohmann::json would turn 1.50 into the
// double 1.5.)
//
// Everything here treats its input as untrusted: the text is checked against RFC 8259
// (strings must be valid UTF-8), nesting is walked without recursion (a level costs one byte
// of heap, never the call stack), and every error says what was expected where.
//
// Thread-safety: plain functions of their arguments; any thread may call any of them.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pgflow {

// ---------------------------------------------------------------------------------------------
// UTF-8

// Looks at the sequence starting with the non-ASCII byte p[0] (n >= 1 bytes available).
// Returns its length and sets *valid when it is a well-formed UTF-8 sequence (Unicode table
// 3-7: no overlong forms, no surrogates, nothing above U+10FFFF). Otherwise sets *valid to
// false and returns the length of the maximal ill-formed subpart, which is replaced by one
// U+FFFD (Unicode's recommended practice).
size_t ScanUtf8(const unsigned char* p, size_t n, bool* valid);

// ---------------------------------------------------------------------------------------------
// Checking

enum class JsonType : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };

// "null", "a boolean", "a number", "a string", "an array", "an object": for messages.
const char* JsonTypeName(JsonType type);

// Checks that `text` holds exactly one JSON value (whitespace around it allowed) and returns
// its type. InvalidArgument, "invalid JSON at byte <offset>: <what was expected>", otherwise.
absl::StatusOr<JsonType> CheckJson(std::string_view text);

// The same check as CheckJson, for hot paths: builds no status. When `text` is valid JSON,
// returns true and sets *one_line to whether it can be copied into a one-line format as it
// is: no white space around the value, and none but spaces (no tab, line feed or carriage
// return) between its tokens. Returns false, leaving *one_line alone, otherwise.
bool IsJsonText(std::string_view text, bool* one_line);

// True when all of `text` is one JSON number (RFC 8259's grammar: no '+', no leading zeros,
// digits on both sides of a '.', no "NaN" or "Infinity").
bool IsJsonNumber(std::string_view text);

// The type of a value taken from a checked text (by its first byte).
// REQUIRES: `value` came from CheckJson's input, ReadJsonObject or ReadJsonArray.
JsonType JsonTypeOf(std::string_view value);

// ---------------------------------------------------------------------------------------------
// Reading

// One member of an object: the key, unescaped, and the value's text (no surrounding space).
struct JsonMember {
  std::string key;
  std::string_view value;
};

// Reads the object `text` (checked here) into *members, in order, replacing what they held.
// Keys are not required to be unique; FindJsonMember returns the first. The values are views
// into `text`, which must outlive them.
absl::Status ReadJsonObject(std::string_view text, std::vector<JsonMember>* members);

// Reads the array `text` (checked here) into *items, replacing what they held. The items are
// views into `text`, which must outlive them.
absl::Status ReadJsonArray(std::string_view text, std::vector<std::string_view>* items);

// Reads the string `text` (a checked JSON string, quotes included), appending its content,
// escapes resolved (\u0000 included: the content may be bytes), to *out. Fails on a lone
// surrogate escape.
absl::Status ReadJsonString(std::string_view text, std::string* out);

// The value of the first member named `key`, or nullptr.
const JsonMember* FindJsonMember(const std::vector<JsonMember>& members, std::string_view key);

// Reads an integer value (no fraction, no exponent) that fits `int64_t`.
absl::StatusOr<int64_t> ReadJsonInt64(std::string_view value);

// ---------------------------------------------------------------------------------------------
// Writing

// Appends `text` as a quoted JSON string, escaping as RFC 8259 requires. Bytes that are not
// valid UTF-8 are replaced by U+FFFD so the output is always valid JSON.
void AppendJsonString(std::string_view text, std::string* out);

// Appends `json` without the white space between its tokens (strings are copied as they are).
// REQUIRES: IsJsonText(json) (or CheckJson(json).ok()).
void AppendJsonWithoutSpaces(std::string_view json, std::string* out);

}  // namespace pgflow
