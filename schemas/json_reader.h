#pragma once

// Reading JSON that pgflow wrote (or that claims to be): a validating scanner that hands out
// the values of objects and arrays as views into the text, never as parsed numbers. Values
// are taken back exactly as they were written: a float's digits, a numeric's scale, the
// spacing of an embedded jsonb value. (nlohmann::json would turn 1.50 into the double 1.5.)
//
// Everything here treats its input as untrusted: the text is checked against RFC 8259
// (strings must be valid UTF-8), nesting is walked without recursion, and every error says
// what was expected where.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pgflow {

enum class JsonType : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };

// "null", "a boolean", "a number", "a string", "an array", "an object": for messages.
const char* JsonTypeName(JsonType type);

// One member of an object: the key, unescaped, and the value's text (no surrounding space).
struct JsonMember {
  std::string key;
  std::string_view value;
};

// Checks that `text` holds exactly one JSON value (whitespace around it allowed) and returns
// its type. InvalidArgument, naming the byte offset, otherwise.
absl::StatusOr<JsonType> CheckJson(std::string_view text);

// The type of a value taken from a checked text (by its first byte).
// REQUIRES: `value` came from CheckJson's input, ReadJsonObject or ReadJsonArray.
JsonType JsonTypeOf(std::string_view value);

// Reads the object `text` (checked here) into *members, in order, replacing what they held.
// Keys are not required to be unique; FindJsonMember returns the first.
absl::Status ReadJsonObject(std::string_view text, std::vector<JsonMember>* members);

// Reads the array `text` (checked here) into *items, replacing what they held.
absl::Status ReadJsonArray(std::string_view text, std::vector<std::string_view>* items);

// Reads the string `text` (a checked JSON string, quotes included), appending its content,
// escapes resolved (\u0000 included: the content may be bytes), to *out. Fails on a lone
// surrogate escape.
absl::Status ReadJsonString(std::string_view text, std::string* out);

// The value of the first member named `key`, or nullptr.
const JsonMember* FindJsonMember(const std::vector<JsonMember>& members, std::string_view key);

// Reads an integer value (no fraction, no exponent) that fits `int64_t`.
absl::StatusOr<int64_t> ReadJsonInt64(std::string_view value);

}  // namespace pgflow
